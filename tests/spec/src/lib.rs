//! ThreeGate, the topology every enforcer test is measured against, written once as data:
//! its networks, its containers with their addresses and roles, the listeners each namespace
//! runs, and the reachability matrix the policy demands ([`matrix`]).
//!
//! ```text
//!  core, toolexec ........ llmnet     10.100.0.0/24  fd00:100::/64   (managed, internal)
//!  fetch ................. llmnet + fetchnet 10.101.0.0/24 fd00:101::/64 (managed, internal)
//!  proxy ................. egressnet + fetchnet (default route: egressnet; the egress proxy)
//!  bystander ............. egressnet  10.102.0.0/24  fd00:102::/64   (managed by label)
//!  outsider .............. othernet   172.30.0.0/24  fd00:200::/64   (unmanaged)
//!  the internet .......... 203.0.113.10, 2001:db8:113::10, behind the host's uplink
//! ```
//!
//! Readers: the namespace harness builds its hand-made Docker-like host from it
//! (`enforcer_harness::host`), the Docker harness creates the same networks and containers
//! through a real dockerd (`enforcer_harness::docker`), and the planner's model tests in
//! `crates/core/tests/planner` evaluate the matrix on the planned ruleset.
//!
//! `rules/threegate.toml` is not generated from this crate, nor is this crate read from it: the
//! file is a shipped policy whose text (and dry-run output) must stay as an operator would
//! write it, and this crate holds what no policy says (containers, listeners, the unmanaged
//! network, the expected flows). The planner tests check that the two agree: every managed
//! network here is a network there with the same bridge and subnets, and every proxy here is a
//! proxy there with the same addresses.
//!
//! The crate is plain data over `ipnet` and `std::net`: the core's own tests can use it without
//! depending on the harness.

pub mod matrix;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Both versions, IPv4 first.
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    /// "v4" or "v6".
    pub fn tag(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
}

/// Transport of a flow or a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// "tcp" or "udp", as `enforcer explain` and the policy write it.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A transport and destination port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Service {
    /// Transport.
    pub proto: Proto,
    /// Destination port.
    pub port: u16,
}

/// `tcp/<port>`.
pub const fn tcp(port: u16) -> Service {
    Service {
        proto: Proto::Tcp,
        port,
    }
}

/// `udp/<port>`.
pub const fn udp(port: u16) -> Service {
    Service {
        proto: Proto::Udp,
        port,
    }
}

/// How a network comes to be managed by enforcer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Management {
    /// Managed because Docker created it `--internal`.
    Internal,
    /// Managed because it carries the label `enforcer.managed=true` (not internal: the proxy's
    /// way out).
    Labelled,
    /// Not managed: enforcer leaves its traffic alone.
    Unmanaged,
}

/// A Docker network: one bridge, an IPv4 /24 and an IPv6 /64, the host's gateway at host
/// number 1 of each.
#[derive(Debug, PartialEq, Eq)]
pub struct Network {
    /// Docker's name for it (and the network's name in `rules/threegate.toml`).
    pub name: &'static str,
    /// The bridge interface (`interface` in the policy; the hand-built host uses this name,
    /// a real dockerd its own `br-<id>`).
    pub bridge: &'static str,
    /// IPv4 subnet.
    pub v4: Ipv4Net,
    /// IPv6 subnet.
    pub v6: Ipv6Net,
    /// Why enforcer manages it, if it does.
    pub management: Management,
}

impl Network {
    /// Whether enforcer manages the network.
    pub fn managed(&self) -> bool {
        self.management != Management::Unmanaged
    }

    /// The subnet of one family.
    pub fn subnet(&self, family: Family) -> IpNet {
        match family {
            Family::V4 => IpNet::V4(self.v4),
            Family::V6 => IpNet::V6(self.v6),
        }
    }

    /// Host number `host` of the subnet (10 on llmnet: 10.100.0.10 and fd00:100::a).
    pub fn host(&self, host: u8, family: Family) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(
                u32::from(self.v4.network()) + u32::from(host),
            )),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(
                u128::from(self.v6.network()) + u128::from(host),
            )),
        }
    }

    /// The host's address on the network (its gateway): host number 1.
    pub fn gateway(&self, family: Family) -> IpAddr {
        self.host(1, family)
    }
}

