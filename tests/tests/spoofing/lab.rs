//! The lab: ThreeGate through a real dockerd or on the hand-built host under a static policy,
//! the attacker and the neighbour it attacks, what protects them, and how an attack undoes
//! what it changed.

use std::net::SocketAddr;
use std::time::Duration;

use enforcer_harness::docker::{Agent, DockerVersion, Dockerd, ThreeGate};
use enforcer_harness::host::{Containers, DockerLikeHost};
use enforcer_harness::spec::{container_named, internet, Family, EGRESSNET, FETCHNET};
use enforcer_harness::{apply_ok, probe_here, repo_file, wait_until, Netns, Proto, TempFile};

use crate::inspect::{iface_with, mac_of, text};

/// How long the agent and the lab may take to settle.
pub(crate) const CONVERGE: Duration = Duration::from_secs(15);

/// A container on egressnet, as the attacks need it.
pub(crate) struct Peer {
    /// Its container's name.
    pub(crate) name: &'static str,
    /// Its interface on egressnet.
    pub(crate) iface: String,
    /// That interface's MAC.
    pub(crate) mac: String,
    /// Its IPv4 address on egressnet.
    pub(crate) v4: String,
    /// Its IPv6 address on egressnet.
    pub(crate) v6: String,
}

/// What protects ThreeGate while the attacks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protection {
    /// The agent's `table inet enforcer` alone: the agent ran and stopped, no bridge table.
    InetTableOnly,
    /// `enforcer run`, running: both of its tables.
    Agent,
    /// No Docker: `enforcer apply` of `rules/threegate.toml` as shipped, whose proxy declares no
    /// MAC (so there is no bridge table).
    StaticWithoutMacs,
    /// No Docker: `enforcer apply` of `rules/threegate.toml` with the proxy's MACs declared.
    StaticWithMacs,
}

/// Where ThreeGate runs.
enum Site {
    /// Through a real dockerd, Docker's isolation flushed; the agent while it protects.
    Docker {
        docker: Box<Dockerd>,
        gate: Box<ThreeGate>,
        _agent: Option<Agent>,
    },
    /// The hand-built host, no Docker, under a static policy.
    Static(Box<DockerLikeHost>, TempFile),
}

/// ThreeGate with one of [`Protection`].
pub(crate) struct Lab {
    site: Site,
    protection: Protection,
    /// Egressnet's bridge.
    pub(crate) bridge: String,
    /// The bridge's MAC: the gateway's.
    pub(crate) gateway_mac: String,
    /// The neighbour: the egress proxy.
    pub(crate) proxy: Peer,
    /// The attacker: the bystander.
    pub(crate) attacker: Peer,
}

/// `port` of the internet's address in `family`.
pub(crate) fn internet_at(port: u16, family: Family) -> SocketAddr {
    SocketAddr::new(internet(family), port)
}

fn peer(containers: &impl Containers, name: &'static str) -> Peer {
    let spec = container_named(name);
    let v4 = spec.address_on(&EGRESSNET, Family::V4).unwrap().to_string();
    let v6 = spec.address_on(&EGRESSNET, Family::V6).unwrap().to_string();
    let ns = containers.namespace(name);
    let iface = iface_with(ns, &v4);
    Peer {
        name,
        mac: mac_of(ns, &iface),
        iface,
        v4,
        v6,
    }
}

impl Lab {
    /// Starts dockerd `version`, ThreeGate on it and the agent, and leaves `protection` in
    /// force; checks that the proxy reaches the internet and the attacker, as itself, does not.
    pub(crate) fn new(version: DockerVersion, protection: Protection) -> Lab {
        let docker = Dockerd::start_with(version);
        let gate = ThreeGate::create(&docker);
        ThreeGate::flush_docker_isolation(&docker);
        let agent = docker.start_agent(&[]);
        agent.expect_log("+proxy proxy", CONVERGE);
        let bridge = docker.bridge(EGRESSNET.name);
        let gateway_mac = mac_of(&docker.host, &bridge);
        let proxy = peer(&gate, "proxy");
        let attacker = peer(&gate, "bystander");
        let agent = protect(&docker, agent, protection);
        let site = Site::Docker {
            docker: Box::new(docker),
            gate: Box::new(gate),
            _agent: agent,
        };
        Lab::settled(site, protection, bridge, gateway_mac, proxy, attacker)
    }

