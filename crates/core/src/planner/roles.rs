//! Roles in the inet table: what each role's members may open.
//!
//! - `roles_v4` / `roles_v6` (verdict maps): a member's address (with its network's bridge,
//!   when every managed network names one: `iifname . ip saddr`) -> a jump to its role's chain
//!   of that family, looked up in `forward`. A role has a chain per family its members have.
//! - `role_<v4|v6>_<name>`: replies pass; then `flows_<v4|v6>_<name>`, the destinations
//!   (members of other roles, managed networks, prefixes) with their protocols and ports;
//!   then, for the internet, a managed destination returns and `out_<name>` (protocols and
//!   ports) is looked up. Each of these is a hash set of single flows, looked up in one step
//!   whatever it holds, with beside it, when the role allows ranges (of ports, prefixes, or
//!   `any` protocol), an interval set of them: `flowranges_<v4|v6>_<name>`,
//!   `outranges_<name>`. Whatever it does not accept returns to `forward`, where the
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

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::flows::{disjoint, FlowPoint, FlowRange};
use crate::names::{ChainName, SetName, Spread};
use crate::roles::Target;
use crate::ruleset::{
    Action, Chain, Direction, Family, MapKey, Match, Rule, Set, SetContent, SetKey, Verdict,
};
use crate::topology::{ManagedNetwork, Member, Topology};

use super::{address_dispatch, egress_chain_start, rule, Internet};

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
    /// The rules of `forward` that send members' packets to their role's chain: one lookup
    /// per family with members in its `roles_*` map.
    pub(super) dispatch: Vec<Rule>,
    /// The rules of `host_from_managed` that accept what roles allow toward the host.
    pub(super) host: Vec<Rule>,
    /// The families with an `ingress_*` map for `from_managed` and `to_managed` to look up.
    pub(super) ingress: Vec<Family>,
}

/// The bridge each managed subnet's packets enter from, when every managed network names one.
pub(super) struct Bridges(BTreeMap<(Family, u8), BTreeMap<IpAddr, String>>);

impl Bridges {
    /// The bridges of `networks`; none unless each of them names its bridge.
    pub(super) fn of(networks: &[&ManagedNetwork]) -> Option<Bridges> {
        let mut bridges: BTreeMap<(Family, u8), BTreeMap<IpAddr, String>> = BTreeMap::new();
        for network in networks {
            let interface = network.interface.as_ref()?;
            for subnet in &network.subnets {
                bridges
                    .entry((Family::of(subnet.addr()), subnet.prefix_len()))
                    .or_default()
                    .insert(subnet.network(), interface.clone());
            }
        }
        (!networks.is_empty()).then_some(Bridges(bridges))
    }

    /// The bridge of the managed subnet holding `address`.
    fn of_address(&self, address: IpAddr) -> Option<&str> {
        self.0.iter().find_map(|(&(family, len), subnets)| {
            let subnet = IpNet::new(address, len).ok()?.trunc();
            (Family::of(address) == family)
                .then(|| subnets.get(&subnet.network()))
                .flatten()
                .map(String::as_str)
        })
    }
}

/// The roles of `topology` that have members, planned against what is not the `internet`.
/// With `bridges`, a member's address counts only when its packets enter from its network's
/// bridge (`iifname . ip saddr vmap @roles_v4`): a forged one meets no role at all.
pub(super) fn plan_roles(
    topology: &Topology,
    internet: &Internet,
    bridges: Option<&Bridges>,
) -> RolePlan {
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
        for address in holders.iter().flat_map(|m| &m.addresses) {
            let family = Family::of(*address);
            let verdict = Verdict::Jump(ChainName::Role(family, name.to_string()));
            maps.entry(family).or_default().insert(*address, verdict);
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
        // The internet's services, shared by the role's chains of both families.
        let (out_sets, out_accepts) = flow_lookups(
            |spread| SetName::RoleServices(spread, name.to_string()),
            None,
            &out,
            &format!("role {name}: what it may open toward the internet"),
        );
        plan.sets.extend(out_sets);
        let families: BTreeSet<Family> = holders
            .iter()
            .flat_map(|m| &m.addresses)
            .map(|a| Family::of(*a))
            .collect();
        // One chain per family its members have: a packet meets only its own family's rules.
        for family in families {
            let mut rules = egress_chain_start("a role's egress");
            if let Some(flows) = flows.get(&family) {
                let (sets, accepts) = flow_lookups(
                    |spread| SetName::RoleFlows(family, spread, name.to_string()),
                    Some((family, Direction::Destination)),
                    flows,
                    &format!("role {name}: toward the roles, networks and prefixes it may reach"),
                );
                plan.sets.extend(sets);
                rules.extend(accepts);
            }
            if !out_accepts.is_empty() {
                let destination = Direction::Destination;
                rules.extend(internet.not_it_in(Some(family), destination, "the internet"));
                rules.extend(out_accepts.iter().cloned());
            }
            plan.chains.push(Chain {
                name: ChainName::Role(family, name.to_string()),
                hook: None,
                rules,
            });
        }
    }
    plan.dispatch = match bridges {
        Some(bridges) => bridged_dispatch(maps, bridges, &mut plan.sets),
        None => {
            let families = verdict_maps(maps, SetName::Roles, &mut plan.sets);
            address_dispatch(&families, Direction::Source, SetName::Roles, DISPATCH).collect()
        }
    };
    for (family, flows) in host {
        let (sets, accepts) = flow_lookups(
            |spread| SetName::HostFlows(family, spread),
            Some((family, Direction::Source)),
            &flows,
            "a role member may open what its role allows toward the host",
        );
        plan.sets.extend(sets);
        plan.host.extend(accepts);
    }
    plan.ingress = verdict_maps(ingress_maps, SetName::Ingress, &mut plan.sets);
    plan
}

