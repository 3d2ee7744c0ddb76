//! Tightening -> connections cut: on ThreeGate's Docker-like host with llmnet unmanaged, core
//! (llmnet) and outsider (an unmanaged network) each open N UDP flows to the internet's
//! resolver; the agent's policy then becomes ThreeGate's, which manages llmnet. The agent lists
//! the 2N tracked connections, judges each, and deletes core's N. The figure is the agent's own
//! (its log's `micros` for the cut: list, judge, delete), after the commit of the new table.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use enforcer_harness::host::{threegate_policy_without, DockerLikeHost};
use enforcer_harness::{repo_file, Agent, TempDir, TempFile};

use super::line;

/// Flows opened per container, per run.
const FLOWS: [usize; 2] = [1_000, 10_000];
/// The internet's resolver (one of the spec's listeners).
const RESOLVER: &str = "203.0.113.10:53";

/// Runs the cut for each size of [`FLOWS`].
pub fn cut(enforcer: &Path) -> Result<()> {
    let host = DockerLikeHost::threegate();
    let dir = TempDir::new("bench-cut");
    let loose = threegate_policy_without("llmnet");
    let policy = TempFile::new(".toml", &loose);
    let agent = Agent::start(
        &host.host,
        dir.path(),
        enforcer,
        &["--config", policy.path()],
        &[],
    );
    ensure!(
        agent.wait_for_log("enforcing;", Duration::from_secs(10)),
        "the agent did not start: {}",
        agent.log()
    );
    let tight = std::fs::read_to_string(repo_file("rules/threegate.toml"))?;
    for flows in FLOWS {
        // Loosen (nothing to cut), open the flows, tighten.
        reload(&agent, policy.path(), &loose)?;
        for container in ["core", "outsider"] {
            open_flows(&host, container, flows)?;
        }
        let cuts = agent.lines_with("cut connections").len();
        reload(&agent, policy.path(), &tight)?;
        let cut_line = agent
            .next_line_with("cut connections", cuts, Duration::from_secs(30))
            .with_context(|| format!("no cut logged: {}", agent.log()))?;
        let field = |name: &str| -> Result<u64> {
            let value = cut_line
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .with_context(|| format!("no {name} in: {cut_line}"))?;
            Ok(value.parse()?)
        };
        let (deleted, micros) = (field("deleted")?, field("micros")?);
        ensure!(
            deleted as usize >= flows,
            "{deleted} cut of core's {flows} flows: {cut_line}"
        );
        line(
            &format!("tightening -> cut: {flows} of {} tracked flows", 2 * flows),
            format!("{:.1} ms (list, judge, delete)", micros as f64 / 1000.0),
            None,
        );
    }
    Ok(())
}

/// Writes `text` as the policy and reloads the agent; waits for the reload.
fn reload(agent: &Agent, path: &str, text: &str) -> Result<()> {
    ensure!(
        agent.reload_with(Path::new(path), text, Duration::from_secs(30)),
        "the reload was not logged: {}",
        agent.log()
    );
    Ok(())
}

/// The first source port of the flows (below the ephemeral range, so none is reused).
const FIRST_PORT: u16 = 20_000;

/// Opens `flows` UDP flows from `container` to the resolver, each from a port of its own.
fn open_flows(host: &DockerLikeHost, container: &str, flows: usize) -> Result<()> {
    let ns = host.containers[container].borrowed();
    let resolver: SocketAddr = RESOLVER.parse()?;
    ns.enter(move || -> Result<()> {
        for port in (FIRST_PORT..).take(flows) {
            let socket = UdpSocket::bind(("0.0.0.0", port))?;
            socket.send_to(b"flow", resolver)?;
        }
        Ok(())
    })
}
