//! The bridge table: a reference evaluator of frames (what a port sends, as the kernel sees it
//! at the bridge's prerouting hook) over the planned ruleset, and the properties the table must
//! have: a bound port sends only as its container, any other port of a guarded bridge sends
//! nothing, open ports pass.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use enforcer_core::binding::{guard_ports, BoundPort, PortGuard};
use enforcer_core::docker::{
    classify, DockerContainer, DockerEndpoint, DockerNetwork, DockerState,
};
use enforcer_core::names::ChainName;
use enforcer_core::planner::{plan_ports, plan_tables, TableSettings};
use enforcer_core::policy::Policy;
use enforcer_core::ports::{BridgePort, MacAddr};
use enforcer_core::ruleset::{
    Action, Direction, MapKey, Match, Ruleset, SetContent, TableFamily, Verdict,
};
use enforcer_core::topology::Protocol;
use proptest::prelude::*;

/// What a frame carries, as far as the table looks.
#[derive(Debug, Clone)]
enum Payload {
    Ipv4 {
        source: Ipv4Addr,
        udp_source: Option<u16>,
    },
    Arp {
        sender_mac: MacAddr,
        sender: Ipv4Addr,
    },
    Ipv6 {
        source: Ipv6Addr,
        icmp: Option<(u8, Ipv6Addr)>,
        udp_source: Option<u16>,
    },
    /// Any other ethertype (VLAN, IPX, ...).
    Other,
}

/// A frame as the bridge's prerouting hook sees it. A VLAN tag is in the packet's metadata
/// (the kernel untags on receive): `meta protocol`, and so every address match, sees the inner
/// packet, while a link-layer load of the Ethernet type (ARP, ICMPv6 dependencies, `ether
/// type`) sees the tag.
#[derive(Debug, Clone)]
struct Frame {
    port: String,
    source_mac: MacAddr,
    tagged: bool,
    payload: Payload,
}

fn holds(frame: &Frame, m: &Match) -> bool {
    let p = &frame.payload;
    match m {
        Match::SourceMac { mac, negated } => (frame.source_mac == *mac) != *negated,
        Match::SourcePort(Protocol::Udp, port) => match p {
            Payload::Ipv4 { udp_source, .. } | Payload::Ipv6 { udp_source, .. } => {
                *udp_source == Some(*port)
            }
            _ => false,
        },
        // The frames modelled here are never sent to a DHCP client's port.
        Match::DestinationPort(Protocol::Udp, _) => false,
        Match::EtherType(_) => frame.tagged,
        Match::Address(Direction::Source, net) => match p {
            Payload::Ipv4 { source, .. } => net.contains(&IpAddr::V4(*source)),
            Payload::Ipv6 { source, .. } => net.contains(&IpAddr::V6(*source)),
            _ => false,
        },
        Match::ArpSender(mac, address) => {
            !frame.tagged
                && matches!(p, Payload::Arp { sender_mac, sender } if sender_mac == mac && sender == address)
        }
        Match::ArpSenderAddress(address) => {
            !frame.tagged && matches!(p, Payload::Arp { sender, .. } if sender == address)
        }
        Match::Icmpv6Type(low, high) => {
            !frame.tagged
                && matches!(p, Payload::Ipv6 { icmp: Some((t, _)), .. } if (low..=high).contains(&t))
        }
        Match::NeighbourTarget(target) => {
            matches!(p, Payload::Ipv6 { icmp: Some((_, t)), .. } if t == target)
        }
        Match::InputInterface(pattern) => match pattern.strip_suffix('*') {
            Some(stem) => frame.port.starts_with(stem),
            None => frame.port == *pattern,
        },
        // The audit chain's rate: whether the frame is logged, never whether it passes.
        Match::Limit { .. } => true,
        other => panic!("{other:?} is not a bridge table's match"),
    }
}

/// Whether `ruleset` (a bridge table) lets `frame` pass its prerouting hook.
fn passes(ruleset: &Ruleset, frame: &Frame) -> bool {
    assert_eq!(ruleset.family, TableFamily::Bridge);
    run(ruleset, &ChainName::Prerouting, frame, 0) != Some(Verdict::Drop)
}

