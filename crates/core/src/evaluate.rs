//! The inet table as netfilter runs it: a packet walked through a planned [`Ruleset`]'s chains
//! (the first matching verdict wins; jump, goto and return; verdict maps), to learn what the
//! table does to it and which rule decides. The daemon asks it which established connections
//! a tightened table would no longer admit; the planner's tests use it as their reference
//! (`crates/core/tests/planner`), and the kernel tests check it against real packets.
//!
//! It models what the inet table looks at in a TCP or UDP packet: addresses, ports, interfaces,
//! the conntrack state. The bridge and arp tables' matches (MAC addresses, ARP fields) and
//! ICMPv6 fields never match here.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::flows::FlowPoint;
use crate::names::ChainName;
use crate::ruleset::{
    Action, AddressKey, CtState, Direction, Family, Hook, MapKey, Match, Rule, Ruleset, SetContent,
    Verdict,
};
use crate::topology::Protocol;

/// Jumps netfilter follows at most (deeper rulesets are refused when loaded).
const MAX_DEPTH: usize = 16;

/// A packet, as far as the inet table looks at it.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Destination port.
    pub dport: u16,
    /// Its conntrack state; `None` for the first packet of a connection (`ct state new`).
    pub state: Option<CtState>,
    /// Input interface.
    pub interface: &'a str,
    /// Output interface (empty: none yet, or not looked at).
    pub out_interface: &'a str,
}

/// What the table does to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The table did not drop it (it accepted it, or its base chain's policy did).
    Passed,
    /// The table dropped it.
    Dropped,
}

/// What the table does to a packet, and the rule that decided (none: the base chain's
/// policy, or no base chain at that hook).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'r> {
    /// Passed or dropped.
    pub fate: Fate,
    /// The rule whose verdict it was.
    pub rule: Option<&'r Rule>,
    /// The chain holding that rule.
    pub chain: Option<&'r ChainName>,
}

/// What `ruleset` does to `packet` at `hook`, and which rule decides.
pub fn decide<'r>(ruleset: &'r Ruleset, hook: Hook, packet: &Packet<'_>) -> Decision<'r> {
    let base = ruleset
        .chains
        .iter()
        .find(|c| c.hook.map(|(h, _)| h) == Some(hook));
    let (fate, decided) = match base.and_then(|base| run(ruleset, &base.name, packet, 0)) {
        Some((Verdict::Drop, decided)) => (Fate::Dropped, decided),
        Some((_, decided)) => (Fate::Passed, decided),
        None => (Fate::Passed, None),
    };
    Decision {
        fate,
        rule: decided.map(|(_, rule)| rule),
        chain: decided.map(|(chain, _)| chain),
    }
}

/// What `ruleset` does to `packet` at `hook`.
pub fn fate(ruleset: &Ruleset, hook: Hook, packet: &Packet<'_>) -> Fate {
    decide(ruleset, hook, packet).fate
}

/// Runs `chain`: the final verdict (accept or drop) and its rule (with the rule's chain) if
/// one was reached, `None` to return to the caller. Past [`MAX_DEPTH`] jumps the packet is
/// dropped (the kernel would have refused such a table).
fn run<'r>(
    ruleset: &'r Ruleset,
    chain: &ChainName,
    packet: &Packet<'_>,
    depth: usize,
) -> Option<(Verdict, Option<(&'r ChainName, &'r Rule)>)> {
    if depth >= MAX_DEPTH {
        return Some((Verdict::Drop, None));
    }
    let chain = ruleset.chain(chain)?;
    for rule in &chain.rules {
        if !rule.matches.iter().all(|m| matches(ruleset, packet, m)) {
            continue;
        }
        let Some(verdict) = action_verdict(ruleset, packet, &rule.action) else {
            continue;
        };
        match verdict {
            Verdict::Accept | Verdict::Drop => return Some((verdict, Some((&chain.name, rule)))),
            // The audit chain logs (or not, over its rate) and drops: the denying rule decides.
            Verdict::Deny(_) => return Some((Verdict::Drop, Some((&chain.name, rule)))),
            Verdict::Return => return None,
            Verdict::Continue => {}
            Verdict::Jump(target) => {
                if let Some(decided) = run(ruleset, &target, packet, depth + 1) {
                    return Some(decided);
                }
            }
            Verdict::Goto(target) => return run(ruleset, &target, packet, depth + 1),
        }
    }
    None
}

