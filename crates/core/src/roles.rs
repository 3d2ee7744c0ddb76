//! Roles: what the containers (and static members) that hold one may open. A container takes
//! its role from its role label (`enforcer.role=NAME`); the policy's `[roles.NAME]` says where
//! its members may go (`egress`), toward whom (a [`Target`]) and with what (an [`Allowance`]).

use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;

use crate::flows::FlowRange;

/// Where an egress rule lets a role's members go.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// Every address outside the managed networks and not the host's.
    Internet,
    /// The host's own addresses.
    Host,
    /// The members of the role with this name.
    Role(String),
    /// The egress proxies: what `role:NAME` names when NAME is the proxy role (`[docker]
    /// proxy_role`, `egress-proxy` by default), whose allowance is `[proxy]`, not a role's.
    Proxies,
    /// The subnets of the managed network with this name.
    Network(String),
    /// A prefix.
    Prefix(IpNet),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Internet => f.write_str("internet"),
            Target::Host => f.write_str("host"),
            Target::Role(name) => write!(f, "role:{name}"),
            Target::Proxies => f.write_str("the egress proxies"),
            Target::Network(name) => write!(f, "network:{name}"),
            Target::Prefix(net) => write!(f, "{net}"),
        }
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(name) = text.strip_prefix("role:") {
            return Ok(Target::Role(name.to_string()));
        }
        if let Some(name) = text.strip_prefix("network:") {
            return Ok(Target::Network(name.to_string()));
        }
        match text {
            "internet" => return Ok(Target::Internet),
            "host" => return Ok(Target::Host),
            _ => {}
        }
        let net: IpNet = text.parse().map_err(|_| {
            format!(
                "`{text}` is not a destination: write `internet`, `host`, `role:NAME`, \
                 `network:NAME` or a prefix like 10.0.0.0/24"
            )
        })?;
        if net.network() != net.addr() {
            return Err(format!(
                "`{text}` has host bits set: write its network, {}",
                net.trunc()
            ));
        }
        Ok(Target::Prefix(net))
    }
}

/// What an egress rule allows toward its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Allowance {
    /// TCP to destination ports `first..=last`.
    Tcp(u16, u16),
    /// UDP to destination ports `first..=last`.
    Udp(u16, u16),
    /// ICMP (IPv4) and ICMPv6.
    Icmp,
    /// Every protocol and port.
    Any,
}

/// IANA protocol numbers.
const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;

impl Allowance {
    /// The flows it allows, with no address (ICMP once per IP version, so for one family
    /// only its own).
    pub fn flows(self) -> Vec<FlowRange> {
        let flow = |protocols, ports| FlowRange {
            addresses: None,
            protocols,
            ports,
        };
        match self {
            Allowance::Tcp(first, last) => vec![flow((TCP, TCP), (first, last))],
            Allowance::Udp(first, last) => vec![flow((UDP, UDP), (first, last))],
            Allowance::Icmp => vec![
                flow((ICMP, ICMP), (0, u16::MAX)),
                flow((ICMPV6, ICMPV6), (0, u16::MAX)),
            ],
            Allowance::Any => vec![flow((0, u8::MAX), (0, u16::MAX))],
        }
    }
}

impl fmt::Display for Allowance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports = |f: &mut fmt::Formatter<'_>, proto, first, last| match first == last {
            true => write!(f, "{proto}/{first}"),
            false => write!(f, "{proto}/{first}-{last}"),
        };
        match *self {
            Allowance::Tcp(first, last) => ports(f, "tcp", first, last),
            Allowance::Udp(first, last) => ports(f, "udp", first, last),
            Allowance::Icmp => f.write_str("icmp"),
            Allowance::Any => f.write_str("any"),
        }
    }
}

/// A port in canonical decimal, 1 to 65535.
fn port(text: &str, whole: &str) -> Result<u16, String> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    match text.parse::<u16>() {
        Ok(0) => Err(format!(
            "port 0 in `{whole}` matches nothing: use ports from 1 to 65535"
        )),
        Ok(port) if canonical => Ok(port),
        _ => Err(format!(
            "`{text}` in `{whole}` is not a port number: write 1 to 65535 in decimal, without \
             sign or leading zeros"
        )),
    }
}

impl FromStr for Allowance {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "icmp" => return Ok(Allowance::Icmp),
            "any" => return Ok(Allowance::Any),
            _ => {}
        }
        let (proto, ports) = text.split_once('/').ok_or_else(|| {
            format!(
                "`{text}` is not an allowance: write `tcp/443`, `udp/53`, a range like \
                 `tcp/8000-8100`, `icmp` or `any`"
            )
        })?;
        let (first, last) = match ports.split_once('-') {
            Some((first, last)) => (port(first, text)?, port(last, text)?),
            None => {
                let only = port(ports, text)?;
                (only, only)
            }
        };
        if first > last {
            return Err(format!(
                "`{text}` is a backwards range: write the lower port first ({first} > {last})"
            ));
        }
        match proto {
            "tcp" => Ok(Allowance::Tcp(first, last)),
            "udp" => Ok(Allowance::Udp(first, last)),
            other => Err(format!(
                "unknown protocol `{other}` in `{text}`: use tcp or udp (or `icmp`, `any`)"
            )),
        }
    }
}

/// One egress rule: toward `to`, what `allow` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRule {
    /// Where.
    pub to: Target,
    /// What, never empty.
    pub allow: Vec<Allowance>,
}

/// One ingress rule: from `from` (never the host: what the host sends is not filtered), what
/// `allow` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressRule {
    /// Who may open connections toward the role's members.
    pub from: Target,
    /// What, never empty.
    pub allow: Vec<Allowance>,
}

/// A role the policy defines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Role {
    /// What its members may open, besides same-network traffic where east-west is allowed.
    pub egress: Vec<EgressRule>,
    /// Who may open connections toward its members, besides what the initiator's own role
    /// allows.
    pub ingress: Vec<IngressRule>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowances_and_targets_parse_or_say_why_not() {
        assert_eq!("tcp/443".parse(), Ok(Allowance::Tcp(443, 443)));
        assert_eq!("udp/8000-8100".parse(), Ok(Allowance::Udp(8000, 8100)));
        assert_eq!("icmp".parse(), Ok(Allowance::Icmp));
        assert_eq!("any".parse(), Ok(Allowance::Any));
        for (bad, why) in [
            ("tcp/9-1", "backwards range"),
            ("tcp/0", "port 0"),
            ("tcp/0443", "not a port number"),
            ("sctp/9", "unknown protocol"),
            ("443", "not an allowance"),
        ] {
            let error = bad.parse::<Allowance>().unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
        for text in ["tcp/443", "udp/1-65535", "icmp", "any"] {
            assert_eq!(text.parse::<Allowance>().unwrap().to_string(), text);
        }
        assert_eq!("role:dns".parse(), Ok(Target::Role("dns".into())));
        assert_eq!(
            "network:agents".parse(),
            Ok(Target::Network("agents".into()))
        );
        assert_eq!("internet".parse(), Ok(Target::Internet));
        assert_eq!("host".parse(), Ok(Target::Host));
        assert_eq!(
            "fd00::/64".parse(),
            Ok(Target::Prefix("fd00::/64".parse().unwrap()))
        );
        assert!("10.0.0.1/24"
            .parse::<Target>()
            .unwrap_err()
            .contains("host bits"));
        assert!("elsewhere"
            .parse::<Target>()
            .unwrap_err()
            .contains("not a destination"));
    }
}