fn run(ruleset: &Ruleset, chain: &ChainName, frame: &Frame, depth: usize) -> Option<Verdict> {
    assert!(depth < 8, "chain loop");
    for rule in &ruleset.chain(chain).expect("target chain exists").rules {
        if !rule.matches.iter().all(|m| holds(frame, m)) {
            continue;
        }
        let verdict = match &rule.action {
            Action::Verdict(v) => v.clone(),
            Action::VerdictMap(MapKey::InputInterface, map) => {
                match &ruleset.set(map).expect("map exists").content {
                    SetContent::InterfaceVerdictMap(m) => match m.get(&frame.port) {
                        Some(v) => v.clone(),
                        None => continue,
                    },
                    _ => panic!("vmap on a set of another kind"),
                }
            }
            Action::Log { .. } => continue,
            other => panic!("{other:?} in a bridge table"),
        };
        match verdict {
            Verdict::Accept | Verdict::Drop => return Some(verdict),
            Verdict::Goto(target) => return run(ruleset, &target, frame, depth + 1),
            Verdict::Deny(reason) => {
                return run(ruleset, &ChainName::Audit(reason), frame, depth + 1)
            }
            other => panic!("{other:?} in a bridge table"),
        }
    }
    None
}

fn mac(last: u8) -> MacAddr {
    MacAddr([0x02, 0x42, 0x0a, 0, 0, last])
}

fn bound(i: u8) -> BoundPort {
    let mac = mac(i);
    BoundPort {
        port: format!("veth{i}"),
        mac,
        container: format!("c{i}"),
        network: "agents".into(),
        ipv4: vec![Ipv4Addr::new(10, 1, 0, i)],
        ipv6: vec![
            mac.ipv6_link_local(),
            format!("fd00:1::{i:x}").parse().unwrap(),
        ],
    }
}

fn guard(bound_count: u8) -> PortGuard {
    PortGuard {
        bound: (1..=bound_count).map(bound).collect(),
        unbound: ["vethlost".to_string(), "tap0".to_string()].into(),
        open: ["vethother".to_string()].into(),
        ..PortGuard::default()
    }
}

/// Every frame the container behind `port` sends as itself.
fn own_frames(port: &BoundPort) -> Vec<Frame> {
    let frame = |payload| Frame {
        port: port.port.clone(),
        source_mac: port.mac,
        tagged: false,
        payload,
    };
    let mut frames = Vec::new();
    for &v4 in &port.ipv4 {
        frames.push(frame(Payload::Ipv4 {
            source: v4,
            udp_source: Some(40000),
        }));
        frames.push(frame(Payload::Arp {
            sender_mac: port.mac,
            sender: v4,
        }));
    }
    for &v6 in &port.ipv6 {
        frames.push(frame(Payload::Ipv6 {
            source: v6,
            icmp: None,
            udp_source: None,
        }));
        frames.push(frame(Payload::Ipv6 {
            source: v6,
            icmp: Some((136, v6)),
            udp_source: None,
        }));
        frames.push(frame(Payload::Ipv6 {
            source: v6,
            icmp: Some((135, v6)),
            udp_source: None,
        }));
        let dad = Payload::Ipv6 {
            source: Ipv6Addr::UNSPECIFIED,
            icmp: Some((135, v6)),
            udp_source: None,
        };
        frames.push(frame(dad));
    }
    frames
}

