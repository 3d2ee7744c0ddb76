//! The agent against a real dockerd in a sealed namespace: ThreeGate made through Docker, real
//! flows from real containers, Docker's own isolation flushed, and the agent's life cycle (new,
//! removed and replaced objects, kill -9, restart, dockerd restart, signals).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use enforcer_harness::docker::{DockerVersion, Dockerd, ThreeGate, IMAGE};
use enforcer_harness::host::Containers;
use enforcer_harness::matrix::{measure, mismatches, report, threegate_matrix};
use enforcer_harness::spec::{Family, NETWORKS, OTHERNET};
use enforcer_harness::{
    apply_ok, probe_here, wait_until, Proto, Responders, TempFile, PROBE_TIMEOUT,
};

/// One dockerd at a time: they share the machine's cgroups and containerd conventions.
static DOCKERD: Mutex<()> = Mutex::new(());

const CONVERGE: Duration = Duration::from_secs(15);

fn internet(port: u16, v6: bool) -> SocketAddr {
    let family = if v6 { Family::V6 } else { Family::V4 };
    SocketAddr::new(enforcer_harness::spec::internet(family), port)
}

/// The first address of every managed network's IPv4 subnet, as `nft` lists set elements.
fn managed_v4_subnets() -> Vec<String> {
    NETWORKS
        .iter()
        .filter(|n| n.managed())
        .map(|n| n.v4.network().to_string())
        .collect()
}

fn probe(gate: &impl Containers, from: &str, target: SocketAddr) -> bool {
    gate.namespace(from)
        .enter(move || probe_here(Proto::Tcp, target, PROBE_TIMEOUT))
}

/// `nft list` text without counter values, which move with traffic.
fn strip_counters(listed: &str) -> String {
    listed
        .split("counter packets ")
        .map(|part| part.splitn(4, ' ').nth(3).unwrap_or(part))
        .collect::<Vec<_>>()
        .join("counter ")
}

fn table(docker: &Dockerd) -> String {
    String::from_utf8_lossy(
        &docker
            .host
            .exec("nft", &["list", "table", "inet", "enforcer"])
            .stdout,
    )
    .into_owned()
}

/// Waits until `set` of the kernel's table does (or does not) hold `element`.
fn wait_element(docker: &Dockerd, set: &str, element: &str, present: bool) -> bool {
    wait_until(CONVERGE, || {
        docker.set_elements(set).iter().any(|e| e.contains(element)) == present
    })
}

/// `docker network create --internal --subnet SUBNET NAME`.
fn create_internal(docker: &Dockerd, subnet: &str, name: &str) {
    docker.docker(&["network", "create", "--internal", "--subnet", subnet, name]);
}

/// Starts a plain container on `network` with a fixed IPv4 address and a default route via
/// the network's gateway (`.1`).
fn run_container(docker: &Dockerd, name: &str, network: &str, ip: &str, labels: &[&str]) {
    let mut args = vec![
        "run",
        "-d",
        "--name",
        name,
        "--network",
        network,
        "--ip",
        ip,
    ];
    for label in labels {
        args.extend(["--label", label]);
    }
    args.extend([IMAGE, "sleep", "100000"]);
    docker.docker(&args);
    let gateway = format!("{}.1", ip.rsplit_once('.').unwrap().0);
    docker
        .container_netns(name)
        .exec_ok("ip", &["route", "replace", "default", "via", &gateway]);
}

