//! (table settings, topology) -> the desired [`Ruleset`].
//!
//! Shape of the table (the README explains each rule):
//! - `forward` only sorts packets, so that traffic the table does not govern pays for as few
//!   lookups as possible: a proxy's packets visit its chain (`proxy_<name>`), which accepts
//!   replies and only its allowed services toward destinations outside every managed subnet;
//!   packets from a managed subnet or a managed network's bridge go to `from_managed`; packets
//!   from a bridge no classified network owns, or from the bridge of a managed network that was
//!   skipped (`skipped_interfaces`, only when there is one), go to `from_unknown_bridge`.
//!   Everything else passes untouched.
//! - `from_managed`: replies pass; traffic whose source and destination lie in the same network
//!   passes (one lookup of the pair of prefixes per pair of prefix lengths); link-local
//!   multicast passes; any other packet is dropped, counted per subnet in the `egress_*` sets
//!   (each element names its network), or, from a forged source, by the chain's last rule.
//! - `input`: replies and neighbour discovery pass; a managed subnet opening a connection to the
//!   host goes to `host_from_managed`, where only proxies' allowed services pass; anything else
//!   from an unclassified or skipped bridge is dropped.
//!
//! - With `quarantine` patterns, every base chain of every table starts with one rule per
//!   pattern that sends a quarantined interface's packets to be recorded and dropped
//!   ([`quarantine`]).
//!
//! Each step is a set lookup, so the per-packet cost does not grow with the number of subnets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

mod audit;
mod ports;
mod quarantine;
mod roles;

pub use audit::{log_prefix, logged_reason, AuditSettings};
pub use ports::plan_ports;
pub use quarantine::RECORDED_INTERFACES;

use crate::binding::{guard_ports, guard_static_ports, guards_static_ports, BoundPort, PortGuard};
use crate::docker::{Classified, DockerState, Skipped};
use crate::policy::Policy;
use crate::ports::BridgePort;

use crate::names::{ChainName, SetName};
use crate::nft_syntax;
use crate::ruleset::{
    Action, AddressKey, Chain, CtState, Direction, DropReason, Family, Hook, MapKey, Match, Rule,
    Ruleset, Set, SetContent, SetKey, TableFamily, Tables, Verdict,
};
use crate::topology::{EastWest, ManagedNetwork, Proxy, Topology};

/// Where the table lives and where its base chains hook in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSettings {
    /// Name of the `inet` table.
    pub name: String,
    /// Priority of the `forward` base chain (Docker's filter chains sit at 0).
    pub forward_priority: i32,
    /// Priority of the `input` base chain.
    pub input_priority: i32,
    /// Priority of the `output` base chain (there only when an interface is quarantined).
    pub output_priority: i32,
    /// Interfaces (a trailing `*` matches any suffix) that have no network at all: every
    /// packet and frame in or out of them is dropped, in every table, counted per interface.
    pub quarantine: Vec<String>,
    /// Input interfaces (a trailing `*` matches any suffix) whose traffic is dropped unless the
    /// interface belongs to a classified network: Docker bridges the agent has not seen yet.
    /// Empty: no such rule.
    pub unknown_interface_patterns: Vec<String>,
    /// Priority of the bridge table's `prerouting` base chain: before every other bridge
    /// table's (ebtables' nat at -300, filter at -200).
    pub bridge_priority: i32,
    /// Bridge ports (a trailing `*` matches any suffix) that send nothing until the agent has
    /// sorted them: the host side of a container's veth that appeared a moment ago.
    pub unknown_port_patterns: Vec<String>,
    /// How every table's drops reach the agent's drop audit.
    pub audit: AuditSettings,
}

impl Default for TableSettings {
    fn default() -> Self {
        TableSettings {
            name: "enforcer".into(),
            forward_priority: -10,
            input_priority: -10,
            output_priority: -10,
            quarantine: Vec::new(),
            unknown_interface_patterns: Vec::new(),
            bridge_priority: -400,
            unknown_port_patterns: vec!["veth*".into()],
            audit: AuditSettings::default(),
        }
    }
}

