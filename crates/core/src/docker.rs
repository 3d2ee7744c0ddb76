//! Docker's objects as the agent last saw them, and their classification into what is enforced.
//!
//! The Docker edge (crate `enforcer-docker`) fills a [`DockerState`] with raw values, exactly as
//! Docker reported them; [`classify`] decides, purely, which networks are managed, which
//! containers are proxies, and what must be skipped. Anything odd is skipped with a reason and
//! never loosens the rules: a network that cannot be enforced stays *unclassified*, so its
//! bridge stays under the unknown-network deny.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::policy::Policy;
use crate::text::printable;
use crate::topology::{
    EastWest, ManagedNetwork, Member, MemberPart, Proxy, ProxyPart, Topology, TopologyBuilder,
};

mod swarm;

pub use swarm::{
    swarm_tasks, SwarmTask, GATEWAY_BRIDGE, INGRESS_SANDBOX, OVERLAY_DRIVER, SERVICE_LABEL,
    TASK_LABEL,
};

/// Option of the bridge driver that names the bridge interface.
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// A Docker network, as reported by the Engine API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerNetwork {
    /// Network ID (64 hex digits).
    pub id: String,
    /// Network name.
    pub name: String,
    /// Driver (`bridge`, `overlay`, `macvlan`, ...).
    pub driver: String,
    /// `Internal: true`.
    pub internal: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Driver options (the bridge name among them).
    pub options: BTreeMap<String, String>,
    /// IPAM subnets, as written by Docker.
    pub subnets: Vec<String>,
}

/// A container's attachment to a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerEndpoint {
    /// The network's ID.
    pub network_id: String,
    /// IPv4 address, empty when none.
    pub ipv4: String,
    /// Global IPv6 address, empty when none.
    pub ipv6: String,
    /// MAC address of the container's interface on the network, as Docker reports it (empty
    /// when Docker gave none, as in state files written before enforcer read it).
    #[serde(default)]
    pub mac: String,
}

/// A running container, as reported by the Engine API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerContainer {
    /// Container ID.
    pub id: String,
    /// Name, without Docker's leading `/`.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Its network attachments.
    pub endpoints: Vec<DockerEndpoint>,
}

/// Every Docker object the agent knows of, by ID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerState {
    /// Networks by ID.
    pub networks: BTreeMap<String, DockerNetwork>,
    /// Running containers by ID.
    pub containers: BTreeMap<String, DockerContainer>,
    /// Docker's own network sandboxes with an endpoint on `docker_gwbridge` (the routing
    /// mesh's `ingress-sbox`), by name, each as a container of that name with no labels: they
    /// run nothing of a user's, but their bridge ports are bound like containers'.
    #[serde(default)]
    pub sandboxes: BTreeMap<String, DockerContainer>,
}

impl DockerState {
    /// The state holding these objects, each under its ID.
    pub fn of(
        networks: impl IntoIterator<Item = DockerNetwork>,
        containers: impl IntoIterator<Item = DockerContainer>,
    ) -> DockerState {
        DockerState {
            networks: networks.into_iter().map(|n| (n.id.clone(), n)).collect(),
            containers: containers.into_iter().map(|c| (c.id.clone(), c)).collect(),
            sandboxes: BTreeMap::new(),
        }
    }
}

/// Something from Docker that is not enforced as it stands (or was read the fail-closed way),
/// and why. Both texts are [`printable`]: Docker's names cannot forge log lines.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    /// What it is: `network NAME (ID)` or `container NAME (ID)`.
    pub object: String,
    /// Why, and what it means for its traffic.
    pub reason: String,
}

impl Skipped {
    /// An entry with `object` and `reason` made [`printable`].
    pub fn new(object: &str, reason: &str) -> Skipped {
        Skipped {
            object: printable(object),
            reason: printable(reason),
        }
    }
}

/// The outcome of [`classify`]: what to enforce, and what was left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classified {
    /// The policy's static entries plus the managed Docker networks and proxies; the bridges of
    /// the managed networks skipped are among its [`Topology::skipped_interfaces`].
    pub topology: Topology,
    /// What was skipped, sorted.
    pub skipped: Vec<Skipped>,
    /// Odd values read the fail-closed way (a managed label neither true nor false is taken
    /// as true), sorted: each is worth a warning.
    pub remarks: Vec<Skipped>,
    /// IDs of the Docker networks enforced (managed overlays among them): give them to
    /// [`classify_after`] next time, so that they keep winning conflicts against newcomers.
    pub enforced_networks: BTreeSet<String>,
    /// IDs of the unmanaged Docker networks whose bridge ports are all bound to their
    /// endpoints, as an enforced network's are (`docker_gwbridge`, which managed overlay
    /// containers share with unmanaged ones).
    pub guarded_networks: BTreeSet<String>,
}

