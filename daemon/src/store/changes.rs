//! The other node's writes to the shared store, seen at once: every write
//! transaction on PostgreSQL sends `NOTIFY gatehouse_changes` (delivered on
//! commit), and this listener ticks the store's change counter
//! ([`Store::subscribe`]) for each one, so the standby's peer table follows
//! the active's changes as a single gateway follows its own. After a lost
//! connection it ticks once on reconnecting (what was missed), then listens
//! again.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Store;

/// The channel every write notifies.
pub(crate) const CHANNEL: &str = "gatehouse_changes";

/// Pause before reconnecting after the listening connection failed.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Starts the listener on the shared store (nothing on SQLite).
pub fn spawn_listener(store: &Store, tracker: &TaskTracker, shutdown: CancellationToken) {
    let Some(target) = store.postgres_target().cloned() else {
        return;
    };
    let store = store.clone();
    tracker.spawn(async move {
        let mut first = true;
        while !shutdown.is_cancelled() {
            let (notices, mut heard) = tokio::sync::mpsc::channel(64);
            match target.connect(Some(notices)).await {
                Ok((client, driver)) => {
                    if let Err(error) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                        tracing::warn!(%error, "cannot listen for the other gateway's changes");
                    } else {
                        if !first {
                            tracing::info!("listening for the other gateway's changes again");
                        }
                        store.note_change();
                        loop {
                            tokio::select! {
                                () = shutdown.cancelled() => break,
                                got = heard.recv() => match got {
                                    Some(_) => store.note_change(),
                                    None => break, // the connection ended
                                },
                            }
                        }
                    }
                    drop(client);
                    driver.abort();
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot connect to listen for changes");
                }
            }
            first = false;
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(RECONNECT_AFTER) => {}
            }
        }
    });
}
