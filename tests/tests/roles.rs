//! Roles through a real dockerd: Replicante (seed 004) with `rules/replicante.toml`. One
//! network, 172.20.0.0/16 and fd00:20::/64, not internal, labelled managed and east-west deny;
//! the proxy, DNS, the supervisor, the agent and a network monitor on it, each container
//! labelled with its role (the monitor with none). The agent is also on an unmanaged network,
//! `plain` (172.30.0.0/16, fd00:30::/64), with its default route there, the way out a
//! dual-homed container would take; an outsider sits on `plain` alone. Every flow of the
//! matrix is tried first without enforcer, with Docker's isolation between networks flushed
//! (each flow then gets through: neither network is internal and containers of one network
//! reach each other), then with `enforcer run`, where each must be what the policy says. IPv4
//! and IPv6.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use enforcer_harness::docker::{DockerVersion, Dockerd, ThreeGate, IMAGE};
use enforcer_harness::spec::{internet, Family};
use enforcer_harness::{probe_here, repo_file, Netns, Proto, Responders, PROBE_TIMEOUT};

/// One dockerd at a time.
static DOCKERD: Mutex<()> = Mutex::new(());

/// A container of the lab: its name, role label, host number on the network, and what it
/// listens on.
struct Part {
    name: &'static str,
    role: Option<&'static str>,
    host: u8,
    listens: &'static [(Proto, u16)],
}

const PARTS: [Part; 5] = [
    Part {
        name: "proxy",
        role: Some("proxy"),
        host: 2,
        listens: &[(Proto::Tcp, 3128)],
    },
    Part {
        name: "dns",
        role: Some("dns"),
        host: 3,
        listens: &[(Proto::Udp, 53), (Proto::Tcp, 53)],
    },
    Part {
        name: "supervisor",
        role: Some("supervisor"),
        host: 5,
        listens: &[(Proto::Tcp, 8080), (Proto::Tcp, 9999)],
    },
    Part {
        name: "monitor",
        role: None,
        host: 50,
        listens: &[(Proto::Tcp, 9000)],
    },
    Part {
        name: "agent",
        role: Some("agent"),
        host: 100,
        listens: &[(Proto::Tcp, 7000)],
    },
];

fn address(host: u8, family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4([172, 20, 0, host].into()),
        Family::V6 => IpAddr::V6(format!("fd00:20::{host:x}").parse().unwrap()),
    }
}

fn part(name: &str) -> &'static Part {
    PARTS.iter().find(|p| p.name == name).expect("a part")
}

