//! Ethernet frames, built by hand: ARP, UDP over IPv4, neighbour and router advertisements,
//! and their checksums.

use std::net::{Ipv4Addr, Ipv6Addr};

pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
pub(crate) const ETHERTYPE_ARP: u16 = 0x0806;
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;
pub(crate) const ETHERTYPE_VLAN: u16 = 0x8100;
pub(crate) const IPPROTO_UDP: u8 = 17;
pub(crate) const IPPROTO_ICMPV6: u8 = 58;
pub(crate) const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mac(pub(crate) [u8; 6]);

impl Mac {
    pub(crate) const ZERO: Mac = Mac([0; 6]);
    pub(crate) const BROADCAST: Mac = Mac([0xff; 6]);

    /// `aa:bb:cc:dd:ee:ff`.
    pub(crate) fn parse(text: &str) -> Option<Mac> {
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts.next()?;
            if part.len() != 2 {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(Mac(bytes))
    }

    /// The Ethernet address of an IPv6 multicast group (33:33 and its last 32 bits).
    pub(crate) fn ipv6_multicast(group: Ipv6Addr) -> Mac {
        let o = group.octets();
        Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

/// An Ethernet II frame (no padding: the kernel pads short frames).
pub(crate) fn ethernet(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + payload.len());
    frame.extend_from_slice(&dst.0);
    frame.extend_from_slice(&src.0);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// `frame` with an IEEE 802.1Q tag inserted after its source MAC: TPID 0x8100, then priority
/// 0, drop-eligible 0 and VLAN `vid` (0 is a priority tag: no VLAN).
pub(crate) fn tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 4);
    out.extend_from_slice(&frame[..12]);
    out.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
    out.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    out.extend_from_slice(&frame[12..]);
    out
}

/// The Internet checksum (RFC 1071): the one's complement of the one's complement sum of
/// `data`'s 16-bit words, an odd last byte padded with zero.
pub(crate) fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut words = data.chunks_exact(2);
    for word in &mut words {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ARP operation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ArpOp {
    Request = 1,
    Reply = 2,
}

/// An ARP message for IPv4 over Ethernet.
pub(crate) struct Arp {
    pub(crate) op: ArpOp,
    pub(crate) sender_mac: Mac,
    pub(crate) sender_ip: Ipv4Addr,
    pub(crate) target_mac: Mac,
    pub(crate) target_ip: Ipv4Addr,
}

impl Arp {
    pub(crate) fn bytes(&self) -> [u8; 28] {
        let mut b = [0u8; 28];
        b[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
        b[2..4].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        b[4] = 6;
        b[5] = 4;
        b[6..8].copy_from_slice(&(self.op as u16).to_be_bytes());
        b[8..14].copy_from_slice(&self.sender_mac.0);
        b[14..18].copy_from_slice(&self.sender_ip.octets());
        b[18..24].copy_from_slice(&self.target_mac.0);
        b[24..28].copy_from_slice(&self.target_ip.octets());
        b
    }
}

/// A UDP datagram in an IPv4 packet (no options, don't-fragment set).
pub(crate) struct Udp4 {
    pub(crate) src: Ipv4Addr,
    pub(crate) dst: Ipv4Addr,
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) ident: u16,
    pub(crate) ttl: u8,
    pub(crate) payload: Vec<u8>,
}

impl Udp4 {
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let udp_len = 8 + self.payload.len();
        let mut udp = Vec::with_capacity(udp_len);
        udp.extend_from_slice(&self.sport.to_be_bytes());
        udp.extend_from_slice(&self.dport.to_be_bytes());
        udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&self.payload);
        let mut pseudo = Vec::with_capacity(12 + udp_len);
        pseudo.extend_from_slice(&self.src.octets());
        pseudo.extend_from_slice(&self.dst.octets());
        pseudo.extend_from_slice(&[0, IPPROTO_UDP]);
        pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
        pseudo.extend_from_slice(&udp);
        // A computed zero is sent as all ones: zero means "no checksum" in UDP over IPv4.
        let sum = match checksum(&pseudo) {
            0 => 0xffff,
            sum => sum,
        };
        udp[6..8].copy_from_slice(&sum.to_be_bytes());

        let mut packet = Vec::with_capacity(20 + udp_len);
        packet.extend_from_slice(&[0x45, 0]);
        packet.extend_from_slice(&((20 + udp_len) as u16).to_be_bytes());
        packet.extend_from_slice(&self.ident.to_be_bytes());
        packet.extend_from_slice(&0x4000u16.to_be_bytes()); // don't fragment
        packet.extend_from_slice(&[self.ttl, IPPROTO_UDP, 0, 0]);
        packet.extend_from_slice(&self.src.octets());
        packet.extend_from_slice(&self.dst.octets());
        let header_sum = checksum(&packet[..20]);
        packet[10..12].copy_from_slice(&header_sum.to_be_bytes());
        packet.extend_from_slice(&udp);
        packet
    }
}

