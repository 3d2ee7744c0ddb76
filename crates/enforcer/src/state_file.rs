//! The agent's state file: the last Docker state it enforced, when and why it last applied, and
//! whether Docker was connected. At boot, before Docker answers, the agent enforces it again;
//! `enforcer status` reads it. Written atomically (temporary file, fsync, rename, fsync of the
//! directory) after every applied change.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use enforcer_core::docker::{classify_after, Classified, DockerState};
use enforcer_core::planner::plan_tables;
use enforcer_core::policy::Policy;
use enforcer_core::ruleset::Tables;
use serde::{Deserialize, Serialize};

/// Where the state file lives without `--state-file`: under systemd's `StateDirectory`
/// (`$STATE_DIRECTORY`), else `/var/lib/enforcer`.
pub fn default_path() -> PathBuf {
    let dir = std::env::var_os("STATE_DIRECTORY")
        .map(|d| {
            // systemd may list several directories, colon-separated: the first is ours.
            let d = d.to_string_lossy().into_owned();
            PathBuf::from(d.split(':').next().unwrap_or_default())
        })
        .unwrap_or_else(|| PathBuf::from("/var/lib/enforcer"));
    dir.join("state.json")
}

/// Format version of the file.
const VERSION: u32 = 1;

/// Docker's connection as the agent last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerConnection {
    /// Whether the agent was following Docker's events.
    pub connected: bool,
    /// The socket.
    pub host: String,
    /// When the connection state last changed (seconds since the epoch).
    pub since_unix: u64,
    /// The last error, when not connected.
    pub error: Option<String>,
}

/// The content of the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// Format version.
    pub version: u32,
    /// The table's name.
    pub table: String,
    /// When the table was last applied (seconds since the epoch).
    pub applied_unix: u64,
    /// Why it was applied.
    pub reason: String,
    /// Docker's connection.
    pub docker_connection: DockerConnection,
    /// The Docker objects enforced at that time.
    pub docker: DockerState,
    /// The text of the policy file in force (none for the embedded default): the last good
    /// policy, enforced again at start should the file have turned invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// IDs of the Docker networks enforced, which keep winning conflicts after a restart.
    #[serde(default)]
    pub enforced_networks: std::collections::BTreeSet<String>,
    /// The bridge ports bound to containers, with what each may send as (for `status`).
    #[serde(default)]
    pub bound_ports: Vec<enforcer_core::binding::BoundPort>,
}

/// Seconds since the epoch, now.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// A time as RFC 3339 (UTC), for people.
pub fn show_time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

impl StateFile {
    /// A state file for what was applied at `applied_unix` (seconds since the epoch).
    pub fn new(
        table: &str,
        applied_unix: u64,
        reason: &str,
        docker_connection: DockerConnection,
        docker: DockerState,
    ) -> StateFile {
        StateFile {
            version: VERSION,
            table: table.to_string(),
            applied_unix,
            reason: reason.to_string(),
            docker_connection,
            docker,
            policy: None,
            enforced_networks: Default::default(),
            bound_ports: Vec::new(),
        }
    }

    /// The Docker state it records, and the networks enforced under it as a classification
    /// to continue from (they keep winning conflicts).
    pub fn enforced(self) -> (DockerState, Classified) {
        let known = Classified {
            enforced_networks: self.enforced_networks,
            ..Default::default()
        };
        (self.docker, known)
    }

    /// The classification and tables `policy` plans from `state`'s Docker state (the static
    /// policy alone without one), as the daemon that wrote it last enforced them, bound ports
    /// included; no bridge ports are read.
    pub fn planned(policy: &Policy, state: Option<&StateFile>) -> (Classified, Tables) {
        let none = DockerState::default();
        let docker = state.map_or(&none, |s| &s.docker);
        let enforced = state
            .map(|s| s.enforced_networks.clone())
            .unwrap_or_default();
        let bound = state.map_or(&[][..], |s| s.bound_ports.as_slice());
        let classified = classify_after(policy, docker, &enforced);
        let (tables, _, _) = plan_tables(policy, &classified, docker, &[], bound);
        (classified, tables)
    }

    /// Reads the state file; `Ok(None)` when it does not exist.
    pub fn load(path: &Path) -> anyhow::Result<Option<StateFile>> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "cannot read state file {}: {e}",
                    path.display()
                ))
            }
        };
        let state: StateFile = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "state file {} is corrupt ({e}); it is ignored and rewritten at the next change",
                path.display()
            )
        })?;
        anyhow::ensure!(
            state.version == VERSION,
            "state file {} has format version {}, this enforcer reads {VERSION}; it is ignored",
            path.display(),
            state.version
        );
        Ok(Some(state))
    }

    /// Writes the state file atomically: a temporary file beside it, fsync, rename over the
    /// old one, fsync of the directory.
    pub fn store(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let temporary = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&temporary)?;
            file.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
            file.sync_all()?;
            fs::rename(&temporary, path)?;
            File::open(dir)?.sync_all()
        };
        write().map_err(|e| anyhow::anyhow!("cannot write state file {}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StateFile {
        StateFile::new(
            "enforcer",
            now_unix(),
            "network create llmnet",
            DockerConnection {
                connected: true,
                host: "unix:///var/run/docker.sock".into(),
                since_unix: 1,
                error: None,
            },
            DockerState::default(),
        )
    }

    /// Removes the test's directory on drop, also when an assertion fails.
    struct RemovedOnDrop(PathBuf);

    impl Drop for RemovedOnDrop {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn round_trip_and_replace() {
        let dir = RemovedOnDrop(
            std::env::temp_dir().join(format!("enforcer-state-{}", std::process::id())),
        );
        let path = dir.0.join("state.json");
        assert!(StateFile::load(&path).unwrap().is_none());
        let first = sample();
        first.store(&path).unwrap();
        assert_eq!(StateFile::load(&path).unwrap(), Some(first.clone()));
        let mut second = first;
        second.reason = "container die proxy".into();
        second.store(&path).unwrap();
        assert_eq!(StateFile::load(&path).unwrap(), Some(second));
        assert!(!path.with_extension("json.tmp").exists());
        fs::write(&path, "{ not json").unwrap();
        let error = StateFile::load(&path).unwrap_err().to_string();
        assert!(error.contains("corrupt"), "{error}");
    }
}
