//! Kernel edge of enforcer for per-port anti-spoofing: the ports of every bridge in this
//! network namespace, each with the MAC address of its veth peer, over rtnetlink.
//!
//! Docker reports each container endpoint's MAC address but not which host-side veth is its;
//! [`PortWatch::ports`] reports, for each bridge port, the MAC address of the peer at the veth's
//! other end (the container's interface), and [`PortWatch::changed`] says when links changed and
//! the ports are worth reading again.
//!
//! The peer is read from this namespace: one RTM_GETLINK for its ifindex carrying
//! IFLA_TARGET_NETNSID, the id this namespace has for the peer's (Linux 4.15 or later). That takes
//! CAP_NET_ADMIN and nothing else: no `setns`, no namespace files.

mod dump;

use std::collections::{HashMap, HashSet};

use enforcer_core::ports::{BridgePort, MacAddr};
use futures_channel::mpsc::UnboundedReceiver;
use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::link::{LinkAttribute, LinkExtentMask};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, MulticastGroup};
use tokio::task::JoinHandle;

use dump::{Link, PeerKey, PeerReply};

/// Reading the links went wrong. Nothing is changed in the kernel by this crate, so any failure
/// leaves the links as they were; the watch can be asked again (or opened anew after
/// [`LinkError::Closed`]).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// A netlink route socket could not be opened, or subscribed to link notifications.
    #[error(
        "cannot open a netlink route socket, or subscribe one to link notifications \
         (RTNLGRP_LINK): {0}"
    )]
    Open(std::io::Error),
    /// The kernel refused or broke off the link dump.
    #[error("cannot list the links of this network namespace (RTM_GETLINK dump): {0}")]
    Dump(rtnetlink::Error),
    /// The kernel refused to read a link in another namespace: the caller lacks CAP_NET_ADMIN.
    #[error(
        "reading the veth peer of bridge port {port} (in the namespace with id {nsid}) was \
         refused: reading a link in another network namespace needs CAP_NET_ADMIN (run as root, \
         or grant the capability: systemd AmbientCapabilities=CAP_NET_ADMIN)"
    )]
    PeerDenied {
        /// The bridge port whose peer was asked for.
        port: String,
        /// The id of the peer's namespace, as seen from this one.
        nsid: i32,
    },
    /// Reading a port's peer failed otherwise.
    #[error(
        "cannot read the veth peer of bridge port {port} (ifindex {peer_index} in the namespace \
         with id {nsid}): {source}"
    )]
    Peer {
        /// The bridge port whose peer was asked for.
        port: String,
        /// The id of the peer's namespace, as seen from this one.
        nsid: i32,
        /// The peer's ifindex in its namespace.
        peer_index: u32,
        /// Why.
        source: rtnetlink::Error,
    },
    /// The kernel answered a peer's RTM_GETLINK with another link: it ignores
    /// IFLA_TARGET_NETNSID.
    #[error(
        "asked for the veth peer of bridge port {port} (ifindex {peer_index} in the namespace \
         with id {nsid}), the kernel answered for another link: it does not read links in other \
         namespaces by id (IFLA_TARGET_NETNSID needs Linux 4.15 or later)"
    )]
    NotThePeer {
        /// The bridge port whose peer was asked for.
        port: String,
        /// The id of the peer's namespace, as seen from this one.
        nsid: i32,
        /// The peer's ifindex in its namespace.
        peer_index: u32,
    },
    /// A netlink connection ended (its socket failed); the watch cannot be used any more.
    #[error("a netlink connection of the link watch has closed; open a new PortWatch")]
    Closed,
}

/// A watch on this network namespace's bridge ports: lists them with their veth peers' MAC
/// addresses, and waits for link changes. Needs a tokio runtime: it runs its two netlink
/// connections (requests, notifications) as tasks, ended when the watch is dropped.
pub struct PortWatch {
    /// Sends the dump and the peers' requests, on a socket of their own: a socket subscribed to
    /// notifications can have its buffer full when the kernel answers a request, and the kernel
    /// then drops the answer (the request would wait for ever).
    handle: Handle,
    /// The requests' connection task.
    requests: JoinHandle<()>,
    /// The notifications' connection task: reads the subscribed socket and queues what it gets.
    notifier: JoinHandle<()>,
    /// Link notifications (and overrun reports) not yet seen by [`PortWatch::changed`].
    notifications: UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
    /// MAC addresses of the peers read so far, by where they are (a peer that is gone or has
    /// no MAC address is not kept).
    peers: HashMap<PeerKey, MacAddr>,
    /// Ifindexes that notifications named since the last dump: their ports' peers are read again
    /// (a peer's MAC address set in its own namespace makes no notification here, but the peer
    /// coming up after it does, for the port).
    touched: HashSet<u32>,
    /// A notification was lost (the socket's buffer overran) or not understood: every peer is
    /// read again.
    touched_all: bool,
}

impl PortWatch {
    /// Subscribes to link notifications (RTNLGRP_LINK) first, so no change between the dump and
    /// the subscription is missed.
    pub async fn open() -> Result<PortWatch, LinkError> {
        let (notifier, _, notifications) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
                .map_err(LinkError::Open)?;
        let notifier = tokio::spawn(notifier);
        let (requests, handle, _) = match rtnetlink::new_connection() {
            Ok(connection) => connection,
            Err(error) => {
                notifier.abort();
                return Err(LinkError::Open(error));
            }
        };
        Ok(PortWatch {
            handle,
            requests: tokio::spawn(requests),
            notifier,
            notifications,
            peers: HashMap::new(),
            touched: HashSet::new(),
            touched_all: false,
        })
    }

