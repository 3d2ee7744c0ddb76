//! `enforcer run`: the daemon. It enforces the static policy at once (every Docker bridge
//! denied until classified), then follows Docker: a snapshot, then the event stream, each batch
//! of events giving one recomputed table, applied only when it differs. Losing Docker changes
//! nothing in the kernel; the Docker task reconnects with capped backoff and resynchronises from
//! a fresh snapshot. A periodic check restores the table when someone else changed it.
//!
//! SIGTERM and SIGINT end the process and leave the rules in place (fail-closed); SIGHUP
//! reloads the policy file, keeping the old policy when the new one is invalid.
//!
//! For systemd: READY=1 once the first table is in the kernel (before Docker is read, so a unit
//! ordered before docker.service never waits for it), WATCHDOG=1 while the loop runs, and the
//! state file (last Docker state enforced) is re-enforced at start, before Docker answers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use enforcer_core::docker::{classify, DockerState, Skipped};
use enforcer_core::planner::plan;
use enforcer_core::policy::{DockerSettings, Policy};
use enforcer_core::ruleset::Ruleset;
use enforcer_core::topology::{self, Topology};
use enforcer_docker::{since_now, Change, DockerError, DockerSource, ProxySelector};
use enforcer_nft::{ApplyOutcome, Nftables};
use futures_util::StreamExt;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::load_policy;
use crate::state_file::{now_unix, show_time, DockerConnection, StateFile};

/// How often the kernel's table is checked against the desired one (one GETGEN when nothing
/// changed; a read-back only when some program committed meanwhile).
const VERIFY_PERIOD: Duration = Duration::from_secs(5);
/// First and longest wait between attempts to reach Docker.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Events named in one log line; the rest are counted.
const REASONS_SHOWN: usize = 5;
/// At most this many queued events are folded into one transaction.
const BATCH_MAX: usize = 1000;

/// What the Docker task reports to the main loop.
enum DockerUpdate {
    /// Connected and read a full snapshot.
    Snapshot { state: DockerState, api: String },
    /// Events were processed; the state after them.
    Changed {
        state: DockerState,
        reasons: Vec<String>,
    },
    /// Docker could not be reached or was lost; the last state stays in force.
    Lost { error: String, retry_in: Duration },
}

/// The daemon's state.
struct Agent {
    config: Option<PathBuf>,
    policy: Policy,
    docker: DockerState,
    nft: Nftables,
    /// The topology and table computed from `policy` and `docker` (recomputed only when one of
    /// them changes), and what the kernel was last made to hold, for change summaries.
    desired: (Topology, Ruleset),
    enforced: Topology,
    skipped: Vec<Skipped>,
    state_path: PathBuf,
    connection: DockerConnection,
    /// When and why the table was last applied (seconds since the epoch).
    last_applied: (u64, String),
}

impl Agent {
    /// Recomputes the desired table after the policy or the Docker state changed, then
    /// enforces it.
    fn recompute(&mut self, reason: &str) -> Result<()> {
        let (desired, skipped) = desired_table(&self.policy, &self.docker, &self.skipped);
        self.desired = desired;
        self.skipped = skipped;
        self.enforce(reason)
    }

    /// Applies the desired table if the kernel's differs (a no-op costs one GETGEN while no one
    /// committed anything). One log line per applied change.
    fn enforce(&mut self, reason: &str) -> Result<()> {
        let (topology, ruleset) = &self.desired;
        let started = Instant::now();
        let outcome = self.nft.apply(ruleset).with_context(|| {
            format!(
                "applying table inet {} ({reason}); the rules in force before stay in force",
                self.policy.table.name
            )
        })?;
        if let ApplyOutcome::Applied {
            messages, changes, ..
        } = outcome
        {
            let mut summary = topology::changes(&self.enforced, topology);
            if summary.is_empty() {
                // Same topology, different table: the kernel's copy had been altered, or the
                // table settings changed.
                summary = changes;
            }
            tracing::info!(
                reason,
                messages,
                micros = started.elapsed().as_micros() as u64,
                "applied: {}",
                summary.join("; ")
            );
            self.last_applied = (now_unix(), reason.to_string());
            self.save();
        }
        self.enforced = topology.clone();
        Ok(())
    }

    /// Writes the state file; a failure is logged, never fatal (enforcing matters more).
    fn save(&self) {
        let (applied_unix, reason) = &self.last_applied;
        let state = StateFile::new(
            &self.policy.table.name,
            *applied_unix,
            reason,
            self.connection.clone(),
            self.docker.clone(),
        );
        if let Err(error) = state.store(&self.state_path) {
            tracing::error!("{error:#}");
        }
    }

    /// Records Docker's connection state, and saves it when it changed.
    fn set_connection(&mut self, error: Option<String>) {
        let connected = error.is_none();
        if (self.connection.connected, &self.connection.error) != (connected, &error) {
            if self.connection.connected != connected {
                self.connection.since_unix = now_unix();
            }
            self.connection.connected = connected;
            self.connection.error = error;
            self.save();
        }
    }
}

