//! The drop audit: what the tables' audit chains log (read from NFLOG by
//! [`enforcer_nft::nflog`]), resolved to names (container, network, role, bridge port) and
//! written to the log. Within each second, the first drop of a (source, destination, reason)
//! is written at once; more of the same are counted, and written as one summary line with
//! their count when the second ends, for as long as they keep coming. An egress drop toward a
//! managed address is reported as east-west. East-west and spoofing drops are logged at WARN,
//! the others at INFO.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enforcer_core::binding::PortGuard;
use enforcer_core::planner::logged_reason;
use enforcer_core::ruleset::DropReason;
use enforcer_core::text::printable;
use enforcer_core::topology::Topology;
use enforcer_nft::nflog::{Batch, Headers, Logged};
use ipnet::IpNet;

/// How long drops of one (source, destination, reason) are counted before a summary.
pub(super) const INTERVAL: Duration = Duration::from_secs(1);
/// Most (source, destination, reason) counted at once; drops of others are counted together
/// and reported in one line per interval.
const KEYS: usize = 4096;

/// Who an address or port is, as the tables last planned know it; every name made
/// [`printable`] (Docker's names must not forge log lines).
#[derive(Default)]
struct Identities {
    /// Container (or proxy, or member) -> role, by address.
    addresses: HashMap<IpAddr, (String, Option<String>)>,
    /// Managed subnets and their networks.
    networks: Vec<(IpNet, String)>,
    /// Bridge port -> the container bound to it.
    ports: HashMap<String, String>,
}

impl Identities {
    fn of(topology: &Topology, guard: &PortGuard) -> Identities {
        let mut addresses: HashMap<IpAddr, (String, Option<String>)> = HashMap::new();
        for (address, name) in topology.containers().iter().chain(topology.elsewhere()) {
            addresses.insert(*address, (printable(name), None));
        }
        for proxy in topology.proxies() {
            for address in &proxy.addresses {
                addresses
                    .entry(*address)
                    .or_insert_with(|| (printable(&proxy.name), None));
            }
        }
        for member in topology.members() {
            for address in &member.addresses {
                let entry = addresses
                    .entry(*address)
                    .or_insert_with(|| (printable(&member.name), None));
                entry.1 = Some(printable(&member.role));
            }
        }
        let networks = topology
            .networks()
            .iter()
            .flat_map(|n| n.subnets.iter().map(|s| (*s, printable(&n.name))))
            .collect();
        let ports = guard
            .bound
            .iter()
            .map(|b| (b.port.clone(), printable(&b.container)))
            .collect();
        Identities {
            addresses,
            networks,
            ports,
        }
    }

    fn container(&self, address: Option<IpAddr>) -> Option<&(String, Option<String>)> {
        self.addresses.get(&address?)
    }

    fn network(&self, address: Option<IpAddr>) -> Option<&str> {
        let address = address?;
        self.networks
            .iter()
            .find(|(subnet, _)| subnet.contains(&address))
            .map(|(_, name)| name.as_str())
    }
}

/// One drop (or a count of the same), as it is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Drop {
    /// Why.
    pub reason: DropReason,
    /// Source address (an ARP packet's sender).
    pub src: Option<IpAddr>,
    /// The container that sent it: the one its source address belongs to, or else the one
    /// bound to the bridge port it came from; for spoofing, the port's first (a forged
    /// address names whom the sender claims to be, the port who it is).
    pub src_container: Option<String>,
    /// The managed network the source address lies in.
    pub src_network: Option<String>,
    /// The source container's role.
    pub src_role: Option<String>,
    /// Destination address (an ARP packet's target).
    pub dst: Option<IpAddr>,
    /// The container the destination address belongs to.
    pub dst_container: Option<String>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `arp`, or `ether type 0x…`.
    pub proto: String,
    /// TCP or UDP destination port.
    pub dport: Option<u16>,
    /// The interface it entered through (a bridge, for a bridged packet).
    pub iif: Option<String>,
    /// The bridge port it entered through, for a bridged packet (a container's veth).
    pub port: Option<String>,
    /// The interface it was to leave through.
    pub oif: Option<String>,
}

