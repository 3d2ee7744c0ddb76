//! The operator's policy: a TOML file (or the embedded default, `rules/default.toml`).
//!
//! Every key is optional; a missing key takes the value of the embedded default. Unknown keys,
//! bad prefixes, bad services and every [`Topology`] rule violation are reported with the file,
//! line and column of the offending value.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use crate::planner::TableSettings;
use crate::topology::{Service, Topology};

/// The embedded default policy (`rules/default.toml`), used when no file is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../../rules/default.toml");
/// The name shown for the embedded default in messages.
pub const EMBEDDED_NAME: &str = "<embedded default policy>";

/// What happens to traffic from a Docker bridge whose network is not classified yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownNetworks {
    /// Dropped until the agent has classified the network (no window for new networks).
    Deny,
    /// Passed: a new managed network is open until its event is processed.
    Allow,
}

/// How Docker objects are classified (used by the Docker watcher).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSettings {
    /// Whether Docker is watched at all; when false only the static entries are enforced.
    pub enabled: bool,
    /// Treatment of Docker bridges not classified yet.
    pub unknown_networks: UnknownNetworks,
    /// Interface names of Docker bridges (a trailing `*` matches any suffix).
    pub bridge_patterns: Vec<String>,
    /// Networks with `Internal: true` are managed.
    pub manage_internal: bool,
    /// A network carrying this label with value `true` is managed.
    pub managed_label: String,
    /// Label whose value gives a container's role.
    pub role_label: String,
    /// Role value that makes a container an egress proxy.
    pub proxy_role: String,
    /// A network carrying this label with value `deny` lets its containers reach each other
    /// only as their roles allow.
    pub east_west_label: String,
}

/// What a proxy may do unless its own entry says otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyDefaults {
    /// Services a proxy may open toward non-managed destinations.
    pub services: BTreeSet<Service>,
    /// When not empty, DNS (port 53) only toward these resolvers.
    pub dns_servers: Vec<IpAddr>,
}

/// A parsed, validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Table name and hook priorities.
    pub table: TableSettings,
    /// Docker classification.
    pub docker: DockerSettings,
    /// Proxy defaults.
    pub proxy_defaults: ProxyDefaults,
    /// Networks, proxies and members declared in the file, and the roles; enforced with or
    /// without Docker.
    pub static_topology: Topology,
    /// Where the file writes each named entry.
    pub entries: Entries,
}

/// A policy that cannot be used; nothing is applied when one is reported.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why, and what to do.
        reason: String,
    },
    /// The file is wrong at a precise place.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file (or [`EMBEDDED_NAME`]).
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and what to do.
        message: String,
    },
}

mod entries;
mod file;
mod raw;
#[cfg(test)]
mod tests;

pub use entries::{Entries, Location};
use raw::Source;

impl Policy {
    /// The embedded default policy.
    pub fn embedded() -> Policy {
        Policy::parse(EMBEDDED_DEFAULT, EMBEDDED_NAME)
            .expect("the embedded default policy is valid")
    }

    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        Policy::read(path).map(|(policy, _)| policy)
    }

    /// Reads and validates a policy file, and returns its text too (the agent keeps the last
    /// good one, to enforce it again should the file turn bad).
    pub fn read(path: &Path) -> Result<(Policy, String), PolicyError> {
        let shown = path.display().to_string();
        let bytes = file::read(path, &shown)?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
            let source = Source {
                path: &shown,
                text: valid,
            };
            source.error(
                Some(valid.len()..valid.len()),
                "this byte is not UTF-8: a policy file is UTF-8 text",
            )
        })?;
        Ok((Policy::parse(text, &shown)?, text.to_string()))
    }

    /// Parses and validates policy text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Policy, PolicyError> {
        let source = Source { path, text };
        if !has_content(text) {
            return Err(source.error(
                None,
                "the policy is empty (nothing but blank lines and comments), which is how a \
                 truncated write looks: refused; to enforce the embedded default, give no \
                 --config, or copy rules/default.toml",
            ));
        }
        source.policy()
    }
}

/// Whether `text` holds anything but blank lines and comments.
fn has_content(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim_start_matches('\u{feff}').trim();
        !line.is_empty() && !line.starts_with('#')
    })
}

impl Policy {
    /// What `new` takes away that `self` had: static networks and proxies, a proxy's or the
    /// defaults' services, a static proxy's declared MACs, roles and their egress rules (a rule
    /// changed counts as taken away), static members, Docker watching and what makes a Docker network managed, the deny of
    /// unclassified bridges. A reload that removes something is logged at WARN with this list.
    pub fn removals(&self, new: &Policy) -> Vec<String> {
        use crate::diff::{diff, Change};
        let mut removed = Vec::new();
        let networks = |p: &Policy| {
            p.static_topology
                .networks()
                .iter()
                .map(|n| (n.name.clone(), ()))
                .collect::<Vec<_>>()
        };
        for change in diff(networks(self), networks(new)) {
            if let Change::Removed(name, ()) = change {
                removed.push(format!("static network {name}"));
            }
        }
        let proxies = |p: &Policy| {
            p.static_topology
                .proxies()
                .iter()
                .map(|x| (x.name.clone(), (x.services.clone(), x.macs.clone())))
                .collect::<Vec<_>>()
        };
        for change in diff(proxies(self), proxies(new)) {
            match change {
                Change::Removed(name, _) => removed.push(format!("static proxy {name}")),
                Change::Changed { key, old, new } => {
                    for service in old.0.difference(&new.0) {
                        removed.push(format!("{service} of proxy {key}"));
                    }
                    for mac in old.1.iter().filter(|m| !new.1.contains(m)) {
                        removed.push(format!("MAC {mac} of proxy {key} (its port's binding)"));
                    }
                }
                Change::Added(..) => {}
            }
        }
        let (old_roles, new_roles) = (self.static_topology.roles(), new.static_topology.roles());
        for (name, role) in old_roles {
            let Some(kept) = new_roles.get(name) else {
                removed.push(format!("role {name}"));
                continue;
            };
            let text = |allow: &[crate::roles::Allowance]| {
                allow
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            for rule in role.egress.iter().filter(|r| !kept.egress.contains(r)) {
                let allow = text(&rule.allow);
                removed.push(format!("role {name}'s egress to {} ({allow})", rule.to));
            }
            for rule in role.ingress.iter().filter(|r| !kept.ingress.contains(r)) {
                let allow = text(&rule.allow);
                removed.push(format!(
                    "role {name}'s ingress from {} ({allow})",
                    rule.from
                ));
            }
        }
        for member in self.static_topology.members() {
            if !new.static_topology.members().contains(member) {
                removed.push(format!(
                    "static member {} (role {})",
                    member.name, member.role
                ));
            }
        }
        for service in self
            .proxy_defaults
            .services
            .difference(&new.proxy_defaults.services)
        {
            removed.push(format!("{service} of the proxy defaults"));
        }
        let (old, new) = (&self.docker, &new.docker);
        let flags = [
            (old.enabled && !new.enabled, "Docker watching"),
            (
                old.manage_internal && !new.manage_internal,
                "managing internal Docker networks",
            ),
            (
                old.managed_label != new.managed_label,
                "the managed label it had",
            ),
            (
                old.unknown_networks == UnknownNetworks::Deny
                    && new.unknown_networks == UnknownNetworks::Allow,
                "the deny of Docker bridges not classified yet",
            ),
        ];
        removed.extend(
            flags
                .iter()
                .filter(|(gone, _)| *gone)
                .map(|(_, what)| what.to_string()),
        );
        removed
    }
}
