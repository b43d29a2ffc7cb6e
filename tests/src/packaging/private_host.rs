//! The fixture of the host certificate tests: a private host in a temp
//! dir, the script of `cloud-init-private-host.yaml` run on it as shipped,
//! and its sshd reached by a member's ssh.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{have_tool, output_within, require, stderr, stdout};

/// The cloud-init fragment of `packaging/` that writes the script.
pub const FRAGMENT: &str = "cloud-init-private-host.yaml";
/// Where the fragment installs the script.
pub const SCRIPT: &str = "/usr/local/sbin/gatehouse-host-cert";
/// The names the test certificates are for, as the README's example signs them.
pub const PRINCIPALS: &str = "10.0.3.140,jupyter.internal";
/// The `REGION=` of the config file [`PrivateHost::run`] writes.
pub const REGION: &str = "eu-west-3";

/// A private host in a temp dir: its ed25519 host key in `ssh/` (the
/// script's `GATEHOUSE_SSH_DIR`), an sshd_config that includes
/// `ssh/sshd_config.d/*.conf`, a host CA, and the fragment's script.
pub struct PrivateHost {
    pub dir: TempDir,
    script: PathBuf,
    pub sshd: PathBuf,
    ca: PathBuf,
    signed: Cell<u32>,
}

/// What ssh, trusting only the host CA for the host's address, made of
/// the host key sshd presented.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// It went on to authentication (and was refused there: no key).
    HostKeyAccepted,
    /// "Host key verification failed": a member would have been asked.
    HostKeyRefused,
}

impl PrivateHost {
    /// `None` (printed) without sshd, ssh-keygen or PyYAML.
    pub fn new() -> Option<Self> {
        let sshd = super::sshd()?;
        if !require(
            have_tool("ssh-keygen") && have_tool("ssh"),
            "OpenSSH's client (Debian package openssh-client)",
        ) {
            return None;
        }
        let data = super::cloud_init_files(FRAGMENT)?;
        let script_text = data["write_files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == SCRIPT)
            .expect("the script in the fragment")["content"]
            .as_str()
            .unwrap()
            .to_owned();
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("gatehouse-host-cert");
        write_executable(&script, &script_text);
        let host = PrivateHost {
            ca: dir.path().join("host_ca"),
            script,
            sshd,
            signed: Cell::new(0),
            dir,
        };
        std::fs::create_dir_all(host.ssh_dir().join("sshd_config.d")).unwrap();
        keygen(&host.ssh_dir().join("ssh_host_ed25519_key"));
        keygen(&host.ca);
        std::fs::write(host.sshd_config(), host.sshd_config_text()).unwrap();
        Some(host)
    }

    pub fn ssh_dir(&self) -> PathBuf {
        self.dir.path().join("ssh")
    }

    pub fn key_pub(&self) -> PathBuf {
        self.ssh_dir().join("ssh_host_ed25519_key.pub")
    }

    /// Outside `ssh/`, so that the script finds it through `SSHD_CONFIG`.
    pub fn sshd_config(&self) -> PathBuf {
        self.dir.path().join("sshd_config")
    }

    /// Debian's shape: the drop-in directory included, the ed25519 host key.
    pub fn sshd_config_text(&self) -> String {
        let ssh = self.ssh_dir().display().to_string();
        format!(
            "Include {ssh}/sshd_config.d/*.conf\nHostKey {ssh}/ssh_host_ed25519_key\n\
             UsePAM no\nPidFile none\n"
        )
    }

    /// A certificate of `key` from the host CA, with `args` (`-h` for a
    /// host certificate, `-V` for its validity).
    pub fn sign(&self, key: &Path, args: &[&str]) -> PathBuf {
        let n = self.signed.get() + 1;
        self.signed.set(n);
        let copy = self.dir.path().join(format!("signed{n}.pub"));
        std::fs::copy(key, &copy).unwrap();
        let out = Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(&self.ca)
            .args(["-I", "jupyter", "-n", PRINCIPALS, "-z", &n.to_string()])
            .args(args)
            .arg(&copy)
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh-keygen -s: {}", said(&out));
        self.dir.path().join(format!("signed{n}-cert.pub"))
    }

    /// Runs the script with `SOURCE=source`, every path in the temp dir,
    /// the real sshd, and a reload that only counts.
    pub fn run(&self, source: &str, env: &[(&str, String)]) -> Output {
        let mut cmd = self.command(&format!("SOURCE={source}\nREGION={REGION}\n"));
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        output_within(cmd, Duration::from_secs(120))
    }

    /// The script, to run (where the caller chooses: in a namespace, say)
    /// with `conf` as its config file, every path in the temp dir (its
    /// state in [`PrivateHost::state_dir`]), the real sshd, and a reload
    /// that only counts.
    pub fn command(&self, conf: &str) -> Command {
        let conf_file = self.dir.path().join("host-cert.conf");
        std::fs::write(&conf_file, conf).unwrap();
        let reloads = self.dir.path().join("reloads");
        let mut cmd = Command::new(&self.script);
        cmd.env("GATEHOUSE_HOST_CERT_CONF", &conf_file)
            .env("GATEHOUSE_SSH_DIR", self.ssh_dir())
            .env("GATEHOUSE_HOST_CERT_STATE", self.state_dir())
            .env("SSHD_CONFIG", self.sshd_config())
            .env("SSHD", &self.sshd)
            .env(
                "SSHD_RELOAD",
                format!("echo reload >> '{}'", reloads.display()),
            );
        cmd
    }

    /// The script's `/var/lib/gatehouse-host-cert`: what joining gave.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The installed certificate.
    pub fn installed(&self) -> Option<String> {
        std::fs::read_to_string(self.ssh_dir().join("ssh_host_ed25519_key-cert.pub")).ok()
    }

    /// The sshd_config.d file with the HostCertificate line.
    pub fn snippet(&self) -> Option<String> {
        std::fs::read_to_string(
            self.ssh_dir()
                .join("sshd_config.d/gatehouse-host-cert.conf"),
        )
        .ok()
    }

    pub fn reloads(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("reloads"))
            .map_or(0, |text| text.lines().count())
    }

