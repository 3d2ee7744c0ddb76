//! The `forge` binary of this package, run inside a namespace: sends and counts frames.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use enforcer_harness::{poll_until, Netns};

/// The raw-frame tool, built with this package.
const FORGE: &str = env!("CARGO_BIN_EXE_forge");

/// Runs `forge ARGS` inside `ns`; panics when it fails.
pub(crate) fn send(ns: &Netns, args: &[&str]) {
    ns.exec_ok(FORGE, args);
}

/// A running `forge listen`, killed on drop.
pub(crate) struct Listener {
    child: Option<Child>,
}

impl Listener {
    /// Starts `forge listen --iface IFACE --for-ms FOR_MS FILTERS` in `ns` and waits (at most
    /// 5 s) until its socket is bound.
    pub(crate) fn start(ns: &Netns, iface: &str, for_ms: u64, filters: &[&str]) -> Listener {
        let for_ms = for_ms.to_string();
        let mut child = ns
            .command(FORGE)
            .args(["listen", "--iface", iface, "--for-ms", &for_ms])
            .args(filters)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start forge listen");
        let stderr = child.stderr.take().expect("piped stderr");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            let _ = ready_tx.send(first);
            // Keep reading so that the child never blocks on a full pipe.
            for _ in lines {}
        });
        let said = ready_rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        assert!(
            said.starts_with("listening on"),
            "forge listen in {} did not start: {said}",
            ns.name()
        );
        Listener { child: Some(child) }
    }

    /// Stops it now (SIGTERM) and returns its count.
    pub(crate) fn stop(self) -> u64 {
        let child = self.child.as_ref().expect("listener runs");
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        self.count()
    }

    /// Waits (at most its --for-ms and 10 s more) until it ends and returns its count.
    pub(crate) fn count(mut self) -> u64 {
        let mut child = self.child.take().expect("listener runs");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut said = String::new();
        let reader = std::thread::spawn(move || {
            let _ = stdout.read_to_string(&mut said);
            said
        });
        let start = Instant::now();
        let limit = Duration::from_secs(610);
        let exited = poll_until(limit, Duration::from_millis(20), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
        let said = reader.join().expect("stdout reader");
        said.trim().parse().unwrap_or_else(|_| {
            panic!(
                "forge listen said `{said}` after {:?}: no count",
                start.elapsed()
            )
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
