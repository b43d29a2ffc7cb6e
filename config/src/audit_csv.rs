//! Audit records as CSV (RFC 4180), for spreadsheets: the same columns and
//! bytes from `accessctl audit export --format csv` and the portal's
//! auditor download. Each record's facets ([`crate::audit_facets`]) are
//! columns of their own; the detail stays whole, as JSON, in one column.

use crate::api::AuditRecord;
use crate::audit_facets::Facets;

/// The header line, with its line end.
pub const HEADER: &str = "seq,time,kind,actor,source,target,via,outcome,user,device,host,port,bytes_up,bytes_down,detail,hash\r\n";

/// One record as a CSV line, with its line end.
pub fn row(record: &AuditRecord) -> String {
    let facets = Facets::of(record);
    let text = |v: Option<&str>| v.unwrap_or_default().to_string();
    let fields = [
        record.seq.to_string(),
        record.time.clone(),
        record.kind.clone(),
        record.actor.clone(),
        record.source.clone(),
        record.target.clone(),
        text(facets.via.map(|v| v.as_str())),
        text(facets.outcome.map(|o| o.as_str())),
        facets.user.unwrap_or_default(),
        facets.device.unwrap_or_default(),
        facets.host.unwrap_or_default(),
        facets.port.map(|p| p.to_string()).unwrap_or_default(),
        facets.bytes_up.to_string(),
        facets.bytes_down.to_string(),
        record.detail.to_string(),
        record.hash.clone(),
    ];
    let mut line = fields
        .iter()
        .map(|f| quoted(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// A field quoted when it must be. A field a spreadsheet would run as a
/// formula (`=`, `+`, `-`, `@` first) is prefixed with `'`: what a client
/// sent (a tried user name) must not become a formula in an auditor's
/// spreadsheet.
fn quoted(field: &str) -> String {
    let guarded = match field.chars().next() {
        Some('=' | '+' | '@' | '\t' | '\r') => format!("'{field}"),
        Some('-') if field.parse::<f64>().is_err() => format!("'{field}"),
        _ => field.to_string(),
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_and_formulas_defused() {
        assert_eq!(quoted("plain"), "plain");
        assert_eq!(quoted("a,b"), "\"a,b\"");
        assert_eq!(quoted("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quoted("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(quoted("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(quoted("-1"), "-1");
        assert_eq!(quoted("-cmd"), "'-cmd");
    }

    #[test]
    fn a_row_has_a_field_per_header_column() {
        let record = AuditRecord {
            seq: 7,
            time: "2026-12-05T10:00:00.000Z".into(),
            kind: "vpn.flow".into(),
            actor: "alice".into(),
            source: "10.200.0.2".into(),
            target: "10.0.3.140:443".into(),
            detail: serde_json::json!({"device": "laptop", "dst": "10.0.3.140", "dport": 443, "bytes_up": 10, "bytes_down": 20}),
            prev_hash: "p".into(),
            hash: "h".into(),
        };
        let line = row(&record);
        assert!(line.starts_with("7,2026-12-05T10:00:00.000Z,vpn.flow,alice,10.200.0.2,10.0.3.140:443,vpn,ok,alice,laptop,10.0.3.140,443,10,20,\"{"), "{line}");
        assert!(line.ends_with(",h\r\n"));
        assert_eq!(HEADER.split(',').count(), 16);
    }
}
