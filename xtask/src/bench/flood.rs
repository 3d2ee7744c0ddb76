//! A flood of dropped packets against the drop audit: ThreeGate through a private dockerd,
//! `core` sending 100,000 UDP packets a second for 10 s toward the internet (each one dropped
//! and sent to the audit chain), while the proxy's allowed flow is probed. Measured: the rate
//! achieved (the kernel's counter of core's drops), the agent's CPU and resident memory over
//! the flood, the lines it wrote for the flood's (source, destination, reason), and whether
//! the allowed flow kept working.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use enforcer_harness::docker::{Dockerd, ThreeGate};
use enforcer_harness::host::Containers;
use enforcer_harness::spec::{internet, Family};
use enforcer_harness::{probe_here, Proto};

use super::{cpu_ticks, line, resident_kib};

/// Packets a second, and for how long.
const RATE: u64 = 100_000;
const FLOOD: Duration = Duration::from_secs(10);
/// Packets sent per pacing step (every 1 ms at the full rate).
const STEP: u64 = RATE / 1000;

/// Runs the flood with the `enforcer` binary.
pub(super) fn flood(enforcer: &Path) -> Result<()> {
    let docker = Dockerd::start();
    let gate = ThreeGate::create(&docker);
    let agent = docker.start_agent_binary(enforcer, &["--log-format", "json"]);
    ensure!(
        agent.wait_for_log("+proxy proxy", Duration::from_secs(20)),
        "the agent never enforced ThreeGate: {}",
        agent.log()
    );
    let allowed = SocketAddr::new(internet(Family::V4), 443);
    ensure!(
        gate.wait_open("proxy", allowed, Duration::from_secs(20)),
        "the proxy's egress never opened: {}",
        agent.log()
    );
    let target = SocketAddr::new(internet(Family::V4), 9);
    let dropped_before = core_drops(&docker)?;
    let lines_before = agent.lines_with("\"event\":\"drop\"").len();
    let cpu_before = cpu_ticks(agent.pid())?;
    let core = gate.namespace("core").borrowed();
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        core.enter(move || -> Result<u64> {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            let mut sent = 0u64;
            let begun = Instant::now();
            while begun.elapsed() < FLOOD {
                // Catch up to the rate, one step at a time.
                let due = (begun.elapsed().as_secs_f64() * RATE as f64) as u64;
                while sent < due {
                    for _ in 0..STEP {
                        let _ = socket.send_to(b"flood", target);
                    }
                    sent += STEP;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            Ok(sent)
        })
    });
    // The allowed flow, probed through the flood.
    let proxy = gate.namespace("proxy").borrowed();
    let mut probes = (0, 0);
    while started.elapsed() < FLOOD {
        let open = proxy.enter(move || probe_here(Proto::Tcp, allowed, Duration::from_secs(1)));
        probes = (probes.0 + usize::from(open), probes.1 + 1);
        std::thread::sleep(Duration::from_millis(500));
    }
    let sent = sender.join().expect("sender")?;
    let elapsed = started.elapsed();
    let cpu = cpu_ticks(agent.pid())? - cpu_before;
    let (rss, peak) = resident_kib(agent.pid())?;
    // The last summary comes within a second of the flood's end.
    std::thread::sleep(Duration::from_millis(1500));
    let dropped = core_drops(&docker)? - dropped_before;
    let flood_lines: Vec<serde_json::Value> = agent
        .lines_with("\"event\":\"drop\"")
        .iter()
        .skip(lines_before)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["dst"] == target.ip().to_string() && l["dport"] == 9)
        .collect();
    let logged: u64 = flood_lines.iter().filter_map(|l| l["count"].as_u64()).sum();
    // Lines per second of their timestamps (`…T12:34:56.789Z`).
    let mut per_second: BTreeMap<String, usize> = BTreeMap::new();
    for l in &flood_lines {
        let stamp = l["timestamp"].as_str().unwrap_or("");
        *per_second
            .entry(stamp.get(..19).unwrap_or(stamp).to_string())
            .or_default() += 1;
    }
    let busiest = per_second.values().copied().max().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu_share = cpu as f64 / hz / elapsed.as_secs_f64();
    line(
        "flood: dropped packets a second from core (kernel counter)",
        format!(
            "{:.0} ({dropped} of {sent} sent in {:.1} s)",
            dropped as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64()
        ),
        Some(dropped as f64 / elapsed.as_secs_f64() >= 0.9 * RATE as f64),
    );
    line(
        "flood: the proxy's allowed tcp/443 during it",
        format!("{} of {} probes open", probes.0, probes.1),
        Some(probes.0 == probes.1 && probes.1 > 0),
    );
    line(
        "flood: agent CPU (share of one core)",
        format!("{:.1} % ({cpu} ticks)", cpu_share * 100.0),
        Some(cpu_share <= 0.25),
    );
    line(
        "flood: agent resident memory (peak)",
        format!(
            "{:.1} MiB ({:.1} MiB)",
            rss as f64 / 1024.0,
            peak as f64 / 1024.0
        ),
        Some(rss <= 30 * 1024),
    );
    line(
        "flood: lines for its (source, destination, reason)",
        format!(
            "{} lines, at most {busiest} in one second, {logged} packets logged",
            flood_lines.len()
        ),
        // The first drop's line and a summary can share a second; never two summaries.
        Some(busiest <= 2 && !flood_lines.is_empty()),
    );
    Ok(())
}

/// What core's denied egress counted in the kernel (`containers_v4`), in packets.
fn core_drops(docker: &Dockerd) -> Result<u64> {
    let listed = docker
        .host
        .exec_ok("nft", &["list", "table", "inet", "enforcer"]);
    let text = String::from_utf8_lossy(&listed.stdout).replace('\n', " ");
    let element = text
        .split("set containers_v4")
        .nth(1)
        .and_then(|set| set.split(',').find(|e| e.contains("comment \"core\"")))
        .with_context(|| format!("no element for core in containers_v4: {text}"))?;
    let packets = element
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .context("no packet count")?;
    Ok(packets.parse()?)
}
