//! Swarm tasks against a private single-node swarm: a service of [`TASKS`] tasks on a managed
//! overlay while `enforcer run` follows Docker, each task timed from Docker's `start` event to
//! its `docker_gwbridge` address in the kernel's `roles_v4` (the netlink notification of
//! the commit that adds it), and the agent's resident memory once all of them run.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context, Result};
use enforcer_harness::docker::{DockerVersion, Dockerd, IMAGE};
use enforcer_harness::poll_until;
use enforcer_harness::spec::{host_uplink, Family};

use super::netlink::Watch;
use super::port_binding::{role_added_at, start_role_agent, start_times, START_FORMAT};
use super::{line, percentile, resident_kib};

/// The service's tasks, all on this node (`ENFORCER_SWARM_TASKS` sets fewer for a quick look).
const TASKS: usize = 500;
/// How long the node may take to run them all.
const START_LIMIT: Duration = Duration::from_secs(900);

/// Runs the benchmark with the `enforcer` binary.
pub(super) fn swarm(enforcer: &Path) -> Result<()> {
    let tasks: usize = std::env::var("ENFORCER_SWARM_TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(TASKS)
        .max(1);
    let docker = Dockerd::start_configured(DockerVersion::from_env(), true);
    let advertise = host_uplink(Family::V4).to_string();
    docker.docker(&["swarm", "init", "--advertise-addr", &advertise]);
    docker.docker(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.144.0.0/21",
        "--label",
        "enforcer.managed=true",
        "mesh",
    ]);
    let (agent, _policy) = start_role_agent(&docker, enforcer)?;
    let watch = Watch::start(&docker.host)?;
    let since = SystemTime::now();
    let events = StartEvents::follow(&docker, since)?;
    let replicas = tasks.to_string();
    // By its ID: a task whose image is named by a tag makes Docker try the registry first,
    // which in a sealed host costs seconds per task (89 of 100 ran in 900 s).
    let image = docker.docker(&["image", "inspect", "-f", "{{.Id}}", IMAGE]);
    let image = image.trim();
    docker.docker(&[
        "service",
        "create",
        "--detach",
        "--name",
        "load",
        "--replicas",
        &replicas,
        "--network",
        "mesh",
        "--container-label",
        "enforcer.role=agent",
        "--no-resolve-image",
        image,
        "sleep",
        "1000000",
    ]);
    let running = || {
        docker
            .docker(&[
                "ps",
                "-q",
                "--filter",
                "label=com.docker.swarm.service.name=load",
            ])
            .lines()
            .count()
    };
    let all = poll_until(START_LIMIT, Duration::from_secs(2), || running() >= tasks);
    ensure!(
        all,
        "{} of {tasks} tasks ran within {START_LIMIT:?}",
        running()
    );
    let started = since.elapsed().unwrap_or_default();
    // The last commits land after the last start: give them a second.
    std::thread::sleep(Duration::from_secs(1));
    watch.healthy()?;
    let starts = events.stop()?;
    let addresses = gateway_addresses(&docker)?;
    let seen = watch.since(0);
    let (mut latencies, mut missed) = (Vec::new(), Vec::new());
    for (name, start) in &starts {
        let address = addresses
            .get(name)
            .with_context(|| format!("task {name} has no docker_gwbridge address"))?
            .octets();
        let enforced = role_added_at(&seen, address);
        match enforced {
            // Before Docker's event counts as 0: the endpoint exists before the task starts.
            Some(at) => {
                latencies.push(at.duration_since(*start).unwrap_or_default().as_secs_f64() * 1e3)
            }
            None => missed.push(name.clone()),
        }
    }
    ensure!(!latencies.is_empty(), "no task's address was enforced");
    let (p50, p99) = (percentile(&latencies, 50), percentile(&latencies, 99));
    line(
        &format!(
            "Swarm task start to its gateway address in its role ({tasks} tasks, one service)"
        ),
        format!(
            "p50 {p50:.1} ms, p99 {p99:.1} ms; {} of {} missed; all running after {:.0} s",
            missed.len(),
            starts.len(),
            started.as_secs_f64()
        ),
        Some(p99 <= 50.0 && missed.is_empty() && starts.len() >= tasks),
    );
    let (rss, peak) = resident_kib(agent.pid())?;
    line(
        &format!("enforcer run, {tasks} Swarm tasks: resident memory (peak)"),
        format!(
            "{:.1} MiB ({:.1} MiB)",
            rss as f64 / 1024.0,
            peak as f64 / 1024.0
        ),
        Some(rss <= 20 * 1024),
    );
    Ok(())
}

/// Each container's IPv4 address on `docker_gwbridge`, by container name, from the network's
/// inspect (the only place Docker lists it; it names the endpoint `gateway_<id>` and keys it by
/// the container's ID, so names come from `docker ps`).
fn gateway_addresses(docker: &Dockerd) -> Result<BTreeMap<String, Ipv4Addr>> {
    let names: BTreeMap<String, String> = docker
        .docker(&["ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}"])
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(id, name)| (id.to_string(), name.to_string()))
        .collect();
    let json = docker.docker(&[
        "network",
        "inspect",
        "-f",
        "{{json .Containers}}",
        "docker_gwbridge",
    ]);
    let containers: serde_json::Value = serde_json::from_str(&json)?;
    let mut addresses = BTreeMap::new();
    for (id, endpoint) in containers
        .as_object()
        .context("Containers is not an object")?
    {
        let (Some(name), Some(cidr)) = (names.get(id), endpoint["IPv4Address"].as_str()) else {
            continue;
        };
        let address = cidr.split('/').next().unwrap_or_default();
        if let Ok(address) = address.parse() {
            addresses.insert(name.clone(), address);
        }
    }
    Ok(addresses)
}

/// `docker events` following containers' starts from `since` on, read by a thread (hundreds of
/// lines would fill its pipe): Docker replays only its last 256 events, fewer than 500 tasks
/// make, so `--since` alone would lose most of them.
struct StartEvents {
    child: Child,
    reader: Option<JoinHandle<std::io::Result<String>>>,
}

impl StartEvents {
    fn follow(docker: &Dockerd, since: SystemTime) -> Result<StartEvents> {
        let since = since.duration_since(UNIX_EPOCH)?.as_secs_f64();
        let mut child = Command::new("docker")
            .arg("-H")
            .arg(docker.docker_host())
            .args([
                "events",
                "--since",
                &format!("{since:.6}"),
                "--filter",
                "type=container",
                "--filter",
                "event=start",
                "--format",
                START_FORMAT,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("running docker events")?;
        let mut stdout = child.stdout.take().context("docker events' output")?;
        let reader = std::thread::spawn(move || {
            let mut output = String::new();
            stdout.read_to_string(&mut output).map(|_| output)
        });
        Ok(StartEvents {
            child,
            reader: Some(reader),
        })
    }

    /// Stops following; the starts seen, by container name (a line the stop cut short is
    /// left out).
    fn stop(mut self) -> Result<BTreeMap<String, SystemTime>> {
        self.child.kill().ok();
        self.child.wait().ok();
        let output = match self.reader.take().map(JoinHandle::join) {
            Some(Ok(read)) => read.context("reading docker events")?,
            _ => anyhow::bail!("the docker events reader failed"),
        };
        let whole = output.rfind('\n').map_or("", |end| &output[..end]);
        start_times(whole)
    }
}

impl Drop for StartEvents {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
