//! Server-rendered pages (maud escapes every value): login, enrollment, the
//! devices page, and the ssh_config download. Forms work without script;
//! only "Add device" needs `portal.js`, because the key pair is made in the
//! browser. Failures re-render the form with one plain sentence.

use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gatehouse_config::api::DeviceInfo;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::PortalState;
use super::error::Failure;
use super::flows::{self, EnrollInput, LoggedIn, LoginInput};
use super::sessions::{
    ClientAddr, PRE_COOKIE, Session, check_pre_csrf, clear_session_cookie, cookie, new_token,
    pre_cookie, session_cookie,
};
use crate::time_fmt::rfc3339;

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    totp_code: String,
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
pub struct EnrollForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
    #[serde(default)]
    totp_secret: String,
    #[serde(default)]
    totp_code: String,
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
pub struct KeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    public_key: String,
    #[serde(default)]
    fingerprint: String,
}

/// `/`: the devices page when logged in, else the login page.
pub async fn home(session: Result<Session, Failure>) -> Response {
    match session {
        Ok(_) => see_other("/devices"),
        Err(_) => see_other("/login"),
    }
}

pub async fn login_page(State(state): State<PortalState>, headers: HeaderMap) -> Response {
    let pre = pre_token(&headers);
    let ways = SignIn::of(&state).await;
    page_with_pre(StatusCode::OK, &pre, login_markup(&ways, &pre, None, ""))
}

/// The ways the login page offers to sign in.
pub(super) struct SignIn {
    password: bool,
    /// The SSO button's name, and whether the provider answers now.
    sso: Option<(String, bool)>,
}

impl SignIn {
    pub(super) async fn of(state: &PortalState) -> SignIn {
        let config = state.core.config();
        let sso = match (&state.sso, &config.oidc) {
            (Some(provider), Some(oidc)) => {
                Some((oidc.display_name.clone(), provider.available().await))
            }
            _ => None,
        };
        SignIn {
            password: config.portal.password_login,
            sso,
        }
    }
}

pub async fn login_submit(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let pre = pre_token(&headers);
    let ways = SignIn::of(&state).await;
    let Ok(Form(form)) = form else {
        let error = Failure::bad_request("The form was incomplete; try again.");
        return page_with_pre(
            error.status,
            &pre,
            login_markup(&ways, &pre, Some(&error), ""),
        );
    };
    if let Err(error) = check_pre_csrf(&headers, &form.csrf) {
        return page_with_pre(
            error.status,
            &pre,
            login_markup(&ways, &pre, Some(&error), &form.user),
        );
    }
    let input = LoginInput {
        user: form.user.clone(),
        password: form.password,
        totp_code: Some(form.totp_code),
    };
    match flows::login(&state, source, input).await {
        Ok(logged_in) => logged_in_redirect(&logged_in),
        Err(error) => page_with_pre(
            error.status,
            &pre,
            login_markup(&ways, &pre, Some(&error), &form.user),
        ),
    }
}

pub async fn logout_submit(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    session: Result<Session, Failure>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let session = match session {
        Ok(session) => session,
        Err(_) => return see_other("/login"),
    };
    let given = form.ok().map(|Form(f)| f.csrf);
    if let Err(error) = session.check_csrf(given.as_deref()) {
        return message_page(error.status, "Not logged out", &error.message);
    }
    match flows::logout(&state, source, &session).await {
        Ok(()) => (
            StatusCode::SEE_OTHER,
            [
                (LOCATION, "/login".to_string()),
                (SET_COOKIE, clear_session_cookie()),
            ],
        )
            .into_response(),
        Err(error) => message_page(error.status, "Not logged out", &error.message),
    }
}

