//! The legal states of one jump host connection, as an enum: what the
//! handler may do next follows from the state, and impossible mixes (a key
//! accepted for one name while another name is asked, a login without a
//! key) cannot be written down. Pure: no I/O, driven by [`super::server`].

use tokio_util::sync::CancellationToken;

use super::limits::StartupSlot;
use super::registry::ConnGuard;
use crate::auth::LoginRefusal;

/// At most this many key fingerprints are kept for one attempt's
/// `ssh.auth.fail` record.
const MAX_TRIED_KEYS: usize = 5;

/// One connection: its authentication phase, the pre-auth slot it holds
/// until it logs in, and the token that closes it.
pub struct ConnState {
    pub phase: Phase,
    /// Held until authentication succeeds.
    pub slot: Option<StartupSlot>,
    /// Cancelled to close this connection (given to the registry at login).
    pub token: CancellationToken,
}

/// The key a login stands on: its fingerprint, and the OpenSSH
/// certificate it was shown in, if it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginKey {
    pub fingerprint: String,
    pub cert: Option<CertId>,
}

/// What names a certificate in a private host's sshd log (`ID <key id>
/// (serial N)`), so the jump host's records meet that line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertId {
    pub serial: u64,
    pub key_id: String,
}

/// Where authentication stands.
pub enum Phase {
    /// Nothing tried yet, or attempts that have not (yet) passed.
    PreAuth(Option<Attempt>),
    /// The key passed for `attempt.user`; under `ssh.require_totp` its TOTP
    /// code is due, in this connection, for this user.
    KeyAccepted { attempt: Attempt, key: LoginKey },
    /// Every factor passed for `user`; russh reports success next.
    Verified { user: String, key: LoginKey },
    /// Logged in: channels may be opened.
    LoggedIn {
        user: String,
        key: LoginKey,
        login: ConnGuard,
    },
}

/// The attempts under one user name: what the connection's
/// `ssh.auth.fail` record says if it never logs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attempt {
    pub user: String,
    /// True when that user exists (only then is a per-user penalty counted).
    pub user_exists: bool,
    pub tried_keys: Vec<String>,
    pub last_refusal: Option<LoginRefusal>,
    /// `last_refusal` was counted and audited when it happened (a wrong
    /// TOTP code), so the connection's end does not count it again.
    pub refusal_counted: bool,
}

impl ConnState {
    pub fn new(slot: StartupSlot, token: CancellationToken) -> Self {
        Self {
            phase: Phase::PreAuth(None),
            slot: Some(slot),
            token,
        }
    }

    /// The attempt for `user`. A request under another name than the last
    /// one starts afresh: a key accepted for one name is worth nothing for
    /// another. After login, `None` (russh asks no more).
    pub fn attempt(&mut self, user: &str) -> Option<&mut Attempt> {
        let same_user = match &self.phase {
            Phase::PreAuth(Some(a)) | Phase::KeyAccepted { attempt: a, .. } => a.user == user,
            Phase::PreAuth(None) => false,
            Phase::Verified { .. } | Phase::LoggedIn { .. } => return None,
        };
        if !same_user {
            self.phase = Phase::PreAuth(Some(Attempt {
                user: user.to_string(),
                ..Attempt::default()
            }));
        }
        match &mut self.phase {
            Phase::PreAuth(Some(a)) | Phase::KeyAccepted { attempt: a, .. } => Some(a),
            _ => None,
        }
    }

    /// Notes a key tried for `user`.
    pub fn tried_key(&mut self, user: &str, fingerprint: String) {
        if let Some(a) = self.attempt(user)
            && !a.tried_keys.contains(&fingerprint)
            && a.tried_keys.len() < MAX_TRIED_KEYS
        {
            a.tried_keys.push(fingerprint);
        }
    }