/// An IPv6 packet carrying `upper` (ICMPv6: its checksum, at bytes 2..4, is filled in here).
pub(crate) fn ipv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    next_header: u8,
    upper: &[u8],
) -> Vec<u8> {
    let mut upper = upper.to_vec();
    if next_header == IPPROTO_ICMPV6 {
        upper[2..4].copy_from_slice(&[0, 0]);
        let mut pseudo = Vec::with_capacity(40 + upper.len());
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&(upper.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, next_header]);
        pseudo.extend_from_slice(&upper);
        let sum = checksum(&pseudo);
        upper[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    let mut packet = Vec::with_capacity(40 + upper.len());
    packet.extend_from_slice(&0x6000_0000u32.to_be_bytes());
    packet.extend_from_slice(&(upper.len() as u16).to_be_bytes());
    packet.extend_from_slice(&[next_header, hop_limit]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(&upper);
    packet
}

/// An ICMPv6 neighbour advertisement (RFC 4861 4.4).
pub(crate) struct NeighbourAdvertisement {
    pub(crate) router: bool,
    pub(crate) solicited: bool,
    pub(crate) override_: bool,
    pub(crate) target: Ipv6Addr,
    pub(crate) tlla: Option<Mac>,
}

impl NeighbourAdvertisement {
    /// The ICMPv6 message, checksum zero ([`ipv6`] fills it in).
    pub(crate) fn icmp(&self) -> Vec<u8> {
        let mut m = vec![136, 0, 0, 0];
        let flags = (u32::from(self.router) << 31)
            | (u32::from(self.solicited) << 30)
            | (u32::from(self.override_) << 29);
        m.extend_from_slice(&flags.to_be_bytes());
        m.extend_from_slice(&self.target.octets());
        if let Some(mac) = self.tlla {
            m.extend_from_slice(&[2, 1]); // target link-layer address, 8 bytes
            m.extend_from_slice(&mac.0);
        }
        m
    }
}

/// An ICMPv6 router advertisement (RFC 4861 4.2) with one prefix information option
/// (on-link and autonomous).
pub(crate) struct RouterAdvertisement {
    pub(crate) router_lifetime: u16,
    pub(crate) slla: Option<Mac>,
    pub(crate) prefix: Ipv6Addr,
    pub(crate) prefix_len: u8,
    pub(crate) valid_lifetime: u32,
    pub(crate) preferred_lifetime: u32,
}

impl RouterAdvertisement {
    /// The ICMPv6 message, checksum zero ([`ipv6`] fills it in).
    pub(crate) fn icmp(&self) -> Vec<u8> {
        let mut m = vec![134, 0, 0, 0, 64, 0]; // current hop limit 64, no M or O flag
        m.extend_from_slice(&self.router_lifetime.to_be_bytes());
        m.extend_from_slice(&0u32.to_be_bytes()); // reachable time: unspecified
        m.extend_from_slice(&0u32.to_be_bytes()); // retransmission timer: unspecified
        if let Some(mac) = self.slla {
            m.extend_from_slice(&[1, 1]); // source link-layer address, 8 bytes
            m.extend_from_slice(&mac.0);
        }
        m.extend_from_slice(&[3, 4, self.prefix_len, 0xc0]); // prefix information: L and A
        m.extend_from_slice(&self.valid_lifetime.to_be_bytes());
        m.extend_from_slice(&self.preferred_lifetime.to_be_bytes());
        m.extend_from_slice(&0u32.to_be_bytes());
        m.extend_from_slice(&self.prefix.octets());
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    /// An independent check of an Internet checksum: the one's complement sum of 32-bit
    /// big-endian words (RFC 1071 2.(B): any word size works), folded, is all ones over data
    /// that holds its own correct checksum.
    fn sums_to_all_ones(data: &[u8]) -> bool {
        let mut padded = data.to_vec();
        while padded.len() % 4 != 0 {
            padded.push(0);
        }
        let mut sum: u64 = padded
            .chunks(4)
            .map(|w| u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum == 0xffff
    }

    fn ipv6_pseudo(packet: &[u8]) -> Vec<u8> {
        let payload_len = u16::from_be_bytes([packet[4], packet[5]]) as u32;
        let mut pseudo = packet[8..40].to_vec();
        pseudo.extend_from_slice(&payload_len.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, packet[6]]);
        pseudo.extend_from_slice(&packet[40..]);
        pseudo
    }

    #[test]
    fn checksum_matches_the_published_examples() {
        // RFC 1071 3: the words 0001 f203 f4f5 f6f7 sum to ddf2, whose complement is 220d.
        assert_eq!(checksum(&hex("0001 f203 f4f5 f6f7")), 0x220d);
        // The IPv4 header example of the checksum's Wikipedia article: b861.
        let header = hex("4500 0073 0000 4000 4011 0000 c0a8 0001 c0a8 00c7");
        assert_eq!(checksum(&header), 0xb861);
        // An odd length pads a zero byte.
        assert_eq!(checksum(&[0x01]), !0x0100);
    }

    #[test]
    fn udp4_matches_a_datagram_the_kernel_sent() {
        // Captured on a veth: 10.102.0.20:50870 -> 10.102.0.2:9, payload "x", IPv4 ID abe5.
        // The kernel's IPv4 header checksum (7a09) is complete; its UDP checksum field held
        // only the pseudo-header sum (offloaded), so the expected UDP checksum, ac3a, was
        // computed apart with Python's sum of 16-bit words.
        let expected = hex("4500 001d abe5 4000 4011 7a09 0a66 0014 0a66 0002
             c6b6 0009 0009 ac3a 78");
        let built = Udp4 {
            src: "10.102.0.20".parse().unwrap(),
            dst: "10.102.0.2".parse().unwrap(),
            sport: 50870,
            dport: 9,
            ident: 0xabe5,
            ttl: 64,
            payload: b"x".to_vec(),
        }
        .bytes();
        assert_eq!(built, expected);
        assert!(sums_to_all_ones(&built[..20]));
        let mut pseudo = built[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 17, 0, 9]);
        pseudo.extend_from_slice(&built[20..]);
        assert!(sums_to_all_ones(&pseudo));
    }

    #[test]
    fn udp4_checksums_hold_for_odd_and_even_payloads() {
        for payload in [&b""[..], b"a", b"forge-marker", b"forge-marker!"] {
            let built = Udp4 {
                src: "10.102.0.2".parse().unwrap(),
                dst: "203.0.113.10".parse().unwrap(),
                sport: 40000,
                dport: 53,
                ident: 7,
                ttl: 64,
                payload: payload.to_vec(),
            }
            .bytes();
            assert!(sums_to_all_ones(&built[..20]), "{payload:?}");
            let udp_len = built.len() - 20;
            let mut pseudo = built[12..20].to_vec();
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
            pseudo.extend_from_slice(&built[20..]);
            assert!(sums_to_all_ones(&pseudo), "{payload:?}");
            assert_eq!(&built[28..], payload);
        }
    }

    #[test]
    fn arp_matches_a_reply_the_kernel_sent() {
        // Captured on a veth: 10.102.0.2 is at 02:66:67:00:00:01, to 10.102.0.20.
        let expected = hex("0266 6700 0002 0266 6700 0001 0806
             0001 0800 0604 0002 0266 6700 0001 0a66 0002 0266 6700 0002 0a66 0014");
        let host = Mac([2, 0x66, 0x67, 0, 0, 1]);
        let asker = Mac([2, 0x66, 0x67, 0, 0, 2]);
        let arp = Arp {
            op: ArpOp::Reply,
            sender_mac: host,
            sender_ip: "10.102.0.2".parse().unwrap(),
            target_mac: asker,
            target_ip: "10.102.0.20".parse().unwrap(),
        };
        assert_eq!(ethernet(asker, host, ETHERTYPE_ARP, &arp.bytes()), expected);
    }

    #[test]
    fn a_tag_goes_after_the_source_mac() {
        // The reply above, with an 802.1Q tag (TPID 8100, TCI: priority 0, DEI 0, VID).
        let untagged = hex("0266 6700 0002 0266 6700 0001 0806
             0001 0800 0604 0002 0266 6700 0001 0a66 0002 0266 6700 0002 0a66 0014");
        let priority_tag = hex("0266 6700 0002 0266 6700 0001 8100 0000 0806
             0001 0800 0604 0002 0266 6700 0001 0a66 0002 0266 6700 0002 0a66 0014");
        assert_eq!(tagged(&untagged, 0), priority_tag);
        let vlan_291 = tagged(&untagged, 0x123);
        assert_eq!(&vlan_291[12..16], &[0x81, 0, 0x01, 0x23]);
        assert_eq!([&vlan_291[..12], &vlan_291[16..]].concat(), untagged);
    }

    #[test]
    fn na6_matches_an_advertisement_the_kernel_sent() {
        // Captured on a veth: the kernel's solicited advertisement (S and O) of fd00:102::2
        // at 02:66:67:00:00:01, to fd00:102::14; its ICMPv6 checksum is b21b.
        let expected = hex("0266 6700 0002 0266 6700 0001 86dd
             6000 0000 0020 3aff fd00 0102 0000 0000 0000 0000 0000 0002
             fd00 0102 0000 0000 0000 0000 0000 0014
             8800 b21b 6000 0000 fd00 0102 0000 0000 0000 0000 0000 0002 0201 0266 6700 0001");
        let host = Mac([2, 0x66, 0x67, 0, 0, 1]);
        let asker = Mac([2, 0x66, 0x67, 0, 0, 2]);
        let na = NeighbourAdvertisement {
            router: false,
            solicited: true,
            override_: true,
            target: "fd00:102::2".parse().unwrap(),
            tlla: Some(host),
        };
        let packet = ipv6(
            "fd00:102::2".parse().unwrap(),
            "fd00:102::14".parse().unwrap(),
            255,
            IPPROTO_ICMPV6,
            &na.icmp(),
        );
        assert_eq!(ethernet(asker, host, ETHERTYPE_IPV6, &packet), expected);
    }

    #[test]
    fn ra6_is_well_formed_and_its_checksum_holds() {
        let attacker = Mac([2, 0x66, 0x67, 0, 0, 0x30]);
        let ra = RouterAdvertisement {
            router_lifetime: 1800,
            slla: Some(attacker),
            prefix: "fd00:bad:1::".parse().unwrap(),
            prefix_len: 64,
            valid_lifetime: 86_400,
            preferred_lifetime: 14_400,
        };
        let src: Ipv6Addr = "fe80::66:67".parse().unwrap();
        let packet = ipv6(src, ALL_NODES, 255, IPPROTO_ICMPV6, &ra.icmp());
        assert_eq!(packet.len(), 40 + 16 + 8 + 32);
        assert_eq!(&packet[4..8], &[0, 56, 58, 255]); // payload length, ICMPv6, hop limit
        let icmp = &packet[40..];
        assert_eq!(icmp[0], 134);
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1800);
        assert_eq!(&icmp[16..24], &[1, 1, 2, 0x66, 0x67, 0, 0, 0x30]);
        assert_eq!(&icmp[24..28], &[3, 4, 64, 0xc0]);
        assert_eq!(&icmp[40..56], &ra.prefix.octets());
        assert!(sums_to_all_ones(&ipv6_pseudo(&packet)));
        // A changed byte breaks the checksum: the check is not vacuous.
        let mut broken = packet.clone();
        broken[40 + 7] ^= 1;
        assert!(!sums_to_all_ones(&ipv6_pseudo(&broken)));
    }

    #[test]
    fn ipv6_multicast_destinations_map_to_33_33() {
        assert_eq!(
            Mac::ipv6_multicast(ALL_NODES),
            Mac([0x33, 0x33, 0, 0, 0, 1])
        );
        assert_eq!(
            Mac::ipv6_multicast("ff02::1:ff00:2".parse().unwrap()),
            Mac([0x33, 0x33, 0xff, 0, 0, 2])
        );
    }

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            Mac::parse("02:42:0a:66:00:02"),
            Some(Mac([2, 0x42, 10, 0x66, 0, 2]))
        );
        for bad in [
            "02:42:0a:66:00",
            "02:42:0a:66:00:02:03",
            "2:42:0a:66:00:02",
            "zz:42:0a:66:00:02",
        ] {
            assert_eq!(Mac::parse(bad), None, "{bad}");
        }
    }
}
