//! What a link dump says, read without the kernel: which links are bridge ports, where their
//! veth peers are, and the MAC address in a peer's reply.

use std::collections::HashMap;

use enforcer_core::ports::MacAddr;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};

/// One link of a dump, as far as bridge ports go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    /// Its ifindex.
    pub index: u32,
    /// IFLA_IFNAME.
    pub name: String,
    /// IFLA_LINKINFO / IFLA_INFO_KIND, when the link has a kind (a physical NIC has none).
    pub kind: Option<InfoKind>,
    /// IFLA_MASTER: the ifindex of the bridge (or bond, VRF) it is enslaved to.
    pub master: Option<u32>,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the peer's namespace).
    pub link: Option<u32>,
    /// IFLA_LINK_NETNSID: the id, as seen from this namespace, of the namespace IFLA_LINK is in;
    /// absent when it is this one.
    pub link_netnsid: Option<i32>,
}

impl Link {
    /// Reads a link message of a dump; `None` for one without a name (the kernel always sends
    /// IFLA_IFNAME, so such a message is not a link to report).
    pub fn of(message: &LinkMessage) -> Option<Link> {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            kind: None,
            master: None,
            link: None,
            link_netnsid: None,
        };
        let mut named = false;
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => {
                    link.name = name.clone();
                    named = true;
                }
                LinkAttribute::Controller(master) => link.master = Some(*master),
                LinkAttribute::Link(peer) => link.link = Some(*peer),
                LinkAttribute::LinkNetNsId(nsid) => link.link_netnsid = Some(*nsid),
                LinkAttribute::LinkInfo(infos) => {
                    link.kind = infos.iter().find_map(|info| match info {
                        LinkInfo::Kind(kind) => Some(kind.clone()),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        named.then_some(link)
    }
}

/// Where a port's veth peer is: what one RTM_GETLINK asks for, and the key its answer is cached
/// under (a port that is deleted and made again, renamed, or whose peer moves gets a new key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PeerKey {
    /// The port's ifindex.
    pub port_index: u32,
    /// The port's name.
    pub port_name: String,
    /// The id of the peer's namespace, as seen from this one.
    pub nsid: i32,
    /// The peer's ifindex in its namespace.
    pub peer_index: u32,
}

/// A bridge port of a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Port {
    /// The bridge's name.
    pub bridge: String,
    /// The port's name.
    pub name: String,
    /// Where its peer is, when it is a veth whose peer lives in another namespace.
    pub peer: Option<PeerKey>,
}

/// The ports of the dump's bridges: each link whose master is a link of kind `bridge`, in dump
/// order. A port has a peer to read only when it is a veth with IFLA_LINK and IFLA_LINK_NETNSID
/// (a veth with both ends here, a tap, a dummy have none; so has a VLAN or macvlan port whose
/// lower device is elsewhere, which is no peer).
pub(crate) fn ports_of(links: &[Link]) -> Vec<Port> {
    let bridges: HashMap<u32, &str> = links
        .iter()
        .filter(|link| link.kind == Some(InfoKind::Bridge))
        .map(|link| (link.index, link.name.as_str()))
        .collect();
    links
        .iter()
        .filter_map(|link| {
            let bridge = bridges.get(&link.master?)?;
            let peer = match (&link.kind, link.link, link.link_netnsid) {
                (Some(InfoKind::Veth), Some(peer_index), Some(nsid)) => Some(PeerKey {
                    port_index: link.index,
                    port_name: link.name.clone(),
                    nsid,
                    peer_index,
                }),
                _ => None,
            };
            Some(Port {
                bridge: bridge.to_string(),
                name: link.name.clone(),
                peer,
            })
        })
        .collect()
}

/// What the reply to a peer's RTM_GETLINK says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PeerReply {
    /// The peer, with its MAC address when it has an Ethernet one.
    Peer(Option<MacAddr>),
    /// The reply is for another link, or does not echo IFLA_TARGET_NETNSID: the kernel did not
    /// look in the peer's namespace (one older than Linux 4.15 ignores the attribute and answers
    /// with this namespace's link of that index).
    NotThePeer,
}

