//! Benchmarks. Every figure is measured in this run; ratios compare two things measured side by
//! side, so a noisy shared machine moves both.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use enforcer_harness::{cargo_build, require_root, Netns, TempFile};

const REPEATS: usize = 5;
const NO_OP_REPEATS: usize = 200;
/// Packets per timed batch in the throughput benchmark.
const THROUGHPUT_BATCH: usize = 32;
/// Rounds of batches through every path, after the warm-up rounds.
const THROUGHPUT_ROUNDS: usize = 4_000;
const THROUGHPUT_WARMUP: usize = 100;

/// A policy with `subnets` managed subnets: networks with one IPv4 /24 and one IPv6 /64 each,
/// the first network holding a proxy (10.100.0.2) allowed udp/53. Docker is not read: these
/// benchmarks measure the static path against `nft -f`.
pub fn policy_text(subnets: usize) -> String {
    let networks = subnets.div_ceil(2);
    let mut text =
        String::from("[docker]\nenabled = false\n[proxy]\nallow = [\"tcp/443\", \"udp/53\"]\n");
    for i in 0..networks {
        let (a, b) = (i / 250, i % 250);
        text.push_str(&format!(
            "[[networks]]\nname = \"n{i}\"\nsubnets = [\"10.{}.{b}.0/24\", \"fd00:{i:x}::/64\"]\n",
            100 + a
        ));
    }
    text.push_str("[[proxies]]\nname = \"proxy\"\naddresses = [\"10.100.0.2\"]\n");
    text
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// What one child process cost.
struct Cost {
    wall: Duration,
    user: Duration,
    system: Duration,
    /// Peak resident memory, KiB.
    peak_kib: u64,
}

/// Runs a program inside `ns` (forked from a thread that entered it) and measures it.
fn timed_in(ns: &Netns, program: &Path, args: &[&str], stdin: Option<&Path>) -> Result<Cost> {
    let program = program.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.map(Path::to_path_buf);
    ns.enter(move || -> Result<Cost> {
        let mut command = Command::new(&program);
        command
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(path) = &stdin {
            command.stdin(std::fs::File::open(path)?);
        }
        let start = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        let pid = child.id() as libc::pid_t;
        let mut status = 0;
        // SAFETY: rusage is plain data, for which all-zero bytes are a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 reaps our own child and writes only into the two locals it is given.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        let elapsed = start.elapsed();
        ensure!(rc == pid, "wait4 failed");
        ensure!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{} {:?} failed",
            program.display(),
            args
        );
        let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        Ok(Cost {
            wall: elapsed,
            user: time(usage.ru_utime),
            system: time(usage.ru_stime),
            peak_kib: usage.ru_maxrss as u64,
        })
    })
}

/// The release enforcer binary, built now.
pub fn release_enforcer() -> PathBuf {
    cargo_build(true, &["--package", "enforcer", "--bin", "enforcer"]).join("enforcer")
}

/// The release agent-timing example (`crates/nft/examples`), built now.
fn release_agent_timing() -> PathBuf {
    cargo_build(
        true,
        &["--package", "enforcer-nft", "--example", "agent_timing"],
    )
    .join("examples")
    .join("agent_timing")
}

/// Runs the agent-timing example inside `ns`; returns its durations in milliseconds.
fn agent_timing(
    ns: &Netns,
    timing: &Path,
    mode: &str,
    policy: &str,
    repeats: usize,
) -> Result<Vec<f64>> {
    let output = ns.exec(
        timing.to_str().expect("utf-8 path"),
        &[mode, policy, &repeats.to_string()],
    );
    ensure!(
        output.status.success(),
        "agent_timing {mode}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect())
}

/// Prints one result line: the figure, its target and whether it met it.
fn line(name: &str, figure: String, met: Option<bool>) {
    let mark = match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "",
    };
    println!("{name:<58} {figure:<44} {mark}");
}

