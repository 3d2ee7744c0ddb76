//! The Docker edge: a read-only client of the Docker Engine API (bollard, over the unix socket)
//! that fills enforcer-core's [`DockerState`] and follows the event stream.
//!
//! Only read calls are made: `GET /version`, `/networks`, `/networks/{id}`, `/containers/json`,
//! `/containers/{id}/json` and `/events`. What Docker reports is copied as it is; judging it
//! (managed or not, odd subnets, ...) is enforcer-core's [`classify`](enforcer_core::docker::classify).

mod convert;
pub mod events;
pub mod queue;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::errors::Error as BollardError;
use bollard::models::{EventMessage, EventMessageTypeEnum, NetworkInspect};
use bollard::query_parameters::ListContainersOptions;
use bollard::{Docker, API_DEFAULT_VERSION};
use enforcer_core::docker::{
    DockerContainer, DockerNetwork, DockerState, GATEWAY_BRIDGE, OVERLAY_DRIVER,
};
use enforcer_core::text::printable;
use futures_util::{stream, Stream, StreamExt, TryStreamExt};

use convert::{
    absent_if_not_found, container_from_inspect, container_from_summary, network_endpoints,
    network_from_inspect, network_from_list, store,
};
pub use events::EventStreamError;

/// Where Docker is reached when `DOCKER_HOST` is not set.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// How many re-reads of one batch of changes wait for Docker at once.
pub(crate) const CONCURRENT_READS: usize = 8;
/// Seconds a single API request may take before it counts as failed.
const REQUEST_TIMEOUT_SECS: u64 = 10;
/// The deadline for a request's whole answer, body included: a Docker that answers slowly
/// (a byte every few seconds) counts as stalled once it passes.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(REQUEST_TIMEOUT_SECS);

/// Network events that change what a network is or whether it exists.
const NETWORK_ACTIONS: &[&str] = &["create", "destroy", "remove", "connect", "disconnect"];
/// Container events that change whether a container runs, or its name, labels or endpoints.
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
    /// A request's answer did not arrive whole within [`REQUEST_DEADLINE`].
    #[error(
        "Docker at {host}: {action} stalled: no complete answer within {}s; the rules in force \
         stay, and bridges not classified yet stay denied",
        REQUEST_DEADLINE.as_secs()
    )]
    Stalled {
        /// The socket.
        host: String,
        /// What was asked.
        action: String,
    },
    /// The event stream failed or carried something that is not an event.
    #[error("Docker at {host}: the event stream failed: {source}")]
    Events {
        /// The socket.
        host: String,
        /// Why.
        source: EventStreamError,
    },
    /// The event stream ended: dockerd stopped or restarted.
    #[error("Docker at {0}: the event stream ended (dockerd stopped or restarted)")]
    StreamEnded(String),
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
    /// A container's event: what happened, its ID and name.
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
    /// `network create NAME`; control characters in Docker's names are escaped, so a name
    /// cannot forge a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Network { action, name, .. } => {
                write!(f, "network {action} {}", printable(name))
            }
            Change::Container { action, name, .. } => {
                write!(f, "container {action} {}", printable(name))
            }
        }
    }
}

/// What a batch of changes reads again, each object once however many changes name it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Rereads {
    /// Networks, by ID.
    networks: BTreeSet<String>,
    /// Containers, by ID.
    containers: BTreeSet<String>,
}

/// Network events after which a network `state` already holds is read again: what a network
/// is (driver, internal, labels, options, subnets) is fixed when Docker creates it, so a
/// connect or disconnect changes only the container's endpoints, which the container's re-read
/// brings (an overlay's inspect waits for Docker's network controller, seconds while tasks
/// start).
const NETWORK_CHANGING_ACTIONS: &[&str] = &["create", "destroy", "remove"];

