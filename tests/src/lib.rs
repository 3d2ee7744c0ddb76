//! Test harness: network namespaces that play a Docker host, its containers and "the internet",
//! real TCP and UDP flows between them, and the enforcer binary run inside the host namespace.
//!
//! Rules every test here keeps:
//! - packets go only to addresses of namespaces the test made (203.0.113.0/24 and
//!   2001:db8:113::/64 for the internet, 198.51.100.0/24 between a swarm's nodes, the test's
//!   own bridges and containers, loopback);
//! - every namespace is deleted when its [`Netns`] is dropped, also when a test panics;
//! - every wait is bounded (connect and receive timeouts, capped loops).
//!
//! ThreeGate itself (networks, containers, listeners, the expected matrix) is the data of the
//! `threegate-spec` crate, re-exported here as [`spec`]; [`host`] builds it by hand, [`docker`]
//! through a real dockerd, and [`matrix`] measures it.
//!
//! Where things are: [`Netns`] (namespaces), [`probe_here`] and [`Responders`] (flows),
//! [`enforcer`] and [`apply_ok`] (the binary), [`Monitor`], [`object_handles`] and
//! [`set_elements`] (`nft` as the reader), [`TempFile`] and [`TempDir`], [`lan::Lan`] (a LAN
//! between sealed hosts, for a swarm of several nodes).

mod agent;
mod binary;
pub mod docker;
pub mod fake_docker;
mod files;
mod flow;
pub mod host;
pub mod lan;
pub mod matrix;
mod netns;
mod nft;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use agent::Agent;
pub use binary::{
    apply_ok, cargo_build, enforcer, enforcer_bin, repo_file, workspace_root, NO_DOCKER,
};
pub use files::{TempDir, TempFile};
pub use flow::{probe_here, Responders, PROBE_TIMEOUT};
pub use netns::Netns;
pub use nft::{listed_objects, listed_table, object_handles, set_elements, Monitor};
pub use threegate_spec as spec;
pub use threegate_spec::Proto;

/// Fails the test unless it runs as root (namespaces, bridges and nftables need it).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the namespace tests need root (CAP_SYS_ADMIN and CAP_NET_ADMIN): run the README's test \
         command as root"
    );
}

/// Runs a command; panics with its output when it fails.
pub fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `ip <args>`.
pub fn ip(args: &[&str]) {
    run("ip", args);
}

/// Waits until `condition` holds, at most `limit`, trying every 20 ms; returns whether it did.
pub fn wait_until(limit: Duration, condition: impl FnMut() -> bool) -> bool {
    poll_until(limit, Duration::from_millis(20), condition)
}

/// Waits until `condition` holds, at most `limit`, trying every `every`; returns whether it
/// did (the condition is tried once more at the deadline).
pub fn poll_until(limit: Duration, every: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return true;
        }
        std::thread::sleep(every);
    }
    condition()
}
