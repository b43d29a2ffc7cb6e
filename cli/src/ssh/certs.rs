//! `accessctl ssh ca|cert|krl`: the public side of the gateway's SSH user
//! CA, the certificates it signs for members' keys, and the KRL of those it
//! revoked. accessd holds the CA key, signs and builds the KRL; this reads a
//! public key file, asks, and prints or writes what comes back.

use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Subcommand;
use gatehouse_config::api::{
    IssueCertRequest, IssuedCert, KrlResponse, RevokedCert, SshCaInfo, SshHostCaInfo,
};

use super::SshError;
use crate::Ctx;
use crate::keys::{self, KeyError};
use crate::output::{self, Table};

/// `ssh cert ...`.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Issue a certificate for one of a user's SSH public keys.
    #[command(
        long_about = "Issue an SSH user certificate for one of USER's public keys \
        (the key must already be one of theirs: `accessctl user add-key`). The \
        gateway signs it with its user CA: the principals come from USER's groups \
        (group.ssh_principals), it carries a source-address restriction, and it is \
        valid for --lifetime or `ssh.cert_lifetime`, whichever is shorter. The issue \
        is audited (ssh.cert.issue).\n\n\
        Without --out the certificate line goes to standard output and the summary \
        to standard error. Saved as `<key>-cert.pub` beside the private key, ssh \
        offers it without further configuration.\n\n\
        Examples:\n  \
        accessctl ssh cert issue alice --key alice.pub --lifetime 8h --out alice-cert.pub\n  \
        accessctl ssh cert issue alice --key ~/.ssh/id_ed25519.pub --out ~/.ssh/id_ed25519-cert.pub\n  \
        accessctl ssh cert issue alice --key alice.pub > alice-cert.pub"
    )]
    Issue {
        /// The user the certificate is for.
        #[arg(value_parser = crate::args::user_name)]
        user: String,
        /// The OpenSSH public key file to certify (e.g. ~/.ssh/id_ed25519.pub).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// How long the certificate is valid (e.g. 1h, 8h); never longer than
        /// the gateway's ssh.cert_lifetime, which is the default.
        #[arg(long, value_name = "DURATION", value_parser = crate::args::positive_duration)]
        lifetime: Option<Duration>,
        /// Write the certificate here (mode 0644) instead of printing it, e.g.
        /// ~/.ssh/id_ed25519-cert.pub beside the key; an existing file is replaced.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// `ssh ca`: print the CA's public side, or only its public line.
pub(super) async fn ca(public_key_only: bool, ctx: &Ctx) -> Result<(), SshError> {
    let reply = ctx.client.get::<SshCaInfo>("/v1/ssh/ca").await?;
    if public_key_only {
        ctx.out
            .emit(&format!("{}\n", reply.body.public_key.trim()))?;
    } else if ctx.json {
        ctx.out.emit_json(&reply.json)?;
    } else {
        ctx.out.emit(&render_ca(&reply.body))?;
    }
    Ok(())
}

/// `ssh ca --host`: print the host CA's public side, or only its public
/// line, or only its `known_hosts` line.
pub(super) async fn host_ca(
    public_key_only: bool,
    known_hosts_only: bool,
    ctx: &Ctx,
) -> Result<(), SshError> {
    let reply = ctx.client.get::<SshHostCaInfo>("/v1/ssh/host-ca").await?;
    let ca = &reply.body;
    if public_key_only {
        ctx.out.emit(&format!("{}\n", ca.public_key.trim()))?;
    } else if known_hosts_only {
        ctx.out.emit(&format!("{}\n", ca.known_hosts.trim()))?;
    } else if ctx.json {
        ctx.out.emit_json(&reply.json)?;
    } else {
        ctx.out.emit(&format!(
            "SSH host CA (signs the private hosts' certificates):\n  {}\n  {}\n\n\
             For members' ~/.ssh/known_hosts (the hosts of every group's IPv4 subnets):\n  {}\n",
            ca.public_key.trim(),
            ca.fingerprint,
            ca.known_hosts.trim()
        ))?;
    }
    Ok(())
}

/// `ssh cert ...`.
pub(super) async fn cert(cmd: CertCommand, ctx: &Ctx) -> Result<(), SshError> {
    match cmd {
        CertCommand::Issue {
            user,
            key,
            lifetime,
            out,
        } => {
            let request = IssueCertRequest {
                user,
                public_key: read_public_key(&key)?,
                lifetime_secs: lifetime.map(|d| d.as_secs()),
            };
            issue(&request, out.as_deref(), ctx).await
        }
    }
}

/// `ssh krl`: fetch, check, write atomically, then report.
pub(super) async fn krl(out: &Path, ctx: &Ctx) -> Result<(), SshError> {
    let reply = ctx.client.get::<KrlResponse>("/v1/ssh/krl").await?;
    write_krl(out, &reply.body.krl_base64)?;
    if ctx.json {
        ctx.out.emit_json(&reply.json)?;
    } else {
        ctx.out.emit(&render_krl(out, &reply.body.revoked))?;
    }
    Ok(())
}

/// Decodes accessd's KRL, checks it is one, and writes it to `out`
/// atomically. sshd refuses every public key (and ssh every host key)
/// while its KRL cannot be parsed, so never install something that is not
/// a KRL. (An empty file is a valid, empty revocation list.)
pub(super) fn write_krl(out: &Path, krl_base64: &str) -> Result<(), SshError> {
    let bytes = BASE64
        .decode(krl_base64.trim())
        .map_err(SshError::KrlBase64)?;
    if !bytes.is_empty() && !bytes.starts_with(KRL_MAGIC) {
        return Err(SshError::NotAKrl);
    }
    write_public(out, &bytes).map_err(|source| SshError::WriteKrl {
        path: out.to_owned(),
        source,
    })
}

/// `ssh cert issue` once the key file is read: ask, then write or print.
async fn issue(request: &IssueCertRequest, out: Option<&Path>, ctx: &Ctx) -> Result<(), SshError> {
    let reply = ctx
        .client
        .post::<_, IssuedCert>("/v1/ssh/certificates", Some(request))
        .await?;
    let cert = &reply.body;
    let summary = || render_issued(cert, out, SystemTime::now());
    deliver(
        &cert.certificate,
        cert.serial,
        &reply.json,
        out,
        summary,
        ctx,
    )
}

/// A signed certificate (user or host) accessd answered with: written to
/// `out` (0644) or else printed alone on stdout, so `> FILE` captures just
/// it; then `--json`'s answer, or the `summary` (on stderr when stdout
/// carries the certificate).
pub(super) fn deliver(
    certificate: &str,
    serial: u64,
    json: &serde_json::Value,
    out: Option<&Path>,
    summary: impl FnOnce() -> String,
    ctx: &Ctx,
) -> Result<(), SshError> {
    let line = format!("{}\n", certificate.trim());
    if let Some(path) = out {
        write_public(path, line.as_bytes()).map_err(|source| SshError::WriteCert {
            serial,
            path: path.to_owned(),
            source,
        })?;
    }
    if ctx.json {
        ctx.out.emit_json(json)?;
    } else if out.is_some() {
        ctx.out.emit(&summary())?;
    } else {
        ctx.out.emit(&line)?;
        eprint!("{}", summary());
    }
    Ok(())
}

/// The first bytes of every OpenSSH KRL (`KRL_MAGIC` in OpenSSH's krl.h).
const KRL_MAGIC: &[u8] = b"SSHKRL\n\0";

/// The one key line of a `.pub` file. The file is named in every error; a
/// private key is refused before anything is sent.
pub(super) fn read_public_key(path: &Path) -> Result<String, SshError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let mut lines = keys::key_lines(&text, &path.display().to_string())?;
    if lines.len() > 1 {
        return Err(SshError::SeveralKeys {
            path: path.to_owned(),
            count: lines.len(),
        });
    }
    Ok(lines.remove(0))
}

