//! [`Ruleset`] -> one nftables batch (a single kernel transaction):
//!
//! `BEGIN, NEWTABLE, DELTABLE, NEWTABLE, chains…, sets and elements…, rules…, END`
//!
//! Creating the table first makes the delete valid when it does not exist yet; deleting and
//! re-creating it inside the batch replaces every object at once at commit. The kernel commits
//! all of it or none of it, so there is never a moment without the rules.
//!
//! Tables, chains and rules are built with rustables. Sets, verdict maps and their elements are
//! written here with [`crate::wire`]: rustables 0.9 has no map flags, data types or element data.

use std::net::IpAddr;

use enforcer_core::render::prefix_mask;
use enforcer_core::ruleset::{
    Action, AddressKey, Chain as ChainDef, CtState, Direction, Family, Hook as HookDef, Match,
    Rule as RuleDef, Ruleset, Set as SetDef, SetContent, Verdict,
};
use enforcer_core::topology::Protocol;
use rustables::expr::{
    Bitwise, Cmp, CmpOp, Conntrack, ConntrackKey, Counter, Immediate, Lookup, Meta, MetaType,
    Payload, Register, VerdictKind,
};
use rustables::{
    Batch, Chain, ChainPolicy, ChainType, Hook, HookClass, MsgType, ProtocolFamily, Rule, Table,
};

use crate::wire::{self, AttrWriter};

pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(crate) const NFPROTO_INET: u8 = 1;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;

pub(crate) const NFT_MSG_NEWSET: u16 = 9;
pub(crate) const NFT_MSG_NEWSETELEM: u16 = 12;
pub(crate) const NFT_SET_MAP: u32 = 0x8;
pub(crate) const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
const NFT_GOTO: i32 = -4;
const NFT_JUMP: i32 = -3;
const NFT_RETURN: i32 = -5;
const NF_ACCEPT: i32 = 1;
const NF_DROP: i32 = 0;

// Attribute numbers (linux/netfilter/nf_tables.h).
pub(crate) const NFTA_SET_TABLE: u16 = 1;
pub(crate) const NFTA_SET_NAME: u16 = 2;
pub(crate) const NFTA_SET_FLAGS: u16 = 3;
pub(crate) const NFTA_SET_KEY_TYPE: u16 = 4;
pub(crate) const NFTA_SET_KEY_LEN: u16 = 5;
pub(crate) const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_ID: u16 = 10;
pub(crate) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(crate) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(crate) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
pub(crate) const NFTA_LIST_ELEM: u16 = 1;
pub(crate) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(crate) const NFTA_SET_ELEM_DATA: u16 = 2;
pub(crate) const NFTA_DATA_VALUE: u16 = 1;
pub(crate) const NFTA_DATA_VERDICT: u16 = 2;
pub(crate) const NFTA_VERDICT_CODE: u16 = 1;
pub(crate) const NFTA_VERDICT_CHAIN: u16 = 2;

/// nftables datatype ids, as `nft` shows them (`ipv4_addr`, `ipv6_addr`).
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const IPPROTO_ICMPV6: u8 = 58;
/// `NFT_PAYLOAD_NETWORK_HEADER` and `NFT_PAYLOAD_TRANSPORT_HEADER`.
const NETWORK_HEADER: u32 = 1;
const TRANSPORT_HEADER: u32 = 2;
/// The user-data TLV type `nft` reads a rule comment from.
const UDATA_RULE_COMMENT: u8 = 0;
/// Largest element payload put in one message (a netlink attribute's length is 16 bits).
const ELEMENTS_PER_MESSAGE_BYTES: usize = 48 * 1024;

/// A ruleset this encoder cannot express; nothing is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "rule {position} of chain {chain} combines the bridged match with other matches or a verdict \
     map, which enforcer cannot encode"
)]
pub struct EncodeError {
    /// The chain.
    pub chain: String,
    /// 1-based rule position.
    pub position: usize,
}

/// An encoded transaction, ready to send.
pub struct Transaction {
    /// The whole batch: BEGIN, content messages, END.
    pub bytes: Vec<u8>,
    /// Sequence number of the first content message.
    pub first_seq: u32,
    /// What each content message does, by position, for error messages.
    pub descriptions: Vec<String>,
}

impl Transaction {
    /// Sequence number of the last content message (the only one that asks for an ack).
    pub fn last_seq(&self) -> u32 {
        self.first_seq + self.descriptions.len() as u32 - 1
    }

