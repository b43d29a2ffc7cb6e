//! Debian's rsyslog as the team's syslog receiver, over TLS: `rsyslogd -n`
//! with a config, pid file and work directory of its own in a temp dir,
//! `imtcp` on 127.0.0.1 and a free port with the GnuTLS stream driver
//! (`StreamDriver.Mode="1"`, `AuthMode="x509/certvalid"`: the client must
//! show a certificate the test CA signed), writing each message it receives,
//! raw (`%rawmsg%`, the SYSLOG-MSG without its frame), one per line to
//! `received.log`.
//!
//! [`Pki`] makes the CA, the receiver's certificate (for `localhost` and
//! 127.0.0.1) and the gateway's client certificate with rcgen.
//!
//! rsyslogd runs as the test's own user: the port is high and every path is
//! private to the temp dir, so it needs no privilege. Stopped (SIGTERM, then
//! SIGKILL) in `Drop`.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tempfile::TempDir;

use crate::ports::free_port;

/// Where Debian's rsyslog keeps its loadable modules, the TLS driver among
/// them (package rsyslog-gnutls).
const GTLS_DRIVER: &str = "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so";

/// True when rsyslogd and its GnuTLS driver are installed.
pub fn available() -> bool {
    crate::have_tool("rsyslogd") && Path::new(GTLS_DRIVER).exists()
}

/// The test's certificates, PEM files in a temp dir.
pub struct Pki {
    pub dir: TempDir,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    /// A CA, the receiver's certificate for `localhost` and 127.0.0.1, and
    /// a client certificate for the gateway.
    pub fn make() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "gatehouse test syslog CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params
                .subject_alt_names
                .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = leaf("research-gw", ExtendedKeyUsagePurpose::ClientAuth);
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
            dir,
        }
    }
}

/// A running (or stopped) rsyslogd of the test's own.
pub struct Rsyslog {
    pub dir: TempDir,
    pub port: u16,
    config: PathBuf,
    pid_file: PathBuf,
    received: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Rsyslog {
    /// Starts rsyslogd on a free port of 127.0.0.1, trusting clients whose
    /// certificate `pki`'s CA signed; returns once it accepts connections.
    pub fn start(pki: &Pki) -> Rsyslog {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let received = dir.path().join("received.log");
        let config = dir.path().join("rsyslog.conf");
        let text = format!(
            r#"global(
    workDirectory="{work}"
    maxMessageSize="64k"
    defaultNetstreamDriver="gtls"
    defaultNetstreamDriverCAFile="{ca}"
    defaultNetstreamDriverCertFile="{cert}"
    defaultNetstreamDriverKeyFile="{key}"
)
module(load="imtcp"
    streamDriver.name="gtls"
    streamDriver.mode="1"
    streamDriver.authMode="x509/certvalid")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="raw" type="string" string="%rawmsg%\n")
action(type="omfile" file="{received}" template="raw")
"#,
            work = work.display(),
            ca = pki.ca.display(),
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
            received = received.display(),
        );
        std::fs::write(&config, text).unwrap();
        let mut rsyslog = Rsyslog {
            port,
            pid_file: dir.path().join("rsyslogd.pid"),
            log: dir.path().join("rsyslogd.log"),
            config,
            received,
            dir,
            child: None,
        };
        rsyslog.spawn();
        rsyslog
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Starts it (again, after [`Rsyslog::stop`]) on the same port and
    /// files; returns once it accepts connections.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "rsyslogd already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&self.config)
            .arg("-i")
            .arg(&self.pid_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("rsyslogd exited at start ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd does not listen on {} after 15 s:\n{}",
                self.addr(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it (SIGTERM; SIGKILL after 10 s) and waits until the port is
    /// closed.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every complete line of `received.log`: one raw message each.
    pub fn received(&self) -> Vec<String> {
        let text = match std::fs::read(&self.received) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("{}: {e}", self.received.display()),
        };
        let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
        // The last piece has no newline yet (or is the empty rest).
        lines.pop();
        lines
    }

    /// rsyslogd's own output.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}
