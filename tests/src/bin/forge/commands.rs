//! The subcommands' options, and the frame each send command describes.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::args::Options;
use crate::frames::{
    ethernet, ipv6, tagged, Arp, ArpOp, Mac, NeighbourAdvertisement, RouterAdvertisement, Udp4,
    ALL_NODES, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_ICMPV6,
};
use crate::{usage, Failure};

/// The value options and the switches of `command`, beside those every command takes.
pub(crate) fn options_of(
    command: &str,
) -> Result<(&'static [&'static str], &'static [&'static str]), Failure> {
    Ok(match command {
        "arp" => (
            &["op", "sender-ip", "sender-mac", "target-ip", "target-mac"],
            &[],
        ),
        "udp4" => (&["src", "dst", "sport", "dport", "payload", "ttl"], &[]),
        "na6" => (
            &["src", "dst", "target", "tlla"],
            &["override", "solicited", "router"],
        ),
        "ra6" => (
            &[
                "src",
                "dst",
                "prefix",
                "router-lifetime",
                "valid-lifetime",
                "preferred-lifetime",
                "slla",
            ],
            &[],
        ),
        "listen" => (
            &[
                "for-ms",
                "exclude-eth-src",
                "ethertype",
                "arp-sender-ip",
                "icmp6-type",
                "contains",
            ],
            &[],
        ),
        other => return Err(usage(format!("unknown subcommand `{other}`"))),
    })
}

/// The highest VLAN ID (4095 is reserved).
const MAX_VID: u16 = 4094;

/// The frame of send command `command` (arp, udp4, na6 or ra6), from `eth_src`, with an
/// 802.1Q tag when `--vlan` is given.
pub(crate) fn frame(command: &str, options: &Options, eth_src: Mac) -> Result<Vec<u8>, Failure> {
    let frame = match command {
        "arp" => arp_frame(options, eth_src)?,
        "udp4" => udp4_frame(options, eth_src)?,
        "na6" => na6_frame(options, eth_src)?,
        _ => ra6_frame(options, eth_src)?,
    };
    if options.value("vlan").is_none() {
        return Ok(frame);
    }
    let vid: u16 = options.number_or("vlan", 0)?;
    if vid > MAX_VID {
        return Err(usage(format!("--vlan must be 0 to {MAX_VID}, not {vid}")));
    }
    Ok(tagged(&frame, vid))
}

fn arp_frame(options: &Options, eth_src: Mac) -> Result<Vec<u8>, Failure> {
    let op = match options.required("op")? {
        "request" => ArpOp::Request,
        "reply" => ArpOp::Reply,
        other => {
            return Err(usage(format!(
                "--op must be request or reply, not `{other}`"
            )))
        }
    };
    let sender_ip: Ipv4Addr = options.parsed("sender-ip")?;
    let arp = Arp {
        op,
        sender_mac: options.mac_or("sender-mac", eth_src)?,
        sender_ip,
        target_mac: options.mac_or("target-mac", Mac::ZERO)?,
        target_ip: options.parsed_or("target-ip", sender_ip)?,
    };
    let eth_dst = options.mac_or("eth-dst", Mac::BROADCAST)?;
    Ok(ethernet(eth_dst, eth_src, ETHERTYPE_ARP, &arp.bytes()))
}

fn udp4_frame(options: &Options, eth_src: Mac) -> Result<Vec<u8>, Failure> {
    let datagram = Udp4 {
        src: options.parsed("src")?,
        dst: options.parsed("dst")?,
        sport: options.number_or("sport", 40_000)?,
        dport: options.parsed("dport")?,
        ident: 0,
        ttl: options.number_or("ttl", 64)?,
        payload: options
            .value("payload")
            .unwrap_or("forge")
            .as_bytes()
            .to_vec(),
    };
    let eth_dst = options.mac("eth-dst")?;
    Ok(ethernet(
        eth_dst,
        eth_src,
        ETHERTYPE_IPV4,
        &datagram.bytes(),
    ))
}

fn na6_frame(options: &Options, eth_src: Mac) -> Result<Vec<u8>, Failure> {
    let src: Ipv6Addr = options.parsed("src")?;
    let dst: Ipv6Addr = options.parsed_or("dst", ALL_NODES)?;
    let na = NeighbourAdvertisement {
        router: options.switch("router"),
        solicited: options.switch("solicited"),
        override_: options.switch("override"),
        target: options.parsed_or("target", src)?,
        tlla: Some(options.mac_or("tlla", eth_src)?),
    };
    let eth_dst = ipv6_eth_dst(options, dst)?;
    let packet = ipv6(src, dst, 255, IPPROTO_ICMPV6, &na.icmp());
    Ok(ethernet(eth_dst, eth_src, ETHERTYPE_IPV6, &packet))
}

fn ra6_frame(options: &Options, eth_src: Mac) -> Result<Vec<u8>, Failure> {
    let src: Ipv6Addr = options.parsed("src")?;
    if src.segments()[0] & 0xffc0 != 0xfe80 {
        return Err(usage(format!(
            "--src {src} is not link-local (fe80::/10): hosts ignore router advertisements from \
             other sources"
        )));
    }
    let dst: Ipv6Addr = options.parsed_or("dst", ALL_NODES)?;
    let prefix = options.required("prefix")?;
    let (address, length) = prefix
        .split_once('/')
        .ok_or_else(|| usage(format!("--prefix `{prefix}` is not ADDRESS/LENGTH")))?;
    let prefix: Ipv6Addr = address
        .parse()
        .map_err(|_| usage(format!("--prefix: `{address}` is not an IPv6 address")))?;
    let prefix_len: u8 = length
        .parse()
        .ok()
        .filter(|l| *l <= 128)
        .ok_or_else(|| usage(format!("--prefix: `{length}` is not a length 0 to 128")))?;
    let ra = RouterAdvertisement {
        router_lifetime: options.number_or("router-lifetime", 1800)?,
        slla: Some(options.mac_or("slla", eth_src)?),
        prefix,
        prefix_len,
        valid_lifetime: options.number_or("valid-lifetime", 86_400)?,
        preferred_lifetime: options.number_or("preferred-lifetime", 14_400)?,
    };
    let eth_dst = ipv6_eth_dst(options, dst)?;
    let packet = ipv6(src, dst, 255, IPPROTO_ICMPV6, &ra.icmp());
    Ok(ethernet(eth_dst, eth_src, ETHERTYPE_IPV6, &packet))
}

/// `--eth-dst`, or the multicast MAC of a multicast destination.
fn ipv6_eth_dst(options: &Options, dst: Ipv6Addr) -> Result<Mac, Failure> {
    match options.value("eth-dst") {
        Some(_) => options.mac("eth-dst"),
        None if dst.is_multicast() => Ok(Mac::ipv6_multicast(dst)),
        None => Err(usage(format!(
            "--eth-dst is needed for the unicast destination {dst}"
        ))),
    }
}
