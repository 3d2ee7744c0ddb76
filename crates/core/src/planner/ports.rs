//! (table settings, port guard) -> the desired `bridge` table: what each bridge port may send.
//!
//! Shape of the table:
//! - `prerouting` (hook prerouting, before every other bridge table) looks the input port up in
//!   the `ports` verdict map: a bound port goes to its own chain, an open port (of a bridge this
//!   table does not guard) is accepted, an unbound one goes to `unbound_port`. A port the map
//!   does not hold yet and whose name matches `unknown_port_patterns` (a veth that appeared a
//!   moment ago) goes to `unbound_port` too: there is no window before the agent sorts it.
//! - `port_<name>`: the container speaks only as itself. Its source MAC, the sender of its ARP,
//!   the source of its IPv4 and IPv6 packets, the target of its neighbour advertisements and of
//!   its duplicate address detection are its own; router advertisements, redirects and DHCP or
//!   DHCPv6 server messages are never its to send. Each drop is counted in that chain, so the
//!   counters name the container.
//! - `unbound_port`: drops and counts everything.
//! - `shared_port` (only when a static proxy declares its MACs): a port of a static network's
//!   bridge that no declared proxy owns may send anything but a declared proxy's identity (its
//!   MACs, its addresses as a source, as an ARP sender, as a neighbour advertisement's or
//!   duplicate address detection's target), and no router advertisement, redirect, DHCP or
//!   DHCPv6 server message, nor a VLAN tag. Its rules grow with the declared proxies'
//!   addresses (a few, from the policy file), never with ports or containers.
//!
//! Per frame: one map lookup, then a chain whose length depends on the container's own
//! addresses only (a few), never on the number of ports.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

use crate::binding::{BoundPort, PortGuard, Reserved};
use crate::names::{ChainName, SetName};
use crate::nft_syntax;
use crate::ruleset::{
    Action, Chain, Direction, DropReason, EtherType, Hook, MapKey, Match, Rule, Ruleset, Set,
    SetContent, SetKey, TableFamily, Verdict,
};
use crate::topology::Protocol;

use super::{rule, TableSettings};

/// ICMPv6 neighbour solicitation.
const NEIGHBOUR_SOLICITATION: u8 = 135;
/// ICMPv6 neighbour advertisement.
const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
/// ICMPv6 router advertisement.
const ROUTER_ADVERTISEMENT: u8 = 134;
/// ICMPv6 redirect.
const REDIRECT: u8 = 137;
/// ICMPv6 multicast listener report, version 2.
const MLD2_REPORT: u8 = 143;

/// Computes the whole bridge table. Deterministic: `guard`'s order does not matter.
pub fn plan_ports(settings: &TableSettings, guard: &PortGuard) -> Ruleset {
    let mut bound: Vec<&BoundPort> = guard.bound.iter().collect();
    bound.sort_by(|a, b| a.port.cmp(&b.port));
    let mut verdicts: std::collections::BTreeMap<String, Verdict> = guard
        .open
        .iter()
        .map(|p| (p.clone(), Verdict::Accept))
        .collect();
    verdicts.extend(
        guard
            .unbound
            .iter()
            .map(|p| (p.clone(), Verdict::Goto(ChainName::UnboundPort))),
    );
    verdicts.extend(
        guard
            .shared
            .iter()
            .map(|p| (p.clone(), Verdict::Goto(ChainName::SharedPort))),
    );
    verdicts.extend(bound.iter().map(|b| {
        (
            b.port.clone(),
            Verdict::Goto(ChainName::Port(b.port.clone())),
        )
    }));
    let mut prerouting = vec![Rule {
        matches: vec![],
        counter: false,
        action: Action::VerdictMap(MapKey::InputInterface, SetName::Ports),
        comment: "each port's frames meet its own chain (bound), pass (open) or are dropped".into(),
    }];
    prerouting.extend(settings.unknown_port_patterns.iter().map(|pattern| {
        rule(
            vec![Match::InputInterface(pattern.clone())],
            Verdict::Goto(ChainName::UnboundPort),
            "a port enforcer has not sorted yet: it sends nothing until it has",
        )
    }));
    let mut chains = vec![
        Chain {
            name: ChainName::Prerouting,
            hook: Some((Hook::Prerouting, settings.bridge_priority)),
            rules: prerouting,
        },
        Chain {
            name: ChainName::UnboundPort,
            hook: None,
            rules: vec![Rule {
                matches: vec![],
                counter: true,
                action: Action::Verdict(Verdict::Deny(DropReason::UnknownBridge)),
                comment: "a port of a guarded bridge bound to no container: it sends nothing"
                    .into(),
            }],
        },
    ];
    if !guard.shared.is_empty() {
        chains.push(shared_port_chain(&guard.reserved));
    }
    chains.extend(bound.iter().map(|b| port_chain(b)));
    let mut table = Ruleset {
        family: TableFamily::Bridge,
        table: settings.name.clone(),
        sets: vec![Set {
            name: SetName::Ports,
            key: SetKey::InterfaceName,
            content: SetContent::InterfaceVerdictMap(verdicts),
        }],
        chains,
    };
    super::audit::attach(&settings.audit, &mut table);
    table
}

