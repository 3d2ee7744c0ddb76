//! What is enforced on: managed networks (their subnets) and egress proxies (their addresses and
//! allowed services). A [`Topology`] can only be built valid: every check that keeps the rules
//! meaningful (no overlaps, no huge prefixes, proxies inside managed subnets) lives in
//! [`TopologyBuilder`], which [`Topology::new`] and Docker's classification both use, whatever
//! the source of the data (policy file or Docker).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

use crate::diff::{additions_last, diff, Change};
use crate::roles::Role;

mod builder;

pub use builder::{
    is_valid_interface, is_valid_name, MemberPart, NetworkPart, ProxyPart, Rejected,
    TopologyBuilder, SPECIAL_RANGES,
};

/// Shortest IPv4 prefix a managed subnet may have: anything larger is a mistake, not a network.
pub const MIN_PREFIX_V4: u8 = 8;
/// Shortest IPv6 prefix a managed subnet may have.
pub const MIN_PREFIX_V6: u8 = 16;
/// Longest name a network or proxy may have (it becomes part of an nftables chain name).
pub const MAX_NAME_LEN: usize = 128;
/// Longest network interface name the kernel accepts (IFNAMSIZ without the NUL).
pub const MAX_INTERFACE_LEN: usize = 15;

/// A transport protocol a proxy may be allowed to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The IANA protocol number, as nftables' `meta l4proto` sees it.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    /// The lower-case name used by nftables and in the policy file.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A destination service: protocol and port, written `tcp/443` in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Service {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Destination port, never 0.
    pub port: u16,
}

impl Service {
    /// Whether this is a DNS service (port 53), which [`Proxy::dns_servers`] may restrict.
    pub fn is_dns(self) -> bool {
        self.port == 53
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol.name(), self.port)
    }
}

impl FromStr for Service {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (proto, port) = text.split_once('/').ok_or_else(|| {
            format!("`{text}` is not a service: write it as `tcp/443` or `udp/53`")
        })?;
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                return Err(format!(
                    "unknown protocol `{other}` in `{text}`: use tcp or udp"
                ))
            }
        };
        // Only canonical decimal: u16's parser also takes `+443` and `0443`.
        let canonical = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && (port == "0" || !port.starts_with('0'));
        let port: u16 = port.parse().ok().filter(|_| canonical).ok_or_else(|| {
            format!(
                "`{port}` in `{text}` is not a port number: write 1 to 65535 in decimal, \
                     without sign or leading zeros"
            )
        })?;
        if port == 0 {
            return Err(format!(
                "port 0 in `{text}` matches nothing: use a port from 1 to 65535"
            ));
        }
        Ok(Service { protocol, port })
    }
}

/// A network whose egress is denied by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedNetwork {
    /// Name, unique among managed networks (Docker's network name, or the policy's).
    pub name: String,
    /// Its IPv4 and IPv6 subnets, canonical (no host bits).
    pub subnets: Vec<IpNet>,
    /// The host interface its containers send through (a Docker bridge), when known. Anything
    /// entering from it that no rule allows is dropped, whatever its source address claims.
    pub interface: Option<String>,
    /// Whether its containers reach each other freely, or only as their roles allow.
    pub east_west: EastWest,
}

/// Traffic between the containers of one managed network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EastWest {
    /// Passes (the default): the network's subnets reach each other.
    #[default]
    Allow,
    /// Only what the initiator's role allows.
    Deny,
}

/// A container (or a static member of the policy) that holds a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Name, unique among members.
    pub name: String,
    /// The role's name.
    pub role: String,
    /// Its addresses; each lies inside a managed subnet.
    pub addresses: Vec<IpAddr>,
}

/// A container (or host) allowed to reach selected services outside the managed networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Name, unique among proxies.
    pub name: String,
    /// Its addresses; each lies inside a managed subnet.
    pub addresses: Vec<IpAddr>,
    /// Services it may open toward non-managed destinations.
    pub services: BTreeSet<Service>,
    /// When not empty, DNS services (port 53) are allowed only toward these resolvers.
    pub dns_servers: Vec<IpAddr>,
    /// The MAC addresses of its interfaces, declared by a static proxy so that its bridge
    /// ports can be told apart without Docker (a Docker proxy's come with its endpoints).
    pub macs: Vec<crate::ports::MacAddr>,
}

