//! Planner properties, checked on the ruleset value with a small reference evaluator that walks
//! chains the way netfilter does (first matching verdict wins, goto/jump/return, verdict maps).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use enforcer_core::names::ChainName;
use enforcer_core::planner::{plan, TableSettings};
use enforcer_core::policy::Policy;
use enforcer_core::render::script;
use enforcer_core::ruleset::{
    Action, AddressKey, CtState, Direction, Family, Hook, Match, Ruleset, SetContent, Verdict,
};
use enforcer_core::topology::{ManagedNetwork, Protocol, Proxy, Service, Topology};
use ipnet::IpNet;
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
struct Packet {
    src: IpAddr,
    dst: IpAddr,
    protocol: Protocol,
    dport: u16,
    state: Option<CtState>,
    /// Input interface.
    interface: &'static str,
}

#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// Our table did not drop it (accept, or fell through).
    Passed,
    Dropped,
}

fn masked(address: IpAddr, prefix_len: u8) -> IpAddr {
    IpNet::new(address, prefix_len).unwrap().network()
}

fn key_of(packet: &Packet, key: &AddressKey) -> Option<IpAddr> {
    let address = match key.direction {
        Direction::Source => packet.src,
        Direction::Destination => packet.dst,
    };
    (Family::of(address) == key.family).then(|| masked(address, key.prefix_len))
}

fn matches(ruleset: &Ruleset, packet: &Packet, m: &Match) -> bool {
    match m {
        Match::PairInSet(source, destination, set) => {
            let (Some(s), Some(d)) = (key_of(packet, source), key_of(packet, destination)) else {
                return false;
            };
            match &ruleset
                .set(set)
                .expect("rule names an existing set")
                .content
            {
                SetContent::AddressPairs(pairs) => pairs.contains(&(s, d)),
                _ => panic!("pair lookup in a set of another kind"),
            }
        }
        Match::CtState(states) => packet.state.is_some_and(|s| states.contains(&s)),
        Match::Icmpv6Type(..) => false, // the evaluator only models TCP and UDP
        Match::Address(direction, net) => {
            let address = match direction {
                Direction::Source => packet.src,
                Direction::Destination => packet.dst,
            };
            net.contains(&address)
        }
        Match::InSet(key, set) => key_of(packet, key).is_some_and(|k| {
            match &ruleset
                .set(set)
                .expect("rule names an existing set")
                .content
            {
                SetContent::Addresses(members) => members.contains(&k),
                SetContent::Counted(members) => members.contains_key(&k),
                _ => panic!("InSet on a set of another kind"),
            }
        }),
        Match::DestinationPort(protocol, port) => {
            *protocol == packet.protocol && *port == packet.dport
        }
        Match::InputInterface(pattern) => match pattern.strip_suffix('*') {
            Some(stem) => packet.interface.starts_with(stem),
            None => packet.interface == pattern,
        },
        Match::InputInterfaceInSet { set, negated } => {
            match &ruleset
                .set(set)
                .expect("rule names an existing set")
                .content
            {
                SetContent::InterfaceNames(names) => names.contains(packet.interface) != *negated,
                _ => panic!("interface lookup in a set of another kind"),
            }
        }
    }
}

/// Runs `chain`; returns the final verdict if one was reached (Accept or Drop), None to return.
fn run(ruleset: &Ruleset, chain: &ChainName, packet: &Packet, depth: usize) -> Option<Verdict> {
    assert!(depth < 16, "chain loop");
    let chain = ruleset.chain(chain).expect("jump target exists");
    for rule in &chain.rules {
        if !rule.matches.iter().all(|m| matches(ruleset, packet, m)) {
            continue;
        }
        let verdict = match &rule.action {
            Action::Verdict(v) => v.clone(),
            Action::VerdictMap(key, map) => {
                let Some(k) = key_of(packet, key) else {
                    continue;
                };
                match &ruleset.set(map).expect("map exists").content {
                    SetContent::VerdictMap(m) => match m.get(&k) {
                        Some(v) => v.clone(),
                        None => continue,
                    },
                    _ => panic!("vmap on a set of another kind"),
                }
            }
        };
        match verdict {
            Verdict::Accept | Verdict::Drop => return Some(verdict),
            Verdict::Return => return None,
            Verdict::Jump(target) => {
                if let Some(v) = run(ruleset, &target, packet, depth + 1) {
                    return Some(v);
                }
            }
            Verdict::Goto(target) => return run(ruleset, &target, packet, depth + 1),
        }
    }
    None
}

