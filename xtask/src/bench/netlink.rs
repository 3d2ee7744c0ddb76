//! Kernel notifications of one namespace, stamped as they arrive: a link attached to a bridge
//! (RTM_NEWLINK carrying IFLA_MASTER), an nftables chain added (NFT_MSG_NEWCHAIN), elements
//! added to a set (NFT_MSG_NEWSETELEM) and the end of each commit (NFT_MSG_NEWGEN, with the
//! committing process's name). One thread of ours reads both netlink sockets and stamps
//! each message when `poll` wakes it, so a latency is the time between two kernel events, not
//! between the output lines of two tools (`ip monitor`, `nft monitor`) read through pipes.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use enforcer_harness::{poll_until, Netns};

/// RTM_NEWLINK, and the link attributes read from it.
const RTM_NEWLINK: u16 = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
/// Size of `struct ifinfomsg`, before a link message's attributes.
const IFINFOMSG_LEN: usize = 16;
/// nftables' netlink subsystem, its messages and chain attributes.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWGEN: u16 = 15;
const NFTA_GEN_PROC_NAME: u16 = 3;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
/// Size of `struct nfgenmsg`, before an nftables message's attributes.
const NFGENMSG_LEN: usize = 4;
/// Multicast groups: RTNLGRP_LINK, NFNLGRP_NFTABLES.
const RTNLGRP_LINK: u32 = 1;
const NFNLGRP_NFTABLES: u32 = 7;
/// Receive buffer of each socket: a commit of a few thousand objects fits.
const RECEIVE_BUFFER: libc::c_int = 32 << 20;
/// The longest a watch runs.
const WATCH_LIMIT: Duration = Duration::from_secs(1800);

/// What a notification said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A link (by name) is a port of the link with ifindex `master`.
    Attached {
        /// The link's name.
        port: String,
        /// The ifindex of its master (a bridge here).
        master: u32,
    },
    /// A chain was added to a table of family `family` (NFPROTO_*).
    Chain {
        /// NFPROTO_BRIDGE is 7, NFPROTO_INET 1.
        family: u8,
        /// The table's name.
        table: String,
        /// The chain's name.
        chain: String,
    },
    /// Elements were added to a set.
    Elements {
        /// The table's name.
        table: String,
        /// The set's name.
        set: String,
        /// Each element's key bytes.
        keys: Vec<Vec<u8>>,
    },
    /// A commit ended.
    Commit {
        /// The committing process's command name (`nft`, `enforcer`).
        process: String,
    },
}

/// A notification and when it arrived.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When `poll` returned with it (wall clock, as Docker's event times).
    pub at: SystemTime,
    /// What it said.
    pub event: Event,
}

