//! `accessctl status` and `accessctl reload`: the daemon itself, as opposed
//! to the users and devices it serves.

use std::fmt::Write as _;
use std::time::SystemTime;

use gatehouse_config::api::{ReloadResponse, StatusResponse, VpnStatus};

use crate::Ctx;
use crate::client::ClientError;
use crate::device;
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
        ctx.out
            .emit(&render_status(&reply.body, SystemTime::now()))?;
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

fn render_status(s: &StatusResponse, now: SystemTime) -> String {
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
        (
            "audit chain",
            s.audit_break
                .as_ref()
                .map_or("no break known".to_owned(), |why| format!("BROKEN: {why}")),
        ),
        ("audit export", export_summary(&s.audit_exports)),
        ("vpn", vpn_summary(s.vpn.as_ref())),
        ("store", s.store.clone()),
        (
            "ha",
            s.ha.as_ref()
                .map_or("no (a single gateway)".to_owned(), |ha| {
                    format!(
                        "{} is {} (lease generation {})",
                        ha.node, ha.role, ha.generation
                    )
                }),
        ),
    ];
    let mut out = String::new();
    for (label, value) in rows {
        let _ = writeln!(out, "{label:<14} {value}");
    }
    if let Some(vpn) = s.vpn.as_ref().filter(|v| !v.peers_detail.is_empty()) {
        let _ = writeln!(out, "\nPeers ({})", vpn.peers_detail.len());
        out.push_str(
            &device::device_table(&vpn.peers_detail, now, device::KeyColumn::Hide)
                .render_indented("  "),
        );
    }
    if let Some(portal) = &s.portal {
        let _ = writeln!(
            out,
            "\nPortal on {} ({})",
            portal.listen,
            portal.url.as_deref().unwrap_or("no URL known")
        );
        let kind = if portal.self_signed {
            "self-signed"
        } else {
            "configured"
        };
        let _ = writeln!(out, "  certificate  {} ({kind})", portal.tls_fingerprint);
        if let Some(sso) = &portal.sso {
            let seen = match (&sso.last_discovery, &sso.last_error) {
                (_, Some(error)) => format!("unavailable: {error}"),
                (Some(at), None) => format!("discovered {}", output::short_time(at)),
                (None, None) => "not discovered yet".to_owned(),
            };
            let _ = writeln!(out, "  sso          {} ({seen})", sso.issuer);
        }
    }
    if let Some(ssh) = &s.ssh {
        let _ = writeln!(
            out,
            "\nSSH jump host on {}: {} connection(s), {} channel(s)",
            ssh.listen,
            ssh.connections,
            ssh.channels.len()
        );
        let _ = writeln!(out, "  host key     {}", ssh.host_key_fingerprint);
        let _ = writeln!(out, "  known_hosts  {}", ssh.known_hosts);
        if let Some(ca) = &ssh.user_ca_fingerprint {
            let _ = writeln!(out, "  user CA      {ca}");
        }
        if let Some(ca) = &ssh.host_ca_fingerprint {
            let _ = writeln!(out, "  host CA      {ca}");
        }
        if !ssh.channels.is_empty() {
            out.push_str(&crate::ssh::channel_table(&ssh.channels).render_indented("  "));
        }
    }
    out
}

