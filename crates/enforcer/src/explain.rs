//! `enforcer explain SRC DST SERVICE`: whether the table planned from the policy and the
//! Docker state last enforced (the state file's; the static policy alone without one) lets
//! the first packet of a new connection through, which rule of which chain decides, and the
//! policy entry behind that rule with its line in the file. Evaluated on the model
//! ([`crate::judge`]), so it reads neither the kernel nor Docker; the kernel tests check its
//! answers against real packets.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::{bail, Context, Result};
use enforcer_core::evaluate::Fate;
use enforcer_core::explain::entry;
use enforcer_core::policy::Policy;
use enforcer_core::topology::{Service, Topology};
use serde::Serialize;

use crate::judge::{local_addresses, Interfaces, Judge};
use crate::state_file::StateFile;

/// The answer, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Answer {
    src: IpAddr,
    src_name: Option<String>,
    dst: IpAddr,
    dst_name: Option<String>,
    service: String,
    hook: &'static str,
    verdict: &'static str,
    chain: Option<String>,
    rule: Option<String>,
    entry: String,
    location: Option<String>,
}

/// Prints the answer for a new `service` connection from `src` to `dst` (each an address or
/// the name of a container, proxy or member); returns whether it is let through.
pub fn explain(
    policy: &Policy,
    state_path: &Path,
    (src, dst, service): (&str, &str, &str),
    json: bool,
) -> Result<bool> {
    let service: Service = service
        .parse()
        .map_err(|e: String| anyhow::anyhow!("service `{service}`: {e}"))?;
    let state = StateFile::load(state_path)?;
    if state.is_none() && policy.docker.enabled {
        eprintln!(
            "enforcer: no state file at {}: explaining from the static policy alone, as if Docker \
             had no networks (give --state-file, or run it where the daemon runs)",
            state_path.display()
        );
    }
    let (classified, tables) = StateFile::planned(policy, state.as_ref());
    let none = Default::default();
    let docker = state.as_ref().map_or(&none, |s| &s.docker);
    let topology = &classified.topology;
    let names = Names::of(topology, docker);
    let ((src_address, src_name), (dst_address, dst_name)) = names.pair(src, dst)?;
    let interfaces = Interfaces::of(topology, docker);
    let local = local_addresses().context("reading the host's addresses")?;
    let judge = Judge {
        inet: &tables.inet,
        interfaces: &interfaces,
        local: &local,
    };
    let target = SocketAddr::new(dst_address, service.port);
    let judged = judge.judge(src_address, target, service.protocol);
    let decided_by = entry(topology, judged.hook, &judged.decision, &judged.packet);
    let passed = judged.decision.fate == Fate::Passed;
    let answer = Answer {
        src: src_address,
        src_name,
        dst: dst_address,
        dst_name,
        service: service.to_string(),
        hook: judged.hook.name(),
        verdict: if passed { "allowed" } else { "dropped" },
        chain: judged.decision.chain.map(ToString::to_string),
        rule: judged.decision.rule.map(|r| r.comment.clone()),
        entry: decided_by.to_string(),
        location: decided_by
            .location(&policy.entries)
            .map(|at| at.to_string()),
    };
    if json {
        println!("{}", serde_json::to_string(&answer)?);
    } else {
        print!("{}", human(&answer));
    }
    Ok(passed)
}

fn human(answer: &Answer) -> String {
    let named = |address: IpAddr, name: &Option<String>| match name {
        Some(name) => format!("{name} ({address})"),
        None => address.to_string(),
    };
    let mut out = format!(
        "{} {} -> {}: {}\n  hook:   {}\n",
        answer.service,
        named(answer.src, &answer.src_name),
        named(answer.dst, &answer.dst_name),
        answer.verdict,
        answer.hook
    );
    match (&answer.rule, &answer.chain) {
        (Some(rule), Some(chain)) => {
            out.push_str(&format!("  rule:   \"{rule}\" (chain {chain})\n"))
        }
        _ => out.push_str("  rule:   none (the base chain's policy: accept)\n"),
    }
    match &answer.location {
        Some(at) => out.push_str(&format!("  policy: {} ({at})\n", answer.entry)),
        None => out.push_str(&format!("  policy: {}\n", answer.entry)),
    }
    out
}

/// The names an address may be given by: containers of the Docker state, the policy's
/// proxies and members.
struct Names(Vec<(String, Vec<IpAddr>)>);

