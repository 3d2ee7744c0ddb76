//! Quarantined interfaces (`[quarantine] interfaces`): no packet enters or leaves an interface
//! whose name matches a pattern, in any table's hook, from the moment the interface exists
//! (the kernel matches names, so no agent has to see the interface first).
//!
//! Every table gets the same three pieces: rules at the top of its base chains that send such
//! packets to `quarantine_in` or `quarantine_out`, and those two chains, which record the
//! interface in the table's dynamic `quarantined` set (one counter per interface) and then
//! drop. The drop is a rule of its own, so a full set (the record fails) still drops.

use crate::names::{ChainName, SetName};
use crate::ruleset::{
    Action, Chain, DropReason, Hook, Match, Rule, Ruleset, Set, SetContent, SetKey, Side,
    TableFamily, Verdict,
};

use super::{rule, TableSettings};

/// Most interfaces the `quarantined` set records; once full, packets are still dropped, and
/// counted by the drop rule only.
pub const RECORDED_INTERFACES: u32 = 65_535;

/// The inet table with quarantine: `forward` and `input` start with the dispatch, an `output`
/// base chain holds it for what the host sends.
pub(super) fn guard_inet(settings: &TableSettings, inet: &mut Ruleset) {
    let patterns = &settings.quarantine;
    if patterns.is_empty() {
        return;
    }
    for chain in &mut inet.chains {
        let sides: &[Side] = match chain.name {
            ChainName::Forward => &[Side::Input, Side::Output],
            ChainName::Input => &[Side::Input],
            _ => continue,
        };
        let first: Vec<Rule> = sides.iter().flat_map(|s| dispatch(patterns, *s)).collect();
        chain.rules.splice(0..0, first);
    }
    let bases = inet.chains.iter().take_while(|c| c.hook.is_some()).count();
    let output = base_chain(ChainName::Output, Hook::Output, settings.output_priority);
    inet.chains
        .insert(bases, with_dispatch(output, patterns, &[Side::Output]));
    append_objects(patterns, inet);
}

/// The bridge table with quarantine (`bridge` as planned, or a table of its own when no port
/// is guarded): frames from a quarantined port are dropped first in `prerouting` and in
/// `input` (link-local frames such as STP's, which a bridge with STP on takes in without
/// prerouting), frames toward one in `forward` (between ports) and `output` (from the host's
/// bridge device).
pub(super) fn guard_bridge(settings: &TableSettings, bridge: Option<Ruleset>) -> Option<Ruleset> {
    let patterns = &settings.quarantine;
    if patterns.is_empty() {
        return bridge;
    }
    let mut table = bridge.unwrap_or_else(|| Ruleset {
        family: TableFamily::Bridge,
        table: settings.name.clone(),
        sets: Vec::new(),
        chains: vec![base_chain(
            ChainName::Prerouting,
            Hook::Prerouting,
            settings.bridge_priority,
        )],
    });
    if let Some(prerouting) = table
        .chains
        .iter_mut()
        .find(|c| c.name == ChainName::Prerouting)
    {
        prerouting
            .rules
            .splice(0..0, dispatch(patterns, Side::Input).collect::<Vec<_>>());
    }
    let bases = table.chains.iter().take_while(|c| c.hook.is_some()).count();
    let guarded = |name, hook, side| {
        let chain = base_chain(name, hook, settings.bridge_priority);
        with_dispatch(chain, patterns, &[side])
    };
    let more = [
        guarded(ChainName::Input, Hook::Input, Side::Input),
        guarded(ChainName::Forward, Hook::Forward, Side::Output),
        guarded(ChainName::Output, Hook::Output, Side::Output),
    ];
    table.chains.splice(bases..bases, more);
    append_objects(patterns, &mut table);
    super::audit::attach(&settings.audit, &mut table);
    Some(table)
}

/// The arp table: ARP the host receives from or sends to a quarantined interface (no inet
/// hook sees ARP); `None` when nothing is quarantined.
pub(super) fn arp_table(settings: &TableSettings) -> Option<Ruleset> {
    let patterns = &settings.quarantine;
    if patterns.is_empty() {
        return None;
    }
    let input = base_chain(ChainName::Input, Hook::Input, settings.input_priority);
    let output = base_chain(ChainName::Output, Hook::Output, settings.output_priority);
    let mut table = Ruleset {
        family: TableFamily::Arp,
        table: settings.name.clone(),
        sets: Vec::new(),
        chains: vec![
            with_dispatch(input, patterns, &[Side::Input]),
            with_dispatch(output, patterns, &[Side::Output]),
        ],
    };
    append_objects(patterns, &mut table);
    super::audit::attach(&settings.audit, &mut table);
    Some(table)
}

fn base_chain(name: ChainName, hook: Hook, priority: i32) -> Chain {
    Chain {
        name,
        hook: Some((hook, priority)),
        rules: Vec::new(),
    }
}

fn with_dispatch(mut chain: Chain, patterns: &[String], sides: &[Side]) -> Chain {
    chain
        .rules
        .extend(sides.iter().flat_map(|s| dispatch(patterns, *s)));
    chain
}

fn append_objects(patterns: &[String], table: &mut Ruleset) {
    let (sets, chains) = objects(patterns);
    table.sets.extend(sets);
    table.chains.extend(chains);
}

/// The rules that send packets of a quarantined interface on `side` to its chain: one per
/// pattern, first in a base chain.
fn dispatch(patterns: &[String], side: Side) -> impl Iterator<Item = Rule> + '_ {
    patterns.iter().map(move |pattern| {
        let (matched, chain, comment) = match side {
            Side::Input => (
                Match::InputInterface(pattern.clone()),
                ChainName::QuarantineIn,
                "entered through a quarantined interface",
            ),
            Side::Output => (
                Match::OutputInterface(pattern.clone()),
                ChainName::QuarantineOut,
                "about to leave through a quarantined interface",
            ),
        };
        rule(vec![matched], Verdict::Jump(chain), comment)
    })
}

/// The `quarantined` set and the two chains that record and drop; nothing when no pattern is
/// quarantined.
fn objects(patterns: &[String]) -> (Vec<Set>, Vec<Chain>) {
    if patterns.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let set = Set {
        name: SetName::Quarantined,
        key: SetKey::InterfaceName,
        content: SetContent::Recorded(RECORDED_INTERFACES),
    };
    let chain = |name, side, what: &str| Chain {
        name,
        hook: None,
        rules: vec![
            Rule {
                matches: vec![],
                counter: false,
                action: Action::RecordInterface(side, SetName::Quarantined),
                comment: format!("counted per interface {what}"),
            },
            Rule {
                matches: vec![],
                counter: true,
                action: Action::Verdict(Verdict::Deny(DropReason::Quarantine)),
                comment: "a quarantined interface has no network at all".into(),
            },
        ],
    };
    let chains = vec![
        chain(ChainName::QuarantineIn, Side::Input, "it entered through"),
        chain(
            ChainName::QuarantineOut,
            Side::Output,
            "it was to leave through",
        ),
    ];
    (vec![set], chains)
}
