//! Rules: each construct of the planner's vocabulary written in exactly one function below,
//! made of the kernel's expressions the way `nft` 1.0 encodes the text
//! `enforcer_core::render` gives for it (so that `nft list` shows that text, and a table
//! loaded with `nft -f` lists the same).
//!
//! The expressions themselves ([`Expressions::meta`], [`Expressions::cmp`], ...) are each
//! written once too; a construct only chooses and orders them.

use enforcer_core::names::{ChainName, SetName, Spread};
use enforcer_core::render::prefix_mask;
use std::net::{Ipv4Addr, Ipv6Addr};

use enforcer_core::ports::MacAddr;
use enforcer_core::ruleset::{
    Action, AddressKey, CtState, Direction, Family, MapKey, Match, Rule, Side, TableFamily, Verdict,
};
use enforcer_core::topology::Protocol;
use ipnet::IpNet;

use super::{address_bytes, comment_userdata, interface_bytes};
use crate::abi::*;
use crate::wire::{self, AttrWriter};

/// The `NEWRULE` message that appends `rule` to `chain` of `(family, table)`; `set_id` gives
/// the batch-local id of a set created in the same transaction.
pub(super) fn rule_message(
    (family, table): (TableFamily, &str),
    chain: &ChainName,
    rule: &Rule,
    set_id: &dyn Fn(&SetName) -> u32,
) -> Vec<u8> {
    let mut attrs = AttrWriter::new();
    attrs
        .string(NFTA_RULE_TABLE, table)
        .string(NFTA_RULE_CHAIN, &chain.to_string());
    attrs.nested(NFTA_RULE_EXPRESSIONS, |list| {
        let mut rule_expressions = Expressions {
            list,
            set_id,
            family,
            network_known: false,
        };
        for condition in &rule.matches {
            rule_expressions.condition(condition);
        }
        if rule.counter {
            rule_expressions.add(counter);
        }
        rule_expressions.action(&rule.action);
    });
    attrs.bytes(NFTA_RULE_USERDATA, &comment_userdata(&rule.comment));
    wire::request(
        NFT_MSG_NEWRULE,
        NLM_F_CREATE | NLM_F_APPEND,
        0,
        nfproto(family),
        &attrs.finish(),
    )
}

/// A counter expression starting from zero: in a rule, and as the template that gives each
/// element of a counted set its own counter.
pub(super) fn counter(expression: &mut AttrWriter) {
    named(expression, "counter", |data| {
        data.bytes(NFTA_COUNTER_BYTES, &0u64.to_be_bytes())
            .bytes(NFTA_COUNTER_PACKETS, &0u64.to_be_bytes());
    });
}

/// An `NFTA_DATA_VERDICT` nest: in a rule's immediate verdict, and as a verdict map's data.
pub(super) fn verdict_data(data: &mut AttrWriter, verdict: &Verdict) {
    let (code, chain) = match verdict {
        Verdict::Accept => (NF_ACCEPT, None),
        Verdict::Drop => (NF_DROP, None),
        Verdict::Return => (NFT_RETURN, None),
        Verdict::Continue => (NFT_CONTINUE, None),
        Verdict::Jump(chain) => (NFT_JUMP, Some(chain.clone())),
        Verdict::Goto(chain) => (NFT_GOTO, Some(chain.clone())),
        Verdict::Deny(reason) => (NFT_GOTO, Some(ChainName::Audit(*reason))),
    };
    data.nested(NFTA_DATA_VERDICT, |v| {
        v.be32(NFTA_VERDICT_CODE, code as u32);
        if let Some(chain) = chain {
            v.string(NFTA_VERDICT_CHAIN, &chain.to_string());
        }
    });
}

/// An expression's name and its data (`NFTA_EXPR_NAME`, `NFTA_EXPR_DATA`).
fn named(expression: &mut AttrWriter, name: &str, data: impl FnOnce(&mut AttrWriter)) {
    expression
        .string(NFTA_EXPR_NAME, name)
        .nested(NFTA_EXPR_DATA, data);
}

