//! The text exposition format 0.0.4 of one snapshot of the data plane.
//!
//! Written by hand rather than with a metrics crate: every value already
//! lives in an atomic of the engine or in boringtun's session stats, and the
//! per-peer label sets come and go with the peer table. A registry would
//! mean copying each value into a second set of counters (and pruning
//! departed peers from it) only to print them; the format itself is a few
//! lines per family plus label escaping, which the tests check.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use gatehouse_config::api::CONNECTED_WITHIN_SECS;

use crate::export::ExportFigures;
use crate::vpn::engine::{EngineCounters, PeerStatus};

/// The content type of the text exposition format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition for one snapshot of the data plane.
/// An HA node's figures, for the `gatehouse_ha_*` families.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaFigures {
    pub node: String,
    pub active: bool,
    pub generation: i64,
    pub acquisitions: u64,
    pub failovers: u64,
}

/// The `gatehouse_ha_*` families: the role (1 on the active gateway), the
/// lease generation, and how often this node took the lease (all causes,
/// and after the other node's lease ran out).
pub fn render_ha(out: &mut String, ha: &HaFigures) {
    let labels = format!("node=\"{}\"", escape_label(&ha.node));
    for (name, kind, help, value) in [
        (
            "gatehouse_ha_active",
            "gauge",
            "1 while this gateway is the active one of its HA pair, else 0.",
            u64::from(ha.active).to_string(),
        ),
        (
            "gatehouse_ha_lease_generation",
            "gauge",
            "The HA lease generation this gateway holds or last held.",
            ha.generation.to_string(),
        ),
        (
            "gatehouse_ha_acquisitions_total",
            "counter",
            "Times this gateway took the HA lease since it started.",
            ha.acquisitions.to_string(),
        ),
        (
            "gatehouse_ha_failovers_total",
            "counter",
            "Times this gateway took over after the other one's lease ran out.",
            ha.failovers.to_string(),
        ),
    ] {
        family(out, name, kind, help);
        out.push_str(&format!("{name}{{{labels}}} {value}\n"));
    }
}

/// One `gatehouse_audit_export_*` family: name, type, help, and its value.
type ExportFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ExportFigures) -> u64,
);

/// The `gatehouse_audit_export_*` families, one sample per exporter
/// (`exporter="syslog"`): how far behind the newest record it is, what it
/// wrote, how often it reconnected, whether it is connected. Nothing when
/// no exporter runs.
pub fn render_exports(out: &mut String, exports: &[(&str, ExportFigures)]) {
    if exports.is_empty() {
        return;
    }
    let families: [ExportFamily; 5] = [
        (
            "gatehouse_audit_export_lag_records",
            "gauge",
            "Audit records in the store the receiver is not yet known to have.",
            |f| f.lag,
        ),
        (
            "gatehouse_audit_export_bytes_total",
            "counter",
            "Bytes of framed messages written to the receiver (resent records counted again).",
            |f| f.bytes,
        ),
        (
            "gatehouse_audit_export_records_total",
            "counter",
            "Audit records written to the receiver (resent records counted again).",
            |f| f.records,
        ),
        (
            "gatehouse_audit_export_reconnects_total",
            "counter",
            "Connections to the receiver made after the first one.",
            |f| f.reconnects,
        ),
        (
            "gatehouse_audit_export_connected",
            "gauge",
            "1 while a connection to the receiver is up, else 0.",
            |f| u64::from(f.connected),
        ),
    ];
    for (name, kind, help, value) in families {
        family(out, name, kind, help);
        for (exporter, figures) in exports {
            let labels = format!("exporter=\"{}\"", escape_label(exporter));
            out.push_str(&format!("{name}{{{labels}}} {}\n", value(figures)));
        }
    }
}

