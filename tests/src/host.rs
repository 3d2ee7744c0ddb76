//! A Docker-like host in its own namespace, built by hand the way Docker builds it: one bridge
//! per network with the gateway address, containers as namespaces on veths, br_netfilter on,
//! forwarding on; and a second namespace as "the internet" (203.0.113.10, 2001:db8:113::10)
//! behind the host's uplink. No NAT: the internet routes the test subnets back to the host.
//!
//! What it builds is ThreeGate as [`crate::spec`] writes it: its networks (bridges named as
//! the spec names them), its containers and their addresses, its listeners. Every container
//! gets a default route through its first network's gateway, as a container with
//! CAP_NET_ADMIN could give itself: the routes must not be what blocks egress.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::spec::{
    container_named, host_uplink, internet, uplink_subnet, Container, Family, Listener, Network,
    Place, CONTAINERS, LISTENERS, LLMNET, NETWORKS, PEER_SERVICE,
};
use crate::{probe_here, Netns, Proto, Responders, PROBE_TIMEOUT};

/// `ip` arguments: `-6` for IPv6, nothing for IPv4.
fn ip_family(family: Family) -> &'static [&'static str] {
    match family {
        Family::V4 => &[],
        Family::V6 => &["-6"],
    }
}

/// `ip <family> <args>` in `ns`.
fn ip_in(ns: &Netns, family: Family, args: &[&str]) {
    let mut all = ip_family(family).to_vec();
    all.extend_from_slice(args);
    ns.ip(&all);
}

/// Adds `address/prefix_len` to `device` in `ns` (IPv6 without duplicate address detection).
fn add_address(ns: &Netns, address: IpAddr, prefix_len: u8, device: &str) {
    let cidr = format!("{address}/{prefix_len}");
    let mut args = vec!["addr", "add", &cidr, "dev", device];
    if address.is_ipv6() {
        args.push("nodad");
    }
    ns.ip(&args);
}

/// ThreeGate's policy (`rules/threegate.toml`) without network `name`: its containers are
/// unmanaged and reach the internet.
pub fn threegate_policy_without(name: &str) -> String {
    let full = std::fs::read_to_string(crate::repo_file("rules/threegate.toml"))
        .expect("rules/threegate.toml");
    let start = full
        .find(&format!("[[networks]]\nname = \"{name}\""))
        .unwrap_or_else(|| panic!("rules/threegate.toml has no network {name}"));
    let end = start
        + full[start..]
            .find("\n\n")
            .expect("a blank line after the network");
    format!("{}{}", &full[..start], &full[end..])
}

/// Links a Docker host namespace to the internet namespace: the host's uplink with its default
/// routes via the internet host, both families. Forwarding is turned on in the host.
pub fn connect_internet(host: &Netns, internet_ns: &Netns) {
    host.sysctl("net.ipv4.ip_forward", "1");
    host.sysctl("net.ipv6.conf.all.forwarding", "1");
    host.veth("uplink", internet_ns, "eth0");
    for family in Family::BOTH {
        let prefix_len = uplink_subnet(family).prefix_len();
        add_address(host, host_uplink(family), prefix_len, "uplink");
        add_address(internet_ns, internet(family), prefix_len, "eth0");
    }
    host.ip(&["link", "set", "uplink", "up"]);
    for family in Family::BOTH {
        let via = internet(family).to_string();
        ip_in(host, family, &["route", "add", "default", "via", &via]);
    }
    internet_ns.ip(&["link", "set", "eth0", "up"]);
}

/// The addresses `listener` binds, with its transport.
fn endpoints(listener: &Listener) -> Vec<(Proto, SocketAddr)> {
    let Listener { place, service } = *listener;
    let addresses: Vec<IpAddr> = match place {
        Place::Internet => Family::BOTH.map(internet).to_vec(),
        Place::Host => vec!["::".parse().expect("constant address")],
        Place::Container(name, networks) => {
            let container = container_named(name);
            Family::BOTH
                .iter()
                .flat_map(|f| networks.iter().filter_map(|n| container.address_on(n, *f)))
                .collect()
        }
    };
    addresses
        .into_iter()
        .map(|a| (service.proto, SocketAddr::new(a, service.port)))
        .collect()
}

/// The internet host's services (the spec's internet listeners) on both of its addresses.
pub fn internet_endpoints() -> Vec<(Proto, SocketAddr)> {
    LISTENERS
        .iter()
        .filter(|l| l.place == Place::Internet)
        .flat_map(endpoints)
        .collect()
}

/// ThreeGate's listeners on the Docker host and in its containers (the spec's other
/// listeners: a service on the host itself, the proxy, toolexec), IPv4 and IPv6.
pub fn threegate_responders(host: &Netns, containers: &BTreeMap<&str, Netns>) -> Vec<Responders> {
    LISTENERS
        .iter()
        .filter_map(|listener| {
            let ns = match listener.place {
                Place::Internet => return None,
                Place::Host => host,
                Place::Container(name, _) => &containers[name],
            };
            Some(Responders::start(ns, &endpoints(listener)))
        })
        .collect()
}

