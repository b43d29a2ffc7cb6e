//! One audit record as one syslog message: RFC 5424's format, RFC 5425's
//! octet-counted framing (`MSG-LEN SP SYSLOG-MSG`). Pure: bytes in, bytes
//! out; the tests pin the exact bytes.
//!
//! ```text
//! <109>1 2025-01-01T00:00:00.000Z gw accessd 4242 user.add [gatehouse@32473 seq="7" kind="user.add" actor="uid:0" source="local" target="alice"] BOM{"seq":7,...}
//! ```
//!
//! - PRI 109: facility 13 ("log audit"), severity 5 (notice), for every
//!   record: the kind says what happened, the receiver filters on it.
//! - TIMESTAMP: the record's time (RFC 3339, UTC, milliseconds), which is a
//!   valid RFC 5424 TIMESTAMP; MSGID: the kind (at most 32 characters, as
//!   every kind is).
//! - Structured data `gatehouse@32473`: the record's seq, kind, actor,
//!   source and target, so a receiver can filter and drop duplicates by
//!   `seq` without parsing the message. 32473 is the example Private
//!   Enterprise Number of RFC 5612 (for documentation); a deployment that
//!   wants its own registers one and the SD-ID changes with it.
//! - MSG: the record's JSON exactly as the mirror writes it, as UTF-8
//!   with the BOM that RFC 5424 §6.4 asks for.

use std::fmt::Write as _;

use gatehouse_config::api::AuditRecord;

/// The SD-ID of the structured data each message carries. 32473 is the
/// documentation PEN of RFC 5612, not a registered one.
pub const SD_ID: &str = "gatehouse@32473";

/// Facility 13 (log audit) × 8 + severity 5 (notice).
const PRI: u8 = 13 * 8 + 5;

/// RFC 5424 §6.4: a MSG in UTF-8 starts with the byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// RFC 5424 §6: the longest MSGID.
const MSGID_MAX: usize = 32;

/// The parts of each message's header that do not come from the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// HOSTNAME (`audit.syslog.hostname`).
    pub hostname: String,
    /// APP-NAME (`audit.syslog.app_name`).
    pub app_name: String,
    /// PROCID: accessd's process id.
    pub procid: u32,
}

/// The SYSLOG-MSG of `record` (without framing).
pub fn message(record: &AuditRecord, header: &Header) -> Result<Vec<u8>, serde_json::Error> {
    let mut head = String::with_capacity(256);
    let _ = write!(
        head,
        "<{PRI}>1 {} {} {} {} {} [{SD_ID}",
        header_field(&record.time, usize::MAX),
        header_field(&header.hostname, 255),
        header_field(&header.app_name, 48),
        header.procid,
        header_field(&record.kind, MSGID_MAX),
    );
    for (name, value) in [
        ("seq", record.seq.to_string().as_str()),
        ("kind", &record.kind),
        ("actor", &record.actor),
        ("source", &record.source),
        ("target", &record.target),
    ] {
        let _ = write!(head, " {name}=\"");
        escape_param_value(value, &mut head);
        head.push('"');
    }
    head.push_str("] ");
    let mut out = head.into_bytes();
    out.extend_from_slice(BOM);
    serde_json::to_writer(&mut out, record)?;
    Ok(out)
}

/// Appends `msg` framed by octet counting (RFC 5425 §4.3):
/// `MSG-LEN SP SYSLOG-MSG`, MSG-LEN in decimal octets.
pub fn frame(msg: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg);
}

