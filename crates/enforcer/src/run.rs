//! `enforcer run`: the daemon. It enforces the static policy at once (every Docker bridge
//! denied until classified), then follows Docker: a snapshot, then the event stream, each batch
//! of events giving one recomputed table, applied only when it differs. Losing Docker changes
//! nothing in the kernel; the Docker task reconnects with capped backoff and resynchronises from
//! a fresh snapshot. Another program's change to the tables is undone as soon as nftables'
//! monitor reports it, and a periodic check restores them should a report be lost.
//!
//! SIGTERM and SIGINT end the process and leave the rules in place (fail-closed); SIGHUP
//! reloads the policy file, keeping the old policy when the new one is invalid.
//!
//! For systemd: READY=1 once the first table is in the kernel (before Docker is read, so a unit
//! ordered before docker.service never waits for it), WATCHDOG=1 while the loop runs, and the
//! state file (last Docker state enforced) is re-enforced at start, before Docker answers.
//!
//! Layout: [`Agent`] holds the daemon's logic (what each signal, tick and Docker update does)
//! over a [`Kernel`], so `run/tests.rs` runs it against a recording fake without root; the
//! main loop here only wires signals, the timer and the Docker task (`run/docker_watch.rs`) to
//! it.

mod audit;
mod cut;
mod docker_watch;
mod metrics_server;
mod port_watch;
mod restore_budget;
mod start;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use enforcer_core::binding::{BoundPort, PortGuard};
use enforcer_core::docker::{classify_after, Classified, DockerState, SERVICE_LABEL, TASK_LABEL};
use enforcer_core::planner::plan_tables;
use enforcer_core::policy::{DockerSettings, Policy};
use enforcer_core::ports::BridgePort;
use enforcer_core::ruleset::Tables;
use enforcer_core::topology::{self, Topology};
use enforcer_nft::monitor::{Monitor, MonitorEvent};
use enforcer_nft::nflog::{Batch, DropLog};
use enforcer_nft::{ApplyOutcome, NftError, Nftables};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::judge;
use crate::kernel::Kernel;
use crate::metrics::AgentMetrics;
use crate::read_policy;
use crate::state_file::{now_unix, DockerConnection, StateFile};
use docker_watch::{watch_docker, DockerUpdate};
use port_watch::watch_ports;
use restore_budget::RestoreBudget;
use start::{enforce_fallback, last_known_state};

/// How often the kernel's table is checked against the desired one (one GETGEN when nothing
/// changed; a read-back only when some program committed meanwhile).
const VERIFY_PERIOD: Duration = Duration::from_secs(5);
/// How long a metrics text read from the kernel serves later scrapes.
const SCRAPE_REUSE: Duration = Duration::from_secs(1);
/// Events named in one log line; the rest are counted.
const REASONS_SHOWN: usize = 5;
/// How long the start waits for the first report of the bridge ports.
const FIRST_PORTS_WITHIN: Duration = Duration::from_secs(2);
/// Changes named in one `applied:` line; the rest are counted (20,000 networks must not make
/// one line of a megabyte).
const CHANGES_SHOWN: usize = 50;

/// The daemon's state, over any [`Kernel`].
struct Agent<K> {
    config: Option<PathBuf>,
    policy: Policy,
    /// The text `policy` was read from (none for the embedded default), saved in the state
    /// file as the last good policy.
    policy_text: Option<String>,
    docker: DockerState,
    /// The bridge ports the link watch last reported (none before its first report).
    ports: Vec<BridgePort>,
    kernel: K,
    /// The topology and tables computed from `policy`, `docker` and `ports` (recomputed only
    /// when one of them changes), and what the kernel was last made to hold, for change
    /// summaries.
    desired: (Arc<Topology>, Tables),
    /// Which ports the desired bridge table binds to which container.
    guard: PortGuard,
    /// The topology last enforced: the desired one's, shared, once it is applied.
    enforced: Arc<Topology>,
    /// What the last classification skipped, remarked on and enforced (each skip and remark
    /// is logged once; enforced networks keep winning conflicts).
    seen: Classified,
    state_path: PathBuf,
    connection: DockerConnection,
    /// When and why the table was last applied (seconds since the epoch).
    last_applied: (u64, String),
    /// Whether the kernel was made to hold `desired` (or found holding it) since it was
    /// computed: then the periodic check only asks whether anyone committed since.
    desired_enforced: bool,
    /// Whether the tracked connections were judged by a table this agent enforced (after the
    /// first apply of the process, and after each apply that changed the table).
    connections_judged: bool,
    /// Whether the last attempt to cut refused connections failed (logged once at ERROR).
    cut_failing: bool,
    /// How many more restores the monitor's reports may cause at once (another writer
    /// fighting over the table must not make the agent spin).
    restores: RestoreBudget,
    /// A restore held back by `restores`: when it is due, and the changes it undoes.
    deferred_restore: Option<(Instant, Vec<String>)>,
    /// The drop audit: what was logged lately, and what is being counted.
    audit: audit::Audit,
    /// What the agent counts for its metrics.
    metrics: AgentMetrics,
    /// Whether Docker was ever connected (a later connection is a reconnect).
    docker_seen: bool,
    /// The last metrics text and when it was read: scrapes within [`SCRAPE_REUSE`] of it get
    /// it again, so that scraping as fast as one likes cannot keep the agent dumping tables.
    scraped: Option<(Instant, String)>,
}

