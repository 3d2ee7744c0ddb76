//! The kernel edge of enforcer: puts its [`Tables`] (`inet` and `bridge`) into the kernel as
//! ONE nftables netlink transaction, and reads back what the kernel holds to skip transactions
//! that would change nothing.
//!
//! - [`encode`] writes the batch: rustables for the table and its chains, which it models
//!   completely; our own writer ([`wire`]) for everything else: every rule expression, sets,
//!   verdict maps and elements, deletes. rustables 0.9 cannot write some expressions (the
//!   32-bit register of an IPv4 pair lookup, inverted lookups) nor map data, and one writer for
//!   every expression means each construct is written once, not once per library.
//! - [`state`] turns batch messages and kernel dumps into one canonical form, compared and
//!   diffed: the desired table is what the reader makes of the messages we would send.
//! - [`view`] reads the kernel's table back for people (`enforcer status`).
//! - [`netlink`] talks to the kernel (neli socket); the ABI's numbers are named in one module.
//! - [`monitor`] follows every commit, by anyone, through nftables' notifications.
//! - [`conntrack`] lists and deletes tracked connections (ctnetlink, on the same socket).
//! - [`nflog`] reads what the tables' audit chains log (nfnetlink_log, a socket of its own).
//!
//! # Adding a kernel construct
//!
//! A new match, action or set kind touches four places, one each:
//!
//! 1. the planner's vocabulary: a variant of `enforcer_core::ruleset` (`Match`, `Action`,
//!    `Verdict`, `SetContent`);
//! 2. the renderer: its `nft` text in `enforcer_core::render` (what `--dry-run` prints);
//! 3. the writer: one function in `encode/rules.rs` (or `encode/sets.rs`), made of the kernel
//!    expressions `nft` itself writes for that text (`nft --debug=netlink` shows them), with
//!    any new attribute numbers named in `abi.rs`;
//! 4. the reader: `state.rs`, which reads the messages we send and the kernel's dump into one
//!    canonical form. A new expression needs nothing there unless the kernel dumps it
//!    differently from how it was written (an attribute it adds or varies, a string with its
//!    NUL): then canonicalise it, or the table read back after an apply differs from the
//!    desired one and every apply re-sends it. A new set property is parsed there.
//!
//! The four are checked against `nft` itself by `tests/tests/kernel.rs` (root, in a network
//! namespace): the table applied over netlink and the dry-run text loaded by `nft -f` must
//! list identically, and a second apply must send nothing.

mod abi;
pub mod conntrack;
pub mod elements;
pub mod encode;
pub mod monitor;
pub mod netlink;
pub mod nflog;
pub mod state;
pub mod view;
pub mod wire;

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use enforcer_core::names::SetName;
use enforcer_core::ruleset::{TableFamily, Tables};

use encode::TableChange;
pub use state::{diff, BaseChain, TableState};
pub use view::{CountedSubnet, KernelView, PortCounters};

/// Something went wrong talking to nftables. Whatever it is, the rules in force before the call
/// are still in force: a transaction is committed whole or not at all.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The netlink socket failed.
    #[error("netlink socket to nftables failed: {0}")]
    Socket(std::io::Error),
    /// The caller lacks CAP_NET_ADMIN.
    #[error(
        "{action}: permission denied; nftables needs CAP_NET_ADMIN (run as root, or grant the \
         capability: systemd AmbientCapabilities=CAP_NET_ADMIN, or `setcap cap_net_admin+ep`)"
    )]
    PermissionDenied {
        /// What was attempted.
        action: String,
    },
    /// The kernel refused a request; for a transaction, the whole batch was rolled back.
    #[error(
        "the kernel rejected {what}: {reason}{}",
        detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
    )]
    Rejected {
        /// errno (positive).
        errno: i32,
        /// strerror text.
        reason: String,
        /// The kernel's extended message, when it gave one.
        detail: Option<String>,
        /// What the rejected message did.
        what: String,
    },
    /// No reply within the timeout.
    #[error("nftables did not answer within 10 s")]
    Timeout,
    /// A reply could not be understood.
    #[error("unexpected reply from nftables: {0}")]
    Malformed(String),
    /// The ruleset kept changing under us while we read it.
    #[error("the ruleset changed during each of 5 attempts to read table {0}; another program is rewriting it")]
    Unstable(String),
}

