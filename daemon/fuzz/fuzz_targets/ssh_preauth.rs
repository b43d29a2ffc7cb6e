//! Fuzzes the jump host before authentication: the order, user names and
//! answers of authentication requests a client may send, against the real
//! SSH server (`accessd::ssh::spawn_jump_host` on loopback, `ssh.require_totp` on).
//!
//! A byte stream cannot get past the key exchange, so the input drives a
//! russh client after a real handshake. Each 3-byte chunk is one request:
//! - byte 0: `none`, `publickey`, keyboard-interactive (start, then answer)
//!   or `password` (not offered). (A keyboard-interactive exchange left
//!   unanswered for another request is not covered: the russh client then
//!   waits for an answer of its own state machine, so a hang would not tell
//!   the server's silence from the client's.)
//! - byte 1: the user name (alice, mallory, a pending user, an unknown one,
//!   or one made of the input's bytes);
//! - byte 2: which key (alice's, mallory's, a stranger's) or which answer
//!   (alice's current code, mallory's, a wrong one, the input's bytes).
//!
//! The oracle is review finding 1's rule: a login as U succeeds only after
//! U's own key and a current code of U's own secret, offered as U in the
//! same connection. The server must also answer every request within the
//! time limit (a request it will not serve gets a failure, never silence).
//!
//! Under `cfg(fuzzing)` the server forgives every failure and answers
//! failures without delay, so inputs explore authentication rather than
//! the penalty clock (`accessd::ssh::limits`).

#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use accessd::gateway::{ConfigSource, Core, Keys, Overrides};
use accessd::store::{NewUser, Store, StoreOptions};
use gatehouse_config::api::UserState;
use libfuzzer_sys::fuzz_target;
use russh::client::{self, AuthResult, KeyboardInteractiveAuthResponse};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long one request may go unanswered before the server counts as silent.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// Requests per input.
const MAX_REQUESTS: usize = 12;

const CONFIG: &str = r#"
[gateway]
name = "fuzz"
public_endpoint = "vpn.example.org"

[vpn]
enabled = false

[ssh]
listen = "127.0.0.1:0"
require_totp = true
max_connections_per_user = 1000

[portal]
listen = "127.0.0.1:0"

[[group]]
name = "research"
subnets = ["10.0.3.0/24"]
"#;

const USERS: [&str; 2] = ["alice", "mallory"];

/// The gateway, started once for the whole run.
struct Gateway {
    runtime: Runtime,
    listen: SocketAddr,
    /// alice's and mallory's keys, then a key nobody registered.
    keys: [PrivateKey; 3],
    secrets: [String; 2],
    _dir: tempfile::TempDir,
}

fn gateway() -> &'static Gateway {
    static GATEWAY: OnceLock<Gateway> = OnceLock::new();
    GATEWAY.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("gatehouse.toml");
        std::fs::write(&path, CONFIG).expect("write config");
        let source = ConfigSource {
            path,
            overrides: Overrides {
                state_dir: Some(dir.path().join("state")),
                admin_socket: Some(dir.path().join("admin.sock")),
            },
        };
        let config = source.load().expect("valid config");
        let secrets = accessd::keys::secrets::SecretsKey::generate().expect("secrets key");
        let options =
            StoreOptions::from_config(&config, std::sync::Arc::new(secrets)).expect("options");
        let store = Store::open(&options).expect("store");
        let state_dir = config.gateway.state_dir.clone();
        let keys = Keys {
            wireguard: accessd::keys::wireguard::GatewayKey::load_or_create(&state_dir).expect("wg key"),
            ssh_host: accessd::keys::ssh_host::load_or_create_host_key(&state_dir)
                .expect("host key"),
            user_ca: None,
            host_ca: None,
        };
        let host_addrs = accessd::host_addrs::HostAddrs::load().expect("host addresses");
        let core = Core::new(source, config, store, keys, host_addrs);
        // Fixed seeds: a crash reproduces.
        let keys = [1u8, 2, 3].map(|seed| PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32])));
        let secrets = [
            "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP".to_string(),
            "KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU".to_string(),
        ];
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listen = runtime.block_on(async {
            let now = accessd::time_fmt::now_unix();
            let rows: Vec<(String, String, String)> = USERS
                .iter()
                .zip(&keys)
                .zip(&secrets)
                .map(|((user, key), secret)| {
                    (
                        user.to_string(),
                        key.public_key().to_openssh().expect("openssh line"),
                        secret.clone(),
                    )
                })
                .collect();
            core.store()
                .write(move |w| {
                    for (user, line, secret) in rows {
                        w.create_user(NewUser {
                            name: user.clone(),
                            groups: vec!["research".into()],
                            created_at: now,
                            expires_at: None,
                            no_login: false,
                        })?;
                        w.set_user_state(&user, UserState::Active)?;
                        w.set_totp_secret(&user, Some(secret))?;
                        let mut key = accessd::ssh_keys::parse_public_key(&line)
                            .expect("a valid key line");
                        key.added_at = now;
                        w.add_ssh_key(&user, key)?;
                    }
                    w.create_user(NewUser {
                        name: "pending".into(),
                        groups: vec!["research".into()],
                        created_at: now,
                        expires_at: None,
                        no_login: false,
                    })?;
                    Ok(())
                })
                .await
                .expect("users");
            let listener = accessd::ssh::bind("127.0.0.1:0".parse().expect("addr"))
                .await
                .expect("bind");
            let handle = accessd::ssh::spawn_jump_host(
                &core,
                listener,
                &TaskTracker::new(),
                CancellationToken::new(),
            )
            .expect("serve");
            handle.listen()
        });
        Gateway {
            runtime,
            listen,
            keys,
            secrets,
            _dir: dir,
        }
    })
}

