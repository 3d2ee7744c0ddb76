//! The kernel edge of enforcer: puts a [`Ruleset`] into the kernel as ONE nftables netlink
//! transaction, and reads back what the kernel holds to skip transactions that would change
//! nothing.
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
pub mod encode;
pub mod netlink;
pub mod state;
pub mod view;
pub mod wire;

use std::sync::OnceLock;

use enforcer_core::ruleset::Ruleset;

pub use state::{diff, TableState};
pub use view::{CountedSubnet, KernelView};

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
    /// The kernel already held the desired table: nothing was sent.
    Unchanged,
    /// One transaction replaced the table.
    Applied {
        /// Messages in the transaction.
        messages: usize,
        /// Bytes sent.
        bytes: usize,
        /// What changed, as [`diff`] lines.
        changes: Vec<String>,
    },
}

/// The desired table, encoded once: its messages and (computed on first use) its canonical
/// form.
pub struct Desired {
    parts: encode::Parts,
    table: String,
    state: OnceLock<TableState>,
}

impl Desired {
    /// Encodes `ruleset`.
    pub fn new(ruleset: &Ruleset) -> Desired {
        Desired {
            parts: encode::encode(ruleset),
            table: ruleset.table.clone(),
            state: OnceLock::new(),
        }
    }

    /// The canonical form of the desired table.
    pub fn state(&self) -> &TableState {
        self.state.get_or_init(|| self.parts.state())
    }

    /// What applying it changes, against `current` (the kernel's table, if it exists).
    pub fn changes(&self, current: Option<&TableState>) -> Vec<String> {
        match current {
            Some(current) => diff(&self.table, Some(current), self.state()),
            None => vec![format!(
                "+ table inet {} (absent from the kernel)",
                self.table
            )],
        }
    }
}

/// A ruleset known to be in the kernel at a given ruleset generation. The generation id changes
/// with every commit by anyone, so while it stays the same, the kernel still holds this table.
struct Verified {
    generation: u32,
    ruleset: Ruleset,
}

/// A connection to the kernel's nftables.
pub struct Nftables {
    socket: netlink::Socket,
    verified: Option<Verified>,
}

const READ_ATTEMPTS: usize = 5;

impl Nftables {
    /// Opens the netlink socket (no privilege needed until a request is made).
    pub fn open() -> Result<Nftables, NftError> {
        Ok(Nftables {
            socket: netlink::Socket::open()?,
            verified: None,
        })
    }

    /// Reads `inet table` as the kernel holds it, consistently (retried if a transaction
    /// commits while reading). `None` when the table does not exist.
    pub fn read(&mut self, table: &str) -> Result<Option<TableState>, NftError> {
        self.read_with_generation(table).map(|(_, state)| state)
    }

    /// The networks (with drop counters) and proxies `inet table` holds; `None` when the
    /// table does not exist.
    pub fn view(&mut self, table: &str) -> Result<Option<KernelView>, NftError> {
        if !self.socket.table_exists(table)? {
            return Ok(None);
        }
        // Set names from the object dump; elements only of the sets the view reads.
        let mut sets = TableState::default();
        for message in wire::messages(&self.socket.dump_objects(table)?) {
            sets.absorb(table, &message);
        }
        let mut dumps = Vec::new();
        for name in sets.sets.keys().filter(|n| KernelView::reads(n)) {
            dumps.push((name.clone(), self.socket.dump_elements(table, name)?));
        }
        Ok(Some(KernelView::from_dumps(
            dumps.iter().map(|(n, d)| (n.as_str(), d.as_slice())),
        )))
    }

    /// Like [`Nftables::read`], with the ruleset generation the state belongs to.
    fn read_with_generation(&mut self, table: &str) -> Result<(u32, Option<TableState>), NftError> {
        for _ in 0..READ_ATTEMPTS {
            let before = self.socket.generation()?;
            let state = if self.socket.table_exists(table)? {
                let mut state = TableState::default();
                let objects = self.socket.dump_objects(table)?;
                for message in wire::messages(&objects) {
                    state.absorb(table, &message);
                }
                let names: Vec<String> = state.sets.keys().cloned().collect();
                for set in names {
                    let elements = self.socket.dump_elements(table, &set)?;
                    for message in wire::messages(&elements) {
                        state.absorb(table, &message);
                    }
                }
                Some(state)
            } else {
                None
            };
            if self.socket.generation()? == before {
                return Ok((before, state));
            }
        }
        Err(NftError::Unstable(table.to_string()))
    }

    /// Makes the kernel hold `ruleset`: when this handle already verified it and no commit has
    /// happened since (same ruleset generation), nothing is read or sent; otherwise the table
    /// is read back and, when it differs, replaced in one transaction. On return the kernel
    /// holds the desired table or, on error, what it held before.
    pub fn apply(&mut self, ruleset: &Ruleset) -> Result<ApplyOutcome, NftError> {
        if let Some(verified) = &self.verified {
            if verified.ruleset == *ruleset && self.socket.generation()? == verified.generation {
                return Ok(ApplyOutcome::Unchanged);
            }
        }
        self.verified = None;
        let desired = Desired::new(ruleset);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (generation, current) = self.read_with_generation(&desired.table)?;
            if let Some(current) = &current {
                if current == desired.state() {
                    self.verified = Some(Verified {
                        generation,
                        ruleset: ruleset.clone(),
                    });
                    return Ok(ApplyOutcome::Unchanged);
                }
            }
            let changes = desired.changes(current.as_ref());
            let (messages, bytes) = match self.commit(&desired, current.as_ref()) {
                Ok(sizes) => sizes,
                // The table changed between our read and our commit (an object we meant to
                // delete was gone, or one we create appeared): read again, once.
                Err(NftError::Rejected { errno, .. })
                    if attempt == 1 && (errno == libc::ENOENT || errno == libc::EEXIST) =>
                {
                    continue
                }
                Err(other) => return Err(other),
            };
            // Trust the new table without reading it back only if ours was the one commit
            // since the read (the generation moved by exactly one).
            let after = self.socket.generation()?;
            if after == generation.wrapping_add(1) {
                self.verified = Some(Verified {
                    generation: after,
                    ruleset: ruleset.clone(),
                });
            }
            return Ok(ApplyOutcome::Applied {
                messages,
                bytes,
                changes,
            });
        }
    }

    /// Sends, in one transaction, what turns `current` (the kernel's table as just read) into
    /// the desired table; returns the number of messages and bytes sent.
    pub fn commit(
        &mut self,
        desired: &Desired,
        current: Option<&TableState>,
    ) -> Result<(usize, usize), NftError> {
        // The desired canonical state is only needed to compare against an existing table.
        let against = current.map(|current| (current, desired.state()));
        let transaction = desired
            .parts
            .transaction(against, self.socket.next_seq() + 1);
        self.socket.skip_past(transaction.last_seq() + 1);
        self.socket.commit(&transaction)?;
        Ok((transaction.descriptions.len(), transaction.bytes.len()))
    }
}
