//! The drop audit's kernel side (nfnetlink_log): the agent binds the NFLOG group its tables'
//! audit chains log to, and reads each logged packet back as the prefix that names the drop's
//! reason, the interfaces, and what the audit reports of the headers (addresses, protocol,
//! destination port; an ARP packet's sender and target).
//!
//! One socket holds a group: binding one another program holds fails (`EBUSY`), and the
//! agent says so. The kernel sends what it holds every 100 ms, or sooner once
//! [`QUEUE_THRESHOLD`] packets wait; the audit chains' rate bounds how many there are.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use neli::consts::socket::{Msg, NlFamily};
use neli::socket::NlSocket;
use neli::utils::Groups;

use crate::abi::{NFPROTO_UNSPEC, NLMSG_ERROR, NLM_F_ACK};
use crate::netlink::{parse_error, reply_failed, set_buffer, set_timeout};
use crate::wire;
use crate::NftError;

/// nfnetlink_log's subsystem and messages (linux/netfilter/nfnetlink_log.h).
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
/// NFULA_CFG_*: a group's configuration.
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
/// NFULA_*: a logged packet's attributes.
const NFULA_PACKET_HDR: u16 = 1;
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_IFINDEX_OUTDEV: u16 = 5;
const NFULA_IFINDEX_PHYSINDEV: u16 = 6;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;

/// Bytes of each packet the kernel copies: an IPv6 header, some extension headers, the ports.
const COPY_RANGE: u32 = 128;
/// The kernel sends what it holds after this many hundredths of a second...
const FLUSH_TIMEOUT: u32 = 10;
/// ... or as soon as this many packets wait.
pub const QUEUE_THRESHOLD: u32 = 32;
/// Packets one read takes at most, so that a caller's loop gets to its other work between
/// reads.
pub const PACKETS_PER_READ: usize = 1024;
/// The socket's receive queue: a second of every audit chain's rate, and more.
const RECEIVE_QUEUE: usize = 4 << 20;
const DATAGRAM: usize = 64 * 1024;
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;

/// A packet an audit chain logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The prefix of the rule that logged it (`enforcer:egress`).
    pub prefix: String,
    /// Index of the interface it entered through, if any.
    pub in_interface: Option<u32>,
    /// Index of the interface it was to leave through, if any.
    pub out_interface: Option<u32>,
    /// Index of the bridge port it entered through, when it was bridged (then
    /// `in_interface` is the bridge).
    pub in_port: Option<u32>,
    /// What its headers say.
    pub headers: Headers,
}

/// A logged packet's headers, as far as the audit reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Headers {
    /// An IPv4 or IPv6 packet.
    Ip {
        /// Source address.
        src: IpAddr,
        /// Destination address.
        dst: IpAddr,
        /// Its transport.
        transport: Transport,
    },
    /// An ARP packet for IPv4.
    Arp {
        /// The sender's claimed address.
        sender: Ipv4Addr,
        /// The address asked for or answered about.
        target: Ipv4Addr,
    },
    /// Anything else, by Ethernet type (0 when the kernel gave none), or a packet too short
    /// to read.
    Other(u16),
}

/// A logged IP packet's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP, to this destination port.
    Tcp(u16),
    /// UDP, to this destination port.
    Udp(u16),
    /// ICMP, of this type.
    Icmp(u8),
    /// ICMPv6, of this type.
    Icmpv6(u8),
    /// Another protocol (or a fragment past the first), by number.
    Other(u8),
}

impl Transport {
    /// Its name as `nft` writes it (`tcp`, `icmpv6`); another protocol by number.
    pub fn name(self) -> String {
        match self {
            Transport::Tcp(_) => "tcp".into(),
            Transport::Udp(_) => "udp".into(),
            Transport::Icmp(_) => "icmp".into(),
            Transport::Icmpv6(_) => "icmpv6".into(),
            Transport::Other(number) => format!("ip proto {number}"),
        }
    }

    /// The destination port, for TCP and UDP.
    pub fn port(self) -> Option<u16> {
        match self {
            Transport::Tcp(port) | Transport::Udp(port) => Some(port),
            _ => None,
        }
    }
}

