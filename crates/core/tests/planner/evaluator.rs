//! Packets to walk a planned table with, for the reference evaluator
//! (`enforcer_core::evaluate`).

use std::net::IpAddr;

pub(crate) use enforcer_core::evaluate::{fate, Fate, Packet};
use enforcer_core::topology::Protocol;
use threegate_spec::NETWORKS;

/// A new TCP packet from `src` to `dst`:`port`, entering from [`bridge_of`] `src`.
pub(crate) fn tcp(src: &str, dst: &str, port: u16) -> Packet<'static> {
    let src: IpAddr = src.parse().unwrap();
    Packet {
        src,
        dst: dst.parse().unwrap(),
        protocol: Protocol::Tcp,
        dport: port,
        state: None,
        interface: bridge_of(src),
        out_interface: "",
    }
}

/// The bridge a ThreeGate address sends through: the bridge of the managed network holding
/// it (as the namespace harness names them), `eth0` for any other address.
pub(crate) fn bridge_of(src: IpAddr) -> &'static str {
    NETWORKS
        .iter()
        .filter(|n| n.managed())
        .find(|n| {
            threegate_spec::Family::BOTH
                .iter()
                .any(|f| n.subnet(*f).contains(&src))
        })
        .map_or("eth0", |n| n.bridge)
}

/// `packet`, entering from `interface`.
pub(crate) fn on(interface: &'static str, mut packet: Packet<'static>) -> Packet<'static> {
    packet.interface = interface;
    packet
}
