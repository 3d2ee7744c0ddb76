//! The Docker edge: a read-only client of the Docker Engine API (bollard, over the unix socket)
//! that fills enforcer-core's [`DockerState`] and follows the event stream.
//!
//! Only read calls are made: `GET /version`, `/networks`, `/networks/{id}`, `/containers/json`,
//! `/containers/{id}/json` and `/events`. What Docker reports is copied as it is; judging it
//! (managed or not, odd subnets, ...) is enforcer-core's [`classify`](enforcer_core::docker::classify).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerInspectResponse, ContainerSummary, EndpointSettings, EventMessage,
    EventMessageTypeEnum, Ipam, Network, NetworkInspect,
};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::{Docker, API_DEFAULT_VERSION};
use enforcer_core::docker::{DockerContainer, DockerEndpoint, DockerNetwork, DockerState};
use enforcer_core::policy::DockerSettings;
use futures_util::{Stream, StreamExt};

/// Where Docker is reached when `DOCKER_HOST` is not set.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Seconds a single API request may take before it counts as failed.
const REQUEST_TIMEOUT_SECS: u64 = 10;

/// Network events that change what a network is or whether it exists.
const NETWORK_ACTIONS: &[&str] = &["create", "destroy", "remove", "connect", "disconnect"];
/// Container events that change whether a proxy runs, or its name or addresses.
const CONTAINER_ACTIONS: &[&str] = &["start", "die", "destroy", "rename", "update"];

/// A failure talking to Docker. The rules in force are never changed because of one.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// `DOCKER_HOST` names something other than a unix socket.
    #[error(
        "DOCKER_HOST={0} is not a unix socket: enforcer only talks to a local dockerd, set it to \
         unix:///path/to/docker.sock"
    )]
    UnsupportedHost(String),
    /// A request failed (socket absent, dockerd down, bad answer).
    #[error("Docker at {host}: {action} failed: {source}")]
    Request {
        /// The socket.
        host: String,
        /// What was asked.
        action: String,
        /// Why it failed.
        source: BollardError,
    },
    /// The event stream ended: dockerd stopped or restarted.
    #[error("Docker at {0}: the event stream ended (dockerd stopped or restarted)")]
    StreamEnded(String),
}

/// Which containers are proxies: label key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySelector {
    /// Label key (`enforcer.role`).
    pub label: String,
    /// Label value (`egress-proxy`).
    pub value: String,
}

impl From<&DockerSettings> for ProxySelector {
    fn from(settings: &DockerSettings) -> Self {
        ProxySelector {
            label: settings.role_label.clone(),
            value: settings.proxy_role.clone(),
        }
    }
}

/// One relevant Docker event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A network event: what happened, the network's ID and name.
    Network {
        /// `create`, `destroy`, `connect`, ...
        action: String,
        /// Network ID.
        id: String,
        /// Network name.
        name: String,
        /// For connect and disconnect: the container.
        container: Option<String>,
    },
    /// A proxy container's event: what happened, its ID and name.
    Container {
        /// `start`, `die`, `rename`, ...
        action: String,
        /// Container ID.
        id: String,
        /// Container name.
        name: String,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Network { action, name, .. } => write!(f, "network {action} {name}"),
            Change::Container { action, name, .. } => write!(f, "container {action} {name}"),
        }
    }
}

/// A connected, version-negotiated Docker client.
#[derive(Clone)]
pub struct DockerSource {
    docker: Docker,
    host: String,
    proxies: ProxySelector,
}

/// `DOCKER_HOST`, or [`DEFAULT_HOST`].
pub fn host_from_env() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_HOST.to_string())
}

/// The current time as Docker's `since` parameter (`seconds.nanoseconds`).
pub fn since_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

impl DockerSource {
    /// Connects to `host` (`unix:///path` or a plain path) and negotiates the API version.
    pub async fn connect(host: &str, proxies: ProxySelector) -> Result<Self, DockerError> {
        let path = match host.strip_prefix("unix://") {
            Some(path) => path,
            None if host.starts_with('/') => host,
            None => return Err(DockerError::UnsupportedHost(host.to_string())),
        };
        let request = |action: &str, source| DockerError::Request {
            host: host.to_string(),
            action: action.to_string(),
            source,
        };
        let docker = Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
            .map_err(|e| request("connecting", e))?
            .negotiate_version()
            .await
            .map_err(|e| request("negotiating the API version", e))?;
        Ok(DockerSource {
            docker,
            host: host.to_string(),
            proxies,
        })
    }