/// Runs the benchmarks whose names contain `filter` (all when empty): `apply`, `memory`,
/// `noop`, `throughput`.
pub fn run(filter: &str) -> Result<()> {
    require_root();
    let (enforcer, timing) = (release_enforcer(), release_agent_timing());
    let nft = PathBuf::from("/usr/sbin/nft");
    let wanted = |name: &str| filter.is_empty() || name.contains(filter);
    println!("enforcer benchmarks (median of {REPEATS} runs unless said; each run in fresh namespaces)\n");

    for subnets in [10usize, 1_000, 10_000] {
        let policy = TempFile::new(".toml", &policy_text(subnets));
        if wanted("apply") || (subnets == 10_000 && wanted("memory")) {
            full_apply(&enforcer, &timing, &nft, &policy, subnets)?;
        }
        if subnets == 10_000 && wanted("noop") {
            no_op(&enforcer, &timing, &policy)?;
        }
        if subnets == 10_000 && wanted("throughput") {
            throughput(&enforcer, &policy)?;
        }
    }
    if wanted("docker") {
        docker(&enforcer)?;
    }
    Ok(())
}

fn full_apply(
    enforcer: &Path,
    timing: &Path,
    nft: &Path,
    policy: &TempFile,
    subnets: usize,
) -> Result<()> {
    let script_ns = Netns::new("script");
    let output = script_ns.exec(
        enforcer.to_str().unwrap(),
        &["apply", "--dry-run", "--config", policy.path()],
    );
    let script = TempFile::new(".nft", &String::from_utf8(output.stdout)?);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..REPEATS {
        let ns = Netns::new("apply");
        ours.push(timed_in(
            &ns,
            enforcer,
            &["apply", "--config", policy.path()],
            None,
        )?);
        let ns = Netns::new("nftf");
        theirs.push(timed_in(
            &ns,
            nft,
            &["-f", "-"],
            Some(Path::new(script.path())),
        )?);
    }
    let summary = |costs: &[Cost]| {
        let ms = |f: fn(&Cost) -> Duration| {
            median(costs.iter().map(|c| f(c).as_secs_f64() * 1e3).collect())
        };
        (ms(|c| c.wall), ms(|c| c.user), ms(|c| c.system))
    };
    let (ours_wall, ours_user, ours_sys) = summary(&ours);
    let (theirs_wall, theirs_user, theirs_sys) = summary(&theirs);
    let ratio = ours_wall / theirs_wall;
    line(
        &format!("full apply, N = {subnets} subnets: enforcer CLI / nft -f"),
        format!("{ours_wall:.1} ms / {theirs_wall:.1} ms = {ratio:.2}"),
        (subnets == 10_000).then_some(ratio <= 0.5),
    );
    line(
        "    user + system CPU: enforcer | nft -f",
        format!("{ours_user:.0} + {ours_sys:.0} ms | {theirs_user:.0} + {theirs_sys:.0} ms"),
        None,
    );
    // The agent's path: the topology is already in memory (from Docker, or the policy parsed
    // at start), so an apply is plan, encode, read back, commit.
    let ns = Netns::new("agent");
    let agent = agent_timing(&ns, timing, "apply", policy.path(), REPEATS)?;
    let agent = median(agent);
    line(
        &format!("    agent's apply (topology in memory) / nft -f, N = {subnets}"),
        format!(
            "{agent:.1} ms / {theirs_wall:.1} ms = {:.2}",
            agent / theirs_wall
        ),
        (subnets == 10_000).then_some(agent / theirs_wall <= 0.5),
    );
    if subnets == 10_000 {
        let peak = ours.iter().map(|c| c.peak_kib).max().unwrap_or(0);
        line(
            "peak memory of enforcer apply, N = 10000",
            format!("{:.1} MiB (max of {REPEATS} runs)", peak as f64 / 1024.0),
            Some(peak <= 30 * 1024),
        );
    }
    Ok(())
}

