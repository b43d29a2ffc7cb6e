//! Review finding 10, problem 2 (issue 24): with `oidc.require_totp`,
//! whoever first passed the provider set up the member's authenticator,
//! and the member was active before any code was given.
//!
//! - `oidc.totp_enrollment = "admin_link"` (the default): a member with no
//!   authenticator who signs in through the provider is told to ask an
//!   admin for an enrollment link, which is the only way to set the first
//!   one; the member stays pending until then.
//! - `"first_login"`: the member sets it up at their first SSO login, and
//!   stays pending (no config, no certificate, no password login) until the
//!   code step is done.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use gatehouse_tests::Daemon;
use gatehouse_tests::portal::{Account, Portal};
use gatehouse_tests::sso::{Browser, OidcProvider, between, free_port, start_gateway};
use serde_json::{Value, json};

fn accounts() -> Value {
    json!({
        "alice-sub-0001": {
            "preferred_username": "alice",
            "email": "alice@example.org",
            "email_verified": true,
            "groups": ["research-team"],
        },
    })
}

/// A provider and a gateway for it with `require_totp` and `extra` in
/// `[oidc]`.
fn lab(extra: &str) -> Option<(OidcProvider, Daemon, tempfile::TempDir, Portal)> {
    let port = free_port();
    let provider = OidcProvider::start(
        &accounts(),
        &format!("https://127.0.0.1:{port}/oidc/callback"),
    )?;
    let (gw, dir) = start_gateway(
        &provider.issuer,
        port,
        &format!("auto_provision = true\nrequire_totp = true\n{extra}"),
    );
    let portal = Portal::of(&gw);
    Some((provider, gw, dir, portal))
}

fn state_of(gw: &Daemon) -> String {
    gw.ctl_json(&["user", "show", "alice"])["state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// By default nobody sets up an authenticator through the provider: the
/// member (provisioned pending) is told to ask an admin, the refusal is
/// audited; the admin's enrollment link sets the authenticator (and a
/// password) and activates the member; then SSO asks for a code only.
#[test]
fn by_default_the_first_authenticator_comes_only_from_an_admin_link() {
    let Some((provider, gw, _dir, portal)) = lab("") else {
        return;
    };
    let browser = Browser::new(&portal.cert_pem);
    let (status, _, body) = browser.sso_login(&portal.base, &provider.issuer, "alice-sub-0001");
    assert!(
        !body.contains("totp-secret"),
        "the provider's word set up an authenticator: {body}"
    );
    assert_eq!(status, 403, "{body}\n{}", gw.log_tail(20));
    assert!(body.contains("enrollment link"), "{body}");
    assert!(body.contains("totp_not_enrolled"), "{body}");
    assert_eq!(state_of(&gw), "pending", "provisioned, not active");
    let failed = gw.audit_of("portal.login.fail");
    let last = &failed.last().unwrap()["detail"];
    assert_eq!(
        (last["method"].as_str(), last["reason"].as_str()),
        (Some("oidc"), Some("totp_not_enrolled")),
        "{last}"
    );
    let whoami = browser.get(&format!("{}/api/v1/whoami", portal.base));
    assert_eq!(whoami.status(), 401, "no session");

    // The admin's link: the only way to the first authenticator.
    let link = gw.ctl_json(&["user", "enrollment-link", "alice"]);
    let token = link["token"].as_str().unwrap();
    let offer: Value = portal
        .get(&format!("/api/v1/enroll/{token}"), None)
        .json()
        .unwrap();
    let mut account = Account::new("alice", offer["totp_secret"].as_str().unwrap());
    let code = account.next_code();
    let enrolled = portal.post_json(
        &format!("/api/v1/enroll/{token}"),
        &json!({ "password": account.password, "totp_secret": account.secret, "totp_code": code }),
        None,
    );
    assert_eq!(enrolled.status(), 200, "{}", enrolled.text().unwrap());
    assert_eq!(state_of(&gw), "active");

    let browser = Browser::new(&portal.cert_pem);
    let (status, _, page) = browser.sso_login(&portal.base, &provider.issuer, "alice-sub-0001");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("One more step"), "{page}");
    assert!(!page.contains("totp-secret"), "a code only: {page}");
    let csrf = between(&page, "name=\"csrf\" value=\"");
    let code = account.next_code();
    let signed = browser.submit(
        &portal.base,
        &page,
        &[("csrf", csrf.as_str()), ("totp_code", code.as_str())],
    );
    assert_eq!(signed.status(), 200);
    assert!(signed.text().unwrap().contains("Signed in"));
}

/// With `totp_enrollment = "first_login"` the member sets the app up at
/// their first SSO login, and is pending until the code is right: no
/// session (no device config, no certificate) before it.
#[test]
fn with_first_login_the_member_stays_pending_until_the_code_step_is_done() {
    let Some((provider, gw, _dir, portal)) = lab("totp_enrollment = \"first_login\"") else {
        return;
    };
    let browser = Browser::new(&portal.cert_pem);
    let (status, _, page) = browser.sso_login(&portal.base, &provider.issuer, "alice-sub-0001");
    assert_eq!(status, 200, "{page}\n{}", gw.log_tail(20));
    assert!(page.contains("totp-secret"), "the app is set up: {page}");
    assert_eq!(
        state_of(&gw),
        "pending",
        "active before the TOTP step was done"
    );
    let added = gw.audit_of("user.add");
    assert_eq!(added.last().unwrap()["detail"]["state"], "pending");
    // No session meanwhile: no device config, no certificate.
    let whoami = browser.get(&format!("{}/api/v1/whoami", portal.base));
    assert_eq!(whoami.status(), 401, "no session before the code");

    let secret = between(&page, "id=\"totp-secret\">");
    let csrf = between(&page, "name=\"csrf\" value=\"");
    let mut account = Account::new("alice", &secret);
    let code = account.next_code();
    let signed = browser.submit(
        &portal.base,
        &page,
        &[("csrf", csrf.as_str()), ("totp_code", code.as_str())],
    );
    assert_eq!(signed.status(), 200);
    assert!(signed.text().unwrap().contains("Signed in"));
    assert_eq!(state_of(&gw), "active", "activated by the code step");
    let logins = gw.audit_of("portal.login.ok");
    let detail = &logins.last().unwrap()["detail"];
    assert_eq!(detail["totp_enrolled"], true, "{detail}");
    assert_eq!(detail["activated"], true, "{detail}");
}
