//! A Docker-like host in its own namespace, built by hand the way Docker builds it: one bridge
//! per network with the gateway address, containers as namespaces on veths, br_netfilter on,
//! forwarding on; and a second namespace as "the internet" (203.0.113.10, 2001:db8:113::10)
//! behind the host's uplink. No NAT: the internet routes the test subnets back to the host.
//!
//! The topology is ThreeGate's (`rules/threegate.toml`) plus an unmanaged network:
//!
//! ```text
//!  core, toolexec ........ llmnet     10.100.0.0/24  fd00:100::/64   (managed)
//!  fetch ................. llmnet + fetchnet                          (managed)
//!  proxy ................. fetchnet + egressnet (default route: egressnet)
//!  bystander ............. egressnet  10.102.0.0/24  fd00:102::/64   (managed, not a proxy)
//!  outsider .............. othernet   172.30.0.0/24  fd00:200::/64   (unmanaged)
//! ```
//!
//! Every container gets a default route through its first network's gateway, as a container
//! with CAP_NET_ADMIN could give itself: the routes must not be what blocks egress.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::{probe_here, Netns, Proto, Responders, PROBE_TIMEOUT};

/// IPv4 address of the internet host.
pub const INTERNET_V4: &str = "203.0.113.10";
/// IPv6 address of the internet host.
pub const INTERNET_V6: &str = "2001:db8:113::10";
/// The host's own uplink address (a host service reachable there must stay out of reach).
pub const HOST_UPLINK_V4: &str = "203.0.113.1";
/// Port of the service running on the host itself.
pub const HOST_SERVICE_PORT: u16 = 2222;
/// Port the proxy listens on for fetch.
pub const PROXY_PORT: u16 = 3128;
/// Port toolexec listens on for same-network traffic.
pub const PEER_PORT: u16 = 7000;
/// Internet services: TCP ports.
pub const INTERNET_TCP: [u16; 4] = [443, 80, 22, 53];
/// Internet services: UDP ports.
pub const INTERNET_UDP: [u16; 2] = [53, 123];

/// One network: bridge, IPv4 /24 and IPv6 /64 prefixes (gateway .1 / ::1).
struct Network {
    bridge: &'static str,
    v4: &'static str,
    v6: &'static str,
}

const NETWORKS: [(&str, Network); 4] = [
    (
        "llmnet",
        Network {
            bridge: "br-llm",
            v4: "10.100.0",
            v6: "fd00:100:",
        },
    ),
    (
        "fetchnet",
        Network {
            bridge: "br-fetch",
            v4: "10.101.0",
            v6: "fd00:101:",
        },
    ),
    (
        "egressnet",
        Network {
            bridge: "br-egress",
            v4: "10.102.0",
            v6: "fd00:102:",
        },
    ),
    (
        "othernet",
        Network {
            bridge: "br-other",
            v4: "172.30.0",
            v6: "fd00:200:",
        },
    ),
];

/// Containers: name, then (network, host number) for each attachment; the first is the route.
const CONTAINERS: [(&str, &[(&str, u8)]); 6] = [
    ("core", &[("llmnet", 10)]),
    ("toolexec", &[("llmnet", 11)]),
    ("fetch", &[("llmnet", 12), ("fetchnet", 12)]),
    ("proxy", &[("egressnet", 2), ("fetchnet", 2)]),
    ("bystander", &[("egressnet", 20)]),
    ("outsider", &[("othernet", 10)]),
];

fn network(name: &str) -> &'static Network {
    &NETWORKS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("known network")
        .1
}

/// A container's address on a network.
pub fn address(network_name: &str, host: u8, v6: bool) -> IpAddr {
    let net = network(network_name);
    let text = if v6 {
        format!("{}:{host:x}", net.v6)
    } else {
        format!("{}.{host}", net.v4)
    };
    text.parse().expect("valid address")
}

