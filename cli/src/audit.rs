//! `accessctl audit`: review the audit log (filtered by time, user and kind),
//! follow it as it grows, and `audit verify` its hash chain.
//!
//! Times given on the command line are turned into RFC 3339 UTC here, so the
//! daemon only ever sees one format.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use gatehouse_config::api::{
    AuditKeyResponse, AuditQuery, AuditRecord, AuditStatus, VerifyProblem, VerifyProblemKind,
    VerifyReport,
};

use crate::Ctx;
use crate::anchored::{self, AnchoredError};
use crate::client::{self, ClientError};
use crate::output::{self, Out, OutputError, Table};

/// How often `--follow` asks for new records.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// The DETAIL column is cut here; `--json` has it whole.
const DETAIL_WIDTH: usize = 60;
/// Minimum column widths, so `--follow` batches line up.
const MIN_WIDTHS: [usize; 6] = [5, 20, 18, 10, 15, 16];

/// The long help of `accessctl audit`.
pub const LONG_ABOUT: &str = "Review the audit log: one record per security-relevant event, oldest first.\n\n\
    --since and --until take a duration back from now (24h, 7d, 90m) or a time \
    (2026-05-01T12:00:00Z, 2026-05-01 12:00:00, 2026-05-01T14:00:00+02:00, 2026-05-01); \
    times without an offset are UTC. The DETAIL column is shortened to fit; \
    --json prints each record whole, one JSON object per line.\n\n\
    Examples:\n  \
    accessctl audit --since 24h --user alice\n  \
    accessctl audit --kind ssh --limit 50\n  \
    accessctl audit --follow --json | jq -c 'select(.kind | startswith(\"vpn.\"))'\n  \
    accessctl audit verify";

/// `accessctl audit [FILTERS] [--follow]` or `accessctl audit verify`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    #[command(flatten)]
    pub filter: AuditFilter,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the audit log's hash chain; exit 1 if a record was altered,
    /// removed, reordered or cut off.
    #[command(
        long_about = "Check the audit log's hash chain from the first record to the \
        recorded head.\n\n\
        Prints \"audit log intact: N records\" and exits 0, or names the first broken \
        record (altered, removed, reordered or truncated) and exits 1.\n\n\
        Records from the keyed chain on must match their HMAC under the audit key \
        (derived from the secrets key, never in the database), so a record inserted or \
        edited by someone with only the database is caught; every signed checkpoint's \
        signature is checked too.\n\n\
        With --anchored DIR it then compares the log, record by record, with the \
        objects the S3 export anchored under Object Lock ([audit.s3]), downloaded to DIR \
        (the first version of each key: /usr/share/gatehouse/fetch-anchored.py), and \
        names the \
        first record \
        rewritten or removed after it was anchored: this catches a rewrite by someone \
        who held the audit key too.\n\n\
        Examples:\n  accessctl audit verify\n  \
        /usr/share/gatehouse/fetch-anchored.py --bucket team-audit \
        --gateway research-gw anchored/ && \
        accessctl audit verify --anchored anchored/"
    )]
    Verify(VerifyArgs),
    /// Show how far the audit log's exports (S3, syslog) are behind.
    #[command(
        long_about = "Show the newest record, the newest signed checkpoint, and for each \
        exporter ([audit.s3], [audit.syslog]) the last record its receiver is known to \
        have and how many records it is behind (its lag). Records wait in the store while \
        a receiver is out of reach, so a growing lag is the alarm to watch.\n\n\
        Example:\n  accessctl audit status --json | jq '.exporters[] | {name, lag}'"
    )]
    Status,
    /// Print the public key the audit checkpoints are signed with.
    #[command(
        long_about = "Print the public key (ssh-ed25519) the gateway signs its audit \
        checkpoints with. Give it to whoever must check the log without trusting the \
        gateway: each audit.checkpoint record's detail holds an OpenSSH signature \
        (SSHSIG, namespace gatehouse-audit) over its gateway, node, seq, chain and \
        time, which stock ssh-keygen verifies with this key alone.\n\n\
        Prints the key line; --json adds its fingerprint and an allowed_signers line.\n\n\
        Example:\n  accessctl audit key > gatehouse-audit.pub"
    )]
    Key,
}

