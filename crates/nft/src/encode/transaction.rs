//! Assembling a transaction: which of the encoded messages go in, against what the kernel
//! holds, in which order, and how they are numbered.

use enforcer_core::ruleset::TableFamily;

use super::sets::{element, element_messages, range_element, ElementChange};
use super::{Part, Parts};
use crate::abi::*;
use crate::state::TableState;
use crate::wire::{self, AttrWriter};

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

    /// Whether `seq` numbers one of its messages (or its batch delimiters).
    pub fn numbers(&self, seq: u32) -> bool {
        seq.wrapping_sub(self.first_seq.wrapping_sub(1)) <= self.descriptions.len() as u32 + 1
    }

    /// What the message with sequence number `seq` did.
    pub fn describe(&self, seq: u32) -> String {
        seq.checked_sub(self.first_seq)
            .and_then(|i| self.descriptions.get(i as usize))
            .cloned()
            .unwrap_or_else(|| "the transaction as a whole".to_string())
    }
}

/// What one table of a transaction needs.
pub enum TableChange<'a> {
    /// Make the kernel hold the table `parts` encode: `against` is `None` when the table is
    /// absent, else (the kernel's table, the desired one as [`Parts::state`]).
    Write {
        /// The desired table's messages.
        parts: &'a Parts,
        /// What the kernel holds, and the desired table's canonical state.
        against: Option<(&'a TableState, &'a TableState)>,
    },
    /// Delete this table, which the kernel holds but is no longer wanted.
    Delete(TableFamily, &'a str),
}

/// The one transaction that makes every table of `changes` what it should be, its messages
/// numbered from `first_seq`.
pub fn transaction(changes: &[TableChange<'_>], first_seq: u32) -> Transaction {
    let mut parts = Vec::new();
    for change in changes {
        match change {
            TableChange::Write {
                parts: table,
                against,
            } => parts.extend(table.messages(*against)),
            TableChange::Delete(family, table) => parts.push(by_name(
                *family,
                NFT_MSG_DELTABLE,
                &[(NFTA_TABLE_NAME, table)],
                format!("delete table {} {table}", family.name()),
            )),
        }
    }
    assemble(parts, first_seq)
}

impl Parts {
    /// The messages that make the kernel hold the desired table: `against` as in
    /// [`TableChange::Write`].
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
    fn messages(&self, against: Option<(&TableState, &TableState)>) -> Vec<Part> {
        let [create, _] = &self.table_messages;
        let mut parts: Vec<Part> = vec![create.clone()];
        match against {
            None => self.create_all(&mut parts),
            Some((current, desired)) => Update::new(self, current, desired).write(&mut parts),
        }
        parts
    }

    /// After the first `NEWTABLE`: delete the table, create it again, then every object.
    fn create_all(&self, parts: &mut Vec<Part>) {
        let [create, delete] = &self.table_messages;
        parts.push(delete.clone());
        parts.push(create.clone());
        parts.extend(self.chains.iter().map(|c| c.create.clone()));
        for set in &self.sets {
            parts.push(set.create.clone());
            let all: Vec<&Vec<u8>> = set.elements.iter().map(|(_, e)| e).collect();
            parts.extend(element_messages(
                ElementChange::Add,
                (self.family, &self.table),
                &set.name,
                Some(set.id),
                &all,
            ));
        }
        parts.extend(self.chains.iter().flat_map(|c| c.rules.iter().cloned()));
    }
}

/// The changes that turn the kernel's table (`current`) into the desired one.
struct Update<'a> {
    parts: &'a Parts,
    current: &'a TableState,
    desired: &'a TableState,
    /// Sets that cannot be updated in place (their type changes): deleted and re-created.
    /// Rules may use them, so then every chain is rewritten.
    retyped: Vec<&'a str>,
    /// Chains whose hook, priority or policy changes: deleted and re-created.
    recreated_chains: Vec<&'a str>,
}