    /// A refusal of `user`'s attempt; any accepted key is forgotten.
    pub fn refused(&mut self, user: &str, refusal: LoginRefusal, counted: bool) {
        if let Some(a) = self.attempt(user) {
            a.last_refusal = Some(refusal);
            a.refusal_counted = counted;
        }
        // A wrong TOTP code (or a lockout of codes) keeps the key's
        // acceptance (the client may try the next code); every other
        // refusal drops it.
        if !matches!(refusal, LoginRefusal::Totp(_) | LoginRefusal::Penalised)
            && !refusal.is_lockout()
            && let Phase::KeyAccepted { attempt, .. } = &mut self.phase
        {
            self.phase = Phase::PreAuth(Some(std::mem::take(attempt)));
        }
    }

    /// `user`'s key passed; with `totp_due` a code must follow.
    pub fn key_accepted(&mut self, user: &str, key: LoginKey, totp_due: bool) {
        if totp_due {
            let Some(attempt) = self.attempt(user).map(std::mem::take) else {
                return;
            };
            self.phase = Phase::KeyAccepted {
                attempt: Attempt {
                    last_refusal: Some(LoginRefusal::TotpMissing),
                    refusal_counted: false,
                    ..attempt
                },
                key,
            };
        } else if self.attempt(user).is_some() {
            self.phase = Phase::Verified {
                user: user.to_string(),
                key,
            };
        }
    }

    /// The key accepted for `user` in this connection, when a TOTP code
    /// is due for exactly that user.
    pub fn totp_due_for(&self, user: &str) -> Option<&LoginKey> {
        match &self.phase {
            Phase::KeyAccepted { attempt, key } if attempt.user == user => Some(key),
            _ => None,
        }
    }

    /// The TOTP code for `user` passed: verified, if the key was accepted
    /// for that same user here.
    pub fn totp_passed(&mut self, user: &str) -> bool {
        let Some(key) = self.totp_due_for(user).cloned() else {
            return false;
        };
        self.phase = Phase::Verified {
            user: user.to_string(),
            key,
        };
        true
    }

    /// russh reports success: the verified user logs in. `None` (and no
    /// login) unless every factor passed.
    pub fn log_in(
        &mut self,
        add: impl FnOnce(&str, &str) -> ConnGuard,
    ) -> Option<(String, LoginKey)> {
        let Phase::Verified { user, key } = &self.phase else {
            return None;
        };
        let (user, key) = (user.clone(), key.clone());
        let login = add(&user, &key.fingerprint);
        if let Some(slot) = self.slot.take() {
            slot.release();
        }
        self.phase = Phase::LoggedIn {
            user: user.clone(),
            key: key.clone(),
            login,
        };
        Some((user, key))
    }

    pub fn authenticated(&self) -> bool {
        matches!(self.phase, Phase::LoggedIn { .. })
    }

    /// The logged-in user, key and registry entry.
    pub fn login(&self) -> Option<(&str, &LoginKey, &ConnGuard)> {
        match &self.phase {
            Phase::LoggedIn { user, key, login } => Some((user, key, login)),
            _ => None,
        }
    }

    /// The user name the connection is about (logged in, or last tried).
    pub fn user(&self) -> Option<&str> {
        match &self.phase {
            Phase::PreAuth(None) => None,
            Phase::PreAuth(Some(a)) | Phase::KeyAccepted { attempt: a, .. } => Some(&a.user),
            Phase::Verified { user, .. } | Phase::LoggedIn { user, .. } => Some(user),
        }
    }

