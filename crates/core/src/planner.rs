//! (table settings, topology) -> the desired [`Ruleset`].
//!
//! Shape of the table (see the README for the reasoning):
//! - `forward` and `input` base chains accept replies, let IPv6 neighbour discovery through, and
//!   classify packets by *source* with one lookup per prefix length present: a verdict map sends
//!   each managed subnet to its network's chain, so the per-packet cost does not grow with the
//!   number of subnets.
//! - Traffic that stays inside one network passes: one lookup of (source prefix . destination
//!   prefix) in a set of pairs per pair of prefix lengths, whatever the number of networks.
//! - `net_<name>`: proxies get their allowance, and everything else leaving the network is
//!   counted and dropped (one counter per network).
//! - `host_from_managed`: managed networks may not open connections to the host.
//! - `proxy_egress` and `proxy_<name>`: a proxy may open only its allowed services, only toward
//!   destinations outside every managed subnet.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::ruleset::{
    Action, AddressKey, Chain, CtState, Direction, Family, Hook, Match, Rule, Ruleset, Set,
    SetContent, Verdict,
};
use crate::topology::{ManagedNetwork, Proxy, Topology};

/// Where the table lives and where its base chains hook in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSettings {
    /// Name of the `inet` table.
    pub name: String,
    /// Priority of the `forward` base chain (Docker's filter chains sit at 0).
    pub forward_priority: i32,
    /// Priority of the `input` base chain.
    pub input_priority: i32,
}

impl Default for TableSettings {
    fn default() -> Self {
        TableSettings {
            name: "enforcer".into(),
            forward_priority: -10,
            input_priority: -10,
        }
    }
}

/// Name of the chain that holds network `name`'s egress decisions.
pub fn network_chain(name: &str) -> String {
    format!("net_{name}")
}

/// Name of the chain that holds proxy `name`'s allowed services.
pub fn proxy_chain(name: &str) -> String {
    format!("proxy_{name}")
}

/// Name of the plain set of managed subnets of one family and prefix length.
pub fn managed_set(family: Family, prefix_len: u8) -> String {
    format!("managed_{}_{prefix_len}", family.tag())
}

/// Name of the verdict map from managed subnets of one family and prefix length to their chains.
pub fn classify_map(family: Family, prefix_len: u8) -> String {
    format!("from_managed_{}_{prefix_len}", family.tag())
}

/// Name of the set of (source subnet . destination subnet) pairs inside one network, for one
/// family and pair of prefix lengths.
pub fn intra_set(family: Family, source_len: u8, destination_len: u8) -> String {
    format!("intra_{}_{source_len}_{destination_len}", family.tag())
}

/// Name of the verdict map from proxy addresses of one family to their chains.
pub fn proxies_map(family: Family) -> String {
    format!("proxies_{}", family.tag())
}

/// Chain for managed traffic addressed to the host itself.
pub const HOST_CHAIN: &str = "host_from_managed";
/// Chain shared by every network that holds a proxy.
pub const PROXY_EGRESS_CHAIN: &str = "proxy_egress";