fn no_op(enforcer: &Path, timing: &Path, policy: &TempFile) -> Result<()> {
    let ns = Netns::new("noop");
    timed_in(&ns, enforcer, &["apply", "--config", policy.path()], None)?;
    let mut cold = Vec::new();
    for _ in 0..REPEATS {
        cold.push(
            timed_in(&ns, enforcer, &["apply", "--config", policy.path()], None)?
                .wall
                .as_secs_f64(),
        );
    }
    let warm: Vec<f64> = agent_timing(&ns, timing, "noop", policy.path(), NO_OP_REPEATS)?
        .into_iter()
        .map(|ms| ms / 1e3)
        .collect();
    let warm_median = median(warm.clone());
    let mut sorted = warm;
    sorted.sort_by(f64::total_cmp);
    let p99 = sorted[sorted.len() * 99 / 100];
    line(
        "no-op apply, N = 10000 (agent: verified table, no commit since)",
        format!(
            "{:.3} ms median, {:.3} ms p99 of {NO_OP_REPEATS}",
            warm_median * 1e3,
            p99 * 1e3
        ),
        Some(warm_median <= 0.005),
    );
    line(
        "no-op apply, N = 10000 (CLI: parse, plan, full read-back)",
        format!("{:.1} ms", median(cold) * 1e3),
        None,
    );
    Ok(())
}

/// One sender → router → receiver chain of namespaces for the throughput benchmark.
struct RouterPath {
    sender: Netns,
    router: Netns,
    receiver: Netns,
}

impl RouterPath {
    /// The router forwards 10.100.0.0/24 (the proxy's network) and 172.30.0.0/24 (unmanaged)
    /// to 203.0.113.0/24. Nothing listens on 203.0.113.10:53: the receiver drops each datagram
    /// after its UDP lookup, and its "port unreachable" replies are rate-limited to about one
    /// a second.
    fn new(role: &str) -> RouterPath {
        let sender = Netns::new(&format!("{role}s"));
        let router = Netns::new(&format!("{role}r"));
        let receiver = Netns::new(&format!("{role}v"));
        router.sysctl("net.ipv4.ip_forward", "1");
        router.veth("in0", &sender, "eth0");
        router.veth("out0", &receiver, "eth0");
        router.ip(&["addr", "add", "10.100.0.1/24", "dev", "in0"]);
        router.ip(&["addr", "add", "172.30.0.1/24", "dev", "in0"]);
        router.ip(&["addr", "add", "203.0.113.1/24", "dev", "out0"]);
        router.ip(&["link", "set", "in0", "up"]);
        router.ip(&["link", "set", "out0", "up"]);
        sender.ip(&["addr", "add", "10.100.0.2/24", "dev", "eth0"]);
        sender.ip(&["addr", "add", "172.30.0.2/24", "dev", "eth0"]);
        sender.ip(&["link", "set", "eth0", "up"]);
        sender.ip(&["route", "add", "default", "via", "10.100.0.1"]);
        receiver.ip(&["addr", "add", "203.0.113.10/24", "dev", "eth0"]);
        receiver.ip(&["link", "set", "eth0", "up"]);
        receiver.ip(&["route", "add", "10.100.0.0/24", "via", "203.0.113.1"]);
        receiver.ip(&["route", "add", "172.30.0.0/24", "via", "203.0.113.1"]);
        RouterPath {
            sender,
            router,
            receiver,
        }
    }

    /// A UDP socket in the sender's namespace, bound to `source`.
    fn socket(&self, source: &'static str) -> Result<UdpSocket> {
        Ok(self.sender.enter(move || UdpSocket::bind((source, 0)))?)
    }

