//! What differs between two keyed collections: the one comparison behind every "what changed"
//! text (topology changes in the daemon's log, the kernel table diff, `enforcer status`).
//! Callers choose how to word and order the entries; this module only pairs them by key.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// One difference between an old and a new collection, by key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<K, V> {
    /// The key is only in the new collection.
    Added(K, V),
    /// The key is only in the old collection.
    Removed(K, V),
    /// The key is in both, with unequal values.
    Changed {
        /// The key.
        key: K,
        /// Its value in the old collection.
        old: V,
        /// Its value in the new collection.
        new: V,
    },
}

impl<K, V> Change<K, V> {
    /// Whether this is an [`Change::Added`] entry.
    pub fn is_added(&self) -> bool {
        matches!(self, Change::Added(..))
    }

    /// Whether this is a [`Change::Removed`] entry.
    pub fn is_removed(&self) -> bool {
        matches!(self, Change::Removed(..))
    }
}

/// The entries that differ from `old` to `new`, in key order; keys with equal values yield
/// nothing. Each side is read as a map: when a key repeats, its last value counts. Pass
/// references (`map.iter()`) to compare without copying.
pub fn diff<K: Ord, V: PartialEq>(
    old: impl IntoIterator<Item = (K, V)>,
    new: impl IntoIterator<Item = (K, V)>,
) -> Vec<Change<K, V>> {
    let mut old = old
        .into_iter()
        .collect::<BTreeMap<K, V>>()
        .into_iter()
        .peekable();
    let mut new = new
        .into_iter()
        .collect::<BTreeMap<K, V>>()
        .into_iter()
        .peekable();
    let mut out = Vec::new();
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => return out,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((was, _)), Some((now, _))) => was.cmp(now),
        };
        match order {
            Ordering::Less => out.extend(old.next().map(|(key, was)| Change::Removed(key, was))),
            Ordering::Greater => out.extend(new.next().map(|(key, now)| Change::Added(key, now))),
            Ordering::Equal => {
                if let (Some((key, was)), Some((_, now))) = (old.next(), new.next()) {
                    if was != now {
                        out.push(Change::Changed {
                            key,
                            old: was,
                            new: now,
                        });
                    }
                }
            }
        }
    }
}

/// `changes` with the additions moved after the rest, each group still in key order: what
/// went or changed, then what came.
pub fn additions_last<K, V>(changes: Vec<Change<K, V>>) -> impl Iterator<Item = Change<K, V>> {
    let (added, others): (Vec<_>, Vec<_>) = changes.into_iter().partition(Change::is_added);
    others.into_iter().chain(added)
}

/// `changes` with the removals moved before the rest, each group still in key order: what went,
/// then what came or changed.
pub fn removals_first<K, V>(changes: Vec<Change<K, V>>) -> impl Iterator<Item = Change<K, V>> {
    let (removed, others): (Vec<_>, Vec<_>) = changes.into_iter().partition(Change::is_removed);
    removed.into_iter().chain(others)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn entries_come_in_key_order() {
        let old = [("a", 1), ("b", 2), ("d", 4)];
        let new = [("b", 3), ("c", 3), ("d", 4)];
        assert_eq!(
            diff(old, new),
            [
                Change::Removed("a", 1),
                Change::Changed {
                    key: "b",
                    old: 2,
                    new: 3
                },
                Change::Added("c", 3),
            ]
        );
    }

    #[test]
    fn additions_and_removals_can_be_grouped() {
        let changes = || diff([(1, 'a'), (3, 'c')], [(0, 'z'), (3, 'd'), (4, 'e')]);
        let keys = |it: &mut dyn Iterator<Item = Change<i32, char>>| -> Vec<i32> {
            it.map(|c| match c {
                Change::Added(k, _) | Change::Removed(k, _) | Change::Changed { key: k, .. } => k,
            })
            .collect()
        };
        assert_eq!(keys(&mut additions_last(changes())), [1, 3, 0, 4]);
        assert_eq!(keys(&mut removals_first(changes())), [1, 0, 3, 4]);
    }

    proptest! {
        /// Applying the entries to `old` gives `new`, and no entry is about an equal value.
        #[test]
        fn applying_the_diff_gives_the_new_map(
            old in prop::collection::btree_map(0u8..16, 0u8..4, 0..12),
            new in prop::collection::btree_map(0u8..16, 0u8..4, 0..12),
        ) {
            let mut applied = old.clone();
            let changes = diff(old.clone(), new.clone());
            let keys: Vec<u8> = changes.iter().map(|c| match c {
                Change::Added(k, _) | Change::Removed(k, _) | Change::Changed { key: k, .. } => *k,
            }).collect();
            prop_assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
            for change in changes {
                match change {
                    Change::Added(k, v) => prop_assert!(applied.insert(k, v).is_none()),
                    Change::Removed(k, v) => prop_assert_eq!(applied.remove(&k), Some(v)),
                    Change::Changed { key, old: was, new: now } => {
                        prop_assert_ne!(was, now);
                        prop_assert_eq!(applied.insert(key, now), Some(was));
                    }
                }
            }
            prop_assert_eq!(applied, new);
        }
    }
}
