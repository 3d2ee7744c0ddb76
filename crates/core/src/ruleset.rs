//! The desired nftables tables as plain values. They use a deliberately small vocabulary
//! (address and MAC matches, set and verdict-map lookups, conntrack state, transport ports,
//! counters) so that the `nft` text renderer and the netlink encoder can each translate every
//! construct exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::flows::{FlowPoint, FlowRange};
use crate::names::{ChainName, SetName};
use crate::ports::MacAddr;
use crate::topology::Protocol;

/// Every table enforcer owns, as one desired state: the kernel is made to hold all of them in
/// one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tables {
    /// `table inet enforcer`: egress and host access by address (the planner's main table).
    pub inet: Ruleset,
    /// `table bridge enforcer`: what each container's bridge port may send (who may speak as
    /// which address), and nothing in or out of a quarantined bridge port. `None` when no port
    /// is guarded (Docker is not followed) and nothing is quarantined: the kernel then holds
    /// no such table.
    pub bridge: Option<Ruleset>,
    /// `table arp enforcer`: no ARP in or out of a quarantined interface. `None` when nothing
    /// is quarantined.
    pub arp: Option<Ruleset>,
}

impl Tables {
    /// The tables that exist, inet first.
    pub fn iter(&self) -> impl Iterator<Item = &Ruleset> {
        std::iter::once(&self.inet)
            .chain(self.bridge.as_ref())
            .chain(self.arp.as_ref())
    }
}

impl From<Ruleset> for Tables {
    /// The inet table alone (no port is guarded).
    fn from(inet: Ruleset) -> Tables {
        Tables {
            inet,
            bridge: None,
            arp: None,
        }
    }
}

/// The address family of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TableFamily {
    /// `inet`: IPv4 and IPv6 packets, at the IP layer.
    Inet,
    /// `bridge`: Ethernet frames as bridges switch them, ARP included.
    Bridge,
    /// `arp`: ARP packets the host itself receives and sends (which no `inet` hook sees).
    Arp,
}

impl TableFamily {
    /// Every family enforcer writes a table in.
    pub const ALL: [TableFamily; 3] = [TableFamily::Inet, TableFamily::Bridge, TableFamily::Arp];

    /// The family's name in `nft` syntax.
    pub fn name(self) -> &'static str {
        match self {
            TableFamily::Inet => "inet",
            TableFamily::Bridge => "bridge",
            TableFamily::Arp => "arp",
        }
    }
}

/// One table: its sets and maps first, then its chains (base chains first).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ruleset {
    /// Its family.
    pub family: TableFamily,
    /// Table name.
    pub table: String,
    /// Sets and verdict maps.
    pub sets: Vec<Set>,
    /// Chains, in the order they are created and listed.
    pub chains: Vec<Chain>,
}

/// IP version of an address match or set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 (`ip`).
    V4,
    /// IPv6 (`ip6`).
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(address: IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Address length in bits.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// Short tag used in generated names: `v4` or `v6`.
    pub fn tag(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
}

/// What a set's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetKey {
    /// Addresses of one family (or pairs of them, for [`SetContent::AddressPairs`]).
    Address(Family),
    /// Network interface names (`type ifname`).
    InterfaceName,
    /// An input interface's name and an address of one family (`type ifname . ipv4_addr`).
    InterfaceAddress(Family),
    /// Flows: `ipv4_addr . inet_proto . inet_service` (destination address, protocol number,
    /// destination port) for a family, or `inet_proto . inet_service` alone for none; for
    /// [`SetContent::FlowPoints`] and (as intervals) [`SetContent::Flows`].
    Flows(Option<Family>),
}

/// A named set of addresses or interface names, or a verdict map from addresses to chains.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Set {
    /// Set name.
    pub name: SetName,
    /// Type of its keys.
    pub key: SetKey,
    /// Its elements.
    pub content: SetContent,
}

