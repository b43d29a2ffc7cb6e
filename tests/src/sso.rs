//! Harness for the SSO tests: the identity provider (panva's oidc-provider,
//! `tests/oidc/provider.mjs`, on loopback), a gateway configured for it, and
//! a scripted browser (reqwest with a cookie store, following redirects)
//! that signs in through the provider's own login and consent pages.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use serde_json::{Value, json};

use crate::{Daemon, host_sample_config, require};

/// The client id and secret the gateway is registered with.
pub const CLIENT_ID: &str = "gatehouse";
pub const CLIENT_SECRET: &str = "test-only-client-secret-6c1d";

pub use crate::ports::free_port;

/// `tests/oidc`, where the provider's script and node_modules live.
pub fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// A Node.js script of `tests/oidc` serving on loopback; stopped (stdin
/// closed, then killed) on drop.
struct NodeServer {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl NodeServer {
    /// Runs `script` with `env`; returns it and the issuer it prints once it
    /// listens. `None` (printed) when Node.js or the packages are missing,
    /// which fails under `GATEHOUSE_E2E=1`.
    fn start(
        netns: Option<&str>,
        script: &str,
        env: &[(&str, String)],
    ) -> Option<(NodeServer, String)> {
        let installed = oidc_dir().join("node_modules/oidc-provider").exists();
        if !require(
            installed && Command::new("node").arg("--version").output().is_ok(),
            "the SSO tests need Node.js and tests/oidc/node_modules (tests/run.sh installs them)",
        ) {
            return None;
        }
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "node"]);
                c
            }
            None => Command::new("node"),
        };
        let mut child = command
            .arg(oidc_dir().join(script))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(issuer) = line.strip_prefix("ready ") {
                    let _ = tx.send(issuer.to_string());
                }
            }
        });
        let server = NodeServer { child, stdin };
        let issuer = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{script} did not start within 30 s"));
        Some((server, issuer))
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The certified provider (`provider.mjs`).
pub struct OidcProvider {
    pub issuer: String,
    accounts: PathBuf,
    _server: NodeServer,
    _dir: tempfile::TempDir,
}

impl OidcProvider {
    /// Starts it on loopback (plain http) with `accounts` (`{"<sub>":
    /// {claims}}`) and the gateway's client for `redirect_uri`.
    pub fn start(accounts: &Value, redirect_uri: &str) -> Option<OidcProvider> {
        Self::start_at(None, accounts, redirect_uri)
    }

    /// Like [`OidcProvider::start`], at `at`: in network namespace `ns`, on
    /// `host`, serving https with the PEM files `tls` (certificate, key).
    pub fn start_at(
        at: Option<(&str, &str, (&Path, &Path))>,
        accounts: &Value,
        redirect_uri: &str,
    ) -> Option<OidcProvider> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("accounts.json");
        std::fs::write(&file, accounts.to_string()).unwrap();
        let clients = json!([{
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [redirect_uri],
        }]);
        let mut env = vec![
            ("OIDC_PORT", free_port().to_string()),
            ("OIDC_ACCOUNTS", file.display().to_string()),
            ("OIDC_CLIENTS", clients.to_string()),
        ];
        if let Some((_, host, (cert, key))) = at {
            env.push(("OIDC_HOST", host.to_string()));
            env.push(("OIDC_TLS_CERT", cert.display().to_string()));
            env.push(("OIDC_TLS_KEY", key.display().to_string()));
        }
        let (server, issuer) = NodeServer::start(at.map(|(ns, _, _)| ns), "provider.mjs", &env)?;
        Some(OidcProvider {
            issuer,
            accounts: file,
            _server: server,
            _dir: dir,
        })
    }

    /// Replaces the accounts (read again at the next login).
    pub fn set_accounts(&self, accounts: &Value) {
        std::fs::write(&self.accounts, accounts.to_string()).unwrap();
    }
}

/// The rogue issuer (`rogue.mjs`): valid protocol, broken tokens.
pub struct RogueIssuer {
    pub issuer: String,
    _server: NodeServer,
}

impl RogueIssuer {
    pub fn start() -> Option<RogueIssuer> {
        let (server, issuer) = NodeServer::start(
            None,
            "rogue.mjs",
            &[
                ("ROGUE_PORT", free_port().to_string()),
                ("ROGUE_CLIENT_ID", CLIENT_ID.to_string()),
            ],
        )?;
        Some(RogueIssuer {
            issuer,
            _server: server,
        })
    }

