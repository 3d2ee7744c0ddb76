//! Sets, verdict maps and their elements: the `NEWSET` of each, every element encoded once,
//! and the `NEWSETELEM` / `DELSETELEM` messages that carry them in chunks.

use std::net::IpAddr;

use enforcer_core::ruleset::{Family, Set, SetContent, SetKey, TableFamily, Verdict};

use super::rules::{counter, verdict_data};
use super::{address_bytes, comment_userdata, interface_bytes, Part};
use crate::abi::*;
use crate::wire::{self, AttrWriter, NLA_F_NESTED};

/// Largest element payload put in one message (a netlink attribute's length is 16 bits).
const ELEMENTS_PER_MESSAGE_BYTES: usize = 48 * 1024;

/// The `NEWSET` message of `set` in `(family, table)`, with batch-local id `id`.
pub(super) fn set_message((family, table): (TableFamily, &str), set: &Set, id: u32) -> Vec<u8> {
    let fields = flow_fields(set.key);
    let (key_type, key_len) = match set.key {
        SetKey::Address(Family::V4) => (TYPE_IPADDR, 4),
        SetKey::Address(Family::V6) => (TYPE_IP6ADDR, 16),
        SetKey::InterfaceName => (TYPE_IFNAME, IFNAME_LEN as u32),
        SetKey::InterfaceAddress(family) => {
            let (address_type, len) = match family {
                Family::V4 => (TYPE_IPADDR, 4),
                Family::V6 => (TYPE_IP6ADDR, 16),
            };
            (
                (TYPE_IFNAME << TYPE_BITS) | address_type,
                IFNAME_LEN as u32 + len,
            )
        }
        SetKey::Flows(_) => (
            fields.iter().fold(0, |id, (ty, _)| (id << TYPE_BITS) | ty),
            fields.iter().map(|(_, len)| len.next_multiple_of(4)).sum(),
        ),
    };
    let (key_type, key_len) = match set.content {
        SetContent::AddressPairs(_) => ((key_type << TYPE_BITS) | key_type, key_len * 2),
        _ => (key_type, key_len),
    };
    let is_map = matches!(
        set.content,
        SetContent::VerdictMap(_)
            | SetContent::InterfaceVerdictMap(_)
            | SetContent::InterfaceAddressVerdictMap(_)
    );
    // A concatenation of ranges is the kernel's pipapo set; single flows, like every other
    // set here, a hash.
    let flags = match (is_map, &set.content) {
        (true, _) => NFT_SET_MAP,
        (false, SetContent::Recorded(_)) => NFT_SET_EVAL,
        (false, SetContent::Flows(_)) => NFT_SET_INTERVAL | NFT_SET_CONCAT,
        (false, _) => 0,
    };
    let mut attrs = AttrWriter::new();
    attrs
        .string(NFTA_SET_TABLE, table)
        .string(NFTA_SET_NAME, &set.name.to_string())
        .be32(NFTA_SET_FLAGS, flags)
        .be32(NFTA_SET_KEY_TYPE, key_type)
        .be32(NFTA_SET_KEY_LEN, key_len);
    // The kernel takes the fields' lengths only with the concatenation flag, which only sets
    // of ranges have.
    if flags & NFT_SET_CONCAT != 0 {
        attrs.nested(NFTA_SET_DESC, |desc| {
            desc.nested(NFTA_SET_DESC_CONCAT, |list| {
                for (_, len) in &fields {
                    list.nested(NFTA_LIST_ELEM, |field| {
                        field.be32(NFTA_SET_FIELD_LEN, *len);
                    });
                }
            });
        });
    }
    if let SetContent::Recorded(size) = set.content {
        attrs.nested(NFTA_SET_DESC, |desc| {
            desc.be32(NFTA_SET_DESC_SIZE, size);
        });
    }
    if is_map {
        attrs.be32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT);
    }
    attrs.be32(NFTA_SET_ID, id);
    if set.key == SetKey::InterfaceName {
        let mut userdata = vec![NFTNL_UDATA_SET_KEYBYTEORDER, 4];
        userdata.extend_from_slice(&BYTEORDER_HOST_ENDIAN.to_ne_bytes());
        attrs.bytes(NFTA_SET_USERDATA, &userdata);
    }
    if let SetContent::Counted(_) = set.content {
        // Every element gets its own counter.
        attrs.nested(NFTA_SET_EXPR, counter);
    }
    wire::request(
        NFT_MSG_NEWSET,
        NLM_F_CREATE,
        0,
        nfproto(family),
        &attrs.finish(),
    )
}

/// The (datatype, length) of each field of a flow set's key; empty for other sets.
fn flow_fields(key: SetKey) -> Vec<(u32, u32)> {
    let address = match key {
        SetKey::Flows(Some(Family::V4)) => Some((TYPE_IPADDR, 4)),
        SetKey::Flows(Some(Family::V6)) => Some((TYPE_IP6ADDR, 16)),
        SetKey::Flows(None) => None,
        _ => return Vec::new(),
    };
    address
        .into_iter()
        .chain([(TYPE_INET_PROTO, 1), (TYPE_INET_SERVICE, 2)])
        .collect()
}

/// A flow key: each field padded to 4 bytes, as the registers hold it.
fn flow_key(address: Option<IpAddr>, protocol: u8, port: u16) -> Vec<u8> {
    let mut key = address.map(address_bytes).unwrap_or_default();
    key.extend_from_slice(&[protocol, 0, 0, 0]);
    key.extend_from_slice(&port.to_be_bytes());
    key.extend_from_slice(&[0, 0]);
    key
}