/// The topology's addresses grouped the way the table looks them up: one group per family and
/// prefix length (or pair of them), each a set.
#[derive(Default)]
struct Lookups {
    /// (family, prefix length) -> subnet network address -> owning network's name.
    by_prefix: BTreeMap<(Family, u8), BTreeMap<IpAddr, String>>,
    /// (family, source length, destination length) -> pairs of subnets of one network.
    pairs: BTreeMap<(Family, u8, u8), BTreeSet<(IpAddr, IpAddr)>>,
    /// Family -> proxy address -> the jump to its proxy's chain.
    proxy_maps: BTreeMap<Family, BTreeMap<IpAddr, Verdict>>,
}

impl Lookups {
    fn of(networks: &[&ManagedNetwork], proxies: &[&Proxy]) -> Lookups {
        let mut lookups = Lookups::default();
        for network in networks {
            for subnet in &network.subnets {
                let family = Family::of(subnet.addr());
                lookups
                    .by_prefix
                    .entry((family, subnet.prefix_len()))
                    .or_default()
                    .insert(subnet.network(), network.name.clone());
                // East-west denied: no pair, so only what roles allow crosses the network.
                let peers = match network.east_west {
                    EastWest::Allow => network.subnets.as_slice(),
                    EastWest::Deny => &[],
                };
                for other in peers.iter().filter(|o| Family::of(o.addr()) == family) {
                    lookups
                        .pairs
                        .entry((family, subnet.prefix_len(), other.prefix_len()))
                        .or_default()
                        .insert((subnet.network(), other.network()));
                }
            }
        }
        for proxy in proxies {
            for address in &proxy.addresses {
                lookups
                    .proxy_maps
                    .entry(Family::of(*address))
                    .or_default()
                    .insert(
                        *address,
                        Verdict::Jump(ChainName::Proxy(proxy.name.clone())),
                    );
            }
        }
        lookups
    }

    /// The address sets and proxy maps, in the order the table lists them.
    fn sets(&self) -> Vec<Set> {
        let mut sets = Vec::new();
        for (&(family, prefix_len), members) in &self.by_prefix {
            sets.push(Set {
                name: SetName::Managed(family, prefix_len),
                key: SetKey::Address(family),
                content: SetContent::Addresses(members.keys().copied().collect()),
            });
            sets.push(Set {
                name: SetName::Egress(family, prefix_len),
                key: SetKey::Address(family),
                content: SetContent::Counted(members.clone()),
            });
        }
        for (&(family, source, destination), members) in &self.pairs {
            sets.push(Set {
                name: SetName::Intra(family, source, destination),
                key: SetKey::Address(family),
                content: SetContent::AddressPairs(members.clone()),
            });
        }
        for (&family, members) in &self.proxy_maps {
            sets.push(Set {
                name: SetName::Proxies(family),
                key: SetKey::Address(family),
                content: SetContent::VerdictMap(members.clone()),
            });
        }
        sets
    }
}

/// The interface-name sets: the managed networks' bridges, when unknown bridges are guarded
/// every classified network's, and the skipped networks' bridges when there are any.
fn interface_sets(
    settings: &TableSettings,
    topology: &Topology,
    networks: &[&ManagedNetwork],
) -> Vec<Set> {
    let managed: BTreeSet<String> = networks
        .iter()
        .filter_map(|n| n.interface.clone())
        .collect();
    let mut sets = Vec::new();
    if !settings.unknown_interface_patterns.is_empty() {
        let mut known = managed.clone();
        known.extend(topology.unmanaged_interfaces().iter().cloned());
        sets.push(Set {
            name: SetName::KnownInterfaces,
            key: SetKey::InterfaceName,
            content: SetContent::InterfaceNames(known),
        });
    }
    sets.push(Set {
        name: SetName::ManagedInterfaces,
        key: SetKey::InterfaceName,
        content: SetContent::InterfaceNames(managed),
    });
    if !topology.shared_interfaces().is_empty() {
        sets.push(Set {
            name: SetName::SharedInterfaces,
            key: SetKey::InterfaceName,
            content: SetContent::InterfaceNames(topology.shared_interfaces().clone()),
        });
    }
    if !topology.skipped_interfaces().is_empty() {
        sets.push(Set {
            name: SetName::SkippedInterfaces,
            key: SetKey::InterfaceName,
            content: SetContent::InterfaceNames(topology.skipped_interfaces().clone()),
        });
    }
    sets
}

