//! Login sessions and CSRF tokens.
//!
//! A session is a random 256-bit token in the `__Host-gh_session` cookie
//! (`HttpOnly; Secure; SameSite=Strict; Path=/`); the store keeps only its
//! SHA-256. It ends after `portal.session_idle` without a request, after
//! `portal.session_max` whatever happens, on logout, and when the user is
//! disabled, expires or is deleted.
//!
//! CSRF: every state-changing request of a logged-in user carries the
//! session's CSRF token (header `X-CSRF-Token` or form field `csrf`), a hash
//! of the session token that pages embed and the login answer returns.
//! Before login, forms use a double-submit token: a random `__Host-gh_pre`
//! cookie that the form must repeat. The JSON login and enrollment endpoints
//! need `Content-Type: application/json`, which no cross-site form can send.

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::{OsRng, RngCore};

use super::PortalState;
use super::error::Failure;
use crate::audit::chain::sha256_hex;
use crate::auth::Standing;
use crate::store::{LoginMethod, User, hash_token};
use crate::time_fmt::now_unix;

pub const SESSION_COOKIE: &str = "__Host-gh_session";
pub const PRE_COOKIE: &str = "__Host-gh_pre";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A fresh random token (256 bits, base64url).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The CSRF token bound to a session token.
pub fn csrf_for(session_token: &str) -> String {
    sha256_hex(format!("gatehouse portal csrf\0{session_token}").as_bytes())
}

/// `Set-Cookie` for a new session.
pub fn session_cookie(token: &str, max_age_secs: u64) -> String {
    format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={max_age_secs}; HttpOnly; Secure; SameSite=Strict"
    )
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_session_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict")
}

/// `Set-Cookie` for the pre-login double-submit token.
pub fn pre_cookie(token: &str) -> String {
    format!("{PRE_COOKIE}={token}; Path=/; Max-Age=3600; HttpOnly; Secure; SameSite=Strict")
}

/// The value of cookie `name`, if sent.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// Equal-time comparison of two tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Checks a pre-login form's double-submit token.
pub fn check_pre_csrf(headers: &HeaderMap, field: &str) -> Result<(), Failure> {
    match cookie(headers, PRE_COOKIE) {
        Some(expected) if same_token(&expected, field) => Ok(()),
        _ => Err(Failure::csrf()),
    }
}

/// A request from a logged-in user (the extractor checks the cookie, the
/// timeouts and the user's state).
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    pub token_hash: String,
    pub csrf: String,
    pub created_at: i64,
    pub last_seen: i64,
    /// How its login proved who it was.
    pub method: LoginMethod,
}

impl Session {
    /// Checks the CSRF token of a state-changing request.
    pub fn check_csrf(&self, given: Option<&str>) -> Result<(), Failure> {
        match given {
            Some(given) if same_token(&self.csrf, given) => Ok(()),
            _ => Err(Failure::csrf()),
        }
    }

    /// The CSRF token from the `X-CSRF-Token` header.
    pub fn header_csrf(headers: &HeaderMap) -> Option<&str> {
        headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok())
    }
}

impl FromRequestParts<PortalState> for Session {
    type Rejection = Failure;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &PortalState,
    ) -> Result<Self, Self::Rejection> {
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or_else(Failure::unauthorized)?;
        let token_hash = hash_token(&token);
        let config = state.core.config();
        let idle = i64::try_from(config.portal.session_idle.as_secs()).unwrap_or(i64::MAX);
        let max = i64::try_from(config.portal.session_max.as_secs()).unwrap_or(i64::MAX);
        let now = now_unix();
        let lookup = token_hash.clone();
        let found = state
            .core
            .store()
            .read(move |r| {
                let Some(session) = r.portal_session(&lookup)? else {
                    return Ok(None);
                };
                Ok(r.user(&session.user)?.map(|user| (session, user)))
            })
            .await?;
        let Some((session, user)) = found else {
            return Err(Failure::unauthorized());
        };
        let timed_out = now.saturating_sub(session.last_seen) >= idle
            || now.saturating_sub(session.created_at) >= max;
        // A machine never signs in: a session left from before it became
        // one ends too.
        let usable = Standing::of(&user, now).portal_refusal().is_none();
        if timed_out || !usable {
            let hash = token_hash.clone();
            state
                .core
                .store()
                .write(move |w| w.delete_portal_session(&hash).map(drop))
                .await?;
            return Err(Failure::unauthorized());
        }
        if now > session.last_seen {
            let hash = token_hash.clone();
            state
                .core
                .store()
                .write(move |w| w.touch_portal_session(&hash, now))
                .await?;
        }
        Ok(Session {
            user,
            csrf: csrf_for(&token),
            token_hash,
            created_at: session.created_at,
            last_seen: now,
            method: session.method,
        })
    }
}

/// The client's address, as the accept loop recorded it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .ok_or_else(Failure::internal)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_parsed_and_flags_set() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "a=1; __Host-gh_session=tok; b=2".parse().unwrap());
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("tok"));
        assert_eq!(cookie(&headers, PRE_COOKIE), None);
        let set = session_cookie("tok", 60);
        for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(flag), "{set}");
        }
    }

    #[test]
    fn tokens_are_random_and_csrf_is_bound_to_the_session() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_ne!(csrf_for(&a), csrf_for(&b));
        assert!(same_token(&csrf_for(&a), &csrf_for(&a)));
        assert!(!same_token(&csrf_for(&a), "x"));
    }
}
