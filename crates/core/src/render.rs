//! [`Ruleset`] -> `nft` script. The script replaces the table atomically when loaded with
//! `nft -f` (create if missing, delete, define: one transaction), which makes it both the
//! `apply --dry-run` output and a reference load for the benchmarks and tests. [`tables_script`]
//! does the same for every table at once (one `nft -f`, one transaction).

use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::flows::{FlowPoint, FlowRange};
use crate::names::ChainName;
use crate::ruleset::{
    Action, AddressKey, Chain, CtState, Direction, Family, MapKey, Match, Rule, Ruleset, Set,
    SetContent, SetKey, Side, TableFamily, Tables, Verdict,
};

/// The full script: `table`, `delete table`, then the table's definition.
pub fn script(ruleset: &Ruleset) -> String {
    let mut out = String::new();
    let (family, table) = (ruleset.family.name(), &ruleset.table);
    let _ = writeln!(out, "table {family} {table}\ndelete table {family} {table}");
    out.push_str(&table_text(ruleset));
    out
}

/// The script of every table: each [`script`] in turn, and for a family that has no table, the
/// deletion of enforcer's table of that name (created first, so the script loads whether it
/// exists or not).
pub fn tables_script(tables: &Tables) -> String {
    let mut out = String::new();
    for family in TableFamily::ALL {
        match tables.iter().find(|t| t.family == family) {
            Some(ruleset) => out.push_str(&script(ruleset)),
            None => {
                let (family, table) = (family.name(), &tables.inet.table);
                let _ = writeln!(out, "table {family} {table}\ndelete table {family} {table}");
            }
        }
    }
    out
}

/// The table's definition alone, as `nft list table` would show it.
pub fn table_text(ruleset: &Ruleset) -> String {
    let mut out = format!("table {} {} {{\n", ruleset.family.name(), ruleset.table);
    for set in &ruleset.sets {
        out.push_str(&set_text(set));
    }
    for chain in &ruleset.chains {
        out.push_str(&chain_text(chain));
    }
    out.push_str("}\n");
    out
}

fn set_text(set: &Set) -> String {
    let key_type = match set.key {
        SetKey::Address(Family::V4) => "ipv4_addr",
        SetKey::Address(Family::V6) => "ipv6_addr",
        SetKey::InterfaceName => "ifname",
        SetKey::InterfaceAddress(Family::V4) => "ifname . ipv4_addr",
        SetKey::InterfaceAddress(Family::V6) => "ifname . ipv6_addr",
        SetKey::Flows(Some(Family::V4)) => "ipv4_addr . inet_proto . inet_service",
        SetKey::Flows(Some(Family::V6)) => "ipv6_addr . inet_proto . inet_service",
        SetKey::Flows(None) => "inet_proto . inet_service",
    };
    let counted = matches!(set.content, SetContent::Counted(_));
    let (keyword, type_line, elements): (&str, String, Vec<String>) = match &set.content {
        SetContent::Addresses(addresses) => (
            "set",
            key_type.to_string(),
            addresses.iter().map(|a| a.to_string()).collect(),
        ),
        SetContent::VerdictMap(map) => (
            "map",
            format!("{key_type} : verdict"),
            map.iter()
                .map(|(a, v)| format!("{a} : {}", verdict_text(v)))
                .collect(),
        ),
        SetContent::AddressPairs(pairs) => (
            "set",
            format!("{key_type} . {key_type}"),
            pairs.iter().map(|(a, b)| format!("{a} . {b}")).collect(),
        ),
        SetContent::Counted(members) => (
            "set",
            key_type.to_string(),
            members
                .iter()
                .map(|(a, name)| format!("{a} comment \"{}\"", name.replace('"', "'")))
                .collect(),
        ),
        SetContent::InterfaceNames(names) => (
            "set",
            key_type.to_string(),
            names.iter().map(|n| format!("\"{n}\"")).collect(),
        ),
        SetContent::InterfaceVerdictMap(map) => (
            "map",
            format!("{key_type} : verdict"),
            map.iter()
                .map(|(n, v)| format!("\"{n}\" : {}", verdict_text(v)))
                .collect(),
        ),
        SetContent::InterfaceAddressVerdictMap(map) => (
            "map",
            format!("{key_type} : verdict"),
            map.iter()
                .map(|((n, a), v)| format!("\"{n}\" . {a} : {}", verdict_text(v)))
                .collect(),
        ),
        SetContent::Flows(flows) => (
            "set",
            key_type.to_string(),
            flows.iter().map(flow_text).collect(),
        ),
        SetContent::FlowPoints(flows) => (
            "set",
            key_type.to_string(),
            flows.iter().map(point_text).collect(),
        ),
        SetContent::Recorded(_) => ("set", key_type.to_string(), Vec::new()),
    };
    let mut out = format!("\t{keyword} {} {{\n\t\ttype {type_line}\n", set.name);
    if matches!(set.content, SetContent::Flows(_)) {
        out.push_str("\t\tflags interval\n");
    }
    if let SetContent::Recorded(size) = set.content {
        let _ = write!(out, "\t\tsize {size}\n\t\tflags dynamic\n");
    }
    if counted {
        out.push_str("\t\tcounter\n");
    }
    if !elements.is_empty() {
        let _ = writeln!(
            out,
            "\t\telements = {{\n\t\t\t{}\n\t\t}}",
            elements.join(",\n\t\t\t")
        );
    }
    out.push_str("\t}\n");
    out
}