    /// How the next tokens are broken (see `tests/oidc/rogue.mjs`).
    pub fn set_mode(&self, mode: &str) {
        let answer = Client::new()
            .post(format!("{}/_mode", self.issuer))
            .body(mode.to_string())
            .send()
            .unwrap();
        assert!(answer.status().is_success());
    }
}

/// A gateway on the host for `provider`: the host sample config with the
/// portal on `port` (its URL `https://127.0.0.1:<port>`), the client secret
/// in a 0600 file in `dir`, and `extra` added to `[oidc]` (e.g.
/// `auto_provision = true`). Group `research` maps from the IdP group
/// `research-team`.
pub fn sso_config(issuer: &str, port: u16, dir: &Path, extra: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let secret = dir.join("oidc-secret");
    std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = host_sample_config()
        .replacen(
            "listen = \"127.0.0.1:0\"\n# The URL people open",
            &format!("listen = \"127.0.0.1:{port}\"\nurl = \"https://127.0.0.1:{port}\"\n# The URL people open"),
            1,
        )
        .replacen(
            "subnets = [\"10.0.3.0/24\"]\n",
            "subnets = [\"10.0.3.0/24\"]\noidc_groups = [\"research-team\"]\n",
            1,
        );
    assert!(
        text.contains(&format!("127.0.0.1:{port}")),
        "the sample's [portal] changed shape"
    );
    format!(
        "{text}\n[oidc]\nissuer = \"{issuer}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_file = \"{}\"\ndisplay_name = \"Test IdP\"\n{extra}\n",
        secret.display()
    )
}

/// The value between `start` and the next `"` or `<` in `html` (a form
/// field's value, an element's text on a portal page).
pub fn between(html: &str, start: &str) -> String {
    let at = html
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in:\n{html}"))
        + start.len();
    let end = html[at..].find(['"', '<']).unwrap();
    html[at..at + end].to_string()
}

/// A browser: cookies kept per site, redirects followed, the portal's
/// certificate trusted (and nothing else).
pub struct Browser {
    pub client: Client,
}

impl Browser {
    pub fn new(portal_cert_pem: &[u8]) -> Browser {
        let cert = reqwest::Certificate::from_pem(portal_cert_pem).unwrap();
        let client = Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert)
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::limited(10))
            .timeout(Duration::from_secs(20))
            .no_proxy()
            .build()
            .unwrap();
        Browser { client }
    }

    pub fn get(&self, url: &str) -> Response {
        self.client.get(url).send().unwrap()
    }

    /// Submits the first form of `page` (HTML from `base`) with `fields`.
    pub fn submit(&self, base: &str, page: &str, fields: &[(&str, &str)]) -> Response {
        let action = form_action(page).unwrap_or_else(|| panic!("no form in:\n{page}"));
        let url = if action.starts_with("http") {
            action
        } else {
            format!("{base}{action}")
        };
        self.client.post(url).form(fields).send().unwrap()
    }

    /// Signs in with the portal's SSO button as `account` at the provider
    /// (its login page, then its consent page when it asks); returns the
    /// last answer (the portal's callback page, or its refusal).
    pub fn sso_login(&self, portal: &str, issuer: &str, account: &str) -> (u16, String, String) {
        let mut response = self.get(&format!("{portal}/oidc/start"));
        for _ in 0..4 {
            let url = response.url().to_string();
            let status = response.status().as_u16();
            let body = response.text().unwrap();
            if !url.starts_with(issuer) {
                return (status, url, body);
            }
            response = if body.contains("name=\"prompt\" value=\"login\"") {
                self.submit(
                    issuer,
                    &body,
                    &[("prompt", "login"), ("login", account), ("password", "any")],
                )
            } else if body.contains("name=\"prompt\" value=\"consent\"") {
                self.submit(issuer, &body, &[("prompt", "consent")])
            } else {
                return (status, url, body);
            };
        }
        let url = response.url().to_string();
        let status = response.status().as_u16();
        (status, url, response.text().unwrap())
    }
}

/// The `action` of the first `<form>` in `html`.
fn form_action(html: &str) -> Option<String> {
    let form = html.find("<form")?;
    let rest = &html[form..];
    let at = rest.find("action=\"")? + "action=\"".len();
    let end = rest[at..].find('"')?;
    Some(rest[at..at + end].replace("&amp;", "&"))
}

/// Starts a gateway for `provider` with `extra` in `[oidc]`, on a fresh
/// portal port; returns it with its portal base URL.
pub fn start_gateway(issuer: &str, port: u16, extra: &str) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let gw = Daemon::start_with(&sso_config(issuer, port, dir.path(), extra));
    (gw, dir)
}
