//! Which container each bridge port belongs to, and so what it may send.
//!
//! A port of a guarded bridge (a managed network's, or a bridge that is denied) is *bound* to a
//! container when the MAC address of its veth peer is the one Docker reports for the container's
//! endpoint on that network, and no other port or endpoint there claims the same MAC. A bound
//! port may send only as its container: that MAC, the addresses Docker gave the endpoint, and
//! the IPv6 link-local address derived from the MAC. Every other port of a guarded bridge is
//! *unbound* and sends nothing. A managed container (one with an endpoint on an enforced network)
//! is bound on the other bridges it is on as well, so that it speaks only as itself there too:
//! with CAP_NET_RAW it could otherwise send from a free address of an unmanaged network and
//! pass as that network's traffic. The other ports of those bridges, and every port of other
//! bridges, are *open*: this table leaves them alone.
//!
//! Without Docker there is no endpoint to compare with, but a static proxy may declare the MACs
//! of its interfaces: then a port of a static network's bridge (one with an `interface`) whose
//! peer has such a MAC is bound to the proxy, with its addresses on that network, and every
//! other port there is *shared*: it may send anything but a declared proxy's identity.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::docker::{Classified, DockerState, Skipped};
use crate::ports::{BridgePort, MacAddr};
use crate::topology::Topology;

/// A port bound to a container's endpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct BoundPort {
    /// The port's interface name.
    pub port: String,
    /// The endpoint's MAC address (the only source MAC the port may use).
    pub mac: MacAddr,
    /// The container's name.
    pub container: String,
    /// The network's name.
    pub network: String,
    /// Its IPv4 addresses on that network.
    pub ipv4: Vec<Ipv4Addr>,
    /// Its IPv6 addresses on that network, the link-local one first.
    pub ipv6: Vec<Ipv6Addr>,
}

/// Every known bridge port, sorted by what its frames meet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortGuard {
    /// Ports bound to a container, by port name.
    pub bound: Vec<BoundPort>,
    /// Ports of guarded bridges bound to no container: they send nothing.
    pub unbound: BTreeSet<String>,
    /// Ports of bridges this table does not guard.
    pub open: BTreeSet<String>,
    /// Ports of static networks' bridges bound to no declared proxy: they may send anything
    /// but what [`PortGuard::reserved`] holds.
    pub shared: BTreeSet<String>,
    /// The declared proxies' identities, which no shared port may claim.
    pub reserved: Reserved,
}

/// What static proxies declared as theirs: their MACs and their addresses on the static
/// networks (with the link-local addresses of those MACs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reserved {
    /// Their MAC addresses.
    pub macs: BTreeSet<MacAddr>,
    /// Their IPv4 addresses.
    pub ipv4: BTreeSet<Ipv4Addr>,
    /// Their IPv6 addresses.
    pub ipv6: BTreeSet<Ipv6Addr>,
}

/// Whether `name` can name a port's chain in `nft` syntax (`port_<name>`): letters, digits,
/// `_`, `.` and `-`. Docker names its veths `veth` and seven hex digits.
pub fn is_bindable_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether an interface name matches a pattern (a trailing `*` matches any suffix).
fn matches_pattern(name: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(stem) => name.starts_with(stem),
        None => name == pattern,
    }
}

/// An endpoint of a running container on a guarded network, as binding needs it.
struct Endpoint<'a> {
    container: &'a str,
    network: &'a str,
    mac: MacAddr,
    ipv4: Vec<Ipv4Addr>,
    ipv6: Vec<Ipv6Addr>,
}

/// Which bridges are guarded, and which of them belong to enforced managed networks.
struct Bridges<'a> {
    /// Bridge -> network ID, for the enforced managed networks.
    enforced: BTreeMap<String, &'a str>,
    /// Bridges of every network Docker reported, and of the static networks.
    known: BTreeSet<String>,
    skipped: &'a BTreeSet<String>,
    unknown_patterns: &'a [String],
}

impl Bridges<'_> {
    /// Whether `bridge` is guarded: an enforced or skipped managed network's, or one no
    /// network owns while its name matches an unknown-bridge pattern.
    fn guarded(&self, bridge: &str) -> bool {
        self.enforced.contains_key(bridge)
            || self.skipped.contains(bridge)
            || (!self.known.contains(bridge)
                && self
                    .unknown_patterns
                    .iter()
                    .any(|p| matches_pattern(bridge, p)))
    }
}

