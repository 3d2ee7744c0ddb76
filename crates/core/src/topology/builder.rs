//! The one set of validation rules for a [`Topology`], applied one item at a time: each network
//! or proxy offered to a [`TopologyBuilder`] is checked against those already accepted, and is
//! either accepted or handed back as [`Rejected`] with what is wrong. The order of the offers
//! is the caller's: whatever is accepted first wins a conflict, the later item loses.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::{
    ManagedNetwork, Member, Proxy, Topology, MAX_INTERFACE_LEN, MAX_NAME_LEN, MIN_PREFIX_V4,
    MIN_PREFIX_V6,
};

/// Which part of an offered network a [`Rejected`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkPart {
    /// Its name.
    Name,
    /// Its interface.
    Interface,
    /// Its subnet at this index.
    Subnet(usize),
}

/// Which part of an offered proxy a [`Rejected`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyPart {
    /// Its name.
    Name,
    /// Its address at this index.
    Address(usize),
    /// Its DNS server at this index.
    DnsServer(usize),
}

/// Which part of an offered member a [`Rejected`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberPart {
    /// Its name.
    Name,
    /// Its address at this index.
    Address(usize),
}

/// Why an offered item was not accepted; `P` is [`NetworkPart`], [`ProxyPart`] or
/// [`MemberPart`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem}")]
pub struct Rejected<P> {
    /// The offending part of the item.
    pub part: P,
    /// What is wrong and what to do, in one sentence.
    pub problem: String,
}

/// A [`Topology`] grown one checked item at a time (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct TopologyBuilder {
    topology: Topology,
    network_names: HashSet<String>,
    proxy_names: HashSet<String>,
    member_names: HashSet<String>,
    /// Accepted subnets by network address (unique, as they do not overlap), with the index of
    /// their network.
    subnets: BTreeMap<IpAddr, (IpNet, usize)>,
    /// Addresses of accepted proxies and members.
    addresses: HashSet<IpAddr>,
    /// DNS servers of accepted proxies (and reserved ones), with who uses each: `proxy `p``.
    dns_servers: BTreeMap<IpAddr, String>,
    /// Interfaces of accepted networks, with the network's name.
    interfaces: HashMap<String, String>,
}

impl From<Topology> for TopologyBuilder {
    /// Starts from a topology that is already valid, so that its items win every conflict.
    fn from(topology: Topology) -> Self {
        let mut builder = TopologyBuilder {
            topology: Topology {
                unmanaged_interfaces: topology.unmanaged_interfaces,
                skipped_interfaces: topology.skipped_interfaces,
                roles: topology.roles,
                elsewhere: topology.elsewhere,
                containers: topology.containers,
                ..Topology::default()
            },
            ..TopologyBuilder::default()
        };
        for network in topology.networks {
            builder.accept_network(network);
        }
        for proxy in topology.proxies {
            builder.accept_proxy(proxy);
        }
        for member in topology.members {
            builder.accept_member(member);
        }
        builder
    }
}

impl TopologyBuilder {
    /// Accepts `network` unless its name is malformed or taken, its interface is not one the
    /// kernel accepts (and nft reads as written) or is an accepted network's, a subnet is not
    /// canonical, is shorter than [`MIN_PREFIX_V4`] / [`MIN_PREFIX_V6`] or overlaps a range no
    /// network may use ([`SPECIAL_RANGES`]), a subnet overlaps an accepted one (or an earlier one
    /// of its own), or a subnet holds the DNS server of an accepted proxy (or a reserved one, see
    /// [`TopologyBuilder::reserve_dns_servers`]). The first problem found is returned.
    pub fn add_network(&mut self, network: ManagedNetwork) -> Result<(), Rejected<NetworkPart>> {
        let reject = |part, problem| Err(Rejected { part, problem });
        if let Some(problem) = name_problem(&network.name, "network", &self.network_names) {
            return reject(NetworkPart::Name, problem);
        }
        if let Some(interface) = network.interface.as_deref() {
            if !is_valid_interface(interface) {
                return reject(
                    NetworkPart::Interface,
                    format!(
                        "network `{}`: `{interface}` is not an interface name: use 1 to \
                         {MAX_INTERFACE_LEN} ASCII characters, without spaces, quotes, \\, `/`, \
                         `:` or `*`",
                        network.name
                    ),
                );
            }
            if let Some(owner) = self.interfaces.get(interface) {
                return reject(
                    NetworkPart::Interface,
                    format!(
                        "network `{}`: interface `{interface}` is already the interface of \
                         network `{owner}`: one interface carries one network, give each its own",
                        network.name
                    ),
                );
            }
        }
        for (index, subnet) in network.subnets.iter().enumerate() {
            if let Err(problem) = check_subnet(subnet) {
                let problem = format!("network `{}`: {problem}", network.name);
                return reject(NetworkPart::Subnet(index), problem);
            }
        }
        for (index, subnet) in network.subnets.iter().enumerate() {
            if let Some(problem) = self.subnet_conflict(&network, index) {
                return reject(NetworkPart::Subnet(index), problem);
            }
            let mut held = self
                .dns_servers
                .range(subnet.network()..=subnet.broadcast());
            if let Some((server, user)) = held.next() {
                let problem = format!(
                    "subnet {subnet} of network `{}` holds DNS server {server} of {user}, \
                     which no proxy may reach inside a managed subnet; give the network another \
                     range or the proxy a resolver outside the managed networks",
                    network.name
                );
                return reject(NetworkPart::Subnet(index), problem);
            }
        }
        self.accept_network(network);
        Ok(())
    }