/// The verdict of a matching rule's action; `None` when a verdict map has no entry for the
/// packet (evaluation goes on with the next rule).
fn action_verdict(ruleset: &Ruleset, packet: &Packet<'_>, action: &Action) -> Option<Verdict> {
    let content = |map| ruleset.set(map).map(|s| &s.content);
    match action {
        Action::Verdict(verdict) => Some(verdict.clone()),
        Action::RecordInterface(..) | Action::Log { .. } => Some(Verdict::Continue),
        Action::VerdictMap(MapKey::Address(key), map) => match content(map)? {
            SetContent::VerdictMap(entries) => entries.get(&key_of(packet, key)?).cloned(),
            _ => None,
        },
        Action::VerdictMap(MapKey::InputInterfaceAndSource(family), map) => {
            if Family::of(packet.src) != *family {
                return None;
            }
            match content(map)? {
                SetContent::InterfaceAddressVerdictMap(entries) => entries
                    .get(&(packet.interface.to_string(), packet.src))
                    .cloned(),
                _ => None,
            }
        }
        Action::VerdictMap(MapKey::InputInterface, map) => match content(map)? {
            SetContent::InterfaceVerdictMap(entries) => entries.get(packet.interface).cloned(),
            _ => None,
        },
    }
}

/// The packet's address on `key`'s side, masked to its prefix; `None` for the other family.
fn key_of(packet: &Packet<'_>, key: &AddressKey) -> Option<IpAddr> {
    let address = side(packet, key.direction);
    let masked = IpNet::new(address, key.prefix_len).ok()?.network();
    (Family::of(address) == key.family).then_some(masked)
}

fn side(packet: &Packet<'_>, direction: Direction) -> IpAddr {
    match direction {
        Direction::Source => packet.src,
        Direction::Destination => packet.dst,
    }
}

/// Whether match `m` of a rule of `ruleset` holds for `packet`. A set the table lacks, or of
/// another kind, counts as empty: a lookup in it does not match, a negated one does (the
/// planner writes neither).
fn matches(ruleset: &Ruleset, packet: &Packet<'_>, m: &Match) -> bool {
    let content = |set| ruleset.set(set).map(|s| &s.content);
    match m {
        // Only a log rule carries it, and a log rule decides nothing.
        Match::Limit { .. } => true,
        Match::PairInSet(source, destination, set) => {
            let (Some(s), Some(d)) = (key_of(packet, source), key_of(packet, destination)) else {
                return false;
            };
            matches!(content(set), Some(SetContent::AddressPairs(pairs)) if pairs.contains(&(s, d)))
        }
        Match::FlowInSet(address, set) => flow_in_set(packet, *address, content(set)),
        Match::CtState(states) => packet.state.is_some_and(|s| states.contains(&s)),
        Match::Address(direction, net) => net.contains(&side(packet, *direction)),
        Match::InSet(key, set) => key_of(packet, key).is_some_and(|k| match content(set) {
            Some(SetContent::Addresses(members)) => members.contains(&k),
            Some(SetContent::Counted(members)) => members.contains_key(&k),
            _ => false,
        }),
        Match::DestinationPort(protocol, port) => {
            *protocol == packet.protocol && *port == packet.dport
        }
        Match::InputInterface(pattern) => name_matches(pattern, packet.interface),
        Match::OutputInterface(pattern) => name_matches(pattern, packet.out_interface),
        Match::InputInterfaceInSet { set, negated } => match content(set) {
            Some(SetContent::InterfaceNames(names)) => names.contains(packet.interface) != *negated,
            _ => *negated,
        },
        // A TCP or UDP packet has no ICMPv6 type; neighbour discovery's hop limit is checked
        // only together with one.
        Match::Icmpv6Type(..) | Match::HopLimit(_) => false,
        // Only the bridge and arp tables use these.
        Match::SourcePort(..)
        | Match::SourceMac { .. }
        | Match::ArpSender(..)
        | Match::ArpSenderAddress(_)
        | Match::EtherType(_)
        | Match::NeighbourTarget(_) => false,
    }
}