/// Every table enforcer owns, for `classified` (what [`crate::docker::classify_after`] made
/// of `docker` under `policy`) and the bridge ports the link edge found. When the policy
/// neither follows Docker nor declares a static proxy's MACs, no port is guarded and there is
/// no bridge table. Ports
/// `previous` bound keep their binding against newcomers claiming the same MAC. The second
/// value is what binding ports skipped (each also leaves its port unbound).
pub fn plan_tables(
    policy: &Policy,
    classified: &Classified,
    docker: &DockerState,
    ports: &[BridgePort],
    previous: &[BoundPort],
) -> (Tables, PortGuard, Vec<Skipped>) {
    let inet = plan(&policy.table, &classified.topology);
    let arp = quarantine::arp_table(&policy.table);
    let static_guard = guards_static_ports(&policy.static_topology);
    if !policy.docker.enabled && !static_guard {
        let bridge = quarantine::guard_bridge(&policy.table, None);
        let tables = Tables { inet, bridge, arp };
        return (tables, PortGuard::default(), Vec::new());
    }
    let (mut guard, mut skipped) = if policy.docker.enabled {
        let patterns = &policy.table.unknown_interface_patterns;
        guard_ports(classified, docker, patterns, ports, previous)
    } else {
        let open = ports.iter().map(|p| p.name.clone()).collect();
        let guard = PortGuard {
            open,
            ..PortGuard::default()
        };
        (guard, Vec::new())
    };
    guard_static_ports(
        &policy.static_topology,
        ports,
        previous,
        &mut guard,
        &mut skipped,
    );
    skipped.sort();
    let bridge = plan_ports(&policy.table, &guard);
    let tables = Tables {
        inet,
        bridge: quarantine::guard_bridge(&policy.table, Some(bridge)),
        arp,
    };
    (tables, guard, skipped)
}

/// Computes the whole desired inet table. Deterministic: the order of networks, subnets and proxies in
/// `topology` does not change the result.
pub fn plan(settings: &TableSettings, topology: &Topology) -> Ruleset {
    let mut networks: Vec<&ManagedNetwork> = topology.networks().iter().collect();
    networks.sort_by(|a, b| a.name.cmp(&b.name));
    let mut proxies: Vec<&Proxy> = topology.proxies().iter().collect();
    proxies.sort_by(|a, b| a.name.cmp(&b.name));

    let lookups = Lookups::of(&networks, &proxies);
    let mut sets = lookups.sets();
    sets.extend(interface_sets(settings, topology, &networks));

    let prefixes: Vec<(Family, u8)> = lookups.by_prefix.keys().copied().collect();
    let pair_lengths: Vec<(Family, u8, u8)> = lookups.pairs.keys().copied().collect();
    let proxy_families: Vec<Family> = lookups.proxy_maps.keys().copied().collect();
    let skipped = !topology.skipped_interfaces().is_empty();
    let elsewhere = counted_sets(topology.elsewhere(), SetName::Elsewhere);
    let elsewhere_families: Vec<Family> = elsewhere.iter().map(|s| s.0).collect();
    let internet = Internet {
        prefixes: &prefixes,
        elsewhere: &elsewhere_families,
    };
    let bridges = roles::Bridges::of(&networks);
    let roles = roles::plan_roles(topology, &internet, bridges.as_ref());
    sets.extend(roles.sets);
    let containers = counted_sets(topology.containers(), SetName::Containers);
    let counted: Vec<Family> = containers.iter().map(|s| s.0).collect();
    sets.extend(containers.into_iter().map(|s| s.1));
    let dispatch = Dispatch {
        proxies: &proxy_families,
        roles: &roles.dispatch,
        elsewhere: &elsewhere_families,
        bridged: bridges.is_some(),
        shared: !topology.shared_interfaces().is_empty(),
    };
    sets.extend(elsewhere.iter().map(|s| s.1.clone()));
    let mut chains = vec![
        forward_chain(settings, &prefixes, &dispatch, skipped),
        input_chain(settings, &prefixes, &dispatch, skipped),
        from_managed_chain(&prefixes, &pair_lengths, &roles.ingress, &counted),
        host_chain(&proxy_families, &roles.host),
    ];
    if !prefixes.is_empty() || !dispatch.elsewhere.is_empty() {
        chains.push(to_managed_chain(&roles.ingress));
    }
    if !dispatch.elsewhere.is_empty() {
        chains.push(from_elsewhere_chain(dispatch.elsewhere));
    }
    if !settings.unknown_interface_patterns.is_empty() || skipped {
        chains.push(unknown_bridge_chain());
    }
    chains.extend(proxies.iter().map(|p| proxy_rules(p, &internet)));
    chains.extend(roles.chains);

    let mut inet = Ruleset {
        family: TableFamily::Inet,
        table: settings.name.clone(),
        sets,
        chains,
    };
    quarantine::guard_inet(settings, &mut inet);
    audit::attach(&settings.audit, &mut inet);
    let toward_managed = prefixes
        .iter()
        .map(|&(family, len)| {
            let destination = key(family, Direction::Destination, len);
            Match::InSet(destination, SetName::Managed(family, len))
        })
        .chain(elsewhere_families.iter().map(|&family| {
            let destination = key(family, Direction::Destination, family.bits());
            Match::InSet(destination, SetName::Elsewhere(family))
        }))
        .collect();
    audit::split_east_west(&settings.audit, &mut inet, toward_managed);
    inet
}

