//! Container start to port bound, against a private dockerd: containers started one after
//! another on a managed (internal) network while `enforcer run` follows Docker, each timed from
//! the kernel's notifications (its veth attached to the bridge, the commit that adds its
//! `port_<veth>` chain) and from Docker's own `start` event. The same for role members: the
//! commit that puts a labelled container's address in `roles_v4`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use enforcer_harness::docker::{Dockerd, IMAGE};
use enforcer_harness::{Agent, TempFile};

use super::netlink::{ifindex, Event, Seen, Watch};
use super::ports::{applied, attach_and_chain, attach_to_chain, Applied};
use super::{line, percentile};

/// Containers started, one after another.
const CONTAINERS: usize = 30;
/// The managed network they join.
const NETWORK: &str = "bnbind";

/// What one container's start looked like from the kernel.
struct Sample {
    /// The host side of its veth.
    port: String,
    /// When its veth was attached to the bridge.
    attached: SystemTime,
    /// When the commit adding its chain arrived.
    bound: SystemTime,
    /// Commits from its attachment to the one that added its chain, that one included.
    commits: usize,
}

/// Runs the benchmark with the `enforcer` binary.
pub(super) fn port_binding(enforcer: &Path) -> Result<()> {
    let docker = Dockerd::start();
    docker.docker(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.150.0.0/24",
        NETWORK,
    ]);
    let bridge = docker.bridge(NETWORK);
    let index = ifindex(&docker.host, &bridge)?;
    let agent = docker.start_agent_binary(enforcer, &["--log-format", "json"]);
    ensure!(
        agent.wait_for_log("Docker connected", Duration::from_secs(20)),
        "agent did not connect: {}",
        agent.log()
    );
    let watch = Watch::start(&docker.host)?;
    let since = SystemTime::now();
    let (mut samples, mut missed, mut known) = (Vec::new(), Vec::new(), BTreeSet::new());
    for i in 0..CONTAINERS {
        match start_one(&docker, &watch, index, i, &mut known)? {
            Some(sample) => samples.push((i, sample)),
            None => missed.push(i),
        }
    }
    let starts = start_events(&docker, since)?;
    // The agent logs an apply after its commit: give the last line a moment.
    if let Some((_, last)) = samples.last() {
        agent.wait_for_log(
            &format!("+ chain port_{} ", last.port),
            Duration::from_secs(2),
        );
    }
    report(&samples, &missed, &starts, &applied(&agent.log()))
}

/// Starts container `i` and waits (at most 10 s) until its port, the first port attached that
/// is not in `known`, is bound; `None` (with what was seen printed) when it was not. Adds the
/// ports seen to `known`: every later RTM_NEWLINK of a port carries IFLA_MASTER too.
fn start_one(
    docker: &Dockerd,
    watch: &Watch,
    bridge: u32,
    i: usize,
    known: &mut BTreeSet<String>,
) -> Result<Option<Sample>> {
    let mark = watch.len();
    let name = format!("{NETWORK}{i}");
    docker.docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        NETWORK,
        IMAGE,
        "sleep",
        "100000",
    ]);
    let found = watch.wait_for(mark, Duration::from_secs(10), |seen| {
        let port = new_port(seen, bridge, known)?;
        attach_to_chain(seen, &port, bridge).map(|_| port)
    })?;
    let seen = watch.since(mark);
    let port = new_port(&seen, bridge, known);
    known.extend(seen.iter().filter_map(|s| match &s.event {
        Event::Attached { port, .. } => Some(port.clone()),
        _ => None,
    }));
    match found {
        Some(port) => Ok(Some(sample(&seen, port, bridge)?)),
        None => {
            let listing = docker
                .host
                .exec("nft", &["list", "map", "bridge", "enforcer", "ports"]);
            eprintln!(
                "container {name}: its port {port:?} was not bound within 10 s; the ports map \
                 holds:\n{}",
                String::from_utf8_lossy(&listing.stdout)
            );
            Ok(None)
        }
    }
}

/// The first port attached to `bridge` in `seen` that is not in `known`.
fn new_port(seen: &[Seen], bridge: u32, known: &BTreeSet<String>) -> Option<String> {
    seen.iter().find_map(|s| match &s.event {
        Event::Attached { port, master } if *master == bridge && !known.contains(port) => {
            Some(port.clone())
        }
        _ => None,
    })
}

