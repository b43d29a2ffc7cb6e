//! Review finding 7 (issue 24): anonymous SSO requests from one source are
//! bounded like password logins. Forged `/oidc/callback` and `/oidc/totp`
//! requests are charged against the source's login budget before they are
//! judged: a capped number of audit records, the rest answered `429` and
//! counted into the next record (`refused_while_locked_out`); `/oidc/start`
//! keeps a bounded number of logins under way per source. Every request is
//! answered, none is dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use gatehouse_tests::Daemon;
use gatehouse_tests::portal::Portal;
use gatehouse_tests::sso::{RogueIssuer, free_port, start_gateway};
use reqwest::blocking::Client;
use serde_json::Value;
use sha2::Digest as _;

/// Requests each phase sends, from one source.
const FLOOD: usize = 400;
/// Clients sending them at once.
const THREADS: usize = 16;
/// The portal's `login_lockout` in this test: short, so the phases follow
/// each other within a minute.
const LOCKOUT: Duration = Duration::from_secs(10);
/// Failures from one source before it is locked out (`SOURCE_MAX_FAILURES`).
const SOURCE_BUDGET: usize = 20;

/// Sends `FLOOD` requests made by `request(client, i)` from `THREADS`
/// clients at once; returns each answer's status and body.
fn flood(
    cert_pem: &[u8],
    request: impl Fn(&Client, usize) -> reqwest::blocking::Response + Sync,
) -> Vec<(u16, String)> {
    let cert = reqwest::Certificate::from_pem(cert_pem).unwrap();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (cert, request) = (cert.clone(), &request);
                scope.spawn(move || {
                    let client = Client::builder()
                        .tls_built_in_root_certs(false)
                        .add_root_certificate(cert)
                        .redirect(reqwest::redirect::Policy::none())
                        .timeout(Duration::from_secs(60))
                        .no_proxy()
                        .build()
                        .unwrap();
                    (t..FLOOD)
                        .step_by(THREADS)
                        .map(|i| {
                            let answer = request(&client, i);
                            let status = answer.status().as_u16();
                            (status, answer.text().unwrap_or_default())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}

/// How many answers have each status.
fn tally(answers: &[(u16, String)]) -> std::collections::BTreeMap<u16, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for (status, _) in answers {
        *counts.entry(*status).or_insert(0) += 1;
    }
    counts
}

/// A gateway on the rogue issuer with `require_totp`, a short lockout and
/// the request rate limit out of the way (the budgets are tested), and its
/// portal.
fn gateway(rogue: &RogueIssuer) -> (Daemon, tempfile::TempDir, Portal) {
    let (gw, dir) = start_gateway(
        &rogue.issuer,
        free_port(),
        "auto_provision = true\nrequire_totp = true",
    );
    let text = std::fs::read_to_string(&gw.config)
        .unwrap()
        .replacen(
            "login_lockout = \"15m\"",
            &format!("login_lockout = \"{}s\"", LOCKOUT.as_secs()),
            1,
        )
        .replacen(
            "requests_per_minute = 600",
            "requests_per_minute = 100000",
            1,
        );
    assert!(text.contains("requests_per_minute = 100000"), "{text}");
    drop(gw);
    let gw = Daemon::start_with(&text);
    let portal = Portal::of(&gw);
    (gw, dir, portal)
}

/// Asserts the flood's records are bounded, every request was answered
/// (refused or limited) and a limited answer names `code`.
fn assert_bounded(what: &str, answers: &[(u16, String)], records: &[Value], code: &str) {
    let counts = tally(answers);
    assert!(
        records.len() <= SOURCE_BUDGET + 1,
        "{} records for {FLOOD} {what} ({counts:?})",
        records.len()
    );
    assert_eq!(
        counts.get(&403).copied().unwrap_or(0) + counts.get(&429).copied().unwrap_or(0),
        FLOOD,
        "every one of the {what} is answered, refused or limited: {counts:?}"
    );
    let limited = answers.iter().find(|(s, _)| *s == 429).unwrap();
    assert!(
        limited.1.contains(code),
        "a limited answer names its code: {}",
        limited.1
    );
    let last = records.last().unwrap();
    assert_eq!(
        last["detail"]["reason"], "source_locked_out",
        "the lockout is audited once: {last}"
    );
    assert_eq!(last["detail"]["method"], "oidc");
}

/// 400 forged callbacks (a state no login has) write at most the source's
/// budget of records plus one for its lockout; the rest are answered 429
/// and counted into the first record after the lockout.
#[test]
fn forged_callbacks_from_one_source_write_a_bounded_number_of_records() {
    let Some(rogue) = RogueIssuer::start() else {
        return;
    };
    let (gw, _dir, portal) = gateway(&rogue);
    let started = Instant::now();
    let forged = |client: &Client, i: usize| {
        client
            .get(format!(
                "{}/oidc/callback?code=c{i}&state=forged-{i}",
                portal.base
            ))
            .send()
            .unwrap()
    };
    let answers = flood(&portal.cert_pem, forged);
    let records = gw.audit_of("portal.login.fail");
    assert_bounded("forged callbacks", &answers, &records, "source_locked_out");
    eprintln!(
        "callbacks: {:?} in {:?}",
        tally(&answers),
        started.elapsed()
    );

    // After the lockout, the next record says how many were refused.
    std::thread::sleep(LOCKOUT + Duration::from_secs(1));
    let cert = reqwest::Certificate::from_pem(&portal.cert_pem).unwrap();
    let client = Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert)
        .no_proxy()
        .build()
        .unwrap();
    assert_eq!(forged(&client, FLOOD).status(), 403);
    let after = gw.audit_of("portal.login.fail");
    let summary = &after.last().unwrap()["detail"];
    assert_eq!(
        summary["refused_while_locked_out"].as_u64(),
        // Each record is a judged callback or the lockout's one report;
        // every other callback was refused unrecorded.
        Some((FLOOD - records.len()) as u64),
        "every refused callback is counted once: {summary}"
    );
}

/// 400 forged TOTP steps (a token no step has, with its matching
/// double-submit value) are bounded the same way.
#[test]
fn forged_totp_steps_from_one_source_write_a_bounded_number_of_records() {
    let Some(rogue) = RogueIssuer::start() else {
        return;
    };
    let (gw, _dir, portal) = gateway(&rogue);
    let started = Instant::now();
    let answers = flood(&portal.cert_pem, |client, i| {
        let token = format!("forged-step-token-{i:04}");
        let csrf = hex(&sha2::Sha256::digest(
            format!("gatehouse portal csrf\0{token}").as_bytes(),
        ));
        client
            .post(format!("{}/oidc/totp", portal.base))
            .header("cookie", format!("__Host-gh_sso={token}"))
            .form(&[("csrf", csrf.as_str()), ("totp_code", "123456")])
            .send()
            .unwrap()
    });
    let records = gw.audit_of("portal.login.fail");
    assert_bounded("forged TOTP steps", &answers, &records, "source_locked_out");
    eprintln!(
        "TOTP steps: {:?} in {:?}",
        tally(&answers),
        started.elapsed()
    );
}

/// 400 logins started and never finished from one source keep a bounded
/// number of logins under way; the rest are answered 429.
#[test]
fn logins_started_from_one_source_keep_a_bounded_number_of_rows() {
    let Some(rogue) = RogueIssuer::start() else {
        return;
    };
    let (gw, _dir, portal) = gateway(&rogue);
    let started = Instant::now();
    let answers = flood(&portal.cert_pem, |client, _| {
        client
            .get(format!("{}/oidc/start", portal.base))
            .send()
            .unwrap()
    });
    let counts = tally(&answers);
    let db = rusqlite::Connection::open_with_flags(
        gw.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let pending: i64 = db
        .query_row("SELECT count(*) FROM sso_pending", [], |r| r.get(0))
        .unwrap();
    assert!(
        pending <= 64,
        "{pending} logins under way for one source ({counts:?})"
    );
    assert_eq!(
        counts.get(&303).copied().unwrap_or(0) + counts.get(&429).copied().unwrap_or(0),
        FLOOD,
        "every start is answered: {counts:?}"
    );
    let limited = answers.iter().find(|(s, _)| *s == 429).unwrap();
    assert!(
        limited.1.contains("too_many_logins"),
        "a limited start names its code: {}",
        limited.1
    );
    eprintln!(
        "starts: {counts:?}, {pending} kept, in {:?}",
        started.elapsed()
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