/// What a lookup does with the key it finds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lookup {
    /// Matches when the key is in the set.
    Present,
    /// Matches when the key is absent.
    Absent,
    /// Applies the verdict the map holds for the key (continues when absent).
    Verdict,
}

/// The register that starts `words` 32-bit words into the register file, named as the kernel
/// dumps it: a 16-byte register when it starts one (`NFT_REG_2` for word 4), else a 32-bit one.
fn register_at(words: u32) -> u32 {
    match words % 4 {
        0 => NFT_REG_1 + words / 4,
        _ => NFT_REG32_00 + words,
    }
}

/// The expression list of one rule being written.
struct Expressions<'a, 'w> {
    list: &'w mut AttrWriter,
    set_id: &'a dyn Fn(&SetName) -> u32,
    /// The family of the rule's table: it decides how a rule checks the network protocol.
    family: TableFamily,
    /// Bridge tables: whether an earlier match of this rule already checked the frame's
    /// network protocol (`nft` writes that dependency once per rule there).
    network_known: bool,
}

/// The constructs: one function per `Match`, `Action` (and its verdict), the counter above.
impl Expressions<'_, '_> {
    fn condition(&mut self, condition: &Match) {
        match condition {
            Match::CtState(states) => self.ct_state(states),
            Match::Icmpv6Type(low, high) => self.icmpv6_type(*low, *high),
            Match::Address(direction, net) => self.address(*direction, net),
            Match::InSet(key, set) => self.in_set(key, set),
            Match::PairInSet(source, destination, set) => {
                self.pair_in_set(source, destination, set)
            }
            Match::DestinationPort(protocol, port) => self.destination_port(*protocol, *port),
            Match::InputInterface(pattern) => self.interface(NFT_META_IIFNAME, pattern),
            Match::OutputInterface(pattern) => self.interface(NFT_META_OIFNAME, pattern),
            Match::InputInterfaceInSet { set, negated } => {
                self.input_interface_in_set(set, *negated)
            }
            Match::SourcePort(protocol, port) => self.source_port(*protocol, *port),
            Match::SourceMac { mac, negated } => self.source_mac(*mac, *negated),
            Match::ArpSender(mac, address) => self.arp_sender(*mac, *address),
            Match::ArpSenderAddress(address) => self.arp_sender_address(*address),
            Match::NeighbourTarget(address) => self.neighbour_target(*address),
            Match::EtherType(ether_type) => self.outer_ether_type(ether_type.number()),
            Match::FlowInSet(address, set) => self.flow_in_set(*address, set),
            Match::HopLimit(limit) => self.hop_limit(*limit),
            Match::Limit { per_second, burst } => self.limit(*per_second, *burst),
        }
    }

    fn action(&mut self, action: &Action) {
        match action {
            Action::Verdict(verdict) => self.verdict(verdict),
            Action::VerdictMap(MapKey::Address(key), map) => {
                self.nfproto(key.family);
                self.masked_address(key, NFT_REG_1);
                self.lookup(map, Lookup::Verdict);
            }
            Action::VerdictMap(MapKey::InputInterface, map) => {
                self.meta(NFT_META_IIFNAME);
                self.lookup(map, Lookup::Verdict);
            }
            Action::VerdictMap(MapKey::InputInterfaceAndSource(family), map) => {
                // nft's order: the family, the name (four words), the address after it.
                self.nfproto(*family);
                self.meta(NFT_META_IIFNAME);
                let key = AddressKey {
                    family: *family,
                    direction: Direction::Source,
                    prefix_len: family.bits(),
                };
                self.masked_address(&key, register_at(IFNAME_LEN as u32 / 4));
                self.lookup(map, Lookup::Verdict);
            }
            Action::RecordInterface(side, set) => {
                self.meta(match side {
                    Side::Input => NFT_META_IIFNAME,
                    Side::Output => NFT_META_OIFNAME,
                });
                self.add_to_set(set);
            }
            Action::Log { group, prefix } => self.log(*group, prefix),
        }
    }

