//! Docker Swarm on one node: overlay networks and `docker_gwbridge`.
//!
//! Containers on an overlay network reach each other inside a network namespace of Docker's
//! (`1-<network ID>` under its exec root), and other nodes' containers through VXLAN: the host's
//! hooks never see that traffic. What the host does see of a container on a non-internal
//! overlay is its endpoint on `docker_gwbridge`, the bridge its default route points to and
//! the one way its traffic leaves the node. So a managed overlay (internal, or labelled) is
//! enforced there: its containers are managed, and their `docker_gwbridge` addresses (one /32
//! each) form a managed network of that name whose interface is `docker_gwbridge`, with
//! east-west denied. Their roles' and proxies' egress is matched on those addresses; anything
//! else they open is dropped.
//!
//! Containers of unmanaged overlays use `docker_gwbridge` too, so the bridge is *shared*: a
//! packet entering from it is managed by its source address alone. That is sound because every
//! port of `docker_gwbridge` is guarded in the bridge table: bound to the endpoint Docker
//! reports for it (its container's, or the routing mesh's `ingress-sbox`), or sending nothing.
//! Docker lists these endpoints only in the network's own inspect, never in a container's:
//! [`DockerState::set_gateway_endpoints`] files them under their containers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{DockerContainer, DockerEndpoint, DockerNetwork, DockerState, Skipped};
use crate::topology::{EastWest, ManagedNetwork, TopologyBuilder};

/// The bridge (and network) Docker gives every node of a swarm: the way out of the
/// containers on non-internal overlay networks.
pub const GATEWAY_BRIDGE: &str = "docker_gwbridge";

/// The name under which Docker's network inspect lists the routing mesh's sandbox, the one
/// endpoint on `docker_gwbridge` that belongs to no container.
pub const INGRESS_SANDBOX: &str = "ingress-sbox";

/// The driver of Swarm's overlay networks.
pub const OVERLAY_DRIVER: &str = "overlay";

impl DockerState {
    /// The `docker_gwbridge` network, when Docker reported it (a node that is, or was, in a
    /// swarm).
    pub fn gateway_network(&self) -> Option<&DockerNetwork> {
        self.networks
            .values()
            .find(|n| n.bridge().as_deref() == Some(GATEWAY_BRIDGE))
    }

    /// Replaces what the state holds of the endpoints of network `network_id`
    /// (`docker_gwbridge`) with `endpoints`, keyed as Docker's network inspect keys them: by
    /// container ID, by the name of the routing mesh's sandbox ([`INGRESS_SANDBOX`]), or, for
    /// an endpoint not yet joined to its container's sandbox, as `ep-<endpoint ID>`. A
    /// container's endpoint is filed under the container (when it is running and known); the
    /// routing mesh's becomes one of [`DockerState::sandboxes`]; any other stays unfiled, so
    /// its port stays unbound and sends nothing.
    pub fn set_gateway_endpoints(
        &mut self,
        network_id: &str,
        endpoints: BTreeMap<String, DockerEndpoint>,
    ) {
        for container in self.containers.values_mut() {
            container.endpoints.retain(|e| e.network_id != network_id);
        }
        self.sandboxes.clear();
        for (key, endpoint) in endpoints {
            let endpoint = DockerEndpoint {
                network_id: network_id.to_string(),
                ..endpoint
            };
            if let Some(container) = self.containers.get_mut(&key) {
                container.endpoints.push(endpoint);
                container
                    .endpoints
                    .sort_by(|a, b| a.network_id.cmp(&b.network_id));
            } else if key == INGRESS_SANDBOX {
                self.sandboxes.insert(
                    key.clone(),
                    DockerContainer {
                        id: key.clone(),
                        name: key,
                        labels: BTreeMap::new(),
                        endpoints: vec![endpoint],
                    },
                );
            }
            // Else a container Docker has not reported as running yet, or an endpoint that
            // has no container yet (a task's, a moment before it starts, whose overlays are
            // not known): taken for an unmanaged sandbox, its address would leave as
            // unmanaged the moment the task runs. Its port sends nothing until Docker names
            // its container.
        }
    }
}

/// Whether `network` is a Swarm overlay.
pub(super) fn is_overlay(network: &DockerNetwork) -> bool {
    network.driver == OVERLAY_DRIVER
}

/// A managed overlay, checked alone: it has subnets and each is a CIDR prefix. Its subnets
/// are not managed on this host (its traffic never crosses the host's hooks); its containers
/// are, through their `docker_gwbridge` endpoints.
pub(super) fn check_overlay(network: &DockerNetwork) -> Result<(), String> {
    if network.subnets.is_empty() {
        return Err("it has no IPAM subnet: its containers stay unmanaged until it has".into());
    }
    for subnet in &network.subnets {
        if subnet.parse::<IpNet>().is_err() {
            return Err(format!(
                "subnet `{subnet:.64}` is not a CIDR prefix: its containers are not managed"
            ));
        }
    }
    Ok(())
}