pub fn render(peers: &[PeerStatus], counters: &EngineCounters, now: SystemTime) -> String {
    let mut out = String::with_capacity(1024 + peers.len() * 1024);
    let labels: Vec<String> = peers.iter().map(peer_labels).collect();
    let rows = || peers.iter().zip(&labels);

    family(
        &mut out,
        "gatehouse_peer_rx_bytes_total",
        "counter",
        "Bytes received from the peer (WireGuard session payload).",
    );
    for (peer, labels) in rows() {
        sample(
            &mut out,
            "gatehouse_peer_rx_bytes_total",
            labels,
            peer.rx_bytes,
        );
    }
    family(
        &mut out,
        "gatehouse_peer_tx_bytes_total",
        "counter",
        "Bytes sent to the peer (WireGuard session payload).",
    );
    for (peer, labels) in rows() {
        sample(
            &mut out,
            "gatehouse_peer_tx_bytes_total",
            labels,
            peer.tx_bytes,
        );
    }
    family(
        &mut out,
        "gatehouse_peer_last_handshake_seconds",
        "gauge",
        "Unix time of the peer's last completed handshake; 0 when it has had none.",
    );
    for (peer, labels) in rows() {
        let secs = peer
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        sample(
            &mut out,
            "gatehouse_peer_last_handshake_seconds",
            labels,
            secs,
        );
    }
    family(
        &mut out,
        "gatehouse_peer_packets_total",
        "counter",
        "Packets forwarded: rx = from the peer to the TUN device, tx = to the peer.",
    );
    for (peer, labels) in rows() {
        for (direction, value) in [("rx", peer.rx_packets), ("tx", peer.tx_packets)] {
            let labels = format!("{labels},direction=\"{direction}\"");
            sample(&mut out, "gatehouse_peer_packets_total", &labels, value);
        }
    }
    family(
        &mut out,
        "gatehouse_peer_dropped_packets_total",
        "counter",
        "Decrypted packets from the peer that were dropped, by reason.",
    );
    for (peer, labels) in rows() {
        for (reason, value) in [
            ("spoofed", peer.dropped_spoofed),
            ("policy", peer.dropped_policy),
            ("malformed", peer.dropped_malformed),
        ] {
            let labels = format!("{labels},reason=\"{reason}\"");
            sample(
                &mut out,
                "gatehouse_peer_dropped_packets_total",
                &labels,
                value,
            );
        }
    }

    family(
        &mut out,
        "gatehouse_vpn_peers",
        "gauge",
        "Devices configured as peers in the data plane.",
    );
    sample(&mut out, "gatehouse_vpn_peers", "", peers.len() as u64);
    family(
        &mut out,
        "gatehouse_vpn_connected_peers",
        "gauge",
        "Peers with a handshake in the last 180 seconds.",
    );
    let connected = peers.iter().filter(|p| is_connected(p, now)).count() as u64;
    sample(&mut out, "gatehouse_vpn_connected_peers", "", connected);
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    family(
        &mut out,
        "gatehouse_vpn_cookie_replies_total",
        "counter",
        "Cookie replies sent to handshake initiations while under load.",
    );
    sample(
        &mut out,
        "gatehouse_vpn_cookie_replies_total",
        "",
        load(&counters.cookie_replies),
    );
    family(
        &mut out,
        "gatehouse_vpn_dropped_datagrams_total",
        "counter",
        "UDP datagrams dropped before reaching a peer's session, by reason.",
    );
    for (reason, counter) in [
        ("malformed", &counters.malformed_datagrams),
        ("unknown_peer", &counters.unknown_peer),
        ("handshake_error", &counters.handshake_errors),
        ("decrypt_error", &counters.decrypt_errors),
    ] {
        let labels = format!("reason=\"{reason}\"");
        sample(
            &mut out,
            "gatehouse_vpn_dropped_datagrams_total",
            &labels,
            load(counter),
        );
    }
    family(
        &mut out,
        "gatehouse_vpn_dropped_tun_packets_total",
        "counter",
        "Packets from the TUN device that could not be sent to a peer, by reason.",
    );
    for (reason, counter) in [
        ("malformed", &counters.tun_malformed),
        ("no_peer", &counters.tun_no_peer),
        ("no_endpoint", &counters.tun_no_endpoint),
    ] {
        let labels = format!("reason=\"{reason}\"");
        sample(
            &mut out,
            "gatehouse_vpn_dropped_tun_packets_total",
            &labels,
            load(counter),
        );
    }
    out
}

