//! Prometheus metrics, in Prometheus' text format (the `prometheus` crate): what the kernel's
//! counters say was dropped, per network, container (with its role), quarantined interface and
//! reason; the state file's last apply, Docker connection and bound ports; and, from the
//! running agent only, its applies, repairs, reconnects and what the drop audit heard.
//! `enforcer run --metrics-listen ADDR` serves them at `/metrics` (read from the kernel at each
//! scrape); `enforcer metrics` prints the kernel's and the state file's once (for
//! node_exporter's textfile collector).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use enforcer_core::binding::BoundPort;
use enforcer_core::policy::Policy;
use enforcer_core::ruleset::DropReason;
use enforcer_core::topology::Topology;
use enforcer_nft::{KernelView, Nftables, PortCounters};
use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::state_file::StateFile;

/// The media type of the text format.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// The seconds an apply's histogram tells apart: 0.5 ms to 4 s.
const APPLY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 4.0,
];

/// What the running agent counts itself, kept across scrapes.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    /// Transactions sent.
    pub applies: IntCounter,
    /// Seconds each transaction took, until the kernel answered.
    pub apply_seconds: Histogram,
    /// Netlink messages sent in those transactions.
    pub apply_messages: IntCounter,
    /// Restores of a table another program changed.
    pub repairs: IntCounter,
    /// Connections to Docker after the first.
    pub docker_reconnects: IntCounter,
    /// Drops the audit heard (its lines and their counts), by reason; every reason from the
    /// start, at 0, so that an alert on its increase sees the first one.
    pub audit_drops: IntCounterVec,
    /// The same by reason and the source's network and role: bounded by the policy and
    /// Docker's networks, never by the addresses a flood may use.
    pub audit_source_drops: IntCounterVec,
}

impl AgentMetrics {
    /// Counts `count` drops the audit heard, for `reason` from a source on `network` with
    /// `role` (empty: none).
    pub fn heard(&self, reason: DropReason, network: &str, role: &str, count: u64) {
        self.audit_drops
            .with_label_values(&[reason.name()])
            .inc_by(count);
        self.audit_source_drops
            .with_label_values(&[reason.name(), network, role])
            .inc_by(count);
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid name");
        let histogram = HistogramOpts::new(
            "enforcer_apply_duration_seconds",
            "How long each transaction took, until the kernel answered",
        )
        .buckets(APPLY_BUCKETS.to_vec());
        let audit_drops = IntCounterVec::new(
            Opts::new(
                "enforcer_audit_drops_total",
                "Drops the agent's audit heard over NFLOG (at most [audit] per_second a second \
                 per reason and table), by reason (east_west apart from egress)",
            ),
            &["reason"],
        )
        .expect("valid labels");
        for reason in DropReason::ALL {
            audit_drops.with_label_values(&[reason.name()]);
        }
        AgentMetrics {
            applies: counter(
                "enforcer_applies_total",
                "Transactions the agent sent to the kernel",
            ),
            apply_seconds: Histogram::with_opts(histogram).expect("valid buckets"),
            apply_messages: counter(
                "enforcer_apply_messages_total",
                "Netlink messages in the transactions sent",
            ),
            repairs: counter(
                "enforcer_repairs_total",
                "Restores of a table another program changed",
            ),
            docker_reconnects: counter(
                "enforcer_docker_reconnects_total",
                "Connections to Docker after the first",
            ),
            audit_drops,
            audit_source_drops: IntCounterVec::new(
                Opts::new(
                    "enforcer_audit_source_drops_total",
                    "Drops the agent's audit heard over NFLOG, by reason and the source's \
                     network and role",
                ),
                &["reason", "network", "role"],
            )
            .expect("valid labels"),
        }
    }
}

impl AgentMetrics {
    /// The agent's own metrics (shared with `self`).
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.applies.clone()),
            Box::new(self.apply_seconds.clone()),
            Box::new(self.apply_messages.clone()),
            Box::new(self.repairs.clone()),
            Box::new(self.docker_reconnects.clone()),
            Box::new(self.audit_drops.clone()),
            Box::new(self.audit_source_drops.clone()),
        ]
    }
}

