//! Stock OpenSSH on both sides of the SSH jump host tests: OpenSSH's sshd as
//! the private hosts (and, where a test needs something to protect, on the
//! gateway itself), the OpenSSH client as the team member, all inside a
//! [`Topology`].
//!
//! - [`SshLab::new`] checks the tools (`ssh`, `scp`, `ssh-keygen`, `sshd`)
//!   and makes a directory in the topology's temp dir for keys, configs, a
//!   shared `known_hosts` and the targets' `authorized_keys`.
//! - [`SshLab::start_sshd`] runs a test-only sshd in one namespace: its own
//!   host key, no PAM, `root` may log in with a key listed in the lab's
//!   `authorized_keys`, nothing else (no passwords, no forwarding).
//! - [`SshLab::identity`] makes a user's key pair and the client config file
//!   every command of that user runs with (`ssh -F`): OpenSSH's `-J` passes
//!   `-F` on to the jump hop, but not `-o`, so the options live in the file.
//!   Its public key is also authorized on the targets, so a refusal can only
//!   come from the jump host.
//! - [`SshLab::ssh`] / [`SshLab::scp`] run the client under coreutils'
//!   `timeout`, so a hang is a result ([`SshRun::timed_out`]) rather than a
//!   stuck test.
//! - [`wait_audit`] polls accessd's audit log ([`Daemon::audit_of`]) for a record.
//!
//! Every process is started through [`Topology::spawn`], so the topology's
//! `Drop` stops it; files live in the topology's temp dir.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::netns::{Host, Topology};
use crate::{Daemon, have_tool, output_within, require, stderr, stdout};

/// The port the SSH broker listens on in the tests (`ssh.listen` 0.0.0.0:2222).
pub const BROKER_PORT: u16 = 2222;

/// Headroom given to `output_within` beyond the `timeout` the client runs under.
const RUN_SLACK: Duration = Duration::from_secs(15);

/// True (and the tools exist) or a skip/failure per `GATEHOUSE_E2E`: the
/// OpenSSH client tools and sshd (Debian `openssh-client`, `openssh-server`).
pub fn prerequisites() -> bool {
    [
        ("ssh", "openssh-client"),
        ("scp", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
        ("ssh-agent", "openssh-client"),
        ("timeout", "coreutils"),
        ("bash", "bash"),
    ]
    .iter()
    .all(|(tool, package)| {
        require(
            have_tool(tool),
            &format!("{tool} is not installed (Debian package {package})"),
        )
    }) && require(
        sshd_path().is_some(),
        "sshd is not installed (Debian package openssh-server)",
    )
}

/// The venv's python with paramiko (PyPI, as tests/run.sh installs it into
/// `GATEHOUSE_PARAMIKO_VENV`), or a skip/failure per `GATEHOUSE_E2E`.
pub fn paramiko_python() -> Option<PathBuf> {
    let venv = std::env::var_os("GATEHOUSE_PARAMIKO_VENV").map_or_else(
        || PathBuf::from("/var/tmp/gatehouse-paramiko-venv"),
        PathBuf::from,
    );
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import paramiko"])
        .output()
        .is_ok_and(|out| out.status.success());
    require(
        ok,
        &format!(
            "paramiko is not installed in {} (tests/run.sh installs it)",
            venv.display()
        ),
    )
    .then_some(python)
}

/// sshd's absolute path (it re-executes itself, so it must be started by one).
pub fn sshd_path() -> Option<PathBuf> {
    let usual = Path::new("/usr/sbin/sshd");
    if usual.exists() {
        return Some(usual.to_owned());
    }
    let out = Command::new("sh")
        .args(["-c", "command -v sshd"])
        .output()
        .ok()?;
    let path = stdout(&out).trim().to_owned();
    (out.status.success() && path.starts_with('/')).then(|| PathBuf::from(path))
}

/// OpenSSH around one [`Topology`]: keys, client configs, sshd instances.
pub struct SshLab<'t> {
    topo: &'t Topology,
    dir: PathBuf,
    known_hosts: PathBuf,
    authorized_keys: PathBuf,
    sshd: PathBuf,
}

/// A user's key pair and the client config (`ssh -F`) that uses it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    /// The private key file.
    pub key: PathBuf,
    /// The `.pub` file, for `accessctl user add --ssh-key`.
    pub public_key_file: PathBuf,
    /// The public key line (`ssh-ed25519 AAAA... name`).
    pub public_key: String,
    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    /// The client config file every command of this identity runs with.
    pub config: PathBuf,
}

