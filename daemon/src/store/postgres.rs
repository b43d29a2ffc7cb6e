//! Connections to the shared PostgreSQL store (`[store] url`, issue 14): the
//! URL's rules, TLS with rustls, a bounded pool, and timeouts on connecting
//! and on every statement, so a database that stops answering makes store
//! calls fail in seconds (`store_unavailable`) instead of hanging.
//!
//! TLS: `sslmode=disable` sends everything (the password's SCRAM exchange
//! included) in clear and is meant for loopback. `require`, `verify-ca` and
//! `verify-full` all mean TLS with the server's certificate checked against
//! `ca_file` and its host name (rustls does not do less). `prefer` and
//! `allow`, which fall back to clear text silently, are refused. Without
//! `sslmode`, a `ca_file` means `verify-full` and a loopback host
//! `disable`; any other host must say which.
//!
//! The password comes from `password_file` or `PGPASSWORD`, never from the
//! URL (a config file is world-readable on many hosts), and is never logged.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::db::DbError;

/// The pool's connection manager.
pub(crate) type Manager = PostgresConnectionManager<MakeRustlsConnect>;

/// A bounded pool of connections. A `postgres::Client` runs a small
/// runtime of its own and blocks on it when dropped, which tokio forbids on
/// a runtime thread; so when the last handle goes away on one (at shutdown),
/// the connections are closed on a thread of their own.
pub(crate) struct Pool {
    pool: Option<r2d2::Pool<Manager>>,
    last_error: LastError,
    /// Where the pool connects, for connections of its own (the lease).
    pub(crate) target: Target,
}

/// The last failed connection attempt's message (r2d2's own error says only
/// that it timed out).
type LastError = Arc<Mutex<String>>;

impl Pool {
    /// A connection, or the reason none could be had in time.
    pub(crate) fn get(&self) -> Result<r2d2::PooledConnection<Manager>, DbError> {
        match &self.pool {
            Some(pool) => pool.get().map_err(|_| self.no_connection()),
            // Only during drop, when nothing can call.
            None => unreachable!("the pool is taken only by drop"),
        }
    }

    fn no_connection(&self) -> DbError {
        let last = self
            .last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        DbError::NoConnection {
            reason: if last.is_empty() {
                "every connection is busy".into()
            } else {
                last
            },
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else { return };
        if tokio::runtime::Handle::try_current().is_ok() {
            let closing = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(pool));
            if let Err(error) = closing {
                tracing::warn!(%error, "cannot close the PostgreSQL connections");
            }
        }
    }
}

/// How long connecting (TCP, TLS, authentication) or getting a pooled
/// connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Each statement, and each wait for a lock, is cancelled by the server after
/// this; a transaction left idle (its node paused) is ended after
/// [`IDLE_IN_TRANSACTION`], freeing its locks for the other node.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(10);

/// At most this many connections per node.
const POOL_SIZE: u32 = 4;

/// Where the shared store is and how to log in to it.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgresql://user@host:port/dbname?sslmode=...`, without a password.
    pub url: String,
    /// From `password_file` or `PGPASSWORD`.
    pub password: Option<String>,
    /// PEM certificates that sign the server's (`sslmode` other than
    /// `disable`).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<secret>"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl PgOptions {
    /// The options `[store]` sets, with the password read from
    /// `password_file` (which group and others must not be able to read),
    /// else from `PGPASSWORD`.
    pub fn from_config(
        store: &gatehouse_config::file::StoreConfig,
    ) -> Result<PgOptions, PgConfigError> {
        let password = match &store.password_file {
            Some(path) => Some(read_password_file(path)?),
            None => std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()),
        };
        Ok(PgOptions {
            url: store.url.clone(),
            password,
            ca_file: store.ca_file.clone(),
        })
    }
}

fn read_password_file(path: &Path) -> Result<String, PgConfigError> {
    crate::keys::private_file::PrivateFile::new(path)
        .read_value(false)
        .map_err(|err| PgConfigError::PasswordFile {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })
}

/// Checks `[store]` offline (the URL, TLS settings, password file and CA
/// file) and names the database: what `accessd check-config` reports.
pub fn check(store: &gatehouse_config::file::StoreConfig) -> Result<String, PgConfigError> {
    let opts = PgOptions::from_config(store)?;
    let target = Target::parse(&opts)?;
    client_config(&target.tls)?;
    Ok(format!("postgresql://{}", target.describe()))
}

/// What is wrong with `[store]`, or why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum PgConfigError {
    #[error("[store] password_file {path}: {reason}")]
    PasswordFile { path: PathBuf, reason: String },
    #[error("[store] url {url:?} is not a PostgreSQL URL: {reason}")]
    Url { url: String, reason: String },
    #[error(
        "[store] url must not carry the password (config files are often readable); put it in \
         [store] password_file or the PGPASSWORD environment"
    )]
    PasswordInUrl,
    #[error(
        "[store] url: sslmode={0} would fall back to an unencrypted connection; use \
         sslmode=verify-full with [store] ca_file, or sslmode=disable on loopback"
    )]
    WeakSslMode(String),
    #[error(
        "[store] url: sslmode={0} needs [store] ca_file, the PEM certificate(s) that sign the \
         server's (for RDS, the region's bundle)"
    )]
    NoCaFile(String),
    #[error(
        "[store] url: the host {0} is not loopback, so say how to connect: sslmode=verify-full \
         with [store] ca_file, or sslmode=disable to send everything in clear"
    )]
    NoSslMode(String),
    #[error("[store] ca_file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
}

