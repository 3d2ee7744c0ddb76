//! Which entry of the policy decides a packet's fate: the evaluator ([`crate::evaluate`]) names
//! the rule and its chain; the chain says what kind of entry the rule carries out, and the
//! topology which one (the managed network holding an address, the role rule whose target and
//! allowance cover the flow). `enforcer explain` prints it with its line in the policy file.

use std::fmt;
use std::net::IpAddr;

use crate::evaluate::{Decision, Fate, Packet};
use crate::names::ChainName;
use crate::policy::{Entries, Location};
use crate::roles::{Allowance, Target};
use crate::ruleset::Hook;
use crate::topology::{EastWest, ManagedNetwork, Service, Topology};

/// The policy entry behind a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// No rule of enforcer's decided: the packet neither comes from nor goes to a managed
    /// network (the base chain's policy accepts it).
    Unmanaged,
    /// The host's own traffic: the output hook drops only what leaves through a quarantined
    /// interface.
    HostTraffic,
    /// A managed network's rules, for its traffic: `part` says which.
    Network {
        /// The network.
        name: String,
        /// Which of its rules.
        part: NetworkPart,
    },
    /// A proxy's allowance of a service toward non-managed destinations.
    Proxy {
        /// The proxy.
        name: String,
        /// The service.
        service: Service,
    },
    /// A role's egress rule.
    Egress {
        /// The role.
        role: String,
        /// The rule's index in the role's `egress` (from 0).
        index: usize,
    },
    /// A role's ingress rule.
    Ingress {
        /// The role.
        role: String,
        /// The rule's index in the role's `ingress` (from 0).
        index: usize,
    },
    /// A rule of the table's own structure (a forged source, a bridge not classified yet, a
    /// quarantined interface): the rule's comment says why; no one entry is behind it.
    Structure,
}

/// Which of a managed network's rules decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkPart {
    /// Its traffic stays inside it (east-west allowed).
    Inside,
    /// Its containers reach each other only as their roles allow (east-west denied).
    EastWest,
    /// What no rule allows leaves it dropped.
    Egress,
    /// It must not reach the host's services.
    Host,
    /// New connections toward it from outside are dropped.
    Inbound,
}

/// The entry behind `decision`, the fate of `packet` at `hook` in a table planned from
/// `topology`.
pub fn entry(
    topology: &Topology,
    hook: Hook,
    decision: &Decision<'_>,
    packet: &Packet<'_>,
) -> Entry {
    let Some(chain) = decision.chain else {
        return match (decision.fate, hook) {
            (Fate::Passed, Hook::Output) => Entry::HostTraffic,
            (Fate::Passed, _) => Entry::Unmanaged,
            (Fate::Dropped, _) => Entry::Structure,
        };
    };
    let network = |address: IpAddr, part| {
        network_of(topology, address).map_or(Entry::Structure, |n| Entry::Network {
            name: n.name.clone(),
            part,
        })
    };
    let service = Service {
        protocol: packet.protocol,
        port: packet.dport,
    };
    match (chain, decision.fate) {
        (ChainName::Proxy(name), Fate::Passed) => Entry::Proxy {
            name: name.clone(),
            service,
        },
        (ChainName::Role(_, role), Fate::Passed) => egress(topology, role, packet, false),
        (ChainName::HostFromManaged, Fate::Passed) => {
            let member = topology
                .members()
                .iter()
                .find(|m| m.addresses.contains(&packet.src));
            member.map_or(Entry::Structure, |m| {
                egress(topology, &m.role, packet, true)
            })
        }
        (ChainName::Ingress(role), Fate::Passed) => {
            let rules = topology
                .roles()
                .get(role)
                .map_or(&[][..], |r| &r.ingress[..]);
            let from = rules.iter().map(|r| (&r.from, &r.allow[..]));
            covering(topology, from, (packet.src, false), packet).map_or(
                Entry::Structure,
                |index| Entry::Ingress {
                    role: role.clone(),
                    index,
                },
            )
        }
        (ChainName::FromManaged, Fate::Passed) => network(packet.src, NetworkPart::Inside),
        (ChainName::FromManaged, Fate::Dropped) => {
            let inside = network_of(topology, packet.src).filter(|n| {
                n.east_west == EastWest::Deny && n.subnets.iter().any(|s| s.contains(&packet.dst))
            });
            match inside {
                Some(_) => network(packet.src, NetworkPart::EastWest),
                None => network(packet.src, NetworkPart::Egress),
            }
        }
        (ChainName::HostFromManaged, Fate::Dropped) => network(packet.src, NetworkPart::Host),
        (ChainName::ToManaged, Fate::Dropped) => network(packet.dst, NetworkPart::Inbound),
        _ => Entry::Structure,
    }
}