/// The packet's source is exactly `address`.
fn from(address: impl Into<IpAddr>) -> Match {
    Match::Address(Direction::Source, IpNet::from(address.into()))
}

/// A counted drop, its comment naming the container.
fn dropped(port: &BoundPort, matches: Vec<Match>, what: &str) -> Rule {
    Rule {
        matches,
        counter: true,
        action: Action::Verdict(Verdict::Deny(DropReason::Spoofing)),
        comment: nft_syntax::comment(&format!("{}: {what}", port.container)),
    }
}

/// The chain of one bound port: what no container may send, then what it may send as
/// itself over IPv4 and ARP, then over IPv6, then a counted drop of anything else.
fn port_chain(port: &BoundPort) -> Chain {
    let mut rules = vec![dropped(
        port,
        vec![Match::SourceMac {
            mac: port.mac,
            negated: true,
        }],
        "a source MAC not its own",
    )];
    rules.extend(never_from_a_port(|matches, what| {
        dropped(port, matches, what)
    }));
    rules.extend(ipv4_rules(port));
    rules.extend(ipv6_rules(port));
    rules.push(dropped(
        port,
        vec![],
        "any other frame (an address not its own, another protocol)",
    ));
    Chain {
        name: ChainName::Port(port.port.clone()),
        hook: None,
        rules,
    }
}

/// The drops every guarded port meets, whoever sends: VLAN tags, DHCP and DHCPv6 server
/// messages, router advertisements and redirects; each built by `drop` from its matches and
/// what it is.
fn never_from_a_port(drop: impl Fn(Vec<Match>, &str) -> Rule) -> Vec<Rule> {
    let mut rules = Vec::new();
    // A tagged frame: the kernel untags it into metadata, so the address rules would see its
    // inner packet while the ICMPv6 ones would not; and no container needs a VLAN.
    for tag in [EtherType::Vlan, EtherType::ServiceVlan] {
        rules.push(drop(vec![Match::EtherType(tag)], "a VLAN-tagged frame"));
    }
    // DHCP and DHCPv6 server messages, by either end (clients filter on their own port).
    for (matches, what) in [
        (
            Match::SourcePort(Protocol::Udp, 67),
            "a DHCP server message",
        ),
        (
            Match::DestinationPort(Protocol::Udp, 68),
            "a DHCP message to a client",
        ),
        (
            Match::SourcePort(Protocol::Udp, 547),
            "a DHCPv6 server message",
        ),
        (
            Match::DestinationPort(Protocol::Udp, 546),
            "a DHCPv6 message to a client",
        ),
    ] {
        rules.push(drop(vec![matches], what));
    }
    rules
}

