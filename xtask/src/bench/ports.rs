//! The bridge table under load: 64-byte UDP on a managed bridge with 1,000 bound ports, bridged
//! between two containers and routed out from the proxy, against the same host with no table
//! (and, as the floor, with a table of one conntrack rule); and what the agent costs at that
//! size (binding 1,000 ports, then binding one more port).
//!
//! No dockerd: a fake Docker reports the managed network on the bridge and one container per
//! port, with its veth peer's MAC (as `tests/tests/ports.rs` does), and `enforcer run` binds
//! them.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use enforcer_harness::fake_docker::{FakeDocker, Hostile};
use enforcer_harness::{poll_until, Agent, Netns, TempFile};

use super::netlink::{ifindex, Event, Seen, Watch};
use super::throughput::{
    received_packets, send_rounds, CONTROL_TABLE, THROUGHPUT_BATCH, THROUGHPUT_ROUNDS,
    THROUGHPUT_WARMUP,
};
use super::{line, median, percentile};

/// Bound ports on the managed bridge while packets are measured.
const PORTS: usize = 1_000;
/// Containers the fake Docker also reports whose ports are added one by one afterwards, each
/// timed from its attachment to its chain in the kernel.
const LATE: usize = 10;
/// The managed bridge, its network and its gateway.
const BRIDGE: &str = "br-bnports";
const NETWORK_ID: &str = "b0b0000000000000000000000000000000000000000000000000000000000001";
const GATEWAY: &str = "10.99.0.1";
/// The internet namespace's address: the routed path sends to its udp/53.
const INTERNET: &str = "203.0.113.10";
/// MAC addresses of the bridge, the host's uplink and the internet's interface: fixed, so
/// that the next hops can be permanent neighbour entries.
const BRIDGE_MAC: &str = "02:42:0a:63:00:01";
const UPLINK_MAC: &str = "02:00:cb:00:71:01";
const INTERNET_MAC: &str = "02:00:cb:00:71:0a";
/// Runs of the interleaved rounds, at most, until one loses no packets.
const ATTEMPTS: usize = 3;
/// The two paths measured, in the order of [`PortHost::sockets`].
const PATHS: [&str; 2] = [
    "bridged, container to container",
    "routed out from the proxy to udp/53",
];
/// NFPROTO_BRIDGE, the family of the bridge table's chains.
const BRIDGE_FAMILY: u8 = 7;

/// Container `i`'s address: 10.99.0.2 (the proxy, the sender), 10.99.0.3 (the receiver of the
/// bridged path), and on.
fn address(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, (i / 200) as u8, (i % 200 + 2) as u8)
}