/// Offers to `builder` the managed network of the `docker_gwbridge` addresses of the
/// containers on the `overlays` (managed overlays enforced), unless `docker_gwbridge` is
/// itself an `enforced` network. Returns the ID of the gateway network when its managed
/// containers' endpoints are now carried by the topology. What is refused is reported in
/// `skipped`: those addresses then stay managed containers' addresses on an unmanaged network,
/// which open nothing.
pub(super) fn offer_gateway(
    docker: &DockerState,
    overlays: &BTreeSet<String>,
    enforced: &BTreeSet<String>,
    builder: &mut TopologyBuilder,
    skipped: &mut Vec<Skipped>,
) -> Option<String> {
    let gateway = docker.gateway_network()?;
    if enforced.contains(&gateway.id) || overlays.is_empty() {
        return None;
    }
    let mut subnets = BTreeSet::new();
    for container in docker.containers.values() {
        if !container
            .endpoints
            .iter()
            .any(|e| overlays.contains(&e.network_id))
        {
            continue;
        }
        for endpoint in container
            .endpoints
            .iter()
            .filter(|e| e.network_id == gateway.id)
        {
            for text in [&endpoint.ipv4, &endpoint.ipv6]
                .into_iter()
                .filter(|t| !t.is_empty())
            {
                // An address that does not parse is reported by `elsewhere`.
                match text.parse::<IpAddr>() {
                    Ok(IpAddr::V4(a)) => subnets.insert(IpNet::V4(Ipv4Net::from(a))),
                    Ok(IpAddr::V6(a)) => subnets.insert(IpNet::V6(Ipv6Net::from(a))),
                    Err(_) => false,
                };
            }
        }
    }
    if subnets.is_empty() {
        return None;
    }
    let network = ManagedNetwork {
        name: GATEWAY_BRIDGE.to_string(),
        subnets: subnets.into_iter().collect(),
        interface: Some(GATEWAY_BRIDGE.to_string()),
        east_west: EastWest::Deny,
    };
    match builder.add_network(network) {
        Ok(()) => Some(gateway.id.clone()),
        Err(rejected) => {
            let reason = format!(
                "the docker_gwbridge addresses of managed overlay containers cannot be managed \
                 ({}): they open nothing",
                rejected.problem
            );
            skipped.push(Skipped::new(&gateway.describe(), &reason));
            None
        }
    }
}

/// Label Swarm puts on a task's container: its service's name.
pub const SERVICE_LABEL: &str = "com.docker.swarm.service.name";

/// Label Swarm puts on a task's container: the task's name (`SERVICE.SLOT.ID`).
pub const TASK_LABEL: &str = "com.docker.swarm.task.name";

/// A Swarm task running on this node, as enforced here.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct SwarmTask {
    /// Its service's name.
    pub service: String,
    /// The task's name.
    pub task: String,
    /// Its container's name.
    pub container: String,
    /// Whether it is on a managed network enforced here (then it opens only what its role
    /// allows).
    pub managed: bool,
    /// Its role label, when it has one.
    pub role: Option<String>,
    /// Its address on `docker_gwbridge`, the one the host's rules see, when it has one.
    pub gateway_address: Option<String>,
}

/// The Swarm tasks among `docker`'s containers (those with Swarm's task label), by service
/// then task, each with whether `enforced_networks` (a [`super::Classified`]'s) manage it and
/// `role_label`'s value. Names are [`printable`](crate::text::printable).
pub fn swarm_tasks(
    docker: &DockerState,
    enforced_networks: &BTreeSet<String>,
    role_label: &str,
) -> Vec<SwarmTask> {
    use crate::text::printable;
    let gateway = docker.gateway_network().map(|n| n.id.as_str());
    let mut tasks: Vec<SwarmTask> = docker
        .containers
        .values()
        .filter_map(|c| {
            let task = c.labels.get(TASK_LABEL)?;
            let service = c.labels.get(SERVICE_LABEL).map_or("", String::as_str);
            Some(SwarmTask {
                service: printable(service),
                task: printable(task),
                container: printable(&c.name),
                managed: c
                    .endpoints
                    .iter()
                    .any(|e| enforced_networks.contains(&e.network_id)),
                role: c.labels.get(role_label).map(|r| printable(r)),
                gateway_address: c
                    .endpoints
                    .iter()
                    .find(|e| Some(e.network_id.as_str()) == gateway && !e.ipv4.is_empty())
                    .map(|e| printable(&e.ipv4)),
            })
        })
        .collect();
    tasks.sort();
    tasks
}