/// Where a flow goes: a part of the lab on replicante or on plain, or the internet host.
#[derive(Clone, Copy)]
enum To {
    Part(&'static str),
    OnPlain(&'static str),
    Internet,
}

/// An address on `plain`.
fn plain(host: u8, family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4([172, 30, 0, host].into()),
        Family::V6 => IpAddr::V6(format!("fd00:30::{host:x}").parse().unwrap()),
    }
}

/// The outsider: on `plain` only, no role.
const OUTSIDER: u8 = 9;

/// One row of the matrix: from, to, service, whether the policy allows it, and why.
struct Row {
    from: &'static str,
    to: To,
    proto: Proto,
    port: u16,
    allowed: bool,
    why: &'static str,
}

const fn row(
    from: &'static str,
    to: To,
    (proto, port): (Proto, u16),
    allowed: bool,
    why: &'static str,
) -> Row {
    Row {
        from,
        to,
        proto,
        port,
        allowed,
        why,
    }
}

const TCP: Proto = Proto::Tcp;
const UDP: Proto = Proto::Udp;

/// Replicante's matrix (docs/policy.md has it as a table).
const MATRIX: [Row; 20] = [
    row(
        "agent",
        To::Part("dns"),
        (UDP, 53),
        true,
        "the agent resolves through DNS",
    ),
    row(
        "agent",
        To::Part("dns"),
        (TCP, 53),
        true,
        "the agent resolves through DNS",
    ),
    row(
        "agent",
        To::Part("proxy"),
        (TCP, 3128),
        true,
        "the agent's web goes through the proxy",
    ),
    row(
        "agent",
        To::Part("supervisor"),
        (TCP, 8080),
        true,
        "the agent calls the supervisor's API",
    ),
    row(
        "agent",
        To::Part("supervisor"),
        (TCP, 9999),
        false,
        "only the API port",
    ),
    row(
        "agent",
        To::Part("monitor"),
        (TCP, 9000),
        false,
        "east-west is denied",
    ),
    row(
        "agent",
        To::Internet,
        (TCP, 443),
        false,
        "the agent never goes out itself, not even by its route through plain",
    ),
    row("agent", To::Internet, (UDP, 53), false, "not even for DNS"),
    row("dns", To::Internet, (UDP, 53), true, "DNS goes out"),
    row("dns", To::Internet, (TCP, 53), true, "DNS goes out"),
    row("dns", To::Internet, (TCP, 443), false, "DNS only"),
    row(
        "proxy",
        To::Internet,
        (TCP, 443),
        true,
        "the proxy goes out",
    ),
    row("proxy", To::Internet, (TCP, 80), true, "the proxy goes out"),
    row("proxy", To::Internet, (UDP, 53), false, "web only"),
    row(
        "proxy",
        To::Part("agent"),
        (TCP, 7000),
        false,
        "no role reaches the agent",
    ),
    row(
        "monitor",
        To::Internet,
        (TCP, 443),
        false,
        "no role: nothing",
    ),
    row(
        "supervisor",
        To::Part("dns"),
        (UDP, 53),
        false,
        "the supervisor opens nothing",
    ),
    row(
        "outsider",
        To::OnPlain("agent"),
        (TCP, 7000),
        false,
        "managed on plain too: nothing opens toward it",
    ),
    row(
        "outsider",
        To::Part("agent"),
        (TCP, 7000),
        false,
        "nothing from outside opens toward a managed container",
    ),
    row(
        "outsider",
        To::Internet,
        (TCP, 443),
        true,
        "an unmanaged network is left alone",
    ),
];

impl Row {
    fn target(&self, family: Family) -> SocketAddr {
        let ip = match self.to {
            To::Part(name) => address(part(name).host, family),
            To::OnPlain(name) => plain(part(name).host, family),
            To::Internet => internet(family),
        };
        SocketAddr::new(ip, self.port)
    }
}

/// The lab: dockerd, the network, the containers and their responders.
struct Lab {
    docker: Dockerd,
    containers: Vec<(&'static str, Netns)>,
    _responders: Vec<Responders>,
}

impl Lab {
    fn new(version: DockerVersion) -> Lab {
        let docker = Dockerd::start_with(version);
        docker.docker(&[
            "network",
            "create",
            "--subnet",
            "172.20.0.0/16",
            "--ipv6",
            "--subnet",
            "fd00:20::/64",
            "--label",
            "enforcer.managed=true",
            "--label",
            "enforcer.east-west=deny",
            "replicante",
        ]);
        docker.docker(&[
            "network",
            "create",
            "--subnet",
            "172.30.0.0/16",
            "--ipv6",
            "--subnet",
            "fd00:30::/64",
            "plain",
        ]);
        let mut containers = Vec::new();
        let mut responders = Vec::new();
        for part in &PARTS {
            let (v4, v6) = (
                address(part.host, Family::V4).to_string(),
                address(part.host, Family::V6).to_string(),
            );
            let label = part.role.map(|r| format!("enforcer.role={r}"));
            let mut args = vec!["run", "-d", "--name", part.name, "--network", "replicante"];
            args.extend(["--ip", &v4, "--ip6", &v6]);
            if let Some(label) = &label {
                args.extend(["--label", label]);
            }
            args.extend([IMAGE, "sleep", "100000"]);
            docker.docker(&args);
            let ns = docker.container_netns(part.name);
            let endpoints: Vec<(Proto, SocketAddr)> = part
                .listens
                .iter()
                .flat_map(|(proto, port)| {
                    Family::BOTH.map(|f| (*proto, SocketAddr::new(address(part.host, f), *port)))
                })
                .collect();
            responders.push(Responders::start(&ns, &endpoints));
            containers.push((part.name, ns));
        }
        // The agent on plain too, its default route there: a way out that bypasses roles
        // unless the agent is managed on every interface. Its listener answers there too.
        let agent = part("agent");
        let (v4, v6) = (
            plain(agent.host, Family::V4).to_string(),
            plain(agent.host, Family::V6).to_string(),
        );
        let connect = [
            "network", "connect", "--ip", &v4, "--ip6", &v6, "plain", "agent",
        ];
        docker.docker(&connect);
        let agent_ns = &containers.iter().find(|(n, _)| *n == "agent").unwrap().1;
        agent_ns.exec_ok("ip", &["route", "replace", "default", "via", "172.30.0.1"]);
        agent_ns.exec_ok(
            "ip",
            &["-6", "route", "replace", "default", "via", "fd00:30::1"],
        );
        let on_plain: Vec<(Proto, SocketAddr)> = Family::BOTH
            .map(|f| (Proto::Tcp, SocketAddr::new(plain(agent.host, f), 7000)))
            .to_vec();
        responders.push(Responders::start(agent_ns, &on_plain));
        let (v4, v6) = (
            plain(OUTSIDER, Family::V4).to_string(),
            plain(OUTSIDER, Family::V6).to_string(),
        );
        docker.docker(&[
            "run",
            "-d",
            "--name",
            "outsider",
            "--network",
            "plain",
            "--ip",
            &v4,
            "--ip6",
            &v6,
            IMAGE,
            "sleep",
            "100000",
        ]);
        containers.push(("outsider", docker.container_netns("outsider")));
        // Docker's isolation between networks gone (a Docker bug, an `iptables -F`), and 28.5's
        // drops of packets toward a container's unpublished ports from another interface (raw
        // PREROUTING, and the filter table's DOCKER chain; nothing is published here): only
        // enforcer stands between plain and replicante.
        ThreeGate::flush_docker_isolation(&docker);
        for tool in ["iptables", "ip6tables"] {
            let _ = docker.host.exec(tool, &["-t", "raw", "-F", "PREROUTING"]);
            let _ = docker.host.exec(tool, &["-F", "DOCKER"]);
        }
        Lab {
            docker,
            containers,
            _responders: responders,
        }
    }