/// Which input item a [`TopologyError`] is about, by position, so that callers can point at the
/// exact place in their own source (a line of the policy file, a Docker object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// The network at this index.
    Network(usize),
    /// Subnet `.1` of network `.0`.
    Subnet(usize, usize),
    /// The proxy at this index.
    Proxy(usize),
    /// Address `.1` of proxy `.0`.
    ProxyAddress(usize, usize),
    /// DNS server `.1` of proxy `.0`.
    DnsServer(usize, usize),
    /// The interface of the network at this index.
    Interface(usize),
    /// Default DNS server at this index (the resolvers of proxies that name none).
    DefaultDnsServer(usize),
    /// The member at this index.
    Member(usize),
    /// Address `.1` of member `.0`.
    MemberAddress(usize, usize),
}

/// A topology that would make the rules wrong or meaningless.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct TopologyError {
    /// The offending item.
    pub subject: Subject,
    /// What is wrong and what to do, in one sentence.
    pub problem: String,
}

/// A validated set of managed networks and proxies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Topology {
    networks: Vec<ManagedNetwork>,
    proxies: Vec<Proxy>,
    members: Vec<Member>,
    roles: BTreeMap<String, Role>,
    elsewhere: BTreeMap<IpAddr, String>,
    containers: BTreeMap<IpAddr, String>,
    unmanaged_interfaces: BTreeSet<String>,
    skipped_interfaces: BTreeSet<String>,
    shared_interfaces: BTreeSet<String>,
}

impl Topology {
    /// Validates and builds a topology: the networks, then the proxies, each offered in order
    /// to a [`TopologyBuilder`] (see [`TopologyBuilder::add_network`] and
    /// [`TopologyBuilder::add_proxy`] for the checks). The first item rejected is reported; when
    /// two items conflict, that is the later one.
    pub fn new(networks: Vec<ManagedNetwork>, proxies: Vec<Proxy>) -> Result<Self, TopologyError> {
        Topology::with_default_dns(networks, &[], proxies)
    }

    /// As [`Topology::new`], and checks after the networks the resolvers that proxies not given
    /// here will use (the policy's `[proxy] dns_servers`): none may lie inside a managed subnet
    /// (reported as [`Subject::DefaultDnsServer`]).
    pub fn with_default_dns(
        networks: Vec<ManagedNetwork>,
        default_dns: &[IpAddr],
        proxies: Vec<Proxy>,
    ) -> Result<Self, TopologyError> {
        let mut builder = TopologyBuilder::default();
        for (n, network) in networks.into_iter().enumerate() {
            builder
                .add_network(network)
                .map_err(|rejected| TopologyError {
                    subject: match rejected.part {
                        NetworkPart::Name => Subject::Network(n),
                        NetworkPart::Interface => Subject::Interface(n),
                        NetworkPart::Subnet(s) => Subject::Subnet(n, s),
                    },
                    problem: rejected.problem,
                })?;
        }
        builder
            .reserve_dns_servers(default_dns)
            .map_err(|rejected| TopologyError {
                subject: Subject::DefaultDnsServer(rejected.part),
                problem: rejected.problem,
            })?;
        for (p, proxy) in proxies.into_iter().enumerate() {
            builder.add_proxy(proxy).map_err(|rejected| TopologyError {
                subject: match rejected.part {
                    ProxyPart::Name => Subject::Proxy(p),
                    ProxyPart::Address(a) => Subject::ProxyAddress(p, a),
                    ProxyPart::DnsServer(d) => Subject::DnsServer(p, d),
                },
                problem: rejected.problem,
            })?;
        }
        Ok(builder.build())
    }

    /// Offers `members` after what `self` holds (see [`TopologyBuilder::add_member`]); the
    /// first one rejected is reported.
    pub fn with_members(self, members: Vec<Member>) -> Result<Self, TopologyError> {
        let mut builder = TopologyBuilder::from(self);
        for (m, member) in members.into_iter().enumerate() {
            builder
                .add_member(member)
                .map_err(|rejected| TopologyError {
                    subject: match rejected.part {
                        MemberPart::Name => Subject::Member(m),
                        MemberPart::Address(a) => Subject::MemberAddress(m, a),
                    },
                    problem: rejected.problem,
                })?;
        }
        Ok(builder.build())
    }

