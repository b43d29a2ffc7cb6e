//! Load: 200 logins at once (argon2id + TOTP each) all succeed, and health
//! requests made meanwhile are answered (argon2 runs on a bounded blocking
//! pool, so the async runtime stays free). Latencies are printed, not
//! asserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gatehouse_tests::Daemon;
use gatehouse_tests::portal::{Account, PASSWORD, Portal, portal_config};
use serde_json::json;

const USERS: usize = 200;

fn percentiles(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "n={} p50={:.0}ms p99={:.0}ms max={:.0}ms",
        ms.len(),
        at(0.5),
        at(0.99),
        ms[ms.len() - 1]
    )
}

#[test]
fn two_hundred_concurrent_logins_and_health_stays_answered() {
    let daemon = Daemon::start_with(&portal_config(&[("requests_per_minute", "100000")]));
    let portal = Portal::of(&daemon);
    let names: Vec<String> = (0..USERS).map(|i| format!("load{i:03}")).collect();
    let started = Instant::now();
    // Enroll everyone (8 at a time: the point of this test is the logins).
    let accounts: Vec<Account> = std::thread::scope(|scope| {
        let chunks: Vec<_> = names
            .chunks(USERS / 8)
            .map(|chunk| {
                let portal = &portal;
                let daemon = &daemon;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|n| portal.enroll(daemon, n))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    eprintln!("enrolled {USERS} users in {:?}", started.elapsed());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cert = reqwest::Certificate::from_pem(&portal.cert_pem).unwrap();
    let base = portal.base.clone();
    let (login_ms, health_ms, statuses) = runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert)
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let health = {
            let client = client.clone();
            let url = format!("{base}/healthz");
            let done = done.clone();
            tokio::spawn(async move {
                let mut times = Vec::new();
                // Bounded: at most 600 probes, 50 ms apart.
                for _ in 0..600 {
                    if done.load(Ordering::Relaxed) && !times.is_empty() {
                        break;
                    }
                    let t = Instant::now();
                    let r = client.get(&url).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                times
            })
        };
        let logins: Vec<_> = accounts
            .into_iter()
            .map(|mut account| {
                let client = client.clone();
                let url = format!("{base}/api/v1/login");
                tokio::spawn(async move {
                    let code = tokio::task::spawn_blocking(move || {
                        let code = account.next_code();
                        (account, code)
                    })
                    .await
                    .unwrap();
                    let (account, code) = code;
                    let t = Instant::now();
                    let r = client
                        .post(&url)
                        .json(&json!({ "user": account.user, "password": PASSWORD, "totp_code": code }))
                        .send()
                        .await
                        .unwrap();
                    (r.status().as_u16(), t.elapsed().as_secs_f64() * 1000.0)
                })
            })
            .collect();
        let mut login_ms = Vec::new();
        let mut statuses = Vec::new();
        for login in logins {
            let (status, ms) = login.await.unwrap();
            statuses.push(status);
            login_ms.push(ms);
        }
        done.store(true, Ordering::Relaxed);
        let health_ms = health.await.unwrap();
        (login_ms, health_ms, statuses)
    });
    let failed = statuses.iter().filter(|s| **s != 200).count();
    eprintln!("{USERS} concurrent logins: {}", percentiles(login_ms));
    eprintln!(
        "health during the flood: {}",
        percentiles(health_ms.clone())
    );
    assert_eq!(failed, 0, "every login succeeds: {statuses:?}");
    assert!(
        !health_ms.is_empty(),
        "health requests were answered during the flood"
    );
    assert_eq!(daemon.audit_of("portal.login.ok").len(), USERS);
}