impl<K: Kernel> Agent<K> {
    /// The agent before Docker is read: the static policy, the Docker state of the state file
    /// `previous` (if any), and every other Docker bridge denied. Nothing is applied yet.
    fn new(
        config: Option<PathBuf>,
        (policy, policy_text): (Policy, Option<String>),
        kernel: K,
        state_path: PathBuf,
        previous: Option<StateFile>,
    ) -> Agent<K> {
        let last_applied = previous
            .as_ref()
            .map(|p| (p.applied_unix, p.reason.clone()))
            .unwrap_or_else(|| (now_unix(), "start".to_string()));
        let bound = previous
            .as_ref()
            .map(|p| p.bound_ports.clone())
            .unwrap_or_default();
        let (docker, known) = previous.map(StateFile::enforced).unwrap_or_default();
        let ports = Vec::new();
        let (desired, guard, seen) = desired_table(&policy, &docker, (&ports, &bound), &known);
        Agent {
            ports,
            guard,
            config,
            docker,
            connection: DockerConnection {
                connected: false,
                host: enforcer_docker::host_from_env(),
                since_unix: now_unix(),
                error: Some("not connected yet".into()),
            },
            policy,
            policy_text,
            kernel,
            desired,
            enforced: Arc::default(),
            seen,
            state_path,
            last_applied,
            desired_enforced: false,
            connections_judged: false,
            cut_failing: false,
            restores: RestoreBudget::new(Instant::now()),
            deferred_restore: None,
            audit: audit::Audit::default(),
            metrics: AgentMetrics::default(),
            docker_seen: false,
            scraped: None,
        }
    }

    /// Recomputes the desired table after the policy or the Docker state changed, then
    /// enforces it.
    fn recompute(&mut self, reason: &str) -> Result<()> {
        self.replan();
        self.enforce(reason)
    }

    /// Recomputes the desired tables from the policy, Docker's state and the ports.
    fn replan(&mut self) {
        let ports = (self.ports.as_slice(), self.guard.bound.as_slice());
        let (desired, guard, seen) = desired_table(&self.policy, &self.docker, ports, &self.seen);
        self.desired = desired;
        self.desired_enforced = false;
        self.guard = guard;
        self.seen = seen;
    }

    /// Takes the link watch's report of the bridge ports; recomputes and enforces when they
    /// changed (a bound port is enforced as soon as it shows up).
    fn take_ports(&mut self, ports: Vec<BridgePort>) -> Result<()> {
        if ports == self.ports {
            return Ok(());
        }
        self.ports = ports;
        self.recompute("bridge ports changed")
    }

    /// Applies the desired table if the kernel's differs (a no-op costs one GETGEN while no one
    /// committed anything). One log line per applied change.
    fn enforce(&mut self, reason: &str) -> Result<()> {
        let (topology, tables) = &self.desired;
        let started = Instant::now();
        // Enforced as desired, and yet a transaction: someone had changed the kernel's.
        let repair = self.desired_enforced;
        let read_backs = self.kernel.read_backs();
        let outcome = self.kernel.apply(tables).with_context(|| {
            format!(
                "applying tables {} ({reason}); the rules in force before stay in \
                 force",
                self.policy.table.name
            )
        })?;
        // An apply or a read-back of a large table leaves freed memory behind.
        let heavy = matches!(outcome, ApplyOutcome::Applied { .. })
            || self.kernel.read_backs() != read_backs;
        if let ApplyOutcome::Applied {
            messages, changes, ..
        } = outcome
        {
            self.connections_judged = false;
            self.metrics.applies.inc();
            self.metrics.apply_messages.inc_by(messages as u64);
            self.metrics
                .apply_seconds
                .observe(started.elapsed().as_secs_f64());
            if repair {
                self.metrics.repairs.inc();
            }
            tracing::info!(
                reason,
                messages,
                micros = started.elapsed().as_micros() as u64,
                "applied: {}",
                applied_summary(&self.enforced, topology, changes)
            );
            self.last_applied = (now_unix(), reason.to_string());
            self.save();
        }
        if heavy {
            release_freed_memory();
        }
        self.enforced = Arc::clone(&self.desired.0);
        self.desired_enforced = true;
        if let Some((_, held)) = self.deferred_restore.take() {
            // This apply undid what the held-back restore was for.
            tracing::warn!(
                "another program changed table {} {} times while restores were held back: {}; \
                 undone by this apply ({reason})",
                self.policy.table.name,
                held.len(),
                summarise(&held, " | ", "changes"),
            );
        }
        if !self.connections_judged {
            self.connections_judged = self.cut_refused();
        }
        Ok(())
    }

