//! `enforcer status`: what the kernel holds (networks with their drop counters, proxies, bound
//! bridge ports with what each container's forged frames counted), what
//! the state file says (last apply, why, Docker's connection), and whether the two agree. It
//! works whether the daemon runs or not: it only reads the kernel and the state file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::IpAddr;
use std::path::Path;

use anyhow::Result;
use enforcer_core::diff::{additions_last, diff, Change};
use enforcer_core::docker::{classify_after, swarm_tasks, SwarmTask};
use enforcer_core::policy::Policy;
use enforcer_core::ruleset::TableFamily;
use enforcer_nft::{KernelView, NftError, Nftables, TableHooks};
use serde::Serialize;

use crate::state_file::{show_time, DockerConnection, StateFile};

/// One managed subnet and what its egress drop counted.
#[derive(Serialize)]
struct Subnet {
    subnet: String,
    dropped_packets: u64,
    dropped_bytes: u64,
}

/// A bridge port bound to a container, and what its forged frames counted.
#[derive(Serialize)]
struct Port {
    container: String,
    network: String,
    port: String,
    mac: String,
    /// The addresses it may send as.
    addresses: Vec<IpAddr>,
    /// Whether the kernel's bridge table holds its chain.
    in_kernel: bool,
    dropped_packets: u64,
    dropped_bytes: u64,
}

/// A Swarm task on this node, and whether the kernel's table holds its address.
#[derive(Serialize)]
struct Task {
    #[serde(flatten)]
    task: SwarmTask,
    /// Whether its `docker_gwbridge` address is in the kernel's managed sets (a managed
    /// task on internal overlays only has none: it has no way out of the node to enforce).
    in_kernel: bool,
}

/// A quarantined interface and what was dropped in and out of it.
#[derive(Serialize)]
struct QuarantinedInterface {
    interface: String,
    dropped_packets: u64,
    dropped_bytes: u64,
}

/// A base chain the policy calls for, and whether the kernel has it on its hook as planned.
#[derive(Serialize)]
struct Hook {
    /// `table FAMILY NAME`.
    table: String,
    chain: String,
    hook: &'static str,
    priority: i32,
    policy: &'static str,
    /// Whether the kernel holds the chain with this hook, priority and policy, in a table that
    /// is not dormant: then netfilter runs it.
    registered: bool,
}

/// The report, as `--json` prints it.
#[derive(Serialize)]
struct Status {
    table: String,
    /// Whether the kernel could be read (CAP_NET_ADMIN), and whether the table is there.
    kernel_readable: bool,
    table_present: bool,
    /// Whether `table bridge NAME` (per-port anti-spoofing) is there.
    bridge_table_present: bool,
    /// Every base chain the policy calls for, checked against the kernel's.
    hooks: Vec<Hook>,
    networks: BTreeMap<String, Vec<Subnet>>,
    proxies: BTreeMap<String, Vec<IpAddr>>,
    /// Role name -> its members' addresses, as the kernel's role maps hold them.
    roles: BTreeMap<String, Vec<IpAddr>>,
    /// Containers whose denied egress was counted, most packets first.
    dropping_containers: Vec<ContainerDrops>,
    /// Bound bridge ports, per the state file, with the kernel's counters.
    ports: Vec<Port>,
    /// The Swarm tasks on this node, per the state file, by service.
    tasks: Vec<Task>,
    /// Frames ports bound to no container sent (all dropped).
    unbound_dropped_packets: u64,
    /// Frames shared ports (of static networks' bridges) sent as a declared proxy (dropped).
    shared_dropped_packets: u64,
    /// The policy's quarantined interface patterns.
    quarantine: Vec<String>,
    /// Quarantined interfaces that sent or were sent a packet (all dropped), most first.
    quarantined_interfaces: Vec<QuarantinedInterface>,
    state_file: String,
    /// When and why the table was last applied, per the state file.
    last_applied: Option<String>,
    last_reason: Option<String>,
    docker: Option<DockerConnection>,
    /// Problems reading, and differences between the kernel and the state file.
    notes: Vec<String>,
    agree: bool,
}