/// One element of a flow set: each field a value or an inclusive range.
fn flow_text(flow: &FlowRange) -> String {
    fn field<T: PartialEq + std::fmt::Display>((first, last): (T, T)) -> String {
        match first == last {
            true => first.to_string(),
            false => format!("{first}-{last}"),
        }
    }
    let mut fields = Vec::new();
    if let Some(addresses) = flow.addresses {
        fields.push(field(addresses));
    }
    fields.push(field(flow.protocols));
    fields.push(field(flow.ports));
    fields.join(" . ")
}

/// One element of a set of single flows.
fn point_text(flow: &FlowPoint) -> String {
    let mut fields: Vec<String> = flow.address.iter().map(IpAddr::to_string).collect();
    fields.push(flow.protocol.to_string());
    fields.push(flow.port.to_string());
    fields.join(" . ")
}

fn chain_text(chain: &Chain) -> String {
    let mut out = format!("\tchain {} {{\n", chain.name);
    if let Some((hook, priority)) = chain.hook {
        let _ = writeln!(
            out,
            "\t\ttype filter hook {} priority {priority}; policy accept;",
            hook.name()
        );
    }
    for rule in &chain.rules {
        let _ = writeln!(out, "\t\t{}", rule_text(rule));
    }
    out.push_str("\t}\n");
    out
}

/// One rule in `nft` syntax, with its comment.
pub fn rule_text(rule: &Rule) -> String {
    let mut parts: Vec<String> = rule.matches.iter().map(match_text).collect();
    if rule.counter {
        parts.push("counter".into());
    }
    parts.push(match &rule.action {
        Action::Verdict(verdict) => verdict_text(verdict),
        Action::VerdictMap(MapKey::Address(key), map) => format!("{} vmap @{map}", key_text(key)),
        Action::VerdictMap(MapKey::InputInterface, map) => format!("iifname vmap @{map}"),
        Action::VerdictMap(MapKey::InputInterfaceAndSource(family), map) => {
            let source = selector(*family, Direction::Source);
            format!("iifname . {source} vmap @{map}")
        }
        Action::RecordInterface(side, set) => {
            let name = interface_selector(*side);
            format!("add @{set} {{ {name} counter }}")
        }
        Action::Log { group, prefix } => format!("log prefix \"{prefix}\" group {group}"),
    });
    parts.push(format!("comment \"{}\"", rule.comment.replace('"', "'")));
    parts.join(" ")
}