#[test]
fn threegate_through_docker_matches_the_matrix_without_dockers_isolation() {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let docker = Dockerd::start();
    let gate = ThreeGate::create(&docker);
    ThreeGate::flush_docker_isolation(&docker);

    // Docker alone, isolation flushed: the internal networks leak.
    for v6 in [false, true] {
        assert!(
            gate.wait_open("core", internet(443, v6), CONVERGE),
            "without the enforcer and with Docker's isolation flushed, core should reach the \
             internet (v6: {v6}); the test would prove nothing otherwise"
        );
    }

    let agent = docker.start_agent(&[]);
    agent.expect_log("+proxy proxy", CONVERGE);
    for v6 in [false, true] {
        assert!(gate.wait_open("proxy", internet(443, v6), CONVERGE));
        assert!(gate.wait_open("outsider", internet(80, v6), CONVERGE));
    }
    let results = measure(&gate, &threegate_matrix());
    let bad = mismatches(&results).len();
    assert_eq!(bad, 0, "\n{}\n{}", report(&results), table(&docker));

    // nft, as an independent reader, holds what Docker has.
    let managed = docker.set_elements("managed_v4_24");
    for subnet in managed_v4_subnets() {
        assert!(managed.contains(&subnet), "{managed:?}");
    }
    assert!(
        !managed.contains(&OTHERNET.v4.network().to_string()),
        "othernet is not managed"
    );
    let known = docker.set_elements("known_interfaces");
    for network in NETWORKS.map(|n| n.name) {
        assert!(
            known.contains(&docker.bridge(network)),
            "{network}: {known:?}"
        );
    }

    // `enforcer status` reads the kernel and the agent's state file: they agree, the denied
    // probes show in llmnet's counters, Docker is connected.
    let output = docker
        .host
        .command(enforcer_harness::enforcer_bin().to_str().unwrap())
        .args(["status", "--json", "--state-file"])
        .arg(agent.state_file())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(output.status.code(), Some(0), "{report:#}");
    assert_eq!(report["agree"], true, "{report:#}");
    assert_eq!(report["docker"]["connected"], true, "{report:#}");
    let llmnet_drops: u64 = report["networks"]["llmnet"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["dropped_packets"].as_u64().unwrap())
        .sum();
    assert!(llmnet_drops > 0, "{report:#}");
    assert_eq!(report["proxies"]["proxy"].as_array().unwrap().len(), 4);
}

#[test]
fn the_agent_follows_docker_through_its_life_cycle() {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let mut docker = Dockerd::start();
    let gate = ThreeGate::create(&docker);
    ThreeGate::flush_docker_isolation(&docker);
    let mut agent = docker.start_agent(&["--log-format", "json"]);
    agent.expect_log("+proxy proxy", CONVERGE);

    // A new managed network and its container: blocked.
    create_internal(&docker, "10.110.0.0/24", "newnet");
    run_container(&docker, "newbie", "newnet", "10.110.0.5", &[]);
    assert!(
        wait_element(&docker, "managed_v4_24", "10.110.0.0", true),
        "{}",
        agent.log()
    );
    let newbie = docker.container_netns("newbie");
    let target = internet(443, false);
    assert!(!newbie.enter(move || probe_here(Proto::Tcp, target, PROBE_TIMEOUT)));
    let bridge = docker.bridge("newnet");
    assert!(table(&docker).contains(&bridge));

    // Removed: nothing of it stays in the table.
    docker.docker(&["rm", "-f", "newbie"]);
    docker.docker(&["network", "rm", "newnet"]);
    assert!(
        wait_element(&docker, "managed_v4_24", "10.110.0.0", false),
        "{}",
        agent.log()
    );
    let listed = table(&docker);
    assert!(
        !listed.contains("10.110.0") && !listed.contains(&bridge),
        "{listed}"
    );

    // The proxy replaced by a new container with a new address: egress follows it, the old
    // address (now a plain container's) loses it.
    docker.docker(&["rm", "-f", "proxy"]);
    run_container(
        &docker,
        "proxy2",
        "egressnet",
        "10.102.0.3",
        &["enforcer.role=egress-proxy"],
    );
    assert!(
        wait_element(&docker, "proxies_v4", "10.102.0.3", true),
        "{}",
        agent.log()
    );
    assert!(
        wait_element(&docker, "proxies_v4", "10.102.0.2", false),
        "{}",
        agent.log()
    );
    let proxy2 = docker.container_netns("proxy2");
    assert!(wait_until(CONVERGE, || proxy2.enter(move || probe_here(
        Proto::Tcp,
        target,
        PROBE_TIMEOUT
    ))));
    // The new proxy joins fetchnet: its address there gets the proxy's allowance.
    docker.docker(&[
        "network",
        "connect",
        "--ip",
        "10.101.0.3",
        "fetchnet",
        "proxy2",
    ]);
    assert!(
        wait_element(&docker, "proxies_v4", "10.101.0.3", true),
        "{}",
        agent.log()
    );

    // A managed network the host cannot enforce (macvlan: no host bridge) is logged as
    // skipped, and the agent carries on.
    docker.docker(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=uplink",
        "--internal",
        "--subnet",
        "10.140.0.0/24",
        "macnet",
    ]);
    agent.expect_log("macvlan", CONVERGE);
    assert!(
        agent.log().contains("\"object\":\"network macnet"),
        "{}",
        agent.log()
    );
    assert!(!docker
        .set_elements("managed_v4_24")
        .contains(&"10.140.0.0".to_string()));

    run_container(&docker, "impostor", "egressnet", "10.102.0.2", &[]);
    let impostor = docker.container_netns("impostor");
    assert!(!impostor.enter(move || probe_here(Proto::Tcp, target, PROBE_TIMEOUT)));

    // kill -9: the rules stay enforced.
    assert_eq!(agent.signal_and_wait(libc::SIGKILL), None);
    assert!(!probe(&gate, "core", internet(443, false)));
    assert!(!impostor.enter(move || probe_here(Proto::Tcp, target, PROBE_TIMEOUT)));

    // Changed while the agent was down, picked up when it starts again.
    create_internal(&docker, "10.111.0.0/24", "downnet");
    let mut agent = docker.start_agent(&["--log-format", "json"]);
    assert!(
        wait_element(&docker, "managed_v4_24", "10.111.0.0", true),
        "{}",
        agent.log()
    );
    assert!(
        agent
            .log()
            .contains("\"message\":\"applied: +network downnet"),
        "{}",
        agent.log()
    );

    // dockerd restarts under the agent (its containers stop with it): the rules stay
    // meanwhile, later events are followed.
    let before = table(&docker);
    docker.stop_daemon();
    agent.expect_log("retrying", CONVERGE);
    assert_eq!(strip_counters(&table(&docker)), strip_counters(&before));
    docker.start_daemon();
    assert!(
        wait_until(CONVERGE, || agent.log().matches("Docker connected").count()
            >= 2),
        "{}",
        agent.log()
    );
    create_internal(&docker, "10.112.0.0/24", "afternet");
    assert!(
        wait_element(&docker, "managed_v4_24", "10.112.0.0", true),
        "{}",
        agent.log()
    );

    // SIGTERM: a clean exit that leaves the table in place.
    assert_eq!(agent.signal_and_wait(libc::SIGTERM), Some(0));
    assert!(docker
        .set_elements("managed_v4_24")
        .contains(&"10.112.0.0".to_string()));
}

