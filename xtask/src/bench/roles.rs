//! Roles at scale: 10,000 members in 100 roles of 10 egress rules each
//! ([`super::roles_policy_text`]). Packets of one member through a router holding that table,
//! against a router with none: the longest allowed path (a role's internet allowance, after
//! its role-to-role flows) and a dropped path (a port no rule allows, through the role chain
//! and `from_managed` to the counted drop). The full apply and memory are [`super::apply`]'s.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Result};
use enforcer_harness::{Agent, Netns, TempDir, TempFile, NO_DOCKER};

use super::throughput::{
    send_rounds, Inside, RouterPath, THROUGHPUT_BATCH, THROUGHPUT_ROUNDS, THROUGHPUT_WARMUP,
};
use super::{line, median, resident_kib, timed_in};

/// The member whose packets are sent: `c0`, in role `r0` (allowed udp/53 to the internet).
const MEMBER: &str = "10.0.0.2";
/// Its network, as the router and the receiver see it.
const INSIDE: Inside = ("10.0.0.1/16", "10.0.0.2/16", "10.0.0.0/16");

/// `enforcer run` on the roles policy (Docker unreachable: the static members are the
/// containers): its resident memory once the table is applied and it idles.
pub(super) fn agent_memory(enforcer: &Path, policy: &TempFile, label: &str) -> Result<()> {
    let ns = Netns::new("rolesrun");
    let dir = TempDir::new("rolesrun");
    let agent = Agent::start(
        &ns,
        dir.path(),
        enforcer,
        &["--config", policy.path(), "--log-format", "json"],
        &[("DOCKER_HOST", NO_DOCKER)],
    );
    ensure!(
        agent.wait_for_log("applied", Duration::from_secs(60)),
        "the agent did not apply the roles policy: {}",
        agent.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    let (rss, peak) = resident_kib(agent.pid())?;
    line(
        &format!("enforcer run, {label}: resident memory (peak)"),
        format!(
            "{:.1} MiB ({:.1} MiB)",
            rss as f64 / 1024.0,
            peak as f64 / 1024.0
        ),
        Some(rss <= 40 * 1024),
    );
    Ok(())
}

/// 64-byte UDP from member `c0` through a router with the roles table and through one with
/// none, interleaved as in [`super::throughput`]: to 203.0.113.10:53 (allowed: role `r0`'s
/// internet rule, looked up after its role-to-role flows) and to 203.0.113.10:54 (dropped).
pub(super) fn roles_throughput(enforcer: &Path, policy: &TempFile, label: &str) -> Result<()> {
    let bare = RouterPath::with("rtb", &[INSIDE]);
    let enforced = RouterPath::with("rte", &[INSIDE]);
    timed_in(
        &enforced.router,
        enforcer,
        &["apply", "--config", policy.path()],
        None,
    )?;
    let allowed: SocketAddr = "203.0.113.10:53".parse()?;
    let denied: SocketAddr = "203.0.113.10:54".parse()?;
    let mut sockets = Vec::new();
    for path in [&bare, &enforced] {
        for target in [allowed, denied] {
            sockets.push((path.socket(MEMBER)?, target));
        }
    }
    let before = [bare.delivered()?, enforced.delivered()?];
    let times = std::thread::spawn(move || send_rounds(&sockets))
        .join()
        .expect("sender thread")?;
    std::thread::sleep(Duration::from_millis(100));
    let per_target = ((THROUGHPUT_WARMUP + THROUGHPUT_ROUNDS) * THROUGHPUT_BATCH) as u64;
    let crossed = [
        bare.delivered()? - before[0],
        enforced.delivered()? - before[1],
    ];
    // Without a table both targets arrive; with it only the allowed one.
    ensure!(
        crossed[0] >= 2 * per_target * 99 / 100,
        "only {} of {} packets crossed the router without a table: the measurement is void",
        crossed[0],
        2 * per_target
    );
    ensure!(
        crossed[1] >= per_target * 99 / 100 && crossed[1] <= per_target * 101 / 100,
        "{} packets crossed the enforced router, {per_target} allowed ones were sent: the \
         table does not do what the policy says",
        crossed[1]
    );
    // Sockets, and so their times, are ordered path by path, then target by target.
    let rate = |socket: usize| THROUGHPUT_BATCH as f64 / median(times[socket].clone());
    for (offset, what) in [
        (0, "allowed (longest path: a role's internet rule)"),
        (1, "dropped (no rule allows it)"),
    ] {
        let (table, none) = (rate(2 + offset), rate(offset));
        let ratio = table / none;
        line(
            &format!("64-byte UDP, {label}, {what}: table / none"),
            format!(
                "{table:.0} / {none:.0} pkt/s, ratio {ratio:.2} ({THROUGHPUT_ROUNDS} interleaved rounds)"
            ),
            Some(ratio >= 0.8),
        );
    }
    Ok(())
}