/// What a port no declared proxy owns may not send on a static network's bridge; anything
/// else passes.
fn shared_port_chain(reserved: &Reserved) -> Chain {
    let drop = |matches: Vec<Match>, what: &str| Rule {
        matches,
        counter: true,
        action: Action::Verdict(Verdict::Deny(DropReason::Spoofing)),
        comment: format!("a port no declared proxy owns: {what}"),
    };
    let mut rules: Vec<Rule> = reserved
        .macs
        .iter()
        .map(|&mac| {
            let matches = vec![Match::SourceMac {
                mac,
                negated: false,
            }];
            drop(matches, "a declared proxy's MAC")
        })
        .collect();
    rules.extend(never_from_a_port(drop));
    rules.push(drop(
        vec![icmpv6(ROUTER_ADVERTISEMENT)],
        "a router advertisement",
    ));
    rules.push(drop(vec![icmpv6(REDIRECT)], "an ICMPv6 redirect"));
    for &address in &reserved.ipv4 {
        rules.push(drop(vec![from(address)], "a declared proxy's IPv4 address"));
        rules.push(drop(
            vec![Match::ArpSenderAddress(address)],
            "ARP as a declared proxy",
        ));
    }
    for &address in &reserved.ipv6 {
        rules.push(drop(
            vec![
                icmpv6(NEIGHBOUR_ADVERTISEMENT),
                Match::NeighbourTarget(address),
            ],
            "an advertisement of a declared proxy's address",
        ));
        // Duplicate address detection of it (from ::); resolving it, as a neighbour does
        // before talking to the proxy, passes.
        rules.push(drop(
            vec![
                from(Ipv6Addr::UNSPECIFIED),
                icmpv6(NEIGHBOUR_SOLICITATION),
                Match::NeighbourTarget(address),
            ],
            "duplicate address detection of a declared proxy's address",
        ));
        rules.push(drop(vec![from(address)], "a declared proxy's IPv6 address"));
    }
    rules.push(rule(
        vec![],
        Verdict::Accept,
        "a port no declared proxy owns: anything else",
    ));
    Chain {
        name: ChainName::SharedPort,
        hook: None,
        rules,
    }
}

/// An accept whose comment names the container.
fn allowed(port: &BoundPort, matches: Vec<Match>, what: String) -> Rule {
    rule(
        matches,
        Verdict::Accept,
        format!("{}: {what}", port.container),
    )
}

fn icmpv6(kind: u8) -> Match {
    Match::Icmpv6Type(kind, kind)
}

/// IPv4 from its own addresses, and ARP whose sender is itself.
fn ipv4_rules(port: &BoundPort) -> Vec<Rule> {
    let mut rules = Vec::new();
    for &address in &port.ipv4 {
        rules.push(allowed(
            port,
            vec![from(address)],
            format!("IPv4 from its own {address}"),
        ));
        rules.push(allowed(
            port,
            vec![Match::ArpSender(port.mac, address)],
            format!("ARP as itself ({address})"),
        ));
    }
    rules
}

/// No router advertisement or redirect; neighbour advertisements and duplicate address
/// detection only for its own addresses; IPv6 from its own addresses.
fn ipv6_rules(port: &BoundPort) -> Vec<Rule> {
    let mut rules = vec![
        dropped(
            port,
            vec![icmpv6(ROUTER_ADVERTISEMENT)],
            "a router advertisement",
        ),
        dropped(port, vec![icmpv6(REDIRECT)], "an ICMPv6 redirect"),
    ];
    for &target in &port.ipv6 {
        for &source in &port.ipv6 {
            rules.push(allowed(
                port,
                vec![
                    icmpv6(NEIGHBOUR_ADVERTISEMENT),
                    Match::NeighbourTarget(target),
                    from(source),
                ],
                format!("neighbour advertisement for its own {target}"),
            ));
        }
    }
    rules.push(dropped(
        port,
        vec![icmpv6(NEIGHBOUR_ADVERTISEMENT)],
        "a neighbour advertisement for an address not its own",
    ));
    let unspecified = Ipv6Addr::UNSPECIFIED;
    for &target in &port.ipv6 {
        rules.push(allowed(
            port,
            vec![
                from(unspecified),
                icmpv6(NEIGHBOUR_SOLICITATION),
                Match::NeighbourTarget(target),
            ],
            format!("duplicate address detection of its own {target}"),
        ));
    }
    rules.push(allowed(
        port,
        vec![from(unspecified), icmpv6(MLD2_REPORT)],
        "multicast listener report before it has an address".into(),
    ));
    for &address in &port.ipv6 {
        rules.push(allowed(
            port,
            vec![from(address)],
            format!("IPv6 from its own {address}"),
        ));
    }
    rules
}