/// Who the kernel's counters name, and what the state file says.
pub struct Scrape<'a> {
    /// The kernel's tables read back; `None` when the table does not exist.
    pub view: Option<&'a KernelView>,
    /// The topology that names containers' roles.
    pub topology: &'a Topology,
    /// The bound bridge ports (port -> container).
    pub bound: &'a [BoundPort],
    /// Whether Docker is followed and connected (`None`: Docker is not followed).
    pub docker_connected: Option<bool>,
    /// When the table was last applied (seconds since the epoch).
    pub last_applied_unix: Option<u64>,
}

/// The metrics text for `scrape`, with the running agent's own when there is one.
pub fn text(scrape: &Scrape<'_>, agent: Option<&AgentMetrics>) -> Result<String> {
    let mut collectors = agent.map(AgentMetrics::collectors).unwrap_or_default();
    collectors.extend(state_families(scrape)?);
    if let Some(view) = scrape.view {
        collectors.extend(kernel_families(view, scrape)?);
    }
    let registry = Registry::new();
    for collector in collectors {
        registry
            .register(collector)
            .context("registering a metric")?;
    }
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .context("encoding the metrics")?;
    String::from_utf8(out).context("the metrics text")
}

/// A pair of counter families, packets and bytes, named `NAME_packets_total` and
/// `NAME_bytes_total`, with `labels`.
struct Counted([IntCounterVec; 2]);

impl Counted {
    fn new(name: &str, help: &str, labels: &[&str]) -> Result<Counted> {
        let family = |unit: &str| {
            IntCounterVec::new(
                Opts::new(format!("{name}_{unit}_total"), format!("{help}: {unit}")),
                labels,
            )
        };
        Ok(Counted([family("packets")?, family("bytes")?]))
    }

    fn add(&self, labels: &[&str], counted: PortCounters) {
        let [packets, bytes] = &self.0;
        packets.with_label_values(labels).inc_by(counted.packets);
        bytes.with_label_values(labels).inc_by(counted.bytes);
    }

    fn collectors(self) -> [Box<dyn Collector>; 2] {
        let [packets, bytes] = self.0;
        [Box::new(packets), Box::new(bytes)]
    }
}

fn kernel_families(view: &KernelView, scrape: &Scrape<'_>) -> Result<Vec<Box<dyn Collector>>> {
    let by_reason = Counted::new(
        "enforcer_dropped",
        "What the tables' deny rules counted, by reason (egress includes east-west: one set \
         counts both)",
        &["reason"],
    )?;
    for (reason, counters) in &view.denied {
        by_reason.add(&[reason.name()], *counters);
    }
    let by_network = Counted::new(
        "enforcer_network_dropped",
        "Egress (and east-west) denied out of each managed network, summed over its subnets",
        &["network"],
    )?;
    for (network, subnets) in &view.networks {
        let mut total = PortCounters::default();
        for subnet in subnets {
            total.add((subnet.packets, subnet.bytes));
        }
        by_network.add(&[network], total);
    }
    let roles: HashMap<&str, &str> = scrape
        .topology
        .members()
        .iter()
        .map(|m| (m.name.as_str(), m.role.as_str()))
        .collect();
    let by_container = Counted::new(
        "enforcer_container_dropped",
        "What each managed container sent that was dropped: its denied egress (egress), its \
         forged frames at its bridge port (spoofing)",
        &["container", "role", "reason"],
    )?;
    let role = |container: &str| roles.get(container).copied().unwrap_or("");
    for (container, counters) in &view.containers {
        let reason = DropReason::Egress.name();
        by_container.add(&[container, role(container), reason], *counters);
    }
    let ports: BTreeMap<&str, &str> = scrape
        .bound
        .iter()
        .map(|b| (b.port.as_str(), b.container.as_str()))
        .collect();
    for (port, counters) in &view.ports {
        if let Some(container) = ports.get(port.as_str()) {
            let reason = DropReason::Spoofing.name();
            by_container.add(&[container, role(container), reason], *counters);
        }
    }
    let by_interface = Counted::new(
        "enforcer_interface_dropped",
        "What was dropped in and out of each quarantined interface",
        &["interface"],
    )?;
    for (interface, counters) in &view.quarantined {
        by_interface.add(&[interface], *counters);
    }
    Ok([by_reason, by_network, by_container, by_interface]
        .into_iter()
        .flat_map(Counted::collectors)
        .collect())
}