/// TLS or not, as decided from the URL and `ca_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tls {
    Disable,
    Verify(PathBuf),
}

/// The parsed URL and TLS choice; no connection is made.
#[derive(Clone)]
pub(crate) struct Target {
    config: tokio_postgres::Config,
    tls: Tls,
}

impl Target {
    /// Checks the URL and TLS settings (what `check-config` can do offline).
    pub(crate) fn parse(opts: &PgOptions) -> Result<Target, PgConfigError> {
        let bad_url = |reason: String| PgConfigError::Url {
            url: opts.url.clone(),
            reason,
        };
        let (base, sslmode) = split_sslmode(&opts.url);
        let mut config =
            tokio_postgres::Config::from_str(&base).map_err(|e| bad_url(e.to_string()))?;
        if config.get_password().is_some() {
            return Err(PgConfigError::PasswordInUrl);
        }
        if config.get_hosts().is_empty() {
            return Err(bad_url("it names no host".into()));
        }
        if config.get_user().is_none() {
            return Err(bad_url(
                "it names no user (postgresql://USER@host/db)".into(),
            ));
        }
        let tls = match (sslmode.as_deref(), &opts.ca_file) {
            (Some("disable"), _) => Tls::Disable,
            (Some(mode @ ("prefer" | "allow")), _) => {
                return Err(PgConfigError::WeakSslMode(mode.into()));
            }
            (Some("require" | "verify-ca" | "verify-full") | None, Some(ca)) => {
                Tls::Verify(ca.clone())
            }
            (Some(mode @ ("require" | "verify-ca" | "verify-full")), None) => {
                return Err(PgConfigError::NoCaFile(mode.into()));
            }
            (Some(other), _) => {
                return Err(bad_url(format!(
                    "sslmode={other} is not one of disable, require, verify-ca, verify-full"
                )));
            }
            (None, None) => match non_loopback_host(config.get_hosts()) {
                None => Tls::Disable,
                Some(host) => return Err(PgConfigError::NoSslMode(host)),
            },
        };
        config.ssl_mode(match tls {
            Tls::Disable => SslMode::Disable,
            Tls::Verify(_) => SslMode::Require,
        });
        if let Some(password) = &opts.password {
            config.password(password);
        }
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_user_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .application_name("accessd")
            .options(format!(
                "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={} \
                 -c client_min_messages=warning",
                STATEMENT_TIMEOUT.as_millis(),
                STATEMENT_TIMEOUT.as_millis(),
                IDLE_IN_TRANSACTION.as_millis()
            ));
        Ok(Target { config, tls })
    }

    /// `host:port/dbname`, for messages (never the password).
    pub(crate) fn describe(&self) -> String {
        let host = match self.config.get_hosts().first() {
            Some(Host::Tcp(name)) => name.clone(),
            Some(Host::Unix(path)) => path.display().to_string(),
            None => "?".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        let db = self
            .config
            .get_dbname()
            .or(self.config.get_user())
            .unwrap_or("?");
        format!("{host}:{port}/{db}")
    }

    /// A pool with its first connection made (an error when none can be).
    pub(crate) fn pool(&self) -> Result<Pool, PgConfigOrConnect> {
        let tls = MakeRustlsConnect::new(client_config(&self.tls)?);
        let manager =
            PostgresConnectionManager::new(postgres::Config::from(self.config.clone()), tls);
        let last_error = LastError::default();
        let built = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            .error_handler(Box::new(RememberErrors(last_error.clone())))
            .build(manager);
        let built = built.ok();
        let failed = built.is_none();
        let pool = Pool {
            pool: built,
            last_error,
            target: self.clone(),
        };
        if failed {
            return Err(PgConfigOrConnect::Connect(pool.no_connection()));
        }
        Ok(pool)
    }
}

impl Target {
    /// One connection of its own, outside the pool, for the lease and the
    /// change notifications: async, driven by a task that ends when the
    /// client is dropped or the connection breaks, and that hands each
    /// `NOTIFY` (its channel name) to `notices`.
    pub(crate) async fn connect(
        &self,
        notices: Option<tokio::sync::mpsc::Sender<String>>,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), DbError> {
        let tls = MakeRustlsConnect::new(client_config(&self.tls).map_err(|e| {
            DbError::NoConnection {
                reason: e.to_string(),
            }
        })?);
        let (client, mut connection) =
            tokio::time::timeout(CONNECT_TIMEOUT, self.config.connect(tls))
                .await
                .map_err(|_| DbError::NoConnection {
                    reason: format!("connecting took more than {}s", CONNECT_TIMEOUT.as_secs()),
                })??;
        let driver = tokio::spawn(async move {
            while let Some(Ok(message)) =
                std::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                if let (tokio_postgres::AsyncMessage::Notification(n), Some(notices)) =
                    (message, &notices)
                    && notices.send(n.channel().to_string()).await.is_err()
                {
                    break;
                }
            }
        });
        Ok((client, driver))
    }
}

