//! The nftables monitor: the notifications the kernel multicasts for every committed
//! transaction, by anyone (what `nft monitor` prints), read over a neli socket and grouped
//! into one [`Commit`] per transaction. The daemon uses it to undo at once what another
//! program does to its tables.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use neli::consts::socket::{Msg, NlFamily};
use neli::socket::NlSocket;
use neli::utils::Groups;

use crate::abi::*;
use crate::wire::{self, Message};
use crate::NftError;

/// The nftables multicast group (`NFNLGRP_NFTABLES`).
const NFNLGRP_NFTABLES: u32 = 7;
/// The kernel queues notifications up to this many bytes before it drops them and reports
/// ENOBUFS. A 30,000-element commit of our own notifies about 3 MiB; that is allowed to
/// overflow (the fallback is one read-back), a tamper's few messages never are.
const RECEIVE_QUEUE: usize = 4 << 20;
/// One datagram holds at most a page or two of notifications.
const DATAGRAM: usize = 64 * 1024;
/// Changes kept per commit to describe it, of tables themselves and of what they hold; the
/// rest are counted.
const CHANGES_KEPT: usize = 8;

/// One committed transaction, as its notifications describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// The netlink port id of the socket that sent it ([`crate::Nftables::port_id`] for our own).
    pub port: u32,
    /// The ruleset generation it produced.
    pub generation: u32,
    /// The committing process's id and command name, as the kernel recorded them.
    pub process: Option<(u32, String)>,
    /// The names of the tables it changed, each once (any family).
    pub tables: BTreeSet<String>,
    /// Its first changes, as `nft monitor` words them (`delete table inet enforcer`), each with
    /// how many times it came in a row (a flushed chain deletes each of its rules).
    pub changes: Vec<(String, usize)>,
    /// How many changes it made in all.
    pub change_count: usize,
    /// How many of `changes`, at their start, are changes of a table itself.
    table_changes: usize,
}

impl Commit {
    /// Whether it changed a table named `table` (of any family).
    pub fn touches(&self, table: &str) -> bool {
        self.tables.contains(table)
    }

    /// Who committed it and what it changed, for a log line: `nft (pid 5063): delete table inet
    /// enforcer`.
    pub fn describe(&self) -> String {
        let who = match &self.process {
            Some((pid, name)) => format!("{name} (pid {pid})"),
            None => format!("netlink port {}", self.port),
        };
        let changes: Vec<String> = self
            .changes
            .iter()
            .map(|(change, times)| match times {
                1 => change.clone(),
                _ => format!("{change} (x{times})"),
            })
            .collect();
        let mut text = format!("{who}: {}", changes.join("; "));
        let shown: usize = self.changes.iter().map(|(_, times)| times).sum();
        let more = self.change_count.saturating_sub(shown);
        if more > 0 {
            text.push_str(&format!("; and {more} more changes"));
        }
        text
    }

    /// Adds one notification (not the closing NEWGEN).
    fn add(&mut self, message: &Message<'_>) {
        let Some((verb, object, name_attr)) = described(message.kind & 0xff) else {
            return;
        };
        let attrs = message.attributes();
        let text = |ty| wire::attribute(attrs, ty).map(wire::string);
        // Every object's first attribute names its table.
        let table = text(1).unwrap_or_default();
        self.change_count += 1;
        let family = message.payload.first().map_or("?", |f| family_name(*f));
        let mut change = format!("{verb} {object} {family} {table}");
        if let Some(name) = name_attr.and_then(text) {
            change.push(' ');
            change.push_str(&name);
        }
        if object == "table" {
            // What happened to a table comes first: deleting one notifies each of its rules,
            // sets and chains before the table itself.
            if self.table_changes < CHANGES_KEPT {
                self.table_changes += 1;
                self.changes.insert(self.table_changes - 1, (change, 1));
            }
            return self.note_table(table);
        }
        let repeated = self.changes.len() > self.table_changes
            && self.changes.last().is_some_and(|(last, _)| *last == change);
        if let (true, Some((_, times))) = (repeated, self.changes.last_mut()) {
            *times += 1;
        } else if self.changes.len() < self.table_changes + CHANGES_KEPT {
            self.changes.push((change, 1));
        }
        self.note_table(table);
    }

    /// Records that the commit changed table `table`.
    fn note_table(&mut self, table: String) {
        self.tables.insert(table);
    }
}

/// What the monitor saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorEvent {
    /// A transaction was committed.
    Committed(Commit),
    /// Notifications were lost (the kernel's queue for the socket overflowed): some commit
    /// may have gone unseen, so the tables must be read back.
    Overflowed,
}

