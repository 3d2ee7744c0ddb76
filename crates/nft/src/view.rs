//! What the kernel's tables say, read back for people (`enforcer status`): the managed subnets
//! of each network with their drop counters (the counted `egress_*` sets, whose elements name
//! their network), each proxy's addresses (the `proxies_*` verdict maps), and what each bound
//! bridge port's chain dropped (the counters of its rules).

use std::collections::BTreeMap;
use std::net::IpAddr;

use enforcer_core::names::{ChainName, SetName};
use enforcer_core::ruleset::{DropReason, Family};
use ipnet::IpNet;

use crate::abi::*;
use crate::state::{comment_of, element_key, key_address};
use crate::wire;

/// A managed subnet and what its egress drop counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountedSubnet {
    /// The subnet.
    pub subnet: IpNet,
    /// Packets dropped.
    pub packets: u64,
    /// Bytes dropped.
    pub bytes: u64,
}

/// Networks and proxies as the kernel's table holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelView {
    /// Network name -> its subnets and their drop counters.
    pub networks: BTreeMap<String, Vec<CountedSubnet>>,
    /// Proxy name -> its addresses.
    pub proxies: BTreeMap<String, Vec<IpAddr>>,
    /// Role name -> its members' addresses.
    pub roles: BTreeMap<String, Vec<IpAddr>>,
    /// Container name -> what its denied egress counted (packets, bytes), summed over its
    /// addresses.
    pub containers: BTreeMap<String, PortCounters>,
    /// Whether the bridge table exists.
    pub bridge_table: bool,
    /// Bound port -> what its chain dropped (forged frames from its container).
    pub ports: BTreeMap<String, PortCounters>,
    /// What ports bound to no container sent (all dropped).
    pub unbound: PortCounters,
    /// What shared ports (of static networks' bridges) sent that only a declared proxy may.
    pub shared: PortCounters,
    /// Quarantined interface -> what was dropped in and out of it, summed over the tables
    /// (inet, bridge, arp) whose `quarantined` set recorded it.
    pub quarantined: BTreeMap<String, PortCounters>,
    /// Reason -> what every table's rules that deny for it counted (a rule's counter, or for
    /// egress the `egress_*` sets' elements: egress and east-west alike).
    pub denied: BTreeMap<DropReason, PortCounters>,
}

/// Packets and bytes a port's drop rules counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Packets dropped.
    pub packets: u64,
    /// Bytes dropped.
    pub bytes: u64,
}

impl PortCounters {
    /// Adds a counter's `(packets, bytes)`.
    pub fn add(&mut self, (packets, bytes): (u64, u64)) {
        self.packets += packets;
        self.bytes += bytes;
    }
}

/// The chain an `NFTA_DATA_*` nest's verdict names (a jump's or goto's), if it names one.
fn verdict_chain(data: &[u8]) -> Option<String> {
    wire::attribute(data, NFTA_DATA_VERDICT)
        .and_then(|v| wire::attribute(v, NFTA_VERDICT_CHAIN))
        .map(wire::string)
}

/// The (packets, bytes) of an element's counter, if it has one.
fn counter(element: &[u8]) -> Option<(u64, u64)> {
    let one = wire::attribute(element, NFTA_SET_ELEM_EXPR);
    let listed = wire::attribute(element, NFTA_SET_ELEM_EXPRESSIONS)
        .into_iter()
        .flat_map(|list| wire::attributes(list).map(|(_, e)| e));
    one.into_iter().chain(listed).find_map(counter_values)
}

/// The (packets, bytes) of a counter expression; `None` for any other expression.
fn counter_values(expression: &[u8]) -> Option<(u64, u64)> {
    if wire::attribute(expression, NFTA_EXPR_NAME).map(wire::string)? != "counter" {
        return None;
    }
    let data = wire::attribute(expression, NFTA_EXPR_DATA)?;
    let be64 = |ty| {
        wire::attribute(data, ty)
            .and_then(|v| <[u8; 8]>::try_from(v).ok())
            .map(u64::from_be_bytes)
    };
    Some((be64(NFTA_COUNTER_PACKETS)?, be64(NFTA_COUNTER_BYTES)?))
}

/// The reason of the audit chain an immediate verdict goes to; `None` for any other
/// expression.
fn denied_for(expression: &[u8]) -> Option<DropReason> {
    if wire::attribute(expression, NFTA_EXPR_NAME).map(wire::string)? != "immediate" {
        return None;
    }
    let chain = wire::attribute(expression, NFTA_EXPR_DATA)
        .and_then(|d| wire::attribute(d, NFTA_IMMEDIATE_DATA))
        .and_then(verdict_chain)?;
    match chain.parse() {
        Ok(ChainName::Audit(reason)) => Some(reason),
        _ => None,
    }
}

/// Every `NFTA_LIST_ELEM` payload of a set-element dump.
fn elements(dump: &[u8]) -> Vec<&[u8]> {
    wire::messages(dump)
        .filter_map(|m| wire::attribute(m.attributes(), NFTA_SET_ELEM_LIST_ELEMENTS))
        .flat_map(|list| {
            wire::attributes(list)
                .filter(|(t, _)| *t == NFTA_LIST_ELEM)
                .map(|(_, e)| e)
        })
        .collect()
}

