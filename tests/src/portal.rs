//! Harness for the portal tests: an HTTPS client that trusts exactly the
//! certificate accessd generated (read from its state dir, and checked
//! against the fingerprint `accessctl status` shows), config tweaks for the
//! `[portal]` section, and enrollment/login helpers that compute TOTP codes
//! the way an authenticator app does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{Daemon, host_sample_config};

/// The host sample config with `[portal]` keys replaced, e.g.
/// `&[("session_idle", "\"2s\"")]`.
pub fn portal_config(changes: &[(&str, &str)]) -> String {
    let mut text = host_sample_config();
    for (key, value) in changes {
        let start = text.find("\n[portal]\n").expect("[portal] section");
        let prefix = format!("\n{key} = ");
        let at = text[start..]
            .find(&prefix)
            .map(|i| i + start)
            .unwrap_or_else(|| panic!("portal.{key} is not in the sample config"));
        let end = text[at + 1..].find('\n').map(|i| i + at + 1).unwrap();
        text.replace_range(at..end, &format!("\n{key} = {value}"));
    }
    text
}

/// The password test accounts enroll with (no test user name is part of it).
pub const PASSWORD: &str = "Orange kettle, quiet zebra 7391";

/// The running portal of a daemon.
pub struct Portal {
    /// `https://127.0.0.1:PORT`
    pub base: String,
    pub fingerprint: String,
    pub cert_pem: Vec<u8>,
    pub client: Client,
}