struct AnyHostKey;

impl client::Handler for AnyHostKey {
    type Error = russh::Error;

    async fn check_server_key(&mut self, _key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// What the connection has proved for one user so far.
#[derive(Default, Clone, Copy)]
struct Proved {
    own_key: bool,
    own_code: bool,
}

fn user_name(pick: u8, raw: &[u8]) -> String {
    match pick % 5 {
        0 => "alice".into(),
        1 => "mallory".into(),
        2 => "pending".into(),
        3 => "nobody".into(),
        _ => String::from_utf8_lossy(raw).into_owned(),
    }
}

fn index_of(user: &str) -> Option<usize> {
    USERS.iter().position(|u| *u == user)
}

/// Waits for one answer; silence past the limit is a finding.
async fn answered<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(ANSWER_WITHIN, f).await {
        Ok(answer) => answer,
        Err(_) => panic!("the jump host left {what} unanswered for {ANSWER_WITHIN:?}"),
    }
}

async fn run(gw: &Gateway, data: &[u8]) {
    let mut config = client::Config::default();
    config.preferred.kex = std::borrow::Cow::Borrowed(&[russh::kex::CURVE25519]);
    let Ok(Ok(mut session)) = tokio::time::timeout(
        ANSWER_WITHIN,
        client::connect(Arc::new(config), gw.listen, AnyHostKey),
    )
    .await
    else {
        return;
    };
    let now = accessd::time_fmt::now_unix().max(0) as u64;
    let codes: Vec<String> = gw
        .secrets
        .iter()
        .map(|s| accessd::totp::code_at(s, now).expect("a code"))
        .collect();
    let mut proved = [Proved::default(); 2];
    for chunk in data.chunks(3).take(MAX_REQUESTS) {
        let (op, who, arg) = (chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0));
        let user = user_name(who, chunk);
        let idx = index_of(&user);
        let success = match op % 4 {
            0 => match answered("none", session.authenticate_none(&user)).await {
                Ok(result) => result.success(),
                Err(_) => break,
            },
            1 => {
                let k = usize::from(arg % 3);
                let key = PrivateKeyWithHashAlg::new(Arc::new(gw.keys[k].clone()), None);
                match answered("publickey", session.authenticate_publickey(&user, key)).await {
                    Ok(result) => {
                        if let (Some(i), AuthResult::Failure { partial_success: true, .. }) = (idx, &result) {
                            assert_eq!(i, k, "{user}'s key step passed with key {k}");
                            proved[i].own_key = true;
                        }
                        result.success()
                    }
                    Err(_) => break,
                }
            }
            2 => {
                let answer = match arg % 4 {
                    0 => codes[0].clone(),
                    1 => codes[1].clone(),
                    2 => "000000".into(),
                    _ => String::from_utf8_lossy(chunk).into_owned(),
                };
                let mut reply = match answered(
                    "keyboard-interactive",
                    session.authenticate_keyboard_interactive_start(&user, None),
                )
                .await
                {
                    Ok(reply) => reply,
                    Err(_) => break,
                };
                if let KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } = &reply {
                    let responses = vec![answer.clone(); prompts.len().max(1)];
                    reply = match answered(
                        "a keyboard-interactive answer",
                        session.authenticate_keyboard_interactive_respond(responses),
                    )
                    .await
                    {
                        Ok(reply) => reply,
                        Err(_) => break,
                    };
                }
                let ok = matches!(reply, KeyboardInteractiveAuthResponse::Success);
                if let (true, Some(i)) = (ok, idx) {
                    proved[i].own_code = answer == codes[i];
                }
                ok
            }
            _ => match answered("password", session.authenticate_password(&user, "secret")).await {
                Ok(result) => result.success(),
                Err(_) => break,
            },
        };
        if success {
            let i = index_of(&user).unwrap_or_else(|| panic!("{user:?} logged in: not an active user with a key"));
            assert!(
                proved[i].own_key && proved[i].own_code,
                "{user} logged in without their own key and code (key: {}, code: {})",
                proved[i].own_key,
                proved[i].own_code
            );
            break;
        }
    }
    let _ = session.disconnect(russh::Disconnect::ByApplication, "", "").await;
    let _ = tokio::time::timeout(Duration::from_secs(1), session).await;
}

fuzz_target!(|data: &[u8]| {
    let gw = gateway();
    gw.runtime.block_on(run(gw, data));
});