    /// Deletes the tracked connections the table just enforced refuses, so that their next
    /// packet meets it as a new one; logs what was cut. Whether that worked: a failure is
    /// logged (the table is in force either way), and the periodic check tries again.
    fn cut_refused(&mut self) -> bool {
        let (topology, tables) = &self.desired;
        let interfaces = judge::Interfaces::of(topology, &self.docker);
        let local = match judge::local_addresses() {
            Ok(local) => local,
            Err(error) => {
                self.cut_failed(&format!("the host's addresses cannot be read: {error}"));
                return false;
            }
        };
        let judge = judge::Judge {
            inet: &tables.inet,
            interfaces: &interfaces,
            local: &local,
        };
        let started = Instant::now();
        let cut = self
            .kernel
            .connections(&mut |c| cut::refuses(&judge, c).is_some())
            .and_then(|refused| Ok((self.kernel.forget(&refused)?, refused)));
        if cut.is_ok() && self.cut_failing {
            tracing::info!("tracked connections can be cut again");
        }
        match cut {
            Ok((0, _)) => self.cut_failing = false,
            Ok((deleted, refused)) => {
                self.cut_failing = false;
                let shown: Vec<String> = refused
                    .iter()
                    .take(REASONS_SHOWN)
                    .map(|c| {
                        let rule = cut::refuses(&judge, c).unwrap_or_default();
                        format!("{} (\"{rule}\")", cut::describe(c))
                    })
                    .collect();
                let more = match refused.len().saturating_sub(REASONS_SHOWN) {
                    0 => String::new(),
                    more => format!(" and {more} more"),
                };
                tracing::info!(
                    deleted,
                    micros = started.elapsed().as_micros() as u64,
                    "cut connections the table now refuses: {}{more}",
                    shown.join(", ")
                );
            }
            Err(error) => {
                self.cut_failed(&error.to_string());
                return false;
            }
        }
        true
    }

    /// Logs a failed cut: at ERROR the first time, then at DEBUG until one works again.
    fn cut_failed(&mut self, error: &str) {
        if self.cut_failing {
            tracing::debug!("cutting refused connections still fails: {error}");
            return;
        }
        self.cut_failing = true;
        tracing::error!(
            "could not cut the tracked connections the table now refuses ({error}); they stay \
             open until they end or a later check cuts them, new ones are refused (logged once \
             until it works again)"
        );
    }

    /// The periodic check: restores the desired table when someone else changed the kernel's.
    fn check(&mut self) -> Result<()> {
        self.check_because("periodic check of the kernel's table")
    }

    /// Restores the desired table if anyone committed since it was last enforced; `reason` is
    /// logged when something had to be restored.
    fn check_because(&mut self, reason: &str) -> Result<()> {
        // Nothing replanned and nobody committed: one GETGEN, not a fingerprint of the tables
        // (2 ms for 10,000 subnets).
        if self.desired_enforced && self.kernel.still_verified().unwrap_or(false) {
            if !self.connections_judged {
                self.connections_judged = self.cut_refused();
            }
            return Ok(());
        }
        self.enforce(reason)
    }