/// A subscription to nftables' notifications.
pub struct Monitor {
    socket: NlSocket,
    buffer: Vec<u8>,
    commits: Commits,
}

/// Groups notifications into commits.
#[derive(Default)]
struct Commits {
    /// The transaction whose notifications are arriving (until its NEWGEN).
    open: Option<Commit>,
}

impl Monitor {
    /// Subscribes (joining the group and the large receive queue need CAP_NET_ADMIN).
    /// The socket does not block: [`Monitor::read`] returns what is queued.
    pub fn open() -> Result<Monitor, NftError> {
        let socket = NlSocket::connect(
            NlFamily::Netfilter,
            None,
            Groups::new_groups(&[NFNLGRP_NFTABLES]),
        )
        .map_err(NftError::Socket)?;
        socket.nonblock().map_err(NftError::Socket)?;
        crate::netlink::set_buffer(&socket, libc::SO_RCVBUFFORCE, RECEIVE_QUEUE)
            .or_else(|_| crate::netlink::set_buffer(&socket, libc::SO_RCVBUF, RECEIVE_QUEUE))
            .map_err(NftError::Socket)?;
        Ok(Monitor {
            socket,
            buffer: vec![0; DATAGRAM],
            commits: Commits::default(),
        })
    }

    /// Every commit whose notifications are complete by now, and overflows, in order; empty
    /// when nothing is queued.
    pub fn read(&mut self) -> Result<Vec<MonitorEvent>, NftError> {
        let mut events = Vec::new();
        loop {
            let len = match self.socket.recv(&mut self.buffer[..], Msg::DONTWAIT) {
                Ok((len, _)) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(events),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // Notifications were dropped, which ones is unknown: the commit being
                    // assembled may never be whole, so it is let go; the read-back that an
                    // overflow calls for sees whatever it did.
                    self.commits.open = None;
                    events.push(MonitorEvent::Overflowed);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // What was read stays reported; the error comes with the next read.
                Err(_) if !events.is_empty() => return Ok(events),
                Err(e) => return Err(NftError::Socket(e)),
            };
            events.extend(self.commits.absorb(&self.buffer[..len]));
        }
    }
}

impl Commits {
    /// Folds one datagram's notifications in; returns the commits they complete.
    fn absorb(&mut self, datagram: &[u8]) -> Vec<MonitorEvent> {
        let mut done = Vec::new();
        for message in wire::messages(datagram) {
            if message.kind >> 8 != NFNL_SUBSYS_NFTABLES {
                continue;
            }
            if message.kind & 0xff == NFT_MSG_NEWGEN {
                let mut commit = self.open.take().unwrap_or_default();
                let attrs = message.attributes();
                let number = |ty| wire::attribute(attrs, ty).and_then(wire::be32);
                commit.generation = number(NFTA_GEN_ID).unwrap_or(0);
                commit.port = message.port;
                commit.process = number(NFTA_GEN_PROC_PID).map(|pid| {
                    let name = wire::attribute(attrs, NFTA_GEN_PROC_NAME).map(wire::string);
                    (pid, name.unwrap_or_default())
                });
                done.push(MonitorEvent::Committed(commit));
            } else {
                self.open.get_or_insert_with(Commit::default).add(&message);
            }
        }
        done
    }
}