/// Frames from `port` claiming `other`'s identity, or sending what no container may.
fn forged_frames(port: &BoundPort, other: &BoundPort) -> Vec<(Frame, &'static str)> {
    let frame = |source_mac, payload| Frame {
        port: port.port.clone(),
        source_mac,
        tagged: false,
        payload,
    };
    let tagged = |payload| Frame {
        tagged: true,
        ..frame(port.mac, payload)
    };
    let (own_v4, own_v6) = (port.ipv4[0], port.ipv6[1]);
    let (their_v4, their_v6) = (other.ipv4[0], other.ipv6[1]);
    vec![
        (
            frame(
                other.mac,
                Payload::Ipv4 {
                    source: own_v4,
                    udp_source: None,
                },
            ),
            "their MAC",
        ),
        (
            frame(
                port.mac,
                Payload::Ipv4 {
                    source: their_v4,
                    udp_source: None,
                },
            ),
            "their IPv4",
        ),
        (
            frame(
                port.mac,
                Payload::Arp {
                    sender_mac: port.mac,
                    sender: their_v4,
                },
            ),
            "ARP for their address",
        ),
        (
            frame(
                port.mac,
                Payload::Arp {
                    sender_mac: other.mac,
                    sender: their_v4,
                },
            ),
            "ARP as them",
        ),
        (
            frame(
                port.mac,
                Payload::Ipv6 {
                    source: their_v6,
                    icmp: None,
                    udp_source: None,
                },
            ),
            "their IPv6",
        ),
        (
            frame(
                port.mac,
                Payload::Ipv6 {
                    source: own_v6,
                    icmp: Some((136, their_v6)),
                    udp_source: None,
                },
            ),
            "NA for their address",
        ),
        (
            frame(
                port.mac,
                Payload::Ipv6 {
                    source: Ipv6Addr::UNSPECIFIED,
                    icmp: Some((135, their_v6)),
                    udp_source: None,
                },
            ),
            "DAD for their address",
        ),
        (
            frame(
                port.mac,
                Payload::Ipv6 {
                    source: port.ipv6[0],
                    icmp: Some((134, own_v6)),
                    udp_source: None,
                },
            ),
            "a router advertisement",
        ),
        (
            frame(
                port.mac,
                Payload::Ipv6 {
                    source: port.ipv6[0],
                    icmp: Some((137, own_v6)),
                    udp_source: None,
                },
            ),
            "a redirect",
        ),
        (
            frame(
                port.mac,
                Payload::Ipv4 {
                    source: own_v4,
                    udp_source: Some(67),
                },
            ),
            "a DHCP server message",
        ),
        (
            frame(
                port.mac,
                Payload::Ipv6 {
                    source: own_v6,
                    icmp: None,
                    udp_source: Some(547),
                },
            ),
            "a DHCPv6 server message",
        ),
        (frame(port.mac, Payload::Other), "another ethertype"),
        (
            tagged(Payload::Ipv6 {
                source: port.ipv6[0],
                icmp: Some((134, own_v6)),
                udp_source: None,
            }),
            "a tagged router advertisement",
        ),
        (
            tagged(Payload::Ipv6 {
                source: own_v6,
                icmp: Some((136, their_v6)),
                udp_source: None,
            }),
            "a tagged NA for their address",
        ),
        (
            tagged(Payload::Ipv4 {
                source: own_v4,
                udp_source: None,
            }),
            "a tagged frame as itself",
        ),
    ]
}

#[test]
fn a_bound_port_speaks_only_as_its_container() {
    let table = plan_ports(&TableSettings::default(), &guard(3));
    let (a, b) = (bound(1), bound(2));
    for frame in own_frames(&a) {
        assert!(passes(&table, &frame), "its own {frame:?}");
    }
    for (frame, what) in forged_frames(&a, &b) {
        assert!(!passes(&table, &frame), "{what}: {frame:?}");
    }
}

#[test]
fn unbound_unknown_and_open_ports() {
    let table = plan_ports(&TableSettings::default(), &guard(1));
    let own = own_frames(&bound(1));
    for (port, passes_expected) in [
        ("vethlost", false),    // a guarded bridge's port bound to no container
        ("tap0", false),        // the same, whatever its kind
        ("veth9a8b7c6", false), // a veth not sorted yet
        ("vethother", true),    // a port of a bridge the table does not guard
        ("eth1", true),         // not a veth, not known: not a container's port
    ] {
        for frame in &own {
            let frame = Frame {
                port: port.into(),
                ..frame.clone()
            };
            assert_eq!(passes(&table, &frame), passes_expected, "{port}: {frame:?}");
        }
    }
}

fn network(name: &str, internal: bool, bridge: &str, subnet: &str) -> DockerNetwork {
    DockerNetwork {
        id: format!("{name:0<64}"),
        name: name.into(),
        driver: "bridge".into(),
        internal,
        labels: BTreeMap::new(),
        options: [(
            "com.docker.network.bridge.name".to_string(),
            bridge.to_string(),
        )]
        .into(),
        subnets: vec![subnet.into()],
    }
}

