//! `accessctl ssh host-cert sign|list|revoke` and `ssh krl --host`: the
//! private hosts' certificates, which the gateway's host CA signs so that
//! members trust one `@cert-authority` line instead of each host's key.
//! accessd holds the CA key, checks the principals, signs, records and
//! audits; this reads the host's public key file, asks, and prints or
//! writes what comes back.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use gatehouse_config::api::{
    HostCertInfo, HostCertList, HostKrlResponse, SignHostCertRequest, SignedHostCert,
};

use super::SshError;
use super::certs::{deliver, read_public_key, unix_time, valid_until, write_krl};
use crate::Ctx;
use crate::output::{self, Table};

/// `ssh host-cert ...`.
#[derive(Debug, Subcommand)]
pub enum HostCertCommand {
    /// Sign a private host's public key with the host CA.
    #[command(
        long_about = "Sign a private host's SSH host key with the gateway's host CA. \
        Members whose known_hosts carry the host CA's @cert-authority line (the \
        portal's ssh_config snippet and known_hosts download, or `accessctl ssh ca \
        --host`) then reach the host through `ssh -J` without a fingerprint prompt.\n\n\
        --principals are the names and addresses members type to reach the host: \
        host names, and addresses inside a group's subnet (members trust the host CA \
        for those hosts only). The certificate is valid for --lifetime or \
        `ssh.host_cert_lifetime` (default 90d), whichever is shorter; it is recorded \
        and audited (ssh.host_cert.issue). Sign the host again before it expires: \
        `accessctl ssh host-cert list` shows what expires within 14 days.\n\n\
        On the host, install the certificate as /etc/ssh/ssh_host_ed25519_key-cert.pub \
        with `HostCertificate /etc/ssh/ssh_host_ed25519_key-cert.pub` in sshd_config \
        (packaging/cloud-init-private-host.yaml does it from SSM or a file).\n\n\
        Without --out the certificate line goes to standard output and the summary \
        to standard error.\n\n\
        Examples:\n  \
        accessctl ssh host-cert sign --key jupyter_host_ed25519_key.pub \
        --principals 10.0.3.140,jupyter.internal --out jupyter-cert.pub\n  \
        accessctl ssh host-cert sign --key host.pub --principals 10.0.3.7 --lifetime 30d > host-cert.pub"
    )]
    Sign {
        /// The host's OpenSSH public key file (its /etc/ssh/ssh_host_ed25519_key.pub).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The names and addresses members reach the host by, comma-separated.
        #[arg(long, value_name = "LIST", value_delimiter = ',', required = true)]
        principals: Vec<String>,
        /// How long the certificate is valid (e.g. 30d); never longer than
        /// the gateway's ssh.host_cert_lifetime, which is the default.
        #[arg(long, value_name = "DURATION", value_parser = crate::args::positive_duration)]
        lifetime: Option<Duration>,
        /// Write the certificate here (mode 0644) instead of printing it; an
        /// existing file is replaced.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List the unexpired host certificates, the soonest to expire first.
    #[command(
        long_about = "List every unexpired host certificate the host CA signed, the \
        soonest to expire first: serial, principals, expiry, and whether it expires \
        within 14 days (sign that host again) or was revoked. The metric \
        gatehouse_ssh_host_certs_expiring counts the ones expiring soon.\n\n\
        Examples:\n  accessctl ssh host-cert list\n  accessctl ssh host-cert list --expiring\n  \
        accessctl --json ssh host-cert list"
    )]
    List {
        /// Only those that expire within 14 days and are not revoked.
        #[arg(long)]
        expiring: bool,
    },
    /// Revoke a host certificate (audited); the host KRL lists it.
    #[command(
        long_about = "Revoke host certificate SERIAL (from `accessctl ssh host-cert list`). \
        The revocation is audited (ssh.host_cert.revoke), and from then on the host KRL \
        (`accessctl ssh krl --host --out FILE`, for members' RevokedHostKeys) and its \
        @revoked lines refuse the certificate until it expires.\n\n\
        Example:\n  accessctl ssh host-cert revoke 4211837401963214870"
    )]
    Revoke {
        /// The certificate's serial.
        serial: u64,
    },
}

/// `ssh host-cert ...`.
pub(super) async fn host_cert(cmd: HostCertCommand, ctx: &Ctx) -> Result<(), SshError> {
    match cmd {
        HostCertCommand::Sign {
            key,
            principals,
            lifetime,
            out,
        } => {
            let request = SignHostCertRequest {
                public_key: read_public_key(&key)?,
                principals,
                lifetime_secs: lifetime.map(|d| d.as_secs()),
            };
            sign(&request, out.as_deref(), ctx).await
        }
        HostCertCommand::List { expiring } => {
            let reply = ctx
                .client
                .get::<HostCertList>("/v1/ssh/host-certificates")
                .await?;
            let mut list = reply.body;
            if expiring {
                list.certificates.retain(|c| c.expires_soon);
            }
            if ctx.json {
                ctx.out
                    .emit_json(&serde_json::to_value(&list).unwrap_or_default())?;
            } else {
                ctx.out
                    .emit(&render_list(&list, expiring, SystemTime::now()))?;
            }
            Ok(())
        }
        HostCertCommand::Revoke { serial } => {
            let reply = ctx
                .client
                .delete::<HostCertInfo>(&format!("/v1/ssh/host-certificates/{serial}"))
                .await?;
            if ctx.json {
                ctx.out.emit_json(&reply.json)?;
            } else {
                ctx.out.emit(&format!(
                    "revoked host certificate {serial} ({}); members refuse it once their \
                     RevokedHostKeys holds `accessctl ssh krl --host --out FILE`, or their \
                     known_hosts its @revoked line\n",
                    output::list(&reply.body.principals, ", ")
                ))?;
            }
            Ok(())
        }
    }
}

