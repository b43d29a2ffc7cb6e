//! The portal's accept loop: TLS handshakes and HTTP/1.1 connections, each
//! a tracked task that stops on shutdown (finishing the request in flight).
//! Bounded: at most [`MAX_CONNECTIONS`] at once (the listener cap shared
//! with the metrics server) and [`MAX_CONNECTIONS_PER_SOURCE`] from one
//! source, a client gets [`HANDSHAKE_TIMEOUT`] for its TLS handshake and
//! request headers, and a whole request (its body too) gets
//! [`super::REQUEST_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::sessions::ClientAddr;
use crate::capped_listener::CappedListener;

/// Open connections at most; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// Open connections from one source address (IPv6: one /64) at most: a
/// quarter of the slots, so one source cannot take the others' while a
/// team behind one NAT address (a browser opens about six) still fits.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = MAX_CONNECTIONS / 4;
/// Time for the TLS handshake, and for each request's headers.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn spawn_server(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut listener =
        CappedListener::new(listener, MAX_CONNECTIONS, None).per_source(MAX_CONNECTIONS_PER_SOURCE);
    let conn_tracker = tracker.clone();
    tracker.spawn(async move {
        loop {
            // Each connection holds its slot until it is dropped.
            let (stream, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            let shutdown = shutdown.clone();
            conn_tracker.spawn(async move {
                let tls =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, "portal: TLS handshake failed");
                            return;
                        }
                        Err(_elapsed) => return,
                    };
                let source = ClientAddr(peer.ip());
                let service =
                    hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                        request.extensions_mut().insert(source);
                        app.clone().oneshot(request)
                    });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HANDSHAKE_TIMEOUT)
                    .serve_connection(TokioIo::new(tls), service);
                tokio::pin!(connection);
                tokio::select! {
                    served = connection.as_mut() => {
                        if let Err(err) = served {
                            tracing::debug!(error = %err, "portal: connection ended with an error");
                        }
                    }
                    () = shutdown.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
                    }
                }
            });
        }
        tracing::info!("portal stopped");
    });
}
