//! `forge`: puts hand-made Ethernet frames on an interface and counts the frames that arrive
//! on one, from inside a network namespace (`nsenter --net=/proc/PID/ns/net forge ...`). It is
//! what a container holding CAP_NET_RAW (Docker's default) can put on its bridge port: the
//! attack side of the anti-spoofing tests (`tests/tests/spoofing/`).
//!
//! ```text
//! forge arp    --iface IF --op request|reply --sender-ip IP [--sender-mac MAC]
//!              [--target-ip IP] [--target-mac MAC] [--eth-src MAC] [--eth-dst MAC]
//! forge udp4   --iface IF --eth-dst MAC --src IP --dst IP --dport PORT [--sport PORT]
//!              [--payload TEXT] [--ttl N] [--eth-src MAC]
//! forge na6    --iface IF --src IP6 [--dst IP6] [--target IP6] [--tlla MAC]
//!              [--override] [--solicited] [--router] [--eth-src MAC] [--eth-dst MAC]
//! forge ra6    --iface IF --src FE80::.. --prefix IP6/LEN [--dst IP6] [--router-lifetime S]
//!              [--valid-lifetime S] [--preferred-lifetime S] [--slla MAC]
//!              [--eth-src MAC] [--eth-dst MAC]
//! forge listen --iface IF --for-ms MS [--eth-src MAC] [--exclude-eth-src MAC]
//!              [--ethertype N] [--arp-sender-ip IP] [--icmp6-type N] [--contains TEXT]
//! ```
//!
//! Every send takes `--count N` (default 1, at most 10,000) and `--interval-ms MS` (default 100)
//! and prints `sent N`. `--eth-src` defaults to the interface's own address, an ARP sender's or
//! a link-layer option's address to `--eth-src`; an ARP frame goes to the broadcast address, an
//! IPv6 one to the multicast address of a multicast destination (`--dst` defaults to ff02::1).
//! A gratuitous ARP is an ARP whose target IP is its sender IP (the default).
//!
//! `listen` counts the frames the interface receives (not those it sends) that pass every
//! filter given, until `--for-ms` has passed or SIGTERM or SIGINT arrives, and prints the count
//! alone on standard output; it says `listening on IF` on standard error once its socket is
//! bound, so that a caller knows when a frame sent from then on is counted.
//!
//! Exit status: 0 done, 1 a socket call failed, 2 the command line is wrong.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// At most this many frames per send command.
const MAX_COUNT: u64 = 10_000;
/// At most this long for `listen` (ten minutes).
const MAX_LISTEN_MS: u64 = 600_000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("forge: {message}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Io(message)) => {
            eprintln!("forge: {message}");
            ExitCode::from(1)
        }
    }
}

const USAGE: &str = "usage: forge arp|udp4|na6|ra6|listen --iface IF [options] (see the source's \
                     header, tests/src/bin/forge.rs)";