impl Drop {
    /// The drop `logged` describes, named (`iif`, `oif` and `port` are its interfaces'
    /// names); `None` for a packet no audit chain logged.
    fn of(
        logged: &Logged,
        names: &Identities,
        [iif, oif, port]: [Option<String>; 3],
    ) -> Option<Drop> {
        let mut reason = logged_reason(&logged.prefix)?;
        let (src, dst, proto, dport) = match logged.headers {
            Headers::Ip {
                src,
                dst,
                transport,
            } => (Some(src), Some(dst), transport.name(), transport.port()),
            Headers::Arp { sender, target } => {
                (Some(sender.into()), Some(target.into()), "arp".into(), None)
            }
            Headers::Other(ethertype) => (None, None, format!("ether type {ethertype:#06x}"), None),
        };
        let source = names.container(src);
        let by_address = source.map(|(name, _)| name.clone());
        let by_port = port.as_ref().and_then(|p| names.ports.get(p)).cloned();
        // A forged source names whom it claims to be; the port names who sent it.
        let src_container = match reason {
            DropReason::Spoofing => by_port.or(by_address),
            _ => by_address.or(by_port),
        };
        let dst_known = names.container(dst);
        if reason == DropReason::Egress && (dst_known.is_some() || names.network(dst).is_some()) {
            reason = DropReason::EastWest;
        }
        Some(Drop {
            reason,
            src,
            src_container,
            src_network: names.network(src).map(str::to_string),
            src_role: source.and_then(|(_, role)| role.clone()),
            dst,
            dst_container: dst_known.map(|(name, _)| name.clone()),
            proto,
            dport,
            iif,
            oif,
            port,
        })
    }

    /// What drops of the same kind share: one line per interval. A packet that is not IP or
    /// ARP has no addresses: its interface stands for them.
    fn key(&self) -> Key {
        let from = match self.src {
            Some(_) => None,
            None => self.port.as_ref().or(self.iif.as_ref()).cloned(),
        };
        (self.reason, self.src, self.dst, from)
    }
}

/// (reason, source, destination, and for a packet without addresses its port or interface):
/// drops of one key share their lines.
type Key = (DropReason, Option<IpAddr>, Option<IpAddr>, Option<String>);

/// What [`Audit`] has to write.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// A drop (`count` 1) or, at an interval's end, how many more of the same there were.
    Dropped {
        /// What was dropped.
        drop: Box<Drop>,
        /// How many.
        count: u64,
    },
    /// Drops of this reason, of (source, destination, reason) beyond the [`KEYS`] counted at
    /// once.
    Uncounted(DropReason, u64),
    /// The socket's queue overflowed this many times: some logged packets were lost.
    Lost(u32),
}

/// The drop audit's state: what was written this interval, and what has been counted since.
#[derive(Default)]
pub(super) struct Audit {
    /// The topology the names were read from, and the names.
    names: Option<(Arc<Topology>, Identities)>,
    /// Interface index -> name.
    interfaces: HashMap<u32, Option<String>>,
    /// (reason, source, destination, input interface) -> the drop first written and how many
    /// more came since the last summary.
    counted: HashMap<Key, (Drop, u64)>,
    /// Drops beyond [`KEYS`] since the last summary, by reason.
    uncounted: BTreeMap<DropReason, u64>,
    /// When the counts are next summarised.
    due: Option<Instant>,
}