/// The topology and table that `policy` and `docker` call for, and the Docker objects skipped
/// (each logged once: those not already in `known_skipped`).
fn desired_table(
    policy: &Policy,
    docker: &DockerState,
    known_skipped: &[Skipped],
) -> ((Topology, Ruleset), Vec<Skipped>) {
    let classified = classify(policy, docker);
    for item in classified
        .skipped
        .iter()
        .filter(|s| !known_skipped.contains(s))
    {
        tracing::warn!(object = %item.object, "skipped: {}", item.reason);
    }
    let ruleset = plan(&policy.table, &classified.topology);
    ((classified.topology, ruleset), classified.skipped)
}

/// The state file, or nothing (reported) when it is missing or unreadable.
fn last_known_state(path: &Path) -> Option<StateFile> {
    match StateFile::load(path) {
        Ok(Some(state)) => {
            tracing::info!(
                state_file = %path.display(),
                networks = state.docker.networks.len(),
                proxies = state.docker.containers.len(),
                "re-enforcing the Docker state last applied at {} ({}) until Docker answers",
                show_time(state.applied_unix),
                state.reason
            );
            Some(state)
        }
        Ok(None) => {
            tracing::warn!(
                state_file = %path.display(),
                "no state file (first start?): enforcing the static policy, every Docker \
                 bridge denied, until Docker answers"
            );
            None
        }
        Err(error) => {
            tracing::error!(
                "{error:#}; enforcing the static policy, every Docker bridge denied, until \
                 Docker answers"
            );
            None
        }
    }
}

/// Tells systemd (when it started us) something; a failure is logged.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(state) {
        tracing::warn!("cannot notify systemd: {error}");
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(config: Option<PathBuf>, state_file: Option<PathBuf>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(daemon(config, state_file))
}

