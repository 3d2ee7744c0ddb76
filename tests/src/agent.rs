//! A running `enforcer run`, started by [`crate::docker::Dockerd::start_agent`].

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use crate::{poll_until, wait_until};

/// A running `enforcer run`; killed on drop.
pub struct Agent {
    pub(crate) child: Option<Child>,
    pub(crate) log: PathBuf,
    pub(crate) state_file: PathBuf,
}

impl Agent {
    /// The state file it writes.
    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the log holds `needle`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        wait_until(limit, || self.log().contains(needle))
    }

    /// Waits (bounded) until the log holds `needle`; panics with the log when it does not.
    pub fn expect_log(&self, needle: &str, limit: Duration) {
        assert!(
            self.wait_for_log(needle, limit),
            "the agent's log has no `{needle}` after {limit:?}:\n{}",
            self.log()
        );
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent runs").id()
    }

    /// Sends `signal` and waits (at most 10 s) for the exit; returns the exit code (`None`
    /// when it did not exit in time and was killed, or was killed by a signal).
    pub fn signal_and_wait(&mut self, signal: i32) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let mut code = None;
        let exited = poll_until(
            Duration::from_secs(10),
            Duration::from_millis(20),
            || match child.try_wait() {
                Ok(Some(status)) => {
                    code = status.code();
                    true
                }
                _ => false,
            },
        );
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
        code
    }

    /// Sends `signal` without waiting.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(self.pid() as i32, signal);
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}
