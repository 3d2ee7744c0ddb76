//! The Docker side of the daemon: a task that connects, snapshots, follows Docker's events and
//! reports each step to the main loop as a [`DockerUpdate`]; on any failure it reports the loss
//! and starts over after a capped backoff.
//!
//! Events wait in a bounded [`ChangeQueue`] that folds repeated events of one object into one
//! re-read, and asks for a new snapshot when too many distinct objects wait: a flood of events
//! costs bounded memory and at most one re-read per object.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use enforcer_core::docker::DockerState;
use enforcer_docker::queue::{ChangeQueue, Work};
use enforcer_docker::{since_now, DockerError, DockerSource};
use futures_util::StreamExt;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

/// First and longest wait between attempts to reach Docker.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection that lived this long was healthy: the next failure retries quickly again. One
/// that fails sooner (a snapshot that works, then an event stream that fails at once) keeps
/// backing off, so a broken Docker costs a reconnect every [`BACKOFF_MAX`] at most.
const HEALTHY_FOR: Duration = Duration::from_secs(10);

/// What the Docker task reports to the main loop.
#[derive(Debug)]
pub enum DockerUpdate {
    /// Connected and read a full snapshot.
    Snapshot {
        /// Every network and running container.
        state: DockerState,
        /// The Engine API version spoken.
        api: String,
    },
    /// Events were processed; the state after them.
    Changed {
        /// The state after the events.
        state: DockerState,
        /// One per event (`network create NAME`, ...).
        reasons: Vec<String>,
    },
    /// Docker could not be reached or was lost; the last state stays in force.
    Lost {
        /// What failed.
        error: String,
        /// When the next attempt is made.
        retry_in: Duration,
    },
}

/// Connects, snapshots, follows events; on any failure reports it and starts over after a
/// capped backoff. Ends when the main loop is gone.
pub async fn watch_docker(host: String, updates: mpsc::UnboundedSender<DockerUpdate>) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let started = Instant::now();
        let error = match follow(&host, &updates).await {
            Ok(()) => return, // the main loop has gone
            Err(error) => error,
        };
        if started.elapsed() >= HEALTHY_FOR {
            backoff = BACKOFF_FIRST;
        }
        let lost = DockerUpdate::Lost {
            error: error.to_string(),
            retry_in: backoff,
        };
        if updates.send(lost).is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Aborts a task when dropped (the event reader dies with its connection).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Events waiting to be re-read, shared by the stream reader and the task that re-reads.
#[derive(Default)]
struct Pending {
    queue: Mutex<ChangeQueue>,
    /// Why the stream ended, once it has.
    failed: Mutex<Option<DockerError>>,
    wake: Notify,
}

/// One connection's life: snapshot, then events until the stream fails. `Ok` only when the
/// receiver is gone.
async fn follow(
    host: &str,
    updates: &mpsc::UnboundedSender<DockerUpdate>,
) -> Result<(), DockerError> {
    let source = DockerSource::connect(host).await?;
    // Events from just before the snapshot on are replayed, so nothing between the snapshot
    // and the stream is lost (refreshing an object twice is harmless).
    let since = since_now();
    let mut state = source.snapshot().await?;
    let snapshot = DockerUpdate::Snapshot {
        state: state.clone(),
        api: source.api_version(),
    };
    if updates.send(snapshot).is_err() {
        return Ok(());
    }
    // A reader task drains the stream into the queue, also while this task waits for Docker's
    // answers to re-reads; whatever waits when a batch starts joins that batch.
    let pending = Arc::new(Pending::default());
    let reader = tokio::spawn(read_events(source.changes(&since), pending.clone()));
    let _stop_reader = AbortOnDrop(reader);
    loop {
        pending.wake.notified().await;
        if let Some(error) = pending.failed.lock().expect("not poisoned").take() {
            return Err(error);
        }
        let work = pending.queue.lock().expect("not poisoned").take();
        let reasons = match work {
            None => continue,
            Some(Work::Resync) => {
                state = source.snapshot().await?;
                vec!["more events than the queue holds: full resynchronisation".to_string()]
            }
            Some(Work::Refresh(batch)) => {
                source.refresh(&mut state, &batch).await?;
                batch.iter().map(ToString::to_string).collect()
            }
        };
        let changed = DockerUpdate::Changed {
            state: state.clone(),
            reasons,
        };
        if updates.send(changed).is_err() {
            return Ok(());
        }
    }
}

/// Moves the stream's changes into `pending` until the stream fails (which it always does in
/// the end: it closes with [`DockerError::StreamEnded`]).
async fn read_events(
    stream: impl futures_util::Stream<Item = Result<enforcer_docker::Change, DockerError>>,
    pending: Arc<Pending>,
) {
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(change) => pending.queue.lock().expect("not poisoned").push(change),
            Err(error) => {
                *pending.failed.lock().expect("not poisoned") = Some(error);
                pending.wake.notify_one();
                return;
            }
        }
        pending.wake.notify_one();
    }
}