/// What one read of the group found.
#[derive(Debug, Default)]
pub struct Batch {
    /// The packets, in the order logged.
    pub packets: Vec<Logged>,
    /// How many times the socket's queue overflowed since the last read (messages were lost).
    pub overflows: u32,
    /// Whether the socket was read empty; otherwise more is queued (the read stopped at
    /// [`PACKETS_PER_READ`]), and the caller should read again soon.
    pub drained: bool,
}

/// The bound NFLOG group.
pub struct DropLog {
    socket: NlSocket,
    buffer: Vec<u8>,
}

impl DropLog {
    /// Binds `group` (CAP_NET_ADMIN): the kernel copies [`COPY_RANGE`] bytes of each packet
    /// logged there to this socket. The socket does not block: [`DropLog::read`] returns what
    /// is queued.
    pub fn bind(group: u16) -> Result<DropLog, NftError> {
        let socket = NlSocket::connect(NlFamily::Netfilter, None, Groups::empty())
            .map_err(NftError::Socket)?;
        set_timeout(&socket, REPLY_TIMEOUT).map_err(NftError::Socket)?;
        set_buffer(&socket, libc::SO_RCVBUFFORCE, RECEIVE_QUEUE)
            .or_else(|_| set_buffer(&socket, libc::SO_RCVBUF, RECEIVE_QUEUE))
            .map_err(NftError::Socket)?;
        let mut log = DropLog {
            socket,
            buffer: vec![0; DATAGRAM],
        };
        let mut mode = COPY_RANGE.to_be_bytes().to_vec();
        mode.extend([NFULNL_COPY_PACKET, 0]);
        let what = |step: &str| format!("binding NFLOG group {group} ({step})");
        log.configure(group, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND], || {
            what("another program may hold it: set [audit] nflog_group")
        })?;
        log.configure(group, NFULA_CFG_MODE, &mode, || what("copy mode"))?;
        log.configure(
            group,
            NFULA_CFG_TIMEOUT,
            &FLUSH_TIMEOUT.to_be_bytes(),
            || what("flush timeout"),
        )?;
        log.configure(
            group,
            NFULA_CFG_QTHRESH,
            &QUEUE_THRESHOLD.to_be_bytes(),
            || what("queue threshold"),
        )?;
        log.socket.nonblock().map_err(NftError::Socket)?;
        Ok(log)
    }

    /// Sends one configuration attribute for `group` and waits for its acknowledgement.
    fn configure(
        &mut self,
        group: u16,
        attribute: u16,
        value: &[u8],
        what: impl Fn() -> String,
    ) -> Result<(), NftError> {
        let mut attrs = wire::AttrWriter::new();
        attrs.bytes(attribute, value);
        let request = wire::resource_request(
            (NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG),
            NLM_F_ACK,
            0,
            NFPROTO_UNSPEC,
            group,
            &attrs.finish(),
        );
        self.socket
            .send(&request, Msg::empty())
            .map_err(NftError::Socket)?;
        loop {
            let len = match self.socket.recv(&mut self.buffer[..], Msg::empty()) {
                Ok((len, _)) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(reply_failed(e)),
            };
            for message in wire::messages(&self.buffer[..len]) {
                if message.kind == NLMSG_ERROR {
                    return match parse_error(&message) {
                        (0, _) => Ok(()),
                        (errno, detail) => Err(NftError::rejected(-errno, detail, what())),
                    };
                }
            }
        }
    }

    /// The packets queued by now (at most about [`PACKETS_PER_READ`]), and whether the queue
    /// overflowed; empty when nothing is.
    pub fn read(&mut self) -> Result<Batch, NftError> {
        let mut batch = Batch::default();
        while batch.packets.len() < PACKETS_PER_READ {
            let len = match self.socket.recv(&mut self.buffer[..], Msg::DONTWAIT) {
                Ok((len, _)) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    batch.drained = true;
                    return Ok(batch);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    batch.overflows += 1;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) if !batch.packets.is_empty() => return Ok(batch),
                Err(e) => return Err(NftError::Socket(e)),
            };
            batch.packets.extend(
                wire::messages(&self.buffer[..len])
                    .filter(|m| m.kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET)
                    .map(|m| logged(m.attributes())),
            );
        }
        Ok(batch)
    }
}

