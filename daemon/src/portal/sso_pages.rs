//! The portal's two SSO endpoints (`[oidc]`); they parse, call and render.
//!
//! - `GET /oidc/start`: a new login. A random pre-login token goes to the
//!   `__Host-gh_sso` cookie (`SameSite=Lax`: the provider's redirect back is
//!   a cross-site navigation, which `Strict` would strip it from); the store
//!   keeps the login under the hash of its `state`, bound to the hash of
//!   that cookie; the browser is sent to the provider.
//! - `GET /oidc/callback`: the provider sends the browser back with a code
//!   (or an error). The login under way is taken (used once) if this browser
//!   started it within [`PENDING_LIFETIME`]; the provider checks the code
//!   and the ID token; the access service says who the member is; the
//!   session opens as a password login's does. The session cookie is set on
//!   a page that moves on to `/devices` itself: a redirect would still be
//!   part of the provider's cross-site navigation, which does not carry a
//!   `SameSite=Strict` cookie.
//!
//! Every refusal is audited (`portal.login.fail`, `method: "oidc"`, with
//! its reason) and answered with a page that says what to do.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::PortalState;
use super::flows;
use super::pages::{layout, message_page};
use super::sessions::{Source, cookie, new_token, session_cookie};
use crate::store::hash_token;
use crate::store::sso::{PendingLogin, TakenLogin};
use crate::time_fmt::now_unix;

/// The pre-login cookie of an SSO login.
pub const SSO_COOKIE: &str = "__Host-gh_sso";
/// How long a login may take between `/oidc/start` and the callback.
pub const PENDING_LIFETIME: i64 = 600;

/// What the provider sends back.
#[derive(Debug, Default, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /oidc/start`.
pub async fn start(State(state): State<PortalState>) -> Response {
    let Some(provider) = state.sso.clone() else {
        return message_page(
            StatusCode::NOT_FOUND,
            "Single sign-on is not set up",
            "This gateway has no identity provider configured.",
        );
    };
    let config = state.core.config();
    let scopes = config
        .oidc
        .as_ref()
        .map(|o| o.scopes.clone())
        .unwrap_or_default();
    let begun = match provider.begin(&scopes).await {
        Ok(begun) => begun,
        Err(refused) => {
            tracing::warn!(
                reason = refused.reason(),
                detail = refused.detail(),
                "SSO login cannot start"
            );
            return unavailable(&state);
        }
    };
    let binding = new_token();
    let now = now_unix();
    let pending = PendingLogin {
        binding_hash: hash_token(&binding),
        nonce: begun.nonce,
        verifier: begun.verifier,
        created_at: now,
    };
    let state_hash = hash_token(&begun.state);
    let stored = state
        .core
        .store()
        .write(move |w| {
            w.prune_pending_logins(now - PENDING_LIFETIME)?;
            w.put_pending_login(&state_hash, &pending)
        })
        .await;
    if let Err(err) = stored {
        let failure = super::error::Failure::from(err);
        return message_page(failure.status, "Single sign-on failed", &failure.message);
    }
    let Ok(location) = HeaderValue::from_str(&begun.url) else {
        return unavailable(&state);
    };
    let mut response =
        (StatusCode::SEE_OTHER, [(SET_COOKIE, sso_cookie(&binding))]).into_response();
    response.headers_mut().insert(LOCATION, location);
    response
}

