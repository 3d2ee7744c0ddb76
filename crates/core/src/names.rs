//! The names of the kernel objects enforcer's tables hold, as types: the planner builds
//! [`ChainName`]s and [`SetName`]s, the renderer and the encoder print them with `Display`, and
//! readers of the kernel's table recover their meaning with `FromStr`. Printing then parsing
//! gives back the same value (a property test checks it), so no other code builds or takes
//! names apart.

use std::fmt;
use std::str::FromStr;

use crate::ruleset::{DropReason, Family};

/// A chain of enforcer's table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChainName {
    /// The `forward` base chain: sorts forwarded packets.
    Forward,
    /// The `input` base chain: packets to the host itself.
    Input,
    /// The `output` base chain: packets the host itself sends.
    Output,
    /// Packets that entered through a quarantined interface: recorded, then dropped.
    QuarantineIn,
    /// Packets about to leave through a quarantined interface: recorded, then dropped.
    QuarantineOut,
    /// Forwarded traffic from managed subnets and bridges that no proxy rule accepted.
    FromManaged,
    /// Managed traffic addressed to the host itself.
    HostFromManaged,
    /// Forwarded traffic from bridges that no classified network owns.
    FromUnknownBridge,
    /// The allowed services of the proxy with this name.
    Proxy(String),
    /// What members of the role with this name may open, for their packets of one family.
    Role(Family, String),
    /// Who may open connections toward members of the role with this name.
    Ingress(String),
    /// Forwarded traffic toward managed subnets from sources outside them.
    ToManaged,
    /// Forwarded traffic from the addresses managed containers hold on unmanaged networks.
    FromElsewhere,
    /// Bridge table: the `prerouting` base chain, which sends each port's frames to its chain.
    Prerouting,
    /// Bridge table: what the bound port with this interface name may send.
    Port(String),
    /// Bridge table: frames from a port no container is bound to (dropped, counted).
    UnboundPort,
    /// Bridge table: frames from a port of a static network's bridge that no declared proxy
    /// owns (anything but a declared proxy's identity).
    SharedPort,
    /// Where the drops of one reason go: logged through NFLOG at a bounded rate, then dropped.
    Audit(DropReason),
}

/// A set or verdict map of enforcer's table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetName {
    /// The plain set of managed subnets of one family and prefix length.
    Managed(Family, u8),
    /// The counted set of managed subnets whose egress is dropped, per family and length.
    Egress(Family, u8),
    /// The (source subnet . destination subnet) pairs inside one network, per family and pair
    /// of prefix lengths.
    Intra(Family, u8, u8),
    /// The verdict map from proxy addresses of one family to their chains.
    Proxies(Family),
    /// The interfaces (bridges) of managed networks.
    ManagedInterfaces,
    /// The interfaces of every classified network, managed or not.
    KnownInterfaces,
    /// The interfaces of networks seen as managed but not enforced (skipped): denied.
    SkippedInterfaces,
    /// The managed networks' interfaces that unmanaged containers share (`docker_gwbridge`):
    /// what enters from them is managed by its source address alone.
    SharedInterfaces,
    /// Bridge table: the verdict map from each known bridge port to what its frames meet.
    Ports,
    /// The verdict map from role members' addresses of one family (with the bridge each
    /// enters from, when every managed network names one) to their role's chain.
    Roles(Family),
    /// What the role with this name may open toward given destinations (roles, networks,
    /// prefixes): flows of one family.
    RoleFlows(Family, Spread, String),
    /// What the role with this name may open toward the internet: protocols and ports.
    RoleServices(Spread, String),
    /// Member address . protocol . port: what role members of one family may open toward the
    /// host itself.
    HostFlows(Family, Spread),
    /// The verdict map from members' addresses of one family to their role's ingress chain.
    Ingress(Family),
    /// Who (source . protocol . port) may open connections toward the role with this name:
    /// sources of one family.
    IngressFlows(Family, Spread, String),
    /// What the internet may open toward the role with this name: protocols and ports.
    IngressServices(Spread, String),
    /// The addresses of one family that managed containers hold on unmanaged networks, each
    /// counted and naming its container.
    Elsewhere(Family),
    /// The addresses of one family of containers on managed networks, each counted and naming
    /// its container: what their egress drops count against.
    Containers(Family),
    /// The quarantined interfaces that sent or were sent a packet, each with its counter:
    /// filled by the kernel (a dynamic set), never by the planner.
    Quarantined,
}

/// How a flow set holds its flows, which decides the kind of set the kernel builds: a role's
/// allowances come as one set of each spread that has elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Spread {
    /// Single flows (one address, one protocol, one port each): a hash set, whose lookup costs
    /// the same whatever it holds.
    Points,
    /// Ranges of addresses, protocols or ports, cut disjoint: an interval set.
    Ranges,
}

