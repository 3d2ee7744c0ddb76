//! The drop audit: every drop of enforcer's tables is a `goto audit_<reason>` (a
//! [`Verdict::Deny`]), and each table holds one such chain per reason it uses. The chain sends
//! the packet to userspace through NFLOG, at most [`AuditSettings::per_second`] packets a
//! second (a token bucket the kernel keeps per chain, so a flood of one reason never crowds
//! out another's, nor costs the host more than that many messages), then drops it. The drop
//! is a rule of its own: a packet over the rate is dropped all the same. An egress drop toward
//! a managed address goes on from `audit_egress` to `audit_east_west` ([`split_east_west`]).

use crate::names::ChainName;
use crate::ruleset::{Action, Chain, DropReason, Match, Rule, Ruleset, SetContent, Verdict};

use super::rule;

/// How drops reach the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditSettings {
    /// Whether the audit chains log at all (without, each is its drop alone: for a kernel
    /// without NFLOG, or a host that wants no drop lines).
    pub enabled: bool,
    /// The NFLOG group the audit chains log to (and the agent reads).
    pub group: u16,
    /// Packets per second each audit chain logs at most (also its burst).
    pub per_second: u32,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            enabled: true,
            group: 7,
            per_second: 100,
        }
    }
}

/// The prefix an audit chain's NFLOG messages carry: `enforcer:<reason>`.
pub fn log_prefix(reason: DropReason) -> String {
    format!("{LOG_PREFIX}{}", reason.name())
}

/// The reason an NFLOG prefix names, when an audit chain wrote it.
pub fn logged_reason(prefix: &str) -> Option<DropReason> {
    prefix
        .strip_prefix(LOG_PREFIX)
        .and_then(|reason| DropReason::named(reason.trim_end_matches('\0')))
}

const LOG_PREFIX: &str = "enforcer:";

/// Appends to `table` the audit chain of every reason its rules and maps deny for that it
/// does not hold yet.
pub(super) fn attach(settings: &AuditSettings, table: &mut Ruleset) {
    let mut used: Vec<DropReason> = Vec::new();
    let mut note = |verdict: &Verdict| {
        if let Verdict::Deny(reason) = verdict {
            used.push(*reason);
        }
    };
    for rule in table.chains.iter().flat_map(|c| &c.rules) {
        if let Action::Verdict(verdict) = &rule.action {
            note(verdict);
        }
    }
    for set in &table.sets {
        match &set.content {
            SetContent::VerdictMap(map) => map.values().for_each(&mut note),
            SetContent::InterfaceVerdictMap(map) => map.values().for_each(&mut note),
            SetContent::InterfaceAddressVerdictMap(map) => map.values().for_each(&mut note),
            _ => {}
        }
    }
    used.sort();
    used.dedup();
    for reason in used {
        let name = ChainName::Audit(reason);
        if table.chain(&name).is_none() {
            table.chains.push(audit_chain(settings, reason));
        }
    }
}

/// Gives east-west its own audit chain (and so its own bucket: a flood of denied egress must
/// not hide an attempt between containers): `audit_egress` first sends a packet whose
/// destination matches one of `toward_managed` (one match per managed prefix and address
/// set) to `audit_east_west`. The per-subnet drop that sent it keeps counting it.
pub(super) fn split_east_west(
    settings: &AuditSettings,
    table: &mut Ruleset,
    toward_managed: Vec<Match>,
) {
    let Some(egress) = table
        .chains
        .iter_mut()
        .find(|c| c.name == ChainName::Audit(DropReason::Egress))
    else {
        return;
    };
    let dispatch = toward_managed.into_iter().map(|managed| {
        rule(
            vec![managed],
            Verdict::Deny(DropReason::EastWest),
            "toward a managed address: east-west, audited apart",
        )
    });
    egress.rules.splice(0..0, dispatch.collect::<Vec<_>>());
    attach(settings, table);
}

