//! A table in canonical form, built from netlink messages: either the kernel's dump replies or
//! the messages of the transaction we would send. Both go through the same parser, so "the
//! kernel already holds the desired table" is a plain equality, and the diff names what differs.
//!
//! Canonical means: attribute flags stripped, attributes sorted, and what the kernel adds or
//! keeps for itself left out (handles, use counts, counter values, set ids, zero flags).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use enforcer_core::ruleset::TableFamily;

use crate::abi::*;
use crate::elements::Elements;
use crate::wire::{self, AttrWriter, Message};

/// A chain's base-chain properties: hook number, priority, policy, type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BaseChain {
    /// Netfilter hook number.
    pub hook: u32,
    /// Priority.
    pub priority: i32,
    /// Policy (1 = accept).
    pub policy: Option<u32>,
    /// Chain type (`filter`).
    pub kind: String,
}

impl BaseChain {
    /// The hook's name as `nft` writes it, for a chain of a table of `family` (the arp family
    /// numbers its hooks from 0: input, output).
    pub fn hook_name(&self, family: TableFamily) -> &'static str {
        let names: &[&'static str] = match family {
            TableFamily::Arp => &["input", "output", "forward"],
            TableFamily::Inet | TableFamily::Bridge => {
                &["prerouting", "input", "forward", "output", "postrouting"]
            }
        };
        names.get(self.hook as usize).copied().unwrap_or("?")
    }

    /// The policy as `nft` writes it.
    pub fn policy_name(&self) -> &'static str {
        match self.policy {
            Some(1) | None => "accept",
            Some(0) => "drop",
            Some(_) => "?",
        }
    }
}

/// A rule in canonical form. Its expressions are one byte string (each expression its name's
/// length and name, its attribute count, then each attribute's type, length and value, see
/// [`canonical_expression`]): a table holds a rule per check of every bound port's chain, and
/// the agent keeps the kernel's table and builds the desired one for every change, so a
/// rule costs one allocation, not one per expression and attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleState {
    /// The expressions, in order, canonically encoded.
    pub expressions: Box<[u8]>,
    /// Raw user data (holds the comment).
    pub userdata: Box<[u8]>,
}

impl RuleState {
    /// The rule's comment, if it has one.
    pub fn comment(&self) -> String {
        comment_of(&self.userdata)
    }

    /// The names of its expressions, in order.
    #[cfg(test)]
    pub(crate) fn expression_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = &self.expressions[..];
        while let [len, tail @ ..] = rest {
            let (name, tail) = tail.split_at(*len as usize);
            names.push(String::from_utf8_lossy(name).into_owned());
            let count = u16::from_be_bytes([tail[0], tail[1]]);
            rest = &tail[2..];
            for _ in 0..count {
                let len = u32::from_be_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize;
                rest = &rest[6 + len..];
            }
        }
        names
    }
}

/// The comment in rule or element user data (its first TLV), or "".
pub(crate) fn comment_of(userdata: &[u8]) -> String {
    match userdata {
        [NFTNL_UDATA_COMMENT, len, rest @ ..] => {
            wire::string(&rest[..(*len as usize).min(rest.len())])
        }
        _ => String::new(),
    }
}

/// A chain in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainState {
    /// Set for base chains.
    pub base: Option<BaseChain>,
    /// Rules, in order.
    pub rules: Vec<RuleState>,
}

/// A set or map in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetState {
    /// Whether it is a map.
    pub map: bool,
    /// Key datatype id and length.
    pub key: (u32, u32),
    /// Data type (verdict maps).
    pub data_type: Option<u32>,
    /// Whether each element carries a counter.
    pub counted: bool,
    /// For a concatenation of ranges (interval flag), each field's length; empty otherwise.
    pub range_fields: Vec<u32>,
    /// Whether rules fill it (`flags dynamic`): its elements are the kernel's, so they are
    /// never recorded here (nor compared, nor deleted).
    pub dynamic: bool,
    /// Element key bytes -> canonical element value: its data (verdict maps), its last key
    /// (ranges) and user data (comment), re-encoded without flags; never its counter values.
    pub elements: Elements,
}

impl SetState {
    /// Adds one element, given as the payload of an `NFTA_LIST_ELEM` attribute.
    pub fn absorb_element(&mut self, element: &[u8]) {
        let key = element_key(element).unwrap_or_default();
        let mut value = AttrWriter::new();
        if let Some(data) = wire::attribute(element, NFTA_SET_ELEM_DATA) {
            value.bytes(NFTA_SET_ELEM_DATA, &canonical_data(data));
        }
        if let Some(last) = wire::attribute(element, NFTA_SET_ELEM_KEY_END) {
            value.bytes(NFTA_SET_ELEM_KEY_END, &canonical_data(last));
        }
        if let Some(userdata) = wire::attribute(element, NFTA_SET_ELEM_USERDATA) {
            value.bytes(NFTA_SET_ELEM_USERDATA, userdata);
        }
        self.elements.insert(key, &value.finish());
    }