/// A running watch of one namespace; stopped on drop.
pub struct Watch {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Why the reader stopped early (notifications lost, a socket failed).
    failure: Arc<Mutex<Option<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Watch {
    /// Subscribes in `ns` and returns once both sockets are subscribed.
    pub fn start(ns: &Netns) -> Result<Watch> {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let failure: Arc<Mutex<Option<String>>> = Arc::default();
        let (ready, subscribed) = mpsc::channel();
        let (flag, sink, failed) = (stop.clone(), seen.clone(), failure.clone());
        let reader = ns.spawn(move || {
            let sockets = match subscribe() {
                Ok(sockets) => sockets,
                Err(error) => {
                    let _ = ready.send(Err(error));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            if let Err(error) = read_until_stopped(&sockets, &flag, &sink) {
                *failed.lock().unwrap() = Some(format!("{error:#}"));
            }
        });
        subscribed
            .recv_timeout(Duration::from_secs(10))
            .context("the netlink watch did not subscribe within 10 s")??;
        Ok(Watch {
            stop,
            seen,
            failure,
            reader: Some(reader),
        })
    }

    /// How many notifications arrived so far.
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The notifications from the `from`-th on.
    pub fn since(&self, from: usize) -> Vec<Seen> {
        self.seen.lock().unwrap()[from..].to_vec()
    }

    /// Fails when the reader has stopped early (a measurement from here on would be void).
    pub fn healthy(&self) -> Result<()> {
        match self.failure.lock().unwrap().as_ref() {
            Some(failure) => bail!("{failure}"),
            None => Ok(()),
        }
    }

    /// Waits (at most `limit`, looking every millisecond) until `found` finds something in the
    /// notifications from the `from`-th on; fails when the reader has stopped early.
    pub fn wait_for<T>(
        &self,
        from: usize,
        limit: Duration,
        mut found: impl FnMut(&[Seen]) -> Option<T>,
    ) -> Result<Option<T>> {
        let mut result = None;
        poll_until(limit, Duration::from_millis(1), || {
            result = found(&self.since(from));
            result.is_some() || self.failure.lock().unwrap().is_some()
        });
        self.healthy()?;
        Ok(result)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The ifindex of `link` in `ns`.
pub fn ifindex(ns: &Netns, link: &str) -> Result<u32> {
    let output = ns.exec_ok("ip", &["-o", "link", "show", "dev", link]);
    let text = String::from_utf8_lossy(&output.stdout);
    let index = text.split(':').next().unwrap_or("").trim();
    index
        .parse()
        .with_context(|| format!("no ifindex in `ip -o link show dev {link}`: {text}"))
}

/// The two subscribed sockets: link notifications, nftables notifications.
fn subscribe() -> Result<[OwnedFd; 2]> {
    Ok([
        socket(libc::NETLINK_ROUTE, RTNLGRP_LINK)?,
        socket(libc::NETLINK_NETFILTER, NFNLGRP_NFTABLES)?,
    ])
}

/// A netlink socket of `protocol` subscribed to `group`, with a large receive buffer.
fn socket(protocol: libc::c_int, group: u32) -> Result<OwnedFd> {
    // SAFETY: socket has no memory preconditions; a valid fd it returns is ours to own.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    ensure!(
        fd >= 0,
        "cannot open a netlink socket (protocol {protocol}): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_nl is valid (port id 0: the kernel picks one).
    let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let size = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: address is a valid sockaddr_nl of the given size.
    let rc = unsafe { libc::bind(fd.as_raw_fd(), std::ptr::addr_of!(address).cast(), size) };
    ensure!(
        rc == 0,
        "cannot bind a netlink socket: {}",
        std::io::Error::last_os_error()
    );
    set_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RECEIVE_BUFFER)
        .context("setting a netlink socket's receive buffer (needs CAP_NET_ADMIN)")?;
    set_option(
        &fd,
        libc::SOL_NETLINK,
        libc::NETLINK_ADD_MEMBERSHIP,
        group as libc::c_int,
    )
    .with_context(|| format!("subscribing to netlink group {group} (protocol {protocol})"))?;
    Ok(fd)
}

/// setsockopt with an int value.
fn set_option(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> Result<()> {
    let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value is an int of the given size, read by the kernel only.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::addr_of!(value).cast(),
            size,
        )
    };
    ensure!(
        rc == 0,
        "setsockopt({level}, {name}): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Reads both sockets until `stop` is set (or [`WATCH_LIMIT`] has passed), adding what they
/// say to `seen`. A lost notification (the receive buffer overran) is an error: a latency
/// could then be measured from the wrong event.
fn read_until_stopped(
    sockets: &[OwnedFd; 2],
    stop: &AtomicBool,
    seen: &Mutex<Vec<Seen>>,
) -> Result<()> {
    let started = Instant::now();
    let mut buffer = vec![0u8; 1 << 20];
    while !stop.load(Ordering::SeqCst) && started.elapsed() < WATCH_LIMIT {
        let mut fds = sockets.each_ref().map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: fds is an array of two valid pollfd structures.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, 100) };
        let at = SystemTime::now();
        ensure!(
            ready >= 0,
            "poll on the netlink watch: {}",
            std::io::Error::last_os_error()
        );
        for (fd, polled) in sockets.iter().zip(fds) {
            if polled.revents != 0 {
                drain(fd, &mut buffer, at, seen)?;
            }
        }
    }
    Ok(())
}

/// Reads every datagram queued on `fd`, stamped `at`.
fn drain(fd: &OwnedFd, buffer: &mut [u8], at: SystemTime, seen: &Mutex<Vec<Seen>>) -> Result<()> {
    loop {
        // SAFETY: buffer is valid for writes of its length.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(()),
                Some(libc::ENOBUFS) => bail!(
                    "netlink notifications were lost (the watch's receive buffer overran): the \
                     measurement is void"
                ),
                _ => return Err(error).context("reading a netlink socket"),
            }
        }
        let events = parse(&buffer[..n as usize]);
        seen.lock()
            .unwrap()
            .extend(events.into_iter().map(|event| Seen { at, event }));
    }
}

/// The events of one datagram (messages of other kinds are left out).
pub fn parse(mut datagram: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    while datagram.len() >= 16 {
        let length = u32::from_ne_bytes(datagram[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(datagram[4..6].try_into().unwrap());
        if length < 16 || length > datagram.len() {
            break;
        }
        let body = &datagram[16..length];
        if let Some(event) = event_of(kind, body) {
            events.push(event);
        }
        datagram = &datagram[align(length).min(datagram.len())..];
    }
    events
}

/// The event one message (type `kind`, payload `body`) reports, if it is one we watch.
fn event_of(kind: u16, body: &[u8]) -> Option<Event> {
    if kind == RTM_NEWLINK && body.len() >= IFINFOMSG_LEN {
        let attributes = attributes(&body[IFINFOMSG_LEN..]);
        let master = attributes.iter().find(|(t, _)| *t == IFLA_MASTER)?.1;
        return Some(Event::Attached {
            port: text(attributes.iter().find(|(t, _)| *t == IFLA_IFNAME)?.1),
            master: u32::from_ne_bytes(master.get(..4)?.try_into().ok()?),
        });
    }
    if kind >> 8 != NFNL_SUBSYS_NFTABLES || body.len() < NFGENMSG_LEN {
        return None;
    }
    match kind & 0xff {
        NFT_MSG_NEWGEN => {
            let attributes = attributes(&body[NFGENMSG_LEN..]);
            let process = attributes
                .iter()
                .find(|(t, _)| *t == NFTA_GEN_PROC_NAME)
                .map(|(_, v)| text(v));
            Some(Event::Commit {
                process: process.unwrap_or_default(),
            })
        }
        NFT_MSG_NEWCHAIN => {
            let attributes = attributes(&body[NFGENMSG_LEN..]);
            let named = |kind| {
                attributes
                    .iter()
                    .find(|(t, _)| *t == kind)
                    .map(|(_, v)| text(v))
            };
            Some(Event::Chain {
                family: body[0],
                table: named(NFTA_CHAIN_TABLE)?,
                chain: named(NFTA_CHAIN_NAME)?,
            })
        }
        NFT_MSG_NEWSETELEM => {
            let attributes = attributes(&body[NFGENMSG_LEN..]);
            let find = |kind| attributes.iter().find(|(t, _)| *t == kind).map(|(_, v)| *v);
            let keys = self::attributes(find(NFTA_SET_ELEM_LIST_ELEMENTS)?)
                .into_iter()
                .filter(|(t, _)| *t == NFTA_LIST_ELEM)
                .filter_map(|(_, element)| {
                    let key = self::attributes(element)
                        .into_iter()
                        .find(|(t, _)| *t == NFTA_SET_ELEM_KEY)?
                        .1;
                    let value = self::attributes(key)
                        .into_iter()
                        .find(|(t, _)| *t == NFTA_DATA_VALUE)?
                        .1;
                    Some(value.to_vec())
                })
                .collect();
            Some(Event::Elements {
                table: text(find(NFTA_SET_ELEM_LIST_TABLE)?),
                set: text(find(NFTA_SET_ELEM_LIST_SET)?),
                keys,
            })
        }
        _ => None,
    }
}

/// The (type, value) attributes of a netlink message's payload (nested-flag bits cleared).
fn attributes(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let length = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if length < 4 || length > data.len() {
            break;
        }
        out.push((kind, &data[4..length]));
        data = &data[align(length).min(data.len())..];
    }
    out
}

/// A netlink string attribute, without its terminating NUL.
fn text(value: &[u8]) -> String {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// Netlink's 4-byte alignment.
fn align(length: usize) -> usize {
    (length + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One netlink message of type `kind` with `header` and the attributes `attrs`.
    fn message(kind: u16, header: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = header.to_vec();
        for (t, value) in attrs {
            body.extend(((value.len() + 4) as u16).to_ne_bytes());
            body.extend(t.to_ne_bytes());
            body.extend(*value);
            body.resize(align(body.len()), 0);
        }
        let mut out = ((body.len() + 16) as u32).to_ne_bytes().to_vec();
        out.extend(kind.to_ne_bytes());
        out.extend([0u8; 10]);
        out.extend(body);
        out
    }

    #[test]
    fn added_elements_are_read_with_their_keys() {
        let nested = |t: u16, value: &[u8]| {
            let mut out = ((value.len() + 4) as u16).to_ne_bytes().to_vec();
            out.extend(t.to_ne_bytes());
            out.extend(value);
            out.resize(align(out.len()), 0);
            out
        };
        let element = |key: &[u8]| {
            nested(
                NFTA_LIST_ELEM,
                &nested(NFTA_SET_ELEM_KEY, &nested(NFTA_DATA_VALUE, key)),
            )
        };
        let list = [element(&[10, 151, 0, 10]), element(&[10, 151, 0, 11])].concat();
        let datagram = message(
            NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM,
            &[1, 0, 0, 0],
            &[
                (NFTA_SET_ELEM_LIST_TABLE, b"enforcer\0"),
                (NFTA_SET_ELEM_LIST_SET, b"roles_v4\0"),
                (NFTA_SET_ELEM_LIST_ELEMENTS, &list),
            ],
        );
        assert_eq!(
            parse(&datagram),
            vec![Event::Elements {
                table: "enforcer".into(),
                set: "roles_v4".into(),
                keys: vec![vec![10, 151, 0, 10], vec![10, 151, 0, 11]],
            }]
        );
    }

    #[test]
    fn a_link_with_a_master_a_chain_and_a_commit_are_read_and_other_messages_skipped() {
        let mut datagram = message(
            RTM_NEWLINK,
            &[0; IFINFOMSG_LEN],
            &[
                (IFLA_IFNAME, b"veth12ab\0"),
                (IFLA_MASTER, &7u32.to_ne_bytes()),
            ],
        );
        datagram.extend(message(
            RTM_NEWLINK,
            &[0; IFINFOMSG_LEN],
            &[(IFLA_IFNAME, b"lo\0")],
        ));
        datagram.extend(message(
            NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWCHAIN,
            &[7, 0, 0, 0],
            &[
                (NFTA_CHAIN_TABLE, b"enforcer\0"),
                (NFTA_CHAIN_NAME, b"port_veth12ab\0"),
            ],
        ));
        datagram.extend(message(
            NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN,
            &[0; 4],
            &[(NFTA_GEN_PROC_NAME, b"nft\0")],
        ));
        assert_eq!(
            parse(&datagram),
            vec![
                Event::Attached {
                    port: "veth12ab".into(),
                    master: 7
                },
                Event::Chain {
                    family: 7,
                    table: "enforcer".into(),
                    chain: "port_veth12ab".into()
                },
                Event::Commit {
                    process: "nft".into()
                },
            ]
        );
    }
}