fn audit_chain(settings: &AuditSettings, reason: DropReason) -> Chain {
    let rate = settings.per_second;
    let log = Rule {
        matches: vec![Match::Limit {
            per_second: rate,
            burst: rate,
        }],
        counter: false,
        action: Action::Log {
            group: settings.group,
            prefix: log_prefix(reason),
        },
        comment: format!("to the drop audit, at most {rate} a second"),
    };
    let mut rules = vec![rule(vec![], Verdict::Drop, "dropped, logged or not")];
    if settings.enabled {
        rules.insert(0, log);
    }
    Chain {
        name: ChainName::Audit(reason),
        hook: None,
        rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::TableFamily;

    fn table(rules: Vec<Rule>) -> Ruleset {
        Ruleset {
            family: TableFamily::Inet,
            table: "t".into(),
            sets: vec![],
            chains: vec![Chain {
                name: ChainName::Forward,
                hook: None,
                rules,
            }],
        }
    }

    #[test]
    fn each_reason_denied_gets_one_chain_once() {
        let deny = |reason| rule(vec![], Verdict::Deny(reason), "");
        let mut t = table(vec![
            deny(DropReason::Host),
            deny(DropReason::Egress),
            deny(DropReason::Host),
        ]);
        let settings = AuditSettings::default();
        attach(&settings, &mut t);
        attach(&settings, &mut t);
        let names: Vec<String> = t.chains.iter().map(|c| c.name.to_string()).collect();
        assert_eq!(names, ["forward", "audit_egress", "audit_host"]);
        let audit = t.chain(&ChainName::Audit(DropReason::Host)).unwrap();
        assert_eq!(
            audit.rules[0].action,
            Action::Log {
                group: 7,
                prefix: "enforcer:host".into()
            }
        );
        assert_eq!(audit.rules[1].action, Action::Verdict(Verdict::Drop));
    }

    #[test]
    fn east_west_leaves_audit_egress_for_a_chain_of_its_own() {
        let mut t = table(vec![rule(vec![], Verdict::Deny(DropReason::Egress), "")]);
        let settings = AuditSettings::default();
        attach(&settings, &mut t);
        let toward = Match::Address(
            crate::ruleset::Direction::Destination,
            "10.0.0.0/24".parse().unwrap(),
        );
        split_east_west(&settings, &mut t, vec![toward.clone()]);
        let egress = t.chain(&ChainName::Audit(DropReason::Egress)).unwrap();
        assert_eq!(egress.rules[0].matches, [toward]);
        assert_eq!(
            egress.rules[0].action,
            Action::Verdict(Verdict::Deny(DropReason::EastWest))
        );
        let east_west = t.chain(&ChainName::Audit(DropReason::EastWest)).unwrap();
        assert_eq!(
            east_west.rules[0].action,
            Action::Log {
                group: 7,
                prefix: "enforcer:east_west".into()
            }
        );
    }

    #[test]
    fn without_the_audit_each_chain_only_drops() {
        let mut t = table(vec![rule(vec![], Verdict::Deny(DropReason::Egress), "")]);
        let settings = AuditSettings {
            enabled: false,
            ..AuditSettings::default()
        };
        attach(&settings, &mut t);
        let audit = t.chain(&ChainName::Audit(DropReason::Egress)).unwrap();
        assert_eq!(audit.rules.len(), 1);
        assert_eq!(audit.rules[0].action, Action::Verdict(Verdict::Drop));
    }

    #[test]
    fn a_table_that_denies_nothing_has_no_audit_chain() {
        let mut t = table(vec![rule(vec![], Verdict::Accept, "")]);
        attach(&AuditSettings::default(), &mut t);
        assert_eq!(t.chains.len(), 1);
    }

    #[test]
    fn prefixes_name_their_reason_and_nothing_else_is_one() {
        for reason in DropReason::ALL {
            assert_eq!(logged_reason(&log_prefix(reason)), Some(reason));
        }
        assert_eq!(logged_reason("enforcer:host\0"), Some(DropReason::Host));
        assert_eq!(logged_reason("other:host"), None);
        assert_eq!(logged_reason("enforcer:nothing"), None);
    }
}
