//! Per-port anti-spoofing (issue 11), the attack side: what a container on a network it shares
//! with the egress proxy can do with forged frames, in ThreeGate as the harness builds it
//! through a real dockerd (fetchnet internal, egressnet labelled managed, the proxy labelled
//! `enforcer.role=egress-proxy`), on Docker 20.10 and on Docker 28.5.
//!
//! The attacker is ThreeGate's bystander, which shares egressnet with the proxy; the
//! neighbour that sees or suffers an attack is the proxy (the race's neighbour is the
//! bystander). Each attack is a function that performs it, undoes what it changed, and
//! returns what it observed, so that one function serves both expectations:
//! - `..._succeed_against_the_inet_table_alone_...`: the agent ran and stopped (SIGTERM leaves
//!   `table inet enforcer` in the kernel) and no `table bridge enforcer` is loaded. Every attack
//!   succeeds: the threat as it was, which the inet table alone cannot stop.
//! - `the_agent_stops_every_spoofing_attack_...`: `enforcer run` is running, with its
//!   `table bridge enforcer`. Every attack fails. These also show that each attack function
//!   reports a stopped attack as failed.
//!
//! Most attacks use the attacker namespace's root for brevity (through `nsenter`: `ip addr
//! add` of the proxy's address, `ip route`), which a container does not get by default
//! (CAP_NET_ADMIN). The frames that matter are forged with `forge` over an AF_PACKET socket,
//! which needs only CAP_NET_RAW, Docker's default; the race's containers are real unprivileged
//! containers whose first command forges.
//!
//! `docker_*_container_links` measure what Docker gives a container's link (its MAC, its
//! link-local address, whether it takes router advertisements, IPv6 on an IPv4-only network,
//! the MAC after a restart), the facts a per-port binding rests on.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use enforcer_harness::docker::{Agent, DockerVersion, Dockerd, ThreeGate, IMAGE};
use enforcer_harness::host::Containers;
use enforcer_harness::spec::{container_named, internet, Family, EGRESSNET};
use enforcer_harness::{poll_until, probe_here, wait_until, Netns, Proto};

/// The raw-frame tool, built with this package.
const FORGE: &str = env!("CARGO_BIN_EXE_forge");
/// One dockerd at a time: they share the machine's cgroups and containerd conventions.
static DOCKERD: Mutex<()> = Mutex::new(());
const CONVERGE: Duration = Duration::from_secs(15);
/// Tries of an attack that races the proxy for the host's neighbour entry.
const TRIES: usize = 5;
/// Containers the race starts.
const RACERS: usize = 50;