fn fate(ruleset: &Ruleset, hook: Hook, packet: &Packet) -> Fate {
    let base = ruleset
        .chains
        .iter()
        .find(|c| c.hook.map(|(h, _)| h) == Some(hook))
        .expect("base chain");
    match run(ruleset, &base.name, packet, 0) {
        Some(Verdict::Drop) => Fate::Dropped,
        _ => Fate::Passed,
    }
}

fn service(text: &str) -> Service {
    text.parse().unwrap()
}

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

fn tcp(src: &str, dst: &str, port: u16) -> Packet {
    Packet {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        protocol: Protocol::Tcp,
        dport: port,
        state: None,
        interface: bridge_of(src),
    }
}

/// The bridge a ThreeGate address sends through (as the namespace harness names them).
fn bridge_of(src: &str) -> &'static str {
    match src.split(['.', ':']).take(2).collect::<Vec<_>>()[..] {
        ["10", "100"] | ["fd00", "100"] => "br-llm",
        ["10", "101"] | ["fd00", "101"] => "br-fetch",
        ["10", "102"] | ["fd00", "102"] => "br-egress",
        _ => "eth0",
    }
}

fn on(interface: &'static str, mut packet: Packet) -> Packet {
    packet.interface = interface;
    packet
}

/// The embedded default policy's table settings, one managed network `m` on bridge `br-m`
/// (10.1.0.0/24) and two classified unmanaged bridges.
fn docker_like() -> Ruleset {
    let network = ManagedNetwork {
        name: "m".into(),
        subnets: vec!["10.1.0.0/24".parse().unwrap()],
        interface: Some("br-m".into()),
    };
    let topology = Topology::new(vec![network], vec![])
        .unwrap()
        .with_unmanaged_interfaces(["br-known".to_string(), "docker0".to_string()]);
    plan(&Policy::embedded().table, &topology)
}

#[test]
fn unclassified_bridges_are_denied_until_classified() {
    let rs = docker_like();
    let out = tcp("172.30.0.2", "203.0.113.10", 80);
    for (bridge, expected) in [
        ("br-new", Fate::Dropped),
        ("br-known", Fate::Passed),
        ("docker0", Fate::Passed),
        ("eth0", Fate::Passed),
        ("docker01", Fate::Passed),
    ] {
        assert_eq!(
            fate(&rs, Hook::Forward, &on(bridge, out)),
            expected,
            "{bridge}"
        );
    }
    let to_host = tcp("172.30.0.2", "172.30.0.1", 22);
    assert_eq!(
        fate(&rs, Hook::Input, &on("br-new", to_host)),
        Fate::Dropped
    );
    assert_eq!(
        fate(&rs, Hook::Input, &on("br-known", to_host)),
        Fate::Passed
    );
    // Replies of flows let through earlier still pass.
    let mut reply = on("br-new", out);
    reply.state = Some(CtState::Established);
    assert_eq!(fate(&rs, Hook::Forward, &reply), Fate::Passed);

    let mut settings = Policy::embedded().table;
    settings.unknown_interface_patterns.clear();
    let open = plan(&settings, &Topology::default());
    assert_eq!(fate(&open, Hook::Forward, &on("br-new", out)), Fate::Passed);
}

