//! The bridge table without a dockerd: a namespace with a bridge and veth ports whose peers
//! live in namespaces of their own (as a container's do), and a fake Docker that reports a
//! managed network on that bridge and a container with the peer's MAC. `enforcer apply` binds
//! the port; `nft` is the independent reader of what the kernel holds, and real frames (ping
//! through the bridge) show what each port may send.

use std::process::{Output, Stdio};

use std::time::Duration;

use enforcer_harness::fake_docker::{FakeDocker, Hostile};
use enforcer_harness::{enforcer_bin, listed_table, require_root, Agent, Netns, TempDir};
use serde_json::Value;

const BRIDGE: &str = "br-agentnet00";
const NETWORK_ID: &str = "a9e7000000000000000000000000000000000000000000000000000000000001";
const MAC: &str = "02:42:0a:63:00:02";
const ADDRESS: &str = "10.99.0.2";
const PEER_MAC: &str = "02:42:0a:63:00:04";
const PEER_ADDRESS: &str = "10.99.0.4";
const GATEWAY: &str = "10.99.0.1";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fake Docker reporting network `agentnet` (internal, on [`BRIDGE`]) and containers `agent`
/// ([`MAC`], [`ADDRESS`]) and `peer` ([`PEER_MAC`], [`PEER_ADDRESS`]) on it.
fn fake_docker() -> FakeDocker {
    let networks = format!(
        r#"[{{"Id":"{NETWORK_ID}","Name":"agentnet","Driver":"bridge","Internal":true,"Labels":{{}},"Options":{{"com.docker.network.bridge.name":"{BRIDGE}"}},"IPAM":{{"Config":[{{"Subnet":"10.99.0.0/24"}}]}}}}]"#
    );
    let container = |id: char, name: &str, address: &str, mac: &str| {
        format!(
            r#"{{"Id":"{}","Names":["/{name}"],"Labels":{{}},"NetworkSettings":{{"Networks":{{"agentnet":{{"NetworkID":"{NETWORK_ID}","IPAddress":"{address}","GlobalIPv6Address":"","MacAddress":"{mac}"}}}}}}}}"#,
            id.to_string().repeat(64)
        )
    };
    let containers = format!(
        "[{},{}]",
        container('c', "agent", ADDRESS, MAC),
        container('d', "peer", PEER_ADDRESS, PEER_MAC)
    );
    FakeDocker::start(Hostile::Fixed {
        networks,
        containers,
    })
}

/// `enforcer <args>` in `ns`, following `docker`.
fn enforcer_with(ns: &Netns, docker: &FakeDocker, args: &[&str]) -> Output {
    let bin = enforcer_bin();
    ns.command(bin.to_str().expect("utf-8 path"))
        .args(args)
        .env("DOCKER_HOST", docker.docker_host())
        .stdin(Stdio::null())
        .output()
        .expect("run enforcer")
}

/// The host with [`BRIDGE`] (holding the gateway address) and three ports: `vethagent`, whose
/// veth peer in `container` has [`MAC`] and [`ADDRESS`], `vethpeer` (in `peer`, with
/// [`PEER_MAC`] and [`PEER_ADDRESS`]), and `vethstray`, whose peer in `stray` Docker never
/// reported.
struct Lab {
    host: Netns,
    container: Netns,
    peer: Netns,
    stray: Netns,
}

impl Lab {
    fn new() -> Lab {
        let (host, container) = (Netns::new("port"), Netns::new("portc"));
        let (peer, stray) = (Netns::new("portp"), Netns::new("ports"));
        host.ip(&["link", "add", BRIDGE, "type", "bridge"]);
        host.ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", BRIDGE]);
        host.ip(&["link", "set", BRIDGE, "up"]);
        for (port, end, mac, address) in [
            ("vethagent", &container, MAC, ADDRESS),
            ("vethpeer", &peer, PEER_MAC, PEER_ADDRESS),
            ("vethstray", &stray, "02:42:0a:63:00:07", "10.99.0.7"),
        ] {
            host.veth(port, end, "eth0");
            end.ip(&["link", "set", "eth0", "address", mac]);
            end.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"]);
            end.ip(&["link", "set", "eth0", "up"]);
            host.ip(&["link", "set", port, "master", BRIDGE]);
            host.ip(&["link", "set", port, "up"]);
        }
        Lab {
            host,
            container,
            peer,
            stray,
        }
    }

    /// Whether one ping from `from` to the peer container is answered (ARP, then ICMP, through
    /// both ports; the bridge switches it, and the inet table lets a network's own traffic
    /// through).
    fn ping(&self, from: &Netns) -> bool {
        for ns in [from, &self.peer] {
            ns.ip(&["neigh", "flush", "dev", "eth0"]);
        }
        from.exec("busybox", &["ping", "-c", "1", "-W", "1", PEER_ADDRESS])
            .status
            .success()
    }
}

/// Packets the chain `chain` of the bridge table counted, summed over its rules.
fn counted(ns: &Netns, chain: &str) -> u64 {
    let output = ns.exec_ok("nft", &["-j", "list", "chain", "bridge", "enforcer", chain]);
    let json: Value = serde_json::from_slice(&output.stdout).expect("nft -j output");
    let mut total = 0;
    for item in json["nftables"].as_array().into_iter().flatten() {
        for expression in item["rule"]["expr"].as_array().into_iter().flatten() {
            total += expression["counter"]["packets"].as_u64().unwrap_or(0);
        }
    }
    total
}