pub async fn devices_page(
    State(state): State<PortalState>,
    session: Result<Session, Failure>,
) -> Response {
    let Ok(session) = session else {
        return see_other("/login");
    };
    let devices = match state.access.devices(Some(&session.user.name)).await {
        Ok(devices) => devices,
        Err(error) => {
            let error = Failure::from(error);
            return message_page(error.status, "Devices", &error.message);
        }
    };
    let keys = match state.access.user_detail(&session.user.name).await {
        Ok(detail) => detail.ssh_keys,
        Err(error) => {
            let error = Failure::from(error);
            return message_page(error.status, "Devices", &error.message);
        }
    };
    let config = state.core.config();
    let max = i64::try_from(config.portal.session_max.as_secs()).unwrap_or(i64::MAX);
    let access = state
        .access
        .member_access(&session.user, crate::time_fmt::now_unix());
    let (subnets, vpn_state, vpn_until) = (access.subnets, access.vpn, access.vpn_until);
    let body = html! {
        h1 { "Your devices" }
        section aria-labelledby="access" {
            h2 #access { "Your access" }
            p { "Groups: " strong { (session.user.groups.join(", ")) } }
            p { "Subnets your devices reach: " strong { (subnets.join(", ")) } }
            p {
                "VPN access: "
                strong {
                    @match vpn_until {
                        Some(until) => { "until " (rfc3339(until)) }
                        None => { (vpn_state.as_str()) }
                    }
                }
            }
            @if crate::auth::is_auditor(&session.user, &config, crate::time_fmt::now_unix()) {
                p #auditor { "You are an auditor: " a href="/audit" { "review the audit log" } " (read only)." }
            }
            p .hint #login-method {
                @match session.method {
                    crate::store::LoginMethod::Oidc => {
                        "Signed in with " (config.oidc.as_ref().map_or("your identity provider", |o| o.display_name.as_str())) "; "
                    }
                    crate::store::LoginMethod::Password => { "Logged in with your password; " }
                }
                "this login lasts until " (rfc3339(session.created_at.saturating_add(max))) "."
            }
        }
        section aria-labelledby="list" {
            h2 #list { "Devices" }
            @if devices.is_empty() {
                p #no-devices { "No devices yet." }
            } @else {
                table {
                    thead { tr { th { "Name" } th { "Address" } th { "Created" } th { "Last handshake" } th { "State" } th { span .hint { "Action" } } } }
                    tbody {
                        @for d in &devices { (device_row(d, &session.csrf)) }
                    }
                }
            }
            ul #device-list-note {}
        }
        section aria-labelledby="add" {
            h2 #add { "Add a device" }
            p .hint { "The key pair is made in this browser; only its public key is sent to the gateway. Save the config right away: the private key cannot be shown again." }
            form #add-device {
                label for="device-name" { "Device name" }
                input #device-name type="text" name="name" required pattern="[a-z][a-z0-9._-]{0,31}" autocomplete="off" aria-describedby="device-name-hint";
                p #device-name-hint .hint { "Lower case letters, digits, dot, dash and underscore; starts with a letter (e.g. laptop)." }
                button type="submit" { "Add device" }
            }
            p #add-status role="status" aria-live="polite" {}
            div #new-device hidden {
                h2 { "New device " span #new-device-name {} }
                p #gateway-keyed .notice hidden { "This browser cannot make WireGuard keys (no WebCrypto X25519), so the gateway made this key pair. It kept only the public key; the private key exists only on this page." }
                p { a #conf-download .button href="#" { "Download the .conf file" } }
                p { "Or scan this QR code with the WireGuard app:" }
                img #conf-qr .qr alt="QR code of the WireGuard config";
                details { summary { "Show the config text" } pre #conf-text {} }
            }
        }
        section aria-labelledby="keys" {
            h2 #keys { "SSH keys for the jump host" }
            p .hint { "ssh -J uses these keys; add the public key (the .pub file) of each computer you connect from." }
            @if keys.is_empty() {
                p #no-keys { "No SSH keys yet." }
            } @else {
                table #key-list {
                    thead { tr { th { "Fingerprint" } th { "Type" } th { "Comment" } th { "Added" } th { span .hint { "Action" } } } }
                    tbody {
                        @for key in &keys {
                            tr {
                                td { code { (key.fingerprint) } }
                                td { (key.algorithm) }
                                td { (key.comment) }
                                td { (key.added_at) }
                                td {
                                    form method="post" action="/ssh-keys/remove" {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="fingerprint" value=(key.fingerprint);
                                        button .link type="submit" { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            form #add-key method="post" action="/ssh-keys" {
                input type="hidden" name="csrf" value=(session.csrf);
                label for="public_key" { "Public key" }
                textarea #public_key name="public_key" rows="2" required placeholder="ssh-ed25519 AAAA... you@laptop" {}
                button type="submit" { "Add key" }
            }
            @if config.ssh.certificates {
                h3 #certs { "SSH certificate" }
                p .hint { "Private hosts trust the gateway's certificates instead of your key: paste your public key (a new one is added above), and save the certificate beside the private key." }
                form #get-cert method="post" action="/ssh-keys/certificate" {
                    input type="hidden" name="csrf" value=(session.csrf);
                    label for="cert_public_key" { "Public key to certify" }
                    textarea #cert_public_key name="public_key" rows="2" required placeholder="ssh-ed25519 AAAA... you@laptop" {}
                    button type="submit" { "Get a certificate" }
                }
            }
        }
        section aria-labelledby="ssh" {
            h2 #ssh { "SSH" }
            p { "To reach hosts in your subnets with " code { "ssh" } " through the gateway's jump host, add this snippet to your SSH config: " a href="/ssh_config" download="gatehouse-ssh_config" { "ssh_config snippet" } ", and save " a href="/ssh/known_hosts" download="gatehouse_known_hosts" { "gatehouse_known_hosts" } " as " code { "~/.ssh/gatehouse_known_hosts" } ": it pins the jump host's key and vouches for the hosts the gateway signed, so they need no fingerprint prompt." }
        }
        script src="/static/qrcode.js" {}
        script src="/static/portal.js" {}
    };
    page(
        StatusCode::OK,
        layout(
            "Your devices",
            Some((&session.user.name, &session.csrf)),
            body,
        ),
    )
}

pub async fn revoke_submit(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    Path(name): Path<String>,
    session: Result<Session, Failure>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let Ok(session) = session else {
        return see_other("/login");
    };
    let given = form.ok().map(|Form(f)| f.csrf);
    if let Err(error) = session.check_csrf(given.as_deref()) {
        return message_page(error.status, "Not revoked", &error.message);
    }
    let by = flows::requester(source, &session);
    let revoked = state
        .access
        .revoke_device(&by, &session.user.name, &name)
        .await;
    match revoked {
        Ok(_) => see_other("/devices"),
        Err(error) => {
            let error = Failure::from(error);
            message_page(error.status, "Not revoked", &error.message)
        }
    }
}

/// Adds one of the member's SSH keys from the devices page's form.
pub async fn add_key_submit(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    session: Result<Session, Failure>,
    form: Result<Form<KeyForm>, FormRejection>,
) -> Response {
    key_submit(session, form, "Key not added", |session, form| async move {
        let by = flows::requester(source, &session);
        state
            .access
            .add_ssh_key(&by, &session.user.name, form.public_key.trim())
            .await
            .map(drop)
            .map_err(Failure::from)
    })
    .await
}

/// Removes one of the member's SSH keys from the devices page's form.
pub async fn remove_key_submit(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    session: Result<Session, Failure>,
    form: Result<Form<KeyForm>, FormRejection>,
) -> Response {
    key_submit(
        session,
        form,
        "Key not removed",
        |session, form| async move {
            let by = flows::requester(source, &session);
            state
                .access
                .remove_ssh_key(&by, &session.user.name, &form.fingerprint)
                .await
                .map(drop)
                .map_err(Failure::from)
        },
    )
    .await
}

/// A key form's checks ([`checked_form`]), then `change`; back to the
/// devices page, or a page titled `refused` that says why.
async fn key_submit<F, Fut>(
    session: Result<Session, Failure>,
    form: Result<Form<KeyForm>, FormRejection>,
    refused: &str,
    change: F,
) -> Response
where
    F: FnOnce(Session, KeyForm) -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    let (session, form) = match checked_form(session, form, |f| &f.csrf, refused) {
        Ok(checked) => checked,
        Err(page) => return page,
    };
    match change(session, form).await {
        Ok(()) => see_other("/devices"),
        Err(error) => message_page(error.status, refused, &error.message),
    }
}

/// What every form of a logged-in page checks first: the session (else to
/// the login page), a complete form, and its CSRF field (`csrf_of`); the
/// refusal is a page titled `refused`.
#[allow(
    clippy::result_large_err,
    reason = "the refusal is the handler's answer, returned once"
)]
pub(super) fn checked_form<T>(
    session: Result<Session, Failure>,
    form: Result<Form<T>, FormRejection>,
    csrf_of: impl Fn(&T) -> &str,
    refused: &str,
) -> Result<(Session, T), Response> {
    let Ok(session) = session else {
        return Err(see_other("/login"));
    };
    let Ok(Form(form)) = form else {
        return Err(message_page(
            StatusCode::BAD_REQUEST,
            refused,
            "The form was incomplete; try again.",
        ));
    };
    if let Err(error) = session.check_csrf(Some(csrf_of(&form))) {
        return Err(message_page(error.status, refused, &error.message));
    }
    Ok((session, form))
}

/// The ssh_config snippet: a pinned jump host and ProxyJump for each subnet.
pub async fn ssh_config(
    State(state): State<PortalState>,
    session: Result<Session, Failure>,
) -> Response {
    let Ok(session) = session else {
        return see_other("/login");
    };
    let Some(ssh) = state.access.member_ssh(&session.user.groups) else {
        return no_jump_host();
    };
    let config = state.core.config();
    let text = super::ssh_config::ssh_snippet(&config.gateway.name, &session.user.name, &ssh);
    text_download("gatehouse-ssh_config", text)
}

/// The member's `~/.ssh/gatehouse_known_hosts`: the jump host's pinned key
/// and, with the host CA, its `@cert-authority` line for their hosts.
pub async fn known_hosts(
    State(state): State<PortalState>,
    session: Result<Session, Failure>,
) -> Response {
    let Ok(session) = session else {
        return see_other("/login");
    };
    match state.access.member_ssh(&session.user.groups) {
        Some(ssh) => text_download("gatehouse_known_hosts", ssh.known_hosts),
        None => no_jump_host(),
    }
}

fn no_jump_host() -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "SSH",
        "The SSH jump host is not enabled on this gateway.",
    )
}

