//! Docker Swarm on one node of the sealed host: overlay networks, managed by their label or
//! not, whose containers leave through `docker_gwbridge`. Each flow is first measured open with
//! Docker alone, then as the policy says with `enforcer run`; a task that a service scales up
//! probes the internet from its first instant, and never gets through. RuVector's stack
//! (`rules/ruvector-swarm.yml`) leaves the node as its table says, and the agent itself can run
//! as a global service (`swarm/enforcer.yml`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use enforcer_harness::docker::{DockerVersion, Dockerd, IMAGE};
use enforcer_harness::lan::Lan;
use enforcer_harness::spec::{host_uplink, internet, Family};
use enforcer_harness::{
    probe_here, repo_file, wait_until, Agent, Proto, Responders, TempDir, TempFile, PROBE_TIMEOUT,
};

/// One dockerd at a time.
static DOCKERD: Mutex<()> = Mutex::new(());

/// The policy: an agent role that may open tcp/443 toward the internet, nothing else.
const POLICY: &str = "[roles.agent]\negress = [{ to = \"internet\", allow = [\"tcp/443\"] }]\n";

/// The overlays: `mesh` managed by its label, `public` not.
const MESH: &str = "mesh";
const PUBLIC: &str = "public";

fn to_internet(port: u16) -> SocketAddr {
    SocketAddr::new(internet(Family::V4), port)
}

/// A dockerd of the sealed host, the one node of a new swarm. Docker's own firewall stays on:
/// Swarm's routing mesh and `docker_gwbridge`'s masquerade are made of it.
fn swarm_init() -> Dockerd {
    let docker = Dockerd::start_configured(DockerVersion::from_env(), true);
    let advertise = host_uplink(Family::V4).to_string();
    docker.docker(&["swarm", "init", "--advertise-addr", &advertise]);
    docker
}

/// A single-node swarm with its two attachable overlays.
fn swarm_node() -> Dockerd {
    let docker = swarm_init();
    for (name, subnet, label) in [
        (MESH, "10.10.0.0/24", Some("enforcer.managed=true")),
        (PUBLIC, "10.11.0.0/24", None),
    ] {
        let mut args = vec!["network", "create", "-d", "overlay", "--attachable"];
        args.extend(["--subnet", subnet]);
        if let Some(label) = label {
            args.extend(["--label", label]);
        }
        args.push(name);
        docker.docker(&args);
    }
    docker
}

/// `docker run` of a sleeping container on `network`, with a role label or none.
fn run(docker: &Dockerd, name: &str, network: &str, role: Option<&str>) {
    let label = role.map(|r| format!("enforcer.role={r}"));
    let mut args = vec!["run", "-d", "--name", name, "--network", network];
    if let Some(label) = &label {
        args.extend(["--label", label]);
    }
    args.extend([IMAGE, "sleep", "100000"]);
    docker.docker(&args);
}

fn open(docker: &Dockerd, from: &str, target: SocketAddr) -> bool {
    docker
        .container_netns(from)
        .enter(move || probe_here(Proto::Tcp, target, PROBE_TIMEOUT))
}

/// The flows measured: (from, port toward the internet, allowed under [`POLICY`]).
const FLOWS: [(&str, u16, bool); 5] = [
    ("agent", 443, true),
    ("agent", 80, false),
    ("plain", 443, false),
    ("web", 80, true),
    ("web", 443, true),
];

fn start_agent(docker: &Dockerd, policy: &TempFile) -> Agent {
    let agent = docker.start_agent(&["--config", policy.path()]);
    agent.expect_log("+member agent (role agent)", Duration::from_secs(20));
    agent
}