    /// Sets the roles the policy defines (what [`Member`]s' roles name).
    pub fn with_roles(mut self, roles: BTreeMap<String, Role>) -> Self {
        self.roles = roles;
        self
    }

    /// The members, in the order given.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The roles the policy defines, by name.
    pub fn roles(&self) -> &BTreeMap<String, Role> {
        &self.roles
    }

    /// Adds the addresses managed containers hold on networks that are not managed (with the
    /// container's name): a container on a managed network is managed on all of its
    /// interfaces, so these addresses open nothing and nothing opens toward them. Addresses
    /// inside a managed subnet are left out (they are that network's).
    pub fn with_elsewhere(mut self, addresses: BTreeMap<IpAddr, String>) -> Self {
        let managed = |a: &IpAddr| {
            self.networks
                .iter()
                .any(|n| n.subnets.iter().any(|s| s.contains(a)))
        };
        self.elsewhere = addresses.into_iter().filter(|(a, _)| !managed(a)).collect();
        self
    }

    /// The addresses managed containers hold on networks that are not managed, by address.
    pub fn elsewhere(&self) -> &BTreeMap<IpAddr, String> {
        &self.elsewhere
    }

    /// Adds the addresses of containers on managed networks, with their names, so that their
    /// drops are counted per container: Docker's running containers on the enforced networks;
    /// the proxies and members are added here. Addresses outside every managed subnet are left
    /// out.
    pub fn with_containers(mut self, containers: BTreeMap<IpAddr, String>) -> Self {
        let managed = |a: &IpAddr| {
            self.networks
                .iter()
                .any(|n| n.subnets.iter().any(|s| s.contains(a)))
        };
        let mut all: BTreeMap<IpAddr, String> =
            containers.into_iter().filter(|(a, _)| managed(a)).collect();
        for proxy in &self.proxies {
            for address in &proxy.addresses {
                all.insert(*address, proxy.name.clone());
            }
        }
        for member in &self.members {
            for address in &member.addresses {
                all.insert(*address, member.name.clone());
            }
        }
        self.containers = all;
        self
    }

    /// The addresses of containers on managed networks, with their names.
    pub fn containers(&self) -> &BTreeMap<IpAddr, String> {
        &self.containers
    }

    /// Adds the interfaces of networks known to be unmanaged (classified Docker networks whose
    /// traffic passes untouched). Names that are not valid interface names are left out.
    pub fn with_unmanaged_interfaces(
        mut self,
        interfaces: impl IntoIterator<Item = String>,
    ) -> Self {
        self.unmanaged_interfaces = interfaces
            .into_iter()
            .filter(|name| is_valid_interface(name))
            .collect();
        self
    }

    /// Interfaces of classified unmanaged networks.
    pub fn unmanaged_interfaces(&self) -> &BTreeSet<String> {
        &self.unmanaged_interfaces
    }

    /// Adds the interfaces of networks seen as managed but not enforced (skipped Docker
    /// networks), whose traffic must be denied whatever their names. Names that are not valid
    /// interface names are left out.
    pub fn with_skipped_interfaces(mut self, interfaces: impl IntoIterator<Item = String>) -> Self {
        self.skipped_interfaces = interfaces
            .into_iter()
            .filter(|name| is_valid_interface(name))
            .collect();
        self
    }

    /// Interfaces of networks seen as managed but not enforced: their traffic is denied.
    pub fn skipped_interfaces(&self) -> &BTreeSet<String> {
        &self.skipped_interfaces
    }

    /// Marks managed networks' interfaces that carry unmanaged containers' traffic too
    /// (`docker_gwbridge`, where containers of managed and unmanaged overlays alike have an
    /// endpoint): a packet entering from one is managed by its source address alone, since
    /// the bridge table ties each of its ports to its container's addresses. Names that are not
    /// valid interface names are left out.
    pub fn with_shared_interfaces(mut self, interfaces: impl IntoIterator<Item = String>) -> Self {
        self.shared_interfaces = interfaces
            .into_iter()
            .filter(|name| is_valid_interface(name))
            .collect();
        self
    }