    /// The socket this client talks to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The negotiated API version.
    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }

    fn error(&self, action: impl Into<String>, source: BollardError) -> DockerError {
        DockerError::Request {
            host: self.host.clone(),
            action: action.into(),
            source,
        }
    }

    /// Every network and every running proxy container: two requests.
    pub async fn snapshot(&self) -> Result<DockerState, DockerError> {
        let networks = self
            .docker
            .list_networks(None)
            .await
            .map_err(|e| self.error("listing networks", e))?;
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{}={}", self.proxies.label, self.proxies.value)],
        )]);
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.error("listing proxy containers", e))?;
        let mut state = DockerState::default();
        for network in networks.into_iter().filter_map(network_from_list) {
            state.networks.insert(network.id.clone(), network);
        }
        for container in containers.into_iter().filter_map(container_from_summary) {
            state.containers.insert(container.id.clone(), container);
        }
        Ok(state)
    }

    /// The relevant events since `since` (see [`since_now`]), as [`Change`]s. Container events
    /// of non-proxy containers are left out. Ends with [`DockerError::StreamEnded`] or a
    /// request error when dockerd goes away.
    pub fn changes(
        &self,
        since: &str,
    ) -> impl Stream<Item = Result<Change, DockerError>> + Send + 'static {
        let actions: Vec<String> = NETWORK_ACTIONS
            .iter()
            .chain(CONTAINER_ACTIONS)
            .map(|a| a.to_string())
            .collect();
        let filters = HashMap::from([
            (
                "type".to_string(),
                vec!["network".to_string(), "container".to_string()],
            ),
            ("event".to_string(), actions),
        ]);
        let options = EventsOptions {
            since: Some(since.to_string()),
            until: None,
            filters: Some(filters),
        };
        let source = self.clone();
        let host = self.host.clone();
        self.docker
            .events(Some(options))
            .filter_map(move |event| {
                let item = match event {
                    Ok(message) => source.change_of(message).map(Ok),
                    Err(e) => Some(Err(source.error("reading the event stream", e))),
                };
                std::future::ready(item)
            })
            .chain(futures_util::stream::once(std::future::ready(Err(
                DockerError::StreamEnded(host),
            ))))
    }

    fn change_of(&self, message: EventMessage) -> Option<Change> {
        let action = message.action?;
        let actor = message.actor?;
        let id = actor.id?;
        let attributes = actor.attributes.unwrap_or_default();
        let name = attributes
            .get("name")
            .cloned()
            .unwrap_or_else(|| id.clone());
        match message.typ? {
            EventMessageTypeEnum::NETWORK if NETWORK_ACTIONS.contains(&action.as_str()) => {
                Some(Change::Network {
                    container: attributes.get("container").cloned(),
                    action,
                    id,
                    name,
                })
            }
            EventMessageTypeEnum::CONTAINER if CONTAINER_ACTIONS.contains(&action.as_str()) => {
                // Container events carry the container's labels as attributes.
                let is_proxy = attributes.get(&self.proxies.label) == Some(&self.proxies.value);
                is_proxy.then_some(Change::Container { action, id, name })
            }
            _ => None,
        }
    }

    /// Brings `state` up to date with what `change` names: re-reads that network or container
    /// (gone objects are removed).
    pub async fn refresh(
        &self,
        state: &mut DockerState,
        change: &Change,
    ) -> Result<(), DockerError> {
        match change {
            Change::Network { id, container, .. } => {
                self.refresh_network(state, id).await?;
                // A proxy joining or leaving a network changes its addresses.
                if let Some(container) = container
                    .as_ref()
                    .filter(|c| state.containers.contains_key(*c))
                {
                    self.refresh_container(state, container).await?;
                }
            }
            Change::Container { id, .. } => self.refresh_container(state, id).await?,
        }
        Ok(())
    }

    async fn refresh_network(&self, state: &mut DockerState, id: &str) -> Result<(), DockerError> {
        let found = absent_if_not_found(self.docker.inspect_network(id, None).await)
            .map_err(|e| self.error(format!("inspecting network {id}"), e))?;
        store(
            &mut state.networks,
            id,
            found.and_then(network_from_inspect),
        );
        Ok(())
    }

    async fn refresh_container(
        &self,
        state: &mut DockerState,
        id: &str,
    ) -> Result<(), DockerError> {
        let found = absent_if_not_found(self.docker.inspect_container(id, None).await)
            .map_err(|e| self.error(format!("inspecting container {id}"), e))?;
        let proxy = found.and_then(|c| container_from_inspect(c, &self.proxies));
        store(&mut state.containers, id, proxy);
        Ok(())
    }
}

/// A 404 from Docker as "gone".
fn absent_if_not_found<T>(result: Result<T, BollardError>) -> Result<Option<T>, BollardError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Keeps what re-reading object `id` found, or forgets the object when it is gone or no
/// longer of interest.
fn store<T>(objects: &mut BTreeMap<String, T>, id: &str, found: Option<T>) {
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

fn network_from_list(n: Network) -> Option<DockerNetwork> {
    network(
        n.id, n.name, n.driver, n.internal, n.labels, n.options, n.ipam,
    )
}

fn network_from_inspect(n: NetworkInspect) -> Option<DockerNetwork> {
    network(
        n.id, n.name, n.driver, n.internal, n.labels, n.options, n.ipam,
    )
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
            })
        })
        .collect();
    list.sort_by(|a, b| a.network_id.cmp(&b.network_id));
    list
}

fn container_from_summary(c: ContainerSummary) -> Option<DockerContainer> {
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

/// A running proxy container; `None` when it is not running or not a proxy.
fn container_from_inspect(
    c: ContainerInspectResponse,
    proxies: &ProxySelector,
) -> Option<DockerContainer> {
    let running = c.state.and_then(|s| s.running).unwrap_or(false);
    let labels = sorted(c.config.and_then(|config| config.labels));
    if !running || labels.get(&proxies.label) != Some(&proxies.value) {
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