/// Links a Docker host namespace to the internet namespace: the host's uplink (203.0.113.1,
/// 2001:db8:113::1) with its default routes via the internet host (203.0.113.10,
/// 2001:db8:113::10). Forwarding is turned on in the host.
pub fn connect_internet(host: &Netns, internet: &Netns) {
    host.sysctl("net.ipv4.ip_forward", "1");
    host.sysctl("net.ipv6.conf.all.forwarding", "1");
    host.veth("uplink", internet, "eth0");
    host.ip(&["addr", "add", "203.0.113.1/24", "dev", "uplink"]);
    host.ip(&[
        "addr",
        "add",
        "2001:db8:113::1/64",
        "dev",
        "uplink",
        "nodad",
    ]);
    host.ip(&["link", "set", "uplink", "up"]);
    host.ip(&["route", "add", "default", "via", INTERNET_V4]);
    host.ip(&["-6", "route", "add", "default", "via", INTERNET_V6]);
    internet.ip(&["addr", "add", "203.0.113.10/24", "dev", "eth0"]);
    internet.ip(&["addr", "add", "2001:db8:113::10/64", "dev", "eth0", "nodad"]);
    internet.ip(&["link", "set", "eth0", "up"]);
}

/// ThreeGate's listeners: a service on the host itself (port [`HOST_SERVICE_PORT`], all
/// addresses), the proxy on fetchnet and egressnet ([`PROXY_PORT`]), toolexec on llmnet
/// ([`PEER_PORT`]), IPv4 and IPv6.
pub fn threegate_responders(host: &Netns, containers: &BTreeMap<&str, Netns>) -> Vec<Responders> {
    let any = SocketAddr::new("::".parse().expect("constant address"), HOST_SERVICE_PORT);
    let mut proxy_endpoints = Vec::new();
    let mut peer_endpoints = Vec::new();
    for v6 in [false, true] {
        for net in ["fetchnet", "egressnet"] {
            proxy_endpoints.push((Proto::Tcp, SocketAddr::new(address(net, 2, v6), PROXY_PORT)));
        }
        peer_endpoints.push((
            Proto::Tcp,
            SocketAddr::new(address("llmnet", 11, v6), PEER_PORT),
        ));
    }
    vec![
        Responders::start(host, &[(Proto::Tcp, any)]),
        Responders::start(&containers["proxy"], &proxy_endpoints),
        Responders::start(&containers["toolexec"], &peer_endpoints),
    ]
}

/// The internet host's services: [`INTERNET_TCP`] and [`INTERNET_UDP`] on both addresses.
pub fn internet_endpoints() -> Vec<(Proto, SocketAddr)> {
    let mut endpoints = Vec::new();
    for address in [INTERNET_V4, INTERNET_V6] {
        let ip: IpAddr = address.parse().expect("constant address");
        endpoints.extend(
            INTERNET_TCP
                .iter()
                .map(|p| (Proto::Tcp, SocketAddr::new(ip, *p))),
        );
        endpoints.extend(
            INTERNET_UDP
                .iter()
                .map(|p| (Proto::Udp, SocketAddr::new(ip, *p))),
        );
    }
    endpoints
}

/// The sealed Docker-like host with its containers and the internet.
pub struct DockerLikeHost {
    /// The host namespace (bridges, forwarding, nftables, enforcer).
    pub host: Netns,
    /// The internet namespace.
    pub internet: Netns,
    /// Container namespaces by name.
    pub containers: BTreeMap<&'static str, Netns>,
    _responders: Vec<Responders>,
}