/// llmnet: core, toolexec and fetch; internal.
pub const LLMNET: Network = Network {
    name: "llmnet",
    bridge: "br-llm",
    v4: Ipv4Net::new_assert(Ipv4Addr::new(10, 100, 0, 0), 24),
    v6: Ipv6Net::new_assert(Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 0), 64),
    management: Management::Internal,
};

/// fetchnet: fetch and the proxy; internal.
pub const FETCHNET: Network = Network {
    name: "fetchnet",
    bridge: "br-fetch",
    v4: Ipv4Net::new_assert(Ipv4Addr::new(10, 101, 0, 0), 24),
    v6: Ipv6Net::new_assert(Ipv6Addr::new(0xfd00, 0x101, 0, 0, 0, 0, 0, 0), 64),
    management: Management::Internal,
};

/// egressnet: the proxy's way out, and a bystander; managed by label.
pub const EGRESSNET: Network = Network {
    name: "egressnet",
    bridge: "br-egress",
    v4: Ipv4Net::new_assert(Ipv4Addr::new(10, 102, 0, 0), 24),
    v6: Ipv6Net::new_assert(Ipv6Addr::new(0xfd00, 0x102, 0, 0, 0, 0, 0, 0), 64),
    management: Management::Labelled,
};

/// othernet: an unmanaged network, the contrast.
pub const OTHERNET: Network = Network {
    name: "othernet",
    bridge: "br-other",
    v4: Ipv4Net::new_assert(Ipv4Addr::new(172, 30, 0, 0), 24),
    v6: Ipv6Net::new_assert(Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 0), 64),
    management: Management::Unmanaged,
};

/// Every network, in creation order.
pub const NETWORKS: [&Network; 4] = [&LLMNET, &FETCHNET, &EGRESSNET, &OTHERNET];

/// What a container is to enforcer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A plain container.
    Plain,
    /// The egress proxy (label `enforcer.role=egress-proxy`): the only way out.
    EgressProxy,
}

/// A container's place on a network: host number `host` of its subnets.
#[derive(Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The network.
    pub network: &'static Network,
    /// Host number on both of its subnets.
    pub host: u8,
}

/// A container. Its first attachment carries its default route (via that network's
/// gateway), as a container with CAP_NET_ADMIN could give itself: routes must never be what
/// blocks egress.
#[derive(Debug, PartialEq, Eq)]
pub struct Container {
    /// Container name.
    pub name: &'static str,
    /// What it is to enforcer.
    pub role: Role,
    /// Its networks, the default route's first.
    pub attachments: &'static [Attachment],
}

const fn on(network: &'static Network, host: u8) -> Attachment {
    Attachment { network, host }
}

/// Every container, in creation order.
pub const CONTAINERS: [Container; 6] = [
    container("core", Role::Plain, &[on(&LLMNET, 10)]),
    container("toolexec", Role::Plain, &[on(&LLMNET, 11)]),
    container("fetch", Role::Plain, &[on(&LLMNET, 12), on(&FETCHNET, 12)]),
    container(
        "proxy",
        Role::EgressProxy,
        &[on(&EGRESSNET, 2), on(&FETCHNET, 2)],
    ),
    container("bystander", Role::Plain, &[on(&EGRESSNET, 20)]),
    container("outsider", Role::Plain, &[on(&OTHERNET, 10)]),
];

const fn container(
    name: &'static str,
    role: Role,
    attachments: &'static [Attachment],
) -> Container {
    Container {
        name,
        role,
        attachments,
    }
}

/// The container called `name`; panics for a name this spec does not have.
pub fn container_named(name: &str) -> &'static Container {
    CONTAINERS
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("ThreeGate has no container {name}"))
}

impl Container {
    /// Its address on `network`, if it is attached there.
    pub fn address_on(&self, network: &Network, family: Family) -> Option<IpAddr> {
        self.attachments
            .iter()
            .find(|a| a.network == network)
            .map(|a| a.network.host(a.host, family))
    }

    /// The attachment its default route goes through.
    pub fn route(&self) -> &'static Attachment {
        &self.attachments[0]
    }

    /// Every address it has, IPv4 and IPv6 of each attachment.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.attachments
            .iter()
            .flat_map(|a| Family::BOTH.map(|f| a.network.host(a.host, f)))
            .collect()
    }
}

