//! Roles on the model: Replicante's policy (`rules/replicante.toml`) with its containers as
//! static members, every row of its matrix through the reference evaluator, and the shape
//! that keeps the per-packet cost flat.

use enforcer_core::planner::plan;
use enforcer_core::policy::Policy;
use enforcer_core::ruleset::{Hook, Match};
use enforcer_core::topology::Protocol;

use crate::evaluator::{fate, on, tcp, Fate, Packet};

/// `rules/replicante.toml` with the network and the containers written in: 172.20.0.0/16 on
/// br-repl, east-west denied; `members` of them hold roles.
fn replicante(members: usize) -> Policy {
    let mut text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../rules/replicante.toml"
    ))
    .unwrap();
    text.push_str(
        "[[networks]]\nname = \"replicante\"\ninterface = \"br-repl\"\n\
         subnets = [\"172.20.0.0/16\", \"fd00:20::/64\"]\neast_west = \"deny\"\n",
    );
    for (name, role, host) in [
        ("proxy", "proxy", 2),
        ("dns", "dns", 3),
        ("supervisor", "supervisor", 5),
        ("agent", "agent", 100),
    ] {
        text.push_str(&format!(
            "[[members]]\nname = \"{name}\"\nrole = \"{role}\"\n\
             addresses = [\"172.20.0.{host}\", \"fd00:20::{host:x}\"]\n"
        ));
    }
    for i in 0..members {
        text.push_str(&format!(
            "[[members]]\nname = \"agent{i}\"\nrole = \"agent\"\n\
             addresses = [\"172.20.{}.{}\"]\n",
            1 + i / 250,
            1 + i % 250
        ));
    }
    Policy::parse(&text, "replicante.toml").unwrap()
}

fn udp(mut packet: Packet) -> Packet {
    packet.protocol = Protocol::Udp;
    packet
}

#[test]
fn replicante_matrix_on_the_model() {
    let policy = replicante(0);
    let table = plan(&policy.table, &policy.static_topology);
    let from = |src: &str, dst: &str, port| on("br-repl", tcp(src, dst, port));
    let rows = [
        (udp(from("172.20.0.100", "172.20.0.3", 53)), Fate::Passed),
        (from("172.20.0.100", "172.20.0.3", 53), Fate::Passed),
        (from("fd00:20::64", "fd00:20::2", 3128), Fate::Passed),
        (from("172.20.0.100", "172.20.0.5", 8080), Fate::Passed),
        (from("172.20.0.100", "172.20.0.5", 9999), Fate::Dropped),
        (from("172.20.0.100", "172.20.0.50", 9000), Fate::Dropped),
        (from("172.20.0.100", "203.0.113.10", 443), Fate::Dropped),
        (udp(from("172.20.0.3", "203.0.113.10", 53)), Fate::Passed),
        (from("172.20.0.3", "203.0.113.10", 443), Fate::Dropped),
        (from("fd00:20::2", "2001:db8:113::10", 443), Fate::Passed),
        (from("172.20.0.2", "203.0.113.10", 22), Fate::Dropped),
        // The proxy's internet allowance never reaches a managed destination.
        (from("172.20.0.2", "172.20.0.100", 443), Fate::Dropped),
        (from("172.20.0.50", "203.0.113.10", 443), Fate::Dropped),
        (udp(from("172.20.0.5", "172.20.0.3", 53)), Fate::Dropped),
    ];
    for (packet, expected) in rows {
        assert_eq!(fate(&table, Hook::Forward, &packet), expected, "{packet:?}");
    }
    // No role allows the host: every member is refused there.
    let to_host = from("172.20.0.100", "172.20.0.1", 22);
    assert_eq!(fate(&table, Hook::Input, &to_host), Fate::Dropped);
}