impl DockerLikeHost {
    /// Builds the whole topology and starts every responder.
    pub fn threegate() -> DockerLikeHost {
        crate::require_root();
        let host = Netns::new("host");
        let internet = Netns::new("inet");
        host.sysctl("net.bridge.bridge-nf-call-iptables", "1");
        host.sysctl("net.bridge.bridge-nf-call-ip6tables", "1");

        connect_internet(&host, &internet);
        for (_, net) in &NETWORKS {
            internet.ip(&[
                "route",
                "add",
                &format!("{}.0/24", net.v4),
                "via",
                HOST_UPLINK_V4,
            ]);
            internet.ip(&[
                "-6",
                "route",
                "add",
                &format!("{}:/64", net.v6),
                "via",
                "2001:db8:113::1",
            ]);
            host.ip(&["link", "add", net.bridge, "type", "bridge"]);
            host.ip(&[
                "addr",
                "add",
                &format!("{}.1/24", net.v4),
                "dev",
                net.bridge,
            ]);
            host.ip(&[
                "addr",
                "add",
                &format!("{}:1/64", net.v6),
                "dev",
                net.bridge,
                "nodad",
            ]);
            host.ip(&["link", "set", net.bridge, "up"]);
        }

        let mut containers = BTreeMap::new();
        for (name, attachments) in CONTAINERS {
            let ns = Netns::new(name);
            for (index, (net_name, number)) in attachments.iter().enumerate() {
                let net = network(net_name);
                let outside = format!("v{}{index}", &name[..name.len().min(8)]);
                let inside = format!("eth{index}");
                host.veth(&outside, &ns, &inside);
                host.ip(&["link", "set", &outside, "master", net.bridge, "up"]);
                ns.ip(&[
                    "addr",
                    "add",
                    &format!("{}.{number}/24", net.v4),
                    "dev",
                    &inside,
                ]);
                ns.ip(&[
                    "addr",
                    "add",
                    &format!("{}:{number:x}/64", net.v6),
                    "dev",
                    &inside,
                    "nodad",
                ]);
                ns.ip(&["link", "set", &inside, "up"]);
                if index == 0 {
                    ns.ip(&["route", "add", "default", "via", &format!("{}.1", net.v4)]);
                    ns.ip(&[
                        "-6",
                        "route",
                        "add",
                        "default",
                        "via",
                        &format!("{}:1", net.v6),
                    ]);
                }
            }
            containers.insert(name, ns);
        }

        let mut responders = Vec::new();
        responders.push(Responders::start(&internet, &internet_endpoints()));
        responders.extend(threegate_responders(&host, &containers));
        let built = DockerLikeHost {
            host,
            internet,
            containers,
            _responders: responders,
        };
        built.wait_ready();
        built
    }

