//! The SSH jump host: a russh server on `ssh.listen` that brokers stock
//! `ssh -J` / `ssh -W` sessions (direct-tcpip channels) to the private
//! hosts a user's groups may reach, and nothing else — no shell, exec,
//! subsystem, agent, X11 or remote forwarding.
//!
//! Layout:
//! - [`server`]: the russh `Handler` of one connection (auth, refusals);
//! - [`conn_state`]: a connection's legal states (pre-auth, key accepted,
//!   verified, logged in) as an enum;
//! - [`channel`]: one direct-tcpip channel's task (check, connect, audit, relay);
//! - [`policy`]: the target decision without I/O;
//! - [`relay`]: connecting to the checked address and copying bytes;
//! - [`quick_ack`]: prompt ACKs on the client socket during the handshake;
//! - [`auth`]: the user key check, revocation;
//! - [`limits`]: pre-auth limits and growing failure penalties;
//! - [`registry`]: live connections and channels (`accessctl ssh`);
//! - [`audit`]: record helpers and aggregation of failed logins.
//!
//! Crypto: russh on aws-lc-rs (its default). Against OpenSSH 9.2 as the
//! jump host (`tests/bench/ssh-bench.sh`), ring's portable-C Poly1305 alone
//! was a quarter of the jump's CPU and put chacha20-poly1305 at 1.23x
//! OpenSSH's CPU per GiB; aws-lc's brings it to parity. Key exchange
//! mlkem768x25519-sha256 (post-quantum hybrid) and curve25519; ciphers
//! chacha20-poly1305 and AES-GCM only; no compression. Bulk transfers are
//! cheaper with 64 KiB channel packets, buffered socket reads and a relay
//! buffer of one whole packet (see [`russh_config`] and [`relay`]).
//!
//! Does not own users or keys (the store), the host key ([`crate::keys::ssh_host`],
//! loaded at start-up), the policy rules (`gatehouse_config::policy`), or the
//! host's addresses ([`crate::host_addrs`]). Its listener is bound by the caller.

pub mod audit;
pub mod auth;
mod channel;
mod conn_state;
pub mod limits;
pub mod policy;
mod quick_ack;
pub mod registry;
pub mod relay;
pub mod server;

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use russh::keys::{Algorithm, EcdsaCurve, HashAlg, PrivateKey};
use russh::{Preferred, cipher, kex};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::event::{Actor, Source};
use crate::gateway::Core;
use crate::store::NewAuditEvent;
use conn_state::ConnState;
use limits::{PreAuth, StartupRefusal};
use registry::Registry;
use server::Connection;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot listen on ssh.listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How often a logged-in connection checks whether it has gone without a
/// channel for `ssh.idle_timeout`.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// SSH keepalive: a client that answers none of 3 probes 30 s apart is gone.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_MAX: usize = 3;
/// Failed auth attempts one connection may make before it is dropped.
const MAX_AUTH_ATTEMPTS: usize = 6;
/// Bytes read from a client socket at once (two of the largest packets a
/// client sends, see `maximum_packet_size`).
const CLIENT_READ_BUFFER: usize = 128 * 1024;
/// How long a closing connection may take to say goodbye.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// What the rest of the daemon sees of the running jump host.
#[derive(Clone)]
pub struct SshHandle {
    shared: Arc<Shared>,
}

/// Shared by every connection and channel task.
pub(crate) struct Shared {
    core: Core,
    registry: Arc<Registry>,
    limiter: Arc<PreAuth>,
    failures: audit::FailureLog,
    /// Refused channels and requests of logged-in users, per user.
    refusals: audit::FailureLog<String>,
    /// Records of what happened that the store refused, for a retry.
    unwritten: audit::Unwritten,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    host_key: PrivateKey,
    listen: SocketAddr,
}

/// Binds `addr` for [`spawn_jump_host`].
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, SshError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SshError::Bind { addr, source })
}