/// Computes the whole desired table. Deterministic: the order of networks, subnets and proxies in
/// `topology` does not change the result.
pub fn plan(settings: &TableSettings, topology: &Topology) -> Ruleset {
    let mut networks: Vec<&ManagedNetwork> = topology.networks().iter().collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    let mut proxies: Vec<&Proxy> = topology.proxies().iter().collect();
    proxies.sort_by(|a, b| a.name.cmp(&b.name));

    // (family, prefix length) -> subnet network address -> owning network's chain.
    let mut by_prefix: BTreeMap<(Family, u8), BTreeMap<IpAddr, Verdict>> = BTreeMap::new();
    for network in &networks {
        for subnet in &network.subnets {
            by_prefix
                .entry((Family::of(subnet.addr()), subnet.prefix_len()))
                .or_default()
                .insert(
                    subnet.network(),
                    Verdict::Goto(network_chain(&network.name)),
                );
        }
    }
    let mut proxy_maps: BTreeMap<Family, BTreeMap<IpAddr, Verdict>> = BTreeMap::new();
    for proxy in &proxies {
        for address in &proxy.addresses {
            proxy_maps
                .entry(Family::of(*address))
                .or_default()
                .insert(*address, Verdict::Goto(proxy_chain(&proxy.name)));
        }
    }
    let has_proxies = !proxy_maps.is_empty();
    // (family, source length, destination length) -> pairs of subnets of one network.
    let mut pairs: BTreeMap<(Family, u8, u8), BTreeSet<(IpAddr, IpAddr)>> = BTreeMap::new();
    for network in &networks {
        for source in &network.subnets {
            for destination in &network.subnets {
                if Family::of(source.addr()) == Family::of(destination.addr()) {
                    pairs
                        .entry((
                            Family::of(source.addr()),
                            source.prefix_len(),
                            destination.prefix_len(),
                        ))
                        .or_default()
                        .insert((source.network(), destination.network()));
                }
            }
        }
    }

    let mut sets = Vec::new();
    for ((family, prefix_len), members) in &by_prefix {
        sets.push(Set {
            name: managed_set(*family, *prefix_len),
            family: *family,
            content: SetContent::Addresses(members.keys().copied().collect()),
        });
        sets.push(Set {
            name: classify_map(*family, *prefix_len),
            family: *family,
            content: SetContent::VerdictMap(members.clone()),
        });
    }
    for (&(family, source, destination), members) in &pairs {
        sets.push(Set {
            name: intra_set(family, source, destination),
            family,
            content: SetContent::AddressPairs(members.clone()),
        });
    }
    for (family, members) in &proxy_maps {
        sets.push(Set {
            name: proxies_map(*family),
            family: *family,
            content: SetContent::VerdictMap(members.clone()),
        });
    }

    let prefixes: Vec<(Family, u8)> = by_prefix.keys().copied().collect();
    let mut chains = vec![
        forward_chain(
            settings,
            &prefixes,
            &pairs.keys().copied().collect::<Vec<_>>(),
        ),
        input_chain(settings, &prefixes),
        host_chain(has_proxies),
    ];
    if has_proxies {
        chains.push(proxy_egress_chain(&prefixes, proxy_maps.keys().copied()));
    }
    chains.extend(proxies.iter().map(|p| proxy_rules(p)));
    let proxy_addresses: BTreeSet<IpAddr> = proxies
        .iter()
        .flat_map(|p| p.addresses.iter().copied())
        .collect();
    chains.extend(networks.iter().map(|n| network_rules(n, &proxy_addresses)));

    Ruleset {
        table: settings.name.clone(),
        sets,
        chains,
    }
}

fn rule(matches: Vec<Match>, verdict: Verdict, comment: impl Into<String>) -> Rule {
    Rule {
        matches,
        counter: false,
        action: Action::Verdict(verdict),
        comment: comment.into(),
    }
}

fn key(family: Family, direction: Direction, prefix_len: u8) -> AddressKey {
    AddressKey {
        family,
        direction,
        prefix_len,
    }
}

fn replies_rule() -> Rule {
    rule(
        vec![Match::CtState(vec![CtState::Established, CtState::Related])],
        Verdict::Accept,
        "replies and related ICMP of flows this table let through",
    )
}

fn neighbour_discovery_rule() -> Rule {
    rule(
        vec![Match::Icmpv6Type(133, 137)],
        Verdict::Accept,
        "IPv6 neighbour discovery never leaves the link",
    )
}

fn forward_chain(
    settings: &TableSettings,
    prefixes: &[(Family, u8)],
    pair_lengths: &[(Family, u8, u8)],
) -> Chain {
    let mut rules = vec![replies_rule()];
    for (multicast, comment) in [
        (
            "ff02::/16",
            "link-local multicast (neighbour discovery) never leaves the link",
        ),
        ("224.0.0.0/24", "link-local multicast never leaves the link"),
    ] {
        let net = multicast.parse().expect("constant prefix");
        rules.push(rule(
            vec![Match::Address(Direction::Destination, net)],
            Verdict::Accept,
            comment,
        ));
    }
    rules.extend(pair_lengths.iter().map(|&(family, source, destination)| {
        rule(
            vec![Match::PairInSet(
                key(family, Direction::Source, source),
                key(family, Direction::Destination, destination),
                intra_set(family, source, destination),
            )],
            Verdict::Accept,
            "source and destination in the same network: stays inside it",
        )
    }));
    rules.extend(prefixes.iter().map(|&(family, len)| Rule {
        matches: vec![],
        counter: false,
        action: Action::VerdictMap(
            key(family, Direction::Source, len),
            classify_map(family, len),
        ),
        comment: format!("a packet from a managed /{len} goes to its network's chain"),
    }));
    Chain {
        name: "forward".into(),
        hook: Some((Hook::Forward, settings.forward_priority)),
        rules,
    }
}