/// Elements of a [`Set`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SetContent {
    /// A plain address set.
    Addresses(BTreeSet<IpAddr>),
    /// A verdict map: address to verdict.
    VerdictMap(BTreeMap<IpAddr, Verdict>),
    /// A set of address pairs (source . destination).
    AddressPairs(BTreeSet<(IpAddr, IpAddr)>),
    /// Addresses, each with its own packet and byte counter and a comment (the network name).
    Counted(BTreeMap<IpAddr, String>),
    /// Interface names.
    InterfaceNames(BTreeSet<String>),
    /// A verdict map: input interface name to verdict.
    InterfaceVerdictMap(BTreeMap<String, Verdict>),
    /// A verdict map: (input interface name, source address) to verdict.
    InterfaceAddressVerdictMap(BTreeMap<(String, IpAddr), Verdict>),
    /// Interface names the kernel adds itself (a dynamic set, filled by
    /// [`Action::RecordInterface`]), each with its own counter, at most this many; the planner
    /// never lists elements, and a comparison with the kernel ignores them.
    Recorded(u32),
    /// Disjoint boxes of flows (see [`crate::flows::disjoint`]), with addresses of the set's
    /// family or, for a set keyed without addresses, none.
    Flows(BTreeSet<FlowRange>),
    /// Single flows (a hash set, no interval flag), with addresses of the set's family or,
    /// for a set keyed without addresses, none.
    FlowPoints(BTreeSet<FlowPoint>),
}

impl SetContent {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            SetContent::Addresses(a) => a.len(),
            SetContent::VerdictMap(m) => m.len(),
            SetContent::AddressPairs(p) => p.len(),
            SetContent::Counted(c) => c.len(),
            SetContent::InterfaceNames(n) => n.len(),
            SetContent::InterfaceVerdictMap(m) => m.len(),
            SetContent::InterfaceAddressVerdictMap(m) => m.len(),
            SetContent::Flows(f) => f.len(),
            SetContent::FlowPoints(f) => f.len(),
            SetContent::Recorded(_) => 0,
        }
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Netfilter hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// Forwarded packets (container to elsewhere, and bridged packets with br_netfilter).
    Forward,
    /// Packets addressed to the host itself.
    Input,
    /// Packets the host itself sends (or, in a bridge table, frames the host's bridge device
    /// sends out of a port).
    Output,
    /// Every packet (or, in a bridge table, every frame entering from a port) before any
    /// routing or switching decision.
    Prerouting,
}

impl Hook {
    /// The hook's name in `nft` syntax.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Forward => "forward",
            Hook::Input => "input",
            Hook::Output => "output",
            Hook::Prerouting => "prerouting",
        }
    }
}

/// A chain. Base chains (with a hook) always have policy `accept`: this table only drops what
/// it must and leaves every other decision to the host's other tables.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    /// Chain name.
    pub name: ChainName,
    /// Hook and priority, for base chains.
    pub hook: Option<(Hook, i32)>,
    /// Rules, in evaluation order.
    pub rules: Vec<Rule>,
}

/// A rule: all matches must hold, then the optional counter counts and the action runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Conditions, all of which must hold.
    pub matches: Vec<Match>,
    /// Whether the rule counts packets and bytes.
    pub counter: bool,
    /// What happens to a matching packet.
    pub action: Action,
    /// Why the rule exists; shown by `nft list`.
    pub comment: String,
}

/// Source or destination address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `saddr`.
    Source,
    /// `daddr`.
    Destination,
}

/// An address taken from the packet, masked to a prefix length: `ip saddr & 255.255.255.0`.
/// With the full length (32 or 128) no mask is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressKey {
    /// IP version; the rule only matches packets of this version.
    pub family: Family,
    /// Which address.
    pub direction: Direction,
    /// Prefix length kept by the mask.
    pub prefix_len: u8,
}

/// A connection tracking state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CtState {
    /// `invalid`.
    Invalid,
    /// `established`.
    Established,
    /// `related`.
    Related,
}