/// A rule with a verdict; its comment cut to what `nft` reads back (it may name a proxy).
pub(crate) fn rule(matches: Vec<Match>, verdict: Verdict, comment: impl AsRef<str>) -> Rule {
    Rule {
        matches,
        counter: false,
        action: Action::Verdict(verdict),
        comment: nft_syntax::comment(comment.as_ref()),
    }
}

fn key(family: Family, direction: Direction, prefix_len: u8) -> AddressKey {
    AddressKey {
        family,
        direction,
        prefix_len,
    }
}

/// One rule per (family, prefix length): the masked source or destination is in the set that
/// `set` names for it, then `verdict`.
fn per_prefix<'a>(
    prefixes: &'a [(Family, u8)],
    direction: Direction,
    set: fn(Family, u8) -> SetName,
    verdict: Verdict,
    comment: impl Fn(u8) -> String + 'a,
) -> impl Iterator<Item = Rule> + 'a {
    prefixes.iter().map(move |&(family, len)| {
        rule(
            vec![Match::InSet(key(family, direction, len), set(family, len))],
            verdict.clone(),
            comment(len),
        )
    })
}

/// Per pattern: traffic entering from a matching interface that no classified network owns
/// meets `verdict` (counted when it drops).
fn unknown_interface_rules(
    settings: &TableSettings,
    verdict: Verdict,
) -> impl Iterator<Item = Rule> + '_ {
    settings
        .unknown_interface_patterns
        .iter()
        .map(move |pattern| Rule {
            matches: vec![
                Match::InputInterface(pattern.clone()),
                Match::InputInterfaceInSet {
                    set: SetName::KnownInterfaces,
                    negated: true,
                },
            ],
            counter: matches!(verdict, Verdict::Deny(_)),
            action: Action::Verdict(verdict.clone()),
            comment: "a Docker bridge enforcer has not classified yet: denied until it has".into(),
        })
}

/// Traffic entering from the bridge of a managed network that was skipped meets `verdict`
/// (counted when it drops). Placed after the managed networks' rules, which give every packet
/// from their own bridges a final verdict, so an enforced network's bridge stays enforced.
fn skipped_interface_rule(verdict: Verdict) -> Rule {
    Rule {
        matches: vec![Match::InputInterfaceInSet {
            set: SetName::SkippedInterfaces,
            negated: false,
        }],
        counter: matches!(verdict, Verdict::Deny(_)),
        action: Action::Verdict(verdict),
        comment: "the bridge of a managed network enforcer skipped (see its log): denied".into(),
    }
}

/// Anything else entering from a managed network's bridge meets `verdict`; a bridge that
/// unmanaged containers share (`shared`, when there is one) is left to the source address.
fn from_managed_interface(verdict: Verdict, shared: bool, comment: &str) -> Rule {
    let mut matches = vec![Match::InputInterfaceInSet {
        set: SetName::ManagedInterfaces,
        negated: false,
    }];
    if shared {
        matches.push(Match::InputInterfaceInSet {
            set: SetName::SharedInterfaces,
            negated: true,
        });
    }
    Rule {
        matches,
        counter: false,
        action: Action::Verdict(verdict),
        comment: comment.into(),
    }
}