/// `text` as a plain-text attachment named `file`.
fn text_download(file: &str, text: String) -> Response {
    (
        [
            (CONTENT_TYPE, "text/plain; charset=utf-8".to_string()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        text,
    )
        .into_response()
}

pub async fn enroll_page(
    State(state): State<PortalState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let pre = pre_token(&headers);
    match flows::enroll_offer(&state, &token).await {
        Ok(offer) => page_with_pre(
            StatusCode::OK,
            &pre,
            enroll_markup(
                &pre,
                &token,
                &offer.user,
                offer.require_totp,
                &offer.totp_secret,
                &offer.otpauth_uri,
                None,
            ),
        ),
        Err(error) => message_page(error.status, "Enrollment link", &error.message),
    }
}

pub async fn enroll_submit(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    Path(token): Path<String>,
    headers: HeaderMap,
    form: Result<Form<EnrollForm>, FormRejection>,
) -> Response {
    let pre = pre_token(&headers);
    let offer = match flows::enroll_offer(&state, &token).await {
        Ok(offer) => offer,
        Err(error) => return message_page(error.status, "Enrollment link", &error.message),
    };
    let Ok(Form(form)) = form else {
        let error = Failure::bad_request("The form was incomplete; try again.");
        return message_page(error.status, "Enrollment", &error.message);
    };
    // Re-show the secret the user scanned, not a new one.
    let secret = if form.totp_secret.is_empty() {
        offer.totp_secret.clone()
    } else {
        form.totp_secret.clone()
    };
    let uri = crate::totp::otpauth_uri(&secret, &state.core.config().gateway.name, &offer.user);
    let again = |error: &Failure| {
        page_with_pre(
            error.status,
            &pre,
            enroll_markup(
                &pre,
                &token,
                &offer.user,
                offer.require_totp,
                &secret,
                &uri,
                Some(error),
            ),
        )
    };
    if let Err(error) = check_pre_csrf(&headers, &form.csrf) {
        return again(&error);
    }
    let input = EnrollInput {
        password: form.password,
        password_confirm: Some(form.password_confirm),
        totp_secret: (!form.totp_code.trim().is_empty() || offer.require_totp)
            .then(|| secret.clone()),
        totp_code: Some(form.totp_code),
    };
    match flows::enroll(&state, source, &token, input).await {
        Ok(logged_in) => logged_in_redirect(&logged_in),
        Err(error) => again(&error),
    }
}

fn device_row(d: &DeviceInfo, csrf: &str) -> Markup {
    let state = match d.live {
        Some(true) => "active",
        Some(false) => "inactive",
        None => "VPN not running",
    };
    html! {
        tr {
            td data-label="Name" { (d.name) }
            td data-label="Address" { code { (d.address) } }
            td data-label="Created" { (d.created_at) }
            td data-label="Last handshake" { (d.last_handshake.as_deref().unwrap_or("never")) }
            td data-label="State" { (state) }
            td data-label="Action" {
                form method="post" action={ "/devices/" (d.name) "/revoke" } {
                    input type="hidden" name="csrf" value=(csrf);
                    button .danger type="submit" aria-label={ "Revoke " (d.name) } { "Revoke" }
                }
            }
        }
    }
}

fn login_markup(ways: &SignIn, pre: &str, error: Option<&Failure>, user: &str) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            h1 { "Log in" }
            @if let Some(error) = error { p .error role="alert" { (error.message) } }
            @if let Some((name, available)) = &ways.sso {
                section .sso {
                    @if *available {
                        a .button #sso href="/oidc/start" { "Sign in with " (name) }
                    } @else {
                        p .error role="status" { "Sign in with " (name) " is unavailable right now: the identity provider cannot be reached. Try again in a minute." }
                    }
                }
            }
            @if ways.password {
                section {
                    form method="post" action="/login" {
                        input type="hidden" name="csrf" value=(pre);
                        label for="user" { "User name" }
                        input #user type="text" name="user" value=(user) required autocomplete="username" autocapitalize="none";
                        label for="password" { "Password" }
                        input #password type="password" name="password" required autocomplete="current-password";
                        label for="totp_code" { "Code from your authenticator app" }
                        input #totp_code type="text" name="totp_code" inputmode="numeric" pattern="[0-9]{6}" autocomplete="one-time-code" aria-describedby="totp-hint";
                        p #totp-hint .hint { "Six digits. Leave empty only if you did not set up an app." }
                        button type="submit" { "Log in" }
                    }
                }
            }
        },
    )
}