// --- Reading namespaces ---------------------------------------------------------------------

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ip -j ARGS` in `ns`, parsed.
fn ip_json(ns: &Netns, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let output = ns.exec_ok("ip", &all);
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("ip {} in {}: {e}", all.join(" "), ns.name()))
}

/// The interface of `ns` that holds `address`.
fn iface_with(ns: &Netns, address: &str) -> String {
    let links = ip_json(ns, &["addr", "show"]);
    links
        .as_array()
        .into_iter()
        .flatten()
        .find(|link| {
            link["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["local"] == address)
        })
        .and_then(|link| link["ifname"].as_str())
        .unwrap_or_else(|| panic!("no interface of {} holds {address}", ns.name()))
        .to_string()
}

/// The Ethernet address of `iface` in `ns`.
fn mac_of(ns: &Netns, iface: &str) -> String {
    ip_json(ns, &["link", "show", "dev", iface])[0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{iface} in {} has no address", ns.name()))
        .to_string()
}

/// The IPv6 link-local address of `iface` in `ns`, if it has one.
fn link_local_of(ns: &Netns, iface: &str) -> Option<String> {
    let link = ip_json(ns, &["-6", "addr", "show", "dev", iface, "scope", "link"]);
    link[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|a| a["local"].as_str().map(str::to_string))
}

/// The link-layer address `ns` holds for `address` on `iface`, if any.
fn neighbour_mac(ns: &Netns, address: &str, iface: &str) -> Option<String> {
    ip_json(ns, &["neigh", "show", address, "dev", iface])[0]["lladdr"]
        .as_str()
        .map(str::to_string)
}

/// Forgets the neighbour entry for `address` on `iface` in `ns` (none is fine).
fn forget_neighbour(ns: &Netns, address: &str, iface: &str) {
    let _ = ns.exec("ip", &["neigh", "del", address, "dev", iface]);
}

/// A sysctl of `ns`, read from /proc/sys (which shows the reader's network namespace).
fn sysctl(ns: &Netns, key: &str) -> String {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    text(&ns.exec_ok("cat", &[&path]).stdout).trim().to_string()
}

/// The host side of `iface` in a container's namespace: the bridge port.
fn host_port(host: &Netns, container: &Netns, iface: &str) -> String {
    let peer = ip_json(container, &["link", "show", "dev", iface])[0]["link_index"].clone();
    ip_json(host, &["link", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .find(|link| link["ifindex"] == peer)
        .and_then(|link| link["ifname"].as_str())
        .unwrap_or_else(|| panic!("no host interface is the peer of {iface}"))
        .to_string()
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

// --- forge ------------------------------------------------------------------------------------

/// Runs `forge ARGS` inside `ns`; panics when it fails.
fn forge(ns: &Netns, args: &[&str]) {
    ns.exec_ok(FORGE, args);
}

/// A running `forge listen`, killed on drop.
struct Listener {
    child: Option<Child>,
}

impl Listener {
    /// Starts `forge listen --iface IFACE --for-ms FOR_MS FILTERS` in `ns` and waits (at most
    /// 5 s) until its socket is bound.
    fn start(ns: &Netns, iface: &str, for_ms: u64, filters: &[&str]) -> Listener {
        let for_ms = for_ms.to_string();
        let mut child = ns
            .command(FORGE)
            .args(["listen", "--iface", iface, "--for-ms", &for_ms])
            .args(filters)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start forge listen");
        let stderr = child.stderr.take().expect("piped stderr");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            let _ = ready_tx.send(first);
            // Keep reading so that the child never blocks on a full pipe.
            for _ in lines {}
        });
        let said = ready_rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        assert!(
            said.starts_with("listening on"),
            "forge listen in {} did not start: {said}",
            ns.name()
        );
        Listener { child: Some(child) }
    }

    /// Stops it now (SIGTERM) and returns its count.
    fn stop(self) -> u64 {
        let child = self.child.as_ref().expect("listener runs");
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        self.count()
    }

    /// Waits (at most its --for-ms and 10 s more) until it ends and returns its count.
    fn count(mut self) -> u64 {
        let mut child = self.child.take().expect("listener runs");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut said = String::new();
        let reader = std::thread::spawn(move || {
            let _ = stdout.read_to_string(&mut said);
            said
        });
        let start = Instant::now();
        let limit = Duration::from_secs(610);
        let exited = poll_until(limit, Duration::from_millis(20), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
        let said = reader.join().expect("stdout reader");
        said.trim().parse().unwrap_or_else(|_| {
            panic!(
                "forge listen said `{said}` after {:?}: no count",
                start.elapsed()
            )
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// --- The lab ----------------------------------------------------------------------------------

/// A container on egressnet, as the attacks need it.
struct Peer {
    name: &'static str,
    iface: String,
    mac: String,
    v4: String,
    v6: String,
}

/// What protects ThreeGate while the attacks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protection {
    /// The agent's `table inet enforcer` alone: the agent ran and stopped, no bridge table.
    InetTableOnly,
    /// `enforcer run`, running: both of its tables.
    Agent,
}

/// ThreeGate through Docker, Docker's isolation flushed, with one of [`Protection`].
struct Lab {
    docker: Dockerd,
    gate: ThreeGate,
    _agent: Option<Agent>,
    protection: Protection,
    bridge: String,
    gateway_mac: String,
    proxy: Peer,
    attacker: Peer,
}

fn internet_at(port: u16, family: Family) -> SocketAddr {
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
    fn new(version: DockerVersion, protection: Protection) -> Lab {
        let docker = Dockerd::start_with(version);
        let gate = ThreeGate::create(&docker);
        ThreeGate::flush_docker_isolation(&docker);
        let mut agent = docker.start_agent(&[]);
        agent.expect_log("+proxy proxy", CONVERGE);
        let bridge = docker.bridge(EGRESSNET.name);
        let gateway_mac = mac_of(&docker.host, &bridge);
        let proxy = peer(&gate, "proxy");
        let attacker = peer(&gate, "bystander");
        let agent = match protection {
            Protection::Agent => {
                let loaded = wait_until(CONVERGE, || {
                    text(&docker.host.exec_ok("nft", &["list", "tables"]).stdout)
                        .contains("table bridge enforcer")
                });
                assert!(
                    loaded,
                    "the agent runs but loaded no `table bridge enforcer`"
                );
                Some(agent)
            }
            Protection::InetTableOnly => {
                assert_eq!(agent.signal_and_wait(libc::SIGTERM), Some(0));
                let tables = text(&docker.host.exec_ok("nft", &["list", "tables"]).stdout);
                assert!(tables.contains("table inet enforcer"), "{tables}");
                if tables.contains("table bridge enforcer") {
                    docker
                        .host
                        .exec_ok("nft", &["delete", "table", "bridge", "enforcer"]);
                }
                None
            }
        };
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

    fn attacker_ns(&self) -> &Netns {
        self.gate.namespace(self.attacker.name)
    }

    fn proxy_ns(&self) -> &Netns {
        self.gate.namespace(self.proxy.name)
    }

    /// The proxy reaches the internet's tcp/443 in both families (it also refreshes the
    /// host's neighbour entries for the proxy, and the bridge's for its MAC).
    fn expect_proxy_out(&self) {
        for family in Family::BOTH {
            let target = internet_at(443, family);
            assert!(
                self.gate.wait_open(self.proxy.name, target, CONVERGE),
                "the proxy cannot reach {target}: the lab is broken, not attacked"
            );
        }
    }

    fn label(&self) -> String {
        format!(
            "Docker {} with {:?}",
            self.docker.server_version(),
            self.protection
        )
    }
}

/// What one attack observed.
struct Outcome {
    attack: &'static str,
    succeeded: bool,
    measured: String,
}

/// Undoes an attack's changes when dropped (also when the attack panics).
struct Undo<'a> {
    lab: &'a Lab,
    steps: Vec<(&'a Netns, Vec<String>)>,
}

impl<'a> Undo<'a> {
    fn new(lab: &'a Lab) -> Undo<'a> {
        Undo {
            lab,
            steps: Vec::new(),
        }
    }

    /// Runs `ip ARGS` in `ns` on drop, whatever its status.
    fn ip(&mut self, ns: &'a Netns, args: &[&str]) {
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

// --- The attacks ------------------------------------------------------------------------------

/// a. The attacker takes the proxy's IPv4 address (the address, and gratuitous ARP that moves
/// the host's neighbour entry to its MAC) and opens a two-way tcp/443 connection out.
fn ipv4_takeover(lab: &Lab) -> Outcome {
    let ns = lab.attacker_ns();
    let iface = lab.attacker.iface.as_str();
    let proxy = lab.proxy.v4.as_str();
    let target = internet_at(443, Family::V4);
    let gateway = EGRESSNET.gateway(Family::V4).to_string();
    let host_route = format!("{}/32", internet(Family::V4));
    // Undone last to first: the address goes, then the host forgets the entry it moved.
    let mut undo = Undo::new(lab);
    undo.ip(
        &lab.docker.host,
        &["neigh", "del", proxy, "dev", &lab.bridge],
    );
    // Root of the attacker's namespace, for brevity: the address and a route that uses it.
    ns.ip(&["addr", "add", &format!("{proxy}/32"), "dev", iface]);
    undo.ip(ns, &["addr", "del", &format!("{proxy}/32"), "dev", iface]);
    ns.ip(&[
        "route",
        "replace",
        &host_route,
        "via",
        &gateway,
        "src",
        proxy,
    ]);
    undo.ip(ns, &["route", "del", &host_route]);
    let mut tries = 0;
    let mut connected = false;
    while tries < TRIES && !connected {
        tries += 1;
        forge(
            ns,
            &[
                "arp",
                "--iface",
                iface,
                "--op",
                "request",
                "--sender-ip",
                proxy,
                "--count",
                "2",
                "--interval-ms",
                "50",
            ],
        );
        connected = ns.enter(move || probe_here(Proto::Tcp, target, Duration::from_millis(800)));
    }
    let entry = neighbour_mac(&lab.docker.host, proxy, &lab.bridge);
    Outcome {
        attack: "a. IPv4 takeover (address + gratuitous ARP), tcp/443 out",
        succeeded: connected,
        measured: format!(
            "two-way tcp/443 to {target} from {proxy}: {connected} after {tries} tries; host's \
             entry for {proxy}: {entry:?} (attacker {}, proxy {})",
            lab.attacker.mac, lab.proxy.mac
        ),
    }
}

/// b. Forged-source UDP: datagrams from the proxy's address to udp/53 of the internet,
/// counted where they arrive. The same datagrams from the attacker's own address are the
/// control: the table drops those.
fn forged_source_udp(lab: &Lab) -> Outcome {
    const SENT: u64 = 10;
    let ns = lab.attacker_ns();
    let dst = internet(Family::V4).to_string();
    let send = |src: &str| {
        let before = lab.docker.internet_received();
        forge(
            ns,
            &[
                "udp4",
                "--iface",
                &lab.attacker.iface,
                "--eth-dst",
                &lab.gateway_mac,
                "--src",
                src,
                "--dst",
                &dst,
                "--sport",
                "40053",
                "--dport",
                "53",
                "--payload",
                "forge-b",
                "--count",
                &SENT.to_string(),
                "--interval-ms",
                "20",
            ],
        );
        wait_until(Duration::from_secs(2), || {
            lab.docker.internet_received() - before >= SENT
        });
        lab.docker.internet_received() - before
    };
    let own = send(&lab.attacker.v4);
    let forged = send(&lab.proxy.v4);
    Outcome {
        attack: "b. forged-source UDP to udp/53 of the internet",
        succeeded: forged > 0,
        measured: format!(
            "{forged} of {SENT} datagrams from {} arrived ({own} of {SENT} from the attacker's \
             own {})",
            lab.proxy.v4, lab.attacker.v4
        ),
    }
}

/// c. Frames with the proxy's source MAC, broadcast from the attacker's port: counted where
/// they arrive, at the proxy; and where the bridge then puts the proxy's MAC.
fn forged_source_mac(lab: &Lab) -> Outcome {
    const SENT: u64 = 5;
    let listener = Listener::start(
        lab.proxy_ns(),
        &lab.proxy.iface,
        2000,
        &["--eth-src", &lab.proxy.mac, "--contains", "forge-c"],
    );
    let broadcast = format!("{}", EGRESSNET.v4.broadcast());
    forge(
        lab.attacker_ns(),
        &[
            "udp4",
            "--iface",
            &lab.attacker.iface,
            "--eth-src",
            &lab.proxy.mac,
            "--eth-dst",
            "ff:ff:ff:ff:ff:ff",
            "--src",
            &lab.proxy.v4,
            "--dst",
            &broadcast,
            "--dport",
            "9",
            "--payload",
            "forge-c",
            "--count",
            &SENT.to_string(),
            "--interval-ms",
            "20",
        ],
    );
    let fdb = text(
        &lab.docker
            .host
            .exec_ok("bridge", &["fdb", "show", "br", &lab.bridge])
            .stdout,
    );
    let learned: Vec<&str> = fdb
        .lines()
        .filter(|l| l.starts_with(&lab.proxy.mac))
        .collect();
    let attacker_port = host_port(&lab.docker.host, lab.attacker_ns(), &lab.attacker.iface);
    let arrived = listener.count();
    // The proxy's next frames teach the bridge its port again.
    lab.expect_proxy_out();
    Outcome {
        attack: "c. frames with the proxy's source MAC reach a neighbour",
        succeeded: arrived > 0,
        measured: format!(
            "{arrived} of {SENT} frames from {} arrived at the proxy; the bridge then had {:?} \
             (the attacker's port is {attacker_port})",
            lab.proxy.mac, learned
        ),
    }
}

/// d. IPv6: a neighbour advertisement (override) moves the host's entry for the proxy's
/// address on egressnet to the attacker, which then opens a two-way tcp/443 connection out
/// from that address.
fn ipv6_takeover(lab: &Lab) -> Outcome {
    let ns = lab.attacker_ns();
    let iface = lab.attacker.iface.as_str();
    let proxy = lab.proxy.v6.as_str();
    let target = internet_at(443, Family::V6);
    let gateway = EGRESSNET.gateway(Family::V6).to_string();
    let host_route = format!("{}/128", internet(Family::V6));
    // Undone last to first: the address goes, then the host forgets the entry it moved.
    let mut undo = Undo::new(lab);
    undo.ip(
        &lab.docker.host,
        &["-6", "neigh", "del", proxy, "dev", &lab.bridge],
    );
    // Root of the attacker's namespace, for brevity: the address and a route that uses it.
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{proxy}/128"),
        "dev",
        iface,
        "nodad",
    ]);
    undo.ip(
        ns,
        &["-6", "addr", "del", &format!("{proxy}/128"), "dev", iface],
    );
    ns.ip(&[
        "-6",
        "route",
        "replace",
        &host_route,
        "via",
        &gateway,
        "src",
        proxy,
    ]);
    undo.ip(ns, &["-6", "route", "del", &host_route]);
    let mut tries = 0;
    let mut connected = false;
    while tries < TRIES && !connected {
        tries += 1;
        forge(
            ns,
            &[
                "na6",
                "--iface",
                iface,
                "--src",
                proxy,
                "--target",
                proxy,
                "--override",
                "--count",
                "2",
                "--interval-ms",
                "50",
            ],
        );
        connected = ns.enter(move || probe_here(Proto::Tcp, target, Duration::from_millis(800)));
    }
    let entry = neighbour_mac(&lab.docker.host, proxy, &lab.bridge);
    Outcome {
        attack: "d. IPv6 takeover (neighbour advertisement), tcp/443 out",
        succeeded: connected,
        measured: format!(
            "two-way tcp/443 to {target} from {proxy}: {connected} after {tries} tries; host's \
             entry for {proxy}: {entry:?} (attacker {}, proxy {})",
            lab.attacker.mac, lab.proxy.mac
        ),
    }
}

/// e. A router advertisement from the attacker's link-local address, with an on-link,
/// autonomous prefix and a default-router lifetime: does the proxy take a route or an
/// address from it?
fn rogue_router_advertisement(lab: &Lab) -> Outcome {
    const PREFIX: &str = "fd00:bad:1::";
    let ns = lab.attacker_ns();
    let neighbour = lab.proxy_ns();
    let iface = lab.proxy.iface.as_str();
    let source = link_local_of(ns, &lab.attacker.iface).expect("the attacker has a link-local");
    let accept_ra = sysctl(neighbour, &format!("net.ipv6.conf.{iface}.accept_ra"));
    let forwarding = sysctl(neighbour, &format!("net.ipv6.conf.{iface}.forwarding"));
    let mut undo = Undo::new(lab);
    undo.ip(neighbour, &["-6", "route", "flush", "proto", "ra"]);
    undo.ip(
        neighbour,
        &["-6", "route", "del", &format!("{PREFIX}/64"), "dev", iface],
    );
    undo.ip(
        neighbour,
        &[
            "-6", "addr", "flush", "dev", iface, "scope", "global", "dynamic",
        ],
    );
    let listener = Listener::start(
        neighbour,
        iface,
        1000,
        &["--eth-src", &lab.attacker.mac, "--icmp6-type", "134"],
    );
    forge(
        ns,
        &[
            "ra6",
            "--iface",
            &lab.attacker.iface,
            "--src",
            &source,
            "--prefix",
            &format!("{PREFIX}/64"),
            "--router-lifetime",
            "1800",
        ],
    );
    let arrived = listener.count();
    let routes = |ns: &Netns| text(&ns.exec_ok("ip", &["-6", "route", "show"]).stdout);
    let taken = |ns: &Netns| {
        let routes = routes(ns);
        let addresses = text(
            &ns.exec_ok("ip", &["-6", "addr", "show", "dev", iface])
                .stdout,
        );
        (
            routes.lines().any(|l| l.contains("proto ra")),
            addresses.contains(&PREFIX[..PREFIX.len() - 1]),
        )
    };
    // The route comes with the RA; the address after the neighbour's duplicate address
    // detection, about a second.
    wait_until(Duration::from_secs(3), || taken(neighbour) == (true, true));
    let (route, address) = taken(neighbour);
    let listing: Vec<String> = routes(neighbour)
        .lines()
        .filter(|l| l.contains("proto ra") || l.starts_with(&PREFIX[..PREFIX.len() - 1]))
        .map(str::to_string)
        .collect();
    Outcome {
        attack: "e. router advertisement toward a neighbour",
        succeeded: route || address,
        measured: format!(
            "{arrived} router advertisement(s) from the attacker's MAC arrived at the proxy ({iface}: accept_ra={accept_ra}, \
             forwarding={forwarding}); it took a route: {route}, an address in {PREFIX}/64: \
             {address}; routes {listing:?}"
        ),
    }
}

/// f. An ARP reply to the proxy claiming the gateway's address: does the proxy's entry for
/// its gateway move to the attacker's MAC?
fn gateway_arp_poisoning(lab: &Lab) -> Outcome {
    let neighbour = lab.proxy_ns();
    let iface = lab.proxy.iface.as_str();
    let gateway = EGRESSNET.gateway(Family::V4).to_string();
    let mut undo = Undo::new(lab);
    undo.ip(neighbour, &["neigh", "del", &gateway, "dev", iface]);
    let before = neighbour_mac(neighbour, &gateway, iface);
    // Linux ignores a changed address within a second of the entry's last change (locktime):
    // three replies over one second.
    forge(
        lab.attacker_ns(),
        &[
            "arp",
            "--iface",
            &lab.attacker.iface,
            "--op",
            "reply",
            "--eth-dst",
            &lab.proxy.mac,
            "--sender-ip",
            &gateway,
            "--target-ip",
            &lab.proxy.v4,
            "--target-mac",
            &lab.proxy.mac,
            "--count",
            "3",
            "--interval-ms",
            "500",
        ],
    );
    let after = neighbour_mac(neighbour, &gateway, iface);
    Outcome {
        attack: "f. ARP reply claiming the gateway, toward a neighbour",
        succeeded: after.as_deref() == Some(lab.attacker.mac.as_str()),
        measured: format!(
            "the proxy's entry for {gateway}: {before:?} before, {after:?} after (gateway {}, \
             attacker {})",
            lab.gateway_mac, lab.attacker.mac
        ),
    }
}

/// The race: containers started on egressnet whose first command is a gratuitous ARP for the
/// proxy's address (busybox `arping -U`), one after the other; the frames claiming the proxy's
/// address from another MAC are counted at a neighbour, the bystander.
fn forged_arp_race(lab: &Lab) -> Outcome {
    let neighbour = lab.attacker_ns();
    let proxy = lab.proxy.v4.as_str();
    // Bounded by count (RACERS) and by time: the listener stops by itself after 3 minutes.
    let listener = Listener::start(
        neighbour,
        &lab.attacker.iface,
        180_000,
        &[
            "--ethertype",
            "0x0806",
            "--arp-sender-ip",
            proxy,
            "--exclude-eth-src",
            &lab.proxy.mac,
        ],
    );
    let names: Vec<String> = (0..RACERS).map(|i| format!("fgrace{i}")).collect();
    struct Remove<'a>(&'a Dockerd, &'a [String]);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let mut args = vec!["rm", "-f"];
            args.extend(self.1.iter().map(String::as_str));
            let _ = self.0.try_docker(&args);
        }
    }
    let remove = Remove(&lab.docker, &names);
    let start = Instant::now();
    for name in &names {
        // ip_nonlocal_bind only lets busybox's arping bind its check socket to an address it
        // does not hold; the frame itself needs only CAP_NET_RAW, which the container has.
        lab.docker.docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            EGRESSNET.name,
            "--sysctl",
            "net.ipv4.ip_nonlocal_bind=1",
            IMAGE,
            "arping",
            "-U",
            "-c",
            "2",
            "-w",
            "1",
            "-I",
            "eth0",
            "-s",
            proxy,
            proxy,
        ]);
    }
    let started = start.elapsed();
    let done = wait_until(Duration::from_secs(30), || {
        lab.docker
            .docker(&["ps", "-q", "--filter", "name=fgrace"])
            .is_empty()
    });
    assert!(done, "the racers did not exit within 30 s");
    std::thread::sleep(Duration::from_millis(300));
    let seen = listener.stop();
    drop(remove);
    // The host's entry for the proxy may now name a racer: forget it.
    forget_neighbour(&lab.docker.host, proxy, &lab.bridge);
    lab.expect_proxy_out();
    Outcome {
        attack: "race: new containers' first command forges ARP for the proxy",
        succeeded: seen > 0,
        measured: format!(
            "{seen} ARP frames claiming {proxy} from {RACERS} containers (2 each, started in \
             {started:.1?}) reached the bystander"
        ),
    }
}

// --- The tests --------------------------------------------------------------------------------

fn run_attacks(lab: &Lab) -> Vec<Outcome> {
    vec![
        ipv4_takeover(lab),
        forged_source_udp(lab),
        forged_source_mac(lab),
        ipv6_takeover(lab),
        rogue_router_advertisement(lab),
        gateway_arp_poisoning(lab),
        forged_arp_race(lab),
    ]
}

/// Runs every attack and checks that each `succeeds` (or not), with one report of all.
fn expect_attacks(version: DockerVersion, protection: Protection, succeed: bool) {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(version, protection);
    let outcomes = run_attacks(&lab);
    let mut report = format!("{}:\n", lab.label());
    for o in &outcomes {
        let verdict = if o.succeeded { "SUCCEEDED" } else { "failed" };
        report.push_str(&format!("  {:<62} {verdict:<9} {}\n", o.attack, o.measured));
    }
    let wrong: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.succeeded != succeed)
        .map(|o| o.attack)
        .collect();
    assert!(
        wrong.is_empty(),
        "expected every attack to {}, but not: {wrong:?}\n{report}",
        if succeed { "succeed" } else { "fail" }
    );
    eprintln!("{report}");
}

#[test]
fn spoofing_attacks_succeed_against_the_inet_table_alone_on_docker_20_10() {
    expect_attacks(DockerVersion::Bookworm, Protection::InetTableOnly, true);
}

#[test]
fn spoofing_attacks_succeed_against_the_inet_table_alone_on_docker_28_5() {
    expect_attacks(DockerVersion::Sid, Protection::InetTableOnly, true);
}

/// `table bridge enforcer` stops every attack, and the proxy's own egress keeps working.
#[test]
fn the_agent_stops_every_spoofing_attack_on_docker_20_10() {
    expect_attacks(DockerVersion::Bookworm, Protection::Agent, false);
}

/// As on 20.10.
#[test]
fn the_agent_stops_every_spoofing_attack_on_docker_28_5() {
    expect_attacks(DockerVersion::Sid, Protection::Agent, false);
}

/// What Docker gives a container's link, measured: the facts the bridge table's design rests
/// on (which MAC a port carries, which link-local address, whether RAs are taken, whether IPv6
/// is off on an IPv4-only network). Prints them, and checks those that hold on both versions
/// and the MAC rule of each.
fn link_facts(version: DockerVersion) {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let docker = Dockerd::start_with(version);
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
    let mut report = format!("Docker {}:\n", docker.server_version());
    for (name, network, v4) in [
        ("fgfacts6", "fgdual", "10.150.0.5"),
        ("fgfacts4", "fgv4only", "10.151.0.5"),
    ] {
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
        let ns = docker.container_netns(name);
        let iface = iface_with(&ns, v4);
        let mac = mac_of(&ns, &iface);
        let inspected = docker.docker(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").MacAddress}}}}"),
            name,
        ]);
        let link_local = link_local_of(&ns, &iface);
        let conf = |key: &str| sysctl(&ns, &format!("net.ipv6.conf.{iface}.{key}"));
        let (accept_ra, disable_ipv6, autoconf) =
            (conf("accept_ra"), conf("disable_ipv6"), conf("autoconf"));
        let all_disable = sysctl(&ns, "net.ipv6.conf.all.disable_ipv6");
        let port = host_port(&docker.host, &ns, &iface);
        let port_mac = mac_of(&docker.host, &port);
        let octets: Vec<String> = v4
            .split('.')
            .map(|o| format!("{:02x}", o.parse::<u8>().unwrap()))
            .collect();
        let derived = format!("02:42:{}", octets.join(":"));
        report.push_str(&format!(
            "  {network}: {iface} MAC {mac} (inspect: {inspected}; 02:42+IPv4 would be \
             {derived}), link-local {link_local:?} (EUI-64 of the MAC: {}), accept_ra={accept_ra} \
             autoconf={autoconf} disable_ipv6={disable_ipv6} (all: {all_disable}); host port \
             {port} MAC {port_mac}\n",
            eui64_link_local(&mac)
        ));
        assert_eq!(inspected, mac, "Docker reports the MAC the container has");
        let first = u8::from_str_radix(&mac[..2], 16).unwrap();
        assert_eq!(
            first & 0x03,
            0x02,
            "a locally administered unicast MAC: {mac}"
        );
        match version {
            DockerVersion::Bookworm => assert_eq!(mac, derived, "20.10 derives the MAC"),
            DockerVersion::Sid => assert_ne!(mac, derived, "28.5 picks a random MAC"),
        }
        if network == "fgdual" {
            assert_eq!(link_local, Some(eui64_link_local(&mac)), "{report}");
            assert_eq!(disable_ipv6, "0", "{report}");
            assert_eq!(
                accept_ra, "1",
                "containers take router advertisements: {report}"
            );
        } else {
            assert_eq!(
                disable_ipv6, "1",
                "IPv6 is off on an IPv4-only network: {report}"
            );
            assert_eq!(link_local, None, "{report}");
        }
        // After a restart: a new port; does the MAC stay, and does Docker still tell it?
        docker.docker(&["restart", "-t", "0", name]);
        let ns = docker.container_netns(name);
        let mac_after = mac_of(&ns, &iface);
        let inspected_after = docker.docker(&[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{network}\").MacAddress}}}}"),
            name,
        ]);
        let port_after = host_port(&docker.host, &ns, &iface);
        report.push_str(&format!(
            "    after a restart: MAC {mac_after} (kept: {}), host port {port_after}\n",
            mac_after == mac
        ));
        assert_eq!(
            inspected_after, mac_after,
            "Docker reports the MAC after a restart"
        );
    }
    eprintln!("{report}");
}

#[test]
fn docker_20_10_container_links() {
    link_facts(DockerVersion::Bookworm);
}

#[test]
fn docker_28_5_container_links() {
    link_facts(DockerVersion::Sid);
}