/// `accessctl audit verify [--anchored DIR]`.
#[derive(Debug, Clone, Default, Args)]
pub struct VerifyArgs {
    /// Also compare the log with the S3 export's objects downloaded to DIR.
    #[arg(long, value_name = "DIR")]
    pub anchored: Option<std::path::PathBuf>,
}

/// Which records `audit` shows.
#[derive(Debug, Clone, Default, Args)]
pub struct AuditFilter {
    /// Records from this point on: a duration back from now (24h, 7d) or a time.
    #[arg(long, value_name = "DUR|TIME", value_parser = parse_time_arg)]
    pub since: Option<TimeArg>,
    /// Records up to this point: a time (or a duration back from now).
    #[arg(long, value_name = "TIME", value_parser = parse_time_arg)]
    pub until: Option<TimeArg>,
    /// Records whose actor or target is this user.
    #[arg(long, value_name = "NAME", value_parser = crate::args::user_name)]
    pub user: Option<String>,
    /// Records whose kind starts with these dotted segments (ssh, vpn.acl,
    /// user.add); --help lists the kinds.
    #[arg(
        long,
        value_name = "PREFIX",
        value_parser = crate::args::KindPrefix,
        hide_possible_values = true,
        long_help = crate::args::kind_long_help()
    )]
    pub kind: Option<String>,
    /// At most N records, the newest ones (still printed oldest first).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Keep printing new records as they are written, until Ctrl-C.
    #[arg(long)]
    pub follow: bool,
}

/// A point in time from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeArg {
    /// This long before now.
    Ago(Duration),
    At(SystemTime),
}

impl TimeArg {
    /// RFC 3339 UTC, whole seconds, relative to `now`.
    pub fn to_rfc3339(self, now: SystemTime) -> String {
        let time = match self {
            Self::Ago(d) => now.checked_sub(d).unwrap_or(UNIX_EPOCH),
            Self::At(t) => t,
        };
        // humantime cannot print times before 1970; nothing is logged before then.
        let time = time.max(UNIX_EPOCH);
        humantime::format_rfc3339_seconds(time).to_string()
    }
}