/// Why [`Target::pool`] failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PgConfigOrConnect {
    #[error(transparent)]
    Config(#[from] PgConfigError),
    #[error("{0}")]
    Connect(DbError),
}

/// r2d2 logs every failed connection attempt through `log`; here the last
/// one is kept for the error the store's caller gets.
#[derive(Debug)]
struct RememberErrors(LastError);

impl r2d2::HandleError<postgres::Error> for RememberErrors {
    fn handle_error(&self, error: postgres::Error) {
        let message = DbError::from(error).to_string();
        tracing::debug!(%message, "PostgreSQL connection attempt failed");
        if let Ok(mut last) = self.0.lock() {
            *last = message;
        }
    }
}

fn client_config(tls: &Tls) -> Result<rustls::ClientConfig, PgConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if let Tls::Verify(path) = tls {
        load_roots(path, &mut roots)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgConfigError::CaFile {
            path: PathBuf::new(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

fn load_roots(path: &Path, roots: &mut rustls::RootCertStore) -> Result<(), PgConfigError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |reason: String| PgConfigError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

/// The URL without its `sslmode` parameter (tokio-postgres knows only
/// disable, prefer and require), and that parameter.
fn split_sslmode(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut sslmode = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("sslmode=") {
            Some(mode) => {
                sslmode = Some(mode.to_string());
                false
            }
            None => !pair.is_empty(),
        })
        .collect();
    if rest.is_empty() {
        (base.to_string(), sslmode)
    } else {
        (format!("{base}?{}", rest.join("&")), sslmode)
    }
}

/// The first host that is neither a loopback address, `localhost` nor a
/// Unix socket.
fn non_loopback_host(hosts: &[Host]) -> Option<String> {
    hosts.iter().find_map(|host| match host {
        Host::Unix(_) => None,
        Host::Tcp(name) if name == "localhost" => None,
        Host::Tcp(name) => match name.parse::<IpAddr>() {
            Ok(ip) if ip.is_loopback() => None,
            _ => Some(name.clone()),
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn opts(url: &str, ca: Option<&str>) -> PgOptions {
        PgOptions {
            url: url.into(),
            password: Some("s3cret".into()),
            ca_file: ca.map(PathBuf::from),
        }
    }

    fn refused(url: &str, ca: Option<&str>) -> String {
        match Target::parse(&opts(url, ca)) {
            Ok(_) => panic!("{url} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn loopback_without_sslmode_is_plain_and_other_hosts_must_choose() {
        let target =
            Target::parse(&opts("postgresql://gatehouse@127.0.0.1:5433/gh", None)).unwrap();
        assert_eq!(target.tls, Tls::Disable);
        assert_eq!(target.describe(), "127.0.0.1:5433/gh");
        let msg = refused("postgresql://gatehouse@db.internal/gh", None);
        assert!(msg.contains("db.internal is not loopback"), "{msg}");
        let target = Target::parse(&opts(
            "postgresql://gatehouse@db.internal/gh?sslmode=verify-full",
            Some("/etc/gatehouse/rds-ca.pem"),
        ))
        .unwrap();
        assert_eq!(target.tls, Tls::Verify("/etc/gatehouse/rds-ca.pem".into()));
    }

    #[test]
    fn weak_or_unverifiable_tls_and_passwords_in_the_url_are_refused() {
        assert!(refused("postgresql://g@db/gh?sslmode=prefer", None).contains("fall back"));
        assert!(refused("postgresql://g@db/gh?sslmode=verify-full", None).contains("ca_file"));
        assert!(refused("postgresql://g@db/gh?sslmode=bogus", None).contains("sslmode=bogus"));
        let msg = refused("postgresql://g:hunter2@127.0.0.1/gh", None);
        assert!(msg.contains("password_file"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(refused("postgresql://127.0.0.1/gh", None).contains("no user"));
    }

    #[test]
    fn other_parameters_survive_the_sslmode_split() {
        assert_eq!(
            split_sslmode("postgresql://g@h/d?sslmode=disable&connect_timeout=3"),
            (
                "postgresql://g@h/d?connect_timeout=3".to_string(),
                Some("disable".to_string())
            )
        );
        assert_eq!(
            split_sslmode("postgresql://g@h/d"),
            ("postgresql://g@h/d".to_string(), None)
        );
    }

    #[test]
    fn the_password_file_must_be_private_and_not_empty() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = gatehouse_config::file::StoreConfig {
            url: "postgresql://g@127.0.0.1/gh".into(),
            password_file: Some(file.clone()),
            ca_file: None,
        };
        assert_eq!(
            PgOptions::from_config(&config).unwrap().password.as_deref(),
            Some("s3cret")
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = PgOptions::from_config(&config).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::write(&file, "\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = PgOptions::from_config(&config).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn the_password_is_never_in_debug_output() {
        let shown = format!("{:?}", opts("postgresql://g@127.0.0.1/gh", None));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
