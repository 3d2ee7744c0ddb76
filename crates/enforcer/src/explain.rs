//! `enforcer explain SRC DST SERVICE`: whether the table planned from the policy and the
//! Docker state last enforced (the state file's; the static policy alone without one) lets
//! the first packet of a new connection through, which rule of which chain decides, and the
//! policy entry behind that rule with its line in the file. Evaluated on the model
//! ([`crate::judge`]), so it reads neither the kernel nor Docker; the kernel tests check its
//! answers against real packets.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::{bail, Context, Result};
use enforcer_core::docker::classify_after;
use enforcer_core::evaluate::Fate;
use enforcer_core::explain::entry;
use enforcer_core::planner::plan_tables;
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
    let none = Default::default();
    let docker = state.as_ref().map_or(&none, |s| &s.docker);
    let enforced = state
        .as_ref()
        .map(|s| s.enforced_networks.clone())
        .unwrap_or_default();
    let bound = state.as_ref().map_or(&[][..], |s| s.bound_ports.as_slice());
    let classified = classify_after(policy, docker, &enforced);
    let (tables, _, _) = plan_tables(policy, &classified, docker, &[], bound);
    let topology = &classified.topology;
    let names = Names::of(topology, docker);
    let (dst_address, dst_name) = names.resolve(dst, None)?;
    let (src_address, src_name) = names.resolve(src, Some(dst_address))?;
    let interfaces = Interfaces::of(topology, docker);
    let local = local_addresses().context("reading the host's addresses")?;
    let judge = Judge {
        inet: &tables.inet,
        interfaces: &interfaces,
        local: &local,
    };
    let target = SocketAddr::new(dst_address, service.port);
    let judged = judge.judge(src_address, target, service.protocol);
    let decided_by = entry(topology, &judged.decision, &judged.packet);
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

    /// `text` as an address (with the name that holds it, if any), or the address of the
    /// name `text`: the one of `toward`'s family that shares the most leading bits with it
    /// (its address on the same network), its first IPv4 one without `toward`.
    fn resolve(&self, text: &str, toward: Option<IpAddr>) -> Result<(IpAddr, Option<String>)> {
        if let Ok(address) = text.parse::<IpAddr>() {
            let name = self
                .0
                .iter()
                .find(|(_, addresses)| addresses.contains(&address))
                .map(|(name, _)| name.clone());
            return Ok((address, name));
        }
        let Some((name, addresses)) = self.0.iter().find(|(name, _)| name == text) else {
            bail!(
                "`{text}` is neither an address nor the name of a container (in the state file), \
                 proxy or member (in the policy)"
            );
        };
        let chosen = match toward {
            Some(toward) => addresses
                .iter()
                .filter(|a| a.is_ipv4() == toward.is_ipv4())
                .max_by_key(|a| shared_bits(**a, toward)),
            None => addresses.iter().find(|a| a.is_ipv4()).or(addresses.first()),
        };
        match chosen {
            Some(address) => Ok((*address, Some(name.clone()))),
            None => bail!("`{text}` has no address of the other side's family"),
        }
    }
}

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
        let resolved = |text, toward: Option<&str>| {
            let toward = toward.map(|t| t.parse().unwrap());
            names.resolve(text, toward).map(|(a, n)| (a.to_string(), n))
        };
        let proxy = Some("proxy".to_string());
        assert_eq!(
            resolved("proxy", Some("10.102.0.9")).unwrap(),
            ("10.102.0.2".to_string(), proxy.clone())
        );
        assert_eq!(
            resolved("proxy", Some("fd00:101::5")).unwrap(),
            ("fd00:101::2".to_string(), proxy.clone())
        );
        assert_eq!(
            resolved("proxy", None).unwrap(),
            ("10.101.0.2".to_string(), proxy.clone())
        );
        assert_eq!(
            resolved("10.102.0.2", None).unwrap(),
            ("10.102.0.2".to_string(), proxy)
        );
        assert_eq!(
            resolved("192.0.2.1", None).unwrap(),
            ("192.0.2.1".to_string(), None)
        );
        let unknown = resolved("nobody", None).unwrap_err().to_string();
        assert!(
            unknown.contains("`nobody` is neither an address nor the name"),
            "{unknown}"
        );
    }
}
