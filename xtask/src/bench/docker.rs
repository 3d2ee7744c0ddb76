//! The agent against a private dockerd: event-to-enforcement latency over sequential creates,
//! a burst of creates, creates queued while the agent is paused, and the daemon's memory and
//! idle CPU with 500 managed networks.

use std::io::BufRead;
use std::ops::Range;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use enforcer_harness::docker::{Agent, Dockerd};
use enforcer_harness::poll_until;

use super::{cpu_ticks, line, resident_kib};

/// Networks created one after another, each timed.
const SEQUENTIAL: usize = 100;
/// Networks created at once by 10 clients.
const BURST: usize = 100;
/// Networks created while the agent is paused.
const PAUSED: usize = 100;
/// Networks in all, when memory and idle CPU are measured.
const TOTAL: usize = 500;

/// The IPv4 subnet (its first address) of benchmark network `i`.
fn subnet(i: usize) -> String {
    format!("10.{}.{}.0", 130 + i / 250, i % 250)
}

/// `docker network create --internal` benchmark network `i`.
fn create(docker: &Dockerd, i: usize) {
    docker.docker(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        &format!("{}/24", subnet(i)),
        &format!("bench{i}"),
    ]);
}

/// Transactions the agent has logged so far.
fn applied(agent: &Agent) -> usize {
    agent.log().matches("\"message\":\"applied:").count()
}

/// `nft monitor elements` in the Docker host: stamps when each subnet reaches the kernel.
struct ElementWatch {
    monitor: Child,
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
    reader: Option<JoinHandle<()>>,
}

impl ElementWatch {
    /// Starts the monitor and gives it 300 ms to subscribe.
    fn start(docker: &Dockerd) -> Result<ElementWatch> {
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
        Ok(ElementWatch {
            monitor,
            seen,
            reader: Some(reader),
        })
    }

    /// When benchmark network `i`'s subnet reached `managed_v4_24`, if it has.
    fn enforced_at(&self, i: usize) -> Option<Instant> {
        let network = subnet(i);
        self.seen
            .lock()
            .unwrap()
            .iter()
            .find(|(_, line)| {
                line.contains("managed_v4_24")
                    && line
                        .split([' ', ',', '{', '}'])
                        .any(|token| token == network)
            })
            .map(|(t, _)| *t)
    }

    /// When the last of the networks numbered `range` reached the kernel, trying every
    /// `every` for at most `limit`.
    fn all_enforced(
        &self,
        range: Range<usize>,
        limit: Duration,
        every: Duration,
    ) -> Result<Instant> {
        let mut last = None;
        let done = poll_until(limit, every, || {
            let times: Option<Vec<Instant>> = range.clone().map(|i| self.enforced_at(i)).collect();
            last = times.and_then(|t| t.into_iter().max());
            last.is_some()
        });
        ensure!(done, "networks {range:?} not enforced within {limit:?}");
        Ok(last.expect("the range is not empty"))
    }
}

impl Drop for ElementWatch {
    fn drop(&mut self) {
        let _ = self.monitor.kill();
        let _ = self.monitor.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Runs the Docker benchmarks with the `enforcer` binary.
pub(super) fn docker(enforcer: &Path) -> Result<()> {
    let docker = Dockerd::start();
    let agent = docker.start_agent_binary(enforcer, &["--log-format", "json"]);
    ensure!(
        agent.wait_for_log("Docker connected", Duration::from_secs(20)),
        "agent did not connect: {}",
        agent.log()
    );
    let watch = ElementWatch::start(&docker)?;
    sequential(&docker, &watch)?;
    burst(&docker, &agent, &watch)?;
    paused(&docker, &agent, &watch)?;
    for i in SEQUENTIAL + BURST + PAUSED..TOTAL {
        create(&docker, i);
    }
    watch.all_enforced(
        TOTAL - 1..TOTAL,
        Duration::from_secs(60),
        Duration::from_millis(20),
    )?;
    std::thread::sleep(Duration::from_secs(1));
    resources(&agent)
}

/// Sequential: from `docker network create` returning to the subnet in the kernel's set.
fn sequential(docker: &Dockerd, watch: &ElementWatch) -> Result<()> {
    let mut latencies = Vec::new();
    let mut before_return = 0;
    for i in 0..SEQUENTIAL {
        create(docker, i);
        let returned = Instant::now();
        let at =
            watch.all_enforced(i..i + 1, Duration::from_secs(5), Duration::from_micros(200))?;
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
    Ok(())
}

/// Burst: [`BURST`] creates at once, 10 clients in parallel.
fn burst(docker: &Dockerd, agent: &Agent, watch: &ElementWatch) -> Result<()> {
    let applied_before = applied(agent);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for client in 0..10 {
            scope.spawn(move || {
                for i in (SEQUENTIAL + client..SEQUENTIAL + BURST).step_by(10) {
                    create(docker, i);
                }
            });
        }
    });
    let last = watch.all_enforced(
        SEQUENTIAL..SEQUENTIAL + BURST,
        Duration::from_secs(30),
        Duration::from_millis(5),
    )?;
    let creates_done = start.elapsed();
    let transactions = applied(agent) - applied_before;
    line(
        "burst of 100 network creates (10 clients): all enforced after",
        format!(
            "{:.0} ms ({:.0} ms for the creates); {transactions} transactions",
            (last - start).as_secs_f64() * 1e3,
            creates_done.as_secs_f64() * 1e3
        ),
        None,
    );
    Ok(())
}

/// The same burst while the agent is paused (SIGSTOP), as when it is busy: the events queue up
/// and are folded into few transactions when it resumes.
fn paused(docker: &Dockerd, agent: &Agent, watch: &ElementWatch) -> Result<()> {
    let first = SEQUENTIAL + BURST;
    let applied_before = applied(agent);
    agent.signal(libc::SIGSTOP);
    for i in first..first + PAUSED {
        create(docker, i);
    }
    let resumed = Instant::now();
    agent.signal(libc::SIGCONT);
    let last = watch.all_enforced(
        first..first + PAUSED,
        Duration::from_secs(30),
        Duration::from_millis(5),
    )?;
    let transactions = applied(agent) - applied_before;
    line(
        "100 creates queued while the agent was paused: enforced after",
        format!(
            "{:.0} ms from resuming; {transactions} transactions",
            (last - resumed).as_secs_f64() * 1e3
        ),
        None,
    );
    Ok(())
}

/// The agent's resident memory and its CPU over 10 idle seconds.
fn resources(agent: &Agent) -> Result<()> {
    let (rss, peak) = resident_kib(agent.pid())?;
    line(
        "enforcer run, 500 managed networks: resident memory (peak)",
        format!(
            "{:.1} MiB ({:.1} MiB)",
            rss as f64 / 1024.0,
            peak as f64 / 1024.0
        ),
        Some(rss <= 20 * 1024),
    );
    let idle = Duration::from_secs(10);
    let before = cpu_ticks(agent.pid())?;
    std::thread::sleep(idle);
    let ticks = cpu_ticks(agent.pid())? - before;
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
    Ok(())
}
