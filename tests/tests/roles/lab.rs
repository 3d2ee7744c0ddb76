//! A seed system's topology through a real dockerd, described as data: its networks, its
//! containers (each with a role label or none, its addresses, its listeners), and the matrix of
//! flows its policy allows or drops. [`run`] measures every row in both IP versions with Docker
//! alone (its isolation between networks flushed: each flow must then be open, so that every
//! closed one is enforcer's doing), then with `enforcer run` on the seed's policy file.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use enforcer_harness::docker::{DockerVersion, Dockerd, ThreeGate, IMAGE};
use enforcer_harness::spec::{internet, Family};
use enforcer_harness::{enforcer, probe_here, repo_file, Netns, Proto, Responders, PROBE_TIMEOUT};

/// One dockerd at a time.
static DOCKERD: Mutex<()> = Mutex::new(());

/// Port the Docker host itself listens on (a host service no managed container may reach).
pub(crate) const HOST_PORT: u16 = 2222;

/// A Docker network: its name, IPv4 and IPv6 address stems (`"172.20.0"` and `"fd00:20::"`:
/// host N is `172.20.0.N` and `fd00:20::N` in hex), its subnets, and `docker network create`
/// flags (labels, `--internal`).
pub(crate) struct Net {
    pub(crate) name: &'static str,
    pub(crate) v4: &'static str,
    pub(crate) v6: &'static str,
    pub(crate) subnets: (&'static str, &'static str),
    pub(crate) flags: &'static [&'static str],
}

impl Net {
    fn address(&self, host: u8, family: Family) -> IpAddr {
        match family {
            Family::V4 => format!("{}.{host}", self.v4).parse().unwrap(),
            Family::V6 => format!("{}{host:x}", self.v6).parse().unwrap(),
        }
    }

    /// The gateway (host 1).
    fn gateway(&self, family: Family) -> IpAddr {
        self.address(1, family)
    }
}

/// A container: name, role label, host number on each network it is attached to (the first
/// is where `docker run` puts it), the network of its default route, and its listeners.
pub(crate) struct Part {
    pub(crate) name: &'static str,
    pub(crate) role: Option<&'static str>,
    pub(crate) on: &'static [(&'static str, u8)],
    pub(crate) route: &'static str,
    pub(crate) listens: &'static [(Proto, u16)],
}

/// Where a flow goes.
#[derive(Clone, Copy)]
pub(crate) enum To {
    /// A container, at its address on this network.
    Part(&'static str, &'static str),
    /// The internet host.
    Internet,
    /// The Docker host itself, at the gateway of this network.
    Host(&'static str),
}

/// One row: from, to, transport and port, whether the policy allows it, and why.
pub(crate) struct Row {
    pub(crate) from: &'static str,
    pub(crate) to: To,
    pub(crate) service: (Proto, u16),
    pub(crate) allowed: bool,
    pub(crate) why: &'static str,
}

/// A seed system: its policy file (under `rules/`), networks, containers and matrix.
pub(crate) struct Seed {
    pub(crate) policy: &'static str,
    pub(crate) nets: &'static [Net],
    pub(crate) parts: &'static [Part],
    pub(crate) matrix: &'static [Row],
}

impl Seed {
    fn net(&self, name: &str) -> &Net {
        self.nets
            .iter()
            .find(|n| n.name == name)
            .expect("a network")
    }

    fn part(&self, name: &str) -> &Part {
        self.parts.iter().find(|p| p.name == name).expect("a part")
    }

    fn target(&self, row: &Row, family: Family) -> SocketAddr {
        let ip = match row.to {
            To::Part(name, net) => {
                let host = self
                    .part(name)
                    .on
                    .iter()
                    .find(|(n, _)| *n == net)
                    .unwrap()
                    .1;
                self.net(net).address(host, family)
            }
            To::Internet => internet(family),
            To::Host(net) => self.net(net).gateway(family),
        };
        SocketAddr::new(ip, row.service.1)
    }

