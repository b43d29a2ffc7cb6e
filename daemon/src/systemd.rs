//! Tells systemd (`Type=notify`) how accessd is doing: `READY=1` once every
//! listener is open, `STOPPING=1` when shutdown starts, and `WATCHDOG=1`
//! pings while the runtime and the store answer (`WatchdogSec=`). Outside
//! systemd (no `NOTIFY_SOCKET`, no `WATCHDOG_USEC`) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::gateway::Core;

/// Startup is finished: every listener is open.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// Pings the watchdog at half its interval, each time after a store read
/// has answered: a stuck runtime, blocking pool or database stops the pings
/// and systemd restarts accessd.
pub fn spawn_watchdog(core: Core, tracker: &TaskTracker, shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(50));
    tracing::info!(?interval, "systemd watchdog enabled");
    tracker.spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(period) => {}
            }
            let probe = core.store().read(|r| r.audit_count());
            match tokio::time::timeout(period, probe).await {
                Ok(Ok(_)) => send(&[NotifyState::Watchdog]),
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "the store failed its health read; no watchdog ping");
                }
                Err(_) => tracing::error!(?period, "the store did not answer in time; no watchdog ping"),
            }
        }
    });
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}