impl Portal {
    pub fn of(daemon: &Daemon) -> Portal {
        let status = daemon.ctl_json(&["status"]);
        let portal = &status["portal"];
        let listen = portal["listen"]
            .as_str()
            .expect("portal in status")
            .to_string();
        let fingerprint = portal["tls_fingerprint"].as_str().unwrap().to_string();
        let cert_pem = std::fs::read(daemon.state_dir.join("portal-tls/cert.pem")).unwrap();
        assert_eq!(
            fingerprint,
            pem_fingerprint(&cert_pem),
            "status shows the fingerprint of the certificate in the state dir"
        );
        Portal {
            base: format!("https://{listen}"),
            client: pinned_client(&cert_pem),
            fingerprint,
            cert_pem,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str, session: Option<&Session>) -> Response {
        let mut req = self.client.get(self.url(path));
        if let Some(s) = session {
            req = req.header("cookie", s.cookie_header());
        }
        req.send().unwrap()
    }

    /// POSTs JSON; with a session, sends its cookie and CSRF token.
    pub fn post_json(&self, path: &str, body: &Value, session: Option<&Session>) -> Response {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(s) = session {
            req = req
                .header("cookie", s.cookie_header())
                .header("x-csrf-token", &s.csrf);
        }
        req.send().unwrap()
    }

    pub fn login(&self, user: &str, password: &str, code: &str) -> Response {
        self.post_json(
            "/api/v1/login",
            &json!({ "user": user, "password": password, "totp_code": code }),
            None,
        )
    }

    /// Logs in and returns the session (asserting success).
    pub fn login_ok(&self, account: &mut Account) -> Session {
        let code = account.next_code();
        let response = self.login(&account.user, &account.password, &code);
        Session::from_login(response)
    }

    /// `accessctl user add`, then enrollment through the API with a
    /// password and a verified TOTP code.
    pub fn enroll(&self, daemon: &Daemon, user: &str) -> Account {
        let token = add_user(daemon, user);
        let offer: Value = self
            .get(&format!("/api/v1/enroll/{token}"), None)
            .json()
            .unwrap();
        assert_eq!(offer["user"], user);
        let mut account = Account::new(user, offer["totp_secret"].as_str().unwrap());
        let code = account.next_code();
        let response = self.post_json(
            &format!("/api/v1/enroll/{token}"),
            &json!({ "password": account.password, "totp_secret": account.secret, "totp_code": code }),
            None,
        );
        let status = response.status();
        assert_eq!(status, 200, "enroll {user}: {}", response.text().unwrap());
        account
    }
}

/// `accessctl user add NAME --group research`; returns the enrollment token.
pub fn add_user(daemon: &Daemon, user: &str) -> String {
    let added = daemon.ctl_json(&["user", "add", user, "--group", "research"]);
    added["enrollment"]["token"].as_str().unwrap().to_string()
}

/// A reqwest client that trusts only `cert_pem`.
pub fn pinned_client(cert_pem: &[u8]) -> Client {
    Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `SHA256:` + hex of the first certificate of a PEM file.
pub fn pem_fingerprint(pem: &[u8]) -> String {
    let text = std::str::from_utf8(pem).unwrap();
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = STANDARD.decode(b64).unwrap();
    let hex: String = Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("SHA256:{hex}")
}

/// An enrolled user and their authenticator app.
#[derive(Debug, Clone)]
pub struct Account {
    pub user: String,
    pub password: String,
    pub secret: String,
    /// The newest time step this "app" has handed out.
    pub last_step: Option<u64>,
}

impl Account {
    /// `user` with [`PASSWORD`] and the TOTP `secret` the portal offered.
    pub fn new(user: &str, secret: &str) -> Account {
        Account {
            user: user.to_string(),
            password: PASSWORD.to_string(),
            secret: secret.to_string(),
            last_step: None,
        }
    }

    /// A code the gateway has not seen yet: the oldest step it still
    /// accepts (now - 1, only while at least 15 s of the current step are
    /// left, so a request slowed by load still arrives in time) or the one
    /// after the last used, waiting for the next step when the window is
    /// used up.
    pub fn next_code(&mut self) -> String {
        loop {
            let now = unix_now();
            let current = now / 30;
            let floor = if 30 - now % 30 >= 15 {
                current.saturating_sub(1)
            } else {
                current
            };
            let step = match self.last_step {
                None => floor,
                Some(last) => (last + 1).max(floor),
            };
            if step <= current + 1 {
                self.last_step = Some(step);
                return totp_code(&self.secret, step * 30);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The 6-digit TOTP code of a base32 secret at unix time `t`.
pub fn totp_code(secret: &str, t: u64) -> String {
    let bytes = totp_rs::Secret::Encoded(secret.to_string())
        .to_bytes()
        .unwrap();
    totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes).generate(t)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A logged-in client: the session cookie and its CSRF token.
#[derive(Debug, Clone)]
pub struct Session {
    pub cookie: String,
    /// The full `Set-Cookie` line, to check its flags.
    pub set_cookie: String,
    pub csrf: String,
}

impl Session {
    pub fn from_login(response: Response) -> Session {
        let status = response.status();
        let set_cookie = response
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = response.text().unwrap();
        assert_eq!(status, 200, "login failed: {body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        let cookie = set_cookie
            .split(';')
            .next()
            .and_then(|kv| kv.split_once('='))
            .map(|(_, v)| v.to_string())
            .unwrap();
        Session {
            cookie,
            set_cookie,
            csrf: body["csrf_token"].as_str().unwrap().to_string(),
        }
    }

    pub fn cookie_header(&self) -> String {
        format!("__Host-gh_session={}", self.cookie)
    }
}

/// A fresh WireGuard public key (base64), its private half thrown away.
pub fn new_public_key() -> String {
    let secret = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
    STANDARD.encode(x25519_dalek::PublicKey::from(&secret).as_bytes())
}

/// The public key (base64) of a WireGuard private key (base64).
pub fn public_key_of(private_key: &str) -> String {
    let bytes: [u8; 32] = STANDARD
        .decode(private_key)
        .unwrap()
        .try_into()
        .unwrap_or_else(|b: Vec<u8>| panic!("a private key of {} bytes", b.len()));
    STANDARD
        .encode(x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(bytes)).as_bytes())
}

/// The value of `key` in a wg-quick file (`Endpoint` of `Endpoint = ...`).
pub fn conf_value<'a>(conf: &'a str, key: &str) -> &'a str {
    conf.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(" = "))
        .unwrap_or_else(|| panic!("no {key} line in:\n{conf}"))
}

/// Text of every file under `dir` (lossy), for "this secret is nowhere" checks.
pub fn all_file_bytes(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

/// True when `needle` occurs in any file under `dir`; returns the file.
pub fn find_in_files(dir: &std::path::Path, needle: &str) -> Option<std::path::PathBuf> {
    all_file_bytes(dir)
        .into_iter()
        .find(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .map(|(path, _)| path)
}