    fn namespace(&self, name: &str) -> &Netns {
        &self.containers.iter().find(|(n, _)| *n == name).unwrap().1
    }

    /// Each row in both families: (row, family, open).
    fn measure(&self) -> Vec<(&'static Row, Family, bool)> {
        let mut results = Vec::new();
        for row in &MATRIX {
            for family in Family::BOTH {
                let (proto, target) = (row.proto, row.target(family));
                let open = self
                    .namespace(row.from)
                    .enter(move || probe_here(proto, target, PROBE_TIMEOUT));
                results.push((row, family, open));
            }
        }
        results
    }
}

fn report(results: &[(&Row, Family, bool)]) -> String {
    results
        .iter()
        .map(|(row, family, open)| {
            let verdict = if *open { "open" } else { "closed" };
            format!(
                "  {:<10} -> {:<30} {:?}/{:<5} {verdict:<6} (policy: {}; {})\n",
                row.from,
                row.target(*family).to_string(),
                row.proto,
                row.port,
                if row.allowed { "allowed" } else { "dropped" },
                row.why
            )
        })
        .collect()
}

fn replicante(version: DockerVersion) {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(version);
    // Docker alone: every flow of the matrix is open, so each closed one below is enforcer's.
    let before = lab.measure();
    let closed: Vec<_> = before.iter().filter(|(_, _, open)| !open).collect();
    assert!(
        closed.is_empty(),
        "without enforcer, {} flows were closed:\n{}",
        closed.len(),
        report(&before)
    );
    let policy = repo_file("rules/replicante.toml");
    let agent = lab
        .docker
        .start_agent(&["--config", policy.to_str().unwrap()]);
    agent.expect_log("+member agent (role agent)", Duration::from_secs(15));
    let after = lab.measure();
    let wrong: Vec<_> = after
        .iter()
        .filter(|(row, _, open)| *open != row.allowed)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} flows differ from the policy on Docker {}:\n{}\n{}",
        wrong.len(),
        lab.docker.server_version(),
        report(&after),
        agent.log()
    );
    eprintln!(
        "Docker {}:\n{}",
        lab.docker.server_version(),
        report(&after)
    );
}

#[test]
fn replicante_roles_hold_on_docker_20_10() {
    replicante(DockerVersion::Bookworm);
}

#[test]
fn replicante_roles_hold_on_docker_28_5() {
    replicante(DockerVersion::Sid);
}

