//! The nftables netlink socket (neli): send a transaction and collect its outcome, and dump the
//! objects of one table.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use neli::consts::socket::{Msg, NlFamily};
use neli::socket::NlSocket;
use neli::utils::Groups;

use enforcer_core::ruleset::TableFamily;

use crate::abi::*;
use crate::encode::Transaction;
use crate::wire::{self, AttrWriter};
use crate::NftError;

/// A dump reply is at most 32 KiB; a batch's error replies are small.
const RECEIVE_BUFFER: usize = 64 * 1024;
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests sent in one datagram when each is acknowledged: their acks fit the default
/// receive buffer (212 KiB) with room to spare.
const ACKS_QUEUED: usize = 64;

/// An open nftables netlink socket.
pub struct Socket {
    socket: NlSocket,
    /// The port id the kernel gave the socket: the monitor sees it on our own commits.
    port_id: u32,
    seq: u32,
    buffer: Vec<u8>,
}

/// The kernel's answer to one request message.
enum Reply {
    /// A data message (the batch protocol sends none; tolerated and ignored).
    Data,
    /// An error (negative errno) with the kernel's extended message, if any.
    Error(i32, Option<String>, u32),
}

impl Socket {
    /// Opens the socket. Needs no privilege; requests do.
    pub fn open() -> Result<Socket, NftError> {
        let socket = NlSocket::connect(NlFamily::Netfilter, None, Groups::empty())
            .map_err(NftError::Socket)?;
        // Extended acks carry the kernel's own words on what it rejected.
        let _ = socket.enable_ext_ack(true);
        set_timeout(&socket, REPLY_TIMEOUT).map_err(NftError::Socket)?;
        let port_id = socket.pid().map_err(NftError::Socket)?;
        Ok(Socket {
            socket,
            port_id,
            seq: seed(),
            buffer: vec![0; RECEIVE_BUFFER],
        })
    }

    /// The socket's netlink port id.
    pub fn port_id(&self) -> u32 {
        self.port_id
    }

    /// The next sequence number this socket will use.
    pub fn next_seq(&self) -> u32 {
        self.seq
    }

    /// Marks every sequence number up to `seq` as used (by a transaction built elsewhere).
    pub fn skip_past(&mut self, seq: u32) {
        self.seq = seq.wrapping_add(1);
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        seq
    }

