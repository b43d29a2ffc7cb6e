//! Security review finding 1: authentication state follows the user name.
//! A scripted SSH client (russh) sends the sequence no stock client sends:
//! mallory's key as `mallory` (under `ssh.require_totp` a partial success),
//! a `none` request as `alice`, then keyboard-interactive as `alice` with
//! alice's current TOTP code. Before the fix, the key accepted for mallory
//! stayed set while the `none` request switched the name, and this logged
//! in as alice. It must be refused and audited.
//!
//! Loopback only: the jump host, the portal (for TOTP enrollment) and the
//! client all run on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_tests::portal::{Account, Portal};
use gatehouse_tests::{Daemon, host_sample_config};
use rand_core::RngCore as _;
use russh::client::{self, KeyboardInteractiveAuthResponse};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{MethodKind, MethodSet};
use serde_json::Value;

struct AnyHostKey;

impl client::Handler for AnyHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// A jump host with `ssh.require_totp`, and alice and mallory enrolled in
/// the portal (password and TOTP), each with an SSH key of their own.
fn start() -> (Daemon, Account, PrivateKey, Account, PrivateKey) {
    start_with(host_sample_config())
}

fn start_with(config: String) -> (Daemon, Account, PrivateKey, Account, PrivateKey) {
    let ssh = config.find("\n[ssh]\n").unwrap();
    let at = ssh + config[ssh..].find("\nrequire_totp = false\n").unwrap();
    let config = format!(
        "{}\nrequire_totp = true\n{}",
        &config[..at],
        &config[at + "\nrequire_totp = false\n".len()..]
    );
    let daemon = Daemon::start_with(&config);
    let portal = Portal::of(&daemon);
    let mut people = Vec::new();
    for user in ["alice", "mallory"] {
        let account = portal.enroll(&daemon, user);
        let mut seed = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut seed);
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
        let file = daemon.state_dir.join(format!("{user}.pub"));
        std::fs::write(&file, key.public_key().to_openssh().unwrap()).unwrap();
        daemon.ctl_ok(&["user", "add-key", user, file.to_str().unwrap()]);
        people.push((account, key));
    }
    let (mallory, mallory_key) = people.pop().unwrap();
    let (alice, alice_key) = people.pop().unwrap();
    (daemon, alice, alice_key, mallory, mallory_key)
}

fn jump_host(daemon: &Daemon) -> String {
    let status = daemon.ctl_json(&["status"]);
    status["ssh"]["listen"].as_str().unwrap().to_string()
}

/// A logged-in session of `user` (key, then TOTP `code`), kept open.
async fn logged_in(
    addr: &str,
    user: &str,
    key: &PrivateKey,
    code: &str,
) -> client::Handle<AnyHostKey> {
    let config = Arc::new(client::Config::default());
    let mut session = client::connect(config, addr, AnyHostKey).await.unwrap();
    let key = PrivateKeyWithHashAlg::new(Arc::new(key.clone()), None);
    session.authenticate_publickey(user, key).await.unwrap();
    let mut answer = session
        .authenticate_keyboard_interactive_start(user, None)
        .await
        .unwrap();
    if let KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } = answer {
        let responses = prompts.iter().map(|_| code.to_string()).collect();
        answer = session
            .authenticate_keyboard_interactive_respond(responses)
            .await
            .unwrap();
    }
    assert!(
        matches!(answer, KeyboardInteractiveAuthResponse::Success),
        "{answer:?}"
    );
    session
}

