//! A running `enforcer run`, started in a namespace (by [`Agent::start`], or
//! [`crate::docker::Dockerd::start_agent`] inside the Docker host).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::{poll_until, wait_until, Netns};

/// A running `enforcer run`; killed on drop.
pub struct Agent {
    pub(crate) child: Option<Child>,
    pub(crate) log: PathBuf,
    pub(crate) state_file: PathBuf,
}

impl Agent {
    /// Starts `binary run ARGS` inside `ns` with `env`, logging to a file in `dir`, with a
    /// state file of its own in `dir` unless `args` name one (never the machine's
    /// /var/lib/enforcer).
    pub fn start(
        ns: &Netns,
        dir: &Path,
        binary: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Agent {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let log_path = dir.join(format!("agent-{stamp}.log"));
        let log = File::create(&log_path).expect("agent log");
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let state_file = match args.iter().position(|a| *a == "--state-file") {
            Some(i) => PathBuf::from(args[i + 1]),
            None => {
                let path = dir.join(format!("state-{stamp}.json"));
                all.extend(["--state-file".to_string(), path.display().to_string()]);
                path
            }
        };
        let child = ns
            .command(binary.to_str().expect("utf-8 path"))
            .arg("run")
            .args(&all)
            .envs(env.iter().copied())
            .env("ENFORCER_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start enforcer run");
        Agent {
            child: Some(child),
            log: log_path,
            state_file,
        }
    }

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

    /// The lines of the log so far that hold `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        let log = self.log();
        log.lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Waits (bounded) until the log holds more than `seen` lines with `needle`; returns the
    /// first new one.
    pub fn next_line_with(&self, needle: &str, seen: usize, limit: Duration) -> Option<String> {
        let mut found = None;
        wait_until(limit, || {
            found = self.lines_with(needle).into_iter().nth(seen);
            found.is_some()
        });
        found
    }

    /// Writes `policy` to the policy file at `path`, sends SIGHUP and waits (bounded) until a
    /// new `policy reloaded` line is logged; whether it was.
    pub fn reload_with(&self, path: &Path, policy: &str, limit: Duration) -> bool {
        let seen = self.lines_with("policy reloaded").len();
        std::fs::write(path, policy).expect("write the policy file");
        self.signal(libc::SIGHUP);
        self.next_line_with("policy reloaded", seen, limit)
            .is_some()
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