    /// Takes what the nftables monitor saw at `now`. A commit by another program that changed
    /// a table named like ours is undone at once, in one transaction, and logged at WARN with
    /// what it did; past the restore budget, the restore waits until the budget allows it (see
    /// [`Agent::deferred_restore_due`]). Our own commits and other tables' are ignored. Lost
    /// notifications (an overflow) may hide a commit: then the kernel's tables are checked as
    /// the periodic check does.
    fn take_commits(&mut self, events: Vec<MonitorEvent>, now: Instant) -> Result<()> {
        let own = self.kernel.port_id();
        let table = &self.policy.table.name;
        let foreign: Vec<String> = events
            .iter()
            .filter_map(|event| match event {
                MonitorEvent::Committed(commit) if commit.port != own && commit.touches(table) => {
                    Some(commit.describe())
                }
                _ => None,
            })
            .collect();
        if !foreign.is_empty() {
            if let Some((_, held)) = &mut self.deferred_restore {
                held.extend(foreign);
                return Ok(());
            }
            if let Err(wait) = self.restores.spend(now) {
                tracing::debug!(
                    "another program changed table {table}: {}; restoring it in {} ms (restore \
                     budget spent)",
                    foreign.join(" | "),
                    wait.as_millis()
                );
                self.deferred_restore = Some((now + wait, foreign));
                return Ok(());
            }
            tracing::warn!(
                "another program changed table {table}: {}; restoring it",
                foreign.join(" | ")
            );
            return self.enforce("restoring what another program changed");
        }
        if events.contains(&MonitorEvent::Overflowed) {
            tracing::info!(
                "nftables notifications were lost (the monitor's queue overflowed); checking the \
                 table"
            );
            return self.check_because("nftables notifications were lost; checking the table");
        }
        Ok(())
    }

    /// The first apply. A kernel that refuses the audit chains' log rules (no nfnetlink_log, or
    /// no nft log or limit expression) must not leave the host without a table: then the
    /// tables are planned again without them, and the refusal is logged at ERROR.
    fn enforce_at_start(&mut self, reason: &str) -> Result<()> {
        let Err(error) = self.enforce(reason) else {
            return Ok(());
        };
        if !self.policy.table.audit.enabled {
            return Err(error);
        }
        tracing::error!(
            "{error:#}; applying the tables without the drop audit's log rules (a kernel without \
             nfnetlink_log, or nft's log and limit expressions, refuses them; [audit] enabled = \
             false says so for good)"
        );
        self.policy.table.audit.enabled = false;
        self.replan();
        self.enforce(&format!("{reason}, without the drop audit"))
    }

    /// Writes what the drop audit read at `now`, named after the tables last planned.
    fn take_drops(&mut self, batch: Batch, now: Instant) {
        let named_after = (&self.desired.0, &self.guard);
        let lines = self
            .audit
            .take(batch, named_after, now, &audit::interface_name);
        self.write_drops(&lines);
    }

    /// Writes the drop audit's summaries of the interval ending at `now`.
    fn summarise_drops(&mut self, now: Instant) {
        let lines = self.audit.summarise(now);
        self.write_drops(&lines);
    }

    /// Writes the drop audit's `lines`, and counts them for the metrics.
    fn write_drops(&mut self, lines: &[audit::Line]) {
        for line in lines {
            match line {
                audit::Line::Dropped { drop, count } => self.metrics.heard(
                    drop.reason,
                    drop.src_network.as_deref().unwrap_or(""),
                    drop.src_role.as_deref().unwrap_or(""),
                    *count,
                ),
                audit::Line::Uncounted(reason, count) => {
                    self.metrics.heard(*reason, "", "", *count)
                }
                audit::Line::Lost(_) => {}
            }
        }
        audit::write(lines);
    }

    /// The metrics text: the kernel's counters now (or as read less than [`SCRAPE_REUSE`]
    /// before `now`), named after the tables last planned, and the agent's own.
    fn metrics_text(&mut self, now: Instant) -> Result<String> {
        if let Some((read, text)) = &self.scraped {
            if now.duration_since(*read) < SCRAPE_REUSE {
                return Ok(text.clone());
            }
        }
        let table = &self.policy.table.name;
        let view = self
            .kernel
            .view(table)
            .with_context(|| format!("reading table {table}'s counters"))?;
        let scrape = crate::metrics::Scrape {
            view: view.as_ref(),
            topology: &self.desired.0,
            bound: &self.guard.bound,
            docker_connected: self
                .policy
                .docker
                .enabled
                .then_some(self.connection.connected),
            last_applied_unix: Some(self.last_applied.0),
        };
        let text = crate::metrics::text(&scrape, Some(&self.metrics))?;
        self.scraped = Some((now, text.clone()));
        Ok(text)
    }

    /// When the restore the budget held back is due, if one is.
    fn deferred_restore_due(&self) -> Option<Instant> {
        self.deferred_restore.as_ref().map(|(due, _)| *due)
    }