impl KernelView {
    /// Adds the counters of the bridge table's port chains, from a dump of its rules.
    pub(crate) fn read_ports(&mut self, dump: &[u8]) {
        for message in wire::messages(dump) {
            if message.kind & 0xff != NFT_MSG_NEWRULE {
                continue;
            }
            let attrs = message.attributes();
            let chain = wire::attribute(attrs, NFTA_RULE_CHAIN).map(wire::string);
            let target = match chain.as_deref().map(str::parse) {
                Some(Ok(ChainName::Port(port))) => self.ports.entry(port).or_default(),
                Some(Ok(ChainName::UnboundPort)) => &mut self.unbound,
                Some(Ok(ChainName::SharedPort)) => &mut self.shared,
                _ => continue,
            };
            let expressions = wire::attribute(attrs, NFTA_RULE_EXPRESSIONS).unwrap_or(&[]);
            for (_, expression) in wire::attributes(expressions) {
                if let Some(counted) = counter_values(expression) {
                    target.add(counted);
                }
            }
        }
    }

    /// Adds what each table's deny rules counted, by reason, from a dump of its rules: a
    /// rule's counter counts toward the audit chain its verdict goes to.
    pub(crate) fn read_denials(&mut self, dump: &[u8]) {
        for message in wire::messages(dump) {
            if message.kind & 0xff != NFT_MSG_NEWRULE {
                continue;
            }
            let attrs = message.attributes();
            let expressions = wire::attribute(attrs, NFTA_RULE_EXPRESSIONS).unwrap_or(&[]);
            let mut counted = None;
            let mut reason = None;
            for (_, expression) in wire::attributes(expressions) {
                counted = counted.or_else(|| counter_values(expression));
                reason = reason.or_else(|| denied_for(expression));
            }
            if let (Some(counted), Some(reason)) = (counted, reason) {
                self.denied.entry(reason).or_default().add(counted);
            }
        }
    }

    /// Adds the interfaces a table's `quarantined` set recorded, from a dump of its elements.
    pub(crate) fn read_quarantined(&mut self, dump: &[u8]) {
        for element in elements(dump) {
            let Some(name) = element_key(element).map(wire::string) else {
                continue;
            };
            let counted = counter(element).unwrap_or((0, 0));
            self.quarantined.entry(name).or_default().add(counted);
        }
    }

    /// Whether the view reads set `name`: the counted egress and container sets, the proxy and
    /// role maps, the quarantined interfaces.
    pub(crate) fn reads(name: &str) -> bool {
        matches!(
            name.parse(),
            Ok(SetName::Egress(..)
                | SetName::Proxies(_)
                | SetName::Roles(_)
                | SetName::Containers(_)
                | SetName::Quarantined)
        )
    }

    /// Builds the view from `(set name, element dump)` pairs of the table's sets.
    pub(crate) fn from_dumps<'a>(sets: impl Iterator<Item = (&'a str, &'a [u8])>) -> KernelView {
        let mut view = KernelView::default();
        for (name, dump) in sets {
            let name = name.parse::<SetName>();
            if let Ok(SetName::Egress(family, prefix_len)) = name {
                for element in elements(dump) {
                    let Some(network) = element_key(element).and_then(key_address) else {
                        continue;
                    };
                    if Family::of(network) != family {
                        continue;
                    }
                    let Ok(subnet) = IpNet::new(network, prefix_len) else {
                        continue;
                    };
                    let owner = wire::attribute(element, NFTA_SET_ELEM_USERDATA)
                        .map(comment_of)
                        .unwrap_or_default();
                    let (packets, bytes) = counter(element).unwrap_or((0, 0));
                    view.networks.entry(owner).or_default().push(CountedSubnet {
                        subnet,
                        packets,
                        bytes,
                    });
                }
            } else if let Ok(SetName::Proxies(_) | SetName::Roles(_)) = name {
                for element in elements(dump) {
                    // A role map may be keyed by the bridge's name before the address.
                    let key = element_key(element).and_then(|key| {
                        key_address(key).or_else(|| key.get(IFNAME_LEN..).and_then(key_address))
                    });
                    let chain =
                        wire::attribute(element, NFTA_SET_ELEM_DATA).and_then(verdict_chain);
                    let (Some(address), Some(chain)) = (key, chain) else {
                        continue;
                    };
                    match chain.parse() {
                        Ok(ChainName::Proxy(proxy)) => {
                            view.proxies.entry(proxy).or_default().push(address)
                        }
                        Ok(ChainName::Role(_, role)) => {
                            view.roles.entry(role).or_default().push(address)
                        }
                        _ => {}
                    }
                }
            } else if let Ok(SetName::Quarantined) = name {
                view.read_quarantined(dump);
            } else if let Ok(SetName::Containers(_)) = name {
                for element in elements(dump) {
                    let container = wire::attribute(element, NFTA_SET_ELEM_USERDATA)
                        .map(comment_of)
                        .unwrap_or_default();
                    let counted = counter(element).unwrap_or((0, 0));
                    view.containers.entry(container).or_default().add(counted);
                }
            }
        }
        for subnets in view.networks.values_mut() {
            subnets.sort_by_key(|s| (s.subnet.addr(), s.subnet.prefix_len()));
        }
        // The per-subnet drop has no counter of its own: its set element counts.
        let egress = view.denied.entry(DropReason::Egress).or_default();
        for subnet in view.networks.values().flatten() {
            egress.add((subnet.packets, subnet.bytes));
        }
        for addresses in view.proxies.values_mut().chain(view.roles.values_mut()) {
            addresses.sort();
        }
        view
    }
}
