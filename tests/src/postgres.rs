//! A private PostgreSQL server for the tests of the shared store (issue 14):
//! Debian's `postgresql` binaries (`tests/run.sh` installs the package), a
//! fresh cluster in a temp dir owned by the `postgres` user (initdb will
//! not run as root), on 127.0.0.1 and a free port, with SCRAM password
//! authentication for the role `gatehouse`, which owns the database
//! `gatehouse`. Stopped (immediately) and removed on drop.
//!
//! ```no_run
//! let Some(pg) = gatehouse_tests::postgres::PgServer::start() else { return };
//! assert_eq!(pg.psql("SELECT 1").trim(), "1");
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::ports::free_port;
use crate::{is_root, output_within, require, stderr, stdout};

/// The role and database the tests use.
pub const ROLE: &str = "gatehouse";

/// initdb, start and psql each finish within this.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// One running server.
pub struct PgServer {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
    password: String,
    /// The server's command-line options (for a restart).
    options: String,
    /// The namespace it runs in (`None`: the host's).
    netns: Option<String>,
    /// The address it listens on there.
    listen: String,
}

/// The newest installed server's `bin` directory (`/usr/lib/postgresql/<v>/bin`).
fn server_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

impl PgServer {
    /// Starts a server, or returns `None` (printing `SKIPPED: ...`) when the
    /// binaries or root are missing; with `GATEHOUSE_E2E=1` that fails.
    pub fn start() -> Option<PgServer> {
        Self::start_in(None)
    }