/// What one bounded `ssh`/`scp` run did.
#[derive(Debug)]
pub struct SshRun {
    pub argv: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl SshRun {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// coreutils' `timeout` stopped it (exit 124, or 137 after `-k`).
    pub fn timed_out(&self) -> bool {
        matches!(self.status.code(), Some(124 | 137))
    }

    /// stdout and stderr together, for assertions on messages.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for SshRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}: {} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.argv, self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

impl<'t> SshLab<'t> {
    /// The lab for `topo`, or `None` (printed `SKIPPED`, or a failure under
    /// `GATEHOUSE_E2E=1`) when a tool is missing.
    pub fn new(topo: &'t Topology) -> Option<Self> {
        if !prerequisites() {
            return None;
        }
        let dir = topo.dir().join("ssh");
        std::fs::create_dir_all(&dir).unwrap();
        // sshd insists on its privilege separation directory (Debian's
        // init script makes it; nothing here runs that).
        if !Path::new("/run/sshd").exists() {
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let lab = SshLab {
            known_hosts: dir.join("known_hosts"),
            authorized_keys: dir.join("authorized_keys"),
            sshd: sshd_path().unwrap(),
            topo,
            dir,
        };
        std::fs::write(&lab.known_hosts, "").unwrap();
        std::fs::write(&lab.authorized_keys, "").unwrap();
        Some(lab)
    }

    pub fn topo(&self) -> &'t Topology {
        self.topo
    }

    /// The lab's directory (inside the topology's temp dir).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The gateway's public address, where the broker listens.
    pub fn gateway(&self) -> String {
        self.topo.addr(Host::Gateway).to_string()
    }

    /// `user@<gateway>:2222`, the argument of `ssh -J`.
    pub fn jump(&self, user: &str) -> String {
        format!("{user}@{}:{BROKER_PORT}", self.gateway())
    }

    /// [`Topology::gateway_config`] with the broker listening on every
    /// address of the gateway namespace (port 2222) and `ssh_lines` added to
    /// its `[ssh]` table (e.g. `connect_timeout = "5s"`).
    pub fn broker_config(&self, ssh_lines: &str) -> String {
        let config = self.topo.gateway_config(crate::netns::POOL, "");
        let from = "[ssh]\nlisten = \"127.0.0.1:2222\"\n";
        assert!(
            config.contains(from),
            "gateway_config changed shape: update SshLab::broker_config"
        );
        config.replacen(
            from,
            &format!("[ssh]\nlisten = \"0.0.0.0:{BROKER_PORT}\"\n{ssh_lines}\n"),
            1,
        )
    }

    /// Starts accessd in the gateway namespace with `config` and waits until
    /// the broker accepts TCP connections on the gateway's public address.
    /// The probe comes from the gateway namespace itself, so an empty
    /// connection never counts against a client address's pre-auth limits.
    pub fn start_broker(&self, config: &str) -> Daemon {
        let daemon = self.topo.start_gateway(config);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.topo.tcp_open(
            Host::Gateway,
            &self.gateway(),
            BROKER_PORT,
            Duration::from_secs(1),
        ) {
            assert!(
                Instant::now() < deadline,
                "the SSH broker does not accept on {}:{BROKER_PORT} within 10 s of start:\n{}",
                self.gateway(),
                daemon.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    /// Runs a test-only OpenSSH sshd in `host`'s namespace on `bind`:`port`
    /// and waits until it accepts. Root logs in with any key in the lab's
    /// `authorized_keys` (every [`SshLab::identity`]); no PAM, passwords or
    /// forwarding. Returns its pid (stopped with the topology).
    pub fn start_sshd(&self, host: Host, bind: &str, port: u16) -> u32 {
        self.start_sshd_with(host, bind, port, "")
    }

    /// Like [`SshLab::start_sshd`], with `options` (sshd_config lines) taking
    /// precedence over the test defaults, e.g. `AllowTcpForwarding yes` for
    /// OpenSSH as the jump host.
    pub fn start_sshd_with(&self, host: Host, bind: &str, port: u16, options: &str) -> u32 {
        let name = format!("sshd-{host:?}-{port}").to_lowercase();
        let host_key = self.host_key(&name);
        self.start_named_sshd(&name, host, bind, port, &host_key, options)
    }

    /// A fresh ed25519 host key for the sshd `name`, made once (the
    /// `.pub` beside it, e.g. for a host certificate before it starts).
    pub fn host_key(&self, name: &str) -> PathBuf {
        let host_key = self.dir.join(format!("{name}-host_ed25519"));
        if !host_key.exists() {
            new_key(&host_key, name);
        }
        host_key
    }

    /// Like [`SshLab::start_sshd_with`], for several sshds of one host and
    /// port (on different addresses): `name` names its log
    /// ([`SshLab::named_sshd_log`]), and it serves `host_key`.
    pub fn start_named_sshd(
        &self,
        name: &str,
        host: Host,
        bind: &str,
        port: u16,
        host_key: &Path,
        options: &str,
    ) -> u32 {
        let config = self.dir.join(format!("{name}.conf"));
        std::fs::write(
            &config,
            format!(
                // sshd takes the first value it reads for an option.
                "{options}\n\
                 Port {port}\n\
                 ListenAddress {bind}\n\
                 HostKey {host_key}\n\
                 PidFile none\n\
                 AuthorizedKeysFile {authorized}\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 UseDNS no\n\
                 AllowTcpForwarding no\n\
                 AllowAgentForwarding no\n\
                 X11Forwarding no\n\
                 PrintMotd no\n\
                 PrintLastLog no\n\
                 MaxStartups 200:30:300\n\
                 MaxSessions 200\n\
                 Subsystem sftp internal-sftp\n\
                 LogLevel VERBOSE\n",
                host_key = host_key.display(),
                authorized = self.authorized_keys.display(),
            ),
        )
        .unwrap();
        let sshd = self.sshd.to_str().unwrap();
        let conf = config.to_str().unwrap();
        let pid = self.topo.spawn(host, name, &[sshd, "-D", "-e", "-f", conf]);
        let probe = if bind == "0.0.0.0" { "127.0.0.1" } else { bind };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self
            .topo
            .tcp_open(host, probe, port, Duration::from_secs(1))
        {
            if let Some(status) = self.topo.exited(pid) {
                panic!(
                    "sshd in {} exited ({status}):\n{}",
                    self.topo.ns(host),
                    self.topo.process_log(name)
                );
            }
            assert!(
                Instant::now() < deadline,
                "sshd in {} does not accept on {probe}:{port} within 10 s:\n{}",
                self.topo.ns(host),
                self.topo.process_log(name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pid
    }

    /// sshd on port 22 of the research (10.0.3.140) and private2 (10.0.4.10) hosts.
    pub fn start_targets(&self) {
        for host in [Host::Research, Host::Private2] {
            self.start_sshd(host, &self.topo.addr(host).to_string(), 22);
        }
    }

    /// What a test-only sshd started as (`host`, `port`) has logged so far.
    pub fn sshd_log(&self, host: Host, port: u16) -> String {
        self.named_sshd_log(&format!("sshd-{host:?}-{port}").to_lowercase())
    }

    /// What the sshd started as `name` has logged so far.
    pub fn named_sshd_log(&self, name: &str) -> String {
        self.topo.process_log(name)
    }

    /// A fresh ed25519 key pair for `name`, authorized for root on every
    /// test sshd, with its client config file (see the module doc).
    pub fn identity(&self, name: &str) -> Identity {
        self.identity_with(name, "")
    }

    /// Like [`SshLab::identity`], with `extra` lines (`Option value`) added
    /// to its client config, e.g. `Ciphers aes128-gcm@openssh.com`.
    pub fn identity_with(&self, name: &str, extra: &str) -> Identity {
        self.make_identity(name, extra, true)
    }

    /// Like [`SshLab::identity`], but the key is authorized nowhere: the
    /// stranger of the refusal tests.
    pub fn identity_unauthorized(&self, name: &str) -> Identity {
        self.make_identity(name, "", false)
    }

    fn make_identity(&self, name: &str, extra: &str, authorize: bool) -> Identity {
        let key = self.dir.join(format!("id-{name}"));
        new_key(&key, name);
        let public_key_file = key.with_extension("pub");
        let public_key = std::fs::read_to_string(&public_key_file)
            .unwrap()
            .trim()
            .to_owned();
        if authorize {
            let mut authorized = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.authorized_keys)
                .unwrap();
            std::io::Write::write_all(&mut authorized, format!("{public_key}\n").as_bytes())
                .unwrap();
        }
        let mut cmd = Command::new("ssh-keygen");
        cmd.arg("-lf").arg(&public_key_file);
        let listed = stdout(&output_within(cmd, Duration::from_secs(10)));
        let fingerprint = listed
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("ssh-keygen -lf printed {listed:?}"))
            .to_owned();
        let config = self.dir.join(format!("{name}.ssh_config"));
        let extra: String = extra
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("  {}\n", l.trim()))
            .collect();
        std::fs::write(
            &config,
            format!(
                "Host *\n\
                 \x20 IdentityFile {key}\n\
                 \x20 IdentitiesOnly yes\n\
                 \x20 IdentityAgent none\n\
                 \x20 BatchMode yes\n\
                 \x20 StrictHostKeyChecking accept-new\n\
                 \x20 UserKnownHostsFile {known_hosts}\n\
                 \x20 GlobalKnownHostsFile /dev/null\n\
                 \x20 UpdateHostKeys no\n\
                 \x20 ConnectTimeout 10\n\
                 \x20 ControlMaster no\n\
                 \x20 ControlPath none\n\
                 \x20 LogLevel ERROR\n\
                 {extra}",
                key = key.display(),
                known_hosts = self.known_hosts.display(),
            ),
        )
        .unwrap();
        Identity {
            name: name.to_owned(),
            key,
            public_key_file,
            public_key,
            fingerprint,
            config,
        }
    }

    /// `ssh -F <identity's config> <args>` in `host`'s namespace, stopped by
    /// coreutils' `timeout` after `limit`.
    pub fn ssh(&self, host: Host, id: &Identity, args: &[&str], limit: Duration) -> SshRun {
        self.run(host, "ssh", id, args, limit, &[])
    }

    /// Like [`SshLab::ssh`], with `env` added to the client's environment
    /// (e.g. `SSH_ASKPASS`, which the jump hop's ssh inherits).
    pub fn ssh_env(
        &self,
        host: Host,
        id: &Identity,
        args: &[&str],
        limit: Duration,
        env: &[(&str, &str)],
    ) -> SshRun {
        self.run(host, "ssh", id, args, limit, env)
    }

    /// `scp -F <identity's config> <args>` (scp passes `-F` on to ssh, and
    /// ssh to the jump hop), bounded like [`SshLab::ssh`].
    pub fn scp(&self, host: Host, id: &Identity, args: &[&str], limit: Duration) -> SshRun {
        self.run(host, "scp", id, args, limit, &[])
    }

    /// The argv of `ssh -F <config> <args>` under `timeout`, for
    /// [`Topology::spawn`] (a background session).
    pub fn ssh_argv(&self, id: &Identity, args: &[&str], limit: Duration) -> Vec<String> {
        let mut argv = vec![
            "timeout".to_owned(),
            "-k".to_owned(),
            "2".to_owned(),
            format!("{:.1}", limit.as_secs_f64()),
            "ssh".to_owned(),
            "-F".to_owned(),
            id.config.display().to_string(),
        ];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        argv
    }

    fn run(
        &self,
        host: Host,
        tool: &str,
        id: &Identity,
        args: &[&str],
        limit: Duration,
        env: &[(&str, &str)],
    ) -> SshRun {
        let mut argv = self.ssh_argv(id, args, limit);
        argv[4] = tool.to_owned();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.topo.ns(host)])
            .args(&argv)
            .envs(env.iter().copied());
        let started = Instant::now();
        let out = output_within(cmd, limit + RUN_SLACK);
        SshRun {
            argv,
            status: out.status,
            stdout: stdout(&out),
            stderr: stderr(&out),
            elapsed: started.elapsed(),
        }
    }
}

/// Polls [`Daemon::audit_of`] until a record of `kind` satisfies `found`, for at most
/// `within`; Err carries every record of that kind seen last.
pub fn wait_audit(
    daemon: &Daemon,
    kind: &str,
    within: Duration,
    found: impl Fn(&Value) -> bool,
) -> Result<Value, Vec<Value>> {
    let deadline = Instant::now() + within;
    loop {
        let records = daemon.audit_of(kind);
        if let Some(record) = records.iter().find(|r| found(r)) {
            return Ok(record.clone());
        }
        if Instant::now() >= deadline {
            return Err(records);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every non-negative integer in `detail` under a key that names bytes
/// (`bytes_in`, `rx_bytes`, `bytes: {up, down}`, ...), with its dotted path.
pub fn byte_counts(detail: &Value) -> Vec<(String, u64)> {
    fn walk(value: &Value, path: &str, in_bytes: bool, out: &mut Vec<(String, u64)>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    let here = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(
                        v,
                        &here,
                        in_bytes || key.to_lowercase().contains("bytes"),
                        out,
                    );
                }
            }
            Value::Number(n) if in_bytes => {
                if let Some(n) = n.as_u64() {
                    out.push((path.to_owned(), n));
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(detail, "", false, &mut out);
    out
}

/// Bytes that look random (xorshift64*), so compression cannot shrink a
/// transfer and a swapped or truncated block changes the checksum.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `ssh-keygen -t ed25519` without a passphrase into `path` (+ `.pub`).
pub fn new_key(path: &Path, comment: &str) {
    let mut cmd = Command::new("ssh-keygen");
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path);
    let out = output_within(cmd, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "ssh-keygen -f {} failed: {}",
        path.display(),
        stderr(&out)
    );
}
