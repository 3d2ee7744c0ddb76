//! [`Ruleset`] -> one nftables batch (a single kernel transaction): [`encode`] builds every
//! message once, [`Parts::transaction`] assembles them against what the kernel holds. The
//! kernel commits all of it or none of it, so there is never a moment without the rules.
//!
//! Tables, chains and rules are built with rustables. Sets, verdict maps and their elements are
//! written here with [`crate::wire`]: rustables 0.9 has no map flags, data types or element data.

use std::net::IpAddr;

use enforcer_core::names::SetName;
use enforcer_core::render::prefix_mask;
use enforcer_core::ruleset::{
    Action, AddressKey, Chain as ChainDef, CtState, Direction, Family, Hook as HookDef, Match,
    Rule as RuleDef, Ruleset, Set as SetDef, SetContent, SetKey, Verdict,
};
use rustables::expr::{
    Bitwise, Cmp, CmpOp, Conntrack, ConntrackKey, Counter, Immediate, Lookup, Meta, MetaType,
    Payload, Register, VerdictKind,
};
use rustables::{
    Batch, Chain, ChainPolicy, ChainType, Hook, HookClass, MsgType, ProtocolFamily, Rule, Table,
};

use crate::abi::*;
use crate::state::{BaseChain, TableState};
use crate::wire::{self, AttrWriter};

/// Largest element payload put in one message (a netlink attribute's length is 16 bits).
const ELEMENTS_PER_MESSAGE_BYTES: usize = 48 * 1024;

/// A ruleset this encoder cannot express; nothing is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "rule {position} of chain {chain} combines a pair lookup or interface match with matches or \
     an action enforcer's own encoder does not write (only interface and pair matches, then a \
     verdict)"
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
}

/// One encoded message and what it does (for error messages).
type Part = (Vec<u8>, String);

/// A chain: its creation message, base-chain properties, and its rules' messages.
struct ChainPart {
    name: String,
    base: Option<BaseChain>,
    create: Part,
    rules: Vec<Part>,
}

