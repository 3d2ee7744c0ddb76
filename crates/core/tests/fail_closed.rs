//! Docker input that used to fail open: classified, planned and rendered, it must leave the
//! bridges of managed networks that are not enforced denied, and report what it read oddly.

use std::collections::{BTreeMap, BTreeSet};

use enforcer_core::docker::{
    classify, classify_after, label_flag, Classified, DockerContainer, DockerEndpoint,
    DockerNetwork, DockerState, BRIDGE_NAME_OPTION,
};
use enforcer_core::names::{ChainName, SetName};
use enforcer_core::planner::plan;
use enforcer_core::policy::Policy;
use enforcer_core::render::script;
use enforcer_core::ruleset::{Action, DropReason, Match, Ruleset, SetContent, Verdict};
use enforcer_core::topology::changes;

/// A bridge network with a 64-character ID made of `id` (padded with zeros).
fn network(id: &str, name: &str, subnets: &[&str]) -> DockerNetwork {
    DockerNetwork {
        id: format!("{id:0<64}"),
        name: name.into(),
        driver: "bridge".into(),
        internal: true,
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
        subnets: subnets.iter().map(|s| s.to_string()).collect(),
    }
}

fn on_bridge(mut network: DockerNetwork, bridge: &str) -> DockerNetwork {
    network
        .options
        .insert(BRIDGE_NAME_OPTION.into(), bridge.into());
    network
}

fn state(networks: &[&DockerNetwork], containers: &[&DockerContainer]) -> DockerState {
    DockerState::of(
        networks.iter().map(|&n| n.clone()),
        containers.iter().map(|&c| c.clone()),
    )
}

fn proxy_on(network: &DockerNetwork, address: &str) -> DockerContainer {
    DockerContainer {
        id: format!("{:f<64}", "c"),
        name: "proxy".into(),
        labels: [("enforcer.role".to_string(), "egress-proxy".to_string())].into(),
        endpoints: vec![DockerEndpoint {
            network_id: network.id.clone(),
            ipv4: address.into(),
            ipv6: String::new(),
            mac: String::new(),
        }],
    }
}

fn skipped_objects(classified: &Classified) -> Vec<&str> {
    classified
        .skipped
        .iter()
        .map(|s| s.object.as_str())
        .collect()
}

/// The rules of `chain` that look the input interface up in the skipped bridges' set.
fn skipped_bridge_rules<'a>(ruleset: &'a Ruleset, chain: &ChainName) -> Vec<&'a Action> {
    ruleset
        .chain(chain)
        .expect("chain exists")
        .rules
        .iter()
        .filter(|rule| {
            rule.matches.iter().any(|m| {
                *m == Match::InputInterfaceInSet {
                    set: SetName::SkippedInterfaces,
                    negated: false,
                }
            })
        })
        .map(|rule| &rule.action)
        .collect()
}

#[test]
fn a_skipped_network_on_a_custom_bridge_stays_denied() {
    // A 129-character name (Docker accepts it) on a bridge no pattern matches.
    let long = on_bridge(network("a1", &"n".repeat(129), &["10.7.0.0/24"]), "agents0");
    for text in ["[docker]\n", "[docker]\nunknown_networks = \"allow\"\n"] {
        let policy = Policy::parse(text, "p.toml").unwrap();
        let classified = classify(&policy, &state(&[&long], &[]));
        assert_eq!(classified.skipped.len(), 1, "{:?}", classified.skipped);
        assert_eq!(
            classified.topology.skipped_interfaces(),
            &BTreeSet::from(["agents0".to_string()])
        );
        let ruleset = plan(&policy.table, &classified.topology);
        match &ruleset.set(&SetName::SkippedInterfaces).unwrap().content {
            SetContent::InterfaceNames(names) => assert_eq!(names.len(), 1),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            skipped_bridge_rules(&ruleset, &ChainName::Forward),
            [&Action::Verdict(Verdict::Jump(
                ChainName::FromUnknownBridge
            ))],
            "{text}"
        );
        assert_eq!(
            skipped_bridge_rules(&ruleset, &ChainName::Input),
            [&Action::Verdict(Verdict::Deny(DropReason::UnknownBridge))],
            "{text}"
        );
        // The jump target exists even when unknown networks are allowed.
        assert!(ruleset.chain(&ChainName::FromUnknownBridge).is_some());
        let text = script(&ruleset);
        assert!(
            text.contains("iifname @skipped_interfaces jump from_unknown_bridge"),
            "{text}"
        );
        assert!(
            text.contains("iifname @skipped_interfaces counter goto audit_unknown_bridge"),
            "{text}"
        );
        assert!(text.contains("\"agents0\""), "{text}");
    }
}