    /// Undoes, at `now`, the changes whose restore the budget held back, in one transaction,
    /// with one WARN line for all of them. A failure is left to the periodic check.
    fn restore_deferred(&mut self, now: Instant) -> Result<()> {
        let Some((due, held)) = self.deferred_restore.take() else {
            return Ok(());
        };
        if let Err(wait) = self.restores.spend(now) {
            self.deferred_restore = Some((due.max(now + wait), held));
            return Ok(());
        }
        tracing::warn!(
            "another program changed table {} {} times while restores were held back (at most \
             {} at once, then one every {} ms): {}; restoring it",
            self.policy.table.name,
            held.len(),
            RestoreBudget::BURST,
            RestoreBudget::INTERVAL.as_millis(),
            summarise(&held, " | ", "changes"),
        );
        self.enforce("restoring what another program changed")
    }

    /// SIGHUP: reads the policy file again and enforces it; when it is invalid, logs why and
    /// keeps the previous policy. `restart_watcher` runs, before the new table is applied,
    /// when the new policy's Docker settings differ from the old one's.
    fn reload(&mut self, restart_watcher: impl FnOnce(&DockerSettings)) -> Result<()> {
        match read_policy(self.config.as_ref()) {
            Ok((policy, text)) => {
                let removals = self.policy.removals(&policy);
                if !removals.is_empty() {
                    tracing::warn!("the reloaded policy takes away: {}", removals.join(", "));
                }
                let docker_changed = policy.docker != self.policy.docker;
                self.policy = policy;
                self.policy_text = text;
                if docker_changed {
                    restart_watcher(&self.policy.docker);
                    if !self.policy.docker.enabled {
                        // What Docker last said is no longer followed: it must not stay enforced
                        // (a dead proxy would keep its egress).
                        self.docker = DockerState::default();
                        self.set_connection(Some(
                            "Docker watching is disabled by the policy".into(),
                        ));
                    }
                }
                self.recompute("policy reloaded (SIGHUP)")?;
                tracing::info!("policy reloaded");
            }
            Err(error) => {
                tracing::error!(
                    "policy reload failed, the previous policy stays in force: {error:#}"
                )
            }
        }
        Ok(())
    }

    /// Takes `first` and whatever else is already queued in `queued`, and enforces the result
    /// in one transaction (none when only losses of Docker were queued).
    fn absorb(
        &mut self,
        first: DockerUpdate,
        queued: &mut mpsc::UnboundedReceiver<DockerUpdate>,
    ) -> Result<()> {
        let mut reasons = Vec::new();
        let mut next = Some(first);
        while let Some(update) = next {
            self.take(update, &mut reasons);
            next = queued.try_recv().ok();
        }
        if reasons.is_empty() {
            return Ok(());
        }
        self.recompute(&summarise(&reasons, ", ", "events"))
    }

    /// Takes one update from the Docker task into the agent's state, adding to `reasons` what
    /// calls for a new table.
    fn take(&mut self, update: DockerUpdate, reasons: &mut Vec<String>) {
        match update {
            DockerUpdate::Snapshot { state, api } => {
                tracing::info!(
                    api,
                    networks = state.networks.len(),
                    containers = state.containers.len(),
                    "Docker connected; full resynchronisation"
                );
                self.docker = state;
                if self.docker_seen && !self.connection.connected {
                    self.metrics.docker_reconnects.inc();
                }
                self.docker_seen = true;
                self.set_connection(None);
                notify(&[sd_notify::NotifyState::Status(
                    "enforcing; following Docker",
                )]);
                reasons.push("Docker snapshot".to_string());
            }
            DockerUpdate::Changed {
                state,
                reasons: more,
            } => {
                self.docker = state;
                reasons.extend(more);
            }
            DockerUpdate::Lost { error, retry_in } => {
                // The state file first: whoever reads the log line finds it said there too.
                self.set_connection(Some(error.clone()));
                tracing::warn!(
                    retry_in_ms = retry_in.as_millis() as u64,
                    "{error}; the rules in force stay, retrying"
                );
            }
        }
    }

