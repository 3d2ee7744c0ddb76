//! The reachability matrix measured: [`crate::spec::matrix`]'s flows turned into probes, run
//! all at once from the containers of a built ThreeGate, and reported.

use std::net::{IpAddr, SocketAddr};

use crate::host::Containers;
use crate::spec::matrix::flows;
use crate::{probe_here, Proto, PROBE_TIMEOUT};

/// One flow of the reachability matrix, with its addresses resolved.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Source container.
    pub from: &'static str,
    /// The source address the kernel picks.
    pub source: IpAddr,
    /// Transport.
    pub proto: Proto,
    /// Destination.
    pub target: SocketAddr,
    /// What the policy demands.
    pub allowed: bool,
    /// Why, for the report.
    pub what: String,
}

/// ThreeGate's reachability matrix, IPv4 and IPv6: every flow of the spec's rows.
pub fn threegate_matrix() -> Vec<Flow> {
    flows()
        .iter()
        .map(|flow| Flow {
            from: flow.from.name,
            source: flow.source(),
            proto: flow.service.proto,
            target: SocketAddr::new(flow.destination(), flow.service.port),
            allowed: flow.allowed(),
            what: flow.to_string(),
        })
        .collect()
}

/// Runs many probes at once; returns their results in order.
pub fn probe_all(host: &impl Containers, cases: &[(String, Proto, SocketAddr)]) -> Vec<bool> {
    let handles: Vec<_> = cases
        .iter()
        .map(|(from, proto, target)| {
            let (proto, target) = (*proto, *target);
            host.namespace(from)
                .spawn(move || probe_here(proto, target, PROBE_TIMEOUT))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("probe thread"))
        .collect()
}

/// Probes every flow; returns (flow, observed open) pairs.
pub fn measure(host: &impl Containers, flows: &[Flow]) -> Vec<(Flow, bool)> {
    let cases: Vec<(String, Proto, SocketAddr)> = flows
        .iter()
        .map(|f| (f.from.to_string(), f.proto, f.target))
        .collect();
    let results = probe_all(host, &cases);
    flows.iter().cloned().zip(results).collect()
}

/// The flows whose observation differs from the policy.
pub fn mismatches(results: &[(Flow, bool)]) -> Vec<&Flow> {
    results
        .iter()
        .filter(|(flow, open)| *open != flow.allowed)
        .map(|(flow, _)| flow)
        .collect()
}

/// A printable matrix; rows whose observation differs from the policy are marked.
pub fn report(results: &[(Flow, bool)]) -> String {
    let mut out = String::new();
    for (flow, open) in results {
        let observed = if *open { "allowed" } else { "blocked" };
        let mark = if *open == flow.allowed { "ok " } else { "BAD" };
        out.push_str(&format!(
            "{mark} {observed:8} {:?} {:<45} {}\n",
            flow.proto, flow.target, flow.what
        ));
    }
    out
}