const DISPATCH: &str = "a role member's packets visit its role's chain";

/// The `roles_*` maps of `maps` keyed by the bridge each address's packets enter from as well,
/// added to `sets`, and the rules that look them up. An address outside every bridged subnet
/// is left out: its packets meet no role.
fn bridged_dispatch(
    maps: BTreeMap<Family, BTreeMap<IpAddr, Verdict>>,
    bridges: &Bridges,
    sets: &mut Vec<Set>,
) -> Vec<Rule> {
    let mut rules = Vec::new();
    for (family, map) in maps {
        let keyed: BTreeMap<(String, IpAddr), Verdict> = map
            .into_iter()
            .filter_map(|(address, verdict)| {
                let bridge = bridges.of_address(address)?;
                Some(((bridge.to_string(), address), verdict))
            })
            .collect();
        sets.push(Set {
            name: SetName::Roles(family),
            key: SetKey::InterfaceAddress(family),
            content: SetContent::InterfaceAddressVerdictMap(keyed),
        });
        rules.push(Rule {
            matches: vec![],
            counter: false,
            action: Action::VerdictMap(
                MapKey::InputInterfaceAndSource(family),
                SetName::Roles(family),
            ),
            comment: format!("{DISPATCH}, entering from its network's bridge"),
        });
    }
    rules
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
        let (flow_sets, accepts) = flow_lookups(
            |spread| SetName::IngressFlows(family, spread, name.to_string()),
            Some((family, Direction::Source)),
            &flows,
            &format!("role {name}: from the roles, networks and prefixes that may reach it"),
        );
        sets.extend(flow_sets);
        rules.extend(accepts);
    }
    if !from_internet.is_empty() {
        rules.extend(internet.not_it(Direction::Source, "the internet"));
        let (flow_sets, accepts) = flow_lookups(
            |spread| SetName::IngressServices(spread, name.to_string()),
            None,
            &from_internet,
            &format!("role {name}: what the internet may open toward it"),
        );
        sets.extend(flow_sets);
        rules.extend(accepts);
    }
    let chain = Chain {
        name: ChainName::Ingress(name.to_string()),
        hook: None,
        rules,
    };
    (sets, chain)
}

/// The inclusive address ranges `target` (a destination, or an ingress source) names: a role's
/// members, the egress proxies, a managed network's subnets, a prefix. A network no managed network has the name
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
        Target::Proxies => topology
            .proxies()
            .iter()
            .flat_map(|p| p.addresses.iter().map(|a| (*a, *a)))
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

/// The sets named by `name` that hold `flows`, looked up with the address of `side` (none:
/// protocol and port alone), and a rule accepting each: the single flows in a hash set (one
/// lookup, whatever it holds), the ranges cut disjoint in an interval set; each only when it
/// has elements. A single flow inside a range is in both, which changes nothing.
fn flow_lookups(
    name: impl Fn(Spread) -> SetName,
    side: Option<(Family, Direction)>,
    flows: &[FlowRange],
    comment: &str,
) -> (Vec<Set>, Vec<Rule>) {
    let points: BTreeSet<FlowPoint> = flows.iter().filter_map(FlowRange::point).collect();
    let ranges: Vec<FlowRange> = flows
        .iter()
        .filter(|f| f.point().is_none())
        .copied()
        .collect();
    let key = SetKey::Flows(side.map(|(family, _)| family));
    let mut sets = Vec::new();
    if !points.is_empty() {
        sets.push(Set {
            name: name(Spread::Points),
            key,
            content: SetContent::FlowPoints(points),
        });
    }
    if !ranges.is_empty() {
        sets.push(Set {
            name: name(Spread::Ranges),
            key,
            content: SetContent::Flows(disjoint(&ranges)),
        });
    }
    let rules = sets
        .iter()
        .map(|set| {
            rule(
                vec![Match::FlowInSet(side, set.name.clone())],
                Verdict::Accept,
                comment,
            )
        })
        .collect();
    (sets, rules)
}