/// Prints the status; returns whether the kernel and the state file agree.
pub fn status(policy: &Policy, state_path: &Path, json: bool) -> Result<bool> {
    let table = policy.table.name.clone();
    let mut notes = Vec::new();
    let read = Nftables::open().and_then(|mut nft| Ok((nft.view(&table)?, nft.hooks(&table)?)));
    let (kernel, held_hooks, readable) = match read {
        Ok((view, hooks)) => (view, Some(hooks), true),
        Err(NftError::PermissionDenied { .. }) => {
            notes.push(
                "cannot read the kernel's tables without CAP_NET_ADMIN: run as root".to_string(),
            );
            (None, None, false)
        }
        Err(other) => return Err(other.into()),
    };
    if readable && kernel.is_none() {
        notes.push(format!(
            "table inet {table} is not in the kernel: nothing is enforced (start `enforcer run`)"
        ));
    }
    let state = match StateFile::load(state_path) {
        Ok(Some(state)) => Some(state),
        Ok(None) => {
            notes.push(format!(
                "no state file at {} (the daemon has not applied anything yet, or uses another \
                 path)",
                state_path.display()
            ));
            None
        }
        Err(error) => {
            notes.push(format!("{error:#}"));
            None
        }
    };
    if let (Some(view), Some(state)) = (&kernel, &state) {
        notes.extend(disagreements(policy, view, state));
    }
    let hooks = match &held_hooks {
        Some(held) => {
            let (hooks, problems) = check_hooks(policy, state.as_ref(), held);
            notes.extend(problems);
            hooks
        }
        None => Vec::new(),
    };
    let view = kernel.clone().unwrap_or_default();
    let report = Status {
        table: table.clone(),
        kernel_readable: readable,
        table_present: kernel.is_some(),
        bridge_table_present: view.bridge_table,
        hooks,
        networks: view
            .networks
            .iter()
            .map(|(name, subnets)| {
                let subnets = subnets
                    .iter()
                    .map(|s| Subnet {
                        subnet: s.subnet.to_string(),
                        dropped_packets: s.packets,
                        dropped_bytes: s.bytes,
                    })
                    .collect();
                (name.clone(), subnets)
            })
            .collect(),
        proxies: view.proxies.clone(),
        roles: view.roles.clone(),
        dropping_containers: dropping(&view),
        ports: bound_ports(state.as_ref(), &view),
        tasks: tasks(policy, state.as_ref(), &view),
        unbound_dropped_packets: view.unbound.packets,
        shared_dropped_packets: view.shared.packets,
        quarantine: policy.table.quarantine.clone(),
        quarantined_interfaces: quarantined(&view),
        state_file: state_path.display().to_string(),
        last_applied: state.as_ref().map(|s| show_time(s.applied_unix)),
        last_reason: state.as_ref().map(|s| s.reason.clone()),
        docker: state.as_ref().map(|s| s.docker_connection.clone()),
        agree: readable && kernel.is_some() && state.is_some() && notes.is_empty(),
        notes,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&report));
    }
    Ok(report.agree)
}