/// The sealed Docker-like host with its containers and the internet.
pub struct DockerLikeHost {
    /// The host namespace (bridges, forwarding, nftables, enforcer).
    pub host: Netns,
    /// The internet namespace.
    pub internet: Netns,
    /// Container namespaces by name.
    pub containers: BTreeMap<&'static str, Netns>,
    /// The internet's responders first, then the host's and the containers'.
    responders: Vec<Responders>,
}

/// A bridge for `network` in `host`, with the gateway addresses, routed back from the
/// internet.
fn add_bridge(host: &Netns, internet_ns: &Netns, network: &Network) {
    for family in Family::BOTH {
        let subnet = network.subnet(family).to_string();
        let via = host_uplink(family).to_string();
        ip_in(internet_ns, family, &["route", "add", &subnet, "via", &via]);
    }
    host.ip(&["link", "add", network.bridge, "type", "bridge"]);
    for family in Family::BOTH {
        let prefix_len = network.subnet(family).prefix_len();
        add_address(host, network.gateway(family), prefix_len, network.bridge);
    }
    host.ip(&["link", "set", network.bridge, "up"]);
}

/// A namespace for `container`, on veths to its networks' bridges, its default route via the
/// first network's gateway.
fn add_container(host: &Netns, container: &Container) -> Netns {
    let name = container.name;
    let ns = Netns::new(name);
    for (index, attachment) in container.attachments.iter().enumerate() {
        let network = attachment.network;
        let outside = format!("v{}{index}", &name[..name.len().min(8)]);
        let inside = format!("eth{index}");
        host.veth(&outside, &ns, &inside);
        host.ip(&["link", "set", &outside, "master", network.bridge, "up"]);
        for family in Family::BOTH {
            let prefix_len = network.subnet(family).prefix_len();
            add_address(
                &ns,
                network.host(attachment.host, family),
                prefix_len,
                &inside,
            );
        }
        ns.ip(&["link", "set", &inside, "up"]);
    }
    let route = container.route().network;
    for family in Family::BOTH {
        let gateway = route.gateway(family).to_string();
        ip_in(&ns, family, &["route", "add", "default", "via", &gateway]);
    }
    ns
}

impl DockerLikeHost {
    /// Builds the whole topology and starts every responder.
    pub fn threegate() -> DockerLikeHost {
        crate::require_root();
        let host = Netns::new("host");
        let internet_ns = Netns::new("inet");
        host.sysctl("net.bridge.bridge-nf-call-iptables", "1");
        host.sysctl("net.bridge.bridge-nf-call-ip6tables", "1");

        connect_internet(&host, &internet_ns);
        for network in NETWORKS {
            add_bridge(&host, &internet_ns, network);
        }
        let containers: BTreeMap<&'static str, Netns> = CONTAINERS
            .iter()
            .map(|c| (c.name, add_container(&host, c)))
            .collect();

        let mut responders = vec![Responders::start(&internet_ns, &internet_endpoints())];
        responders.extend(threegate_responders(&host, &containers));
        let built = DockerLikeHost {
            host,
            internet: internet_ns,
            containers,
            responders,
        };
        built.wait_ready();
        built
    }

    /// Waits (at most 10 s) until routed and bridged paths work in both IP versions, so that
    /// a blocked flow in a test is never a network still coming up.
    fn wait_ready(&self) {
        for family in Family::BOTH {
            let toolexec = container_named("toolexec")
                .address_on(&LLMNET, family)
                .expect("toolexec is on llmnet");
            let checks = [
                ("outsider", SocketAddr::new(internet(family), 80)),
                ("proxy", SocketAddr::new(internet(family), 443)),
                ("core", SocketAddr::new(toolexec, PEER_SERVICE.port)),
            ];
            for (from, target) in checks {
                let ready = crate::wait_until(Duration::from_secs(10), || {
                    self.namespace(from)
                        .enter(move || probe_here(Proto::Tcp, target, Duration::from_millis(300)))
                });
                assert!(
                    ready,
                    "the test network did not come up: {from} cannot reach {target}"
                );
            }
        }
    }

    /// Datagrams the internet's UDP responders received so far.
    pub fn internet_received(&self) -> u64 {
        self.responders[0].received()
    }

    /// Tries a flow from a container (or from the host when `from` is "host").
    pub fn probe(&self, from: &str, proto: Proto, target: SocketAddr) -> bool {
        self.namespace(from)
            .enter(move || probe_here(proto, target, PROBE_TIMEOUT))
    }
}

/// Something holding named container namespaces (this module's hand-built host, or a real
/// Docker host): what [`crate::matrix::measure`] probes from.
pub trait Containers {
    /// The namespace of a container, or the host's for "host".
    fn namespace(&self, name: &str) -> &Netns;
}

impl Containers for DockerLikeHost {
    fn namespace(&self, name: &str) -> &Netns {
        namespace_in(&self.host, &self.containers, name)
    }
}

/// The namespace of container `name` in `containers`, or `host` for "host".
pub fn namespace_in<'a>(
    host: &'a Netns,
    containers: &'a BTreeMap<&'static str, Netns>,
    name: &str,
) -> &'a Netns {
    match name {
        "host" => host,
        other => containers
            .get(other)
            .unwrap_or_else(|| panic!("no container {other}")),
    }
}