fn render_ca(ca: &SshCaInfo) -> String {
    let mut text = format!(
        "SSH user CA (for TrustedUserCAKeys on the private hosts):\n  {}\n  {}\n\n",
        ca.public_key.trim(),
        ca.fingerprint
    );
    text.push_str(&ca.sshd_snippet);
    if !ca.sshd_snippet.ends_with('\n') {
        text.push('\n');
    }
    if !ca.enabled {
        text.push_str(
            "\nThe gateway issues no certificates now: set `ssh.certificates = true` \
             in its config for it to issue them.\n",
        );
    }
    text
}

fn render_issued(cert: &IssuedCert, out: Option<&Path>, now: SystemTime) -> String {
    let mut text = format!(
        "issued certificate {} ({}) for key {}\n  principals      {}\n  valid until     {}\n  source address  {}\n",
        cert.serial,
        cert.key_id,
        cert.key_fingerprint,
        output::list(&cert.principals, ", "),
        valid_until(cert.valid_before, now),
        output::or_dash(Some(&cert.source_address)),
    );
    if let Some(path) = out {
        text.push_str(&format!("  written to      {}\n", path.display()));
    }
    text
}

fn render_krl(out: &Path, revoked: &[RevokedCert]) -> String {
    let mut text = format!(
        "wrote {}: it revokes {} certificate(s)\n",
        out.display(),
        revoked.len()
    );
    if revoked.is_empty() {
        return text;
    }
    let mut table = Table::new(&["SERIAL", "USER", "WHY", "VALID UNTIL"]);
    for cert in revoked {
        table.row(vec![
            cert.serial.to_string(),
            cert.user.clone(),
            cert.why.clone(),
            unix_time(cert.valid_before),
        ]);
    }
    text.push_str(&table.render());
    text
}

