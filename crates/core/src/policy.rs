//! The operator's policy: a TOML file (or the embedded default, `rules/default.toml`).
//!
//! Every key is optional; a missing key takes the value of the embedded default. Unknown keys,
//! bad prefixes, bad services and every [`Topology`] rule violation are reported with the file,
//! line and column of the offending value.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::planner::TableSettings;
use crate::topology::{is_valid_interface, ManagedNetwork, Proxy, Service, Subject, Topology};

/// The embedded default policy (`rules/default.toml`), used when no file is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../rules/default.toml");
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
    /// Networks and proxies declared in the file; enforced with or without Docker.
    pub static_topology: Topology,
}

/// A policy that cannot be used; nothing is applied when one is reported.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    table: RawTable,
    #[serde(default)]
    docker: RawDocker,
    #[serde(default)]
    proxy: RawProxyDefaults,
    #[serde(default)]
    networks: Vec<RawNetwork>,
    #[serde(default)]
    proxies: Vec<RawProxy>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTable {
    name: Option<Spanned<String>>,
    forward_priority: Option<i32>,
    input_priority: Option<i32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDocker {
    enabled: Option<bool>,
    unknown_networks: Option<Spanned<String>>,
    bridge_patterns: Option<Vec<Spanned<String>>>,
    manage_internal: Option<bool>,
    managed_label: Option<Spanned<String>>,
    role_label: Option<Spanned<String>>,
    proxy_role: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProxyDefaults {
    allow: Option<Vec<Spanned<String>>>,
    dns_servers: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    name: Spanned<String>,
    #[serde(default)]
    subnets: Vec<Spanned<String>>,
    interface: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    name: Spanned<String>,
    addresses: Vec<Spanned<String>>,
    allow: Option<Vec<Spanned<String>>>,
    dns_servers: Option<Vec<Spanned<String>>>,
}

/// Parser state: the source, for turning byte spans into line and column.
struct Source<'a> {
    path: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> PolicyError {
        let offset = span.map(|s| s.start).unwrap_or(0).min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
        PolicyError::Invalid {
            path: self.path.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    fn services(&self, raw: &[Spanned<String>]) -> Result<BTreeSet<Service>, PolicyError> {
        raw.iter()
            .map(|s| {
                s.get_ref()
                    .parse()
                    .map_err(|e: String| self.error(Some(s.span()), e))
            })
            .collect()
    }

    fn addresses(&self, raw: &[Spanned<String>], what: &str) -> Result<Vec<IpAddr>, PolicyError> {
        raw.iter()
            .map(|s| {
                s.get_ref().parse().map_err(|_| {
                    self.error(
                        Some(s.span()),
                        format!("`{}` is not an IP address ({what})", s.get_ref()),
                    )
                })
            })
            .collect()
    }

    fn label(&self, raw: &Option<Spanned<String>>, default: &str) -> Result<String, PolicyError> {
        match raw {
            None => Ok(default.to_string()),
            Some(s) if s.get_ref().is_empty() || s.get_ref().chars().any(char::is_whitespace) => {
                Err(self.error(
                    Some(s.span()),
                    "a label key or value must be non-empty, without spaces",
                ))
            }
            Some(s) => Ok(s.get_ref().clone()),
        }
    }
}

impl Policy {
    /// The embedded default policy.
    pub fn embedded() -> Policy {
        Policy::parse(EMBEDDED_DEFAULT, EMBEDDED_NAME)
            .expect("the embedded default policy is valid")
    }

    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: shown.clone(),
            source,
        })?;
        Policy::parse(&text, &shown)
    }

    /// Parses and validates policy text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Policy, PolicyError> {
        let source = Source { path, text };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_string();
            source.error(
                e.span(),
                format!("{message} (see the policy reference in the README)"),
            )
        })?;
        let mut table = source.table(&raw.table)?;
        let docker = source.docker(&raw.docker)?;
        if docker.enabled && docker.unknown_networks == UnknownNetworks::Deny {
            table.unknown_interface_patterns = docker.bridge_patterns.clone();
        }
        let proxy_defaults = source.proxy_defaults(&raw.proxy)?;
        let static_topology = source.static_topology(&raw, &proxy_defaults)?;
        Ok(Policy {
            table,
            docker,
            proxy_defaults,
            static_topology,
        })
    }
}