    /// The elements of this set that `other` lacks or holds with another value.
    pub fn differing<'a>(
        &'a self,
        other: &'a SetState,
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.elements
            .iter()
            .filter(|(key, value)| other.elements.get(key) != Some(*value))
    }

    /// Whether `other` has the same kind, key and data types.
    pub fn same_type(&self, other: &SetState) -> bool {
        (
            self.map,
            self.key,
            self.data_type,
            self.counted,
            &self.range_fields,
            self.dynamic,
        ) == (
            other.map,
            other.key,
            other.data_type,
            other.counted,
            &other.range_fields,
            other.dynamic,
        )
    }
}

/// A whole table in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableState {
    /// The table's flags (`NFT_TABLE_F_*`): enforcer's tables have none. A dormant table keeps
    /// its chains, but none is registered on its hook: nothing it holds is enforced.
    pub flags: u32,
    /// Chains by name.
    pub chains: BTreeMap<String, ChainState>,
    /// Sets by name.
    pub sets: BTreeMap<String, SetState>,
}

impl TableState {
    /// Sorts every set's elements once all messages are absorbed: lookups are then binary
    /// searches, and the buffers hold no spare capacity.
    pub fn seal(&mut self) {
        for set in self.sets.values_mut() {
            set.elements.seal();
        }
    }

    /// Whether the table is dormant: its chains are registered on no hook.
    pub fn dormant(&self) -> bool {
        self.flags & NFT_TABLE_F_DORMANT != 0
    }