#[test]
fn managed_overlay_containers_leave_only_as_their_roles_allow() {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let docker = swarm_node();
    run(&docker, "agent", MESH, Some("agent"));
    run(&docker, "plain", MESH, None);
    run(&docker, "web", PUBLIC, None);
    for (from, port, _) in FLOWS {
        assert!(
            open(&docker, from, to_internet(port)),
            "without enforcer, {from} -> internet tcp/{port} should be open"
        );
    }
    let policy = TempFile::new(".toml", POLICY);
    let agent = start_agent(&docker, &policy);
    let wrong: Vec<String> = FLOWS
        .iter()
        .filter(|(from, port, allowed)| open(&docker, from, to_internet(*port)) != *allowed)
        .map(|(from, port, allowed)| format!("{from} -> internet tcp/{port}: allowed {allowed}"))
        .collect();
    assert!(wrong.is_empty(), "{wrong:?}\n{}", agent.log());
    // nft, read independently: the managed containers' gateway addresses, one /32 each, and
    // the bridge they share with unmanaged ones.
    let managed = docker.set_elements("managed_v4_32");
    let addresses: Vec<String> = ["agent", "plain", "web"]
        .iter()
        .map(|name| gateway_address(&docker, name))
        .collect();
    assert!(managed.contains(&addresses[0]), "{managed:?} {addresses:?}");
    assert!(managed.contains(&addresses[1]), "{managed:?} {addresses:?}");
    assert!(
        !managed.contains(&addresses[2]),
        "{managed:?} {addresses:?}"
    );
    assert_eq!(
        docker.set_elements("shared_interfaces"),
        ["docker_gwbridge"]
    );
}

/// A container's address on `docker_gwbridge`, from the network's inspect (its own does not
/// list it).
fn gateway_address(docker: &Dockerd, container: &str) -> String {
    let id = docker.docker(&["inspect", "-f", "{{.Id}}", container]);
    let format = format!("{{{{(index .Containers \"{id}\").IPv4Address}}}}");
    let cidr = docker.docker(&["network", "inspect", "-f", &format, "docker_gwbridge"]);
    cidr.split('/').next().unwrap_or_default().to_string()
}

/// A service task that probes the internet (tcp/443, 20 attempts 50 ms apart, each given 1 s)
/// from the moment it starts, and says when one got through.
fn probing_service(docker: &Dockerd, name: &str, replicas: &str) {
    let target = to_internet(443);
    let script = format!(
        "i=0; while [ $i -lt 20 ]; do if echo | nc -w 1 {} {} ; then echo OPEN; fi; \
         i=$((i+1)); sleep 0.05; done; echo DONE; sleep 100000",
        target.ip(),
        target.port()
    );
    docker.docker(&[
        "service",
        "create",
        "--detach",
        "--name",
        name,
        "--replicas",
        replicas,
        "--network",
        MESH,
        IMAGE,
        "sh",
        "-c",
        &script,
    ]);
}

/// The logs of the tasks of service `name` once `tasks` of them said DONE (at most 90 s).
fn task_logs(docker: &Dockerd, name: &str, tasks: usize) -> String {
    let mut logs = String::new();
    let done = wait_until(Duration::from_secs(90), || {
        let out = docker.try_docker(&["service", "logs", "--raw", name]);
        logs = String::from_utf8_lossy(&out.stdout).into_owned();
        logs.matches("DONE").count() >= tasks
    });
    if !done {
        let tasks = docker.try_docker(&["service", "ps", "--no-trunc", name]);
        panic!(
            "service {name}: its tasks did not finish: {logs}\n{}",
            String::from_utf8_lossy(&tasks.stdout)
        );
    }
    logs
}