#[test]
fn without_a_skipped_network_the_table_is_unchanged() {
    let policy = Policy::parse("[docker]\nunknown_networks = \"allow\"\n", "p").unwrap();
    let fine = on_bridge(network("a1", "agents", &["10.7.0.0/24"]), "agents0");
    let classified = classify(&policy, &state(&[&fine], &[]));
    assert!(classified.skipped.is_empty());
    assert!(classified.topology.skipped_interfaces().is_empty());
    let ruleset = plan(&policy.table, &classified.topology);
    assert!(ruleset.set(&SetName::SkippedInterfaces).is_none());
    assert!(ruleset.chain(&ChainName::FromUnknownBridge).is_none());
    assert!(!script(&ruleset).contains("skipped"));
}

#[test]
fn an_enforced_network_keeps_winning_against_a_newcomer() {
    let policy = Policy::embedded();
    let old = on_bridge(network("b2", "zzz-agents", &["10.8.0.0/24"]), "agents0");
    let first = classify(&policy, &state(&[&old], &[]));
    assert_eq!(first.enforced_networks, BTreeSet::from([old.id.clone()]));

    // `aaa` sorts first and overlaps it.
    let newcomer = network("c3", "aaa", &["10.8.0.0/16"]);
    let docker = state(&[&old, &newcomer], &[]);
    let after = classify_after(&policy, &docker, &first.enforced_networks);
    assert_eq!(after.enforced_networks, first.enforced_networks);
    assert_eq!(skipped_objects(&after), ["network aaa (c30000000000)"]);
    let names: Vec<&str> = after
        .topology
        .networks()
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(names, ["zzz-agents"]);
    // The loser's bridge is denied, and the change log says so.
    assert_eq!(
        after.topology.skipped_interfaces(),
        &BTreeSet::from(["br-c30000000000".to_string()])
    );
    assert_eq!(
        changes(&first.topology, &after.topology),
        ["+denied bridge br-c30000000000 of a skipped network"]
    );

    // With no history, name order decides (the first classification after a start).
    let fresh = classify(&policy, &docker);
    assert_eq!(
        fresh.enforced_networks,
        BTreeSet::from([newcomer.id.clone()])
    );
}

#[test]
fn managed_label_spellings_are_read_and_odd_values_fail_closed() {
    let policy = Policy::embedded();
    let labelled = |id: &str, value: &str| {
        let mut n = network(id, &format!("n{id}"), &[]);
        n.internal = false;
        n.subnets = vec![format!("10.{}.0.0/24", 10 + id.len())];
        n.labels.insert("enforcer.managed".into(), value.into());
        n
    };
    for (value, managed) in [
        ("true", true),
        ("TRUE", true),
        ("true ", true),
        ("Yes", true),
        ("1", true),
        ("on", true),
        ("false", false),
        (" No", false),
        ("0", false),
        ("OFF", false),
    ] {
        assert_eq!(label_flag(value), Some(managed), "{value:?}");
        let classified = classify(&policy, &state(&[&labelled("d4", value)], &[]));
        assert_eq!(classified.topology.networks().len(), usize::from(managed));
        assert!(classified.remarks.is_empty(), "{value:?}");
    }
    for value in ["", "maybe", "tru", "enabled"] {
        assert_eq!(label_flag(value), None, "{value:?}");
        let classified = classify(&policy, &state(&[&labelled("d4", value)], &[]));
        assert_eq!(classified.topology.networks().len(), 1, "{value:?}");
        let [remark] = &classified.remarks[..] else {
            panic!("{value:?}: {:?}", classified.remarks)
        };
        assert_eq!(remark.object, "network nd4 (d40000000000)");
        assert!(remark.reason.contains("treated as managed"), "{remark:?}");
    }
}