    /// Folds one message (NEWTABLE, NEWCHAIN, NEWRULE, NEWSET or NEWSETELEM; others are ignored)
    /// of table `table` into the state.
    pub fn absorb(&mut self, table: &str, message: &Message<'_>) {
        let attrs = message.attributes();
        let text = |ty| {
            wire::attribute(attrs, ty)
                .map(wire::string)
                .unwrap_or_default()
        };
        match message.kind & 0xff {
            NFT_MSG_NEWTABLE if text(NFTA_TABLE_NAME) == table => {
                self.flags = wire::attribute(attrs, NFTA_TABLE_FLAGS)
                    .and_then(wire::be32)
                    .unwrap_or(0);
            }
            NFT_MSG_NEWCHAIN if text(NFTA_CHAIN_TABLE) == table => {
                let base = wire::attribute(attrs, NFTA_CHAIN_HOOK).map(|hook| BaseChain {
                    hook: wire::attribute(hook, NFTA_HOOK_HOOKNUM)
                        .and_then(wire::be32)
                        .unwrap_or(0),
                    priority: wire::attribute(hook, NFTA_HOOK_PRIORITY)
                        .and_then(wire::be32)
                        .unwrap_or(0) as i32,
                    policy: wire::attribute(attrs, NFTA_CHAIN_POLICY).and_then(wire::be32),
                    kind: text(NFTA_CHAIN_TYPE),
                });
                self.chains.entry(text(NFTA_CHAIN_NAME)).or_default().base = base;
            }
            NFT_MSG_NEWRULE if text(NFTA_RULE_TABLE) == table => {
                let mut expressions = Vec::new();
                let list = wire::attribute(attrs, NFTA_RULE_EXPRESSIONS).unwrap_or(&[]);
                for (_, expression) in wire::attributes(list).filter(|(t, _)| *t == NFTA_LIST_ELEM)
                {
                    canonical_expression(expression, &mut expressions);
                }
                let expressions = expressions.into_boxed_slice();
                let userdata = wire::attribute(attrs, NFTA_RULE_USERDATA)
                    .unwrap_or(&[])
                    .into();
                self.chains
                    .entry(text(NFTA_RULE_CHAIN))
                    .or_default()
                    .rules
                    .push(RuleState {
                        expressions,
                        userdata,
                    });
            }
            NFT_MSG_NEWSET if text(NFTA_SET_TABLE) == table => {
                let number = |ty| wire::attribute(attrs, ty).and_then(wire::be32);
                let set = self.sets.entry(text(NFTA_SET_NAME)).or_default();
                set.map = number(NFTA_SET_FLAGS).unwrap_or(0) & NFT_SET_MAP != 0;
                set.key = (
                    number(NFTA_SET_KEY_TYPE).unwrap_or(0),
                    number(NFTA_SET_KEY_LEN).unwrap_or(0),
                );
                set.data_type = number(NFTA_SET_DATA_TYPE);
                let flags = number(NFTA_SET_FLAGS).unwrap_or(0);
                set.dynamic = flags & NFT_SET_EVAL != 0;
                set.range_fields = match flags & NFT_SET_INTERVAL != 0 {
                    false => Vec::new(),
                    true => wire::attribute(attrs, NFTA_SET_DESC)
                        .and_then(|desc| wire::attribute(desc, NFTA_SET_DESC_CONCAT))
                        .map(|list| {
                            wire::attributes(list)
                                .filter_map(|(_, field)| {
                                    wire::attribute(field, NFTA_SET_FIELD_LEN).and_then(wire::be32)
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                };
                let expression_named = |payload: &[u8], name: &str| {
                    wire::attribute(payload, NFTA_EXPR_NAME)
                        .map(wire::string)
                        .as_deref()
                        == Some(name)
                };
                set.counted = wire::attribute(attrs, NFTA_SET_EXPR)
                    .is_some_and(|e| expression_named(e, "counter"))
                    || wire::attribute(attrs, NFTA_SET_EXPRESSIONS).is_some_and(|list| {
                        wire::attributes(list).any(|(_, e)| expression_named(e, "counter"))
                    });
            }
            NFT_MSG_NEWSETELEM if text(NFTA_SET_ELEM_LIST_TABLE) == table => {
                let set = self.sets.entry(text(NFTA_SET_ELEM_LIST_SET)).or_default();
                if set.dynamic {
                    return;
                }
                let Some(list) = wire::attribute(attrs, NFTA_SET_ELEM_LIST_ELEMENTS) else {
                    return;
                };
                for (_, element) in wire::attributes(list).filter(|(t, _)| *t == NFTA_LIST_ELEM) {
                    set.absorb_element(element);
                }
            }
            _ => {}
        }
    }
}

/// Appends one expression to `out`, with what the kernel adds or varies removed: its name's
/// length (a byte) and name, its attribute count (two bytes), then each attribute sorted, as
/// its type (two bytes), its value's length (four bytes) and value, all big-endian.
fn canonical_expression(payload: &[u8], out: &mut Vec<u8>) {
    let (name, attrs) = canonical_attributes(payload);
    // Expression names are a few bytes (`payload`, `lookup`); the kernel's attribute policy
    // caps them far below 255.
    let name = &name.as_bytes()[..name.len().min(u8::MAX as usize)];
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    for (ty, value) in attrs {
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(&value);
    }
}

/// `(name, attributes)` of one expression, sorted, with what the kernel adds or varies removed.
fn canonical_attributes(payload: &[u8]) -> (String, Vec<(u16, Vec<u8>)>) {
    let name = wire::attribute(payload, NFTA_EXPR_NAME)
        .map(wire::string)
        .unwrap_or_default();
    let data = wire::attribute(payload, NFTA_EXPR_DATA).unwrap_or(&[]);
    let mut attrs: Vec<(u16, Vec<u8>)> = Vec::new();
    for (ty, value) in wire::attributes(data) {
        let zero = wire::be32(value) == Some(0);
        let keep = match (name.as_str(), ty) {
            ("counter", _) => false,                 // packet and byte counts
            ("lookup", NFTA_LOOKUP_SET_ID) => false, // batch-local
            ("lookup", NFTA_LOOKUP_FLAGS) => !zero,  // dumped even when 0
            ("dynset", NFTA_DYNSET_SET_ID) => false, // batch-local
            ("dynset", NFTA_DYNSET_FLAGS) => !zero,  // dumped even when 0
            ("dynset", NFTA_DYNSET_TIMEOUT) => value.iter().any(|b| *b != 0), // likewise
            ("bitwise", NFTA_BITWISE_OP) => !zero,   // dumped even when 0 (mask and xor)
            _ => true,
        };
        if !keep {
            continue;
        }
        // Data-carrying attributes are nested (NFTA_DATA_*): canonicalise them. Names may come
        // with or without their NUL (the kernel and our writer add it, rustables omits it).
        let nested = matches!(
            (name.as_str(), ty),
            ("immediate", NFTA_IMMEDIATE_DATA)
                | ("cmp", NFTA_CMP_DATA)
                | ("bitwise", NFTA_BITWISE_MASK | NFTA_BITWISE_XOR)
        );
        let value = if nested {
            canonical_data(value)
        } else if (name.as_str(), ty) == ("dynset", NFTA_DYNSET_EXPR) {
            // The expression each element gets, encoded like a rule's.
            let mut out = Vec::new();
            canonical_expression(value, &mut out);
            out
        } else if matches!(
            (name.as_str(), ty),
            ("lookup", NFTA_LOOKUP_SET) | ("dynset", NFTA_DYNSET_SET_NAME)
        ) {
            wire::string(value).into_bytes()
        } else {
            value.to_vec()
        };
        attrs.push((ty, value));
    }
    attrs.sort();
    (name, attrs)
}

/// An `NFTA_DATA_*` nest, re-encoded without attribute flags.
fn canonical_data(payload: &[u8]) -> Vec<u8> {
    let mut out = AttrWriter::new();
    for (ty, value) in wire::attributes(payload) {
        if ty == NFTA_DATA_VERDICT {
            let mut verdict = AttrWriter::new();
            for (vty, vvalue) in wire::attributes(value) {
                if vty == NFTA_VERDICT_CODE {
                    verdict.bytes(vty, vvalue);
                } else if vty == NFTA_VERDICT_CHAIN {
                    verdict.string(vty, &wire::string(vvalue));
                }
            }
            out.bytes(NFTA_DATA_VERDICT, &verdict.finish());
        } else {
            out.bytes(ty, value);
        }
    }
    out.finish()
}

/// The key of an element (the payload of an `NFTA_LIST_ELEM` attribute).
pub(crate) fn element_key(element: &[u8]) -> Option<&[u8]> {
    wire::attribute(element, NFTA_SET_ELEM_KEY).and_then(|k| wire::attribute(k, NFTA_DATA_VALUE))
}

/// An address key (4 or 16 bytes) as an address.
pub(crate) fn key_address(key: &[u8]) -> Option<IpAddr> {
    match key.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(key[0], key[1], key[2], key[3]))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(key).ok()?))),
        _ => None,
    }
}