/// The base chains `policy` calls for (with the state file's Docker state, if any), each
/// checked against the kernel's `held` tables, and a note for each that netfilter does not run
/// as planned: a table missing (a missing inet table is noted elsewhere, as is a missing bridge
/// table when ports are bound) or dormant, a chain missing or on another hook, priority or
/// policy.
fn check_hooks(
    policy: &Policy,
    state: Option<&StateFile>,
    held: &BTreeMap<TableFamily, TableHooks>,
) -> (Vec<Hook>, Vec<String>) {
    let bound = state.map_or(&[][..], |s| s.bound_ports.as_slice());
    let (_, tables) = StateFile::planned(policy, state);
    let name = &policy.table.name;
    let (mut hooks, mut notes) = (Vec::new(), Vec::new());
    for (family, expected) in TableHooks::planned(&tables) {
        let table = format!("table {} {name}", family.name());
        let kernel = held.get(&family);
        match kernel {
            None if family == TableFamily::Inet => {}
            None if family == TableFamily::Bridge && !bound.is_empty() => {}
            None => notes.push(format!(
                "{table} is not in the kernel: none of its chains ({}) is on its hook",
                expected
                    .chains
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some(kernel) if kernel.dormant => notes.push(format!(
                "{table} is dormant: it holds its chains but none is on its hook, nothing in it \
                 is enforced (the running agent restores it; `enforcer apply` does too)"
            )),
            Some(_) => {}
        }
        for (chain, want) in &expected.chains {
            let have = kernel.and_then(|k| k.chains.get(chain));
            let registered = have == Some(want) && kernel.is_some_and(|k| !k.dormant);
            let planned = format!(
                "hook {} priority {} policy {}",
                want.hook_name(family),
                want.priority,
                want.policy_name()
            );
            match have {
                None if kernel.is_some() => notes.push(format!(
                    "{table} has no chain {chain}: nothing runs on {planned}"
                )),
                Some(have) if have != want => notes.push(format!(
                    "chain {chain} of {table} is on hook {} priority {} policy {} (type {}), \
                     not on {planned} (type {})",
                    have.hook_name(family),
                    have.priority,
                    have.policy_name(),
                    have.kind,
                    want.kind
                )),
                _ => {}
            }
            hooks.push(Hook {
                table: table.clone(),
                chain: chain.clone(),
                hook: want.hook_name(family),
                priority: want.priority,
                policy: want.policy_name(),
                registered,
            });
        }
    }
    (hooks, notes)
}

/// The ports the state file binds, with what the kernel's chain for each counted.
fn bound_ports(state: Option<&StateFile>, view: &KernelView) -> Vec<Port> {
    state
        .iter()
        .flat_map(|s| &s.bound_ports)
        .map(|bound| {
            let counted = view.ports.get(&bound.port);
            let mut addresses: Vec<IpAddr> = bound.ipv4.iter().map(|&a| a.into()).collect();
            addresses.extend(bound.ipv6.iter().map(|&a| IpAddr::from(a)));
            Port {
                container: bound.container.clone(),
                network: bound.network.clone(),
                port: bound.port.clone(),
                mac: bound.mac.to_string(),
                addresses,
                in_kernel: counted.is_some(),
                dropped_packets: counted.map_or(0, |c| c.packets),
                dropped_bytes: counted.map_or(0, |c| c.bytes),
            }
        })
        .collect()
}

/// What differs between the kernel's table and what the state file (under this policy) says
/// should be enforced: networks (their subnets compared as sets), then proxies; for each, what
/// the state file has that the kernel lacks or holds otherwise, then what only the kernel has.
fn disagreements(policy: &Policy, kernel: &KernelView, state: &StateFile) -> Vec<String> {
    /// The subnets in address order, as `a b c`.
    fn joined(subnets: &BTreeSet<impl std::fmt::Display>) -> String {
        let texts: Vec<String> = subnets.iter().map(|s| s.to_string()).collect();
        texts.join(" ")
    }
    let expected = classify_after(policy, &state.docker, &state.enforced_networks).topology;
    let mut out = Vec::new();
    let said = expected.networks().iter().map(|n| {
        (
            n.name.as_str(),
            n.subnets.iter().copied().collect::<BTreeSet<_>>(),
        )
    });
    let held = kernel
        .networks
        .iter()
        .map(|(name, subnets)| (name.as_str(), subnets.iter().map(|s| s.subnet).collect()));
    out.extend(additions_last(diff(said, held)).map(|change| match change {
        Change::Removed(name, _) => {
            format!("network {name} is in the state file but not in the kernel")
        }
        Change::Changed { key, old, new } => format!(
            "network {key}: the kernel holds {} but the state file says {}",
            joined(&new),
            joined(&old)
        ),
        Change::Added(name, _) => {
            format!("network {name} is in the kernel but not in the state file")
        }
    }));
    let said = expected.proxies().iter().map(|p| {
        let mut addresses = p.addresses.clone();
        addresses.sort();
        (p.name.as_str(), addresses)
    });
    let held = kernel
        .proxies
        .iter()
        .map(|(name, addresses)| (name.as_str(), addresses.clone()));
    out.extend(port_disagreements(kernel, state));
    out.extend(additions_last(diff(said, held)).map(|change| match change {
        Change::Removed(name, said) => {
            format!("proxy {name}: the state file says {said:?}, the kernel holds []")
        }
        Change::Changed { key, old, new } => {
            format!("proxy {key}: the state file says {old:?}, the kernel holds {new:?}")
        }
        Change::Added(name, _) => {
            format!("proxy {name} is in the kernel but not in the state file")
        }
    }));
    out
}

/// What differs between the bridge table's port chains and the ports the state file says are
/// bound.
fn port_disagreements(kernel: &KernelView, state: &StateFile) -> Vec<String> {
    if !state.bound_ports.is_empty() && !kernel.bridge_table {
        return vec![format!(
            "table bridge {} is not in the kernel, but the state file binds {} port(s): no \
             container's port is guarded (start `enforcer run`)",
            state.table,
            state.bound_ports.len()
        )];
    }
    let mut out: Vec<String> = state
        .bound_ports
        .iter()
        .filter(|b| !kernel.ports.contains_key(&b.port))
        .map(|b| {
            format!(
                "port {} of container {} is bound in the state file but has no chain in the \
                 kernel",
                b.port, b.container
            )
        })
        .collect();
    out.extend(
        kernel
            .ports
            .keys()
            .filter(|port| !state.bound_ports.iter().any(|b| b.port == **port))
            .map(|port| {
                format!("port {port} has a chain in the kernel but is not bound in the state file")
            }),
    );
    out
}

/// How many of the containers that dropped most the human report lists (JSON has them all).
const TOP_DROPPERS: usize = 10;

/// A container's denied egress, as its `containers_*` elements counted it.
#[derive(Debug, serde::Serialize)]
struct ContainerDrops {
    container: String,
    packets: u64,
    bytes: u64,
}

/// The containers whose denied egress was counted (not zero), most packets first.
/// The Swarm tasks of the state file's Docker state, each checked against the kernel's
/// managed sets.
fn tasks(policy: &Policy, state: Option<&StateFile>, view: &KernelView) -> Vec<Task> {
    let Some(state) = state else {
        return Vec::new();
    };
    let held: BTreeSet<IpAddr> = view
        .networks
        .values()
        .flatten()
        .filter(|s| s.subnet.prefix_len() == s.subnet.max_prefix_len())
        .map(|s| s.subnet.addr())
        .collect();
    swarm_tasks(
        &state.docker,
        &state.enforced_networks,
        &policy.docker.role_label,
    )
    .into_iter()
    .map(|task| {
        let address = task.gateway_address.as_deref();
        let in_kernel = address
            .and_then(|a| a.parse::<IpAddr>().ok())
            .is_some_and(|a| held.contains(&a));
        Task { task, in_kernel }
    })
    .collect()
}

fn tasks_text(out: &mut String, report: &Status) {
    if report.tasks.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "
{:<20} {:<32} {:<14} {:<8} GATEWAY ADDRESS",
        "SERVICE", "TASK", "ROLE", "MANAGED"
    );
    for Task { task, in_kernel } in &report.tasks {
        let address = match (&task.gateway_address, task.managed, in_kernel) {
            (None, _, _) => "none (internal overlays only)".to_string(),
            (Some(a), true, true) => format!("{a} (in the kernel's sets)"),
            (Some(a), true, false) => format!("{a} (NOT in the kernel's sets)"),
            (Some(a), false, _) => a.clone(),
        };
        let _ = writeln!(
            out,
            "{:<20} {:<32} {:<14} {:<8} {address}",
            task.service,
            task.task,
            task.role.as_deref().unwrap_or("-"),
            if task.managed { "yes" } else { "no" },
        );
    }
}

fn dropping(view: &KernelView) -> Vec<ContainerDrops> {
    let mut list: Vec<ContainerDrops> = view
        .containers
        .iter()
        .filter(|(_, c)| c.packets > 0)
        .map(|(name, c)| ContainerDrops {
            container: name.clone(),
            packets: c.packets,
            bytes: c.bytes,
        })
        .collect();
    list.sort_by(|a, b| {
        b.packets
            .cmp(&a.packets)
            .then(a.container.cmp(&b.container))
    });
    list
}

/// The interfaces the quarantine recorded, most packets first.
fn quarantined(view: &KernelView) -> Vec<QuarantinedInterface> {
    let mut list: Vec<QuarantinedInterface> = view
        .quarantined
        .iter()
        .map(|(interface, counters)| QuarantinedInterface {
            interface: interface.clone(),
            dropped_packets: counters.packets,
            dropped_bytes: counters.bytes,
        })
        .collect();
    list.sort_by(|a, b| {
        b.dropped_packets
            .cmp(&a.dropped_packets)
            .then(a.interface.cmp(&b.interface))
    });
    list
}

/// The base chains' table: each with its hook and whether netfilter runs it.
fn hooks_text(out: &mut String, report: &Status) {
    let _ = writeln!(
        out,
        "{:<24} {:<24} {:<12} {:>9} {:<7} STATE",
        "TABLE", "BASE CHAIN", "HOOK", "PRIORITY", "POLICY"
    );
    for hook in &report.hooks {
        let state = match hook.registered {
            true => "on its hook",
            false => "NOT ON ITS HOOK",
        };
        let _ = writeln!(
            out,
            "{:<24} {:<24} {:<12} {:>9} {:<7} {state}",
            hook.table, hook.chain, hook.hook, hook.priority, hook.policy
        );
    }
    let _ = writeln!(out);
}

/// The quarantined interfaces' table.
fn quarantine_text(out: &mut String, report: &Status) {
    if report.quarantine.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:>12} {:>14}   (quarantine: {})",
        "QUARANTINED INTERFACE",
        "PACKETS",
        "BYTES",
        report.quarantine.join(" ")
    );
    for q in &report.quarantined_interfaces {
        let _ = writeln!(
            out,
            "{:<24} {:>12} {:>14}",
            q.interface, q.dropped_packets, q.dropped_bytes
        );
    }
}

