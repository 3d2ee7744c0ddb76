//! Tamper -> restored: another program (`nft`) changes the agent's table and the agent undoes
//! it. Each latency is between two kernel events that [`netlink::Watch`] stamps: the end of
//! the tampering commit (by `nft`) and the end of the agent's restoring commit.
//!
//! Two regimes. Single tamperings, each a [`SPACING`] after the last restore, so that every one
//! meets an unspent restore budget (the agent restores 10 at once, then one every 100 ms). And a
//! fight: `nft` changing the table as fast as it can for [`FIGHT`], where the budget bounds the
//! agent's transactions and each change waits at most one interval.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use enforcer_harness::{listed_objects, repo_file, Agent, Netns, TempDir};

use super::netlink::{Event, Seen, Watch};
use super::{line, percentile};

/// Tamperings of each kind.
const TAMPERS: usize = 100;
/// The goal for the 99th percentile, milliseconds.
const TARGET_P99_MS: f64 = 50.0;
/// The longest one restore may take before the benchmark gives up.
const RESTORE_LIMIT: Duration = Duration::from_secs(5);
/// The pause after each restore before the next single tampering (the agent's sustained
/// restore rate is one per 100 ms).
const SPACING: Duration = Duration::from_millis(100);
/// How long the fight lasts.
const FIGHT: Duration = Duration::from_secs(3);
/// The agent's restore budget (`crates/enforcer/src/run/restore_budget.rs`): restores at
/// once, then one per interval; its periodic check (every `VERIFY_PERIOD`) restores outside it.
const BURST: usize = 10;
const INTERVAL: Duration = Duration::from_millis(100);
const VERIFY_PERIOD: Duration = Duration::from_secs(5);
/// The goal for the fight's 99th percentile: one interval plus the single tampering's goal.
const FIGHT_TARGET_P99_MS: f64 = 150.0;
/// The tampering of the fight (valid whether or not the last one was undone yet).
const FIGHT_SCRIPT: &str = "add rule inet enforcer forward accept";

/// Each kind of tampering, as an `nft -f` script against ThreeGate's table.
const KINDS: [(&str, &str); 7] = [
    (
        "an element deleted",
        "delete element inet enforcer egress_v4_24 { 10.100.0.0 }",
    ),
    ("a rule added", "add rule inet enforcer forward accept"),
    ("a chain flushed", "flush chain inet enforcer proxy_proxy"),
    (
        "the table dormant",
        "add table inet enforcer { flags dormant; }",
    ),
    (
        "the forward hook's priority changed",
        "flush chain inet enforcer forward\ndelete chain inet enforcer forward\n\
         add chain inet enforcer forward { type filter hook forward priority 100; policy accept; }",
    ),
    ("the table deleted", "delete table inet enforcer"),
    ("the ruleset flushed", "flush ruleset"),
];