fn container(name: &str, network: &DockerNetwork, ipv4: &str, mac: &str) -> DockerContainer {
    DockerContainer {
        id: format!("{name:0<64}"),
        name: name.into(),
        labels: BTreeMap::new(),
        endpoints: vec![DockerEndpoint {
            network_id: network.id.clone(),
            ipv4: ipv4.into(),
            ipv6: String::new(),
            mac: mac.into(),
        }],
    }
}

fn port(bridge: &str, name: &str, peer: Option<&str>) -> BridgePort {
    BridgePort {
        bridge: bridge.into(),
        name: name.into(),
        peer_mac: peer.map(|m| m.parse().unwrap()),
    }
}

#[test]
fn binding_follows_docker_and_refuses_what_is_ambiguous() {
    let agents = network("agents", true, "br-agents", "10.1.0.0/24");
    let plain = network("plain", false, "br-plain", "10.2.0.0/24");
    let state = DockerState::of(
        [agents.clone(), plain.clone()],
        [
            container("a", &agents, "10.1.0.2", "02:42:0a:01:00:02"),
            container("b", &agents, "10.1.0.3", "02:42:0a:01:00:03"),
            // Two containers claim one MAC: neither is bound.
            container("c", &agents, "10.1.0.4", "02:42:0a:01:00:04"),
            container("d", &agents, "10.1.0.5", "02:42:0a:01:00:04"),
            container("e", &agents, "10.1.0.6", "not a mac"),
            container("p", &plain, "10.2.0.2", "02:42:0a:02:00:02"),
        ],
    );
    let policy = Policy::embedded();
    let classified = classify(&policy, &state);
    let ports = [
        port("br-agents", "vetha", Some("02:42:0a:01:00:02")),
        // Two ports whose peers share b's MAC: neither is bound.
        port("br-agents", "vethb1", Some("02:42:0a:01:00:03")),
        port("br-agents", "vethb2", Some("02:42:0a:01:00:03")),
        port("br-agents", "vethc", Some("02:42:0a:01:00:04")),
        port("br-agents", "vethe", Some("02:42:0a:01:00:06")),
        port("br-agents", "tap0", None),
        port("br-agents", "veth:odd", Some("02:42:0a:01:00:02")),
        port("br-plain", "vethp", Some("02:42:0a:02:00:02")),
        // A bridge matching bridge_patterns that no network owns yet: guarded.
        port("br-0123456789ab", "vethnew", Some("02:42:0a:09:00:02")),
        port("virbr0", "vnet0", Some("52:54:00:00:00:01")),
    ];
    let patterns = &policy.table.unknown_interface_patterns;
    let (guard, skipped) = guard_ports(&classified, &state, patterns, &ports, &[]);
    let bound: Vec<(&str, &str, Vec<Ipv4Addr>)> = guard
        .bound
        .iter()
        .map(|b| (b.port.as_str(), b.container.as_str(), b.ipv4.clone()))
        .collect();
    assert_eq!(bound, [("vetha", "a", vec![Ipv4Addr::new(10, 1, 0, 2)])]);
    assert_eq!(
        guard.unbound,
        ["tap0", "veth:odd", "vethb1", "vethb2", "vethc", "vethe", "vethnew"]
            .map(String::from)
            .into_iter()
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(
        guard.open,
        ["vethp", "vnet0"].map(String::from).into_iter().collect()
    );
    let objects: Vec<&str> = skipped.iter().map(|s| s.object.as_str()).collect();
    for expected in [
        "bridge br-agents MAC 02:42:0a:01:00:03",
        "bridge br-agents MAC 02:42:0a:01:00:04",
        "container e",
        "port veth:odd",
    ] {
        assert!(objects.contains(&expected), "{expected} in {objects:?}");
    }
}

proptest! {
    /// Whatever the number of bound ports, each speaks only as itself: its own frames pass,
    /// frames claiming any other bound container's identity are dropped.
    #[test]
    fn every_bound_port_speaks_only_as_itself(count in 2u8..40, a in 1u8..40, b in 1u8..40) {
        let (a, b) = (a % count + 1, b % count + 1);
        prop_assume!(a != b);
        let table = plan_ports(&TableSettings::default(), &guard(count));
        let (a, b) = (bound(a), bound(b));
        for frame in own_frames(&a) {
            prop_assert!(passes(&table, &frame), "its own {:?}", frame);
        }
        for (frame, what) in forged_frames(&a, &b) {
            prop_assert!(!passes(&table, &frame), "{}: {:?}", what, frame);
        }
    }
}

/// A managed container that is also on an unmanaged network is bound on that network's bridge
/// too: it sends there only as itself (not from a free address of that network, which would
/// pass as unmanaged traffic); its unmanaged neighbour's port stays open.
#[test]
fn a_managed_container_is_bound_on_its_unmanaged_networks_too() {
    let agents = network("agents", true, "br-agents", "10.1.0.0/24");
    let plain = network("plain", false, "br-plain", "10.2.0.0/24");
    let mut dual = container("dual", &agents, "10.1.0.2", "02:42:0a:01:00:02");
    let mut on_plain = container("dual", &plain, "10.2.0.2", "02:42:0a:02:00:02").endpoints;
    on_plain[0].ipv6 = "fd00:2::2".into();
    dual.endpoints.extend(on_plain);
    let neighbour = container("n", &plain, "10.2.0.3", "02:42:0a:02:00:03");
    let state = DockerState::of([agents, plain], [dual, neighbour]);
    let policy = Policy::embedded();
    let classified = classify(&policy, &state);
    let ports = [
        port("br-agents", "vetha", Some("02:42:0a:01:00:02")),
        port("br-plain", "vethd", Some("02:42:0a:02:00:02")),
        port("br-plain", "vethn", Some("02:42:0a:02:00:03")),
    ];
    let patterns = &policy.table.unknown_interface_patterns;
    let (guard, skipped) = guard_ports(&classified, &state, patterns, &ports, &[]);
    assert!(skipped.is_empty(), "{skipped:?}");
    let bound: Vec<(&str, &str, &str)> = guard
        .bound
        .iter()
        .map(|b| (b.port.as_str(), b.container.as_str(), b.network.as_str()))
        .collect();
    assert_eq!(
        bound,
        [("vetha", "dual", "agents"), ("vethd", "dual", "plain")]
    );
    assert_eq!(guard.open, ["vethn".to_string()].into());
    let table = plan_ports(&TableSettings::default(), &guard);
    let on_plain = guard.bound.iter().find(|b| b.port == "vethd").unwrap();
    for frame in own_frames(on_plain) {
        assert!(passes(&table, &frame), "its own {frame:?}");
    }
    // A free address of plain, as another container would hold it.
    let free = BoundPort {
        port: "vethfree".into(),
        mac: "02:42:0a:02:00:63".parse().unwrap(),
        container: "nobody".into(),
        network: "plain".into(),
        ipv4: vec![Ipv4Addr::new(10, 2, 0, 99)],
        ipv6: vec![
            "fe80::42:aff:fe02:63".parse().unwrap(),
            "fd00:2::63".parse().unwrap(),
        ],
    };
    for (frame, what) in forged_frames(on_plain, &free) {
        assert!(!passes(&table, &frame), "{what}: {frame:?}");
    }
}

#[test]
fn a_newcomer_copying_a_bound_mac_does_not_unbind_its_owner() {
    let agents = network("agents", true, "br-agents", "10.1.0.0/24");
    let state = DockerState::of(
        [agents.clone()],
        [container("proxy", &agents, "10.1.0.2", "02:42:0a:01:00:02")],
    );
    let policy = Policy::embedded();
    let classified = classify(&policy, &state);
    let patterns = &policy.table.unknown_interface_patterns;
    let owner = port("br-agents", "vethproxy", Some("02:42:0a:01:00:02"));
    let (before, _) = guard_ports(
        &classified,
        &state,
        patterns,
        std::slice::from_ref(&owner),
        &[],
    );
    assert_eq!(before.bound.len(), 1);
    // An attacker with CAP_NET_ADMIN copies the proxy's MAC onto its own interface.
    let copy = port("br-agents", "vethattacker", Some("02:42:0a:01:00:02"));
    let both = [owner.clone(), copy.clone()];
    let (after, skipped) = guard_ports(&classified, &state, patterns, &both, &before.bound);
    assert_eq!(after.bound, before.bound, "the proxy keeps its port");
    assert!(after.unbound.contains("vethattacker"));
    assert!(
        skipped.iter().any(|s| s.object == "port vethattacker"),
        "{skipped:?}"
    );
    // Without that history, the MAC is ambiguous: neither is bound.
    let (fresh, _) = guard_ports(&classified, &state, patterns, &both, &[]);
    assert!(fresh.bound.is_empty());
}

/// ThreeGate's fetchnet and egressnet as a static policy without Docker, the proxy on both,
/// declaring `macs`.
fn static_threegate(macs: &str) -> Policy {
    let text = format!(
        "[docker]\nenabled = false\n\
         [[networks]]\nname = \"fetchnet\"\ninterface = \"br-fetch\"\n\
         subnets = [\"10.101.0.0/24\", \"fd00:101::/64\"]\n\
         [[networks]]\nname = \"egressnet\"\ninterface = \"br-egress\"\n\
         subnets = [\"10.102.0.0/24\", \"fd00:102::/64\"]\n\
         [[proxies]]\nname = \"proxy\"\n\
         addresses = [\"10.101.0.2\", \"fd00:101::2\", \"10.102.0.2\", \"fd00:102::2\"]\n\
         macs = [{macs}]\n"
    );
    Policy::parse(&text, "static.toml").unwrap()
}

#[test]
fn a_static_proxy_declaring_its_macs_is_bound_and_no_other_port_may_claim_it() {
    let (fetch_mac, egress_mac) = ("02:42:0a:65:00:02", "02:42:0a:66:00:02");
    let policy = static_threegate(&format!("\"{fetch_mac}\", \"{egress_mac}\""));
    let ports = [
        port("br-fetch", "vproxy0", Some(fetch_mac)),
        port("br-egress", "vproxy1", Some(egress_mac)),
        port("br-fetch", "vfetch0", Some("02:42:0a:65:00:09")),
        port("br-egress", "vbystand0", Some("02:42:0a:66:00:09")),
        port("br-other", "vethx", Some("02:42:0a:67:00:09")),
    ];
    let none = DockerState::default();
    let classified = classify(&policy, &none);
    let (tables, guard, skipped) = plan_tables(&policy, &classified, &none, &ports, &[]);
    assert!(skipped.is_empty(), "{skipped:?}");
    let bound: Vec<(&str, &str, &[Ipv4Addr])> = guard
        .bound
        .iter()
        .map(|b| (b.port.as_str(), b.network.as_str(), b.ipv4.as_slice()))
        .collect();
    assert_eq!(
        bound,
        [
            ("vproxy0", "fetchnet", &[Ipv4Addr::new(10, 101, 0, 2)][..]),
            ("vproxy1", "egressnet", &[Ipv4Addr::new(10, 102, 0, 2)][..]),
        ]
    );
    assert_eq!(
        guard.shared,
        ["vbystand0".to_string(), "vfetch0".to_string()].into()
    );
    assert_eq!(guard.open, ["vethx".to_string()].into());
    let table = tables
        .bridge
        .expect("a bridge table guards the static bridges");

    // The proxy speaks as itself on both bridges.
    for proxy in &guard.bound {
        for frame in own_frames(proxy) {
            assert!(passes(&table, &frame), "the proxy's own {frame:?}");
        }
    }
    // A neighbour on either bridge sends as itself, but never as the proxy.
    for (neighbour, proxy) in [("vfetch0", &guard.bound[0]), ("vbystand0", &guard.bound[1])] {
        let mut own = proxy.clone();
        own.port = neighbour.into();
        own.mac = ports
            .iter()
            .find(|p| p.name == neighbour)
            .unwrap()
            .peer_mac
            .unwrap();
        own.ipv4 = vec![Ipv4Addr::new(10, 101, 0, 9)];
        own.ipv6 = vec![own.mac.ipv6_link_local(), "fd00:101::9".parse().unwrap()];
        for frame in own_frames(&own) {
            assert!(passes(&table, &frame), "{neighbour}'s own {frame:?}");
        }
        // Resolving the proxy's address, before talking to it, passes.
        let resolve = Frame {
            port: neighbour.into(),
            source_mac: own.mac,
            tagged: false,
            payload: Payload::Ipv6 {
                source: own.ipv6[1],
                icmp: Some((135, proxy.ipv6[1])),
                udp_source: None,
            },
        };
        assert!(passes(&table, &resolve), "{neighbour} resolving the proxy");
        for (frame, what) in forged_frames(&own, proxy) {
            // Shared ports are held to no address of their own: only the proxy's identity,
            // and what no port may send, is refused.
            let not_refused = ["another ethertype", "a tagged frame as itself"];
            let expected = not_refused.contains(&what) && !frame.tagged;
            assert_eq!(
                passes(&table, &frame),
                expected,
                "{neighbour}: {what}: {frame:?}"
            );
        }
    }
    // A port of another bridge is left alone.
    let mut other = guard.bound[0].clone();
    other.port = "vethx".into();
    for (frame, what) in forged_frames(&other, &guard.bound[1]) {
        assert!(passes(&table, &frame), "vethx: {what}");
    }
}

#[test]
fn a_static_policy_without_macs_has_no_bridge_table_and_a_copied_mac_binds_nothing() {
    let none = DockerState::default();
    let plain = static_threegate("");
    let ports = [port("br-fetch", "vproxy0", Some("02:42:0a:65:00:02"))];
    let (tables, guard, _) = plan_tables(&plain, &classify(&plain, &none), &none, &ports, &[]);
    assert!(tables.bridge.is_none() && guard.bound.is_empty());

    let policy = static_threegate("\"02:42:0a:65:00:02\"");
    let copied = [
        port("br-fetch", "vproxy0", Some("02:42:0a:65:00:02")),
        port("br-fetch", "vcopy0", Some("02:42:0a:65:00:02")),
    ];
    let classified = classify(&policy, &none);
    let (_, guard, skipped) = plan_tables(&policy, &classified, &none, &copied, &[]);
    assert!(guard.bound.is_empty(), "{guard:?}");
    assert_eq!(
        guard.unbound,
        ["vcopy0".to_string(), "vproxy0".to_string()].into()
    );
    assert!(!skipped.is_empty());
    // With the proxy's port bound before, the copier stays unbound and the proxy keeps it.
    let (_, before, _) = plan_tables(&policy, &classified, &none, &copied[..1], &[]);
    let (_, after, _) = plan_tables(&policy, &classified, &none, &copied, &before.bound);
    assert_eq!(after.bound, before.bound);
    assert!(after.unbound.contains("vcopy0"));
}

#[test]
fn a_static_network_beside_docker_is_sorted_by_the_static_policy() {
    // Docker followed, and a static network on a bridge Docker does not know (br-* matches
    // the unknown-bridge pattern): its ports are not a Docker bridge's not classified yet.
    let text = "[[networks]]\nname = \"fetchnet\"\ninterface = \"br-fetch\"\n\
                subnets = [\"10.101.0.0/24\"]\n\
                [[proxies]]\nname = \"proxy\"\naddresses = [\"10.101.0.2\"]\n";
    let ports = [
        port("br-fetch", "vproxy0", Some("02:42:0a:65:00:02")),
        port("br-fetch", "vfetch0", Some("02:42:0a:65:00:09")),
    ];
    let none = DockerState::default();
    for (macs, bound, shared) in [("", 0, 0), ("macs = [\"02:42:0a:65:00:02\"]\n", 1, 1)] {
        let policy = Policy::parse(&format!("{text}{macs}"), "p.toml").unwrap();
        let classified = classify(&policy, &none);
        let (tables, guard, _) = plan_tables(&policy, &classified, &none, &ports, &[]);
        assert!(
            tables.bridge.is_some() && guard.unbound.is_empty(),
            "{macs}: {guard:?}"
        );
        assert_eq!(
            (guard.bound.len(), guard.shared.len()),
            (bound, shared),
            "{macs}"
        );
        assert_eq!(guard.open.len(), 2 - bound - shared, "{macs}");
    }
}