/// Each element of a set: its key bytes and its encoded `NFTA_LIST_ELEM`.
pub(super) fn elements(content: &SetContent) -> Vec<(Vec<u8>, Vec<u8>)> {
    let keyed = |key: Vec<u8>, verdict: Option<&Verdict>, comment: Option<&str>| {
        let element = element(&key, verdict, comment);
        (key, element)
    };
    match content {
        SetContent::Addresses(addresses) => addresses
            .iter()
            .map(|a| keyed(address_bytes(*a), None, None))
            .collect(),
        SetContent::VerdictMap(map) => map
            .iter()
            .map(|(a, verdict)| keyed(address_bytes(*a), Some(verdict), None))
            .collect(),
        SetContent::Counted(members) => members
            .iter()
            .map(|(a, comment)| keyed(address_bytes(*a), None, Some(comment)))
            .collect(),
        SetContent::AddressPairs(pairs) => pairs
            .iter()
            .map(|(a, b)| keyed([address_bytes(*a), address_bytes(*b)].concat(), None, None))
            .collect(),
        SetContent::InterfaceNames(names) => names
            .iter()
            .map(|n| keyed(interface_bytes(n), None, None))
            .collect(),
        SetContent::InterfaceVerdictMap(map) => map
            .iter()
            .map(|(n, verdict)| keyed(interface_bytes(n), Some(verdict), None))
            .collect(),
        SetContent::InterfaceAddressVerdictMap(map) => map
            .iter()
            .map(|((n, a), verdict)| {
                let key = [interface_bytes(n), address_bytes(*a)].concat();
                keyed(key, Some(verdict), None)
            })
            .collect(),
        SetContent::Recorded(_) => Vec::new(),
        SetContent::FlowPoints(flows) => flows
            .iter()
            .map(|f| keyed(flow_key(f.address, f.protocol, f.port), None, None))
            .collect(),
        SetContent::Flows(flows) => flows
            .iter()
            .map(|f| {
                let first = flow_key(f.addresses.map(|a| a.0), f.protocols.0, f.ports.0);
                let last = flow_key(f.addresses.map(|a| a.1), f.protocols.1, f.ports.1);
                let element = range_element(&first, &last);
                (first, element)
            })
            .collect(),
    }
}

/// One encoded `NFTA_LIST_ELEM` of a concatenation of ranges: its first and last key.
pub(super) fn range_element(first: &[u8], last: &[u8]) -> Vec<u8> {
    let mut list = AttrWriter::new();
    list.nested(NFTA_LIST_ELEM, |elem| {
        elem.nested(NFTA_SET_ELEM_KEY, |k| {
            k.bytes(NFTA_DATA_VALUE, first);
        });
        elem.nested(NFTA_SET_ELEM_KEY_END, |k| {
            k.bytes(NFTA_DATA_VALUE, last);
        });
    });
    list.finish()
}

/// One encoded `NFTA_LIST_ELEM`: a key, for verdict maps its verdict, and a comment (shown by
/// `nft list`) when it has one.
pub(super) fn element(key: &[u8], verdict: Option<&Verdict>, comment: Option<&str>) -> Vec<u8> {
    let mut list = AttrWriter::new();
    list.nested(NFTA_LIST_ELEM, |elem| {
        elem.nested(NFTA_SET_ELEM_KEY, |k| {
            k.bytes(NFTA_DATA_VALUE, key);
        });
        if let Some(verdict) = verdict {
            elem.nested(NFTA_SET_ELEM_DATA, |data| verdict_data(data, verdict));
        }
        if let Some(comment) = comment {
            elem.bytes(NFTA_SET_ELEM_USERDATA, &comment_userdata(comment));
        }
    });
    list.finish()
}

/// Whether elements are added or deleted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ElementChange {
    /// `NEWSETELEM`.
    Add,
    /// `DELSETELEM`.
    Delete,
}

/// The messages that add or delete `elements` (encoded `NFTA_LIST_ELEM`s) of `set`, in as many
/// messages as their size needs; `set_id` for a set created in the same batch.
pub(super) fn element_messages(
    change: ElementChange,
    (family, table): (TableFamily, &str),
    set: &str,
    set_id: Option<u32>,
    elements: &[&Vec<u8>],
) -> Vec<Part> {
    let (msg, flags, verb) = match change {
        ElementChange::Add => (NFT_MSG_NEWSETELEM, NLM_F_CREATE, "add"),
        ElementChange::Delete => (NFT_MSG_DELSETELEM, 0, "delete"),
    };
    let message = |chunk: &[u8]| {
        let mut attrs = AttrWriter::new();
        attrs
            .string(NFTA_SET_ELEM_LIST_TABLE, table)
            .string(NFTA_SET_ELEM_LIST_SET, set);
        if let Some(id) = set_id {
            attrs.be32(NFTA_SET_ELEM_LIST_SET_ID, id);
        }
        attrs.bytes(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, chunk);
        let message = wire::request(msg, flags, 0, nfproto(family), &attrs.finish());
        (message, format!("{verb} elements of set {set}"))
    };
    let mut messages = Vec::new();
    let mut chunk: Vec<u8> = Vec::new();
    for element in elements {
        if !chunk.is_empty() && chunk.len() + element.len() > ELEMENTS_PER_MESSAGE_BYTES {
            messages.push(message(&chunk));
            chunk.clear();
        }
        chunk.extend_from_slice(element);
    }
    if !chunk.is_empty() {
        messages.push(message(&chunk));
    }
    messages
}