/// Container `i`'s MAC, made from its address as Docker 20.10 makes it.
fn mac(i: usize) -> String {
    let [a, b, c, d] = address(i).octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// Container `i`'s port on the bridge.
fn port(i: usize) -> String {
    format!("veth{i:04}")
}

/// A fake Docker reporting the internal network on [`BRIDGE`] (10.99.0.0/16) and containers
/// 0 to `PORTS + LATE`, container 0 the egress proxy.
fn fake_docker() -> FakeDocker {
    let networks = format!(
        r#"[{{"Id":"{NETWORK_ID}","Name":"bnports","Driver":"bridge","Internal":true,"Labels":{{}},"Options":{{"com.docker.network.bridge.name":"{BRIDGE}"}},"IPAM":{{"Config":[{{"Subnet":"10.99.0.0/16","Gateway":"{GATEWAY}"}}]}}}}]"#
    );
    let containers: Vec<String> = (0..PORTS + LATE)
        .map(|i| {
            let labels = if i == 0 {
                r#"{"enforcer.role":"egress-proxy"}"#
            } else {
                "{}"
            };
            format!(
                r#"{{"Id":"{i:064x}","Names":["/c{i}"],"Labels":{labels},"NetworkSettings":{{"Networks":{{"bnports":{{"NetworkID":"{NETWORK_ID}","IPAddress":"{}","GlobalIPv6Address":"","MacAddress":"{}"}}}}}}}}"#,
                address(i),
                mac(i)
            )
        })
        .collect();
    FakeDocker::start(Hostile::Fixed {
        networks,
        containers: format!("[{}]", containers.join(",")),
    })
}

/// One Docker-like host: [`BRIDGE`] with [`PORTS`] ports, the sender (container 0, the proxy)
/// and the receiver (container 1) in namespaces of their own, the other 998 peers in one
/// namespace (up, silent: IPv6 is off there), and an uplink to an internet namespace.
struct PortHost {
    host: Netns,
    sender: Netns,
    receiver: Netns,
    crowd: Netns,
    internet: Netns,
}

impl PortHost {
    fn new(role: &str) -> PortHost {
        let ns = |what: &str| Netns::new(&format!("{role}{what}"));
        let lab = PortHost {
            host: ns("h"),
            sender: ns("s"),
            receiver: ns("r"),
            crowd: ns("c"),
            internet: ns("i"),
        };
        for ns in [&lab.host, &lab.crowd] {
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        }
        lab.host.sysctl("net.ipv4.ip_forward", "1");
        lab.host.ip(&[
            "link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge",
        ]);
        lab.host
            .ip(&["addr", "add", &format!("{GATEWAY}/16"), "dev", BRIDGE]);
        lab.host.ip(&["link", "set", BRIDGE, "up"]);
        lab.container(0, &lab.sender);
        lab.container(1, &lab.receiver);
        lab.crowd_ports(2..PORTS, true);
        lab.uplink();
        lab.no_arp();
        lab
    }

    /// Container `i`'s port, its peer `eth0` in `ns`.
    fn container(&self, i: usize, ns: &Netns) {
        self.host.veth(&port(i), ns, "eth0");
        ns.ip(&["link", "set", "eth0", "address", &mac(i)]);
        ns.ip(&["addr", "add", &format!("{}/16", address(i)), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "via", GATEWAY]);
        self.host
            .ip(&["link", "set", &port(i), "master", BRIDGE, "up"]);
    }

    /// The ports of containers `range`, their peers in the crowd namespace; attached to the
    /// bridge when `attach`. Two `ip -batch` runs: a thousand `ip` processes would take
    /// seconds.
    fn crowd_ports(&self, range: Range<usize>, attach: bool) {
        let (mut host, mut crowd) = (String::new(), String::new());
        for i in range {
            host.push_str(&format!(
                "link add {} type veth peer name p{i:04} address {} netns {}\n",
                port(i),
                mac(i),
                self.crowd.name()
            ));
            if attach {
                host.push_str(&format!("link set {} master {BRIDGE} up\n", port(i)));
            }
            crowd.push_str(&format!("link set p{i:04} up\n"));
        }
        for (ns, script) in [(&self.host, host), (&self.crowd, crowd)] {
            let file = TempFile::new(".ip", &script);
            ns.ip(&["-batch", file.path()]);
        }
    }

    /// The host's uplink (203.0.113.1) to the internet namespace ([`INTERNET`]), which routes
    /// the managed subnet back through the host.
    fn uplink(&self) {
        self.host.veth("up0", &self.internet, "eth0");
        self.host
            .ip(&["addr", "add", "203.0.113.1/24", "dev", "up0"]);
        self.host.ip(&["link", "set", "up0", "up"]);
        let internet = &self.internet;
        internet.ip(&["link", "set", "eth0", "address", INTERNET_MAC]);
        internet.ip(&["addr", "add", &format!("{INTERNET}/24"), "dev", "eth0"]);
        internet.ip(&["link", "set", "eth0", "up"]);
        internet.ip(&["route", "add", "10.99.0.0/16", "via", "203.0.113.1"]);
    }

    /// Permanent neighbour entries for every hop of both paths (and of the replies), and the
    /// receiver's MAC a static entry of the bridge: no ARP exchange happens while packets are
    /// measured. Under load a lost ARP probe made a host discard what it had queued for
    /// resolution (a third of a run, seen in 2 runs of 12).
    fn no_arp(&self) {
        let permanent = |ns: &Netns, address: &str, mac: &str, dev: &str| {
            ns.ip(&[
                "neigh",
                "replace",
                address,
                "lladdr",
                mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        };
        let (sender, receiver) = (address(0).to_string(), address(1).to_string());
        permanent(&self.sender, GATEWAY, BRIDGE_MAC, "eth0");
        permanent(&self.sender, &receiver, &mac(1), "eth0");
        permanent(&self.receiver, &sender, &mac(0), "eth0");
        permanent(&self.host, &sender, &mac(0), BRIDGE);
        permanent(&self.host, INTERNET, INTERNET_MAC, "up0");
        permanent(&self.internet, "203.0.113.1", UPLINK_MAC, "eth0");
        for (i, port) in [(0, port(0)), (1, port(1))] {
            self.host.exec_ok(
                "bridge",
                &["fdb", "replace", &mac(i), "dev", &port, "master", "static"],
            );
        }
    }

    /// The host's rules whose counters are not zero (to say where packets went).
    fn counted(&self) -> String {
        let listing = self.host.exec("nft", &["list", "ruleset"]);
        String::from_utf8_lossy(&listing.stdout)
            .lines()
            .filter(|l| l.contains("counter packets") && !l.contains("counter packets 0 "))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The sender's socket to the receiver (bridged) and to the internet's udp/53 (routed).
    fn sockets(&self) -> Result<[(UdpSocket, SocketAddr); 2]> {
        let from = address(0);
        let socket =
            || -> Result<UdpSocket> { Ok(self.sender.enter(move || UdpSocket::bind((from, 0)))?) };
        Ok([
            (socket()?, SocketAddr::from((address(1), 53))),
            (socket()?, format!("{INTERNET}:53").parse()?),
        ])
    }

    /// Packets the receiver and the internet have received so far.
    fn delivered(&self) -> Result<[u64; 2]> {
        Ok([
            received_packets(&self.receiver, "eth0")?,
            received_packets(&self.internet, "eth0")?,
        ])
    }

    /// Bound ports in the kernel's `ports` map.
    fn bound_in_kernel(&self) -> usize {
        let listing = self
            .host
            .exec("nft", &["list", "map", "bridge", "enforcer", "ports"]);
        String::from_utf8_lossy(&listing.stdout)
            .matches("goto port_")
            .count()
    }
}

/// Runs the ports benchmarks with the `enforcer` binary.
pub(super) fn ports(enforcer: &Path) -> Result<()> {
    let docker = fake_docker();
    let started = Instant::now();
    let bare = PortHost::new("bnb");
    let control = PortHost::new("bnc");
    let enforced = PortHost::new("bne");
    let built = started.elapsed();
    let table = TempFile::new(".nft", CONTROL_TABLE);
    control.host.exec_ok("nft", &["-f", table.path()]);
    let agent = Agent::start(
        &enforced.host,
        docker.dir(),
        enforcer,
        &["--log-format", "json"],
        &[("DOCKER_HOST", docker.docker_host().as_str())],
    );
    binding(&agent, &enforced, built)?;
    let before = applied(&agent.log()).len();
    throughput([&bare, &control, &enforced]).with_context(|| {
        let applies = applied(&agent.log()).split_off(before);
        let reasons: Vec<String> = applies.into_iter().map(|a| a.reason).collect();
        format!("the agent applied meanwhile: {reasons:?}")
    })?;
    late_ports(&agent, &enforced)
}

/// Waits until the agent has bound every port, and prints what that took.
fn binding(agent: &Agent, host: &PortHost, built: Duration) -> Result<()> {
    let started = Instant::now();
    let bound = poll_until(Duration::from_secs(120), Duration::from_millis(20), || {
        host.bound_in_kernel() >= PORTS
    });
    let elapsed = started.elapsed();
    ensure!(
        bound,
        "the agent bound {} of {PORTS} ports within 120 s: {}",
        host.bound_in_kernel(),
        agent.log()
    );
    let applies = applied(&agent.log());
    let summary: Vec<String> = applies
        .iter()
        .map(|a| format!("{} {:.1} ms", a.reason, a.micros as f64 / 1e3))
        .collect();
    line(
        &format!("enforcer run binds {PORTS} ports (fake Docker): all in the kernel"),
        format!(
            "{:.0} ms after start; applies: {}",
            elapsed.as_secs_f64() * 1e3,
            summary.join(", ")
        ),
        None,
    );
    line(
        &format!("    (three hosts of {PORTS} ports built in)"),
        format!("{:.1} s", built.as_secs_f64()),
        None,
    );
    Ok(())
}

/// One `applied:` line of the agent's JSON log.
pub(super) struct Applied {
    /// Why it applied.
    pub reason: String,
    /// How long the apply took (read back, diff, commit), in microseconds.
    pub micros: u64,
    /// What it changed.
    pub message: String,
}

/// Each `applied:` line of the agent's JSON log.
pub(super) fn applied(log: &str) -> Vec<Applied> {
    log.lines()
        .filter(|l| l.contains("\"message\":\"applied:"))
        .map(|l| Applied {
            reason: json_text(l, "reason").unwrap_or_default(),
            micros: json_text(l, "micros")
                .and_then(|m| m.parse().ok())
                .unwrap_or(0),
            message: json_text(l, "message").unwrap_or_default(),
        })
        .collect()
}

/// The value of field `name` in one JSON log line: a string's content (escapes dropped, the
/// escaped character kept), or a number.
fn json_text(line: &str, name: &str) -> Option<String> {
    let rest = &line[line.find(&format!("\"{name}\":"))? + name.len() + 3..];
    let Some(text) = rest.strip_prefix('"') else {
        return Some(rest.chars().take_while(|c| c.is_ascii_digit()).collect());
    };
    let (mut out, mut chars) = (String::new(), text.chars());
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.extend(chars.next()),
            _ => out.push(c),
        }
    }
    None
}

/// Both paths through the three hosts, in interleaved rounds, with the ratios printed. A run
/// in which packets were lost is void, and run again (at most [`ATTEMPTS`] in all).
fn throughput(hosts: [&PortHost; 3]) -> Result<()> {
    let mut attempt = 1;
    let times = loop {
        match interleaved_rounds(hosts) {
            Ok(times) => break times,
            Err(void) if attempt < ATTEMPTS => {
                eprintln!("    (void run {attempt}, measuring again: {void:#})");
                attempt += 1;
            }
            Err(void) => return Err(void),
        }
    };
    if attempt > 1 {
        line(
            "    runs void before this one (packets lost)",
            format!("{}", attempt - 1),
            None,
        );
    }
    // Sockets, and so their times, are ordered host by host (bare, control, enforced), then
    // path by path (bridged, routed).
    let rate =
        |host: usize, path: usize| THROUGHPUT_BATCH as f64 / median(times[host * 2 + path].clone());
    for (path, what) in PATHS.into_iter().enumerate() {
        let (table, none) = (rate(2, path), rate(0, path));
        line(
            &format!("64-byte UDP, {PORTS} bound ports, {what}: tables / none"),
            format!(
                "{table:.0} / {none:.0} pkt/s, ratio {:.2} ({THROUGHPUT_ROUNDS} interleaved rounds)",
                table / none
            ),
            Some(table / none >= 0.8),
        );
        line(
            "    control: one ct rule, no bridge table / none",
            format!("ratio {:.2} (conntrack's own cost)", rate(1, path) / none),
            None,
        );
    }
    Ok(())
}

/// One run of [`send_rounds`] through both paths of the three hosts; each socket's batch
/// times. Void (an error) when a path delivered less than 99% of what was sent: the batches
/// then did not time the whole path.
fn interleaved_rounds(hosts: [&PortHost; 3]) -> Result<Vec<Vec<f64>>> {
    let mut sockets = Vec::new();
    for host in hosts {
        sockets.extend(host.sockets()?);
    }
    let before: Vec<[u64; 2]> = hosts.iter().map(|h| h.delivered()).collect::<Result<_>>()?;
    let backlog_before = backlog_drops()?;
    let times = std::thread::spawn(move || send_rounds(&sockets))
        .join()
        .expect("sender thread")?;
    std::thread::sleep(Duration::from_millis(100));
    let sent = ((THROUGHPUT_WARMUP + THROUGHPUT_ROUNDS) * THROUGHPUT_BATCH) as u64;
    for (host, before) in hosts.iter().zip(before) {
        for ((after, before), path) in host.delivered()?.into_iter().zip(before).zip(PATHS) {
            ensure!(
                after - before >= sent * 99 / 100,
                "only {} of {sent} packets {path} arrived in {} ({} dropped by full CPU \
                 backlogs meanwhile); its rules that counted packets: [{}]",
                after - before,
                host.host.name(),
                backlog_drops()? - backlog_before,
                host.counted()
            );
        }
    }
    Ok(times)
}

/// Packets dropped so far because a CPU's backlog was full (`/proc/net/softnet_stat`, all
/// CPUs; the same in every namespace).
fn backlog_drops() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/net/softnet_stat")?;
    let mut dropped = 0;
    for cpu in stat.lines() {
        let field = cpu
            .split_whitespace()
            .nth(1)
            .context("short softnet_stat line")?;
        dropped += u64::from_str_radix(field, 16)?;
    }
    Ok(dropped)
}

/// Ports of [`LATE`] more containers, attached one at a time while the agent runs with
/// [`PORTS`] bound: from the RTM_NEWLINK that attaches each to the commit that adds its chain.
fn late_ports(agent: &Agent, host: &PortHost) -> Result<()> {
    let watch = Watch::start(&host.host)?;
    let bridge = ifindex(&host.host, BRIDGE)?;
    let applied_before = applied(&agent.log()).len();
    let mut latencies = Vec::new();
    for i in PORTS..PORTS + LATE {
        host.crowd_ports(i..i + 1, false);
        let mark = watch.len();
        host.host
            .ip(&["link", "set", &port(i), "master", BRIDGE, "up"]);
        let name = port(i);
        let found = watch.wait_for(mark, Duration::from_secs(10), |seen| {
            attach_to_chain(seen, &name, bridge)
        })?;
        let latency = found
            .with_context(|| format!("port {name} was not bound within 10 s: {}", agent.log()))?;
        latencies.push(latency.as_secs_f64() * 1e3);
    }
    // The agent logs an apply after its commit: give the last line a moment.
    poll_until(Duration::from_secs(2), Duration::from_millis(10), || {
        applied(&agent.log()).len() >= applied_before + LATE
    });
    let applies = applied(&agent.log()).split_off(applied_before);
    ensure!(
        !applies.is_empty(),
        "{LATE} ports bound without an applied line"
    );
    let micros: Vec<f64> = applies.iter().map(|a| a.micros as f64 / 1e3).collect();
    line(
        &format!("one more port bound at {PORTS} ports ({LATE} in turn): attach to chain"),
        format!(
            "p50 {:.1} ms, max {:.1} ms; {} applies of median {:.1} ms",
            percentile(&latencies, 50),
            percentile(&latencies, 100),
            applies.len(),
            median(micros)
        ),
        None,
    );
    Ok(())
}

/// From the attachment of `port` to `bridge` to the chain `port_<port>` in the bridge table,
/// once both are in `seen`.
pub(super) fn attach_to_chain(seen: &[Seen], port: &str, bridge: u32) -> Option<Duration> {
    let (attached, bound) = attach_and_chain(seen, port, bridge)?;
    Some(
        seen[bound]
            .at
            .duration_since(seen[attached].at)
            .unwrap_or_default(),
    )
}

/// Where in `seen` `port` was first attached to `bridge`, and where the chain `port_<port>`
/// was first added to the bridge table after that.
pub(super) fn attach_and_chain(seen: &[Seen], port: &str, bridge: u32) -> Option<(usize, usize)> {
    let attached = seen.iter().position(|s| {
        matches!(&s.event, Event::Attached { port: p, master } if p == port && *master == bridge)
    })?;
    let chain = format!("port_{port}");
    let bound = seen[attached..].iter().position(|s| {
        matches!(&s.event, Event::Chain { family, table, chain: c }
            if *family == BRIDGE_FAMILY && table == "enforcer" && *c == chain)
    })?;
    Some((attached, attached + bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_applied_line_gives_its_reason_duration_and_changes_with_quotes_unescaped() {
        let log = concat!(
            r#"{"timestamp":"2026-12-02T03:37:21.157837Z","level":"INFO","message":"applied: + element \"veth8f\" : goto port_veth8f in set ports; + chain port_veth8f (13 rules)","reason":"network connect bnbind","messages":18,"micros":9896,"target":"enforcer::run"}"#,
            "\n",
            r#"{"timestamp":"2026-12-02T03:37:21.2Z","level":"INFO","message":"Docker connected"}"#,
        );
        let applies = applied(log);
        assert_eq!(applies.len(), 1);
        assert_eq!(applies[0].reason, "network connect bnbind");
        assert_eq!(applies[0].micros, 9896);
        assert!(applies[0]
            .message
            .ends_with("goto port_veth8f in set ports; + chain port_veth8f (13 rules)"));
    }
}
