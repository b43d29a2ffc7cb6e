//! Shared harness for the end-to-end tests in `tests/tests/`: finds the real
//! binaries, starts `accessd` on a temp state dir and socket, runs
//! `accessctl` against it, and cleans up in `Drop` (a failed test leaves no
//! process behind).
//!
//! The binaries come from the same target directory as the test executable
//! (`cargo build --bins` first; `tests/run.sh` does).
//!
//! [`netns`] builds DESIGN.md's network (client, gateway, research subnet, a
//! subnet the user may not reach) in network namespaces for the VPN tests;
//! [`Daemon::start_in`] runs accessd inside one of them. [`ssh`] puts stock
//! OpenSSH (client and sshd) into that network for the SSH jump host tests.
//! [`aws`] runs the moto server, a fake IMDSv2 and a recording proxy in a
//! namespace for the AWS provisioner tests. [`portal`] speaks to the portal
//! over HTTPS; [`browser`] drives it in a headless Chromium. [`postgres`]
//! starts a private PostgreSQL server for the shared store's tests.
//! [`rsyslog`] runs Debian's rsyslog with TLS as the team's syslog receiver.
//! [`packaging`] reads `packaging/` and runs the private host's certificate
//! script as cloud-init installs it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

pub mod audit_fill;
pub mod aws;
pub mod browser;
pub mod ha_lab;
pub mod netns;
pub mod packaging;
pub mod portal;
pub mod ports;
pub mod postgres;
pub mod rsyslog;
pub mod ssh;
pub mod sso;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

/// The sample config shipped in `packaging/`.
pub fn sample_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/gatehouse.toml")
}

/// The sample config as [`Daemon::start`] runs it on the host.
pub fn host_sample_config() -> String {
    let sample = std::fs::read_to_string(sample_config()).unwrap();
    let text = sample
        .replacen("\nenabled = true\n", "\nenabled = false\n", 1)
        .replacen("listen = \"127.0.0.1:9586\"", "listen = \"127.0.0.1:0\"", 1)
        // Several daemons run at once: each SSH jump host on a free port.
        .replacen("listen = \"0.0.0.0:2222\"", "listen = \"127.0.0.1:0\"", 1)
        // ... and each portal too (`accessctl status` tells the bound port).
        .replacen("listen = \"0.0.0.0:443\"", "listen = \"127.0.0.1:0\"", 1);
    assert_ne!(
        text, sample,
        "the sample config changed shape: update host_sample_config"
    );
    text
}

/// Path of one of the workspace's binaries, next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (tests/run.sh does)",
        path.display()
    );
    path
}

/// True when end-to-end prerequisites are mandatory (`GATEHOUSE_E2E=1`).
pub fn e2e_required() -> bool {
    std::env::var("GATEHOUSE_E2E").is_ok_and(|v| v == "1")
}

/// Skips (returns false, printing why) or fails, per `GATEHOUSE_E2E`, when a
/// prerequisite is missing.
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    assert!(!e2e_required(), "GATEHOUSE_E2E=1 but {what}");
    eprintln!("SKIPPED: {what} (set GATEHOUSE_E2E=1 to make this a failure)");
    false
}