    /// Builds the hand-built ThreeGate host (no Docker) and applies `rules/threegate.toml`
    /// with `enforcer apply`, the proxy's MACs declared or not.
    pub(crate) fn new_static(protection: Protection) -> Lab {
        let host = DockerLikeHost::threegate();
        let bridge = EGRESSNET.bridge.to_string();
        let gateway_mac = mac_of(&host.host, &bridge);
        let proxy = peer(&host, "proxy");
        let attacker = peer(&host, "bystander");
        let mut policy = std::fs::read_to_string(repo_file("rules/threegate.toml")).unwrap();
        match protection {
            Protection::StaticWithMacs => {
                // The proxy is the file's last entry: its MACs, on fetchnet and egressnet.
                let ns = host.namespace("proxy");
                let spec = container_named("proxy");
                let macs: Vec<String> = [&FETCHNET, &EGRESSNET]
                    .iter()
                    .map(|n| {
                        let address = spec.address_on(n, Family::V4).unwrap().to_string();
                        format!("\"{}\"", mac_of(ns, &iface_with(ns, &address)))
                    })
                    .collect();
                policy.push_str(&format!("macs = [{}]\n", macs.join(", ")));
            }
            Protection::StaticWithoutMacs => {}
            other => panic!("{other:?} is not a static protection"),
        }
        let policy = TempFile::new(".toml", &policy);
        apply_ok(&host.host, &["--config", policy.path()]);
        let tables = text(&host.host.exec_ok("nft", &["list", "tables"]).stdout);
        assert_eq!(
            tables.contains("table bridge enforcer"),
            protection == Protection::StaticWithMacs,
            "{protection:?}: {tables}"
        );
        let site = Site::Static(Box::new(host), policy);
        Lab::settled(site, protection, bridge, gateway_mac, proxy, attacker)
    }

    /// The lab once `protection` is in force: the proxy gets out, the attacker as itself does
    /// not.
    fn settled(
        site: Site,
        protection: Protection,
        bridge: String,
        gateway_mac: String,
        proxy: Peer,
        attacker: Peer,
    ) -> Lab {
        let lab = Lab {
            site,
            protection,
            bridge,
            gateway_mac,
            proxy,
            attacker,
        };
        lab.expect_proxy_out();
        // The table is in force: the attacker, as itself, cannot leave. What the attacks
        // reach, they reach by borrowing the proxy's identity.
        for family in Family::BOTH {
            let target = internet_at(443, family);
            assert!(
                !lab.attacker_ns().enter(move || probe_here(
                    Proto::Tcp,
                    target,
                    Duration::from_millis(800)
                )),
                "the bystander reaches {target} as itself: the table is not in force"
            );
        }
        lab
    }

    /// The namespace of container `name`.
    fn namespace(&self, name: &str) -> &Netns {
        match &self.site {
            Site::Docker { gate, .. } => gate.namespace(name),
            Site::Static(host, _) => host.namespace(name),
        }
    }

    /// The attacker's namespace.
    pub(crate) fn attacker_ns(&self) -> &Netns {
        self.namespace(self.attacker.name)
    }

    /// The proxy's namespace.
    pub(crate) fn proxy_ns(&self) -> &Netns {
        self.namespace(self.proxy.name)
    }

    /// The host's namespace (bridges, nftables).
    pub(crate) fn host(&self) -> &Netns {
        match &self.site {
            Site::Docker { docker, .. } => &docker.host,
            Site::Static(host, _) => &host.host,
        }
    }

    /// The dockerd; only a Docker lab has one.
    pub(crate) fn docker(&self) -> &Dockerd {
        match &self.site {
            Site::Docker { docker, .. } => docker,
            Site::Static(..) => panic!("a static lab has no dockerd"),
        }
    }