/// The sample of `port`, from the notifications of its container's start.
fn sample(seen: &[Seen], port: String, bridge: u32) -> Result<Sample> {
    let (attached, bound) =
        attach_and_chain(seen, &port, bridge).context("the attachment or chain went missing")?;
    let commits = seen[attached..bound]
        .iter()
        .filter(|s| matches!(s.event, Event::Commit { .. }))
        .count();
    Ok(Sample {
        port,
        attached: seen[attached].at,
        bound: seen[bound].at,
        commits: commits + 1,
    })
}

/// Role members started, one after another, and the network they join.
const MEMBERS: usize = 30;
const ROLE_NETWORK: &str = "bnrole";

/// Container start to its role enforced: `MEMBERS` containers labelled `enforcer.role=agent`
/// started one after another on a managed network while `enforcer run` follows Docker with a
/// policy defining `agent`; each timed from Docker's `start` event to the commit that adds its
/// address (after its bridge's name) to `roles_v4` (from then on its packets meet its role's
/// chain).
pub(super) fn role_enforcement(enforcer: &Path) -> Result<()> {
    let docker = Dockerd::start();
    docker.docker(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.151.0.0/24",
        ROLE_NETWORK,
    ]);
    let (_agent, _policy) = start_role_agent(&docker, enforcer)?;
    let watch = Watch::start(&docker.host)?;
    let since = SystemTime::now();
    let (mut enforced, mut missed) = (Vec::new(), Vec::new());
    for i in 0..MEMBERS {
        let address = [10u8, 151, 0, 10 + i as u8];
        let mark = watch.len();
        docker.docker(&[
            "run",
            "-d",
            "--name",
            &format!("{ROLE_NETWORK}{i}"),
            "--network",
            ROLE_NETWORK,
            "--ip",
            &format!("10.151.0.{}", address[3]),
            "--label",
            "enforcer.role=agent",
            IMAGE,
            "sleep",
            "100000",
        ]);
        let found = watch.wait_for(mark, Duration::from_secs(10), |seen| {
            role_added_at(seen, address)
        })?;
        match found {
            Some(at) => enforced.push((i, at)),
            None => missed.push(i),
        }
    }
    let starts = start_events(&docker, since)?;
    let mut from_start = Vec::new();
    for (i, at) in &enforced {
        let start = starts
            .get(&format!("{ROLE_NETWORK}{i}"))
            .with_context(|| format!("no start event of {ROLE_NETWORK}{i}"))?;
        let after = at.duration_since(*start).unwrap_or_default();
        from_start.push(after.as_secs_f64() * 1e3);
    }
    ensure!(!from_start.is_empty(), "no member's role was enforced");
    let (p50, p99) = (percentile(&from_start, 50), percentile(&from_start, 99));
    line(
        &format!(
            "container start to its role enforced ({MEMBERS} sequential, Docker's start event)"
        ),
        format!(
            "p50 {p50:.1} ms, p99 {p99:.1} ms; {} of {MEMBERS} missed",
            missed.len()
        ),
        Some(p99 <= 20.0 && missed.is_empty()),
    );
    Ok(())
}

/// `enforcer run` against `docker`, following it with a policy defining the role `agent`
/// (tcp/443 to the internet), connected; with the policy's file, which must outlive it.
pub(super) fn start_role_agent(docker: &Dockerd, enforcer: &Path) -> Result<(Agent, TempFile)> {
    let policy = TempFile::new(
        ".toml",
        "[roles.agent]\negress = [{ to = \"internet\", allow = [\"tcp/443\"] }]\n",
    );
    let agent = docker.start_agent_binary(
        enforcer,
        &["--config", policy.path(), "--log-format", "json"],
    );
    ensure!(
        agent.wait_for_log("Docker connected", Duration::from_secs(20)),
        "agent did not connect: {}",
        agent.log()
    );
    Ok((agent, policy))
}

/// When the first commit in `seen` added `address` (after its bridge's name) to `roles_v4`.
pub(super) fn role_added_at(seen: &[Seen], address: [u8; 4]) -> Option<SystemTime> {
    seen.iter().find_map(|s| match &s.event {
        Event::Elements { table, set, keys }
            if table == "enforcer"
                && set == "roles_v4"
                && keys.iter().any(|k| k.ends_with(&address)) =>
        {
            Some(s.at)
        }
        _ => None,
    })
}

