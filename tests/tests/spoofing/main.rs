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
//! Two attacks also run tagged: the neighbour advertisement of d and the router advertisement
//! of e, with an 802.1Q priority tag (VID 0) after the source MAC. The kernel untags a frame
//! into metadata when it enters a port, so a rule that matches the packet inside sees it while
//! one that reads the Ethernet type sees 0x8100; the receiver without a VLAN device takes the
//! frame as untagged.
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

mod attacks;
mod facts;
mod forge;
mod inspect;
mod lab;
mod race;

use std::sync::Mutex;

use enforcer_harness::docker::DockerVersion;
use enforcer_harness::{enforcer, listed_table, Netns};
use inspect::text;

use facts::link_facts;
use lab::{Lab, Outcome, Protection};

/// One dockerd at a time: they share the machine's cgroups and containerd conventions.
pub(crate) static DOCKERD: Mutex<()> = Mutex::new(());

/// Every attack on a Docker lab; on a static lab, those a static policy can stop (see
/// [`static_attacks`]).
fn run_attacks(lab: &Lab) -> Vec<Outcome> {
    let mut outcomes = static_attacks(lab);
    outcomes.extend([
        attacks::gateway_arp_poisoning(lab),
        race::forged_arp_race(lab),
    ]);
    outcomes
}

/// The attacks on the proxy's identity and on what no port may send. Without Docker, a port
/// that no declared proxy owns is held to no address of its own, so the gateway's address is
/// not refused to it (docs/threat-model.md), and there are no containers to race.
fn static_attacks(lab: &Lab) -> Vec<Outcome> {
    vec![
        attacks::ipv4_takeover(lab),
        attacks::forged_source_udp(lab),
        attacks::forged_source_mac(lab),
        attacks::ipv6_takeover(lab),
        attacks::tagged_neighbour_advertisement(lab),
        attacks::rogue_router_advertisement(lab, false),
        attacks::rogue_router_advertisement(lab, true),
    ]
}

/// Runs every attack and checks that each `succeeds` (or not), with one report of all.
fn expect_attacks(version: DockerVersion, protection: Protection, succeed: bool) {
    let _one = DOCKERD.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::new(version, protection);
    expect_outcomes(&lab, run_attacks(&lab), succeed);
}

/// Checks that each of `outcomes` `succeeded` (or not), with one report of all.
fn expect_outcomes(lab: &Lab, outcomes: Vec<Outcome>, succeed: bool) {
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

/// Without Docker, as `rules/threegate.toml` ships (no MAC declared): every attack on the
/// proxy's identity succeeds; there is no bridge table.
#[test]
fn spoofing_attacks_succeed_against_a_static_policy_declaring_no_macs() {
    let lab = Lab::new_static(Protection::StaticWithoutMacs);
    expect_outcomes(&lab, static_attacks(&lab), true);
}

/// Without Docker, the proxy's MACs declared: each of those attacks fails, and the proxy's own
/// egress keeps working.
#[test]
fn a_static_policy_declaring_the_proxy_macs_stops_the_attacks_on_its_identity() {
    let lab = Lab::new_static(Protection::StaticWithMacs);
    expect_outcomes(&lab, static_attacks(&lab), false);
    let shared = lab.host().exec_ok(
        "nft",
        &["list", "chain", "bridge", "enforcer", "shared_port"],
    );
    let listing = String::from_utf8_lossy(&shared.stdout);
    let dropped: u64 = listing
        .split("counter packets ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(dropped > 0, "shared_port counted no drop:\n{listing}");

    // The dry-run text, loaded by nft elsewhere, lists exactly as the netlink-applied tables.
    let script = enforcer(
        lab.host(),
        &["apply", "--dry-run", "--config", lab.static_policy()],
    );
    assert_eq!(script.status.code(), Some(0), "{}", text(&script.stderr));
    let loaded = Netns::new("staticl");
    let load = loaded.exec_with_input("nft", &["-f", "-"], &script.stdout);
    assert!(load.status.success(), "nft -f: {}", text(&load.stderr));
    for family in ["inet", "bridge"] {
        assert_eq!(
            listed_table(lab.host(), family, "enforcer"),
            listed_table(&loaded, family, "enforcer"),
            "{family}"
        );
    }
}

#[test]
fn docker_20_10_container_links() {
    link_facts(DockerVersion::Bookworm);
}

#[test]
fn docker_28_5_container_links() {
    link_facts(DockerVersion::Sid);
}