    /// Managed networks' interfaces that carry unmanaged containers' traffic too.
    pub fn shared_interfaces(&self) -> &BTreeSet<String> {
        &self.shared_interfaces
    }

    /// The managed networks, in the order given.
    pub fn networks(&self) -> &[ManagedNetwork] {
        &self.networks
    }

    /// The proxies, in the order given.
    pub fn proxies(&self) -> &[Proxy] {
        &self.proxies
    }
}

/// What differs from `old` to `new`, one short line per network, proxy or unmanaged bridge:
/// `+network llmnet 10.100.0.0/24 on br-1a2b`, `-proxy egress`, `~network x ...` (its new
/// form). Empty when they are equal. Used to log why a transaction was sent.
pub fn changes(old: &Topology, new: &Topology) -> Vec<String> {
    fn network_text(n: &ManagedNetwork) -> String {
        let subnets: Vec<String> = n.subnets.iter().map(|s| s.to_string()).collect();
        let on = n
            .interface
            .as_ref()
            .map(|i| format!(" on {i}"))
            .unwrap_or_default();
        format!("network {} {}{on}", n.name, subnets.join(" "))
    }
    fn proxy_text(p: &Proxy) -> String {
        let addresses: Vec<String> = p.addresses.iter().map(|a| a.to_string()).collect();
        format!("proxy {} {}", p.name, addresses.join(" "))
    }
    fn member_text(m: &Member) -> String {
        let addresses: Vec<String> = m.addresses.iter().map(|a| a.to_string()).collect();
        format!(
            "member {} (role {}) {}",
            m.name,
            m.role,
            addresses.join(" ")
        )
    }
    let bridge_text = |i: &String| format!("unmanaged bridge {i}");
    let skipped_text = |i: &String| format!("denied bridge {i} of a skipped network");
    let mut out = Vec::new();
    push_changes(
        &mut out,
        &old.networks,
        &new.networks,
        |n| &n.name,
        network_text,
    );
    push_changes(
        &mut out,
        &old.proxies,
        &new.proxies,
        |p| &p.name,
        proxy_text,
    );
    push_changes(
        &mut out,
        &old.members,
        &new.members,
        |m| &m.name,
        member_text,
    );
    let elsewhere = |t: &Topology| -> Vec<(String, String)> {
        let text = |(a, c): (&IpAddr, &String)| (a.to_string(), c.clone());
        t.elsewhere.iter().map(text).collect()
    };
    push_changes(
        &mut out,
        &elsewhere(old),
        &elsewhere(new),
        |(a, _)| a,
        |(a, c)| format!("address {a} of managed container {c} on an unmanaged network"),
    );
    push_changes(
        &mut out,
        &old.unmanaged_interfaces,
        &new.unmanaged_interfaces,
        |i| i,
        bridge_text,
    );
    push_changes(
        &mut out,
        &old.skipped_interfaces,
        &new.skipped_interfaces,
        |i| i,
        skipped_text,
    );
    push_changes(
        &mut out,
        &old.shared_interfaces,
        &new.shared_interfaces,
        |i| i,
        |i| format!("bridge {i} shared by managed and unmanaged containers"),
    );
    out
}