fn state_families(scrape: &Scrape<'_>) -> Result<Vec<Box<dyn Collector>>> {
    let gauge = |name: &str, help: &str, value: i64| -> Result<Box<dyn Collector>> {
        let gauge = IntGauge::new(name, help)?;
        gauge.set(value);
        Ok(Box::new(gauge))
    };
    let build = IntGaugeVec::new(
        Opts::new("enforcer_build_info", "The running enforcer's version"),
        &["version"],
    )?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let mut families: Vec<Box<dyn Collector>> = vec![
        Box::new(build),
        gauge(
            "enforcer_table_present",
            "Whether the kernel holds enforcer's inet table",
            i64::from(scrape.view.is_some()),
        )?,
        gauge(
            "enforcer_bound_ports",
            "Bridge ports bound to a container",
            scrape.bound.len() as i64,
        )?,
    ];
    if let Some(connected) = scrape.docker_connected {
        families.push(gauge(
            "enforcer_docker_connected",
            "Whether the agent follows Docker's events",
            i64::from(connected),
        )?);
    }
    if let Some(applied) = scrape.last_applied_unix {
        families.push(gauge(
            "enforcer_last_apply_timestamp_seconds",
            "When the tables were last applied, in seconds since the epoch",
            applied as i64,
        )?);
    }
    Ok(families)
}

/// `enforcer metrics`: the kernel's counters and the state file's facts, once.
pub fn print_once(policy: &Policy, state_path: &Path) -> Result<()> {
    let state = StateFile::load(state_path)?;
    let (classified, _) = StateFile::planned(policy, state.as_ref());
    let mut nft = Nftables::open().context("opening the nftables socket")?;
    let view = nft
        .view(&policy.table.name)
        .with_context(|| format!("reading table {}", policy.table.name))?;
    let scrape = Scrape {
        view: view.as_ref(),
        topology: &classified.topology,
        bound: state.as_ref().map_or(&[], |s| s.bound_ports.as_slice()),
        docker_connected: (policy.docker.enabled).then(|| {
            state
                .as_ref()
                .is_some_and(|s| s.docker_connection.connected)
        }),
        last_applied_unix: state.as_ref().map(|s| s.applied_unix),
    };
    print!("{}", text(&scrape, None)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use enforcer_nft::CountedSubnet;

    #[test]
    fn the_kernels_counters_are_named_after_networks_containers_roles_and_reasons() {
        let mut view = KernelView::default();
        view.networks.insert(
            "llmnet".into(),
            vec![CountedSubnet {
                subnet: "10.100.0.0/24".parse().unwrap(),
                packets: 7,
                bytes: 700,
            }],
        );
        let counted = |packets| PortCounters {
            packets,
            bytes: packets * 100,
        };
        view.containers.insert("core".into(), counted(5));
        view.denied.insert(DropReason::Host, counted(2));
        view.quarantined.insert("tap-vm0".into(), counted(3));
        let topology = Topology::new(vec![], vec![]).unwrap();
        let scrape = Scrape {
            view: Some(&view),
            topology: &topology,
            bound: &[],
            docker_connected: Some(true),
            last_applied_unix: Some(1_700_000_000),
        };
        let agent = AgentMetrics::default();
        agent.applies.inc();
        agent.apply_seconds.observe(0.003);
        agent.heard(DropReason::EastWest, "llmnet", "", 4);
        let text = text(&scrape, Some(&agent)).unwrap();
        for line in [
            "enforcer_network_dropped_packets_total{network=\"llmnet\"} 7",
            "enforcer_network_dropped_bytes_total{network=\"llmnet\"} 700",
            "enforcer_container_dropped_packets_total{container=\"core\",reason=\"egress\",role=\"\"} 5",
            "enforcer_dropped_packets_total{reason=\"host\"} 2",
            "enforcer_interface_dropped_bytes_total{interface=\"tap-vm0\"} 300",
            "enforcer_applies_total 1",
            "enforcer_apply_duration_seconds_count 1",
            "enforcer_audit_source_drops_total{network=\"llmnet\",reason=\"east_west\",role=\"\"} 4",
            "enforcer_audit_drops_total{reason=\"east_west\"} 4",
            "enforcer_audit_drops_total{reason=\"spoofing\"} 0",
            "enforcer_docker_connected 1",
            "enforcer_last_apply_timestamp_seconds 1700000000",
            "enforcer_table_present 1",
            "# TYPE enforcer_applies_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }
}
