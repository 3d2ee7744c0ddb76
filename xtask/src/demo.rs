//! `cargo xtask demo`: the first thing a newcomer runs. Installs what is missing, builds, brings
//! up a sealed Docker host with ThreeGate's topology made through a private dockerd, flushes
//! Docker's own isolation chains (so what is shown is the enforcer alone), runs `enforcer run`
//! on the embedded default policy, and prints the measured reachability matrix next to the
//! table the kernel holds. Everything it made is removed at the end, also on failure.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use enforcer_harness::docker::{Dockerd, ThreeGate};
use enforcer_harness::matrix::{measure, mismatches, report, threegate_matrix};
use enforcer_harness::spec::{internet, Family};
use enforcer_harness::{enforcer_bin, repo_file, require_root};

/// Runs the demo; fails when a flow does not match the policy.
pub fn run() -> Result<()> {
    require_root();
    println!("== installing what is missing (tests/setup.sh)");
    let status = Command::new("bash")
        .arg(repo_file("tests/setup.sh"))
        .status()
        .context("running tests/setup.sh")?;
    ensure!(status.success(), "tests/setup.sh failed");
    println!("== building enforcer");
    let binary = enforcer_bin();

    println!("== starting a private dockerd in a sealed network namespace");
    let docker = Dockerd::start();
    println!("== creating ThreeGate through Docker: llmnet, fetchnet (internal), egressnet (label enforcer.managed=true), othernet (unmanaged)");
    let gate = ThreeGate::create(&docker);
    ThreeGate::flush_docker_isolation(&docker);
    if docker.firewall() {
        println!("== Docker's DOCKER-ISOLATION chains flushed: only the enforcer stands between the networks and the internet");
    } else {
        println!("== dockerd runs with --iptables=false: Docker wrote no firewall rules, only the enforcer stands between the networks and the internet");
    }
    println!(
        "== running {} run (embedded default policy)",
        binary.display()
    );
    let agent = docker.start_agent(&[]);
    if !agent.wait_for_log("+proxy proxy", Duration::from_secs(20)) {
        bail!(
            "the agent did not enforce Docker's topology:\n{}",
            agent.log()
        );
    }
    let way_out = std::net::SocketAddr::new(internet(Family::V4), 443);
    if !gate.wait_open("proxy", way_out, Duration::from_secs(15)) {
        bail!("the proxy never reached the internet; the test network did not come up");
    }

    let results = measure(&gate, &threegate_matrix());
    let bad = mismatches(&results).len();
    println!("\n== the agent's log\n{}", agent.log());
    for family in ["inet", "bridge"] {
        println!(
            "== table {family} enforcer, as the kernel holds it (nft list)\n{}",
            String::from_utf8_lossy(
                &docker
                    .host
                    .exec("nft", &["list", "table", family, "enforcer"])
                    .stdout
            )
        );
    }
    println!("== reachability, measured with real TCP and UDP flows (ok: as the policy says)");
    print!("{}", report(&results));
    println!(
        "\n{} flows, {} as the policy says, {bad} not",
        results.len(),
        results.len() - bad
    );
    println!("== cleaning up (containers, dockerd, namespaces)");
    drop(agent);
    drop(gate);
    drop(docker);
    ensure!(bad == 0, "{bad} flow(s) did not match the policy");
    Ok(())
}