impl Spread {
    /// What a flow set's name holds in its kind word: nothing for points, `ranges` for ranges
    /// (`flows_v4_NAME`, `flowranges_v4_NAME`).
    fn infix(self) -> &'static str {
        match self {
            Spread::Points => "",
            Spread::Ranges => "ranges",
        }
    }

    /// The ending of a flow set's kind word: `flows_v4_NAME`, `flowranges_v4_NAME`.
    fn plural(self) -> &'static str {
        match self {
            Spread::Points => "s",
            Spread::Ranges => "ranges",
        }
    }
}

const PROXY_PREFIX: &str = "proxy_";
const ROLE_PREFIX: &str = "role_";
const INGRESS_PREFIX: &str = "ingress_";
const INGRESS_SERVICES_PREFIX: &str = "in";
const SERVICES_PREFIX: &str = "out";
const PORT_PREFIX: &str = "port_";
const AUDIT_PREFIX: &str = "audit_";

impl fmt::Display for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainName::Forward => f.write_str("forward"),
            ChainName::Input => f.write_str("input"),
            ChainName::Output => f.write_str("output"),
            ChainName::QuarantineIn => f.write_str("quarantine_in"),
            ChainName::QuarantineOut => f.write_str("quarantine_out"),
            ChainName::FromManaged => f.write_str("from_managed"),
            ChainName::HostFromManaged => f.write_str("host_from_managed"),
            ChainName::FromUnknownBridge => f.write_str("from_unknown_bridge"),
            ChainName::Proxy(name) => write!(f, "{PROXY_PREFIX}{name}"),
            ChainName::Role(family, name) => write!(f, "{ROLE_PREFIX}{}_{name}", family.tag()),
            ChainName::Ingress(name) => write!(f, "{INGRESS_PREFIX}{name}"),
            ChainName::ToManaged => f.write_str("to_managed"),
            ChainName::FromElsewhere => f.write_str("from_elsewhere"),
            ChainName::Prerouting => f.write_str("prerouting"),
            ChainName::Port(name) => write!(f, "{PORT_PREFIX}{name}"),
            ChainName::UnboundPort => f.write_str("unbound_port"),
            ChainName::SharedPort => f.write_str("shared_port"),
            ChainName::Audit(reason) => write!(f, "{AUDIT_PREFIX}{}", reason.name()),
        }
    }
}

/// A kernel name that is not one enforcer writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not the name of a chain or set enforcer writes")]
pub struct UnknownName(pub String);

impl FromStr for ChainName {
    type Err = UnknownName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "forward" => ChainName::Forward,
            "input" => ChainName::Input,
            "output" => ChainName::Output,
            "quarantine_in" => ChainName::QuarantineIn,
            "quarantine_out" => ChainName::QuarantineOut,
            "from_managed" => ChainName::FromManaged,
            "host_from_managed" => ChainName::HostFromManaged,
            "from_unknown_bridge" => ChainName::FromUnknownBridge,
            "prerouting" => ChainName::Prerouting,
            "unbound_port" => ChainName::UnboundPort,
            "shared_port" => ChainName::SharedPort,
            "to_managed" => ChainName::ToManaged,
            "from_elsewhere" => ChainName::FromElsewhere,
            _ => {
                let prefixed = |prefix| text.strip_prefix(prefix).filter(|rest| !rest.is_empty());
                if let Some(reason) = prefixed(AUDIT_PREFIX).and_then(DropReason::named) {
                    ChainName::Audit(reason)
                } else if let Some(proxy) = prefixed(PROXY_PREFIX) {
                    ChainName::Proxy(proxy.to_string())
                } else if let Some(port) = prefixed(PORT_PREFIX) {
                    ChainName::Port(port.to_string())
                } else if let Some(rest) = prefixed(ROLE_PREFIX) {
                    let (tag, role) = rest
                        .split_once('_')
                        .filter(|(_, r)| !r.is_empty())
                        .ok_or_else(|| UnknownName(text.to_string()))?;
                    let family = family_of_tag(tag).ok_or_else(|| UnknownName(text.to_string()))?;
                    ChainName::Role(family, role.to_string())
                } else if let Some(role) = prefixed(INGRESS_PREFIX) {
                    ChainName::Ingress(role.to_string())
                } else {
                    return Err(UnknownName(text.to_string()));
                }
            }
        })
    }
}

impl SetName {
    /// How the flow set of this name holds its flows; none for a set of another kind.
    pub fn spread(&self) -> Option<Spread> {
        match self {
            SetName::RoleFlows(_, spread, _)
            | SetName::RoleServices(spread, _)
            | SetName::HostFlows(_, spread)
            | SetName::IngressFlows(_, spread, _)
            | SetName::IngressServices(spread, _) => Some(*spread),
            _ => None,
        }
    }
}

