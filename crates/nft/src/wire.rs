//! Netlink framing: the attribute writer and the one request-header builder for every message
//! enforcer writes itself (rules, sets, elements, deletes, generation and dump requests, batch
//! delimiters), and the readers of what the kernel sends back. Everything is bounds-checked: a
//! short or malformed buffer ends the iteration, it never panics.

use crate::abi::{NFNL_SUBSYS_NFTABLES, NFPROTO_UNSPEC, NLM_F_REQUEST};

/// Netlink header length.
pub const NLMSG_HDRLEN: usize = 16;
/// nfgenmsg length (family, version, resource id).
pub const NFGENMSG_LEN: usize = 4;
const NLA_HDRLEN: usize = 4;
/// Attribute type bits (the rest are the nested / byte-order flags).
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `NLA_F_NESTED`.
pub const NLA_F_NESTED: u16 = 0x8000;

/// Rounds up to netlink's 4-byte alignment.
pub fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Writes a stream of netlink attributes.
#[derive(Default)]
pub struct AttrWriter {
    buf: Vec<u8>,
}

impl AttrWriter {
    /// An empty attribute stream.
    pub fn new() -> Self {
        AttrWriter::default()
    }

    /// Appends attribute `ty` with raw payload.
    pub fn bytes(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        let len = NLA_HDRLEN + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// Appends a NUL-terminated string attribute.
    pub fn string(&mut self, ty: u16, value: &str) -> &mut Self {
        let mut payload = Vec::with_capacity(value.len() + 1);
        payload.extend_from_slice(value.as_bytes());
        payload.push(0);
        self.bytes(ty, &payload)
    }

    /// Appends a big-endian u32 attribute (nftables' integer encoding).
    pub fn be32(&mut self, ty: u16, value: u32) -> &mut Self {
        self.bytes(ty, &value.to_be_bytes())
    }

    /// Appends a nested attribute whose content `fill` writes.
    pub fn nested(&mut self, ty: u16, fill: impl FnOnce(&mut AttrWriter)) -> &mut Self {
        let mut inner = AttrWriter::new();
        fill(&mut inner);
        self.bytes(ty | NLA_F_NESTED, &inner.buf)
    }

    /// The encoded stream.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Iterates over the attributes of `buf` as (type without flags, payload).
pub fn attributes(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > rest.len() {
            return None;
        }
        let payload = &rest[NLA_HDRLEN..len];
        rest = &rest[align(len).min(rest.len())..];
        Some((ty, payload))
    })
}

/// The payload of the first attribute of type `ty`.
pub fn attribute(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attributes(buf).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

/// A string attribute's value, without its NUL.
pub fn string(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// A big-endian u32 attribute's value.
pub fn be32(payload: &[u8]) -> Option<u32> {
    payload
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// One netlink message, borrowed from a receive or batch buffer.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// `nlmsg_pid`: in a notification, the port id of the socket whose request caused it.
    pub port: u32,
    /// Everything after the netlink header.
    pub payload: &'a [u8],
    /// The whole message as read: header, payload and padding.
    raw: &'a [u8],
}

impl<'a> Message<'a> {
    /// The message as bytes again (header and payload, padded), for example to keep it after
    /// the buffer it was read from is reused.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.raw.to_vec();
        out.resize(align(out.len()), 0);
        out
    }

    /// The nftables attributes (after the nfgenmsg header).
    pub fn attributes(&self) -> &'a [u8] {
        self.payload.get(NFGENMSG_LEN..).unwrap_or(&[])
    }
}

/// Iterates over the netlink messages in `buf`.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes(rest[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return None;
        }
        let message = Message {
            kind: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            seq: u32::from_ne_bytes(rest[8..12].try_into().ok()?),
            port: u32::from_ne_bytes(rest[12..16].try_into().ok()?),
            payload: &rest[NLMSG_HDRLEN..len],
            raw: &rest[..align(len).min(rest.len())],
        };
        rest = &rest[message.raw.len()..];
        Some(message)
    })
}

/// Encodes one nftables request: netlink header (type `msg` of the nftables subsystem, flags
/// `NLM_F_REQUEST | flags`, `seq`), nfgenmsg (`family`, version 0, resource id 0), attributes.
/// A message that goes into a batch gets its final flags and sequence number there
/// ([`set_flags_and_seq`]).
pub fn request(msg: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    subsystem_request(NFNL_SUBSYS_NFTABLES, msg, flags, seq, family, attrs)
}

/// Like [`request`], for message `msg` of nfnetlink subsystem `subsystem` (conntrack's, say).
pub fn subsystem_request(
    subsystem: u16,
    msg: u16,
    flags: u16,
    seq: u32,
    family: u8,
    attrs: &[u8],
) -> Vec<u8> {
    resource_request((subsystem, msg), flags, seq, family, 0, attrs)
}

/// Like [`subsystem_request`], addressed to resource `res_id` of the subsystem (an NFLOG
/// group, say).
pub fn resource_request(
    (subsystem, msg): (u16, u16),
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) -> Vec<u8> {
    let kind = (subsystem << 8) | msg;
    message(kind, NLM_F_REQUEST | flags, seq, family, res_id, attrs)
}

/// A batch delimiter (`NFNL_MSG_BATCH_BEGIN` or `_END`): no family, the nftables subsystem as
/// resource id.
pub fn batch_delimiter(kind: u16, seq: u32) -> Vec<u8> {
    message(
        kind,
        NLM_F_REQUEST,
        seq,
        NFPROTO_UNSPEC,
        NFNL_SUBSYS_NFTABLES,
        &[],
    )
}

/// Encodes one message: netlink header, nfgenmsg (`family`, version 0, `res_id`), attributes.
fn message(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
    let mut out = Vec::with_capacity(align(len));
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0);
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(attrs);
    out.resize(align(out.len()), 0);
    out
}

/// Rewrites the flags and sequence number of the message at the start of `msg`.
pub fn set_flags_and_seq(msg: &mut [u8], flags: u16, seq: u32) {
    msg[6..8].copy_from_slice(&flags.to_ne_bytes());
    msg[8..12].copy_from_slice(&seq.to_ne_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_and_stop_on_garbage() {
        let mut w = AttrWriter::new();
        w.string(1, "abc").be32(2, 7).nested(3, |n| {
            n.bytes(1, &[9, 9]);
        });
        let buf = w.finish();
        let parsed: Vec<(u16, Vec<u8>)> = attributes(&buf).map(|(t, p)| (t, p.to_vec())).collect();
        assert_eq!(parsed.len(), 3);
        assert_eq!(string(&parsed[0].1), "abc");
        assert_eq!(be32(&parsed[1].1), Some(7));
        assert_eq!(attribute(&parsed[2].1, 1), Some(&[9u8, 9][..]));
        // A length running past the end ends the iteration.
        let mut bad = buf.clone();
        bad[0] = 200;
        assert_eq!(attributes(&bad).count(), 0);
    }

    #[test]
    fn messages_round_trip() {
        let a = message(0x0a09, 1, 5, 1, 0, &[]);
        let mut both = a.clone();
        both.extend(message(0x0a0c, 1, 6, 1, 0, &[1, 0, 0, 0]));
        let seqs: Vec<u32> = messages(&both).map(|m| m.seq).collect();
        assert_eq!(seqs, [5, 6]);
        let again: Vec<u8> = messages(&both).flat_map(|m| m.to_bytes()).collect();
        assert_eq!(again, both);
        assert_eq!(messages(&both[..20]).count(), 1);
    }
}