async fn daemon(config: Option<PathBuf>, state_file: Option<PathBuf>) -> Result<()> {
    let policy = load_policy(config.as_ref())?;
    crate::require_net_admin()?;
    let nft = Nftables::open()?;
    // The netlink socket is open: from here on, CAP_NET_ADMIN is all the agent holds.
    crate::privileges::keep_only_net_admin()
        .context("dropping every capability but CAP_NET_ADMIN")?;
    let state_path = state_file.unwrap_or_else(crate::state_file::default_path);
    let previous = last_known_state(&state_path);
    let last_applied = previous
        .as_ref()
        .map(|p| (p.applied_unix, p.reason.clone()))
        .unwrap_or_else(|| (now_unix(), "start".to_string()));
    let docker = previous.map(|p| p.docker).unwrap_or_default();
    // Before Docker is read: the static policy, the last known Docker state, and every other
    // Docker bridge denied.
    let (desired, skipped) = desired_table(&policy, &docker, &[]);
    let mut agent = Agent {
        config,
        docker,
        connection: DockerConnection {
            connected: false,
            host: enforcer_docker::host_from_env(),
            since_unix: now_unix(),
            error: Some("not connected yet".into()),
        },
        policy,
        nft,
        desired,
        enforced: Topology::default(),
        skipped,
        state_path,
        last_applied,
    };
    agent.enforce("start, before reading Docker")?;
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("enforcing; waiting for Docker"),
    ]);
    tracing::info!(
        table = %agent.policy.table.name,
        "enforcing; Docker bridges stay denied until classified"
    );
    // systemd's watchdog, when set, is pinged at half its period (at most every 5 s).
    let watchdog = sd_notify::watchdog_enabled();
    let period = watchdog.map_or(VERIFY_PERIOD, |w| (w / 2).min(VERIFY_PERIOD));

    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut verify = tokio::time::interval(period);
    verify.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (sender, mut updates) = mpsc::unbounded_channel();
    let mut watcher = spawn_watcher(&agent.policy.docker, sender.clone());

    loop {
        tokio::select! {
            _ = sigterm.recv() => return stop("SIGTERM"),
            _ = sigint.recv() => return stop("SIGINT"),
            _ = sighup.recv() => {
                match load_policy(agent.config.as_ref()) {
                    Ok(policy) => {
                        let docker_changed = policy.docker != agent.policy.docker;
                        agent.policy = policy;
                        if docker_changed {
                            if let Some(task) = watcher.take() {
                                task.abort();
                            }
                            watcher = spawn_watcher(&agent.policy.docker, sender.clone());
                        }
                        agent.recompute("policy reloaded (SIGHUP)")?;
                        tracing::info!("policy reloaded");
                    }
                    Err(error) => tracing::error!(
                        "policy reload failed, the previous policy stays in force: {error:#}"
                    ),
                }
            }
            _ = verify.tick() => {
                agent.enforce("periodic check of the kernel's table")?;
                if watchdog.is_some() {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
            Some(update) = updates.recv() => {
                // Fold whatever else is already queued into the same transaction.
                let mut reasons = Vec::new();
                let mut next = Some(update);
                while let Some(update) = next {
                    match update {
                        DockerUpdate::Snapshot { state, api } => {
                            tracing::info!(
                                api,
                                networks = state.networks.len(),
                                proxies = state.containers.len(),
                                "Docker connected; full resynchronisation"
                            );
                            agent.docker = state;
                            agent.set_connection(None);
                            notify(&[sd_notify::NotifyState::Status("enforcing; following Docker")]);
                            reasons.push("Docker snapshot".to_string());
                        }
                        DockerUpdate::Changed { state, reasons: more } => {
                            agent.docker = state;
                            reasons.extend(more);
                        }
                        DockerUpdate::Lost { error, retry_in } => {
                            tracing::warn!(
                                retry_in_ms = retry_in.as_millis() as u64,
                                "{error}; the rules in force stay, retrying"
                            );
                            agent.set_connection(Some(error));
                        }
                    }
                    next = updates.try_recv().ok();
                }
                if !reasons.is_empty() {
                    agent.recompute(&summarise(&reasons))?;
                }
            }
        }
    }
}

/// At most [`REASONS_SHOWN`] reasons, then how many more.
fn summarise(reasons: &[String]) -> String {
    let mut text = reasons
        .iter()
        .take(REASONS_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if reasons.len() > REASONS_SHOWN {
        text.push_str(&format!(
            " and {} more events",
            reasons.len() - REASONS_SHOWN
        ));
    }
    text
}

fn stop(signal: &str) -> Result<()> {
    tracing::info!("{signal}: exiting; the table stays in the kernel, enforced");
    Ok(())
}

/// Starts the Docker task when the policy enables Docker.
fn spawn_watcher(
    settings: &DockerSettings,
    updates: mpsc::UnboundedSender<DockerUpdate>,
) -> Option<JoinHandle<()>> {
    if !settings.enabled {
        tracing::info!("Docker watching is disabled by the policy: static entries only");
        return None;
    }
    let proxies = ProxySelector::from(settings);
    Some(tokio::spawn(watch_docker(
        enforcer_docker::host_from_env(),
        proxies,
        updates,
    )))
}

/// Connects, snapshots, follows events; on any failure reports it and starts over after a
/// capped backoff. Ends when the main loop is gone.
async fn watch_docker(
    host: String,
    proxies: ProxySelector,
    updates: mpsc::UnboundedSender<DockerUpdate>,
) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let error = match follow(&host, &proxies, &updates, &mut backoff).await {
            Ok(()) => return, // the main loop has gone
            Err(error) => error,
        };
        let lost = DockerUpdate::Lost {
            error: error.to_string(),
            retry_in: backoff,
        };
        if updates.send(lost).is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Aborts a task when dropped (the event reader dies with its connection).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection's life: snapshot, then events until the stream fails. `Ok` only when the
/// receiver is gone.
async fn follow(
    host: &str,
    proxies: &ProxySelector,
    updates: &mpsc::UnboundedSender<DockerUpdate>,
    backoff: &mut Duration,
) -> Result<(), DockerError> {
    let source = DockerSource::connect(host, proxies.clone()).await?;
    // Events from just before the snapshot on are replayed, so nothing between the snapshot
    // and the stream is lost (refreshing an object twice is harmless).
    let since = since_now();
    let mut state = source.snapshot().await?;
    *backoff = BACKOFF_FIRST;
    let snapshot = DockerUpdate::Snapshot {
        state: state.clone(),
        api: source.api_version(),
    };
    if updates.send(snapshot).is_err() {
        return Ok(());
    }
    // A reader task drains the stream into a queue, also while this task waits for Docker's
    // answers to refreshes; whatever is queued when a batch starts joins that batch.
    let (queue, mut queued) = mpsc::unbounded_channel();
    let stream = source.changes(&since);
    let reader = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let failed = item.is_err();
            if queue.send(item).is_err() || failed {
                return;
            }
        }
    });
    let _stop_reader = AbortOnDrop(reader);
    while let Some(item) = queued.recv().await {
        let mut batch: Vec<Change> = vec![item?];
        while batch.len() < BATCH_MAX {
            match queued.try_recv() {
                Ok(item) => batch.push(item?),
                Err(_) => break,
            }
        }
        let mut reasons = Vec::with_capacity(batch.len());
        for change in &batch {
            source.refresh(&mut state, change).await?;
            reasons.push(change.to_string());
        }
        let changed = DockerUpdate::Changed {
            state: state.clone(),
            reasons,
        };
        if updates.send(changed).is_err() {
            return Ok(());
        }
    }
    Err(DockerError::StreamEnded(host.to_string()))
}