#[test]
fn a_forged_source_on_a_managed_bridge_is_dropped() {
    let rs = docker_like();
    let forged = on("br-m", tcp("203.0.113.7", "203.0.113.10", 443));
    assert_eq!(fate(&rs, Hook::Forward, &forged), Fate::Dropped);
    let forged_to_host = on("br-m", tcp("192.0.2.1", "10.1.0.1", 22));
    assert_eq!(fate(&rs, Hook::Input, &forged_to_host), Fate::Dropped);
    let inside = on("br-m", tcp("10.1.0.5", "10.1.0.6", 8080));
    assert_eq!(fate(&rs, Hook::Forward, &inside), Fate::Passed);
}

#[test]
fn threegate_matrix_on_the_model() {
    let (_, rs) = threegate();
    let internet = "203.0.113.10";
    let core = "10.100.0.10";
    let proxy_out = "10.102.0.2";
    let proxy_in = "10.101.0.2";
    let fetch_on_fetchnet = "10.101.0.5";
    assert_eq!(
        fate(&rs, Hook::Forward, &tcp(core, internet, 443)),
        Fate::Dropped
    );
    assert_eq!(
        fate(&rs, Hook::Forward, &tcp(core, "10.100.0.11", 22)),
        Fate::Passed
    );
    assert_eq!(
        fate(&rs, Hook::Forward, &tcp(fetch_on_fetchnet, proxy_in, 3128)),
        Fate::Passed
    );
    assert_eq!(
        fate(&rs, Hook::Forward, &tcp(fetch_on_fetchnet, proxy_out, 3128)),
        Fate::Dropped
    );
    assert_eq!(
        fate(&rs, Hook::Forward, &tcp(proxy_out, internet, 443)),
        Fate::Passed
    );
    assert_eq!(
        fate(&rs, Hook::Forward, &tcp(proxy_out, internet, 80)),
        Fate::Dropped
    );
    assert_eq!(
        fate(&rs, Hook::Forward, &tcp(proxy_out, core, 443)),
        Fate::Dropped
    );
    assert_eq!(
        fate(&rs, Hook::Forward, &tcp("fd00:102::2", "2001:db8::1", 443)),
        Fate::Passed
    );
    assert_eq!(
        fate(&rs, Hook::Forward, &tcp("fd00:100::10", "2001:db8::1", 443)),
        Fate::Dropped
    );
    let mut udp = tcp(proxy_out, internet, 53);
    udp.protocol = Protocol::Udp;
    assert_eq!(fate(&rs, Hook::Forward, &udp), Fate::Passed);
    udp.dport = 123;
    assert_eq!(fate(&rs, Hook::Forward, &udp), Fate::Dropped);
    // Host services: the gateway address and the host's uplink address.
    assert_eq!(
        fate(&rs, Hook::Input, &tcp(core, "10.100.0.1", 22)),
        Fate::Dropped
    );
    assert_eq!(
        fate(&rs, Hook::Input, &tcp(core, "203.0.113.1", 22)),
        Fate::Dropped
    );
    // Unmanaged sources and replies are untouched.
    assert_eq!(
        fate(&rs, Hook::Forward, &tcp("172.18.0.5", internet, 80)),
        Fate::Passed
    );
    let mut reply = tcp(core, internet, 80);
    reply.state = Some(CtState::Established);
    assert_eq!(fate(&rs, Hook::Forward, &reply), Fate::Passed);
}

#[test]
fn threegate_script_reads_like_the_readme() {
    let (_, rs) = threegate();
    let text = script(&rs);
    assert!(text.starts_with("table inet enforcer\ndelete table inet enforcer\n"));
    for needle in [
        "type filter hook forward priority -10; policy accept;",
                "ip6 saddr & ffff:ffff:ffff:ffff:: @egress_v6_64 drop",
        "10.101.0.0 comment \"fetchnet\"",
        "10.102.0.2 : jump proxy_proxy",
        "tcp dport 443 accept comment \"proxy proxy may reach tcp/443 outside the managed networks\"",
        "ip saddr & 255.255.255.0 . ip daddr & 255.255.255.0 @intra_v4_24_24 accept",
        "ip saddr & 255.255.255.0 @egress_v4_24 drop",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in\n{text}");
    }
}

