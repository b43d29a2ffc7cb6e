//! `accessctl status` and `accessctl reload`: the daemon itself, as opposed
//! to the users and devices it serves.

use std::fmt::Write as _;

use gatehouse_config::api::{ReloadResponse, StatusResponse};

use crate::Ctx;
use crate::client::ClientError;
use crate::output::{self, OutputError};

/// Why `status` or `reload` failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Output(#[from] OutputError),
}

/// `accessctl status`.
pub async fn status(ctx: &Ctx) -> Result<(), StatusError> {
    let reply = ctx.client.get::<StatusResponse>("/v1/status").await?;
    if ctx.json {
        ctx.out.emit_json(&reply.json)?;
    } else {
        ctx.out.emit(&render_status(&reply.body))?;
    }
    Ok(())
}

/// `accessctl reload`. An invalid config comes back as an API error whose
/// details list every problem; the edge prints them one per line.
pub async fn reload(ctx: &Ctx) -> Result<(), StatusError> {
    let reply = ctx
        .client
        .post::<(), ReloadResponse>("/v1/reload", None)
        .await?;
    if ctx.json {
        ctx.out.emit_json(&reply.json)?;
    } else {
        ctx.out.emit(&render_reload(&reply.body))?;
    }
    Ok(())
}

fn render_reload(r: &ReloadResponse) -> String {
    let mut out = format!("reloaded {}: {} group(s)\n", r.config_path, r.groups);
    if !r.restart_required.is_empty() {
        let _ = writeln!(
            out,
            "these changes take effect only after a restart (systemctl restart accessd):"
        );
        for key in &r.restart_required {
            let _ = writeln!(out, "  {key}");
        }
    }
    out
}

fn render_status(s: &StatusResponse) -> String {
    let users = &s.users;
    let rows = [
        ("gateway", s.gateway.clone()),
        ("version", s.version.clone()),
        ("uptime", output::human_duration(s.uptime_secs)),
        ("started at", output::short_time(&s.started_at)),
        ("config", s.config_path.clone()),
        ("wireguard key", s.wireguard_public_key.clone()),
        (
            "endpoint",
            s.endpoint.clone().unwrap_or_else(|| "unknown".to_owned()),
        ),
        (
            "users",
            format!(
                "{} ({} active, {} pending, {} disabled)",
                users.total, users.active, users.pending, users.disabled
            ),
        ),
        ("devices", s.devices.to_string()),
        ("groups", s.groups.to_string()),
        ("audit records", s.audit_records.to_string()),
    ];
    let mut out = String::new();
    for (label, value) in rows {
        let _ = writeln!(out, "{label:<14} {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::api::UserCounts;

    #[test]
    fn status_reads_as_a_list() {
        let text = render_status(&StatusResponse {
            version: "0.1.0".into(),
            gateway: "research-gw".into(),
            started_at: "2026-05-01T10:00:00.25Z".into(),
            uptime_secs: 3 * 86_400 + 4 * 3600,
            config_path: "/etc/gatehouse/gatehouse.toml".into(),
            wireguard_public_key: "KEY".into(),
            endpoint: None,
            users: UserCounts {
                total: 5,
                pending: 1,
                active: 3,
                disabled: 1,
            },
            devices: 7,
            groups: 2,
            audit_records: 1234,
        });
        assert_eq!(
            text,
            "\
gateway        research-gw
version        0.1.0
uptime         3d 4h
started at     2026-05-01T10:00:00Z
config         /etc/gatehouse/gatehouse.toml
wireguard key  KEY
endpoint       unknown
users          5 (3 active, 1 pending, 1 disabled)
devices        7
groups         2
audit records  1234
"
        );
    }

    #[test]
    fn reload_names_what_needs_a_restart() {
        let mut r = ReloadResponse {
            config_path: "/etc/gatehouse/gatehouse.toml".into(),
            groups: 2,
            restart_required: Vec::new(),
        };
        let text = render_reload(&r);
        assert_eq!(text, "reloaded /etc/gatehouse/gatehouse.toml: 2 group(s)\n");
        r.restart_required = vec!["vpn.listen".into(), "admin.socket".into()];
        let text = render_reload(&r);
        assert!(
            text.ends_with(":\n  vpn.listen\n  admin.socket\n"),
            "{text}"
        );
    }
}
