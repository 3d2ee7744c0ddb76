//! Planner properties, checked on the ruleset value with a small reference evaluator
//! ([`evaluator`]) that walks chains the way netfilter does: the embedded default's handling of
//! Docker bridges here, ThreeGate's matrix in [`threegate`], generated topologies in
//! [`properties`].

mod evaluator;
mod ports;
mod properties;
mod quarantine;
mod roles;
mod swarm;
mod threegate;

use enforcer_core::planner::{plan, TableSettings};
use enforcer_core::policy::Policy;
use enforcer_core::ruleset::{CtState, Hook, Ruleset};
use enforcer_core::topology::{ManagedNetwork, Protocol, Proxy, Service, Topology};

use evaluator::{fate, on, tcp, Fate};

fn service(text: &str) -> Service {
    text.parse().unwrap()
}

/// The embedded default policy's table settings, one managed network `m` on bridge `br-m`
/// (10.1.0.0/24) and two classified unmanaged bridges.
fn docker_like() -> Ruleset {
    let network = ManagedNetwork {
        name: "m".into(),
        subnets: vec!["10.1.0.0/24".parse().unwrap()],
        interface: Some("br-m".into()),
        east_west: Default::default(),
    };
    let topology = Topology::new(vec![network], vec![])
        .unwrap()
        .with_unmanaged_interfaces(["br-known".to_string(), "docker0".to_string()]);
    plan(&Policy::embedded().table, &topology)
}

#[test]
fn unclassified_bridges_are_denied_until_classified() {
    let rs = docker_like();
    let out = tcp("172.30.0.2", "203.0.113.10", 80);
    for (bridge, expected) in [
        ("br-new", Fate::Dropped),
        ("br-known", Fate::Passed),
        ("docker0", Fate::Passed),
        ("eth0", Fate::Passed),
        ("docker01", Fate::Passed),
    ] {
        assert_eq!(
            fate(&rs, Hook::Forward, &on(bridge, out)),
            expected,
            "{bridge}"
        );
    }
    let to_host = tcp("172.30.0.2", "172.30.0.1", 22);
    assert_eq!(
        fate(&rs, Hook::Input, &on("br-new", to_host)),
        Fate::Dropped
    );
    assert_eq!(
        fate(&rs, Hook::Input, &on("br-known", to_host)),
        Fate::Passed
    );
    // Replies of flows let through earlier still pass.
    let mut reply = on("br-new", out);
    reply.state = Some(CtState::Established);
    assert_eq!(fate(&rs, Hook::Forward, &reply), Fate::Passed);

    let mut settings = Policy::embedded().table;
    settings.unknown_interface_patterns.clear();
    let open = plan(&settings, &Topology::default());
    assert_eq!(fate(&open, Hook::Forward, &on("br-new", out)), Fate::Passed);
}

#[test]
fn a_forged_source_on_a_managed_bridge_is_dropped() {
    let rs = docker_like();
    let forged = on("br-m", tcp("203.0.113.7", "203.0.113.10", 443));
    assert_eq!(fate(&rs, Hook::Forward, &forged), Fate::Dropped);
    let forged_to_host = on("br-m", tcp("192.0.2.1", "10.1.0.1", 22));
    assert_eq!(fate(&rs, Hook::Input, &forged_to_host), Fate::Dropped);
    let inside = on("br-m", tcp("10.1.0.5", "10.1.0.6", 8080));
    assert_eq!(fate(&rs, Hook::Forward, &inside), Fate::Passed);
}

#[test]
fn dns_servers_restrict_only_dns() {
    let network = ManagedNetwork {
        name: "e".into(),
        subnets: vec!["10.2.0.0/24".parse().unwrap()],
        interface: None,
        east_west: Default::default(),
    };
    let proxy = Proxy {
        name: "p".into(),
        addresses: vec!["10.2.0.2".parse().unwrap()],
        services: [service("tcp/443"), service("udp/53")].into(),
        dns_servers: vec!["203.0.113.53".parse().unwrap()],
        macs: vec![],
    };
    let rs = plan(
        &TableSettings::default(),
        &Topology::new(vec![network], vec![proxy]).unwrap(),
    );
    let mut dns = tcp("10.2.0.2", "203.0.113.53", 53);
    dns.protocol = Protocol::Udp;
    assert_eq!(fate(&rs, Hook::Forward, &dns), Fate::Passed);
    dns.dst = "203.0.113.54".parse().unwrap();
    assert_eq!(fate(&rs, Hook::Forward, &dns), Fate::Dropped);
    assert_eq!(
        fate(&rs, Hook::Forward, &tcp("10.2.0.2", "198.51.100.1", 443)),
        Fate::Passed
    );
}
