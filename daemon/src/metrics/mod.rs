//! Prometheus metrics on `metrics.listen` (default 127.0.0.1:9586):
//! `GET /metrics` in the text exposition format 0.0.4, `GET /healthz`.
//!
//! - this file: the server (on a listener the caller bound, capped by
//!   [`crate::capped_listener`]) and its routes;
//! - [`exposition`]: the text format of one snapshot of the data plane.
//!
//! It reads the data plane's counters ([`Engine::peer_status`]), the HA
//! role, the audit exporters' figures ([`crate::export::ExportStats`]) and
//! the host certificates expiring soon (from the store) at scrape time and
//! keeps no state of its own.

pub mod exposition;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::host_certs::count_expiring;
use crate::capped_listener::CappedListener;
use crate::export::ExportHandle;
use crate::ha::Ha;
use crate::store::Store;
use crate::vpn::engine::Engine;
pub use exposition::{is_connected, render};

/// Scrapers served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 16;
/// A connection that sends nothing for this long is closed (slow or stuck
/// clients cannot hold a slot).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// Binds `listen` for [`spawn_metrics`].
pub async fn bind(listen: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(listen)
        .await
        .map_err(|source| MetricsError::Bind {
            addr: listen,
            source,
        })
}

/// Serves the metrics routes on a listener the caller bound (tests bind
/// `127.0.0.1:0`), until `shutdown` is cancelled.
pub fn spawn_metrics(
    listener: TcpListener,
    sources: Sources,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    match listener.local_addr() {
        Ok(local) => tracing::info!(listen = %local, "metrics listening"),
        Err(err) => tracing::warn!(error = %err, "metrics listening on an unknown address"),
    }
    let listener = CappedListener::new(listener, MAX_CONNECTIONS, Some(IDLE_TIMEOUT));
    let app = router(sources);
    tracker.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(err) = served {
            tracing::error!(error = %err, "metrics server stopped");
        }
    });
}

/// What a scrape reads: the data plane, the HA role of one of a pair, the
/// audit log's exporters, and the store of the host certificates (with
/// `ssh.certificates`).
#[derive(Clone)]
pub struct Sources {
    pub engine: Arc<Engine>,
    pub ha: Option<Ha>,
    pub exports: Vec<ExportHandle>,
    pub host_certs: Option<Store>,
}

/// The metrics routes.
pub fn router(sources: Sources) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(sources)
}

async fn metrics(State(sources): State<Sources>) -> impl IntoResponse {
    let engine = &sources.engine;
    let mut text = render(&engine.peer_status(), &engine.counters, SystemTime::now());
    if let Some(ha) = &sources.ha {
        let state = ha.state();
        exposition::render_ha(
            &mut text,
            &exposition::HaFigures {
                node: state.node,
                active: ha.is_active(),
                generation: state.generation,
                acquisitions: state.acquisitions,
                failovers: state.failovers,
            },
        );
    }
    let exports: Vec<_> = sources
        .exports
        .iter()
        .map(|export| (export.name, export.stats.figures()))
        .collect();
    exposition::render_exports(&mut text, &exports);
    if let Some(store) = &sources.host_certs {
        match count_expiring(store, crate::time_fmt::now_unix()).await {
            Ok(expiring) => exposition::render_host_certs(&mut text, expiring),
            Err(err) => tracing::warn!(error = %err, "cannot count the expiring host certificates"),
        }
    }
    ([(CONTENT_TYPE, exposition::TEXT_FORMAT)], text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::Ordering;

    use boringtun::x25519::StaticSecret;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        reply
    }

    #[tokio::test]
    async fn the_server_answers_metrics_and_health() {
        let engine = Arc::new(Engine::new(StaticSecret::random_from_rng(rand_core::OsRng)));
        engine
            .counters
            .malformed_datagrams
            .store(4, Ordering::Relaxed);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let stats = Arc::new(crate::export::ExportStats::default());
        stats.lag.store(3, Ordering::Relaxed);
        // Host certificates: one expiring in a day, one in 30 days, one
        // revoked that would expire in a day: one expires soon.
        let (_dir, store) = crate::store::fixtures::temp_store();
        let now = crate::time_fmt::now_unix();
        for (serial, days, revoked) in [(1, 1, false), (2, 30, false), (3, 1, true)] {
            let row = crate::store::ssh_host_certs::HostCertRow {
                serial,
                key_fingerprint: "SHA256:h".into(),
                public_key: "ssh-ed25519 AAAA".into(),
                principals: vec!["10.0.3.7".into()],
                valid_after: now - 60,
                valid_before: now + days * 86_400,
                issued_at: now,
                issued_by: "uid:0".into(),
                revoked: revoked.then(|| (now, "uid:0".to_string())),
            };
            store.write_blocking(|w| w.record_host_cert(&row)).unwrap();
        }
        let sources = Sources {
            engine,
            ha: None,
            exports: vec![ExportHandle {
                name: "syslog",
                receiver: "logs.example.org:6514".into(),
                stats,
            }],
            host_certs: Some(store),
        };
        spawn_metrics(listener, sources, &tracker, shutdown.clone());

        let reply = get(addr, "/metrics").await;
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
            "{head}"
        );
        assert!(
            body.lines()
                .any(|l| l == r#"gatehouse_vpn_dropped_datagrams_total{reason="malformed"} 4"#),
            "{body}"
        );
        assert!(
            body.lines()
                .any(|l| l == r#"gatehouse_audit_export_lag_records{exporter="syslog"} 3"#),
            "{body}"
        );
        assert!(
            body.lines()
                .any(|l| l == "gatehouse_ssh_host_certs_expiring 1"),
            "{body}"
        );

        let reply = get(addr, "/healthz").await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nok"), "{reply}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));

        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_taken_address_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr).await.unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
