//! The live connections and channels of the jump host: what `accessctl ssh
//! list` shows, what `accessctl ssh kill` and revocation close, and the
//! per-user channel count behind `ssh.max_channels_per_user`, and how long
//! a connection has gone without a channel (`ssh.idle_timeout`).
//!
//! Entries are guards: a connection or channel is listed exactly while its
//! guard lives, so a task that ends (or panics) can never leave a ghost.
//! Closing is by cancellation token: a channel's token is a child of its
//! connection's, so closing a connection closes its channels.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use gatehouse_config::api::SshChannelInfo;
use tokio_util::sync::CancellationToken;

/// Shared by the server, the revocation watcher and the admin API.
#[derive(Default)]
pub struct Registry {
    next_id: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    conns: BTreeMap<u64, ConnEntry>,
    channels: BTreeMap<u64, ChannelEntry>,
}

struct ConnEntry {
    user: String,
    key_fingerprint: String,
    token: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
    /// Since when the connection has had no channel; `None` while it has.
    idle_since: Option<Instant>,
}

struct ChannelEntry {
    conn: u64,
    user: String,
    key_fingerprint: String,
    source: SocketAddr,
    requested: String,
    resolved: Option<SocketAddr>,
    started_unix: i64,
    stats: Arc<ChannelStats>,
    token: CancellationToken,
}

/// Byte counters and the close reason of one channel, updated by its relay.
#[derive(Debug, Default)]
pub struct ChannelStats {
    /// Client → target.
    pub up: AtomicU64,
    /// Target → client.
    pub down: AtomicU64,
    reason: Mutex<Option<String>>,
}

/// An authenticated connection's place in the registry.
pub struct ConnGuard {
    registry: Arc<Registry>,
    id: u64,
    token: CancellationToken,
    reason: Arc<Mutex<Option<String>>>,
}

/// A channel's place in the registry (reserved before the target connects).
pub struct ChannelGuard {
    registry: Arc<Registry>,
    id: u64,
    token: CancellationToken,
    stats: Arc<ChannelStats>,
    started: Instant,
}

/// `ssh.max_channels_per_user` channels are open already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyChannels {
    pub limit: usize,
}

