//! Packets through a router namespace: no table, a one-rule conntrack table, and the
//! enforcer's table for N = 10,000, measured in interleaved rounds.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use enforcer_harness::{Netns, TempFile};

use super::{line, median, timed_in, LARGE};

/// Packets per timed batch in the throughput benchmark.
pub(super) const THROUGHPUT_BATCH: usize = 32;
/// Rounds of batches through every path, after the warm-up rounds.
pub(super) const THROUGHPUT_ROUNDS: usize = 4_000;
/// Rounds sent first and not timed.
pub(super) const THROUGHPUT_WARMUP: usize = 100;
/// The longest a run of rounds may take (it takes a few seconds on an idle machine).
const SEND_LIMIT: Duration = Duration::from_secs(300);

/// The control: a table with one conntrack rule, the least a table using `ct state` costs.
pub(super) const CONTROL_TABLE: &str = "table inet enforcer {\n chain forward {\n  type filter hook forward priority -10; policy accept;\n  ct state established,related accept\n }\n}\n";

/// One sender → router → receiver chain of namespaces for the throughput benchmark.
pub(super) struct RouterPath {
    sender: Netns,
    pub(super) router: Netns,
    receiver: Netns,
}

/// One network between sender and router: the router's address, the sender's (both with
/// their prefix length) and the prefix the receiver routes back through the router.
pub(super) type Inside = (&'static str, &'static str, &'static str);

impl RouterPath {
    /// The router forwards 10.100.0.0/24 (the proxy's network) and 172.30.0.0/24 (unmanaged)
    /// to 203.0.113.0/24. Nothing listens on 203.0.113.10:53: the receiver drops each datagram
    /// after its UDP lookup, and its "port unreachable" replies are rate-limited to about one
    /// a second.
    fn new(role: &str) -> RouterPath {
        let inside = [
            ("10.100.0.1/24", "10.100.0.2/24", "10.100.0.0/24"),
            ("172.30.0.1/24", "172.30.0.2/24", "172.30.0.0/24"),
        ];
        RouterPath::with(role, &inside)
    }

    /// The router (`in0`, `out0`) forwards each of `inside` to 203.0.113.0/24; the sender's
    /// default route is the first one's router address.
    pub(super) fn with(role: &str, inside: &[Inside]) -> RouterPath {
        let sender = Netns::new(&format!("{role}s"));
        let router = Netns::new(&format!("{role}r"));
        let receiver = Netns::new(&format!("{role}v"));
        router.sysctl("net.ipv4.ip_forward", "1");
        router.veth("in0", &sender, "eth0");
        router.veth("out0", &receiver, "eth0");
        for (router_address, sender_address, _) in inside {
            router.ip(&["addr", "add", router_address, "dev", "in0"]);
            sender.ip(&["addr", "add", sender_address, "dev", "eth0"]);
        }
        router.ip(&["addr", "add", "203.0.113.1/24", "dev", "out0"]);
        router.ip(&["link", "set", "in0", "up"]);
        router.ip(&["link", "set", "out0", "up"]);
        sender.ip(&["link", "set", "eth0", "up"]);
        let gateway = inside[0].0.split_once('/').map_or(inside[0].0, |(a, _)| a);
        sender.ip(&["route", "add", "default", "via", gateway]);
        receiver.ip(&["addr", "add", "203.0.113.10/24", "dev", "eth0"]);
        receiver.ip(&["link", "set", "eth0", "up"]);
        for (_, _, prefix) in inside {
            receiver.ip(&["route", "add", prefix, "via", "203.0.113.1"]);
        }
        RouterPath {
            sender,
            router,
            receiver,
        }
    }

    /// A UDP socket in the sender's namespace, bound to `source`.
    pub(super) fn socket(&self, source: &'static str) -> Result<UdpSocket> {
        Ok(self.sender.enter(move || UdpSocket::bind((source, 0)))?)
    }

    /// Packets that reached the receiver's interface so far.
    pub(super) fn delivered(&self) -> Result<u64> {
        received_packets(&self.receiver, "eth0")
    }
}

/// 64-byte frames (22-byte UDP payload) to 203.0.113.10:53 through three router namespaces
/// side by side: one with no table, one with a table holding a single conntrack rule (the
/// floor of any table using `ct state`), and one with the enforcer's table for N = 10,000.
/// Sources: the proxy (10.100.0.2, udp/53 allowed: the longest accepted path through the
/// table) and an unmanaged address (172.30.0.2: let through untouched).
///
/// The machine is shared, and its speed drifts by a factor of two within seconds, so paths
/// are not measured one window after another. One thread pinned to CPU 0 sends small batches
/// through every path in turn, round after round, and times each batch: veth forwards in the
/// sender's softirq, so a batch's time is the whole path's cost (send, route, table, deliver).
/// A path's throughput is batch size over its median batch time; ratios divide throughputs
/// measured in the same rounds.
pub(super) fn throughput(enforcer: &Path, policy: &TempFile) -> Result<()> {
    let bare_path = RouterPath::new("tb");
    let control_path = RouterPath::new("tc");
    let enforced_path = RouterPath::new("te");
    let control_table = TempFile::new(".nft", CONTROL_TABLE);
    control_path
        .router
        .exec_ok("nft", &["-f", control_table.path()]);
    timed_in(
        &enforced_path.router,
        enforcer,
        &["apply", "--config", policy.path()],
        None,
    )?;
    let paths = [&bare_path, &control_path, &enforced_path];
    let sources = ["10.100.0.2", "172.30.0.2"];
    let target: SocketAddr = "203.0.113.10:53".parse()?;
    let mut sockets = Vec::new();
    for path in paths {
        for source in sources {
            sockets.push((path.socket(source)?, target));
        }
    }
    let delivered_before: Vec<u64> = paths.iter().map(|p| p.delivered()).collect::<Result<_>>()?;
    let times = std::thread::spawn(move || send_rounds(&sockets))
        .join()
        .expect("sender thread")?;
    std::thread::sleep(Duration::from_millis(100));
    let sent = ((THROUGHPUT_WARMUP + THROUGHPUT_ROUNDS) * THROUGHPUT_BATCH * sources.len()) as u64;
    for (path, before) in paths.iter().zip(delivered_before) {
        let delivered = path.delivered()? - before;
        ensure!(
            delivered >= sent * 99 / 100,
            "only {delivered} of {sent} packets crossed a router: the measurement is void"
        );
    }
    // Sockets, and so their times, are ordered path by path, then source by source.
    let rate = |path: usize, source: usize| {
        THROUGHPUT_BATCH as f64 / median(times[path * sources.len() + source].clone())
    };
    let (bare, control, enforced, proxy, unmanaged) = (0, 1, 2, 0, 1);
    line(
        "64-byte UDP, control: one ct rule / none",
        format!(
            "ratio {:.2} (conntrack's own cost, the floor)",
            rate(control, unmanaged) / rate(bare, unmanaged)
        ),
        None,
    );
    for (source, what) in [
        (proxy, "from the proxy (longest accepted path)"),
        (unmanaged, "from an unmanaged network"),
    ] {
        let (table, none) = (rate(enforced, source), rate(bare, source));
        let ratio = table / none;
        line(
            &format!("64-byte UDP, N = {LARGE}, {what}: table / none"),
            format!(
                "{table:.0} / {none:.0} pkt/s, ratio {ratio:.2} ({THROUGHPUT_ROUNDS} interleaved rounds)"
            ),
            Some(ratio >= 0.8),
        );
    }
    Ok(())
}

/// Sends every round's batches through every socket in turn, each to its own target, from a
/// thread pinned to CPU 0; returns each socket's batch times in seconds (warm-up rounds left
/// out). Gives up after [`SEND_LIMIT`].
pub(super) fn send_rounds(sockets: &[(UdpSocket, SocketAddr)]) -> Result<Vec<Vec<f64>>> {
    pin_to_cpu(0);
    let payload = [0u8; 22];
    let mut times = vec![Vec::with_capacity(THROUGHPUT_ROUNDS); sockets.len()];
    let started = Instant::now();
    for round in 0..THROUGHPUT_WARMUP + THROUGHPUT_ROUNDS {
        ensure!(
            started.elapsed() < SEND_LIMIT,
            "sending {THROUGHPUT_ROUNDS} rounds took longer than {SEND_LIMIT:?}: the machine is \
             too busy to measure"
        );
        // Rotate the order, so no path always follows the same one.
        for k in 0..sockets.len() {
            let i = (round + k) % sockets.len();
            let (socket, target) = &sockets[i];
            let start = Instant::now();
            for _ in 0..THROUGHPUT_BATCH {
                socket.send_to(&payload, target)?;
            }
            if round >= THROUGHPUT_WARMUP {
                times[i].push(start.elapsed().as_secs_f64());
            }
        }
    }
    Ok(times)
}

/// Packets that interface `dev` of `ns` has received so far (`/proc/net/dev`).
pub(super) fn received_packets(ns: &Netns, dev: &'static str) -> Result<u64> {
    let table = ns.enter(|| std::fs::read_to_string("/proc/thread-self/net/dev"))?;
    let line = table
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{dev}:")))
        .with_context(|| format!("no {dev} in {}'s /proc/net/dev", ns.name()))?;
    let packets = line
        .split_once(':')
        .and_then(|(_, counters)| counters.split_whitespace().nth(1))
        .with_context(|| format!("short {dev} line in {}'s /proc/net/dev", ns.name()))?;
    Ok(packets.parse()?)
}

/// Pins the calling thread to one CPU, so that runs compare like with like.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity act on it and on
    // the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