/// Serves the jump host on `listener` with the core's host key, and starts
/// the revocation watcher and the failure summaries, until `shutdown`.
pub fn spawn_jump_host(
    core: &Core,
    listener: TcpListener,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Result<SshHandle, SshError> {
    let listen = listener.local_addr().map_err(|source| SshError::Bind {
        addr: core.config().ssh.listen,
        source,
    })?;
    let shared = Arc::new(Shared::new(core, listen, tracker, shutdown));
    let russh_config = Arc::new(russh_config(&shared.host_key));
    tracker.spawn(accept_loop(shared.clone(), listener, russh_config));
    tracker.spawn(watch_revocations(shared.clone()));
    tracker.spawn(flush_failure_summaries(shared.clone()));
    tracing::info!(%listen, fingerprint = %crate::keys::ssh_host::fingerprint(shared.host_key.public_key()), "SSH jump host up");
    Ok(SshHandle { shared })
}

impl SshHandle {
    /// The bound address (the real port when `ssh.listen` asked for 0).
    pub fn listen(&self) -> SocketAddr {
        self.shared.listen
    }

    pub fn host_key(&self) -> &russh::keys::PublicKey {
        self.shared.host_key.public_key()
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.shared.registry
    }
}

impl Shared {
    fn new(
        core: &Core,
        listen: SocketAddr,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Shared {
            core: core.clone(),
            registry: Registry::new(),
            limiter: PreAuth::new(),
            failures: audit::FailureLog::new(Instant::now()),
            refusals: audit::FailureLog::with_budget(
                Instant::now(),
                audit::REFUSALS_PER_WINDOW,
                audit::REFUSALS_PER_USER,
            ),
            unwritten: audit::Unwritten::new("SSH"),
            tracker: tracker.clone(),
            shutdown,
            host_key: core.ssh_host_key().clone(),
            listen,
        }
    }

    /// Writes one audit record; false (and an error log) when it could not.
    async fn audit(&self, event: NewAuditEvent) -> bool {
        let kind = event.kind;
        match self
            .core
            .store()
            .write(move |w| w.audit(event).map(drop))
            .await
        {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(error = %err, kind = kind.as_str(), "cannot write an SSH audit record");
                false
            }
        }
    }

    /// Writes the record of something that happened whatever the log says
    /// (a failed login, a refused channel, an ended session, a summary);
    /// one the store refuses is kept and written at the next flush.
    async fn record(&self, event: NewAuditEvent) {
        // Refused: kept (and logged) by `Unwritten`.
        let _ = self.unwritten.write_or_keep(self.core.store(), event).await;
    }

    /// Writes the records the store refused before, oldest first; from the
    /// first it refuses again, they stay for the next time.
    async fn retry_unwritten(&self) {
        self.unwritten.write_kept(self.core.store()).await;
    }

    /// Writes an `ssh.forward.deny` record, or counts it for its user's
    /// summary once that user has had a few this minute: a logged-in user
    /// cannot flood the log with refused channels.
    async fn audit_refusal(&self, event: NewAuditEvent, reason: &'static str) {
        if self
            .refusals
            .note(event.actor.clone(), reason, Instant::now())
        {
            self.record(event).await;
        }
    }

    /// The host's addresses (the last known list if listing fails).
    fn local_addrs(&self) -> Vec<IpAddr> {
        self.core.host_addrs().current()
    }
}