impl NftError {
    fn rejected(errno: i32, detail: Option<String>, what: String) -> NftError {
        if errno == libc::EPERM {
            return NftError::PermissionDenied { action: what };
        }
        let reason = std::io::Error::from_raw_os_error(errno).to_string();
        NftError::Rejected {
            errno,
            reason,
            detail,
            what,
        }
    }
}

/// What [`Nftables::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The kernel already held the desired tables: nothing was sent.
    Unchanged,
    /// One transaction replaced what differed.
    Applied {
        /// Messages in the transaction.
        messages: usize,
        /// Bytes sent.
        bytes: usize,
        /// What changed, as [`diff`] lines.
        changes: Vec<String>,
    },
}

/// Enforcer's tables as the kernel holds them, by family: a family without an entry has no
/// such table.
pub type HeldTables = BTreeMap<TableFamily, TableState>;

/// What puts a table's rules on the packet path: whether it is dormant, and its base chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableHooks {
    /// Whether the table is dormant: then none of its base chains is registered on its hook.
    pub dormant: bool,
    /// Base chain name -> its hook, priority, policy and type.
    pub chains: BTreeMap<String, BaseChain>,
}

impl TableHooks {
    /// The hooks the planned `tables` register once applied, by family (never dormant);
    /// computed from the base chains alone, without encoding the tables.
    pub fn planned(tables: &Tables) -> BTreeMap<TableFamily, TableHooks> {
        tables
            .iter()
            .map(|ruleset| {
                let chains = ruleset.chains.iter().filter_map(|chain| {
                    let base = encode::base_chain(ruleset.family, chain)?;
                    Some((chain.name.to_string(), base))
                });
                let hooks = TableHooks {
                    dormant: false,
                    chains: chains.collect(),
                };
                (ruleset.family, hooks)
            })
            .collect()
    }

    /// The hooks of `state`.
    pub fn of(state: &TableState) -> TableHooks {
        TableHooks {
            dormant: state.dormant(),
            chains: state
                .chains
                .iter()
                .filter_map(|(name, chain)| Some((name.clone(), chain.base.clone()?)))
                .collect(),
        }
    }
}

/// The desired tables, encoded once: their messages and (computed on first use) their canonical
/// forms, and the families whose table must not exist.
pub struct Desired {
    name: String,
    parts: Vec<encode::Parts>,
    absent: Vec<TableFamily>,
    states: OnceLock<Vec<TableState>>,
}

impl Desired {
    /// Encodes `tables`.
    pub fn new(tables: &Tables) -> Desired {
        let mut parts: Vec<encode::Parts> = Vec::new();
        for ruleset in tables.iter() {
            let first_set_id = parts.iter().map(encode::Parts::set_count).sum();
            parts.push(encode::encode(ruleset, first_set_id));
        }
        let absent = TableFamily::ALL
            .into_iter()
            .filter(|f| tables.iter().all(|t| t.family != *f))
            .collect();
        Desired {
            name: tables.inet.table.clone(),
            parts,
            absent,
            states: OnceLock::new(),
        }
    }

    /// The canonical form of each desired table, with its family.
    pub fn states(&self) -> impl Iterator<Item = (TableFamily, &TableState)> {
        let states = self
            .states
            .get_or_init(|| self.parts.iter().map(encode::Parts::state).collect());
        self.parts.iter().map(encode::Parts::family).zip(states)
    }