impl Source<'_> {
    /// `[table]`: its name and hook priorities (the unknown-interface patterns come from
    /// `[docker]`).
    fn table(&self, raw: &RawTable) -> Result<TableSettings, PolicyError> {
        let defaults = TableSettings::default();
        let name = match &raw.name {
            None => defaults.name.clone(),
            Some(name) if is_table_name(name.get_ref()) => name.get_ref().clone(),
            Some(name) => {
                return Err(self.error(
                    Some(name.span()),
                    format!(
                        "table name `{}` is not allowed: use 1 to 64 characters from A-Z a-z 0-9 \
                         _, starting with a letter",
                        name.get_ref()
                    ),
                ))
            }
        };
        Ok(TableSettings {
            name,
            forward_priority: raw.forward_priority.unwrap_or(defaults.forward_priority),
            input_priority: raw.input_priority.unwrap_or(defaults.input_priority),
            unknown_interface_patterns: Vec::new(),
        })
    }

    /// `[docker]`: how Docker's objects are classified.
    fn docker(&self, raw: &RawDocker) -> Result<DockerSettings, PolicyError> {
        let unknown_networks = match &raw.unknown_networks {
            None => UnknownNetworks::Deny,
            Some(value) => match value.get_ref().as_str() {
                "deny" => UnknownNetworks::Deny,
                "allow" => UnknownNetworks::Allow,
                other => {
                    return Err(self.error(
                        Some(value.span()),
                        format!("unknown_networks = `{other}`: use \"deny\" or \"allow\""),
                    ))
                }
            },
        };
        let bridge_patterns = match &raw.bridge_patterns {
            None => vec!["br-*".to_string(), "docker0".to_string()],
            Some(list) => list
                .iter()
                .map(|p| self.interface_pattern(p))
                .collect::<Result<Vec<_>, _>>()?,
        };
        Ok(DockerSettings {
            enabled: raw.enabled.unwrap_or(true),
            unknown_networks,
            bridge_patterns,
            manage_internal: raw.manage_internal.unwrap_or(true),
            managed_label: self.label(&raw.managed_label, "enforcer.managed")?,
            role_label: self.label(&raw.role_label, "enforcer.role")?,
            proxy_role: self.label(&raw.proxy_role, "egress-proxy")?,
        })
    }

    fn interface_pattern(&self, pattern: &Spanned<String>) -> Result<String, PolicyError> {
        let stem = pattern
            .get_ref()
            .strip_suffix('*')
            .unwrap_or(pattern.get_ref());
        if is_valid_interface(stem) {
            return Ok(pattern.get_ref().clone());
        }
        Err(self.error(
            Some(pattern.span()),
            format!(
                "`{}` is not an interface pattern: write a name of 1 to 15 characters, \
                 optionally ending in `*` (like \"br-*\")",
                pattern.get_ref()
            ),
        ))
    }

    /// `[proxy]`: what every proxy may do unless its own entry says otherwise.
    fn proxy_defaults(&self, raw: &RawProxyDefaults) -> Result<ProxyDefaults, PolicyError> {
        Ok(ProxyDefaults {
            services: match &raw.allow {
                Some(list) => self.services(list)?,
                None => ["tcp/443", "udp/53", "tcp/53"]
                    .iter()
                    .map(|s| s.parse().expect("built-in services parse"))
                    .collect(),
            },
            dns_servers: match &raw.dns_servers {
                Some(list) => self.addresses(list, "a DNS server")?,
                None => Vec::new(),
            },
        })
    }

    /// `[[networks]]` and `[[proxies]]`, validated as one topology.
    fn static_topology(
        &self,
        raw: &RawPolicy,
        defaults: &ProxyDefaults,
    ) -> Result<Topology, PolicyError> {
        let networks = raw
            .networks
            .iter()
            .map(|network| self.network(network))
            .collect::<Result<Vec<_>, _>>()?;
        let proxies = raw
            .proxies
            .iter()
            .map(|proxy| self.proxy(proxy, defaults))
            .collect::<Result<Vec<_>, _>>()?;
        Topology::new(networks, proxies)
            .map_err(|e| self.error(Some(span_of(raw, e.subject)), e.problem))
    }

    fn network(&self, raw: &RawNetwork) -> Result<ManagedNetwork, PolicyError> {
        let subnets = raw
            .subnets
            .iter()
            .map(|s| {
                s.get_ref().parse::<IpNet>().map_err(|_| {
                    self.error(
                        Some(s.span()),
                        format!(
                            "`{}` is not a subnet: write it in CIDR form, like 10.100.0.0/24 or \
                             fd00:100::/64",
                            s.get_ref()
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ManagedNetwork {
            name: raw.name.get_ref().clone(),
            subnets,
            interface: raw.interface.as_ref().map(|i| i.get_ref().clone()),
        })
    }

    fn proxy(&self, raw: &RawProxy, defaults: &ProxyDefaults) -> Result<Proxy, PolicyError> {
        Ok(Proxy {
            name: raw.name.get_ref().clone(),
            addresses: self.addresses(&raw.addresses, "a proxy address")?,
            services: match &raw.allow {
                Some(list) => self.services(list)?,
                None => defaults.services.clone(),
            },
            dns_servers: match &raw.dns_servers {
                Some(list) => self.addresses(list, "a DNS server")?,
                None => defaults.dns_servers.clone(),
            },
        })
    }
}

/// Where in the file the value a topology error is about was written.
fn span_of(raw: &RawPolicy, subject: Subject) -> Range<usize> {
    match subject {
        Subject::Network(n) => raw.networks[n].name.span(),
        Subject::Interface(n) => raw.networks[n]
            .interface
            .as_ref()
            .map(|i| i.span())
            .unwrap_or(0..0),
        Subject::Subnet(n, s) => raw.networks[n].subnets[s].span(),
        Subject::Proxy(p) => raw.proxies[p].name.span(),
        Subject::ProxyAddress(p, a) => raw.proxies[p].addresses[a].span(),
        Subject::DnsServer(p, d) => match &raw.proxies[p].dns_servers {
            Some(list) => list[d].span(),
            None => raw
                .proxy
                .dns_servers
                .as_ref()
                .map(|l| l[d].span())
                .unwrap_or(0..0),
        },
    }
}

fn is_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> (usize, usize, String) {
        match Policy::parse(text, "p.toml").unwrap_err() {
            PolicyError::Invalid {
                line,
                column,
                message,
                ..
            } => (line, column, message),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn embedded_default_is_the_all_defaults_policy() {
        let embedded = Policy::embedded();
        assert_eq!(embedded, Policy::parse("", "empty").unwrap());
        assert_eq!(embedded.table.name, "enforcer");
        assert!(embedded.docker.manage_internal);
        assert_eq!(embedded.docker.managed_label, "enforcer.managed");
        assert_eq!(embedded.docker.role_label, "enforcer.role");
        assert_eq!(embedded.docker.proxy_role, "egress-proxy");
        assert!(embedded.docker.enabled);
        assert_eq!(embedded.docker.unknown_networks, UnknownNetworks::Deny);
        assert_eq!(embedded.docker.bridge_patterns, ["br-*", "docker0"]);
        assert_eq!(
            embedded.table.unknown_interface_patterns,
            ["br-*", "docker0"]
        );
        let services: Vec<String> = embedded
            .proxy_defaults
            .services
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(services, ["tcp/53", "tcp/443", "udp/53"]);
    }

    #[test]
    fn unknown_key_is_located() {
        let (line, column, message) = error_of("[table]\nname = \"x\"\ncolour = 1\n");
        assert_eq!((line, column), (3, 1));
        assert!(message.contains("unknown field `colour`"), "{message}");
    }

    #[test]
    fn bad_cidr_is_located() {
        let text = "[[networks]]\nname = \"a\"\nsubnets = [\"10.0.0.0/24\", \"10.1.0.0/33\"]\n";
        let (line, column, message) = error_of(text);
        assert_eq!((line, column), (3, 27));
        assert!(message.contains("not a subnet"), "{message}");
    }

    #[test]
    fn topology_errors_point_at_the_value() {
        let text = "[[networks]]\nname = \"a\"\nsubnets = [\"0.0.0.0/0\"]\n";
        let (line, _, message) = error_of(text);
        assert_eq!(line, 3);
        assert!(message.contains("too large"), "{message}");

        let text = "[[networks]]\nname = \"a\"\nsubnets = [\"10.0.0.0/24\"]\n\
                    [[networks]]\nname = \"b\"\nsubnets = [\"10.0.0.128/25\"]\n";
        let (line, _, message) = error_of(text);
        assert_eq!(line, 6);
        assert!(message.contains("overlaps"), "{message}");

        let text = "[[networks]]\nname = \"a\"\nsubnets = [\"10.0.0.0/24\"]\n\
                    [[proxies]]\nname = \"p\"\naddresses = [\"10.9.0.2\"]\n";
        let (line, column, message) = error_of(text);
        assert_eq!((line, column), (6, 14));
        assert!(
            message.contains("outside every managed subnet"),
            "{message}"
        );
    }

    #[test]
    fn port_zero_and_bad_names_are_rejected() {
        let (line, _, message) = error_of("[proxy]\nallow = [\"tcp/0\"]\n");
        assert_eq!(line, 2);
        assert!(message.contains("port 0"), "{message}");
        let (_, _, message) = error_of("[table]\nname = \"9bad\"\n");
        assert!(message.contains("table name"), "{message}");
    }

    #[test]
    fn docker_keys_are_checked() {
        let (line, _, message) = error_of("[docker]\nunknown_networks = \"maybe\"\n");
        assert_eq!(line, 2);
        assert!(message.contains("\"deny\" or \"allow\""), "{message}");
        for pattern in ["*", "a/b", "much-too-long-interface*"] {
            let text = format!("[docker]\nbridge_patterns = [\"br-*\", \"{pattern}\"]\n");
            let (line, column, message) = error_of(&text);
            assert_eq!((line, column), (2, 28), "{pattern}");
            assert!(message.contains("interface pattern"), "{message}");
        }
        let allow = Policy::parse("[docker]\nunknown_networks = \"allow\"\n", "p").unwrap();
        assert!(allow.table.unknown_interface_patterns.is_empty());
        let off = Policy::parse("[docker]\nenabled = false\n", "p").unwrap();
        assert!(off.table.unknown_interface_patterns.is_empty());
        let text = "[[networks]]\nname = \"a\"\ninterface = \"bad name\"\n";
        let (line, _, message) = error_of(text);
        assert_eq!(line, 3);
        assert!(message.contains("not an interface name"), "{message}");
    }

    #[test]
    fn proxies_inherit_then_override_defaults() {
        let text = "[proxy]\nallow = [\"tcp/443\"]\ndns_servers = [\"203.0.113.53\"]\n\
                    [[networks]]\nname = \"e\"\nsubnets = [\"10.2.0.0/24\"]\n\
                    [[proxies]]\nname = \"a\"\naddresses = [\"10.2.0.2\"]\n\
                    [[proxies]]\nname = \"b\"\naddresses = [\"10.2.0.3\"]\nallow = [\"udp/53\"]\n";
        let policy = Policy::parse(text, "p.toml").unwrap();
        let [a, b] = policy.static_topology.proxies() else {
            panic!()
        };
        assert_eq!(
            a.services.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            ["tcp/443"]
        );
        assert_eq!(
            b.services.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            ["udp/53"]
        );
        assert_eq!(
            b.dns_servers,
            vec!["203.0.113.53".parse::<IpAddr>().unwrap()]
        );
    }
}
