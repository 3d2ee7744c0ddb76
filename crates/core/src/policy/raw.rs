//! The policy file's raw form (what serde reads, with the spans of every value) and its
//! section-by-section validation into the types of [`super`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::Range;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::entries::Entries;
use super::{DockerSettings, Policy, PolicyError, ProxyDefaults, UnknownNetworks};
use crate::docker::GATEWAY_BRIDGE;
use crate::nft_syntax;
use crate::planner::{AuditSettings, TableSettings};
use crate::ports::MacAddr;
use crate::roles::{Allowance, EgressRule, IngressRule, Role, Target};
use crate::topology::{
    is_valid_interface, is_valid_name, EastWest, ManagedNetwork, Member, Proxy, Service, Subject,
    Topology,
};

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
    #[serde(default)]
    roles: BTreeMap<String, Spanned<RawRole>>,
    #[serde(default)]
    members: Vec<RawMember>,
    #[serde(default)]
    quarantine: RawQuarantine,
    #[serde(default)]
    audit: RawAudit,
}

/// The most log messages a second an audit chain may send to the agent.
const MAX_AUDIT_RATE: u32 = 10_000;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    enabled: Option<bool>,
    nflog_group: Option<Spanned<u16>>,
    per_second: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawQuarantine {
    #[serde(default)]
    interfaces: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    #[serde(default)]
    egress: Vec<RawEgress>,
    #[serde(default)]
    ingress: Vec<RawIngress>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngress {
    from: Spanned<String>,
    allow: Spanned<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    to: Spanned<String>,
    allow: Spanned<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    name: Spanned<String>,
    role: Spanned<String>,
    addresses: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTable {
    name: Option<Spanned<String>>,
    forward_priority: Option<i32>,
    input_priority: Option<i32>,
    output_priority: Option<i32>,
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
    east_west_label: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProxyDefaults {
    allow: Option<Spanned<Vec<Spanned<String>>>>,
    dns_servers: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    name: Spanned<String>,
    #[serde(default)]
    subnets: Vec<Spanned<String>>,
    interface: Option<Spanned<String>>,
    east_west: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    name: Spanned<String>,
    addresses: Vec<Spanned<String>>,
    allow: Option<Spanned<Vec<Spanned<String>>>>,
    dns_servers: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    macs: Vec<Spanned<String>>,
}

/// Parser state: the source, for turning byte spans into line and column.
pub(super) struct Source<'a> {
    pub(super) path: &'a str,
    pub(super) text: &'a str,
}

impl Source<'_> {
    /// The 1-based line and column where `span` starts (the file's start without one).
    fn position(&self, span: Option<Range<usize>>) -> (usize, usize) {
        let offset = span.map(|s| s.start).unwrap_or(0).min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
        (line, column)
    }

    fn line(&self, span: Range<usize>) -> usize {
        self.position(Some(span)).0
    }

    pub(super) fn error(
        &self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> PolicyError {
        let (line, column) = self.position(span);
        PolicyError::Invalid {
            path: self.path.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    fn services(
        &self,
        raw: &Spanned<Vec<Spanned<String>>>,
    ) -> Result<BTreeSet<Service>, PolicyError> {
        if raw.get_ref().is_empty() {
            return Err(self.error(
                Some(raw.span()),
                "an empty allow list lets a proxy open nothing: list its services (like \
                 [\"tcp/443\"]), or leave `allow` out to take the defaults",
            ));
        }
        raw.get_ref()
            .iter()
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
                        format!("`{}` is not an IP address ({what})", shown(s.get_ref())),
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

impl Source<'_> {
    /// The whole policy, section by section.
    pub(super) fn policy(&self) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = toml::from_str(self.text).map_err(|e| {
            let message = e.message().trim().to_string();
            self.error(e.span(), format!("{message} (see docs/policy.md)"))
        })?;
        let mut table = self.table(&raw.table)?;
        table.audit = self.audit(&raw.audit)?;
        table.quarantine = raw
            .quarantine
            .interfaces
            .iter()
            .map(|p| self.interface_pattern(p))
            .collect::<Result<_, _>>()?;
        let docker = self.docker(&raw.docker)?;
        if docker.enabled && docker.unknown_networks == UnknownNetworks::Deny {
            table.unknown_interface_patterns = docker.bridge_patterns.clone();
        }
        let proxy_defaults = self.proxy_defaults(&raw.proxy)?;
        let roles = self.roles(&raw, &docker)?;
        let static_topology = self
            .static_topology(&raw, &proxy_defaults)?
            .with_roles(roles);
        Ok(Policy {
            table,
            docker,
            proxy_defaults,
            static_topology,
            entries: self.entries(&raw),
        })
    }

    /// The line of each named entry of `raw`.
    fn entries(&self, raw: &RawPolicy) -> Entries {
        let mut entries = Entries {
            path: self.path.to_string(),
            proxy_allow: raw.proxy.allow.as_ref().map(|a| self.line(a.span())),
            ..Entries::default()
        };
        for network in &raw.networks {
            let line = self.line(network.name.span());
            entries
                .networks
                .insert(network.name.get_ref().clone(), line);
        }
        for proxy in &raw.proxies {
            let at = match &proxy.allow {
                Some(allow) => (self.line(allow.span()), true),
                None => (self.line(proxy.name.span()), false),
            };
            entries.proxies.insert(proxy.name.get_ref().clone(), at);
        }
        for (name, role) in &raw.roles {
            for (index, rule) in role.get_ref().egress.iter().enumerate() {
                let line = self.line(rule.to.span());
                entries.egress.insert((name.clone(), index), line);
            }
            for (index, rule) in role.get_ref().ingress.iter().enumerate() {
                let line = self.line(rule.from.span());
                entries.ingress.insert((name.clone(), index), line);
            }
        }
        entries
    }

    /// `[table]`: its name and hook priorities (the unknown-interface patterns come from
    /// `[docker]`).
    fn table(&self, raw: &RawTable) -> Result<TableSettings, PolicyError> {
        let defaults = TableSettings::default();
        let name = match &raw.name {
            None => defaults.name.clone(),
            Some(name) if nft_syntax::is_keyword(name.get_ref()) => {
                return Err(self.error(
                    Some(name.span()),
                    format!(
                        "table name `{}` is an nft keyword: nft could not list or delete the \
                         table by name; choose another name",
                        shown(name.get_ref())
                    ),
                ))
            }
            Some(name) if is_table_name(name.get_ref()) => name.get_ref().clone(),
            Some(name) => {
                return Err(self.error(
                    Some(name.span()),
                    format!(
                        "table name `{}` is not allowed: use 1 to 64 characters from A-Z a-z 0-9 \
                         _, starting with a letter",
                        shown(name.get_ref())
                    ),
                ))
            }
        };
        Ok(TableSettings {
            name,
            forward_priority: raw.forward_priority.unwrap_or(defaults.forward_priority),
            input_priority: raw.input_priority.unwrap_or(defaults.input_priority),
            output_priority: raw.output_priority.unwrap_or(defaults.output_priority),
            ..defaults
        })
    }

    /// `[audit]`: the NFLOG group the drop audit uses, and its rate per reason.
    fn audit(&self, raw: &RawAudit) -> Result<AuditSettings, PolicyError> {
        let defaults = AuditSettings::default();
        let per_second = match &raw.per_second {
            None => defaults.per_second,
            Some(rate) if (1..=MAX_AUDIT_RATE).contains(rate.get_ref()) => *rate.get_ref(),
            Some(rate) => {
                return Err(self.error(
                    Some(rate.span()),
                    format!(
                        "per_second = {}: use 1 to {MAX_AUDIT_RATE} (log lines a second per \
                         reason, before the agent's summaries)",
                        rate.get_ref()
                    ),
                ))
            }
        };
        Ok(AuditSettings {
            enabled: raw.enabled.unwrap_or(defaults.enabled),
            group: raw
                .nflog_group
                .as_ref()
                .map_or(defaults.group, |g| *g.get_ref()),
            per_second,
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
            None => vec![
                "br-*".to_string(),
                "docker0".to_string(),
                GATEWAY_BRIDGE.to_string(),
            ],
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
            east_west_label: self.label(&raw.east_west_label, "enforcer.east-west")?,
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
                shown(pattern.get_ref())
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
        self.distinct_macs(raw)?;
        let members = raw
            .members
            .iter()
            .map(|member| self.member(member, raw))
            .collect::<Result<Vec<_>, _>>()?;
        Topology::with_default_dns(networks, &defaults.dns_servers, proxies)
            .and_then(|topology| topology.with_members(members))
            .map(|topology| topology.with_containers(Default::default()))
            .map_err(|e| self.error(Some(span_of(raw, e.subject)), e.problem))
    }

    /// `[roles.NAME]`: each role's egress rules, every `role:` they name defined.
    fn roles(
        &self,
        raw: &RawPolicy,
        docker: &DockerSettings,
    ) -> Result<BTreeMap<String, Role>, PolicyError> {
        let mut roles = BTreeMap::new();
        for (name, role) in &raw.roles {
            if !is_valid_name(name) {
                return Err(self.error(
                    Some(role.span()),
                    format!(
                        "role name `{}` is not allowed: use 1 to 128 characters from A-Z a-z 0-9 \
                         _ . -, starting with a letter or digit",
                        shown(name)
                    ),
                ));
            }
            if *name == docker.proxy_role {
                return Err(self.error(
                    Some(role.span()),
                    format!(
                        "`{name}` is the proxy role ([docker] proxy_role): its allowance is \
                         [proxy] allow (and dns_servers); define other roles here"
                    ),
                ));
            }
            let mut egress = Vec::new();
            for rule in &role.get_ref().egress {
                let to = self.target(&rule.to, raw, (name, &docker.proxy_role))?;
                let allow = self.allowances(&rule.allow)?;
                egress.push(EgressRule { to, allow });
            }
            let mut ingress = Vec::new();
            for rule in &role.get_ref().ingress {
                let from = self.target(&rule.from, raw, (name, &docker.proxy_role))?;
                if from == Target::Host {
                    return Err(self.error(
                        Some(rule.from.span()),
                        "`host` as an ingress source: what the host itself sends is not \
                         filtered, so there is nothing to allow; remove the rule",
                    ));
                }
                let allow = self.allowances(&rule.allow)?;
                ingress.push(IngressRule { from, allow });
            }
            roles.insert(name.clone(), Role { egress, ingress });
        }
        Ok(roles)
    }

    /// A rule's `to` or `from` in role `role`'s rules; a `role:` it names must be defined, or
    /// be `proxy_role` (the egress proxies).
    fn target(
        &self,
        raw: &Spanned<String>,
        policy: &RawPolicy,
        (role, proxy_role): (&str, &str),
    ) -> Result<Target, PolicyError> {
        let target: Target = raw
            .get_ref()
            .parse()
            .map_err(|e: String| self.error(Some(raw.span()), e))?;
        if let Target::Role(other) = &target {
            if other == proxy_role {
                return Ok(Target::Proxies);
            }
            if !policy.roles.contains_key(other) {
                return Err(self.error(
                    Some(raw.span()),
                    format!(
                        "role `{role}` names role `{}`, which the policy does not define: \
                         define [roles.{}] or fix the name",
                        shown(other),
                        shown(other)
                    ),
                ));
            }
        }
        Ok(target)
    }

    /// A rule's `allow`: not empty, every entry an [`Allowance`].
    fn allowances(
        &self,
        raw: &Spanned<Vec<Spanned<String>>>,
    ) -> Result<Vec<Allowance>, PolicyError> {
        if raw.get_ref().is_empty() {
            return Err(self.error(
                Some(raw.span()),
                "an empty allow list allows nothing: list what it allows (like [\"tcp/443\"]) \
                 or remove the rule",
            ));
        }
        raw.get_ref()
            .iter()
            .map(|a| {
                a.get_ref()
                    .parse()
                    .map_err(|e: String| self.error(Some(a.span()), e))
            })
            .collect()
    }

    fn member(&self, raw: &RawMember, policy: &RawPolicy) -> Result<Member, PolicyError> {
        if !policy.roles.contains_key(raw.role.get_ref()) {
            return Err(self.error(
                Some(raw.role.span()),
                format!(
                    "member `{}` holds role `{}`, which the policy does not define: define \
                     [roles.{}] or fix the name",
                    shown(raw.name.get_ref()),
                    shown(raw.role.get_ref()),
                    shown(raw.role.get_ref())
                ),
            ));
        }
        if raw.addresses.is_empty() {
            return Err(self.error(
                Some(raw.name.span()),
                format!(
                    "member `{}` has no address: a member is known by its addresses, list them",
                    shown(raw.name.get_ref())
                ),
            ));
        }
        Ok(Member {
            name: raw.name.get_ref().clone(),
            role: raw.role.get_ref().clone(),
            addresses: self.addresses(&raw.addresses, "a member address")?,
        })
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
                            shown(s.get_ref())
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let east_west = match &raw.east_west {
            None => EastWest::Allow,
            Some(value) => match value.get_ref().as_str() {
                "allow" => EastWest::Allow,
                "deny" => EastWest::Deny,
                other => {
                    return Err(self.error(
                        Some(value.span()),
                        format!("east_west = `{}`: use \"allow\" or \"deny\"", shown(other)),
                    ))
                }
            },
        };
        Ok(ManagedNetwork {
            name: raw.name.get_ref().clone(),
            subnets,
            interface: raw.interface.as_ref().map(|i| i.get_ref().clone()),
            east_west,
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
            macs: raw
                .macs
                .iter()
                .map(|mac| self.mac(mac))
                .collect::<Result<_, _>>()?,
        })
    }

    fn mac(&self, raw: &Spanned<String>) -> Result<MacAddr, PolicyError> {
        match raw.get_ref().parse::<MacAddr>() {
            Ok(mac) if mac.is_unicast() => Ok(mac),
            _ => Err(self.error(
                Some(raw.span()),
                format!(
                    "`{}` is not a unicast MAC address: write six hex pairs like \
                     \"02:42:0a:65:00:02\" (the first octet even, not all zeros), the MAC of \
                     one of the proxy's interfaces",
                    shown(raw.get_ref())
                ),
            )),
        }
    }

    /// No MAC is declared twice: each names the one interface a bridge port is bound to.
    fn distinct_macs(&self, raw: &RawPolicy) -> Result<(), PolicyError> {
        let mut seen: BTreeMap<MacAddr, &str> = BTreeMap::new();
        for proxy in &raw.proxies {
            for text in &proxy.macs {
                let mac = self.mac(text)?;
                if let Some(first) = seen.insert(mac, proxy.name.get_ref()) {
                    return Err(self.error(
                        Some(text.span()),
                        format!(
                            "MAC {mac} is declared twice (first by proxy {}): each MAC names \
                             one interface, whose bridge port is bound to one proxy",
                            shown(first)
                        ),
                    ));
                }
            }
        }
        Ok(())
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
        Subject::DefaultDnsServer(d) => default_dns_span(raw, d),
        Subject::Member(m) => raw.members[m].name.span(),
        Subject::MemberAddress(m, a) => raw.members[m].addresses[a].span(),
        Subject::DnsServer(p, d) => match &raw.proxies[p].dns_servers {
            Some(list) => list[d].span(),
            None => default_dns_span(raw, d),
        },
    }
}

/// Where `[proxy] dns_servers` entry `d` was written.
fn default_dns_span(raw: &RawPolicy, d: usize) -> Range<usize> {
    raw.proxy
        .dns_servers
        .as_ref()
        .map(|l| l[d].span())
        .unwrap_or(0..0)
}

fn is_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A value from the file as an error message repeats it: whole when short, else its start and
/// its length (a 50 MB value must not become a 50 MB message).
fn shown(value: &str) -> String {
    const SHOWN_CHARS: usize = 64;
    match value.char_indices().nth(SHOWN_CHARS) {
        None => value.to_string(),
        Some((end, _)) => format!("{}… ({} bytes)", &value[..end], value.len()),
    }
}
