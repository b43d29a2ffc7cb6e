//! A whole gateway in a temp dir, for unit tests: the config text given,
//! SQLite, generated keys, the real admin and portal routers driven with
//! `tower::ServiceExt::oneshot` — no TUN, no sockets, no TLS. (innernet's
//! `test::Server`.) The end-to-end tests in `tests/` drive the binaries;
//! this drives the same logic in milliseconds.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test fixture")]

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt as _;

use crate::access::Access;
use crate::admin::{AdminState, Caller};
use crate::gateway::{ConfigSource, Core, Keys, Overrides};
use crate::keys::secrets::SecretsKey;
use crate::keys::wireguard::GatewayKey;
use crate::portal::PortalState;
use crate::portal::sessions::{ClientAddr, SESSION_COOKIE};
use crate::running::Running;
use crate::store::{Store, StoreOptions};

/// A config a test can start from: one research group, a named endpoint.
pub const CONFIG: &str = r#"
[gateway]
name = "test-gw"
public_endpoint = "vpn.example.org"

[vpn]
pool = "10.200.0.0/24"

[portal]
require_totp = true

[[group]]
name = "research"
subnets = ["10.0.3.0/24"]

[[group]]
name = "app-admins"
subnets = ["10.0.2.0/24"]
ports = [22]
"#;

/// The admin every admin request comes from.
pub const ADMIN: Caller = Caller {
    uid: Some(0),
    pid: Some(4242),
};

/// A member's source address in portal requests.
pub const MEMBER_ADDR: [u8; 4] = [198, 51, 100, 20];

pub struct TestGateway {
    dir: tempfile::TempDir,
    pub core: Core,
    pub access: Access,
    /// The portal's state, for tests that call its flows directly.
    pub portal_state: PortalState,
    admin: Router,
    /// The admin API's shutdown token: cancelled, long answers end.
    pub admin_shutdown: tokio_util::sync::CancellationToken,
    portal: Router,
    /// The gateway's own PostgreSQL database when the run asks for one
    /// (`GATEHOUSE_TEST_GATEWAY_STORE=postgres`); last, so the store's
    /// connections close before it is dropped.
    pg: Option<crate::store::fixtures::PgTestDb>,
}

/// An answer: status, headers, and the body as JSON (`Null` when empty or
/// not JSON; then `text` has it).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

/// A logged-in portal session: the cookie and the CSRF token.
#[derive(Debug, Clone)]
pub struct Login {
    pub cookie: String,
    pub csrf: String,
}

impl TestGateway {
    /// A gateway running `config` (TOML), its state in a fresh temp dir.
    pub async fn new(config: &str) -> Self {
        Self::build(config, true).await
    }

    /// A gateway running `config` as written: no command-line overrides,
    /// so `config` must name a state dir the test owns.
    pub async fn new_as_written(config: &str) -> Self {
        Self::build(config, false).await
    }