/// `GET /oidc/callback`.
pub async fn callback(
    State(state): State<PortalState>,
    Source(source): Source,
    headers: HeaderMap,
    query: Result<Query<Callback>, QueryRejection>,
) -> Response {
    let params = query.map(|Query(p)| p).unwrap_or_default();
    let Some(provider) = state.sso.clone() else {
        return message_page(
            StatusCode::NOT_FOUND,
            "Single sign-on is not set up",
            "This gateway has no identity provider configured.",
        );
    };
    let refuse = |reason: &'static str, detail: String, user: Option<String>, message: String| {
        let state = state.clone();
        async move {
            tracing::info!(%source, reason, detail = %detail, "SSO login refused");
            if let Err(failure) =
                flows::sso_refused(&state, source, user.as_deref(), reason, &detail).await
            {
                return message_page(failure.status, "Not signed in", &failure.message);
            }
            with_cleared_cookie(message_page(
                StatusCode::FORBIDDEN,
                "Not signed in",
                &message,
            ))
        }
    };
    let start_again =
        "Your sign-in could not be completed. Start again from the login page.".to_string();
    let Some(login_state) = params
        .state
        .as_deref()
        .filter(|s| !s.is_empty() && s.len() <= 512)
    else {
        return refuse(
            "state",
            "the callback has no state".into(),
            None,
            start_again,
        )
        .await;
    };
    let binding = cookie(&headers, SSO_COOKIE).unwrap_or_default();
    let state_hash = hash_token(login_state);
    let binding_hash = hash_token(&binding);
    let now = now_unix();
    let taken = state
        .core
        .store()
        .write(move |w| w.take_pending_login(&state_hash, &binding_hash, now - PENDING_LIFETIME))
        .await;
    let pending = match taken {
        Ok(TakenLogin::Found(pending)) => pending,
        Ok(TakenLogin::Unknown) => {
            return refuse(
                "state",
                "no login under way has this state (unknown, or used already)".into(),
                None,
                start_again,
            )
            .await;
        }
        Ok(TakenLogin::OtherBrowser) => {
            return refuse(
                "state",
                "the login was started by another browser".into(),
                None,
                start_again,
            )
            .await;
        }
        Ok(TakenLogin::Expired) => {
            return refuse(
                "expired",
                "the login took longer than 10 minutes".into(),
                None,
                start_again,
            )
            .await;
        }
        Err(err) => {
            let failure = super::error::Failure::from(err);
            return message_page(failure.status, "Not signed in", &failure.message);
        }
    };
    if let Some(error) = &params.error {
        let said: String = format!(
            "{error}: {}",
            params.error_description.as_deref().unwrap_or("")
        )
        .chars()
        .take(300)
        .collect();
        return refuse(
            "provider_error",
            format!("the provider answered {said}"),
            None,
            "The identity provider did not sign you in. Start again from the login page.".into(),
        )
        .await;
    }
    let Some(code) = params
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= 4096)
    else {
        return refuse(
            "provider_error",
            "the callback has no code".into(),
            None,
            start_again,
        )
        .await;
    };
    let config = state.core.config();
    let Some(oidc) = config.oidc.as_ref() else {
        return message_page(StatusCode::NOT_FOUND, "Single sign-on is not set up", "");
    };
    let verified = match provider
        .finish(
            code,
            &pending.verifier,
            &pending.nonce,
            &oidc.username_claim,
            &oidc.groups_claim,
        )
        .await
    {
        Ok(verified) => verified,
        Err(refused) => {
            return refuse(
                refused.reason(),
                refused.detail().to_string(),
                None,
                start_again,
            )
            .await;
        }
    };
    let member = match state.access.sso_member(&verified).await {
        Ok(Ok(member)) => member,
        Ok(Err((refusal, user))) => {
            let detail = format!("subject {:?} of {}", verified.subject, verified.issuer);
            return refuse(refusal.reason(), detail, user, refusal.message()).await;
        }
        Err(err) => {
            let failure = super::error::Failure::from(err);
            return message_page(failure.status, "Not signed in", &failure.message);
        }
    };
    match flows::sso_login(&state, source, &verified, &member).await {
        Ok(logged_in) => {
            let body = layout(
                "Signed in",
                None,
                html! {
                    h1 { "Signed in" }
                    p { "Welcome, " (logged_in.user) ". " a #continue href="/devices" { "Continue to your devices" } }
                    meta http-equiv="refresh" content="0;url=/devices";
                },
            );
            let mut response = (
                StatusCode::OK,
                [(CONTENT_TYPE, "text/html; charset=utf-8")],
                body.into_string(),
            )
                .into_response();
            let headers = response.headers_mut();
            for value in [
                session_cookie(&logged_in.token, logged_in.max_age_secs),
                clear_sso_cookie(),
            ] {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.append(SET_COOKIE, value);
                }
            }
            response
        }
        Err(failure) => message_page(failure.status, "Not signed in", &failure.message),
    }
}

fn unavailable(state: &PortalState) -> Response {
    let name = state
        .core
        .config()
        .oidc
        .as_ref()
        .map(|o| o.display_name.clone())
        .unwrap_or_default();
    message_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Single sign-on is unavailable",
        &format!(
            "{name} cannot be reached right now. Try again in a minute; if it goes on, tell your administrator."
        ),
    )
}

fn sso_cookie(token: &str) -> String {
    format!(
        "{SSO_COOKIE}={token}; Path=/; Max-Age={PENDING_LIFETIME}; HttpOnly; Secure; SameSite=Lax"
    )
}

fn clear_sso_cookie() -> String {
    format!("{SSO_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax")
}

fn with_cleared_cookie(mut response: Response) -> Response {
    if let Ok(value) = HeaderValue::from_str(&clear_sso_cookie()) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}
