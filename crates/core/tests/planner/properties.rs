//! Properties of the planner over generated topologies, checked with the evaluator.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use enforcer_core::planner::{plan, TableSettings};
use enforcer_core::render::script;
use enforcer_core::ruleset::{Action, CtState, Family, Hook, MapKey, Match, Ruleset};
use enforcer_core::topology::{ManagedNetwork, Protocol, Proxy, Service, Topology};
use ipnet::IpNet;
use proptest::prelude::*;

use crate::evaluator::{fate, tcp, Fate, Packet};

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
                east_west: Default::default(),
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
                macs: vec![],
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
                let mut packet = Packet { src: *address, dst: outside(Family::of(*address)), protocol, dport: port, state: None, interface: "eth0", out_interface: "" };
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
            east_west: Default::default(),
        }).collect();
        let mapped: Vec<ManagedNetwork> = v4_only.iter().map(|n| ManagedNetwork {
            name: n.name.clone(),
            subnets: n.subnets.iter().map(|s| IpNet::new(to_v6(s.addr()), s.prefix_len() + 96).unwrap()).collect(),
            interface: None,
            east_west: Default::default(),
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
                Action::VerdictMap(MapKey::Address(k), m) => {
                    erase(format!("vmap {:?} {m}", k.direction))
                }
                Action::VerdictMap(MapKey::InputInterface, m) => format!("vmap iifname {m}"),
                Action::VerdictMap(MapKey::InputInterfaceAndSource(_), m) => {
                    erase(format!("vmap iifname saddr {m}"))
                }
                Action::Verdict(v) => format!("{v:?}"),
                Action::RecordInterface(side, set) => format!("record {side:?} {set}"),
                Action::Log { group, prefix } => format!("log {group} {prefix}"),
            };
            lines.push(erase(format!("{matches:?} {} {action}", rule.counter)));
        }
    }
    lines
}