    /// The source address the kernel picks for `row`: the source's address on the target's
    /// network when it is attached there, on its default route's network otherwise.
    fn source(&self, row: &Row, family: Family) -> IpAddr {
        let part = self.part(row.from);
        let shared = match row.to {
            To::Part(_, net) | To::Host(net) => part.on.iter().find(|(n, _)| *n == net),
            To::Internet => None,
        };
        let (net, host) = shared
            .or_else(|| part.on.iter().find(|(n, _)| *n == part.route))
            .expect("the source is attached to its route's network");
        self.net(net).address(*host, family)
    }
}

/// The seed built through Docker, with its responders.
struct Lab<'a> {
    seed: &'a Seed,
    docker: Dockerd,
    containers: Vec<(&'static str, Netns)>,
    _responders: Vec<Responders>,
}

impl<'a> Lab<'a> {
    fn new(seed: &'a Seed, version: DockerVersion) -> Lab<'a> {
        let docker = Dockerd::start_with(version);
        for net in seed.nets {
            let mut args = vec!["network", "create", "--subnet", net.subnets.0, "--ipv6"];
            args.extend(["--subnet", net.subnets.1]);
            args.extend(net.flags);
            args.push(net.name);
            docker.docker(&args);
        }
        let mut containers = Vec::new();
        let mut responders = Vec::new();
        for part in seed.parts {
            let address = |(net, host): &(&str, u8), family| seed.net(net).address(*host, family);
            let label = part.role.map(|r| format!("enforcer.role={r}"));
            let first = &part.on[0];
            let (v4, v6) = (
                address(first, Family::V4).to_string(),
                address(first, Family::V6).to_string(),
            );
            let mut args = vec!["run", "-d", "--name", part.name, "--network", first.0];
            args.extend(["--ip", &v4, "--ip6", &v6]);
            if let Some(label) = &label {
                args.extend(["--label", label]);
            }
            args.extend([IMAGE, "sleep", "100000"]);
            docker.docker(&args);
            for attachment in &part.on[1..] {
                let (v4, v6) = (
                    address(attachment, Family::V4).to_string(),
                    address(attachment, Family::V6).to_string(),
                );
                let connect = ["network", "connect", "--ip", &v4, "--ip6", &v6];
                docker.docker(&[&connect[..], &[attachment.0, part.name]].concat());
            }
            let ns = docker.container_netns(part.name);
            let route = seed.net(part.route);
            for (flag, family) in [("-4", Family::V4), ("-6", Family::V6)] {
                let via = route.gateway(family).to_string();
                ns.exec_ok("ip", &[flag, "route", "replace", "default", "via", &via]);
            }
            let endpoints: Vec<(Proto, SocketAddr)> = part
                .on
                .iter()
                .flat_map(|attachment| {
                    Family::BOTH.into_iter().flat_map(move |family| {
                        part.listens.iter().map(move |(proto, port)| {
                            (*proto, SocketAddr::new(address(attachment, family), *port))
                        })
                    })
                })
                .collect();
            responders.push(Responders::start(&ns, &endpoints));
            containers.push((part.name, ns));
        }
        let host_service: SocketAddr = format!("[::]:{HOST_PORT}").parse().unwrap();
        responders.push(Responders::start(
            &docker.host,
            &[(Proto::Tcp, host_service)],
        ));
        // Docker's isolation between networks gone (a Docker bug, an `iptables -F`), and 28.5's
        // drops of packets toward a container's unpublished ports from another interface (raw
        // PREROUTING, and the filter table's DOCKER chain; nothing is published here): only
        // enforcer stands between the networks.
        ThreeGate::flush_docker_isolation(&docker);
        for tool in ["iptables", "ip6tables"] {
            let _ = docker.host.exec(tool, &["-t", "raw", "-F", "PREROUTING"]);
            let _ = docker.host.exec(tool, &["-F", "DOCKER"]);
            let _ = docker.host.exec(tool, &["-F", "DOCKER-INTERNAL"]);
        }
        Lab {
            seed,
            docker,
            containers,
            _responders: responders,
        }
    }

    /// Datagrams the internet receives when each container on a managed and an unmanaged
    /// network sends, with CAP_NET_RAW (Docker's default), UDP from a free address of the
    /// unmanaged network (host 200) to 203.0.113.10:53 through that network's gateway: a
    /// managed container passing as unmanaged traffic. None when no container is on both.
    fn forged_escapes(&self) -> Option<u64> {
        let mut sent = false;
        let before = self.docker.internet_received();
        for part in self.seed.parts {
            let managed = part
                .on
                .iter()
                .any(|(net, _)| !self.seed.net(net).flags.is_empty());
            for (index, (net, _)) in part.on.iter().enumerate() {
                let net = self.seed.net(net);
                if !managed || !net.flags.is_empty() {
                    continue;
                }
                sent = true;
                let bridge = self.docker.bridge(net.name);
                let gateway_mac = self
                    .docker
                    .host
                    .exec_ok("cat", &[&format!("/sys/class/net/{bridge}/address")])
                    .stdout;
                let gateway_mac = String::from_utf8_lossy(&gateway_mac);
                let (iface, source) = (format!("eth{index}"), net.address(200, Family::V4));
                let source = source.to_string();
                let destination = internet(Family::V4).to_string();
                crate::forge::send(
                    self.namespace(part.name),
                    &[
                        "udp4",
                        "--iface",
                        &iface,
                        "--eth-dst",
                        gateway_mac.trim(),
                        "--src",
                        &source,
                        "--dst",
                        &destination,
                        "--dport",
                        "53",
                        "--payload",
                        "forged",
                        "--count",
                        "5",
                        "--interval-ms",
                        "20",
                    ],
                );
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        sent.then(|| self.docker.internet_received() - before)
    }

    fn namespace(&self, name: &str) -> &Netns {
        &self.containers.iter().find(|(n, _)| *n == name).unwrap().1
    }

    /// Each row in both families: (row, target, open), each flow tried up to `attempts` times
    /// (a flow's first packets may wait for neighbour discovery longer than a probe does).
    fn measure(&self, attempts: usize) -> Vec<(&'a Row, SocketAddr, bool)> {
        let mut results = Vec::new();
        for row in self.seed.matrix {
            for family in Family::BOTH {
                let (proto, target) = (row.service.0, self.seed.target(row, family));
                let open = self
                    .namespace(row.from)
                    .enter(move || (0..attempts).any(|_| probe_here(proto, target, PROBE_TIMEOUT)));
                results.push((row, target, open));
            }
        }
        results
    }
}

fn report(results: &[(&Row, SocketAddr, bool)]) -> String {
    results
        .iter()
        .map(|(row, target, open)| {
            format!(
                "  {:<13} -> {:<26} {:?}/{:<5} {:<6} (policy: {}; {})\n",
                row.from,
                target.to_string(),
                row.service.0,
                row.service.1,
                if *open { "open" } else { "closed" },
                if row.allowed { "allowed" } else { "dropped" },
                row.why
            )
        })
        .collect()
}

/// Builds `seed` on Docker `version`, checks that every row is open with Docker alone, starts
/// `enforcer run` with the seed's policy and checks every row against it.
pub(crate) fn run(seed: &Seed, version: DockerVersion) {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(seed, version);
    let before = lab.measure(3);
    let closed = before.iter().filter(|(_, _, open)| !open).count();
    assert_eq!(
        closed,
        0,
        "without enforcer, {closed} flows were closed:\n{}",
        report(&before)
    );
    let escapes = lab.forged_escapes();
    assert_ne!(
        escapes,
        Some(0),
        "without enforcer, no forged datagram from a dual-homed container reached the internet"
    );
    let policy = repo_file(seed.policy);
    let agent = lab
        .docker
        .start_agent(&["--config", policy.to_str().unwrap()]);
    let member = seed
        .parts
        .iter()
        .find(|p| p.role.is_some())
        .expect("a part with a role");
    let logged = format!("+member {} (role {})", member.name, member.role.unwrap());
    agent.expect_log(&logged, Duration::from_secs(15));
    let after = lab.measure(1);
    let wrong = after
        .iter()
        .filter(|(row, _, open)| *open != row.allowed)
        .count();
    assert_eq!(
        wrong,
        0,
        "{wrong} flows differ from {} on Docker {}:\n{}\n{}",
        seed.policy,
        lab.docker.server_version(),
        report(&after),
        agent.log()
    );
    assert!(
        matches!(lab.forged_escapes(), None | Some(0)),
        "a managed container's datagrams from a free address of its unmanaged network reached \
         the internet on Docker {}:\n{}",
        lab.docker.server_version(),
        agent.log()
    );
    expect_counted_per_container(&lab);
    let (policy, state) = (
        policy.to_str().unwrap(),
        agent.state_file().to_str().unwrap(),
    );
    expect_status(&lab, policy, state);
    expect_explained(&lab, policy, state, &after);
    eprintln!(
        "{} on Docker {}:\n{}",
        seed.policy,
        lab.docker.server_version(),
        report(&after)
    );
}

/// `enforcer status --json` agrees with the kernel, lists every role's members (their first
/// IPv4 address at least) and names containers whose denied egress it counted.
fn expect_status(lab: &Lab, policy: &str, state: &str) {
    let output = enforcer(
        &lab.docker.host,
        &[
            "status",
            "--json",
            "--config",
            policy,
            "--state-file",
            state,
        ],
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(output.status.code(), Some(0), "{report:#}");
    for part in lab.seed.parts {
        let (Some(role), Some((net, host))) = (part.role, part.on.first()) else {
            continue;
        };
        if lab.seed.net(net).flags.is_empty() {
            continue; // on no managed network: not a member
        }
        let address = lab.seed.net(net).address(*host, Family::V4).to_string();
        let members = report["roles"][role]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            members.iter().any(|a| a.as_str() == Some(address.as_str())),
            "status does not list {} ({address}) in role {role}: {report:#}",
            part.name
        );
    }
    let dropping = report["dropping_containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !dropping.is_empty(),
        "no container's drops in status: {report:#}"
    );
}

/// `enforcer explain` answers, for every flow measured, what the kernel did to its packets,
/// from the policy and the agent's state file; a role's allowance names its rule's line.
fn expect_explained(lab: &Lab, policy: &str, state: &str, measured: &[(&Row, SocketAddr, bool)]) {
    let mut wrong = Vec::new();
    for (row, target, open) in measured {
        let family = if target.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        let service = format!("{}/{}", row.service.0.name(), row.service.1);
        let (src, dst) = (
            lab.seed.source(row, family).to_string(),
            target.ip().to_string(),
        );
        let output = enforcer(
            &lab.docker.host,
            &[
                "explain",
                "--json",
                "--config",
                policy,
                "--state-file",
                state,
                &src,
                &dst,
                &service,
            ],
        );
        let answer: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
        let allowed = answer["verdict"] == "allowed";
        if allowed != *open {
            wrong.push(format!(
                "{} -> {target} {service}: kernel open {open}, {answer}",
                row.from
            ));
        }
        let by_role = answer["chain"]
            .as_str()
            .is_some_and(|c| c.starts_with("role_"));
        assert!(
            !by_role || answer["location"].is_string(),
            "a role's allowance without its line: {answer}"
        );
    }
    assert!(
        wrong.is_empty(),
        "explain differs from the kernel on {} of {} flows:\n{}",
        wrong.len(),
        measured.len(),
        wrong.join("\n")
    );
}

/// Every container attached to one managed network alone that sent a dropped flow (not toward
/// the host) has it counted against its own element of `containers_v4`.
fn expect_counted_per_container(lab: &Lab) {
    let listing = lab
        .docker
        .host
        .exec_ok("nft", &["list", "set", "inet", "enforcer", "containers_v4"]);
    let listing = String::from_utf8_lossy(&listing.stdout).replace('\n', " ");
    let mut checked = 0;
    for row in lab.seed.matrix.iter().filter(|r| !r.allowed) {
        let part = lab.seed.part(row.from);
        let [(net, host)] = part.on else { continue };
        let managed = !lab.seed.net(net).flags.is_empty();
        if !managed || matches!(row.to, To::Host(_)) {
            continue;
        }
        let address = lab.seed.net(net).address(*host, Family::V4).to_string();
        let element = listing
            .split([',', '{'])
            .find(|e| e.trim_start().starts_with(&format!("{address} counter")))
            .unwrap_or_else(|| panic!("no element for {} ({address}) in {listing}", part.name));
        assert!(
            !element.contains("packets 0 "),
            "{}'s dropped flows are not counted against it: {element}",
            part.name
        );
        checked += 1;
    }
    assert!(
        checked > 0,
        "no dropped flow from a single-homed managed container to check"
    );
}