    /// The canonical forms, by family, as the kernel holds them once applied.
    fn into_held(self) -> HeldTables {
        let states = match self.states.into_inner() {
            Some(states) => states,
            None => self.parts.iter().map(encode::Parts::state).collect(),
        };
        let families = self.parts.iter().map(encode::Parts::family);
        families.zip(states).collect()
    }

    /// Whether the kernel's tables (`held`) are exactly the desired ones.
    pub fn is_held(&self, held: &HeldTables) -> bool {
        self.states()
            .all(|(family, state)| held.get(&family) == Some(state))
            && self.absent.iter().all(|f| !held.contains_key(f))
    }

    /// What applying it changes, against `held`, as [`diff`] lines.
    pub fn changes(&self, held: &HeldTables) -> Vec<String> {
        let mut lines = Vec::new();
        for (family, state) in self.states() {
            lines.extend(diff((family, &self.name), held.get(&family), state));
        }
        for family in self.absent.iter().filter(|f| held.contains_key(f)) {
            lines.push(format!(
                "- table {} {} (no longer wanted)",
                family.name(),
                self.name
            ));
        }
        lines
    }

    /// The one transaction that turns `held` into the desired tables.
    fn transaction(&self, held: &HeldTables, first_seq: u32) -> encode::Transaction {
        let states: Vec<(TableFamily, &TableState)> = self.states().collect();
        let mut changes: Vec<TableChange> = Vec::new();
        for (parts, (family, desired)) in self.parts.iter().zip(&states) {
            let against = held.get(family).map(|current| (current, *desired));
            changes.push(TableChange::Write { parts, against });
        }
        for family in self.absent.iter().filter(|f| held.contains_key(f)) {
            changes.push(TableChange::Delete(*family, &self.name));
        }
        encode::transaction(&changes, first_seq)
    }
}

/// Tables known to be in the kernel at a given ruleset generation: the fingerprint of their
/// plan and their canonical form. The generation id changes with every commit by anyone, so
/// while it stays the same, the kernel still holds them and the next apply can diff against
/// them without reading back.
struct Verified {
    generation: u32,
    plan: Fingerprint,
    held: HeldTables,
}

/// 128 bits of two SipHash instances with keys drawn at random for this handle: equal for
/// equal plans, and for different ones with a chance of 2^-128 that no input can be chosen
/// to raise (the keys are secret). It stands in for a copy of the plan, which for 10,000 role
/// members is about 15 MiB.
type Fingerprint = [u64; 2];

/// A connection to the kernel's nftables.
pub struct Nftables {
    socket: netlink::Socket,
    verified: Option<Verified>,
    fingerprint_keys: [RandomState; 2],
    /// How many times [`Nftables::apply`] read the tables back.
    read_backs: u64,
}

const READ_ATTEMPTS: usize = 5;

impl Nftables {
    /// Opens the netlink socket (no privilege needed until a request is made).
    pub fn open() -> Result<Nftables, NftError> {
        Ok(Nftables {
            socket: netlink::Socket::open()?,
            verified: None,
            fingerprint_keys: [RandomState::new(), RandomState::new()],
            read_backs: 0,
        })
    }

    /// Whether no program has committed since this handle last verified or committed its
    /// tables (one GETGEN): then the kernel still holds what that [`Nftables::apply`] was
    /// given, and applying the same tables again would send nothing.
    pub fn still_verified(&mut self) -> Result<bool, NftError> {
        match &self.verified {
            Some(verified) => Ok(self.socket.generation()? == verified.generation),
            None => Ok(false),
        }
    }

    /// Every tracked TCP and UDP connection, each handed to `select` as the kernel lists them;
    /// returns those it selected.
    pub fn connections(
        &mut self,
        select: impl FnMut(&conntrack::Connection) -> bool,
    ) -> Result<Vec<conntrack::Connection>, NftError> {
        self.socket.connections(select)
    }

    /// Deletes tracked connections; returns how many were deleted (not those that had ended).
    pub fn forget(&mut self, connections: &[conntrack::Connection]) -> Result<usize, NftError> {
        self.socket.forget(connections)
    }

