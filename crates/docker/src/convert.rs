//! Docker's API models (bollard's) -> enforcer-core's plain [`DockerState`] values, copied as
//! Docker reported them.

use std::collections::{BTreeMap, HashMap};

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerInspectResponse, ContainerSummary, EndpointResource, EndpointSettings, Ipam, Network,
    NetworkInspect,
};
use enforcer_core::docker::{DockerContainer, DockerEndpoint, DockerNetwork};

/// A 404 from Docker as "gone".
pub(crate) async fn absent_if_not_found<T>(
    request: impl std::future::Future<Output = Result<T, BollardError>>,
) -> Result<Option<T>, BollardError> {
    match request.await {
        Ok(value) => Ok(Some(value)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Keeps what re-reading object `id` found, or forgets the object when it is gone or no
/// longer of interest.
pub(crate) fn store<T>(objects: &mut BTreeMap<String, T>, id: &str, found: Option<T>) {
    match found {
        Some(object) => {
            objects.insert(id.to_string(), object);
        }
        None => {
            objects.remove(id);
        }
    }
}

fn is_not_found(error: &BollardError) -> bool {
    matches!(
        error,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn sorted(map: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    map.unwrap_or_default().into_iter().collect()
}

fn subnets(ipam: Option<Ipam>) -> Vec<String> {
    ipam.and_then(|i| i.config)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.subnet)
        .collect()
}

/// The network fields enforcer uses; `None` (logged) without an ID.
#[allow(clippy::too_many_arguments)]
fn network(
    id: Option<String>,
    name: Option<String>,
    driver: Option<String>,
    internal: Option<bool>,
    labels: Option<HashMap<String, String>>,
    options: Option<HashMap<String, String>>,
    ipam: Option<Ipam>,
) -> Option<DockerNetwork> {
    let Some(id) = id else {
        tracing::warn!(network = ?name, "Docker reported a network without an ID: skipped");
        return None;
    };
    Some(DockerNetwork {
        name: name.unwrap_or_else(|| id.clone()),
        id,
        driver: driver.unwrap_or_default(),
        internal: internal.unwrap_or(false),
        labels: sorted(labels),
        options: sorted(options),
        subnets: subnets(ipam),
    })
}

pub(crate) fn network_from_list(n: Network) -> Option<DockerNetwork> {
    network(
        n.id, n.name, n.driver, n.internal, n.labels, n.options, n.ipam,
    )
}

pub(crate) fn network_from_inspect(n: NetworkInspect) -> Option<DockerNetwork> {
    network(
        n.id, n.name, n.driver, n.internal, n.labels, n.options, n.ipam,
    )
}

/// The endpoints a network's inspect lists (`docker_gwbridge`'s are listed nowhere else), by
/// container ID or sandbox name, for network `network_id`; addresses without their prefix
/// length, as a container's inspect writes them.
pub(crate) fn network_endpoints(
    network_id: &str,
    containers: Option<HashMap<String, EndpointResource>>,
) -> BTreeMap<String, DockerEndpoint> {
    let address = |cidr: Option<String>| {
        let cidr = cidr.unwrap_or_default();
        cidr.split_once('/')
            .map_or(cidr.clone(), |(address, _)| address.to_string())
    };
    containers
        .unwrap_or_default()
        .into_iter()
        .map(|(key, e)| {
            let endpoint = DockerEndpoint {
                network_id: network_id.to_string(),
                ipv4: address(e.ipv4_address),
                ipv6: address(e.ipv6_address),
                mac: e.mac_address.unwrap_or_default(),
            };
            (key, endpoint)
        })
        .collect()
}

fn endpoints(networks: Option<HashMap<String, EndpointSettings>>) -> Vec<DockerEndpoint> {
    let mut list: Vec<DockerEndpoint> = networks
        .unwrap_or_default()
        .into_values()
        .filter_map(|e| {
            Some(DockerEndpoint {
                network_id: e.network_id?,
                ipv4: e.ip_address.unwrap_or_default(),
                ipv6: e.global_ipv6_address.unwrap_or_default(),
                mac: e.mac_address.unwrap_or_default(),
            })
        })
        .collect();
    list.sort_by(|a, b| a.network_id.cmp(&b.network_id));
    list
}

pub(crate) fn container_from_summary(c: ContainerSummary) -> Option<DockerContainer> {
    let id = c.id?;
    let name = c
        .names
        .and_then(|n| n.into_iter().next())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_else(|| id.clone());
    Some(DockerContainer {
        id,
        name,
        labels: sorted(c.labels),
        endpoints: endpoints(c.network_settings.and_then(|s| s.networks)),
    })
}

/// A running container; `None` when it is not running.
pub(crate) fn container_from_inspect(c: ContainerInspectResponse) -> Option<DockerContainer> {
    let running = c.state.and_then(|s| s.running).unwrap_or(false);
    let labels = sorted(c.config.and_then(|config| config.labels));
    if !running {
        return None;
    }
    let id = c.id?;
    Some(DockerContainer {
        name: c
            .name
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_else(|| id.clone()),
        id,
        labels,
        endpoints: endpoints(c.network_settings.and_then(|s| s.networks)),
    })
}