#[test]
fn dns_servers_restrict_only_dns() {
    let network = ManagedNetwork {
        name: "e".into(),
        subnets: vec!["10.2.0.0/24".parse().unwrap()],
        interface: None,
    };
    let proxy = Proxy {
        name: "p".into(),
        addresses: vec!["10.2.0.2".parse().unwrap()],
        services: [service("tcp/443"), service("udp/53")].into(),
        dns_servers: vec!["203.0.113.53".parse().unwrap()],
    };
    let rs = plan(
        &TableSettings::default(),
        &Topology::new(vec![network], vec![proxy]).unwrap(),
    );
    let mut dns = tcp("10.2.0.2", "203.0.113.53", 53);
    dns.protocol = Protocol::Udp;
    assert_eq!(fate(&rs, Hook::Forward, &dns), Fate::Passed);
    dns.dst = "203.0.113.54".parse().unwrap();
    assert_eq!(fate(&rs, Hook::Forward, &dns), Fate::Dropped);
    assert_eq!(
        fate(&rs, Hook::Forward, &tcp("10.2.0.2", "198.51.100.1", 443)),
        Fate::Passed
    );
}

// ---- property tests -------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Case {
    topology: Topology,
    /// Every subnet, with its network's index.
    subnets: Vec<(IpNet, usize)>,
}

fn v4_subnet(n: u16, len: u8) -> IpNet {
    // One /16 slot per network (10.<n>.0.0), with a prefix of `len` >= 16: never overlapping.
    IpNet::new(IpAddr::V4(Ipv4Addr::new(10, n as u8, 0, 0)), len)
        .unwrap()
        .trunc()
}

fn v6_subnet(n: u16, len: u8) -> IpNet {
    IpNet::new(IpAddr::V6(Ipv6Addr::new(0xfd00, n, 0, 0, 0, 0, 0, 0)), len)
        .unwrap()
        .trunc()
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let network = (any::<bool>(), any::<bool>(), 16u8..=28, 32u8..=120);
    let networks = proptest::collection::vec(network, 1..8);
    let services = proptest::collection::btree_set(
        (
            prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)],
            1u16..=1024,
        )
            .prop_map(|(protocol, port)| Service { protocol, port }),
        0..5,
    );
    let proxies = proptest::collection::vec(
        (any::<prop::sample::Index>(), services, any::<bool>()),
        0..4,
    );
    (networks, proxies).prop_map(|(networks, proxies)| {
        let mut nets = Vec::new();
        let mut subnets = Vec::new();
        for (i, (has_v4, has_v6, len4, len6)) in networks.into_iter().enumerate() {
            let mut own = Vec::new();
            if has_v4 || !has_v6 {
                own.push(v4_subnet(i as u16, len4));
            }
            if has_v6 {
                own.push(v6_subnet(i as u16, len6));
            }
            subnets.extend(own.iter().map(|s| (*s, i)));
            nets.push(ManagedNetwork {
                name: format!("n{i}"),
                subnets: own,
                interface: None,
            });
        }
        let mut used = BTreeSet::new();
        let mut proxy_list = Vec::new();
        for (j, (index, services, dns)) in proxies.into_iter().enumerate() {
            let (subnet, _) = subnets[index.index(subnets.len())];
            let address = host(subnet, 2 + j as u128);
            if !used.insert(address) {
                continue;
            }
            proxy_list.push(Proxy {
                name: format!("p{j}"),
                addresses: vec![address],
                services,
                dns_servers: if dns {
                    vec!["192.0.2.53".parse().unwrap()]
                } else {
                    vec![]
                },
            });
        }
        Case {
            topology: Topology::new(nets, proxy_list).expect("generated topology is valid"),
            subnets,
        }
    })
}