    /// Accepts `proxy` unless its name is malformed or taken, an address lies outside every
    /// accepted subnet or is given to another proxy (or twice to this one), or a DNS server lies
    /// inside an accepted subnet. The first problem found is returned.
    pub fn add_proxy(&mut self, proxy: Proxy) -> Result<(), Rejected<ProxyPart>> {
        let reject = |part, problem| Err(Rejected { part, problem });
        if let Some(problem) = name_problem(&proxy.name, "proxy", &self.proxy_names) {
            return reject(ProxyPart::Name, problem);
        }
        for (index, address) in proxy.addresses.iter().enumerate() {
            let problem = if self.containing_subnet(*address).is_none() {
                format!(
                    "proxy `{}`: address {address} lies outside every managed subnet; a proxy \
                     must sit on a managed network, so add its network or fix the address",
                    proxy.name
                )
            } else if self.addresses.contains(address) || proxy.addresses[..index].contains(address)
            {
                format!(
                    "proxy `{}`: address {address} is given to more than one proxy",
                    proxy.name
                )
            } else {
                continue;
            };
            return reject(ProxyPart::Address(index), problem);
        }
        for (index, server) in proxy.dns_servers.iter().enumerate() {
            if let Some(subnet) = self.containing_subnet(*server) {
                let problem = format!(
                    "proxy `{}`: DNS server {server} lies inside managed subnet {subnet}, which \
                     no proxy may reach; use a resolver outside the managed networks",
                    proxy.name
                );
                return reject(ProxyPart::DnsServer(index), problem);
            }
        }
        self.accept_proxy(proxy);
        Ok(())
    }

    /// Accepts `member` unless its name is malformed or taken, or an address lies outside every
    /// accepted subnet or is already a proxy's or a member's (or given twice to this one). The
    /// first problem found is returned. Its role is not checked: a role the policy does not
    /// define allows nothing.
    pub fn add_member(&mut self, member: Member) -> Result<(), Rejected<MemberPart>> {
        let reject = |part, problem| Err(Rejected { part, problem });
        if let Some(problem) = name_problem(&member.name, "member", &self.member_names) {
            return reject(MemberPart::Name, problem);
        }
        for (index, address) in member.addresses.iter().enumerate() {
            let problem = if self.containing_subnet(*address).is_none() {
                format!(
                    "member `{}`: address {address} lies outside every managed subnet; a role \
                     is held on a managed network, so add its network or fix the address",
                    member.name
                )
            } else if self.addresses.contains(address)
                || member.addresses[..index].contains(address)
            {
                format!(
                    "member `{}`: address {address} is already a proxy's or another member's",
                    member.name
                )
            } else {
                continue;
            };
            return reject(MemberPart::Address(index), problem);
        }
        self.accept_member(member);
        Ok(())
    }

    /// Reserves `servers`, the resolvers that proxies not offered yet will use (the policy's
    /// `[proxy] dns_servers`, given to every Docker proxy), so that no network accepted later
    /// may hold one. Refused, with the index of the first server found and the problem, when
    /// one lies inside an accepted subnet: every proxy using it would then be refused.
    pub fn reserve_dns_servers(&mut self, servers: &[IpAddr]) -> Result<(), Rejected<usize>> {
        for (index, server) in servers.iter().enumerate() {
            if let Some(subnet) = self.containing_subnet(*server) {
                return Err(Rejected {
                    part: index,
                    problem: format!(
                        "default DNS server {server} lies inside managed subnet {subnet}, which \
                         no proxy may reach; use a resolver outside the managed networks"
                    ),
                });
            }
        }
        for server in servers {
            self.dns_servers
                .entry(*server)
                .or_insert_with(|| "the proxy defaults".to_string());
        }
        Ok(())
    }