/// Appends `value` as an SD-PARAM value: `"`, `\` and `]` escaped with a
/// backslash (RFC 5424 §6.3.3); everything else as is (UTF-8).
pub fn escape_param_value(value: &str, out: &mut String) {
    for c in value.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// A header field as written, or the NILVALUE `-` when it is empty, too
/// long, or holds anything but printable US-ASCII (RFC 5424 §6).
fn header_field(value: &str, max: usize) -> &str {
    let printable = value.bytes().all(|b| (33..=126).contains(&b));
    if !value.is_empty() && value.len() <= max && printable {
        value
    } else {
        "-"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record() -> AuditRecord {
        AuditRecord {
            seq: 7,
            time: "2025-01-01T00:00:00.123Z".into(),
            kind: "user.add".into(),
            actor: "uid:0".into(),
            source: "local".into(),
            target: "alice".into(),
            detail: serde_json::json!({ "groups": ["research"] }),
            prev_hash: "00".repeat(32),
            hash: "ab".repeat(32),
        }
    }

    fn header() -> Header {
        Header {
            hostname: "research-gw".into(),
            app_name: "accessd".into(),
            procid: 4242,
        }
    }

    #[test]
    fn a_record_is_one_rfc5424_message_with_its_json_after_a_bom() {
        let msg = message(&record(), &header()).unwrap();
        let json = serde_json::to_string(&record()).unwrap();
        let expected = format!(
            "<109>1 2025-01-01T00:00:00.123Z research-gw accessd 4242 user.add \
             [gatehouse@32473 seq=\"7\" kind=\"user.add\" actor=\"uid:0\" source=\"local\" \
             target=\"alice\"] \u{FEFF}{json}"
        );
        assert_eq!(String::from_utf8(msg.clone()).unwrap(), expected);
        assert_eq!(
            &msg[msg.len() - json.len() - 3..msg.len() - json.len()],
            b"\xEF\xBB\xBF"
        );
        // The JSON is the mirror's line, parsed back to the same record.
        let back: AuditRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record());
    }

    #[test]
    fn param_values_escape_quote_backslash_and_bracket_only() {
        let mut out = String::new();
        escape_param_value(r#"a"b\c]d[e=f é"#, &mut out);
        assert_eq!(out, r#"a\"b\\c\]d[e=f é"#);

        let mut odd = record();
        odd.actor = "x\"]".into();
        odd.target = "ünïcode \\ name".into();
        let msg = String::from_utf8(message(&odd, &header()).unwrap()).unwrap();
        assert!(
            msg.contains(r#" actor="x\"\]" source="local" target="ünïcode \\ name"] "#),
            "{msg}"
        );
    }

    #[test]
    fn header_fields_that_rfc5424_cannot_carry_become_nil() {
        let mut odd = record();
        odd.kind = "k".repeat(33);
        odd.time = String::new();
        let header = Header {
            hostname: "two words".into(),
            app_name: "a".repeat(49),
            procid: 1,
        };
        let msg = String::from_utf8(message(&odd, &header).unwrap()).unwrap();
        assert!(
            msg.starts_with("<109>1 - - - 1 - [gatehouse@32473 seq=\"7\" kind=\"kkk"),
            "{msg}"
        );
    }

    #[test]
    fn framing_counts_octets_not_characters() {
        let mut out = Vec::new();
        frame("é1".as_bytes(), &mut out);
        frame(b"", &mut out);
        frame(b"abc", &mut out);
        assert_eq!(out, b"3 \xC3\xA910 3 abc");

        let msg = message(&record(), &header()).unwrap();
        let mut framed = Vec::new();
        frame(&msg, &mut framed);
        let (len, rest) = framed.split_at(framed.iter().position(|&b| b == b' ').unwrap());
        let len: usize = std::str::from_utf8(len).unwrap().parse().unwrap();
        assert_eq!(len, msg.len());
        assert_eq!(&rest[1..], &msg[..]);
    }

    type Params = Vec<(String, String)>;

    /// The structured data as a receiver reads it (RFC 5424 §6.3): the
    /// SD-ID, then `name="value"` pairs whose values end at the first
    /// unescaped `"`; `None` when it does not parse.
    fn parse_sd(msg: &str) -> Option<(String, Params, &str)> {
        let rest = &msg[msg.find('[')? + 1..];
        let (id, mut rest) = rest.split_once(' ')?;
        let mut params = Vec::new();
        loop {
            if let Some(after) = rest.strip_prefix(']') {
                return Some((id.to_string(), params, after));
            }
            let (name, after) = rest.trim_start_matches(' ').split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => value.push(chars.next()?.1),
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            params.push((name.to_string(), value));
            rest = &after[end + 1..];
        }
    }

    proptest::proptest! {
        /// Whatever actor, source and target hold, a receiver reads the
        /// structured data back to exactly them, and the message after it.
        #[test]
        fn any_values_read_back_from_the_structured_data(
            actor in "\\PC{0,40}",
            source in "[\\[\\]\"\\\\= a-z]{0,20}",
            target in "\\PC{0,40}",
        ) {
            let mut rec = record();
            rec.actor = actor.clone();
            rec.source = source.clone();
            rec.target = target.clone();
            let msg = String::from_utf8(message(&rec, &header()).unwrap()).unwrap();
            let (id, params, after) = parse_sd(&msg).unwrap();
            proptest::prop_assert_eq!(id, SD_ID);
            let expected: Vec<(String, String)> = [
                ("seq", "7".to_string()),
                ("kind", "user.add".to_string()),
                ("actor", actor),
                ("source", source),
                ("target", target),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect();
            proptest::prop_assert_eq!(params, expected);
            let json = serde_json::to_string(&rec).unwrap();
            proptest::prop_assert_eq!(after, format!(" \u{FEFF}{json}"));
        }
    }
}