impl fmt::Display for SetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetName::Managed(family, len) => write!(f, "managed_{}_{len}", family.tag()),
            SetName::Egress(family, len) => write!(f, "egress_{}_{len}", family.tag()),
            SetName::Intra(family, source, destination) => {
                write!(f, "intra_{}_{source}_{destination}", family.tag())
            }
            SetName::Proxies(family) => write!(f, "proxies_{}", family.tag()),
            SetName::ManagedInterfaces => f.write_str("managed_interfaces"),
            SetName::KnownInterfaces => f.write_str("known_interfaces"),
            SetName::SkippedInterfaces => f.write_str("skipped_interfaces"),
            SetName::SharedInterfaces => f.write_str("shared_interfaces"),
            SetName::Ports => f.write_str("ports"),
            SetName::Roles(family) => write!(f, "roles_{}", family.tag()),
            SetName::RoleFlows(family, spread, role) => {
                write!(f, "flow{}_{}_{role}", spread.plural(), family.tag())
            }
            SetName::RoleServices(spread, role) => {
                write!(f, "{SERVICES_PREFIX}{}_{role}", spread.infix())
            }
            SetName::HostFlows(family, spread) => {
                write!(f, "hostflow{}_{}", spread.plural(), family.tag())
            }
            SetName::Ingress(family) => write!(f, "ingress_{}", family.tag()),
            SetName::Elsewhere(family) => write!(f, "elsewhere_{}", family.tag()),
            SetName::Containers(family) => write!(f, "containers_{}", family.tag()),
            SetName::Quarantined => f.write_str("quarantined"),
            SetName::IngressFlows(family, spread, role) => {
                write!(f, "inflow{}_{}_{role}", spread.plural(), family.tag())
            }
            SetName::IngressServices(spread, role) => {
                write!(f, "{INGRESS_SERVICES_PREFIX}{}_{role}", spread.infix())
            }
        }
    }
}

impl FromStr for SetName {
    type Err = UnknownName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownName(text.to_string());
        match text {
            "managed_interfaces" => return Ok(SetName::ManagedInterfaces),
            "known_interfaces" => return Ok(SetName::KnownInterfaces),
            "skipped_interfaces" => return Ok(SetName::SkippedInterfaces),
            "shared_interfaces" => return Ok(SetName::SharedInterfaces),
            "ports" => return Ok(SetName::Ports),
            "quarantined" => return Ok(SetName::Quarantined),
            _ => {}
        }
        for spread in [Spread::Points, Spread::Ranges] {
            for (kind, named) in [
                (
                    SERVICES_PREFIX,
                    SetName::RoleServices as fn(Spread, String) -> SetName,
                ),
                (INGRESS_SERVICES_PREFIX, SetName::IngressServices),
            ] {
                let prefix = format!("{kind}{}_", spread.infix());
                if let Some(role) = text.strip_prefix(&prefix).filter(|r| !r.is_empty()) {
                    return Ok(named(spread, role.to_string()));
                }
            }
            for family in [Family::V4, Family::V6] {
                for (kind, named) in [
                    (
                        "flow",
                        SetName::RoleFlows as fn(Family, Spread, String) -> SetName,
                    ),
                    ("inflow", SetName::IngressFlows),
                ] {
                    let prefix = format!("{kind}{}_{}_", spread.plural(), family.tag());
                    if let Some(role) = text.strip_prefix(&prefix).filter(|r| !r.is_empty()) {
                        return Ok(named(family, spread, role.to_string()));
                    }
                }
            }
        }
        let (kind, rest) = text.split_once('_').ok_or_else(unknown)?;
        let mut parts = rest.split('_');
        let family = parts.next().and_then(family_of_tag).ok_or_else(unknown)?;
        let mut length = || -> Result<u8, UnknownName> {
            let len: u8 = parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(unknown)?;
            (len <= family.bits()).then_some(len).ok_or_else(unknown)
        };
        let name = match kind {
            "managed" => SetName::Managed(family, length()?),
            "egress" => SetName::Egress(family, length()?),
            "intra" => SetName::Intra(family, length()?, length()?),
            "proxies" => SetName::Proxies(family),
            "roles" => SetName::Roles(family),
            "hostflows" => SetName::HostFlows(family, Spread::Points),
            "hostflowranges" => SetName::HostFlows(family, Spread::Ranges),
            "ingress" => SetName::Ingress(family),
            "elsewhere" => SetName::Elsewhere(family),
            "containers" => SetName::Containers(family),
            _ => return Err(unknown()),
        };
        // Only the canonical spelling (no leading zeros, nothing left over) is a name.
        match name.to_string() == text {
            true => Ok(name),
            false => Err(unknown()),
        }
    }
}