fn input_chain(settings: &TableSettings, prefixes: &[(Family, u8)]) -> Chain {
    let mut rules = vec![replies_rule(), neighbour_discovery_rule()];
    rules.extend(prefixes.iter().map(|&(family, len)| {
        rule(
            vec![Match::InSet(
                key(family, Direction::Source, len),
                managed_set(family, len),
            )],
            Verdict::Goto(HOST_CHAIN.into()),
            format!("a managed /{len} opening a connection to the host itself"),
        )
    }));
    Chain {
        name: "input".into(),
        hook: Some((Hook::Input, settings.input_priority)),
        rules,
    }
}

fn host_chain(has_proxies: bool) -> Chain {
    let mut rules = Vec::new();
    if has_proxies {
        rules.push(rule(
            vec![],
            Verdict::Jump(PROXY_EGRESS_CHAIN.into()),
            "proxies may reach their allowed services on host addresses outside managed subnets",
        ));
    }
    rules.push(Rule {
        matches: vec![],
        counter: true,
        action: Action::Verdict(Verdict::Drop),
        comment: "managed networks must not reach host services".into(),
    });
    Chain {
        name: HOST_CHAIN.into(),
        hook: None,
        rules,
    }
}

fn proxy_egress_chain(prefixes: &[(Family, u8)], families: impl Iterator<Item = Family>) -> Chain {
    let mut rules = vec![rule(
        vec![Match::CtState(vec![CtState::Invalid])],
        Verdict::Return,
        "an invalid packet is never proxy egress",
    )];
    rules.extend(prefixes.iter().map(|&(family, len)| {
        rule(
            vec![Match::InSet(
                key(family, Direction::Destination, len),
                managed_set(family, len),
            )],
            Verdict::Return,
            format!("a managed /{len} destination is never proxy egress"),
        )
    }));
    rules.extend(families.map(|family| Rule {
        matches: vec![],
        counter: false,
        action: Action::VerdictMap(
            key(family, Direction::Source, family.bits()),
            proxies_map(family),
        ),
        comment: "a proxy address goes to its proxy's chain".into(),
    }));
    Chain {
        name: PROXY_EGRESS_CHAIN.into(),
        hook: None,
        rules,
    }
}

fn proxy_rules(proxy: &Proxy) -> Chain {
    let mut rules = Vec::new();
    for service in &proxy.services {
        let port = Match::DestinationPort(service.protocol, service.port);
        if service.is_dns() && !proxy.dns_servers.is_empty() {
            for server in &proxy.dns_servers {
                rules.push(rule(
                    vec![
                        port.clone(),
                        Match::Address(Direction::Destination, (*server).into()),
                    ],
                    Verdict::Accept,
                    format!("proxy {} may ask resolver {server} ({service})", proxy.name),
                ));
            }
        } else {
            rules.push(rule(
                vec![port],
                Verdict::Accept,
                format!(
                    "proxy {} may reach {service} outside the managed networks",
                    proxy.name
                ),
            ));
        }
    }
    Chain {
        name: proxy_chain(&proxy.name),
        hook: None,
        rules,
    }
}

fn network_rules(network: &ManagedNetwork, proxy_addresses: &BTreeSet<IpAddr>) -> Chain {
    let mut rules = Vec::new();
    if network
        .subnets
        .iter()
        .any(|s| proxy_addresses.iter().any(|a| s.contains(a)))
    {
        rules.push(rule(
            vec![],
            Verdict::Jump(PROXY_EGRESS_CHAIN.into()),
            format!(
                "proxies on network {} get their allowed services",
                network.name
            ),
        ));
    }
    rules.push(Rule {
        matches: vec![],
        counter: true,
        action: Action::Verdict(Verdict::Drop),
        comment: format!("egress from managed network {} is denied", network.name),
    });
    Chain {
        name: network_chain(&network.name),
        hook: None,
        rules,
    }
}