    /// Every port of every bridge in this namespace, sorted, each with its peer's MAC when the
    /// port is a veth whose peer lives in another namespace.
    ///
    /// A peer is read once and remembered for as long as the port, its name, its peer's
    /// namespace and ifindex stay the same, and no notification names the port; a peer that
    /// vanished before it was read gets `None`.
    pub async fn ports(&mut self) -> Result<Vec<BridgePort>, LinkError> {
        let links: Vec<Link> = self
            .handle
            .link()
            .get()
            .set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::SkipStats])
            .execute()
            .map_err(LinkError::Dump)
            .try_filter_map(|message| async move { Ok(Link::of(&message)) })
            .try_collect()
            .await?;
        // A connection that died mid-dump ends the dump early without an error.
        if self.requests.is_finished() {
            return Err(LinkError::Closed);
        }
        let ports = dump::ports_of(&links);

        let current: HashSet<&PeerKey> = ports.iter().filter_map(|p| p.peer.as_ref()).collect();
        let touched = std::mem::take(&mut self.touched);
        if std::mem::take(&mut self.touched_all) {
            self.peers.clear();
        }
        self.peers
            .retain(|key, _| current.contains(key) && !touched.contains(&key.port_index));
        let unread: Vec<PeerKey> = current
            .into_iter()
            .filter(|key| !self.peers.contains_key(*key))
            .cloned()
            .collect();
        for key in unread {
            // A peer that vanished meanwhile is asked for again should its port stay. One peer
            // that cannot be read leaves its port without a MAC (never bound, so silent); it
            // does not hide every other port. A refusal for lack of privilege is for all.
            match read_peer(&self.handle, &key).await {
                Ok(Some(mac)) => {
                    self.peers.insert(key, mac);
                }
                Ok(None) => {}
                Err(error @ (LinkError::PeerDenied { .. } | LinkError::Closed)) => {
                    return Err(error)
                }
                Err(error) => tracing::warn!("{error}; the port stays unbound"),
            }
        }

        let mut out: Vec<BridgePort> = ports
            .into_iter()
            .map(|port| BridgePort {
                peer_mac: port.peer.and_then(|key| self.peers.get(&key).copied()),
                bridge: port.bridge,
                name: port.name,
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Waits until a link notification arrives, then drains the ones already queued (a burst is
    /// one change).
    pub async fn changed(&mut self) -> Result<(), LinkError> {
        let (first, _) = self.notifications.next().await.ok_or(LinkError::Closed)?;
        self.note(first);
        while let Ok((next, _)) = self.notifications.try_recv() {
            self.note(next);
        }
        Ok(())
    }

    /// Remembers which link a notification names, so the next dump reads its peer again.
    fn note(&mut self, notification: NetlinkMessage<RouteNetlinkMessage>) {
        match notification.payload {
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewLink(link) | RouteNetlinkMessage::DelLink(link),
            ) => {
                self.touched.insert(link.header.index);
            }
            _ => self.touched_all = true,
        }
    }
}

impl Drop for PortWatch {
    fn drop(&mut self) {
        self.requests.abort();
        self.notifier.abort();
    }
}

/// Reads the MAC address of the peer at `key` with one RTM_GETLINK in its namespace; `None`
/// when it has none, or is gone (ENODEV: the link vanished; EINVAL: its namespace did, and the
/// id with it).
async fn read_peer(handle: &Handle, key: &PeerKey) -> Result<Option<MacAddr>, LinkError> {
    let mut request = handle
        .link()
        .get()
        .match_index(key.peer_index)
        .set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::SkipStats]);
    request
        .message_mut()
        .attributes
        .push(LinkAttribute::IfNetnsId(key.nsid));
    match request.execute().try_next().await {
        Ok(Some(reply)) => match dump::peer_reply(key, &reply) {
            PeerReply::Peer(mac) => Ok(mac),
            PeerReply::NotThePeer => Err(LinkError::NotThePeer {
                port: key.port_name.clone(),
                nsid: key.nsid,
                peer_index: key.peer_index,
            }),
        },
        Ok(None) => Err(LinkError::Closed),
        Err(error) => match errno(&error) {
            Some(libc::ENODEV | libc::EINVAL) => Ok(None),
            Some(libc::EPERM | libc::EACCES) => Err(LinkError::PeerDenied {
                port: key.port_name.clone(),
                nsid: key.nsid,
            }),
            _ => Err(LinkError::Peer {
                port: key.port_name.clone(),
                nsid: key.nsid,
                peer_index: key.peer_index,
                source: error,
            }),
        },
    }
}

/// The errno (positive) of a netlink error reply.
fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::ErrorMessage;
    use std::num::NonZeroI32;

    #[test]
    fn errno_is_read_from_a_netlink_error_reply_only() {
        let mut message = ErrorMessage::default();
        message.code = NonZeroI32::new(-libc::ENODEV);
        assert_eq!(
            errno(&rtnetlink::Error::NetlinkError(message)),
            Some(libc::ENODEV)
        );
        assert_eq!(errno(&rtnetlink::Error::RequestFailed), None);
    }
}