    /// Waits (at most 10 s) until routed and bridged paths work in both IP versions, so that
    /// a blocked flow in a test is never a network still coming up.
    fn wait_ready(&self) {
        for v6 in [false, true] {
            let internet: IpAddr = if v6 { INTERNET_V6 } else { INTERNET_V4 }.parse().unwrap();
            let checks = [
                ("outsider", SocketAddr::new(internet, 80)),
                ("proxy", SocketAddr::new(internet, 443)),
                (
                    "core",
                    SocketAddr::new(address("llmnet", 11, v6), PEER_PORT),
                ),
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

    /// Tries a flow from a container (or from the host when `from` is "host").
    pub fn probe(&self, from: &str, proto: Proto, target: SocketAddr) -> bool {
        self.namespace(from)
            .enter(move || probe_here(proto, target, PROBE_TIMEOUT))
    }
}

/// Something holding named container namespaces (this module's hand-built host, or a real
/// Docker host): what [`measure`] probes from.
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

/// Runs many probes at once; returns their results in order.
pub fn probe_all(host: &impl Containers, cases: &[(String, Proto, SocketAddr)]) -> Vec<bool> {
    let handles: Vec<_> = cases
        .iter()
        .map(|(from, proto, target)| {
            let (proto, target) = (*proto, *target);
            host.namespace(from)
                .spawn(move || probe_here(proto, target, PROBE_TIMEOUT))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("probe thread"))
        .collect()
}

/// One row of the reachability matrix.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Source container.
    pub from: &'static str,
    /// Transport.
    pub proto: Proto,
    /// Destination.
    pub target: SocketAddr,
    /// What the policy demands.
    pub allowed: bool,
    /// Why, for the report.
    pub what: String,
}

fn sock(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

/// ThreeGate's reachability matrix, IPv4 and IPv6.
pub fn threegate_matrix() -> Vec<Flow> {
    let mut flows = Vec::new();
    for v6 in [false, true] {
        let internet: IpAddr = if v6 { INTERNET_V6 } else { INTERNET_V4 }.parse().unwrap();
        let mut add = |from, proto, target, allowed, what: &str| {
            flows.push(Flow {
                from,
                proto,
                target,
                allowed,
                what: format!("{what} ({})", if v6 { "v6" } else { "v4" }),
            })
        };
        for from in ["core", "toolexec", "fetch", "bystander"] {
            for port in INTERNET_TCP {
                add(
                    from,
                    Proto::Tcp,
                    sock(internet, port),
                    false,
                    &format!("{from} -> internet tcp/{port}"),
                );
            }
            for port in INTERNET_UDP {
                add(
                    from,
                    Proto::Udp,
                    sock(internet, port),
                    false,
                    &format!("{from} -> internet udp/{port}"),
                );
            }
        }
        add(
            "fetch",
            Proto::Tcp,
            sock(address("fetchnet", 2, v6), PROXY_PORT),
            true,
            "fetch -> proxy on fetchnet",
        );
        add(
            "fetch",
            Proto::Tcp,
            sock(address("egressnet", 2, v6), PROXY_PORT),
            false,
            "fetch -> proxy on egressnet (another network)",
        );
        add(
            "core",
            Proto::Tcp,
            sock(address("fetchnet", 2, v6), PROXY_PORT),
            false,
            "core -> proxy (core must not talk to the proxy)",
        );
        add(
            "core",
            Proto::Tcp,
            sock(address("llmnet", 11, v6), PEER_PORT),
            true,
            "core -> toolexec, same network",
        );
        add(
            "proxy",
            Proto::Tcp,
            sock(internet, 443),
            true,
            "proxy -> internet tcp/443",
        );
        add(
            "proxy",
            Proto::Udp,
            sock(internet, 53),
            true,
            "proxy -> internet udp/53",
        );
        add(
            "proxy",
            Proto::Tcp,
            sock(internet, 53),
            true,
            "proxy -> internet tcp/53",
        );
        add(
            "proxy",
            Proto::Tcp,
            sock(internet, 80),
            false,
            "proxy -> internet tcp/80",
        );
        add(
            "proxy",
            Proto::Tcp,
            sock(internet, 22),
            false,
            "proxy -> internet tcp/22",
        );
        add(
            "proxy",
            Proto::Udp,
            sock(internet, 123),
            false,
            "proxy -> internet udp/123",
        );
        add(
            "proxy",
            Proto::Tcp,
            sock(address("llmnet", 11, v6), PEER_PORT),
            false,
            "proxy -> toolexec (managed destination)",
        );
        add(
            "outsider",
            Proto::Tcp,
            sock(internet, 80),
            true,
            "unmanaged network -> internet tcp/80",
        );
        add(
            "outsider",
            Proto::Udp,
            sock(internet, 123),
            true,
            "unmanaged network -> internet udp/123",
        );
        let gateway = if v6 { "fd00:100::1" } else { "10.100.0.1" };
        add(
            "core",
            Proto::Tcp,
            sock(gateway.parse().unwrap(), HOST_SERVICE_PORT),
            false,
            "core -> host service via its gateway",
        );
        let other_gateway = if v6 { "fd00:200::1" } else { "172.30.0.1" };
        add(
            "outsider",
            Proto::Tcp,
            sock(other_gateway.parse().unwrap(), HOST_SERVICE_PORT),
            true,
            "unmanaged network -> host service",
        );
        if !v6 {
            add(
                "core",
                Proto::Tcp,
                sock(HOST_UPLINK_V4.parse().unwrap(), HOST_SERVICE_PORT),
                false,
                "core -> host service via the uplink address",
            );
            add(
                "proxy",
                Proto::Tcp,
                sock(HOST_UPLINK_V4.parse().unwrap(), HOST_SERVICE_PORT),
                false,
                "proxy -> host service tcp/2222",
            );
        }
    }
    flows
}

/// Probes every flow; returns (flow, observed open) pairs.
pub fn measure(host: &impl Containers, flows: &[Flow]) -> Vec<(Flow, bool)> {
    let cases: Vec<(String, Proto, SocketAddr)> = flows
        .iter()
        .map(|f| (f.from.to_string(), f.proto, f.target))
        .collect();
    let results = probe_all(host, &cases);
    flows.iter().cloned().zip(results).collect()
}

/// A printable matrix; rows whose observation differs from the policy are marked.
pub fn report(results: &[(Flow, bool)]) -> String {
    let mut out = String::new();
    for (flow, open) in results {
        let observed = if *open { "allowed" } else { "blocked" };
        let mark = if *open == flow.allowed { "ok " } else { "BAD" };
        out.push_str(&format!(
            "{mark} {observed:8} {:?} {:<45} {}\n",
            flow.proto, flow.target, flow.what
        ));
    }
    out
}