/// Why a run failed.
#[derive(Debug)]
enum Failure {
    /// The command line is wrong.
    Usage(String),
    /// A socket call failed.
    Io(String),
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

fn run(args: &[String]) -> Result<(), Failure> {
    let (command, rest) = args.split_first().ok_or_else(|| usage("no subcommand"))?;
    let (values, switches): (&[&str], &[&str]) = match command.as_str() {
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
    };
    let mut known: Vec<&str> = vec!["iface", "eth-src", "eth-dst"];
    if command != "listen" {
        known.extend(["count", "interval-ms"]);
    }
    known.extend_from_slice(values);
    let options = Options::parse(rest, &known, switches)?;
    let iface = options.required("iface")?.to_string();
    if command == "listen" {
        return listen(&iface, &options);
    }
    let socket = PacketSocket::open(&iface, 0).map_err(|e| io_failure("open", &iface, e))?;
    let own = socket
        .mac()
        .map_err(|e| io_failure("read the address of", &iface, e))?;
    let eth_src = options.mac_or("eth-src", own)?;
    let frame = match command.as_str() {
        "arp" => arp_frame(&options, eth_src)?,
        "udp4" => udp4_frame(&options, eth_src)?,
        "na6" => na6_frame(&options, eth_src)?,
        _ => ra6_frame(&options, eth_src)?,
    };
    let count: u64 = options.number_or("count", 1)?;
    if count == 0 || count > MAX_COUNT {
        return Err(usage(format!("--count must be 1 to {MAX_COUNT}")));
    }
    let interval = Duration::from_millis(options.number_or("interval-ms", 100)?);
    for index in 0..count {
        if index > 0 {
            std::thread::sleep(interval);
        }
        socket
            .send(&frame)
            .map_err(|e| io_failure("send a frame on", &iface, e))?;
    }
    println!("sent {count}");
    Ok(())
}

fn io_failure(what: &str, iface: &str, error: std::io::Error) -> Failure {
    Failure::Io(format!(
        "cannot {what} {iface}: {error} (forge needs CAP_NET_RAW and an existing interface in \
         its network namespace)"
    ))
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

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn listen(iface: &str, options: &Options) -> Result<(), Failure> {
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
struct Filter {
    eth_src: Option<Mac>,
    exclude_eth_src: Option<Mac>,
    ethertype: Option<u16>,
    arp_sender_ip: Option<Ipv4Addr>,
    /// ICMPv6 right after the IPv6 header (no extension headers), of this type.
    icmp6_type: Option<u8>,
    contains: Option<Vec<u8>>,
}

impl Filter {
    fn matches(&self, frame: &[u8]) -> bool {
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

/// `--name value` options and `--name` switches of one subcommand.
struct Options {
    values: BTreeMap<String, String>,
    switches: Vec<String>,
}

impl Options {
    fn parse(args: &[String], values: &[&str], switches: &[&str]) -> Result<Options, Failure> {
        let mut options = Options {
            values: BTreeMap::new(),
            switches: Vec::new(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| usage(format!("`{arg}` is not an option")))?;
            if switches.contains(&name) {
                options.switches.push(name.to_string());
            } else if values.contains(&name) {
                let value = args
                    .next()
                    .ok_or_else(|| usage(format!("--{name} needs a value")))?;
                if options.values.insert(name.into(), value.clone()).is_some() {
                    return Err(usage(format!("--{name} given twice")));
                }
            } else {
                return Err(usage(format!("unknown option --{name}")));
            }
        }
        Ok(options)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    fn required(&self, name: &str) -> Result<&str, Failure> {
        self.value(name)
            .ok_or_else(|| usage(format!("--{name} is required")))
    }

    fn parsed<T: std::str::FromStr>(&self, name: &str) -> Result<T, Failure> {
        let text = self.required(name)?;
        text.parse()
            .map_err(|_| usage(format!("--{name}: cannot read `{text}`")))
    }

    fn parsed_or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, Failure> {
        match self.value(name) {
            Some(_) => self.parsed(name),
            None => Ok(default),
        }
    }

    fn number_or<T: TryFrom<u64>>(&self, name: &str, default: T) -> Result<T, Failure> {
        match self.value(name) {
            None => Ok(default),
            Some(text) => parse_number(text)
                .and_then(|n| T::try_from(n).ok())
                .ok_or_else(|| usage(format!("--{name}: `{text}` is not a number in range"))),
        }
    }

    fn optional_mac(&self, name: &str) -> Result<Option<Mac>, Failure> {
        self.value(name)
            .map(|text| Mac::parse(text).ok_or_else(|| usage(format!("--{name}: `{text}`"))))
            .transpose()
    }

    fn mac(&self, name: &str) -> Result<Mac, Failure> {
        self.optional_mac(name)?
            .ok_or_else(|| usage(format!("--{name} is required")))
    }

    fn mac_or(&self, name: &str, default: Mac) -> Result<Mac, Failure> {
        Ok(self.optional_mac(name)?.unwrap_or(default))
    }
}

/// A decimal number, or a hexadecimal one after `0x`.
fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

// --- Frames -------------------------------------------------------------------------------

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mac([u8; 6]);

impl Mac {
    const ZERO: Mac = Mac([0; 6]);
    const BROADCAST: Mac = Mac([0xff; 6]);

    /// `aa:bb:cc:dd:ee:ff`.
    fn parse(text: &str) -> Option<Mac> {
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
    fn ipv6_multicast(group: Ipv6Addr) -> Mac {
        let o = group.octets();
        Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

/// An Ethernet II frame (no padding: the kernel pads short frames).
fn ethernet(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + payload.len());
    frame.extend_from_slice(&dst.0);
    frame.extend_from_slice(&src.0);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The Internet checksum (RFC 1071): the one's complement of the one's complement sum of
/// `data`'s 16-bit words, an odd last byte padded with zero.
fn checksum(data: &[u8]) -> u16 {
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
enum ArpOp {
    Request = 1,
    Reply = 2,
}

/// An ARP message for IPv4 over Ethernet.
struct Arp {
    op: ArpOp,
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
}

impl Arp {
    fn bytes(&self) -> [u8; 28] {
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
struct Udp4 {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    ident: u16,
    ttl: u8,
    payload: Vec<u8>,
}

impl Udp4 {
    fn bytes(&self) -> Vec<u8> {
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
fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, next_header: u8, upper: &[u8]) -> Vec<u8> {
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
struct NeighbourAdvertisement {
    router: bool,
    solicited: bool,
    override_: bool,
    target: Ipv6Addr,
    tlla: Option<Mac>,
}

impl NeighbourAdvertisement {
    /// The ICMPv6 message, checksum zero ([`ipv6`] fills it in).
    fn icmp(&self) -> Vec<u8> {
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
struct RouterAdvertisement {
    router_lifetime: u16,
    slla: Option<Mac>,
    prefix: Ipv6Addr,
    prefix_len: u8,
    valid_lifetime: u32,
    preferred_lifetime: u32,
}

impl RouterAdvertisement {
    /// The ICMPv6 message, checksum zero ([`ipv6`] fills it in).
    fn icmp(&self) -> Vec<u8> {
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

// --- The packet socket --------------------------------------------------------------------

const ETH_P_ALL: u16 = libc::ETH_P_ALL as u16;

/// An AF_PACKET raw socket bound to one interface.
struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
    iface: String,
}

impl PacketSocket {
    /// Opens a socket on `iface` receiving `protocol` (an ethertype, `ETH_P_ALL` for every
    /// frame, 0 for none: a socket that only sends).
    fn open(iface: &str, protocol: u16) -> std::io::Result<PacketSocket> {
        let name = std::ffi::CString::new(iface)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: `name` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Protocol 0 at creation: nothing is received before the bind picks the interface.
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let socket = PacketSocket {
            fd,
            ifindex: ifindex as i32,
            iface: iface.to_string(),
        };
        if protocol != 0 {
            let mut address = socket.address();
            address.sll_protocol = protocol.to_be();
            // SAFETY: `address` is a valid sockaddr_ll of the given length.
            let rc = unsafe {
                libc::bind(
                    socket.fd.as_raw_fd(),
                    (&address as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(socket)
    }

    fn address(&self) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data, valid when zeroed.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_ifindex = self.ifindex;
        address.sll_halen = 6;
        address
    }

    /// The interface's own Ethernet address.
    fn mac(&self) -> std::io::Result<Mac> {
        // SAFETY: ifreq is plain data, valid when zeroed.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request
            .ifr_name
            .iter_mut()
            .zip(self.iface.bytes().take(libc::IFNAMSIZ - 1))
        {
            *slot = byte as libc::c_char;
        }
        // SAFETY: SIOCGIFHWADDR fills the ifreq we pass, which lives through the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut request) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: SIOCGIFHWADDR succeeded, so the union holds the hardware address.
        let data = unsafe { request.ifr_ifru.ifru_hwaddr.sa_data };
        let mut mac = [0u8; 6];
        for (byte, value) in mac.iter_mut().zip(data) {
            *byte = value as u8;
        }
        Ok(Mac(mac))
    }

    /// Sends one whole Ethernet frame.
    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        let mut address = self.address();
        address.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` and `address` are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&address as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        match sent {
            n if n < 0 => Err(std::io::Error::last_os_error()),
            n if n as usize != frame.len() => Err(std::io::Error::other(format!(
                "sent {n} of {} bytes",
                frame.len()
            ))),
            _ => Ok(()),
        }
    }

    fn set_receive_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        let value = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: `value` is a valid timeval of the given length.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&value as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one frame that arrived on the interface (frames it sent are skipped):
    /// `Ok(None)` after the receive timeout or an interrupting signal.
    fn receive(&self, buffer: &mut [u8]) -> std::io::Result<Option<usize>> {
        // SAFETY: sockaddr_ll is plain data, valid when zeroed.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buffer` and `from` are valid for the lengths given.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            return match error.kind() {
                std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::Interrupted => Ok(None),
                _ => Err(error),
            };
        }
        if from.sll_pkttype == libc::PACKET_OUTGOING {
            return Ok(None);
        }
        Ok(Some(n as usize))
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
    fn macs_and_options_parse_strictly() {
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
        let args: Vec<String> = ["--iface", "eth0", "--override", "--count", "0x10"]
            .map(String::from)
            .to_vec();
        let options = Options::parse(&args, &["iface", "count"], &["override"]).unwrap();
        assert!(options.switch("override"));
        assert_eq!(options.number_or::<u64>("count", 1).unwrap(), 16);
        let unknown: Vec<String> = ["--bogus", "1"].map(String::from).to_vec();
        assert!(matches!(
            Options::parse(&unknown, &["iface"], &[]),
            Err(Failure::Usage(_))
        ));
        let twice: Vec<String> = ["--iface", "a", "--iface", "b"].map(String::from).to_vec();
        assert!(Options::parse(&twice, &["iface"], &[]).is_err());
    }

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
