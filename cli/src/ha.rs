//! `accessctl ha ...`: the two gateways of an HA pair. `status` shows each
//! node's role, the lease (holder, generation, expiry) and the last
//! failover; `handover` makes the active gateway release the lease, so the
//! standby takes over within a second (a rolling upgrade: hand over, then
//! upgrade the former active).

use clap::Subcommand;
use gatehouse_config::api::{HaHandoverResponse, HaStatusResponse};

use crate::Ctx;
use crate::client::ClientError;
use crate::output::{OutputError, Table};

#[derive(Debug, Subcommand)]
pub enum HaCommand {
    /// Each node's role, the lease and the last failover.
    #[command(
        long_about = "Show the HA pair as this gateway and the shared database see it: \
        this node's role and lease generation; the lease (holder, generation, when it \
        was taken and last renewed, when it runs out); each node's last report (role, \
        generation, how long ago, failovers); and the last failover with how long the \
        pair had no active gateway and how long the take-over took.\n\n\
        Examples:\n  accessctl ha status\n  accessctl ha status --json"
    )]
    Status,
    /// Make this (active) gateway release the lease to the standby.
    #[command(
        long_about = "Make this gateway, the active one, release the HA lease now: \
        the standby takes it on its next attempt (within a second) and moves the \
        elastic IP and the pool routes to itself; devices' tunnels resume with the \
        same config. This gateway then waits one lease TTL before it would take the \
        lease back. Run it on the active gateway (on the standby it is refused). \
        Audited as ha.release here and ha.acquire on the other node.\n\n\
        Example:\n  accessctl ha handover"
    )]
    Handover,
}

/// Why an `ha` command failed.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Output(#[from] OutputError),
}

pub async fn run(cmd: HaCommand, ctx: &Ctx) -> Result<(), HaError> {
    match cmd {
        HaCommand::Status => {
            let reply = ctx.client.get::<HaStatusResponse>("/v1/ha").await?;
            if ctx.json {
                ctx.out.emit_json(&reply.json)?;
            } else {
                ctx.out.emit(&render_status(&reply.body))?;
            }
        }
        HaCommand::Handover => {
            let reply = ctx
                .client
                .post::<(), HaHandoverResponse>("/v1/ha/handover", None)
                .await?;
            if ctx.json {
                ctx.out.emit_json(&reply.json)?;
            } else {
                ctx.out.emit(&format!(
                    "{} released lease generation {}; the standby takes over now\n",
                    reply.body.node, reply.body.released_generation
                ))?;
            }
        }
    }
    Ok(())
}

fn render_status(s: &HaStatusResponse) -> String {
    let mut out = format!(
        "this node: {} ({}, generation {}); lease TTL {}s\n",
        s.node, s.role, s.generation, s.lease_ttl_secs
    );
    match &s.lease {
        Some(lease) => {
            out.push_str(&format!(
                "lease: {} (generation {}), taken {}, renewed {}, {} {}\n",
                lease.holder.as_deref().unwrap_or("nobody"),
                lease.generation,
                lease.acquired_at.as_deref().unwrap_or("never"),
                lease.renewed_at.as_deref().unwrap_or("never"),
                if lease.expires_in_ms >= 0 {
                    "runs out in"
                } else {
                    "ran out"
                },
                ms(lease.expires_in_ms.abs()),
            ));
        }
        None => out.push_str(&format!(
            "lease: unknown, the database cannot be read: {}\n",
            s.database_error.as_deref().unwrap_or("?")
        )),
    }
    if !s.nodes.is_empty() {
        let mut table = Table::new(&[
            "NODE",
            "ROLE",
            "GENERATION",
            "SEEN",
            "LAST RENEWAL",
            "FAILOVERS",
        ]);
        for n in &s.nodes {
            table.row(vec![
                n.node.clone(),
                n.role.clone(),
                n.generation.to_string(),
                format!("{} ago", ms(n.seen_ago_ms)),
                n.last_renewal.clone().unwrap_or_else(|| "-".into()),
                n.failovers.to_string(),
            ]);
        }
        out.push_str(&table.render());
    }
    match &s.last_failover {
        Some(f) => out.push_str(&format!(
            "last failover: {} from {} to {} (generation {}): {} without an active gateway, take-over {}\n",
            f.at,
            f.from.as_deref().unwrap_or("?"),
            f.to,
            f.generation,
            f.without_active_ms.map_or("?".into(), ms),
            f.takeover_ms.map_or("?".into(), |t| ms(i64::try_from(t).unwrap_or(i64::MAX))),
        )),
        None => out.push_str("last failover: none\n"),
    }
    out
}

/// `850 ms`, `4.2 s`.
fn ms(ms: i64) -> String {
    if ms.abs() < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::api::{HaFailover, HaLease, HaNode};

    #[test]
    fn status_names_the_holder_each_node_and_the_last_failover() {
        let status = HaStatusResponse {
            node: "gw-b".into(),
            role: "active".into(),
            generation: 7,
            lease_ttl_secs: 5,
            lease: Some(HaLease {
                holder: Some("gw-b".into()),
                generation: 7,
                acquired_at: Some("2026-12-01T10:00:00.000Z".into()),
                renewed_at: Some("2026-12-01T10:05:00.000Z".into()),
                expires_at: "2026-12-01T10:05:05.000Z".into(),
                expires_in_ms: 4200,
            }),
            nodes: vec![HaNode {
                node: "gw-a".into(),
                role: "stopped".into(),
                generation: 6,
                seen_at: "2026-12-01T09:59:58.000Z".into(),
                seen_ago_ms: 302_000,
                last_renewal: None,
                failovers: 0,
            }],
            last_failover: Some(HaFailover {
                at: "2026-12-01T10:00:00.100Z".into(),
                from: Some("gw-a".into()),
                to: "gw-b".into(),
                generation: 7,
                cause: "expired".into(),
                without_active_ms: Some(5600),
                takeover_ms: Some(420),
            }),
            database_error: None,
        };
        let text = render_status(&status);
        assert!(
            text.contains("this node: gw-b (active, generation 7)"),
            "{text}"
        );
        assert!(
            text.contains("lease: gw-b (generation 7)") && text.contains("runs out in 4.2 s"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("gw-a") && l.contains("stopped")),
            "{text}"
        );
        assert!(
            text.contains("from gw-a to gw-b (generation 7): 5.6 s without an active gateway, take-over 420 ms"),
            "{text}"
        );
    }
}
