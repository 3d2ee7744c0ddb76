//! The kernel's connection tracking table (ctnetlink, over the same netfilter socket): the
//! TCP and UDP connections it tracks, and deleting some. A connection the new table refuses is
//! deleted so that its next packet is a new one, judged by the new table: established
//! connections do not outlive a tightening.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::netlink::Socket;
use crate::wire::{self, AttrWriter, Message};
use crate::NftError;

/// ctnetlink's subsystem and messages (linux/netfilter/nfnetlink_conntrack.h).
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
/// CTA_*: a connection's tuples and zone.
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
/// CTA_TUPLE_*: a tuple's addresses and transport.
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// One tuple of a connection: transport protocol, source and destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub protocol: u8,
    /// Source address and port.
    pub source: SocketAddr,
    /// Destination address and port.
    pub destination: SocketAddr,
}

/// A tracked TCP or UDP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Connection {
    /// As its first packet went out.
    pub original: Tuple,
    /// As replies come back (after NAT, the real peer: a DNAT's target is its source).
    pub reply: Tuple,
    /// Its conntrack zone (0 unless a rule set one).
    pub zone: u16,
}

impl Connection {
    /// Reads one ctnetlink message; `None` for other protocols or a message it cannot read.
    fn read(message: &Message<'_>) -> Option<Connection> {
        let attrs = message.attributes();
        let original = tuple(wire::attribute(attrs, CTA_TUPLE_ORIG)?)?;
        let reply = tuple(wire::attribute(attrs, CTA_TUPLE_REPLY)?)?;
        let zone = wire::attribute(attrs, CTA_ZONE)
            .and_then(|z| z.get(..2))
            .map_or(0, |z| u16::from_be_bytes([z[0], z[1]]));
        Some(Connection {
            original,
            reply,
            zone,
        })
    }

    /// The DELETE request that names this connection (its original tuple and zone).
    fn delete_request(&self, seq: u32) -> Vec<u8> {
        let tuple = self.original;
        let family = match tuple.source.ip() {
            IpAddr::V4(_) => AF_INET,
            IpAddr::V6(_) => AF_INET6,
        };
        let mut attrs = AttrWriter::new();
        attrs.nested(CTA_TUPLE_ORIG, |t| {
            t.nested(CTA_TUPLE_IP, |ip| {
                match (tuple.source.ip(), tuple.destination.ip()) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        ip.bytes(CTA_IP_V4_SRC, &s.octets())
                            .bytes(CTA_IP_V4_DST, &d.octets());
                    }
                    (s, d) => {
                        ip.bytes(CTA_IP_V6_SRC, &v6(s).octets())
                            .bytes(CTA_IP_V6_DST, &v6(d).octets());
                    }
                }
            });
            t.nested(CTA_TUPLE_PROTO, |p| {
                p.bytes(CTA_PROTO_NUM, &[tuple.protocol])
                    .bytes(CTA_PROTO_SRC_PORT, &tuple.source.port().to_be_bytes())
                    .bytes(CTA_PROTO_DST_PORT, &tuple.destination.port().to_be_bytes());
            });
        });
        if self.zone != 0 {
            attrs.bytes(CTA_ZONE, &self.zone.to_be_bytes());
        }
        wire::subsystem_request(
            NFNL_SUBSYS_CTNETLINK,
            IPCTNL_MSG_CT_DELETE,
            crate::abi::NLM_F_ACK,
            seq,
            family,
            &attrs.finish(),
        )
    }
}

