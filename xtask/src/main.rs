//! `cargo xtask <task>`: project tasks that are programs rather than tests.
//!
//! - `demo`: installs what is missing, brings up a sealed Docker host with ThreeGate's topology,
//!   runs the agent on the embedded default policy and prints the measured reachability matrix
//!   next to the kernel's table. Needs root.
//! - `dist`: a `.deb` and a tarball (binary, systemd unit, man page, completions, examples)
//!   under `target/dist`, and the unit's `systemd-analyze security` score.
//! - `bench [NAME]`: the benchmarks of the README (or those whose name contains NAME), each
//!   printed as a ratio or figure measured in one run against its target. Needs root
//!   (namespaces); touches only namespaces it creates.

mod bench;
mod demo;
mod dist;

use anyhow::Result;

const USAGE: &str =
    "usage: cargo xtask demo | cargo xtask dist | cargo xtask bench [apply|memory|noop|throughput|roles|docker|ports|heal|cut|soak|flood|swarm]";

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "bench" => bench::run(&std::env::args().nth(2).unwrap_or_default()),
        "demo" => demo::run(),
        "dist" => dist::run_dist().map(|_| ()),
        _ => {
            // A usage error is not a failure worth a backtrace.
            eprintln!("{USAGE}");
            std::process::exit(2)
        }
    }
}