    /// Writes the state file; a failure is logged, never fatal (enforcing matters more).
    fn save(&self) {
        let (applied_unix, reason) = &self.last_applied;
        // Of a container's labels only the role and Swarm's task names (which `status`
        // shows) matter: the others stay out of the file.
        let mut docker = self.docker.clone();
        let kept = [
            self.policy.docker.role_label.as_str(),
            SERVICE_LABEL,
            TASK_LABEL,
        ];
        for container in docker.containers.values_mut() {
            container
                .labels
                .retain(|key, _| kept.contains(&key.as_str()));
        }
        let mut state = StateFile::new(
            &self.policy.table.name,
            *applied_unix,
            reason,
            self.connection.clone(),
            docker,
        );
        state.policy = self.policy_text.clone();
        state.enforced_networks = self.seen.enforced_networks.clone();
        state.bound_ports = self.guard.bound.clone();
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

/// What an applied transaction changed, for its log line: the topology's changes since the
/// last enforced one, else (same topology, different table: the kernel's copy had been
/// altered, or the table settings changed) the kernel's `changes`.
fn applied_summary(enforced: &Topology, desired: &Topology, changes: Vec<String>) -> String {
    let mut summary = topology::changes(enforced, desired);
    if summary.is_empty() {
        summary = changes;
    }
    let more = summary.len().saturating_sub(CHANGES_SHOWN);
    summary.truncate(CHANGES_SHOWN);
    let mut text = summary.join("; ");
    if more > 0 {
        text.push_str(&format!(
            "; and {more} more changes (`enforcer status` shows the table)"
        ));
    }
    text
}

/// Hands the heap's free pages back to the kernel. An apply, or a read-back, of a large table
/// peaks at twice what the agent keeps afterwards (57 against 27 MiB of heap for 10,000 role
/// members), and glibc's allocator would otherwise keep the difference resident.
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory of the allocator's own heap to the kernel;
    // it touches no allocation in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The topology and tables that `policy`, `docker` and `(ports, bound before)` call for, which
/// ports are bound, and the classification behind them (its skips include the ports').
/// Networks `known` enforced keep winning conflicts, as ports bound before do; its skips and
/// remarks are not logged again (new ones are, at WARN). The bridge table exists only while
/// Docker is followed.
fn desired_table(
    policy: &Policy,
    docker: &DockerState,
    (ports, bound): (&[BridgePort], &[BoundPort]),
    known: &Classified,
) -> ((Arc<Topology>, Tables), PortGuard, Classified) {
    let mut classified = classify_after(policy, docker, &known.enforced_networks);
    let (tables, guard, port_skips) = plan_tables(policy, &classified, docker, ports, bound);
    classified.skipped.extend(port_skips);
    classified.skipped.sort();
    for item in classified
        .skipped
        .iter()
        .filter(|s| !known.skipped.contains(s))
    {
        tracing::warn!(object = %item.object, "skipped: {}", item.reason);
    }
    for item in classified
        .remarks
        .iter()
        .filter(|s| !known.remarks.contains(s))
    {
        tracing::warn!(object = %item.object, "{}", item.reason);
    }
    let topology = Arc::new(std::mem::take(&mut classified.topology));
    ((topology, tables), guard, classified)
}

/// At most [`REASONS_SHOWN`] items joined by `separator`, then how many more `things`.
fn summarise(items: &[String], separator: &str, things: &str) -> String {
    let mut text = items[..items.len().min(REASONS_SHOWN)].join(separator);
    if items.len() > REASONS_SHOWN {
        text.push_str(&format!(
            " and {} more {things}",
            items.len() - REASONS_SHOWN
        ));
    }
    text
}

/// Tells systemd (when it started us) something; a failure is logged.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(state) {
        tracing::warn!("cannot notify systemd: {error}");
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(
    config: Option<PathBuf>,
    state_file: Option<PathBuf>,
    metrics_listen: Option<SocketAddr>,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(daemon(config, state_file, metrics_listen))
}

/// Starts the agent: the first table in the kernel before Docker is read, READY=1, then the
/// main loop.
async fn daemon(
    config: Option<PathBuf>,
    state_file: Option<PathBuf>,
    metrics_listen: Option<SocketAddr>,
) -> Result<()> {
    crate::require_net_admin()?;
    let mut nft = Nftables::open()?;
    // The netlink socket is open: from here on, CAP_NET_ADMIN is all the agent holds.
    crate::privileges::keep_only_net_admin()
        .context("dropping every capability but CAP_NET_ADMIN")?;
    let state_path = state_file.unwrap_or_else(crate::state_file::default_path);
    let previous = last_known_state(&state_path);
    let policy = match read_policy(config.as_ref()) {
        Ok(policy) => policy,
        Err(error) => return Err(enforce_fallback(&mut nft, previous, error)),
    };
    // Before Docker is read: the static policy, the last known Docker state, and every other
    // Docker bridge denied.
    let mut agent = Agent::new(config, policy, nft, state_path, previous);
    // The bridge ports, before the first table: a restart must not cut running containers off.
    let (port_sender, mut port_updates) = mpsc::unbounded_channel();
    tokio::spawn(watch_ports(port_sender));
    match tokio::time::timeout(FIRST_PORTS_WITHIN, port_updates.recv()).await {
        Ok(Some(ports)) => {
            agent.ports = ports;
            agent.replan();
        }
        _ => tracing::error!(
            "the bridge ports could not be read within {} ms: until they are, every veth port \
             (on any bridge) and every port of a guarded bridge sends nothing",
            FIRST_PORTS_WITHIN.as_millis()
        ),
    }
    // Bound before the first table logs to it, so that its first drops are heard.
    let audit = agent.policy.table.audit;
    let drop_log = audit
        .enabled
        .then(|| open_drop_log(audit.group, true))
        .flatten();
    agent.enforce_at_start("start, before reading Docker")?;
    let drop_log = drop_log.filter(|_| agent.policy.table.audit.enabled);
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("enforcing; waiting for Docker"),
    ]);
    tracing::info!(
        table = %agent.policy.table.name,
        "enforcing; Docker bridges stay denied until classified"
    );
    let (scrape_sender, scrapes) = mpsc::channel(8);
    if let Some(address) = metrics_listen {
        match metrics_server::bind(address, scrape_sender).await {
            Ok(_) => tracing::info!("metrics at http://{address}/metrics"),
            Err(error) => tracing::error!(
                "cannot serve metrics on {address}: {error}; enforcing without them"
            ),
        }
    }
    main_loop(agent, port_updates, drop_log, scrapes).await
}

