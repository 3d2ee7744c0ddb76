//! The changes waiting to be re-read, bounded and folded.
//!
//! Docker can send events faster than they are re-read (a container restarting in a loop, a
//! hostile socket). Each object is re-read once however many of its events are waiting: a
//! change for an object already queued replaces nothing and adds nothing. When more distinct
//! objects wait than its capacity, the queue gives them all up and asks for a
//! resync instead: one snapshot reads everything again, in two requests.

use std::collections::{HashSet, VecDeque};

use crate::Change;

/// How many distinct objects may wait before a resync replaces them.
pub const QUEUE_CAPACITY: usize = 1024;

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Re-read these objects, in the order their first event came.
    Refresh(Vec<Change>),
    /// Too much was waiting: take a new snapshot.
    Resync,
}

/// Waiting changes, at most one per object.
#[derive(Debug)]
pub struct ChangeQueue {
    order: VecDeque<Change>,
    queued: HashSet<ObjectKey>,
    overflowed: bool,
    capacity: usize,
}

/// What a change re-reads: a network (with the container it connects, if any) or a container.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ObjectKey {
    Network(String, Option<String>),
    Container(String),
}

fn key_of(change: &Change) -> ObjectKey {
    match change {
        Change::Network { id, container, .. } => ObjectKey::Network(id.clone(), container.clone()),
        Change::Container { id, .. } => ObjectKey::Container(id.clone()),
    }
}

impl Default for ChangeQueue {
    fn default() -> Self {
        ChangeQueue::with_capacity(QUEUE_CAPACITY)
    }
}

impl ChangeQueue {
    /// An empty queue holding at most `capacity` distinct objects.
    pub fn with_capacity(capacity: usize) -> ChangeQueue {
        ChangeQueue {
            order: VecDeque::new(),
            queued: HashSet::new(),
            overflowed: false,
            capacity,
        }
    }

    /// Adds `change` unless its object is already waiting.
    pub fn push(&mut self, change: Change) {
        if self.overflowed {
            return;
        }
        let key = key_of(&change);
        if self.queued.contains(&key) {
            return;
        }
        if self.order.len() == self.capacity {
            self.order.clear();
            self.queued.clear();
            self.overflowed = true;
            return;
        }
        self.queued.insert(key);
        self.order.push_back(change);
    }

    /// Everything waiting, as one piece of work; `None` when nothing waits.
    pub fn take(&mut self) -> Option<Work> {
        if std::mem::take(&mut self.overflowed) {
            return Some(Work::Resync);
        }
        if self.order.is_empty() {
            return None;
        }
        self.queued.clear();
        Some(Work::Refresh(self.order.drain(..).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, action: &str) -> Change {
        Change::Container {
            action: action.into(),
            id: id.into(),
            name: format!("c-{id}"),
        }
    }

    #[test]
    fn repeated_events_of_one_object_fold_into_one_refresh() {
        let mut queue = ChangeQueue::default();
        for round in 0..10_000 {
            queue.push(container("a", if round % 2 == 0 { "start" } else { "die" }));
            queue.push(container("b", "start"));
        }
        assert_eq!(
            queue.take(),
            Some(Work::Refresh(vec![
                container("a", "start"),
                container("b", "start")
            ]))
        );
        assert_eq!(queue.take(), None);
        queue.push(container("a", "die"));
        assert_eq!(
            queue.take(),
            Some(Work::Refresh(vec![container("a", "die")]))
        );
    }

    #[test]
    fn too_many_objects_ask_for_a_resync_and_hold_nothing() {
        let mut queue = ChangeQueue::with_capacity(3);
        for id in ["a", "b", "c", "d", "e"] {
            queue.push(container(id, "start"));
        }
        assert!(queue.order.is_empty() && queue.queued.is_empty());
        assert_eq!(queue.take(), Some(Work::Resync));
        assert_eq!(queue.take(), None);
        queue.push(container("f", "start"));
        assert_eq!(
            queue.take(),
            Some(Work::Refresh(vec![container("f", "start")]))
        );
    }

    #[test]
    fn a_network_connect_keeps_its_container() {
        let mut queue = ChangeQueue::default();
        for container in ["x", "y", "x"] {
            queue.push(Change::Network {
                action: "connect".into(),
                id: "n".into(),
                name: "net".into(),
                container: Some(container.into()),
            });
        }
        match queue.take() {
            Some(Work::Refresh(changes)) => assert_eq!(changes.len(), 2),
            other => panic!("{other:?}"),
        }
    }
}