/// True when the peer's session is alive: a handshake within the window
/// after which WireGuard rejects a session.
pub fn is_connected(peer: &PeerStatus, now: SystemTime) -> bool {
    peer.last_handshake.is_some_and(|t| {
        now.duration_since(t).unwrap_or_default().as_secs() < CONNECTED_WITHIN_SECS
    })
}

/// The host certificates that expire soon (`access::host_certs`).
pub fn render_host_certs(out: &mut String, expiring: u64) {
    let name = "gatehouse_ssh_host_certs_expiring";
    family(
        out,
        name,
        "gauge",
        "Host certificates, not revoked, that expire within 14 days: sign those hosts again (accessctl ssh host-cert list).",
    );
    sample(out, name, "", expiring);
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: u64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

fn peer_labels(peer: &PeerStatus) -> String {
    let key = base64::engine::general_purpose::STANDARD.encode(peer.public_key);
    format!(
        "user=\"{}\",device=\"{}\",public_key=\"{}\"",
        escape_label(&peer.user),
        escape_label(&peer.device),
        escape_label(&key)
    )
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text escapes backslash and line feed.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;

    fn peer(user: &str, device: &str, key: u8, handshake_ago: Option<u64>) -> PeerStatus {
        let now = SystemTime::now();
        PeerStatus {
            public_key: [key; 32],
            user: user.into(),
            device: device.into(),
            address: "10.200.0.2".parse().unwrap(),
            allowed_ips: vec!["10.200.0.2".parse().unwrap()],
            endpoint: None,
            last_handshake: handshake_ago.map(|s| now - Duration::from_secs(s)),
            rx_bytes: 100,
            tx_bytes: 200,
            rx_packets: 3,
            tx_packets: 4,
            dropped_spoofed: 5,
            dropped_policy: 6,
            dropped_malformed: 7,
        }
    }

    /// One sample line: name, labels (in order, unescaped) and value.
    #[derive(Debug, PartialEq)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    /// A strict reader of the text format: every line is a `# HELP`, a
    /// `# TYPE` or a sample of the family declared just before it.
    fn parse(text: &str) -> Vec<Sample> {
        assert!(text.ends_with('\n'));
        let mut samples = Vec::new();
        let mut families = HashSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').expect("help text");
                current = name.to_owned();
                assert!(families.insert(current.clone()), "{name} declared twice");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("type");
                assert_eq!(name, current, "TYPE follows its HELP");
                assert!(["counter", "gauge"].contains(&kind), "{kind}");
                assert_eq!(name.ends_with("_total"), kind == "counter", "{name}");
                continue;
            }
            let name_end = line.find(['{', ' ']).expect("a name");
            let name = &line[..name_end];
            assert_eq!(name, current, "sample under its family: {line}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "{name}"
            );
            let mut rest = &line[name_end..];
            let mut labels = Vec::new();
            if let Some(inner) = rest.strip_prefix('{') {
                rest = inner;
                loop {
                    let (label, after) = rest.split_once("=\"").expect("label=\"");
                    let mut value = String::new();
                    let mut chars = after.char_indices();
                    let end = loop {
                        match chars.next().expect("closing quote") {
                            (i, '"') => break i,
                            (_, '\\') => match chars.next().expect("escape").1 {
                                'n' => value.push('\n'),
                                c @ ('\\' | '"') => value.push(c),
                                c => panic!("bad escape \\{c} in {line}"),
                            },
                            (_, c) => value.push(c),
                        }
                    };
                    labels.push((label.to_owned(), value));
                    rest = &after[end + 1..];
                    if let Some(more) = rest.strip_prefix(',') {
                        rest = more;
                    } else {
                        rest = rest.strip_prefix('}').expect("closing brace");
                        break;
                    }
                }
            }
            let value = rest.strip_prefix(' ').expect("space before value");
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("a number"),
            });
        }
        samples
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> &'a Sample {
        samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .unwrap_or_else(|| panic!("no {name} {labels:?}"))
    }

    #[test]
    fn a_snapshot_renders_as_valid_text_format() {
        let counters = EngineCounters::default();
        counters.cookie_replies.store(9, Ordering::Relaxed);
        counters.unknown_peer.store(11, Ordering::Relaxed);
        counters.tun_no_endpoint.store(2, Ordering::Relaxed);
        let peers = [
            peer("alice", "laptop", 1, Some(10)),
            peer("bob", "odd\"name\\with\nnewline", 2, None),
            peer("carol", "old", 3, Some(600)),
        ];
        let now = SystemTime::now();
        let text = render(&peers, &counters, now);
        let samples = parse(&text);

        let key_a = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let alice = [
            ("user", "alice"),
            ("device", "laptop"),
            ("public_key", key_a.as_str()),
        ];
        assert_eq!(
            find(&samples, "gatehouse_peer_rx_bytes_total", &alice).value,
            100.0
        );
        assert_eq!(
            find(&samples, "gatehouse_peer_tx_bytes_total", &alice).value,
            200.0
        );
        let handshake = find(&samples, "gatehouse_peer_last_handshake_seconds", &alice).value;
        let expected = (now.duration_since(UNIX_EPOCH).unwrap().as_secs() - 10) as f64;
        assert!(
            (handshake - expected).abs() <= 1.0,
            "{handshake} vs {expected}"
        );
        let mut rx = alice.to_vec();
        rx.push(("direction", "rx"));
        assert_eq!(
            find(&samples, "gatehouse_peer_packets_total", &rx).value,
            3.0
        );
        for (reason, value) in [("spoofed", 5.0), ("policy", 6.0), ("malformed", 7.0)] {
            let mut labels = alice.to_vec();
            labels.push(("reason", reason));
            let sample = find(&samples, "gatehouse_peer_dropped_packets_total", &labels);
            assert_eq!(sample.value, value);
        }

        // Escaped on the way out, read back unchanged.
        let odd = [("device", "odd\"name\\with\nnewline")];
        assert_eq!(
            find(&samples, "gatehouse_peer_tx_bytes_total", &odd).value,
            200.0
        );
        assert!(
            text.contains(r#"device="odd\"name\\with\nnewline""#),
            "{text}"
        );
        assert_eq!(
            find(&samples, "gatehouse_peer_last_handshake_seconds", &odd).value,
            0.0
        );

        assert_eq!(find(&samples, "gatehouse_vpn_peers", &[]).value, 3.0);
        assert_eq!(
            find(&samples, "gatehouse_vpn_connected_peers", &[]).value,
            1.0
        );
        assert_eq!(
            find(&samples, "gatehouse_vpn_cookie_replies_total", &[]).value,
            9.0
        );
        let unknown = [("reason", "unknown_peer")];
        assert_eq!(
            find(&samples, "gatehouse_vpn_dropped_datagrams_total", &unknown).value,
            11.0
        );
        let no_endpoint = [("reason", "no_endpoint")];
        assert_eq!(
            find(
                &samples,
                "gatehouse_vpn_dropped_tun_packets_total",
                &no_endpoint
            )
            .value,
            2.0
        );
        // Every per-peer family has one row per peer (per label value).
        let per_peer = samples
            .iter()
            .filter(|s| s.name == "gatehouse_peer_dropped_packets_total")
            .count();
        assert_eq!(per_peer, 9);
    }

    #[test]
    fn no_peers_still_reports_the_engine() {
        let text = render(&[], &EngineCounters::default(), SystemTime::now());
        let samples = parse(&text);
        assert_eq!(find(&samples, "gatehouse_vpn_peers", &[]).value, 0.0);
        assert!(
            !samples
                .iter()
                .any(|s| s.name.starts_with("gatehouse_peer_"))
        );
    }

    #[test]
    fn the_ha_families_name_the_node_and_its_role() {
        let mut out = String::new();
        render_ha(
            &mut out,
            &HaFigures {
                node: "gw-b".into(),
                active: true,
                generation: 7,
                acquisitions: 2,
                failovers: 1,
            },
        );
        for line in [
            "# TYPE gatehouse_ha_active gauge",
            r#"gatehouse_ha_active{node="gw-b"} 1"#,
            r#"gatehouse_ha_lease_generation{node="gw-b"} 7"#,
            "# TYPE gatehouse_ha_failovers_total counter",
            r#"gatehouse_ha_failovers_total{node="gw-b"} 1"#,
            r#"gatehouse_ha_acquisitions_total{node="gw-b"} 2"#,
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
        }
    }
}
