//! Roles with real flows. Through a real dockerd (20.10 and 28.5), each seed system's
//! topology and its policy under `rules/` (see [`lab`]): Replicante (004), Guardrails (003) and
//! RuVector on bridge networks (000). Without Docker, ingress on a hand-built host.

// The spoofing tests' frame tool, shared; this test uses only its sender.
#[allow(dead_code)]
#[path = "../spoofing/forge.rs"]
mod forge;
mod lab;
mod seeds;

use std::net::{IpAddr, SocketAddr};

use enforcer_harness::docker::DockerVersion;
use enforcer_harness::spec::Family;
use enforcer_harness::{probe_here, Netns, Proto, Responders, PROBE_TIMEOUT};

#[test]
fn replicante_roles_hold_on_docker_20_10() {
    lab::run(&seeds::REPLICANTE, DockerVersion::Bookworm);
}

#[test]
fn replicante_roles_hold_on_docker_28_5() {
    lab::run(&seeds::REPLICANTE, DockerVersion::Sid);
}

#[test]
fn guardrails_zones_hold_on_docker_20_10() {
    lab::run(&seeds::GUARDRAILS, DockerVersion::Bookworm);
}

#[test]
fn guardrails_zones_hold_on_docker_28_5() {
    lab::run(&seeds::GUARDRAILS, DockerVersion::Sid);
}

#[test]
fn ruvector_rules_table_holds_on_docker_20_10() {
    lab::run(&seeds::RUVECTOR, DockerVersion::Bookworm);
}

#[test]
fn ruvector_rules_table_holds_on_docker_28_5() {
    lab::run(&seeds::RUVECTOR, DockerVersion::Sid);
}

/// An address on the ingress test's network: 172.20.0.N, fd00:20::N.
fn address(host: u8, family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4([172, 20, 0, host].into()),
        Family::V6 => IpAddr::V6(format!("fd00:20::{host:x}").parse().unwrap()),
    }
}

