use enforcer_core::names::{ChainName, SetName};
use enforcer_core::planner::{plan, TableSettings};
use enforcer_core::ruleset::{
    Action, AddressKey, Chain, Direction, Family, Hook, MapKey, Match, Rule, Ruleset, TableFamily,
    Verdict,
};
use enforcer_core::topology::{ManagedNetwork, Topology};

use super::{encode, transaction, Parts, TableChange, Transaction};
use crate::state::TableState;
use crate::wire;

fn ruleset(networks: &[(&str, &str)]) -> Ruleset {
    let networks = networks
        .iter()
        .map(|(name, subnet)| ManagedNetwork {
            name: name.to_string(),
            subnets: vec![subnet.parse().unwrap()],
            interface: None,
            east_west: Default::default(),
        })
        .collect();
    plan(
        &TableSettings::default(),
        &Topology::new(networks, vec![]).unwrap(),
    )
}

/// The transaction that makes the kernel hold `parts`' table alone.
fn alone(
    parts: &Parts,
    against: Option<(&TableState, &TableState)>,
    first_seq: u32,
) -> Transaction {
    transaction(&[TableChange::Write { parts, against }], first_seq)
}

#[test]
fn from_scratch_creates_the_table_around_a_delete() {
    let parts = encode(&ruleset(&[("a", "10.1.0.0/24")]), 0);
    let tx = alone(&parts, None, 100);
    assert_eq!(
        tx.descriptions[..3],
        [
            "create table inet enforcer",
            "delete table inet enforcer",
            "create table inet enforcer"
        ]
    );
    assert_eq!(tx.first_seq, 100);
    assert_eq!(tx.describe(101), "delete table inet enforcer");
    assert!(tx
        .descriptions
        .iter()
        .any(|d| d == "create set egress_v4_24"));
}

#[test]
fn over_an_existing_table_only_what_differs_is_touched() {
    let before = encode(&ruleset(&[("a", "10.1.0.0/24"), ("b", "10.2.0.0/24")]), 0);
    let after = encode(&ruleset(&[("a", "10.1.0.0/24"), ("c", "10.3.0.0/24")]), 0);
    let (current, desired) = (before.state(), after.state());
    let tx = alone(&after, Some((&current, &desired)), 1);
    let touched: Vec<&str> = tx.descriptions.iter().map(String::as_str).collect();
    assert_eq!(
        touched,
        [
            "create table inet enforcer",
            "delete elements of set managed_v4_24",
            "delete elements of set egress_v4_24",
            "delete elements of set intra_v4_24_24",
            "add elements of set managed_v4_24",
            "add elements of set egress_v4_24",
            "add elements of set intra_v4_24_24",
        ]
    );
    // Nothing to change: the table is only (re)declared.
    let tx = alone(&after, Some((&desired, &desired)), 1);
    assert_eq!(tx.descriptions, ["create table inet enforcer"]);
}

/// A table of one chain, hooked at `priority`, with `rules`.
fn one_chain(priority: i32, rules: Vec<Rule>) -> Ruleset {
    Ruleset {
        family: TableFamily::Inet,
        table: "t".into(),
        sets: vec![],
        chains: vec![Chain {
            name: ChainName::Forward,
            hook: Some((Hook::Forward, priority)),
            rules,
        }],
    }
}

fn rule(matches: Vec<Match>, counter: bool, action: Action) -> Rule {
    Rule {
        matches,
        counter,
        action,
        comment: "c".into(),
    }
}

#[test]
fn a_chain_whose_hook_changes_is_re_created_and_refilled() {
    let accept = || vec![rule(vec![], false, Action::Verdict(Verdict::Accept))];
    let before = encode(&one_chain(0, accept()), 0);
    let after = encode(&one_chain(-10, accept()), 0);
    let (current, desired) = (before.state(), after.state());
    assert_ne!(
        current.chains["forward"].base,
        desired.chains["forward"].base
    );
    let tx = alone(&after, Some((&current, &desired)), 1);
    assert_eq!(
        tx.descriptions,
        [
            "create table inet t",
            "flush chain forward",
            "delete chain forward",
            "create chain forward",
            "add rule 1 of chain forward (\"c\")",
        ]
    );
}