fn match_text(m: &Match) -> String {
    match m {
        Match::Limit { per_second, burst } => {
            format!("limit rate {per_second}/second burst {burst} packets")
        }
        Match::FlowInSet(address, set) => {
            let address = match address {
                Some((family, direction)) => format!("{} . ", selector(*family, *direction)),
                None => String::new(),
            };
            format!("{address}meta l4proto . th dport @{set}")
        }
        Match::PairInSet(source, destination, set) => {
            format!("{} . {} @{set}", key_text(source), key_text(destination))
        }
        Match::CtState(states) => {
            let names: Vec<&str> = states
                .iter()
                .map(|s| match s {
                    CtState::Invalid => "invalid",
                    CtState::Established => "established",
                    CtState::Related => "related",
                })
                .collect();
            format!("ct state {}", names.join(","))
        }
        Match::Icmpv6Type(low, high) if low == high => format!("icmpv6 type {low}"),
        Match::Icmpv6Type(low, high) => format!("icmpv6 type {low}-{high}"),
        Match::Address(direction, net) => {
            let family = Family::of(net.addr());
            let prefix = if net.prefix_len() == family.bits() {
                net.addr().to_string()
            } else {
                net.to_string()
            };
            format!("{} {prefix}", selector(family, *direction))
        }
        Match::InSet(key, set) => format!("{} @{set}", key_text(key)),
        Match::DestinationPort(protocol, port) => format!("{} dport {port}", protocol.name()),
        Match::InputInterface(name) => format!("iifname \"{name}\""),
        Match::OutputInterface(name) => format!("oifname \"{name}\""),
        Match::InputInterfaceInSet { set, negated } => {
            format!("iifname {}@{set}", if *negated { "!= " } else { "" })
        }
        Match::SourcePort(protocol, port) => format!("{} sport {port}", protocol.name()),
        Match::SourceMac { mac, negated } => {
            format!("ether saddr {}{mac}", if *negated { "!= " } else { "" })
        }
        Match::ArpSender(mac, address) => format!(
            "arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether {mac} arp saddr ip \
             {address}"
        ),
        Match::ArpSenderAddress(address) => format!("arp saddr ip {address}"),
        Match::HopLimit(limit) => format!("ip6 hoplimit {limit}"),
        Match::EtherType(ether_type) => format!("ether type {}", ether_type.name()),
        Match::NeighbourTarget(address) => {
            format!("@th,64,128 {:#034x}", u128::from_be_bytes(address.octets()))
        }
    }
}

fn interface_selector(side: Side) -> &'static str {
    match side {
        Side::Input => "iifname",
        Side::Output => "oifname",
    }
}

fn selector(family: Family, direction: Direction) -> String {
    let proto = match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    };
    let field = match direction {
        Direction::Source => "saddr",
        Direction::Destination => "daddr",
    };
    format!("{proto} {field}")
}

fn key_text(key: &AddressKey) -> String {
    let selector = selector(key.family, key.direction);
    if key.prefix_len == key.family.bits() {
        selector
    } else {
        format!("{selector} & {}", prefix_mask(key.family, key.prefix_len))
    }
}

/// The netmask of a prefix length, as an address (`255.255.255.0` for /24 in IPv4).
pub fn prefix_mask(family: Family, prefix_len: u8) -> IpAddr {
    match family {
        Family::V4 => {
            let bits = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits))
        }
        Family::V6 => {
            let bits = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

fn verdict_text(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Return => "return".into(),
        Verdict::Continue => "continue".into(),
        Verdict::Jump(chain) => format!("jump {chain}"),
        Verdict::Goto(chain) => format!("goto {chain}"),
        Verdict::Deny(reason) => format!("goto {}", ChainName::Audit(*reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_cover_the_prefix() {
        assert_eq!(prefix_mask(Family::V4, 24).to_string(), "255.255.255.0");
        assert_eq!(prefix_mask(Family::V4, 32).to_string(), "255.255.255.255");
        assert_eq!(
            prefix_mask(Family::V6, 64).to_string(),
            "ffff:ffff:ffff:ffff::"
        );
        assert_eq!(prefix_mask(Family::V6, 0).to_string(), "::");
    }
}