impl Rereads {
    /// What `changes` make read again, given `state` before them: a network change names its
    /// network (a known one only when created or removed, or when the change names no
    /// container: the queue files such a change under the key a `destroy` shares, so it may
    /// stand for one) and, for a connect or disconnect, its container if it runs. A connect of
    /// a container that does not run is part of starting it (Docker logs a start's connects
    /// before its `start`): the `start` follows, read in this batch or a later one, and until
    /// then the container is not in `state` and its ports stay unbound. Every
    /// container is read by its inspect, which waits for the container's lock, held until
    /// Docker has recorded the change (the container list may lag behind a connect, a
    /// disconnect or a die).
    fn of(changes: &[Change], state: &DockerState) -> Rereads {
        let mut rereads = Rereads::default();
        for change in changes {
            match change {
                Change::Network {
                    action,
                    id,
                    container,
                    ..
                } => {
                    if NETWORK_CHANGING_ACTIONS.contains(&action.as_str())
                        || container.is_none()
                        || !state.networks.contains_key(id)
                    {
                        rereads.networks.insert(id.clone());
                    }
                    if let Some(container) = container
                        .as_ref()
                        .filter(|c| state.containers.contains_key(*c))
                    {
                        rereads.containers.insert(container.clone());
                    }
                }
                Change::Container { id, .. } => {
                    rereads.containers.insert(id.clone());
                }
            }
        }
        rereads
    }

    /// The requests that read it all: one inspect per network and per container.
    fn requests(self) -> impl Iterator<Item = Object> {
        (self.networks.into_iter().map(Object::Network))
            .chain(self.containers.into_iter().map(Object::Container))
    }
}

/// An object a batch re-reads, by ID.
enum Object {
    Network(String),
    Container(String),
}

/// One object re-read for a batch: its ID and what Docker answered (`None`: gone, or a
/// container that does not run).
enum Reread {
    Network(String, Option<DockerNetwork>),
    Container(String, Option<DockerContainer>),
}