#[test]
fn sighup_reloads_the_policy_and_a_tampered_table_is_restored() {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let docker = Dockerd::start();
    let _gate = ThreeGate::create(&docker);
    let policy = TempFile::new(".toml", "[proxy]\nallow = [\"tcp/443\", \"udp/53\"]\n");
    let agent = docker.start_agent(&["--config", policy.path()]);
    agent.expect_log("+proxy proxy", CONVERGE);
    assert!(table(&docker).contains("udp dport 53 accept"));

    std::fs::write(policy.path(), "[proxy]\nallow = [\"tcp/0\"]\n").unwrap();
    agent.signal(libc::SIGHUP);
    agent.expect_log("policy reload failed", CONVERGE);
    assert!(
        agent.log().contains(":2:"),
        "the error names the line: {}",
        agent.log()
    );
    assert!(
        table(&docker).contains("udp dport 53 accept"),
        "the old policy stays"
    );

    std::fs::write(policy.path(), "[proxy]\nallow = [\"tcp/443\"]\n").unwrap();
    agent.signal(libc::SIGHUP);
    agent.expect_log("policy reloaded", CONVERGE);
    assert!(
        !table(&docker).contains("udp dport 53 accept"),
        "{}",
        table(&docker)
    );

    // Someone deletes the table (or flushes the ruleset): the agent restores it at once.
    let applied = agent.log().matches("applied:").count();
    docker
        .host
        .exec_ok("nft", &["delete", "table", "inet", "enforcer"]);
    assert!(
        wait_until(CONVERGE, || agent.log().matches("applied:").count()
            > applied),
        "{}",
        agent.log()
    );
    assert!(
        table(&docker).contains("chain proxy_proxy"),
        "{}",
        table(&docker)
    );
}

