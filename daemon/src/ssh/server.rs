//! The russh side of one client connection: [`Connection`] is the russh
//! `Handler`, and it only decides and hands work off — it never awaits a
//! target connect (callbacks of one connection run one after another, so a
//! slow target would stall the user's other channels). Each channel runs in
//! its own tracked task (see [`super::channel`]).
//!
//! Authentication: public key, against the user's registered keys; the user
//! must be active and unexpired. With `ssh.require_totp` a key is only a
//! partial success: keyboard-interactive must follow with a current code of
//! the TOTP secret the user enrolled in the portal (a user without one is
//! refused at the key). Each wrong code counts against the user and the
//! source at once and is audited, so guessing is slowed across connections.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use russh::keys::Certificate;
use russh::server::{Auth, Handler, Msg, PublicKeyOffer, Response, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};
use serde_json::json;

use super::Shared;
use super::auth;
use super::conn_state::{CertId, ConnState, LoginKey};
use crate::audit::event::{Actor, Kind, Source, event};
use crate::auth::{LoginRefusal, Standing};
use crate::keys::ssh_host::fingerprint;
use crate::ssh_ca::CertRefusal;

/// The reason of every refusal that is not a direct-tcpip channel.
const NOT_DIRECT_TCPIP: &str = "not_direct_tcpip";

/// What a plain `ssh gateway` gets instead of a shell.
pub const JUMP_HOST_HINT: &str = "this is a jump host: use ssh -J user@host:port target";