/// The managed network whose subnets hold `address`.
fn network_of(topology: &Topology, address: IpAddr) -> Option<&ManagedNetwork> {
    topology
        .networks()
        .iter()
        .find(|n| n.subnets.iter().any(|s| s.contains(&address)))
}

/// The entry of the first of `role`'s egress rules whose target holds the packet's destination
/// (the host, when `to_host`) and whose allowance covers its protocol and port.
fn egress(topology: &Topology, role: &str, packet: &Packet<'_>, to_host: bool) -> Entry {
    let rules = topology
        .roles()
        .get(role)
        .map_or(&[][..], |r| &r.egress[..]);
    let to = rules.iter().map(|r| (&r.to, &r.allow[..]));
    covering(topology, to, (packet.dst, to_host), packet).map_or(Entry::Structure, |index| {
        Entry::Egress {
            role: role.to_string(),
            index,
        }
    })
}

/// The index of the first of `rules` (target, allowance) whose target holds `peer` (with its
/// `to_host`, as [`holds`] takes it) and whose allowance covers the packet.
fn covering<'a>(
    topology: &Topology,
    mut rules: impl Iterator<Item = (&'a Target, &'a [Allowance])>,
    (peer, to_host): (IpAddr, bool),
    packet: &Packet<'_>,
) -> Option<usize> {
    rules
        .position(|(target, allow)| holds(topology, target, peer, to_host) && covers(allow, packet))
}

/// Whether one of `allow` covers the packet's protocol and destination port.
fn covers(allow: &[Allowance], packet: &Packet<'_>) -> bool {
    let (protocol, port) = (packet.protocol.number(), packet.dport);
    allow.iter().flat_map(|a| a.flows()).any(|flow| {
        (flow.protocols.0..=flow.protocols.1).contains(&protocol)
            && (flow.ports.0..=flow.ports.1).contains(&port)
    })
}

/// Whether `target` names `address`; `host` names the host's addresses, which a packet bound
/// for the host (`to_host`) goes to, and no other target does then.
fn holds(topology: &Topology, target: &Target, address: IpAddr, to_host: bool) -> bool {
    match target {
        Target::Host => to_host,
        _ if to_host => false,
        Target::Internet => {
            network_of(topology, address).is_none() && !topology.elsewhere().contains_key(&address)
        }
        Target::Role(role) => topology
            .members()
            .iter()
            .any(|m| &m.role == role && m.addresses.contains(&address)),
        Target::Proxies => topology
            .proxies()
            .iter()
            .any(|p| p.addresses.contains(&address)),
        Target::Network(name) => topology
            .networks()
            .iter()
            .any(|n| &n.name == name && n.subnets.iter().any(|s| s.contains(&address))),
        Target::Prefix(net) => net.contains(&address),
    }
}