#[test]
fn a_bound_port_sends_only_as_its_container_and_lists_as_nft_makes_it() {
    require_root();
    let lab = Lab::new();
    let docker = fake_docker();
    // Without the table, both ports reach the gateway, the stray one too, and so would the
    // container with a forged MAC.
    assert!(
        lab.ping(&lab.container),
        "the container reaches its gateway"
    );
    assert!(
        lab.ping(&lab.stray),
        "the stray port reaches the gateway without enforcer"
    );

    let applied = enforcer_with(&lab.host, &docker, &["apply"]);
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let listing = text(
        &lab.host
            .exec_ok("nft", &["list", "table", "bridge", "enforcer"])
            .stdout,
    );
    for needle in [
        "\"vethagent\" : goto port_vethagent",
        "\"vethstray\" : goto unbound_port",
        "ether saddr != 02:42:0a:63:00:02",
        "arp saddr ether 02:42:0a:63:00:02 arp saddr ip 10.99.0.2 accept",
        "ip6 saddr fe80::42:aff:fe63:2 accept",
    ] {
        assert!(listing.contains(needle), "missing {needle}:\n{listing}");
    }

    // The dry-run text, loaded by nft elsewhere, lists exactly as the netlink-applied tables.
    let script = enforcer_with(&lab.host, &docker, &["apply", "--dry-run"]);
    assert_eq!(script.status.code(), Some(0), "{}", text(&script.stderr));
    let loaded = Netns::new("portl");
    let load = loaded.exec_with_input("nft", &["-f", "-"], &script.stdout);
    assert!(load.status.success(), "nft -f: {}", text(&load.stderr));
    for family in ["inet", "bridge"] {
        assert_eq!(
            listed_table(&lab.host, family, "enforcer"),
            listed_table(&loaded, family, "enforcer"),
            "{family}"
        );
    }
    // A second apply finds nothing to send.
    let again = enforcer_with(&lab.host, &docker, &["apply"]);
    assert!(
        text(&again.stderr).contains("already match"),
        "{}",
        text(&again.stderr)
    );

    // The container as itself passes; the unbound port sends nothing.
    assert!(
        lab.ping(&lab.container),
        "the bound container keeps its gateway"
    );
    assert!(
        !lab.ping(&lab.stray),
        "a port no container is bound to sends nothing"
    );
    assert!(counted(&lab.host, "unbound_port") > 0);
    // The container's root forges its MAC, then an address: both are dropped, and counted in
    // its port's chain (the test uses the namespace's root for brevity; CAP_NET_RAW alone can
    // send the same frames).
    let before = counted(&lab.host, "port_vethagent");
    lab.container
        .ip(&["link", "set", "eth0", "address", "02:42:0a:63:00:09"]);
    assert!(!lab.ping(&lab.container), "a forged source MAC is dropped");
    lab.container.ip(&["link", "set", "eth0", "address", MAC]);
    assert!(lab.ping(&lab.container), "its own MAC again passes");
    lab.container
        .ip(&["addr", "del", &format!("{ADDRESS}/24"), "dev", "eth0"]);
    lab.container
        .ip(&["addr", "add", "10.99.0.3/24", "dev", "eth0"]);
    assert!(
        !lab.ping(&lab.container),
        "an address Docker did not give it is dropped"
    );
    assert!(counted(&lab.host, "port_vethagent") > before);

    // The agent binds the same ports, and `status` names each bound port's container and what
    // its chain dropped.
    let dir = TempDir::new("ports-agent");
    let host = docker.docker_host();
    let agent = Agent::start(
        &lab.host,
        dir.path(),
        &enforcer_bin(),
        &[],
        &[("DOCKER_HOST", &host)],
    );
    agent.expect_log("Docker connected", Duration::from_secs(20));
    // Started without a state file, the agent knew no container until Docker answered, so it
    // re-created the port chains: forge once more for its counters.
    lab.container
        .ip(&["addr", "del", "10.99.0.3/24", "dev", "eth0"]);
    lab.container
        .ip(&["addr", "add", &format!("{ADDRESS}/24"), "dev", "eth0"]);
    assert!(
        lab.ping(&lab.container),
        "bound by the agent, the container passes"
    );
    lab.container
        .ip(&["link", "set", "eth0", "address", "02:42:0a:63:00:09"]);
    assert!(!lab.ping(&lab.container), "a forged source MAC is dropped");
    let state = agent.state_file().display().to_string();
    let status = lab.host.exec(
        "sh",
        &[
            "-c",
            &format!(
                "DOCKER_HOST={host} {} status --json --state-file {state}",
                enforcer_bin().display()
            ),
        ],
    );
    let report: Value = serde_json::from_slice(&status.stdout).expect("status --json");
    let ports = report["ports"].as_array().expect("ports in the report");
    let names: Vec<(&str, &str, bool)> = ports
        .iter()
        .map(|p| {
            let text = |key: &str| p[key].as_str().unwrap_or("");
            (
                text("container"),
                text("port"),
                p["in_kernel"].as_bool() == Some(true),
            )
        })
        .collect();
    assert_eq!(
        names,
        [("agent", "vethagent", true), ("peer", "vethpeer", true)],
        "{report:#}"
    );
    assert!(ports[0]["dropped_packets"].as_u64() > Some(0), "{report:#}");
    assert_eq!(report["bridge_table_present"], true, "{report:#}");
    assert_eq!(
        report["agree"], true,
        "kernel and state file agree: {report:#}"
    );
    assert!(
        report["unbound_dropped_packets"].as_u64() > Some(0),
        "{report:#}"
    );
}
