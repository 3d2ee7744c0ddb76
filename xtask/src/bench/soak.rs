//! Churn soak: the agent follows a private dockerd through [`NETWORK_CYCLES`] network
//! create/destroy cycles and [`CONTAINER_CYCLES`] container start/stop cycles. Every step is
//! waited for in the kernel (the subnet in `managed_v4_24`, the container's address in
//! `containers_v4`, and gone again); the agent's resident memory is sampled after a warm-up and
//! at the end; at the end, `enforcer apply --dry-run` plans from Docker's state and finds the
//! kernel holding exactly that (exit 0), so nothing was left behind.
//! `ENFORCER_SOAK_SCALE=N` divides both counts by N, for a quick look; the README's figures
//! are of full runs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use enforcer_harness::docker::{Dockerd, IMAGE};
use enforcer_harness::wait_until;

use super::{line, resident_kib};

/// Network create/destroy cycles.
const NETWORK_CYCLES: usize = 1_000;
/// Container start/stop cycles.
const CONTAINER_CYCLES: usize = 5_000;
/// Cycles of each kind before the first memory sample.
const WARM_UP: usize = 20;
/// The goal: resident memory at the end within this much of the first sample.
const DRIFT_KIB: i64 = 2 * 1024;
/// The longest one step may take to reach the kernel.
const STEP: Duration = Duration::from_secs(10);

/// Runs the soak.
pub fn soak(enforcer: &Path) -> Result<()> {
    let scale: usize = std::env::var("ENFORCER_SOAK_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let (networks, containers) = (NETWORK_CYCLES / scale, CONTAINER_CYCLES / scale);
    let docker = Dockerd::start();
    let agent = docker.start_agent_binary(enforcer, &[]);
    ensure!(
        agent.wait_for_log("Docker connected", Duration::from_secs(20)),
        "the agent did not connect: {}",
        agent.log()
    );
    // The containers' network stays; each cycle starts one container on it and removes it.
    docker.docker(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.250.0.0/24",
        "soaknet",
    ]);
    ensure!(
        wait_until(STEP, || has(&docker, "managed_v4_24", "10.250.0.0")),
        "soaknet not enforced"
    );

    let started = Instant::now();
    let mut baseline = None;
    for i in 0..networks {
        let subnet = format!("10.{}.{}.0", 200 + i % 40, (i / 40) % 250);
        let name = format!("soak{i}");
        docker.docker(&[
            "network",
            "create",
            "--internal",
            "--subnet",
            &format!("{subnet}/24"),
            &name,
        ]);
        ensure!(
            wait_until(STEP, || has(&docker, "managed_v4_24", &subnet)),
            "cycle {i}: {subnet} not enforced"
        );
        docker.docker(&["network", "rm", &name]);
        ensure!(
            wait_until(STEP, || !has(&docker, "managed_v4_24", &subnet)),
            "cycle {i}: {subnet} still in the table"
        );
        if i + 1 == WARM_UP {
            baseline = Some(resident_kib(agent.pid())?.0);
        }
    }
    let network_time = started.elapsed();
    let started = Instant::now();
    for i in 0..containers {
        let address = format!("10.250.0.{}", 10 + i % 200);
        let name = format!("soakc{i}");
        docker.docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "soaknet",
            "--ip",
            &address,
            IMAGE,
            "sleep",
            "1000",
        ]);
        ensure!(
            wait_until(STEP, || has(&docker, "containers_v4", &address)),
            "container cycle {i}: {address} not enforced"
        );
        docker.docker(&["rm", "-f", &name]);
        ensure!(
            wait_until(STEP, || !has(&docker, "containers_v4", &address)),
            "container cycle {i}: {address} still in the table"
        );
        if baseline.is_none() && i + 1 == WARM_UP {
            baseline = Some(resident_kib(agent.pid())?.0);
        }
    }
    let container_time = started.elapsed();
    let end = resident_kib(agent.pid())?.0;
    let baseline = baseline
        .with_context(|| format!("fewer than {WARM_UP} cycles: no memory sample to compare"))?;
    let drift = end as i64 - baseline as i64;

    // Nothing left: a plan from Docker's state now is what the kernel holds.
    let host = docker.docker_host();
    let output = docker
        .host
        .command(enforcer.to_str().expect("utf-8 path"))
        .args(["apply", "--dry-run"])
        .env("DOCKER_HOST", &host)
        .output()?;
    ensure!(
        output.status.code() == Some(0),
        "after the soak the kernel's table differs from the plan: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    line(
        &format!("soak: {networks} network create/destroy cycles"),
        format!("{:.1} s, every step enforced", network_time.as_secs_f64()),
        None,
    );
    line(
        &format!("soak: {containers} container start/stop cycles"),
        format!("{:.1} s, every step enforced", container_time.as_secs_f64()),
        None,
    );
    line(
        "soak: agent RSS drift (end minus after warm-up)",
        format!(
            "{drift:+} KiB ({baseline} -> {end} KiB; goal within {} MiB)",
            DRIFT_KIB / 1024
        ),
        Some(drift.abs() <= DRIFT_KIB),
    );
    line(
        "soak: the table at the end",
        "what a fresh plan from Docker says (dry-run: no change)".into(),
        Some(true),
    );
    Ok(())
}

/// Whether `set` of the agent's table holds an element starting with `element`.
fn has(docker: &Dockerd, set: &str, element: &str) -> bool {
    docker
        .set_elements(set)
        .iter()
        .any(|e| e.split(' ').next() == Some(element))
}
