//! Sign-in with the team's identity provider (issue 15), against a real,
//! certified OpenID provider (panva's oidc-provider on loopback), through
//! its own login and consent pages, with the real accessd: the code flow
//! with PKCE, the identity link, groups mapped from the provider's at every
//! login, auto-provisioning, and the refusals, each audited.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use gatehouse_tests::Daemon;
use gatehouse_tests::portal::Portal;
use gatehouse_tests::sso::{Browser, OidcProvider, RogueIssuer, between, free_port, start_gateway};
use serde_json::{Value, json};

fn accounts(groups: &[&str]) -> Value {
    json!({
        "alice-sub-0001": {
            "preferred_username": "alice",
            "email": "alice@example.org",
            "groups": groups,
        },
        "mallory-sub-0002": {
            "preferred_username": "mallory",
            "email": "mallory@evil.example",
            "groups": ["research-team"],
        },
    })
}

/// A provider and a gateway for it (`extra` in `[oidc]`), or `None` when
/// the provider cannot run here (skipped, or failed under GATEHOUSE_E2E=1).
fn lab(
    extra: &str,
    groups: &[&str],
) -> Option<(OidcProvider, Daemon, tempfile::TempDir, Portal, u16)> {
    let port = free_port();
    let provider = OidcProvider::start(
        &accounts(groups),
        &format!("https://127.0.0.1:{port}/oidc/callback"),
    )?;
    let (gw, dir) = start_gateway(&provider.issuer, port, extra);
    let portal = Portal::of(&gw);
    Some((provider, gw, dir, portal, port))
}

/// The whole journey: the login page offers "Sign in with Test IdP"; the
/// provider's login and consent pages; back on the portal, signed in as an
/// active member created from the provider's claims, in the group its
/// groups map to; `whoami` says so; audited `user.add` by oidc and
/// `portal.login.ok` with `method: "oidc"`, the subject and the groups,
/// never a token or the client secret. A second login finds the same
/// member by the identity link.
#[test]
fn a_member_signs_in_through_the_provider_and_is_provisioned_once() {
    let Some((provider, gw, _dir, portal, _)) = lab("auto_provision = true", &["research-team"])
    else {
        return;
    };
    let page = portal.get("/login", None).text().unwrap();
    assert!(page.contains("Sign in with Test IdP"), "{page}");
    assert!(page.contains("href=\"/oidc/start\""), "{page}");

    let browser = Browser::new(&portal.cert_pem);
    let (status, url, body) = browser.sso_login(&portal.base, &provider.issuer, "alice-sub-0001");
    assert_eq!(status, 200, "{url}\n{body}\n{}", gw.log_tail(30));
    assert!(
        url.starts_with(&format!("{}/oidc/callback", portal.base)),
        "{url}"
    );
    assert!(
        body.contains("Signed in") && body.contains("alice"),
        "{body}"
    );
    let whoami = browser.get(&format!("{}/api/v1/whoami", portal.base));
    assert_eq!(whoami.status(), 200);
    let whoami: Value = whoami.json().unwrap();
    assert_eq!(whoami["user"], "alice", "{whoami}");
    let devices = browser
        .get(&format!("{}/devices", portal.base))
        .text()
        .unwrap();
    assert!(
        devices.contains("alice"),
        "the devices page opens: {devices}"
    );

    let user = gw.ctl_json(&["user", "show", "alice"]);
    assert_eq!(user["state"], "active", "{user}");
    assert_eq!(user["groups"], json!(["research"]), "{user}");
    let added = gw.audit_of("user.add");
    assert_eq!(added.len(), 1, "{added:?}");
    assert_eq!(added[0]["actor"], "oidc");
    assert_eq!(added[0]["detail"]["subject"], "alice-sub-0001");
    let logins = gw.audit_of("portal.login.ok");
    assert_eq!(logins.len(), 1, "{logins:?}");
    let detail = &logins[0]["detail"];
    assert_eq!(detail["method"], "oidc", "{detail}");
    assert_eq!(detail["subject"], "alice-sub-0001");
    assert_eq!(detail["groups"], json!(["research"]));
    assert_eq!(
        detail["totp"], false,
        "no TOTP step unless oidc.require_totp"
    );
    let log = gw.log_text();
    let audit = serde_json::to_string(&gw.audit_json(&[])).unwrap();
    for text in [&log, &audit] {
        assert!(
            !text.contains(gatehouse_tests::sso::CLIENT_SECRET),
            "the client secret leaked"
        );
        assert!(!text.contains("eyJ"), "a token (JWT) leaked");
    }

    // Again, from a new browser: the same member, found by the link.
    let again = Browser::new(&portal.cert_pem);
    let (status, _, body) = again.sso_login(&portal.base, &provider.issuer, "alice-sub-0001");
    assert_eq!(status, 200, "{body}");
    assert_eq!(gw.audit_of("user.add").len(), 1, "provisioned once");
    assert_eq!(gw.audit_of("portal.login.ok").len(), 2);
}

