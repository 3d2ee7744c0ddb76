//! Quarantined interfaces (IronClaw, seed 001: VMs with no network at all), with real flows
//! and hand-made frames on a host built by hand: a VM on a routed tap (`tap-vm0`), a VM on a
//! bridge port (`fc-vm1`) beside an ordinary neighbour (`lan0`), and the internet namespace.
//! Everything is open with no table first; then `rules/ironclaw.toml` is applied once (no
//! agent runs) and nothing enters or leaves a quarantined interface, in IPv4, IPv6 and ARP,
//! one that appears afterwards included, while the neighbour keeps its network. With the agent
//! running, every such attempt is in its drop audit.

// The spoofing tests' frame tool, shared; this test does not stop a listener early.
#[allow(dead_code)]
#[path = "spoofing/forge.rs"]
mod forge;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use enforcer_harness::host::{connect_internet, internet_endpoints};
use enforcer_harness::spec::Family;
use enforcer_harness::{
    apply_ok, enforcer, probe_here, repo_file, Agent, Netns, Proto, Responders,
};

/// How long a probe waits before calling a flow blocked.
const PROBE: Duration = Duration::from_millis(600);
/// A service on the host itself (every address), and one in each VM and the neighbour.
const HOST_PORT: u16 = 7001;
const GUEST_PORT: u16 = 2222;

/// `10.N.0.H` or `fd00:N::H`.
fn address(net: u8, host: u8, family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4([10, net, 0, host].into()),
        Family::V6 => IpAddr::V6(format!("fd00:{net}::{host:x}").parse().unwrap()),
    }
}

/// Gives `ns`'s `eth0` 10.N.0.H/24 and fd00:N::H/64, a MAC, and default routes via `.1`.
fn configure_guest(ns: &Netns, net: u8, host: u8) {
    ns.ip(&[
        "link",
        "set",
        "eth0",
        "address",
        &format!("02:00:00:00:{net:02x}:{host:02x}"),
    ]);
    for family in Family::BOTH {
        let (len, gateway) = match family {
            Family::V4 => (24, address(net, 1, family)),
            Family::V6 => (64, address(net, 1, family)),
        };
        let cidr = format!("{}/{len}", address(net, host, family));
        let mut args = vec!["addr", "add", &cidr, "dev", "eth0"];
        if family == Family::V6 {
            args.push("nodad");
        }
        ns.ip(&args);
        ns.ip(&["link", "set", "eth0", "up"]);
        let gateway = gateway.to_string();
        let mut route = vec!["route", "add", "default", "via", &gateway];
        if family == Family::V6 {
            route.insert(0, "-6");
        }
        ns.ip(&route);
    }
}

/// Gives the host's `device` 10.N.0.1/24 and fd00:N::1/64 and brings it up; the internet
/// routes 10.N.0.0/24 and fd00:N::/64 back through the host.
fn configure_gateway(host: &Netns, internet_ns: &Netns, device: &str, net: u8) {
    for family in Family::BOTH {
        let len = if family == Family::V4 { 24 } else { 64 };
        let cidr = format!("{}/{len}", address(net, 1, family));
        let mut args = vec!["addr", "add", &cidr, "dev", device];
        if family == Family::V6 {
            args.push("nodad");
        }
        host.ip(&args);
        let (prefix, via) = match family {
            Family::V4 => (format!("10.{net}.0.0/24"), "203.0.113.1"),
            Family::V6 => (format!("fd00:{net}::/64"), "2001:db8:113::1"),
        };
        let mut route = vec!["route", "add", &prefix, "via", via];
        if family == Family::V6 {
            route.insert(0, "-6");
        }
        internet_ns.ip(&route);
    }
    host.ip(&["link", "set", device, "up"]);
}

/// One flow of the matrix: from a namespace to an address and port, and whether the
/// quarantine lets it through.
struct Row {
    from: &'static str,
    to: SocketAddr,
    proto: Proto,
    allowed: bool,
}

/// The host, its parts and their listeners.
struct Lab {
    host: Netns,
    internet: Netns,
    vm0: Netns,
    vm1: Netns,
    lan: Netns,
    _responders: Vec<Responders>,
}