    /// At the end of a connection that never logged in: its last attempt.
    pub fn take_attempt(&mut self) -> Option<Attempt> {
        self.slot.take();
        match std::mem::replace(&mut self.phase, Phase::PreAuth(None)) {
            Phase::PreAuth(attempt) => attempt,
            Phase::KeyAccepted { attempt, .. } => Some(attempt),
            other => {
                self.phase = other;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::limits::PreAuth;
    use crate::totp::TotpReject;

    fn state() -> ConnState {
        let limiter = PreAuth::new();
        let slot = limiter
            .admit([192, 0, 2, 1].into(), 10, 10, std::time::Instant::now())
            .unwrap();
        ConnState::new(slot, CancellationToken::new())
    }

    fn plain(fingerprint: &str) -> LoginKey {
        LoginKey {
            fingerprint: fingerprint.into(),
            cert: None,
        }
    }

    fn due(s: &ConnState, user: &str) -> Option<String> {
        s.totp_due_for(user).map(|k| k.fingerprint.clone())
    }

    #[test]
    fn a_key_accepted_for_one_name_is_worth_nothing_for_another() {
        // The review's sequence: mallory's key, then alice's name with her
        // TOTP code. Before the enum, `key_ok` survived the name change.
        let mut s = state();
        s.key_accepted("mallory", plain("SHA256:mallory"), true);
        assert_eq!(due(&s, "mallory"), Some("SHA256:mallory".into()));
        let _ = s.attempt("alice"); // a `none` request under alice
        assert_eq!(due(&s, "alice"), None);
        assert!(
            !s.totp_passed("alice"),
            "alice's code alone must not verify"
        );
        assert!(s.log_in(|_, _| unreachable!("no login")).is_none());
        assert_eq!(s.user(), Some("alice"));
        // Nor does going back to mallory revive her accepted key.
        assert!(!s.totp_passed("mallory"));
    }

    #[test]
    fn totp_is_only_accepted_after_the_key_for_the_same_user_here() {
        let mut s = state();
        assert!(!s.totp_passed("alice"), "no key yet");
        s.key_accepted("alice", plain("SHA256:a"), true);
        s.refused("alice", LoginRefusal::Totp(TotpReject::Mismatch), true);
        assert_eq!(
            due(&s, "alice"),
            Some("SHA256:a".into()),
            "a wrong code may be retried"
        );
        s.refused("alice", LoginRefusal::UnknownKey, false);
        assert_eq!(due(&s, "alice"), None, "another refusal drops the key");
        s.key_accepted("alice", plain("SHA256:a"), true);
        assert!(s.totp_passed("alice"));
        assert!(matches!(s.phase, Phase::Verified { .. }));
    }

    #[test]
    fn a_login_needs_every_factor_and_the_end_reports_the_last_attempt() {
        let mut s = state();
        s.tried_key("bob", "SHA256:b1".into());
        s.refused("bob", LoginRefusal::UnknownKey, false);
        s.key_accepted("bob", plain("SHA256:b2"), true);
        let attempt = s.take_attempt().unwrap();
        assert_eq!(attempt.user, "bob");
        assert_eq!(attempt.tried_keys, ["SHA256:b1"]);
        assert_eq!(attempt.last_refusal, Some(LoginRefusal::TotpMissing));
        assert!(s.slot.is_none());
    }

    #[test]
    fn the_login_keeps_the_certificate_its_key_came_in() {
        // Issue 26: the session records name the certificate, so they meet
        // the private host's sshd log line.
        let cert = LoginKey {
            fingerprint: "SHA256:c".into(),
            cert: Some(CertId {
                serial: 9_007_199_254_740_993,
                key_id: "alice@gw".into(),
            }),
        };
        let registry = crate::ssh::registry::Registry::new();
        let mut s = state();
        s.key_accepted("alice", cert.clone(), true);
        assert!(s.totp_passed("alice"), "through the TOTP step");
        let (user, key) = s
            .log_in(|user, fingerprint| {
                registry.add_connection(user, fingerprint, CancellationToken::new())
            })
            .unwrap();
        assert_eq!((user.as_str(), &key), ("alice", &cert));
        assert_eq!(s.login().map(|(_, key, _)| key), Some(&cert));

        // A plain key accepted after a certificate is what the login stands on.
        let mut s = state();
        s.key_accepted("alice", cert.clone(), true);
        s.key_accepted("alice", plain("SHA256:p"), false);
        let (_, key) = s
            .log_in(|user, fingerprint| {
                registry.add_connection(user, fingerprint, CancellationToken::new())
            })
            .unwrap();
        assert_eq!(key, plain("SHA256:p"));
    }
}
