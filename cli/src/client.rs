//! The admin API client: HTTP/1.1 + JSON over accessd's Unix socket.
//!
//! One connection per request, driven on the caller's (current-thread)
//! runtime without spawning: `accessctl` makes a handful of requests and exits,
//! so there is nothing to pool. Every request is bounded by a timeout. Errors
//! keep the distinction the exit code needs: the daemon could not be reached
//! at all (exit 3), or it answered with an error (exit 1).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_config::api::ApiError;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

/// The timeout on each request, from connect to the last byte of the body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Talks to one accessd admin socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

/// A decoded 2xx answer, with the JSON exactly as the daemon sent it (for `--json`).
#[derive(Debug, Clone)]
pub struct Reply<T> {
    pub body: T,
    pub json: serde_json::Value,
}

/// Why a request did not produce the answer asked for.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be connected to: the daemon is not running, the
    /// path is wrong, or the caller may not use it.
    #[error("{}", unreachable_sentence(socket, source))]
    Unreachable { socket: PathBuf, source: io::Error },
    #[error(
        "accessd at {} did not answer {method} {path} within {}s",
        socket.display(),
        after.as_secs()
    )]
    Timeout {
        socket: PathBuf,
        method: Method,
        path: String,
        after: Duration,
    },
    #[error("the connection to accessd failed during {method} {path}: {source}")]
    Connection {
        method: Method,
        path: String,
        source: hyper::Error,
    },
    #[error("cannot build the request {method} {path}: {source}")]
    BuildRequest {
        method: Method,
        path: String,
        source: hyper::http::Error,
    },
    #[error("cannot encode the query for {path}: {source}")]
    Query {
        path: String,
        source: serde_urlencoded::ser::Error,
    },
    #[error("cannot encode the request body for {path}: {source}")]
    Encode {
        path: String,
        source: serde_json::Error,
    },
    /// The daemon refused the request and said why.
    #[error("{}", error.message)]
    Api { status: StatusCode, error: ApiError },
    /// The daemon (or something else on the socket) answered with an error
    /// status and a body that is not an [`ApiError`].
    #[error("accessd answered {status} to {method} {path}: {body}")]
    Status {
        status: StatusCode,
        method: Method,
        path: String,
        body: String,
    },
    #[error(
        "accessd's answer to {method} {path} is not what this accessctl expects ({source}); \
         are accessctl and accessd the same version?"
    )]
    Decode {
        method: Method,
        path: String,
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The process exit code this error should end `accessctl` with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Unreachable { .. } => 3,
            _ => 1,
        }
    }

    /// Extra lines to show under the message (an [`ApiError`]'s details).
    pub fn details(&self) -> &[String] {
        match self {
            Self::Api { error, .. } => &error.details,
            _ => &[],
        }
    }
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// Same client with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Reply<T>, ClientError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<Reply<T>, ClientError> {
        self.call(Method::POST, path, body).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Reply<T>, ClientError> {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<Reply<T>, ClientError> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    /// Sends one request and decodes a 2xx JSON answer into `T`.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Reply<T>, ClientError> {
        let request = build_request(&method, path, body)?;
        let exchange = self.exchange(&method, path, request);
        let (status, _headers, bytes) = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result?,
            Err(_elapsed) => {
                return Err(ClientError::Timeout {
                    socket: self.socket.clone(),
                    method,
                    path: path.to_owned(),
                    after: self.timeout,
                });
            }
        };
        if !status.is_success() {
            return Err(error_from_answer(status, &method, path, &bytes));
        }
        // An empty 2xx body reads as JSON null, so `()` or `Option<_>` can take it.
        let json: serde_json::Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
                method: method.clone(),
                path: path.to_owned(),
                source,
            })?
        };
        let body = T::deserialize(&json).map_err(|source| ClientError::Decode {
            method,
            path: path.to_owned(),
            source,
        })?;
        Ok(Reply { body, json })
    }

    /// `GET path` for a 2xx answer that is not JSON (a backup file): its
    /// headers and body bytes.
    pub async fn download(&self, path: &str) -> Result<(HeaderMap, Bytes), ClientError> {
        let method = Method::GET;
        let request = build_request(&method, path, None::<&()>)?;
        let exchange = self.exchange(&method, path, request);
        let (status, headers, bytes) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_elapsed| ClientError::Timeout {
                socket: self.socket.clone(),
                method: method.clone(),
                path: path.to_owned(),
                after: self.timeout,
            })??;
        if !status.is_success() {
            return Err(error_from_answer(status, &method, path, &bytes));
        }
        Ok((headers, bytes))
    }

    /// `GET path` for a 2xx answer of JSON lines (a long check's
    /// progress), each handed to `each_line` as it arrives. The timeout
    /// bounds the wait for the answer and for each next line, not the
    /// whole answer: a long check that keeps reporting is not cut off.
    pub async fn get_lines(
        &self,
        path: &str,
        mut each_line: impl FnMut(serde_json::Value),
    ) -> Result<(), ClientError> {
        let method = Method::GET;
        let request = build_request(&method, path, None::<&()>)?;
        let timeout = |socket: &Path| ClientError::Timeout {
            socket: socket.to_path_buf(),
            method: method.clone(),
            path: path.to_owned(),
            after: self.timeout,
        };
        let decode = |source| ClientError::Decode {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let connection_failed = |source| ClientError::Connection {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let connect = async {
            let stream = UnixStream::connect(&self.socket).await.map_err(|source| {
                ClientError::Unreachable {
                    socket: self.socket.clone(),
                    source,
                }
            })?;
            hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(connection_failed)
        };
        let (sender, connection) = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_elapsed| timeout(&self.socket))??;
        let read = async {
            let mut sender = sender;
            let response = tokio::time::timeout(self.timeout, sender.send_request(request))
                .await
                .map_err(|_elapsed| timeout(&self.socket))?
                .map_err(connection_failed)?;
            // Only the answer is read now: dropping `sender` lets the
            // connection end with it.
            drop(sender);
            let status = response.status();
            let mut body = response.into_body();
            if !status.is_success() {
                let bytes = tokio::time::timeout(self.timeout, body.collect())
                    .await
                    .map_err(|_elapsed| timeout(&self.socket))?
                    .map_err(connection_failed)?
                    .to_bytes();
                return Err(error_from_answer(status, &method, path, &bytes));
            }
            let mut pending: Vec<u8> = Vec::new();
            loop {
                let frame = tokio::time::timeout(self.timeout, body.frame())
                    .await
                    .map_err(|_elapsed| timeout(&self.socket))?;
                let Some(frame) = frame.transpose().map_err(connection_failed)? else {
                    break;
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                pending.extend_from_slice(&data);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    if !line.iter().all(u8::is_ascii_whitespace) {
                        each_line(serde_json::from_slice(&line).map_err(decode)?);
                    }
                }
            }
            if !pending.iter().all(u8::is_ascii_whitespace) {
                each_line(serde_json::from_slice(&pending).map_err(decode)?);
            }
            Ok(())
        };
        // The connection is driven while the lines are read.
        let (read, _connection) = tokio::join!(read, connection);
        read
    }

    /// Connects, sends `request`, and reads the whole answer.
    async fn exchange(
        &self,
        method: &Method,
        path: &str,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Unreachable {
                    socket: self.socket.clone(),
                    source,
                })?;
        let connection_failed = |source| ClientError::Connection {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(connection_failed)?;
        // The connection future must be polled while the request runs; it ends
        // once `sender` is dropped at the end of `send`.
        let send = async move {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, headers, bytes))
        };
        let (answer, connection_result) = tokio::join!(send, connection);
        match (answer, connection_result) {
            (Ok(answer), _) => Ok(answer),
            // The connection's own error says more than "channel closed".
            (Err(_), Err(source)) | (Err(source), Ok(())) => Err(connection_failed(source)),
        }
    }
}