impl Lab {
    fn build() -> Lab {
        let host = Netns::new("qhost");
        let internet = Netns::new("qinet");
        host.sysctl("net.bridge.bridge-nf-call-iptables", "1");
        host.sysctl("net.bridge.bridge-nf-call-ip6tables", "1");
        connect_internet(&host, &internet);
        // VM 0: a routed tap (its host side is the gateway).
        let vm0 = Netns::new("qvm0");
        host.veth("tap-vm0", &vm0, "eth0");
        configure_gateway(&host, &internet, "tap-vm0", 77);
        configure_guest(&vm0, 77, 2);
        // VM 1 and an ordinary neighbour on one bridge.
        host.ip(&["link", "add", "vmbr0", "type", "bridge"]);
        configure_gateway(&host, &internet, "vmbr0", 78);
        let vm1 = Netns::new("qvm1");
        let lan = Netns::new("qlan");
        for (port, ns, number) in [("fc-vm1", &vm1, 2u8), ("lan0", &lan, 3)] {
            host.veth(port, ns, "eth0");
            host.ip(&["link", "set", port, "master", "vmbr0", "up"]);
            configure_guest(ns, 78, number);
        }
        let both = |net, number, port| {
            Family::BOTH.map(|f| (Proto::Tcp, SocketAddr::new(address(net, number, f), port)))
        };
        let any: IpAddr = "::".parse().unwrap();
        let responders = vec![
            Responders::start(&internet, &internet_endpoints()),
            Responders::start(&host, &[(Proto::Tcp, SocketAddr::new(any, HOST_PORT))]),
            Responders::start(&vm0, &both(77, 2, GUEST_PORT)),
            Responders::start(&vm1, &both(78, 2, GUEST_PORT)),
            Responders::start(&lan, &both(78, 3, GUEST_PORT)),
        ];
        Lab {
            host,
            internet,
            vm0,
            vm1,
            lan,
            _responders: responders,
        }
    }

    fn namespace(&self, name: &str) -> &Netns {
        match name {
            "host" => &self.host,
            "internet" => &self.internet,
            "vm0" => &self.vm0,
            "vm1" => &self.vm1,
            "lan" => &self.lan,
            other => panic!("no namespace {other}"),
        }
    }

    /// Every row: (row, open), each flow tried up to `attempts` times (the first packet of a
    /// flow may wait for neighbour discovery longer than a probe does).
    fn measure<'r>(&self, rows: &'r [Row], attempts: usize) -> Vec<(&'r Row, bool)> {
        rows.iter()
            .map(|row| {
                let (proto, to) = (row.proto, row.to);
                let open = self
                    .namespace(row.from)
                    .enter(move || (0..attempts).any(|_| probe_here(proto, to, PROBE)));
                (row, open)
            })
            .collect()
    }
}

fn rows() -> Vec<Row> {
    let internet_443 = |family| SocketAddr::new(enforcer_harness::spec::internet(family), 443);
    let mut rows = Vec::new();
    for family in Family::BOTH {
        let on = |net, host, port| SocketAddr::new(address(net, host, family), port);
        let flows: [(&str, SocketAddr, bool); 11] = [
            ("vm0", on(77, 1, HOST_PORT), false), // to the host (input)
            ("vm0", internet_443(family), false), // through the host (forward, in)
            ("internet", on(77, 2, GUEST_PORT), false), // toward the VM (forward, out)
            ("host", on(77, 2, GUEST_PORT), false), // from the host (output)
            ("vm1", on(78, 3, GUEST_PORT), false), // to its bridge neighbour
            ("lan", on(78, 2, GUEST_PORT), false), // from its bridge neighbour
            ("vm1", on(78, 1, HOST_PORT), false), // to the host over the bridge
            ("host", on(78, 2, GUEST_PORT), false), // from the host over the bridge
            ("vm1", internet_443(family), false), // through the host over the bridge
            ("lan", on(78, 1, HOST_PORT), true),  // the neighbour keeps the host
            ("lan", internet_443(family), true),  // and the internet
        ];
        rows.extend(flows.into_iter().map(|(from, to, allowed)| Row {
            from,
            to,
            proto: Proto::Tcp,
            allowed,
        }));
    }
    rows
}