/// The control for the matrix above: Docker told to write no firewall rules and no enforcer,
/// every flow of the matrix is open, the forbidden ones included; so each flow the matrix
/// finds blocked is enforcer's doing.
#[test]
fn without_enforcer_and_dockers_firewall_every_flow_of_the_matrix_is_open() {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let docker = Dockerd::start_configured(DockerVersion::from_env(), false);
    let gate = ThreeGate::create(&docker);
    // Addresses come up a moment after the containers (IPv6 ones after duplicate detection).
    for v6 in [false, true] {
        assert!(gate.wait_open("outsider", internet(80, v6), CONVERGE));
        assert!(gate.wait_open("proxy", internet(443, v6), CONVERGE));
    }
    let results = measure(&gate, &threegate_matrix());
    let closed: Vec<_> = results.iter().filter(|(_, open)| !open).collect();
    assert!(
        closed.is_empty(),
        "{} flows were closed without enforcer and Docker's firewall:\n{}",
        closed.len(),
        report(&results)
    );
    assert!(
        results.iter().any(|(flow, _)| !flow.allowed),
        "the matrix has forbidden flows"
    );
}

#[test]
fn docker_bridges_stay_denied_until_classified() {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let docker = Dockerd::start();
    let gate = ThreeGate::create(&docker);
    for v6 in [false, true] {
        assert!(gate.wait_open("outsider", internet(80, v6), CONVERGE));
    }

    // An agent that cannot read Docker classifies nothing: every Docker bridge is denied,
    // the unmanaged one too. That is the rule that closes the window for new networks.
    let blind = |policy: &str| {
        let file = TempFile::new(".toml", policy);
        apply_ok(&docker.host, &["--config", file.path()])
    };
    let said = blind("[docker]\nunknown_networks = \"deny\"\n");
    assert!(said.contains("Docker not read"), "{said}");
    assert!(!probe(&gate, "outsider", internet(80, false)));
    assert!(!probe(&gate, "outsider", internet(80, true)));
    blind("[docker]\nunknown_networks = \"allow\"\n");
    assert!(probe(&gate, "outsider", internet(80, false)));

    // With the agent running: 50 times, a managed network is created and a container on it
    // sends at once; nothing reaches the internet. A control on an unmanaged network does.
    let agent = docker.start_agent(&[]);
    agent.expect_log("+proxy proxy", CONVERGE);
    let counter = Responders::start(&docker.internet, &[(Proto::Tcp, internet(9999, false))]);
    let sender = "for i in 1 2 3; do nc -w 1 203.0.113.10 9999 </dev/null; done";
    for i in 0..50 {
        let name = format!("burst{i}");
        let subnet = format!("10.{}.0.0/24", 120 + i);
        docker.docker(&[
            "network",
            "create",
            "--label",
            "enforcer.managed=true",
            "--subnet",
            &subnet,
            &name,
        ]);
        docker.docker(&["run", "-d", "--network", &name, IMAGE, "sh", "-c", sender]);
    }
    // Each sender tries for at most about 3 s.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(counter.received(), 0, "{}", agent.log());
    docker.docker(&["network", "create", "--subnet", "10.200.0.0/24", "control"]);
    docker.docker(&[
        "run",
        "-d",
        "--network",
        "control",
        IMAGE,
        "sh",
        "-c",
        sender,
    ]);
    assert!(
        wait_until(CONVERGE, || counter.received() > 0),
        "the control container on an unmanaged network must get through, or the senders \
         prove nothing"
    );
}