#[test]
fn more_members_add_elements_not_rules() {
    let small = plan(&replicante(0).table, &replicante(0).static_topology);
    let large_policy = replicante(1000);
    let large = plan(&large_policy.table, &large_policy.static_topology);
    let rules = |table: &enforcer_core::ruleset::Ruleset| {
        table
            .chains
            .iter()
            .map(|c| (c.name.to_string(), c.rules.len()))
            .collect::<Vec<_>>()
    };
    assert_eq!(rules(&small), rules(&large));
    // Every rule is a fixed number of lookups: no rule names a member's address.
    for chain in &large.chains {
        for rule in &chain.rules {
            assert!(
                !rule
                    .matches
                    .iter()
                    .any(|m| matches!(m, Match::Address(_, net) if net.to_string().starts_with("172.20."))),
                "{}: {rule:?}",
                chain.name
            );
        }
    }
    // One of the new agents is enforced like the first.
    let agent = on("br-repl", tcp("172.20.4.1", "172.20.0.5", 8080));
    assert_eq!(fate(&large, Hook::Forward, &agent), Fate::Passed);
    let out = on("br-repl", tcp("172.20.4.1", "203.0.113.10", 443));
    assert_eq!(fate(&large, Hook::Forward, &out), Fate::Dropped);
}

#[test]
fn ingress_admits_only_what_the_destination_role_allows() {
    let mut policy = replicante(0);
    let text = "[roles.supervisor]\ningress = [\n\
                { from = \"internet\", allow = [\"tcp/8443\"] },\n\
                { from = \"role:dns\", allow = [\"udp/5353\"] },\n]\n";
    let extra = Policy::parse(&format!("{text}[roles.dns]\n"), "extra.toml").unwrap();
    let mut roles = policy.static_topology.roles().clone();
    roles.insert(
        "supervisor".into(),
        extra.static_topology.roles()["supervisor"].clone(),
    );
    policy.static_topology = policy.static_topology.clone().with_roles(roles);
    let table = plan(&policy.table, &policy.static_topology);
    let inside = |src: &str, dst: &str, port| on("br-repl", tcp(src, dst, port));
    let outside = |src: &str, dst: &str, port| on("uplink", tcp(src, dst, port));
    let rows = [
        (outside("203.0.113.10", "172.20.0.5", 8443), Fate::Passed),
        (
            outside("2001:db8:113::10", "fd00:20::5", 8443),
            Fate::Passed,
        ),
        (outside("203.0.113.10", "172.20.0.5", 22), Fate::Dropped),
        (outside("203.0.113.10", "172.20.0.100", 7000), Fate::Dropped),
        // A container without a role is managed too: nothing opens toward it.
        (outside("203.0.113.10", "172.20.0.50", 9000), Fate::Dropped),
        (udp(inside("172.20.0.3", "172.20.0.5", 5353)), Fate::Passed),
        (
            udp(inside("172.20.0.100", "172.20.0.5", 5353)),
            Fate::Dropped,
        ),
        // The internet's allowance is not a managed source's.
        (inside("172.20.0.100", "172.20.0.5", 8443), Fate::Dropped),
    ];
    for (packet, expected) in rows {
        assert_eq!(fate(&table, Hook::Forward, &packet), expected, "{packet:?}");
    }
    // Replies toward managed containers pass.
    let mut reply = outside("203.0.113.10", "172.20.0.100", 40000);
    reply.state = Some(enforcer_core::ruleset::CtState::Established);
    assert_eq!(fate(&table, Hook::Forward, &reply), Fate::Passed);
}

