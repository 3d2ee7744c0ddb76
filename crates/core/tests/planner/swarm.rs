//! Swarm overlays on the model: a node whose containers sit on managed and unmanaged overlay
//! networks and leave through `docker_gwbridge`, classified from Docker's raw values, planned,
//! and walked through the reference evaluator; then the bridge ports of `docker_gwbridge`.

use std::collections::BTreeMap;

use enforcer_core::docker::{
    classify, swarm_tasks, DockerContainer, DockerEndpoint, DockerNetwork, DockerState,
    BRIDGE_NAME_OPTION, INGRESS_SANDBOX, SERVICE_LABEL, TASK_LABEL,
};
use enforcer_core::planner::plan_tables;
use enforcer_core::policy::Policy;
use enforcer_core::ports::BridgePort;
use enforcer_core::ruleset::Hook;

use crate::evaluator::{fate, on, tcp, Fate};

const GATEWAY_ID: &str = "9a2b3c4d5e6f00000000000000000000000000000000000000000000000000aa";

fn network(id: &str, name: &str, driver: &str, subnet: &str) -> DockerNetwork {
    DockerNetwork {
        id: id.into(),
        name: name.into(),
        driver: driver.into(),
        internal: false,
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
        subnets: vec![subnet.into()],
    }
}

fn endpoint(network: &str, ipv4: &str, mac: &str) -> DockerEndpoint {
    DockerEndpoint {
        network_id: network.into(),
        ipv4: ipv4.into(),
        ipv6: String::new(),
        mac: mac.into(),
    }
}

/// A container with an endpoint on `overlay` only (its inspect never lists the gateway's).
fn task(n: u8, role: Option<&str>, overlay: &str) -> DockerContainer {
    DockerContainer {
        id: format!("{n:02x}").repeat(32),
        name: format!("task{n}"),
        labels: role
            .map(|r| ("enforcer.role".to_string(), r.to_string()))
            .into_iter()
            .collect(),
        endpoints: vec![endpoint(overlay, &format!("10.10.0.{n}"), "")],
    }
}

/// A node: overlay `mesh` (managed by its label, Swarm's 25-character ID) and `public`
/// (unmanaged), `docker_gwbridge`; task1 an agent and task2 role-less on `mesh`, task3 on
/// `public`; their gateway endpoints as the network's inspect lists them, with the routing
/// mesh's sandbox.
fn node() -> (Policy, DockerState) {
    let policy = Policy::parse(
        "[roles.agent]\negress = [{ to = \"internet\", allow = [\"tcp/443\"] }]\n",
        "p.toml",
    )
    .unwrap();
    let mut mesh = network(
        "s63e7ub4fgwtrjab12ujpvuga",
        "mesh",
        "overlay",
        "10.10.0.0/24",
    );
    mesh.labels.insert("enforcer.managed".into(), "true".into());
    let public = network(
        "xtymdsg1p5urqa8dlhy0g2x1c",
        "public",
        "overlay",
        "10.11.0.0/24",
    );
    let mut gateway = network(GATEWAY_ID, "docker_gwbridge", "bridge", "172.18.0.0/16");
    gateway
        .options
        .insert(BRIDGE_NAME_OPTION.into(), "docker_gwbridge".into());
    let tasks = [
        task(1, Some("agent"), &mesh.id),
        task(2, None, &mesh.id),
        task(3, None, &public.id),
    ];
    let mut docker = DockerState::of([mesh, public, gateway], tasks.clone());
    let mut gateway_endpoints: BTreeMap<String, DockerEndpoint> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let n = i + 3;
            let e = endpoint(
                "",
                &format!("172.18.0.{n}"),
                &format!("02:42:ac:12:00:0{n}"),
            );
            (t.id.clone(), e)
        })
        .collect();
    gateway_endpoints.insert(
        INGRESS_SANDBOX.into(),
        endpoint("", "172.18.0.2", "02:42:ac:12:00:02"),
    );
    // A container Docker has not reported yet: its endpoint waits for it.
    gateway_endpoints.insert(
        "ff".repeat(32),
        endpoint("", "172.18.0.9", "02:42:ac:12:00:09"),
    );
    // An endpoint not yet joined to its container (a task's, a moment before it starts): it
    // is nobody's, least of all an unmanaged sandbox's.
    gateway_endpoints.insert(
        format!("ep-{}", "e".repeat(64)),
        endpoint("", "172.18.0.11", "02:42:ac:12:00:0b"),
    );
    docker.set_gateway_endpoints(GATEWAY_ID, gateway_endpoints);
    for (n, task) in docker.containers.values_mut().enumerate() {
        task.labels
            .insert(SERVICE_LABEL.into(), format!("svc{}", n % 2));
        task.labels
            .insert(TASK_LABEL.into(), format!("svc{}.{n}.x", n % 2));
    }
    (policy, docker)
}

#[test]
fn tasks_are_listed_by_service_with_what_is_enforced_of_them() {
    let (policy, docker) = node();
    let classified = classify(&policy, &docker);
    let tasks: Vec<String> = swarm_tasks(&docker, &classified.enforced_networks, "enforcer.role")
        .iter()
        .map(|t| {
            format!(
                "{} {} {} {} {:?} {:?}",
                t.service, t.task, t.container, t.managed, t.role, t.gateway_address
            )
        })
        .collect();
    assert_eq!(
        tasks,
        [
            "svc0 svc0.0.x task1 true Some(\"agent\") Some(\"172.18.0.3\")",
            "svc0 svc0.2.x task3 false None Some(\"172.18.0.5\")",
            "svc1 svc1.1.x task2 true None Some(\"172.18.0.4\")",
        ]
    );
}

