//! `accessctl ssh ...`: the live channels of the SSH jump host, and closing
//! one of them (audited as `ssh.channel.kill`).

use clap::Subcommand;
use gatehouse_config::api::SshChannelInfo;

use crate::Ctx;
use crate::client::ClientError;
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
}

/// Why an `ssh` command failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Output(#[from] OutputError),
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
}