fn replies_rule() -> Rule {
    rule(
        vec![Match::CtState(vec![CtState::Established, CtState::Related])],
        Verdict::Accept,
        "replies and related ICMP of flows this table let through",
    )
}

/// The first rules of an egress chain (a proxy's, a role's): replies pass, and an invalid
/// packet returns, never `what` (its comment: "proxy egress", "a role's egress").
pub(super) fn egress_chain_start(what: &str) -> Vec<Rule> {
    vec![
        replies_rule(),
        rule(
            vec![Match::CtState(vec![CtState::Invalid])],
            Verdict::Return,
            format!("an invalid packet is never {what}"),
        ),
    ]
}

/// Per family, one verdict-map lookup of the packet's `direction` address in the map `map`
/// names: its element's chain is visited, and the packet comes back unless accepted there.
pub(super) fn address_dispatch<'a>(
    families: &'a [Family],
    direction: Direction,
    map: fn(Family) -> SetName,
    comment: &'static str,
) -> impl Iterator<Item = Rule> + 'a {
    families.iter().map(move |&family| Rule {
        matches: vec![],
        counter: false,
        action: Action::VerdictMap(
            MapKey::Address(key(family, direction, family.bits())),
            map(family),
        ),
        comment: comment.into(),
    })
}

/// Each proxy address visits its proxy's chain.
fn proxy_dispatch(families: &[Family]) -> impl Iterator<Item = Rule> + '_ {
    let comment = "a proxy's packets visit its chain of allowed services";
    address_dispatch(families, Direction::Source, SetName::Proxies, comment)
}

/// The families of the address maps and sets `forward` sorts sources by.
struct Dispatch<'a> {
    /// `proxies_*` maps.
    proxies: &'a [Family],
    /// The lookups of the `roles_*` maps.
    roles: &'a [Rule],
    /// `elsewhere_*` sets.
    elsewhere: &'a [Family],
    /// Whether every managed network names its bridge: then a managed source entering from
    /// any other interface is forged, and dropped before any allowance is looked up.
    bridged: bool,
    /// Whether unmanaged containers share a managed network's bridge (`shared_interfaces`).
    shared: bool,
}

/// Per managed prefix: a source in it entering from an interface that is not a managed
/// network's bridge is forged (the bridge table binds ports only on bridges), dropped and
/// counted before any allowance keyed by the address alone (proxies, the host's) can see it.
/// Roles come before it in `forward`: their map is keyed by the bridge as well.
fn forged_managed_sources(prefixes: &[(Family, u8)]) -> impl Iterator<Item = Rule> + '_ {
    prefixes.iter().map(|&(family, len)| Rule {
        matches: vec![
            Match::InSet(
                key(family, Direction::Source, len),
                SetName::Managed(family, len),
            ),
            Match::InputInterfaceInSet {
                set: SetName::ManagedInterfaces,
                negated: true,
            },
        ],
        counter: true,
        action: Action::Verdict(Verdict::Deny(DropReason::Spoofing)),
        comment: format!(
            "a managed /{len} source from outside the managed networks' bridges: forged"
        ),
    })
}

/// Sets named by `name` of container addresses (`elsewhere_*`, `containers_*`), per family,
/// each element counted and naming its container (in a comment nft reads back: Docker's
/// names may hold anything).
fn counted_sets(
    addresses: &BTreeMap<IpAddr, String>,
    name: fn(Family) -> SetName,
) -> Vec<(Family, Set)> {
    let mut by_family: BTreeMap<Family, BTreeMap<IpAddr, String>> = BTreeMap::new();
    for (address, container) in addresses {
        by_family
            .entry(Family::of(*address))
            .or_default()
            .insert(*address, nft_syntax::comment(container));
    }
    by_family
        .into_iter()
        .map(|(family, members)| {
            let set = Set {
                name: name(family),
                key: SetKey::Address(family),
                content: SetContent::Counted(members),
            };
            (family, set)
        })
        .collect()
}

/// `ip saddr @elsewhere_v4` (or `daddr`) then `verdict`, per family.
fn elsewhere_rules<'a>(
    families: &'a [Family],
    direction: Direction,
    verdict: Verdict,
    comment: &'static str,
) -> impl Iterator<Item = Rule> + 'a {
    families.iter().map(move |&family| {
        rule(
            vec![Match::InSet(
                key(family, direction, family.bits()),
                SetName::Elsewhere(family),
            )],
            verdict.clone(),
            comment,
        )
    })
}