impl<'a> Update<'a> {
    fn new(parts: &'a Parts, current: &'a TableState, desired: &'a TableState) -> Update<'a> {
        let retyped = parts
            .sets
            .iter()
            .filter(|s| {
                let (have, want) = (current.sets.get(&s.name), desired.sets.get(&s.name));
                have.zip(want)
                    .is_some_and(|(have, want)| !have.same_type(want))
            })
            .map(|s| s.name.as_str())
            .collect();
        let recreated_chains = parts
            .chains
            .iter()
            .filter(|c| {
                let (have, want) = (current.chains.get(&c.name), desired.chains.get(&c.name));
                have.zip(want)
                    .is_some_and(|(have, want)| have.base != want.base)
            })
            .map(|c| c.name.as_str())
            .collect();
        Update {
            parts,
            current,
            desired,
            retyped,
            recreated_chains,
        }
    }

    /// Whether chain `name` is flushed and refilled.
    fn rewrite(&self, name: &str) -> bool {
        !self.retyped.is_empty()
            || self.recreated_chains.contains(&name)
            || self.current.chains.get(name).map(|c| &c.rules)
                != self.desired.chains.get(name).map(|c| &c.rules)
    }

    /// Whether set `name` stays in the kernel as it is declared (only its elements change).
    fn kept_set(&self, name: &str) -> bool {
        self.current.sets.contains_key(name) && !self.retyped.contains(&name)
    }

    fn write(&self, parts: &mut Vec<Part>) {
        let table = self.parts.table.as_str();
        let family = self.parts.family;
        // 1. Flush the rules of every chain that changes or goes away.
        for (name, chain) in &self.current.chains {
            let wanted = self.desired.chains.contains_key(name);
            if !chain.rules.is_empty() && (!wanted || self.rewrite(name)) {
                let attrs = [(NFTA_RULE_TABLE, table), (NFTA_RULE_CHAIN, name.as_str())];
                parts.push(by_name(
                    family,
                    NFT_MSG_DELRULE,
                    &attrs,
                    format!("flush chain {name}"),
                ));
            }
        }
        // 2. Remove the elements that go away or change, from sets that stay.
        for set in self.parts.sets.iter().filter(|s| self.kept_set(&s.name)) {
            let (have, want) = (&self.current.sets[&set.name], &self.desired.sets[&set.name]);
            // A range element (a flow set's) is named by its first and last key, as `nft` does.
            let gone: Vec<Vec<u8>> = have
                .differing(want)
                .map(|(key, value)| {
                    let last = wire::attribute(value, NFTA_SET_ELEM_KEY_END)
                        .and_then(|end| wire::attribute(end, NFTA_DATA_VALUE));
                    match last {
                        Some(last) => range_element(key, last),
                        None => element(key, None, None),
                    }
                })
                .collect();
            let gone: Vec<&Vec<u8>> = gone.iter().collect();
            parts.extend(element_messages(
                ElementChange::Delete,
                (family, table),
                &set.name,
                None,
                &gone,
            ));
        }
        // 3. Delete sets and chains that go away (or must be re-created).
        for name in self.current.sets.keys() {
            if !self.desired.sets.contains_key(name) || self.retyped.contains(&name.as_str()) {
                let attrs = [(NFTA_SET_TABLE, table), (NFTA_SET_NAME, name.as_str())];
                parts.push(by_name(
                    family,
                    NFT_MSG_DELSET,
                    &attrs,
                    format!("delete set {name}"),
                ));
            }
        }
        for name in self.current.chains.keys() {
            if !self.desired.chains.contains_key(name)
                || self.recreated_chains.contains(&name.as_str())
            {
                let attrs = [(NFTA_CHAIN_TABLE, table), (NFTA_CHAIN_NAME, name.as_str())];
                parts.push(by_name(
                    family,
                    NFT_MSG_DELCHAIN,
                    &attrs,
                    format!("delete chain {name}"),
                ));
            }
        }
        self.create(parts);
        // 5. Fill the chains that are new or were flushed.
        for chain in &self.parts.chains {
            if !self.current.chains.contains_key(&chain.name) || self.rewrite(&chain.name) {
                parts.extend(chain.rules.iter().cloned());
            }
        }
    }

    /// 4. Create chains and sets that are new, and add the elements that are new.
    fn create(&self, parts: &mut Vec<Part>) {
        for chain in &self.parts.chains {
            if !self.current.chains.contains_key(&chain.name)
                || self.recreated_chains.contains(&chain.name.as_str())
            {
                parts.push(chain.create.clone());
            }
        }
        for set in &self.parts.sets {
            let kept = self.kept_set(&set.name);
            let added: Vec<&Vec<u8>> = if kept {
                let (have, want) = (&self.current.sets[&set.name], &self.desired.sets[&set.name]);
                set.elements
                    .iter()
                    .filter(|(key, _)| {
                        let key = key.as_slice();
                        have.elements.get(key) != want.elements.get(key)
                    })
                    .map(|(_, e)| e)
                    .collect()
            } else {
                parts.push(set.create.clone());
                set.elements.iter().map(|(_, e)| e).collect()
            };
            let id = (!kept).then_some(set.id);
            parts.extend(element_messages(
                ElementChange::Add,
                (self.parts.family, &self.parts.table),
                &set.name,
                id,
                &added,
            ));
        }
    }
}

/// A request that names its object only (a flush or delete): string attributes.
fn by_name(family: TableFamily, msg: u16, attrs: &[(u16, &str)], description: String) -> Part {
    let mut writer = AttrWriter::new();
    for (ty, value) in attrs {
        writer.string(*ty, value);
    }
    let message = wire::request(msg, 0, 0, nfproto(family), &writer.finish());
    (message, description)
}

/// BEGIN, the messages numbered from `first_seq`, END.
fn assemble(parts: Vec<Part>, first_seq: u32) -> Transaction {
    let mut bytes = wire::batch_delimiter(NFNL_MSG_BATCH_BEGIN, first_seq - 1);
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
    bytes.extend(wire::batch_delimiter(
        NFNL_MSG_BATCH_END,
        first_seq + count as u32,
    ));
    Transaction {
        bytes,
        first_seq,
        descriptions,
    }
}