/// Someone removed from the IdP group loses that group at their next
/// login, which is refused (nothing maps), with a clear page and an
/// audited reason; back in the group, they sign in again.
#[test]
fn a_member_removed_from_the_idp_group_keeps_nothing_at_the_next_login() {
    let Some((provider, gw, _dir, portal, _)) = lab("auto_provision = true", &["research-team"])
    else {
        return;
    };
    let (status, _, _) =
        Browser::new(&portal.cert_pem).sso_login(&portal.base, &provider.issuer, "alice-sub-0001");
    assert_eq!(status, 200);
    provider.set_accounts(&accounts(&["marketing"]));
    let (status, _, body) =
        Browser::new(&portal.cert_pem).sso_login(&portal.base, &provider.issuer, "alice-sub-0001");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("no group that grants access"), "{body}");
    let user = gw.ctl_json(&["user", "show", "alice"]);
    assert_eq!(user["groups"], json!([]), "{user}");
    let failed = gw.audit_of("portal.login.fail");
    assert_eq!(
        failed.last().unwrap()["detail"]["reason"],
        "unmapped",
        "{failed:?}"
    );
    let changed = gw.audit_of("user.set_groups");
    assert_eq!(changed.last().unwrap()["actor"], "oidc", "{changed:?}");

    provider.set_accounts(&accounts(&["research-team"]));
    let (status, _, _) =
        Browser::new(&portal.cert_pem).sso_login(&portal.base, &provider.issuer, "alice-sub-0001");
    assert_eq!(status, 200);
    assert_eq!(
        gw.ctl_json(&["user", "show", "alice"])["groups"],
        json!(["research"])
    );
}

/// The callback's own checks: an unknown `state`, the same callback twice
/// (a state is used once), a code used twice (the provider refuses it),
/// another browser's callback; each refused, audited with its reason.
#[test]
fn state_and_code_are_used_once_and_bound_to_the_browser() {
    let Some((provider, gw, _dir, portal, _)) = lab("auto_provision = true", &["research-team"])
    else {
        return;
    };
    let reason = |gw: &Daemon| {
        gw.audit_of("portal.login.fail")
            .last()
            .map(|r| r["detail"]["reason"].as_str().unwrap_or("").to_string())
    };
    let browser = Browser::new(&portal.cert_pem);
    let forged = browser.get(&format!(
        "{}/oidc/callback?code=abc&state=not-a-state",
        portal.base
    ));
    assert_eq!(forged.status(), 403);
    assert_eq!(reason(&gw).as_deref(), Some("state"));

    // A login whose callback is kept, not followed.
    let manual = reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&portal.cert_pem).unwrap())
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.url().path() == "/oidc/callback" {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        .no_proxy()
        .build()
        .unwrap();
    let stopped = Browser { client: manual };
    let callback = last_callback(&stopped, &portal.base, &provider.issuer);
    // Another browser presents it: refused, and the login is used up.
    let other = Browser::new(&portal.cert_pem);
    assert_eq!(other.get(&callback).status(), 403);
    assert_eq!(reason(&gw).as_deref(), Some("state"));
    assert_eq!(stopped.get(&callback).status(), 403, "used once");
    assert_eq!(reason(&gw).as_deref(), Some("state"));

    // The code of a completed login, replayed in a new login's callback.
    let callback = last_callback(&stopped, &portal.base, &provider.issuer);
    let (code, _) = query_pair(&callback);
    let used = stopped.get(&callback);
    assert_eq!(used.status(), 200, "the first use signs in");
    let fresh = last_callback(&stopped, &portal.base, &provider.issuer);
    let (_, state) = query_pair(&fresh);
    let replayed = stopped.get(&format!(
        "{}/oidc/callback?code={code}&state={state}",
        portal.base
    ));
    assert_eq!(replayed.status(), 403);
    assert_eq!(reason(&gw).as_deref(), Some("provider_error"));
}