/// Runs [`TAMPERS`] tamperings of each kind against a running agent and reports p50 and p99.
pub fn heal(enforcer: &Path) -> Result<()> {
    let ns = Netns::new("bench-heal");
    let dir = TempDir::new("bench-heal");
    let config = repo_file("rules/threegate.toml");
    let config = config.to_str().context("utf-8 path")?;
    let agent = Agent::start(&ns, dir.path(), enforcer, &["--config", config], &[]);
    ensure!(
        agent.wait_for_log("enforcing;", Duration::from_secs(10)),
        "the agent did not start: {}",
        agent.log()
    );
    let pristine = objects(&ns);
    let watch = Watch::start(&ns)?;
    for (kind, script) in KINDS {
        let mut latencies = Vec::with_capacity(TAMPERS);
        for _ in 0..TAMPERS {
            let from = watch.len();
            let output = ns.exec_with_input("nft", &["-f", "-"], script.as_bytes());
            ensure!(
                output.status.success(),
                "{kind}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let restored = watch.wait_for(from, RESTORE_LIMIT, restore_latency)?;
            let latency = restored.with_context(|| {
                format!(
                    "{kind}: not restored within {RESTORE_LIMIT:?}:\n{}",
                    agent.log()
                )
            })?;
            latencies.push(latency.as_secs_f64() * 1000.0);
            std::thread::sleep(SPACING);
        }
        ensure!(
            objects(&ns) == pristine,
            "{kind}: the table is not the one the agent applied"
        );
        let p99 = percentile(&latencies, 99);
        let slowest = (0..latencies.len())
            .max_by(|&a, &b| latencies[a].total_cmp(&latencies[b]))
            .unwrap_or(0);
        line(
            &format!("tamper -> restored: {kind} ({TAMPERS} times)"),
            format!(
                "p50 {:.1} ms, p90 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms (#{}) (goal \
                 p99 <= {TARGET_P99_MS} ms)",
                percentile(&latencies, 50),
                percentile(&latencies, 90),
                latencies[slowest],
                slowest + 1
            ),
            Some(p99 <= TARGET_P99_MS),
        );
    }
    fight(&ns, &watch, &pristine)
}

/// `nft` tampers as fast as it can for [`FIGHT`]; reports each tampering's wait for the next
/// restore, and the agent's transactions against its budget.
fn fight(ns: &Netns, watch: &Watch, pristine: &[String]) -> Result<()> {
    let from = watch.len();
    let started = Instant::now();
    let mut tamperings = 0;
    while started.elapsed() < FIGHT && tamperings < 10_000 {
        let output = ns.exec_with_input("nft", &["-f", "-"], FIGHT_SCRIPT.as_bytes());
        ensure!(
            output.status.success(),
            "fight: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        tamperings += 1;
    }
    let lasted = started.elapsed();
    // The last tampering is undone within an interval (the budget may have been spent).
    let last_restored = watch.wait_for(from, RESTORE_LIMIT, |seen| {
        let tampered = seen.iter().filter(|s| committed_by(s, "nft")).count();
        let last = seen.iter().rposition(|s| committed_by(s, "nft"))?;
        let restored = seen[last..].iter().any(|s| committed_by(s, "enforcer"));
        (tampered == tamperings && restored).then_some(())
    })?;
    ensure!(
        last_restored.is_some(),
        "fight: the last tampering was not undone"
    );
    ensure!(
        objects(ns) == pristine,
        "fight: the table is not the one the agent applied"
    );
    let seen = watch.since(from);
    let mut waits = Vec::new();
    for (i, tamper) in seen.iter().enumerate() {
        if !committed_by(tamper, "nft") {
            continue;
        }
        let restore = seen[i..].iter().find(|s| committed_by(s, "enforcer"));
        if let Some(wait) = restore.and_then(|r| r.at.duration_since(tamper.at).ok()) {
            waits.push(wait.as_secs_f64() * 1000.0);
        }
    }
    let restores = seen.iter().filter(|s| committed_by(s, "enforcer")).count();
    // Up to the end of the last restore: the lasted fight plus one interval, and a periodic
    // check's restore for each check that may fall in it.
    let span = lasted + INTERVAL;
    let checks = (span.as_secs_f64() / VERIFY_PERIOD.as_secs_f64()).ceil() as usize;
    let allowed = BURST + (span.as_secs_f64() / INTERVAL.as_secs_f64()) as usize + checks;
    line(
        &format!(
            "fight: {tamperings} tamperings in {:.1} s",
            lasted.as_secs_f64()
        ),
        format!("{restores} restores (budget {allowed})"),
        Some(restores <= allowed),
    );
    let p99 = percentile(&waits, 99);
    line(
        "fight: tampering -> next restore",
        format!(
            "p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms (goal p99 <= {FIGHT_TARGET_P99_MS} \
             ms)",
            percentile(&waits, 50),
            percentile(&waits, 100)
        ),
        Some(p99 <= FIGHT_TARGET_P99_MS),
    );
    Ok(())
}

/// Whether `seen` is a commit by the process named `name`.
fn committed_by(seen: &Seen, name: &str) -> bool {
    matches!(&seen.event, Event::Commit { process } if process == name)
}

/// The time from the first commit by `nft` to the agent's next commit, once both are seen.
fn restore_latency(seen: &[Seen]) -> Option<Duration> {
    let tamper = seen.iter().position(|s| committed_by(s, "nft"))?;
    let restore = seen[tamper..]
        .iter()
        .find(|s| committed_by(s, "enforcer"))?;
    restore.at.duration_since(seen[tamper].at).ok()
}

/// The table's objects as `nft` lists them, in any order (a chain re-created is listed last).
fn objects(ns: &Netns) -> Vec<String> {
    listed_objects(ns, "inet", "enforcer")
}