/// Human-readable element key of a set whose key datatype is `key_type`: an interface name,
/// an address, or a pair of addresses.
fn key_text(key_type: u32, key: &[u8]) -> String {
    if key_type == TYPE_IFNAME {
        return format!("\"{}\"", wire::string(key));
    }
    // An interface and an address (`ifname . ipv4_addr`).
    if key_type >> TYPE_BITS == TYPE_IFNAME && key.len() > IFNAME_LEN {
        let (name, address) = key.split_at(IFNAME_LEN);
        let address = key_address(address)
            .map(|a| a.to_string())
            .unwrap_or_default();
        return format!("\"{}\" . {address}", wire::string(name));
    }
    // A flow (`… . inet_proto . inet_service`, each field padded to 4 bytes): its first key.
    if key_type & ((1 << TYPE_BITS) - 1) == TYPE_INET_SERVICE && key.len() >= 8 {
        let (address, rest) = key.split_at(key.len() - 8);
        let port = u16::from_be_bytes([rest[4], rest[5]]);
        let flow = format!("{} . {port}", rest[0]);
        return match key_address(address) {
            Some(address) => format!("{address} . {flow}"),
            None => flow,
        };
    }
    if let Some(address) = key_address(key) {
        return address.to_string();
    }
    match key.len() {
        8 | 32 => {
            let (a, b) = key.split_at(key.len() / 2);
            let part = |k: &[u8]| key_address(k).map(|a| a.to_string()).unwrap_or_default();
            format!("{} . {}", part(a), part(b))
        }
        _ => format!("{key:02x?}"),
    }
}

/// Human-readable element value: its verdict (maps) or its comment.
fn data_text(value: &[u8]) -> String {
    if let Some(userdata) = wire::attribute(value, NFTA_SET_ELEM_USERDATA) {
        return format!(" comment \"{}\"", comment_of(userdata));
    }
    let Some(data) = wire::attribute(value, NFTA_SET_ELEM_DATA) else {
        return String::new();
    };
    let Some(verdict) = wire::attribute(data, NFTA_DATA_VERDICT) else {
        return String::new();
    };
    let code = wire::attribute(verdict, NFTA_VERDICT_CODE)
        .and_then(wire::be32)
        .map(|c| c as i32);
    let chain = wire::attribute(verdict, NFTA_VERDICT_CHAIN)
        .map(wire::string)
        .unwrap_or_default();
    match code {
        Some(NFT_GOTO) => format!(" : goto {chain}"),
        Some(NFT_JUMP) => format!(" : jump {chain}"),
        Some(NFT_RETURN) => " : return".into(),
        Some(NF_ACCEPT) => " : accept".into(),
        Some(NF_DROP) => " : drop".into(),
        other => format!(" : verdict {other:?}"),
    }
}

