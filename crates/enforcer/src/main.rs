//! `enforcer`: the command line. Exit status: 0 done (or, with `--dry-run`, nothing would
//! change), 1 changes pending (`--dry-run`), 2 error (nothing in the kernel changed).

mod explain;
mod judge;
mod kernel;
mod metrics;
mod privileges;
mod run;
mod state_file;
mod status;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use enforcer_core::binding::guards_static_ports;
use enforcer_core::docker::{classify, DockerState};
use enforcer_core::planner::plan_tables;
use enforcer_core::policy::Policy;
use enforcer_core::render;
use enforcer_core::ruleset::Tables;
use enforcer_docker::DockerSource;
use enforcer_nft::{ApplyOutcome, NftError, Nftables};

/// How long a one-shot command waits for Docker before enforcing without it.
const ONE_SHOT_TIMEOUT: Duration = Duration::from_secs(3);

/// Host firewall for Docker hosts running untrusted AI agents: egress from managed networks is
/// denied by default, and only egress proxies may reach their allowed services.
#[derive(Parser)]
#[command(
    name = "enforcer",
    version,
    about,
    after_help = "Exit status: 0 done (dry-run: nothing would change; status: kernel and state \
                  file agree), 1 changes pending (dry-run) or disagreement (status), 2 error \
                  (nothing in the kernel changed)."
)]
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
    /// Run as a daemon: enforce the policy at once, then follow Docker's networks and proxies
    /// (snapshot, then events) until SIGTERM or SIGINT, which leave the rules in place.
    /// SIGHUP reloads the policy file.
    Run {
        /// Policy file (TOML); without it, the embedded default policy.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log format on stderr.
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
        /// State file (last Docker state enforced; re-enforced at start before Docker answers).
        /// Default: $STATE_DIRECTORY/state.json (systemd), else /var/lib/enforcer/state.json.
        #[arg(long)]
        state_file: Option<PathBuf>,
        /// Serve Prometheus metrics at http://ADDR/metrics (like 127.0.0.1:9848); off by
        /// default.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Show what the kernel enforces (networks with their drop counters, proxies), when and why
    /// the table was last applied, Docker's connection, and whether the kernel and the state
    /// file agree. Reads only; works whether the daemon runs or not.
    Status {
        #[command(flatten)]
        reading: Reading,
    },
    /// Say whether the table planned from the policy and the Docker state last enforced (the
    /// state file's) lets a new connection through, the rule that decides and the policy
    /// entry behind it (file:line). Evaluated on the model: reads neither the kernel nor
    /// Docker. Exit 0: allowed, 1: dropped.
    Explain {
        /// Source: an address, or the name of a container (state file), proxy or member.
        src: String,
        /// Destination: an address or a name, as for the source.
        dst: String,
        /// The service, like tcp/443 or udp/53.
        service: String,
        #[command(flatten)]
        reading: Reading,
    },
    /// Print Prometheus metrics once, from the kernel's counters and the state file (for
    /// node_exporter's textfile collector); the running agent's own counters (applies,
    /// repairs, the drop audit) are served only by `run --metrics-listen`.
    Metrics {
        #[command(flatten)]
        sources: Sources,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff).
    Manpage,
    /// Validate a policy file and summarise it.
    CheckConfig {
        /// Policy file (TOML).
        file: PathBuf,
    },
}

/// What `status`, `explain` and `metrics` read.
#[derive(clap::Args)]
struct Sources {
    /// Policy file (TOML); without it, the embedded default policy.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// State file; default as for `run`.
    #[arg(long)]
    state_file: Option<PathBuf>,
}

impl Sources {
    /// The policy, and the state file's path.
    fn open(self) -> Result<(Policy, PathBuf)> {
        let policy = load_policy(self.config.as_ref())?;
        let path = self.state_file.unwrap_or_else(state_file::default_path);
        Ok((policy, path))
    }
}