    /// The topology of every accepted item, in the order accepted.
    pub fn build(self) -> Topology {
        self.topology
    }

    /// Why subnet `index` of `network` (canonical) may not be managed beside the accepted
    /// subnets and the network's earlier ones, if it may not.
    fn subnet_conflict(&self, network: &ManagedNetwork, index: usize) -> Option<String> {
        let subnet = network.subnets[index];
        let before = self.subnets.range(..=subnet.network()).next_back();
        let after = self.subnets.range(subnet.network()..).next();
        let accepted = before
            .filter(|(_, (held, _))| held.contains(&subnet.network()))
            .or(after.filter(|(_, (held, _))| subnet.contains(&held.network())))
            .map(|(_, (held, owner))| (*held, self.topology.networks[*owner].name.as_str()));
        let own = || {
            network.subnets[..index]
                .iter()
                .find(|held| held.contains(&subnet.network()) || subnet.contains(&held.network()))
                .map(|held| (*held, network.name.as_str()))
        };
        let (held, owner) = accepted.or_else(own)?;
        Some(format!(
            "subnet {subnet} of network `{}` overlaps {held} of network `{owner}`: managed subnets \
             must not overlap, give each network its own range",
            network.name
        ))
    }

    /// The accepted subnet that holds `address`.
    fn containing_subnet(&self, address: IpAddr) -> Option<IpNet> {
        let (_, (subnet, _)) = self.subnets.range(..=address).next_back()?;
        subnet.contains(&address).then_some(*subnet)
    }

    fn accept_network(&mut self, network: ManagedNetwork) {
        let index = self.topology.networks.len();
        for subnet in &network.subnets {
            self.subnets.insert(subnet.network(), (*subnet, index));
        }
        self.network_names.insert(network.name.clone());
        if let Some(interface) = &network.interface {
            self.interfaces
                .insert(interface.clone(), network.name.clone());
        }
        self.topology.networks.push(network);
    }

    fn accept_proxy(&mut self, proxy: Proxy) {
        self.addresses.extend(proxy.addresses.iter().copied());
        for server in &proxy.dns_servers {
            self.dns_servers
                .entry(*server)
                .or_insert_with(|| format!("proxy `{}`", proxy.name));
        }
        self.proxy_names.insert(proxy.name.clone());
        self.topology.proxies.push(proxy);
    }

    fn accept_member(&mut self, member: Member) {
        self.addresses.extend(member.addresses.iter().copied());
        self.member_names.insert(member.name.clone());
        self.topology.members.push(member);
    }
}

/// Why `name` may not name one more `what` ("network" or "proxy") beside `taken`, if it may not.
fn name_problem(name: &str, what: &str, taken: &HashSet<String>) -> Option<String> {
    if !is_valid_name(name) {
        Some(format!(
            "{what} name `{name}` is not allowed: use 1 to {MAX_NAME_LEN} characters from A-Z \
             a-z 0-9 _ . -, starting with a letter or digit"
        ))
    } else if taken.contains(name) {
        Some(format!(
            "{what} name `{name}` is used twice: names must be unique"
        ))
    } else {
        None
    }
}

/// Whether `name` may name a network or proxy (Docker's own name rule, bounded in length).
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= MAX_NAME_LEN
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Whether `name` is an interface name the kernel accepts and nft reads back as written:
/// printable ASCII without spaces, `/` or `:` (the kernel's rule), without `*` (a wildcard),
/// `\` (nft's escape) or quotes (nft's string delimiters), and not `.` or `..`.
pub fn is_valid_interface(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_INTERFACE_LEN
        && name != "."
        && name != ".."
        && name.chars().all(|c| {
            // Letters beyond ASCII are fine in the kernel and in nft's quoted strings.
            let printable =
                c.is_ascii_graphic() || (!c.is_ascii() && !c.is_control() && !c.is_whitespace());
            printable && !matches!(c, '/' | ':' | '*' | '"' | '\'' | '\\')
        })
}

/// Ranges no managed subnet may overlap, with what they are: their addresses never travel
/// through a Docker bridge as a network's own, and rules on them would be wrong or void.
pub const SPECIAL_RANGES: &[(&str, &str)] = &[
    ("0.0.0.0/8", "\"this network\" range"),
    ("127.0.0.0/8", "loopback range"),
    ("169.254.0.0/16", "link-local range"),
    ("224.0.0.0/4", "multicast range"),
    ("255.255.255.255/32", "broadcast address"),
    ("::1/128", "loopback address"),
    (
        "::ffff:0:0/96",
        "IPv4-mapped range (an IPv4 address in IPv6 form, which escapes the checks against \
         IPv4 subnets)",
    ),
    ("fe80::/10", "link-local range"),
    ("ff00::/8", "multicast range"),
];