impl DockerNetwork {
    /// The host interface of a bridge network: the configured bridge name, else Docker's
    /// `br-` and the first 12 characters of the ID. `None` for other drivers, and for an ID
    /// that does not start with 12 ASCII characters (Docker's IDs have 64 hex digits).
    pub fn bridge(&self) -> Option<String> {
        if self.driver != "bridge" {
            return None;
        }
        match self.options.get(BRIDGE_NAME_OPTION) {
            Some(name) => Some(name.clone()),
            None => self
                .id
                .get(..12)
                .filter(|short| short.is_ascii())
                .map(|short| format!("br-{short}")),
        }
    }

    fn describe(&self) -> String {
        format!("network {} ({})", self.name, short(&self.id))
    }

    /// Whether the network is managed under `policy`. A managed label whose value is neither
    /// true nor false (see [`label_flag`]) counts as true, and is reported in `remarks`.
    fn is_managed(&self, policy: &Policy, remarks: &mut Vec<Skipped>) -> bool {
        let key = &policy.docker.managed_label;
        let labelled = self.labels.get(key).is_some_and(|value| {
            label_flag(value).unwrap_or_else(|| {
                let reason = format!(
                    "label {key} = `{value:.64}` is neither true nor false (true, yes, on, 1 or \
                     false, no, off, 0): the network is treated as managed"
                );
                remarks.push(Skipped::new(&self.describe(), &reason));
                true
            })
        });
        (policy.docker.manage_internal && self.internal) || labelled
    }
}

