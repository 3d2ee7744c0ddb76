//! `enforcer`: the command line. Exit status: 0 done (or, with `--dry-run`, nothing would
//! change), 1 changes pending (`--dry-run`), 2 error (nothing in the kernel changed).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use enforcer_core::planner::plan;
use enforcer_core::policy::Policy;
use enforcer_core::render;
use enforcer_nft::{ApplyOutcome, NftError, Nftables};

/// Host firewall for Docker hosts running untrusted AI agents: egress from managed networks is
/// denied by default, and only egress proxies may reach their allowed services.
#[derive(Parser)]
#[command(name = "enforcer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Put the policy's table into the kernel in one atomic transaction (nothing is sent when
    /// the kernel already holds it).
    Apply {
        /// Policy file (TOML); without it, the embedded default policy.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print the `nft` script that would be loaded on stdout and the changes against the
        /// kernel's table on stderr; change nothing. Exit 0: no change, 1: changes pending.
        #[arg(long)]
        dry_run: bool,
    },
    /// Validate a policy file and summarise it.
    CheckConfig {
        /// Policy file (TOML).
        file: PathBuf,
    },
}

/// The outcome of a command that did not fail.
enum Done {
    /// Success, or nothing to change.
    Clean,
    /// `--dry-run` found changes.
    Pending,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Apply { config, dry_run } => apply(config, dry_run),
        Command::CheckConfig { file } => check_config(&file),
    };
    match result {
        Ok(Done::Clean) => ExitCode::SUCCESS,
        Ok(Done::Pending) => ExitCode::from(1),
        Err(error) => {
            eprintln!("enforcer: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn load_policy(config: Option<&PathBuf>) -> Result<Policy> {
    Ok(match config {
        Some(path) => Policy::load(path)?,
        None => Policy::embedded(),
    })
}

fn apply(config: Option<PathBuf>, dry_run: bool) -> Result<Done> {
    let policy = load_policy(config.as_ref())?;
    let ruleset = plan(&policy.table, &policy.static_topology);
    let table = &policy.table.name;
    if dry_run {
        let script = render::script(&ruleset);
        std::io::stdout()
            .write_all(script.as_bytes())
            .context("writing the script to stdout")?;
        let mut nft = Nftables::open()?;
        let desired = enforcer_nft::Desired::new(&ruleset)?;
        let current = match nft.read(table) {
            Ok(current) => current,
            Err(NftError::PermissionDenied { .. }) => {
                eprintln!(
                    "enforcer: could not read the kernel's table inet {table} (reading needs \
                     CAP_NET_ADMIN); treating every rule as pending"
                );
                return Ok(Done::Pending);
            }
            Err(other) => return Err(other).context("reading the kernel's table"),
        };
        let changes = desired.changes(current.as_ref());
        if changes.is_empty() {
            eprintln!("enforcer: table inet {table} in the kernel already matches; nothing to do");
            return Ok(Done::Clean);
        }
        eprintln!(
            "enforcer: {} change(s) pending for table inet {table}:",
            changes.len()
        );
        for line in changes {
            eprintln!("  {line}");
        }
        return Ok(Done::Pending);
    }

    require_net_admin()?;
    let mut nft = Nftables::open()?;
    match nft.apply(&ruleset).with_context(|| {
        format!("applying table inet {table}; the rules in force before stay in force")
    })? {
        ApplyOutcome::Unchanged => {
            eprintln!("enforcer: table inet {table} already matches the policy; nothing sent");
        }
        ApplyOutcome::Applied {
            messages,
            bytes,
            changes,
        } => {
            eprintln!(
                "enforcer: applied table inet {table} in one transaction ({messages} messages, \
                 {bytes} bytes; {} change(s))",
                changes.len()
            );
            for line in changes {
                eprintln!("  {line}");
            }
        }
    }
    Ok(Done::Clean)
}

/// Fails with a clear message when CAP_NET_ADMIN is not in the effective set.
fn require_net_admin() -> Result<()> {
    let has = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_NET_ADMIN,
    )
    .context("reading this process's capabilities")?;
    if !has {
        anyhow::bail!(
            "applying rules needs CAP_NET_ADMIN, which this process lacks: run it as root \
             (sudo enforcer apply), or grant the capability (systemd: \
             AmbientCapabilities=CAP_NET_ADMIN; a file: setcap cap_net_admin+ep $(which enforcer)); \
             `enforcer apply --dry-run` works without it"
        );
    }
    Ok(())
}

fn check_config(file: &Path) -> Result<Done> {
    let policy = Policy::load(file)?;
    let topology = &policy.static_topology;
    let subnets: usize = topology.networks().iter().map(|n| n.subnets.len()).sum();
    println!(
        "{}: valid; table inet {}, {} static network(s) with {subnets} subnet(s), {} static \
         proxy(ies); proxies may open {}",
        file.display(),
        policy.table.name,
        topology.networks().len(),
        topology.proxies().len(),
        policy
            .proxy_defaults
            .services
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Done::Clean)
}