fn check_subnet(subnet: &IpNet) -> Result<(), String> {
    let min = match subnet {
        IpNet::V4(_) => MIN_PREFIX_V4,
        IpNet::V6(_) => MIN_PREFIX_V6,
    };
    if subnet.prefix_len() < min {
        return Err(format!(
            "subnet {subnet} is too large to be one network (shortest allowed prefix is /{min}); \
             list the real subnets instead"
        ));
    }
    if subnet.trunc() != *subnet {
        return Err(format!(
            "subnet {subnet} has host bits set: write it as {}",
            subnet.trunc()
        ));
    }
    for (range, what) in SPECIAL_RANGES {
        let range: IpNet = range.parse().expect("constant prefix");
        if range.contains(&subnet.network()) || subnet.contains(&range.network()) {
            return Err(format!(
                "subnet {subnet} overlaps the {what} {range}, which no managed network may use; \
                 give the network a private range (like 10.0.0.0/8 or fd00::/8)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    use crate::topology::tests::net;

    fn proxy(name: &str, addresses: &[&str], dns: &[&str]) -> Proxy {
        Proxy {
            name: name.into(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            services: BTreeSet::new(),
            dns_servers: dns.iter().map(|a| a.parse().unwrap()).collect(),
            macs: Vec::new(),
        }
    }

    #[test]
    fn the_item_offered_later_loses_whatever_the_order() {
        let wide = || net("wide", &["10.0.0.0/16"]);
        let narrow = || net("narrow", &["10.0.5.0/24"]);
        let mut builder = TopologyBuilder::default();
        builder.add_network(narrow()).unwrap();
        let rejected = builder.add_network(wide()).unwrap_err();
        assert_eq!(rejected.part, NetworkPart::Subnet(0));
        assert!(
            rejected.problem.contains(
                "subnet 10.0.0.0/16 of network `wide` overlaps 10.0.5.0/24 of network `narrow`"
            ),
            "{rejected}"
        );
        // A rejected item leaves no trace: its name stays free.
        builder.add_network(net("wide", &["10.1.0.0/16"])).unwrap();
        let topology = builder.build();
        let names: Vec<&str> = topology.networks.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["narrow", "wide"]);
    }

    #[test]
    fn a_network_may_not_overlap_itself() {
        let rejected = TopologyBuilder::default()
            .add_network(net("twice", &["fd00:1::/64", "10.0.0.0/24", "10.0.0.0/25"]))
            .unwrap_err();
        assert_eq!(rejected.part, NetworkPart::Subnet(2));
        assert!(rejected
            .problem
            .contains("overlaps 10.0.0.0/24 of network `twice`"));
    }

    #[test]
    fn a_network_offered_after_a_proxy_may_not_hold_its_resolver() {
        let mut builder = TopologyBuilder::default();
        builder
            .add_network(net("egress", &["10.2.0.0/24"]))
            .unwrap();
        builder
            .add_proxy(proxy("p", &["10.2.0.2"], &["10.9.0.53"]))
            .unwrap();
        let rejected = builder
            .add_network(net("resolvers", &["fd00:9::/64", "10.9.0.0/24"]))
            .unwrap_err();
        assert_eq!(rejected.part, NetworkPart::Subnet(1));
        assert!(
            rejected
                .problem
                .contains("holds DNS server 10.9.0.53 of proxy `p`"),
            "{rejected}"
        );
    }

    #[test]
    fn proxy_addresses_are_checked_one_by_one() {
        let mut builder = TopologyBuilder::from(Topology {
            networks: vec![net("egress", &["10.2.0.0/24"])],
            proxies: vec![proxy("first", &["10.2.0.2"], &[])],
            ..Topology::default()
        });
        let taken = builder
            .add_proxy(proxy("second", &["10.2.0.3", "10.2.0.2"], &[]))
            .unwrap_err();
        assert_eq!(taken.part, ProxyPart::Address(1));
        let repeated = builder
            .add_proxy(proxy("second", &["10.2.0.3", "10.2.0.3"], &[]))
            .unwrap_err();
        assert_eq!(repeated.part, ProxyPart::Address(1));
        let name = builder
            .add_proxy(proxy("first", &["10.2.0.4"], &[]))
            .unwrap_err();
        assert_eq!(name.part, ProxyPart::Name);
        builder
            .add_proxy(proxy("second", &["10.2.0.3"], &[]))
            .unwrap();
        assert_eq!(builder.build().proxies.len(), 2);
    }
}