/// The signals the daemon handles.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hangup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }
}

/// Serves signals, periodic checks, Docker's updates and the link watch's until SIGTERM or
/// SIGINT.
async fn main_loop<K: Kernel>(
    mut agent: Agent<K>,
    mut ports: mpsc::UnboundedReceiver<Vec<BridgePort>>,
    mut drop_log: Option<(u16, AsyncFd<DropLog>)>,
    mut scrapes: mpsc::Receiver<metrics_server::Scrape>,
) -> Result<()> {
    // systemd's watchdog, when set, is pinged at half its period (at most every 5 s).
    let watchdog = sd_notify::watchdog_enabled();
    let period = watchdog.map_or(VERIFY_PERIOD, |w| (w / 2).min(VERIFY_PERIOD));
    let mut signals = Signals::install()?;
    let mut verify = tokio::time::interval(period);
    verify.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (sender, mut updates) = mpsc::unbounded_channel();
    let mut watcher = spawn_watcher(&agent.policy.docker, sender.clone());
    let mut monitor = open_monitor(true);

    loop {
        tokio::select! {
            _ = signals.terminate.recv() => return stop("SIGTERM"),
            _ = signals.interrupt.recv() => return stop("SIGINT"),
            _ = signals.hangup.recv() => {
                report(agent.reload(|settings| {
                    if let Some(task) = watcher.take() {
                        task.abort();
                    }
                    watcher = spawn_watcher(settings, sender.clone());
                }));
                let audit = agent.policy.table.audit;
                let bound = drop_log.as_ref().map(|(group, _)| *group);
                if !audit.enabled {
                    drop_log = None;
                } else if bound != Some(audit.group) {
                    drop_log = open_drop_log(audit.group, true);
                }
            }
            batch = drops(&mut drop_log) => match batch {
                Ok(batch) => agent.take_drops(batch, Instant::now()),
                Err(error) => {
                    tracing::error!(
                        "reading the drop audit's NFLOG group failed: {error}; binding it again \
                         at the next periodic check"
                    );
                    drop_log = None;
                }
            },
            _ = until(agent.audit.due()) => agent.summarise_drops(Instant::now()),
            Some(reply) = scrapes.recv() => {
                let text = agent.metrics_text(Instant::now());
                let _ = reply.send(text.map_err(|e| format!("{e:#}")));
            }
            events = commits(&mut monitor) => match events {
                Ok(events) => {
                    report(agent.take_commits(events, Instant::now()));
                }
                Err(error) => {
                    tracing::error!(
                        "nftables monitor failed: {error}; checking the table now, and \
                         subscribing again at the next periodic check"
                    );
                    monitor = None;
                    report(agent.take_commits(vec![MonitorEvent::Overflowed], Instant::now()));
                }
            },
            _ = until(agent.deferred_restore_due()) => {
                report(agent.restore_deferred(Instant::now()));
            }
            _ = verify.tick() => {
                if monitor.is_none() {
                    monitor = open_monitor(false);
                }
                let audit = agent.policy.table.audit;
                if drop_log.is_none() && audit.enabled {
                    drop_log = open_drop_log(audit.group, false);
                }
                // The watchdog hears only from an agent whose table is in the kernel as planned.
                if report(agent.check()) && watchdog.is_some() {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
            Some(update) = updates.recv() => {
                report(agent.absorb(update, &mut updates));
            }
            Some(mut latest) = ports.recv() => {
                // Only the newest report counts.
                while let Ok(newer) = ports.try_recv() {
                    latest = newer;
                }
                report(agent.take_ports(latest));
            }
        }
    }
}

/// A netlink subscription that owns its socket for as long as it lives, `as_raw_fd` always
/// returning that socket's descriptor.
trait OwnedSocket: std::os::fd::AsRawFd {}

impl OwnedSocket for Monitor {}
impl OwnedSocket for DropLog {}

/// `socket` registered with the runtime, to wait until it is readable.
fn registered<T: OwnedSocket>(socket: T) -> Result<AsyncFd<T>, NftError> {
    // SAFETY: an OwnedSocket keeps its descriptor open for as long as it lives, and the
    // AsyncFd owns it (and deregisters it) for exactly that long.
    unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
        .map_err(|e| NftError::Socket(e.into_parts().1))
}

/// Subscribes to nftables' notifications; without them, the periodic check alone undoes other
/// programs' changes. A failure is logged at ERROR the `first` time, at DEBUG on later tries.
fn open_monitor(first: bool) -> Option<AsyncFd<Monitor>> {
    match Monitor::open().and_then(registered) {
        Ok(monitor) => {
            if !first {
                tracing::info!("following nftables' notifications again");
            }
            Some(monitor)
        }
        Err(error) if first => {
            tracing::error!(
                "cannot follow nftables' notifications: {error}; changes by other programs are \
                 undone only by the periodic check (every {} s), which tries again",
                VERIFY_PERIOD.as_secs()
            );
            None
        }
        Err(error) => {
            tracing::debug!("still cannot follow nftables' notifications: {error}");
            None
        }
    }
}

/// Binds the drop audit's NFLOG `group`; without it, drops are counted but not logged. A
/// failure is logged at ERROR the `first` time, at DEBUG on later tries.
fn open_drop_log(group: u16, first: bool) -> Option<(u16, AsyncFd<DropLog>)> {
    match DropLog::bind(group).and_then(registered) {
        Ok(log) => {
            if !first {
                tracing::info!("the drop audit reads NFLOG group {group} again");
            }
            Some((group, log))
        }
        Err(error) if first => {
            tracing::error!(
                "cannot read the drop audit's NFLOG group {group}: {error}; drops are counted \
                 (enforcer status) but not logged; trying again at each periodic check (every \
                 {} s)",
                VERIFY_PERIOD.as_secs()
            );
            None
        }
        Err(error) => {
            tracing::debug!("still cannot read NFLOG group {group}: {error}");
            None
        }
    }
}

/// The next packets the drop audit's group delivers; never, without the group.
async fn drops(drop_log: &mut Option<(u16, AsyncFd<DropLog>)>) -> Result<Batch, NftError> {
    let Some((_, log)) = drop_log else {
        return std::future::pending().await;
    };
    loop {
        let mut ready = log.readable_mut().await.map_err(NftError::Socket)?;
        // A drained socket is not readable again until the kernel queues more; one that is
        // not stays ready, and the next turn of the loop reads on.
        let batch = ready.get_inner_mut().read()?;
        if batch.drained {
            ready.clear_ready();
        } else {
            ready.retain_ready();
        }
        if !batch.packets.is_empty() || batch.overflows > 0 {
            return Ok(batch);
        }
    }
}

/// The next commits (or overflows) the monitor reports; never, without a monitor.
async fn commits(monitor: &mut Option<AsyncFd<Monitor>>) -> Result<Vec<MonitorEvent>, NftError> {
    let Some(monitor) = monitor else {
        return std::future::pending().await;
    };
    loop {
        let mut ready = monitor.readable_mut().await.map_err(NftError::Socket)?;
        // `read` drains the socket: it is not readable again until the kernel queues more.
        let events = ready.get_inner_mut().read()?;
        ready.clear_ready();
        if !events.is_empty() {
            return Ok(events);
        }
    }
}

/// Sleeps until `due`; never, without one.
async fn until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

/// Logs a failed step of the running daemon; the table in force stays, the agent keeps the
/// table it wants, and the next periodic check tries again. Whether the step succeeded.
fn report(step: Result<()>) -> bool {
    match step {
        Ok(()) => true,
        Err(error) => {
            tracing::error!(
                "{error:#}; the rules in force stay, the next check (within {}s) tries again",
                VERIFY_PERIOD.as_secs()
            );
            false
        }
    }
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
    Some(tokio::spawn(watch_docker(
        enforcer_docker::host_from_env(),
        updates,
    )))
}