/// Who holds a live connection, for revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLogin {
    pub conn: u64,
    pub user: String,
    pub key_fingerprint: String,
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Lists an authenticated connection; cancelling `token` closes it.
    pub fn add_connection(
        self: &Arc<Self>,
        user: &str,
        key_fingerprint: &str,
        token: CancellationToken,
    ) -> ConnGuard {
        let id = self.next_id();
        let reason = Arc::new(Mutex::new(None));
        self.lock().conns.insert(
            id,
            ConnEntry {
                user: user.to_string(),
                key_fingerprint: key_fingerprint.to_string(),
                token: token.clone(),
                reason: reason.clone(),
                idle_since: Some(Instant::now()),
            },
        );
        ConnGuard {
            registry: self.clone(),
            id,
            token,
            reason,
        }
    }

    /// Reserves a channel of connection `conn`, unless its user already
    /// holds `limit` channels (over all their connections).
    pub fn reserve_channel(
        self: &Arc<Self>,
        conn: &ConnGuard,
        source: SocketAddr,
        requested: String,
        limit: usize,
    ) -> Result<ChannelGuard, TooManyChannels> {
        let mut inner = self.lock();
        let Some(entry) = inner.conns.get(&conn.id) else {
            return Err(TooManyChannels { limit: 0 });
        };
        let (user, key_fingerprint) = (entry.user.clone(), entry.key_fingerprint.clone());
        let held = inner.channels.values().filter(|c| c.user == user).count();
        if held >= limit {
            return Err(TooManyChannels { limit });
        }
        if let Some(entry) = inner.conns.get_mut(&conn.id) {
            entry.idle_since = None;
        }
        let id = self.next_id();
        let token = conn.token.child_token();
        let stats = Arc::new(ChannelStats::default());
        inner.channels.insert(
            id,
            ChannelEntry {
                conn: conn.id,
                user,
                key_fingerprint,
                source,
                requested,
                resolved: None,
                started_unix: crate::time_fmt::now_unix(),
                stats: stats.clone(),
                token: token.clone(),
            },
        );
        Ok(ChannelGuard {
            registry: self.clone(),
            id,
            token,
            stats,
            started: Instant::now(),
        })
    }

    /// Every live channel, oldest first.
    pub fn channels(&self) -> Vec<SshChannelInfo> {
        self.lock()
            .channels
            .iter()
            .map(|(id, c)| c.info(*id))
            .collect()
    }

    /// Authenticated connections now.
    pub fn connection_count(&self) -> usize {
        self.lock().conns.len()
    }

    /// Authenticated connections of `user` now.
    pub fn connections_of(&self, user: &str) -> usize {
        self.lock()
            .conns
            .values()
            .filter(|c| c.user == user)
            .count()
    }

    /// Every authenticated connection's user and key.
    pub fn logins(&self) -> Vec<LiveLogin> {
        self.lock()
            .conns
            .iter()
            .map(|(id, c)| LiveLogin {
                conn: *id,
                user: c.user.clone(),
                key_fingerprint: c.key_fingerprint.clone(),
            })
            .collect()
    }

    /// Closes one channel; returns it as it was, or `None` if unknown.
    pub fn kill_channel(&self, id: u64, reason: &str) -> Option<SshChannelInfo> {
        let inner = self.lock();
        let channel = inner.channels.get(&id)?;
        channel.stats.set_reason(reason);
        channel.token.cancel();
        Some(channel.info(id))
    }

    /// Closes a connection and its channels.
    pub fn close_connection(&self, conn: u64, reason: &str) {
        let inner = self.lock();
        for channel in inner.channels.values().filter(|c| c.conn == conn) {
            channel.stats.set_reason(reason);
        }
        if let Some(entry) = inner.conns.get(&conn) {
            set_once(&entry.reason, reason);
            entry.token.cancel();
        }
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ChannelEntry {
    fn info(&self, id: u64) -> SshChannelInfo {
        SshChannelInfo {
            id,
            user: self.user.clone(),
            key_fingerprint: self.key_fingerprint.clone(),
            source: self.source.to_string(),
            requested: self.requested.clone(),
            resolved: self.resolved.map(|a| a.to_string()),
            started_at: crate::time_fmt::rfc3339(self.started_unix),
            bytes_up: self.stats.up.load(Ordering::Relaxed),
            bytes_down: self.stats.down.load(Ordering::Relaxed),
        }
    }
}

impl ChannelStats {
    /// Records why the channel closes; the first reason wins.
    pub fn set_reason(&self, reason: &str) {
        set_once(&self.reason, reason);
    }

    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ConnGuard {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Cancelled when the connection is to close (kill, revocation, shutdown).
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Why it was closed by the gateway, if it was.
    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How long the connection has gone without any channel at `now`;
    /// `None` while a channel is open.
    pub fn idle_for(&self, now: Instant) -> Option<Duration> {
        let inner = self.registry.lock();
        let since = inner.conns.get(&self.id)?.idle_since?;
        Some(now.saturating_duration_since(since))
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.registry.lock().conns.remove(&self.id);
    }
}

impl ChannelGuard {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Cancelled when the channel is to close.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    pub fn stats(&self) -> &Arc<ChannelStats> {
        &self.stats
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Records the checked address the channel relays to.
    pub fn set_resolved(&self, addr: SocketAddr) {
        if let Some(entry) = self.registry.lock().channels.get_mut(&self.id) {
            entry.resolved = Some(addr);
        }
    }
}

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        let mut inner = self.registry.lock();
        let Some(gone) = inner.channels.remove(&self.id) else {
            return;
        };
        if !inner.channels.values().any(|c| c.conn == gone.conn)
            && let Some(conn) = inner.conns.get_mut(&gone.conn)
        {
            conn.idle_since = Some(Instant::now());
        }
    }
}

fn set_once(slot: &Mutex<Option<String>>, reason: &str) {
    slot.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(|| reason.to_string());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn source() -> SocketAddr {
        "192.0.2.10:50000".parse().unwrap()
    }

    #[test]
    fn channels_are_listed_while_their_guard_lives() {
        let registry = Registry::new();
        let root = CancellationToken::new();
        let conn = registry.add_connection("alice", "SHA256:k", root.child_token());
        let chan = registry
            .reserve_channel(&conn, source(), "10.0.3.140:22".into(), 4)
            .unwrap();
        chan.set_resolved("10.0.3.140:22".parse().unwrap());
        chan.stats().up.fetch_add(5, Ordering::Relaxed);
        let listed = registry.channels();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].user, "alice");
        assert_eq!(listed[0].resolved.as_deref(), Some("10.0.3.140:22"));
        assert_eq!(listed[0].bytes_up, 5);
        drop(chan);
        assert!(registry.channels().is_empty());
        assert_eq!(registry.connection_count(), 1);
        drop(conn);
        assert_eq!(registry.connection_count(), 0);
    }

    #[test]
    fn a_connection_is_idle_only_while_it_has_no_channel() {
        let registry = Registry::new();
        let conn = registry.add_connection("alice", "k", CancellationToken::new());
        let later = Instant::now() + Duration::from_secs(60);
        assert!(conn.idle_for(later).unwrap() >= Duration::from_secs(59));
        let one = registry
            .reserve_channel(&conn, source(), "t:22".into(), 9)
            .unwrap();
        let two = registry
            .reserve_channel(&conn, source(), "t:22".into(), 9)
            .unwrap();
        assert_eq!(conn.idle_for(later), None);
        drop(one);
        assert_eq!(conn.idle_for(later), None, "one channel is still open");
        drop(two);
        let idle = conn.idle_for(later).unwrap();
        assert!(idle >= Duration::from_secs(59) && idle <= Duration::from_secs(60));
    }

    #[test]
    fn the_channel_limit_counts_every_connection_of_the_user() {
        let registry = Registry::new();
        let root = CancellationToken::new();
        let a = registry.add_connection("alice", "k1", root.child_token());
        let b = registry.add_connection("alice", "k2", root.child_token());
        let bob = registry.add_connection("bob", "k3", root.child_token());
        let _first = registry
            .reserve_channel(&a, source(), "t:22".into(), 2)
            .unwrap();
        let _second = registry
            .reserve_channel(&b, source(), "t:22".into(), 2)
            .unwrap();
        assert_eq!(
            registry
                .reserve_channel(&a, source(), "t:22".into(), 2)
                .err(),
            Some(TooManyChannels { limit: 2 })
        );
        assert!(
            registry
                .reserve_channel(&bob, source(), "t:22".into(), 2)
                .is_ok()
        );
    }

    #[test]
    fn kill_closes_one_channel_and_revocation_closes_the_connection() {
        let registry = Registry::new();
        let root = CancellationToken::new();
        let conn = registry.add_connection("alice", "k1", root.child_token());
        let one = registry
            .reserve_channel(&conn, source(), "t:22".into(), 9)
            .unwrap();
        let two = registry
            .reserve_channel(&conn, source(), "t:22".into(), 9)
            .unwrap();
        let killed = registry.kill_channel(one.id(), "killed by uid:0").unwrap();
        assert_eq!(killed.id, one.id());
        assert!(one.token().is_cancelled());
        assert_eq!(one.stats().reason().as_deref(), Some("killed by uid:0"));
        assert!(!two.token().is_cancelled());
        assert!(registry.kill_channel(999, "x").is_none());

        assert_eq!(
            registry.logins(),
            [LiveLogin {
                conn: conn.id(),
                user: "alice".into(),
                key_fingerprint: "k1".into()
            }]
        );
        registry.close_connection(conn.id(), "user disabled");
        assert!(conn.token().is_cancelled() && two.token().is_cancelled());
        assert_eq!(two.stats().reason().as_deref(), Some("user disabled"));
        assert_eq!(conn.reason().as_deref(), Some("user disabled"));
        // Shutdown cancels everything from the root.
        let other = registry.add_connection("bob", "k2", root.child_token());
        root.cancel();
        assert!(other.token().is_cancelled());
    }
}