    /// `limit rate N/second burst B packets`.
    fn limit(&mut self, per_second: u32, burst: u32) {
        self.add(|e| {
            named(e, "limit", |d| {
                d.bytes(NFTA_LIMIT_RATE, &u64::from(per_second).to_be_bytes())
                    .bytes(NFTA_LIMIT_UNIT, &1u64.to_be_bytes())
                    .be32(NFTA_LIMIT_BURST, burst)
                    .be32(NFTA_LIMIT_TYPE, NFT_LIMIT_PKTS)
                    .be32(NFTA_LIMIT_FLAGS, 0);
            })
        });
    }

    /// `log prefix "P" group G`: to NFLOG, with the copy range the group's reader asks for.
    fn log(&mut self, group: u16, prefix: &str) {
        self.add(|e| {
            named(e, "log", |d| {
                d.string(NFTA_LOG_PREFIX, prefix)
                    .bytes(NFTA_LOG_GROUP, &group.to_be_bytes());
            })
        });
    }

    /// `accept`, `jump chain`, ...: an immediate verdict.
    fn verdict(&mut self, verdict: &Verdict) {
        self.add(|e| {
            named(e, "immediate", |d| {
                d.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
                d.nested(NFTA_IMMEDIATE_DATA, |data| verdict_data(data, verdict));
            })
        });
    }

    /// `ct state a,b`: the state bit is one of them.
    fn ct_state(&mut self, states: &[CtState]) {
        let mask = states
            .iter()
            .map(|s| match s {
                CtState::Invalid => NF_CT_STATE_INVALID_BIT,
                CtState::Established => NF_CT_STATE_ESTABLISHED_BIT,
                CtState::Related => NF_CT_STATE_RELATED_BIT,
            })
            .fold(0, |mask, bit| mask | bit);
        self.add(|e| {
            named(e, "ct", |d| {
                d.be32(NFTA_CT_DREG, NFT_REG_1)
                    .be32(NFTA_CT_KEY, NFT_CT_STATE);
            })
        });
        // The state is a host-order bit field.
        self.bitwise(NFT_REG_1, &mask.to_ne_bytes());
        self.cmp(NFT_CMP_NEQ, &0u32.to_ne_bytes());
    }

