//! Where the policy file writes each of its entries, for answers that point at the line that
//! decides (`enforcer explain`).

use std::collections::BTreeMap;
use std::fmt;

/// A line of the policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, as messages show it (or the embedded default's name).
    pub path: String,
    /// 1-based line.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path, self.line)
    }
}

/// The line of each named entry of the policy file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    pub(super) path: String,
    /// `[[networks]]` by name: the line of its `name`.
    pub(super) networks: BTreeMap<String, usize>,
    /// `[[proxies]]` by name: the line of its `allow`, or of its `name` without one.
    pub(super) proxies: BTreeMap<String, (usize, bool)>,
    /// `[proxy] allow`, when written.
    pub(super) proxy_allow: Option<usize>,
    /// `[[roles.NAME.egress]]` by role and index: the line of its `to`.
    pub(super) egress: BTreeMap<(String, usize), usize>,
    /// `[[roles.NAME.ingress]]` by role and index: the line of its `from`.
    pub(super) ingress: BTreeMap<(String, usize), usize>,
}

impl Entries {
    fn at(&self, line: usize) -> Location {
        Location {
            path: self.path.clone(),
            line,
        }
    }

    /// The `[[networks]]` entry named `name`, if the file declares it.
    pub fn network(&self, name: &str) -> Option<Location> {
        self.networks.get(name).map(|&line| self.at(line))
    }

    /// What gives the proxy named `name` its allowance: its own `allow` (true), or the line of
    /// its entry when it takes the defaults (false); `None` for a proxy the file does not
    /// declare (one of Docker's).
    pub fn proxy(&self, name: &str) -> Option<(Location, bool)> {
        self.proxies
            .get(name)
            .map(|&(line, own)| (self.at(line), own))
    }

    /// `[proxy] allow`, the defaults of every proxy without its own, if the file writes it.
    pub fn proxy_defaults(&self) -> Option<Location> {
        self.proxy_allow.map(|line| self.at(line))
    }

    /// Role `role`'s egress rule number `index` (from 0).
    pub fn egress(&self, role: &str, index: usize) -> Option<Location> {
        self.egress
            .get(&(role.to_string(), index))
            .map(|&line| self.at(line))
    }

    /// Role `role`'s ingress rule number `index` (from 0).
    pub fn ingress(&self, role: &str, index: usize) -> Option<Location> {
        self.ingress
            .get(&(role.to_string(), index))
            .map(|&line| self.at(line))
    }
}