#[test]
fn managed_overlay_containers_are_managed_through_the_gateway_bridge() {
    let (policy, docker) = node();
    let classified = classify(&policy, &docker);
    assert!(classified.skipped.is_empty(), "{:?}", classified.skipped);
    let gateway = classified
        .topology
        .networks()
        .iter()
        .find(|n| n.name == "docker_gwbridge")
        .expect("the managed overlay containers' gateway addresses");
    let subnets: Vec<String> = gateway.subnets.iter().map(|s| s.to_string()).collect();
    assert_eq!(subnets, ["172.18.0.3/32", "172.18.0.4/32"]);
    assert_eq!(gateway.interface.as_deref(), Some("docker_gwbridge"));
    let member: Vec<String> = classified.topology.members()[0]
        .addresses
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(member, ["172.18.0.3"]);
    assert!(classified.topology.elsewhere().is_empty());

    let (tables, _, _) = plan_tables(&policy, &classified, &docker, &[], &[]);
    let inet = &tables.inet;
    let out = |src: &str, port| on("docker_gwbridge", tcp(src, "203.0.113.10", port));
    // The agent's role: tcp/443 out, nothing else.
    assert_eq!(
        fate(inet, Hook::Forward, &out("172.18.0.3", 443)),
        Fate::Passed
    );
    assert_eq!(
        fate(inet, Hook::Forward, &out("172.18.0.3", 80)),
        Fate::Dropped
    );
    // A managed container without a role: nothing.
    assert_eq!(
        fate(inet, Hook::Forward, &out("172.18.0.4", 443)),
        Fate::Dropped
    );
    // An unmanaged overlay's container, and the routing mesh's sandbox, share the bridge.
    assert_eq!(
        fate(inet, Hook::Forward, &out("172.18.0.5", 80)),
        Fate::Passed
    );
    assert_eq!(
        fate(inet, Hook::Forward, &out("172.18.0.2", 80)),
        Fate::Passed
    );
    // Managed containers reach neither each other through the bridge nor the host.
    let across = on("docker_gwbridge", tcp("172.18.0.4", "172.18.0.3", 8080));
    assert_eq!(fate(inet, Hook::Forward, &across), Fate::Dropped);
    let host = on("docker_gwbridge", tcp("172.18.0.4", "172.18.0.1", 22));
    assert_eq!(fate(inet, Hook::Input, &host), Fate::Dropped);
    // A managed gateway address entering from anywhere else is forged.
    assert_eq!(
        fate(
            inet,
            Hook::Forward,
            &on("eth0", tcp("172.18.0.3", "203.0.113.10", 443))
        ),
        Fate::Dropped
    );
}

#[test]
fn every_port_of_the_gateway_bridge_is_bound_or_sends_nothing() {
    let (policy, docker) = node();
    let classified = classify(&policy, &docker);
    let port = |name: &str, mac: &str| BridgePort {
        bridge: "docker_gwbridge".into(),
        name: name.into(),
        peer_mac: Some(mac.parse().unwrap()),
    };
    let ports = [
        port("veth0000002", "02:42:ac:12:00:02"),
        port("veth0000003", "02:42:ac:12:00:03"),
        port("veth0000005", "02:42:ac:12:00:05"),
        // Not yet reported by Docker, not yet joined to its container, and a MAC nobody
        // holds.
        port("veth0000009", "02:42:ac:12:00:09"),
        port("veth000000b", "02:42:ac:12:00:0b"),
        port("veth000000a", "02:42:ac:12:00:0a"),
    ];
    let (_, guard, _) = plan_tables(&policy, &classified, &docker, &ports, &[]);
    let bound: Vec<(&str, &str, String)> = guard
        .bound
        .iter()
        .map(|b| (b.port.as_str(), b.container.as_str(), b.ipv4[0].to_string()))
        .collect();
    assert_eq!(
        bound,
        [
            ("veth0000002", "ingress-sbox", "172.18.0.2".to_string()),
            ("veth0000003", "task1", "172.18.0.3".to_string()),
            ("veth0000005", "task3", "172.18.0.5".to_string()),
        ]
    );
    let unbound: Vec<&str> = guard.unbound.iter().map(String::as_str).collect();
    assert_eq!(unbound, ["veth0000009", "veth000000a", "veth000000b"]);
    assert!(guard.open.is_empty(), "{:?}", guard.open);
}

#[test]
fn gateway_addresses_that_cannot_be_managed_open_nothing() {
    let (_, docker) = node();
    // A static network of that name wins it: the managed containers' gateway addresses stay
    // theirs on an unmanaged network, denied whatever their roles allow.
    let policy = Policy::parse(
        "[roles.agent]\negress = [{ to = \"internet\", allow = [\"tcp/443\"] }]\n\
         [[networks]]\nname = \"docker_gwbridge\"\nsubnets = [\"10.99.0.0/24\"]\n",
        "p.toml",
    )
    .unwrap();
    let classified = classify(&policy, &docker);
    assert!(
        classified
            .skipped
            .iter()
            .any(|s| s.reason.contains("docker_gwbridge addresses")),
        "{:?}",
        classified.skipped
    );
    let elsewhere: Vec<String> = classified
        .topology
        .elsewhere()
        .keys()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(elsewhere, ["172.18.0.3", "172.18.0.4"]);
    let (tables, _, _) = plan_tables(&policy, &classified, &docker, &[], &[]);
    let out = on("docker_gwbridge", tcp("172.18.0.3", "203.0.113.10", 443));
    assert_eq!(fate(&tables.inet, Hook::Forward, &out), Fate::Dropped);
}
