//! Test fixtures: a fake accessd that answers canned HTTP responses on a Unix
//! socket in a temp dir and records what it was sent.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// One answer of the fake server, for one connection.
#[derive(Debug, Clone)]
pub enum Canned {
    Answer {
        status: u16,
        content_type: &'static str,
        body: String,
    },
    /// Read the request, never answer (for timeouts).
    Silent,
}

impl Canned {
    pub fn json(status: u16, body: &str) -> Self {
        Self::Answer {
            status,
            content_type: "application/json",
            body: body.to_owned(),
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Self::Answer {
            status,
            content_type: "text/plain",
            body: body.to_owned(),
        }
    }
}

/// A request as the fake server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct FakeServer {
    socket: PathBuf,
    task: JoinHandle<Vec<Recorded>>,
    _dir: tempfile::TempDir,
}

impl FakeServer {
    /// Binds a socket in a fresh temp dir and serves `answers`, one connection each.
    pub async fn start(answers: Vec<Canned>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("admin.sock");
        let listener = UnixListener::bind(&socket).expect("bind the fake admin socket");
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for answer in answers {
                let (mut stream, _) = listener.accept().await.expect("accept");
                seen.push(read_request(&mut stream).await);
                match answer {
                    Canned::Answer {
                        status,
                        content_type,
                        body,
                    } => {
                        let head = format!(
                            "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n",
                            reason(status),
                            body.len()
                        );
                        stream.write_all(head.as_bytes()).await.expect("write head");
                        stream.write_all(body.as_bytes()).await.expect("write body");
                        stream.shutdown().await.expect("shutdown");
                    }
                    Canned::Silent => {
                        // Hold the connection open until the client gives up.
                        let mut rest = Vec::new();
                        let _ = stream.read_to_end(&mut rest).await;
                    }
                }
            }
            seen
        });
        Self {
            socket,
            task,
            _dir: dir,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Waits until every canned answer was served; returns the requests.
    pub async fn requests(self) -> Vec<Recorded> {
        self.task.await.expect("fake server task")
    }
}

async fn read_request(stream: &mut UnixStream) -> Recorded {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.expect("read request");
        assert!(n > 0, "client closed before the end of the headers");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).expect("utf-8 head");
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().expect("content-length"))
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.expect("read body");
        assert!(n > 0, "client closed before the end of the body");
        body.extend_from_slice(&chunk[..n]);
    }
    Recorded {
        method,
        target,
        headers,
        body: String::from_utf8(body).expect("utf-8 body"),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        _ => "Whatever",
    }
}