/// The bound ports' table, and the unbound ports' count.
fn ports_text(out: &mut String, report: &Status) {
    let _ = writeln!(
        out,
        "\n{:<24} {:<16} {:<16} {:<18} {:>12}  ADDRESSES",
        "CONTAINER", "NETWORK", "PORT", "MAC", "FORGED PKTS"
    );
    for port in &report.ports {
        let list: Vec<String> = port.addresses.iter().map(|a| a.to_string()).collect();
        let count = match port.in_kernel {
            true => port.dropped_packets.to_string(),
            false => "NOT BOUND".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<24} {:<16} {:<16} {:<18} {count:>12}  {}",
            port.container,
            port.network,
            port.port,
            port.mac,
            list.join(" ")
        );
    }
    let _ = writeln!(
        out,
        "frames from ports bound to no container (dropped): {}",
        report.unbound_dropped_packets
    );
    let _ = writeln!(
        out,
        "frames from shared ports claiming a declared proxy (dropped): {}",
        report.shared_dropped_packets
    );
}

fn human(report: &Status) -> String {
    let mut out = String::new();
    let presence = match (report.kernel_readable, report.table_present) {
        (false, _) => "unknown (kernel not readable)",
        (true, true) => "in the kernel",
        (true, false) => "ABSENT from the kernel",
    };
    let _ = writeln!(out, "table inet {}: {presence}", report.table);
    if report.kernel_readable {
        let bridge = match report.bridge_table_present {
            true => "in the kernel",
            false => "absent (ports are guarded only while enforcer follows Docker)",
        };
        let _ = writeln!(out, "table bridge {}: {bridge}", report.table);
    }
    match (&report.last_applied, &report.last_reason) {
        (Some(at), Some(reason)) => {
            let _ = writeln!(out, "last applied: {at} ({reason})");
        }
        _ => {
            let _ = writeln!(out, "last applied: unknown (no state file)");
        }
    }
    if let Some(docker) = &report.docker {
        let state = if docker.connected {
            "connected".to_string()
        } else {
            format!(
                "not connected ({})",
                docker.error.as_deref().unwrap_or("no error recorded")
            )
        };
        let _ = writeln!(
            out,
            "docker: {state} at {}, since {}",
            docker.host,
            show_time(docker.since_unix)
        );
    }
    let _ = writeln!(out, "state file: {}\n", report.state_file);
    if report.kernel_readable {
        hooks_text(&mut out, report);
    }
    let _ = writeln!(
        out,
        "{:<24} {:<20} {:>12} {:>14}",
        "NETWORK", "SUBNET", "DROPPED PKTS", "DROPPED BYTES"
    );
    for (name, subnets) in &report.networks {
        for subnet in subnets {
            let _ = writeln!(
                out,
                "{name:<24} {:<20} {:>12} {:>14}",
                subnet.subnet, subnet.dropped_packets, subnet.dropped_bytes
            );
        }
    }
    let _ = writeln!(out, "\n{:<24} ADDRESSES", "PROXY");
    for (name, addresses) in &report.proxies {
        let list: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(out, "{name:<24} {}", list.join(" "));
    }
    if !report.roles.is_empty() {
        let _ = writeln!(out, "\n{:<24} MEMBER ADDRESSES", "ROLE");
        for (name, addresses) in &report.roles {
            let list: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
            let _ = writeln!(out, "{name:<24} {}", list.join(" "));
        }
    }
    if !report.dropping_containers.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<24} {:>12} {:>14}",
            "CONTAINER (DENIED EGRESS)", "PACKETS", "BYTES"
        );
        for c in report.dropping_containers.iter().take(TOP_DROPPERS) {
            let _ = writeln!(out, "{:<24} {:>12} {:>14}", c.container, c.packets, c.bytes);
        }
    }
    ports_text(&mut out, report);
    tasks_text(&mut out, report);
    quarantine_text(&mut out, report);
    if report.notes.is_empty() {
        let _ = writeln!(out, "\nkernel and state file agree");
    } else {
        let _ = writeln!(out);
        for note in &report.notes {
            let _ = writeln!(out, "note: {note}");
        }
    }
    out
}
