//! `cargo xtask <task>`: project tasks that are programs rather than tests.
//!
//! - `bench [NAME]`: the benchmarks of the README (or those whose name contains NAME), each
//!   printed as a ratio or figure measured in one run against its target. Needs root
//!   (namespaces); touches only namespaces it creates.

mod bench;

use anyhow::{bail, Result};

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "bench" => bench::run(&std::env::args().nth(2).unwrap_or_default()),
        _ => bail!("usage: cargo xtask bench [apply|memory|noop|throughput]"),
    }
}