/// Sorts `ports` into bound, unbound and open under what `classified` enforces of `docker`.
/// A bridge is guarded when it belongs to an enforced managed network, to a managed network
/// that was skipped, or to no network Docker reported while its name matches one of
/// `unknown_patterns` (a Docker bridge not classified yet). Whatever cannot be bound safely
/// (a MAC claimed twice, an odd address or port name) is reported in the second value, and its
/// port stays unbound. A port bound in `previous` keeps its binding when a newcomer claims the
/// same MAC (a container that copies another's MAC cannot unbind it).
pub fn guard_ports(
    classified: &Classified,
    docker: &DockerState,
    unknown_patterns: &[String],
    ports: &[BridgePort],
    previous: &[BoundPort],
) -> (PortGuard, Vec<Skipped>) {
    let bridges = Bridges {
        enforced: classified
            .enforced_networks
            .iter()
            .chain(&classified.guarded_networks)
            .filter_map(|id| Some((docker.networks.get(id)?.bridge()?, id.as_str())))
            .collect(),
        // Docker's bridges, and the static networks' (sorted by `guard_static_ports`).
        known: docker
            .networks
            .values()
            .filter_map(|n| n.bridge())
            .chain(
                classified
                    .topology
                    .networks()
                    .iter()
                    .filter_map(|n| n.interface.clone()),
            )
            .collect(),
        skipped: classified.topology.skipped_interfaces(),
        unknown_patterns,
    };
    let mut skipped = Vec::new();
    let mut endpoints = endpoints_by_bridge(docker, &bridges.enforced, None, &mut skipped);
    // The other Docker bridges, where only managed containers' endpoints are bound.
    let managed: BTreeSet<&str> = docker
        .containers
        .iter()
        .filter(|(_, c)| {
            c.endpoints
                .iter()
                .any(|e| classified.enforced_networks.contains(&e.network_id))
        })
        .map(|(id, _)| id.as_str())
        .collect();
    let elsewhere: BTreeMap<String, &str> = docker
        .networks
        .iter()
        .filter_map(|(id, n)| Some((n.bridge()?, id.as_str())))
        .filter(|(bridge, _)| !bridges.guarded(bridge))
        .collect();
    let elsewhere = endpoints_by_bridge(docker, &elsewhere, Some(&managed), &mut skipped);
    let mut guard = PortGuard::default();
    // Per guarded bridge and MAC: the ports whose peer has it.
    let mut candidates: BTreeMap<(&str, MacAddr), Vec<&BridgePort>> = BTreeMap::new();
    for port in ports {
        if !bridges.guarded(&port.bridge) {
            let managed_peer = port.peer_mac.filter(|mac| {
                elsewhere
                    .get(&port.bridge)
                    .is_some_and(|on| on.iter().any(|e| e.mac == *mac))
            });
            match managed_peer {
                Some(mac) if is_bindable_name(&port.name) => candidates
                    .entry((&port.bridge, mac))
                    .or_default()
                    .push(port),
                Some(_) => {
                    skipped.push(Skipped::new(
                        &format!("port {}", port.name),
                        "it is a managed container's, but its name has characters other than \
                         letters, digits, _ . -, so it cannot name a chain: it stays unbound \
                         and sends nothing",
                    ));
                    guard.unbound.insert(port.name.clone());
                }
                None => {
                    guard.open.insert(port.name.clone());
                }
            }
            continue;
        }
        if !is_bindable_name(&port.name) {
            skipped.push(Skipped::new(
                &format!("port {}", port.name),
                "its name has characters other than letters, digits, _ . -, so it cannot \
                 name a chain: it stays unbound and sends nothing",
            ));
        }
        match port.peer_mac {
            Some(mac)
                if is_bindable_name(&port.name) && bridges.enforced.contains_key(&port.bridge) =>
            {
                candidates
                    .entry((&port.bridge, mac))
                    .or_default()
                    .push(port)
            }
            _ => {
                guard.unbound.insert(port.name.clone());
            }
        }
    }
    endpoints.extend(elsewhere);
    for ((bridge, mac), found) in candidates {
        let owners: Vec<&Endpoint> = endpoints
            .get(bridge)
            .into_iter()
            .flatten()
            .filter(|e| e.mac == mac)
            .collect();
        bind(
            &mut guard,
            &mut skipped,
            (bridge, mac),
            &found,
            &owners,
            previous,
        );
    }
    guard.bound.sort();
    skipped.sort();
    (guard, skipped)
}