#[test]
fn a_scaled_up_task_is_enforced_before_it_can_send() {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let docker = swarm_node();
    // Without enforcer, the probe gets through from the first task.
    probing_service(&docker, "before", "1");
    let logs = task_logs(&docker, "before", 1);
    assert!(logs.contains("OPEN"), "without enforcer: {logs}");
    docker.docker(&["service", "rm", "before"]);

    run(&docker, "agent", MESH, Some("agent"));
    let policy = TempFile::new(".toml", POLICY);
    let agent = start_agent(&docker, &policy);
    probing_service(&docker, "probe", "1");
    task_logs(&docker, "probe", 1);
    docker.docker(&["service", "scale", "--detach", "probe=4"]);
    let logs = task_logs(&docker, "probe", 4);
    assert!(
        !logs.contains("OPEN"),
        "a task of a managed overlay got through: {logs}\n{}",
        agent.log()
    );
    // `enforcer status` names the four tasks, managed, their addresses in the kernel's sets,
    // and agrees with the kernel.
    let output = docker
        .host
        .command(enforcer_harness::enforcer_bin().to_str().unwrap())
        .args([
            "status",
            "--json",
            "--config",
            policy.path(),
            "--state-file",
        ])
        .arg(agent.state_file())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(report["agree"], true, "{report:#}");
    let tasks: Vec<&serde_json::Value> = report["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["service"] == "probe")
        .collect();
    assert_eq!(tasks.len(), 4, "{report:#}");
    for task in tasks {
        assert_eq!(task["managed"], true, "{task:#}");
        assert_eq!(task["in_kernel"], true, "{task:#}");
    }
}

/// The running containers of service `name`'s tasks.
fn task_containers(docker: &Dockerd, name: &str) -> Vec<String> {
    let filter = format!("label=com.docker.swarm.service.name={name}");
    docker
        .docker(&["ps", "-q", "--filter", &filter])
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_restarted_node_enforces_before_its_tasks_run() {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let mut docker = swarm_node();
    run(&docker, "agent", MESH, Some("agent"));
    let policy = TempFile::new(".toml", POLICY);
    let mut agent = start_agent(&docker, &policy);
    probing_service(&docker, "probe", "2");
    task_logs(&docker, "probe", 2);
    let before = task_containers(&docker, "probe");
    assert_eq!(before.len(), 2, "{before:?}");

    // The node goes down: the agent, dockerd, and (as a reboot would) the whole ruleset.
    agent.signal_and_wait(libc::SIGTERM);
    docker.stop_daemon();
    docker.host.exec_ok("nft", &["flush", "ruleset"]);
    // It comes back as the unit orders it: the agent first, from its state file, then Docker.
    let state = agent.state_file().to_str().unwrap().to_string();
    let agent = docker.start_agent(&["--config", policy.path(), "--state-file", &state]);
    let enforcing = wait_until(Duration::from_secs(20), || {
        docker
            .host
            .exec("nft", &["list", "table", "bridge", "enforcer"])
            .status
            .success()
    });
    assert!(
        enforcing,
        "the agent did not enforce its state file: {}",
        agent.log()
    );
    docker.start_daemon();
    let mut after = Vec::new();
    let back = wait_until(Duration::from_secs(90), || {
        after = task_containers(&docker, "probe");
        after.len() == 2
            && after.iter().all(|c| {
                // A container Docker started again holds its first run's output too.
                let runs = if before.contains(c) { 2 } else { 1 };
                let logs = docker.try_docker(&["logs", c]);
                String::from_utf8_lossy(&logs.stdout)
                    .matches("DONE")
                    .count()
                    >= runs
            })
    });
    assert!(back, "the tasks did not come back: {after:?}");
    for container in &after {
        let logs = docker.docker(&["logs", container]);
        assert!(
            !logs.contains("OPEN"),
            "task {container} got through after the restart: {logs}\n{}",
            agent.log()
        );
    }
}

/// The RuVector stack's services, each with the role its containers carry, and whether
/// `rules/ruvector-swarm.toml` lets that role out (the table's `external` column).
const RUVECTOR_EXTERNAL: [(&str, bool); 5] = [
    ("orchestrator", true),
    ("redis", false),
    ("worker", false),
    ("prometheus", false),
    ("grafana", true),
];

/// A running container of a swarm: the index of its node among the swarm's, and its ID.
type Task = (usize, String);

/// The one running container of the RuVector stack's service `service`, on whichever of
/// `nodes` runs it, once there is one (at most 90 s).
fn stack_task(nodes: &[Dockerd], service: &str) -> Task {
    let name = format!("ruvector_{service}");
    let mut found = Vec::new();
    let running = wait_until(Duration::from_secs(90), || {
        found = nodes
            .iter()
            .enumerate()
            .flat_map(|(index, node)| {
                task_containers(node, &name)
                    .into_iter()
                    .map(move |container| (index, container))
            })
            .collect();
        found.len() == 1
    });
    assert!(running, "service {name}: {found:?}");
    found.remove(0)
}

/// A task's address on the RuVector stack's overlay `network`.
fn stack_address(nodes: &[Dockerd], (node, container): &Task, network: &str) -> IpAddr {
    let format =
        format!("{{{{(index .NetworkSettings.Networks \"ruvector_{network}\").IPAddress}}}}");
    let address = nodes[*node].docker(&["inspect", "-f", &format, container]);
    address
        .parse()
        .unwrap_or_else(|e| panic!("{container} on {network}: `{address}`: {e}"))
}

/// Deploys RuVector's stack from the swarm's manager (`nodes[0]`) and measures its flows: to
/// the internet from every role, and between services inside an overlay and across two, first
/// without enforcer (every flow to the internet open), then with an agent on every node
/// enforcing `rules/ruvector-swarm.toml` (the table's external column). Returns the node
/// (its index in `nodes`) that ran each service's task.
fn ruvector_stack_holds_its_table(nodes: &[Dockerd]) -> BTreeMap<&'static str, usize> {
    let stack = std::fs::read_to_string(repo_file("rules/ruvector-swarm.yml")).unwrap();
    let stack = TempFile::new(".yml", &stack.replace("busybox:latest", IMAGE));
    nodes[0].docker(&[
        "stack",
        "deploy",
        "--resolve-image",
        "never",
        "-c",
        stack.path(),
        "ruvector",
    ]);
    let task = |service: &str| stack_task(nodes, service);
    let orchestrator = task("orchestrator");
    // The orchestrator answers on its agent-mesh and monitoring addresses.
    let port = 9000;
    let on_mesh = SocketAddr::new(stack_address(nodes, &orchestrator, "agent-mesh"), port);
    let on_monitoring = SocketAddr::new(stack_address(nodes, &orchestrator, "monitoring"), port);
    let _answers = Responders::start(
        &nodes[orchestrator.0].container_netns(&orchestrator.1),
        &[(Proto::Tcp, on_mesh), (Proto::Tcp, on_monitoring)],
    );
    let open_from = |service: &str, target: SocketAddr| {
        let (node, container) = task(service);
        open(&nodes[node], &container, target)
    };
    // Flows inside one overlay (the network columns' "yes"), and one across two (redis is not
    // on agent-mesh): Docker's, the same with enforcer or without.
    let inside = [
        ("worker", on_mesh, true),
        ("prometheus", on_mesh, true),
        ("prometheus", on_monitoring, true),
        ("grafana", on_monitoring, true),
        ("redis", on_mesh, false),
    ];
    let measure = |enforced: bool| -> Vec<String> {
        let mut wrong = Vec::new();
        for (service, allowed) in RUVECTOR_EXTERNAL {
            let open = open_from(service, to_internet(443));
            if open != (allowed || !enforced) {
                wrong.push(format!("{service} -> internet tcp/443 open {open}"));
            }
        }
        for (service, target, expected) in inside {
            let open = open_from(service, target);
            if open != expected {
                wrong.push(format!("{service} -> {target} open {open}"));
            }
        }
        wrong
    };
    let without = measure(false);
    assert!(without.is_empty(), "without enforcer: {without:?}");

    let policy = repo_file("rules/ruvector-swarm.toml");
    let agents: Vec<Agent> = nodes
        .iter()
        .map(|node| node.start_agent(&["--config", policy.to_str().unwrap()]))
        .collect();
    let mut placed = BTreeMap::new();
    for (service, _) in RUVECTOR_EXTERNAL {
        let (node, _) = task(service);
        placed.insert(service, node);
        agents[node].expect_log(&format!("(role {service})"), Duration::from_secs(20));
    }
    let with = measure(true);
    let logs: Vec<String> = agents.iter().map(Agent::log).collect();
    assert!(
        with.is_empty(),
        "with enforcer: {with:?}\n{}",
        logs.join("\n")
    );
    placed
}

#[test]
fn the_ruvector_stack_leaves_the_node_as_its_table_says() {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    ruvector_stack_holds_its_table(&[swarm_init()]);
}

/// Three sealed hosts on one LAN, each with its own dockerd, as one swarm: the first its
/// manager, the others workers; returns once the manager sees all three ready (at most 60 s).
fn three_node_swarm(lan: &Lan) -> Vec<Dockerd> {
    let nodes: Vec<Dockerd> = (1..=3)
        .map(|index| {
            let node = Dockerd::start_configured(DockerVersion::from_env(), true);
            lan.plug(&node.host, index);
            node
        })
        .collect();
    let manager = Lan::address(1).to_string();
    nodes[0].docker(&["swarm", "init", "--advertise-addr", &manager]);
    let token = nodes[0].docker(&["swarm", "join-token", "-q", "worker"]);
    for (index, node) in (2..).zip(&nodes[1..]) {
        let advertise = Lan::address(index).to_string();
        let remote = format!("{manager}:2377");
        node.docker(&[
            "swarm",
            "join",
            "--token",
            &token,
            "--advertise-addr",
            &advertise,
            &remote,
        ]);
    }
    let ready = wait_until(Duration::from_secs(60), || {
        let status = nodes[0].docker(&["node", "ls", "--format", "{{.Status}}"]);
        status.lines().filter(|s| *s == "Ready").count() == 3
    });
    assert!(ready, "{}", nodes[0].docker(&["node", "ls"]));
    nodes
}

#[test]
fn the_ruvector_stack_holds_its_table_on_three_nodes() {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let lan = Lan::new();
    let nodes = three_node_swarm(&lan);
    let placed = ruvector_stack_holds_its_table(&nodes);
    // Swarm spread the tasks: some of the flows inside an overlay crossed nodes (VXLAN over
    // the LAN), and each node's agent enforced its own tasks.
    let orchestrator = placed["orchestrator"];
    let crossing: Vec<&str> = ["worker", "prometheus", "grafana"]
        .into_iter()
        .filter(|service| placed[service] != orchestrator)
        .collect();
    eprintln!("tasks per node: {placed:?}; to the orchestrator across nodes: {crossing:?}");
    assert!(
        !crossing.is_empty(),
        "every task ran beside the orchestrator: {placed:?}"
    );
    // The nodes go before the LAN that joins them.
    drop(nodes);
}

/// The image of the agent as a Swarm service (the test build, `swarm/enforcer.yml`'s
/// `ENFORCER_IMAGE`).
const AGENT_IMAGE: &str = "enforcer-agent:test";

#[test]
fn the_global_service_agent_enforces_its_node() {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let docker = swarm_node();
    docker.import_enforcer_image(AGENT_IMAGE);
    run(&docker, "agent", MESH, Some("agent"));
    run(&docker, "plain", MESH, None);
    run(&docker, "web", PUBLIC, None);
    for (from, port, _) in FLOWS {
        assert!(
            open(&docker, from, to_internet(port)),
            "without enforcer, {from} -> internet tcp/{port} should be open"
        );
    }
    let policy = TempFile::new(".toml", POLICY);
    let state = TempDir::new("swarm-state");
    let deploy = |policy: &TempFile, version: &str| {
        let socket = docker.socket_path();
        let stack = repo_file("swarm/enforcer.yml");
        let output = docker.try_docker_env(
            &[
                ("ENFORCER_POLICY", policy.path()),
                ("ENFORCER_POLICY_VERSION", version),
                ("ENFORCER_IMAGE", AGENT_IMAGE),
                ("ENFORCER_STATE_DIR", state.path().to_str().unwrap()),
                ("DOCKER_SOCKET", socket.to_str().unwrap()),
            ],
            &[
                "stack",
                "deploy",
                "--resolve-image",
                "never",
                "-c",
                stack.to_str().unwrap(),
                "enforcer",
            ],
        );
        assert!(
            output.status.success(),
            "docker stack deploy: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    deploy(&policy, "1");
    // The service's agent enforces the node: the agent container's gateway address in the
    // kernel's managed /32s, read by nft.
    let address = gateway_address(&docker, "agent");
    let service_log = || {
        let out = docker.try_docker(&["service", "logs", "--raw", "enforcer_enforcer"]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let enforcing = wait_until(Duration::from_secs(60), || {
        docker
            .host
            .exec("nft", &["list", "table", "bridge", "enforcer"])
            .status
            .success()
            && docker.set_elements("managed_v4_32").contains(&address)
    });
    assert!(enforcing, "the service did not enforce: {}", service_log());
    let wrong: Vec<String> = FLOWS
        .iter()
        .filter(|(from, port, allowed)| open(&docker, from, to_internet(*port)) != *allowed)
        .map(|(from, port, allowed)| format!("{from} -> internet tcp/{port}: allowed {allowed}"))
        .collect();
    assert!(wrong.is_empty(), "{wrong:?}\n{}", service_log());
    assert!(
        state.path().join("state.json").exists(),
        "no state file in the node's state directory: {}",
        service_log()
    );

    // A new policy is a new config: the redeployed service lets the agent open tcp/80 too,
    // and the other flows stay as they were.
    let wider = TempFile::new(
        ".toml",
        &POLICY.replace("[\"tcp/443\"]", "[\"tcp/443\", \"tcp/80\"]"),
    );
    deploy(&wider, "2");
    let widened = wait_until(Duration::from_secs(60), || {
        open(&docker, "agent", to_internet(80))
    });
    assert!(widened, "the new policy did not apply: {}", service_log());
    let wrong: Vec<String> = FLOWS
        .iter()
        .filter(|(from, port, allowed)| {
            let allowed = *allowed || (*from == "agent" && *port == 80);
            open(&docker, from, to_internet(*port)) != allowed
        })
        .map(|(from, port, _)| format!("{from} -> internet tcp/{port}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "after the new policy: {wrong:?}\n{}",
        service_log()
    );
}