impl Entry {
    /// Where the policy file writes it (`None`: not written there, as for what Docker
    /// declares, a built-in default, or the table's structure).
    pub fn location(&self, entries: &Entries) -> Option<Location> {
        match self {
            Entry::Network { name, .. } => entries.network(name),
            Entry::Proxy { name, .. } => entries
                .proxy(name)
                .filter(|(_, own)| *own)
                .map(|(at, _)| at)
                .or_else(|| entries.proxy_defaults())
                .or_else(|| entries.proxy(name).map(|(at, _)| at)),
            Entry::Egress { role, index } => entries.egress(role, *index),
            Entry::Ingress { role, index } => entries.ingress(role, *index),
            Entry::Unmanaged | Entry::HostTraffic | Entry::Structure => None,
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Unmanaged => f.write_str("no managed network is involved: enforcer lets it be"),
            Entry::HostTraffic => f.write_str(
                "the host's own traffic: enforcer drops only what leaves through a quarantined \
                 interface",
            ),
            Entry::Network { name, part } => {
                let what = match part {
                    NetworkPart::Inside => "its traffic may stay inside it",
                    NetworkPart::EastWest => {
                        "east-west is denied: its containers reach each other only as their roles \
                         allow"
                    }
                    NetworkPart::Egress => "what no rule allows does not leave it",
                    NetworkPart::Host => "it must not reach the host's services",
                    NetworkPart::Inbound => "no new connection reaches it from outside",
                };
                write!(f, "network {name} is managed: {what}")
            }
            Entry::Proxy { name, service } => write!(f, "proxy {name} may open {service}"),
            Entry::Egress { role, index } => {
                write!(f, "role {role}, egress rule {}", index + 1)
            }
            Entry::Ingress { role, index } => {
                write!(f, "role {role}, ingress rule {}", index + 1)
            }
            Entry::Structure => f.write_str("the table's own structure (see the rule)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::{classify, DockerState};
    use crate::evaluate::decide;
    use crate::planner::plan_tables;
    use crate::policy::Policy;
    use crate::topology::Protocol;

    const POLICY: &str = r#"
[docker]
enabled = false

[[networks]]
name = "agents"
subnets = ["10.50.0.0/24"]
interface = "br-agents"

[roles.agent]
egress = [
  { to = "role:dns", allow = ["udp/53"] },
  { to = "internet", allow = ["tcp/443"] },
]

[roles.dns]
egress = [{ to = "internet", allow = ["udp/53"] }]

[[members]]
name = "agent"
role = "agent"
addresses = ["10.50.0.5"]

[[members]]
name = "dns"
role = "dns"
addresses = ["10.50.0.53"]
"#;

    /// The entry behind a new connection from `src` to `dst` (forward hook), with its line.
    fn explained(
        src: &str,
        dst: &str,
        protocol: Protocol,
        dport: u16,
    ) -> (Fate, Entry, Option<usize>) {
        let policy = Policy::parse(POLICY, "p.toml").unwrap();
        let docker = DockerState::default();
        let classified = classify(&policy, &docker);
        let (tables, _, _) = plan_tables(&policy, &classified, &docker, &[], &[]);
        let src: std::net::IpAddr = src.parse().unwrap();
        let from_agents = "10.50.0.0/24"
            .parse::<ipnet::IpNet>()
            .unwrap()
            .contains(&src);
        let packet = Packet {
            src,
            dst: dst.parse().unwrap(),
            protocol,
            dport,
            state: None,
            interface: if from_agents { "br-agents" } else { "eth0" },
            out_interface: "",
        };
        let decision = decide(&tables.inet, Hook::Forward, &packet);
        let found = entry(&classified.topology, Hook::Forward, &decision, &packet);
        let line = found.location(&policy.entries).map(|at| at.line);
        (decision.fate, found, line)
    }

    #[test]
    fn a_role_allowance_names_the_rule_that_covers_it_and_its_line() {
        let (fate, found, line) = explained("10.50.0.5", "203.0.113.10", Protocol::Tcp, 443);
        assert_eq!(fate, Fate::Passed);
        assert_eq!(
            found,
            Entry::Egress {
                role: "agent".into(),
                index: 1
            }
        );
        assert_eq!(line, Some(13), "the line of its `to`");
        let (fate, found, line) = explained("10.50.0.5", "10.50.0.53", Protocol::Udp, 53);
        assert_eq!((fate, line), (Fate::Passed, Some(12)));
        assert_eq!(found.to_string(), "role agent, egress rule 1");
    }

    #[test]
    fn a_drop_names_the_managed_network_of_its_source_or_destination() {
        let (fate, found, line) = explained("10.50.0.5", "203.0.113.10", Protocol::Tcp, 80);
        assert_eq!(fate, Fate::Dropped);
        assert_eq!(
            found,
            Entry::Network {
                name: "agents".into(),
                part: NetworkPart::Egress
            }
        );
        assert_eq!(line, Some(6), "the line of the network's name");
        let (fate, found, _) = explained("203.0.113.10", "10.50.0.5", Protocol::Tcp, 22);
        assert_eq!(fate, Fate::Dropped);
        assert_eq!(
            found,
            Entry::Network {
                name: "agents".into(),
                part: NetworkPart::Inbound
            }
        );
    }

    #[test]
    fn traffic_of_no_managed_network_is_left_to_the_base_chain() {
        let (fate, found, line) = explained("192.0.2.5", "203.0.113.10", Protocol::Tcp, 80);
        assert_eq!((fate, found, line), (Fate::Passed, Entry::Unmanaged, None));
    }
}
