//! A small reference evaluator that walks a ruleset's chains the way netfilter does (first
//! matching verdict wins, goto/jump/return, verdict maps), and packets to walk it with.

use std::net::IpAddr;

use enforcer_core::flows::FlowPoint;
use enforcer_core::names::ChainName;
use enforcer_core::ruleset::{
    Action, AddressKey, CtState, Direction, Family, Hook, MapKey, Match, Ruleset, SetContent,
    Verdict,
};
use enforcer_core::topology::Protocol;
use ipnet::IpNet;
use threegate_spec::NETWORKS;

/// A packet, as far as the table looks at it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Packet {
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) protocol: Protocol,
    pub(crate) dport: u16,
    pub(crate) state: Option<CtState>,
    /// Input interface.
    pub(crate) interface: &'static str,
    /// Output interface (empty: none yet, or not looked at).
    pub(crate) out_interface: &'static str,
}

/// What the table did to a packet.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fate {
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
        Match::FlowInSet(address, set) => {
            let side = address.map(|(family, direction)| {
                let side = match direction {
                    Direction::Source => packet.src,
                    Direction::Destination => packet.dst,
                };
                (family, side)
            });
            if side.is_some_and(|(family, side)| Family::of(side) != family) {
                return false;
            }
            let protocol = packet.protocol.number();
            match &ruleset.set(set).expect("set exists").content {
                SetContent::Flows(flows) => flows.iter().any(|f| {
                    let address = f.addresses.map_or(true, |(first, last)| {
                        side.is_some_and(|(_, side)| (first..=last).contains(&side))
                    });
                    address
                        && (f.protocols.0..=f.protocols.1).contains(&protocol)
                        && (f.ports.0..=f.ports.1).contains(&packet.dport)
                }),
                SetContent::FlowPoints(flows) => flows.contains(&FlowPoint {
                    address: side.map(|(_, side)| side),
                    protocol,
                    port: packet.dport,
                }),
                _ => panic!("flow lookup in a set of another kind"),
            }
        }
        Match::CtState(states) => packet.state.is_some_and(|s| states.contains(&s)),
        // The evaluator only models TCP and UDP.
        Match::Icmpv6Type(..) | Match::HopLimit(_) => false,
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
        Match::InputInterface(pattern) => name_matches(pattern, packet.interface),
        Match::OutputInterface(pattern) => name_matches(pattern, packet.out_interface),
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
        Match::SourcePort(..)
        | Match::SourceMac { .. }
        | Match::ArpSender(..)
        | Match::ArpSenderAddress(_)
        | Match::EtherType(_)
        | Match::NeighbourTarget(_) => panic!("a bridge table's match in the inet table"),
    }
}

/// Whether interface `name` matches `pattern` (a trailing `*` matches any suffix).
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(stem) => name.starts_with(stem),
        None => name == pattern,
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
            Action::RecordInterface(..) => Verdict::Continue,
            Action::VerdictMap(MapKey::InputInterface, _) => {
                panic!("a bridge table's port map in the inet table")
            }
            Action::VerdictMap(MapKey::Address(key), map) => {
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
            Action::VerdictMap(MapKey::InputInterfaceAndSource(family), map) => {
                if Family::of(packet.src) != *family {
                    continue;
                }
                match &ruleset.set(map).expect("map exists").content {
                    SetContent::InterfaceAddressVerdictMap(m) => {
                        match m.get(&(packet.interface.to_string(), packet.src)) {
                            Some(v) => v.clone(),
                            None => continue,
                        }
                    }
                    _ => panic!("vmap on a set of another kind"),
                }
            }
        };
        match verdict {
            Verdict::Accept | Verdict::Drop => return Some(verdict),
            Verdict::Return => return None,
            Verdict::Continue => {}
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

/// What our table does to `packet` at `hook`.
pub(crate) fn fate(ruleset: &Ruleset, hook: Hook, packet: &Packet) -> Fate {
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

/// A new TCP packet from `src` to `dst`:`port`, entering from [`bridge_of`] `src`.
pub(crate) fn tcp(src: &str, dst: &str, port: u16) -> Packet {
    let src: IpAddr = src.parse().unwrap();
    Packet {
        src,
        dst: dst.parse().unwrap(),
        protocol: Protocol::Tcp,
        dport: port,
        state: None,
        interface: bridge_of(src),
        out_interface: "",
    }
}

/// The bridge a ThreeGate address sends through: the bridge of the managed network holding
/// it (as the namespace harness names them), `eth0` for any other address.
pub(crate) fn bridge_of(src: IpAddr) -> &'static str {
    NETWORKS
        .iter()
        .filter(|n| n.managed())
        .find(|n| {
            threegate_spec::Family::BOTH
                .iter()
                .any(|f| n.subnet(*f).contains(&src))
        })
        .map_or("eth0", |n| n.bridge)
}

/// `packet`, entering from `interface`.
pub(crate) fn on(interface: &'static str, mut packet: Packet) -> Packet {
    packet.interface = interface;
    packet
}