/// Ingress on a host without Docker: one bridge (br-ingress, 172.20.0.0/16 and fd00:20::/64,
/// east-west denied) with the supervisor, the agent and DNS as static members, and the
/// internet namespace. The supervisor's role lets the internet open tcp/8443 and DNS udp/5353;
/// nothing else may open a connection toward a managed container. Every flow is open with no
/// table first.
#[test]
fn ingress_lets_in_only_what_a_role_allows() {
    use enforcer_harness::host::connect_internet;
    use enforcer_harness::{apply_ok, TempFile};

    enforcer_harness::require_root();
    let host = Netns::new("inghost");
    let internet_ns = Netns::new("inginet");
    host.sysctl("net.bridge.bridge-nf-call-iptables", "1");
    host.sysctl("net.bridge.bridge-nf-call-ip6tables", "1");
    connect_internet(&host, &internet_ns);
    internet_ns.ip(&["route", "add", "172.20.0.0/16", "via", "203.0.113.1"]);
    internet_ns.ip(&[
        "-6",
        "route",
        "add",
        "fd00:20::/64",
        "via",
        "2001:db8:113::1",
    ]);
    host.ip(&["link", "add", "br-ingress", "type", "bridge"]);
    host.ip(&["addr", "add", "172.20.0.1/16", "dev", "br-ingress"]);
    host.ip(&["addr", "add", "fd00:20::1/64", "dev", "br-ingress", "nodad"]);
    host.ip(&["link", "set", "br-ingress", "up"]);
    let mut parts = Vec::new();
    let mut responders = Vec::new();
    for (name, number, listens) in [
        (
            "supervisor",
            5u8,
            &[(Proto::Tcp, 8443), (Proto::Tcp, 22), (Proto::Udp, 5353)][..],
        ),
        ("agent", 100, &[(Proto::Tcp, 7000)][..]),
        ("dns", 3, &[][..]),
    ] {
        let ns = Netns::new(&format!("ing{name}"));
        let outside = format!("ving{number}");
        host.veth(&outside, &ns, "eth0");
        host.ip(&["link", "set", &outside, "master", "br-ingress", "up"]);
        for family in Family::BOTH {
            let len = match family {
                Family::V4 => 16,
                Family::V6 => 64,
            };
            let address = address(number, family);
            let cidr = format!("{address}/{len}");
            let mut args = vec!["addr", "add", &cidr, "dev", "eth0"];
            if family == Family::V6 {
                args.push("nodad");
            }
            ns.ip(&args);
        }
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "via", "172.20.0.1"]);
        ns.ip(&["-6", "route", "add", "default", "via", "fd00:20::1"]);
        let endpoints: Vec<(Proto, SocketAddr)> = listens
            .iter()
            .flat_map(|(proto, port)| {
                Family::BOTH.map(|f| (*proto, SocketAddr::new(address(number, f), *port)))
            })
            .collect();
        responders.push(Responders::start(&ns, &endpoints));
        parts.push((name, ns));
    }
    let namespace = |name: &str| match name {
        "internet" => &internet_ns,
        other => &parts.iter().find(|(n, _)| *n == other).unwrap().1,
    };
    let rows: [(&str, u8, Proto, u16, bool); 5] = [
        ("internet", 5, Proto::Tcp, 8443, true),
        ("internet", 5, Proto::Tcp, 22, false),
        ("internet", 100, Proto::Tcp, 7000, false),
        ("dns", 5, Proto::Udp, 5353, true),
        ("agent", 5, Proto::Udp, 5353, false),
    ];
    let measure = || {
        let mut results = Vec::new();
        for (from, to, proto, port, allowed) in rows {
            for family in Family::BOTH {
                let target = SocketAddr::new(address(to, family), port);
                let open = namespace(from).enter(move || probe_here(proto, target, PROBE_TIMEOUT));
                results.push((from, target, proto, allowed, open));
            }
        }
        results
    };
    let shown = |results: &[(&str, SocketAddr, Proto, bool, bool)]| -> String {
        results
            .iter()
            .map(|(from, target, proto, allowed, open)| {
                format!("  {from:<8} -> {target:<24} {proto:?} allowed {allowed} open {open}\n")
            })
            .collect()
    };
    let before = measure();
    assert!(
        before.iter().all(|r| r.4),
        "without a table, a flow was closed:\n{}",
        shown(&before)
    );
    let policy = TempFile::new(
        ".toml",
        "[docker]\nenabled = false\n\
         [[networks]]\nname = \"replicante\"\ninterface = \"br-ingress\"\n\
         subnets = [\"172.20.0.0/16\", \"fd00:20::/64\"]\neast_west = \"deny\"\n\
         [roles.supervisor]\ningress = [\n\
         { from = \"internet\", allow = [\"tcp/8443\"] },\n\
         { from = \"role:dns\", allow = [\"udp/5353\"] },\n]\n\
         [roles.agent]\n[roles.dns]\n\
         [[members]]\nname = \"supervisor\"\nrole = \"supervisor\"\n\
         addresses = [\"172.20.0.5\", \"fd00:20::5\"]\n\
         [[members]]\nname = \"agent\"\nrole = \"agent\"\n\
         addresses = [\"172.20.0.100\", \"fd00:20::64\"]\n\
         [[members]]\nname = \"dns\"\nrole = \"dns\"\naddresses = [\"172.20.0.3\", \"fd00:20::3\"]\n",
    );
    apply_ok(&host, &["--config", policy.path()]);
    let after = measure();
    let wrong: Vec<_> = after.iter().filter(|r| r.3 != r.4).collect();
    let listing = host.exec_ok("nft", &["list", "table", "inet", "enforcer"]);
    assert!(
        wrong.is_empty(),
        "flows differ from the policy:\n{}\n{}",
        shown(&after),
        String::from_utf8_lossy(&listing.stdout)
    );
}