#[test]
fn a_short_id_is_named_as_the_reason() {
    let mut short = network("", "agents", &["10.9.0.0/24"]);
    short.id = "abc".into();
    let classified = classify(&Policy::embedded(), &state(&[&short], &[]));
    assert_eq!(skipped_objects(&classified), ["network agents (abc)"]);
    let reason = &classified.skipped[0].reason;
    assert!(reason.contains("its ID `abc`"), "{reason}");
    assert!(!reason.contains("does not route"), "{reason}");
}

#[test]
fn docker_text_cannot_forge_log_lines() {
    let forged = network("e5", "x\nINFO applied: all fine", &["10.10.0.0/24"]);
    let mut lying = network("f6", "agents", &["10.11.0.0/24\r\nWARN x"]);
    lying.id = format!("{:0<64}", "f6\n");
    let classified = classify(&Policy::embedded(), &state(&[&forged, &lying], &[]));
    assert_eq!(classified.skipped.len(), 2, "{:?}", classified.skipped);
    for item in &classified.skipped {
        for text in [&item.object, &item.reason] {
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
    }
    assert!(classified.skipped[1].object.contains("x\\nINFO"));
}

#[test]
fn odd_docker_bridges_and_subnets_are_skipped() {
    let policy = Policy::embedded();
    let escaped = on_bridge(network("a7", "escaped", &["10.12.0.0/24"]), "br\\*");
    let quoted = on_bridge(network("b7", "quoted", &["10.13.0.0/24"]), "br\"x");
    let loopback = network("c7", "loopback", &["127.0.0.0/16"]);
    let mapped = network("d7", "mapped", &["::ffff:10.14.0.0/120"]);
    let shared_a = on_bridge(network("e7", "shared-a", &["10.15.0.0/24"]), "agents0");
    let shared_b = on_bridge(network("f7", "shared-b", &["10.16.0.0/24"]), "agents0");
    let docker = state(
        &[&escaped, &quoted, &loopback, &mapped, &shared_a, &shared_b],
        &[],
    );
    let classified = classify(&policy, &docker);
    let reasons: Vec<(&str, &str)> = classified
        .skipped
        .iter()
        .map(|s| (s.object.as_str(), s.reason.as_str()))
        .collect();
    for (name, needle) in [
        ("escaped", "is not an interface name"),
        ("quoted", "is not an interface name"),
        ("loopback", "loopback range"),
        ("mapped", "IPv4-mapped"),
        ("shared-b", "already the interface of network `shared-a`"),
    ] {
        assert!(
            reasons
                .iter()
                .any(|(o, r)| o.starts_with(&format!("network {name} (")) && r.contains(needle)),
            "{name}: {reasons:?}"
        );
    }
    assert_eq!(classified.skipped.len(), 5, "{reasons:?}");
    let names: Vec<&str> = classified
        .topology
        .networks()
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(names, ["shared-a"]);
}

#[test]
fn a_docker_network_holding_the_default_resolver_is_skipped_not_every_proxy() {
    let policy = Policy::parse("[proxy]\ndns_servers = [\"10.20.0.53\"]\n", "p.toml").unwrap();
    let resolvers = network("a8", "resolvers", &["10.20.0.0/24"]);
    let egress = network("b8", "egress", &["10.21.0.0/24"]);
    let proxy = proxy_on(&egress, "10.21.0.2");
    let classified = classify(&policy, &state(&[&resolvers, &egress], &[&proxy]));
    assert_eq!(
        skipped_objects(&classified),
        ["network resolvers (a80000000000)"]
    );
    assert!(
        classified.skipped[0]
            .reason
            .contains("holds DNS server 10.20.0.53 of the proxy defaults"),
        "{:?}",
        classified.skipped
    );
    assert_eq!(classified.topology.proxies().len(), 1);
}

#[test]
fn a_skipped_network_on_a_bridge_named_beyond_ascii_stays_denied() {
    let odd = on_bridge(network("a1", &"n".repeat(129), &["10.7.0.0/24"]), "agënt0");
    let policy = Policy::parse("[docker]\n", "p.toml").unwrap();
    let classified = classify(&policy, &state(&[&odd], &[]));
    assert_eq!(
        classified.topology.skipped_interfaces(),
        &BTreeSet::from(["agënt0".to_string()])
    );
}