/// Modern algorithms only: see the module documentation.
fn russh_config(host_key: &PrivateKey) -> russh::server::Config {
    const KEX: &[kex::Name] = &[
        kex::MLKEM768X25519_SHA256,
        kex::CURVE25519,
        kex::CURVE25519_PRE_RFC_8731,
        kex::EXTENSION_SUPPORT_AS_SERVER,
        kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
    ];
    const CIPHERS: &[cipher::Name] = &[
        cipher::CHACHA20_POLY1305,
        cipher::AES_256_GCM,
        cipher::AES_128_GCM,
    ];
    // User key algorithms (the host key is ed25519): no SHA-1 RSA.
    const KEYS: &[Algorithm] = &[
        Algorithm::Ed25519,
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP384,
        },
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP521,
        },
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha256),
        },
    ];
    russh::server::Config {
        server_id: russh::SshId::Standard(Cow::Borrowed("SSH-2.0-gatehouse")),
        methods: russh::MethodSet::from(&[russh::MethodKind::PublicKey][..]),
        // (Under the fuzzer, no delay: see daemon/fuzz, `ssh_preauth`.)
        auth_rejection_time: if cfg!(fuzzing) {
            Duration::ZERO
        } else {
            Duration::from_millis(500)
        },
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key.clone()],
        max_auth_attempts: MAX_AUTH_ATTEMPTS,
        // Liveness comes from keepalives; idleness is per channel
        // (`ssh.idle_timeout`): russh's inactivity timer is reset by
        // keepalive replies (russh#316), so it would measure nothing.
        inactivity_timeout: None,
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        nodelay: true,
        // Clients send channel data in packets of at most this (the SSH
        // limit for a packet is 256 KiB; OpenSSH's own sshd offers 32 KiB):
        // twice russh's default halves the per-packet work of a transfer.
        maximum_packet_size: 65535,
        // The window a client may send into before the jump host asks for
        // more stays russh's 2 MiB: an upload through ssh -J (chacha20, 1
        // GiB, medians of 3, tests/bench/ssh-bench.sh) ran at 217, 220, 201
        // and 222 MB/s with windows of 0.5, 2, 8 and 32 MiB, at 1.63 to 1.67
        // CPU-s/GiB: the window is not what limits it.
        preferred: Preferred {
            kex: Cow::Borrowed(KEX),
            key: Cow::Borrowed(KEYS),
            cipher: Cow::Borrowed(CIPHERS),
            ..Preferred::DEFAULT
        },
        ..Default::default()
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    config: Arc<russh::server::Config>,
) {
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %err, "SSH accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ssh = &shared.core.config().ssh;
        let admitted = shared.limiter.admit(
            peer.ip(),
            ssh.max_startups as usize,
            ssh.max_startups_per_source as usize,
            Instant::now(),
        );
        match admitted {
            Ok(slot) => {
                relay::tune(&socket);
                let state = ConnState::new(slot, shared.shutdown.child_token());
                shared.tracker.spawn(serve_connection(
                    shared.clone(),
                    config.clone(),
                    socket,
                    peer,
                    state,
                ));
            }
            Err(refused) => {
                // Closed before the banner; the failures that earned a
                // penalty were audited already.
                tracing::debug!(%peer, ?refused, "SSH connection refused before authentication");
                if let StartupRefusal::SourcePenalty { .. } = refused {
                    shared.note_failure(peer, None, "penalised", &[]).await;
                }
                drop(socket);
            }
        }
    }
}

/// Runs one connection: the login grace time, closing on kill, revocation
/// or shutdown (with a message), and the `ssh.auth.fail` record of a
/// connection that never logged in.
async fn serve_connection(
    shared: Arc<Shared>,
    config: Arc<russh::server::Config>,
    socket: TcpStream,
    peer: SocketAddr,
    state: ConnState,
) {
    let token = state.token.clone();
    let state = Arc::new(Mutex::new(state));
    let handler = Connection {
        shared: shared.clone(),
        peer,
        state: state.clone(),
    };
    let grace = shared.core.config().ssh.login_grace_time;
    let deadline = tokio::time::Instant::now() + grace;
    let started = tokio::select! {
        started = tokio::time::timeout_at(deadline, russh::server::run_stream(config, client_stream(socket), handler)) => started,
        () = token.cancelled() => return,
    };
    let session = match started {
        Ok(Ok(session)) => session,
        Ok(Err(err)) => {
            tracing::debug!(%peer, error = %err, "SSH handshake failed");
            return finish_unauthenticated(&shared, peer, &state).await;
        }
        Err(_) => return finish_unauthenticated(&shared, peer, &state).await,
    };
    let handle = session.handle();
    tokio::pin!(session);
    let authenticated = || {
        state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .authenticated()
    };
    let grace_timer = tokio::time::sleep_until(deadline);
    tokio::pin!(grace_timer);
    let mut grace_over = false;
    let mut idle_check = tokio::time::interval(IDLE_CHECK);
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let goodbye = loop {
        tokio::select! {
            ended = &mut session => {
                if let Err(err) = ended {
                    tracing::debug!(%peer, error = %err, "SSH connection ended");
                }
                break None;
            }
            () = &mut grace_timer, if !grace_over => {
                grace_over = true;
                if !authenticated() {
                    break Some("login grace time exceeded".to_string());
                }
            }
            _ = idle_check.tick() => {
                // A logged-in connection with no channel holds a slot and a
                // login for nothing: closed after ssh.idle_timeout, like an
                // idle channel.
                let idle_timeout = shared.core.config().ssh.idle_timeout;
                let idle = state.lock().unwrap_or_else(PoisonError::into_inner).login().and_then(|(_, _, l)| l.idle_for(Instant::now()));
                if idle.is_some_and(|idle| idle >= idle_timeout) {
                    break Some(format!("idle: no channel for {}", humantime::format_duration(idle_timeout)));
                }
            }
            () = token.cancelled() => {
                let reason = if shared.shutdown.is_cancelled() {
                    "the gateway is shutting down".to_string()
                } else {
                    let login = state.lock().unwrap_or_else(PoisonError::into_inner).login().and_then(|(_, _, l)| l.reason());
                    format!("access closed by the gateway: {}", login.unwrap_or_else(|| "closed".into()))
                };
                break Some(reason);
            }
        }
    };
    if let Some(reason) = goodbye {
        tracing::info!(%peer, reason, "closing SSH connection");
        let _ = handle
            .disconnect(russh::Disconnect::ByApplication, reason, String::new())
            .await;
        let _ = tokio::time::timeout(DISCONNECT_GRACE, &mut session).await;
    }
    // Channels of this connection end with it.
    token.cancel();
    if !authenticated() {
        finish_unauthenticated(&shared, peer, &state).await;
    }
}