/// `path` with `query` url-encoded after a `?` (nothing when it is empty).
pub fn with_query<Q: Serialize>(path: &str, query: &Q) -> Result<String, ClientError> {
    let query = serde_urlencoded::to_string(query).map_err(|source| ClientError::Query {
        path: path.to_owned(),
        source,
    })?;
    Ok(if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    })
}

fn build_request<B: Serialize>(
    method: &Method,
    path: &str,
    body: Option<&B>,
) -> Result<Request<Full<Bytes>>, ClientError> {
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::HOST, "localhost")
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("accessctl/", env!("CARGO_PKG_VERSION")),
        );
    let bytes = match body {
        Some(body) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            serde_json::to_vec(body).map_err(|source| ClientError::Encode {
                path: path.to_owned(),
                source,
            })?
        }
        None => Vec::new(),
    };
    builder
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|source| ClientError::BuildRequest {
            method: method.clone(),
            path: path.to_owned(),
            source,
        })
}

fn error_from_answer(status: StatusCode, method: &Method, path: &str, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ApiError>(bytes) {
        Ok(error) => ClientError::Api { status, error },
        Err(_not_an_api_error) => {
            let text = String::from_utf8_lossy(bytes);
            let text = text.trim();
            let body = if text.is_empty() {
                "(empty body)".to_owned()
            } else {
                crate::output::truncate(text, 500)
            };
            ClientError::Status {
                status,
                method: method.clone(),
                path: path.to_owned(),
                body,
            }
        }
    }
}

