//! The portal's SSO endpoints (`[oidc]`); they parse, call
//! [`super::sso_login`] and [`super::sso_totp`] (where the rules are), and
//! render.
//!
//! - `GET /oidc/start`: a new login. A random pre-login token goes to the
//!   `__Host-gh_sso` cookie (`SameSite=Lax`: the provider's redirect back is
//!   a cross-site navigation, which `Strict` would strip it from); the
//!   browser is sent to the provider.
//! - `GET /oidc/callback`: the provider sends the browser back. The session
//!   cookie is set on a page that moves on to `/devices` itself: a redirect
//!   would still be part of the provider's cross-site navigation, which
//!   does not carry a `SameSite=Strict` cookie.
//! - With `oidc.require_totp`, the callback instead asks for a TOTP code (or
//!   sets up the app), and `POST /oidc/totp` checks it. The waiting login's
//!   token replaces the pre-login one in the same `SameSite=Lax` cookie,
//!   which a cross-site POST does not carry; the form also carries a value
//!   derived from it (double submit).
//!
//! Every refusal is answered with a page that says what to do; one refused
//! by a per-source or per-member limit is `429` and names its code
//! (`too_many_logins`, `source_locked_out`, `locked_out`, `busy`).

use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::PortalState;
use super::flows::LoggedIn;
use super::pages::{layout, message_page, page, totp_qr_data_uri};
use super::sessions::{ClientAddr, cookie, csrf_for, same_token, session_cookie};
use super::sso_login::{self, Callback, Finished, PENDING_LIFETIME, Started};
use super::sso_totp::{self, Ask, Outcome, STEP_LIFETIME, Waiting};

/// The pre-login cookie of an SSO login.
pub const SSO_COOKIE: &str = "__Host-gh_sso";

/// The TOTP step's form.
#[derive(Debug, Deserialize)]
pub struct TotpForm {
    csrf: String,
    totp_code: String,
}

/// `GET /oidc/start`.
pub async fn start(State(state): State<PortalState>, ClientAddr(source): ClientAddr) -> Response {
    let Some(provider) = state.sso.clone() else {
        return not_set_up();
    };
    match sso_login::start(&state, &provider, source).await {
        Started::Redirect { url, binding } => {
            let Ok(location) = HeaderValue::from_str(&url) else {
                return unavailable(&state);
            };
            let mut response =
                (StatusCode::SEE_OTHER, [(SET_COOKIE, sso_cookie(&binding))]).into_response();
            response.headers_mut().insert(LOCATION, location);
            response
        }
        Started::Unavailable => unavailable(&state),
        Started::Limited => limited(
            "too_many_logins",
            "Too many sign-ins were started from your address lately. Wait a few minutes, then try again.",
        ),
        Started::Failed(failure) => {
            message_page(failure.status, "Single sign-on failed", &failure.message)
        }
    }
}

/// `GET /oidc/callback`.
pub async fn callback(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    headers: HeaderMap,
    query: Result<Query<Callback>, QueryRejection>,
) -> Response {
    let params = query.map(|Query(p)| p).unwrap_or_default();
    let Some(provider) = state.sso.clone() else {
        return not_set_up();
    };
    let binding = cookie(&headers, SSO_COOKIE).unwrap_or_default();
    match sso_login::callback(&state, &provider, source, &binding, &params).await {
        Finished::SignedIn(logged_in) => signed_in(&logged_in),
        Finished::AskTotp(waiting) => totp_page(StatusCode::OK, &waiting, None),
        Finished::Refused { message } => with_cleared_cookie(message_page(
            StatusCode::FORBIDDEN,
            "Not signed in",
            &message,
        )),
        Finished::Limited { code, message } => with_cleared_cookie(limited(code, message)),
        Finished::Failed(failure) => {
            message_page(failure.status, "Not signed in", &failure.message)
        }
    }
}

/// `POST /oidc/totp`: the code of an SSO login that waits for one.
pub async fn totp_submit(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
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
        Ok(Outcome::Limited { code, message }) => with_cleared_cookie(limited(code, message)),
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

/// A `429` page: what to do, and the refusal's code for scripts.
fn limited(code: &'static str, message: &str) -> Response {
    page(
        StatusCode::TOO_MANY_REQUESTS,
        layout(
            "Not signed in",
            None,
            html! {
                h1 { "Not signed in" }
                p .error role="alert" data-code=(code) { (message) }
                p { "Error code: " code { (code) } }
                p { a href="/login" { "Go to the login page" } }
            },
        ),
    )
}

fn not_set_up() -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "Single sign-on is not set up",
        "This gateway has no identity provider configured.",
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