/// The client socket as russh reads it. russh reads each packet with two
/// exact reads (its length, then the rest): buffered, a transfer costs one
/// read syscall per socket-full instead of two per packet.
fn client_stream(socket: TcpStream) -> tokio::io::BufReader<quick_ack::QuickAck> {
    tokio::io::BufReader::with_capacity(CLIENT_READ_BUFFER, quick_ack::QuickAck::new(socket))
}

/// A connection that ended without logging in: one failure for the
/// limiter, one (possibly aggregated) `ssh.auth.fail`.
async fn finish_unauthenticated(shared: &Shared, peer: SocketAddr, state: &Mutex<ConnState>) {
    let attempt = state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take_attempt();
    // A connection that never tried to log in (a port scan) costs nothing;
    // one whose last failure was counted when it happened, nothing more.
    let Some(attempt) = attempt else { return };
    if attempt.refusal_counted {
        return;
    }
    let reason = attempt
        .last_refusal
        .map_or("no_valid_login", crate::auth::LoginRefusal::code);
    // A login refused for the connection cap is no guess: no penalty.
    if attempt.last_refusal != Some(crate::auth::LoginRefusal::TooManyConnections) {
        let counted_user = attempt.user_exists.then_some(attempt.user.as_str());
        shared
            .limiter
            .record_failure(peer.ip(), counted_user, Instant::now());
    }
    shared
        .note_failure(peer, Some(&attempt.user), reason, &attempt.tried_keys)
        .await;
}

impl Shared {
    async fn note_failure(
        &self,
        peer: SocketAddr,
        user: Option<&str>,
        reason: &'static str,
        key_fingerprints: &[String],
    ) {
        if !self.failures.note(peer.ip(), reason, Instant::now()) {
            return;
        }
        let actor = user.map_or(Actor::Anonymous, |name| Actor::Claimed(name.to_string()));
        let event = crate::audit::event::event(
            crate::audit::event::Kind::SshAuthFail,
            actor,
            Source::Peer(peer),
        )
        .on(self.core.config().gateway.name.clone())
        .detail(serde_json::json!({ "reason": reason, "key_fingerprints": key_fingerprints }));
        self.record(event).await;
    }
}

/// Writes the failure summaries once a minute (and the last on shutdown),
/// after the records the store refused before.
async fn flush_failure_summaries(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(audit::WINDOW);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            () = shared.shutdown.cancelled() => true,
        };
        let now = if stopping {
            Instant::now() + audit::WINDOW
        } else {
            Instant::now()
        };
        shared.retry_unwritten().await;
        let gateway = shared.core.config().gateway.name.clone();
        for summary in shared.failures.roll(now) {
            shared.record(summary.event(&gateway)).await;
        }
        for summary in shared.refusals.roll(now) {
            shared.record(summary.deny_event(&gateway)).await;
        }
        if stopping {
            return;
        }
    }
}

/// Closes the connections of users who were disabled, removed or expired,
/// or whose key was removed, right after the store change (and every few
/// seconds, for expiry).
async fn watch_revocations(shared: Arc<Shared>) {
    let mut changes = shared.core.store().subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        let logins = shared.registry.logins();
        if logins.is_empty() {
            continue;
        }
        let read = shared
            .core
            .store()
            .read(|r| Ok((r.users()?, r.all_ssh_keys()?)))
            .await;
        let (users, keys) = match read {
            Ok(read) => read,
            Err(err) => {
                tracing::error!(error = %err, "cannot read users to check SSH logins");
                continue;
            }
        };
        for (conn, reason) in auth::revoked(&logins, &users, &keys, crate::time_fmt::now_unix()) {
            tracing::info!(conn, reason, "closing an SSH connection");
            shared.registry.close_connection(conn, reason);
        }
    }
}
