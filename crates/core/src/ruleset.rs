//! The desired nftables table as a plain value. It uses a deliberately small vocabulary (address
//! matches, set and verdict-map lookups, conntrack state, transport ports, counters) so that the
//! `nft` text renderer and the netlink encoder can each translate every construct exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::names::{ChainName, SetName};
use crate::topology::Protocol;

/// One `inet` table: its sets and maps first, then its chains (base chains first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// Table name (family is always `inet`).
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKey {
    /// Addresses of one family (or pairs of them, for [`SetContent::AddressPairs`]).
    Address(Family),
    /// Network interface names (`type ifname`).
    InterfaceName,
}

/// A named set of addresses or interface names, or a verdict map from addresses to chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    /// Set name.
    pub name: SetName,
    /// Type of its keys.
    pub key: SetKey,
    /// Its elements.
    pub content: SetContent,
}

/// Elements of a [`Set`].
#[derive(Debug, Clone, PartialEq, Eq)]
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
        }
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Netfilter hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Forwarded packets (container to elsewhere, and bridged packets with br_netfilter).
    Forward,
    /// Packets addressed to the host itself.
    Input,
}

impl Hook {
    /// The hook's name in `nft` syntax.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Forward => "forward",
            Hook::Input => "input",
        }
    }
}

/// A chain. Base chains (with a hook) always have policy `accept`: this table only drops what
/// it must and leaves every other decision to the host's other tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Chain name.
    pub name: ChainName,
    /// Hook and priority, for base chains.
    pub hook: Option<(Hook, i32)>,
    /// Rules, in evaluation order.
    pub rules: Vec<Rule>,
}

/// A rule: all matches must hold, then the optional counter counts and the action runs.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `saddr`.
    Source,
    /// `daddr`.
    Destination,
}

/// An address taken from the packet, masked to a prefix length: `ip saddr & 255.255.255.0`.
/// With the full length (32 or 128) no mask is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressKey {
    /// IP version; the rule only matches packets of this version.
    pub family: Family,
    /// Which address.
    pub direction: Direction,
    /// Prefix length kept by the mask.
    pub prefix_len: u8,
}

/// A connection tracking state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CtState {
    /// `invalid`.
    Invalid,
    /// `established`.
    Established,
    /// `related`.
    Related,
}

/// A condition on a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The input interface's name is (or, when `negated`, is not) in the named set
    /// (`iifname != @set`).
    InputInterfaceInSet {
        /// The set of interface names.
        set: SetName,
        /// Match when the name is absent from the set.
        negated: bool,
    },
}

/// What a rule does to a matching packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A plain verdict.
    Verdict(Verdict),
    /// Look the masked address up in a verdict map and apply the verdict found (no verdict, and
    /// evaluation continues, when it is absent).
    VerdictMap(AddressKey, SetName),
}

/// A verdict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Stop evaluating this chain's hook here (other tables still decide).
    Accept,
    /// Drop the packet; final.
    Drop,
    /// Return to the calling chain.
    Return,
    /// Evaluate the named chain, then come back.
    Jump(ChainName),
    /// Evaluate the named chain instead; its end returns to this chain's caller.
    Goto(ChainName),
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