/// The expression names of the one rule of `ruleset`, as the reader sees them.
fn expression_names(ruleset: &Ruleset) -> Vec<String> {
    let state = encode(ruleset, 0).state();
    let rule = &state.chains["forward"].rules[0];
    rule.expression_names()
}

#[test]
fn any_mix_of_matches_is_written_in_one_rule() {
    // Interface, pair and address matches with a counter and a verdict map, in one rule.
    let key = |direction| AddressKey {
        family: Family::V4,
        direction,
        prefix_len: 24,
    };
    let matches = vec![
        Match::InputInterface("br-*".into()),
        Match::PairInSet(
            key(Direction::Source),
            key(Direction::Destination),
            SetName::Intra(Family::V4, 24, 24),
        ),
        Match::Address(Direction::Source, "10.0.0.0/8".parse().unwrap()),
    ];
    let action = Action::VerdictMap(
        MapKey::Address(key(Direction::Destination)),
        SetName::Proxies(Family::V4),
    );
    let names = expression_names(&one_chain(0, vec![rule(matches, true, action)]));
    // `meta nfproto ipv4` once per rule, before the first address, as nft writes it.
    let expected = [
        "meta", "cmp", // iifname "br-*"
        "meta", "cmp", "payload", "bitwise", "payload", "bitwise", "lookup", // pair
        "payload", "cmp",     // ip saddr 10.0.0.0/8
        "counter", // counter
        "payload", "bitwise", "lookup", // vmap
    ];
    assert_eq!(names, expected);
}

#[test]
fn every_message_is_a_request_of_the_nftables_subsystem_in_the_inet_family() {
    let tx = alone(
        &encode(&ruleset(&[("a", "10.1.0.0/24"), ("b", "fd00::/64")]), 0),
        None,
        7,
    );
    let messages: Vec<wire::Message<'_>> = wire::messages(&tx.bytes).collect();
    assert_eq!(messages.len(), tx.descriptions.len() + 2);
    let (content, delimiters) = (
        &messages[1..messages.len() - 1],
        [&messages[0], &messages[messages.len() - 1]],
    );
    for (message, seq) in content.iter().zip(7..) {
        assert_eq!(message.kind >> 8, crate::abi::NFNL_SUBSYS_NFTABLES);
        assert_eq!(message.payload[0], crate::abi::NFPROTO_INET);
        assert_eq!(message.seq, seq);
        assert_ne!(message.flags & crate::abi::NLM_F_REQUEST, 0);
    }
    assert_eq!(
        delimiters.map(|m| (m.kind, m.seq)),
        [
            (crate::abi::NFNL_MSG_BATCH_BEGIN, 6),
            (crate::abi::NFNL_MSG_BATCH_END, tx.last_seq() + 1)
        ]
    );
}

#[test]
fn planned_base_chains_are_what_the_kernel_reports_once_encoded() {
    let hooks = [Hook::Prerouting, Hook::Input, Hook::Forward, Hook::Output];
    for family in [TableFamily::Inet, TableFamily::Bridge, TableFamily::Arp] {
        let hooks: &[Hook] = match family {
            TableFamily::Arp => &[Hook::Input, Hook::Output],
            _ => &hooks,
        };
        let chains = hooks.iter().enumerate().map(|(i, hook)| Chain {
            name: ChainName::Port(format!("c{i}")),
            hook: Some((*hook, i as i32 * 10 - 5)),
            rules: vec![],
        });
        let table = Ruleset {
            family,
            table: "t".into(),
            sets: vec![],
            chains: chains.collect(),
        };
        let decoded = encode(&table, 1).state();
        for chain in &table.chains {
            let kernel = decoded.chains[&chain.name.to_string()].base.clone();
            assert_eq!(
                super::base_chain(family, chain),
                kernel,
                "{family:?} {chain:?}"
            );
        }
    }
}