/// A field of `/proc/PID/status`.
fn status_field(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

#[test]
fn a_reboot_enforces_the_last_known_state_before_docker_answers() {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let docker = Dockerd::start();
    let _gate = ThreeGate::create(&docker);
    let temporary = enforcer_harness::TempDir::new("reboot");
    let dir = temporary.path();
    let state = dir.join("state.json");
    let state_arg = state.to_str().unwrap();
    let bin = enforcer_harness::enforcer_bin();

    // A first run learns ThreeGate from Docker, holding CAP_NET_ADMIN alone.
    let mut agent = docker.start_agent(&["--state-file", state_arg]);
    agent.expect_log("+proxy proxy", CONVERGE);
    let pid = agent.pid();
    const NET_ADMIN_ONLY: &str = "0000000000001000"; // bit 12
    for field in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(status_field(pid, field), NET_ADMIN_ONLY, "{field}");
    }
    assert_eq!(status_field(pid, "CapInh"), "0000000000000000");
    assert_eq!(status_field(pid, "CapAmb"), "0000000000000000");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert!(wait_until(CONVERGE, || std::fs::read_to_string(&state)
        .is_ok_and(|s| s.contains("\"egressnet\""))));
    assert_eq!(agent.signal_and_wait(libc::SIGTERM), Some(0));

    // "Reboot": the kernel forgets the table, and Docker is not reachable yet.
    docker
        .host
        .exec_ok("nft", &["delete", "table", "inet", "enforcer"]);
    let later = dir.join("later.sock");
    let notify_path = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let agent = docker.start_agent_with(
        &bin,
        &["--state-file", state_arg],
        &[
            ("DOCKER_HOST", &format!("unix://{}", later.display())),
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    let mut buf = [0u8; 512];
    let len = notify.recv(&mut buf).expect("a notification within 15 s");
    let message = String::from_utf8_lossy(&buf[..len]).into_owned();
    assert!(message.contains("READY=1"), "{message}");
    // With a watchdog set, the agent pings it.
    let pinged = (0..10).any(|_| {
        notify
            .recv(&mut buf)
            .is_ok_and(|len| String::from_utf8_lossy(&buf[..len]).contains("WATCHDOG=1"))
    });
    assert!(pinged, "no WATCHDOG=1 within the watchdog period");
    // READY came after the first apply: the last known networks and proxy are in the kernel.
    for subnet in managed_v4_subnets() {
        assert!(docker.set_elements("managed_v4_24").contains(&subnet));
    }
    assert!(docker
        .set_elements("proxies_v4")
        .iter()
        .any(|e| e.contains("10.102.0.2")));
    assert!(docker
        .set_elements("known_interfaces")
        .contains(&docker.bridge("othernet")));
    assert!(
        agent.log().contains("re-enforcing the Docker state"),
        "{}",
        agent.log()
    );

    // Docker appears: the agent reconciles, picking up what changed meanwhile.
    create_internal(&docker, "10.113.0.0/24", "whiledown");
    std::os::unix::fs::symlink(docker.socket_path(), &later).unwrap();
    assert!(
        wait_element(&docker, "managed_v4_24", "10.113.0.0", true),
        "{}",
        agent.log()
    );
    drop(agent);

    // `enforcer status` notices when the kernel no longer holds what the state file says.
    let status = |ns: &enforcer_harness::Netns| {
        ns.command(bin.to_str().unwrap())
            .args(["status", "--state-file", state_arg])
            .output()
            .unwrap()
    };
    let agreeing = status(&docker.host);
    assert_eq!(
        agreeing.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&agreeing.stdout)
    );
    docker.host.exec_ok(
        "nft",
        &[
            "delete",
            "element",
            "inet",
            "enforcer",
            "egress_v4_24",
            "{ 10.113.0.0 }",
        ],
    );
    let differing = status(&docker.host);
    let said = String::from_utf8_lossy(&differing.stdout).into_owned();
    assert_eq!(differing.status.code(), Some(1), "{said}");
    assert!(
        said.contains("network whiledown is in the state file but not in the kernel"),
        "{said}"
    );

    // A corrupt state file is reported; the static policy and the unknown-bridge deny are
    // enforced, never nothing.
    docker
        .host
        .exec_ok("nft", &["delete", "table", "inet", "enforcer"]);
    std::fs::write(&state, "{ not json").unwrap();
    let agent = docker.start_agent_with(
        &bin,
        &["--state-file", state_arg],
        &[("DOCKER_HOST", enforcer_harness::NO_DOCKER)],
    );
    agent.expect_log("corrupt", CONVERGE);
    assert!(wait_until(CONVERGE, || table(&docker).contains("known_interfaces")));
    assert!(!docker
        .set_elements("managed_v4_24")
        .contains(&"10.100.0.0".to_string()));
    drop(agent);
}