fn forward_chain(
    settings: &TableSettings,
    prefixes: &[(Family, u8)],
    dispatch: &Dispatch,
    skipped: bool,
) -> Chain {
    // With bridges, role members first: their map is keyed by the bridge as well as the
    // address, so a forged address meets no role, and a member's packet skips the check for
    // forged sources. Then proxies: their allowed egress then costs two lookups (the proxy
    // map, and the check that the destination is not managed). Without bridges, role members
    // after them. Then a managed container's addresses on unmanaged networks: it is managed
    // there too.
    let mut rules: Vec<Rule> = Vec::new();
    if dispatch.bridged {
        rules.extend_from_slice(dispatch.roles);
        rules.extend(forged_managed_sources(prefixes));
    }
    rules.extend(proxy_dispatch(dispatch.proxies));
    if !dispatch.bridged {
        rules.extend_from_slice(dispatch.roles);
    }
    rules.extend(elsewhere_rules(
        dispatch.elsewhere,
        Direction::Source,
        Verdict::Jump(ChainName::FromElsewhere),
        "a managed container on an unmanaged network: managed there too",
    ));
    let from_managed = Verdict::Jump(ChainName::FromManaged);
    rules.extend(per_prefix(
        prefixes,
        Direction::Source,
        SetName::Managed,
        from_managed.clone(),
        |len| format!("a managed /{len} source: only what from_managed allows leaves it"),
    ));
    rules.push(from_managed_interface(
        from_managed,
        dispatch.shared,
        "anything else entering from a managed network's bridge (a forged source)",
    ));
    if skipped {
        rules.push(skipped_interface_rule(Verdict::Jump(
            ChainName::FromUnknownBridge,
        )));
    }
    rules.extend(unknown_interface_rules(
        settings,
        Verdict::Jump(ChainName::FromUnknownBridge),
    ));
    // Only sources outside the managed networks get here: toward a managed destination, a new
    // connection needs the destination's ingress.
    rules.extend(per_prefix(
        prefixes,
        Direction::Destination,
        SetName::Managed,
        Verdict::Jump(ChainName::ToManaged),
        |len| format!("toward a managed /{len} from outside the managed networks"),
    ));
    rules.extend(elsewhere_rules(
        dispatch.elsewhere,
        Direction::Destination,
        Verdict::Jump(ChainName::ToManaged),
        "toward a managed container's address on an unmanaged network",
    ));
    Chain {
        name: ChainName::Forward,
        hook: Some((Hook::Forward, settings.forward_priority)),
        rules,
    }
}

/// Each member address of a role with ingress rules visits its role's ingress chain as a
/// destination.
fn ingress_dispatch(families: &[Family]) -> impl Iterator<Item = Rule> + '_ {
    let comment = "toward a role member: what its role's ingress allows";
    address_dispatch(families, Direction::Destination, SetName::Ingress, comment)
}

/// New connections toward a managed network from outside it: replies pass, a role member's
/// ingress may accept, anything else is dropped and counted.
fn to_managed_chain(ingress_families: &[Family]) -> Chain {
    let mut rules = vec![replies_rule()];
    rules.extend(ingress_dispatch(ingress_families));
    rules.push(Rule {
        matches: vec![],
        counter: true,
        action: Action::Verdict(Verdict::Deny(DropReason::Ingress)),
        comment: "a new connection toward a managed network from outside it: denied".into(),
    });
    Chain {
        name: ChainName::ToManaged,
        hook: None,
        rules,
    }
}

