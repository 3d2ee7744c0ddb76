//! `cargo xtask <task>`: project tasks that are programs rather than tests.
//!
//! - `bench`: the benchmarks of the README, each printed as a ratio or figure measured in one
//!   run against its target. Needs root (namespaces); touches only namespaces it creates.

mod bench;

use anyhow::{bail, Result};

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "bench" => bench::run(),
        _ => bail!("usage: cargo xtask bench"),
    }
}