    /// `icmpv6 type low-high` (one type: `icmpv6 type t`).
    fn icmpv6_type(&mut self, low: u8, high: u8) {
        match self.family {
            TableFamily::Inet => self.nfproto(Family::V6),
            TableFamily::Bridge | TableFamily::Arp => self.ether_type(ETH_P_IPV6),
        }
        self.l4proto(IPPROTO_ICMPV6);
        self.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1, NFT_REG_1);
        if low == high {
            self.cmp(NFT_CMP_EQ, &[low]);
        } else {
            self.cmp(NFT_CMP_GTE, &[low]);
            self.cmp(NFT_CMP_LTE, &[high]);
        }
    }

    /// `udp sport 67`.
    fn source_port(&mut self, protocol: Protocol, port: u16) {
        self.l4proto(protocol.number());
        self.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2, NFT_REG_1);
        self.cmp(NFT_CMP_EQ, &port.to_be_bytes());
    }

    /// `ether saddr M`, or `ether saddr != M` when `negated`.
    fn source_mac(&mut self, mac: MacAddr, negated: bool) {
        self.payload(NFT_PAYLOAD_LL_HEADER, 6, 6, NFT_REG_1);
        self.cmp(if negated { NFT_CMP_NEQ } else { NFT_CMP_EQ }, &mac.0);
    }

    /// `arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether M arp saddr ip A`, in
    /// the three loads `nft` merges it into.
    fn arp_sender(&mut self, mac: MacAddr, address: Ipv4Addr) {
        self.ether_type(ETH_P_ARP);
        let kinds = [ARPHRD_ETHER.to_be_bytes(), ETH_P_IP.to_be_bytes()].concat();
        self.payload(NFT_PAYLOAD_NETWORK_HEADER, 0, 4, NFT_REG_1);
        self.cmp(NFT_CMP_EQ, &kinds);
        self.payload(NFT_PAYLOAD_NETWORK_HEADER, 4, 2, NFT_REG_1);
        self.cmp(NFT_CMP_EQ, &[ETH_ALEN, IPV4_ALEN]);
        let sender = [&mac.0[..], &address.octets()[..]].concat();
        self.payload(
            NFT_PAYLOAD_NETWORK_HEADER,
            8,
            sender.len() as u32,
            NFT_REG_1,
        );
        self.cmp(NFT_CMP_EQ, &sender);
    }

    /// `ip6 hoplimit N`.
    fn hop_limit(&mut self, limit: u8) {
        self.nfproto(Family::V6);
        self.payload(NFT_PAYLOAD_NETWORK_HEADER, 7, 1, NFT_REG_1);
        self.cmp(NFT_CMP_EQ, &[limit]);
    }

    /// `arp saddr ip A`: the sender protocol address, at its offset for Ethernet and IPv4.
    fn arp_sender_address(&mut self, address: Ipv4Addr) {
        self.ether_type(ETH_P_ARP);
        self.payload(NFT_PAYLOAD_NETWORK_HEADER, 14, 4, NFT_REG_1);
        self.cmp(NFT_CMP_EQ, &address.octets());
    }

    /// `@th,64,128 0x…`: the target address of a neighbour solicitation or advertisement.
    fn neighbour_target(&mut self, address: Ipv6Addr) {
        self.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 8, 16, NFT_REG_1);
        self.cmp(NFT_CMP_EQ, &address.octets());
    }

    /// `ether type T` as a condition of its own: the frame's outer type, tag included.
    fn outer_ether_type(&mut self, ether_type: u16) {
        self.payload(NFT_PAYLOAD_LL_HEADER, 12, 2, NFT_REG_1);
        self.cmp(NFT_CMP_EQ, &ether_type.to_be_bytes());
    }

    /// `ether type T` (bridge tables), once per rule, as the dependency of a later match.
    fn ether_type(&mut self, ether_type: u16) {
        if !std::mem::replace(&mut self.network_known, true) {
            self.payload(NFT_PAYLOAD_LL_HEADER, 12, 2, NFT_REG_1);
            self.cmp(NFT_CMP_EQ, &ether_type.to_be_bytes());
        }
    }

    /// `ip saddr 10.0.0.0/24`: a byte-aligned prefix loads only its bytes, any other loads the
    /// address and masks it.
    fn address(&mut self, direction: Direction, net: &IpNet) {
        let key = AddressKey {
            family: Family::of(net.addr()),
            direction,
            prefix_len: net.prefix_len(),
        };
        let network = address_bytes(net.network());
        self.nfproto(key.family);
        if net.prefix_len() % 8 == 0 {
            let len = usize::from(net.prefix_len() / 8);
            let (offset, _) = address_field(&key);
            self.payload(NFT_PAYLOAD_NETWORK_HEADER, offset, len as u32, NFT_REG_1);
            self.cmp(NFT_CMP_EQ, &network[..len]);
        } else {
            self.masked_address(&key, NFT_REG_1);
            self.cmp(NFT_CMP_EQ, &network);
        }
    }

    /// `ip saddr & 255.255.255.0 @set`.
    fn in_set(&mut self, key: &AddressKey, set: &SetName) {
        self.nfproto(key.family);
        self.masked_address(key, NFT_REG_1);
        self.lookup(set, Lookup::Present);
    }

    /// `ip saddr & M . ip daddr & M @set`: the concatenation's second part goes in the register
    /// right after the first part (a 32-bit one for IPv4).
    fn pair_in_set(&mut self, source: &AddressKey, destination: &AddressKey, set: &SetName) {
        let second = match source.family {
            Family::V4 => NFT_REG32_00 + 1,
            Family::V6 => NFT_REG_2,
        };
        self.nfproto(source.family);
        self.masked_address(source, NFT_REG_1);
        self.masked_address(destination, second);
        self.lookup(set, Lookup::Present);
    }

    /// `ip daddr . meta l4proto . th dport @set` (or without the address): each part in the
    /// 32-bit registers after the previous one's, then one lookup.
    fn flow_in_set(&mut self, address: Option<(Family, Direction)>, set: &SetName) {
        let mut words = 0;
        if let Some((family, direction)) = address {
            self.nfproto(family);
            let key = AddressKey {
                family,
                direction,
                prefix_len: family.bits(),
            };
            self.masked_address(&key, NFT_REG_1);
            words += family.bits() as u32 / 32;
        }
        self.meta_into(NFT_META_L4PROTO, register_at(words));
        // What nft 1.0.6 writes after `meta l4proto` in a concatenation of ranges (not of
        // single values): a byte-order conversion of 1 byte in units of 2, which changes
        // nothing; written too so that the table `nft -f` makes of the dry-run text is this
        // one, expression for expression.
        if set.spread() == Some(Spread::Ranges) {
            self.byteorder(register_at(words), 1, 2);
        }
        self.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, register_at(words + 1));
        self.lookup(set, Lookup::Present);
    }

    /// `tcp dport 443`.
    fn destination_port(&mut self, protocol: Protocol, port: u16) {
        self.l4proto(protocol.number());
        self.payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG_1);
        self.cmp(NFT_CMP_EQ, &port.to_be_bytes());
    }

    /// `iifname "br-*"` compares only the name's prefix; `iifname "docker0"` the whole,
    /// NUL-padded name.
    fn interface(&mut self, key: u32, pattern: &str) {
        self.meta(key);
        match pattern.strip_suffix('*') {
            Some(stem) => self.cmp(NFT_CMP_EQ, stem.as_bytes()),
            None => self.cmp(NFT_CMP_EQ, &interface_bytes(pattern)),
        }
    }

    /// `iifname @set`, or `iifname != @set` when `negated`.
    fn input_interface_in_set(&mut self, set: &SetName, negated: bool) {
        self.meta(NFT_META_IIFNAME);
        let lookup = if negated {
            Lookup::Absent
        } else {
            Lookup::Present
        };
        self.lookup(set, lookup);
    }

    /// What `nft` puts before an address: `meta nfproto ipv4` (or ipv6) in an inet table, and
    /// in a bridge table `meta protocol ip` (or ip6), once per rule. (An arp table's packets
    /// are all ARP, so there the check never matches, as it should.)
    fn nfproto(&mut self, family: Family) {
        match self.family {
            TableFamily::Inet => {
                if std::mem::replace(&mut self.network_known, true) {
                    return;
                }
                let value = match family {
                    Family::V4 => NFPROTO_IPV4,
                    Family::V6 => NFPROTO_IPV6,
                };
                self.meta(NFT_META_NFPROTO);
                self.cmp(NFT_CMP_EQ, &[value]);
            }
            TableFamily::Bridge | TableFamily::Arp => {
                if !std::mem::replace(&mut self.network_known, true) {
                    let value = match family {
                        Family::V4 => ETH_P_IP,
                        Family::V6 => ETH_P_IPV6,
                    };
                    self.meta(NFT_META_PROTOCOL);
                    self.cmp(NFT_CMP_EQ, &value.to_be_bytes());
                }
            }
        }
    }

    /// `meta l4proto P`.
    fn l4proto(&mut self, protocol: u8) {
        self.meta(NFT_META_L4PROTO);
        self.cmp(NFT_CMP_EQ, &[protocol]);
    }

    /// The address of `key`, masked to its prefix length, into `register`.
    fn masked_address(&mut self, key: &AddressKey, register: u32) {
        let (offset, len) = address_field(key);
        self.payload(NFT_PAYLOAD_NETWORK_HEADER, offset, len, register);
        if key.prefix_len < key.family.bits() {
            let mask = address_bytes(prefix_mask(key.family, key.prefix_len));
            self.bitwise(register, &mask);
        }
    }
}