impl Audit {
    /// Takes a read of the group at `now`, named after `topology` and `guard` (the tables'
    /// last plan): the lines to write now.
    pub(super) fn take(
        &mut self,
        batch: Batch,
        (topology, guard): (&Arc<Topology>, &PortGuard),
        now: Instant,
        interface_name: &dyn Fn(u32) -> Option<String>,
    ) -> Vec<Line> {
        if !self
            .names
            .as_ref()
            .is_some_and(|(known, _)| Arc::ptr_eq(known, topology))
        {
            self.names = Some((Arc::clone(topology), Identities::of(topology, guard)));
            self.interfaces.clear();
        }
        let mut lines = Vec::new();
        if batch.overflows > 0 {
            lines.push(Line::Lost(batch.overflows));
        }
        let Some((_, names)) = &self.names else {
            return lines;
        };
        let interfaces = &mut self.interfaces;
        let mut name_of = |index: Option<u32>| {
            let index = index?;
            interfaces
                .entry(index)
                .or_insert_with(|| interface_name(index).map(|name| printable(&name)))
                .clone()
        };
        for logged in &batch.packets {
            let named = [
                name_of(logged.in_interface),
                name_of(logged.out_interface),
                name_of(logged.in_port),
            ];
            let Some(drop) = Drop::of(logged, names, named) else {
                continue;
            };
            let key = drop.key();
            if let Some((_, more)) = self.counted.get_mut(&key) {
                *more += 1;
            } else if self.counted.len() >= KEYS {
                *self.uncounted.entry(drop.reason).or_default() += 1;
            } else {
                self.counted.insert(key, (drop.clone(), 0));
                lines.push(Line::Dropped {
                    drop: Box::new(drop),
                    count: 1,
                });
            }
        }
        if self.due.is_none() && (!self.counted.is_empty() || !self.uncounted.is_empty()) {
            self.due = Some(now + INTERVAL);
        }
        lines
    }

    /// When the counts are next summarised; never while nothing is counted.
    pub(super) fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The interval's summaries, at `now`: one line per (source, destination, reason) that
    /// dropped more than its first line said. Those keep being counted (a flood gets one line
    /// per interval); the others are forgotten, so that their next drop is written at once.
    pub(super) fn summarise(&mut self, now: Instant) -> Vec<Line> {
        let mut lines: Vec<Line> = Vec::new();
        self.counted.retain(|_, (drop, more)| {
            if *more == 0 {
                return false;
            }
            lines.push(Line::Dropped {
                drop: Box::new(drop.clone()),
                count: std::mem::take(more),
            });
            true
        });
        let uncounted = std::mem::take(&mut self.uncounted);
        lines.extend(uncounted.into_iter().map(|(r, n)| Line::Uncounted(r, n)));
        self.due = (!self.counted.is_empty()).then_some(now + INTERVAL);
        lines
    }
}

/// The name of the interface with this index, if it still exists.
pub(super) fn interface_name(index: u32) -> Option<String> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `name` has room for IF_NAMESIZE bytes, as if_indextoname requires; on success
    // it holds a NUL-terminated name.
    let found = unsafe { libc::if_indextoname(index, name.as_mut_ptr()) };
    if found.is_null() {
        return None;
    }
    // SAFETY: if_indextoname succeeded, so `name` is NUL-terminated within its length.
    let name = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Writes `lines` to the log.
pub(super) fn write(lines: &[Line]) {
    for line in lines {
        match line {
            Line::Dropped { drop, count } => write_drop(drop, *count),
            Line::Uncounted(reason, count) => tracing::warn!(
                event = "drop",
                reason = reason.name(),
                count,
                "{count} {} drops of more than {KEYS} other (source, destination, reason) in the \
                 last second, counted together",
                reason.name()
            ),
            Line::Lost(times) => tracing::warn!(
                "the drop audit's queue overflowed {times} times: some drops were not logged (the \
                 tables' counters count every one)"
            ),
        }
    }
}