impl AsRawFd for Monitor {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// How `nft monitor` words a notification type: verb, object, and the attribute that names the
/// object within its table (a rule's is its chain).
fn described(kind: u16) -> Option<(&'static str, &'static str, Option<u16>)> {
    Some(match kind {
        NFT_MSG_NEWTABLE => ("add", "table", None),
        NFT_MSG_DELTABLE => ("delete", "table", None),
        NFT_MSG_NEWCHAIN => ("add", "chain", Some(NFTA_CHAIN_NAME)),
        NFT_MSG_DELCHAIN => ("delete", "chain", Some(NFTA_CHAIN_NAME)),
        NFT_MSG_NEWRULE => ("add", "rule", Some(NFTA_RULE_CHAIN)),
        NFT_MSG_DELRULE => ("delete", "rule", Some(NFTA_RULE_CHAIN)),
        NFT_MSG_NEWSET => ("add", "set", Some(NFTA_SET_NAME)),
        NFT_MSG_DELSET => ("delete", "set", Some(NFTA_SET_NAME)),
        NFT_MSG_NEWSETELEM => ("add", "element", Some(NFTA_SET_ELEM_LIST_SET)),
        NFT_MSG_DELSETELEM => ("delete", "element", Some(NFTA_SET_ELEM_LIST_SET)),
        NFT_MSG_NEWOBJ => ("add", "object", Some(NFTA_OBJ_NAME)),
        NFT_MSG_DELOBJ => ("delete", "object", Some(NFTA_OBJ_NAME)),
        NFT_MSG_NEWFLOWTABLE => ("add", "flowtable", Some(NFTA_FLOWTABLE_NAME)),
        NFT_MSG_DELFLOWTABLE => ("delete", "flowtable", Some(NFTA_FLOWTABLE_NAME)),
        _ => return None,
    })
}

/// A table family's name as `nft` writes it.
fn family_name(nfproto: u8) -> &'static str {
    match nfproto {
        NFPROTO_INET => "inet",
        NFPROTO_IPV4 => "ip",
        NFPROTO_IPV6 => "ip6",
        NFPROTO_ARP => "arp",
        NFPROTO_BRIDGE => "bridge",
        NFPROTO_NETDEV => "netdev",
        _ => "?",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::AttrWriter;

    /// A notification as the kernel sends it: its type, port id, family, attributes.
    fn notification(kind: u16, port: u32, family: u8, attrs: AttrWriter) -> Vec<u8> {
        let mut bytes = wire::request(kind, 0, 0, family, &attrs.finish());
        bytes[12..16].copy_from_slice(&port.to_ne_bytes());
        bytes
    }

    fn named(pairs: &[(u16, &str)]) -> AttrWriter {
        let mut attrs = AttrWriter::new();
        for (ty, value) in pairs {
            attrs.string(*ty, value);
        }
        attrs
    }

    fn new_generation(port: u32, id: u32, pid: u32, name: &str) -> Vec<u8> {
        let mut attrs = AttrWriter::new();
        attrs
            .be32(NFTA_GEN_ID, id)
            .be32(NFTA_GEN_PROC_PID, pid)
            .string(NFTA_GEN_PROC_NAME, name);
        notification(NFT_MSG_NEWGEN, port, NFPROTO_UNSPEC, attrs)
    }

    #[test]
    fn a_transaction_is_one_commit_naming_its_tables_and_committer() {
        let mut datagram = notification(
            NFT_MSG_DELCHAIN,
            77,
            NFPROTO_INET,
            named(&[(NFTA_CHAIN_TABLE, "enforcer"), (NFTA_CHAIN_NAME, "forward")]),
        );
        datagram.extend(notification(
            NFT_MSG_DELTABLE,
            77,
            NFPROTO_INET,
            named(&[(NFTA_TABLE_NAME, "enforcer")]),
        ));
        datagram.extend(notification(
            NFT_MSG_NEWTABLE,
            77,
            NFPROTO_IPV4,
            named(&[(NFTA_TABLE_NAME, "filter")]),
        ));
        // The end of the transaction arrives in a second datagram.
        let mut monitor = Commits::default();
        assert!(monitor.absorb(&datagram).is_empty());
        let events = monitor.absorb(&new_generation(77, 9, 5063, "nft"));
        let [MonitorEvent::Committed(commit)] = events.as_slice() else {
            panic!("one commit expected: {events:?}");
        };
        assert!(commit.touches("enforcer") && commit.touches("filter"));
        assert!(!commit.touches("neighbour"));
        assert_eq!((commit.port, commit.generation), (77, 9));
        assert_eq!(
            commit.describe(),
            "nft (pid 5063): delete table inet enforcer; add table ip filter; delete chain inet \
             enforcer forward"
        );
    }

    #[test]
    fn a_large_commit_is_described_by_its_first_changes_and_a_count() {
        let mut monitor = Commits::default();
        let mut datagram = Vec::new();
        // A flushed chain: one notification per rule; then more sets than are kept.
        let sets = (0..CHANGES_KEPT + 4).map(|i| format!("set{i}"));
        let names: Vec<String> = std::iter::repeat("egress_v4_24".to_string())
            .take(3)
            .chain(sets)
            .collect();
        for name in &names {
            datagram.extend(notification(
                NFT_MSG_NEWSETELEM,
                3,
                NFPROTO_INET,
                named(&[
                    (NFTA_SET_ELEM_LIST_TABLE, "enforcer"),
                    (NFTA_SET_ELEM_LIST_SET, name),
                ]),
            ));
        }
        datagram.extend(new_generation(3, 10, 1, "enforcer"));
        let events = monitor.absorb(&datagram);
        let [MonitorEvent::Committed(commit)] = events.as_slice() else {
            panic!("one commit expected: {events:?}");
        };
        assert_eq!(commit.change_count, names.len());
        let described = commit.describe();
        assert!(
            described.starts_with(
                "enforcer (pid 1): add element inet enforcer egress_v4_24 (x3); add element inet \
                 enforcer set0;"
            ),
            "{described}"
        );
        assert!(
            described.ends_with("set6; and 5 more changes"),
            "{described}"
        );
    }
}