/// A set: its creation message and each element (key bytes, encoded `NFTA_LIST_ELEM`).
struct SetPart {
    name: String,
    id: u32,
    create: Part,
    elements: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Every message that creates the desired table, encoded once, grouped so that a transaction
/// can be assembled against whatever the kernel holds.
pub struct Parts {
    table: String,
    /// `NEWTABLE`, `DELTABLE`: creating the table, deleting it.
    table_messages: [Part; 2],
    chains: Vec<ChainPart>,
    sets: Vec<SetPart>,
}

/// Encodes every object of `ruleset`.
pub fn encode(ruleset: &Ruleset) -> Result<Parts, EncodeError> {
    let table = Table::new(ProtocolFamily::Inet).with_name(ruleset.table.as_str());
    let name = &ruleset.table;

    let mut head = Batch::new();
    head.add(&table, MsgType::Add);
    head.add(&table, MsgType::Del);
    for chain in &ruleset.chains {
        head.add(&chain_object(&table, chain), MsgType::Add);
    }
    let mut head = batch_messages(head).into_iter();
    let create = (
        head.next().expect("table message"),
        format!("create table inet {name}"),
    );
    let delete = (
        head.next().expect("table message"),
        format!("delete table inet {name}"),
    );
    let mut chains: Vec<ChainPart> = ruleset
        .chains
        .iter()
        .zip(head)
        .map(|(chain, message)| {
            let mut scratch = TableState::default();
            if let Some(parsed) = wire::messages(&message).next() {
                scratch.absorb(name, &parsed);
            }
            let base = scratch
                .chains
                .remove(&chain.name.to_string())
                .and_then(|c| c.base);
            let create = (message, format!("create chain {}", chain.name));
            ChainPart {
                name: chain.name.to_string(),
                base,
                create,
                rules: Vec::new(),
            }
        })
        .collect();

    let sets = ruleset
        .sets
        .iter()
        .enumerate()
        .map(|(index, set)| {
            let id = index as u32 + 1;
            let elements = match &set.content {
                SetContent::Addresses(addresses) => addresses
                    .iter()
                    .map(|a| (address_bytes(*a), element(&address_bytes(*a), None)))
                    .collect(),
                SetContent::VerdictMap(map) => map
                    .iter()
                    .map(|(a, v)| (address_bytes(*a), element(&address_bytes(*a), Some(v))))
                    .collect(),
                SetContent::Counted(members) => members
                    .iter()
                    .map(|(a, comment)| {
                        let key = address_bytes(*a);
                        let element = commented_element(&key, comment);
                        (key, element)
                    })
                    .collect(),
                SetContent::AddressPairs(pairs) => pairs
                    .iter()
                    .map(|(a, b)| {
                        let key = [address_bytes(*a), address_bytes(*b)].concat();
                        let element = element(&key, None);
                        (key, element)
                    })
                    .collect(),
                SetContent::InterfaceNames(names) => names
                    .iter()
                    .map(|n| {
                        let key = interface_bytes(n);
                        let element = element(&key, None);
                        (key, element)
                    })
                    .collect(),
            };
            let create = (
                set_message(name, set, id),
                format!("create set {}", set.name),
            );
            SetPart {
                name: set.name.to_string(),
                id,
                create,
                elements,
            }
        })
        .collect();

    let set_ids = |set: &SetName| {
        ruleset
            .sets
            .iter()
            .position(|s| s.name == *set)
            .map(|i| i as u32 + 1)
            .unwrap_or(0)
    };
    // Rules go through rustables, except those it cannot express, written here: pair lookups
    // (a concatenated IPv4 key needs the 32-bit registers) and interface matches (inverted
    // lookups, prefix compares). `own` keeps the order.
    let mut tail = Batch::new();
    let mut own: Vec<(usize, Option<Vec<u8>>, String)> = Vec::new();
    for (chain_index, chain_def) in ruleset.chains.iter().enumerate() {
        let chain = chain_object(&table, chain_def);
        for (position, rule) in chain_def.rules.iter().enumerate() {
            let description = format!(
                "add rule {} of chain {} (\"{}\")",
                position + 1,
                chain_def.name,
                rule.comment
            );
            let needs_own = rule.matches.iter().any(|m| {
                matches!(
                    m,
                    Match::PairInSet(..)
                        | Match::InputInterface(_)
                        | Match::InputInterfaceInSet { .. }
                )
            });
            match &rule.action {
                Action::Verdict(verdict) if needs_own => {
                    let message = own_rule_message(
                        name,
                        &chain_def.name.to_string(),
                        rule,
                        verdict,
                        &set_ids,
                    )
                    .ok_or_else(|| EncodeError {
                        chain: chain_def.name.to_string(),
                        position: position + 1,
                    })?;
                    own.push((chain_index, Some(message), description));
                }
                _ if needs_own => {
                    return Err(EncodeError {
                        chain: chain_def.name.to_string(),
                        position: position + 1,
                    });
                }
                _ => {
                    tail.add(&rule_object(&chain, rule, &set_ids), MsgType::Add);
                    own.push((chain_index, None, description));
                }
            }
        }
    }
    let mut built = batch_messages(tail).into_iter();
    for (chain_index, message, description) in own {
        let message = message.unwrap_or_else(|| built.next().expect("one message per rule"));
        chains[chain_index].rules.push((message, description));
    }

    Ok(Parts {
        table: name.clone(),
        table_messages: [create, delete],
        chains,
        sets,
    })
}

impl Parts {
    /// The canonical state of the table these messages create.
    pub fn state(&self) -> TableState {
        let mut state = TableState::default();
        let chain_messages = self
            .chains
            .iter()
            .flat_map(|c| std::iter::once(&c.create).chain(&c.rules));
        let set_messages = self.sets.iter().map(|s| &s.create);
        for (message, _) in chain_messages.chain(set_messages) {
            for parsed in wire::messages(message) {
                state.absorb(&self.table, &parsed);
            }
        }
        for set in &self.sets {
            let target = state.sets.entry(set.name.clone()).or_default();
            for (_, element) in &set.elements {
                for (_, payload) in wire::attributes(element) {
                    target.absorb_element(payload);
                }
            }
        }
        state
    }

