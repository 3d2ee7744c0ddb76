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
//! Every send takes `--count N` (default 1, at most 10,000), `--interval-ms MS` (default 100)
//! and `--vlan VID` (an 802.1Q tag after the source MAC, priority 0; VID 0 is a priority tag,
//! which a Linux receiver delivers as untagged), and prints `sent N`. `--eth-src` defaults to
//! the interface's own address, an ARP sender's or a link-layer option's address to
//! `--eth-src`; an ARP frame goes to the broadcast address, an IPv6 one to the multicast address
//! of a multicast destination (`--dst` defaults to ff02::1).
//! A gratuitous ARP is an ARP whose target IP is its sender IP (the default).
//!
//! `listen` counts the frames the interface receives (not those it sends) that pass every
//! filter given, until `--for-ms` has passed or SIGTERM or SIGINT arrives, and prints the count
//! alone on standard output; it says `listening on IF` on standard error once its socket is
//! bound, so that a caller knows when a frame sent from then on is counted. The filters see a
//! tagged frame without its tag: the receiving kernel moves the tag into metadata before a
//! packet socket gets the frame.
//!
//! Exit status: 0 done, 1 a socket call failed, 2 the command line is wrong.

mod args;
mod commands;
mod frames;
mod listen;
mod socket;

use std::process::ExitCode;
use std::time::Duration;

use args::Options;
use socket::PacketSocket;

/// At most this many frames per send command.
const MAX_COUNT: u64 = 10_000;

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
                     header, tests/src/bin/forge/main.rs)";

/// Why a run failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command line is wrong.
    Usage(String),
    /// A socket call failed.
    Io(String),
}

/// A wrong command line, and why.
pub(crate) fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

/// A failed socket call: what, on which interface, and what forge needs.
pub(crate) fn io_failure(what: &str, iface: &str, error: std::io::Error) -> Failure {
    Failure::Io(format!(
        "cannot {what} {iface}: {error} (forge needs CAP_NET_RAW and an existing interface in \
         its network namespace)"
    ))
}

fn run(args: &[String]) -> Result<(), Failure> {
    let (command, rest) = args.split_first().ok_or_else(|| usage("no subcommand"))?;
    let (values, switches) = commands::options_of(command)?;
    let mut known: Vec<&str> = vec!["iface", "eth-src", "eth-dst"];
    if command != "listen" {
        known.extend(["count", "interval-ms", "vlan"]);
    }
    known.extend_from_slice(values);
    let options = Options::parse(rest, &known, switches)?;
    let iface = options.required("iface")?;
    if command == "listen" {
        return listen::listen(iface, &options);
    }
    send(command, iface, &options)
}

/// Sends the frame `command` describes `--count` times, `--interval-ms` apart.
fn send(command: &str, iface: &str, options: &Options) -> Result<(), Failure> {
    let socket = PacketSocket::open(iface, 0).map_err(|e| io_failure("open", iface, e))?;
    let own = socket
        .mac()
        .map_err(|e| io_failure("read the address of", iface, e))?;
    let frame = commands::frame(command, options, options.mac_or("eth-src", own)?)?;
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
            .map_err(|e| io_failure("send a frame on", iface, e))?;
    }
    println!("sent {count}");
    Ok(())
}