fn from_managed_chain(
    prefixes: &[(Family, u8)],
    pair_lengths: &[(Family, u8, u8)],
    ingress_families: &[Family],
    counted: &[Family],
) -> Chain {
    let mut rules = vec![replies_rule()];
    rules.extend(pair_lengths.iter().map(|&(family, source, destination)| {
        rule(
            vec![Match::PairInSet(
                key(family, Direction::Source, source),
                key(family, Direction::Destination, destination),
                SetName::Intra(family, source, destination),
            )],
            Verdict::Accept,
            "source and destination in the same network: stays inside it",
        )
    }));
    // Unicast solicitations and advertisements between neighbours (address resolution's
    // answers, unreachability probes): never routed, and where east-west is denied the pair
    // rule above does not pass them. Who may advertise what is the bridge table's to check.
    rules.push(rule(
        vec![Match::HopLimit(255), Match::Icmpv6Type(135, 136)],
        Verdict::Accept,
        "IPv6 neighbour solicitations and advertisements between neighbours (never routed)",
    ));
    for (multicast, comment) in [
        (
            "ff02::/16",
            "link-local multicast (neighbour discovery) never leaves the link",
        ),
        ("224.0.0.0/24", "link-local multicast never leaves the link"),
    ] {
        let net = multicast.parse().expect("constant prefix");
        rules.push(rule(
            vec![Match::Address(Direction::Destination, net)],
            Verdict::Accept,
            comment,
        ));
    }
    // The destination's ingress, for managed sources only: a forged source from a managed
    // bridge is never the internet an ingress rule admits.
    for &(family, len) in prefixes
        .iter()
        .filter(|(f, _)| ingress_families.contains(f))
    {
        rules.push(Rule {
            matches: vec![Match::InSet(
                key(family, Direction::Source, len),
                SetName::Managed(family, len),
            )],
            counter: false,
            action: Action::VerdictMap(
                MapKey::Address(key(family, Direction::Destination, family.bits())),
                SetName::Ingress(family),
            ),
            comment: format!("from a managed /{len} toward a role member: its role's ingress"),
        });
    }
    rules.extend(counted.iter().map(|&family| {
        rule(
            vec![Match::InSet(
                key(family, Direction::Source, family.bits()),
                SetName::Containers(family),
            )],
            Verdict::Continue,
            "egress about to be denied: counted against its container, then per subnet below",
        )
    }));
    rules.extend(per_prefix(
        prefixes,
        Direction::Source,
        SetName::Egress,
        Verdict::Deny(DropReason::Egress),
        |len| format!("any other egress from a managed /{len}: denied, counted per subnet"),
    ));
    rules.push(Rule {
        matches: vec![],
        counter: true,
        action: Action::Verdict(Verdict::Deny(DropReason::Spoofing)),
        comment: "from a managed network's bridge with a source outside its subnets: denied".into(),
    });
    Chain {
        name: ChainName::FromManaged,
        hook: None,
        rules,
    }
}

fn unknown_bridge_chain() -> Chain {
    Chain {
        name: ChainName::FromUnknownBridge,
        hook: None,
        rules: vec![
            replies_rule(),
            Rule {
                matches: vec![],
                counter: true,
                action: Action::Verdict(Verdict::Deny(DropReason::UnknownBridge)),
                comment: "a Docker bridge enforcer has not classified yet: denied until it has"
                    .into(),
            },
        ],
    }
}

/// What the addresses of managed containers on unmanaged networks send through the host:
/// replies pass, everything else is dropped and counted against its container.
fn from_elsewhere_chain(families: &[Family]) -> Chain {
    let mut rules = vec![replies_rule()];
    rules.extend(families.iter().map(|&family| {
        Rule {
            matches: vec![Match::InSet(
                key(family, Direction::Source, family.bits()),
                SetName::Elsewhere(family),
            )],
            counter: true,
            action: Action::Verdict(Verdict::Deny(DropReason::Egress)),
            comment: "a managed container opens nothing through an unmanaged network: denied, \
                  counted per container"
                .into(),
        }
    }));
    Chain {
        name: ChainName::FromElsewhere,
        hook: None,
        rules,
    }
}

