//! Bridge ports as the kernel reports them, and the MAC addresses that tie them to Docker's
//! endpoints. Docker does not say which host-side veth belongs to which container; the link
//! edge (crate `enforcer-links`) lists every bridge port with the MAC address of its peer (the
//! container's interface), and Docker reports that MAC per endpoint: the pair binds a port to
//! a container.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An Ethernet (EUI-48) address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Whether it is a unicast address (the group bit of the first octet clear) and not all
    /// zeros: the only kind a container's interface can own.
    pub fn is_unicast(self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }

    /// The IPv6 link-local address the kernel derives from it (modified EUI-64, RFC 4291
    /// appendix A): `fe80::` then the MAC with `ff:fe` in its middle and the universal/local
    /// bit flipped.
    pub fn ipv6_link_local(self) -> std::net::Ipv6Addr {
        let m = self.0;
        let mut bytes = [0u8; 16];
        bytes[..2].copy_from_slice(&[0xfe, 0x80]);
        bytes[8..].copy_from_slice(&[m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
        std::net::Ipv6Addr::from(bytes)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// A text that is not six colon-separated pairs of hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0:.64}` is not a MAC address (six pairs of hex digits separated by colons)")]
pub struct BadMac(pub String);

impl FromStr for MacAddr {
    type Err = BadMac;

    fn from_str(text: &str) -> Result<MacAddr, BadMac> {
        let bad = || BadMac(text.to_string());
        let mut out = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<MacAddr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A port of a bridge in the host's network namespace, as the link edge found it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BridgePort {
    /// The bridge it is a port of (`br-0123456789ab`, `docker0`).
    pub bridge: String,
    /// The port's own interface name (the host side of a veth: `veth1a2b3c4`).
    pub name: String,
    /// The MAC address of the veth's peer, in the namespace at its other end (the container's
    /// `eth0`); `None` when the port is not a veth with a peer in another namespace, or the
    /// peer could not be read. Such a port is never bound, so it sends nothing.
    pub peer_mac: Option<MacAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_text_round_trips_and_odd_text_is_refused() {
        let mac: MacAddr = "02:42:AC:11:00:02".parse().unwrap();
        assert_eq!(mac.to_string(), "02:42:ac:11:00:02");
        assert!(mac.is_unicast());
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "2:42:ac:11:00:02",
            "zz:42:ac:11:00:02",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(!"01:00:5e:00:00:01".parse::<MacAddr>().unwrap().is_unicast());
        assert!(!MacAddr([0; 6]).is_unicast());
    }

    #[test]
    fn link_local_is_the_kernels_eui64() {
        // What a Docker container's eth0 shows for this MAC (`ip -6 addr`).
        let mac: MacAddr = "02:42:ac:11:00:02".parse().unwrap();
        assert_eq!(mac.ipv6_link_local().to_string(), "fe80::42:acff:fe11:2");
    }
}