    /// The transaction that makes the kernel hold the desired table: `against` is `None` when
    /// the table is absent, else (the kernel's table, the desired one as [`Parts::state`]).
    ///
    /// From scratch: create the table, delete it, create it again (the delete makes the batch
    /// valid even if the table appeared meanwhile), then every object.
    ///
    /// Over an existing table, only what differs changes: chains whose rules differ are flushed
    /// and refilled, sets lose and gain only the elements that differ, and objects no longer
    /// wanted are deleted. What stays the same is not touched, and that is what keeps the
    /// replacement free of any window: the kernel flips from the old generation to the new one
    /// at commit, but a packet in flight picks its chain's rules at chain entry and looks set
    /// elements up with the generation of the moment of lookup. An element or chain deleted
    /// and re-created in the same transaction would be missing for a packet that straddles the
    /// flip; one left alone is there in both generations.
    pub fn transaction(
        &self,
        against: Option<(&TableState, &TableState)>,
        first_seq: u32,
    ) -> Transaction {
        let table = self.table.as_str();
        let [create, delete] = &self.table_messages;
        let mut parts: Vec<Part> = vec![create.clone()];
        let Some((current, desired)) = against else {
            parts.push(delete.clone());
            parts.push(create.clone());
            parts.extend(self.chains.iter().map(|c| c.create.clone()));
            for set in &self.sets {
                parts.push(set.create.clone());
                let all: Vec<&Vec<u8>> = set.elements.iter().map(|(_, e)| e).collect();
                parts.extend(element_messages(
                    NFT_MSG_NEWSETELEM,
                    table,
                    &set.name,
                    Some(set.id),
                    &all,
                ));
            }
            parts.extend(self.chains.iter().flat_map(|c| c.rules.iter().cloned()));
            return assemble(parts, first_seq);
        };

        // Sets that cannot be updated in place (type changed) are deleted and re-created; rules
        // may use them, so then every chain is rewritten.
        let retyped: Vec<&str> = self
            .sets
            .iter()
            .filter(|s| {
                current
                    .sets
                    .get(&s.name)
                    .is_some_and(|have| !have.same_type(&desired.sets[&s.name]))
            })
            .map(|s| s.name.as_str())
            .collect();
        let recreated_chains: Vec<&str> = self
            .chains
            .iter()
            .filter(|c| {
                current
                    .chains
                    .get(&c.name)
                    .is_some_and(|have| have.base != c.base)
            })
            .map(|c| c.name.as_str())
            .collect();
        let rewrite = |name: &str| {
            !retyped.is_empty()
                || recreated_chains.contains(&name)
                || current.chains.get(name).map(|c| &c.rules)
                    != desired.chains.get(name).map(|c| &c.rules)
        };

        // 1. Flush the rules of every chain that changes or goes away.
        for (name, chain) in &current.chains {
            let wanted = desired.chains.contains_key(name);
            if !chain.rules.is_empty() && (!wanted || rewrite(name)) {
                let attrs = [(NFTA_RULE_TABLE, table), (NFTA_RULE_CHAIN, name.as_str())];
                parts.push(request(
                    NFT_MSG_DELRULE,
                    &attrs,
                    format!("flush chain {name}"),
                ));
            }
        }
        // 2. Remove the elements that go away or change, from sets that stay.
        for set in &self.sets {
            let (Some(have), false) = (
                current.sets.get(&set.name),
                retyped.contains(&set.name.as_str()),
            ) else {
                continue;
            };
            let want = &desired.sets[&set.name];
            let gone: Vec<Vec<u8>> = have
                .differing(want)
                .map(|(key, _)| element(key, None))
                .collect();
            let gone: Vec<&Vec<u8>> = gone.iter().collect();
            parts.extend(element_messages(
                NFT_MSG_DELSETELEM,
                table,
                &set.name,
                None,
                &gone,
            ));
        }
        // 3. Delete sets and chains that go away (or must be re-created).
        for name in current.sets.keys() {
            if !desired.sets.contains_key(name) || retyped.contains(&name.as_str()) {
                let attrs = [(NFTA_SET_TABLE, table), (NFTA_SET_NAME, name.as_str())];
                parts.push(request(
                    NFT_MSG_DELSET,
                    &attrs,
                    format!("delete set {name}"),
                ));
            }
        }
        for name in current.chains.keys() {
            if !desired.chains.contains_key(name) || recreated_chains.contains(&name.as_str()) {
                let attrs = [(NFTA_CHAIN_TABLE, table), (NFTA_CHAIN_NAME, name.as_str())];
                parts.push(request(
                    NFT_MSG_DELCHAIN,
                    &attrs,
                    format!("delete chain {name}"),
                ));
            }
        }
        // 4. Create chains and sets that are new, and add the elements that are new.
        for chain in &self.chains {
            if !current.chains.contains_key(&chain.name)
                || recreated_chains.contains(&chain.name.as_str())
            {
                parts.push(chain.create.clone());
            }
        }
        for set in &self.sets {
            let have = current
                .sets
                .get(&set.name)
                .filter(|_| !retyped.contains(&set.name.as_str()));
            let added: Vec<&Vec<u8>> = match have {
                None => {
                    parts.push(set.create.clone());
                    set.elements.iter().map(|(_, e)| e).collect()
                }
                Some(have) => {
                    let want = &desired.sets[&set.name];
                    set.elements
                        .iter()
                        .filter(|(key, _)| have.elements.get(key) != want.elements.get(key))
                        .map(|(_, e)| e)
                        .collect()
                }
            };
            let id = have.is_none().then_some(set.id);
            parts.extend(element_messages(
                NFT_MSG_NEWSETELEM,
                table,
                &set.name,
                id,
                &added,
            ));
        }
        // 5. Fill the chains that are new or were flushed.
        for chain in &self.chains {
            if !current.chains.contains_key(&chain.name) || rewrite(&chain.name) {
                parts.extend(chain.rules.iter().cloned());
            }
        }
        assemble(parts, first_seq)
    }
}

/// A request (delete, flush) with string attributes only.
fn request(msg: u16, attrs: &[(u16, &str)], description: String) -> Part {
    let mut writer = AttrWriter::new();
    for (ty, value) in attrs {
        writer.string(*ty, value);
    }
    let kind = (NFNL_SUBSYS_NFTABLES << 8) | msg;
    (
        wire::message(kind, NLM_F_REQUEST, 0, NFPROTO_INET, 0, &writer.finish()),
        description,
    )
}

/// BEGIN, the messages numbered from `first_seq`, END.
fn assemble(parts: Vec<Part>, first_seq: u32) -> Transaction {
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
    Transaction {
        bytes,
        first_seq,
        descriptions,
    }
}

/// The content messages of a rustables batch, without its BEGIN and END.
fn batch_messages(batch: Batch) -> Vec<Vec<u8>> {
    let bytes = batch.finalize();
    let all: Vec<wire::Message<'_>> = wire::messages(&bytes).collect();
    all[1..all.len() - 1]
        .iter()
        .map(wire::Message::to_bytes)
        .collect()
}

fn chain_object(table: &Table, chain: &ChainDef) -> Chain {
    let object = Chain::new(table).with_name(chain.name.to_string());
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

fn rule_object(chain: &Chain, rule: &RuleDef, set_id: &dyn Fn(&SetName) -> u32) -> Rule {
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
            Match::PairInSet(..) | Match::InputInterface(_) | Match::InputInterfaceInSet { .. } => {
                unreachable!("written by own_rule_message")
            }
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
                object.add_expr(lookup(&set.to_string(), set_id(set)));
            }
            Match::DestinationPort(protocol, port) => {
                object.add_expr(Meta::new(MetaType::L4Proto));
                object.add_expr(Cmp::new(CmpOp::Eq, [protocol.number()]));
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
            object.add_expr(lookup(&map.to_string(), set_id(map)).with_dreg(Register::Verdict));
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
            chain: chain.to_string(),
        },
        Verdict::Goto(chain) => VerdictKind::Goto {
            chain: chain.to_string(),
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
    let (offset, _) = address_field(key);
    object.add_expr(Meta::new(MetaType::NfProto));
    object.add_expr(Cmp::new(CmpOp::Eq, [nfproto(key.family)]));
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
    let (key_type, key_len) = match set.key {
        SetKey::Address(Family::V4) => (TYPE_IPADDR, 4),
        SetKey::Address(Family::V6) => (TYPE_IP6ADDR, 16),
        SetKey::InterfaceName => (TYPE_IFNAME, IFNAME_LEN as u32),
    };
    // A concatenation's type id packs its components' ids, 6 bits each (nft's datatype.h).
    let (key_type, key_len) = match set.content {
        SetContent::AddressPairs(_) => ((key_type << 6) | key_type, key_len * 2),
        _ => (key_type, key_len),
    };
    let mut attrs = AttrWriter::new();
    attrs
        .string(NFTA_SET_TABLE, table)
        .string(NFTA_SET_NAME, &set.name.to_string());
    let is_map = matches!(set.content, SetContent::VerdictMap(_));
    attrs.be32(NFTA_SET_FLAGS, if is_map { NFT_SET_MAP } else { 0 });
    attrs
        .be32(NFTA_SET_KEY_TYPE, key_type)
        .be32(NFTA_SET_KEY_LEN, key_len);
    if let SetContent::VerdictMap(_) = set.content {
        attrs.be32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
    }
    attrs.be32(NFTA_SET_ID, id);
    if set.key == SetKey::InterfaceName {
        let mut userdata = vec![UDATA_SET_KEYBYTEORDER, 4];
        userdata.extend_from_slice(&BYTEORDER_HOST_ENDIAN.to_ne_bytes());
        attrs.bytes(NFTA_SET_USERDATA, &userdata);
    }
    if let SetContent::Counted(_) = set.content {
        // Every element gets its own counter.
        attrs.nested(NFTA_SET_EXPR, |e| {
            e.string(NFTA_EXPR_NAME, "counter")
                .nested(NFTA_EXPR_DATA, |d| {
                    d.bytes(1, &0u64.to_be_bytes())
                        .bytes(2, &0u64.to_be_bytes());
                });
        });
    }
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

/// `NEWSETELEM` or `DELSETELEM` messages carrying `elements` (encoded `NFTA_LIST_ELEM`s), in
/// as many messages as their size needs; `set_id` for a set created in the same batch.
fn element_messages(
    msg: u16,
    table: &str,
    set: &str,
    set_id: Option<u32>,
    elements: &[&Vec<u8>],
) -> Vec<Part> {
    let verb = if msg == NFT_MSG_NEWSETELEM {
        "add"
    } else {
        "delete"
    };
    let mut messages = Vec::new();
    let mut chunk: Vec<u8> = Vec::new();
    let flush = |chunk: &mut Vec<u8>, messages: &mut Vec<Part>| {
        if chunk.is_empty() {
            return;
        }
        let mut attrs = AttrWriter::new();
        attrs
            .string(NFTA_SET_ELEM_LIST_TABLE, table)
            .string(NFTA_SET_ELEM_LIST_SET, set);
        if let Some(id) = set_id {
            attrs.be32(NFTA_SET_ELEM_LIST_SET_ID, id);
        }
        attrs.bytes(NFTA_SET_ELEM_LIST_ELEMENTS | wire::NLA_F_NESTED, chunk);
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | msg;
        let flags = if msg == NFT_MSG_NEWSETELEM {
            NLM_F_REQUEST | NLM_F_CREATE
        } else {
            NLM_F_REQUEST
        };
        let message = wire::message(kind, flags, 0, NFPROTO_INET, 0, &attrs.finish());
        messages.push((message, format!("{verb} elements of set {set}")));
        chunk.clear();
    };
    for element in elements {
        if chunk.len() + element.len() > ELEMENTS_PER_MESSAGE_BYTES {
            flush(&mut chunk, &mut messages);
        }
        chunk.extend_from_slice(element);
    }
    flush(&mut chunk, &mut messages);
    messages
}

/// One encoded `NFTA_LIST_ELEM` with a key and a comment (shown by `nft list`).
fn commented_element(key: &[u8], comment: &str) -> Vec<u8> {
    let mut list = AttrWriter::new();
    list.nested(NFTA_LIST_ELEM, |elem| {
        elem.nested(NFTA_SET_ELEM_KEY, |k| {
            k.bytes(NFTA_DATA_VALUE, key);
        });
        elem.bytes(NFTA_SET_ELEM_USERDATA, &comment_userdata(comment));
    });
    list.finish()
}

/// One encoded `NFTA_LIST_ELEM`: a key, and for verdict maps its verdict.
fn element(key: &[u8], verdict: Option<&Verdict>) -> Vec<u8> {
    let mut list = AttrWriter::new();
    list.nested(NFTA_LIST_ELEM, |elem| {
        elem.nested(NFTA_SET_ELEM_KEY, |k| {
            k.bytes(NFTA_DATA_VALUE, key);
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
            v.string(NFTA_VERDICT_CHAIN, &chain.to_string());
        }
    });
}

/// Writes expressions the way nft 1.0 encodes them.
struct Expressions<'a>(&'a mut AttrWriter);

impl Expressions<'_> {
    fn add(&mut self, name: &str, fill: impl FnOnce(&mut AttrWriter)) {
        self.0.nested(NFTA_LIST_ELEM, |e| {
            e.string(NFTA_EXPR_NAME, name).nested(NFTA_EXPR_DATA, fill);
        });
    }

    fn meta(&mut self, key: u32) {
        self.add("meta", |d| {
            d.be32(1, REG_1).be32(2, key); // dreg, key
        });
    }

    fn cmp_eq(&mut self, value: &[u8]) {
        self.add("cmp", |d| {
            d.be32(1, REG_1).be32(2, NFT_CMP_EQ); // sreg, op
            d.nested(3, |v| {
                v.bytes(NFTA_DATA_VALUE, value);
            });
        });
    }

    fn payload(&mut self, offset: u32, len: u32, register: u32) {
        self.add("payload", |d| {
            d.be32(1, register)
                .be32(2, NETWORK_HEADER)
                .be32(3, offset)
                .be32(4, len);
        });
    }

    fn bitwise(&mut self, register: u32, mask: &[u8]) {
        self.add("bitwise", |d| {
            d.be32(1, register)
                .be32(2, register)
                .be32(3, mask.len() as u32);
            d.nested(4, |v| {
                v.bytes(NFTA_DATA_VALUE, mask);
            });
            d.nested(5, |v| {
                v.bytes(NFTA_DATA_VALUE, &vec![0u8; mask.len()]);
            });
        });
    }

    /// A lookup of register 1 in `set`; `inverted` matches when the key is absent.
    fn lookup(&mut self, set: &str, set_id: u32, inverted: bool) {
        self.add("lookup", |d| {
            d.string(1, set).be32(2, REG_1).be32(4, set_id); // set, sreg, set id
            if inverted {
                d.be32(5, NFT_LOOKUP_F_INV); // flags
            }
        });
    }

    /// The masked address of `key` into `register` (nfproto guard not included).
    fn address(&mut self, key: &AddressKey, register: u32) {
        let (offset, len) = address_field(key);
        self.payload(offset, len, register);
        if key.prefix_len < key.family.bits() {
            self.bitwise(
                register,
                &address_bytes(prefix_mask(key.family, key.prefix_len)),
            );
        }
    }
}

/// The `meta nfproto` value of a family.
fn nfproto(family: Family) -> u8 {
    match family {
        Family::V4 => NFPROTO_IPV4,
        Family::V6 => NFPROTO_IPV6,
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

/// A rule made of interface matches and pair lookups, then an optional counter and a verdict,
/// encoded as nft 1.0 does; `None` when it holds another kind of match.
///
/// `iifname "br-*"` compares only the name's prefix; `iifname "docker0"` the whole, NUL-padded
/// name; `iifname != @set` is a lookup with the inverting flag; `ip saddr & M . ip daddr & M
/// @set` puts the second part of an IPv4 pair in a 32-bit register rustables cannot name.
fn own_rule_message(
    table: &str,
    chain: &str,
    rule: &RuleDef,
    verdict: &Verdict,
    set_id: &dyn Fn(&SetName) -> u32,
) -> Option<Vec<u8>> {
    let mut attrs = AttrWriter::new();
    attrs
        .string(NFTA_RULE_TABLE, table)
        .string(NFTA_RULE_CHAIN, chain);
    let mut supported = true;
    attrs.nested(NFTA_RULE_EXPRESSIONS, |list| {
        let mut exprs = Expressions(list);
        for m in &rule.matches {
            match m {
                Match::InputInterface(pattern) => {
                    exprs.meta(NFT_META_IIFNAME);
                    match pattern.strip_suffix('*') {
                        Some(stem) => exprs.cmp_eq(stem.as_bytes()),
                        None => exprs.cmp_eq(&interface_bytes(pattern)),
                    }
                }
                Match::InputInterfaceInSet { set, negated } => {
                    exprs.meta(NFT_META_IIFNAME);
                    exprs.lookup(&set.to_string(), set_id(set), *negated);
                }
                Match::PairInSet(source, destination, set) => {
                    let family = source.family;
                    let second = match family {
                        Family::V4 => REG32_01,
                        Family::V6 => REG_2,
                    };
                    exprs.meta(NFT_META_NFPROTO);
                    exprs.cmp_eq(&[nfproto(family)]);
                    exprs.address(source, REG_1);
                    exprs.address(destination, second);
                    exprs.lookup(&set.to_string(), set_id(set), false);
                }
                _ => supported = false,
            }
        }
        if rule.counter {
            exprs.add("counter", |d| {
                d.bytes(1, &0u64.to_be_bytes())
                    .bytes(2, &0u64.to_be_bytes());
            });
        }
        exprs.add("immediate", |d| {
            d.be32(1, REG_VERDICT);
            d.nested(2, |data| verdict_data(data, verdict));
        });
    });
    if !supported {
        return None;
    }
    attrs.bytes(NFTA_RULE_USERDATA, &comment_userdata(&rule.comment));
    let kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE;
    Some(wire::message(
        kind,
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND,
        0,
        NFPROTO_INET,
        0,
        &attrs.finish(),
    ))
}

/// An interface name as a set key or full-name compare: NUL-padded to IFNAMSIZ.
fn interface_bytes(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.resize(IFNAME_LEN, 0);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use enforcer_core::planner::{plan, TableSettings};
    use enforcer_core::topology::{ManagedNetwork, Topology};

    fn ruleset(networks: &[(&str, &str)]) -> Ruleset {
        let networks = networks
            .iter()
            .map(|(name, subnet)| ManagedNetwork {
                name: name.to_string(),
                subnets: vec![subnet.parse().unwrap()],
                interface: None,
            })
            .collect();
        plan(
            &TableSettings::default(),
            &Topology::new(networks, vec![]).unwrap(),
        )
    }

    #[test]
    fn from_scratch_creates_the_table_around_a_delete() {
        let parts = encode(&ruleset(&[("a", "10.1.0.0/24")])).unwrap();
        let tx = parts.transaction(None, 100);
        assert_eq!(
            tx.descriptions[..3],
            [
                "create table inet enforcer",
                "delete table inet enforcer",
                "create table inet enforcer"
            ]
        );
        assert_eq!(tx.first_seq, 100);
        assert_eq!(tx.describe(101), "delete table inet enforcer");
        assert!(tx
            .descriptions
            .iter()
            .any(|d| d == "create set egress_v4_24"));
    }

    #[test]
    fn over_an_existing_table_only_what_differs_is_touched() {
        let before = encode(&ruleset(&[("a", "10.1.0.0/24"), ("b", "10.2.0.0/24")])).unwrap();
        let after = encode(&ruleset(&[("a", "10.1.0.0/24"), ("c", "10.3.0.0/24")])).unwrap();
        let (current, desired) = (before.state(), after.state());
        let tx = after.transaction(Some((&current, &desired)), 1);
        let touched: Vec<&str> = tx.descriptions.iter().map(String::as_str).collect();
        assert_eq!(
            touched,
            [
                "create table inet enforcer",
                "delete elements of set managed_v4_24",
                "delete elements of set egress_v4_24",
                "delete elements of set intra_v4_24_24",
                "add elements of set managed_v4_24",
                "add elements of set egress_v4_24",
                "add elements of set intra_v4_24_24",
            ]
        );
        // Nothing to change: the table is only (re)declared.
        let tx = after.transaction(Some((&desired, &desired)), 1);
        assert_eq!(tx.descriptions, ["create table inet enforcer"]);
    }
}