/// Whether the packet's flow (its address on that side, protocol, destination port) is in a
/// flow set.
fn flow_in_set(
    packet: &Packet<'_>,
    address: Option<(Family, Direction)>,
    content: Option<&SetContent>,
) -> bool {
    let address = match address {
        Some((family, direction)) => {
            let address = side(packet, direction);
            if Family::of(address) != family {
                return false;
            }
            Some(address)
        }
        None => None,
    };
    let protocol = packet.protocol.number();
    match content {
        Some(SetContent::Flows(flows)) => flows.iter().any(|f| {
            let within = match (f.addresses, address) {
                (Some((first, last)), Some(address)) => (first..=last).contains(&address),
                (None, _) => true,
                (Some(_), None) => false,
            };
            within
                && (f.protocols.0..=f.protocols.1).contains(&protocol)
                && (f.ports.0..=f.ports.1).contains(&packet.dport)
        }),
        Some(SetContent::FlowPoints(flows)) => flows.contains(&FlowPoint {
            address,
            protocol,
            port: packet.dport,
        }),
        _ => false,
    }
}

/// Whether interface `name` matches `pattern` (a trailing `*` matches any suffix).
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(stem) => name.starts_with(stem),
        None => name == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::{Chain, TableFamily};

    fn rule(matches: Vec<Match>, verdict: Verdict, comment: &str) -> Rule {
        Rule {
            matches,
            counter: false,
            action: Action::Verdict(verdict),
            comment: comment.into(),
        }
    }

    /// forward: ssh dropped; everything else into `from_managed`, which returns for tcp/80
    /// and accepts the rest; what returns falls to the policy.
    fn ruleset() -> Ruleset {
        Ruleset {
            family: TableFamily::Inet,
            table: "t".into(),
            sets: Vec::new(),
            chains: vec![
                Chain {
                    name: ChainName::Forward,
                    hook: Some((Hook::Forward, 0)),
                    rules: vec![
                        rule(
                            vec![Match::DestinationPort(Protocol::Tcp, 22)],
                            Verdict::Drop,
                            "no ssh",
                        ),
                        rule(vec![], Verdict::Jump(ChainName::FromManaged), "sorted"),
                    ],
                },
                Chain {
                    name: ChainName::FromManaged,
                    hook: None,
                    rules: vec![
                        rule(
                            vec![Match::DestinationPort(Protocol::Tcp, 80)],
                            Verdict::Return,
                            "web goes back",
                        ),
                        rule(vec![], Verdict::Accept, "the rest"),
                    ],
                },
            ],
        }
    }

    fn tcp(port: u16) -> Packet<'static> {
        Packet {
            src: "10.0.0.2".parse().unwrap(),
            dst: "10.0.1.2".parse().unwrap(),
            protocol: Protocol::Tcp,
            dport: port,
            state: None,
            interface: "br0",
            out_interface: "",
        }
    }

    #[test]
    fn the_deciding_rule_is_named_through_jumps_and_returns() {
        let table = ruleset();
        let decided = |port| {
            let decision = decide(&table, Hook::Forward, &tcp(port));
            (decision.fate, decision.rule.map(|r| r.comment.as_str()))
        };
        assert_eq!(decided(22), (Fate::Dropped, Some("no ssh")));
        assert_eq!(decided(443), (Fate::Passed, Some("the rest")));
        // Returned to forward, which has nothing more: the chain's policy accepts.
        assert_eq!(decided(80), (Fate::Passed, None));
        // No base chain at that hook: the table does nothing.
        assert_eq!(decide(&table, Hook::Input, &tcp(22)).fate, Fate::Passed);
    }

    #[test]
    fn a_chain_loop_is_cut_and_drops() {
        let mut table = ruleset();
        table.chains[1].rules.insert(
            0,
            rule(vec![], Verdict::Jump(ChainName::FromManaged), "loop"),
        );
        assert_eq!(fate(&table, Hook::Forward, &tcp(443)), Fate::Dropped);
    }
}