fn host(subnet: IpNet, n: u128) -> IpAddr {
    match subnet {
        IpNet::V4(s) => IpAddr::V4(Ipv4Addr::from(u32::from(s.network()) + n as u32)),
        IpNet::V6(s) => IpAddr::V6(Ipv6Addr::from(u128::from(s.network()) + n)),
    }
}

fn outside(family: Family) -> IpAddr {
    match family {
        Family::V4 => "198.51.100.7".parse().unwrap(),
        Family::V6 => "2001:db8::7".parse().unwrap(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_managed_subnet_is_covered(case in case_strategy(), port in 1u16..=65535, udp in any::<bool>()) {
        let rs = plan(&TableSettings::default(), &case.topology);
        let proxy_addresses: BTreeSet<IpAddr> =
            case.topology.proxies().iter().flat_map(|p| p.addresses.clone()).collect();
        for (subnet, _) in &case.subnets {
            let src = host(*subnet, 9);
            prop_assume!(!proxy_addresses.contains(&src));
            let mut packet = tcp("0.0.0.0", "0.0.0.0", port);
            packet.src = src;
            packet.dst = outside(Family::of(src));
            if udp { packet.protocol = Protocol::Udp; }
            prop_assert_eq!(fate(&rs, Hook::Forward, &packet), Fate::Dropped, "{:?}", packet);
            prop_assert_eq!(fate(&rs, Hook::Input, &packet), Fate::Dropped, "{:?}", packet);
            // Inside its own network (any of its subnets of the same family), untouched.
            for (other, network) in &case.subnets {
                if *network == case.subnets.iter().find(|(s, _)| s == subnet).unwrap().1
                    && Family::of(other.addr()) == Family::of(src)
                {
                    packet.dst = host(*other, 10);
                    prop_assert_eq!(fate(&rs, Hook::Forward, &packet), Fate::Passed, "{:?}", packet);
                }
            }
            // Replies always pass.
            packet.dst = outside(Family::of(src));
            packet.state = Some(CtState::Established);
            prop_assert_eq!(fate(&rs, Hook::Forward, &packet), Fate::Passed, "{:?}", packet);
        }
    }

    #[test]
    fn a_proxy_never_gets_a_service_outside_its_list(case in case_strategy(), port in 1u16..=1024, udp in any::<bool>()) {
        let rs = plan(&TableSettings::default(), &case.topology);
        for proxy in case.topology.proxies() {
            for address in &proxy.addresses {
                let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
                let service = Service { protocol, port };
                let mut packet = Packet { src: *address, dst: outside(Family::of(*address)), protocol, dport: port, state: None, interface: "eth0" };
                let allowed = proxy.services.contains(&service)
                    && (proxy.dns_servers.is_empty() || !service.is_dns());
                let expected = if allowed { Fate::Passed } else { Fate::Dropped };
                prop_assert_eq!(fate(&rs, Hook::Forward, &packet), expected, "{:?}", packet);
                // Never toward another managed network, whatever the port.
                let own = case.subnets.iter().find(|(s, _)| s.contains(address)).map(|(_, n)| *n);
                for (subnet, network) in &case.subnets {
                    if Some(*network) != own {
                        packet.dst = host(*subnet, 9);
                        prop_assert_eq!(fate(&rs, Hook::Forward, &packet), Fate::Dropped, "{:?}", packet);
                    }
                }
            }
        }
    }

    #[test]
    fn output_is_deterministic(case in case_strategy(), seed in any::<u64>()) {
        let settings = TableSettings::default();
        let mut networks = case.topology.networks().to_vec();
        let mut proxies = case.topology.proxies().to_vec();
        // A deterministic shuffle of both lists and of each network's subnets.
        let rotate = |n: usize| if n == 0 { 0 } else { (seed as usize) % n };
        let r = rotate(networks.len());
        networks.rotate_left(r);
        networks.reverse();
        for n in &mut networks { n.subnets.reverse(); }
        let r = rotate(proxies.len());
        proxies.rotate_left(r);
        let shuffled = Topology::new(networks, proxies).unwrap();
        prop_assert_eq!(script(&plan(&settings, &case.topology)), script(&plan(&settings, &shuffled)));
        prop_assert_eq!(plan(&settings, &case.topology), plan(&settings, &case.topology));
    }

    #[test]
    fn ipv4_and_ipv6_are_symmetric(case in case_strategy()) {
        // Map every IPv4 subnet and address into ::ffff:0:0/96-like space (fd00:4::/96 + v4),
        // drop the IPv6 ones, and compare the two rulesets with addresses and tags erased.
        let to_v6 = |a: IpAddr| match a {
            IpAddr::V4(v4) => IpAddr::V6(Ipv6Addr::from((0xfd00_0004u128 << 96) | u128::from(u32::from(v4)))),
            v6 => v6,
        };
        let v4_only: Vec<ManagedNetwork> = case.topology.networks().iter().map(|n| ManagedNetwork {
            name: n.name.clone(),
            subnets: n.subnets.iter().copied().filter(|s| matches!(s, IpNet::V4(_))).collect(),
            interface: None,
        }).collect();
        let mapped: Vec<ManagedNetwork> = v4_only.iter().map(|n| ManagedNetwork {
            name: n.name.clone(),
            subnets: n.subnets.iter().map(|s| IpNet::new(to_v6(s.addr()), s.prefix_len() + 96).unwrap()).collect(),
            interface: None,
        }).collect();
        let v4_proxies: Vec<Proxy> = case.topology.proxies().iter().filter(|p| p.addresses.iter().all(|a| a.is_ipv4())).cloned().collect();
        let v6_proxies: Vec<Proxy> = v4_proxies.iter().map(|p| Proxy { addresses: p.addresses.iter().map(|a| to_v6(*a)).collect(), ..p.clone() }).collect();
        let settings = TableSettings::default();
        let a = plan(&settings, &Topology::new(v4_only, v4_proxies).unwrap());
        let b = plan(&settings, &Topology::new(mapped, v6_proxies).unwrap());
        prop_assert_eq!(shape(&a, Family::V4), shape(&b, Family::V6));
    }
}

/// The ruleset with every address, family and prefix length erased.
fn shape(rs: &Ruleset, family: Family) -> Vec<String> {
    let erase = |text: String| {
        let mut out = text.replace(&format!("_{}", family.tag()), "_vX");
        for len in (0..=128u32).rev() {
            out = out.replace(&format!("_{len}"), "_L");
        }
        out
    };
    let mut lines = Vec::new();
    for set in &rs.sets {
        lines.push(erase(format!("set {} {}", set.name, set.content.len())));
    }
    for chain in &rs.chains {
        lines.push(format!("chain {}", chain.name));
        for rule in &chain.rules {
            let matches: Vec<String> = rule
                .matches
                .iter()
                .map(|m| match m {
                    Match::Address(d, _) => format!("addr {d:?}"),
                    Match::InSet(k, s) => erase(format!("inset {:?} {s}", k.direction)),
                    Match::PairInSet(a, b, s) => {
                        erase(format!("pair {:?} {:?} {s}", a.direction, b.direction))
                    }
                    other => format!("{other:?}"),
                })
                .collect();
            let action = match &rule.action {
                Action::VerdictMap(k, m) => erase(format!("vmap {:?} {m}", k.direction)),
                Action::Verdict(v) => format!("{v:?}"),
            };
            lines.push(erase(format!("{matches:?} {} {action}", rule.counter)));
        }
    }
    lines
}