    /// What the script's runs left of their scratch files in `ssh/`.
    pub fn scratch_left(&self) -> Vec<String> {
        std::fs::read_dir(self.ssh_dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(".gatehouse-host-cert"))
            .collect()
    }

    /// Starts this host's sshd on a loopback port and connects with ssh as
    /// a member does: known_hosts holding only the host CA's
    /// `@cert-authority` line for the host's address, no prompt allowed.
    pub fn connect(&self) -> Verdict {
        let known_hosts = self.dir.path().join("known_hosts");
        let ca = std::fs::read_to_string(self.ca.with_extension("pub")).unwrap();
        std::fs::write(&known_hosts, format!("@cert-authority 10.0.3.140 {ca}")).unwrap();
        let sshd = Sshd::start(&self.sshd, &self.sshd_config());
        let mut ssh = Command::new("ssh");
        ssh.args(["-F", "/dev/null", "-p", &sshd.port.to_string(), "-o"])
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()));
        for option in [
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "BatchMode=yes",
            // The address the certificate names, on a loopback sshd.
            "HostKeyAlias=10.0.3.140",
            // Host key verification comes first; then it gives up.
            "PubkeyAuthentication=no",
            "PasswordAuthentication=no",
            "KbdInteractiveAuthentication=no",
            "ConnectTimeout=10",
        ] {
            ssh.args(["-o", option]);
        }
        ssh.args(["nobody@127.0.0.1", "true"]);
        let out = output_within(ssh, Duration::from_secs(30));
        let text = stderr(&out);
        if text.contains("Host key verification failed") {
            Verdict::HostKeyRefused
        } else {
            assert!(text.contains("Permission denied"), "ssh: {}", said(&out));
            Verdict::HostKeyAccepted
        }
    }
}

/// sshd in the foreground on a free loopback port, killed when dropped.
struct Sshd {
    child: Child,
    port: u16,
}

impl Sshd {
    fn start(sshd: &Path, config: &Path) -> Self {
        let port = crate::ports::free_port();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(config)
            .args(["-o", &format!("ListenAddress=127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let sshd = Sshd { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        sshd
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen: {}", said(&out));
}

pub fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// A command's stdout and stderr, for assertion messages.
pub fn said(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    )
}