/// How a boolean label value reads: the usual spellings of yes and no, in any case and with
/// surrounding white space; `None` for anything else.
pub fn label_flag(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

impl DockerContainer {
    fn describe(&self) -> String {
        format!("container {} ({})", self.name, short(&self.id))
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Whether `network`'s east-west label (`policy`'s key) says `deny`; any other value than
/// `deny` or `allow` is reported in `remarks` and read as `deny` (fail closed).
fn east_west_of(network: &DockerNetwork, policy: &Policy, remarks: &mut Vec<Skipped>) -> EastWest {
    let key = &policy.docker.east_west_label;
    match network
        .labels
        .get(key)
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => EastWest::Allow,
        Some(value) if value == "allow" => EastWest::Allow,
        Some(value) if value == "deny" => EastWest::Deny,
        Some(value) => {
            let reason = format!(
                "label {key} = `{value:.64}` is neither allow nor deny: its containers reach \
                 each other only as their roles allow"
            );
            remarks.push(Skipped::new(&network.describe(), &reason));
            EastWest::Deny
        }
    }
}

/// A managed network, checked alone: its subnets parsed, its bridge known.
fn managed_network(network: &DockerNetwork, east_west: EastWest) -> Result<ManagedNetwork, String> {
    if network.driver != "bridge" {
        return Err(format!(
            "driver `{}` does not route through a host bridge, so the host cannot enforce it; \
             use a bridge network for agents",
            network.driver
        ));
    }
    let Some(bridge) = network.bridge() else {
        return Err(format!(
            "its ID `{:.64}` does not start with 12 ASCII characters, so the name Docker gives \
             its bridge (`br-` and the ID's first 12) is unknown: the bridge is denied only if \
             it matches bridge_patterns; Docker's network IDs have 64 hex digits",
            network.id
        ));
    };
    if network.subnets.is_empty() {
        return Err("it has no IPAM subnet: its bridge stays denied until it has one".into());
    }
    let subnets = network
        .subnets
        .iter()
        .map(|s| {
            s.parse::<IpNet>().map_err(|_| {
                format!("subnet `{s:.64}` is not a CIDR prefix: its bridge stays denied")
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ManagedNetwork {
        name: network.name.clone(),
        subnets,
        interface: Some(bridge),
        east_west,
    })
}

/// [`classify_after`] with no history: no Docker network was enforced before.
pub fn classify(policy: &Policy, docker: &DockerState) -> Classified {
    classify_after(policy, docker, &BTreeSet::new())
}

/// Classifies Docker's objects under `policy` and merges them with the policy's static entries
/// (which win any conflict). Never fails: what cannot be enforced is listed in
/// [`Classified::skipped`], and a managed network that is skipped keeps its bridge out of the
/// classified set and in the skipped one, so its traffic is dropped whatever its bridge's name.
///
/// Items are offered to a [`TopologyBuilder`] in this order, so the earlier wins a conflict:
/// the static entries, Docker's managed networks (those in `previously_enforced`, the last
/// [`Classified::enforced_networks`], first; then by name, then ID), then its proxies (by name,
/// then ID). Networks come before proxies so that a proxy only takes addresses on enforced
/// networks.
pub fn classify_after(
    policy: &Policy,
    docker: &DockerState,
    previously_enforced: &BTreeSet<String>,
) -> Classified {
    let mut skipped = Vec::new();
    let mut remarks = Vec::new();
    let mut builder = TopologyBuilder::from(policy.static_topology.clone());
    if let Err(rejected) = builder.reserve_dns_servers(&policy.proxy_defaults.dns_servers) {
        let object = "policy [proxy] dns_servers";
        remarks.push(Skipped::new(object, &rejected.problem));
    }
    let networks = offer_networks(
        policy,
        docker,
        previously_enforced,
        &mut builder,
        &mut skipped,
        &mut remarks,
    );
    let carried = Carried {
        networks: &networks.enforced,
        overlays: &networks.overlays,
        gateway: swarm::offer_gateway(
            docker,
            &networks.overlays,
            &networks.enforced,
            &mut builder,
            &mut skipped,
        ),
    };

    let mut sorted: Vec<&DockerContainer> = docker
        .containers
        .values()
        .filter(|c| c.labels.get(&policy.docker.role_label) == Some(&policy.docker.proxy_role))
        .collect();
    sorted.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    for container in sorted {
        let addresses = proxy_addresses(container, &carried, &mut skipped);
        if addresses.is_empty() {
            skipped.push(Skipped::new(
                &container.describe(),
                "labelled as a proxy but has no address on an enforced managed network",
            ));
            continue;
        }
        let proxy = Proxy {
            name: container.name.clone(),
            addresses,
            services: policy.proxy_defaults.services.clone(),
            dns_servers: policy.proxy_defaults.dns_servers.clone(),
            macs: Vec::new(),
        };
        offer_proxy(&mut builder, proxy, &mut skipped);
    }
    offer_members(
        policy,
        docker,
        &carried,
        &mut builder,
        &mut skipped,
        &mut remarks,
    );
    skipped.sort();
    remarks.sort();
    let elsewhere = elsewhere(docker, &carried, &mut skipped);
    let mut containers = BTreeMap::new();
    for container in docker.containers.values() {
        for address in proxy_addresses(container, &carried, &mut Vec::new()) {
            containers.insert(address, container.name.clone());
        }
    }
    let shared = carried
        .gateway
        .is_some()
        .then(|| GATEWAY_BRIDGE.to_string());
    let guarded_networks = docker
        .gateway_network()
        .filter(|gateway| !networks.enforced.contains(&gateway.id))
        .map(|gateway| gateway.id.clone())
        .into_iter()
        .collect();
    Classified {
        topology: builder
            .build()
            .with_unmanaged_interfaces(networks.unmanaged_bridges)
            .with_skipped_interfaces(networks.skipped_bridges)
            .with_shared_interfaces(shared)
            .with_elsewhere(elsewhere)
            .with_containers(containers),
        skipped,
        remarks,
        enforced_networks: networks.enforced,
        guarded_networks,
    }
}

/// Which endpoints of a container hold its managed addresses: those on the enforced bridge
/// networks, and, for a container on any enforced network, its endpoint on `docker_gwbridge`
/// when the topology manages those (`gateway`, the network's ID). An overlay's addresses are
/// used inside Docker's namespaces only: the host never sees them.
struct Carried<'a> {
    /// The enforced networks (overlays among them).
    networks: &'a BTreeSet<String>,
    /// The enforced overlays.
    overlays: &'a BTreeSet<String>,
    gateway: Option<String>,
}

impl Carried<'_> {
    /// Whether `container` is on an enforced network.
    fn manages(&self, container: &DockerContainer) -> bool {
        container
            .endpoints
            .iter()
            .any(|e| self.networks.contains(&e.network_id))
    }

    /// Whether `endpoint` of `container` holds managed addresses.
    fn carries(&self, container: &DockerContainer, endpoint: &DockerEndpoint) -> bool {
        (self.networks.contains(&endpoint.network_id)
            && !self.overlays.contains(&endpoint.network_id))
            || (self.gateway.as_deref() == Some(endpoint.network_id.as_str())
                && self.manages(container))
    }
}

/// What [`offer_networks`] found among Docker's networks.
struct OfferedNetworks {
    /// IDs of the managed networks accepted (overlays among them).
    enforced: BTreeSet<String>,
    /// IDs of the managed overlays accepted.
    overlays: BTreeSet<String>,
    /// Bridges of the unmanaged networks.
    unmanaged_bridges: BTreeSet<String>,
    /// Bridges of the managed networks skipped.
    skipped_bridges: BTreeSet<String>,
}

/// Offers Docker's managed networks to `builder`, those in `previously_enforced` first, the
/// rest by name then ID; reports the ones refused in `skipped`.
fn offer_networks(
    policy: &Policy,
    docker: &DockerState,
    previously_enforced: &BTreeSet<String>,
    builder: &mut TopologyBuilder,
    skipped: &mut Vec<Skipped>,
    remarks: &mut Vec<Skipped>,
) -> OfferedNetworks {
    let mut out = OfferedNetworks {
        enforced: BTreeSet::new(),
        overlays: BTreeSet::new(),
        unmanaged_bridges: BTreeSet::new(),
        skipped_bridges: BTreeSet::new(),
    };
    let mut sorted: Vec<&DockerNetwork> = docker.networks.values().collect();
    sorted.sort_by_key(|n| (!previously_enforced.contains(&n.id), &n.name, &n.id));
    for network in sorted {
        if !network.is_managed(policy, remarks) {
            out.unmanaged_bridges.extend(network.bridge());
            continue;
        }
        if swarm::is_overlay(network) {
            match swarm::check_overlay(network) {
                Ok(()) => {
                    out.enforced.insert(network.id.clone());
                    out.overlays.insert(network.id.clone());
                }
                Err(reason) => skipped.push(Skipped::new(&network.describe(), &reason)),
            }
            continue;
        }
        let east_west = east_west_of(network, policy, remarks);
        let offered = managed_network(network, east_west)
            .and_then(|managed| builder.add_network(managed).map_err(|r| r.problem));
        match offered {
            Ok(()) => {
                out.enforced.insert(network.id.clone());
            }
            Err(reason) => {
                out.skipped_bridges.extend(network.bridge());
                skipped.push(Skipped::new(&network.describe(), &reason));
            }
        }
    }
    out
}

/// The addresses `container` holds on the endpoints that `carried` carries; those that do not
/// parse are reported in `skipped`.
fn proxy_addresses(
    container: &DockerContainer,
    carried: &Carried,
    skipped: &mut Vec<Skipped>,
) -> Vec<IpAddr> {
    let mut addresses = Vec::new();
    for endpoint in &container.endpoints {
        if !carried.carries(container, endpoint) {
            continue; // not on an enforced managed network: nothing to allow there
        }
        for text in [&endpoint.ipv4, &endpoint.ipv6] {
            if text.is_empty() {
                continue;
            }
            match text.parse::<IpAddr>() {
                Ok(address) => addresses.push(address),
                Err(_) => skipped.push(Skipped::new(
                    &container.describe(),
                    &format!("address `{text:.64}` is not an IP address; it gets no egress"),
                )),
            }
        }
    }
    addresses
}

/// The addresses that running containers on an enforced network hold on the endpoints
/// `carried` does not carry, with the container's name.
fn elsewhere(
    docker: &DockerState,
    carried: &Carried,
    skipped: &mut Vec<Skipped>,
) -> BTreeMap<IpAddr, String> {
    let mut out = BTreeMap::new();
    for container in docker.containers.values() {
        if !carried.manages(container) {
            continue;
        }
        let overlay = |e: &DockerEndpoint| {
            docker
                .networks
                .get(&e.network_id)
                .is_some_and(swarm::is_overlay)
        };
        for endpoint in container
            .endpoints
            .iter()
            .filter(|e| !carried.carries(container, e) && !overlay(e))
        {
            for text in [&endpoint.ipv4, &endpoint.ipv6]
                .into_iter()
                .filter(|t| !t.is_empty())
            {
                match text.parse::<IpAddr>() {
                    Ok(address) => {
                        out.insert(address, container.name.clone());
                    }
                    Err(_) => skipped.push(Skipped::new(
                        &container.describe(),
                        &format!(
                            "address `{text:.64}` on network {:.64} is not an IP address: it \
                             cannot be denied by address (its bridge's own rules still apply)",
                            endpoint.network_id
                        ),
                    )),
                }
            }
        }
    }
    out
}

/// Offers every running container whose role label names a role (not the proxy role) as a
/// member, by name then ID, with the addresses `carried` carries. A role the policy
/// does not define is reported once per role in `remarks`: its containers get no allowance.
fn offer_members(
    policy: &Policy,
    docker: &DockerState,
    carried: &Carried,
    builder: &mut TopologyBuilder,
    skipped: &mut Vec<Skipped>,
    remarks: &mut Vec<Skipped>,
) {
    let key = &policy.docker.role_label;
    let mut sorted: Vec<(&DockerContainer, &String)> = docker
        .containers
        .values()
        .filter_map(|c| Some((c, c.labels.get(key)?)))
        .filter(|(_, role)| **role != policy.docker.proxy_role)
        .collect();
    sorted.sort_by(|(a, _), (b, _)| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    let mut undefined: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (container, role) in sorted {
        if !policy.static_topology.roles().contains_key(role) {
            undefined.entry(role).or_default().push(&container.name);
            continue;
        }
        let addresses = proxy_addresses(container, carried, skipped);
        if addresses.is_empty() {
            continue; // on no enforced managed network: the role has nothing to govern
        }
        let mut member = Member {
            name: container.name.clone(),
            role: role.clone(),
            addresses,
        };
        while let Err(rejected) = builder.add_member(member.clone()) {
            let MemberPart::Address(a) = rejected.part else {
                skipped.push(Skipped::new(&container.describe(), &rejected.problem));
                break;
            };
            let address = member.addresses.remove(a);
            let object = format!("container {} address {address}", member.name);
            skipped.push(Skipped::new(&object, &rejected.problem));
            if member.addresses.is_empty() {
                break;
            }
        }
    }
    for (role, containers) in undefined {
        let reason = format!(
            "the policy defines no role `{role:.64}`: they are managed with no allowance \
             (define [roles.{role:.64}] or fix the label)"
        );
        let object = format!("containers {}", containers.join(", "));
        remarks.push(Skipped::new(&object, &reason));
    }
}

/// Offers a Docker proxy to `builder`. An address it rejects is left out (and reported) and the
/// proxy offered again with the others; any other rejection leaves out the whole proxy.
fn offer_proxy(builder: &mut TopologyBuilder, mut proxy: Proxy, skipped: &mut Vec<Skipped>) {
    while let Err(rejected) = builder.add_proxy(proxy.clone()) {
        let (object, again) = match rejected.part {
            ProxyPart::Address(a) => {
                let address = proxy.addresses.remove(a);
                let object = format!("container {} address {address}", proxy.name);
                (object, !proxy.addresses.is_empty())
            }
            ProxyPart::Name | ProxyPart::DnsServer(_) => {
                (format!("container {}", proxy.name), false)
            }
        };
        skipped.push(Skipped::new(&object, &rejected.problem));
        if !again {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(name: &str, internal: bool, subnets: &[&str]) -> DockerNetwork {
        DockerNetwork {
            id: format!("{name:0<12}{}", "0".repeat(52)),
            name: name.into(),
            driver: "bridge".into(),
            internal,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            subnets: subnets.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn proxy_on(name: &str, endpoints: &[(&DockerNetwork, &str, &str)]) -> DockerContainer {
        DockerContainer {
            id: format!("{name:0<64}"),
            name: name.into(),
            labels: [("enforcer.role".to_string(), "egress-proxy".to_string())].into(),
            endpoints: endpoints
                .iter()
                .map(|(n, v4, v6)| DockerEndpoint {
                    network_id: n.id.clone(),
                    ipv4: v4.to_string(),
                    ipv6: v6.to_string(),
                    mac: String::new(),
                })
                .collect(),
        }
    }

    fn state(networks: &[&DockerNetwork], containers: &[&DockerContainer]) -> DockerState {
        DockerState::of(
            networks.iter().map(|&n| n.clone()),
            containers.iter().map(|&c| c.clone()),
        )
    }

    #[test]
    fn internal_or_labelled_networks_are_managed_others_only_classified() {
        let llm = network("llmnet", true, &["10.100.0.0/24", "fd00:100::/64"]);
        let mut egress = network("egressnet", false, &["10.102.0.0/24"]);
        egress
            .labels
            .insert("enforcer.managed".into(), "true".into());
        let mut default = network("bridge", false, &["172.17.0.0/16"]);
        default
            .options
            .insert(BRIDGE_NAME_OPTION.into(), "docker0".into());
        let proxy = proxy_on(
            "proxy",
            &[(&egress, "10.102.0.2", ""), (&default, "172.17.0.5", "")],
        );
        let out = classify(
            &Policy::embedded(),
            &state(&[&llm, &egress, &default], &[&proxy]),
        );
        assert!(out.skipped.is_empty(), "{:?}", out.skipped);
        let names: Vec<(&str, Option<&str>)> = out
            .topology
            .networks()
            .iter()
            .map(|n| (n.name.as_str(), n.interface.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("egressnet", Some("br-egressnet000")),
                ("llmnet", Some("br-llmnet000000"))
            ]
        );
        assert_eq!(
            out.topology
                .unmanaged_interfaces()
                .iter()
                .collect::<Vec<_>>(),
            ["docker0"]
        );
        // Only the address on a managed network becomes a proxy address.
        let [p] = out.topology.proxies() else {
            panic!("one proxy")
        };
        assert_eq!(p.addresses, ["10.102.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(p.services, Policy::embedded().proxy_defaults.services);
    }

    #[test]
    fn odd_networks_are_skipped_and_stay_unclassified() {
        let huge = network("huge", true, &["0.0.0.0/0"]);
        let garbage = network("garbage", true, &["not-a-subnet"]);
        let empty = network("empty", true, &[]);
        let mut macvlan = network("vlan", true, &["10.9.0.0/24"]);
        macvlan.driver = "macvlan".into();
        let first = network("a-first", true, &["10.1.0.0/16"]);
        let overlapping = network("b-second", true, &["10.1.2.0/24"]);
        let proxy = proxy_on(
            "proxy",
            &[(&overlapping, "10.1.2.2", ""), (&first, "10.1.0.2", "")],
        );
        let out = classify(
            &Policy::embedded(),
            &state(
                &[&huge, &garbage, &empty, &macvlan, &first, &overlapping],
                &[&proxy],
            ),
        );
        let skipped: Vec<&str> = out.skipped.iter().map(|s| s.object.as_str()).collect();
        assert_eq!(
            skipped,
            [
                "network b-second (b-second0000)",
                "network empty (empty0000000)",
                "network garbage (garbage00000)",
                "network huge (huge00000000)",
                "network vlan (vlan00000000)",
            ]
        );
        let reasons: String = out
            .skipped
            .iter()
            .map(|s| s.reason.clone() + "\n")
            .collect();
        for needle in [
            "too large",
            "not a CIDR",
            "no IPAM subnet",
            "macvlan",
            "overlaps",
        ] {
            assert!(reasons.contains(needle), "{needle} in {reasons}");
        }
        // Skipped managed networks are neither managed nor known: their bridges stay denied.
        assert_eq!(out.topology.networks().len(), 1);
        assert!(out.topology.unmanaged_interfaces().is_empty());
        let [p] = out.topology.proxies() else {
            panic!("one proxy")
        };
        assert_eq!(p.addresses, ["10.1.0.2".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn static_entries_win_conflicts() {
        let text = "[[networks]]\nname = \"llmnet\"\nsubnets = [\"10.100.0.0/24\"]\n";
        let policy = Policy::parse(text, "p.toml").unwrap();
        let same_name = network("llmnet", true, &["10.200.0.0/24"]);
        let same_subnet = network("other", true, &["10.100.0.0/24"]);
        let out = classify(&policy, &state(&[&same_name, &same_subnet], &[]));
        assert_eq!(out.topology.networks().len(), 1);
        assert_eq!(out.topology.networks()[0].interface, None);
        assert_eq!(out.skipped.len(), 2, "{:?}", out.skipped);
    }

    #[test]
    fn a_skipped_network_does_not_block_a_later_one() {
        // Two networks named `dup`: the first (by ID) has host bits set and is skipped; the
        // second is checked against what was accepted only, so its name is free.
        let mut broken = network("dup", true, &["10.5.0.9/24"]);
        broken.id = format!("a{}", "0".repeat(63));
        let mut good = network("dup", true, &["10.6.0.0/24"]);
        good.id = format!("b{}", "0".repeat(63));
        let proxy = proxy_on("proxy", &[(&good, "10.6.0.2", "")]);
        let out = classify(&Policy::embedded(), &state(&[&broken, &good], &[&proxy]));
        let skipped: Vec<&str> = out.skipped.iter().map(|s| s.object.as_str()).collect();
        assert_eq!(skipped, ["network dup (a00000000000)"]);
        assert!(
            out.skipped[0].reason.contains("host bits"),
            "{:?}",
            out.skipped
        );
        assert_eq!(
            out.topology.networks()[0].subnets,
            ["10.6.0.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(out.topology.proxies().len(), 1);
    }

    #[test]
    fn a_proxy_without_a_managed_address_is_reported() {
        let plain = network("plain", false, &["172.20.0.0/16"]);
        let proxy = proxy_on("lonely", &[(&plain, "172.20.0.2", "")]);
        let out = classify(&Policy::embedded(), &state(&[&plain], &[&proxy]));
        assert!(out.topology.proxies().is_empty());
        assert_eq!(
            out.skipped[0].object,
            format!("container lonely ({})", "lonely000000")
        );
    }

    #[test]
    fn roles_members_elsewhere_and_container_counters_follow_the_labels() {
        let policy = Policy::parse(
            "[roles.agent]\negress = [{ to = \"internet\", allow = [\"tcp/443\"] }]\n",
            "p.toml",
        )
        .unwrap();
        let agents = network("agents", true, &["10.1.0.0/24"]);
        let mut east_west = network("zone", true, &["10.2.0.0/24"]);
        east_west
            .labels
            .insert("enforcer.east-west".into(), "sometimes".into());
        let plain = network("plain", false, &["172.20.0.0/16"]);
        let with_role = |name: &str, role: &str, endpoints: &[(&DockerNetwork, &str, &str)]| {
            let mut container = proxy_on(name, endpoints);
            container.labels = [("enforcer.role".to_string(), role.to_string())].into();
            container
        };
        let agent = with_role(
            "agent",
            "agent",
            &[(&agents, "10.1.0.5", ""), (&plain, "172.20.0.5", "")],
        );
        let stray = with_role("stray", "nobody", &[(&agents, "10.1.0.6", "")]);
        let plain_only = with_role("outside", "agent", &[(&plain, "172.20.0.7", "")]);
        let docker = state(
            &[&agents, &east_west, &plain],
            &[&agent, &stray, &plain_only],
        );
        let out = classify(&policy, &docker);
        let members: Vec<(&str, &str)> = out
            .topology
            .members()
            .iter()
            .map(|m| (m.name.as_str(), m.role.as_str()))
            .collect();
        // The container on no managed network has nothing for its role to govern.
        assert_eq!(members, [("agent", "agent")]);
        assert_eq!(
            out.topology.members()[0].addresses,
            ["10.1.0.5".parse::<IpAddr>().unwrap()]
        );
        // Its address on the unmanaged network is managed too.
        let elsewhere: Vec<String> = out
            .topology
            .elsewhere()
            .iter()
            .map(|(a, c)| format!("{a} {c}"))
            .collect();
        assert_eq!(elsewhere, ["172.20.0.5 agent"]);
        // Every container on a managed network is counted, whatever its role.
        let counted: Vec<&str> = out
            .topology
            .containers()
            .values()
            .map(String::as_str)
            .collect();
        assert_eq!(counted, ["agent", "stray"]);
        // An undefined role and an odd east-west value are said, and fail closed.
        let said: Vec<String> = out
            .remarks
            .iter()
            .map(|r| format!("{}: {}", r.object, r.reason))
            .collect();
        assert!(
            said.iter()
                .any(|r| r.contains("containers stray") && r.contains("no role `nobody`")),
            "{said:?}"
        );
        let zone = out
            .topology
            .networks()
            .iter()
            .find(|n| n.name == "zone")
            .unwrap();
        assert_eq!(zone.east_west, EastWest::Deny);
        assert!(
            said.iter().any(|r| r.contains("neither allow nor deny")),
            "{said:?}"
        );
    }
}