/// Whether a static proxy of `topology` declares its MACs: then the ports of its static
/// networks' bridges are guarded by [`guard_static_ports`].
pub fn guards_static_ports(topology: &Topology) -> bool {
    topology.proxies().iter().any(|p| !p.macs.is_empty())
}

/// Sorts the ports `guard` left open that belong to the bridge of one of `topology`'s
/// networks (the static policy's, those with an `interface`), when a static proxy declares
/// its MACs: a port whose peer has such a MAC is bound to that proxy with its addresses on that
/// network, the others become shared. A MAC claimed by several ports binds the one `previous`
/// bound, or none (those ports stay unbound and send nothing).
pub fn guard_static_ports(
    topology: &Topology,
    ports: &[BridgePort],
    previous: &[BoundPort],
    guard: &mut PortGuard,
    skipped: &mut Vec<Skipped>,
) {
    if !guards_static_ports(topology) {
        return;
    }
    let mut endpoints: BTreeMap<&str, Vec<Endpoint>> = BTreeMap::new();
    for network in topology.networks() {
        let Some(bridge) = network.interface.as_deref() else {
            continue;
        };
        let on_bridge = endpoints.entry(bridge).or_default();
        for proxy in topology.proxies() {
            let mine = |a: &&IpAddr| network.subnets.iter().any(|s| s.contains(*a));
            let addresses: Vec<IpAddr> = proxy.addresses.iter().filter(mine).copied().collect();
            if addresses.is_empty() {
                continue;
            }
            for &mac in &proxy.macs {
                let mut ipv4 = Vec::new();
                let mut ipv6 = vec![mac.ipv6_link_local()];
                for address in &addresses {
                    match *address {
                        IpAddr::V4(a) => ipv4.push(a),
                        IpAddr::V6(a) => ipv6.push(a),
                    }
                }
                guard.reserved.macs.insert(mac);
                guard.reserved.ipv4.extend(&ipv4);
                guard.reserved.ipv6.extend(&ipv6);
                on_bridge.push(Endpoint {
                    container: &proxy.name,
                    network: &network.name,
                    mac,
                    ipv4,
                    ipv6,
                });
            }
        }
    }
    let mut candidates: BTreeMap<(&str, MacAddr), Vec<&BridgePort>> = BTreeMap::new();
    for port in ports {
        let Some(on_bridge) = endpoints.get(port.bridge.as_str()) else {
            continue;
        };
        if !guard.open.remove(&port.name) {
            continue;
        }
        match port.peer_mac {
            Some(mac) if on_bridge.iter().any(|e| e.mac == mac) => {
                if is_bindable_name(&port.name) {
                    candidates
                        .entry((&port.bridge, mac))
                        .or_default()
                        .push(port);
                } else {
                    skipped.push(Skipped::new(
                        &format!("port {}", port.name),
                        "its peer has a declared proxy MAC, but its name has characters other \
                         than letters, digits, _ . -, so it cannot name a chain: it stays \
                         unbound and sends nothing",
                    ));
                    guard.unbound.insert(port.name.clone());
                }
            }
            _ => {
                guard.shared.insert(port.name.clone());
            }
        }
    }
    for ((bridge, mac), found) in candidates {
        let owners: Vec<&Endpoint> = endpoints[bridge].iter().filter(|e| e.mac == mac).collect();
        bind(guard, skipped, (bridge, mac), &found, &owners, previous);
    }
    guard.bound.sort();
}