/// The one keyboard-interactive prompt of `ssh.require_totp` (not echoed).
const TOTP_PROMPT: &[(Cow<'static, str>, bool)] = &[(Cow::Borrowed("TOTP code: "), false)];

/// The russh handler of one connection.
pub struct Connection {
    pub(super) shared: Arc<Shared>,
    pub(super) peer: SocketAddr,
    pub(super) state: Arc<Mutex<ConnState>>,
}

impl Connection {
    fn state(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn methods(&self) -> MethodSet {
        MethodSet::from(&[MethodKind::PublicKey][..])
    }

    fn refuse(&self, user: &str, refusal: LoginRefusal) -> Auth {
        self.state().refused(user, refusal, false);
        Auth::Reject {
            proceed_with_methods: Some(self.methods()),
            partial_success: false,
        }
    }

    /// The shared key check of `auth_publickey_offered` and `auth_publickey`:
    /// the key's fingerprint, and whether the user has a TOTP secret (for
    /// `ssh.require_totp`, read in the same store read).
    async fn check_key(
        &self,
        user: &str,
        key: &russh::keys::PublicKey,
    ) -> Result<(String, bool), LoginRefusal> {
        self.state().tried_key(user, fingerprint(key));
        if self.penalised(user) {
            return Err(LoginRefusal::Penalised);
        }
        let name = user.to_string();
        let found = self
            .shared
            .core
            .store()
            .read(move |r| {
                let user = r.user(&name)?;
                let keys = match &user {
                    Some(_) => r.ssh_keys(&name)?,
                    None => Vec::new(),
                };
                Ok((user, keys))
            })
            .await;
        let (user_row, keys) = match found {
            Ok(found) => found,
            Err(err) => {
                tracing::error!(error = %err, "cannot read the store for an SSH login");
                return Err(LoginRefusal::StoreUnavailable);
            }
        };
        if let Some(attempt) = self.state().attempt(user) {
            attempt.user_exists = user_row.is_some();
        }
        let fingerprint =
            auth::authorize(user_row.as_ref(), &keys, key, crate::time_fmt::now_unix())?;
        // Only a user whose key passed learns of the cap.
        let cap = self.shared.core.config().ssh.max_connections_per_user as usize;
        if self.shared.registry.connections_of(user) >= cap {
            return Err(LoginRefusal::TooManyConnections);
        }
        let has_totp = user_row.is_some_and(|u| u.totp_secret.is_some());
        Ok((fingerprint, has_totp))
    }

    /// A key (plain, or a certificate's, named by `cert`) whose signature
    /// russh verified: the user's key checks, then the TOTP step of
    /// `ssh.require_totp`.
    async fn key_passed(
        &mut self,
        user: &str,
        key: &russh::keys::PublicKey,
        cert: Option<CertId>,
    ) -> Result<Auth, russh::Error> {
        let (fingerprint, has_totp) = match self.check_key(user, key).await {
            Ok(passed) => passed,
            Err(refusal) => return Ok(self.refuse(user, refusal)),
        };
        let key = LoginKey { fingerprint, cert };
        if self.shared.core.config().ssh.require_totp {
            // Told at the key, before any prompt.
            if !has_totp {
                return Ok(self.refuse(user, LoginRefusal::TotpNotEnrolled));
            }
            // Until a code passes, a connection that ends failed for this.
            self.state().key_accepted(user, key, true);
            return Ok(Auth::Reject {
                proceed_with_methods: Some(totp_method()),
                partial_success: true,
            });
        }
        self.state().key_accepted(user, key, false);
        Ok(Auth::Accept)
    }

    /// A certificate shown by `user`: signed by this gateway's CA, theirs
    /// (key id), a serial this CA issued to them for this very key, and
    /// not of a member removed since. Fails closed when the store cannot
    /// be read.
    async fn check_certificate(
        &self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<(), CertRefusal> {
        let core = &self.shared.core;
        let config = core.config();
        let Some(ca) = core.user_ca().filter(|_| config.ssh.certificates) else {
            return Err(CertRefusal::Off);
        };
        let now = u64::try_from(crate::time_fmt::now_unix()).unwrap_or(0);
        ca.check(certificate, &format!("{user}@{}", config.gateway.name), now)?;
        let serial = certificate.serial();
        let key = russh::keys::PublicKey::new(certificate.public_key().clone(), "");
        let key_fingerprint = fingerprint(&key);
        let issued = core
            .store()
            .read(move |r| r.issued_cert(serial))
            .await
            .map_err(|err| {
                tracing::error!(error = %err, "cannot read the store for an SSH certificate");
                CertRefusal::Unknown
            })?;
        match issued {
            Some(row)
                if row.user == user && row.key_fingerprint == key_fingerprint && !row.removed =>
            {
                Ok(())
            }
            _ => Err(CertRefusal::Unknown),
        }
    }

    /// True while `user` serves a penalty for failed logins.
    fn penalised(&self, user: &str) -> bool {
        self.shared
            .limiter
            .user_penalty(user, Instant::now())
            .is_some()
    }

    /// Checks a TOTP code with the member-authentication service: charged
    /// against the member's and the source's login budgets before it is
    /// judged (one code per member judged at a time, across connections
    /// and the portal), then checked and its step stored in one write, so
    /// two connections racing with one code cannot both win, and the
    /// portal will not take it either. A refusal is answered after the
    /// budget's delay, the member's turn held until then.
    async fn check_totp(&self, user: &str, code: String) -> Result<(), LoginRefusal> {
        if self.penalised(user) {
            return Err(LoginRefusal::Penalised);
        }
        let core = &self.shared.core;
        let lockout = core.config().portal.login_lockout;
        let charge = core
            .login_budget()
            .charge(user, self.peer.ip(), lockout)
            .await
            .map_err(|refused| refused.refusal)?;
        let name = user.to_string();
        let now = crate::time_fmt::now_unix();
        let checked = core
            .store()
            .write(move |w| {
                let Some(found) = w.user(&name)? else {
                    return Ok(Err(LoginRefusal::UnknownUser));
                };
                // Checked again: an admin may have acted since the key passed.
                if let Some(refusal) = Standing::of(&found, now).refusal() {
                    return Ok(Err(refusal));
                }
                crate::auth::consume_totp(w, &found, &code, now, None).map(|r| r.map(drop))
            })
            .await;
        let refusal = match checked {
            Ok(Ok(())) => {
                charge.succeeded();
                return Ok(());
            }
            Ok(Err(refusal)) => refusal,
            Err(err) => {
                tracing::error!(error = %err, "cannot check an SSH login's TOTP code");
                LoginRefusal::StoreUnavailable
            }
        };
        charge.refuse().await;
        Err(refusal)
    }

    /// A refusal that must count at once, not when the connection ends: a
    /// wrong TOTP code is a guess at a six-digit secret.
    async fn count_failure(&self, user: &str, refusal: LoginRefusal) {
        let keys = {
            let mut state = self.state();
            state.refused(user, refusal, true);
            state
                .attempt(user)
                .map(|a| a.tried_keys.clone())
                .unwrap_or_default()
        };
        self.shared
            .limiter
            .record_failure(self.peer.ip(), Some(user), Instant::now());
        self.shared
            .note_failure(self.peer, Some(user), refusal.code(), &keys)
            .await;
    }
}

/// What a client whose key passed must do next under `ssh.require_totp`.
fn totp_method() -> MethodSet {
    MethodSet::from(&[MethodKind::KeyboardInteractive][..])
}

impl Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        let _ = self.state().attempt(user);
        Ok(Auth::Reject {
            proceed_with_methods: Some(self.methods()),
            partial_success: false,
        })
    }

    async fn auth_password(&mut self, user: &str, _password: &str) -> Result<Auth, Self::Error> {
        Ok(self.refuse(user, LoginRefusal::UnknownKey))
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Decide here: russh accepts every offered key by default.
        match self.check_key(user, offer.public_key).await {
            Ok(_) => Ok(Auth::Accept),
            Err(refusal) => Ok(self.refuse(user, refusal)),
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.key_passed(user, key.public_key, None).await
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &Certificate,
    ) -> Result<Auth, Self::Error> {
        // russh checked the window and that the CA's signature is sound;
        // whose CA, and whose certificate, are checked here. Its key then
        // passes the same checks as a plain key.
        if let Err(refusal) = self.check_certificate(user, certificate).await {
            return Ok(self.refuse(user, LoginRefusal::Certificate(refusal)));
        }
        let key = russh::keys::PublicKey::new(certificate.public_key().clone(), "");
        let cert = CertId {
            serial: certificate.serial(),
            key_id: certificate.key_id().to_string(),
        };
        self.key_passed(user, &key, Some(cert)).await
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        // The TOTP step of `ssh.require_totp`: only after the key passed,
        // for the same user.
        if !self.shared.core.config().ssh.require_totp {
            return Ok(self.refuse(user, LoginRefusal::UnknownKey));
        }
        if self.state().totp_due_for(user).is_none() {
            return Ok(self.refuse(user, LoginRefusal::TotpBeforeKey));
        }
        let Some(mut response) = response else {
            return Ok(Auth::Partial {
                name: Cow::Borrowed(""),
                instructions: Cow::Borrowed(""),
                prompts: Cow::Borrowed(TOTP_PROMPT),
            });
        };
        let code = response
            .next()
            .map(|answer| String::from_utf8_lossy(&answer).into_owned())
            .unwrap_or_default();
        match self.check_totp(user, code).await {
            // Verified only if the key is still this user's here.
            Ok(()) if self.state().totp_passed(user) => Ok(Auth::Accept),
            Ok(()) => Ok(self.refuse(user, LoginRefusal::TotpBeforeKey)),
            Err(refusal) => {
                self.count_failure(user, refusal).await;
                Ok(Auth::Reject {
                    proceed_with_methods: Some(totp_method()),
                    partial_success: false,
                })
            }
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        let mut state = self.state();
        let token = state.token.clone();
        let registry = &self.shared.registry;
        let Some((user, key)) =
            state.log_in(|user, fingerprint| registry.add_connection(user, fingerprint, token))
        else {
            return Err(russh::Error::NotAuthenticated);
        };
        let cert_serial = key.cert.as_ref().map(|c| c.serial);
        tracing::info!(%user, key = %key.fingerprint, ?cert_serial, "SSH login");
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Accepted only to print the hint on stderr (a refused open is
        // logged by OpenSSH at INFO, which `LogLevel ERROR` hides), then
        // closed at once with exit status 1; nothing runs on it.
        let event = self.deny_event("session", json!({ "channel": "session" }), JUMP_HOST_HINT);
        let shared = self.shared.clone();
        let handle = session.handle();
        self.shared.tracker.spawn(async move {
            shared.audit_refusal(event, NOT_DIRECT_TCPIP).await;
            let id = channel.id();
            reply.accept().await;
            let _ = handle
                .extended_data(id, 1, format!("{JUMP_HOST_HINT}\r\n").into_bytes())
                .await;
            let _ = handle.exit_status_request(id, 1).await;
            let _ = handle.eof(id).await;
            let _ = handle.close(id).await;
            drop(channel);
            // A stock client exits when its session closes; any other is
            // disconnected shortly after.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let _ = handle
                .disconnect(
                    russh::Disconnect::ByApplication,
                    JUMP_HOST_HINT.into(),
                    String::new(),
                )
                .await;
        });
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        originator_address: &str,
        originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let asked = json!({ "originator": format!("{originator_address}:{originator_port}") });
        self.deny_open(
            "x11",
            asked,
            "X11 forwarding is refused by the jump host",
            reply,
        );
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let login = self
            .state()
            .login()
            .map(|(user, key, _)| (user.to_string(), key.clone()));
        let Some((user, key)) = login else {
            // russh only opens channels after authentication; belt and braces.
            drop(reply);
            return Ok(());
        };
        let state = self.state.clone();
        let registry = self.shared.registry.clone();
        let peer = self.peer;
        let reserve = move |requested: String, limit: usize| {
            let state = state.lock().unwrap_or_else(PoisonError::into_inner);
            let (_, _, login) = state.login()?;
            Some(registry.reserve_channel(login, peer, requested, limit))
        };
        super::channel::open(
            &self.shared,
            super::channel::Opener {
                user,
                key,
                peer,
                host: host_to_connect,
                port: port_to_connect,
            },
            reserve,
            channel,
            reply,
            session.handle(),
        );
        Ok(())
    }

    async fn channel_open_forwarded_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let asked = json!({ "target": format!("{host_to_connect}:{port_to_connect}") });
        self.deny_open("forwarded-tcpip", asked, "refused by the jump host", reply);
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        socket_path: &str,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let asked = json!({ "socket_path": socket_path });
        self.deny_open(
            "direct-streamlocal",
            asked,
            "Unix socket forwarding is refused by the jump host",
            reply,
        );
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.deny_request("pty", json!({}));
        session.channel_failure(channel)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.deny_request("x11", json!({}));
        session.channel_failure(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        _variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.deny_request("env", json!({ "name": variable_name }));
        session.channel_failure(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.deny_request("shell", json!({}));
        session.channel_failure(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The command itself is not recorded: it may hold a secret.
        self.deny_request("exec", json!({ "bytes": data.len() }));
        session.channel_failure(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.deny_request("subsystem", json!({ "name": name }));
        session.channel_failure(channel)
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.deny_request("agent", json!({}));
        Ok(false)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.deny_request(
            "tcpip-forward",
            json!({ "bind": format!("{address}:{port}") }),
        );
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.deny_request("streamlocal-forward", json!({ "socket_path": socket_path }));
        Ok(false)
    }
}

impl Connection {
    /// Refuses a channel open with `message` (one line the client shows),
    /// after writing `ssh.forward.deny`, off the connection's task.
    fn deny_open(
        &self,
        kind: &'static str,
        mut asked: serde_json::Value,
        message: &str,
        reply: russh::server::ChannelOpenHandle,
    ) {
        asked["channel"] = json!(kind);
        let failure = ChannelOpenFailure::Other {
            code: 1,
            reason: message.to_string(),
        };
        let event = self.deny_event(kind, asked, message);
        let shared = self.shared.clone();
        self.shared.tracker.spawn(async move {
            shared.audit_refusal(event, NOT_DIRECT_TCPIP).await;
            reply.reject(failure).await;
        });
    }

    /// Writes `ssh.forward.deny` for a refused request (the reply itself is
    /// sent by the caller: requests must be answered in order).
    fn deny_request(&self, kind: &'static str, mut asked: serde_json::Value) {
        asked["request"] = json!(kind);
        let event = self.deny_event(kind, asked, "refused by the jump host");
        let shared = self.shared.clone();
        self.shared
            .tracker
            .spawn(async move { shared.audit_refusal(event, NOT_DIRECT_TCPIP).await });
    }

    fn deny_event(
        &self,
        kind: &str,
        asked: serde_json::Value,
        message: &str,
    ) -> crate::store::NewAuditEvent {
        let actor = match self.state().user() {
            Some(user) => Actor::User(user.to_string()),
            None => Actor::Anonymous,
        };
        event(Kind::SshForwardDeny, actor, Source::Peer(self.peer))
            .on(kind)
            .detail(json!({ "asked": asked, "reason": NOT_DIRECT_TCPIP, "message": message }))
    }
}