impl Names {
    fn of(topology: &Topology, docker: &enforcer_core::docker::DockerState) -> Names {
        let mut names: Vec<(String, Vec<IpAddr>)> = Vec::new();
        for container in docker.containers.values() {
            let addresses = container
                .endpoints
                .iter()
                .flat_map(|e| [&e.ipv4, &e.ipv6])
                .filter_map(|text| text.parse().ok())
                .collect();
            names.push((
                container.name.trim_start_matches('/').to_string(),
                addresses,
            ));
        }
        for proxy in topology.proxies() {
            names.push((proxy.name.clone(), proxy.addresses.clone()));
        }
        for member in topology.members() {
            names.push((member.name.clone(), member.addresses.clone()));
        }
        Names(names)
    }

    /// The addresses `text` stands for: itself, or the addresses of the name `text`; with the
    /// name that holds them, if any.
    fn candidates(&self, text: &str) -> Result<(Vec<IpAddr>, Option<String>)> {
        if let Ok(address) = text.parse::<IpAddr>() {
            let name = self
                .0
                .iter()
                .find(|(_, addresses)| addresses.contains(&address))
                .map(|(name, _)| name.clone());
            return Ok((vec![address], name));
        }
        match self.0.iter().find(|(name, _)| name == text) {
            Some((name, addresses)) if !addresses.is_empty() => {
                Ok((addresses.clone(), Some(name.clone())))
            }
            Some(_) => bail!("`{text}` has no address"),
            None => bail!(
                "`{text}` is neither an address nor the name of a container (in the state file), \
                 proxy or member (in the policy)"
            ),
        }
    }

    /// The source and destination `src` and `dst` stand for (each an address, with the name
    /// that holds it, if any): of one family, and of the candidates of a name the pair that
    /// shares the most leading bits (a name's address on the other side's network), IPv4 pairs
    /// first, ties in the order the names list their addresses.
    fn pair(&self, src: &str, dst: &str) -> Result<(Named, Named)> {
        let (sources, src_name) = self.candidates(src)?;
        let (targets, dst_name) = self.candidates(dst)?;
        // The first pair that is IPv4 if any is, then shares the most leading bits.
        let best = sources
            .iter()
            .flat_map(|&s| targets.iter().map(move |&d| (s, d)))
            .filter(|(s, d)| s.is_ipv4() == d.is_ipv4())
            .min_by_key(|&(s, d)| std::cmp::Reverse((s.is_ipv4(), shared_bits(s, d))));
        let Some((s, d)) = best else {
            bail!(
                "`{src}` and `{dst}` have no addresses of one family: a packet is IPv4 or IPv6 on \
                 both sides"
            );
        };
        Ok(((s, src_name), (d, dst_name)))
    }
}

/// An address and the name that holds it.
type Named = (IpAddr, Option<String>);

/// How many leading bits two addresses of one family share.
fn shared_bits(a: IpAddr, b: IpAddr) -> u32 {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)).leading_zeros(),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)).leading_zeros(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        let addresses = ["10.101.0.2", "10.102.0.2", "fd00:101::2"];
        Names(vec![(
            "proxy".into(),
            addresses.iter().map(|a| a.parse().unwrap()).collect(),
        )])
    }

    #[test]
    fn a_name_gives_its_address_on_the_other_sides_network_and_family() {
        let names = names();
        let pair = |src, dst| {
            names
                .pair(src, dst)
                .map(|((s, sn), (d, dn))| (s.to_string(), sn, d.to_string(), dn))
        };
        let proxy = Some("proxy".to_string());
        let (s, sn, d, dn) = pair("10.102.0.9", "proxy").unwrap();
        assert_eq!(
            (s.as_str(), sn, d.as_str(), dn),
            ("10.102.0.9", None, "10.102.0.2", proxy.clone())
        );
        let (_, _, d, _) = pair("fd00:101::5", "proxy").unwrap();
        assert_eq!(d, "fd00:101::2", "the other side's family");
        let (s, _, _, _) = pair("proxy", "203.0.113.10").unwrap();
        assert_eq!(s, "10.101.0.2", "a tie: the first listed");
        let (s, sn, _, _) = pair("10.102.0.2", "192.0.2.1").unwrap();
        assert_eq!((s.as_str(), sn), ("10.102.0.2", proxy));
        let mixed = pair("fd00:101::5", "192.0.2.1").unwrap_err().to_string();
        assert!(mixed.contains("no addresses of one family"), "{mixed}");
        let unknown = pair("nobody", "192.0.2.1").unwrap_err().to_string();
        assert!(
            unknown.contains("`nobody` is neither an address nor the name"),
            "{unknown}"
        );
    }
}
