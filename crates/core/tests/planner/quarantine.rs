//! Quarantined interfaces (`[quarantine] interfaces`): every table drops what enters or leaves
//! them before anything else it does, replies included; nothing changes without a pattern.

use enforcer_core::docker::{classify, DockerState};
use enforcer_core::names::ChainName;
use enforcer_core::planner::{plan_tables, RECORDED_INTERFACES};
use enforcer_core::policy::Policy;
use enforcer_core::ruleset::{
    Action, CtState, DropReason, Hook, Match, Ruleset, SetContent, TableFamily, Tables, Verdict,
};

use crate::evaluator::{fate, on, tcp, Fate, Packet};

const IRONCLAW: &str = include_str!("../../../../rules/ironclaw.toml");

fn tables(text: &str) -> Tables {
    let policy = Policy::parse(text, "test.toml").expect("policy parses");
    let none = DockerState::default();
    plan_tables(&policy, &classify(&policy, &none), &none, &[], &[]).0
}

fn leaving(interface: &'static str, mut packet: Packet<'static>) -> Packet<'static> {
    packet.out_interface = interface;
    packet
}

#[test]
fn nothing_enters_or_leaves_a_quarantined_interface_in_the_inet_table() {
    let tables = tables(IRONCLAW);
    let inet = &tables.inet;
    let guest = tcp("10.77.0.2", "203.0.113.10", 443);
    for interface in ["tap0", "tap-vm0", "fc-1", "fc-"] {
        for hook in [Hook::Forward, Hook::Input] {
            let packet = on(interface, guest);
            assert_eq!(
                fate(inet, hook, &packet),
                Fate::Dropped,
                "{interface} {hook:?}"
            );
            // A reply of a flow that was open before the quarantine: dropped too.
            let mut reply = packet;
            reply.state = Some(CtState::Established);
            assert_eq!(fate(inet, hook, &reply), Fate::Dropped, "{interface} reply");
        }
        let toward = leaving(interface, on("eth0", tcp("203.0.113.10", "10.77.0.2", 22)));
        for hook in [Hook::Forward, Hook::Output] {
            assert_eq!(fate(inet, hook, &toward), Fate::Dropped, "to {interface}");
        }
    }
    for interface in ["eth0", "etap0", "fc0", "ta"] {
        let packet = leaving("eth1", on(interface, guest));
        for hook in [Hook::Forward, Hook::Input, Hook::Output] {
            assert_eq!(
                fate(inet, hook, &packet),
                Fate::Passed,
                "{interface} {hook:?}"
            );
        }
    }
}

#[test]
fn every_base_chain_of_every_table_starts_with_the_quarantine() {
    let tables = tables(IRONCLAW);
    let families: Vec<TableFamily> = tables.iter().map(|t| t.family).collect();
    assert_eq!(
        families,
        [TableFamily::Inet, TableFamily::Bridge, TableFamily::Arp]
    );
    let patterns = ["tap*", "fc-*"];
    for table in tables.iter() {
        let bases: Vec<_> = table.chains.iter().filter(|c| c.hook.is_some()).collect();
        let hooks: Vec<Hook> = bases.iter().map(|c| c.hook.unwrap().0).collect();
        let expected: &[Hook] = match table.family {
            TableFamily::Inet => &[Hook::Forward, Hook::Input, Hook::Output],
            TableFamily::Bridge => &[Hook::Prerouting, Hook::Input, Hook::Forward, Hook::Output],
            TableFamily::Arp => &[Hook::Input, Hook::Output],
        };
        assert_eq!(hooks, expected, "{:?}", table.family);
        for chain in bases {
            let (hook, _) = chain.hook.unwrap();
            let sides: Vec<(bool, &str)> = match (table.family, hook) {
                (TableFamily::Inet, Hook::Forward) => [true, false]
                    .iter()
                    .flat_map(|input| patterns.iter().map(move |p| (*input, *p)))
                    .collect(),
                (_, Hook::Input | Hook::Prerouting) => {
                    patterns.iter().map(|p| (true, *p)).collect()
                }
                _ => patterns.iter().map(|p| (false, *p)).collect(),
            };
            assert!(chain.rules.len() >= sides.len(), "{}", chain.name);
            for (rule, (input, pattern)) in chain.rules.iter().zip(&sides) {
                let (matched, target) = match input {
                    true => (
                        Match::InputInterface(pattern.to_string()),
                        ChainName::QuarantineIn,
                    ),
                    false => (
                        Match::OutputInterface(pattern.to_string()),
                        ChainName::QuarantineOut,
                    ),
                };
                assert_eq!(rule.matches, [matched], "{:?} {}", table.family, chain.name);
                assert_eq!(rule.action, Action::Verdict(Verdict::Jump(target)));
            }
        }
        quarantine_chains_record_then_drop_whatever_the_set_does(table);
    }
}

