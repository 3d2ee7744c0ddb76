//! The Docker side of the daemon: a task that connects, snapshots, follows Docker's events and
//! reports each step to the main loop as a [`DockerUpdate`]; on any failure it reports the loss
//! and starts over after a capped backoff.

use std::time::Duration;

use enforcer_core::docker::DockerState;
use enforcer_docker::{since_now, Change, DockerError, DockerSource, ProxySelector};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// First and longest wait between attempts to reach Docker.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// At most this many queued events are folded into one transaction.
const BATCH_MAX: usize = 1000;

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
pub async fn watch_docker(
    host: String,
    proxies: ProxySelector,
    updates: mpsc::UnboundedSender<DockerUpdate>,
) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let error = match follow(&host, &proxies, &updates, &mut backoff).await {
            Ok(()) => return, // the main loop has gone
            Err(error) => error,
        };
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

/// One connection's life: snapshot, then events until the stream fails. `Ok` only when the
/// receiver is gone.
async fn follow(
    host: &str,
    proxies: &ProxySelector,
    updates: &mpsc::UnboundedSender<DockerUpdate>,
    backoff: &mut Duration,
) -> Result<(), DockerError> {
    let source = DockerSource::connect(host, proxies.clone()).await?;
    // Events from just before the snapshot on are replayed, so nothing between the snapshot
    // and the stream is lost (refreshing an object twice is harmless).
    let since = since_now();
    let mut state = source.snapshot().await?;
    *backoff = BACKOFF_FIRST;
    let snapshot = DockerUpdate::Snapshot {
        state: state.clone(),
        api: source.api_version(),
    };
    if updates.send(snapshot).is_err() {
        return Ok(());
    }
    // A reader task drains the stream into a queue, also while this task waits for Docker's
    // answers to refreshes; whatever is queued when a batch starts joins that batch.
    let (queue, mut queued) = mpsc::unbounded_channel();
    let stream = source.changes(&since);
    let reader = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            let failed = item.is_err();
            if queue.send(item).is_err() || failed {
                return;
            }
        }
    });
    let _stop_reader = AbortOnDrop(reader);
    while let Some(item) = queued.recv().await {
        let mut batch: Vec<Change> = vec![item?];
        while batch.len() < BATCH_MAX {
            match queued.try_recv() {
                Ok(item) => batch.push(item?),
                Err(_) => break,
            }
        }
        let mut reasons = Vec::with_capacity(batch.len());
        for change in &batch {
            source.refresh(&mut state, change).await?;
            reasons.push(change.to_string());
        }
        let changed = DockerUpdate::Changed {
            state: state.clone(),
            reasons,
        };
        if updates.send(changed).is_err() {
            return Ok(());
        }
    }
    Err(DockerError::StreamEnded(host.to_string()))
}