    /// Packets that reached the receiver's interface so far.
    fn delivered(&self) -> Result<u64> {
        let dev = self
            .receiver
            .enter(|| std::fs::read_to_string("/proc/thread-self/net/dev"))?;
        let line = dev
            .lines()
            .find(|l| l.trim_start().starts_with("eth0:"))
            .context("no eth0 in the receiver's /proc/net/dev")?;
        let packets = line
            .split_once(':')
            .and_then(|(_, counters)| counters.split_whitespace().nth(1))
            .context("short eth0 line")?;
        Ok(packets.parse()?)
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
fn throughput(enforcer: &Path, policy: &TempFile) -> Result<()> {
    let bare_path = RouterPath::new("tb");
    let control_path = RouterPath::new("tc");
    let enforced_path = RouterPath::new("te");
    let control_table = TempFile::new(
        ".nft",
        "table inet enforcer {\n chain forward {\n  type filter hook forward priority -10; policy accept;\n  ct state established,related accept\n }\n}\n",
    );
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
    let mut sockets = Vec::new();
    for path in paths {
        for source in sources {
            sockets.push(path.socket(source)?);
        }
    }
    let delivered_before: Vec<u64> = paths.iter().map(|p| p.delivered()).collect::<Result<_>>()?;
    let times = std::thread::spawn(move || -> Result<Vec<Vec<f64>>> {
        pin_to_cpu(0);
        let target: SocketAddr = "203.0.113.10:53".parse()?;
        let payload = [0u8; 22];
        let mut times = vec![Vec::with_capacity(THROUGHPUT_ROUNDS); sockets.len()];
        for round in 0..THROUGHPUT_WARMUP + THROUGHPUT_ROUNDS {
            // Rotate the order, so no path always follows the same one.
            for k in 0..sockets.len() {
                let i = (round + k) % sockets.len();
                let start = Instant::now();
                for _ in 0..THROUGHPUT_BATCH {
                    sockets[i].send_to(&payload, target)?;
                }
                if round >= THROUGHPUT_WARMUP {
                    times[i].push(start.elapsed().as_secs_f64());
                }
            }
        }
        Ok(times)
    })
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
            &format!("64-byte UDP, N = 10000, {what}: table / none"),
            format!(
                "{table:.0} / {none:.0} pkt/s, ratio {ratio:.2} ({THROUGHPUT_ROUNDS} interleaved rounds)"
            ),
            Some(ratio >= 0.8),
        );
    }
    Ok(())
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

/// Docker: event-to-enforcement latency over sequential creates, a burst of creates, and the
/// daemon's memory and idle CPU with 500 managed networks, against a private dockerd.
pub fn docker(enforcer: &Path) -> Result<()> {
    use enforcer_harness::docker::Dockerd;
    use std::io::BufRead;
    use std::sync::Mutex;

    const SEQUENTIAL: usize = 100;
    const BURST: usize = 100;
    const TOTAL: usize = 500;
    let docker = Dockerd::start();
    let agent = docker.start_agent_binary(enforcer, &["--log-format", "json"]);
    ensure!(
        agent.wait_for_log("Docker connected", Duration::from_secs(20)),
        "agent did not connect: {}",
        agent.log()
    );
    // `nft monitor` in the Docker host stamps when each subnet reaches the kernel.
    let mut monitor = docker
        .host
        .command("stdbuf")
        .args(["-oL", "nft", "monitor", "elements"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let seen: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let stdout = monitor.stdout.take().expect("piped");
    let sink = seen.clone();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(|l| l.ok())
        {
            sink.lock().unwrap().push((Instant::now(), line));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let subnet = |i: usize| format!("10.{}.{}.0", 130 + i / 250, i % 250);
    let enforced_at = |network: &str| -> Option<Instant> {
        seen.lock()
            .unwrap()
            .iter()
            .find(|(_, line)| {
                line.contains("managed_v4_24")
                    && line
                        .split([' ', ',', '{', '}'])
                        .any(|token| token == network)
            })
            .map(|(t, _)| *t)
    };
    let create = |i: usize| {
        docker.docker(&[
            "network",
            "create",
            "--internal",
            "--subnet",
            &format!("{}/24", subnet(i)),
            &format!("bench{i}"),
        ]);
    };

    // When the last of the networks numbered `range` reached the kernel (waits at most 30 s).
    let all_enforced = |range: std::ops::Range<usize>| -> Result<Instant> {
        let limit = Instant::now() + Duration::from_secs(30);
        loop {
            let times: Vec<Option<Instant>> =
                range.clone().map(|i| enforced_at(&subnet(i))).collect();
            if let Some(last) = times.iter().copied().collect::<Option<Vec<_>>>() {
                return Ok(last.into_iter().max().expect("range is not empty"));
            }
            ensure!(
                Instant::now() < limit,
                "networks {range:?} not enforced within 30 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };

    // Sequential: from `docker network create` returning to the subnet in the kernel's set.
    let mut latencies = Vec::new();
    let mut before_return = 0;
    for i in 0..SEQUENTIAL {
        create(i);
        let returned = Instant::now();
        let limit = returned + Duration::from_secs(5);
        let at = loop {
            if let Some(at) = enforced_at(&subnet(i)) {
                break at;
            }
            ensure!(
                Instant::now() < limit,
                "network bench{i} not enforced within 5 s"
            );
            std::thread::sleep(Duration::from_micros(200));
        };
        if at < returned {
            before_return += 1;
        }
        latencies.push(at.saturating_duration_since(returned).as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    let (p50, p99) = (latencies[SEQUENTIAL / 2], latencies[SEQUENTIAL * 99 / 100]);
    line(
        "event to enforcement, docker network create (100 sequential)",
        format!("p50 {p50:.1} ms, p99 {p99:.1} ms ({before_return} before the CLI returned)"),
        Some(p50 <= 20.0 && p99 <= 100.0),
    );

    // Burst: BURST creates at once, 10 clients in parallel.
    let applied_before = agent.log().matches("\"message\":\"applied:").count();
    let start = Instant::now();
    std::thread::scope(|scope| {
        for client in 0..10 {
            let create = &create;
            scope.spawn(move || {
                for i in (SEQUENTIAL + client..SEQUENTIAL + BURST).step_by(10) {
                    create(i);
                }
            });
        }
    });
    let last = all_enforced(SEQUENTIAL..SEQUENTIAL + BURST)?;
    let creates_done = start.elapsed();
    let transactions = agent.log().matches("\"message\":\"applied:").count() - applied_before;
    line(
        "burst of 100 network creates (10 clients): all enforced after",
        format!(
            "{:.0} ms ({:.0} ms for the creates); {transactions} transactions",
            (last - start).as_secs_f64() * 1e3,
            creates_done.as_secs_f64() * 1e3
        ),
        None,
    );

    // The same burst while the agent is paused (SIGSTOP), as when it is busy: the events
    // queue up and are folded into few transactions when it resumes.
    const PAUSED: usize = 100;
    let first = SEQUENTIAL + BURST;
    let applied_before = agent.log().matches("\"message\":\"applied:").count();
    agent.signal(libc::SIGSTOP);
    for i in first..first + PAUSED {
        create(i);
    }
    let resumed = Instant::now();
    agent.signal(libc::SIGCONT);
    let last = all_enforced(first..first + PAUSED)?;
    let transactions = agent.log().matches("\"message\":\"applied:").count() - applied_before;
    line(
        "100 creates queued while the agent was paused: enforced after",
        format!(
            "{:.0} ms from resuming; {transactions} transactions",
            (last - resumed).as_secs_f64() * 1e3
        ),
        None,
    );

    for i in first + PAUSED..TOTAL {
        create(i);
    }
    let limit = Instant::now() + Duration::from_secs(60);
    while enforced_at(&subnet(TOTAL - 1)).is_none() {
        ensure!(
            Instant::now() < limit,
            "500 networks not enforced within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid()))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (rss, peak) = (field("VmRSS:"), field("VmHWM:"));
    line(
        "enforcer run, 500 managed networks: resident memory (peak)",
        format!(
            "{:.1} MiB ({:.1} MiB)",
            rss as f64 / 1024.0,
            peak as f64 / 1024.0
        ),
        Some(rss <= 20 * 1024),
    );
    let cpu_ticks = || -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", agent.pid()))?;
        let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
    };
    let idle = Duration::from_secs(10);
    let before = cpu_ticks()?;
    std::thread::sleep(idle);
    let ticks = cpu_ticks()? - before;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    line(
        "enforcer run, idle CPU over 10 s with 500 networks",
        format!(
            "{:.2} % ({ticks} ticks)",
            ticks as f64 / hz / idle.as_secs_f64() * 100.0
        ),
        Some(ticks as f64 / hz / idle.as_secs_f64() <= 0.01),
    );
    let _ = monitor.kill();
    let _ = monitor.wait();
    let _ = reader.join();
    Ok(())
}