    /// The policy file a static lab applied.
    pub(crate) fn static_policy(&self) -> &str {
        match &self.site {
            Site::Static(_, policy) => policy.path(),
            Site::Docker { .. } => panic!("a Docker lab applies no static policy"),
        }
    }

    /// Datagrams the internet's UDP responders received so far.
    pub(crate) fn internet_received(&self) -> u64 {
        match &self.site {
            Site::Docker { docker, .. } => docker.internet_received(),
            Site::Static(host, _) => host.internet_received(),
        }
    }

    /// The proxy reaches the internet's tcp/443 in both families (it also refreshes the
    /// host's neighbour entries for the proxy, and the bridge's for its MAC).
    pub(crate) fn expect_proxy_out(&self) {
        for family in Family::BOTH {
            let target = internet_at(443, family);
            let ns = self.proxy_ns();
            let open = wait_until(CONVERGE, || {
                ns.enter(move || probe_here(Proto::Tcp, target, Duration::from_millis(300)))
            });
            assert!(
                open,
                "the proxy cannot reach {target}: the lab is broken, not attacked"
            );
        }
    }

    /// The Docker version (or none) and the protection, for a report.
    pub(crate) fn label(&self) -> String {
        match &self.site {
            Site::Docker { docker, .. } => {
                format!(
                    "Docker {} with {:?}",
                    docker.server_version(),
                    self.protection
                )
            }
            Site::Static(..) => format!("no Docker, {:?}", self.protection),
        }
    }
}

/// What one attack observed.
pub(crate) struct Outcome {
    /// Which attack.
    pub(crate) attack: &'static str,
    /// Whether it did what it set out to do.
    pub(crate) succeeded: bool,
    /// What was measured, for the report.
    pub(crate) measured: String,
}

/// Undoes an attack's changes when dropped (also when the attack panics).
pub(crate) struct Undo<'a> {
    lab: &'a Lab,
    steps: Vec<(&'a Netns, Vec<String>)>,
}

impl<'a> Undo<'a> {
    /// Nothing to undo yet; on drop, after the steps, the proxy must reach out again.
    pub(crate) fn new(lab: &'a Lab) -> Undo<'a> {
        Undo {
            lab,
            steps: Vec::new(),
        }
    }

    /// Runs `ip ARGS` in `ns` on drop, whatever its status.
    pub(crate) fn ip(&mut self, ns: &'a Netns, args: &[&str]) {
        self.steps
            .push((ns, args.iter().map(|a| a.to_string()).collect()));
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        for (ns, args) in self.steps.drain(..).rev() {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = ns.exec("ip", &args);
        }
        if !std::thread::panicking() {
            self.lab.expect_proxy_out();
        }
    }
}

/// Leaves `protection` in force: the running agent (whose bridge table must be loaded), or
/// its inet table alone (the agent stopped, its bridge table deleted if it left one).
fn protect(docker: &Dockerd, mut agent: Agent, protection: Protection) -> Option<Agent> {
    let tables = || text(&docker.host.exec_ok("nft", &["list", "tables"]).stdout);
    match protection {
        Protection::Agent => {
            let loaded = wait_until(CONVERGE, || tables().contains("table bridge enforcer"));
            assert!(
                loaded,
                "the agent runs but loaded no `table bridge enforcer`"
            );
            Some(agent)
        }
        Protection::InetTableOnly => {
            assert_eq!(agent.signal_and_wait(libc::SIGTERM), Some(0));
            let tables = tables();
            assert!(tables.contains("table inet enforcer"), "{tables}");
            if tables.contains("table bridge enforcer") {
                docker
                    .host
                    .exec_ok("nft", &["delete", "table", "bridge", "enforcer"]);
            }
            None
        }
        Protection::StaticWithoutMacs | Protection::StaticWithMacs => {
            panic!("{protection:?} runs without Docker: use Lab::new_static")
        }
    }
}