/// The link between the Docker host and the internet (IPv4).
pub const UPLINK_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(203, 0, 113, 0), 24);
/// The link between the Docker host and the internet (IPv6).
pub const UPLINK_V6: Ipv6Net =
    Ipv6Net::new_assert(Ipv6Addr::new(0x2001, 0xdb8, 0x113, 0, 0, 0, 0, 0), 64);
/// The internet host on the uplink (IPv4).
pub const INTERNET_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The internet host on the uplink (IPv6).
pub const INTERNET_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x113, 0, 0, 0, 0, 0x10);
/// The Docker host on the uplink (IPv4).
pub const HOST_UPLINK_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The Docker host on the uplink (IPv6).
pub const HOST_UPLINK_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x113, 0, 0, 0, 0, 1);

/// The uplink's subnet of one family.
pub fn uplink_subnet(family: Family) -> IpNet {
    match family {
        Family::V4 => IpNet::V4(UPLINK_V4),
        Family::V6 => IpNet::V6(UPLINK_V6),
    }
}

/// The internet host's address (203.0.113.10, 2001:db8:113::10).
pub fn internet(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(INTERNET_V4),
        Family::V6 => IpAddr::V6(INTERNET_V6),
    }
}

/// The Docker host's uplink address (203.0.113.1, 2001:db8:113::1): a host service reachable
/// there must stay out of the containers' reach.
pub fn host_uplink(family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(HOST_UPLINK_V4),
        Family::V6 => IpAddr::V6(HOST_UPLINK_V6),
    }
}

/// Where a listener runs, and on which addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The internet host, on its addresses of both families.
    Internet,
    /// The Docker host itself, on every address (`[::]`, both families).
    Host,
    /// A container, on its addresses (both families) on these networks.
    Container(&'static str, &'static [&'static Network]),
}

/// A service answering probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// Where it runs.
    pub place: Place,
    /// What it answers.
    pub service: Service,
}

const fn listen(place: Place, service: Service) -> Listener {
    Listener { place, service }
}

/// Port of the service running on the Docker host itself.
pub const HOST_SERVICE: Service = tcp(2222);
/// Port the proxy listens on for fetch, on fetchnet and egressnet.
pub const PROXY_SERVICE: Service = tcp(3128);
/// Port toolexec listens on for same-network traffic, on llmnet.
pub const PEER_SERVICE: Service = tcp(7000);
/// The internet host's services.
pub const INTERNET_SERVICES: [Service; 6] =
    [tcp(443), tcp(80), tcp(22), tcp(53), udp(53), udp(123)];

/// Every listener of ThreeGate.
pub const LISTENERS: [Listener; 9] = [
    listen(Place::Internet, INTERNET_SERVICES[0]),
    listen(Place::Internet, INTERNET_SERVICES[1]),
    listen(Place::Internet, INTERNET_SERVICES[2]),
    listen(Place::Internet, INTERNET_SERVICES[3]),
    listen(Place::Internet, INTERNET_SERVICES[4]),
    listen(Place::Internet, INTERNET_SERVICES[5]),
    listen(Place::Host, HOST_SERVICE),
    listen(
        Place::Container("proxy", &[&FETCHNET, &EGRESSNET]),
        PROXY_SERVICE,
    ),
    listen(Place::Container("toolexec", &[&LLMNET]), PEER_SERVICE),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_host_numbers() {
        let core = container_named("core");
        assert_eq!(
            core.address_on(&LLMNET, Family::V4),
            Some("10.100.0.10".parse().unwrap())
        );
        assert_eq!(
            core.address_on(&LLMNET, Family::V6),
            Some("fd00:100::a".parse().unwrap())
        );
        assert_eq!(core.address_on(&FETCHNET, Family::V4), None);
        assert_eq!(
            internet(Family::V6),
            "2001:db8:113::10".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            host_uplink(Family::V4),
            "203.0.113.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            OTHERNET.gateway(Family::V6),
            "fd00:200::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn every_attachment_is_a_distinct_host_of_its_network() {
        let mut seen = std::collections::BTreeSet::new();
        for container in &CONTAINERS {
            for address in container.addresses() {
                assert!(
                    NETWORKS
                        .iter()
                        .any(|n| Family::BOTH.iter().any(|f| n.subnet(*f).contains(&address))),
                    "{} has {address} outside every network",
                    container.name
                );
                assert!(seen.insert(address), "{address} is given twice");
            }
        }
    }
}