/// True when `tool` is on PATH.
pub fn have_tool(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs `cmd` (stdin closed, stdout and stderr captured) and waits at most
/// `timeout` for it; a command still running then is killed and the test
/// fails, so a hung tool cannot hang the test run.
pub fn output_within(mut cmd: Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    // Drain both pipes while waiting, so a chatty command cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A running `accessd` with its own state dir, socket and config file.
pub struct Daemon {
    pub dir: TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// The network namespace it runs in (`None`: the test's own).
    netns: Option<String>,
    /// Extra environment for the accessd process (e.g. AWS credentials).
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts accessd with the sample config.
    /// Starts accessd with the sample config, minus what would clash between
    /// tests running at once on the host: the WireGuard data plane (a TUN
    /// device and UDP port) is off, and metrics take an ephemeral port.
    pub fn start() -> Self {
        Self::start_with(&host_sample_config())
    }

    /// Starts accessd with this config text (state dir and socket are
    /// overridden to live in a temp dir).
    pub fn start_with(config_text: &str) -> Self {
        Self::start_in(None, config_text)
    }

    /// Like [`Daemon::start_with`], inside the network namespace `netns`
    /// (`ip netns exec`, which execs: the child is accessd itself, so
    /// [`Daemon::stop`] signals accessd). The admin socket is a path, so
    /// accessctl reaches it from any namespace.
    pub fn start_in(netns: Option<&str>, config_text: &str) -> Self {
        Self::start_in_with_env(netns, config_text, &[])
    }

    /// Like [`Daemon::start_in`], with extra environment variables for accessd.
    pub fn start_in_with_env(netns: Option<&str>, config_text: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gatehouse.toml");
        std::fs::write(&config, config_text).unwrap();
        let mut daemon = Daemon {
            socket: dir.path().join("admin.sock"),
            state_dir: dir.path().join("state"),
            log: dir.path().join("accessd.log"),
            config,
            dir,
            netns: netns.map(str::to_owned),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            child: None,
        };
        daemon.spawn();
        daemon
    }

    /// (Re)starts the process on the same state.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(bin("accessd"));
                cmd
            }
            None => Command::new(bin("accessd")),
        };
        let child = cmd
            .arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--admin-socket")
            .arg(&self.socket)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "accessd exited during start-up ({status}):\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "accessd did not open its admin socket in time:\n{}",
            self.log_text()
        );
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        kill(pid, Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "accessd did not stop within 20 s of SIGTERM:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process at once (SIGKILL, as a crashed instance) and reaps
    /// it; [`Daemon::spawn`] starts it again on the same state.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends a signal to the running daemon.
    pub fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("running");
        kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), signal).unwrap();
    }

    /// Runs accessctl against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("accessctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs accessctl and asserts success; returns stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "accessctl {args:?} failed ({}):\n{}{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    /// Runs accessctl with `--json` and parses its output.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ctl_ok(&all)).unwrap()
    }

    /// `accessctl --json audit <args>`: one record per line, parsed, oldest
    /// first.
    pub fn audit_json(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut all = vec!["--json", "audit"];
        all.extend_from_slice(args);
        self.ctl_ok(&all)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
            .collect()
    }

    /// The records of `kind` and its sub-kinds (`ssh` holds `ssh.auth.fail`),
    /// oldest first: exactly what `accessctl audit --kind` selects.
    pub fn audit_of(&self, kind: &str) -> Vec<serde_json::Value> {
        let records = self.audit_json(&["--kind", kind]);
        // Without --limit accessd answers with its largest page, the newest
        // records; a full page may have dropped older ones, so say so.
        assert!(
            records.len() < AUDIT_PAGE_MAX,
            "{kind}: {} records, a full page: older ones may be cut off",
            records.len()
        );
        records
    }

    /// The records of exactly `kind`, not its sub-kinds (`aws.change`
    /// without `aws.change.fail`), oldest first.
    pub fn audit_of_exactly(&self, kind: &str) -> Vec<serde_json::Value> {
        let mut records = self.audit_of(kind);
        records.retain(|r| r["kind"] == kind);
        records
    }

    /// Replaces the config file (for the next start, or a reload).
    pub fn write_config(&self, config_text: &str) {
        std::fs::write(&self.config, config_text).unwrap();
    }

    /// The process id while it runs (for CPU and memory readings).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The network namespace accessd runs in, if not the test's own.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("gatehouse.db")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `accessd <args>` on this daemon's config, state dir and socket,
    /// with the daemon stopped (a refused start, `restore`,
    /// `audit-anchor`), and waits at most 30 s for it.
    pub fn offline(&self, args: &[&std::ffi::OsStr]) -> Output {
        let mut cmd = Command::new(bin("accessd"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--admin-socket")
            .arg(&self.socket)
            .args(args);
        output_within(cmd, Duration::from_secs(30))
    }

    /// The last `lines` lines of accessd's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_text(), lines)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last `lines` lines of `text`.
/// `gw`'s HA role as `accessctl ha status` says it (`?` when it says none).
pub fn ha_role(gw: &Daemon) -> String {
    gw.ctl_json(&["ha", "status"])["role"]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh ed25519 public key line from ssh-keygen, when it is installed.
pub fn ssh_public_key(dir: &Path, name: &str) -> Option<String> {
    let path = dir.join(name);
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .ok()?;
    made.success()
        .then(|| std::fs::read_to_string(path.with_extension("pub")).ok())
        .flatten()
}

/// The most records one audit query returns, and what it returns without
/// `--limit` (`AUDIT_PAGE_MAX` in daemon/src/admin/system.rs).
const AUDIT_PAGE_MAX: usize = 10_000;
