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
//! - With `oidc.require_totp`, the callback instead asks for a TOTP code (or
//!   sets up the app), and `POST /oidc/totp` checks it ([`super::sso_totp`]).
//!   The waiting login's token replaces the pre-login one in the same
//!   `SameSite=Lax` cookie, which a cross-site POST does not carry; the form
//!   also carries a value derived from it (double submit).
//!
//! Every refusal is audited (`portal.login.fail`, `method: "oidc"`, with
//! its reason) and answered with a page that says what to do.

use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::PortalState;
use super::flows::{self, LoggedIn};
use super::pages::{layout, message_page, page, totp_qr_data_uri};
use super::sessions::{Source, cookie, csrf_for, new_token, same_token, session_cookie};
use super::sso_totp::{self, Ask, Outcome, STEP_LIFETIME, Waiting};
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

/// The TOTP step's form.
#[derive(Debug, Deserialize)]
pub struct TotpForm {
    csrf: String,
    totp_code: String,
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
    if oidc.require_totp {
        let detail = flows::sso_login_detail(&verified, &member);
        return match sso_totp::begin(&state, &member.user, detail).await {
            Ok(waiting) => totp_page(StatusCode::OK, &waiting, None),
            Err(failure) => message_page(failure.status, "Not signed in", &failure.message),
        };
    }
    match flows::sso_login(&state, source, &verified, &member).await {
        Ok(logged_in) => signed_in(&logged_in),
        Err(failure) => message_page(failure.status, "Not signed in", &failure.message),
    }
}

/// `POST /oidc/totp`: the code of an SSO login that waits for one.
pub async fn totp_submit(
    State(state): State<PortalState>,
    Source(source): Source,
    headers: HeaderMap,
    form: Result<Form<TotpForm>, FormRejection>,
) -> Response {
    let start_again = "Your sign-in could not be completed. Start again from the login page.";
    let Some(token) = cookie(&headers, SSO_COOKIE) else {
        return message_page(StatusCode::FORBIDDEN, "Not signed in", start_again);
    };
    let Ok(Form(form)) = form else {
        return message_page(
            StatusCode::BAD_REQUEST,
            "Not signed in",
            "The form was incomplete; start again from the login page.",
        );
    };
    if !same_token(&csrf_for(&token), &form.csrf) {
        let failure = super::error::Failure::csrf();
        return message_page(failure.status, "Not signed in", &failure.message);
    }
    match sso_totp::finish(&state, source, &token, form.totp_code.trim()).await {
        Ok(Outcome::LoggedIn(logged_in)) => signed_in(&logged_in),
        Ok(Outcome::Again(waiting, message)) => {
            totp_page(StatusCode::FORBIDDEN, &waiting, Some(message))
        }
        Ok(Outcome::Over(message)) => with_cleared_cookie(message_page(
            StatusCode::FORBIDDEN,
            "Not signed in",
            &message,
        )),
        Err(failure) => message_page(failure.status, "Not signed in", &failure.message),
    }
}

/// The page that ends a login: it sets the session cookie and moves on to
/// `/devices` itself.
fn signed_in(logged_in: &LoggedIn) -> Response {
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

/// The TOTP step's page (the waiting login's token in the cookie).
fn totp_page(status: StatusCode, waiting: &Waiting, error: Option<&str>) -> Response {
    let mut response = page(status, totp_markup(waiting, error));
    let cookie = format!(
        "{SSO_COOKIE}={}; Path=/; Max-Age={STEP_LIFETIME}; HttpOnly; Secure; SameSite=Lax",
        waiting.token
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

fn totp_markup(waiting: &Waiting, error: Option<&str>) -> Markup {
    let csrf = csrf_for(&waiting.token);
    layout(
        "One more step",
        None,
        html! {
            h1 { "One more step, " (waiting.user) }
            @if let Some(error) = error { p .error role="alert" { (error) } }
            form method="post" action="/oidc/totp" {
                input type="hidden" name="csrf" value=(csrf);
                @match &waiting.ask {
                    Ask::Code => {
                        p { "This gateway also asks for a code from your authenticator app." }
                    }
                    Ask::Enroll { secret, otpauth_uri } => {
                        p { "This gateway also asks for a code from an authenticator app. Set one up now: scan this code with it (for example Aegis, FreeOTP or Google Authenticator)." }
                        @if let Some(qr) = totp_qr_data_uri(otpauth_uri) { img .qr src=(qr) alt="QR code to add this account to an authenticator app" width="240" height="240"; }
                        p { "Or type this key into the app: " }
                        p { code .secret #totp-secret { (secret) } }
                    }
                }
                label for="totp_code" { "Code the app shows now" }
                input #totp_code type="text" name="totp_code" inputmode="numeric" pattern="[0-9]{6}" autocomplete="one-time-code" required autofocus;
                button type="submit" { "Continue" }
            }
        },
    )
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
