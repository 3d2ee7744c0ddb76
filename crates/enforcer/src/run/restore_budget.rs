//! How often the monitor's reports may make the agent restore its tables: a burst of
//! [`RestoreBudget::BURST`] restores goes at once; past it, one more every
//! [`RestoreBudget::INTERVAL`] (the generic cell rate algorithm, in whole nanoseconds). Another
//! writer fighting over the table then costs the agent at most ten transactions a second, and
//! each of its changes is undone within one interval, not at the periodic check.

use std::time::{Duration, Instant};

/// When the next restore would be due were restores spaced evenly.
#[derive(Debug, Clone)]
pub(super) struct RestoreBudget {
    due: Instant,
}

impl RestoreBudget {
    /// Restores that may follow each other at once.
    pub(super) const BURST: u32 = 10;
    /// The sustained spacing of restores past a burst.
    pub(super) const INTERVAL: Duration = Duration::from_millis(100);

    /// A full budget at `now`.
    pub(super) fn new(now: Instant) -> RestoreBudget {
        RestoreBudget { due: now }
    }

    /// Spends one restore at `now`, or says how long until one is left.
    pub(super) fn spend(&mut self, now: Instant) -> Result<(), Duration> {
        let due = self.due.max(now);
        let tolerance = Self::INTERVAL * (Self::BURST - 1);
        let ahead = due - now;
        if ahead > tolerance {
            return Err(ahead - tolerance);
        }
        self.due = due + Self::INTERVAL;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_one_restore_per_refill_interval() {
        let start = Instant::now();
        let mut budget = RestoreBudget::new(start);
        for _ in 0..10 {
            assert_eq!(budget.spend(start), Ok(()));
        }
        let wait = budget.spend(start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert!(budget.spend(start + Duration::from_millis(60)).is_err());
        assert_eq!(budget.spend(start + Duration::from_millis(100)), Ok(()));
        // A quiet second refills the whole burst, and no more.
        let later = start + Duration::from_secs(5);
        for _ in 0..10 {
            assert_eq!(budget.spend(later), Ok(()));
        }
        assert!(budget.spend(later).is_err());
    }
}
