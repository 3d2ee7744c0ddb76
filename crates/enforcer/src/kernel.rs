//! The kernel as the daemon sees it: one call that makes the kernel hold enforcer's tables. The daemon's
//! logic (folding Docker's events, reloads, periodic checks) is written against [`Kernel`], so
//! that it runs against `enforcer_nft::Nftables` in production and against a recording fake in
//! unit tests, without root.

#[cfg(test)]
use enforcer_core::ruleset::Action;
use enforcer_core::ruleset::{TableFamily, Tables};
use enforcer_nft::conntrack::Connection;
use enforcer_nft::{ApplyOutcome, KernelView, NftError, Nftables};

/// What the daemon needs from the kernel.
pub trait Kernel {
    /// Makes the kernel hold `tables`, sending nothing when it already does. On error, the
    /// kernel still holds what it held before (a transaction is committed whole or not at all).
    fn apply(&mut self, tables: &Tables) -> Result<ApplyOutcome, NftError>;

    /// Whether the kernel holds `table inet NAME` at all.
    fn holds_table(&mut self, name: &str) -> Result<bool, NftError>;

    /// How many times [`Kernel::apply`] has read the kernel's tables back (each time a commit
    /// since the last made it unsure what the kernel holds): a read-back of a large table
    /// allocates as much as an apply.
    fn read_backs(&self) -> u64;

    /// Whether no program has committed since the last [`Kernel::apply`] committed or found
    /// its tables in the kernel (one GETGEN): then the kernel still holds them.
    fn still_verified(&mut self) -> Result<bool, NftError>;

    /// The netlink port id [`Kernel::apply`] commits from: the nftables monitor names it as the
    /// sender of our own commits.
    fn port_id(&self) -> u32;

    /// The tracked TCP and UDP connections `select` picks, as the kernel lists them.
    fn connections(
        &mut self,
        select: &mut dyn FnMut(&Connection) -> bool,
    ) -> Result<Vec<Connection>, NftError>;

    /// Deletes tracked connections; returns how many were deleted.
    fn forget(&mut self, connections: &[Connection]) -> Result<usize, NftError>;

    /// What the kernel's tables named `name` counted (for the metrics); `None` when the inet
    /// table does not exist.
    fn view(&mut self, name: &str) -> Result<Option<KernelView>, NftError>;
}

impl Kernel for Nftables {
    fn apply(&mut self, tables: &Tables) -> Result<ApplyOutcome, NftError> {
        Nftables::apply(self, tables)
    }

    fn holds_table(&mut self, name: &str) -> Result<bool, NftError> {
        Ok(self.read(name)?.contains_key(&TableFamily::Inet))
    }

    fn read_backs(&self) -> u64 {
        Nftables::read_backs(self)
    }

    fn still_verified(&mut self) -> Result<bool, NftError> {
        Nftables::still_verified(self)
    }

    fn port_id(&self) -> u32 {
        Nftables::port_id(self)
    }

    fn connections(
        &mut self,
        select: &mut dyn FnMut(&Connection) -> bool,
    ) -> Result<Vec<Connection>, NftError> {
        Nftables::connections(self, select)
    }

    fn forget(&mut self, connections: &[Connection]) -> Result<usize, NftError> {
        Nftables::forget(self, connections)
    }

    fn view(&mut self, name: &str) -> Result<Option<KernelView>, NftError> {
        Nftables::view(self, name)
    }
}

/// A kernel in memory for unit tests: it records every set of tables it is asked to apply, and
/// can be told to refuse transactions or that someone deleted its tables.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct FakeKernel {
    /// Every desired state passed to [`Kernel::apply`], in order, refused ones included.
    pub asked: Vec<Tables>,
    /// Every desired state committed, in order: one per transaction.
    pub committed: Vec<Tables>,
    /// The tables the fake kernel holds.
    pub held: Option<Tables>,
    /// While set, every transaction is refused as the kernel would refuse it without memory.
    pub failing: bool,
    /// The connections the fake kernel tracks.
    pub tracked: Vec<Connection>,
    /// While set, a transaction with a `log` rule is refused, as a kernel without NFLOG (or
    /// nft's log expression) refuses it.
    pub refuses_log: bool,
}

#[cfg(test)]
impl FakeKernel {
    /// The port id the fake commits from.
    pub const PORT_ID: u32 = 4242;

    /// Someone else deleted the table (`nft delete table`, a flushed ruleset).
    pub fn tamper(&mut self) {
        self.held = None;
    }
}

#[cfg(test)]
impl Kernel for FakeKernel {
    fn apply(&mut self, tables: &Tables) -> Result<ApplyOutcome, NftError> {
        self.asked.push(tables.clone());
        let ruleset = &tables.inet;
        if self.failing {
            return Err(NftError::Rejected {
                errno: libc::ENOMEM,
                reason: std::io::Error::from_raw_os_error(libc::ENOMEM).to_string(),
                detail: None,
                what: format!("the transaction for table inet {}", ruleset.table),
            });
        }
        let logs = tables
            .iter()
            .flat_map(|t| &t.chains)
            .flat_map(|c| &c.rules)
            .any(|r| matches!(r.action, Action::Log { .. }));
        if self.refuses_log && logs {
            return Err(NftError::Rejected {
                errno: libc::ENOENT,
                reason: std::io::Error::from_raw_os_error(libc::ENOENT).to_string(),
                detail: None,
                what: format!("the transaction for table inet {}", ruleset.table),
            });
        }
        if self.held.as_ref() == Some(tables) {
            return Ok(ApplyOutcome::Unchanged);
        }
        let change = match &self.held {
            None => format!("+ table inet {} (absent from the kernel)", ruleset.table),
            Some(_) => format!("~ table inet {} (replaced)", ruleset.table),
        };
        self.held = Some(tables.clone());
        self.committed.push(tables.clone());
        Ok(ApplyOutcome::Applied {
            messages: 1 + ruleset.sets.len() + ruleset.chains.len(),
            bytes: 0,
            changes: vec![change],
        })
    }

    fn holds_table(&mut self, name: &str) -> Result<bool, NftError> {
        Ok(self
            .held
            .as_ref()
            .is_some_and(|held| held.inet.table == name))
    }

    /// The fake compares what it holds with what it is asked for: every apply is a read-back.
    fn read_backs(&self) -> u64 {
        self.asked.len() as u64
    }

    /// The fake holds what it last committed (nobody tampered since).
    fn still_verified(&mut self) -> Result<bool, NftError> {
        Ok(self.held.is_some() && self.held.as_ref() == self.committed.last())
    }

    fn port_id(&self) -> u32 {
        FakeKernel::PORT_ID
    }

    fn connections(
        &mut self,
        select: &mut dyn FnMut(&Connection) -> bool,
    ) -> Result<Vec<Connection>, NftError> {
        Ok(self.tracked.iter().filter(|c| select(c)).copied().collect())
    }

    fn forget(&mut self, connections: &[Connection]) -> Result<usize, NftError> {
        let before = self.tracked.len();
        self.tracked.retain(|c| !connections.contains(c));
        Ok(before - self.tracked.len())
    }

    /// The fake counts nothing: an empty view while it holds tables.
    fn view(&mut self, name: &str) -> Result<Option<KernelView>, NftError> {
        let holds = self
            .held
            .as_ref()
            .is_some_and(|held| held.inet.table == name);
        Ok(holds.then(KernelView::default))
    }
}
