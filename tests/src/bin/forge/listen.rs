//! `forge listen`: counts the frames an interface receives that pass every filter given.

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::args::{parse_number, Options};
use crate::frames::{Mac, ETHERTYPE_ARP, ETHERTYPE_IPV6, IPPROTO_ICMPV6};
use crate::socket::{PacketSocket, ETH_P_ALL};
use crate::{io_failure, usage, Failure};

/// At most this long for `listen` (ten minutes).
const MAX_LISTEN_MS: u64 = 600_000;

/// Set by SIGTERM or SIGINT: stop listening and print the count.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Counts what `iface` receives that passes the filters of `options`, and prints the count.
pub(crate) fn listen(iface: &str, options: &Options) -> Result<(), Failure> {
    let for_ms: u64 = options.parsed("for-ms")?;
    if for_ms > MAX_LISTEN_MS {
        return Err(usage(format!("--for-ms must be at most {MAX_LISTEN_MS}")));
    }
    let filter = Filter {
        eth_src: options.optional_mac("eth-src")?,
        exclude_eth_src: options.optional_mac("exclude-eth-src")?,
        ethertype: options
            .value("ethertype")
            .map(|text| {
                parse_number(text)
                    .and_then(|n| u16::try_from(n).ok())
                    .ok_or_else(|| usage(format!("--ethertype: `{text}` is not an ethertype")))
            })
            .transpose()?,
        arp_sender_ip: options
            .value("arp-sender-ip")
            .map(|_| options.parsed("arp-sender-ip"))
            .transpose()?,
        icmp6_type: options
            .value("icmp6-type")
            .map(|_| options.parsed("icmp6-type"))
            .transpose()?,
        contains: options.value("contains").map(|t| t.as_bytes().to_vec()),
    };
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(signal, on_stop_signal as *const () as libc::sighandler_t);
        }
    }
    let socket = PacketSocket::open(iface, ETH_P_ALL).map_err(|e| io_failure("open", iface, e))?;
    socket
        .set_receive_timeout(Duration::from_millis(50))
        .map_err(|e| io_failure("set a receive timeout on", iface, e))?;
    eprintln!("listening on {iface}");
    let _ = std::io::stderr().flush();
    let deadline = Instant::now() + Duration::from_millis(for_ms);
    let mut buffer = vec![0u8; 65_536];
    let mut count: u64 = 0;
    while Instant::now() < deadline && !STOP.load(Ordering::SeqCst) {
        match socket.receive(&mut buffer) {
            Ok(Some(len)) if filter.matches(&buffer[..len]) => count += 1,
            Ok(_) => {}
            Err(e) => return Err(io_failure("receive on", iface, e)),
        }
    }
    println!("{count}");
    Ok(())
}

/// What `listen` counts: frames that pass every filter that is set.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    eth_src: Option<Mac>,
    exclude_eth_src: Option<Mac>,
    ethertype: Option<u16>,
    arp_sender_ip: Option<Ipv4Addr>,
    /// ICMPv6 right after the IPv6 header (no extension headers), of this type.
    icmp6_type: Option<u8>,
    contains: Option<Vec<u8>>,
}

impl Filter {
    pub(crate) fn matches(&self, frame: &[u8]) -> bool {
        if frame.len() < 14 {
            return false;
        }
        let src = &frame[6..12];
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        self.eth_src.map_or(true, |m| m.0 == src)
            && self.exclude_eth_src.map_or(true, |m| m.0 != src)
            && self.ethertype.map_or(true, |t| t == ethertype)
            && self.arp_sender_ip.map_or(true, |ip| {
                ethertype == ETHERTYPE_ARP
                    && frame.len() >= 14 + 28
                    && frame[14 + 14..14 + 18] == ip.octets()
            })
            && self.icmp6_type.map_or(true, |t| {
                ethertype == ETHERTYPE_IPV6
                    && frame.len() > 14 + 40
                    && frame[14 + 6] == IPPROTO_ICMPV6
                    && frame[14 + 40] == t
            })
            && self.contains.as_ref().map_or(true, |needle| {
                !needle.is_empty() && frame.windows(needle.len()).any(|w| w == needle.as_slice())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{
        ethernet, ipv6, Arp, ArpOp, RouterAdvertisement, Udp4, ALL_NODES, ETHERTYPE_IPV4,
    };
    use std::net::Ipv6Addr;

    #[test]
    fn the_listen_filter_needs_every_condition() {
        let attacker = Mac([2, 0x66, 0x67, 0, 0, 0x30]);
        let proxy = Mac([2, 0x42, 10, 0x66, 0, 2]);
        let arp = Arp {
            op: ArpOp::Request,
            sender_mac: attacker,
            sender_ip: "10.102.0.2".parse().unwrap(),
            target_mac: Mac::ZERO,
            target_ip: "10.102.0.2".parse().unwrap(),
        };
        let frame = ethernet(Mac::BROADCAST, attacker, ETHERTYPE_ARP, &arp.bytes());
        let claims_proxy = Filter {
            arp_sender_ip: Some("10.102.0.2".parse().unwrap()),
            exclude_eth_src: Some(proxy),
            ..Filter::default()
        };
        assert!(claims_proxy.matches(&frame));
        let from_proxy = ethernet(Mac::BROADCAST, proxy, ETHERTYPE_ARP, &arp.bytes());
        assert!(!claims_proxy.matches(&from_proxy));
        let src: Ipv6Addr = "fe80::66:67".parse().unwrap();
        let ra = RouterAdvertisement {
            router_lifetime: 0,
            slla: None,
            prefix: "fd00:bad:1::".parse().unwrap(),
            prefix_len: 64,
            valid_lifetime: 0,
            preferred_lifetime: 0,
        };
        let packet = ipv6(src, ALL_NODES, 255, IPPROTO_ICMPV6, &ra.icmp());
        let ra_frame = ethernet(Mac::BROADCAST, attacker, ETHERTYPE_IPV6, &packet);
        let router_advertisements = Filter {
            icmp6_type: Some(134),
            ..Filter::default()
        };
        assert!(router_advertisements.matches(&ra_frame));
        assert!(!router_advertisements.matches(&frame));
        let neighbour_advertisements = Filter {
            icmp6_type: Some(136),
            ..Filter::default()
        };
        assert!(!neighbour_advertisements.matches(&ra_frame));
        let other_sender = Filter {
            arp_sender_ip: Some("10.102.0.20".parse().unwrap()),
            ..Filter::default()
        };
        assert!(!other_sender.matches(&frame));
        let ipv4_only = Filter {
            ethertype: Some(ETHERTYPE_IPV4),
            ..Filter::default()
        };
        assert!(!ipv4_only.matches(&frame));
        let marked = Filter {
            eth_src: Some(attacker),
            contains: Some(b"forge-c".to_vec()),
            ..Filter::default()
        };
        let udp = Udp4 {
            src: "10.102.0.2".parse().unwrap(),
            dst: "10.102.0.255".parse().unwrap(),
            sport: 1,
            dport: 2,
            ident: 0,
            ttl: 1,
            payload: b"forge-c-1".to_vec(),
        };
        assert!(marked.matches(&ethernet(
            Mac::BROADCAST,
            attacker,
            ETHERTYPE_IPV4,
            &udp.bytes()
        )));
        assert!(!marked.matches(&frame));
        assert!(Filter::default().matches(&frame));
        assert!(!Filter::default().matches(&frame[..13]));
    }
}
