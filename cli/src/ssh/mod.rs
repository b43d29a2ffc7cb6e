//! `accessctl ssh ...`: the live channels of the SSH jump host, and closing
//! one of them (audited as `ssh.channel.kill`); the gateway's SSH user CA,
//! certificates it signs for members' keys, and the KRL of the certificates
//! it revoked, for the private hosts' sshd.
//!
//! - this file: the command tree, its errors, dispatch, and `list`/`kill`
//!   ([`channel_table`] is also `accessctl status`'s);
//! - [`certs`]: `ca`, `cert issue` and `krl`, whose CA key, signing and KRL
//!   belong to accessd;
//! - [`host_certs`]: `host-cert sign|list|revoke` and `krl --host`, the
//!   private hosts' certificates from the host CA.

mod certs;
mod host_certs;

use std::io;
use std::path::PathBuf;

use clap::Subcommand;
use gatehouse_config::api::SshChannelInfo;

use crate::Ctx;
use crate::client::ClientError;
use crate::keys::KeyError;
use crate::output::{self, OutputError, Table};

#[derive(Debug, Subcommand)]
pub enum SshCommand {
    /// List the live jump host channels: user, source, target, bytes.
    #[command(
        long_about = "List the live direct-tcpip channels of the SSH jump host: \
        the id (for `accessctl ssh kill`), user, client address, the target as asked \
        and the checked address relayed to, start time and bytes each way.\n\n\
        Example:\n  accessctl ssh list"
    )]
    List,
    /// Close one live channel now (audited).
    #[command(
        long_about = "Close one live channel of the SSH jump host now. The kill \
        is written to the audit log (ssh.channel.kill) before it takes effect; the \
        channel's ssh.session.end record follows with the reason.\n\n\
        Example:\n  accessctl ssh kill 42"
    )]
    Kill {
        /// The channel id from `accessctl ssh list`.
        id: u64,
    },
    /// Print the SSH user CA (or with --host the host CA): public key,
    /// fingerprint, and where to put it.
    #[command(long_about = "Print the gateway's SSH user CA, which signs members' \
        certificates: its public line (for TrustedUserCAKeys on the private hosts), \
        its fingerprint, and a ready sshd_config snippet for a private host. The \
        gateway issues certificates only with `ssh.certificates = true`.\n\n\
        With --host, print the host CA instead, which signs the private hosts' \
        certificates: its public line, its fingerprint, and the @cert-authority \
        line for members' known_hosts, for the hosts of every group's IPv4 \
        subnets (OpenSSH patterns such as 10.0.3.*).\n\n\
        Examples:\n  accessctl ssh ca\n  \
        accessctl ssh ca --public-key-only > /etc/ssh/gatehouse_user_ca.pub\n  \
        accessctl ssh ca --host\n  \
        accessctl ssh ca --host --known-hosts-only >> ~/.ssh/known_hosts")]
    Ca {
        /// Print only the CA's public line, to redirect into a file (even
        /// with --json).
        #[arg(long)]
        public_key_only: bool,
        /// The host CA, which signs the private hosts' certificates.
        #[arg(long)]
        host: bool,
        /// With --host: print only the @cert-authority line for known_hosts.
        #[arg(long, requires = "host", conflicts_with = "public_key_only")]
        known_hosts_only: bool,
    },
    /// Issue SSH user certificates signed by the gateway's user CA.
    Cert {
        #[command(subcommand)]
        command: certs::CertCommand,
    },
    /// Sign, list and revoke the private hosts' certificates (host CA).
    #[command(name = "host-cert")]
    HostCert {
        #[command(subcommand)]
        command: host_certs::HostCertCommand,
    },
    /// Write the KRL (revoked certificates) for sshd's RevokedKeys, or with
    /// --host the host KRL for members' RevokedHostKeys.
    #[command(
        long_about = "Write the gateway's key revocation list to FILE: an OpenSSH \
        KRL of every unexpired certificate the gateway issued that is dead: its member \
        was removed or is disabled, pending or expired, no longer holds its key, or \
        no longer has one of its principals; with the list of what it revokes and why. Install FILE as \
        RevokedKeys on the private hosts and refresh it regularly: a certificate \
        works until it expires unless its host has the KRL. FILE is written as \
        FILE.tmp and renamed, so sshd never reads half of it.\n\n\
        With --host, write the host KRL instead: every unexpired host certificate \
        an admin revoked (`accessctl ssh host-cert revoke`), for members' \
        `RevokedHostKeys` in ssh_config; the same as @revoked lines for known_hosts \
        are printed too.\n\n\
        Examples:\n  accessctl ssh krl --out /etc/ssh/gatehouse_revoked.krl\n  \
        accessctl ssh krl --host --out ~/.ssh/gatehouse_revoked_hosts.krl"
    )]
    Krl {
        /// Where to write the KRL (replaced atomically, mode 0644).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The host KRL (revoked host certificates) instead.
        #[arg(long)]
        host: bool,
    },
}