/// What `status` and `explain` read, and how they answer.
#[derive(clap::Args)]
struct Reading {
    #[command(flatten)]
    sources: Sources,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl Reading {
    /// The policy, the state file's path, and whether to answer in JSON.
    fn open(self) -> Result<(Policy, PathBuf, bool)> {
        let json = self.json;
        self.sources
            .open()
            .map(|(policy, path)| (policy, path, json))
    }
}

/// Log line format of `enforcer run`.
#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line (journald, log shippers).
    Json,
}

/// The outcome of a command that did not fail.
enum Done {
    /// Success, or nothing to change (exit 0).
    Clean,
    /// `--dry-run` found changes, `status` disagreements, `explain` a drop (exit 1).
    Pending,
}

impl Done {
    /// Clean when `clean`, else pending.
    fn clean_if(clean: bool) -> Done {
        if clean {
            Done::Clean
        } else {
            Done::Pending
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Apply { config, dry_run } => apply(config, dry_run),
        Command::Run {
            config,
            log_format,
            state_file,
            metrics_listen,
        } => {
            init_logging(log_format);
            run::run(config, state_file, metrics_listen).map(|()| Done::Clean)
        }
        Command::Metrics { sources } => sources
            .open()
            .and_then(|(policy, path)| metrics::print_once(&policy, &path))
            .map(|()| Done::Clean),
        Command::Status { reading } => reading.open().and_then(|(policy, path, json)| {
            status::status(&policy, &path, json).map(Done::clean_if)
        }),
        Command::Explain {
            src,
            dst,
            service,
            reading,
        } => reading.open().and_then(|(policy, path, json)| {
            explain::explain(&policy, &path, (&src, &dst, &service), json).map(Done::clean_if)
        }),
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "enforcer", &mut std::io::stdout());
            Ok(Done::Clean)
        }
        Command::Manpage => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map(|()| Done::Clean)
            .map_err(Into::into),
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ENFORCER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The policy file, or the embedded default.
pub(crate) fn load_policy(config: Option<&PathBuf>) -> Result<Policy> {
    read_policy(config).map(|(policy, _)| policy)
}

/// The policy file and its text, or the embedded default (no text).
pub(crate) fn read_policy(config: Option<&PathBuf>) -> Result<(Policy, Option<String>)> {
    Ok(match config {
        Some(path) => Policy::read(path).map(|(policy, text)| (policy, Some(text)))?,
        None => (Policy::embedded(), None),
    })
}

fn apply(config: Option<PathBuf>, dry_run: bool) -> Result<Done> {
    let policy = load_policy(config.as_ref())?;
    let tables = one_shot_tables(&policy)?;
    let table = &policy.table.name;
    if dry_run {
        let script = render::tables_script(&tables);
        std::io::stdout()
            .write_all(script.as_bytes())
            .context("writing the script to stdout")?;
        let mut nft = Nftables::open()?;
        let desired = enforcer_nft::Desired::new(&tables);
        let held = match nft.read(table) {
            Ok(held) => held,
            Err(NftError::PermissionDenied { .. }) => {
                eprintln!(
                    "enforcer: could not read the kernel's tables {table} (reading needs \
                     CAP_NET_ADMIN); treating every rule as pending"
                );
                return Ok(Done::Pending);
            }
            Err(other) => return Err(other).context("reading the kernel's tables"),
        };
        let changes = desired.changes(&held);
        if changes.is_empty() {
            eprintln!("enforcer: tables {table} in the kernel already match; nothing to do");
            return Ok(Done::Clean);
        }
        eprintln!(
            "enforcer: {} change(s) pending for tables {table}:",
            changes.len()
        );
        for line in changes {
            eprintln!("  {line}");
        }
        return Ok(Done::Pending);
    }

    require_net_admin()?;
    let mut nft = Nftables::open()?;
    match nft.apply(&tables).with_context(|| {
        format!("applying tables {table}; the rules in force before stay in force")
    })? {
        ApplyOutcome::Unchanged => {
            eprintln!("enforcer: tables {table} already match the policy; nothing sent");
        }
        ApplyOutcome::Applied {
            messages,
            bytes,
            changes,
        } => {
            eprintln!(
                "enforcer: applied tables {table} in one transaction ({messages} messages, \
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

/// The desired tables for a one-shot command: the static policy plus, when the policy watches
/// Docker, a snapshot of Docker, and when it guards ports, of the bridge ports taken now. Without Docker, only the
/// static part is enforced and Docker bridges stay denied (fail-closed); without the ports,
/// every port of a guarded bridge sends nothing.
fn one_shot_tables(policy: &Policy) -> Result<Tables> {
    let mut docker = DockerState::default();
    let mut ports = Vec::new();
    if policy.docker.enabled || guards_static_ports(&policy.static_topology) {
        match bridge_ports() {
            Ok(found) => ports = found,
            Err(error) => eprintln!(
                "enforcer: bridge ports not read ({error:#}); every port of a guarded bridge \
                 sends nothing"
            ),
        }
    }
    if policy.docker.enabled {
        let host = enforcer_docker::host_from_env();
        match docker_snapshot(&host) {
            Ok(state) => docker = state,
            Err(error) => eprintln!(
                "enforcer: Docker not read ({error:#}); enforcing the static policy only, every \
                 Docker bridge denied until `enforcer run` classifies it"
            ),
        }
    }
    let classified = classify(policy, &docker);
    let (tables, _, port_skips) = plan_tables(policy, &classified, &docker, &ports, &[]);
    for item in classified.skipped.iter().chain(&port_skips) {
        eprintln!("enforcer: skipped {}: {}", item.object, item.reason);
    }
    for item in &classified.remarks {
        eprintln!("enforcer: {}: {}", item.object, item.reason);
    }
    Ok(tables)
}

/// Runs `read` to its end on a runtime of its own, within [`ONE_SHOT_TIMEOUT`]; `what` says
/// who did not answer when it takes longer.
fn one_shot<T>(what: &str, read: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match runtime.block_on(async { tokio::time::timeout(ONE_SHOT_TIMEOUT, read).await }) {
        Ok(result) => result,
        Err(_) => anyhow::bail!(
            "{what} did not answer within {} s",
            ONE_SHOT_TIMEOUT.as_secs()
        ),
    }
}

/// Every bridge port, with its veth peer's MAC address, read now.
fn bridge_ports() -> Result<Vec<enforcer_core::ports::BridgePort>> {
    one_shot("the kernel's list of bridge ports", async {
        let mut watch = enforcer_links::PortWatch::open().await?;
        Ok(watch.ports().await?)
    })
}

fn docker_snapshot(host: &str) -> Result<DockerState> {
    one_shot(&format!("Docker at {host}"), async {
        let source = DockerSource::connect(host).await?;
        Ok(source.snapshot().await?)
    })
}

/// Fails with a clear message when CAP_NET_ADMIN is not in the effective set.
pub(crate) fn require_net_admin() -> Result<()> {
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
    let roles: Vec<&str> = topology.roles().keys().map(String::as_str).collect();
    println!(
        "{}: valid; table inet {}, {} static network(s) with {subnets} subnet(s), {} static \
         proxy(ies), {} static member(s), roles: {}; proxies may open {}; quarantined \
         interfaces: {}",
        file.display(),
        policy.table.name,
        topology.networks().len(),
        topology.proxies().len(),
        topology.members().len(),
        if roles.is_empty() {
            "none".to_string()
        } else {
            roles.join(", ")
        },
        policy
            .proxy_defaults
            .services
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        if policy.table.quarantine.is_empty() {
            "none".to_string()
        } else {
            policy.table.quarantine.join(", ")
        }
    );
    Ok(Done::Clean)
}
