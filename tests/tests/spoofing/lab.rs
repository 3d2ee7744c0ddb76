//! The lab: ThreeGate through a real dockerd, the attacker and the neighbour it attacks, what
//! protects them, and how an attack undoes what it changed.

use std::net::SocketAddr;
use std::time::Duration;

use enforcer_harness::docker::{Agent, DockerVersion, Dockerd, ThreeGate};
use enforcer_harness::host::Containers;
use enforcer_harness::spec::{container_named, internet, Family, EGRESSNET};
use enforcer_harness::{probe_here, wait_until, Netns, Proto};

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
}

/// ThreeGate through Docker, Docker's isolation flushed, with one of [`Protection`].
pub(crate) struct Lab {
    /// The dockerd, and the host namespace it runs in.
    pub(crate) docker: Dockerd,
    gate: ThreeGate,
    _agent: Option<Agent>,
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

fn peer(gate: &ThreeGate, name: &'static str) -> Peer {
    let spec = container_named(name);
    let v4 = spec.address_on(&EGRESSNET, Family::V4).unwrap().to_string();
    let v6 = spec.address_on(&EGRESSNET, Family::V6).unwrap().to_string();
    let ns = gate.namespace(name);
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
        let lab = Lab {
            docker,
            gate,
            _agent: agent,
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

    /// The attacker's namespace.
    pub(crate) fn attacker_ns(&self) -> &Netns {
        self.gate.namespace(self.attacker.name)
    }

    /// The proxy's namespace.
    pub(crate) fn proxy_ns(&self) -> &Netns {
        self.gate.namespace(self.proxy.name)
    }

    /// The proxy reaches the internet's tcp/443 in both families (it also refreshes the
    /// host's neighbour entries for the proxy, and the bridge's for its MAC).
    pub(crate) fn expect_proxy_out(&self) {
        for family in Family::BOTH {
            let target = internet_at(443, family);
            assert!(
                self.gate.wait_open(self.proxy.name, target, CONVERGE),
                "the proxy cannot reach {target}: the lab is broken, not attacked"
            );
        }
    }

    /// The Docker version and the protection, for a report.
    pub(crate) fn label(&self) -> String {
        format!(
            "Docker {} with {:?}",
            self.docker.server_version(),
            self.protection
        )
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
    }
}