    async fn build(config: &str, overrides: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.toml");
        std::fs::write(&path, config).unwrap();
        let overrides = match overrides {
            true => Overrides {
                state_dir: Some(dir.path().join("state")),
                admin_socket: Some(dir.path().join("admin.sock")),
            },
            false => Overrides::default(),
        };
        let source = ConfigSource { path, overrides };
        let config = source.load().expect("the test config is valid");
        // The embedded database even when the text has [store]: the test
        // gateway never needs a server.
        let embedded = gatehouse_config::Config {
            store: None,
            ..config.clone()
        };
        let state_dir = config.gateway.state_dir.clone();
        // As accessd without [aws]: the shared file, or one made in the state dir.
        crate::store::create_state_dir(&state_dir).unwrap();
        let secrets = match &config.gateway.secrets_key_file {
            Some(path) => SecretsKey::load_file(path).unwrap(),
            None => SecretsKey::load_or_create(&state_dir).unwrap(),
        };
        let mut options = StoreOptions::from_config(&embedded, Arc::new(secrets)).unwrap();
        // The shared store instead, when the run asks for it.
        let pg = crate::store::fixtures::gateway_postgres().map(|(db, pg_options)| {
            options.postgres = Some(pg_options);
            db
        });
        // Off the runtime: PostgreSQL's client is synchronous (accessd opens
        // it on a blocking thread too).
        let store = crate::store::fixtures::off_runtime(|| Store::open(&options).unwrap());
        let keys = Keys {
            wireguard: GatewayKey::load_or_create(&state_dir).unwrap(),
            ssh_host: crate::keys::ssh_host::load_host_key(
                config.ssh.host_key_file.as_deref(),
                &state_dir,
            )
            .unwrap(),
            user_ca: config
                .ssh
                .certificates
                .then(|| test_ca(&config, &state_dir)),
            host_ca: config
                .ssh
                .certificates
                .then(|| test_ca(&config, &state_dir)),
        };
        let host_addrs = crate::host_addrs::HostAddrs::load().unwrap();
        let core = Core::new(source, config, store, keys, host_addrs);
        // A jump host "runs" on 2222, so known_hosts lines can be made.
        let access = Access::new(core.clone(), None, Some("127.0.0.1:2222".parse().unwrap()));
        let admin_shutdown = tokio_util::sync::CancellationToken::new();
        let admin = crate::admin::router(AdminState {
            core: core.clone(),
            access: access.clone(),
            running: Running::default(),
            shutdown: admin_shutdown.clone(),
        });
        let portal_state = PortalState::new(&access, None).await.unwrap();
        let portal = crate::portal::router(portal_state.clone());
        Self {
            dir,
            core,
            access,
            portal_state,
            admin,
            admin_shutdown,
            portal,
            pg,
        }
    }

    /// Makes the database refuse every audit insert (as a full disk would),
    /// or takes that back, whichever backend it is.
    pub fn refuse_audit_inserts(&self, refuse: bool) {
        let sql = match (self.pg.is_some(), refuse) {
            (false, true) => {
                "CREATE TRIGGER no_audit BEFORE INSERT ON audit_log \
                 BEGIN SELECT RAISE(ABORT, 'disk full'); END;"
            }
            (false, false) => "DROP TRIGGER no_audit;",
            (true, true) => {
                "CREATE FUNCTION no_audit() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'disk full'; END $$; \
                 CREATE TRIGGER no_audit BEFORE INSERT ON audit_log \
                 FOR EACH ROW EXECUTE FUNCTION no_audit();"
            }
            (true, false) => "DROP TRIGGER no_audit ON audit_log; DROP FUNCTION no_audit();",
        };
        self.raw_sql(sql);
    }

    /// Runs `sql` on the gateway's database behind the store's back (as
    /// someone with the database would), whichever backend it is.
    pub fn raw_sql(&self, sql: &str) {
        match &self.pg {
            Some(db) => crate::store::fixtures::off_runtime(|| {
                db.client().batch_execute(sql).unwrap();
            }),
            None => crate::store::fixtures::raw(self.core.store())
                .execute_batch(sql)
                .unwrap(),
        }
    }

    /// Rewrites the config file (for reload tests).
    pub fn write_config(&self, config: &str) {
        std::fs::write(self.dir.path().join("gatehouse.toml"), config).unwrap();
    }