/// With `auto_provision` off an unknown identity is refused; a domain not
/// allowed is refused; `password_login = false` hides the form and refuses
/// the API.
#[test]
fn unknown_identities_and_other_domains_are_refused_and_password_login_can_be_off() {
    let Some((provider, gw, _dir, portal, _)) = lab(
        "allowed_email_domains = [\"example.org\"]",
        &["research-team"],
    ) else {
        return;
    };
    let (status, _, body) =
        Browser::new(&portal.cert_pem).sso_login(&portal.base, &provider.issuer, "alice-sub-0001");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not registered"), "{body}");
    let (status, _, body) = Browser::new(&portal.cert_pem).sso_login(
        &portal.base,
        &provider.issuer,
        "mallory-sub-0002",
    );
    assert_eq!(status, 403, "{body}");
    let reasons: Vec<String> = gw
        .audit_of("portal.login.fail")
        .iter()
        .map(|r| r["detail"]["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons, ["unknown_identity", "domain"]);
    assert!(
        gw.ctl_json(&["user", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    drop(gw);

    let port = free_port();
    let provider = OidcProvider::start(
        &accounts(&["research-team"]),
        &format!("https://127.0.0.1:{port}/oidc/callback"),
    )
    .unwrap();
    let (gw, _dir) = start_gateway(&provider.issuer, port, "auto_provision = true");
    let text = std::fs::read_to_string(&gw.config).unwrap().replacen(
        "password_login = true\n",
        "password_login = false\n",
        1,
    );
    drop(gw);
    let gw = Daemon::start_with(&text);
    let portal = Portal::of(&gw);
    let page = portal.get("/login", None).text().unwrap();
    assert!(page.contains("Sign in with Test IdP"), "{page}");
    assert!(
        !page.contains("name=\"password\""),
        "the password form is hidden: {page}"
    );
    let refused = portal.login("alice", "whatever password", "");
    assert_eq!(refused.status(), 403);
    let said: Value = refused.json().unwrap();
    assert_eq!(said["code"], "password_login_disabled", "{said}");
}

/// Starts a login with `browser` (which stops before the portal's
/// callback) and returns the callback URL the provider sent it to.
fn last_callback(browser: &Browser, portal: &str, issuer: &str) -> String {
    let mut response = browser.get(&format!("{portal}/oidc/start"));
    for _ in 0..4 {
        if response.status().as_u16() == 303 {
            let location = response.headers()["location"].to_str().unwrap().to_string();
            assert!(
                location.starts_with(&format!("{portal}/oidc/callback")),
                "{location}"
            );
            return location;
        }
        let body = response.text().unwrap();
        response = if body.contains("value=\"login\"") {
            browser.submit(
                issuer,
                &body,
                &[
                    ("prompt", "login"),
                    ("login", "alice-sub-0001"),
                    ("password", "x"),
                ],
            )
        } else {
            browser.submit(issuer, &body, &[("prompt", "consent")])
        };
    }
    panic!("the provider never sent the browser back");
}

/// The `code` and `state` of a callback URL.
fn query_pair(url: &str) -> (String, String) {
    let query = url.split_once('?').unwrap().1;
    let get = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_string()
    };
    (get("code"), get("state"))
}

/// Against a rogue issuer the test controls: a token signed by a key not
/// in the JWKS, an unsigned one (`alg: none`), one for another audience,
/// from another issuer, authorized for another party (`azp`), not valid
/// yet (`nbf`), expired, or carrying another login's nonce is
/// refused, with the reason audited, and nobody is provisioned; the same
/// issuer's valid token signs in (the setup itself works).
#[test]
fn forged_and_misdirected_id_tokens_are_refused() {
    let Some(rogue) = RogueIssuer::start() else {
        return;
    };
    let port = free_port();
    let (gw, _dir) = start_gateway(&rogue.issuer, port, "auto_provision = true");
    let portal = Portal::of(&gw);
    let login = || {
        let browser = Browser::new(&portal.cert_pem);
        let response = browser.get(&format!("{}/oidc/start", portal.base));
        let status = response.status().as_u16();
        (status, response.text().unwrap())
    };
    // One login first, so that replay_nonce has a previous nonce to replay.
    rogue.set_mode("wrong_aud");
    assert_eq!(login().0, 403);
    for (mode, reason) in [
        ("wrong_key", "signature"),
        ("alg_none", "signature"),
        ("wrong_aud", "audience"),
        ("wrong_iss", "issuer"),
        ("wrong_azp", "audience"),
        ("future_nbf", "expired"),
        ("expired", "expired"),
        ("replay_nonce", "nonce"),
    ] {
        rogue.set_mode(mode);
        let (status, body) = login();
        assert_eq!(status, 403, "{mode}: {body}\n{}", gw.log_tail(20));
        let failed = gw.audit_of("portal.login.fail");
        let last = failed.last().unwrap();
        assert_eq!(last["detail"]["reason"], reason, "{mode}: {last}");
        assert_eq!(last["detail"]["method"], "oidc");
    }
    assert!(
        gw.ctl_json(&["user", "list"])
            .as_array()
            .unwrap()
            .is_empty(),
        "a refused token provisioned someone"
    );
    rogue.set_mode("good");
    let (status, body) = login();
    assert_eq!(
        status,
        200,
        "the rogue issuer's valid token: {body}\n{}",
        gw.log_tail(20)
    );
    assert_eq!(gw.ctl_json(&["user", "show", "eve"])["state"], "active");
}

/// An issuer out of reach at start does not stop the gateway: the login
/// page says SSO is unavailable, `/oidc/start` answers 503 with a page, and
/// the log says why.
#[test]
fn an_unreachable_issuer_leaves_the_gateway_running_and_says_so() {
    if !gatehouse_tests::sso::oidc_dir().exists() {
        return;
    }
    let port = free_port();
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let (gw, _dir) = start_gateway(&nobody, port, "");
    let portal = Portal::of(&gw);
    let page = portal.get("/login", None).text().unwrap();
    assert!(page.contains("is unavailable right now"), "{page}");
    assert!(
        page.contains("name=\"password\""),
        "password login still works"
    );
    let start = portal.get("/oidc/start", None);
    assert_eq!(start.status(), 503);
    assert!(
        gw.log_text().contains("SSO is unavailable"),
        "{}",
        gw.log_tail(20)
    );
}

/// The admin and member sides: `accessctl user add --oidc-subject` links a
/// member (no enrollment link), whose first SSO login activates them;
/// `user show` shows the link, `status` the issuer and its discovery;
/// `whoami` and the devices page say the login was SSO; the member adds
/// and removes an SSH key for the jump host on the portal, through the
/// service `accessctl user add-key` uses, audited via the portal.
#[test]
fn an_admin_links_a_member_who_then_signs_in_and_manages_ssh_keys() {
    let Some((provider, gw, dir, portal, _)) = lab("", &["research-team"]) else {
        return;
    };
    let created = gw.ctl_json(&[
        "user",
        "add",
        "alice",
        "--group",
        "research",
        "--oidc-subject",
        "alice-sub-0001",
    ]);
    assert!(created["enrollment"].is_null(), "{created}");
    assert_eq!(created["user"]["state"], "pending");
    assert_eq!(created["user"]["sso"]["subject"], "alice-sub-0001");
    let shown = gw.ctl_ok(&["user", "show", "alice"]);
    assert!(
        shown.contains(&format!("alice-sub-0001 at {}", provider.issuer)),
        "{shown}"
    );
    let status = gw.ctl_json(&["status"]);
    assert_eq!(
        status["portal"]["sso"]["issuer"],
        provider.issuer.as_str(),
        "{status}"
    );
    assert!(
        status["portal"]["sso"]["last_discovery"].is_string(),
        "{status}"
    );
    let text = gw.ctl_ok(&["status"]);
    assert!(
        text.contains("sso") && text.contains("discovered"),
        "{text}"
    );

    let browser = Browser::new(&portal.cert_pem);
    let (status, _, body) = browser.sso_login(&portal.base, &provider.issuer, "alice-sub-0001");
    assert_eq!(status, 200, "{body}");
    assert_eq!(gw.ctl_json(&["user", "show", "alice"])["state"], "active");
    let whoami: Value = browser
        .get(&format!("{}/api/v1/whoami", portal.base))
        .json()
        .unwrap();
    assert_eq!(whoami["login_method"], "oidc", "{whoami}");
    let page = browser
        .get(&format!("{}/devices", portal.base))
        .text()
        .unwrap();
    assert!(page.contains("Signed in with Test IdP"), "{page}");

    // An SSH key of the member's own, through the portal's API.
    let key = dir.path().join("id_alice");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(made.status.success());
    let line = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let csrf = whoami["csrf_token"].as_str().unwrap();
    let added = browser
        .client
        .post(format!("{}/api/v1/ssh-keys", portal.base))
        .header("x-csrf-token", csrf)
        .json(&json!({ "public_key": line.trim() }))
        .send()
        .unwrap();
    assert_eq!(added.status(), 200);
    let added: Value = added.json().unwrap();
    let fingerprint = added["fingerprint"].as_str().unwrap().to_string();
    let user = gw.ctl_json(&["user", "show", "alice"]);
    assert_eq!(
        user["ssh_keys"][0]["fingerprint"],
        fingerprint.as_str(),
        "{user}"
    );
    let audited = gw.audit_of("user.key.add");
    assert_eq!(audited.last().unwrap()["actor"], "alice");
    assert_eq!(audited.last().unwrap()["detail"]["via"], "portal");
    let without_csrf = browser
        .client
        .post(format!("{}/api/v1/ssh-keys", portal.base))
        .json(&json!({ "public_key": line.trim() }))
        .send()
        .unwrap();
    assert_eq!(
        without_csrf.status(),
        403,
        "a cross-site request is refused"
    );
    let removed = browser
        .client
        .delete(format!("{}/api/v1/ssh-keys", portal.base))
        .query(&[("fingerprint", fingerprint.as_str())])
        .header("x-csrf-token", csrf)
        .send()
        .unwrap();
    assert_eq!(removed.status(), 200);
    let user = gw.ctl_json(&["user", "show", "alice"]);
    assert_eq!(user["ssh_keys"], json!([]), "{user}");

    // The same through the devices page's forms.
    let form = |path: &str, fields: &[(&str, &str)]| {
        browser
            .client
            .post(format!("{}{path}", portal.base))
            .form(fields)
            .send()
            .unwrap()
    };
    let added = form("/ssh-keys", &[("csrf", csrf), ("public_key", line.trim())]);
    assert!(added.url().path() == "/devices", "{}", added.url());
    let page = added.text().unwrap();
    assert!(
        page.contains(&fingerprint) && page.contains("alice@laptop"),
        "{page}"
    );
    let refused = form(
        "/ssh-keys",
        &[("csrf", "forged"), ("public_key", line.trim())],
    );
    assert_eq!(refused.status(), 403);
    let removed = form(
        "/ssh-keys/remove",
        &[("csrf", csrf), ("fingerprint", &fingerprint)],
    );
    assert!(removed.text().unwrap().contains("No SSH keys yet."));
    assert_eq!(gw.audit_of("user.key.remove").len(), 2);
}

/// The provider rotates its signing key: a token naming the new key is
/// refused while the cached JWKS is fresh (fetched again at most every
/// 30 s, so a flood of unknown keys cannot flood the provider), and
/// accepted once the gateway fetches the JWKS again.
#[test]
fn a_rotated_signing_key_is_fetched_again_at_most_every_thirty_seconds() {
    let Some(rogue) = RogueIssuer::start() else {
        return;
    };
    let port = free_port();
    let started = std::time::Instant::now();
    let (gw, _dir) = start_gateway(&rogue.issuer, port, "auto_provision = true");
    let portal = Portal::of(&gw);
    let login = || start_login(&portal);
    rogue.set_mode("good");
    assert_eq!(login(), 200);
    rogue.set_mode("rotate");
    assert_eq!(login(), 403, "the cached JWKS does not know k2 yet");
    let failed = gw.audit_of("portal.login.fail");
    assert_eq!(failed.last().unwrap()["detail"]["reason"], "signature");
    let wait = std::time::Duration::from_secs(32).saturating_sub(started.elapsed());
    std::thread::sleep(wait);
    assert_eq!(login(), 200, "k2 fetched again: {}", gw.log_tail(20));
}

/// A gateway on the rogue issuer that provisions members and admits only
/// example.org emails; `extra` goes into `[oidc]` too.
fn domain_gateway(rogue: &RogueIssuer, extra: &str) -> (Daemon, tempfile::TempDir) {
    let oidc = format!("auto_provision = true\nallowed_email_domains = [\"example.org\"]\n{extra}");
    start_gateway(&rogue.issuer, free_port(), &oidc)
}

/// With `allowed_email_domains`, an email the provider marks unverified
/// does not count: anyone who may type an address there would otherwise
/// choose their domain. The same token with the email unmarked passes.
#[test]
fn an_unverified_email_does_not_pass_the_domain_check() {
    let Some(rogue) = RogueIssuer::start() else {
        return;
    };
    let (gw, _dir) = domain_gateway(&rogue, "");
    let portal = Portal::of(&gw);
    let login = || start_login(&portal);
    rogue.set_mode("unverified_email");
    assert_eq!(login(), 403);
    let failed = gw.audit_of("portal.login.fail");
    assert_eq!(failed.last().unwrap()["detail"]["reason"], "domain");
    rogue.set_mode("good");
    assert_eq!(login(), 200, "{}", gw.log_tail(20));
}

/// Review finding 10: a token without `email_verified` passed
/// `allowed_email_domains`. By default (`oidc.email_verified =
/// "required"`) only an email the token marks verified counts; with
/// `"if_present"` (providers that send no such claim, as Entra ID), an
/// unmarked one counts and one marked unverified still does not.
#[test]
fn an_email_without_email_verified_counts_only_where_the_config_says() {
    let Some(rogue) = RogueIssuer::start() else {
        return;
    };
    let (gw, _dir) = domain_gateway(&rogue, "");
    let portal = Portal::of(&gw);
    rogue.set_mode("no_email_verified");
    assert_eq!(start_login(&portal), 403);
    let failed = gw.audit_of("portal.login.fail");
    assert_eq!(failed.last().unwrap()["detail"]["reason"], "domain");
    drop(gw);

    let (gw, _dir) = domain_gateway(&rogue, "email_verified = \"if_present\"");
    let portal = Portal::of(&gw);
    assert_eq!(start_login(&portal), 200, "{}", gw.log_tail(20));
    rogue.set_mode("unverified_email");
    assert_eq!(start_login(&portal), 403, "marked unverified: refused");
}

/// One SSO login from a fresh browser against an issuer that sends the
/// browser straight back (the rogue issuer); the portal's final status.
fn start_login(portal: &Portal) -> u16 {
    Browser::new(&portal.cert_pem)
        .get(&format!("{}/oidc/start", portal.base))
        .status()
        .as_u16()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// With `require_totp = true` the provider's word is not enough: under
/// `totp_enrollment = "first_login"` the first login sets up an
/// authenticator app (the page shows its secret) and
/// opens no session until a right code; later logins ask for a code only.
/// A wrong code is asked again and audited; a used step, a forged form and
/// a step after three wrong codes get nowhere.
#[test]
fn require_totp_adds_a_code_step_after_the_provider() {
    let Some((provider, gw, _dir, portal, _)) = lab(
        "auto_provision = true\nrequire_totp = true\ntotp_enrollment = \"first_login\"",
        &["research-team"],
    ) else {
        return;
    };
    let code_page = |browser: &Browser| {
        let (status, _, body) = browser.sso_login(&portal.base, &provider.issuer, "alice-sub-0001");
        assert_eq!(status, 200, "{body}\n{}", gw.log_tail(20));
        assert!(body.contains("One more step"), "{body}");
        let whoami = browser.get(&format!("{}/api/v1/whoami", portal.base));
        assert_eq!(whoami.status(), 401, "no session before the code");
        body
    };
    let post = |browser: &Browser, page: &str, csrf: &str, code: &str| {
        let response = browser.submit(&portal.base, page, &[("csrf", csrf), ("totp_code", code)]);
        let status = response.status().as_u16();
        (status, response.text().unwrap())
    };
    // A code no step near now has (the gateway accepts a step either side).
    let wrong = |secret: &str| {
        let near: Vec<String> = [0, 30, 60, 90]
            .iter()
            .map(|d| gatehouse_tests::portal::totp_code(secret, unix_now() + d - 30))
            .collect();
        ["000000", "111111", "222222", "333333", "444444"]
            .into_iter()
            .find(|c| !near.iter().any(|n| n == c))
            .unwrap()
            .to_string()
    };

    // First login: set up the app.
    let first = Browser::new(&portal.cert_pem);
    let page = code_page(&first);
    let secret = between(&page, "id=\"totp-secret\">");
    let csrf = between(&page, "name=\"csrf\" value=\"");
    let (status, again) = post(&first, &page, &csrf, &wrong(&secret));
    assert_eq!(status, 403, "{again}");
    assert!(
        again.contains("does not match") && again.contains(&secret),
        "{again}"
    );
    let failed = gw.audit_of("portal.login.fail");
    let last = &failed.last().unwrap()["detail"];
    assert_eq!(
        (last["method"].as_str(), last["reason"].as_str()),
        (Some("oidc"), Some("totp_mismatch")),
        "{last}"
    );
    let code = gatehouse_tests::portal::totp_code(&secret, unix_now());
    let (status, body) = post(&first, &again, &csrf, &code);
    assert_eq!(status, 200, "{body}\n{}", gw.log_tail(20));
    assert!(body.contains("Signed in"), "{body}");
    let whoami: Value = first
        .get(&format!("{}/api/v1/whoami", portal.base))
        .json()
        .unwrap();
    assert_eq!(
        (whoami["user"].as_str(), whoami["login_method"].as_str()),
        (Some("alice"), Some("oidc")),
        "{whoami}"
    );
    let logins = gw.audit_of("portal.login.ok");
    let detail = &logins.last().unwrap()["detail"];
    assert_eq!(
        (detail["totp"].as_bool(), detail["totp_enrolled"].as_bool()),
        (Some(true), Some(true)),
        "{detail}"
    );
    assert_eq!(detail["subject"], "alice-sub-0001");
    // The step is used: the same form again starts nothing.
    let (status, body) = post(&first, &again, &csrf, &code);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Start again"), "{body}");

    // Next login: a code only, from the app set up above.
    let second = Browser::new(&portal.cert_pem);
    let page = code_page(&second);
    assert!(
        !page.contains("totp-secret"),
        "no new secret is offered: {page}"
    );
    let csrf = between(&page, "name=\"csrf\" value=\"");
    let (status, body) = post(&second, &page, &"0".repeat(64), &code);
    assert_eq!(status, 403, "a forged form is refused: {body}");
    let next = gatehouse_tests::portal::totp_code(&secret, unix_now() + 30);
    let (status, body) = post(&second, &page, &csrf, &next);
    assert_eq!(status, 200, "{body}\n{}", gw.log_tail(20));
    let logins = gw.audit_of("portal.login.ok");
    assert_eq!(logins.last().unwrap()["detail"]["totp_enrolled"], false);

    // Three wrong codes end the step.
    let third = Browser::new(&portal.cert_pem);
    let page = code_page(&third);
    let csrf = between(&page, "name=\"csrf\" value=\"");
    let bad = wrong(&secret);
    let statuses: Vec<(u16, bool)> = (0..3)
        .map(|_| {
            let (status, body) = post(&third, &page, &csrf, &bad);
            (status, body.contains("One more step"))
        })
        .collect();
    assert_eq!(statuses, [(403, true), (403, true), (403, false)]);
    let right = gatehouse_tests::portal::totp_code(&secret, unix_now() + 60);
    let (status, body) = post(&third, &page, &csrf, &right);
    assert_eq!(status, 403, "the step is over: {body}");
    let log = gw.log_text();
    let audit = serde_json::to_string(&gw.audit_json(&[])).unwrap();
    for text in [&log, &audit] {
        assert!(!text.contains(&secret), "the TOTP secret leaked");
    }
}