/// Binds the one port of `found` (the ports of `bridge` whose peer has `mac`) to the one
/// endpoint of `owners` with that MAC, or leaves them all unbound. When several ports claim
/// the MAC, the one `previous` bound to it stays bound and the newcomers do not.
fn bind(
    guard: &mut PortGuard,
    skipped: &mut Vec<Skipped>,
    (bridge, mac): (&str, MacAddr),
    found: &[&BridgePort],
    owners: &[&Endpoint],
    previous: &[BoundPort],
) {
    let kept = match found {
        [_, _, ..] => found
            .iter()
            .find(|p| previous.iter().any(|b| b.port == p.name && b.mac == mac)),
        _ => None,
    };
    let chosen = match (found, kept) {
        ([port], _) | (_, Some(port)) => Some(*port),
        _ => None,
    };
    let (Some(port), [owner]) = (chosen, owners) else {
        if found.len() > 1 || owners.len() > 1 {
            let names: Vec<&str> = found.iter().map(|p| p.name.as_str()).collect();
            let who: Vec<&str> = owners.iter().map(|e| e.container).collect();
            skipped.push(Skipped::new(
                &format!("bridge {bridge} MAC {mac}"),
                &format!(
                    "claimed by ports {} and containers {}: none of them is bound, so they \
                     send nothing; a container that changed its MAC address (it needs \
                     CAP_NET_ADMIN) or duplicate --mac-address values cause this",
                    names.join(", "),
                    who.join(", ")
                ),
            ));
        }
        guard.unbound.extend(found.iter().map(|p| p.name.clone()));
        return;
    };
    for other in found.iter().filter(|p| p.name != port.name) {
        skipped.push(Skipped::new(
            &format!("port {}", other.name),
            &format!(
                "its peer claims MAC {mac}, which port {} of container {} already holds: it \
                 stays unbound and sends nothing (a container that copied another's MAC needs \
                 CAP_NET_ADMIN)",
                port.name, owner.container
            ),
        ));
        guard.unbound.insert(other.name.clone());
    }
    guard.bound.push(BoundPort {
        port: port.name.clone(),
        mac,
        container: owner.container.to_string(),
        network: owner.network.to_string(),
        ipv4: owner.ipv4.clone(),
        ipv6: owner.ipv6.clone(),
    });
}

/// The endpoints on the networks of `bridges` (bridge -> network ID) of running containers
/// (only those of `only`, by ID, when given), by bridge. An endpoint whose MAC or address does
/// not parse is reported; without a MAC it is left out (its port stays unbound), an odd address
/// is left out of what it may use.
fn endpoints_by_bridge<'a>(
    docker: &'a DockerState,
    bridges: &BTreeMap<String, &str>,
    only: Option<&BTreeSet<&str>>,
    skipped: &mut Vec<Skipped>,
) -> BTreeMap<String, Vec<Endpoint<'a>>> {
    let by_id: BTreeMap<&str, &str> = bridges.iter().map(|(b, id)| (*id, b.as_str())).collect();
    let mut out: BTreeMap<String, Vec<Endpoint>> = BTreeMap::new();
    for (id, container) in docker.containers.iter().chain(&docker.sandboxes) {
        if only.is_some_and(|only| !only.contains(id.as_str())) {
            continue;
        }
        for endpoint in &container.endpoints {
            let Some(bridge) = by_id.get(endpoint.network_id.as_str()) else {
                continue;
            };
            let object = format!("container {}", container.name);
            let mac = match endpoint.mac.parse::<MacAddr>() {
                Ok(mac) if mac.is_unicast() => mac,
                _ => {
                    let reason = format!(
                        "MAC address `{:.64}` on network {} is not a unicast MAC: its port \
                         cannot be bound to it (on a managed network it sends nothing)",
                        endpoint.mac, endpoint.network_id
                    );
                    skipped.push(Skipped::new(&object, &reason));
                    continue;
                }
            };
            let mut ipv4 = Vec::new();
            let mut ipv6 = vec![mac.ipv6_link_local()];
            for text in [&endpoint.ipv4, &endpoint.ipv6] {
                match text.parse::<IpAddr>() {
                    _ if text.is_empty() => {}
                    Ok(IpAddr::V4(a)) => ipv4.push(a),
                    Ok(IpAddr::V6(a)) => ipv6.push(a),
                    Err(_) => skipped.push(Skipped::new(
                        &object,
                        &format!("address `{text:.64}` is not an IP address: it may not use it"),
                    )),
                }
            }
            let network = docker
                .networks
                .get(&endpoint.network_id)
                .map_or("", |n| n.name.as_str());
            out.entry(bridge.to_string()).or_default().push(Endpoint {
                container: &container.name,
                network,
                mac,
                ipv4,
                ipv6,
            });
        }
    }
    out
}
