//! Benchmarks. Every figure is measured in this run; ratios compare two things measured side by
//! side, so a noisy shared machine moves both.
//!
//! - [`apply`]: a full apply against `nft -f`, its memory, and the no-op apply;
//! - [`throughput`]: packets through a router namespace with and without the table;
//! - [`docker`]: the agent against a private dockerd (event latency, bursts, memory, idle CPU);
//! - [`ports`]: packets on a managed bridge with 1,000 bound ports, with and without the tables,
//!   and what binding costs the agent at that size (a fake Docker);
//! - [`port_binding`]: container start to port bound, against a private dockerd;
//! - [`roles`]: packets of a role member through a table of 10,000 members in 100 roles (its
//!   full apply and memory are [`apply`]'s);
//! - [`heal`]: another program's change to the table -> the agent's restoring commit;
//! - [`cut`]: a tightening -> the tracked connections it refuses deleted;
//! - [`soak`]: network and container churn against a private dockerd: memory drift, leftovers;
//! - [`flood`]: 100,000 dropped packets a second for 10 s against the drop audit;
//! - [`swarm`]: 500 Swarm tasks on a managed overlay: task start to enforced, memory.
//!
//! [`netlink`] stamps the kernel's link and nftables notifications for [`ports`],
//! [`port_binding`] and [`heal`].

mod apply;
mod cut;
mod docker;
mod flood;
mod heal;
mod netlink;
mod port_binding;
mod ports;
mod roles;
mod soak;
mod swarm;
mod throughput;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use enforcer_harness::{cargo_build, require_root, Netns, TempFile};

/// Runs of each timed command; the median is reported.
const REPEATS: usize = 5;
/// The N of the README's targets: managed subnets in the largest policy.
const LARGE: usize = 10_000;

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

/// Roles in the roles benchmark, and egress rules per role.
const ROLES: usize = 100;
const RULES_PER_ROLE: usize = 10;

/// A policy with `members` static members (an IPv4 and an IPv6 address each) on one managed
/// network with east-west denied, on interface `in0` (the router's side of the throughput
/// benchmark, so that the check for forged managed sources is in), spread over `roles` roles of `rules` egress rules each: the
/// internet on tcp/443 and udp/53, and `rules - 1` other roles on a port of their own. Every
/// role-to-role rule expands to one flow per member of the target role, so the flow sets hold
/// about `members * (rules - 1)` elements per family.
pub fn roles_policy_text(members: usize, roles: usize, rules: usize) -> String {
    let mut text = String::from(
        "[docker]\nenabled = false\n[[networks]]\nname = \"agents\"\n\
         subnets = [\"10.0.0.0/16\", \"fd00:a::/64\"]\ninterface = \"in0\"\n\
         east_west = \"deny\"\n",
    );
    for role in 0..roles {
        let mut egress =
            vec!["{ to = \"internet\", allow = [\"tcp/443\", \"udp/53\"] }".to_string()];
        egress.extend((1..rules).map(|j| {
            format!(
                "{{ to = \"role:r{}\", allow = [\"tcp/{}\"] }}",
                (role + j) % roles,
                8000 + j
            )
        }));
        text.push_str(&format!(
            "[roles.r{role}]\negress = [{}]\n",
            egress.join(", ")
        ));
    }
    for i in 0..members {
        text.push_str(&format!(
            "[[members]]\nname = \"c{i}\"\nrole = \"r{}\"\n\
             addresses = [\"10.0.{}.{}\", \"fd00:a::{:x}\"]\n",
            i % roles,
            i / 250,
            i % 250 + 2,
            i + 2
        ));
    }
    text
}

/// The resident memory of process `pid` now and at its peak (VmRSS, VmHWM), in KiB.
fn resident_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// User and system CPU ticks of process `pid` so far.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The `p`-th percentile of `values` (not empty), by nearest rank: the smallest value that at
/// least `p` percent of them do not exceed (of 100 values, the 99th is the second largest;
/// of fewer than 100, the largest; the 100th is the largest).
fn percentile(values: &[f64], p: usize) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
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
        // SAFETY: rusage is plain data, for which all zeroes is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 reaps our own child and writes only into `status` and `usage`.
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
/// `noop`, `throughput`, `roles`, `docker`, `ports-throughput`, `ports-docker`,
/// `roles-docker`, `heal`, `cut`, `soak`, `flood`, `swarm`.
pub fn run(filter: &str) -> Result<()> {
    require_root();
    let (enforcer, timing) = (release_enforcer(), release_agent_timing());
    let nft = PathBuf::from("/usr/sbin/nft");
    let wanted = |name: &str| filter.is_empty() || name.contains(filter);
    println!("enforcer benchmarks (median of {REPEATS} runs unless said; each run in fresh namespaces)\n");

    for subnets in [10usize, 1_000, LARGE] {
        let policy = TempFile::new(".toml", &policy_text(subnets));
        if wanted("apply") || (subnets == LARGE && wanted("memory")) {
            let label = format!("N = {subnets} subnets");
            let size = apply::Size {
                label: &label,
                target_mib: (subnets == LARGE).then_some(Some(30)),
            };
            apply::full_apply(&enforcer, &timing, &nft, &policy, size)?;
        }
        if subnets == LARGE && wanted("noop") {
            apply::no_op(&enforcer, &timing, &policy)?;
        }
        if subnets == LARGE && wanted("throughput") {
            throughput::throughput(&enforcer, &policy)?;
        }
    }
    if wanted("roles") {
        let policy = TempFile::new(".toml", &roles_policy_text(LARGE, ROLES, RULES_PER_ROLE));
        let label = format!("{LARGE} members in {ROLES} roles of {RULES_PER_ROLE} rules");
        // The 40 MiB target is the agent's resident memory (`roles::agent_memory`); the
        // one-shot CLI's peak is shown without one.
        let size = apply::Size {
            label: &label,
            target_mib: Some(None),
        };
        apply::full_apply(&enforcer, &timing, &nft, &policy, size)?;
        roles::roles_throughput(&enforcer, &policy, &label)?;
        roles::agent_memory(&enforcer, &policy, &label)?;
    }
    if wanted("docker") {
        docker::docker(&enforcer)?;
    }
    if wanted("ports-throughput") {
        ports::ports(&enforcer)?;
    }
    if wanted("ports-docker") {
        port_binding::port_binding(&enforcer)?;
    }
    if wanted("roles-docker") {
        port_binding::role_enforcement(&enforcer)?;
    }
    if wanted("heal") {
        heal::heal(&enforcer)?;
    }
    if wanted("cut") {
        cut::cut(&enforcer)?;
    }
    if wanted("soak") {
        soak::soak(&enforcer)?;
    }
    if wanted("flood") {
        flood::flood(&enforcer)?;
    }
    if wanted("swarm") {
        swarm::swarm(&enforcer)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_by_nearest_rank() {
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 50), 50.0);
        assert_eq!(percentile(&hundred, 99), 99.0);
        assert_eq!(percentile(&hundred, 100), 100.0);
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&ten, 50), 5.0);
        assert_eq!(percentile(&ten, 99), 10.0);
        assert_eq!(percentile(&[7.0], 1), 7.0);
    }
}