/// Whether `id` can be a Docker object ID (64 hex digits locally, 25 alphanumerics for swarm
/// objects): only such IDs are put into a request path.
pub fn is_object_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A connected, version-negotiated Docker client.
#[derive(Clone)]
pub struct DockerSource {
    docker: Docker,
    host: String,
    socket: PathBuf,
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
    pub async fn connect(host: &str) -> Result<Self, DockerError> {
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
            .map_err(|e| request("connecting", e))?;
        let stalled = || DockerError::Stalled {
            host: host.to_string(),
            action: "negotiating the API version".into(),
        };
        let docker = tokio::time::timeout(REQUEST_DEADLINE, docker.negotiate_version())
            .await
            .map_err(|_| stalled())?
            .map_err(|e| request("negotiating the API version", e))?;
        Ok(DockerSource {
            docker,
            host: host.to_string(),
            socket: PathBuf::from(path),
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

    /// Runs one request with the whole-answer deadline.
    async fn within<T>(
        &self,
        action: &str,
        request: impl Future<Output = Result<T, BollardError>>,
    ) -> Result<T, DockerError> {
        match tokio::time::timeout(REQUEST_DEADLINE, request).await {
            Ok(answer) => answer.map_err(|e| self.error(action, e)),
            Err(_) => Err(DockerError::Stalled {
                host: self.host.clone(),
                action: action.to_string(),
            }),
        }
    }

    /// Every network and every running container (proxies by their labels, and every
    /// container's endpoints with their MAC addresses, which bind bridge ports): two requests.
    pub async fn snapshot(&self) -> Result<DockerState, DockerError> {
        let networks = self
            .within("listing networks", self.docker.list_networks(None))
            .await?;
        let containers = self
            .within(
                "listing running containers",
                self.docker.list_containers(None::<ListContainersOptions>),
            )
            .await?;
        let mut state = DockerState::of(
            networks.into_iter().filter_map(network_from_list),
            containers.into_iter().filter_map(container_from_summary),
        );
        self.refresh_gateway(&mut state).await?;
        Ok(state)
    }

    /// The relevant events since `since` (see [`since_now`]), as [`Change`]s. Ends with an error when dockerd goes away or
    /// sends something that is not an event (see [`events`]).
    pub fn changes(
        &self,
        since: &str,
    ) -> impl Stream<Item = Result<Change, DockerError>> + Send + 'static {
        let actions: Vec<&str> = NETWORK_ACTIONS
            .iter()
            .chain(CONTAINER_ACTIONS)
            .copied()
            .collect();
        let filters = serde_json::json!({ "type": ["network", "container"], "event": actions });
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("since", since)
            .append_pair("filters", &filters.to_string())
            .finish();
        let source = self.clone();
        let opened = async move {
            let api = source.api_version();
            let host = source.host.clone();
            let failed = move |e| DockerError::Events {
                host: host.clone(),
                source: e,
            };
            match events::events(&source.socket, &api, &query, REQUEST_DEADLINE).await {
                Ok(stream) => stream
                    .filter_map(move |event| {
                        let item = match event {
                            Ok(message) => source.change_of(message).map(Ok),
                            Err(e) => Some(Err(failed(e))),
                        };
                        std::future::ready(item)
                    })
                    .left_stream(),
                Err(e) => {
                    futures_util::stream::once(std::future::ready(Err(failed(e)))).right_stream()
                }
            }
        };
        let ended = DockerError::StreamEnded(self.host.clone());
        futures_util::stream::once(opened)
            .flatten()
            .chain(futures_util::stream::once(std::future::ready(Err(ended))))
    }

    fn change_of(&self, message: EventMessage) -> Option<Change> {
        let action = message.action?;
        let actor = message.actor?;
        let id = actor.id?;
        if !is_object_id(&id) {
            tracing::warn!(
                id = %printable(&id),
                "Docker's event stream named an object whose ID is not a Docker ID: ignored"
            );
            return None;
        }
        let attributes = actor.attributes.unwrap_or_default();
        // Names only label log lines: at most 256 characters of one are kept, so that waiting
        // changes stay small whatever an event line carries.
        let name = attributes
            .get("name")
            .map(|n| n.chars().take(256).collect())
            .unwrap_or_else(|| id.clone());
        match message.typ? {
            EventMessageTypeEnum::NETWORK if NETWORK_ACTIONS.contains(&action.as_str()) => {
                Some(Change::Network {
                    container: attributes
                        .get("container")
                        .filter(|c| is_object_id(c))
                        .cloned(),
                    action,
                    id,
                    name,
                })
            }
            EventMessageTypeEnum::CONTAINER if CONTAINER_ACTIONS.contains(&action.as_str()) => {
                Some(Change::Container { action, id, name })
            }
            _ => None,
        }
    }

    /// Brings `state` up to date with what a batch of `changes` names ([`Rereads`]): inspects
    /// each network and container it has to once, however many of the changes name it, up to
    /// [`CONCURRENT_READS`] at a time (gone objects are removed), and `docker_gwbridge`'s
    /// endpoints alongside (after them on a node whose first overlay this batch brings). On an
    /// error `state` may be half updated: the caller takes a new snapshot.
    pub async fn refresh(
        &self,
        state: &mut DockerState,
        changes: &[Change],
    ) -> Result<(), DockerError> {
        // One stream over every kind: a container's read need not wait behind a slow
        // network's (an overlay's inspect waits for Docker's network controller).
        let reads = stream::iter(Rereads::of(changes, state).requests())
            .map(|object| self.reread(object))
            .buffer_unordered(CONCURRENT_READS)
            .try_collect::<Vec<Reread>>();
        let gateway_before = state.gateway_network().map(|n| n.id.clone());
        let (found, gateway) = match gateway_path(state) {
            Some(path) => {
                let (found, gateway) = tokio::join!(reads, self.read_gateway(path));
                (found?, Some(gateway?))
            }
            None => (reads.await?, None),
        };
        for reread in found {
            match reread {
                Reread::Network(id, network) => store(&mut state.networks, &id, network),
                Reread::Container(id, container) => store(&mut state.containers, &id, container),
            }
        }
        // Read again when the batch's own reads brought the node's first overlay, or replaced
        // docker_gwbridge (the answer read alongside is of the one held before).
        match gateway {
            Some(gateway) if state.gateway_network().map(|n| &n.id) == gateway_before.as_ref() => {
                store_gateway(state, gateway);
                Ok(())
            }
            _ => self.refresh_gateway(state).await,
        }
    }

    /// Reads `docker_gwbridge` into `state` when the node has overlays ([`gateway_path`]).
    async fn refresh_gateway(&self, state: &mut DockerState) -> Result<(), DockerError> {
        if let Some(path) = gateway_path(state) {
            let gateway = self.read_gateway(path).await?;
            store_gateway(state, gateway);
        }
        Ok(())
    }

    /// `docker_gwbridge` as Docker reports it now (`None`: it does not exist, or Docker gave it
    /// an ID that is not one). Docker lists a container's endpoint there only (a container's
    /// inspect leaves it out) and sends no event when one comes or goes, so every batch of
    /// changes reads it.
    async fn read_gateway(&self, path: String) -> Result<Option<NetworkInspect>, DockerError> {
        let action = format!("inspecting network {path} ({GATEWAY_BRIDGE})");
        let found = self
            .within(
                &action,
                absent_if_not_found(self.docker.inspect_network(&path, None)),
            )
            .await?;
        Ok(found.filter(|n| n.id.as_deref().is_some_and(is_object_id)))
    }

    /// What Docker reports of `object` now.
    async fn reread(&self, object: Object) -> Result<Reread, DockerError> {
        match object {
            Object::Network(id) => self.read_network(id).await,
            Object::Container(id) => self.read_container(id).await,
        }
    }

    /// Network `id` as Docker reports it now, `None` once gone.
    async fn read_network(&self, id: String) -> Result<Reread, DockerError> {
        let action = format!("inspecting network {id}");
        let found = self
            .within(
                &action,
                absent_if_not_found(self.docker.inspect_network(&id, None)),
            )
            .await?;
        Ok(Reread::Network(id, found.and_then(network_from_inspect)))
    }

    /// Container `id` as Docker reports it now, `None` once gone (or no longer running).
    async fn read_container(&self, id: String) -> Result<Reread, DockerError> {
        let action = format!("inspecting container {id}");
        let found = self
            .within(
                &action,
                absent_if_not_found(self.docker.inspect_container(&id, None)),
            )
            .await?;
        Ok(Reread::Container(
            id,
            found.and_then(container_from_inspect),
        ))
    }
}

/// Which `docker_gwbridge` to read for `state`: none on a node without overlays (Docker makes
/// the network when a node's first overlay container starts, so a node without them pays
/// nothing), by its ID once known, by its name before.
fn gateway_path(state: &DockerState) -> Option<String> {
    let known = state.gateway_network().map(|n| n.id.clone());
    if known.is_none() && !state.networks.values().any(|n| n.driver == OVERLAY_DRIVER) {
        return None;
    }
    let path = known.unwrap_or_else(|| GATEWAY_BRIDGE.to_string());
    if !is_object_id(&path) && path != GATEWAY_BRIDGE {
        tracing::warn!(
            id = %printable(&path),
            "Docker reported {GATEWAY_BRIDGE} with an ID that is not a Docker ID: its ports \
             stay unbound and send nothing"
        );
        return None;
    }
    Some(path)
}

/// Puts what `docker_gwbridge`'s inspect `found` into `state`, in place of what it held: the
/// network and its endpoints, filed under the containers `state` knows (so after their reads).
fn store_gateway(state: &mut DockerState, found: Option<NetworkInspect>) {
    if let Some(gone) = state.gateway_network().map(|n| n.id.clone()) {
        state.networks.remove(&gone);
        state.set_gateway_endpoints(&gone, BTreeMap::new());
    }
    let Some(found) = found else {
        return;
    };
    let endpoints = network_endpoints(found.id.as_deref().unwrap_or(""), found.containers.clone());
    if let Some(network) = network_from_inspect(found) {
        let id = network.id.clone();
        state.networks.insert(id.clone(), network);
        state.set_gateway_endpoints(&id, endpoints);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(action: &str, id: &str, container: Option<&str>) -> Change {
        Change::Network {
            action: action.into(),
            id: id.into(),
            name: "mesh".into(),
            container: container.map(Into::into),
        }
    }

    fn connect(network_id: &str, container: &str) -> Change {
        network("connect", network_id, Some(container))
    }

    fn container(action: &str, id: &str) -> Change {
        Change::Container {
            action: action.into(),
            id: id.into(),
            name: "task".into(),
        }
    }

    fn mesh() -> DockerNetwork {
        DockerNetwork {
            id: "n1".into(),
            name: "mesh".into(),
            driver: OVERLAY_DRIVER.into(),
            internal: true,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            subnets: vec!["10.144.0.0/21".into()],
        }
    }

    fn running(id: &str) -> DockerContainer {
        DockerContainer {
            id: id.into(),
            name: id.into(),
            labels: BTreeMap::new(),
            endpoints: Vec::new(),
        }
    }

    fn ids(set: &BTreeSet<String>) -> Vec<&str> {
        set.iter().map(String::as_str).collect()
    }

    #[test]
    fn a_batch_rereads_each_object_it_names_once() {
        let batch = [
            connect("n1", "c1"),
            container("start", "c1"),
            connect("n1", "c2"),
            network("create", "n2", None),
            container("start", "c2"),
            container("start", "c3"),
        ];
        let rereads = Rereads::of(&batch, &DockerState::default());
        assert_eq!(ids(&rereads.networks), ["n1", "n2"]);
        assert_eq!(ids(&rereads.containers), ["c1", "c2", "c3"]);
    }

    #[test]
    fn a_known_network_is_reread_only_when_created_or_removed() {
        let change = |action: &str| network(action, "n1", Some("c1"));
        let state = DockerState::of([mesh()], [running("c1")]);
        for action in ["connect", "disconnect"] {
            let rereads = Rereads::of(&[change(action)], &state);
            assert!(rereads.networks.is_empty(), "{action}");
            assert_eq!(ids(&rereads.containers), ["c1"], "{action}");
        }
        for action in ["create", "destroy", "remove"] {
            let rereads = Rereads::of(&[change(action)], &state);
            assert_eq!(ids(&rereads.networks), ["n1"], "{action}");
        }
        // A connect without a (valid) container shares its queue key with a destroy.
        let anonymous = network("connect", "n1", None);
        assert_eq!(ids(&Rereads::of(&[anonymous], &state).networks), ["n1"]);
    }

    #[test]
    fn a_connect_of_a_container_that_does_not_run_waits_for_its_start() {
        let state = DockerState::of([mesh()], [running("up")]);
        let read = |batch: &[Change]| Rereads::of(batch, &state).containers;
        assert!(read(&[connect("n1", "new")]).is_empty());
        assert_eq!(ids(&read(&[connect("n1", "up")])), ["up"]);
        assert_eq!(
            ids(&read(&[container("start", "new"), connect("n1", "new")])),
            ["new"]
        );
        assert_eq!(
            ids(&read(&[connect("n1", "new"), container("start", "new")])),
            ["new"]
        );
    }

    #[test]
    fn docker_gwbridge_is_read_once_a_node_has_an_overlay() {
        assert_eq!(gateway_path(&DockerState::default()), None);
        let state = DockerState::of([mesh()], []);
        assert_eq!(gateway_path(&state).as_deref(), Some(GATEWAY_BRIDGE));
    }

    #[test]
    fn names_cannot_forge_log_lines() {
        let change = Change::Network {
            action: "create".into(),
            id: "a".into(),
            name: "evil\napplied: everything allowed".into(),
            container: None,
        };
        assert_eq!(
            change.to_string(),
            "network create evil\\napplied: everything allowed"
        );
    }

    #[test]
    fn only_docker_ids_reach_a_request_path() {
        assert!(is_object_id(&"0123456789abcdef".repeat(4)));
        assert!(is_object_id("k3v9ywq2xq8zq0yq6yq1yq2yq"));
        for hostile in ["../../containers/json", "", "a/b", "a?b", &"a".repeat(65)] {
            assert!(!is_object_id(hostile), "{hostile}");
        }
    }
}