fn shown(results: &[(&Row, bool)]) -> String {
    results
        .iter()
        .map(|(row, open)| {
            format!(
                "  {:<8} -> {:<26} allowed {:<5} open {open}\n",
                row.from, row.to, row.allowed
            )
        })
        .collect()
}

/// ARP replies the host sends `vm` for its gateway address 10.N.0.1, over 600 ms.
fn arp_replies(vm: &Netns, net: u8) -> u64 {
    let gateway = format!("10.{net}.0.1");
    let listener = forge::Listener::start(vm, "eth0", 600, &["--arp-sender-ip", &gateway]);
    let sender = format!("10.{net}.0.2");
    forge::send(
        vm,
        &[
            "arp",
            "--iface",
            "eth0",
            "--op",
            "request",
            "--sender-ip",
            &sender,
            "--target-ip",
            &gateway,
            "--count",
            "2",
        ],
    );
    listener.count()
}

/// Frames from VM 1 that reach its neighbour: UDP with a VLAN tag and a made-up source,
/// straight to the neighbour's MAC (no ARP needed), over 600 ms.
fn forged_frames_to_neighbour(lab: &Lab) -> u64 {
    let listener = forge::Listener::start(&lab.lan, "eth0", 600, &["--contains", "quarantine"]);
    for (source, tag) in [("10.78.0.99", &["--vlan", "7"][..]), ("10.78.0.2", &[][..])] {
        let mut args = vec![
            "udp4",
            "--iface",
            "eth0",
            "--eth-dst",
            "02:00:00:00:4e:03",
            "--src",
            source,
            "--dst",
            "10.78.0.3",
            "--dport",
            "9",
            "--payload",
            "quarantine",
            "--count",
            "2",
            "--interval-ms",
            "50",
        ];
        args.extend_from_slice(tag);
        forge::send(&lab.vm1, &args);
    }
    listener.count()
}