/// Each exporter of the audit log on one line: where, connected or not,
/// how many records behind.
fn export_summary(exports: &[gatehouse_config::api::AuditExportStatus]) -> String {
    if exports.is_empty() {
        return "none".to_owned();
    }
    exports
        .iter()
        .map(|e| {
            format!(
                "{} to {}: {}, {} records behind, {} reconnects",
                e.name,
                e.receiver,
                if e.connected {
                    "connected"
                } else {
                    "not connected"
                },
                e.lag_records,
                e.reconnects
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn vpn_summary(vpn: Option<&VpnStatus>) -> String {
    match vpn {
        None => "not running".to_owned(),
        Some(v) => format!(
            "{} on UDP {}: {} peer(s), {} connected",
            v.interface, v.listen, v.peers, v.connected
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::api::{DeviceInfo, UserCounts};

    fn response(vpn: Option<VpnStatus>) -> StatusResponse {
        StatusResponse {
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
            audit_break: None,
            vpn,
            ssh: None,
            portal: None,
            store: "/var/lib/gatehouse/gatehouse.db".into(),
            ha: None,
            audit_exports: Vec::new(),
        }
    }

    #[test]
    fn status_shows_the_portal_certificate() {
        let mut status = response(None);
        status.portal = Some(gatehouse_config::api::PortalStatus {
            listen: "0.0.0.0:443".into(),
            url: Some("https://vpn.example.com".into()),
            tls_fingerprint: "SHA256:ab12".into(),
            self_signed: true,
            sso: None,
        });
        let text = render_status(&status, now());
        assert!(
            text.ends_with(
                "\nPortal on 0.0.0.0:443 (https://vpn.example.com)\n  certificate  SHA256:ab12 (self-signed)\n"
            ),
            "{text}"
        );
        let portal = status.portal.as_mut().unwrap();
        portal.sso = Some(gatehouse_config::api::SsoStatus {
            issuer: "https://idp.example.org".into(),
            last_discovery: None,
            last_error: Some("discovery failed: connection refused".into()),
        });
        let text = render_status(&status, now());
        assert!(
            text.ends_with(
                "  sso          https://idp.example.org (unavailable: discovery failed: connection refused)\n"
            ),
            "{text}"
        );
    }

    fn now() -> SystemTime {
        humantime::parse_rfc3339("2026-05-01T12:00:00Z").expect("time")
    }

    #[test]
    fn status_reads_as_a_list() {
        let text = render_status(&response(None), now());
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
audit chain    no break known
audit export   none
vpn            not running
store          /var/lib/gatehouse/gatehouse.db
ha             no (a single gateway)
"
        );
    }

    #[test]
    fn status_says_how_far_behind_the_audit_export_is() {
        let mut status = response(None);
        status.audit_exports = vec![gatehouse_config::api::AuditExportStatus {
            name: "syslog".into(),
            receiver: "logs.example.org:6514".into(),
            connected: false,
            lag_records: 42,
            reconnects: 3,
        }];
        let text = render_status(&status, now());
        assert!(
            text.contains(
                "\naudit export   syslog to logs.example.org:6514: not connected, 42 records behind, 3 reconnects\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn status_names_a_broken_audit_chain() {
        let mut status = response(None);
        status.audit_break = Some("records were removed; run `accessctl audit verify`".into());
        let text = render_status(&status, now());
        assert!(
            text.contains(
                "\naudit chain    BROKEN: records were removed; run `accessctl audit verify`\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn status_lists_the_live_peers() {
        let peer = DeviceInfo {
            user: "alice".into(),
            name: "laptop".into(),
            public_key: "PUB".into(),
            address: "10.200.0.2".into(),
            created_at: "2026-05-01T10:00:00Z".into(),
            last_handshake: Some("2026-05-01T11:59:30Z".into()),
            endpoint: Some("[2001:db8::7]:40000".into()),
            rx_bytes: Some(2048),
            tx_bytes: Some(100),
            live: Some(true),
            ..DeviceInfo::default()
        };
        let idle = DeviceInfo {
            name: "phone".into(),
            address: "10.200.0.3".into(),
            last_handshake: None,
            endpoint: None,
            rx_bytes: Some(0),
            tx_bytes: Some(0),
            ..peer.clone()
        };
        let vpn = VpnStatus {
            interface: "gatehouse0".into(),
            listen: "0.0.0.0:51820".into(),
            peers: 2,
            connected: 1,
            peers_detail: vec![peer, idle],
        };
        let text = render_status(&response(Some(vpn)), now());
        assert!(
            text.ends_with(
                "\
audit records  1234
audit chain    no break known
audit export   none
vpn            gatehouse0 on UDP 0.0.0.0:51820: 2 peer(s), 1 connected
store          /var/lib/gatehouse/gatehouse.db
ha             no (a single gateway)

Peers (2)
  USER   DEVICE  ADDRESS     STATE      ENDPOINT             HANDSHAKE  RX       TX
  alice  laptop  10.200.0.2  connected  [2001:db8::7]:40000  30s ago    2.0 KiB  100 B
  alice  phone   10.200.0.3  live       -                    never      0 B      0 B
"
            ),
            "{text}"
        );
    }

    #[test]
    fn status_from_an_older_daemon_has_no_vpn_section() {
        let mut json = serde_json::to_value(response(None)).expect("json");
        assert!(json.get("vpn").is_none(), "absent, not null: {json}");
        json.as_object_mut().expect("object").remove("vpn");
        let parsed: StatusResponse = serde_json::from_value(json).expect("parses");
        assert!(parsed.vpn.is_none());
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
