//! A set's elements in canonical form, held compactly: a verified table of 10,000 role members
//! has over 200,000 of them, and the agent keeps the table it verified for as long as it runs.
//! Every element's key and value sit end to end in one buffer, with two offsets per element:
//! about 20 bytes for a flow of IPv4 where a map of boxed slices took about 100.

use std::cmp::Ordering;

/// Element key -> canonical element value (both bytes), like a map. Elements may be added in
/// any order (a hash set dumps in hash order); [`Elements::seal`] sorts them once, after which
/// lookups are binary searches. Every method answers the same before and after sealing.
#[derive(Debug, Clone, Default)]
pub struct Elements {
    /// Each element's key, then its value.
    bytes: Vec<u8>,
    /// Per element, the end of its key and the end of its value in `bytes`.
    ends: Vec<(u32, u32)>,
    /// Whether `ends` is in key order with no key twice.
    sorted: bool,
}

impl Elements {
    /// Adds an element, or replaces the value of the element with this key.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) {
        let follows = self.ends.is_empty() || (self.sorted && self.key(self.ends.len() - 1) < key);
        self.bytes.extend_from_slice(key);
        let key_end = self.bytes.len() as u32;
        self.bytes.extend_from_slice(value);
        self.ends.push((key_end, self.bytes.len() as u32));
        self.sorted = follows;
    }

    /// Sorts the elements by key, the last one added winning for a key added twice, and gives
    /// spare capacity back.
    pub fn seal(&mut self) {
        if !self.sorted {
            let order = self.order();
            let mut bytes = Vec::with_capacity(self.bytes.len());
            let mut ends = Vec::with_capacity(order.len());
            for &i in &order {
                bytes.extend_from_slice(self.key(i));
                let key_end = bytes.len() as u32;
                bytes.extend_from_slice(self.value(i));
                ends.push((key_end, bytes.len() as u32));
            }
            (self.bytes, self.ends, self.sorted) = (bytes, ends, true);
        }
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
    }

    /// The value of the element with this key.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        if self.sorted {
            return self.search(key).map(|i| self.value(i));
        }
        (0..self.ends.len())
            .rev()
            .find(|&i| self.key(i) == key)
            .map(|i| self.value(i))
    }

    /// The elements, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let order: Vec<usize> = match self.sorted {
            true => (0..self.ends.len()).collect(),
            false => self.order(),
        };
        order.into_iter().map(|i| (self.key(i), self.value(i)))
    }

    /// How many elements there are.
    pub fn len(&self) -> usize {
        match self.sorted {
            true => self.ends.len(),
            false => self.order().len(),
        }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn key(&self, i: usize) -> &[u8] {
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1].1 as usize,
        };
        &self.bytes[start..self.ends[i].0 as usize]
    }

    fn value(&self, i: usize) -> &[u8] {
        &self.bytes[self.ends[i].0 as usize..self.ends[i].1 as usize]
    }

    /// The index of the element with this key, in sorted elements.
    fn search(&self, key: &[u8]) -> Option<usize> {
        let (mut low, mut high) = (0, self.ends.len());
        while low < high {
            let middle = (low + high) / 2;
            match self.key(middle).cmp(key) {
                Ordering::Less => low = middle + 1,
                Ordering::Greater => high = middle,
                Ordering::Equal => return Some(middle),
            }
        }
        None
    }

    /// The indices of the elements in key order, only the last added of each key.
    fn order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.ends.len()).collect();
        // Stable: of equal keys, the last added stays last, and is the one kept.
        order.sort_by(|&a, &b| self.key(a).cmp(self.key(b)));
        let mut kept: Vec<usize> = Vec::with_capacity(order.len());
        for i in order {
            match kept.last_mut() {
                Some(last) if self.key(*last) == self.key(i) => *last = i,
                _ => kept.push(i),
            }
        }
        kept
    }
}

impl PartialEq for Elements {
    fn eq(&self, other: &Elements) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Elements {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    proptest! {
        /// Whatever the order of insertion, and sealed or not, the elements answer as a map
        /// built from the same insertions.
        #[test]
        fn elements_answer_as_a_map(
            inserts in proptest::collection::vec(
                (proptest::collection::vec(0u8..4, 0..3), proptest::collection::vec(any::<u8>(), 0..3)),
                0..40,
            ),
            probes in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..3), 0..10),
        ) {
            let mut elements = Elements::default();
            let mut map = BTreeMap::new();
            for (key, value) in &inserts {
                elements.insert(key, value);
                map.insert(key.clone(), value.clone());
            }
            let mut sealed = elements.clone();
            sealed.seal();
            for candidate in [&elements, &sealed] {
                prop_assert_eq!(candidate.len(), map.len());
                let listed: Vec<(Vec<u8>, Vec<u8>)> =
                    candidate.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
                let expected: Vec<(Vec<u8>, Vec<u8>)> = map.clone().into_iter().collect();
                prop_assert_eq!(listed, expected);
                for probe in probes.iter().chain(map.keys()) {
                    prop_assert_eq!(candidate.get(probe), map.get(probe).map(Vec::as_slice));
                }
            }
            prop_assert_eq!(&elements, &sealed);
        }
    }
}