/// The kernel's expressions, each written in one function.
impl Expressions<'_, '_> {
    /// Appends one expression (an `NFTA_LIST_ELEM`) that `expression` writes.
    fn add(&mut self, expression: impl FnOnce(&mut AttrWriter)) {
        self.list.nested(NFTA_LIST_ELEM, expression);
    }

    /// `meta`: loads `key` into register 1.
    fn meta(&mut self, key: u32) {
        self.meta_into(key, NFT_REG_1);
    }

    /// `byteorder`: `register` to network order, `len` bytes in units of `size`, in place.
    fn byteorder(&mut self, register: u32, len: u32, size: u32) {
        self.add(|e| {
            named(e, "byteorder", |d| {
                d.be32(NFTA_BYTEORDER_SREG, register)
                    .be32(NFTA_BYTEORDER_DREG, register)
                    .be32(NFTA_BYTEORDER_OP, NFT_BYTEORDER_HTON)
                    .be32(NFTA_BYTEORDER_LEN, len)
                    .be32(NFTA_BYTEORDER_SIZE, size);
            })
        });
    }

    /// `meta`: the packet's `key` into `register`.
    fn meta_into(&mut self, key: u32, register: u32) {
        self.add(|e| {
            named(e, "meta", |d| {
                d.be32(NFTA_META_DREG, register).be32(NFTA_META_KEY, key);
            })
        });
    }

