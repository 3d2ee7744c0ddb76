//! The kernel as the daemon sees it: one call that makes the kernel hold a table. The daemon's
//! logic (folding Docker's events, reloads, periodic checks) is written against [`Kernel`], so
//! that it runs against `enforcer_nft::Nftables` in production and against a recording fake in
//! unit tests, without root.

use enforcer_core::ruleset::Ruleset;
use enforcer_nft::{ApplyOutcome, NftError, Nftables};

/// What the daemon needs from the kernel.
pub trait Kernel {
    /// Makes the kernel hold `ruleset`, sending nothing when it already does. On error, the
    /// kernel still holds what it held before (a transaction is committed whole or not at all).
    fn apply(&mut self, ruleset: &Ruleset) -> Result<ApplyOutcome, NftError>;
}

impl Kernel for Nftables {
    fn apply(&mut self, ruleset: &Ruleset) -> Result<ApplyOutcome, NftError> {
        Nftables::apply(self, ruleset)
    }
}