/// Why an `ssh` command failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Output(#[from] OutputError),
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error(
        "{} holds {count} keys; a certificate is for one key: give its .pub file",
        path.display()
    )]
    SeveralKeys { path: PathBuf, count: usize },
    #[error(
        "certificate {serial} was issued but cannot be written to {}: {source}; \
         issue it again once the file can be written",
        path.display()
    )]
    WriteCert {
        serial: u64,
        path: PathBuf,
        source: io::Error,
    },
    #[error("accessd's KRL is not valid base64: {0}")]
    KrlBase64(#[source] base64::DecodeError),
    #[error("accessd's answer is not an OpenSSH KRL (no SSHKRL header); nothing was written")]
    NotAKrl,
    #[error("cannot write the KRL to {}: {source}", path.display())]
    WriteKrl { path: PathBuf, source: io::Error },
}

pub async fn run(cmd: SshCommand, ctx: &Ctx) -> Result<(), SshError> {
    match cmd {
        SshCommand::List => {
            let reply = ctx
                .client
                .get::<Vec<SshChannelInfo>>("/v1/ssh/channels")
                .await?;
            if ctx.json {
                ctx.out.emit_json(&reply.json)?;
            } else if reply.body.is_empty() {
                ctx.out.emit("no live SSH channels\n")?;
            } else {
                ctx.out.emit(&channel_table(&reply.body).render())?;
            }
        }
        SshCommand::Kill { id } => {
            let reply = ctx
                .client
                .delete::<SshChannelInfo>(&format!("/v1/ssh/channels/{id}"))
                .await?;
            if ctx.json {
                ctx.out.emit_json(&reply.json)?;
            } else {
                let c = &reply.body;
                ctx.out.emit(&format!(
                    "closed SSH channel {} of {} ({} → {})\n",
                    c.id, c.user, c.source, c.requested
                ))?;
            }
        }
        SshCommand::Ca {
            public_key_only,
            host: false,
            ..
        } => certs::ca(public_key_only, ctx).await?,
        SshCommand::Ca {
            public_key_only,
            known_hosts_only,
            host: true,
        } => certs::host_ca(public_key_only, known_hosts_only, ctx).await?,
        SshCommand::Cert { command } => certs::cert(command, ctx).await?,
        SshCommand::HostCert { command } => host_certs::host_cert(command, ctx).await?,
        SshCommand::Krl { out, host: false } => certs::krl(&out, ctx).await?,
        SshCommand::Krl { out, host: true } => host_certs::host_krl(&out, ctx).await?,
    }
    Ok(())
}

/// One row per channel; also used by `accessctl status`.
pub fn channel_table(channels: &[SshChannelInfo]) -> Table {
    let mut table = Table::new(&[
        "ID",
        "USER",
        "SOURCE",
        "TARGET",
        "RELAYED TO",
        "STARTED",
        "UP",
        "DOWN",
    ]);
    for c in channels {
        table.row(vec![
            c.id.to_string(),
            c.user.clone(),
            c.source.clone(),
            c.requested.clone(),
            c.resolved.clone().unwrap_or_else(|| "connecting".into()),
            output::short_time(&c.started_at),
            c.bytes_up.to_string(),
            c.bytes_down.to_string(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    /// Parses a command line given as one string (no quoting needed here).
    fn parse(line: &str) -> Result<crate::Cli, clap::Error> {
        crate::Cli::try_parse_from(std::iter::once("accessctl").chain(line.split_whitespace()))
    }

    #[test]
    fn channel_table_columns() {
        let channels = [SshChannelInfo {
            id: 7,
            user: "alice".into(),
            key_fingerprint: "SHA256:k".into(),
            source: "192.0.2.10:50000".into(),
            requested: "db.internal:22".into(),
            resolved: None,
            started_at: "2026-05-01T10:00:00Z".into(),
            bytes_up: 10,
            bytes_down: 2048,
        }];
        let text = channel_table(&channels).render();
        let row = text.lines().nth(1).expect("a row");
        assert!(row.starts_with("7 "), "{text}");
        assert!(
            row.contains("alice") && row.contains("db.internal:22"),
            "{text}"
        );
        assert!(
            row.contains("connecting") && row.ends_with("2048"),
            "{text}"
        );
    }

    #[test]
    fn new_commands_parse_and_check_their_arguments() {
        for line in [
            "ssh ca",
            "ssh ca --public-key-only",
            "--json ssh ca --public-key-only",
            "ssh cert issue alice --key a.pub",
            "ssh cert issue alice --key a.pub --lifetime 1h --out c.pub",
            "ssh krl --out revoked.krl --json",
            "ssh krl --host --out revoked_hosts.krl",
            "ssh host-cert sign --key h.pub --principals 10.0.3.140,jupyter.internal",
            "ssh host-cert sign --key h.pub --principals 10.0.3.7 --lifetime 30d --out c.pub",
            "ssh host-cert list",
            "ssh host-cert list --expiring",
            "ssh host-cert revoke 42",
        ] {
            parse(line).unwrap_or_else(|e| panic!("{line:?} should parse: {e}"));
        }
        for line in [
            "ssh krl",
            "ssh cert",
            "ssh cert issue alice",
            "ssh cert issue Alice --key a.pub",
            "ssh cert issue alice --key a.pub --lifetime soon",
            "ssh cert issue alice --key a.pub --lifetime 0s",
            "ssh host-cert sign --key h.pub",
            "ssh host-cert sign --principals 10.0.3.7",
            "ssh host-cert sign --key h.pub --principals h --lifetime 0s",
            "ssh host-cert revoke",
            "ssh host-cert revoke abc",
        ] {
            let err = parse(line).expect_err("a usage error");
            assert_eq!(err.exit_code(), 2, "{line:?}: {err}");
        }
    }
}