    /// `cmp`: register 1 against `value`.
    fn cmp(&mut self, op: u32, value: &[u8]) {
        self.add(|e| {
            named(e, "cmp", |d| {
                d.be32(NFTA_CMP_SREG, NFT_REG_1).be32(NFTA_CMP_OP, op);
                d.nested(NFTA_CMP_DATA, |v| {
                    v.bytes(NFTA_DATA_VALUE, value);
                });
            })
        });
    }

    /// `payload`: `len` bytes at `offset` of header `base` into `register`.
    fn payload(&mut self, base: u32, offset: u32, len: u32, register: u32) {
        self.add(|e| {
            named(e, "payload", |d| {
                d.be32(NFTA_PAYLOAD_DREG, register)
                    .be32(NFTA_PAYLOAD_BASE, base)
                    .be32(NFTA_PAYLOAD_OFFSET, offset)
                    .be32(NFTA_PAYLOAD_LEN, len);
            })
        });
    }

    /// `bitwise`: `register & mask`, in place.
    fn bitwise(&mut self, register: u32, mask: &[u8]) {
        self.add(|e| {
            named(e, "bitwise", |d| {
                d.be32(NFTA_BITWISE_SREG, register)
                    .be32(NFTA_BITWISE_DREG, register)
                    .be32(NFTA_BITWISE_LEN, mask.len() as u32);
                d.nested(NFTA_BITWISE_MASK, |v| {
                    v.bytes(NFTA_DATA_VALUE, mask);
                });
                d.nested(NFTA_BITWISE_XOR, |v| {
                    v.bytes(NFTA_DATA_VALUE, &vec![0u8; mask.len()]);
                });
            })
        });
    }

    /// `lookup` of register 1 in `set`.
    /// `add @set { <register 1> counter }`: the key in register 1 joins the dynamic set,
    /// its element counting this packet and every later one.
    fn add_to_set(&mut self, set: &SetName) {
        let set_id = (self.set_id)(set);
        self.add(|e| {
            named(e, "dynset", |d| {
                d.be32(NFTA_DYNSET_SREG_KEY, NFT_REG_1)
                    .be32(NFTA_DYNSET_OP, NFT_DYNSET_OP_ADD)
                    .string(NFTA_DYNSET_SET_NAME, &set.to_string())
                    .be32(NFTA_DYNSET_SET_ID, set_id)
                    .nested(NFTA_DYNSET_EXPR, counter);
            })
        });
    }

    fn lookup(&mut self, set: &SetName, lookup: Lookup) {
        let set_id = (self.set_id)(set);
        self.add(|e| {
            named(e, "lookup", |d| {
                d.string(NFTA_LOOKUP_SET, &set.to_string())
                    .be32(NFTA_LOOKUP_SREG, NFT_REG_1);
                if lookup == Lookup::Verdict {
                    d.be32(NFTA_LOOKUP_DREG, NFT_REG_VERDICT);
                }
                d.be32(NFTA_LOOKUP_SET_ID, set_id);
                if lookup == Lookup::Absent {
                    d.be32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
                }
            })
        });
    }
}

/// Offset and length of an address in the network header.
fn address_field(key: &AddressKey) -> (u32, u32) {
    match (key.family, key.direction) {
        (Family::V4, Direction::Source) => (12, 4),
        (Family::V4, Direction::Destination) => (16, 4),
        (Family::V6, Direction::Source) => (8, 16),
        (Family::V6, Direction::Destination) => (24, 16),
    }
}