fn enroll_markup(
    pre: &str,
    token: &str,
    user: &str,
    require_totp: bool,
    secret: &str,
    uri: &str,
    error: Option<&Failure>,
) -> Markup {
    let qr = totp_qr_data_uri(uri);
    layout(
        "Set up your account",
        None,
        html! {
            h1 { "Welcome, " (user) }
            @if let Some(error) = error { p .error role="alert" { (error.message) } }
            form method="post" action={ "/enroll/" (token) } {
                input type="hidden" name="csrf" value=(pre);
                input type="hidden" name="totp_secret" value=(secret);
                section aria-labelledby="pw" {
                    h2 #pw { "1. Choose a password" }
                    p .hint #pw-hint { "At least 12 characters; not your user name; not a common password. A few random words work well." }
                    label for="password" { "New password" }
                    input #password type="password" name="password" required minlength="12" autocomplete="new-password" aria-describedby="pw-hint";
                    label for="password_confirm" { "Repeat the password" }
                    input #password_confirm type="password" name="password_confirm" required minlength="12" autocomplete="new-password";
                }
                section aria-labelledby="app" {
                    h2 #app { "2. Set up your authenticator app" @if !require_totp { " (optional)" } }
                    p { "Scan this code with an authenticator app (for example Aegis, FreeOTP or Google Authenticator):" }
                    @if let Some(qr) = qr { img .qr src=(qr) alt="QR code to add this account to an authenticator app" width="240" height="240"; }
                    p { "Or type this key into the app: " }
                    p { code .secret #totp-secret { (secret) } }
                    label for="totp_code" { "Code the app shows now" }
                    input #totp_code type="text" name="totp_code" inputmode="numeric" pattern="[0-9]{6}" autocomplete="one-time-code" required[require_totp];
                }
                button type="submit" { "Finish setup" }
            }
        },
    )
}

pub(super) fn layout(title: &str, user: Option<(&str, &str)>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some((_, csrf)) = user { meta name="csrf-token" content=(csrf); }
                title { (title) " · gatehouse" }
                link rel="stylesheet" href="/static/portal.css";
            }
            body {
                header {
                    strong { "gatehouse" }
                    @if let Some((name, csrf)) = user {
                        form method="post" action="/logout" {
                            span { (name) " " }
                            input type="hidden" name="csrf" value=(csrf);
                            button .link type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub(super) fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    page(
        status,
        layout(
            title,
            None,
            html! {
                h1 { (title) }
                p .error role="alert" { (message) }
                p { a href="/login" { "Go to the login page" } }
            },
        ),
    )
}

pub(super) fn page(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

fn page_with_pre(status: StatusCode, pre: &str, markup: Markup) -> Response {
    (
        status,
        [
            (CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (SET_COOKIE, pre_cookie(pre)),
        ],
        markup.into_string(),
    )
        .into_response()
}

pub(super) fn see_other(path: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, path.to_string())]).into_response()
}

fn logged_in_redirect(logged_in: &LoggedIn) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (LOCATION, "/devices".to_string()),
            (
                SET_COOKIE,
                session_cookie(&logged_in.token, logged_in.max_age_secs),
            ),
        ],
    )
        .into_response()
}

/// The browser's pre-login token, or a new one.
fn pre_token(headers: &HeaderMap) -> String {
    cookie(headers, PRE_COOKIE).unwrap_or_else(new_token)
}

pub(super) fn totp_qr_data_uri(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .build();
    Some(format!(
        "data:image/svg+xml;base64,{}",
        STANDARD.encode(svg)
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_values() {
        let ways = SignIn {
            password: true,
            sso: Some(("<b>SSO</b>".into(), true)),
        };
        let html = login_markup(&ways, "tok", None, "<script>x</script>").into_string();
        assert!(!html.contains("<b>SSO"));
        assert!(!html.contains("<script>x"));
        assert!(html.contains("&lt;script&gt;"));
    }
}