/// The record is a rule of its own and the drop after it has no condition: a full set (the
/// record fails) still drops. The set is the kernel's to fill.
fn quarantine_chains_record_then_drop_whatever_the_set_does(table: &Ruleset) {
    for name in [ChainName::QuarantineIn, ChainName::QuarantineOut] {
        let chain = table.chain(&name).expect("quarantine chain");
        assert_eq!(chain.rules.len(), 2, "{name}");
        assert!(matches!(chain.rules[0].action, Action::RecordInterface(..)));
        let last = &chain.rules[1];
        assert!(last.matches.is_empty() && last.counter, "{name}: {last:?}");
        assert_eq!(
            last.action,
            Action::Verdict(Verdict::Deny(DropReason::Quarantine))
        );
    }
    let audit = table.chain(&ChainName::Audit(DropReason::Quarantine));
    let drops = audit.expect("audit chain").rules.last().expect("its drop");
    assert!(drops.matches.is_empty(), "{drops:?}");
    assert_eq!(drops.action, Action::Verdict(Verdict::Drop));
    let set = table
        .sets
        .iter()
        .find(|s| matches!(s.content, SetContent::Recorded(_)))
        .expect("quarantined set");
    assert_eq!(set.content, SetContent::Recorded(RECORDED_INTERFACES));
}

#[test]
fn bridged_frames_from_and_to_a_quarantined_port_are_dropped() {
    let tables = tables(IRONCLAW);
    let bridge = tables.bridge.as_ref().expect("bridge table");
    let frame = tcp("10.78.0.2", "10.78.0.3", 22);
    for hook in [Hook::Prerouting, Hook::Input] {
        assert_eq!(fate(bridge, hook, &on("fc-vm1", frame)), Fate::Dropped);
    }
    let toward = leaving("fc-vm1", on("lan0", frame));
    for hook in [Hook::Forward, Hook::Output] {
        assert_eq!(fate(bridge, hook, &toward), Fate::Dropped, "{hook:?}");
    }
    let arp = tables.arp.as_ref().expect("arp table");
    assert_eq!(fate(arp, Hook::Input, &on("tap0", frame)), Fate::Dropped);
    let asked = leaving("tap0", on("lo", frame));
    assert_eq!(fate(arp, Hook::Output, &asked), Fate::Dropped);
}

#[test]
fn without_a_pattern_no_table_or_chain_is_added() {
    let plain = tables(include_str!("../../../../rules/default.toml"));
    assert!(plain.arp.is_none());
    assert!(plain.inet.chain(&ChainName::Output).is_none());
    let names = |t: &Ruleset| -> Vec<String> {
        let sets = t.sets.iter().map(|s| s.name.to_string());
        sets.chain(t.chains.iter().map(|c| c.name.to_string()))
            .collect()
    };
    for table in plain.iter() {
        assert!(
            !names(table).iter().any(|n| n.contains("quarantine")),
            "{:?}",
            names(table)
        );
    }
    // Without Docker and without a guarded port, quarantine alone brings a bridge table.
    let alone = tables("[docker]\nenabled = false\n[quarantine]\ninterfaces = [\"tap*\"]\n");
    let bridge = alone.bridge.as_ref().expect("bridge table for quarantine");
    assert!(bridge.chain(&ChainName::UnboundPort).is_none());
    assert!(tables("[docker]\nenabled = false\n").bridge.is_none());
}

#[test]
fn a_bad_pattern_is_located() {
    let error = Policy::parse("[quarantine]\ninterfaces = [\"tap*\", \"a b\"]\n", "p.toml")
        .expect_err("a name with a space");
    let text = error.to_string();
    assert!(text.contains("p.toml:2:"), "{text}");
    assert!(text.contains("interface pattern"), "{text}");
}
