//! The link side of the daemon: a task that reports every bridge port (with its veth peer's MAC
//! address) to the main loop at start and after every burst of link changes, so that a
//! container's port is bound as soon as both it and Docker's report of the container exist.
//! On a failure it reports nothing new (the tables in force stay: a port not yet reported sends
//! nothing) and starts over after a capped backoff.

use std::time::Duration;

use enforcer_core::ports::BridgePort;
use enforcer_links::PortWatch;
use tokio::sync::mpsc;

/// First and longest wait between attempts to watch the links again.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Watches the links until the main loop is gone.
pub async fn watch_ports(updates: mpsc::UnboundedSender<Vec<BridgePort>>) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let error = match follow(&updates, &mut backoff).await {
            Ok(()) => return, // the main loop is gone
            Err(error) => error,
        };
        tracing::error!(
            retry_in_ms = backoff.as_millis() as u64,
            "watching the bridge ports failed: {error}; ports that appear meanwhile send nothing"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Opens a watch and reports the ports after each change; `Ok` once the main loop is gone.
async fn follow(
    updates: &mpsc::UnboundedSender<Vec<BridgePort>>,
    backoff: &mut Duration,
) -> Result<(), enforcer_links::LinkError> {
    let mut watch = PortWatch::open().await?;
    loop {
        let ports = watch.ports().await?;
        *backoff = BACKOFF_FIRST;
        if updates.send(ports).is_err() {
            return Ok(());
        }
        watch.changed().await?;
    }
}
