//! A packet judged by a planned inet table on the model ([`enforcer_core::evaluate`]), as the
//! kernel would meet it on this host: at the hook its addresses take it through (the host's
//! own addresses read now), entering through its source subnet's bridge. The daemon judges
//! tracked connections with it (`run/cut.rs`), `enforcer explain` one flow.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use enforcer_core::docker::DockerState;
use enforcer_core::evaluate::{decide, Decision, Packet};
use enforcer_core::ruleset::{Hook, Ruleset};
use enforcer_core::topology::{Protocol, Topology};
use ipnet::IpNet;

/// The host interface each subnet's packets enter through, by prefix length (longest first),
/// so that finding an address's takes one lookup per distinct length.
#[derive(Debug, Default)]
pub struct Interfaces {
    by_prefix: BTreeMap<std::cmp::Reverse<u8>, HashMap<IpNet, String>>,
}

impl Interfaces {
    /// The bridges of the managed networks that name one, and of every Docker bridge network.
    pub fn of(topology: &Topology, docker: &DockerState) -> Interfaces {
        let mut interfaces = Interfaces::default();
        for network in topology.networks() {
            if let Some(interface) = &network.interface {
                for subnet in &network.subnets {
                    interfaces.insert(*subnet, interface);
                }
            }
        }
        for network in docker.networks.values() {
            let Some(bridge) = network.bridge() else {
                continue;
            };
            for subnet in network
                .subnets
                .iter()
                .filter_map(|s| s.parse::<IpNet>().ok())
            {
                interfaces.insert(subnet.trunc(), &bridge);
            }
        }
        interfaces
    }

    fn insert(&mut self, subnet: IpNet, interface: &str) {
        self.by_prefix
            .entry(std::cmp::Reverse(subnet.prefix_len()))
            .or_default()
            .entry(subnet)
            .or_insert_with(|| interface.to_string());
    }

    /// The interface packets from `address` enter through: its subnet's bridge, or "" (an
    /// interface no rule names: the uplink, say).
    pub fn entering(&self, address: IpAddr) -> &str {
        self.by_prefix
            .iter()
            .find_map(|(std::cmp::Reverse(len), subnets)| {
                let subnet = IpNet::new(address, *len).ok()?.trunc();
                subnets.get(&subnet)
            })
            .map_or("", String::as_str)
    }
}

/// Judges new packets by a planned inet table, as this host would meet them.
pub struct Judge<'a> {
    /// The table just applied.
    pub inet: &'a Ruleset,
    /// Where each source's packets enter.
    pub interfaces: &'a Interfaces,
    /// The host's own addresses: a connection to one is judged at the input hook, one from
    /// one at the output hook.
    pub local: &'a BTreeSet<IpAddr>,
}

/// A new packet's fate on the model, and where it met the table.
#[derive(Debug)]
pub struct Judged<'a> {
    /// The hook it passes.
    pub hook: Hook,
    /// The packet as the table sees it.
    pub packet: Packet<'a>,
    /// What the table does to it, and which rule of which chain decides.
    pub decision: Decision<'a>,
}

impl<'a> Judge<'a> {
    /// The first packet of a new `protocol` connection from `source` to `target`.
    pub fn judge(&self, source: IpAddr, target: SocketAddr, protocol: Protocol) -> Judged<'a> {
        let hook = if self.local.contains(&source) {
            Hook::Output
        } else if self.local.contains(&target.ip()) {
            Hook::Input
        } else {
            Hook::Forward
        };
        let interface = match hook {
            Hook::Output => "",
            _ => self.interfaces.entering(source),
        };
        let packet = Packet {
            src: source,
            dst: target.ip(),
            protocol,
            dport: target.port(),
            state: None,
            interface,
            out_interface: "",
        };
        Judged {
            hook,
            packet,
            decision: decide(self.inet, hook, &packet),
        }
    }
}

/// The host's own addresses (every interface's), read now.
pub fn local_addresses() -> std::io::Result<BTreeSet<IpAddr>> {
    let mut addresses = BTreeSet::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list it allocates, freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs returned, not yet freed; its
        // address, when not null, points at a sockaddr of the family it names.
        unsafe {
            let address = (*entry).ifa_addr;
            if !address.is_null() {
                match i32::from((*address).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(address as *const libc::sockaddr_in);
                        addresses
                            .insert(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(address as *const libc::sockaddr_in6);
                        addresses.insert(IpAddr::from(v6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            entry = (*entry).ifa_next;
        }
    }
    // SAFETY: frees the list getifaddrs allocated, once.
    unsafe { libc::freeifaddrs(list) };
    Ok(addresses)
}
