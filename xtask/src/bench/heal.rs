//! Tamper -> restored: another program (`nft`) changes the agent's table and the agent undoes
//! it. Each latency is between two kernel events that [`netlink::Watch`] stamps: the end of
//! the tampering commit (by `nft`) and the end of the agent's restoring commit.

use std::path::Path;
use std::time::Duration;

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
        }
        ensure!(
            objects(&ns) == pristine,
            "{kind}: the table is not the one the agent applied"
        );
        let p99 = percentile(&latencies, 99);
        line(
            &format!("tamper -> restored: {kind} ({TAMPERS} times)"),
            format!(
                "p50 {:.1} ms, p99 {p99:.1} ms (goal p99 <= {TARGET_P99_MS} ms)",
                percentile(&latencies, 50)
            ),
            Some(p99 <= TARGET_P99_MS),
        );
    }
    Ok(())
}

/// The time from the first commit by `nft` to the agent's next commit, once both are seen.
fn restore_latency(seen: &[Seen]) -> Option<Duration> {
    let by = |name: &'static str| move |s: &&Seen| matches!(&s.event, Event::Commit { process } if process == name);
    let tamper = seen.iter().position(|s| by("nft")(&s))?;
    let restore = seen[tamper..].iter().find(by("enforcer"))?;
    restore.at.duration_since(seen[tamper].at).ok()
}

/// The table's objects as `nft` lists them, in any order (a chain re-created is listed last).
fn objects(ns: &Netns) -> Vec<String> {
    listed_objects(ns, "inet", "enforcer")
}
