//! A full apply against `nft -f` on the same script, its peak memory, and the no-op apply.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use enforcer_harness::{Netns, TempFile};

use super::{agent_timing, line, median, timed_in, Cost, LARGE, REPEATS};

/// No-op applies the agent times in one run.
const NO_OP_REPEATS: usize = 200;

/// What a full-apply run measures: its label and, for the largest size, the memory target.
pub(super) struct Size<'a> {
    /// How the policy is described in each line (`N = 10000 subnets`).
    pub(super) label: &'a str,
    /// Whether the ratio targets apply (the largest size), and then the CLI's peak memory
    /// target in MiB, if it has one.
    pub(super) target_mib: Option<Option<u64>>,
}

/// A full apply of `policy` by the CLI and by the agent's path, each against `nft -f` loading
/// the same table from the dry-run script.
pub(super) fn full_apply(
    enforcer: &Path,
    timing: &Path,
    nft: &Path,
    policy: &TempFile,
    size: Size<'_>,
) -> Result<()> {
    let Size { label, target_mib } = size;
    let targeted = target_mib.is_some();
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
        &format!("full apply, {label}: enforcer CLI / nft -f"),
        format!("{ours_wall:.1} ms / {theirs_wall:.1} ms = {ratio:.2}"),
        targeted.then_some(ratio <= 0.5),
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
        &format!("    agent's apply (topology in memory) / nft -f, {label}"),
        format!(
            "{agent:.1} ms / {theirs_wall:.1} ms = {:.2}",
            agent / theirs_wall
        ),
        targeted.then_some(agent / theirs_wall <= 0.5),
    );
    if let Some(target) = target_mib {
        let peak = ours.iter().map(|c| c.peak_kib).max().unwrap_or(0);
        line(
            &format!("peak memory of enforcer apply, {label}"),
            format!("{:.1} MiB (max of {REPEATS} runs)", peak as f64 / 1024.0),
            target.map(|target| peak <= target * 1024),
        );
    }
    Ok(())
}

/// The no-op apply: the agent on a verified table, and the CLI reading the table back.
pub(super) fn no_op(enforcer: &Path, timing: &Path, policy: &TempFile) -> Result<()> {
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
        &format!("no-op apply, N = {LARGE} (agent: verified table, no commit since)"),
        format!(
            "{:.3} ms median, {:.3} ms p99 of {NO_OP_REPEATS}",
            warm_median * 1e3,
            p99 * 1e3
        ),
        Some(warm_median <= 0.005),
    );
    let checks = agent_timing(&ns, timing, "check", policy.path(), NO_OP_REPEATS)?;
    line(
        &format!("periodic check, N = {LARGE} (agent: nothing replanned, no commit since)"),
        format!("{:.3} ms median", median(checks)),
        None,
    );
    line(
        &format!("no-op apply, N = {LARGE} (CLI: parse, plan, full read-back)"),
        format!("{:.1} ms", median(cold) * 1e3),
        None,
    );
    Ok(())
}
