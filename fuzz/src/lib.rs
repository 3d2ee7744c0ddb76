//! What the fuzz targets check, shared by both targets.
//!
//! Each input becomes a [`Case`] (a planned ruleset and the topology it came from). [`check`]
//! renders and encodes it and scans the `nft` text: an encode error, a panic, or any string
//! that reaches the text outside the places enforcer validated is a finding. With
//! `ENFORCER_FUZZ_NFT_REPORT` set (the corpus check of `run.sh`), [`run`] also loads each
//! distinct script into the kernel of the private network namespace it runs in
//! ([`nft_check`]) and writes every failure, with its input, to that directory instead of
//! stopping at the first.

mod nft_check;
mod scan;
mod shaped;

use enforcer_core::docker::{classify, DockerState};
use enforcer_core::planner::{plan, plan_tables};
use enforcer_core::policy::Policy;
use enforcer_core::ports::{BridgePort, MacAddr};
use enforcer_core::render;
use enforcer_core::ruleset::Tables;
use enforcer_core::topology::Topology;
use enforcer_nft::Desired;

pub use nft_check::nft_check;
pub use scan::scan;

/// One planned input: the tables, and the topology whose names they may contain.
pub struct Case {
    /// What the planner made.
    pub tables: Tables,
    /// What it was planned from (its proxy names are the only names allowed in chain names).
    pub topology: Topology,
}

/// The policy target's input: UTF-8 text parsed as a policy file, planned when it parses.
pub fn policy_case(data: &[u8]) -> Option<Case> {
    let text = std::str::from_utf8(data).ok()?;
    let policy = Policy::parse(text, "fuzz.toml").ok()?;
    Some(Case {
        tables: Tables::from(plan(&policy.table, &policy.static_topology)),
        topology: policy.static_topology,
    })
}

/// The policies a Docker state is classified under: the embedded default, and a static topology
/// with Docker on (so Docker's networks also meet static networks and proxies).
pub fn docker_policies() -> [Policy; 2] {
    let mixed =
        include_str!("../../rules/threegate.toml").replace("enabled = false", "enabled = true");
    let mixed = Policy::parse(&mixed, "threegate-with-docker.toml")
        .expect("rules/threegate.toml with Docker on is a valid policy");
    [Policy::embedded(), mixed]
}

/// The Docker target's input: the JSON of a [`DockerState`] (the state file's form) or, when
/// it is not JSON of one, a state shaped from the bytes (see [`shaped`]); classified and planned
/// under each policy as the agent does (`desired_table` in crates/enforcer/src/run.rs), with
/// the bridge ports [`ports_of`] makes for it.
pub fn docker_cases(data: &[u8], policies: &[Policy]) -> Vec<Case> {
    let state = serde_json::from_slice::<DockerState>(data).unwrap_or_else(|_| shaped::state(data));
    let ports = ports_of(&state);
    policies
        .iter()
        .map(|policy| {
            let classified = classify(policy, &state);
            let (tables, _, _) = plan_tables(policy, &classified, &state, &ports, &[]);
            Case {
                tables,
                topology: classified.topology,
            }
        })
        .collect()
}

/// The bridge ports a host running `state` could have: one port per endpoint on a network with
/// a bridge, its peer holding the endpoint's MAC when that parses (else none), and a stray port
/// on each such bridge.
fn ports_of(state: &DockerState) -> Vec<BridgePort> {
    let mut ports = Vec::new();
    for (index, container) in state.containers.values().enumerate() {
        for (slot, endpoint) in container.endpoints.iter().enumerate() {
            let Some(bridge) = state
                .networks
                .get(&endpoint.network_id)
                .and_then(|n| n.bridge())
            else {
                continue;
            };
            ports.push(BridgePort {
                bridge: bridge.clone(),
                name: format!("veth{index:x}n{slot}"),
                peer_mac: endpoint.mac.parse::<MacAddr>().ok(),
            });
        }
    }
    for (index, network) in state.networks.values().enumerate() {
        if let Some(bridge) = network.bridge() {
            ports.push(BridgePort {
                bridge,
                name: format!("vethstray{index:x}"),
                peer_mac: None,
            });
        }
    }
    ports
}

/// Renders and encodes `case` and scans the text; returns the script, or what is wrong.
pub fn check(case: &Case) -> Result<String, String> {
    let script = render::tables_script(&case.tables);
    // Every table encodes (the writer has no refusal); what is checked is that each encoded
    // table holds exactly the planned chains and sets.
    let desired = Desired::new(&case.tables);
    for (ruleset, (_, state)) in case.tables.iter().zip(desired.states()) {
        let chains: Vec<String> = ruleset.chains.iter().map(|c| c.name.to_string()).collect();
        let sets: Vec<String> = ruleset.sets.iter().map(|s| s.name.to_string()).collect();
        if !state.chains.keys().eq(sorted(&chains)) || !state.sets.keys().eq(sorted(&sets)) {
            return Err(format!(
                "the encoded table {} {}'s chains {:?} and sets {:?} are not the ruleset's \
                 {chains:?} and {sets:?}",
                ruleset.family.name(),
                ruleset.table,
                state.chains.keys().collect::<Vec<_>>(),
                state.sets.keys().collect::<Vec<_>>()
            ));
        }
    }
    scan(&script, &case.tables.inet.table, &case.topology)?;
    Ok(script)
}

fn sorted(names: &[String]) -> Vec<&String> {
    let mut names: Vec<&String> = names.iter().collect();
    names.sort();
    names
}

/// The fuzz loop's body: panics on any finding, or (corpus check) records it with its input.
pub fn run(data: &[u8], cases: Vec<Case>) {
    let report = std::env::var_os("ENFORCER_FUZZ_NFT_REPORT");
    for case in cases {
        let outcome = check(&case).and_then(|script| match &report {
            Some(_) => nft_check(&case, &script),
            None => Ok(()),
        });
        match (outcome, &report) {
            (Ok(()), _) => {}
            (Err(finding), None) => panic!("{finding}"),
            (Err(finding), Some(dir)) => nft_check::record(dir.as_ref(), data, &finding),
        }
    }
}