/// `unix_time(secs)` and how long from `now` that is.
pub(super) fn valid_until(secs: i64, now: SystemTime) -> String {
    let left = u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
        .and_then(|until| until.duration_since(now).ok());
    match left {
        Some(left) => format!(
            "{} (in {})",
            unix_time(secs),
            output::human_duration(left.as_secs())
        ),
        None => format!("{} (expired)", unix_time(secs)),
    }
}

/// Unix seconds as RFC 3339 UTC; the number itself where humantime cannot
/// print one (before 1970, after 9999).
pub(super) fn unix_time(secs: i64) -> String {
    const YEAR_10000: u64 = 253_402_300_800;
    match u64::try_from(secs) {
        Ok(s) if s < YEAR_10000 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string()
        }
        _ => secs.to_string(),
    }
}

/// Writes `bytes` to `path.tmp` beside `path` (mode 0644: certificates and
/// KRLs are public), syncs it and renames it over `path`, so ssh and sshd
/// read the old file or the new one, never half of one.
pub(super) fn write_public(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover of an interrupted run; `create_new` below will not follow a link.
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Client, ClientError};
    use crate::output::Out;
    use crate::ssh::{SshCommand, run};
    use crate::testutil::{Canned, FakeServer};
    use std::os::unix::fs::PermissionsExt as _;

    /// 2026-05-01T12:00:00Z.
    const NOON: i64 = 1_777_636_800;

    fn ctx(server: &FakeServer, json: bool) -> Ctx {
        Ctx {
            client: Client::new(server.socket()),
            json,
            out: Out::capture(),
        }
    }

    fn issued() -> IssuedCert {
        IssuedCert {
            certificate: "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQ= alice"
                .into(),
            serial: 42,
            key_id: "alice@gw".into(),
            principals: vec!["alice".into(), "deploy".into()],
            valid_after: NOON - 60,
            valid_before: NOON + 3600,
            key_fingerprint: "SHA256:abc".into(),
            source_address: "192.0.2.1/32".into(),
        }
    }

    fn issue_cmd(key: &Path, out: Option<PathBuf>) -> SshCommand {
        SshCommand::Cert {
            command: CertCommand::Issue {
                user: "alice".into(),
                key: key.to_owned(),
                lifetime: Some(Duration::from_secs(3600)),
                out,
            },
        }
    }

    fn key_file(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("id_ed25519.pub");
        std::fs::write(&path, text).expect("write key");
        path
    }

    #[tokio::test]
    async fn ca_prints_the_key_the_fingerprint_and_the_snippet() {
        let snippet = "TrustedUserCAKeys /etc/ssh/gatehouse_user_ca.pub\nRevokedKeys /etc/ssh/gatehouse_revoked.krl\n";
        let answer = serde_json::to_string(&SshCaInfo {
            public_key: "ssh-ed25519 AAAACA gatehouse-user-ca".into(),
            fingerprint: "SHA256:ca".into(),
            sshd_snippet: snippet.into(),
            enabled: false,
        })
        .expect("json");
        let server = FakeServer::start(vec![Canned::json(200, &answer); 3]).await;

        let human = ctx(&server, false);
        run(
            SshCommand::Ca {
                public_key_only: false,
                host: false,
                known_hosts_only: false,
            },
            &human,
        )
        .await
        .expect("ca");
        let text = human.out.captured();
        assert!(
            text.starts_with(
                "SSH user CA (for TrustedUserCAKeys on the private hosts):\n  \
                 ssh-ed25519 AAAACA gatehouse-user-ca\n  SHA256:ca\n\n"
            ),
            "{text}"
        );
        assert!(text.contains(&format!("\n\n{snippet}")), "verbatim: {text}");
        assert!(text.contains("`ssh.certificates = true`"), "{text}");

        // The one line, even with --json: the flag asks for exactly that.
        let only = ctx(&server, true);
        run(
            SshCommand::Ca {
                public_key_only: true,
                host: false,
                known_hosts_only: false,
            },
            &only,
        )
        .await
        .expect("ca");
        assert_eq!(
            only.out.captured(),
            "ssh-ed25519 AAAACA gatehouse-user-ca\n"
        );

        let json = ctx(&server, true);
        run(
            SshCommand::Ca {
                public_key_only: false,
                host: false,
                known_hosts_only: false,
            },
            &json,
        )
        .await
        .expect("ca");
        let printed: serde_json::Value = serde_json::from_str(&json.out.captured()).expect("json");
        assert_eq!(printed["fingerprint"], "SHA256:ca");

        let requests = server.requests().await;
        assert!(
            requests
                .iter()
                .all(|r| (r.method.as_str(), r.target.as_str()) == ("GET", "/v1/ssh/ca"))
        );
    }

    #[tokio::test]
    async fn host_ca_prints_the_key_and_the_known_hosts_line() {
        let answer = serde_json::to_string(&SshHostCaInfo {
            public_key: "ssh-ed25519 AAAAHC gatehouse-host-ca@gw".into(),
            fingerprint: "SHA256:hostca".into(),
            known_hosts: "@cert-authority 10.0.3.* ssh-ed25519 AAAAHC gatehouse-host-ca@gw".into(),
        })
        .expect("json");
        let server = FakeServer::start(vec![Canned::json(200, &answer); 3]).await;
        let ask = |public_key_only, known_hosts_only| SshCommand::Ca {
            public_key_only,
            host: true,
            known_hosts_only,
        };
        let human = ctx(&server, false);
        run(ask(false, false), &human).await.expect("ca --host");
        let text = human.out.captured();
        assert!(text.contains("SSH host CA"), "{text}");
        assert!(text.contains("  SHA256:hostca\n"), "{text}");
        assert!(
            text.contains("\n  @cert-authority 10.0.3.* ssh-ed25519 AAAAHC"),
            "{text}"
        );
        let line = ctx(&server, true);
        run(ask(false, true), &line)
            .await
            .expect("known hosts only");
        assert_eq!(
            line.out.captured(),
            "@cert-authority 10.0.3.* ssh-ed25519 AAAAHC gatehouse-host-ca@gw\n"
        );
        let key = ctx(&server, false);
        run(ask(true, false), &key).await.expect("public key only");
        assert_eq!(
            key.out.captured(),
            "ssh-ed25519 AAAAHC gatehouse-host-ca@gw\n"
        );
        let requests = server.requests().await;
        assert!(
            requests
                .iter()
                .all(|r| (r.method.as_str(), r.target.as_str()) == ("GET", "/v1/ssh/host-ca"))
        );
    }

    #[test]
    fn an_enabled_ca_has_no_hint() {
        let ca = SshCaInfo {
            public_key: "ssh-ed25519 AAAACA".into(),
            fingerprint: "SHA256:ca".into(),
            sshd_snippet: "TrustedUserCAKeys /etc/ssh/ca.pub".into(),
            enabled: true,
        };
        let text = render_ca(&ca);
        assert!(
            text.ends_with("TrustedUserCAKeys /etc/ssh/ca.pub\n"),
            "{text}"
        );
        assert!(!text.contains("ssh.certificates"), "{text}");
    }

    #[tokio::test]
    async fn issue_sends_the_key_and_writes_the_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = key_file(dir.path(), "ssh-ed25519 AAAAKEY alice@laptop\n");
        let out = dir.path().join("id_ed25519-cert.pub");
        std::fs::write(&out, "an older certificate\n").expect("write");
        let answer = serde_json::to_string(&issued()).expect("json");
        let server = FakeServer::start(vec![Canned::json(201, &answer)]).await;
        let ctx = ctx(&server, false);
        run(issue_cmd(&key, Some(out.clone())), &ctx)
            .await
            .expect("issued");

        let requests = server.requests().await;
        assert_eq!(
            (requests[0].method.as_str(), requests[0].target.as_str()),
            ("POST", "/v1/ssh/certificates")
        );
        let sent: serde_json::Value = serde_json::from_str(&requests[0].body).expect("json");
        assert_eq!(
            sent,
            serde_json::json!({
                "user": "alice",
                "public_key": "ssh-ed25519 AAAAKEY alice@laptop",
                "lifetime_secs": 3600
            })
        );
        assert_eq!(
            std::fs::read_to_string(&out).expect("read"),
            format!("{}\n", issued().certificate)
        );
        let mode = std::fs::metadata(&out).expect("meta").permissions().mode();
        assert_eq!(mode & 0o600, 0o600);
        assert!(!dir.path().join("id_ed25519-cert.pub.tmp").exists());
        let text = ctx.out.captured();
        assert!(
            text.starts_with("issued certificate 42 (alice@gw) for key SHA256:abc\n"),
            "{text}"
        );
        assert!(text.contains("  principals      alice, deploy\n"), "{text}");
        assert!(text.contains("2026-05-01T13:00:00Z"), "{text}");
        assert!(text.contains(&format!("  written to      {}\n", out.display())));
    }

    #[tokio::test]
    async fn issue_without_out_prints_only_the_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = key_file(dir.path(), "# laptop\nssh-ed25519 AAAAKEY alice@laptop\n");
        let answer = serde_json::to_string(&issued()).expect("json");
        let server = FakeServer::start(vec![Canned::json(201, &answer); 2]).await;

        let plain = ctx(&server, false);
        run(issue_cmd(&key, None), &plain).await.expect("issued");
        assert_eq!(plain.out.captured(), format!("{}\n", issued().certificate));

        let json = ctx(&server, true);
        run(issue_cmd(&key, None), &json).await.expect("issued");
        let printed: IssuedCert = serde_json::from_str(&json.out.captured()).expect("json");
        assert_eq!(printed, issued());
        server.requests().await;
    }

    #[tokio::test]
    async fn a_bad_key_file_is_named_and_nothing_is_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Nothing listens here: any request would fail as unreachable instead.
        let ctx = Ctx {
            client: Client::new(dir.path().join("admin.sock")),
            json: false,
            out: Out::capture(),
        };
        let missing = dir.path().join("missing.pub");
        let empty = key_file(dir.path(), "# nothing\n\n");
        let two = dir.path().join("two.pub");
        std::fs::write(&two, "ssh-ed25519 AAAA a\nssh-ed25519 BBBB b\n").expect("write");
        let private = dir.path().join("id_ed25519");
        std::fs::write(&private, "-----BEGIN OPENSSH PRIVATE KEY-----\n").expect("write");
        for (path, expect) in [
            (&missing, "cannot read SSH key file"),
            (&empty, "holds no SSH public key"),
            (&two, "holds 2 keys"),
            (&private, "looks like a private key"),
        ] {
            let err = run(issue_cmd(path, None), &ctx).await.expect_err("refused");
            let text = err.to_string();
            assert!(!matches!(err, SshError::Client(_)), "{err:?}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(expect), "{text}");
        }
    }

    #[tokio::test]
    async fn an_api_error_is_passed_on_and_no_file_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = key_file(dir.path(), "ssh-ed25519 AAAAKEY alice@laptop\n");
        let out = dir.path().join("cert.pub");
        let server = FakeServer::start(vec![Canned::json(
            409,
            r#"{"code":"conflict","message":"SSH certificates are off (ssh.certificates = false)"}"#,
        )])
        .await;
        let ctx = ctx(&server, false);
        let err = run(issue_cmd(&key, Some(out.clone())), &ctx)
            .await
            .expect_err("409");
        assert!(
            matches!(&err, SshError::Client(ClientError::Api { .. })),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "SSH certificates are off (ssh.certificates = false)"
        );
        assert!(!out.exists());
        server.requests().await;
    }

    fn krl_answer(krl: &[u8]) -> String {
        serde_json::to_string(&KrlResponse {
            krl_base64: BASE64.encode(krl),
            revoked: vec![
                RevokedCert {
                    serial: 7,
                    user: "bob".into(),
                    valid_before: NOON,
                    why: "disabled".into(),
                },
                RevokedCert {
                    serial: 12,
                    user: "carol".into(),
                    valid_before: NOON + 86_400,
                    why: "removed".into(),
                },
            ],
        })
        .expect("json")
    }

    #[tokio::test]
    async fn krl_writes_the_decoded_file_and_lists_what_it_revokes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("revoked.krl");
        let krl = b"SSHKRL\n\0\0\0\0\x01rest".to_vec();
        let server = FakeServer::start(vec![Canned::json(200, &krl_answer(&krl)); 2]).await;

        let human = ctx(&server, false);
        run(
            SshCommand::Krl {
                out: out.clone(),
                host: false,
            },
            &human,
        )
        .await
        .expect("krl");
        assert_eq!(std::fs::read(&out).expect("read"), krl);
        assert!(!dir.path().join("revoked.krl.tmp").exists());
        assert_eq!(
            human.out.captured(),
            format!(
                "wrote {}: it revokes 2 certificate(s)\n\
                 SERIAL  USER   WHY       VALID UNTIL\n\
                 7       bob    disabled  2026-05-01T12:00:00Z\n\
                 12      carol  removed   2026-05-02T12:00:00Z\n",
                out.display()
            )
        );

        std::fs::remove_file(&out).expect("remove");
        let json = ctx(&server, true);
        run(
            SshCommand::Krl {
                out: out.clone(),
                host: false,
            },
            &json,
        )
        .await
        .expect("krl");
        let printed: KrlResponse = serde_json::from_str(&json.out.captured()).expect("json");
        assert_eq!(printed.revoked.len(), 2);
        assert_eq!(std::fs::read(&out).expect("still written"), krl);

        let requests = server.requests().await;
        assert_eq!(requests[1].target, "/v1/ssh/krl");
    }

    #[tokio::test]
    async fn a_broken_krl_is_never_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("revoked.krl");
        std::fs::write(&out, b"SSHKRL\n\0old").expect("write");
        let not_base64 = r#"{"krl_base64":"%%%","revoked":[]}"#;
        let server = FakeServer::start(vec![
            Canned::json(200, not_base64),
            Canned::json(200, &krl_answer(b"ssh-ed25519 AAAA")),
            Canned::json(
                500,
                r#"{"code":"internal","message":"the store is locked"}"#,
            ),
        ])
        .await;
        let ctx = ctx(&server, false);
        let krl = || {
            run(
                SshCommand::Krl {
                    out: out.clone(),
                    host: false,
                },
                &ctx,
            )
        };
        assert!(matches!(krl().await, Err(SshError::KrlBase64(_))));
        assert!(matches!(krl().await, Err(SshError::NotAKrl)));
        let err = krl().await.expect_err("500");
        assert_eq!(err.to_string(), "the store is locked");
        assert_eq!(std::fs::read(&out).expect("read"), b"SSHKRL\n\0old");
        server.requests().await;
    }

    #[tokio::test]
    async fn an_unwritable_krl_path_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("no-such-dir").join("revoked.krl");
        let server = FakeServer::start(vec![Canned::json(200, &krl_answer(b""))]).await;
        let ctx = ctx(&server, false);
        let err = run(
            SshCommand::Krl {
                out: out.clone(),
                host: false,
            },
            &ctx,
        )
        .await
        .expect_err("no such directory");
        assert!(matches!(err, SshError::WriteKrl { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("cannot write the KRL to {}: ", out.display())),
            "{err}"
        );
        server.requests().await;
    }

    #[test]
    fn times_print_as_rfc3339_with_what_is_left() {
        let now = UNIX_EPOCH + Duration::from_secs(NOON as u64);
        assert_eq!(unix_time(NOON), "2026-05-01T12:00:00Z");
        assert_eq!(unix_time(-1), "-1");
        assert_eq!(unix_time(i64::MAX), i64::MAX.to_string());
        assert_eq!(
            valid_until(NOON + 3600 + 300, now),
            "2026-05-01T13:05:00Z (in 1h 5m)"
        );
        assert_eq!(valid_until(NOON - 1, now), "2026-05-01T11:59:59Z (expired)");
    }
}
