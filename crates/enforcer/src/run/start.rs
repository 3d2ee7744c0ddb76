//! What the agent enforces when it starts: the state file's last known Docker state, and,
//! when the policy given is unusable, the fallback that makes sure a table enforces before the
//! agent exits.

use std::path::Path;

use enforcer_core::docker::{Classified, DockerState};
use enforcer_core::policy::Policy;

use super::desired_table;
use crate::kernel::Kernel;
use crate::state_file::{show_time, StateFile};

/// The state file, or nothing (reported) when it is missing or unreadable.
pub(super) fn last_known_state(path: &Path) -> Option<StateFile> {
    match StateFile::load(path) {
        Ok(Some(state)) => {
            tracing::info!(
                state_file = %path.display(),
                networks = state.docker.networks.len(),
                containers = state.docker.containers.len(),
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

/// The policy given at start is unusable: before reporting it (and exiting, so that systemd
/// says so), make sure a table enforces. A table already in the kernel is left as it is (it was
/// made from a good policy, and may hold more than any fallback knows); without one, enforce the
/// state file's last good policy with its Docker state or, failing that, the embedded default
/// with no Docker network classified, which denies every Docker bridge. Never start with no
/// table, never replace one with something weaker.
pub(super) fn enforce_fallback(
    kernel: &mut impl Kernel,
    previous: Option<StateFile>,
    error: anyhow::Error,
) -> anyhow::Error {
    let last_good = previous.and_then(|state| {
        let text = state.policy.as_deref()?;
        let policy = Policy::parse(text, "<last good policy, from the state file>").ok()?;
        let applied = show_time(state.applied_unix);
        let (docker, known) = state.enforced();
        Some((policy, docker, known, applied))
    });
    let (policy, docker, known, what) = match last_good {
        Some((policy, docker, known, applied)) => (
            policy,
            docker,
            known,
            format!("the last good policy and Docker state (state file, applied {applied})"),
        ),
        None => (
            Policy::embedded(),
            DockerState::default(),
            Classified::default(),
            "the embedded default policy with every Docker bridge denied".to_string(),
        ),
    };
    match kernel.holds_table(&policy.table.name) {
        Ok(true) => {
            return error.context(format!(
                "the policy cannot be used; table inet {} stays in the kernel as it is until \
                 it is fixed",
                policy.table.name
            ))
        }
        Ok(false) => {}
        Err(failed) => {
            tracing::warn!("{failed:#}; enforcing {what} all the same");
        }
    }
    // No port is known yet: every veth port (on any bridge) and every port of a guarded bridge
    // sends nothing until the agent runs.
    let ((_, tables), _, _) = desired_table(&policy, &docker, (&[], &[]), &known);
    match kernel.apply(&tables) {
        Ok(_) => error.context(format!(
            "the policy cannot be used; enforcing {what} until it is fixed"
        )),
        Err(failed) => error.context(format!(
            "the policy cannot be used, and enforcing {what} failed too: {failed:#}"
        )),
    }
}