fn family_of_tag(tag: &str) -> Option<Family> {
    [Family::V4, Family::V6]
        .into_iter()
        .find(|f| f.tag() == tag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn family() -> impl Strategy<Value = Family> {
        prop_oneof![Just(Family::V4), Just(Family::V6)]
    }

    fn spread() -> impl Strategy<Value = Spread> {
        prop_oneof![Just(Spread::Points), Just(Spread::Ranges)]
    }

    fn set_name() -> impl Strategy<Value = SetName> {
        let len = |f: Family| 0..=f.bits();
        prop_oneof![
            family().prop_flat_map(move |f| len(f).prop_map(move |l| SetName::Managed(f, l))),
            family().prop_flat_map(move |f| len(f).prop_map(move |l| SetName::Egress(f, l))),
            family().prop_flat_map(
                move |f| (len(f), len(f)).prop_map(move |(s, d)| SetName::Intra(f, s, d))
            ),
            family().prop_map(SetName::Proxies),
            Just(SetName::ManagedInterfaces),
            Just(SetName::KnownInterfaces),
            Just(SetName::SkippedInterfaces),
            Just(SetName::SharedInterfaces),
            Just(SetName::Ports),
            Just(SetName::Quarantined),
            family().prop_map(SetName::Roles),
            (family(), spread()).prop_map(|(f, s)| SetName::HostFlows(f, s)),
            family().prop_map(SetName::Ingress),
            family().prop_map(SetName::Elsewhere),
            family().prop_map(SetName::Containers),
            (family(), spread(), "[A-Za-z0-9][A-Za-z0-9_.-]{0,40}")
                .prop_map(|(f, s, r)| SetName::IngressFlows(f, s, r)),
            (spread(), "[A-Za-z0-9][A-Za-z0-9_.-]{0,40}")
                .prop_map(|(s, r)| SetName::IngressServices(s, r)),
            (family(), spread(), "[A-Za-z0-9][A-Za-z0-9_.-]{0,40}")
                .prop_map(|(f, s, r)| SetName::RoleFlows(f, s, r)),
            (spread(), "[A-Za-z0-9][A-Za-z0-9_.-]{0,40}")
                .prop_map(|(s, r)| SetName::RoleServices(s, r)),
        ]
    }

    fn chain_name() -> impl Strategy<Value = ChainName> {
        prop_oneof![
            Just(ChainName::Forward),
            Just(ChainName::Input),
            Just(ChainName::Output),
            Just(ChainName::QuarantineIn),
            Just(ChainName::QuarantineOut),
            Just(ChainName::FromManaged),
            Just(ChainName::HostFromManaged),
            Just(ChainName::FromUnknownBridge),
            "[A-Za-z0-9][A-Za-z0-9_.-]{0,40}".prop_map(ChainName::Proxy),
            (family(), "[A-Za-z0-9][A-Za-z0-9_.-]{0,40}").prop_map(|(f, r)| ChainName::Role(f, r)),
            "[A-Za-z0-9][A-Za-z0-9_.-]{0,40}".prop_map(ChainName::Ingress),
            Just(ChainName::ToManaged),
            Just(ChainName::FromElsewhere),
            Just(ChainName::Prerouting),
            Just(ChainName::UnboundPort),
            Just(ChainName::SharedPort),
            "[A-Za-z0-9][A-Za-z0-9_.-]{0,14}".prop_map(ChainName::Port),
            proptest::sample::select(DropReason::ALL.to_vec()).prop_map(ChainName::Audit),
        ]
    }

    proptest! {
        #[test]
        fn set_names_round_trip(name in set_name()) {
            prop_assert_eq!(name.to_string().parse::<SetName>(), Ok(name));
        }

        #[test]
        fn chain_names_round_trip(name in chain_name()) {
            prop_assert_eq!(name.to_string().parse::<ChainName>(), Ok(name));
        }
    }

    #[test]
    fn names_enforcer_does_not_write_are_refused() {
        for text in [
            "egress_v4_33",
            "egress_v4_024",
            "egress_v5_24",
            "intra_v4_24",
            "proxy_",
            "x",
            "outranges_",
            "flowranges_v4_",
            "flowranges_v5_a",
            "hostflowranges_v4_1",
            "inranges_",
        ] {
            assert!(text.parse::<SetName>().is_err(), "{text}");
        }
        for text in [
            "proxy_",
            "port_",
            "role_x",
            "role_v4_",
            "role_v5_a",
            "audit_",
            "audit_x",
        ] {
            assert!(text.parse::<ChainName>().is_err(), "{text}");
        }
        assert_eq!(
            "proxy_forward".parse::<ChainName>(),
            Ok(ChainName::Proxy("forward".into()))
        );
    }
}
