//! An AF_PACKET raw socket: what a process holding CAP_NET_RAW can send and receive.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::frames::Mac;

pub(crate) const ETH_P_ALL: u16 = libc::ETH_P_ALL as u16;

/// An AF_PACKET raw socket bound to one interface.
pub(crate) struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
    iface: String,
}

impl PacketSocket {
    /// Opens a socket on `iface` receiving `protocol` (an ethertype, `ETH_P_ALL` for every
    /// frame, 0 for none: a socket that only sends).
    pub(crate) fn open(iface: &str, protocol: u16) -> std::io::Result<PacketSocket> {
        let name = std::ffi::CString::new(iface)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: `name` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Protocol 0 at creation: nothing is received before the bind picks the interface.
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let socket = PacketSocket {
            fd,
            ifindex: ifindex as i32,
            iface: iface.to_string(),
        };
        if protocol != 0 {
            let mut address = socket.address();
            address.sll_protocol = protocol.to_be();
            // SAFETY: `address` is a valid sockaddr_ll of the given length.
            let rc = unsafe {
                libc::bind(
                    socket.fd.as_raw_fd(),
                    (&address as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(socket)
    }

    pub(crate) fn address(&self) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data, valid when zeroed.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_ifindex = self.ifindex;
        address.sll_halen = 6;
        address
    }

    /// The interface's own Ethernet address.
    pub(crate) fn mac(&self) -> std::io::Result<Mac> {
        // SAFETY: ifreq is plain data, valid when zeroed.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request
            .ifr_name
            .iter_mut()
            .zip(self.iface.bytes().take(libc::IFNAMSIZ - 1))
        {
            *slot = byte as libc::c_char;
        }
        // SAFETY: SIOCGIFHWADDR fills the ifreq we pass, which lives through the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut request) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: SIOCGIFHWADDR succeeded, so the union holds the hardware address.
        let data = unsafe { request.ifr_ifru.ifru_hwaddr.sa_data };
        let mut mac = [0u8; 6];
        for (byte, value) in mac.iter_mut().zip(data) {
            *byte = value as u8;
        }
        Ok(Mac(mac))
    }

    /// Sends one whole Ethernet frame.
    pub(crate) fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        let mut address = self.address();
        address.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` and `address` are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&address as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        match sent {
            n if n < 0 => Err(std::io::Error::last_os_error()),
            n if n as usize != frame.len() => Err(std::io::Error::other(format!(
                "sent {n} of {} bytes",
                frame.len()
            ))),
            _ => Ok(()),
        }
    }

    pub(crate) fn set_receive_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        let value = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: `value` is a valid timeval of the given length.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&value as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one frame that arrived on the interface (frames it sent are skipped):
    /// `Ok(None)` after the receive timeout or an interrupting signal.
    pub(crate) fn receive(&self, buffer: &mut [u8]) -> std::io::Result<Option<usize>> {
        // SAFETY: sockaddr_ll is plain data, valid when zeroed.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buffer` and `from` are valid for the lengths given.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            return match error.kind() {
                std::io::ErrorKind::WouldBlock
                | std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::Interrupted => Ok(None),
                _ => Err(error),
            };
        }
        if from.sll_pkttype == libc::PACKET_OUTGOING {
            return Ok(None);
        }
        Ok(Some(n as usize))
    }
}