/// Frames carrying a UDP probe that reach each VM's `eth0` from the host, the internet and
/// the neighbour, both families: the direction toward a quarantined interface on its own (a
/// TCP probe also fails when only the VM's answer is dropped). The host and the neighbour know
/// the VMs' MACs beforehand, so neither ARP nor neighbour discovery decides it.
fn frames_into_vms(lab: &Lab) -> Vec<(&'static str, SocketAddr, u64)> {
    let mut results = Vec::new();
    for family in Family::BOTH {
        let sources: [(&'static str, &Netns, u8, &str); 4] = [
            ("internet", &lab.internet, 77, "tap-vm0"),
            ("host", &lab.host, 77, "tap-vm0"),
            ("host", &lab.host, 78, "vmbr0"),
            ("lan", &lab.lan, 78, "eth0"),
        ];
        for (from, ns, net, device) in sources {
            let vm = if net == 77 { &lab.vm0 } else { &lab.vm1 };
            let target = address(net, 2, family);
            if from != "internet" {
                let lladdr = format!("02:00:00:00:{net:02x}:02");
                ns.ip(&[
                    "neigh",
                    "replace",
                    &target.to_string(),
                    "lladdr",
                    &lladdr,
                    "dev",
                    device,
                    "nud",
                    "permanent",
                ]);
            }
            let listener = forge::Listener::start(vm, "eth0", 700, &["--contains", "ping"]);
            let to = SocketAddr::new(target, 9);
            ns.enter(move || probe_here(Proto::Udp, to, Duration::from_millis(300)));
            results.push((from, to, listener.count()));
        }
    }
    results
}

/// The interfaces the table `family enforcer`'s `quarantined` set holds, as `nft` lists them.
fn recorded(host: &Netns, family: &str) -> String {
    let listing = host.exec_ok("nft", &["list", "set", family, "enforcer", "quarantined"]);
    String::from_utf8_lossy(&listing.stdout).into_owned()
}

#[test]
fn quarantined_interfaces_have_no_network_at_all() {
    enforcer_harness::require_root();
    let lab = Lab::build();
    let rows = rows();

    let before = lab.measure(&rows, 3);
    assert!(
        before.iter().all(|(_, open)| *open),
        "without a table, a flow was closed:\n{}",
        shown(&before)
    );
    assert!(
        arp_replies(&lab.vm0, 77) > 0,
        "no ARP reply without a table"
    );
    assert!(
        arp_replies(&lab.vm1, 78) > 0,
        "no ARP reply over the bridge"
    );
    assert_eq!(
        forged_frames_to_neighbour(&lab),
        4,
        "frames lost without a table"
    );
    let into = frames_into_vms(&lab);
    assert!(
        into.iter().all(|r| r.2 > 0),
        "not delivered without a table: {into:?}"
    );

    let policy = repo_file("rules/ironclaw.toml");
    apply_ok(&lab.host, &["--config", policy.to_str().unwrap()]);

    let after = lab.measure(&rows, 1);
    let wrong: Vec<_> = after
        .iter()
        .filter(|(row, open)| row.allowed != *open)
        .collect();
    assert!(
        wrong.is_empty(),
        "flows differ from the quarantine:\n{}\n{}",
        shown(&after),
        recorded(&lab.host, "inet")
    );
    assert_eq!(
        arp_replies(&lab.vm0, 77),
        0,
        "the host answered ARP on tap-vm0"
    );
    assert_eq!(
        arp_replies(&lab.vm1, 78),
        0,
        "the host answered ARP to fc-vm1"
    );
    assert_eq!(
        forged_frames_to_neighbour(&lab),
        0,
        "fc-vm1's frames reached lan0"
    );
    let into = frames_into_vms(&lab);
    assert!(
        into.iter().all(|r| r.2 == 0),
        "delivered into a VM: {into:?}"
    );

    // An interface that appears after the apply, with no agent running: quarantined at once.
    let late = Netns::new("qlate");
    lab.host.veth("tap-late", &late, "eth0");
    configure_gateway(&lab.host, &lab.internet, "tap-late", 79);
    configure_guest(&late, 79, 2);
    let to_host = SocketAddr::new(address(79, 1, Family::V4), HOST_PORT);
    let to_internet = SocketAddr::new(enforcer_harness::spec::internet(Family::V6), 443);
    for target in [to_host, to_internet] {
        let open = late.enter(move || probe_here(Proto::Tcp, target, PROBE));
        assert!(!open, "tap-late reached {target}");
    }
    assert_eq!(
        arp_replies(&late, 79),
        0,
        "the host answered ARP on tap-late"
    );

    // Counted per interface, in each table, as nft lists them; status sums them.
    let inet = recorded(&lab.host, "inet");
    for interface in ["tap-vm0", "tap-late"] {
        assert!(inet.contains(&format!("\"{interface}\" counter")), "{inet}");
    }
    let bridge = recorded(&lab.host, "bridge");
    assert!(bridge.contains("\"fc-vm1\" counter"), "{bridge}");
    let arp = recorded(&lab.host, "arp");
    for interface in ["tap-vm0", "tap-late"] {
        assert!(arp.contains(&format!("\"{interface}\" counter")), "{arp}");
    }
    let status = enforcer(
        &lab.host,
        &["status", "--json", "--config", policy.to_str().unwrap()],
    );
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    let counted: Vec<(String, u64)> = report["quarantined_interfaces"]
        .as_array()
        .expect("quarantined_interfaces")
        .iter()
        .map(|q| {
            let name = q["interface"].as_str().unwrap_or_default().to_string();
            (name, q["dropped_packets"].as_u64().unwrap_or(0))
        })
        .collect();
    for interface in ["tap-vm0", "fc-vm1", "tap-late"] {
        assert!(
            counted.iter().any(|(n, p)| n == interface && *p > 0),
            "status does not count {interface}: {counted:?}"
        );
    }
    assert!(
        !counted.iter().any(|(n, _)| n == "lan0" || n == "vmbr0"),
        "status counts an interface outside the quarantine: {counted:?}"
    );
}

/// The drop lines (`--log-format json`) in `agent`'s log, parsed.
fn drop_lines(agent: &Agent) -> Vec<serde_json::Value> {
    agent
        .lines_with("\"event\":\"drop\"")
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// IronClaw's "audit of attempts": with the agent running, what a quarantined VM tries (IPv4,
/// IPv6, ARP, through a routed tap and over a bridge port) is in its log, reason `quarantine`,
/// naming the interface or the bridge port.
#[test]
fn attempts_from_quarantined_vms_are_audited() {
    enforcer_harness::require_root();
    let lab = Lab::build();
    let dir = enforcer_harness::TempDir::new("qaudit");
    let policy = repo_file("rules/ironclaw.toml");
    // No Docker here: the agent must not find the machine's.
    let nowhere = format!("unix://{}/no-docker.sock", dir.path().display());
    let agent = Agent::start(
        &lab.host,
        dir.path(),
        &enforcer_harness::enforcer_bin(),
        &["--config", policy.to_str().unwrap(), "--log-format", "json"],
        &[("DOCKER_HOST", nowhere.as_str())],
    );
    agent.expect_log("enforcing;", Duration::from_secs(10));

    // No ARP or neighbour discovery gets through, so a VM sends no IP packet to its gateway
    // until its root writes the gateway's MAC in by hand, as it may: then it does.
    for (vm, device, net) in [(&lab.vm0, "tap-vm0", 77), (&lab.vm1, "vmbr0", 78)] {
        let mac = lab
            .host
            .exec_ok("cat", &[&format!("/sys/class/net/{device}/address")]);
        let mac = String::from_utf8_lossy(&mac.stdout).trim().to_string();
        for family in Family::BOTH {
            let gateway = address(net, 1, family).to_string();
            vm.exec_ok(
                "ip",
                &[
                    "neigh",
                    "replace",
                    &gateway,
                    "lladdr",
                    &mac,
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ],
            );
        }
    }
    let to_host = SocketAddr::new(address(77, 1, Family::V4), HOST_PORT);
    let to_internet_v6 = SocketAddr::new(enforcer_harness::spec::internet(Family::V6), 443);
    let over_bridge = SocketAddr::new(address(78, 1, Family::V4), HOST_PORT);
    for target in [to_host, to_internet_v6] {
        assert!(!lab.vm0.enter(move || probe_here(Proto::Tcp, target, PROBE)));
    }
    assert!(!lab
        .vm1
        .enter(move || probe_here(Proto::Tcp, over_bridge, PROBE)));
    assert_eq!(
        arp_replies(&lab.vm0, 77),
        0,
        "the host answered ARP on tap-vm0"
    );

    type Check = (&'static str, Box<dyn Fn(&serde_json::Value) -> bool>);
    let expected: [Check; 4] = [
        (
            "tcp to the host from tap-vm0",
            Box::new(move |l| {
                l["dst"] == to_host.ip().to_string()
                    && l["dport"] == HOST_PORT
                    && l["iif"] == "tap-vm0"
            }),
        ),
        (
            "IPv6 to the internet from tap-vm0",
            Box::new(move |l| {
                l["src"] == address(77, 2, Family::V6).to_string()
                    && l["dst"] == to_internet_v6.ip().to_string()
            }),
        ),
        (
            "tcp to the host over the bridge from fc-vm1",
            Box::new(|l| l["port"] == "fc-vm1"),
        ),
        (
            "ARP from tap-vm0",
            Box::new(|l| l["proto"] == "arp" && l["iif"] == "tap-vm0"),
        ),
    ];
    let logged = enforcer_harness::wait_until(Duration::from_secs(5), || {
        let lines = drop_lines(&agent);
        expected.iter().all(|(_, check)| lines.iter().any(check))
    });
    let lines = drop_lines(&agent);
    for (what, check) in &expected {
        let line = lines.iter().find(|l| check(l));
        assert!(logged && line.is_some(), "no line for {what} in {lines:#?}");
        assert_eq!(line.unwrap()["reason"], "quarantine", "{what}: {line:?}");
    }
}
