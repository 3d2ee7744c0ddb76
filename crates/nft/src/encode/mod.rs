//! [`Ruleset`] -> one nftables batch (a single kernel transaction): [`encode`] builds every
//! message once, [`Parts::transaction`] assembles them against what the kernel holds. The
//! kernel commits all of it or none of it, so there is never a moment without the rules.
//!
//! Who writes what, each construct in one place:
//!
//! - the table and its chains: rustables ([`Table`], [`Chain`] with its hook, priority, policy
//!   and type), which models them completely;
//! - rules, every expression of them (`rules.rs`): our own writer, one function per construct of
//!   the planner's vocabulary (`Match`, `Action`, `Verdict`, the counter), each made of the
//!   kernel's expressions the way `nft` writes the same text. rustables 0.9 cannot write some of
//!   them (the 32-bit register of an IPv4 pair lookup, an inverted lookup), and one writer for
//!   all keeps each construct written once rather than once per library;
//! - sets, verdict maps and their elements (`sets.rs`): our own writer, as rustables 0.9 has no
//!   map flags, data types or element data;
//! - the transaction around them (`transaction.rs`): which messages, in which order, numbered.

mod rules;
mod sets;
mod transaction;

use std::net::IpAddr;

use enforcer_core::names::SetName;
use enforcer_core::ruleset::{Chain as ChainDef, Hook as HookDef, Ruleset, TableFamily};
use rustables::{
    Batch, Chain, ChainPolicy, ChainType, Hook, HookClass, MsgType, ProtocolFamily, Table,
};

use crate::abi::{IFNAME_LEN, NFTNL_UDATA_COMMENT};
use crate::state::{BaseChain, TableState};
use crate::wire;

pub use transaction::{transaction, TableChange, Transaction};

/// One encoded message and what it does (for error messages).
type Part = (Vec<u8>, String);

/// A chain: its creation message and its rules' messages.
struct ChainPart {
    name: String,
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
    family: TableFamily,
    table: String,
    /// `NEWTABLE`, `DELTABLE`: creating the table, deleting it.
    table_messages: [Part; 2],
    chains: Vec<ChainPart>,
    sets: Vec<SetPart>,
}

/// Encodes every object of `ruleset`. Its sets get the batch-local ids after `first_set_id`
/// (ids must be unique in a batch that writes several tables).
pub fn encode(ruleset: &Ruleset, first_set_id: u32) -> Parts {
    let name = &ruleset.table;
    let family = ruleset.family;
    let (table_messages, chain_messages) = table_and_chains(ruleset);
    // A set created in the same batch is named in lookups by its batch-local id too.
    let set_id = |set: &SetName| {
        ruleset
            .sets
            .iter()
            .position(|s| s.name == *set)
            .map_or(0, |i| first_set_id + i as u32 + 1)
    };
    let chains = ruleset
        .chains
        .iter()
        .zip(chain_messages)
        .map(|(chain, message)| ChainPart {
            name: chain.name.to_string(),
            create: (message, format!("create chain {}", chain.name)),
            rules: chain
                .rules
                .iter()
                .enumerate()
                .map(|(position, rule)| {
                    let description = format!(
                        "add rule {} of chain {} (\"{}\")",
                        position + 1,
                        chain.name,
                        rule.comment
                    );
                    (
                        rules::rule_message((family, name), &chain.name, rule, &set_id),
                        description,
                    )
                })
                .collect(),
        })
        .collect();
    let sets = ruleset
        .sets
        .iter()
        .enumerate()
        .map(|(index, set)| {
            let id = first_set_id + index as u32 + 1;
            SetPart {
                name: set.name.to_string(),
                id,
                create: (
                    sets::set_message((family, name), set, id),
                    format!("create set {}", set.name),
                ),
                elements: sets::elements(&set.content),
            }
        })
        .collect();
    Parts {
        family,
        table: name.clone(),
        table_messages,
        chains,
        sets,
    }
}