    /// An admin API request from [`ADMIN`].
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = json_request(method, path, body);
        request.extensions_mut().insert(ConnectInfo(ADMIN));
        answer(self.admin.clone().oneshot(request).await.unwrap()).await
    }

    /// A portal request from [`MEMBER_ADDR`], logged in when `login` is given
    /// (the CSRF header goes with it).
    pub async fn portal(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        login: Option<&Login>,
    ) -> Answer {
        let mut request = json_request(method, path, body);
        request
            .extensions_mut()
            .insert(ClientAddr(IpAddr::from(MEMBER_ADDR)));
        if let Some(login) = login {
            let headers = request.headers_mut();
            headers.insert(header::COOKIE, login.cookie.parse().unwrap());
            headers.insert("x-csrf-token", login.csrf.parse().unwrap());
        }
        answer(self.portal.clone().oneshot(request).await.unwrap()).await
    }

    /// `POST /v1/users/{user}/devices` with `name` and `public_key`.
    pub async fn admin_add_device(&self, user: &str, name: &str, public_key: &str) -> Answer {
        let body = serde_json::json!({ "name": name, "public_key": public_key });
        self.admin(
            Method::POST,
            &format!("/v1/users/{user}/devices"),
            Some(body),
        )
        .await
    }

    /// `POST /api/v1/devices` in `login`'s session.
    pub async fn portal_add_device(&self, login: &Login, name: &str, public_key: &str) -> Answer {
        let body = serde_json::json!({ "name": name, "public_key": public_key });
        self.portal(Method::POST, "/api/v1/devices", Some(body), Some(login))
            .await
    }

    /// Creates `name` in `group` through the admin API; returns the
    /// enrollment token.
    pub async fn add_user(&self, name: &str, group: &str) -> String {
        let created = self
            .admin(
                Method::POST,
                "/v1/users",
                Some(serde_json::json!({ "name": name, "groups": [group] })),
            )
            .await;
        assert_eq!(created.status, StatusCode::OK, "{created:?}");
        created.json["enrollment"]["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Enrolls `name` through the portal API with `token` (password and a
    /// TOTP code as an app computes it); returns the logged-in session.
    pub async fn enroll(&self, name: &str, token: &str) -> Login {
        let offer = self
            .portal(Method::GET, &format!("/api/v1/enroll/{token}"), None, None)
            .await;
        assert_eq!(offer.status, StatusCode::OK, "{offer:?}");
        assert_eq!(offer.json["user"], name);
        let secret = offer.json["totp_secret"].as_str().unwrap().to_string();
        let code = crate::totp::code_at(&secret, now()).unwrap();
        let body = serde_json::json!({
            "password": password_of(name),
            "totp_secret": secret,
            "totp_code": code,
        });
        let enrolled = self
            .portal(
                Method::POST,
                &format!("/api/v1/enroll/{token}"),
                Some(body),
                None,
            )
            .await;
        assert_eq!(enrolled.status, StatusCode::OK, "{enrolled:?}");
        login_of(&enrolled)
    }

    /// A portal login as `name` with their password and the next step's
    /// TOTP code (their enrollment used the current one).
    pub async fn login(&self, name: &str) -> Answer {
        let lookup = name.to_string();
        let secret = self
            .core
            .store()
            .read(move |r| r.user(&lookup))
            .await
            .unwrap()
            .unwrap()
            .totp_secret
            .unwrap();
        let code = crate::totp::code_at(&secret, now() + 30).unwrap();
        let body =
            serde_json::json!({ "user": name, "password": password_of(name), "totp_code": code });
        self.portal(Method::POST, "/api/v1/login", Some(body), None)
            .await
    }

    /// Every audit record's kind, oldest first.
    pub async fn audit_kinds(&self) -> Vec<String> {
        self.audit_records()
            .await
            .into_iter()
            .map(|r| r.kind)
            .collect()
    }

    /// Every audit record, oldest first.
    pub async fn audit_records(&self) -> Vec<gatehouse_config::api::AuditRecord> {
        self.core
            .store()
            .read(|r| r.audit_records(&crate::store::AuditFilter::default()))
            .await
            .unwrap()
    }
}

/// Parses every record of a typed detail ([`crate::audit::detail`]) back
/// into its struct, which denies unknown fields and misses none: panics
/// with every record that does not parse; returns the structs checked, a
/// name per record, so a test can say which it expects to have seen.
pub fn check_typed_details(records: &[gatehouse_config::api::AuditRecord]) -> Vec<&'static str> {
    use crate::access::certs::CertIssued;
    use crate::access::host_certs::{HostCertIssued, HostCertRevoked};
    use crate::access::sso::{SsoGroupsSet, SsoUserAdded};
    use crate::audit::detail::parse_back;
    use crate::ha::record::{ReleaseDetail, TakeoverDetail};
    use crate::portal::audit_views::AuditViewed;
    use crate::portal::sso_records::{SsoLoginFail, SsoLoginOk};
    use crate::ssh::audit::{ChannelRefused, SessionEnded, SessionStarted};
    use crate::vpn::flow_records::{FlowDetail, RollupDetail};

    /// `None` unless `r` is of one of `D`'s kinds (named once, in
    /// `D::KINDS`); else whether its detail parses back into `D`.
    fn check<D: crate::audit::detail::Detail + serde::de::DeserializeOwned>(
        r: &gatehouse_config::api::AuditRecord,
    ) -> Option<Result<&'static str, String>> {
        D::KINDS.iter().any(|k| k.as_str() == r.kind).then(|| {
            parse_back::<D>(&r.kind, &r.detail)
                .map(|_| std::any::type_name::<D>().rsplit("::").next().unwrap_or(""))
                .map_err(|err| format!("record {}: {err}", r.seq))
        })
    }
    let mut checked = Vec::new();
    let mut problems = Vec::new();
    for r in records {
        // User records are typed when SSO wrote them, logins when by OIDC.
        let by_sso = r.actor == crate::audit::event::Actor::Sso.to_string();
        let oidc = r.detail.get("method").and_then(Value::as_str) == Some("oidc");
        // A device's flows past its table's size are one record, marked.
        let rollup = r.detail.get("rollup").is_some();
        // Refused direct-tcpip channels are typed; other refusals are not.
        let channel = r.detail.pointer("/asked/channel").and_then(Value::as_str);
        let direct_tcpip = channel == Some("direct-tcpip");
        let candidates = [
            check::<CertIssued>(r),
            check::<HostCertIssued>(r),
            check::<HostCertRevoked>(r),
            check::<TakeoverDetail>(r),
            check::<ReleaseDetail>(r),
            check::<AuditViewed>(r),
            by_sso.then(|| check::<SsoUserAdded>(r)).flatten(),
            by_sso.then(|| check::<SsoGroupsSet>(r)).flatten(),
            oidc.then(|| check::<SsoLoginOk>(r)).flatten(),
            oidc.then(|| check::<SsoLoginFail>(r)).flatten(),
            (!rollup).then(|| check::<FlowDetail>(r)).flatten(),
            rollup.then(|| check::<RollupDetail>(r)).flatten(),
            check::<SessionStarted>(r),
            check::<SessionEnded>(r),
            direct_tcpip.then(|| check::<ChannelRefused>(r)).flatten(),
        ];
        let Some(parsed) = candidates.into_iter().flatten().next() else {
            continue;
        };
        match parsed {
            Ok(name) => checked.push(name),
            Err(problem) => problems.push(problem),
        }
    }
    assert!(
        problems.is_empty(),
        "records whose detail is not their typed struct:\n{}",
        problems.join("\n")
    );
    checked
}

