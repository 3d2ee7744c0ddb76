//! ThreeGate on the model: `rules/threegate.toml` planned, checked against the spec
//! (`threegate-spec`) that the namespace and Docker tests build, and against hand-picked
//! packets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use enforcer_core::planner::plan;
use enforcer_core::policy::Policy;
use enforcer_core::render::script;
use enforcer_core::ruleset::{CtState, Hook, Ruleset};
use enforcer_core::topology::Protocol;
use threegate_spec::matrix::flows;
use threegate_spec::{
    host_uplink, internet, Family, Proto, Role, CONTAINERS, EGRESSNET, FETCHNET, LLMNET, NETWORKS,
};

use crate::evaluator::{bridge_of, fate, Fate, Packet};

fn threegate() -> (Policy, Ruleset) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../rules/threegate.toml"
    ))
    .unwrap();
    let policy = Policy::parse(&text, "threegate.toml").unwrap();
    let ruleset = plan(&policy.table, &policy.static_topology);
    (policy, ruleset)
}

/// `rules/threegate.toml` is a shipped policy and the spec is the topology the tests build:
/// neither is generated from the other (the spec's crate doc says why), so they are checked
/// here to agree: the same managed networks with the same bridges and subnets, the same
/// proxies with the same addresses.
#[test]
fn the_spec_agrees_with_rules_threegate_toml() {
    let (policy, _) = threegate();
    let topology = &policy.static_topology;
    let mut declared: Vec<&str> = topology
        .networks()
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    let mut managed: Vec<&str> = NETWORKS
        .iter()
        .filter(|n| n.managed())
        .map(|n| n.name)
        .collect();
    declared.sort();
    managed.sort();
    assert_eq!(declared, managed, "managed networks");
    for network in NETWORKS.iter().filter(|n| n.managed()) {
        let file = topology
            .networks()
            .iter()
            .find(|n| n.name == network.name)
            .expect("checked above");
        assert_eq!(
            file.interface.as_deref(),
            Some(network.bridge),
            "{}",
            network.name
        );
        let mut subnets = file.subnets.clone();
        subnets.sort();
        let mut spec = Family::BOTH.map(|f| network.subnet(f)).to_vec();
        spec.sort();
        assert_eq!(subnets, spec, "{}", network.name);
    }
    let proxies: Vec<_> = CONTAINERS
        .iter()
        .filter(|c| c.role == Role::EgressProxy)
        .collect();
    assert_eq!(topology.proxies().len(), proxies.len(), "proxies");
    for proxy in proxies {
        let file = topology
            .proxies()
            .iter()
            .find(|p| p.name == proxy.name)
            .unwrap_or_else(|| panic!("no proxy {} in rules/threegate.toml", proxy.name));
        let mut addresses = file.addresses.clone();
        addresses.sort();
        let mut spec = proxy.addresses();
        spec.sort();
        assert_eq!(addresses, spec, "{}", proxy.name);
    }
}

/// Every flow of the spec's matrix (the one the namespace and Docker tests measure with real
/// packets) has its expected fate on the planned ruleset.
#[test]
fn the_spec_matrix_holds_on_the_model() {
    let (_, rs) = threegate();
    for flow in flows() {
        let packet = Packet {
            src: flow.source(),
            dst: flow.destination(),
            protocol: match flow.service.proto {
                Proto::Tcp => Protocol::Tcp,
                Proto::Udp => Protocol::Udp,
            },
            dport: flow.service.port,
            state: None,
            interface: flow.source_network().bridge,
            out_interface: "",
        };
        let hook = if flow.to_host() {
            Hook::Input
        } else {
            Hook::Forward
        };
        let expected = if flow.allowed() {
            Fate::Passed
        } else {
            Fate::Dropped
        };
        assert_eq!(fate(&rs, hook, &packet), expected, "{flow}: {packet:?}");
    }
}

#[test]
fn threegate_matrix_on_the_model() {
    use Fate::{Dropped, Passed};
    use Hook::{Forward, Input};
    use Protocol::{Tcp, Udp};
    let (_, rs) = threegate();
    let v4 = Family::V4;
    let internet = internet(v4);
    let core = LLMNET.host(10, v4);
    let proxy_out = EGRESSNET.host(2, v4);
    let proxy_in = FETCHNET.host(2, v4);
    let fetch_on_fetchnet = FETCHNET.host(5, v4);
    let elsewhere_v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    let unmanaged = IpAddr::V4(Ipv4Addr::new(172, 18, 0, 5));
    let (new, established) = (None, Some(CtState::Established));
    #[rustfmt::skip]
    let rows = [
        // (source, destination, protocol, port, hook, state, fate)
        (core, internet, Tcp, 443, Forward, new, Dropped),
        (core, LLMNET.host(11, v4), Tcp, 22, Forward, new, Passed),
        (fetch_on_fetchnet, proxy_in, Tcp, 3128, Forward, new, Passed),
        (fetch_on_fetchnet, proxy_out, Tcp, 3128, Forward, new, Dropped),
        (proxy_out, internet, Tcp, 443, Forward, new, Passed),
        (proxy_out, internet, Tcp, 80, Forward, new, Dropped),
        (proxy_out, core, Tcp, 443, Forward, new, Dropped),
        (EGRESSNET.host(2, Family::V6), elsewhere_v6, Tcp, 443, Forward, new, Passed),
        (LLMNET.host(0x10, Family::V6), elsewhere_v6, Tcp, 443, Forward, new, Dropped),
        (proxy_out, internet, Udp, 53, Forward, new, Passed),
        (proxy_out, internet, Udp, 123, Forward, new, Dropped),
        // Host services: the gateway address and the host's uplink address.
        (core, LLMNET.gateway(v4), Tcp, 22, Input, new, Dropped),
        (core, host_uplink(v4), Tcp, 22, Input, new, Dropped),
        // Unmanaged sources and replies are untouched.
        (unmanaged, internet, Tcp, 80, Forward, new, Passed),
        (core, internet, Tcp, 80, Forward, established, Passed),
    ];
    for (src, dst, protocol, dport, hook, state, expected) in rows {
        let packet = Packet {
            src,
            dst,
            protocol,
            dport,
            state,
            interface: bridge_of(src),
            out_interface: "",
        };
        assert_eq!(fate(&rs, hook, &packet), expected, "{packet:?} at {hook:?}");
    }
}

#[test]
fn threegate_script_reads_like_the_readme() {
    let (_, rs) = threegate();
    let text = script(&rs);
    assert!(text.starts_with("table inet enforcer\ndelete table inet enforcer\n"));
    for needle in [
        "type filter hook forward priority -10; policy accept;",
                "ip6 saddr & ffff:ffff:ffff:ffff:: @egress_v6_64 goto audit_egress",
        "10.101.0.0 comment \"fetchnet\"",
        "10.102.0.2 : jump proxy_proxy",
        "tcp dport 443 accept comment \"proxy proxy may reach tcp/443 outside the managed networks\"",
        "ip saddr & 255.255.255.0 . ip daddr & 255.255.255.0 @intra_v4_24_24 accept",
        "ip saddr & 255.255.255.0 @egress_v4_24 goto audit_egress",
        "limit rate 100/second burst 100 packets log prefix \"enforcer:egress\" group 7",
        "ip daddr & 255.255.255.0 @managed_v4_24 goto audit_east_west",
        "log prefix \"enforcer:east_west\" group 7",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in\n{text}");
    }
}