/// A condition on a packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    /// The pair (masked source . masked destination) is an element of the named pair set:
    /// `ip saddr & 255.255.255.0 . ip daddr & 255.255.255.0 @set`. Both keys have the same
    /// family. It must be a rule's only match (the kernel edge writes such rules itself).
    PairInSet(AddressKey, AddressKey, SetName),
    /// Conntrack state is one of these.
    CtState(Vec<CtState>),
    /// An ICMPv6 packet whose type lies in this inclusive range.
    Icmpv6Type(u8, u8),
    /// The address lies in this prefix (`ip daddr 10.0.0.0/24`).
    Address(Direction, IpNet),
    /// The masked address is an element of the named set.
    InSet(AddressKey, SetName),
    /// Transport protocol and destination port (`tcp dport 443`).
    DestinationPort(Protocol, u16),
    /// The packet entered through this interface; a trailing `*` matches any suffix
    /// (`iifname "br-*"`).
    InputInterface(String),
    /// The packet leaves through this interface; a trailing `*` matches any suffix
    /// (`oifname "tap*"`).
    OutputInterface(String),
    /// The input interface's name is (or, when `negated`, is not) in the named set
    /// (`iifname != @set`).
    InputInterfaceInSet {
        /// The set of interface names.
        set: SetName,
        /// Match when the name is absent from the set.
        negated: bool,
    },
    /// Transport protocol and source port (`udp sport 67`).
    SourcePort(Protocol, u16),
    /// The frame's Ethernet source is (or, when `negated`, is not) this address (bridge tables:
    /// `ether saddr != 02:42:ac:11:00:02`).
    SourceMac {
        /// The address.
        mac: MacAddr,
        /// Match when the source differs.
        negated: bool,
    },
    /// An ARP packet for Ethernet and IPv4 whose sender is this MAC and address (bridge
    /// tables: `arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether M arp saddr ip
    /// A`).
    ArpSender(MacAddr, Ipv4Addr),
    /// An ARP packet whose sender protocol address is this one, whatever its other fields
    /// (bridge tables: `arp saddr ip A`). A receiver ignores ARP that is not Ethernet and
    /// IPv4, so a drop on this field alone catches every claim that could take effect.
    ArpSenderAddress(Ipv4Addr),
    /// The frame's outer Ethernet type, as on the wire (`ether type 8021q`). The kernel moves a
    /// VLAN tag into the packet's metadata on receive, so `meta protocol` (which address
    /// matches test) sees the inner type while this sees the tag.
    EtherType(EtherType),
    /// The target address of an ICMPv6 neighbour solicitation or advertisement is this
    /// address (`@th,64,128 0x…`: `nft` 1.0.6 has no name for the field). Only meaningful after
    /// an [`Match::Icmpv6Type`] of 135 or 136.
    NeighbourTarget(Ipv6Addr),
    /// The packet's flow is in the named [`SetContent::FlowPoints`] or [`SetContent::Flows`]
    /// set: `ip daddr . meta l4proto
    /// . th dport @set` with an address of a family (its packets only; the source address for
    /// [`Direction::Source`]), `meta l4proto . th dport @set` without.
    FlowInSet(Option<(Family, Direction)>, SetName),
    /// An IPv6 packet with this hop limit (`ip6 hoplimit 255`): 255 only on a packet that no
    /// router has forwarded, as neighbour discovery requires.
    HopLimit(u8),
    /// At most this many packets per second, after a burst (`limit rate 100/second burst 100
    /// packets`): a token bucket the rule keeps in the kernel, so a packet over the rate does
    /// not match. Never decides a verdict here: only a [`Action::Log`] rule carries it.
    Limit {
        /// Packets per second.
        per_second: u32,
        /// Packets let through at once before the rate applies.
        burst: u32,
    },
}

/// An Ethernet type a bridge table names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtherType {
    /// An 802.1Q VLAN tag (`8021q`, 0x8100).
    Vlan,
    /// An 802.1ad service VLAN tag (`8021ad`, 0x88a8).
    ServiceVlan,
}

impl EtherType {
    /// Its number, as on the wire.
    pub fn number(self) -> u16 {
        match self {
            EtherType::Vlan => 0x8100,
            EtherType::ServiceVlan => 0x88a8,
        }
    }