/// At most this many lines per differing set in a diff.
const DIFF_ELEMENTS_SHOWN: usize = 5;

/// What applying `desired` would change in `current` (`None`: the table does not exist), one
/// line per change, `+` for additions, `-` for removals, `~` for changes. Empty when equal.
pub fn diff(
    (family, table): (TableFamily, &str),
    current: Option<&TableState>,
    desired: &TableState,
) -> Vec<String> {
    use enforcer_core::diff::{diff as by_name, removals_first, Change};
    let empty = TableState::default();
    let mut lines = Vec::new();
    let current = match current {
        Some(c) => c,
        None => {
            lines.push(format!(
                "+ table {} {table} (absent from the kernel)",
                family.name()
            ));
            &empty
        }
    };
    if current.flags != desired.flags {
        lines.push(format!(
            "~ table {} {table}: flags {} (want {}){}",
            family.name(),
            flags_text(current.flags),
            flags_text(desired.flags),
            match current.dormant() && !desired.dormant() {
                true => ": its chains were on no hook, nothing was enforced",
                false => "",
            }
        ));
    }
    for change in removals_first(by_name(&current.sets, &desired.sets)) {
        match change {
            Change::Removed(name, set) => {
                lines.push(format!("- set {name} ({} elements)", set.elements.len()))
            }
            Change::Added(name, set) => {
                lines.push(format!("+ set {name} ({} elements)", set.elements.len()))
            }
            Change::Changed { key, old, new } => set_changes(&mut lines, key, old, new),
        }
    }
    for change in removals_first(by_name(&current.chains, &desired.chains)) {
        match change {
            Change::Removed(name, chain) => {
                lines.push(format!("- chain {name} ({} rules)", chain.rules.len()))
            }
            Change::Added(name, chain) => {
                lines.push(format!("+ chain {name} ({} rules)", chain.rules.len()))
            }
            Change::Changed { key, old, new } => chain_changes(&mut lines, key, old, new),
        }
    }
    lines
}

/// Table flags as `nft` names them (`dormant`), or `none`.
fn flags_text(flags: u32) -> String {
    match (
        flags & NFT_TABLE_F_DORMANT != 0,
        flags & !NFT_TABLE_F_DORMANT,
    ) {
        (false, 0) => "none".to_string(),
        (true, 0) => "dormant".to_string(),
        (false, other) => format!("{other:#x}"),
        (true, other) => format!("dormant {other:#x}"),
    }
}

/// The [`diff`] lines of set `name`, held as `have` and wanted as `want`.
fn set_changes(lines: &mut Vec<String>, name: &str, have: &SetState, want: &SetState) {
    use enforcer_core::diff::{diff as by_key, Change};
    if !have.same_type(want) {
        lines.push(format!("~ set {name}: type changes"));
    }
    let text = |k: &[u8], v: &[u8]| format!("{}{}", key_text(want.key.0, k), data_text(v));
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    for change in by_key(have.elements.iter(), want.elements.iter()) {
        match change {
            Change::Added(k, v) => added.push(text(k, v)),
            Change::Removed(k, v) => removed.push(text(k, v)),
            Change::Changed { key, old, new } => {
                added.push(text(key, new));
                removed.push(text(key, old));
            }
        }
    }
    for (sign, list) in [("+", &added), ("-", &removed)] {
        for item in list.iter().take(DIFF_ELEMENTS_SHOWN) {
            lines.push(format!("{sign} element {item} in set {name}"));
        }
        if list.len() > DIFF_ELEMENTS_SHOWN {
            lines.push(format!(
                "{sign} … and {} more elements in set {name}",
                list.len() - DIFF_ELEMENTS_SHOWN
            ));
        }
    }
}

/// The [`diff`] lines of chain `name`, held as `have` and wanted as `want`.
fn chain_changes(lines: &mut Vec<String>, name: &str, have: &ChainState, want: &ChainState) {
    if have.base != want.base {
        lines.push(format!("~ chain {name}: hook, priority or policy changes"));
    }
    if have.rules != want.rules {
        let mut line = format!("~ chain {name}: rules change");
        for rule in want.rules.iter().filter(|r| !have.rules.contains(r)) {
            let _ = write!(line, "\n+   rule \"{}\"", rule.comment());
        }
        for rule in have.rules.iter().filter(|r| !want.rules.contains(r)) {
            let _ = write!(line, "\n-   rule \"{}\"", rule.comment());
        }
        lines.push(line);
    }
}