/// Key for `key_user`, then (with `switch_to`) a `none` request under that
/// name, then keyboard-interactive as `code_user` answering every prompt
/// with `code`. True when the server said the login succeeded.
async fn key_then_code(
    addr: &str,
    key_user: &str,
    key: &PrivateKey,
    switch_to: Option<&str>,
    code_user: &str,
    code: &str,
) -> bool {
    let config = Arc::new(client::Config::default());
    let mut session = client::connect(config, addr, AnyHostKey).await.unwrap();
    let key = PrivateKeyWithHashAlg::new(Arc::new(key.clone()), None);
    let first = session.authenticate_publickey(key_user, key).await.unwrap();
    match first {
        russh::client::AuthResult::Failure {
            remaining_methods,
            partial_success,
        } => {
            assert!(partial_success, "the key alone is a partial success");
            assert_eq!(
                remaining_methods,
                MethodSet::from(&[MethodKind::KeyboardInteractive][..])
            );
        }
        other => panic!("the key alone logged in: {other:?}"),
    }
    if let Some(name) = switch_to {
        let none = session.authenticate_none(name).await.unwrap();
        assert!(!none.success(), "`none` logged in as {name}");
    }
    let mut answer = session
        .authenticate_keyboard_interactive_start(code_user, None)
        .await
        .unwrap();
    // Bounded: a server that keeps prompting is a failure too.
    let mut logged_in = false;
    for _ in 0..3 {
        match answer {
            KeyboardInteractiveAuthResponse::Success => {
                logged_in = true;
                break;
            }
            KeyboardInteractiveAuthResponse::Failure { .. } => break,
            KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                let responses = prompts.iter().map(|_| code.to_string()).collect();
                answer = session
                    .authenticate_keyboard_interactive_respond(responses)
                    .await
                    .unwrap();
            }
        }
    }
    // Hang up and wait for the session to end, so the server records how
    // the connection ended.
    let _ = session
        .disconnect(russh::Disconnect::ByApplication, "", "")
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), session).await;
    logged_in
}

fn auth_failures(daemon: &Daemon, user: &str) -> Vec<Value> {
    daemon.audit_json(&["--kind", "ssh.auth.fail", "--user", user])
}

#[test]
fn a_key_accepted_for_one_name_does_not_log_in_another() {
    let (daemon, mut alice, _alice_key, mut mallory, mallory_key) = start();
    let addr = jump_host(&daemon);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let login = |key_user: &str, switch_to: Option<&str>, code_user: &str, code: String| {
        runtime.block_on(key_then_code(
            &addr,
            key_user,
            &mallory_key,
            switch_to,
            code_user,
            &code,
        ))
    };

    // The sequence of the review: mallory's key, `none` as alice, then
    // keyboard-interactive as alice with her code.
    let logged_in = login("mallory", Some("alice"), "alice", alice.next_code());
    assert!(
        !logged_in,
        "mallory's key and alice's TOTP code logged in as alice"
    );
    // Without the `none` step, keyboard-interactive under another name is
    // refused too.
    let direct = login("mallory", None, "alice", alice.next_code());
    assert!(
        !direct,
        "mallory's key and alice's TOTP code logged in as alice"
    );

    // The refusals are audited under alice's name, once each connection ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let found = auth_failures(&daemon, "alice");
        if found.len() >= 2 {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "not two ssh.auth.fail for alice: {found:?}\n{}",
            daemon.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for record in &refused {
        assert_eq!(record["detail"]["reason"], "totp_before_key", "{record}");
    }
    assert!(
        !daemon.log_tail(200).contains("SSH login user=alice"),
        "{}",
        daemon.log_tail(30)
    );

    // The same client with one person's own key and code does log in, so
    // the refusals above are the rule and not a broken client.
    let own = login("mallory", None, "mallory", mallory.next_code());
    assert!(
        own,
        "mallory's own key and code must log in:\n{}",
        daemon.log_tail(30)
    );
}

/// Review finding 6: a per-user cap on logged-in jump host connections.
#[test]
fn a_login_past_the_per_user_connection_cap_is_refused_and_audited() {
    let config = host_sample_config().replacen(
        "\nmax_connections_per_user = 32\n",
        "\nmax_connections_per_user = 1\n",
        1,
    );
    let (daemon, _alice, _alice_key, mut mallory, mallory_key) = start_with(config);
    let addr = jump_host(&daemon);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let first = logged_in(&addr, "mallory", &mallory_key, &mallory.next_code()).await;
        let config = Arc::new(client::Config::default());
        let mut second = client::connect(config, addr.as_str(), AnyHostKey)
            .await
            .unwrap();
        let key = PrivateKeyWithHashAlg::new(Arc::new(mallory_key.clone()), None);
        let answer = second.authenticate_publickey("mallory", key).await.unwrap();
        assert!(
            matches!(
                answer,
                russh::client::AuthResult::Failure {
                    partial_success: false,
                    ..
                }
            ),
            "a second login must be refused at the key: {answer:?}"
        );
        let _ = second
            .disconnect(russh::Disconnect::ByApplication, "", "")
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(5), second).await;
        drop(first);
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = auth_failures(&daemon, "mallory");
        if found
            .iter()
            .any(|r| r["detail"]["reason"] == "too_many_connections")
        {
            break;
        }
        assert!(Instant::now() < deadline, "not audited: {found:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
