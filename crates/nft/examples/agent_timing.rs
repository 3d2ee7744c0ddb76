//! Times the agent's kernel path for `cargo xtask bench`: the topology is already in memory, so
//! an apply is plan, encode, read back, commit. Run inside a fresh network namespace.
//!
//! `agent_timing apply POLICY REPEATS`: REPEATS full applies, each after deleting the table;
//! `agent_timing noop POLICY REPEATS`: one apply, then REPEATS applies that must send nothing;
//! `agent_timing check POLICY REPEATS`: one apply, then REPEATS of the agent's periodic check
//! with nothing replanned (is the table still the one verified?).
//! Prints one duration in milliseconds per line.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use enforcer_core::planner::plan;
use enforcer_core::policy::Policy;
use enforcer_core::ruleset::Tables;
use enforcer_nft::{ApplyOutcome, Nftables};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, policy, repeats] = args.as_slice() else {
        eprintln!("usage: agent_timing apply|noop|check POLICY REPEATS");
        return ExitCode::from(2);
    };
    match measure(mode, Path::new(policy), repeats.parse().unwrap_or(1)) {
        Ok(times) => {
            for ms in times {
                println!("{ms:.4}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("agent_timing: {error}");
            ExitCode::from(2)
        }
    }
}

fn measure(
    mode: &str,
    path: &Path,
    repeats: usize,
) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let policy = Policy::load(path)?;
    let mut times = Vec::with_capacity(repeats);
    match mode {
        "apply" => {
            for _ in 0..repeats {
                // Fails on the first round, when there is no table yet.
                std::process::Command::new("nft")
                    .args(["delete", "table", "inet", &policy.table.name])
                    .stderr(std::process::Stdio::null())
                    .status()?;
                let start = Instant::now();
                let ruleset = Tables::from(plan(&policy.table, &policy.static_topology));
                let mut nft = Nftables::open()?;
                if !matches!(nft.apply(&ruleset)?, ApplyOutcome::Applied { .. }) {
                    return Err("nothing applied".into());
                }
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        "noop" => {
            let ruleset = Tables::from(plan(&policy.table, &policy.static_topology));
            let mut nft = Nftables::open()?;
            nft.apply(&ruleset)?;
            // The first no-op verifies the kernel's table by reading it back.
            if nft.apply(&ruleset)? != ApplyOutcome::Unchanged {
                return Err("the table should already match".into());
            }
            for _ in 0..repeats {
                let start = Instant::now();
                let outcome = nft.apply(&ruleset)?;
                times.push(start.elapsed().as_secs_f64() * 1e3);
                if outcome != ApplyOutcome::Unchanged {
                    return Err("a no-op apply sent a transaction".into());
                }
            }
        }
        "check" => {
            let ruleset = Tables::from(plan(&policy.table, &policy.static_topology));
            let mut nft = Nftables::open()?;
            nft.apply(&ruleset)?;
            for _ in 0..repeats {
                let start = Instant::now();
                let still = nft.still_verified()?;
                times.push(start.elapsed().as_secs_f64() * 1e3);
                if !still {
                    return Err("the table just applied is not verified".into());
                }
            }
        }
        other => return Err(format!("unknown mode {other}").into()),
    }
    Ok(times)
}