fn input_chain(
    settings: &TableSettings,
    prefixes: &[(Family, u8)],
    dispatch: &Dispatch,
    skipped: bool,
) -> Chain {
    let mut rules = vec![
        replies_rule(),
        rule(
            vec![Match::Icmpv6Type(133, 137)],
            Verdict::Accept,
            "IPv6 neighbour discovery with the host",
        ),
    ];
    rules.extend(unknown_interface_rules(
        settings,
        Verdict::Deny(DropReason::UnknownBridge),
    ));
    if dispatch.bridged {
        rules.extend(forged_managed_sources(prefixes));
    }
    let to_host = Verdict::Jump(ChainName::HostFromManaged);
    rules.extend(per_prefix(
        prefixes,
        Direction::Source,
        SetName::Managed,
        to_host,
        |len| format!("a managed /{len} opening a connection to the host itself"),
    ));
    rules.push(from_managed_interface(
        Verdict::Jump(ChainName::HostFromManaged),
        dispatch.shared,
        "anything else from a managed network's bridge to the host itself",
    ));
    rules.extend(elsewhere_rules(
        dispatch.elsewhere,
        Direction::Source,
        Verdict::Jump(ChainName::HostFromManaged),
        "a managed container through an unmanaged network to the host itself",
    ));
    if skipped {
        rules.push(skipped_interface_rule(Verdict::Deny(
            DropReason::UnknownBridge,
        )));
    }
    Chain {
        name: ChainName::Input,
        hook: Some((Hook::Input, settings.input_priority)),
        rules,
    }
}

fn host_chain(proxy_families: &[Family], role_accepts: &[Rule]) -> Chain {
    let mut rules: Vec<Rule> = proxy_dispatch(proxy_families).collect();
    rules.extend_from_slice(role_accepts);
    rules.push(Rule {
        matches: vec![],
        counter: true,
        action: Action::Verdict(Verdict::Deny(DropReason::Host)),
        comment: "managed networks must not reach host services".into(),
    });
    Chain {
        name: ChainName::HostFromManaged,
        hook: None,
        rules,
    }
}

/// What is not the internet: the managed prefixes, and managed containers' addresses on
/// unmanaged networks.
pub(super) struct Internet<'a> {
    /// The managed (family, prefix length) pairs, each with its `managed_*` set.
    pub(super) prefixes: &'a [(Family, u8)],
    /// The families with an `elsewhere_*` set.
    pub(super) elsewhere: &'a [Family],
}

impl Internet<'_> {
    /// The rules that return a packet whose address on `direction`'s side is not the
    /// internet, each comment saying what it is not (`what`: "proxy egress", ...).
    pub(super) fn not_it(&self, direction: Direction, what: &str) -> Vec<Rule> {
        self.not_it_in(None, direction, what)
    }

    /// [`Internet::not_it`], only the rules that packets of `family` (when given) can meet.
    pub(super) fn not_it_in(
        &self,
        family: Option<Family>,
        direction: Direction,
        what: &str,
    ) -> Vec<Rule> {
        let side = match direction {
            Direction::Source => "source",
            Direction::Destination => "destination",
        };
        let ours = |f: Family| family.map_or(true, |family| family == f);
        let prefixes: Vec<(Family, u8)> = self
            .prefixes
            .iter()
            .filter(|p| ours(p.0))
            .copied()
            .collect();
        let elsewhere: Vec<Family> = self
            .elsewhere
            .iter()
            .filter(|f| ours(**f))
            .copied()
            .collect();
        let mut rules: Vec<Rule> = per_prefix(
            &prefixes,
            direction,
            SetName::Managed,
            Verdict::Return,
            |len| format!("a managed /{len} {side} is never {what}"),
        )
        .collect();
        rules.extend(elsewhere_rules(
            &elsewhere,
            direction,
            Verdict::Return,
            "a managed container's address on an unmanaged network is not the internet",
        ));
        rules
    }
}

fn proxy_rules(proxy: &Proxy, internet: &Internet) -> Chain {
    let mut rules = egress_chain_start("proxy egress");
    rules.extend(internet.not_it(Direction::Destination, "proxy egress"));
    for service in &proxy.services {
        let port = Match::DestinationPort(service.protocol, service.port);
        if service.is_dns() && !proxy.dns_servers.is_empty() {
            for server in &proxy.dns_servers {
                rules.push(rule(
                    vec![
                        port.clone(),
                        Match::Address(Direction::Destination, (*server).into()),
                    ],
                    Verdict::Accept,
                    format!("proxy {} may ask resolver {server} ({service})", proxy.name),
                ));
            }
        } else {
            rules.push(rule(
                vec![port],
                Verdict::Accept,
                format!(
                    "proxy {} may reach {service} outside the managed networks",
                    proxy.name
                ),
            ));
        }
    }
    Chain {
        name: ChainName::Proxy(proxy.name.clone()),
        hook: None,
        rules,
    }
}
