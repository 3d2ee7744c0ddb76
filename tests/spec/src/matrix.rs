//! ThreeGate's reachability matrix: which new flows the policy lets through and which it drops,
//! as a table of [`ROWS`]. A row stands for every combination of its sources, services and
//! families; [`flows`] expands them (80 flows from 12 rows).

use std::fmt;
use std::net::IpAddr;

use crate::{
    container_named, host_uplink, internet, tcp, udp, Container, Family, Network, Service,
    EGRESSNET, FETCHNET, HOST_SERVICE, INTERNET_SERVICES, LLMNET, OTHERNET, PEER_SERVICE,
    PROXY_SERVICE,
};

/// Where a flow goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The internet host.
    Internet,
    /// A container, at its address on a network.
    Container(&'static str, &'static Network),
    /// The Docker host itself, at its gateway address on a network.
    Gateway(&'static Network),
    /// The Docker host itself, at its uplink address.
    HostUplink,
}

/// What the policy demands of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// It gets through.
    Allowed,
    /// Enforcer drops it.
    Dropped,
}

/// One row of the matrix: every source in `from` to `to`, for every service and family.
#[derive(Debug)]
pub struct Row {
    /// Source containers.
    pub from: &'static [&'static str],
    /// Destination.
    pub to: Target,
    /// Transports and destination ports.
    pub services: &'static [Service],
    /// IP versions.
    pub families: &'static [Family],
    /// What the policy demands.
    pub expect: Expect,
    /// Why, for the report.
    pub why: &'static str,
}

const fn row(
    from: &'static [&'static str],
    to: Target,
    services: &'static [Service],
    families: &'static [Family],
    expect: Expect,
    why: &'static str,
) -> Row {
    Row {
        from,
        to,
        services,
        families,
        expect,
        why,
    }
}

const BOTH: &[Family] = &Family::BOTH;
const V4: &[Family] = &[Family::V4];
use Expect::{Allowed, Dropped};
use Target::{Gateway, HostUplink, Internet};

/// The matrix.
#[rustfmt::skip]
pub const ROWS: [Row; 12] = [
    row(&["core", "toolexec", "fetch", "bystander"], Internet, &INTERNET_SERVICES, BOTH, Dropped, "only the proxy gets out"),
    row(&["fetch"], Target::Container("proxy", &FETCHNET), &[PROXY_SERVICE], BOTH, Allowed, "fetch reaches the proxy on their network"),
    row(&["fetch"], Target::Container("proxy", &EGRESSNET), &[PROXY_SERVICE], BOTH, Dropped, "the proxy on another network"),
    row(&["core"], Target::Container("proxy", &FETCHNET), &[PROXY_SERVICE], BOTH, Dropped, "core must not talk to the proxy"),
    row(&["core"], Target::Container("toolexec", &LLMNET), &[PEER_SERVICE], BOTH, Allowed, "same network"),
    row(&["proxy"], Internet, &[tcp(443), udp(53), tcp(53)], BOTH, Allowed, "the proxy's allowance"),
    row(&["proxy"], Internet, &[tcp(80), tcp(22), udp(123)], BOTH, Dropped, "outside the proxy's allowance"),
    row(&["proxy"], Target::Container("toolexec", &LLMNET), &[PEER_SERVICE], BOTH, Dropped, "a managed destination"),
    row(&["outsider"], Internet, &[tcp(80), udp(123)], BOTH, Allowed, "an unmanaged network"),
    row(&["core"], Gateway(&LLMNET), &[HOST_SERVICE], BOTH, Dropped, "a host service via the gateway"),
    row(&["outsider"], Gateway(&OTHERNET), &[HOST_SERVICE], BOTH, Allowed, "an unmanaged network to a host service"),
    row(&["core", "proxy"], HostUplink, &[HOST_SERVICE], V4, Dropped, "a host service via the uplink address"),
];

/// One expanded flow of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    /// Source container.
    pub from: &'static Container,
    /// Destination.
    pub to: Target,
    /// Transport and destination port.
    pub service: Service,
    /// IP version.
    pub family: Family,
    /// What the policy demands.
    pub expect: Expect,
    /// Why, for the report.
    pub why: &'static str,
}

impl Flow {
    /// Whether the policy lets it through.
    pub fn allowed(&self) -> bool {
        self.expect == Expect::Allowed
    }

    /// Whether it goes to the Docker host itself (the input hook) rather than through it.
    pub fn to_host(&self) -> bool {
        matches!(self.to, Target::Gateway(_) | Target::HostUplink)
    }

    /// The destination address.
    pub fn destination(&self) -> IpAddr {
        match self.to {
            Target::Internet => internet(self.family),
            Target::Container(name, network) => container_named(name)
                .address_on(network, self.family)
                .unwrap_or_else(|| panic!("{name} is not on {}", network.name)),
            Target::Gateway(network) => network.gateway(self.family),
            Target::HostUplink => host_uplink(self.family),
        }
    }

    /// The network the flow leaves its source through: the destination's network when the
    /// source is attached to it, its default route's otherwise.
    pub fn source_network(&self) -> &'static Network {
        let shared = match self.to {
            Target::Container(_, network) | Target::Gateway(network) => {
                self.from.attachments.iter().find(|a| a.network == network)
            }
            Target::Internet | Target::HostUplink => None,
        };
        shared.unwrap_or(self.from.route()).network
    }

    /// The source address the kernel picks for it.
    pub fn source(&self) -> IpAddr {
        self.from
            .address_on(self.source_network(), self.family)
            .expect("the source network is one of the source's")
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = self.service.proto.name();
        let to = match self.to {
            Target::Internet => "internet".to_string(),
            Target::Container(name, network) => format!("{name} on {}", network.name),
            Target::Gateway(network) => format!("host via {}'s gateway", network.name),
            Target::HostUplink => "host via its uplink".to_string(),
        };
        write!(
            f,
            "{} -> {to} {proto}/{} ({}): {}",
            self.from.name,
            self.service.port,
            self.family.tag(),
            self.why
        )
    }
}

/// Every flow of every row.
pub fn flows() -> Vec<Flow> {
    let mut flows = Vec::new();
    for row in &ROWS {
        for &family in row.families {
            for from in row.from {
                for &service in row.services {
                    flows.push(Flow {
                        from: container_named(from),
                        to: row.to,
                        service,
                        family,
                        expect: row.expect,
                        why: row.why,
                    });
                }
            }
        }
    }
    flows
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count pins the matrix: a row lost or narrowed shows here.
    #[test]
    fn the_matrix_has_eighty_flows_sixteen_allowed() {
        let flows = flows();
        assert_eq!(flows.len(), 80);
        assert_eq!(flows.iter().filter(|f| f.allowed()).count(), 16);
    }

    #[test]
    fn sources_are_picked_as_the_kernel_picks_them() {
        let flows = flows();
        let fetch_to_proxy = flows
            .iter()
            .find(|f| f.from.name == "fetch" && f.to == Target::Container("proxy", &FETCHNET))
            .unwrap();
        assert_eq!(
            fetch_to_proxy.source(),
            "10.101.0.12".parse::<IpAddr>().unwrap()
        );
        let proxy_out = flows
            .iter()
            .find(|f| f.from.name == "proxy" && f.to == Target::Internet)
            .unwrap();
        assert_eq!(proxy_out.source(), "10.102.0.2".parse::<IpAddr>().unwrap());
    }
}