/// Why an `audit` command failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Output(#[from] OutputError),
    #[error("cannot listen for Ctrl-C: {0}")]
    Signal(#[source] io::Error),
    #[error("{0}")]
    Anchored(#[from] AnchoredError),
    /// `audit verify --anchored` found a record that differs from S3's.
    #[error("audit log differs from its anchored copy at record {seq}")]
    AnchoredDiffers { seq: u64, reason: String },
    /// `audit verify` found a break in the chain.
    #[error("audit log is NOT intact ({records} records checked)")]
    NotIntact {
        records: u64,
        problem: Option<VerifyProblem>,
    },
}

impl AuditError {
    /// Lines to print under the message.
    pub fn details(&self) -> Vec<String> {
        match self {
            Self::NotIntact {
                problem: Some(problem),
                ..
            } => vec![describe_problem(problem)],
            Self::AnchoredDiffers { seq, reason } => vec![format!("record {seq}: {reason}")],
            Self::NotIntact { problem: None, .. } => {
                vec!["accessd reported no detail; see its log".to_owned()]
            }
            _ => Vec::new(),
        }
    }
}

pub async fn run(args: AuditArgs, ctx: &Ctx) -> Result<(), AuditError> {
    match args.command {
        Some(AuditCommand::Verify(VerifyArgs { anchored: None })) => verify(ctx).await,
        Some(AuditCommand::Verify(VerifyArgs {
            anchored: Some(dir),
        })) => verify_anchored(&dir, ctx).await,
        Some(AuditCommand::Status) => status(ctx).await,
        Some(AuditCommand::Key) => key(ctx).await,
        None if args.filter.follow => {
            tokio::select! {
                result = list(&args.filter, ctx) => result,
                signal = tokio::signal::ctrl_c() => signal.map_err(AuditError::Signal),
            }
        }
        None => list(&args.filter, ctx).await,
    }
}

/// Prints the matching records, then (with `--follow`) polls for new ones forever.
async fn list(filter: &AuditFilter, ctx: &Ctx) -> Result<(), AuditError> {
    let mut query = filter.query(SystemTime::now());
    let reply = ctx
        .client
        .get::<Vec<AuditRecord>>(&client::with_query("/v1/audit", &query)?)
        .await?;
    let mut printed_header = false;
    print_records(
        &ctx.out,
        &reply.body,
        &reply.json,
        ctx.json,
        &mut printed_header,
    )?;
    if !filter.follow {
        if reply.body.is_empty() && !ctx.json {
            ctx.out.emit("no matching audit records\n")?;
        }
        return Ok(());
    }
    // The newest N were shown; from here on everything new matters.
    query.limit = None;
    let mut last_seq = reply.body.last().map(|r| r.seq);
    loop {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        if let Some(seq) = last_seq {
            query.after_seq = Some(seq);
            query.since = None;
        }
        let reply = ctx
            .client
            .get::<Vec<AuditRecord>>(&client::with_query("/v1/audit", &query)?)
            .await?;
        print_records(
            &ctx.out,
            &reply.body,
            &reply.json,
            ctx.json,
            &mut printed_header,
        )?;
        if let Some(record) = reply.body.last() {
            last_seq = Some(record.seq);
        }
    }
}

impl AuditFilter {
    fn query(&self, now: SystemTime) -> AuditQuery {
        AuditQuery {
            since: self.since.map(|t| t.to_rfc3339(now)),
            until: self.until.map(|t| t.to_rfc3339(now)),
            user: self.user.clone(),
            kind: self.kind.clone(),
            after_seq: None,
            through_seq: None,
            limit: self.limit,
        }
    }
}

fn print_records(
    out: &Out,
    records: &[AuditRecord],
    json: &serde_json::Value,
    as_json: bool,
    printed_header: &mut bool,
) -> Result<(), OutputError> {
    if records.is_empty() {
        return Ok(());
    }
    if as_json {
        out.emit(&json_lines(json)?)
    } else {
        let text = audit_table(records, !*printed_header).render();
        *printed_header = true;
        out.emit(&text)
    }
}

/// One compact JSON object per line, exactly as the daemon sent each record.
fn json_lines(json: &serde_json::Value) -> Result<String, OutputError> {
    let mut out = String::new();
    let items = match json {
        serde_json::Value::Array(items) => items.as_slice(),
        other => std::slice::from_ref(other),
    };
    for item in items {
        out.push_str(&serde_json::to_string(item).map_err(OutputError::Json)?);
        out.push('\n');
    }
    Ok(out)
}

fn audit_table(records: &[AuditRecord], header: bool) -> Table {
    let mut table = Table::new(&["SEQ", "TIME", "KIND", "ACTOR", "SOURCE", "TARGET", "DETAIL"])
        .min_widths(&MIN_WIDTHS)
        .header(header);
    for r in records {
        table.row(vec![
            r.seq.to_string(),
            output::short_time(&r.time),
            r.kind.clone(),
            r.actor.clone(),
            r.source.clone(),
            r.target.clone(),
            detail_cell(&r.detail),
        ]);
    }
    table
}

/// The detail as compact JSON, cut to fit a terminal line; "-" when empty.
fn detail_cell(detail: &serde_json::Value) -> String {
    let text = match detail {
        serde_json::Value::Null => return "-".to_owned(),
        serde_json::Value::Object(map) if map.is_empty() => return "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    output::truncate(&text, DETAIL_WIDTH)
}

async fn verify(ctx: &Ctx) -> Result<(), AuditError> {
    let reply = ctx.client.get::<VerifyReport>("/v1/audit/verify").await?;
    let report = reply.body;
    if ctx.json {
        ctx.out.emit_json(&reply.json)?;
    }
    if report.intact {
        if !ctx.json {
            ctx.out.emit(&format!(
                "audit log intact: {} records{}\n",
                report.records,
                keyed_summary(&report)
            ))?;
        }
        Ok(())
    } else {
        Err(AuditError::NotIntact {
            records: report.records,
            problem: report.problem,
        })
    }
}

/// `, keyed from record N, M signed checkpoints`, or nothing for a log
/// without keyed records.
fn keyed_summary(report: &VerifyReport) -> String {
    match report.keyed_from {
        Some(from) => format!(
            ", keyed from record {from}, {} signed checkpoint{}",
            report.checkpoints,
            if report.checkpoints == 1 { "" } else { "s" }
        ),
        None => String::new(),
    }
}

/// How many records one page of `verify --anchored` asks for.
const ANCHORED_PAGE: u64 = 5_000;

async fn verify_anchored(dir: &std::path::Path, ctx: &Ctx) -> Result<(), AuditError> {
    let report = ctx
        .client
        .get::<VerifyReport>("/v1/audit/verify")
        .await?
        .body;
    if !report.intact {
        return Err(AuditError::NotIntact {
            records: report.records,
            problem: report.problem,
        });
    }
    let anchored = anchored::read_dir(dir)?;
    let through = anchored.records.keys().next_back().copied().unwrap_or(0);
    let mut after = 0;
    while after < through {
        let page_end = (after + ANCHORED_PAGE).min(through);
        let query = AuditQuery {
            after_seq: Some(after),
            through_seq: Some(page_end),
            ..AuditQuery::default()
        };
        let page = ctx
            .client
            .get::<Vec<AuditRecord>>(&client::with_query("/v1/audit", &query)?)
            .await?
            .body;
        if let Some(found) = anchored::compare(&anchored, &page, after, page_end) {
            return Err(AuditError::AnchoredDiffers {
                seq: found.seq,
                reason: found.reason,
            });
        }
        after = page_end;
    }
    let summary = serde_json::json!({
        "intact": true,
        "records": report.records,
        "checkpoints": report.checkpoints,
        "keyed_from": report.keyed_from,
        "anchored": {
            "objects": anchored.objects,
            "records": anchored.records.len(),
            "through": through,
        },
    });
    if ctx.json {
        ctx.out.emit_json(&summary)?;
    } else {
        let newest = report.records;
        let pending = if newest > through {
            format!("; records {} to {newest} are not anchored yet", through + 1)
        } else {
            String::new()
        };
        ctx.out.emit(&format!(
            "audit log intact: {} records{}\nmatches its anchored copy through record {through} ({} records in {} objects){pending}\n",
            report.records,
            keyed_summary(&report),
            anchored.records.len(),
            anchored.objects,
        ))?;
    }
    Ok(())
}

async fn status(ctx: &Ctx) -> Result<(), AuditError> {
    let reply = ctx.client.get::<AuditStatus>("/v1/audit/status").await?;
    if ctx.json {
        ctx.out.emit_json(&reply.json)?;
        return Ok(());
    }
    let status = reply.body;
    let mut text = format!("newest record: {}\n", status.newest_seq);
    match &status.last_checkpoint {
        Some(c) => text.push_str(&format!(
            "last signed checkpoint: record {} at {}\n",
            c.seq, c.time
        )),
        None => text.push_str("last signed checkpoint: none yet\n"),
    }
    if status.exporters.is_empty() {
        text.push_str("exports: none configured ([audit.s3], [audit.syslog])\n");
    }
    for e in &status.exporters {
        let state = if e.enabled {
            ""
        } else {
            " (no longer configured)"
        };
        let updated = e.updated.as_deref().unwrap_or("never");
        text.push_str(&format!(
            "export {}{state}: through record {}, {} behind, last moved {updated}\n",
            e.name, e.cursor, e.lag
        ));
    }
    ctx.out.emit(&text)?;
    Ok(())
}

async fn key(ctx: &Ctx) -> Result<(), AuditError> {
    let reply = ctx.client.get::<AuditKeyResponse>("/v1/audit/key").await?;
    if ctx.json {
        ctx.out.emit_json(&reply.json)?;
    } else {
        ctx.out.emit(&format!("{}\n", reply.body.public_key))?;
    }
    Ok(())
}

/// `record SEQ: KIND: message`.
fn describe_problem(problem: &VerifyProblem) -> String {
    let kind = match problem.kind {
        VerifyProblemKind::Altered => "altered",
        VerifyProblemKind::Removed => "removed",
        VerifyProblemKind::Reordered => "reordered",
        VerifyProblemKind::Truncated => "truncated",
        VerifyProblemKind::AnchorMissing => "anchor missing",
    };
    format!("record {}: {kind}: {}", problem.seq, problem.message)
}

/// `--since` / `--until`: a duration back from now, or a time (UTC unless it
/// carries an offset; a bare date means its midnight UTC).
pub fn parse_time_arg(s: &str) -> Result<TimeArg, String> {
    let s = s.trim();
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(TimeArg::Ago(d));
    }
    let (local, offset_secs) = split_offset(s).unwrap_or((s, 0));
    let local = if is_bare_date(local) {
        format!("{local}T00:00:00Z")
    } else {
        local.to_owned()
    };
    let time = humantime::parse_rfc3339_weak(&local).map_err(|_| {
        format!(
            "{s:?} is neither a duration (24h, 7d, 90m) nor a time \
             (2026-05-01T12:00:00Z, 2026-05-01 12:00:00, 2026-05-01)"
        )
    })?;
    let shift = Duration::from_secs(offset_secs.unsigned_abs());
    // A local time at +02:00 is two hours later than the same digits in UTC.
    let utc = if offset_secs >= 0 {
        time.checked_sub(shift)
    } else {
        time.checked_add(shift)
    };
    utc.map(TimeArg::At)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

/// Splits a trailing `+HH:MM` / `-HH:MM` offset off a date-time.
fn split_offset(s: &str) -> Option<(&str, i64)> {
    let cut = s.len().checked_sub(6)?;
    if !s.is_char_boundary(cut) {
        return None;
    }
    let (local, offset) = s.split_at(cut);
    let b = offset.as_bytes();
    let digits = |x: &[u8]| x.iter().all(u8::is_ascii_digit);
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if !(digits(&b[1..3]) && b[3] == b':' && digits(&b[4..6]) && local.contains(['T', 't', ' '])) {
        return None;
    }
    let hours: i64 = offset[1..3].parse().ok()?;
    let minutes: i64 = offset[4..6].parse().ok()?;
    Some((local, sign * (hours * 3600 + minutes * 60)))
}

fn is_bare_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).expect("valid time")
    }

    #[test]
    fn since_durations_count_back_from_now() {
        let now = at("2026-05-02T12:00:00Z");
        let since = parse_time_arg("24h").expect("24h");
        assert_eq!(since, TimeArg::Ago(Duration::from_secs(86_400)));
        assert_eq!(since.to_rfc3339(now), "2026-05-01T12:00:00Z");
        assert_eq!(
            parse_time_arg("1h 30m").expect("1h 30m").to_rfc3339(now),
            "2026-05-02T10:30:00Z"
        );
        // Further back than 1970: clamped, not a panic.
        assert_eq!(
            parse_time_arg("100years").expect("long").to_rfc3339(now),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn times_become_rfc3339_utc() {
        let now = at("2026-05-02T12:00:00Z");
        let utc = |s: &str| parse_time_arg(s).expect(s).to_rfc3339(now);
        assert_eq!(utc("2026-05-01T08:09:10Z"), "2026-05-01T08:09:10Z");
        assert_eq!(utc("2026-05-01 08:09:10"), "2026-05-01T08:09:10Z");
        assert_eq!(utc("2026-05-01T08:09:10.75Z"), "2026-05-01T08:09:10Z");
        assert_eq!(utc("2026-05-01"), "2026-05-01T00:00:00Z");
        assert_eq!(utc("2026-05-01T08:09:10+02:00"), "2026-05-01T06:09:10Z");
        assert_eq!(utc("2026-05-01T23:30:00-01:30"), "2026-05-02T01:00:00Z");
    }

    #[test]
    fn bad_times_are_refused() {
        for bad in ["yesterday", "2026-13-01", "2026-05-01T25:00:00Z", "", "12"] {
            assert!(parse_time_arg(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filter_becomes_the_query() {
        let filter = AuditFilter {
            since: Some(TimeArg::Ago(Duration::from_secs(3600))),
            until: None,
            user: Some("alice".into()),
            kind: Some("ssh".into()),
            limit: Some(10),
            follow: false,
        };
        let query = filter.query(at("2026-05-02T12:00:00Z"));
        let path = client::with_query("/v1/audit", &query).expect("encodes");
        assert_eq!(
            path,
            "/v1/audit?since=2026-05-02T11%3A00%3A00Z&user=alice&kind=ssh&limit=10"
        );
        let empty = AuditFilter::default().query(at("2026-05-02T12:00:00Z"));
        assert_eq!(
            client::with_query("/v1/audit", &empty).expect("encodes"),
            "/v1/audit"
        );
    }

    fn record(seq: u64, detail: serde_json::Value) -> AuditRecord {
        AuditRecord {
            seq,
            time: "2026-05-01T10:00:00.123Z".into(),
            kind: "ssh.session.end".into(),
            actor: "alice".into(),
            source: "198.51.100.7:50122".into(),
            target: "10.0.3.140:22".into(),
            detail,
            prev_hash: "p".into(),
            hash: "h".into(),
        }
    }

    #[test]
    fn audit_table_shows_compact_truncated_detail() {
        let long = serde_json::json!({"bytes_in": 1234, "bytes_out": 99, "reason": "x".repeat(80)});
        let text = audit_table(&[record(7, serde_json::json!({})), record(8, long)], true).render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "SEQ    TIME                  KIND                ACTOR       SOURCE              TARGET            DETAIL"
        );
        assert!(
            lines[1].starts_with("7      2026-05-01T10:00:00Z  ssh.session.end"),
            "{text}"
        );
        assert!(lines[1].ends_with("  -"), "{text}");
        assert!(
            lines[2].contains(r#"{"bytes_in":1234,"bytes_out":99,"reason":"xxx"#),
            "{text}"
        );
        assert!(lines[2].ends_with("..."), "{text}");
        let column = lines[0].find("DETAIL").expect("DETAIL column");
        let detail = &lines[2][column..];
        assert_eq!(detail.chars().count(), DETAIL_WIDTH);
    }

    #[test]
    fn json_lines_are_one_record_each() {
        let json = serde_json::json!([{"seq": 1, "kind": "user.add", "detail": {"a": [1, 2]}}, {"seq": 2}]);
        let text = json_lines(&json).expect("json");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(serde_json::Value::Array(lines), json);
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn verify_problem_is_described() {
        let err = AuditError::NotIntact {
            records: 120,
            problem: Some(VerifyProblem {
                seq: 57,
                kind: VerifyProblemKind::Altered,
                message: "hash does not match".into(),
            }),
        };
        assert_eq!(
            err.to_string(),
            "audit log is NOT intact (120 records checked)"
        );
        assert_eq!(err.details(), ["record 57: altered: hash does not match"]);
    }

    fn ctx_for(server: &crate::testutil::FakeServer, json: bool) -> Ctx {
        Ctx {
            client: crate::client::Client::new(server.socket()),
            json,
            out: Out::capture(),
        }
    }

    fn records_json(seqs: &[u64]) -> String {
        let records: Vec<AuditRecord> = seqs
            .iter()
            .map(|s| record(*s, serde_json::json!({"n": s})))
            .collect();
        serde_json::to_string(&records).expect("json")
    }

    #[tokio::test]
    async fn follow_polls_after_the_last_seq() {
        use crate::testutil::{Canned, FakeServer};
        let server = FakeServer::start(vec![
            Canned::json(200, &records_json(&[1, 2])),
            Canned::json(200, &records_json(&[3])),
            Canned::json(200, &records_json(&[])),
        ])
        .await;
        let ctx = ctx_for(&server, false);
        let filter = AuditFilter {
            user: Some("alice".into()),
            limit: Some(2),
            follow: true,
            ..AuditFilter::default()
        };
        // Once the fake has served its answers nothing listens: the loop ends
        // with "not reachable", as it would if accessd stopped.
        let err = list(&filter, &ctx).await.expect_err("fake server gone");
        assert!(
            matches!(err, AuditError::Client(ClientError::Unreachable { .. })),
            "{err:?}"
        );
        let text = ctx.out.captured();
        assert_eq!(text.matches("SEQ").count(), 1, "{text}");
        let seqs: Vec<&str> = text
            .lines()
            .skip(1)
            .filter_map(|l| l.split(' ').next())
            .collect();
        assert_eq!(seqs, ["1", "2", "3"]);
        let targets: Vec<String> = server
            .requests()
            .await
            .into_iter()
            .map(|r| r.target)
            .collect();
        assert_eq!(
            targets,
            [
                "/v1/audit?user=alice&limit=2",
                "/v1/audit?user=alice&after_seq=2",
                "/v1/audit?user=alice&after_seq=3",
            ]
        );
    }

    #[tokio::test]
    async fn verify_reports_intact_and_broken_chains() {
        use crate::testutil::{Canned, FakeServer};
        let server = FakeServer::start(vec![
            Canned::json(200, r#"{"intact":true,"records":42,"problem":null}"#),
            Canned::json(
                200,
                r#"{"intact":false,"records":42,"problem":{"seq":7,"kind":"removed","message":"gap after 6"}}"#,
            ),
        ])
        .await;
        let ctx = ctx_for(&server, false);
        verify(&ctx).await.expect("intact");
        assert_eq!(ctx.out.captured(), "audit log intact: 42 records\n");
        let err = verify(&ctx).await.expect_err("broken");
        assert_eq!(err.details(), ["record 7: removed: gap after 6"]);
        let requests = server.requests().await;
        assert!(requests.iter().all(|r| r.target == "/v1/audit/verify"));

        let server = FakeServer::start(vec![Canned::json(
            200,
            r#"{"intact":true,"records":42,"problem":null,"checkpoints":3,"keyed_from":9}"#,
        )])
        .await;
        let ctx = ctx_for(&server, false);
        verify(&ctx).await.expect("intact");
        assert_eq!(
            ctx.out.captured(),
            "audit log intact: 42 records, keyed from record 9, 3 signed checkpoints\n"
        );
    }

    #[tokio::test]
    async fn key_prints_the_public_line() {
        use crate::testutil::{Canned, FakeServer};
        let body = r#"{"public_key":"ssh-ed25519 AAAAC3 gatehouse-audit@gw","fingerprint":"SHA256:x","namespace":"gatehouse-audit","allowed_signers":"gatehouse-audit@gw namespaces=\"gatehouse-audit\" ssh-ed25519 AAAAC3 gatehouse-audit@gw"}"#;
        let server = FakeServer::start(vec![Canned::json(200, body)]).await;
        let ctx = ctx_for(&server, false);
        key(&ctx).await.expect("key");
        assert_eq!(
            ctx.out.captured(),
            "ssh-ed25519 AAAAC3 gatehouse-audit@gw\n"
        );
        assert_eq!(server.requests().await[0].target, "/v1/audit/key");
    }
}