impl Parts {
    /// The family of the table.
    pub fn family(&self) -> TableFamily {
        self.family
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// How many sets the table has (the next table's sets take ids after them).
    pub fn set_count(&self) -> u32 {
        self.sets.len() as u32
    }

    /// The canonical state of the table these messages create: what the reader makes of them,
    /// exactly as of the kernel's dump once they are applied.
    pub fn state(&self) -> TableState {
        let mut state = TableState::default();
        let [create_table, _] = &self.table_messages;
        let chain_messages = self
            .chains
            .iter()
            .flat_map(|c| std::iter::once(&c.create).chain(&c.rules));
        let set_messages = self.sets.iter().map(|s| &s.create);
        let messages = std::iter::once(create_table)
            .chain(chain_messages)
            .chain(set_messages);
        for (message, _) in messages {
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
        state.seal();
        state
    }
}

/// `NEWTABLE` and `DELTABLE` of the table, and one `NEWCHAIN` per chain, written by rustables.
fn table_and_chains(ruleset: &Ruleset) -> ([Part; 2], Vec<Vec<u8>>) {
    let name = &ruleset.table;
    let family = match ruleset.family {
        TableFamily::Inet => ProtocolFamily::Inet,
        TableFamily::Bridge => ProtocolFamily::Bridge,
        TableFamily::Arp => ProtocolFamily::Arp,
    };
    // Flags written as none: an update clears what another program set (`flags dormant`
    // unhooks every chain of the table).
    let table = Table::new(family).with_name(name.as_str()).with_flags(0u32);
    let mut batch = Batch::new();
    batch.add(&table, MsgType::Add);
    batch.add(&table, MsgType::Del);
    for chain in &ruleset.chains {
        batch.add(&chain_object(&table, ruleset.family, chain), MsgType::Add);
    }
    // The content messages of the batch, without its BEGIN and END.
    let bytes = batch.finalize();
    let all: Vec<wire::Message<'_>> = wire::messages(&bytes).collect();
    let mut messages = all[1..all.len() - 1].iter().map(wire::Message::to_bytes);
    let mut table_message = |verb: &str| {
        let message = messages
            .next()
            .expect("rustables writes one message per object");
        (
            message,
            format!("{verb} table {} {name}", ruleset.family.name()),
        )
    };
    let table_messages = [table_message("create"), table_message("delete")];
    (table_messages, messages.collect())
}

/// A chain as rustables models it; a base chain always has policy accept and type filter.
fn chain_object(table: &Table, family: TableFamily, chain: &ChainDef) -> Chain {
    let object = Chain::new(table).with_name(chain.name.to_string());
    match chain.hook {
        Some((hook, priority)) => object
            .with_hook(Hook::new(hook_class(family, hook), priority))
            .with_policy(ChainPolicy::Accept)
            .with_type(ChainType::Filter),
        None => object,
    }
}

/// The hook a base chain of a `family` table registers on. rustables names the inet hook
/// numbers; the arp family numbers its two hooks from 0 (NF_ARP_IN = 0, NF_ARP_OUT = 1), which
/// are inet's PRE_ROUTING and LOCAL_IN.
fn hook_class(family: TableFamily, hook: HookDef) -> HookClass {
    match (family, hook) {
        (TableFamily::Arp, HookDef::Input) => HookClass::PreRouting,
        (TableFamily::Arp, HookDef::Output) => HookClass::In,
        (_, HookDef::Forward) => HookClass::Forward,
        (_, HookDef::Input) => HookClass::In,
        (_, HookDef::Output) => HookClass::Out,
        (_, HookDef::Prerouting) => HookClass::PreRouting,
    }
}

/// The base chain `chain` of a `family` table registers, as the kernel reports it once
/// applied (type filter, policy accept); `None` for a regular chain. Nothing is encoded.
pub fn base_chain(family: TableFamily, chain: &ChainDef) -> Option<BaseChain> {
    let (hook, priority) = chain.hook?;
    Some(BaseChain {
        hook: hook_class(family, hook) as u32,
        priority,
        policy: Some(libc::NF_ACCEPT as u32),
        kind: "filter".to_string(),
    })
}

/// An address as key or compare bytes (network order).
fn address_bytes(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// An interface name as a set key or full-name compare: NUL-padded to IFNAMSIZ.
fn interface_bytes(name: &str) -> Vec<u8> {
    let mut bytes = name.as_bytes().to_vec();
    bytes.resize(IFNAME_LEN, 0);
    bytes
}

/// The rule or element user data `nft` shows as `comment "…"` (TLV: type, length,
/// NUL-terminated text).
fn comment_userdata(comment: &str) -> Vec<u8> {
    let text: Vec<u8> = comment.bytes().take(250).collect();
    let mut out = vec![NFTNL_UDATA_COMMENT, text.len() as u8 + 1];
    out.extend_from_slice(&text);
    out.push(0);
    out
}

#[cfg(test)]
mod tests;