/// One line per item of `old` and `new` (keyed by `name`, compared by `text`) that differs:
/// removals and changes in name order, then additions.
fn push_changes<'a, T: 'a>(
    out: &mut Vec<String>,
    old: impl IntoIterator<Item = &'a T>,
    new: impl IntoIterator<Item = &'a T>,
    name: impl Fn(&'a T) -> &'a str,
    text: impl Fn(&'a T) -> String,
) {
    let keyed = |item: &'a T| (name(item), text(item));
    let changes = diff(old.into_iter().map(&keyed), new.into_iter().map(&keyed));
    out.extend(additions_last(changes).map(|change| match change {
        Change::Removed(_, was) => format!("-{was}"),
        Change::Changed { new: now, .. } => format!("~{now}"),
        Change::Added(_, now) => format!("+{now}"),
    }));
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A network with these subnets and no interface (shared by the builder's tests).
    pub(crate) fn net(name: &str, subnets: &[&str]) -> ManagedNetwork {
        ManagedNetwork {
            name: name.into(),
            subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
            interface: None,
            east_west: Default::default(),
        }
    }

    fn proxy(addresses: &[&str], dns: &[&str]) -> Proxy {
        Proxy {
            name: "proxy".into(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            services: ["tcp/443".parse().unwrap()].into(),
            dns_servers: dns.iter().map(|a| a.parse().unwrap()).collect(),
            macs: Vec::new(),
        }
    }

    #[test]
    fn service_parsing_explains_mistakes() {
        assert_eq!(
            "udp/53".parse::<Service>(),
            Ok(Service {
                protocol: Protocol::Udp,
                port: 53
            })
        );
        assert!("tcp/0".parse::<Service>().unwrap_err().contains("port 0"));
        assert!("icmp/1"
            .parse::<Service>()
            .unwrap_err()
            .contains("unknown protocol"));
        assert!("443".parse::<Service>().unwrap_err().contains("tcp/443"));
        assert!("tcp/70000"
            .parse::<Service>()
            .unwrap_err()
            .contains("not a port"));
    }

    #[test]
    fn overlapping_subnets_of_two_networks_are_rejected() {
        let err = Topology::new(
            vec![net("a", &["10.0.0.0/16"]), net("b", &["10.0.5.0/24"])],
            vec![],
        )
        .unwrap_err();
        assert_eq!(err.subject, Subject::Subnet(1, 0));
        assert!(
            err.problem.contains("overlaps 10.0.0.0/16 of network `a`"),
            "{err}"
        );
    }

    #[test]
    fn huge_and_non_canonical_subnets_are_rejected() {
        for (subnet, needle) in [
            ("0.0.0.0/0", "too large"),
            ("10.0.0.0/7", "too large"),
            ("::/0", "too large"),
            ("10.0.0.5/24", "write it as 10.0.0.0/24"),
        ] {
            let err = Topology::new(vec![net("a", &[subnet])], vec![]).unwrap_err();
            assert!(err.problem.contains(needle), "{subnet}: {err}");
        }
    }

    #[test]
    fn proxies_must_sit_inside_managed_subnets() {
        let nets = vec![net("egress", &["10.2.0.0/24", "fd00:2::/64"])];
        assert!(Topology::new(nets.clone(), vec![proxy(&["10.2.0.9", "fd00:2::9"], &[])]).is_ok());
        let err = Topology::new(nets.clone(), vec![proxy(&["10.3.0.9"], &[])]).unwrap_err();
        assert_eq!(err.subject, Subject::ProxyAddress(0, 0));
        let err = Topology::new(nets, vec![proxy(&["10.2.0.9"], &["10.2.0.53"])]).unwrap_err();
        assert_eq!(err.subject, Subject::DnsServer(0, 0));
    }

    #[test]
    fn changes_name_what_differs() {
        let before = Topology::new(
            vec![net("a", &["10.1.0.0/24"]), net("b", &["10.2.0.0/24"])],
            vec![],
        )
        .unwrap()
        .with_unmanaged_interfaces(["docker0".to_string()]);
        let mut moved = net("b", &["10.3.0.0/24"]);
        moved.interface = Some("br-b".into());
        let after = Topology::new(
            vec![moved, net("c", &["10.4.0.0/24"])],
            vec![proxy(&["10.4.0.2"], &[])],
        )
        .unwrap();
        assert_eq!(
            changes(&before, &after),
            [
                "-network a 10.1.0.0/24",
                "~network b 10.3.0.0/24 on br-b",
                "+network c 10.4.0.0/24",
                "+proxy proxy 10.4.0.2",
                "-unmanaged bridge docker0",
            ]
        );
        assert!(changes(&after, &after).is_empty());
    }

    #[test]
    fn names_must_be_unique_and_plain() {
        let err = Topology::new(vec![net("a", &[]), net("a", &[])], vec![]).unwrap_err();
        assert_eq!(err.subject, Subject::Network(1));
        let err = Topology::new(vec![net("bad name", &[])], vec![]).unwrap_err();
        assert!(err.problem.contains("not allowed"));
        assert!(!is_valid_name(&"x".repeat(MAX_NAME_LEN + 1)));
        assert!(is_valid_name("my_net.v2-a"));
    }
}