/// One plain sentence for a socket that could not be connected to, with the
/// likely fix.
fn unreachable_sentence(socket: &Path, source: &io::Error) -> String {
    let hint = match source.kind() {
        io::ErrorKind::PermissionDenied => {
            "Only root and members of the gatehouse-admin group may use it \
             (sudo usermod -aG gatehouse-admin $USER, then log in again)."
        }
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            "Is accessd running? (systemctl status accessd)"
        }
        _ => {
            "Is accessd running, and is this its admin socket? (systemctl status accessd; --socket PATH)"
        }
    };
    format!(
        "accessd is not reachable at {}: {source}. {hint}",
        socket.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Canned, FakeServer};
    use gatehouse_config::api::{ErrorCode, SetGroupsRequest, UserState, UserSummary};

    #[tokio::test]
    async fn missing_socket_is_unreachable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("admin.sock");
        let client = Client::new(&socket);
        let err = client
            .get::<serde_json::Value>("/v1/status")
            .await
            .expect_err("nothing listens there");
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
        assert_eq!(err.exit_code(), 3);
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "accessd is not reachable at {}: ",
                socket.display()
            )),
            "{text}"
        );
        assert!(
            text.contains("Is accessd running? (systemctl status accessd)"),
            "{text}"
        );
    }

    #[test]
    fn permission_denied_points_at_the_admin_group() {
        let source = io::Error::from(io::ErrorKind::PermissionDenied);
        let text = unreachable_sentence(Path::new("/run/gatehouse/admin.sock"), &source);
        assert!(text.contains("gatehouse-admin"), "{text}");
    }

    #[tokio::test]
    async fn api_error_is_decoded_with_its_details() {
        let server = FakeServer::start(vec![Canned::json(
            404,
            r#"{"code":"not_found","message":"no user bob","details":["users: alice"]}"#,
        )])
        .await;
        let client = Client::new(server.socket());
        let err = client
            .get::<serde_json::Value>("/v1/users/bob")
            .await
            .expect_err("404");
        match &err {
            ClientError::Api { status, error } => {
                assert_eq!(*status, StatusCode::NOT_FOUND);
                assert_eq!(error.code, ErrorCode::NotFound);
            }
            other => panic!("expected an API error, got {other:?}"),
        }
        assert_eq!(err.to_string(), "no user bob");
        assert_eq!(err.details(), ["users: alice"]);
        assert_eq!(err.exit_code(), 1);
        let requests = server.requests().await;
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].method, "GET");
        assert_eq!(requests[0].target, "/v1/users/bob");
        assert_eq!(requests[0].header("host"), Some("localhost"));
    }

    #[tokio::test]
    async fn non_json_error_shows_status_and_text() {
        let server = FakeServer::start(vec![Canned::text(502, "bad gateway\n")]).await;
        let err = Client::new(server.socket())
            .get::<serde_json::Value>("/v1/status")
            .await
            .expect_err("502");
        assert!(matches!(err, ClientError::Status { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "accessd answered 502 Bad Gateway to GET /v1/status: bad gateway"
        );
    }

    #[tokio::test]
    async fn json_body_is_sent_and_answer_decoded() {
        let server = FakeServer::start(vec![Canned::json(
            200,
            r#"[{"name":"alice","state":"active","groups":["research"],"devices":1,
                "ssh_keys":2,"expires_at":null,"expired":false,"last_seen":null}]"#,
        )])
        .await;
        let client = Client::new(server.socket());
        let body = SetGroupsRequest {
            groups: vec!["research".into()],
        };
        let reply: Reply<Vec<UserSummary>> = client
            .put("/v1/users/alice/groups", &body)
            .await
            .expect("200");
        assert_eq!(reply.body[0].state, UserState::Active);
        assert_eq!(reply.json[0]["name"], "alice");
        let requests = server.requests().await;
        assert_eq!(requests[0].method, "PUT");
        assert_eq!(requests[0].header("content-type"), Some("application/json"));
        assert_eq!(requests[0].body, r#"{"groups":["research"]}"#);
    }

    #[tokio::test]
    async fn undecodable_success_is_a_decode_error() {
        let server = FakeServer::start(vec![Canned::json(200, r#"{"unexpected":true}"#)]).await;
        let err = Client::new(server.socket())
            .get::<UserSummary>("/v1/users/alice")
            .await
            .expect_err("wrong shape");
        assert!(matches!(err, ClientError::Decode { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_silent_daemon_times_out() {
        let server = FakeServer::start(vec![Canned::Silent]).await;
        let err = Client::new(server.socket())
            .with_timeout(Duration::from_millis(200))
            .get::<serde_json::Value>("/v1/status")
            .await
            .expect_err("no answer");
        assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
        assert_eq!(err.exit_code(), 1);
    }
}
