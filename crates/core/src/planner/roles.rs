//! Roles in the inet table: what each role's members may open.
//!
//! - `roles_v4` / `roles_v6` (verdict maps): a member's address -> a jump to its role's chain,
//!   looked up in `forward` right after the proxies' map. A role with no member has no chain.
//! - `role_<name>`: replies pass; then one lookup per family in `flows_<v4|v6>_<name>`, the
//!   destinations (members of other roles, managed networks, prefixes) with their protocols
//!   and ports; then, for the internet, a managed destination returns and `out_<name>` (protocols
//!   and ports) is looked up. Whatever it does not accept returns to `forward`, where the
//!   managed source meets `from_managed`: same-network traffic where east-west is allowed, and
//!   a counted drop of the rest.
//! - `hostflows_<v4|v6>`: member address . protocol . port for each role allowed toward the
//!   host, looked up in `host_from_managed`.
//! - `ingress_v4` / `ingress_v6` (verdict maps): a member's address -> a jump to its role's
//!   `ingress_<name>` chain, for roles with ingress rules. `from_managed` looks the destination
//!   up there before its drops (a managed initiator's own role did not allow the flow, the
//!   destination's may), and `to_managed` does for connections from outside the managed
//!   networks. `ingress_<name>` accepts sources in `inflows_<v4|v6>_<name>` (source . protocol
//!   . port) and, from a source outside the managed networks, what `in_<name>` lists.
//!
//! Per packet: one map lookup, then a few set lookups (and, toward the internet, one per
//! managed prefix length), whatever the number of roles, members or rules.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::flows::{disjoint, FlowRange};
use crate::names::{ChainName, SetName};
use crate::roles::Target;
use crate::ruleset::{Chain, CtState, Direction, Family, Match, Set, SetContent, SetKey, Verdict};
use crate::topology::{ManagedNetwork, Member, Topology};

use super::{replies_rule, rule, Internet};

/// ICMP's protocol number, which only IPv4 flows carry, and ICMPv6's, only IPv6's.
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// What roles add to the inet table.
#[derive(Default)]
pub(super) struct RolePlan {
    /// Their sets and maps.
    pub(super) sets: Vec<Set>,
    /// Their chains.
    pub(super) chains: Vec<Chain>,
    /// The families with members: each has a `roles_*` map for `forward` to look up.
    pub(super) dispatch: Vec<Family>,
    /// The families with a `hostflows_*` set for `host_from_managed` to look up.
    pub(super) host: Vec<Family>,
    /// The families with an `ingress_*` map for `from_managed` and `to_managed` to look up.
    pub(super) ingress: Vec<Family>,
}

/// The roles of `topology` that have members, planned against what is not the `internet`.
pub(super) fn plan_roles(topology: &Topology, internet: &Internet) -> RolePlan {
    let mut members: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
    for member in topology.members() {
        if topology.roles().contains_key(&member.role) {
            members.entry(&member.role).or_default().push(member);
        }
    }
    let mut plan = RolePlan::default();
    let mut maps: BTreeMap<Family, BTreeMap<IpAddr, Verdict>> = BTreeMap::new();
    let mut host: BTreeMap<Family, Vec<FlowRange>> = BTreeMap::new();
    let mut ingress_maps: BTreeMap<Family, BTreeMap<IpAddr, Verdict>> = BTreeMap::new();
    for (&name, holders) in &members {
        let role = &topology.roles()[name];
        if !role.ingress.is_empty() {
            let chain = ChainName::Ingress(name.to_string());
            for address in holders.iter().flat_map(|m| &m.addresses) {
                ingress_maps
                    .entry(Family::of(*address))
                    .or_default()
                    .insert(*address, Verdict::Jump(chain.clone()));
            }
            let (sets, chain) = ingress_chain(topology, &members, name, internet);
            plan.sets.extend(sets);
            plan.chains.push(chain);
        }
        let chain = ChainName::Role(name.to_string());
        for address in holders.iter().flat_map(|m| &m.addresses) {
            let verdict = Verdict::Jump(chain.clone());
            maps.entry(Family::of(*address))
                .or_default()
                .insert(*address, verdict);
        }
        let mut flows: BTreeMap<Family, Vec<FlowRange>> = BTreeMap::new();
        let mut out: Vec<FlowRange> = Vec::new();
        for egress in &role.egress {
            let allowed: Vec<FlowRange> = egress.allow.iter().flat_map(|a| a.flows()).collect();
            match &egress.to {
                Target::Internet => out.extend(allowed),
                Target::Host => {
                    for address in holders.iter().flat_map(|m| &m.addresses) {
                        let to = host.entry(Family::of(*address)).or_default();
                        to.extend(addressed(&allowed, (*address, *address)));
                    }
                }
                target => {
                    for range in destinations(topology, &members, target) {
                        let family = Family::of(range.0);
                        flows
                            .entry(family)
                            .or_default()
                            .extend(addressed(&allowed, range));
                    }
                }
            }
        }
        let mut rules = vec![
            replies_rule(),
            rule(
                vec![Match::CtState(vec![CtState::Invalid])],
                Verdict::Return,
                "an invalid packet is never a role's egress",
            ),
        ];
        for (family, flows) in flows {
            let set = SetName::RoleFlows(family, name.to_string());
            plan.sets.push(flow_set(set.clone(), Some(family), &flows));
            rules.push(rule(
                vec![Match::FlowInSet(
                    Some((family, Direction::Destination)),
                    set,
                )],
                Verdict::Accept,
                format!("role {name}: toward the roles, networks and prefixes it may reach"),
            ));
        }
        if !out.is_empty() {
            rules.extend(internet.not_it(Direction::Destination, "the internet"));
            let set = SetName::RoleServices(name.to_string());
            plan.sets.push(flow_set(set.clone(), None, &out));
            rules.push(rule(
                vec![Match::FlowInSet(None, set)],
                Verdict::Accept,
                format!("role {name}: what it may open toward the internet"),
            ));
        }
        plan.chains.push(Chain {
            name: chain,
            hook: None,
            rules,
        });
    }
    plan.dispatch = verdict_maps(maps, SetName::Roles, &mut plan.sets);
    for (family, flows) in host {
        plan.host.push(family);
        plan.sets
            .push(flow_set(SetName::HostFlows(family), Some(family), &flows));
    }
    plan.ingress = verdict_maps(ingress_maps, SetName::Ingress, &mut plan.sets);
    plan
}