/// Reads the reply to the RTM_GETLINK for the peer at `key`.
pub(crate) fn peer_reply(key: &PeerKey, reply: &LinkMessage) -> PeerReply {
    let echoed = reply
        .attributes
        .contains(&LinkAttribute::IfNetnsId(key.nsid));
    if reply.header.index != key.peer_index || !echoed {
        return PeerReply::NotThePeer;
    }
    let mac = reply
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::Address(bytes) => {
                <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr)
            }
            _ => None,
        });
    PeerReply::Peer(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(index: u32, attributes: Vec<LinkAttribute>) -> LinkMessage {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.attributes = attributes;
        message
    }

    fn link(index: u32, name: &str, kind: Option<InfoKind>, master: Option<u32>) -> Link {
        Link {
            index,
            name: name.to_string(),
            kind,
            master,
            link: None,
            link_netnsid: None,
        }
    }

    #[test]
    fn a_dump_message_is_read_for_its_name_kind_master_and_peer() {
        let veth = message(
            7,
            vec![
                LinkAttribute::IfName("veth1".to_string()),
                LinkAttribute::Mtu(1500),
                LinkAttribute::Controller(3),
                LinkAttribute::Link(2),
                LinkAttribute::LinkNetNsId(4),
                LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
            ],
        );
        assert_eq!(
            Link::of(&veth),
            Some(Link {
                index: 7,
                name: "veth1".to_string(),
                kind: Some(InfoKind::Veth),
                master: Some(3),
                link: Some(2),
                link_netnsid: Some(4),
            })
        );
        let nic = message(2, vec![LinkAttribute::IfName("eth0".to_string())]);
        assert_eq!(Link::of(&nic), Some(link(2, "eth0", None, None)));
        assert_eq!(Link::of(&message(9, vec![LinkAttribute::Mtu(1500)])), None);
    }

    #[test]
    fn ports_are_the_links_enslaved_to_a_bridge_and_only_veths_elsewhere_have_peers() {
        let veth_out = Link {
            link: Some(2),
            link_netnsid: Some(0),
            ..link(10, "veth-out", Some(InfoKind::Veth), Some(1))
        };
        let veth_here = Link {
            link: Some(12),
            ..link(11, "veth-here", Some(InfoKind::Veth), Some(1))
        };
        let macvlan_out = Link {
            link: Some(5),
            link_netnsid: Some(0),
            ..link(13, "mv0", Some(InfoKind::MacVlan), Some(20))
        };
        let links = vec![
            link(1, "br-a", Some(InfoKind::Bridge), None),
            link(20, "br-b", Some(InfoKind::Bridge), None),
            link(30, "bond0", Some(InfoKind::Bond), None),
            veth_out,
            veth_here,
            link(12, "veth-here-peer", Some(InfoKind::Veth), None),
            macvlan_out,
            link(14, "dummy0", Some(InfoKind::Dummy), Some(20)),
            link(15, "eth1", None, Some(30)),
            link(16, "orphan", Some(InfoKind::Veth), Some(99)),
        ];
        let port = |bridge: &str, name: &str, peer: Option<PeerKey>| Port {
            bridge: bridge.to_string(),
            name: name.to_string(),
            peer,
        };
        assert_eq!(
            ports_of(&links),
            vec![
                port(
                    "br-a",
                    "veth-out",
                    Some(PeerKey {
                        port_index: 10,
                        port_name: "veth-out".to_string(),
                        nsid: 0,
                        peer_index: 2,
                    })
                ),
                port("br-a", "veth-here", None),
                port("br-b", "mv0", None),
                port("br-b", "dummy0", None),
            ]
        );
    }

    #[test]
    fn a_peer_reply_counts_only_when_it_is_for_the_peer_in_its_namespace() {
        let key = PeerKey {
            port_index: 10,
            port_name: "veth1".to_string(),
            nsid: 3,
            peer_index: 2,
        };
        let mac = vec![0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
        let reply = |index, attributes| message(index, attributes);
        assert_eq!(
            peer_reply(
                &key,
                &reply(
                    2,
                    vec![
                        LinkAttribute::IfName("eth0".to_string()),
                        LinkAttribute::Address(mac.clone()),
                        LinkAttribute::IfNetnsId(3),
                    ]
                )
            ),
            PeerReply::Peer(Some(MacAddr([0x02, 0x42, 0xac, 0x11, 0x00, 0x02])))
        );
        // An address that is not six bytes (an InfiniBand or tunnel link) is no MAC.
        assert_eq!(
            peer_reply(
                &key,
                &reply(
                    2,
                    vec![
                        LinkAttribute::Address(vec![0; 4]),
                        LinkAttribute::IfNetnsId(3)
                    ]
                )
            ),
            PeerReply::Peer(None)
        );
        // No echo of the target namespace: the kernel answered from this namespace.
        assert_eq!(
            peer_reply(&key, &reply(2, vec![LinkAttribute::Address(mac.clone())])),
            PeerReply::NotThePeer
        );
        assert_eq!(
            peer_reply(
                &key,
                &reply(
                    2,
                    vec![
                        LinkAttribute::Address(mac.clone()),
                        LinkAttribute::IfNetnsId(4)
                    ]
                )
            ),
            PeerReply::NotThePeer
        );
        assert_eq!(
            peer_reply(
                &key,
                &reply(
                    5,
                    vec![LinkAttribute::Address(mac), LinkAttribute::IfNetnsId(3)]
                )
            ),
            PeerReply::NotThePeer
        );
    }
}
