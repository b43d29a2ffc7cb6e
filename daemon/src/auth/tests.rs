//! The member-authentication service over a real store and through the
//! portal's real router ([`TestGateway`]).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::http::{Method, StatusCode};
use gatehouse_config::api::UserState;
use serde_json::json;

use super::{LoginRefusal, consume_totp};
use crate::store::NewUser;
use crate::store::fixtures::{multi_thread_runtime, on_each_backend};
use crate::testing::{CONFIG, TestGateway, password_of};
use crate::totp::{self, TotpReject};

const NOW: i64 = 1_800_000_000;

/// A code works once, across every door (they all go through
/// `consume_totp`), and the step is stored in the caller's write.
#[test]
fn a_totp_code_is_consumed_once_in_the_callers_write() {
    on_each_backend(|_, store| {
        let rt = multi_thread_runtime();
        rt.block_on(async {
            let secret = totp::new_secret();
            let code = totp::code_at(&secret, NOW as u64).unwrap();
            let wrong = if code == "000000" { "111111" } else { "000000" };
            let stored = secret.clone();
            let alice = store
                .write(move |w| {
                    w.create_user(NewUser {
                        name: "alice".into(),
                        groups: vec!["research".into()],
                        created_at: 1,
                        expires_at: None,
                        no_login: false,
                    })?;
                    w.set_user_state("alice", UserState::Active)?;
                    w.set_totp_secret("alice", Some(stored))?;
                    w.existing_user("alice")
                })
                .await
                .unwrap();
            let consume = |code: &str, offered: Option<String>| {
                let (user, code) = (alice.clone(), code.to_string());
                store.write(move |w| consume_totp(w, &user, &code, NOW, offered.as_deref()))
            };
            let step = (NOW as u64) / totp::STEP_SECS;
            assert_eq!(
                consume(wrong, None).await.unwrap(),
                Err(LoginRefusal::Totp(TotpReject::Mismatch))
            );
            assert_eq!(
                consume("12 34", None).await.unwrap(),
                Err(LoginRefusal::Totp(TotpReject::Malformed))
            );
            assert_eq!(consume(&code, None).await.unwrap(), Ok(step));
            assert_eq!(
                consume(&code, None).await.unwrap(),
                Err(LoginRefusal::Totp(TotpReject::Reused)),
                "used once, whichever door used it"
            );
            assert_eq!(
                store.read(|r| r.totp_last_step("alice")).await.unwrap(),
                Some(step as i64)
            );
            // A secret being set up is checked instead of the stored one.
            let offered = totp::new_secret();
            let next = totp::code_at(&offered, NOW as u64).unwrap();
            assert_eq!(consume(&next, Some(offered)).await.unwrap(), Ok(step));
            let mut bob = alice.clone();
            bob.totp_secret = None;
            let refused = store
                .write(move |w| consume_totp(w, &bob, "123456", NOW, None))
                .await
                .unwrap();
            assert_eq!(refused, Err(LoginRefusal::TotpNotEnrolled));
        });
    });
}

/// A burst of 100 concurrent logins for one member, with the right
/// password and wrong codes: at most five are judged (each charged before
/// argon2 and the code), the rest are refused as locked out, audited once,
/// and counted in a summary on the member's next login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_wrong_logins_gets_at_most_five_judged() {
    let config = CONFIG.replace(
        "[portal]\nrequire_totp = true",
        "[portal]\nrequire_totp = true\nlogin_lockout = \"4s\"",
    );
    let gw = std::sync::Arc::new(TestGateway::new(&config).await);
    let token = gw.add_user("alice", "research").await;
    gw.enroll("alice", &token).await;
    let secret = gw
        .core
        .store()
        .read(|r| r.user("alice"))
        .await
        .unwrap()
        .unwrap()
        .totp_secret
        .unwrap();
    let now = crate::testing::now();
    let current: Vec<String> = [now - 30, now, now + 30]
        .iter()
        .map(|t| totp::code_at(&secret, *t).unwrap())
        .collect();
    let wrong = (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|c| !current.contains(c))
        .unwrap();
    let started = std::time::Instant::now();
    let attempts: Vec<_> = (0..100)
        .map(|_| {
            let (gw, wrong) = (gw.clone(), wrong.clone());
            tokio::spawn(async move {
                let body = json!({ "user": "alice", "password": password_of("alice"), "totp_code": wrong });
                gw.portal(Method::POST, "/api/v1/login", Some(body), None)
                    .await
                    .status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for attempt in attempts {
        statuses.push(attempt.await.unwrap());
    }
    let judged = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let locked = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(judged, 5, "{statuses:?}");
    assert_eq!(locked, 95, "{statuses:?}");
    let reasons: Vec<String> = gw
        .audit_records()
        .await
        .into_iter()
        .filter(|r| r.kind == "portal.login.fail")
        .map(|r| r.detail["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        reasons.iter().filter(|r| *r == "totp_mismatch").count(),
        5,
        "five codes judged: {reasons:?}"
    );
    assert_eq!(
        reasons.iter().filter(|r| *r == "locked_out").count(),
        1,
        "the refusals are audited once: {reasons:?}"
    );

    // Once the lockout ends (4 s after the fifth failure, which came at
    // most about 4 s in), the member's next login carries the summary.
    let left = Duration::from_secs(12).saturating_sub(started.elapsed());
    tokio::time::sleep(left).await;
    let ok = gw.login("alice").await;
    assert_eq!(ok.status, StatusCode::OK, "{ok:?}");
    let record = gw
        .audit_records()
        .await
        .into_iter()
        .rfind(|r| r.kind == "portal.login.ok")
        .unwrap();
    assert_eq!(record.detail["refused_while_locked_out"], 94, "{record:?}");
}
