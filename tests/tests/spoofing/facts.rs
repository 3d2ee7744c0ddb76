//! What Docker gives a container's link, measured: the facts the bridge table's design rests
//! on (which MAC a port carries, which link-local address, whether router advertisements are
//! taken, whether IPv6 is off on an IPv4-only network, the MAC after a restart).

use enforcer_harness::docker::{DockerVersion, Dockerd, IMAGE};

use crate::inspect::{host_port, iface_with, link_local_of, mac_of, sysctl};
use crate::DOCKERD;

/// The containers measured: name, network (dual-stack or IPv4-only), IPv4 address.
const CONTAINERS: [(&str, &str, &str); 2] = [
    ("fgfacts6", "fgdual", "10.150.0.5"),
    ("fgfacts4", "fgv4only", "10.151.0.5"),
];

/// Prints the facts of a container on a dual-stack and on an IPv4-only network, before and
/// after a restart, and checks those that hold on both versions and the MAC rule of each.
pub(crate) fn link_facts(version: DockerVersion) {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let docker = Dockerd::start_with(version);
    create_networks(&docker);
    let mut report = format!("Docker {}:\n", docker.server_version());
    for (name, network, v4) in CONTAINERS {
        docker.docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            "--ip",
            v4,
            IMAGE,
            "sleep",
            "100000",
        ]);
        let link = Link::measure(&docker, name, network, v4);
        report.push_str(&link.describe(network, v4));
        link.check(version, network, v4, &report);
        // After a restart: a new port; does the MAC stay, and does Docker still tell it?
        docker.docker(&["restart", "-t", "0", name]);
        let after = Link::measure(&docker, name, network, v4);
        report.push_str(&format!(
            "    after a restart: MAC {} (kept: {}), host port {}\n",
            after.mac,
            after.mac == link.mac,
            after.port
        ));
        assert_eq!(
            after.inspected, after.mac,
            "Docker reports the MAC after a restart"
        );
    }
    eprintln!("{report}");
}

/// A managed dual-stack network and a managed IPv4-only one.
fn create_networks(docker: &Dockerd) {
    docker.docker(&[
        "network",
        "create",
        "--label",
        "enforcer.managed=true",
        "--subnet",
        "10.150.0.0/24",
        "--ipv6",
        "--subnet",
        "fd00:150::/64",
        "fgdual",
    ]);
    docker.docker(&[
        "network",
        "create",
        "--label",
        "enforcer.managed=true",
        "--subnet",
        "10.151.0.0/24",
        "fgv4only",
    ]);
}

/// One container's link on one network, as measured.
struct Link {
    iface: String,
    mac: String,
    /// The MAC `docker inspect` reports for the endpoint.
    inspected: String,
    link_local: Option<String>,
    accept_ra: String,
    autoconf: String,
    disable_ipv6: String,
    all_disable_ipv6: String,
    /// The bridge port (the host's end of the veth) and its own MAC.
    port: String,
    port_mac: String,
}

impl Link {
    /// Measures container `name`'s link on `network`, where it holds `v4`.
    fn measure(docker: &Dockerd, name: &str, network: &str, v4: &str) -> Link {
        let ns = docker.container_netns(name);
        let iface = iface_with(&ns, v4);
        let conf = |key: &str| sysctl(&ns, &format!("net.ipv6.conf.{iface}.{key}"));
        let port = host_port(&docker.host, &ns, &iface);
        Link {
            mac: mac_of(&ns, &iface),
            inspected: docker.docker(&[
                "inspect",
                "-f",
                &format!("{{{{(index .NetworkSettings.Networks \"{network}\").MacAddress}}}}"),
                name,
            ]),
            link_local: link_local_of(&ns, &iface),
            accept_ra: conf("accept_ra"),
            autoconf: conf("autoconf"),
            disable_ipv6: conf("disable_ipv6"),
            all_disable_ipv6: sysctl(&ns, "net.ipv6.conf.all.disable_ipv6"),
            port_mac: mac_of(&docker.host, &port),
            port,
            iface,
        }
    }

    /// One line of the report.
    fn describe(&self, network: &str, v4: &str) -> String {
        format!(
            "  {network}: {} MAC {} (inspect: {}; 02:42+IPv4 would be {}), link-local {:?} \
             (EUI-64 of the MAC: {}), accept_ra={} autoconf={} disable_ipv6={} (all: {}); host \
             port {} MAC {}\n",
            self.iface,
            self.mac,
            self.inspected,
            derived_mac(v4),
            self.link_local,
            eui64_link_local(&self.mac),
            self.accept_ra,
            self.autoconf,
            self.disable_ipv6,
            self.all_disable_ipv6,
            self.port,
            self.port_mac
        )
    }

    /// The facts that hold on both versions, and `version`'s MAC rule.
    fn check(&self, version: DockerVersion, network: &str, v4: &str, report: &str) {
        let mac = &self.mac;
        assert_eq!(
            &self.inspected, mac,
            "Docker reports the MAC the container has"
        );
        let first = u8::from_str_radix(&mac[..2], 16).unwrap();
        assert_eq!(
            first & 0x03,
            0x02,
            "a locally administered unicast MAC: {mac}"
        );
        let derived = derived_mac(v4);
        match version {
            DockerVersion::Bookworm => assert_eq!(mac, &derived, "20.10 derives the MAC"),
            DockerVersion::Sid => assert_ne!(mac, &derived, "28.5 picks a random MAC"),
        }
        if network == "fgdual" {
            assert_eq!(self.link_local, Some(eui64_link_local(mac)), "{report}");
            assert_eq!(self.disable_ipv6, "0", "{report}");
            assert_eq!(
                self.accept_ra, "1",
                "containers take router advertisements: {report}"
            );
        } else {
            assert_eq!(
                self.disable_ipv6, "1",
                "IPv6 is off on an IPv4-only network: {report}"
            );
            assert_eq!(self.link_local, None, "{report}");
        }
    }
}

/// The MAC Docker 20.10 gives an endpoint: 02:42 and the four bytes of its IPv4 address.
fn derived_mac(v4: &str) -> String {
    let octets: Vec<String> = v4
        .split('.')
        .map(|o| format!("{:02x}", o.parse::<u8>().unwrap()))
        .collect();
    format!("02:42:{}", octets.join(":"))
}

/// The modified EUI-64 link-local address of `mac` (RFC 4291 appendix A).
fn eui64_link_local(mac: &str) -> String {
    let b: Vec<u8> = mac
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).expect("MAC digits"))
        .collect();
    let address = std::net::Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([b[0] ^ 0x02, b[1]]),
        u16::from_be_bytes([b[2], 0xff]),
        u16::from_be_bytes([0xfe, b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
    );
    address.to_string()
}