/// The verdict maps named by `name`, one per family of `maps`, added to `sets`; returns their
/// families.
fn verdict_maps(
    maps: BTreeMap<Family, BTreeMap<IpAddr, Verdict>>,
    name: fn(Family) -> SetName,
    sets: &mut Vec<Set>,
) -> Vec<Family> {
    let families = maps.keys().copied().collect();
    sets.extend(maps.into_iter().map(|(family, map)| Set {
        name: name(family),
        key: SetKey::Address(family),
        content: SetContent::VerdictMap(map),
    }));
    families
}

/// The sets and the `ingress_<name>` chain of role `name`, which has ingress rules.
fn ingress_chain(
    topology: &Topology,
    members: &BTreeMap<&str, Vec<&Member>>,
    name: &str,
    internet: &Internet,
) -> (Vec<Set>, Chain) {
    let mut flows: BTreeMap<Family, Vec<FlowRange>> = BTreeMap::new();
    let mut from_internet: Vec<FlowRange> = Vec::new();
    for rule in &topology.roles()[name].ingress {
        let allowed: Vec<FlowRange> = rule.allow.iter().flat_map(|a| a.flows()).collect();
        match &rule.from {
            Target::Internet => from_internet.extend(allowed),
            Target::Host => {} // refused by the policy: the host's own traffic is not filtered
            source => {
                for range in destinations(topology, members, source) {
                    let family = Family::of(range.0);
                    flows
                        .entry(family)
                        .or_default()
                        .extend(addressed(&allowed, range));
                }
            }
        }
    }
    let mut sets = Vec::new();
    let mut rules = Vec::new();
    for (family, flows) in flows {
        let set = SetName::IngressFlows(family, name.to_string());
        sets.push(flow_set(set.clone(), Some(family), &flows));
        rules.push(rule(
            vec![Match::FlowInSet(Some((family, Direction::Source)), set)],
            Verdict::Accept,
            format!("role {name}: from the roles, networks and prefixes that may reach it"),
        ));
    }
    if !from_internet.is_empty() {
        rules.extend(internet.not_it(Direction::Source, "the internet"));
        let set = SetName::IngressServices(name.to_string());
        sets.push(flow_set(set.clone(), None, &from_internet));
        rules.push(rule(
            vec![Match::FlowInSet(None, set)],
            Verdict::Accept,
            format!("role {name}: what the internet may open toward it"),
        ));
    }
    let chain = Chain {
        name: ChainName::Ingress(name.to_string()),
        hook: None,
        rules,
    };
    (sets, chain)
}

/// The inclusive address ranges `target` (a destination, or an ingress source) names: a role's
/// members, a managed network's subnets, a prefix. A network no managed network has the name
/// of names nothing.
fn destinations(
    topology: &Topology,
    members: &BTreeMap<&str, Vec<&Member>>,
    target: &Target,
) -> Vec<(IpAddr, IpAddr)> {
    let range = |net: &IpNet| (net.network(), net.broadcast());
    match target {
        Target::Role(role) => members
            .get(role.as_str())
            .into_iter()
            .flatten()
            .flat_map(|m| m.addresses.iter().map(|a| (*a, *a)))
            .collect(),
        Target::Network(name) => topology
            .networks()
            .iter()
            .filter(|n: &&ManagedNetwork| n.name == *name)
            .flat_map(|n| n.subnets.iter().map(range))
            .collect(),
        Target::Prefix(net) => vec![range(net)],
        Target::Internet | Target::Host => Vec::new(),
    }
}

/// `allowed` (flows without addresses) toward the addresses `range`, ICMP kept only in the
/// range's own family.
fn addressed(allowed: &[FlowRange], range: (IpAddr, IpAddr)) -> Vec<FlowRange> {
    let other_icmp = match Family::of(range.0) {
        Family::V4 => ICMPV6,
        Family::V6 => ICMP,
    };
    allowed
        .iter()
        .filter(|f| f.protocols != (other_icmp, other_icmp))
        .map(|f| FlowRange {
            addresses: Some(range),
            ..*f
        })
        .collect()
}

/// An interval set of `flows`, cut into disjoint elements.
fn flow_set(name: SetName, family: Option<Family>, flows: &[FlowRange]) -> Set {
    Set {
        name,
        key: SetKey::Flows(family),
        content: SetContent::Flows(disjoint(flows)),
    }
}