/// The password a test member enrolls with.
pub fn password_of(name: &str) -> String {
    format!("correct horse battery staple {}", name.len())
}

/// The session of a login or enrollment answer.
pub fn login_of(answer: &Answer) -> Login {
    let cookie = answer
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(SESSION_COOKIE))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string();
    Login {
        cookie,
        csrf: answer.json["csrf_token"].as_str().unwrap().to_string(),
    }
}

/// Unix seconds now, for TOTP codes.
pub fn now() -> u64 {
    u64::try_from(crate::time_fmt::now_unix()).unwrap()
}

fn json_request(method: Method, path: &str, body: Option<Value>) -> Request<Body> {
    let builder = Request::builder().method(method).uri(path);
    match body {
        Some(body) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

async fn answer(response: axum::response::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Answer {
        status,
        headers,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

/// A CA key as the start resolves it without AWS: the configured file, or
/// the local key.
fn test_ca<R: crate::keys::ssh_ca_key::CaRole>(
    config: &gatehouse_config::Config,
    state_dir: &std::path::Path,
) -> crate::keys::ssh_ca_key::CaKey<R> {
    use crate::keys::ssh_ca_key::CaKey;
    match R::configured_file(config) {
        Some(file) => CaKey::load_file(file).unwrap(),
        None => CaKey::load_or_create_local(state_dir).unwrap(),
    }
}