    /// What the message with sequence number `seq` did.
    pub fn describe(&self, seq: u32) -> String {
        seq.checked_sub(self.first_seq)
            .and_then(|i| self.descriptions.get(i as usize))
            .cloned()
            .unwrap_or_else(|| "the transaction as a whole".to_string())
    }

    /// The content messages (without BEGIN and END).
    pub fn content(&self) -> impl Iterator<Item = wire::Message<'_>> {
        let skip = 1;
        let count = self.descriptions.len();
        wire::messages(&self.bytes).skip(skip).take(count)
    }
}

/// Encodes the whole replacement of `ruleset.table` as one batch.
pub fn encode(ruleset: &Ruleset, first_seq: u32) -> Result<Transaction, EncodeError> {
    let table = Table::new(ProtocolFamily::Inet).with_name(ruleset.table.as_str());
    let mut parts: Vec<(Vec<u8>, String)> = Vec::new();
    let name = &ruleset.table;

    let mut head = Batch::new();
    head.add(&table, MsgType::Add);
    head.add(&table, MsgType::Del);
    head.add(&table, MsgType::Add);
    let mut head_descriptions = vec![
        format!("create table inet {name} if missing"),
        format!("delete table inet {name}"),
        format!("create table inet {name}"),
    ];
    for chain in &ruleset.chains {
        head.add(&chain_object(&table, chain), MsgType::Add);
        head_descriptions.push(format!("create chain {}", chain.name));
    }
    parts.extend(batch_messages(head).into_iter().zip(head_descriptions));

    for (index, set) in ruleset.sets.iter().enumerate() {
        let id = index as u32 + 1;
        parts.push((
            set_message(name, set, id),
            format!("create set {}", set.name),
        ));
        for chunk in element_messages(name, set, id) {
            parts.push((chunk, format!("add elements to set {}", set.name)));
        }
    }

    let set_ids = |set: &str| {
        ruleset
            .sets
            .iter()
            .position(|s| s.name == set)
            .map(|i| i as u32 + 1)
            .unwrap_or(0)
    };
    // Rules go through rustables, except the bridged-traffic rule (rustables has no pkttype
    // key), which is written here; `own` keeps those in order among the others.
    let mut tail = Batch::new();
    let mut own: Vec<Option<Vec<u8>>> = Vec::new();
    let mut tail_descriptions = Vec::new();
    for chain_def in &ruleset.chains {
        let chain = chain_object(&table, chain_def);
        for (position, rule) in chain_def.rules.iter().enumerate() {
            match (rule.matches.as_slice(), &rule.action) {
                ([Match::Bridged], Action::Verdict(verdict)) => {
                    own.push(Some(bridged_rule_message(
                        name,
                        &chain_def.name,
                        rule,
                        verdict,
                    )));
                }
                (matches, _) if matches.contains(&Match::Bridged) => {
                    return Err(EncodeError {
                        chain: chain_def.name.clone(),
                        position: position + 1,
                    });
                }
                _ => {
                    tail.add(&rule_object(&chain, rule, &set_ids), MsgType::Add);
                    own.push(None);
                }
            }
            tail_descriptions.push(format!(
                "add rule {} of chain {} (\"{}\")",
                position + 1,
                chain_def.name,
                rule.comment
            ));
        }
    }
    let mut built = batch_messages(tail).into_iter();
    let rules = own.into_iter().map(|message| match message {
        Some(message) => message,
        None => built.next().expect("one rustables message per rule"),
    });
    parts.extend(rules.zip(tail_descriptions));

    let mut bytes = wire::message(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        first_seq - 1,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    let count = parts.len();
    let mut descriptions = Vec::with_capacity(count);
    for (index, (mut message, description)) in parts.into_iter().enumerate() {
        let original_flags = u16::from_ne_bytes([message[6], message[7]]);
        // Only the last message asks for an ack: errors are always reported, and one ack is
        // enough to know the batch went through without filling the socket with acks.
        let mut flags = (original_flags | NLM_F_REQUEST) & !NLM_F_ACK;
        if index + 1 == count {
            flags |= NLM_F_ACK;
        }
        wire::set_flags_and_seq(&mut message, flags, first_seq + index as u32);
        bytes.extend_from_slice(&message);
        descriptions.push(description);
    }
    bytes.extend(wire::message(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        first_seq + count as u32,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    ));
    Ok(Transaction {
        bytes,
        first_seq,
        descriptions,
    })
}

/// The content messages of a rustables batch, without its BEGIN and END.
fn batch_messages(batch: Batch) -> Vec<Vec<u8>> {
    let bytes = batch.finalize();
    let all: Vec<wire::Message<'_>> = wire::messages(&bytes).collect();
    all[1..all.len() - 1]
        .iter()
        .map(|m| {
            let mut out = Vec::with_capacity(wire::NLMSG_HDRLEN + m.payload.len());
            out.extend_from_slice(&((wire::NLMSG_HDRLEN + m.payload.len()) as u32).to_ne_bytes());
            out.extend_from_slice(&m.kind.to_ne_bytes());
            out.extend_from_slice(&m.flags.to_ne_bytes());
            out.extend_from_slice(&m.seq.to_ne_bytes());
            out.extend_from_slice(&0u32.to_ne_bytes());
            out.extend_from_slice(m.payload);
            out.resize(wire::align(out.len()), 0);
            out
        })
        .collect()
}

fn chain_object(table: &Table, chain: &ChainDef) -> Chain {
    let object = Chain::new(table).with_name(chain.name.as_str());
    match chain.hook {
        Some((hook, priority)) => {
            let class = match hook {
                HookDef::Forward => HookClass::Forward,
                HookDef::Input => HookClass::In,
            };
            object
                .with_hook(Hook::new(class, priority))
                .with_policy(ChainPolicy::Accept)
                .with_type(ChainType::Filter)
        }
        None => object,
    }
}

fn rule_object(chain: &Chain, rule: &RuleDef, set_id: &dyn Fn(&str) -> u32) -> Rule {
    let mut object = Rule::new(chain).expect("chain has a table and a name");
    for m in &rule.matches {
        match m {
            Match::CtState(states) => {
                let mask: u32 = states
                    .iter()
                    .map(|s| match s {
                        CtState::Invalid => 1,
                        CtState::Established => 2,
                        CtState::Related => 4,
                    })
                    .sum();
                object.add_expr(Conntrack::new(ConntrackKey::State).with_dreg(Register::Reg1));
                object.add_expr(bitwise(mask.to_ne_bytes().to_vec()));
                object.add_expr(Cmp::new(CmpOp::Neq, 0u32.to_ne_bytes()));
            }
            Match::Icmpv6Type(low, high) => {
                // As nft 1.0 encodes `icmpv6 type A-B` in an inet table.
                object.add_expr(Meta::new(MetaType::NfProto));
                object.add_expr(Cmp::new(CmpOp::Eq, [NFPROTO_IPV6]));
                object.add_expr(Meta::new(MetaType::L4Proto));
                object.add_expr(Cmp::new(CmpOp::Eq, [IPPROTO_ICMPV6]));
                object.add_expr(transport(0, 1));
                object.add_expr(Cmp::new(CmpOp::Gte, [*low]));
                object.add_expr(Cmp::new(CmpOp::Lte, [*high]));
            }
            Match::Bridged => unreachable!("bridged rules are written by bridged_rule_message"),
            Match::Address(direction, net) => {
                // As nft encodes a prefix: a byte-aligned one loads only its bytes, any other
                // loads the address and masks it.
                let family = Family::of(net.addr());
                let key = AddressKey {
                    family,
                    direction: *direction,
                    prefix_len: net.prefix_len(),
                };
                let network = address_bytes(net.network());
                if net.prefix_len() % 8 == 0 {
                    let bytes = usize::from(net.prefix_len() / 8);
                    load_address(&mut object, &key, bytes as u32);
                    object.add_expr(Cmp::new(CmpOp::Eq, network[..bytes].to_vec()));
                } else {
                    load_masked(&mut object, &key);
                    object.add_expr(Cmp::new(CmpOp::Eq, network));
                }
            }
            Match::InSet(key, set) => {
                load_masked(&mut object, key);
                object.add_expr(lookup(set, set_id(set)));
            }
            Match::DestinationPort(protocol, port) => {
                let number = match protocol {
                    Protocol::Tcp => 6u8,
                    Protocol::Udp => 17u8,
                };
                object.add_expr(Meta::new(MetaType::L4Proto));
                object.add_expr(Cmp::new(CmpOp::Eq, [number]));
                object.add_expr(transport(2, 2));
                object.add_expr(Cmp::new(CmpOp::Eq, port.to_be_bytes()));
            }
        }
    }
    if rule.counter {
        object.add_expr(Counter::default().with_nb_bytes(0u64).with_nb_packets(0u64));
    }
    match &rule.action {
        Action::Verdict(verdict) => {
            object.add_expr(Immediate::new_verdict(verdict_kind(verdict)));
        }
        Action::VerdictMap(key, map) => {
            load_masked(&mut object, key);
            object.add_expr(lookup(map, set_id(map)).with_dreg(Register::Verdict));
        }
    }
    object.with_userdata(comment_userdata(&rule.comment))
}

fn verdict_kind(verdict: &Verdict) -> VerdictKind {
    match verdict {
        Verdict::Accept => VerdictKind::Accept,
        Verdict::Drop => VerdictKind::Drop,
        Verdict::Return => VerdictKind::Return,
        Verdict::Jump(chain) => VerdictKind::Jump {
            chain: chain.clone(),
        },
        Verdict::Goto(chain) => VerdictKind::Goto {
            chain: chain.clone(),
        },
    }
}

fn bitwise(mask: Vec<u8>) -> Bitwise {
    let xor = vec![0u8; mask.len()];
    Bitwise::new(mask, xor).expect("mask and xor have the same length")
}

fn transport(offset: u32, len: u32) -> Payload {
    Payload::default()
        .with_base(TRANSPORT_HEADER)
        .with_offset(offset)
        .with_len(len)
        .with_dreg(Register::Reg1)
}

fn lookup(set: &str, id: u32) -> Lookup {
    Lookup::default()
        .with_set(set)
        .with_sreg(Register::Reg1)
        .with_set_id(id)
}

/// `meta nfproto ipvX` then the first `len` bytes of the address into register 1.
fn load_address(object: &mut Rule, key: &AddressKey, len: u32) {
    let (nfproto, offset): (u8, u32) = match (key.family, key.direction) {
        (Family::V4, Direction::Source) => (NFPROTO_IPV4, 12),
        (Family::V4, Direction::Destination) => (NFPROTO_IPV4, 16),
        (Family::V6, Direction::Source) => (NFPROTO_IPV6, 8),
        (Family::V6, Direction::Destination) => (NFPROTO_IPV6, 24),
    };
    object.add_expr(Meta::new(MetaType::NfProto));
    object.add_expr(Cmp::new(CmpOp::Eq, [nfproto]));
    object.add_expr(
        Payload::default()
            .with_base(NETWORK_HEADER)
            .with_offset(offset)
            .with_len(len)
            .with_dreg(Register::Reg1),
    );
}

/// The address masked to the key's prefix length, in register 1.
fn load_masked(object: &mut Rule, key: &AddressKey) {
    load_address(object, key, u32::from(key.family.bits() / 8));
    if key.prefix_len < key.family.bits() {
        object.add_expr(bitwise(address_bytes(prefix_mask(
            key.family,
            key.prefix_len,
        ))));
    }
}

fn address_bytes(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The rule user data `nft` shows as `comment "…"` (TLV: type, length, NUL-terminated text).
pub(crate) fn comment_userdata(comment: &str) -> Vec<u8> {
    let text: Vec<u8> = comment.bytes().take(250).collect();
    let mut out = vec![UDATA_RULE_COMMENT, text.len() as u8 + 1];
    out.extend_from_slice(&text);
    out.push(0);
    out
}

fn set_message(table: &str, set: &SetDef, id: u32) -> Vec<u8> {
    let (key_type, key_len) = match set.family {
        Family::V4 => (TYPE_IPADDR, 4),
        Family::V6 => (TYPE_IP6ADDR, 16),
    };
    let mut attrs = AttrWriter::new();
    attrs
        .string(NFTA_SET_TABLE, table)
        .string(NFTA_SET_NAME, &set.name);
    match set.content {
        SetContent::Addresses(_) => {
            attrs.be32(NFTA_SET_FLAGS, 0);
        }
        SetContent::VerdictMap(_) => {
            attrs.be32(NFTA_SET_FLAGS, NFT_SET_MAP);
        }
    }
    attrs
        .be32(NFTA_SET_KEY_TYPE, key_type)
        .be32(NFTA_SET_KEY_LEN, key_len);
    if let SetContent::VerdictMap(_) = set.content {
        attrs.be32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
    }
    attrs.be32(NFTA_SET_ID, id);
    let kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSET;
    wire::message(
        kind,
        NLM_F_REQUEST | NLM_F_CREATE,
        0,
        NFPROTO_INET,
        0,
        &attrs.finish(),
    )
}

/// The elements of `set`, in as many messages as their size needs.
fn element_messages(table: &str, set: &SetDef, id: u32) -> Vec<Vec<u8>> {
    let encoded: Vec<Vec<u8>> = match &set.content {
        SetContent::Addresses(addresses) => addresses.iter().map(|a| element(*a, None)).collect(),
        SetContent::VerdictMap(map) => map.iter().map(|(a, v)| element(*a, Some(v))).collect(),
    };
    let mut messages = Vec::new();
    let mut chunk: Vec<u8> = Vec::new();
    let flush = |chunk: &mut Vec<u8>, messages: &mut Vec<Vec<u8>>| {
        if chunk.is_empty() {
            return;
        }
        let mut attrs = AttrWriter::new();
        attrs
            .string(NFTA_SET_ELEM_LIST_TABLE, table)
            .string(NFTA_SET_ELEM_LIST_SET, &set.name)
            .be32(NFTA_SET_ELEM_LIST_SET_ID, id)
            .bytes(NFTA_SET_ELEM_LIST_ELEMENTS | wire::NLA_F_NESTED, chunk);
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM;
        messages.push(wire::message(
            kind,
            NLM_F_REQUEST | NLM_F_CREATE,
            0,
            NFPROTO_INET,
            0,
            &attrs.finish(),
        ));
        chunk.clear();
    };
    for element in encoded {
        if chunk.len() + element.len() > ELEMENTS_PER_MESSAGE_BYTES {
            flush(&mut chunk, &mut messages);
        }
        chunk.extend_from_slice(&element);
    }
    flush(&mut chunk, &mut messages);
    messages
}

fn element(key: IpAddr, verdict: Option<&Verdict>) -> Vec<u8> {
    let mut list = AttrWriter::new();
    list.nested(NFTA_LIST_ELEM, |elem| {
        elem.nested(NFTA_SET_ELEM_KEY, |k| {
            k.bytes(NFTA_DATA_VALUE, &address_bytes(key));
        });
        if let Some(verdict) = verdict {
            elem.nested(NFTA_SET_ELEM_DATA, |data| verdict_data(data, verdict));
        }
    });
    list.finish()
}

/// An `NFTA_DATA_VERDICT` nest.
fn verdict_data(data: &mut AttrWriter, verdict: &Verdict) {
    data.nested(NFTA_DATA_VERDICT, |v| {
        let (code, chain) = match verdict {
            Verdict::Accept => (NF_ACCEPT, None),
            Verdict::Drop => (NF_DROP, None),
            Verdict::Return => (NFT_RETURN, None),
            Verdict::Jump(chain) => (NFT_JUMP, Some(chain)),
            Verdict::Goto(chain) => (NFT_GOTO, Some(chain)),
        };
        v.be32(NFTA_VERDICT_CODE, code as u32);
        if let Some(chain) = chain {
            v.string(NFTA_VERDICT_CHAIN, chain);
        }
    });
}

const NFT_MSG_NEWRULE: u16 = 6;
const NLM_F_APPEND: u16 = 0x800;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFT_META_PKTTYPE: u32 = 19;
const NFT_CMP_NEQ: u32 = 1;
/// `PACKET_HOST`: the frame was addressed to this host.
const PACKET_HOST: u8 = 0;

/// `meta pkttype != host [counter] <verdict> comment "…"`, encoded as nft 1.0 does.
fn bridged_rule_message(table: &str, chain: &str, rule: &RuleDef, verdict: &Verdict) -> Vec<u8> {
    let expression = |list: &mut AttrWriter, name: &str, fill: &dyn Fn(&mut AttrWriter)| {
        list.nested(NFTA_LIST_ELEM, |e| {
            e.string(NFTA_EXPR_NAME, name)
                .nested(NFTA_EXPR_DATA, |d| fill(d));
        });
    };
    let mut attrs = AttrWriter::new();
    attrs
        .string(NFTA_RULE_TABLE, table)
        .string(NFTA_RULE_CHAIN, chain);
    attrs.nested(NFTA_RULE_EXPRESSIONS, |list| {
        expression(list, "meta", &|d| {
            d.be32(1, 1).be32(2, NFT_META_PKTTYPE); // dreg 1, key pkttype
        });
        expression(list, "cmp", &|d| {
            d.be32(1, 1).be32(2, NFT_CMP_NEQ); // sreg 1, op neq
            d.nested(3, |v| {
                v.bytes(NFTA_DATA_VALUE, &[PACKET_HOST]);
            });
        });
        if rule.counter {
            expression(list, "counter", &|d| {
                d.bytes(1, &0u64.to_be_bytes())
                    .bytes(2, &0u64.to_be_bytes());
            });
        }
        expression(list, "immediate", &|d| {
            d.be32(1, 0); // dreg: verdict
            d.nested(2, |data| verdict_data(data, verdict));
        });
    });
    attrs.bytes(NFTA_RULE_USERDATA, &comment_userdata(&rule.comment));
    let kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE;
    wire::message(
        kind,
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND,
        0,
        NFPROTO_INET,
        0,
        &attrs.finish(),
    )
}