/// Ingress on a host without Docker: one bridge (br-ingress, 172.20.0.0/16 and fd00:20::/64,
/// east-west denied) with the supervisor, the agent and DNS as static members, and the
/// internet namespace. The supervisor's role lets the internet open tcp/8443 and DNS udp/5353;
/// nothing else may open a connection toward a managed container. Every flow is open with no
/// table first.
#[test]
fn ingress_lets_in_only_what_a_role_allows() {
    use enforcer_harness::host::connect_internet;
    use enforcer_harness::{apply_ok, TempFile};

    enforcer_harness::require_root();
    let host = Netns::new("inghost");
    let internet_ns = Netns::new("inginet");
    host.sysctl("net.bridge.bridge-nf-call-iptables", "1");
    host.sysctl("net.bridge.bridge-nf-call-ip6tables", "1");
    connect_internet(&host, &internet_ns);
    internet_ns.ip(&["route", "add", "172.20.0.0/16", "via", "203.0.113.1"]);
    internet_ns.ip(&[
        "-6",
        "route",
        "add",
        "fd00:20::/64",
        "via",
        "2001:db8:113::1",
    ]);
    host.ip(&["link", "add", "br-ingress", "type", "bridge"]);
    host.ip(&["addr", "add", "172.20.0.1/16", "dev", "br-ingress"]);
    host.ip(&["addr", "add", "fd00:20::1/64", "dev", "br-ingress", "nodad"]);
    host.ip(&["link", "set", "br-ingress", "up"]);
    let mut parts = Vec::new();
    let mut responders = Vec::new();
    for (name, number, listens) in [
        (
            "supervisor",
            5u8,
            &[(Proto::Tcp, 8443), (Proto::Tcp, 22), (Proto::Udp, 5353)][..],
        ),
        ("agent", 100, &[(Proto::Tcp, 7000)][..]),
        ("dns", 3, &[][..]),
    ] {
        let ns = Netns::new(&format!("ing{name}"));
        let outside = format!("ving{number}");
        host.veth(&outside, &ns, "eth0");
        host.ip(&["link", "set", &outside, "master", "br-ingress", "up"]);
        for family in Family::BOTH {
            let len = match family {
                Family::V4 => 16,
                Family::V6 => 64,
            };
            let address = address(number, family);
            let cidr = format!("{address}/{len}");
            let mut args = vec!["addr", "add", &cidr, "dev", "eth0"];
            if family == Family::V6 {
                args.push("nodad");
            }
            ns.ip(&args);
        }
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "via", "172.20.0.1"]);
        ns.ip(&["-6", "route", "add", "default", "via", "fd00:20::1"]);
        let endpoints: Vec<(Proto, SocketAddr)> = listens
            .iter()
            .flat_map(|(proto, port)| {
                Family::BOTH.map(|f| (*proto, SocketAddr::new(address(number, f), *port)))
            })
            .collect();
        responders.push(Responders::start(&ns, &endpoints));
        parts.push((name, ns));
    }
    let namespace = |name: &str| match name {
        "internet" => &internet_ns,
        other => &parts.iter().find(|(n, _)| *n == other).unwrap().1,
    };
    let rows: [(&str, u8, Proto, u16, bool); 5] = [
        ("internet", 5, Proto::Tcp, 8443, true),
        ("internet", 5, Proto::Tcp, 22, false),
        ("internet", 100, Proto::Tcp, 7000, false),
        ("dns", 5, Proto::Udp, 5353, true),
        ("agent", 5, Proto::Udp, 5353, false),
    ];
    let measure = || {
        let mut results = Vec::new();
        for (from, to, proto, port, allowed) in rows {
            for family in Family::BOTH {
                let target = SocketAddr::new(address(to, family), port);
                let open = namespace(from).enter(move || probe_here(proto, target, PROBE_TIMEOUT));
                results.push((from, target, proto, allowed, open));
            }
        }
        results
    };
    let shown = |results: &[(&str, SocketAddr, Proto, bool, bool)]| -> String {
        results
            .iter()
            .map(|(from, target, proto, allowed, open)| {
                format!("  {from:<8} -> {target:<24} {proto:?} allowed {allowed} open {open}\n")
            })
            .collect()
    };
    let before = measure();
    assert!(
        before.iter().all(|r| r.4),
        "without a table, a flow was closed:\n{}",
        shown(&before)
    );
    let policy = TempFile::new(
        ".toml",
        "[docker]\nenabled = false\n\
         [[networks]]\nname = \"replicante\"\ninterface = \"br-ingress\"\n\
         subnets = [\"172.20.0.0/16\", \"fd00:20::/64\"]\neast_west = \"deny\"\n\
         [roles.supervisor]\ningress = [\n\
         { from = \"internet\", allow = [\"tcp/8443\"] },\n\
         { from = \"role:dns\", allow = [\"udp/5353\"] },\n]\n\
         [roles.agent]\n[roles.dns]\n\
         [[members]]\nname = \"supervisor\"\nrole = \"supervisor\"\n\
         addresses = [\"172.20.0.5\", \"fd00:20::5\"]\n\
         [[members]]\nname = \"agent\"\nrole = \"agent\"\n\
         addresses = [\"172.20.0.100\", \"fd00:20::64\"]\n\
         [[members]]\nname = \"dns\"\nrole = \"dns\"\naddresses = [\"172.20.0.3\", \"fd00:20::3\"]\n",
    );
    apply_ok(&host, &["--config", policy.path()]);
    let after = measure();
    let wrong: Vec<_> = after.iter().filter(|r| r.3 != r.4).collect();
    let listing = host.exec_ok("nft", &["list", "table", "inet", "enforcer"]);
    assert!(
        wrong.is_empty(),
        "flows differ from the policy:\n{}\n{}",
        shown(&after),
        String::from_utf8_lossy(&listing.stdout)
    );
}