/// Attacks on the model, as a container with CAP_NET_RAW would try them: a member's address
/// forged from outside the managed bridges, an internet source forged from a managed bridge
/// toward a role's internet ingress, a role's internet allowance aimed at a managed
/// container's address on an unmanaged network.
#[test]
fn forged_sources_and_hidden_managed_destinations_get_nothing() {
    let mut policy = replicante(0);
    let text = "[roles.supervisor]\ningress = [{ from = \"internet\", allow = [\"tcp/8443\"] }]\n\
                [roles.dns]\n";
    let extra = Policy::parse(text, "extra.toml").unwrap();
    let mut roles = policy.static_topology.roles().clone();
    roles.insert(
        "supervisor".into(),
        extra.static_topology.roles()["supervisor"].clone(),
    );
    let elsewhere = [("172.30.0.9".parse().unwrap(), "monitor".to_string())].into();
    policy.static_topology = policy
        .static_topology
        .clone()
        .with_roles(roles)
        .with_elsewhere(elsewhere);
    let table = plan(&policy.table, &policy.static_topology);
    let rows = [
        // The agent's address, forged from an unmanaged bridge toward what the agent may reach.
        (
            udp(on("docker0", tcp("172.20.0.100", "172.20.0.3", 53))),
            Fate::Dropped,
        ),
        // The same from the agent's own bridge passes (the bridge table binds it there).
        (
            udp(on("br-repl", tcp("172.20.0.100", "172.20.0.3", 53))),
            Fate::Passed,
        ),
        // An internet source forged on a managed bridge toward the internet's ingress.
        (
            on("br-repl", tcp("203.0.113.9", "172.20.0.5", 8443)),
            Fate::Dropped,
        ),
        // The real internet gets in.
        (
            on("uplink", tcp("203.0.113.9", "172.20.0.5", 8443)),
            Fate::Passed,
        ),
        // The proxy's internet allowance toward a managed container on an unmanaged network.
        (
            on("br-repl", tcp("172.20.0.2", "172.30.0.9", 443)),
            Fate::Dropped,
        ),
        // DNS's internet allowance likewise.
        (
            udp(on("br-repl", tcp("172.20.0.3", "172.30.0.9", 53))),
            Fate::Dropped,
        ),
        (
            udp(on("br-repl", tcp("172.20.0.3", "203.0.113.10", 53))),
            Fate::Passed,
        ),
    ];
    for (packet, expected) in rows {
        assert_eq!(fate(&table, Hook::Forward, &packet), expected, "{packet:?}");
    }
    // Toward the host, a forged member address is dropped before the host's allowances.
    let forged_to_host = on("docker0", tcp("172.20.0.5", "172.20.0.1", 22));
    assert_eq!(fate(&table, Hook::Input, &forged_to_host), Fate::Dropped);
}

/// `role:egress-proxy` (the proxy role) names the egress proxies: on a network with east-west
/// denied, an agent reaches the proxy's port and nothing else of it, and the proxy keeps its
/// own allowance (`[proxy]`).
#[test]
fn the_proxy_role_names_the_egress_proxies() {
    let text = "[[networks]]\nname = \"zone\"\ninterface = \"br-zone\"\n\
                subnets = [\"172.20.0.0/16\"]\neast_west = \"deny\"\n\
                [[proxies]]\nname = \"squid\"\naddresses = [\"172.20.0.2\"]\n\
                [roles.agent]\negress = [{ to = \"role:egress-proxy\", allow = [\"tcp/3128\"] }]\n\
                ingress = [{ from = \"role:egress-proxy\", allow = [\"tcp/9000\"] }]\n\
                [[members]]\nname = \"agent\"\nrole = \"agent\"\naddresses = [\"172.20.0.100\"]\n";
    let policy = Policy::parse(text, "p.toml").unwrap();
    let table = plan(&policy.table, &policy.static_topology);
    let from = |src: &str, dst: &str, port| on("br-zone", tcp(src, dst, port));
    let rows = [
        (from("172.20.0.100", "172.20.0.2", 3128), Fate::Passed),
        (from("172.20.0.100", "172.20.0.2", 22), Fate::Dropped),
        (from("172.20.0.100", "172.20.0.3", 3128), Fate::Dropped),
        (from("172.20.0.2", "172.20.0.100", 9000), Fate::Passed),
        (from("172.20.0.2", "172.20.0.100", 22), Fate::Dropped),
        (from("172.20.0.2", "203.0.113.10", 443), Fate::Passed),
    ];
    for (packet, expected) in rows {
        assert_eq!(fate(&table, Hook::Forward, &packet), expected, "{packet:?}");
    }
}