fn write_drop(drop: &Drop, count: u64) {
    let named = |address: Option<IpAddr>, name: &Option<String>| match (address, name) {
        (Some(address), Some(name)) => format!("{name} ({address})"),
        (Some(address), None) => address.to_string(),
        (None, _) => drop.iif.clone().unwrap_or_else(|| "?".into()),
    };
    let service = match drop.dport {
        Some(port) => format!("{}/{port}", drop.proto),
        None => drop.proto.clone(),
    };
    let message = format!(
        "dropped {service} {} -> {}: {}{}",
        named(drop.src, &drop.src_container),
        named(drop.dst, &drop.dst_container),
        drop.reason.name(),
        match count {
            1 => String::new(),
            n => format!(" ({n} more in the last second)"),
        }
    );
    macro_rules! at {
        ($level:ident) => {
            tracing::$level!(
                event = "drop",
                reason = drop.reason.name(),
                src = drop.src.map(tracing::field::display),
                src_container = drop.src_container.as_deref(),
                src_network = drop.src_network.as_deref(),
                src_role = drop.src_role.as_deref(),
                dst = drop.dst.map(tracing::field::display),
                dst_container = drop.dst_container.as_deref(),
                proto = drop.proto.as_str(),
                dport = drop.dport,
                iif = drop.iif.as_deref(),
                oif = drop.oif.as_deref(),
                port = drop.port.as_deref(),
                count,
                "{message}"
            )
        };
    }
    match drop.reason {
        DropReason::EastWest | DropReason::Spoofing => at!(warn),
        _ => at!(info),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use enforcer_core::binding::BoundPort;
    use enforcer_core::ports::MacAddr;
    use enforcer_core::topology::{EastWest, ManagedNetwork};
    use enforcer_nft::nflog::Transport;
    use std::collections::BTreeMap;

    fn topology() -> Arc<Topology> {
        let network = ManagedNetwork {
            name: "agents".into(),
            subnets: vec!["10.9.0.0/24".parse().unwrap()],
            interface: Some("br-agents".into()),
            east_west: EastWest::Deny,
        };
        let containers = BTreeMap::from([
            ("10.9.0.2".parse().unwrap(), "agent-a".to_string()),
            ("10.9.0.3".parse().unwrap(), "agent-b".to_string()),
            ("10.9.0.4".parse().unwrap(), "x\nINFO forged".to_string()),
        ]);
        Arc::new(
            Topology::new(vec![network], vec![])
                .unwrap()
                .with_containers(containers),
        )
    }

    fn logged(reason: &str, src: &str, dst: &str, port: u16) -> Logged {
        Logged {
            prefix: format!("enforcer:{reason}"),
            in_interface: Some(7),
            out_interface: None,
            in_port: None,
            headers: Headers::Ip {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                transport: Transport::Tcp(port),
            },
        }
    }

    fn take(audit: &mut Audit, packets: Vec<Logged>, now: Instant) -> Vec<Line> {
        let topology = topology();
        let batch = Batch {
            packets,
            overflows: 0,
            drained: true,
        };
        let guard = PortGuard {
            bound: vec![BoundPort {
                port: "veth9".into(),
                mac: MacAddr([2, 0x42, 10, 9, 0, 3]),
                container: "agent-b".into(),
                network: "agents".into(),
                ipv4: vec!["10.9.0.3".parse().unwrap()],
                ipv6: vec![],
            }],
            ..PortGuard::default()
        };
        audit.take(batch, (&topology, &guard), now, &|i| {
            Some(format!("veth{i}"))
        })
    }

    fn counts(lines: &[Line]) -> Vec<(DropReason, u64)> {
        lines
            .iter()
            .map(|l| match l {
                Line::Dropped { drop, count } => (drop.reason, *count),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_drop_is_named_and_one_toward_a_managed_address_is_east_west() {
        let mut audit = Audit::default();
        let now = Instant::now();
        let lines = take(
            &mut audit,
            vec![
                logged("egress", "10.9.0.2", "203.0.113.10", 443),
                logged("egress", "10.9.0.2", "10.9.0.3", 22),
                logged("nothing", "10.9.0.2", "10.9.0.3", 22),
            ],
            now,
        );
        let Line::Dropped { drop, count: 1 } = &lines[0] else {
            panic!("{lines:?}")
        };
        assert_eq!(drop.reason, DropReason::Egress);
        assert_eq!(drop.src_container.as_deref(), Some("agent-a"));
        assert_eq!(drop.src_network.as_deref(), Some("agents"));
        assert_eq!(drop.dst_container, None);
        assert_eq!((drop.proto.as_str(), drop.dport), ("tcp", Some(443)));
        assert_eq!(drop.iif.as_deref(), Some("veth7"));
        assert_eq!(drop.port, None);
        let Line::Dropped { drop, .. } = &lines[1] else {
            panic!("{lines:?}")
        };
        assert_eq!(drop.reason, DropReason::EastWest);
        assert_eq!(drop.dst_container.as_deref(), Some("agent-b"));
        // A prefix no audit chain writes is not a drop.
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn a_name_cannot_forge_a_log_line() {
        let mut audit = Audit::default();
        let lines = take(
            &mut audit,
            vec![logged("egress", "10.9.0.4", "203.0.113.10", 443)],
            Instant::now(),
        );
        let [Line::Dropped { drop, .. }] = &lines[..] else {
            panic!("{lines:?}")
        };
        assert_eq!(drop.src_container.as_deref(), Some("x\\nINFO forged"));
    }

    #[test]
    fn a_forged_source_names_the_container_of_its_port() {
        let mut audit = Audit::default();
        let mut forged = logged("spoofing", "10.9.0.2", "203.0.113.10", 53);
        forged.in_port = Some(9);
        let lines = take(&mut audit, vec![forged], Instant::now());
        let [Line::Dropped { drop, count: 1 }] = &lines[..] else {
            panic!("{lines:?}")
        };
        assert_eq!(drop.reason, DropReason::Spoofing);
        assert_eq!(drop.src_container.as_deref(), Some("agent-b"));
        assert_eq!(drop.port.as_deref(), Some("veth9"));
    }

    #[test]
    fn a_flood_is_one_line_then_one_summary_per_interval() {
        let mut audit = Audit::default();
        let start = Instant::now();
        let flood = || vec![logged("egress", "10.9.0.2", "203.0.113.10", 443); 50];
        assert_eq!(
            counts(&take(&mut audit, flood(), start)),
            [(DropReason::Egress, 1)]
        );
        assert_eq!(audit.due(), Some(start + INTERVAL));
        assert!(take(&mut audit, flood(), start).is_empty());
        let second = start + INTERVAL;
        assert_eq!(counts(&audit.summarise(second)), [(DropReason::Egress, 99)]);
        // Still flooding: counted, not written, until the next summary.
        assert!(take(&mut audit, flood(), second).is_empty());
        assert_eq!(
            counts(&audit.summarise(second + INTERVAL)),
            [(DropReason::Egress, 50)]
        );
        // Quiet for an interval: forgotten, and the next drop is written at once.
        assert!(audit.summarise(second + 2 * INTERVAL).is_empty());
        assert_eq!(audit.due(), None);
        assert_eq!(
            counts(&take(&mut audit, flood(), second + 3 * INTERVAL)).len(),
            1
        );
    }

    #[test]
    fn keys_beyond_the_bound_are_counted_together() {
        let mut audit = Audit::default();
        let now = Instant::now();
        let packets: Vec<Logged> = (0..KEYS as u32 + 10)
            .map(|i| {
                let dst = std::net::Ipv4Addr::from(0xcb00_0000 + i).to_string();
                logged("egress", "10.9.0.2", &dst, 443)
            })
            .collect();
        assert_eq!(take(&mut audit, packets, now).len(), KEYS);
        let summary = audit.summarise(now + INTERVAL);
        assert_eq!(summary, [Line::Uncounted(DropReason::Egress, 10)]);
    }
}
