//! A [`DockerState`] shaped from raw bytes, for the inputs of the Docker target that are not
//! JSON. Random JSON rarely parses (7% of a 5-minute corpus did), and what does rarely holds a
//! proxy whose endpoint names a managed network and whose address lies in its subnet; here
//! every input is a state, drawn from a small space (a few networks in 10.0-3.0-3.0/x and
//! fd00:0-3:0-3::/x, names that collide, the labels and options the policy reads) so that
//! overlaps, conflicts with the static topology and proxies on enforced networks are common,
//! while any field can still be an arbitrary string.

use std::collections::BTreeMap;

use enforcer_core::docker::{
    DockerContainer, DockerEndpoint, DockerNetwork, DockerState, BRIDGE_NAME_OPTION, GATEWAY_BRIDGE,
    INGRESS_SANDBOX,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};

const NAMES: &[&str] = &["llmnet", "egressnet", "a", "b-second", "proxy", "bridge"];
const DRIVERS: &[&str] = &["bridge", "bridge", "bridge", "overlay", "macvlan"];
const LABEL_VALUES: &[&str] = &["true", "true", "false", "TRUE", "yes"];
const BRIDGES: &[&str] = &[
    "docker0",
    "br-llm",
    "agents0",
    "br-0123456789ab",
    "br\\",
    GATEWAY_BRIDGE,
];
const V4_PREFIXES: &[u8] = &[8, 16, 24, 24, 28, 32];
const V6_PREFIXES: &[u8] = &[16, 48, 64, 64, 120, 128];

/// The state drawn from `data` (never fails: missing bytes read as zeros).
pub fn state(data: &[u8]) -> DockerState {
    let mut u = Unstructured::new(data);
    draw(&mut u).unwrap_or_default()
}

fn draw(u: &mut Unstructured<'_>) -> Result<DockerState> {
    let mut networks = BTreeMap::new();
    for index in 0..u.int_in_range(0..=4)? {
        let network = network(u, index)?;
        networks.insert(network.id.clone(), network);
    }
    let ids: Vec<String> = networks.keys().cloned().collect();
    let mut containers = BTreeMap::new();
    for index in 0..u.int_in_range(0..=3)? {
        let container = container(u, index, &ids)?;
        containers.insert(container.id.clone(), container);
    }
    let mut state = DockerState {
        networks,
        containers,
        ..DockerState::default()
    };
    if let Some(gateway) = state.gateway_network().map(|n| n.id.clone()) {
        let keys: Vec<String> = state.containers.keys().cloned().collect();
        let mut endpoints = BTreeMap::new();
        for _ in 0..u.int_in_range(0..=3)? {
            let key = match keys.is_empty() || u.ratio(1, 4)? {
                true => pick(
                    u,
                    &[
                        INGRESS_SANDBOX,
                        &"f".repeat(64),
                        &format!("ep-{}", "e".repeat(64)),
                    ],
                )?,
                false => u.choose(&keys)?.clone(),
            };
            endpoints.insert(key, endpoint(u, gateway.clone())?);
        }
        state.set_gateway_endpoints(&gateway, endpoints);
    }
    Ok(state)
}

/// One of `choices`, or (one time in eight) an arbitrary string.
fn pick(u: &mut Unstructured<'_>, choices: &[&str]) -> Result<String> {
    if u.ratio(1, 8)? {
        return u.arbitrary();
    }
    Ok(u.choose(choices)?.to_string())
}

fn id(u: &mut Unstructured<'_>, tag: char, index: u8) -> Result<String> {
    if u.ratio(1, 10)? {
        return u.arbitrary();
    }
    Ok(format!("{tag}{index:x}{}", "0".repeat(62)))
}

fn network(u: &mut Unstructured<'_>, index: u8) -> Result<DockerNetwork> {
    let mut labels = BTreeMap::new();
    if u.arbitrary()? {
        labels.insert("enforcer.managed".to_string(), pick(u, LABEL_VALUES)?);
    }
    let mut options = BTreeMap::new();
    if u.ratio(1, 3)? {
        options.insert(BRIDGE_NAME_OPTION.to_string(), pick(u, BRIDGES)?);
    }
    let mut subnets = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        subnets.push(subnet(u)?);
    }
    Ok(DockerNetwork {
        id: id(u, 'a', index)?,
        name: pick(u, NAMES)?,
        driver: pick(u, DRIVERS)?,
        internal: u.arbitrary()?,
        labels,
        options,
        subnets,
    })
}

fn subnet(u: &mut Unstructured<'_>) -> Result<String> {
    let (a, b): (u8, u8) = (u.int_in_range(0..=3)?, u.int_in_range(0..=3)?);
    Ok(match u.int_in_range(0..=8)? {
        0 => u.arbitrary()?,
        1..=4 => format!("10.{a}.{b}.0/{}", u.choose(V4_PREFIXES)?),
        _ => format!("fd00:{a}:{b}::/{}", u.choose(V6_PREFIXES)?),
    })
}

fn container(u: &mut Unstructured<'_>, index: u8, networks: &[String]) -> Result<DockerContainer> {
    let mut labels = BTreeMap::new();
    if !u.ratio(1, 5)? {
        labels.insert("enforcer.role".to_string(), pick(u, &["egress-proxy"])?);
    }
    let mut endpoints = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let network_id = match networks.is_empty() || u.ratio(1, 10)? {
            true => u.arbitrary()?,
            false => u.choose(networks)?.clone(),
        };
        endpoints.push(endpoint(u, network_id)?);
    }
    Ok(DockerContainer {
        id: id(u, 'c', index)?,
        name: pick(u, &["proxy", "px", "core"])?,
        labels,
        endpoints,
    })
}

/// An endpoint on `network_id`, its addresses near the drawn subnets (or arbitrary strings).
fn endpoint(u: &mut Unstructured<'_>, network_id: String) -> Result<DockerEndpoint> {
    let (a, b, host): (u8, u8, u8) = (
        u.int_in_range(0..=3)?,
        u.int_in_range(0..=3)?,
        u.int_in_range(0..=3)?,
    );
    let ipv4 = match u.int_in_range(0..=5)? {
        0 => String::new(),
        1 => u.arbitrary()?,
        _ => format!("10.{a}.{b}.{host}"),
    };
    let ipv6 = match u.int_in_range(0..=3)? {
        0 | 1 => String::new(),
        2 => u.arbitrary()?,
        _ => format!("fd00:{a}:{b}::{host}"),
    };
    let mac = match u.int_in_range(0..=3)? {
        0 => String::new(),
        1 => u.arbitrary()?,
        _ => format!("02:42:0a:{a:02x}:{b:02x}:{host:02x}"),
    };
    Ok(DockerEndpoint {
        network_id,
        ipv4,
        ipv6,
        mac,
    })
}