impl AsRawFd for DropLog {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// One `NFULNL_MSG_PACKET`'s attributes, read.
fn logged(attrs: &[u8]) -> Logged {
    let index = |ty| wire::attribute(attrs, ty).and_then(wire::be32);
    let ethertype = wire::attribute(attrs, NFULA_PACKET_HDR)
        .and_then(|h| h.get(..2))
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let payload = wire::attribute(attrs, NFULA_PAYLOAD).unwrap_or(&[]);
    Logged {
        prefix: wire::attribute(attrs, NFULA_PREFIX)
            .map(wire::string)
            .unwrap_or_default(),
        in_interface: index(NFULA_IFINDEX_INDEV),
        out_interface: index(NFULA_IFINDEX_OUTDEV),
        in_port: index(NFULA_IFINDEX_PHYSINDEV),
        headers: headers(ethertype, payload).unwrap_or(Headers::Other(ethertype)),
    }
}

/// The headers of a packet that starts at its network header; `None` when it is too short.
pub fn headers(ethertype: u16, packet: &[u8]) -> Option<Headers> {
    let version = packet.first()? >> 4;
    match ethertype {
        ETH_P_ARP => arp(packet),
        ETH_P_IP => ipv4(packet),
        ETH_P_IPV6 => ipv6(packet),
        // The inet family may give no type: the IP version tells.
        0 if version == 4 => ipv4(packet),
        0 if version == 6 => ipv6(packet),
        other => Some(Headers::Other(other)),
    }
}

fn ipv4(packet: &[u8]) -> Option<Headers> {
    let header_len = usize::from(packet.first()? & 0x0f) * 4;
    if header_len < 20 {
        return None;
    }
    let bytes4 = |at: usize| -> Option<[u8; 4]> { packet.get(at..at + 4)?.try_into().ok() };
    let src = Ipv4Addr::from(bytes4(12)?);
    let dst = Ipv4Addr::from(bytes4(16)?);
    let fragment_offset = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x1fff;
    let protocol = *packet.get(9)?;
    let transport = match fragment_offset {
        0 => transport(protocol, packet.get(header_len..).unwrap_or(&[])),
        _ => Transport::Other(protocol),
    };
    Some(Headers::Ip {
        src: src.into(),
        dst: dst.into(),
        transport,
    })
}

fn ipv6(packet: &[u8]) -> Option<Headers> {
    let bytes16 = |at: usize| -> Option<[u8; 16]> { packet.get(at..at + 16)?.try_into().ok() };
    let src = Ipv6Addr::from(bytes16(8)?);
    let dst = Ipv6Addr::from(bytes16(24)?);
    let mut next = *packet.get(6)?;
    let mut at = 40;
    // Hop-by-hop, routing and destination options, then a first fragment: the transport
    // header follows.
    let transport = loop {
        match next {
            0 | 43 | 60 => {
                let Some(header) = packet.get(at..at + 2) else {
                    break Transport::Other(next);
                };
                next = header[0];
                at += (usize::from(header[1]) + 1) * 8;
            }
            44 => {
                let Some(header) = packet.get(at..at + 4) else {
                    break Transport::Other(next);
                };
                let offset = u16::from_be_bytes([header[2], header[3]]) >> 3;
                next = header[0];
                at += 8;
                if offset != 0 {
                    break Transport::Other(next);
                }
            }
            protocol => break transport(protocol, packet.get(at..).unwrap_or(&[])),
        }
    };
    Some(Headers::Ip {
        src: src.into(),
        dst: dst.into(),
        transport,
    })
}

/// The transport header's destination port or ICMP type; the protocol alone when the copy
/// ends before it.
fn transport(protocol: u8, header: &[u8]) -> Transport {
    let port = header.get(2..4).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match (protocol, port, header.first()) {
        (6, Some(port), _) => Transport::Tcp(port),
        (17, Some(port), _) => Transport::Udp(port),
        (1, _, Some(&kind)) => Transport::Icmp(kind),
        (58, _, Some(&kind)) => Transport::Icmpv6(kind),
        _ => Transport::Other(protocol),
    }
}

/// An ARP packet for Ethernet and IPv4: sender and target protocol addresses.
fn arp(packet: &[u8]) -> Option<Headers> {
    let sizes = (packet.get(4)?, packet.get(5)?);
    if sizes != (&6, &4) {
        return Some(Headers::Other(ETH_P_ARP));
    }
    let bytes4 = |at: usize| -> Option<[u8; 4]> { packet.get(at..at + 4)?.try_into().ok() };
    Some(Headers::Arp {
        sender: Ipv4Addr::from(bytes4(14)?),
        target: Ipv4Addr::from(bytes4(24)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_tcp(dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p.extend([10, 0, 0, 2, 203, 0, 113, 10]);
        p.extend(40000u16.to_be_bytes());
        p.extend(dport.to_be_bytes());
        p.extend([0; 16]);
        p
    }

    #[test]
    fn ipv4_addresses_protocol_and_port_are_read() {
        assert_eq!(
            headers(ETH_P_IP, &ipv4_tcp(443)),
            Some(Headers::Ip {
                src: "10.0.0.2".parse().unwrap(),
                dst: "203.0.113.10".parse().unwrap(),
                transport: Transport::Tcp(443),
            })
        );
        // Without an Ethernet type, the version decides.
        assert_eq!(
            headers(0, &ipv4_tcp(443)),
            headers(ETH_P_IP, &ipv4_tcp(443))
        );
    }

    #[test]
    fn a_later_fragment_has_no_port() {
        let mut p = ipv4_tcp(443);
        p[7] = 8;
        assert!(matches!(
            headers(ETH_P_IP, &p),
            Some(Headers::Ip {
                transport: Transport::Other(6),
                ..
            })
        ));
    }

    #[test]
    fn ipv6_extension_headers_are_walked_to_the_transport() {
        let mut p = vec![0x60, 0, 0, 0, 0, 16, 0, 64];
        p.extend("fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend("fd00:1::3".parse::<Ipv6Addr>().unwrap().octets());
        // Hop-by-hop options (8 bytes) then UDP to 53.
        p.extend([17, 0, 0, 0, 0, 0, 0, 0]);
        p.extend([0x9c, 0x40, 0, 53, 0, 8, 0, 0]);
        assert_eq!(
            headers(ETH_P_IPV6, &p),
            Some(Headers::Ip {
                src: "fd00::2".parse().unwrap(),
                dst: "fd00:1::3".parse().unwrap(),
                transport: Transport::Udp(53),
            })
        );
        // Cut before the transport: the protocol without a port.
        assert!(matches!(
            headers(ETH_P_IPV6, &p[..48]),
            Some(Headers::Ip {
                transport: Transport::Other(17),
                ..
            })
        ));
    }

    #[test]
    fn arp_sender_and_target_are_read_and_short_packets_are_none() {
        let mut p = vec![0, 1, 8, 0, 6, 4, 0, 2];
        p.extend([2, 0x42, 0, 0, 0, 9, 10, 0, 0, 9]);
        p.extend([0xff; 6]);
        p.extend([10, 0, 0, 1]);
        assert_eq!(
            headers(ETH_P_ARP, &p),
            Some(Headers::Arp {
                sender: Ipv4Addr::new(10, 0, 0, 9),
                target: Ipv4Addr::new(10, 0, 0, 1),
            })
        );
        assert_eq!(headers(ETH_P_IP, &[0x45, 0]), None);
        assert_eq!(headers(ETH_P_IP, &[]), None);
        assert_eq!(headers(0x88cc, &[1]), Some(Headers::Other(0x88cc)));
    }

    #[test]
    fn a_packet_message_is_read_with_its_prefix_and_interfaces() {
        let mut attrs = wire::AttrWriter::new();
        attrs
            .bytes(NFULA_PACKET_HDR, &[0x08, 0x00, 2, 0])
            .string(NFULA_PREFIX, "enforcer:egress")
            .be32(NFULA_IFINDEX_INDEV, 7)
            .be32(NFULA_IFINDEX_PHYSINDEV, 9)
            .bytes(NFULA_PAYLOAD, &ipv4_tcp(80));
        let read = logged(&attrs.finish());
        assert_eq!(read.prefix, "enforcer:egress");
        assert_eq!(read.in_interface, Some(7));
        assert_eq!(read.out_interface, None);
        assert_eq!(read.in_port, Some(9));
        assert_eq!(
            read.headers,
            Headers::Ip {
                src: "10.0.0.2".parse().unwrap(),
                dst: "203.0.113.10".parse().unwrap(),
                transport: Transport::Tcp(80),
            }
        );
    }
}