/// `ssh krl --host`: fetch, check, write atomically, then report.
pub(super) async fn host_krl(out: &Path, ctx: &Ctx) -> Result<(), SshError> {
    let reply = ctx
        .client
        .get::<HostKrlResponse>("/v1/ssh/host-krl")
        .await?;
    write_krl(out, &reply.body.krl_base64)?;
    if ctx.json {
        ctx.out.emit_json(&reply.json)?;
        return Ok(());
    }
    let krl = &reply.body;
    let mut text = format!(
        "wrote {}: it revokes {} host certificate(s); use it as RevokedHostKeys in members' ssh_config\n",
        out.display(),
        krl.revoked.len()
    );
    if !krl.known_hosts_revoked.is_empty() {
        text.push_str("\nOr add these lines to members' known_hosts:\n");
        for line in &krl.known_hosts_revoked {
            text.push_str(&format!("{line}\n"));
        }
    }
    ctx.out.emit(&text)?;
    Ok(())
}

/// `ssh host-cert sign` once the key file is read: ask, then write or print.
async fn sign(
    request: &SignHostCertRequest,
    out: Option<&Path>,
    ctx: &Ctx,
) -> Result<(), SshError> {
    let reply = ctx
        .client
        .post::<_, SignedHostCert>("/v1/ssh/host-certificates", Some(request))
        .await?;
    let signed = &reply.body;
    let summary = || {
        let info = &signed.info;
        let mut text = format!(
            "signed host certificate {} ({}) for host key {}\n  principals   {}\n  valid until  {}\n",
            info.serial,
            info.key_id,
            info.key_fingerprint,
            output::list(&info.principals, ", "),
            valid_until(info.valid_before, SystemTime::now()),
        );
        if let Some(path) = out {
            text.push_str(&format!("  written to   {}\n", path.display()));
        }
        text
    };
    deliver(
        &signed.certificate,
        signed.info.serial,
        &reply.json,
        out,
        summary,
        ctx,
    )
}

fn render_list(list: &HostCertList, expiring_only: bool, now: SystemTime) -> String {
    if list.certificates.is_empty() {
        return match expiring_only {
            true => "no host certificate expires within 14 days\n".into(),
            false => "no unexpired host certificates\n".into(),
        };
    }
    let mut table = Table::new(&["SERIAL", "PRINCIPALS", "VALID UNTIL", "STATE"]);
    for cert in &list.certificates {
        let state = match (&cert.revoked_at, cert.expires_soon) {
            (Some(at), _) => format!("revoked {}", unix_time(*at)),
            (None, true) => "expires soon: sign again".into(),
            (None, false) => "ok".into(),
        };
        table.row(vec![
            cert.serial.to_string(),
            output::list(&cert.principals, ","),
            valid_until(cert.valid_before, now),
            state,
        ]);
    }
    let soon = list.certificates.iter().filter(|c| c.expires_soon).count();
    let mut text = table.render();
    if soon > 0 {
        text.push_str(&format!(
            "\n{soon} expire(s) within 14 days: sign those hosts again \
             (accessctl ssh host-cert sign) and install the new certificates\n"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(serial: u64, valid_before: i64, soon: bool, revoked: Option<i64>) -> HostCertInfo {
        HostCertInfo {
            serial,
            key_id: "host:10.0.3.140@gw".into(),
            principals: vec!["10.0.3.140".into(), "jupyter.internal".into()],
            valid_after: 0,
            valid_before,
            key_fingerprint: "SHA256:h".into(),
            issued_at: 0,
            issued_by: "admin:0".into(),
            revoked_at: revoked,
            revoked_by: revoked.map(|_| "admin:0".into()),
            expires_soon: soon,
        }
    }

    /// Each certificate is a row that says what to do about it, and the
    /// ones expiring soon are counted under the table.
    #[test]
    fn the_list_marks_what_expires_soon_and_what_was_revoked() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let list = HostCertList {
            expiring_within_secs: 14 * 86_400,
            certificates: vec![
                cert(7, 86_400, true, None),
                cert(8, 90 * 86_400, false, Some(500)),
                cert(9, 90 * 86_400, false, None),
            ],
        };
        let text = render_list(&list, false, now);
        let rows: Vec<&str> = text.lines().collect();
        assert!(
            rows[1].starts_with("7 ") && rows[1].contains("expires soon"),
            "{text}"
        );
        assert!(rows[2].contains("revoked 1970-01-01T00:08:20Z"), "{text}");
        assert!(rows[3].ends_with("ok"), "{text}");
        assert!(rows[1].contains("10.0.3.140,jupyter.internal"), "{text}");
        assert!(text.contains("1 expire(s) within 14 days"), "{text}");
        let empty = HostCertList {
            expiring_within_secs: 14 * 86_400,
            certificates: vec![],
        };
        assert_eq!(
            render_list(&empty, true, now),
            "no host certificate expires within 14 days\n"
        );
    }
}