    /// The netlink port id of the socket this handle commits with: the [`monitor`] names it
    /// as the sender of our own commits.
    pub fn port_id(&self) -> u32 {
        self.socket.port_id()
    }

    /// How many times [`Nftables::apply`] has read the kernel's tables back, unsure what they
    /// held (a commit since the last it verified, or a new handle).
    pub fn read_backs(&self) -> u64 {
        self.read_backs
    }

    /// The fingerprint of a plan.
    fn fingerprint(&self, tables: &Tables) -> Fingerprint {
        self.fingerprint_keys
            .each_ref()
            .map(|keys| keys.hash_one(tables))
    }

    /// Reads enforcer's tables named `name`, every family, as the kernel holds them,
    /// consistently (retried if a transaction commits while reading).
    pub fn read(&mut self, name: &str) -> Result<HeldTables, NftError> {
        self.read_with_generation(name).map(|(_, held)| held)
    }

    /// The networks (with drop counters) and proxies `inet table` holds, the bound ports (with
    /// theirs) of `bridge table`, and the interfaces every table's `quarantined` set recorded;
    /// `None` when the inet table does not exist.
    pub fn view(&mut self, table: &str) -> Result<Option<KernelView>, NftError> {
        if self.socket.table(TableFamily::Inet, table)?.is_none() {
            return Ok(None);
        }
        // Set names from the object dump; elements only of the sets the view reads.
        let mut sets = TableState::default();
        let inet_objects = self.socket.dump_objects(TableFamily::Inet, table)?;
        for message in wire::messages(&inet_objects) {
            sets.absorb(table, &message);
        }
        let mut dumps = Vec::new();
        for name in sets.sets.keys().filter(|n| KernelView::reads(n)) {
            let dump = self.socket.dump_elements(TableFamily::Inet, table, name)?;
            dumps.push((name.clone(), dump));
        }
        let mut view =
            KernelView::from_dumps(dumps.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
        view.read_denials(&inet_objects);
        for family in [TableFamily::Bridge, TableFamily::Arp] {
            if self.socket.table(family, table)?.is_none() {
                continue;
            }
            let objects = self.socket.dump_objects(family, table)?;
            if family == TableFamily::Bridge {
                view.bridge_table = true;
                view.read_ports(&objects);
            }
            view.read_denials(&objects);
            let mut state = TableState::default();
            for message in wire::messages(&objects) {
                state.absorb(table, &message);
            }
            let quarantined = SetName::Quarantined.to_string();
            if state.sets.contains_key(&quarantined) {
                let dump = self.socket.dump_elements(family, table, &quarantined)?;
                view.read_quarantined(&dump);
            }
        }
        Ok(Some(view))
    }

    /// The hooks of enforcer's tables named `name` as the kernel holds them, by family (a
    /// family without an entry has no such table): the tables' flags and base chains, without
    /// rules or sets.
    pub fn hooks(&mut self, name: &str) -> Result<BTreeMap<TableFamily, TableHooks>, NftError> {
        let mut hooks = BTreeMap::new();
        for family in TableFamily::ALL {
            let Some(description) = self.socket.table(family, name)? else {
                continue;
            };
            let chains = self.socket.dump_chains(family, name)?;
            let mut state = TableState::default();
            for message in wire::messages(&description).chain(wire::messages(&chains)) {
                state.absorb(name, &message);
            }
            hooks.insert(family, TableHooks::of(&state));
        }
        Ok(hooks)
    }

    /// One table as the kernel holds it, `None` when it does not exist (not retried).
    fn read_table(
        &mut self,
        family: TableFamily,
        table: &str,
    ) -> Result<Option<TableState>, NftError> {
        let Some(description) = self.socket.table(family, table)? else {
            return Ok(None);
        };
        let mut state = TableState::default();
        let objects = self.socket.dump_objects(family, table)?;
        for message in wire::messages(&description).chain(wire::messages(&objects)) {
            state.absorb(table, &message);
        }
        let names: Vec<String> = state.sets.keys().cloned().collect();
        for set in names {
            let elements = self.socket.dump_elements(family, table, &set)?;
            for message in wire::messages(&elements) {
                state.absorb(table, &message);
            }
        }
        state.seal();
        Ok(Some(state))
    }

    /// Like [`Nftables::read`], with the ruleset generation the tables belong to.
    fn read_with_generation(&mut self, name: &str) -> Result<(u32, HeldTables), NftError> {
        for _ in 0..READ_ATTEMPTS {
            let before = self.socket.generation()?;
            let mut held = HeldTables::new();
            for family in TableFamily::ALL {
                if let Some(state) = self.read_table(family, name)? {
                    held.insert(family, state);
                }
            }
            if self.socket.generation()? == before {
                return Ok((before, held));
            }
        }
        Err(NftError::Unstable(name.to_string()))
    }

    /// Makes the kernel hold `tables`: when this handle already verified them and no commit has
    /// happened since (same ruleset generation), nothing is read or sent. Other tables are
    /// diffed against what this handle verified last when no commit has happened since, and
    /// otherwise against the kernel's tables, read back; everything that differs is replaced
    /// in one transaction. On return the kernel holds the desired tables or, on error, what it held
    /// before.
    pub fn apply(&mut self, tables: &Tables) -> Result<ApplyOutcome, NftError> {
        let mut known = None;
        let plan = self.fingerprint(tables);
        if let Some(verified) = self.verified.take() {
            if self.socket.generation()? == verified.generation {
                if verified.plan == plan {
                    self.verified = Some(verified);
                    return Ok(ApplyOutcome::Unchanged);
                }
                known = Some((verified.generation, verified.held));
            }
        }
        let desired = Desired::new(tables);
        let mut attempt = 0;
        loop {
            attempt += 1;
            // What this handle verified last, when no commit has happened since; otherwise the
            // kernel's tables, read back.
            let (generation, held) = match known.take() {
                Some(known) => known,
                None => {
                    self.read_backs += 1;
                    self.read_with_generation(&desired.name)?
                }
            };
            if desired.is_held(&held) {
                self.verify(generation, plan, desired);
                return Ok(ApplyOutcome::Unchanged);
            }
            let changes = desired.changes(&held);
            let (messages, bytes) = match self.commit(&desired, &held) {
                Ok(sizes) => sizes,
                // The tables changed between our read and our commit (an object we meant to
                // delete was gone, or one we create appeared): read again, once.
                Err(NftError::Rejected { errno, .. })
                    if attempt == 1 && (errno == libc::ENOENT || errno == libc::EEXIST) =>
                {
                    continue
                }
                Err(other) => return Err(other),
            };
            // Trust the new tables without reading them back only if ours was the one commit
            // since the read (the generation moved by exactly one).
            let after = self.socket.generation()?;
            if after == generation.wrapping_add(1) {
                self.verify(after, plan, desired);
            }
            return Ok(ApplyOutcome::Applied {
                messages,
                bytes,
                changes,
            });
        }
    }

    /// Records that the kernel holds `desired` (whose plan has fingerprint `plan`) at
    /// `generation`.
    fn verify(&mut self, generation: u32, plan: Fingerprint, desired: Desired) {
        self.verified = Some(Verified {
            generation,
            plan,
            held: desired.into_held(),
        });
    }

    /// Sends, in one transaction, what turns `held` (the kernel's tables as just read) into
    /// the desired tables; returns the number of messages and bytes sent.
    pub fn commit(
        &mut self,
        desired: &Desired,
        held: &HeldTables,
    ) -> Result<(usize, usize), NftError> {
        let transaction = desired.transaction(held, self.socket.next_seq() + 1);
        self.socket.skip_past(transaction.last_seq() + 1);
        self.socket.commit(&transaction)?;
        Ok((transaction.descriptions.len(), transaction.bytes.len()))
    }
}