    /// Like [`PgServer::start`], inside the network namespace `netns`
    /// (`(name, address)`), listening on `address` there: for gateways in
    /// namespaces of their own. [`PgServer::psql`] runs there too.
    pub fn start_in(netns: Option<(&str, &str)>) -> Option<PgServer> {
        let bin = server_bin();
        if !require(
            bin.is_some(),
            "the PostgreSQL server is not installed (Debian package postgresql)",
        ) || !require(
            is_root(),
            "not root: cannot run PostgreSQL's initdb as the postgres user",
        ) {
            return None;
        }
        let bin = bin?;
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-pg-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path();
        let password = format!("pw-{}-{}", std::process::id(), free_port());
        std::fs::write(path.join("pwfile"), format!("{password}\n")).expect("pwfile");
        let as_postgres = |argv: &[&str]| {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).args(argv);
            cmd
        };
        let (netns, listen) = match netns {
            Some((ns, addr)) => (Some(ns.to_string()), addr.to_string()),
            None => (None, "127.0.0.1".to_string()),
        };
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .expect("chown");
        assert!(chown.success(), "chown {}", path.display());
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let data = path.join("data");
        let initdb = bin.join("initdb");
        let out = output_within(
            as_postgres(&[
                initdb.to_str().unwrap(),
                "-D",
                data.to_str().unwrap(),
                "-U",
                ROLE,
                "--auth=scram-sha-256",
                "--pwfile",
                path.join("pwfile").to_str().unwrap(),
                "--no-sync",
            ]),
            STEP_LIMIT,
        );
        assert!(out.status.success(), "initdb failed:\n{}", stderr(&out));
        if netns.is_some() {
            // Gateways in other namespaces connect over veths, not loopback.
            use std::io::Write as _;
            let mut hba = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("pg_hba.conf"))
                .expect("pg_hba.conf");
            writeln!(hba, "host all all 0.0.0.0/0 scram-sha-256").expect("pg_hba.conf");
        }
        let port = free_port();
        let options = format!(
            "-c listen_addresses={listen} -p {port} -k {} -c fsync=off -c synchronous_commit=off",
            path.display()
        );
        let server = PgServer {
            dir,
            bin,
            port,
            password,
            options,
            netns,
            listen,
        };
        server.pg_ctl_start();
        server.psql_in("postgres", &format!("CREATE DATABASE {ROLE} OWNER {ROLE}"));
        Some(server)
    }

    /// `postgresql://gatehouse@127.0.0.1:<port>/gatehouse` (the password is
    /// [`PgServer::password`], given apart, as the gateway's config does).
    pub fn url(&self) -> String {
        format!("postgresql://{ROLE}@{}:{}/{ROLE}", self.listen, self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `sql` in the database `gatehouse` with psql over TCP as the
    /// role, and returns its unaligned, tuples-only output; a failure fails
    /// the test.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in(ROLE, sql)
    }

    fn psql_in(&self, database: &str, sql: &str) -> String {
        let mut cmd = self.in_netns(&self.bin.join("psql"));
        cmd.args(["-h", &self.listen, "-p", &self.port.to_string(), "-U", ROLE])
            .args(["-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .env("PGPASSWORD", &self.password);
        let out = output_within(cmd, STEP_LIMIT);
        assert!(
            out.status.success(),
            "psql {sql:?} failed:\n{}\n{}",
            stderr(&out),
            self.log()
        );
        stdout(&out)
    }

    /// The sample config as [`crate::Daemon::start`] runs it, on this
    /// server (`[store]`, the password in a 0600 file in `dir`), plus
    /// `extra` (e.g. an `[ha]` section).
    pub fn gateway_config(&self, dir: &Path, extra: &str) -> String {
        let password_file = dir.join("pg-password");
        std::fs::write(&password_file, format!("{}\n", self.password)).expect("password file");
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        // Gateways on one store share the secrets key (it seals the TOTP
        // secrets and keys the audit chain): made in `dir` once.
        let secrets = dir.join("secrets.key");
        if !secrets.exists() {
            use base64::Engine as _;
            let mut bytes = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
            let text = base64::engine::general_purpose::STANDARD.encode(bytes);
            std::fs::write(&secrets, format!("{text}\n")).unwrap();
            std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        format!(
            "{}\n[store]\nurl = \"{}\"\npassword_file = \"{}\"\n{extra}",
            crate::host_sample_config().replacen(
                "\n[gateway]\n",
                &format!(
                    "\n[gateway]\nsecrets_key_file = \"{}\"\n",
                    secrets.display()
                ),
                1,
            ),
            self.url(),
            password_file.display()
        )
    }

    /// The gateway config of `node` on this server, one of a pair with a
    /// 3 s lease: [`PgServer::gateway_config`]'s, with the SSH host key
    /// file the pair shares (made in `dir` once) and the portal off (a pair shares its certificate files, which these
    /// tests need not make).
    pub fn pair_config(&self, dir: &Path, node: &str) -> String {
        let key = dir.join("ssh_host_ed25519_key");
        if !key.exists() {
            let made = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key)
                .output()
                .unwrap();
            assert!(made.status.success(), "{}", stderr(&made));
        }
        let ha = format!("\n[ha]\nnode = \"{node}\"\nlease_ttl = \"3s\"\n");
        let text = self.gateway_config(dir, &ha).replacen(
            "\n[ssh]\n",
            &format!("\n[ssh]\nhost_key_file = \"{}\"\n", key.display()),
            1,
        );
        let portal = text.find("\n[portal]\n").expect("a [portal] section");
        let (before, after) = text.split_at(portal);
        format!(
            "{before}{}",
            after.replacen("\nenabled = true\n", "\nenabled = false\n", 1)
        )
    }

    /// `program`, run in the server's namespace.
    fn in_netns(&self, program: &Path) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = self.in_netns(Path::new("runuser"));
        cmd.args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(args);
        output_within(cmd, STEP_LIMIT)
    }

    fn pg_ctl_start(&self) {
        let log = self.dir.path().join("server.log");
        let out = self.pg_ctl(&[
            "-l",
            log.to_str().unwrap(),
            "-o",
            &self.options,
            "-w",
            "-t",
            "30",
            "start",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl start failed:\n{}{}\n{}",
            stdout(&out),
            stderr(&out),
            self.log()
        );
    }

    /// Stops the server (fast: connections are cut), as an outage would.
    pub fn stop(&self) {
        let out = self.pg_ctl(&["-m", "fast", "-w", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop failed:\n{}",
            stderr(&out)
        );
    }

    /// Starts it again after [`PgServer::stop`], on the same port and data.
    pub fn restart(&self) {
        self.pg_ctl_start();
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