/// How `docker events` writes a container's start for [`start_times`].
pub(super) const START_FORMAT: &str = "{{.Actor.Attributes.name}} {{.TimeNano}}";

/// Docker's `start` events since `since`: container name to event time (`timeNano`). Docker
/// replays only its last 256 events, so this suits a few dozen starts, not hundreds.
fn start_events(docker: &Dockerd, since: SystemTime) -> Result<BTreeMap<String, SystemTime>> {
    let since = since.duration_since(UNIX_EPOCH)?.as_secs_f64();
    let until = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64() + 1.0;
    let output = docker.docker(&[
        "events",
        "--since",
        &format!("{since:.6}"),
        "--until",
        &format!("{until:.6}"),
        "--filter",
        "type=container",
        "--filter",
        "event=start",
        "--format",
        START_FORMAT,
    ]);
    start_times(&output)
}

/// Each container's start time, by name, from `docker events` lines formatted by
/// [`START_FORMAT`].
pub(super) fn start_times(output: &str) -> Result<BTreeMap<String, SystemTime>> {
    let mut starts = BTreeMap::new();
    for event in output.lines() {
        let (name, nanos) = event
            .split_once(' ')
            .with_context(|| format!("odd `docker events` line: {event}"))?;
        let nanos: u64 = nanos
            .parse()
            .with_context(|| format!("odd time in: {event}"))?;
        starts.insert(name.to_string(), UNIX_EPOCH + Duration::from_nanos(nanos));
    }
    Ok(starts)
}

/// Prints how long the agent's apply that bound each port took (read back, diff, commit, as
/// its log says): the part of the latency that grows with the ports already bound.
fn binding_applies(samples: &[(usize, Sample)], applies: &[Applied]) {
    let took: Vec<f64> = samples
        .iter()
        .filter_map(|(_, s)| {
            let chain = format!("+ chain port_{} ", s.port);
            applies.iter().find(|a| a.message.contains(&chain))
        })
        .map(|a| a.micros as f64 / 1e3)
        .collect();
    let (Some(first), Some(last)) = (took.first(), took.last()) else {
        return;
    };
    line(
        "    of which the agent's apply that bound it",
        format!(
            "p50 {:.1} ms; {first:.1} ms for the 1st port, {last:.1} ms for the {}th",
            percentile(&took, 50),
            took.len()
        ),
        None,
    );
}

/// Prints the percentiles (attachment to chain, Docker's start event to chain) of the
/// containers `samples` (by number), and which were `missed`.
fn report(
    samples: &[(usize, Sample)],
    missed: &[usize],
    starts: &BTreeMap<String, SystemTime>,
    applies: &[Applied],
) -> Result<()> {
    ensure!(!samples.is_empty(), "no container's port was bound");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let from_attach: Vec<f64> = samples
        .iter()
        .map(|(_, s)| ms(s.bound.duration_since(s.attached).unwrap_or_default()))
        .collect();
    let (mut from_start, mut before_event) = (Vec::new(), 0);
    for (i, sample) in samples {
        let start = starts
            .get(&format!("{NETWORK}{i}"))
            .with_context(|| format!("no start event of {NETWORK}{i} (port {})", sample.port))?;
        match sample.bound.duration_since(*start) {
            Ok(after) => from_start.push(ms(after)),
            Err(_) => {
                before_event += 1;
                from_start.push(0.0);
            }
        }
    }
    let commits: usize = samples.iter().map(|(_, s)| s.commits).sum();
    let (p50, p99) = (percentile(&from_start, 50), percentile(&from_start, 99));
    line(
        &format!("container start to port bound ({CONTAINERS} sequential, Docker's start event)"),
        format!("p50 {p50:.1} ms, p99 {p99:.1} ms ({before_event} bound before the event)"),
        Some(p50 <= 5.0 && p99 <= 20.0 && missed.is_empty()),
    );
    line(
        "    from its veth attached to the bridge (RTM_NEWLINK)",
        format!(
            "p50 {:.1} ms, p99 {:.1} ms; {:.1} commits per start",
            percentile(&from_attach, 50),
            percentile(&from_attach, 99),
            commits as f64 / samples.len() as f64
        ),
        None,
    );
    binding_applies(samples, applies);
    line(
        "    ports not bound within 10 s",
        format!("{} of {CONTAINERS} {missed:?}", missed.len()),
        Some(missed.is_empty()),
    );
    Ok(())
}
