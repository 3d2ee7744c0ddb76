//! A LAN between sealed Docker hosts, for a swarm of several nodes: one namespace holding a
//! bridge on 198.51.100.0/24 (TEST-NET-2), each node's host namespace plugged into it by a veth
//! with address 198.51.100.1N. Swarm's ports (2377 management, 7946 gossip, 4789 VXLAN) pass
//! between the nodes' addresses; each node keeps its own uplink and internet namespace.

use std::net::Ipv4Addr;

use crate::Netns;

/// The LAN's bridge inside its namespace.
const BRIDGE: &str = "lan";

/// The LAN namespace; deleted (with every veth plugged into it) when dropped.
pub struct Lan {
    ns: Netns,
}

impl Lan {
    /// A namespace with the LAN's bridge, up.
    pub fn new() -> Lan {
        let ns = Netns::new("lan");
        ns.ip(&["link", "add", BRIDGE, "type", "bridge"]);
        ns.ip(&["link", "set", BRIDGE, "up"]);
        Lan { ns }
    }

    /// Node `index`'s address on the LAN (198.51.100.1`index`).
    pub fn address(index: u8) -> Ipv4Addr {
        assert!((1..=9).contains(&index), "node index {index}: 1 to 9");
        Ipv4Addr::new(198, 51, 100, 10 + index)
    }

    /// Plugs `host` into the LAN as node `index`: interface `lan0` there, its address
    /// [`Lan::address`]; returns that address.
    pub fn plug(&self, host: &Netns, index: u8) -> Ipv4Addr {
        let address = Lan::address(index);
        let port = format!("node{index}");
        host.veth("lan0", &self.ns, &port);
        self.ns.ip(&["link", "set", &port, "master", BRIDGE, "up"]);
        host.ip(&["addr", "add", &format!("{address}/24"), "dev", "lan0"]);
        host.ip(&["link", "set", "lan0", "up"]);
        address
    }
}

impl Default for Lan {
    fn default() -> Lan {
        Lan::new()
    }
}
