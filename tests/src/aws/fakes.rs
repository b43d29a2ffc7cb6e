//! Small HTTP servers the AWS tests put around the real moto server: a fake
//! IMDSv2 endpoint ([`FakeImds`]: token first, with the TTL header the SDK
//! requires) and a recording, fault-injecting proxy in front of moto
//! ([`AwsProxy`]: denies or throttles chosen actions, holds one call until
//! released, counts every call).
//! Plain threads on std sockets; each listener can be bound inside a
//! network namespace. Requests are bounded in size; every server stops in `Drop`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::in_netns;

/// The largest request body the fakes accept (AWS calls here are small).
const MAX_BODY: usize = 1 << 20;

/// One parsed HTTP/1.1 request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `ec2:Action` (query protocol), `ssm:Action` (JSON protocol) or
    /// `s3:PutObject` (REST: the only S3 call accessd makes is a PUT).
    pub fn aws_action(&self) -> String {
        if let Some(target) = self.header("x-amz-target") {
            let action = target.rsplit('.').next().unwrap_or(target);
            return format!("ssm:{action}");
        }
        if self.method == "PUT" {
            return "s3:PutObject".to_string();
        }
        let body = String::from_utf8_lossy(&self.body);
        body.split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .map_or_else(
                || format!("?:{} {}", self.method, self.path),
                |a| format!("ec2:{a}"),
            )
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if len > MAX_BODY {
        return None;
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A listener thread that hands each request to `handle`; stops in `Drop`.
struct Server {
    addr: SocketAddr,
    netns: Option<String>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(
        netns: Option<&str>,
        handle: impl Fn(&Request) -> Vec<u8> + Send + Sync + 'static,
    ) -> Self {
        let listener = match netns {
            Some(ns) => in_netns(ns, || TcpListener::bind("127.0.0.1:0")),
            None => TcpListener::bind("127.0.0.1:0"),
        }
        .expect("bind a fake AWS endpoint");
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = Arc::new(handle);
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let handle = handle.clone();
                let stopping = stopping.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    let Ok(mut writer) = stream.try_clone() else {
                        return;
                    };
                    let mut reader = BufReader::new(stream);
                    while let Some(request) = read_request(&mut reader) {
                        if stopping.load(Ordering::SeqCst) {
                            break;
                        }
                        if writer.write_all(&handle(&request)).is_err() {
                            break;
                        }
                    }
                    let _ = writer.shutdown(Shutdown::Both);
                });
            }
        });
        Self {
            addr,
            netns: netns.map(str::to_string),
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop from the listener's namespace; if that is
        // gone already, the thread is left to end with the process.
        let addr = self.addr;
        let wake = || TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok();
        let woken = match &self.netns {
            Some(ns) => std::path::Path::new("/run/netns").join(ns).exists() && in_netns(ns, wake),
            None => wake(),
        };
        if woken && let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A fake instance metadata service speaking IMDSv2.
pub struct FakeImds {
    server: Server,
    state: Arc<Mutex<ImdsState>>,
}

#[derive(Default)]
struct ImdsState {
    values: HashMap<String, String>,
    requests: u64,
}

const TOKEN: &str = "gatehouse-test-imds-token";

impl FakeImds {
    pub fn start(netns: Option<&str>) -> Self {
        let state = Arc::new(Mutex::new(ImdsState::default()));
        let shared = state.clone();
        let server = Server::start(netns, move |req| {
            let mut state = shared.lock().unwrap_or_else(PoisonError::into_inner);
            state.requests += 1;
            if req.method == "PUT" && req.path == "/latest/api/token" {
                let Some(ttl) = req.header("x-aws-ec2-metadata-token-ttl-seconds") else {
                    return response(400, &[], b"missing TTL header");
                };
                let ttl = ttl.to_string();
                return response(
                    200,
                    &[("x-aws-ec2-metadata-token-ttl-seconds", &ttl)],
                    TOKEN.as_bytes(),
                );
            }
            if req.header("x-aws-ec2-metadata-token") != Some(TOKEN) {
                // IMDSv1 (no token) is refused, as on a hardened instance.
                return response(401, &[], b"");
            }
            match state.values.get(&req.path) {
                Some(value) => response(200, &[], value.as_bytes()),
                None => response(404, &[], b"not found"),
            }
        });
        Self { server, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Serves `value` at `/latest/meta-data/<path>`.
    pub fn set(&self, path: &str, value: &str) {
        self.lock()
            .values
            .insert(format!("/latest/meta-data/{path}"), value.to_string());
    }

    /// Serves `value` at `/latest/dynamic/<path>`, e.g.
    /// `instance-identity/document` for a host joining by instance identity.
    pub fn set_dynamic(&self, path: &str, value: &str) {
        self.lock()
            .values
            .insert(format!("/latest/dynamic/{path}"), value.to_string());
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ImdsState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A proxy in front of moto that records every AWS action and can deny or
/// throttle chosen ones, answering exactly as AWS would, or hold one call
/// and pass it on only when released ([`AwsProxy::hold`]): a request that
/// reaches AWS late, after its sender gave up on it.
pub struct AwsProxy {
    server: Server,
    state: Arc<Mutex<ProxyState>>,
    gate: Arc<Gate>,
}

/// The longest a held call waits for [`AwsProxy::release`] (then it passes).
const MAX_HOLD: Duration = Duration::from_secs(300);

/// The one call [`AwsProxy::hold`] holds back.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    /// The action whose next call is held.
    armed: Option<String>,
    /// A call is held now.
    holding: bool,
    open: bool,
}

impl Gate {
    /// Returns at once, or once released when `action` is the armed one.
    fn pass(&self, action: &str) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.armed.as_deref() != Some(action) {
            return;
        }
        state.armed = None;
        state.holding = true;
        self.changed.notify_all();
        let (mut state, _) = self
            .changed
            .wait_timeout_while(state, MAX_HOLD, |s| !s.open)
            .unwrap_or_else(PoisonError::into_inner);
        state.holding = false;
        self.changed.notify_all();
    }
}

#[derive(Default)]
struct ProxyState {
    seen: Vec<String>,
    deny: HashSet<String>,
    throttle: HashMap<String, u32>,
}

impl AwsProxy {
    /// `upstream`: moto's address (in the same namespace); `None` records
    /// only and answers every request with an error.
    pub fn start(netns: Option<&str>, upstream: Option<SocketAddr>) -> Self {
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = state.clone();
        let gate = Arc::new(Gate::default());
        let gated = gate.clone();
        let ns = netns.map(str::to_string);
        let server = Server::start(netns, move |req| {
            let action = req.aws_action();
            let (denied, throttled) = {
                let mut state = shared.lock().unwrap_or_else(PoisonError::into_inner);
                state.seen.push(action.clone());
                let denied = state.deny.contains(&action);
                let throttled = match state.throttle.get_mut(&action) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        true
                    }
                    _ => false,
                };
                (denied, throttled)
            };
            if denied {
                return aws_error(
                    &action,
                    403,
                    "UnauthorizedOperation",
                    "AccessDeniedException",
                    "You are not authorized to perform this operation.",
                );
            }
            if throttled {
                return aws_error(
                    &action,
                    503,
                    "RequestLimitExceeded",
                    "ThrottlingException",
                    "Request limit exceeded.",
                );
            }
            gated.pass(&action);
            match upstream {
                Some(addr) => forward(ns.as_deref(), addr, req),
                None => response(500, &[], b"recording proxy: no upstream"),
            }
        });
        Self {
            server,
            state,
            gate,
        }
    }

    /// Holds the next call of `action` (e.g. `ec2:AssociateAddress`) until
    /// [`AwsProxy::release`]; then it goes to moto, whether or not its
    /// sender still waits for the answer.
    pub fn hold(&self, action: &str) {
        let mut gate = self.gate_state();
        gate.armed = Some(action.to_string());
        gate.open = false;
    }

    /// Waits (at most `limit`) until a call is held; false if none came.
    pub fn wait_holding(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut gate = self.gate_state();
        while !gate.holding {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            gate = self
                .gate
                .changed
                .wait_timeout(gate, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Lets the held call (if any) go on to moto, and waits until it left
    /// the gate.
    pub fn release(&self) {
        let mut gate = self.gate_state();
        gate.armed = None;
        gate.open = true;
        self.gate.changed.notify_all();
        let deadline = Instant::now() + Duration::from_secs(10);
        while gate.holding && Instant::now() < deadline {
            gate = self
                .gate
                .changed
                .wait_timeout(gate, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn gate_state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.gate
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Answers `action` (e.g. `ec2:CreateRoute`) with an access denial.
    pub fn deny(&self, action: &str) {
        self.lock().deny.insert(action.to_string());
    }

    /// Lifts every denial.
    pub fn allow_all(&self) {
        self.lock().deny.clear();
    }

    /// Answers the next `times` calls of `action` with throttling errors.
    pub fn throttle(&self, action: &str, times: u32) {
        self.lock().throttle.insert(action.to_string(), times);
    }

    /// Every action seen, in order.
    pub fn seen(&self) -> Vec<String> {
        self.lock().seen.clone()
    }

    pub fn count(&self, action: &str) -> usize {
        self.lock().seen.iter().filter(|a| *a == action).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for AwsProxy {
    fn drop(&mut self) {
        // A held call must not keep its thread (and the server's) waiting.
        let mut gate = self.gate_state();
        gate.open = true;
        self.gate.changed.notify_all();
    }
}

/// An error body as the service of `action` sends it.
fn aws_error(action: &str, status: u16, ec2_code: &str, ssm_code: &str, message: &str) -> Vec<u8> {
    if action.starts_with("ssm:") {
        let body = format!(r#"{{"__type":"{ssm_code}","message":"{message}"}}"#);
        return response(
            400,
            &[("content-type", "application/x-amz-json-1.1")],
            body.as_bytes(),
        );
    }
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{ec2_code}</Code><Message>{message}</Message></Error></Errors><RequestID>gatehouse-test</RequestID></Response>"#
    );
    response(status, &[("content-type", "text/xml")], body.as_bytes())
}

/// Sends `req` to moto on a fresh connection and returns its whole answer.
fn forward(netns: Option<&str>, upstream: SocketAddr, req: &Request) -> Vec<u8> {
    let connect = || TcpStream::connect_timeout(&upstream, Duration::from_secs(5));
    let stream = match netns {
        Some(ns) => in_netns(ns, connect),
        None => connect(),
    };
    let Ok(mut stream) = stream else {
        return response(502, &[], b"moto unreachable");
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    for (k, v) in &req.headers {
        if !k.eq_ignore_ascii_case("connection") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("connection: close\r\n\r\n");
    if stream.write_all(head.as_bytes()).is_err() || stream.write_all(&req.body).is_err() {
        return response(502, &[], b"moto write failed");
    }
    let mut reader = BufReader::new(stream);
    // Re-frame moto's answer with a content-length and no `connection: close`,
    // so the client's connection to the proxy stays usable.
    let mut status_line = String::new();
    if reader.read_line(&mut status_line).is_err() {
        return response(502, &[], b"moto read failed");
    }
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(502);
    let mut headers = Vec::new();
    let mut chunked = false;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            break;
        }
        let h = h.trim_end().to_string();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
                continue;
            }
            if k == "content-length" || k == "connection" {
                continue;
            }
            headers.push((k, v.trim().to_string()));
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            if reader.read_line(&mut size).unwrap_or(0) == 0 {
                break;
            }
            let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
                break;
            };
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            if reader.read_exact(&mut chunk).is_err() {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        let _ = reader.read_to_end(&mut body);
    }
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    response(status, &refs, &body)
}