    /// Its name in `nft` syntax.
    pub fn name(self) -> &'static str {
        match self {
            EtherType::Vlan => "8021q",
            EtherType::ServiceVlan => "8021ad",
        }
    }
}

/// What a rule does to a matching packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// A plain verdict.
    Verdict(Verdict),
    /// Look the key up in a verdict map and apply the verdict found (no verdict, and
    /// evaluation continues, when it is absent).
    VerdictMap(MapKey, SetName),
    /// Send the packet to userspace through NFLOG (`log prefix "enforcer egress " group 7`):
    /// the agent's drop audit reads the group. No verdict: evaluation goes on with the next
    /// rule.
    Log {
        /// The NFLOG group.
        group: u16,
        /// The prefix the message carries (it names the drop's reason).
        prefix: String,
    },
    /// Add the packet's input (or output) interface name to the named [`SetContent::Recorded`]
    /// set and count the packet against that element: `add @set { iifname counter }`. No
    /// verdict: evaluation goes on with the next rule, also when the set is full.
    RecordInterface(Side, SetName),
}

/// Which of a packet's interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The one it entered through (`iifname`).
    Input,
    /// The one it leaves through (`oifname`).
    Output,
}

/// What a verdict map is looked up by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MapKey {
    /// The packet's (masked) address.
    Address(AddressKey),
    /// The input interface's name (`iifname vmap @map`).
    InputInterface,
    /// The input interface's name and the source address of this family (`iifname . ip saddr
    /// vmap @map`): an address that counts only when it enters where it belongs.
    InputInterfaceAndSource(Family),
}

/// A verdict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// Stop evaluating this chain's hook here (other tables still decide).
    Accept,
    /// Drop the packet; final.
    Drop,
    /// Drop the packet for this reason, through the table's audit chain for it (`goto
    /// audit_<reason>`, which logs at a bounded rate and drops); final.
    Deny(DropReason),
    /// Return to the calling chain.
    Return,
    /// Go on with the next rule (a rule that only counts: `continue`).
    Continue,
    /// Evaluate the named chain, then come back.
    Jump(ChainName),
    /// Evaluate the named chain instead; its end returns to this chain's caller.
    Goto(ChainName),
}

/// Why a table drops a packet: the audit chain it goes to, and the `reason` of the drop
/// audit's log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// A managed source opening something its policy does not allow, outside its network (the
    /// agent reports one toward another managed address as [`DropReason::EastWest`]).
    Egress,
    /// A new connection toward a managed container that its role's ingress does not admit.
    Ingress,
    /// Between managed containers: an egress drop toward a managed address, which
    /// `audit_egress` hands on to `audit_east_west`.
    EastWest,
    /// A forged identity: a source address, MAC or ARP/ND claim not the sender's own.
    Spoofing,
    /// A bridge, or a bridge port, the agent has not classified yet.
    UnknownBridge,
    /// A managed container toward the host itself.
    Host,
    /// In or out of a quarantined interface.
    Quarantine,
}

impl DropReason {
    /// Every reason.
    pub const ALL: [DropReason; 7] = [
        DropReason::Egress,
        DropReason::Ingress,
        DropReason::EastWest,
        DropReason::Spoofing,
        DropReason::UnknownBridge,
        DropReason::Host,
        DropReason::Quarantine,
    ];

    /// Its name, as chain names (`audit_unknown_bridge`), NFLOG prefixes and log lines write it.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Egress => "egress",
            DropReason::Ingress => "ingress",
            DropReason::EastWest => "east_west",
            DropReason::Spoofing => "spoofing",
            DropReason::UnknownBridge => "unknown_bridge",
            DropReason::Host => "host",
            DropReason::Quarantine => "quarantine",
        }
    }

    /// The reason of this name (as [`DropReason::name`] writes it).
    pub fn named(name: &str) -> Option<DropReason> {
        DropReason::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl Ruleset {
    /// The set with this name.
    pub fn set(&self, name: &SetName) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == *name)
    }

    /// The chain with this name.
    pub fn chain(&self, name: &ChainName) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == *name)
    }
}