fn v6(address: IpAddr) -> Ipv6Addr {
    match address {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// A `CTA_TUPLE_*` nest: TCP or UDP only.
fn tuple(nest: &[u8]) -> Option<Tuple> {
    let ip = wire::attribute(nest, CTA_TUPLE_IP)?;
    let proto = wire::attribute(nest, CTA_TUPLE_PROTO)?;
    let protocol = *wire::attribute(proto, CTA_PROTO_NUM)?.first()?;
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return None;
    }
    let port = |ty| {
        let bytes = wire::attribute(proto, ty)?.get(..2)?;
        Some(u16::from_be_bytes([bytes[0], bytes[1]]))
    };
    let address = |v4, v6| -> Option<IpAddr> {
        if let Some(bytes) = wire::attribute(ip, v4) {
            let octets: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
            return Some(Ipv4Addr::from(octets).into());
        }
        let octets: [u8; 16] = wire::attribute(ip, v6)?.get(..16)?.try_into().ok()?;
        Some(Ipv6Addr::from(octets).into())
    };
    Some(Tuple {
        protocol,
        source: SocketAddr::new(
            address(CTA_IP_V4_SRC, CTA_IP_V6_SRC)?,
            port(CTA_PROTO_SRC_PORT)?,
        ),
        destination: SocketAddr::new(
            address(CTA_IP_V4_DST, CTA_IP_V6_DST)?,
            port(CTA_PROTO_DST_PORT)?,
        ),
    })
}

impl Socket {
    /// Every TCP and UDP connection the kernel tracks (both families), each handed to `select`
    /// as the dump streams by; returns those it selected (the rest are not kept).
    pub fn connections(
        &mut self,
        mut select: impl FnMut(&Connection) -> bool,
    ) -> Result<Vec<Connection>, NftError> {
        let seq = self.next_seq();
        self.skip_past(seq);
        let request = wire::subsystem_request(
            NFNL_SUBSYS_CTNETLINK,
            IPCTNL_MSG_CT_GET,
            crate::abi::NLM_F_DUMP,
            seq,
            AF_UNSPEC,
            &[],
        );
        let mut selected = Vec::new();
        self.exchange(&request, seq, "listing tracked connections", |message| {
            if let Some(connection) = Connection::read(message) {
                if select(&connection) {
                    selected.push(connection);
                }
            }
        })?;
        Ok(selected)
    }

    /// Deletes `connections` from the tracking table; returns how many it deleted (one that
    /// ended meanwhile is not counted).
    pub fn forget(&mut self, connections: &[Connection]) -> Result<usize, NftError> {
        if connections.is_empty() {
            return Ok(0);
        }
        let first = self.next_seq();
        self.skip_past(first.wrapping_add(connections.len() as u32 - 1));
        let requests: Vec<Vec<u8>> = connections
            .iter()
            .enumerate()
            .map(|(i, c)| c.delete_request(first.wrapping_add(i as u32)))
            .collect();
        let mut deleted = 0;
        for errno in self.acknowledged(&requests, first)? {
            match -errno {
                0 => deleted += 1,
                libc::ENOENT => {}
                errno => {
                    return Err(NftError::rejected(
                        errno,
                        None,
                        "deleting a tracked connection".into(),
                    ))
                }
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delete_request_reads_back_as_the_connection_it_names() {
        let original = Tuple {
            protocol: IPPROTO_TCP,
            source: "10.50.0.10:40000".parse().unwrap(),
            destination: "203.0.113.10:443".parse().unwrap(),
        };
        let connection = Connection {
            original,
            reply: original,
            zone: 3,
        };
        let request = connection.delete_request(9);
        let message = wire::messages(&request).next().unwrap();
        assert_eq!(
            message.kind,
            NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE
        );
        let attrs = message.attributes();
        assert_eq!(
            tuple(wire::attribute(attrs, CTA_TUPLE_ORIG).unwrap()),
            Some(original)
        );
        assert_eq!(wire::attribute(attrs, CTA_ZONE), Some(&[0, 3][..]));
        let v6 = Tuple {
            protocol: IPPROTO_UDP,
            source: "[fd00:50::10]:5353".parse().unwrap(),
            destination: "[2001:db8:113::10]:53".parse().unwrap(),
        };
        let request = Connection {
            original: v6,
            reply: v6,
            zone: 0,
        }
        .delete_request(10);
        let message = wire::messages(&request).next().unwrap();
        assert_eq!(message.payload[0], AF_INET6);
        let attrs = message.attributes();
        assert_eq!(
            tuple(wire::attribute(attrs, CTA_TUPLE_ORIG).unwrap()),
            Some(v6)
        );
        assert_eq!(wire::attribute(attrs, CTA_ZONE), None);
    }
}