    /// Sends a transaction in one `send` and returns once the kernel has committed it, or with
    /// the reason it rejected it (then nothing changed).
    pub fn commit(&mut self, transaction: &Transaction) -> Result<(), NftError> {
        // The whole batch must fit in one datagram; growing the buffer past the system limit
        // needs CAP_NET_ADMIN, which committing needs anyway.
        self.fit_send_buffer(transaction.bytes.len())?;
        let sent = self
            .socket
            .send(&transaction.bytes, Msg::empty())
            .map_err(NftError::Socket)?;
        if sent != transaction.bytes.len() {
            return Err(NftError::Socket(io::Error::other(format!(
                "sent {sent} of {} bytes of the batch",
                transaction.bytes.len()
            ))));
        }
        // The kernel handles the batch inside send(): every reply is queued by now. Read them
        // all: an error anywhere means the whole batch was rolled back.
        let mut acknowledged = false;
        let mut first_error = None;
        while !acknowledged && first_error.is_none() {
            for reply in self.receive()? {
                match reply {
                    Reply::Error(0, _, seq) if seq == transaction.last_seq() => acknowledged = true,
                    Reply::Error(0, _, _) | Reply::Data => {}
                    // A late reply to an earlier request (one that failed midway) is not ours.
                    Reply::Error(_, _, seq) if !transaction.numbers(seq) => {}
                    Reply::Error(errno, message, seq) => {
                        first_error.get_or_insert((errno, message, seq));
                    }
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some((errno, message, seq)) => Err(NftError::rejected(
                -errno,
                message,
                transaction.describe(seq),
            )),
        }
    }

    /// Sizes the send buffer for one datagram of `len` bytes (the kernel refuses a datagram
    /// larger than the buffer).
    fn fit_send_buffer(&self, len: usize) -> Result<(), NftError> {
        let size = len + 4096;
        set_buffer(&self.socket, libc::SO_SNDBUFFORCE, size)
            .or_else(|_| set_buffer(&self.socket, libc::SO_SNDBUF, size))
            .map_err(NftError::Socket)
    }

    /// The ruleset generation id: it changes with every committed transaction.
    pub fn generation(&mut self) -> Result<u32, NftError> {
        let data = self.request(NFT_MSG_GETGEN, NLM_F_ACK, NFPROTO_UNSPEC, &[])?;
        let id = wire::messages(&data)
            .find_map(|m| wire::attribute(m.attributes(), NFTA_GEN_ID).and_then(wire::be32));
        id.ok_or_else(|| NftError::Malformed("no generation id in the kernel's reply".into()))
    }

    /// Table `family name` as the kernel describes it (one NEWTABLE message, with its flags),
    /// `None` when it does not exist.
    pub fn table(&mut self, family: TableFamily, name: &str) -> Result<Option<Vec<u8>>, NftError> {
        let mut attrs = AttrWriter::new();
        attrs.string(NFTA_TABLE_NAME, name);
        match self.request(
            NFT_MSG_GETTABLE,
            NLM_F_ACK,
            nfproto(family),
            &attrs.finish(),
        ) {
            Ok(reply) => Ok(Some(reply)),
            Err(NftError::Rejected { errno, .. }) if errno == libc::ENOENT => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Dumps the chains, rules and sets of `family table` (raw reply messages, concatenated).
    pub fn dump_objects(&mut self, family: TableFamily, table: &str) -> Result<Vec<u8>, NftError> {
        let mut out = self.dump_chains(family, table)?;
        for (kind, table_attr) in [
            (NFT_MSG_GETSET, NFTA_SET_TABLE),
            (NFT_MSG_GETRULE, NFTA_RULE_TABLE),
        ] {
            out.extend(self.dump_of_table(kind, table_attr, family, table)?);
        }
        Ok(out)
    }

    /// Dumps the chains of `family table`, without their rules.
    pub fn dump_chains(&mut self, family: TableFamily, table: &str) -> Result<Vec<u8>, NftError> {
        self.dump_of_table(NFT_MSG_GETCHAIN, NFTA_CHAIN_TABLE, family, table)
    }

    /// Dumps the objects of one kind (`kind`, filtered by table attribute `table_attr`).
    fn dump_of_table(
        &mut self,
        kind: u16,
        table_attr: u16,
        family: TableFamily,
        table: &str,
    ) -> Result<Vec<u8>, NftError> {
        let mut attrs = AttrWriter::new();
        attrs.string(table_attr, table);
        self.request(kind, NLM_F_DUMP, nfproto(family), &attrs.finish())
    }

    /// Dumps the elements of set `set` of `family table`.
    pub fn dump_elements(
        &mut self,
        family: TableFamily,
        table: &str,
        set: &str,
    ) -> Result<Vec<u8>, NftError> {
        let mut attrs = AttrWriter::new();
        attrs
            .string(NFTA_SET_ELEM_LIST_TABLE, table)
            .string(NFTA_SET_ELEM_LIST_SET, set);
        self.request(
            NFT_MSG_GETSETELEM,
            NLM_F_DUMP,
            nfproto(family),
            &attrs.finish(),
        )
    }

    /// Sends one request and gathers its data replies until the dump ends or the ack arrives.
    fn request(
        &mut self,
        msg: u16,
        flags: u16,
        family: u8,
        attrs: &[u8],
    ) -> Result<Vec<u8>, NftError> {
        let seq = self.take_seq();
        let bytes = wire::request(msg, flags, seq, family, attrs);
        let mut data = Vec::new();
        let what = format!("reading table objects (request {msg})");
        self.exchange(&bytes, seq, &what, |message| {
            data.extend(message.to_bytes())
        })?;
        Ok(data)
    }

    /// Sends one request (`bytes`, numbered `seq`) and hands each data reply to `each` until
    /// the dump ends or the ack arrives; `what` names the request in errors.
    pub(crate) fn exchange(
        &mut self,
        bytes: &[u8],
        seq: u32,
        what: &str,
        mut each: impl FnMut(&wire::Message<'_>),
    ) -> Result<(), NftError> {
        self.socket
            .send(bytes, Msg::empty())
            .map_err(NftError::Socket)?;
        loop {
            let buf_len = self.recv_into_buffer()?;
            let mut finished = false;
            for message in wire::messages(&self.buffer[..buf_len]).filter(|m| m.seq == seq) {
                match message.kind {
                    NLMSG_DONE => finished = true,
                    NLMSG_ERROR => {
                        let (errno, text) = parse_error(&message);
                        if errno != 0 {
                            return Err(NftError::rejected(-errno, text, what.to_string()));
                        }
                        finished = true;
                    }
                    _ => each(&message),
                }
            }
            if finished {
                return Ok(());
            }
        }
    }

    /// Sends `messages` (each a request numbered from `first_seq` on, one after the other, each
    /// asking for an ack) in as few datagrams as fit, and returns each one's errno (0 for
    /// success), in order.
    pub(crate) fn acknowledged(
        &mut self,
        messages: &[Vec<u8>],
        first_seq: u32,
    ) -> Result<Vec<i32>, NftError> {
        let mut outcomes = vec![None; messages.len()];
        let mut sent = 0;
        while sent < messages.len() {
            // At most ACKS_QUEUED requests per datagram: each ack is a buffer of its own in
            // the receive queue (about 1 KiB with its overhead), which must not overflow.
            let mut datagram = Vec::new();
            let start = sent;
            while sent < messages.len() && sent - start < ACKS_QUEUED {
                datagram.extend_from_slice(&messages[sent]);
                sent += 1;
            }
            self.fit_send_buffer(datagram.len())?;
            self.socket
                .send(&datagram, Msg::empty())
                .map_err(NftError::Socket)?;
            while outcomes[start..sent].iter().any(Option::is_none) {
                let buf_len = self.recv_into_buffer()?;
                for message in wire::messages(&self.buffer[..buf_len]) {
                    let index = message.seq.wrapping_sub(first_seq) as usize;
                    if message.kind == NLMSG_ERROR && (start..sent).contains(&index) {
                        outcomes[index] = Some(parse_error(&message).0);
                    }
                }
            }
        }
        Ok(outcomes.into_iter().map(|o| o.unwrap_or(0)).collect())
    }

    fn recv_into_buffer(&mut self) -> Result<usize, NftError> {
        let (len, _) = self
            .socket
            .recv(&mut self.buffer[..], Msg::empty())
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => NftError::Timeout,
                _ => NftError::Socket(e),
            })?;
        Ok(len)
    }

    /// Everything queued on the socket now (waiting up to the timeout for the first datagram).
    fn receive(&mut self) -> Result<Vec<Reply>, NftError> {
        let mut replies = Vec::new();
        let mut flags = Msg::empty();
        loop {
            let result = self.socket.recv(&mut self.buffer[..], flags);
            let len = match result {
                Ok((len, _)) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !replies.is_empty() => break,
                Err(e) => return Err(reply_failed(e)),
            };
            for message in wire::messages(&self.buffer[..len]) {
                if message.kind == NLMSG_ERROR {
                    let (errno, text) = parse_error(&message);
                    replies.push(Reply::Error(errno, text, message.seq));
                } else {
                    replies.push(Reply::Data);
                }
            }
            flags = Msg::DONTWAIT;
        }
        Ok(replies)
    }
}

/// What a failed wait for a reply means: no reply within the socket's timeout, or a broken
/// socket.
pub(crate) fn reply_failed(error: io::Error) -> NftError {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => NftError::Timeout,
        _ => NftError::Socket(error),
    }
}

/// errno (negative) and the extended-ack message of an NLMSG_ERROR.
pub(crate) fn parse_error(message: &wire::Message<'_>) -> (i32, Option<String>) {
    let payload = message.payload;
    let errno = payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(-libc::EIO);
    // After errno comes the offending request: its header only when the kernel adds TLVs, or
    // the whole message otherwise.
    let text = if message.flags & NLM_F_ACK_TLVS != 0 {
        let original_len = payload
            .get(4..8)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .unwrap_or(0);
        let skip = 4 + if message.flags & NLM_F_CAPPED != 0 {
            wire::NLMSG_HDRLEN
        } else {
            wire::align(original_len)
        };
        payload
            .get(skip..)
            .and_then(|tlvs| wire::attribute(tlvs, NLMSGERR_ATTR_MSG))
            .map(wire::string)
    } else {
        None
    };
    (errno, text)
}

pub(crate) fn set_buffer(socket: &NlSocket, option: i32, size: usize) -> io::Result<()> {
    set_option(
        socket,
        option,
        &(size.min(i32::MAX as usize) as libc::c_int),
    )
}

pub(crate) fn set_timeout(socket: &NlSocket, timeout: Duration) -> io::Result<()> {
    let value = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    set_option(socket, libc::SO_RCVTIMEO, &value)
}

/// `setsockopt(SOL_SOCKET, option, value)`.
fn set_option<T>(socket: &NlSocket, option: i32, value: &T) -> io::Result<()> {
    // SAFETY: plain setsockopt on a socket we own, with a pointer to a value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A sequence-number seed that differs between processes, so stale replies never match.
fn seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (std::process::id() << 16) ^ nanos | 1
}
