//! `accessctl audit`: review the audit log (filtered by time, user, kind,
//! target, client and host network, outcome and way in), follow it as it
//! grows, summarise it (`audit summary`), export it (`audit export`), and
//! `audit verify` its hash chain.
//!
//! Times given on the command line are turned into RFC 3339 UTC here, so the
//! daemon only ever sees one format.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use gatehouse_config::api::{
    AuditKeyResponse, AuditQuery, AuditRecord, AuditStatus, AuditSummary, Outcome, SummaryBy,
    SummaryRows, VerifyProblem, VerifyProblemKind, VerifyReport, Via,
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
    --host and --source take a network or one address: --host matches the private host a \
    record is about (a vpn.flow's destination, the jump host's resolved target), --source the \
    client's address. --outcome refused keeps failed logins and denied packets and channels; \
    --via keeps what came through vpn, ssh, portal, admin or gateway. `audit summary` and \
    `audit export` take the same filters.\n\n\
    Examples:\n  \
    accessctl audit --since 24h --user alice\n  \
    accessctl audit --host 10.0.3.140 --since 7d\n  \
    accessctl audit --source 198.51.100.0/24 --outcome refused\n  \
    accessctl audit summary --by host --host 10.0.3.140 --since 7d\n  \
    accessctl audit export --format csv --since 30d --out month.csv\n  \
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
        accessd reads the log a page at a time, so a log of millions of records is \
        checked in bounded memory; while it runs, a terminal shows a progress line on \
        stderr (records checked of the total, percent, rate), which --json and a pipe \
        leave out.\n\n\
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
    /// Who reached which host, when and how much; or counts per day, hour or kind.
    #[command(
        long_about = "Summarise the matching records, from the gateway's review index.\n\n\
        --by user: per user, the hosts they reached through the VPN (vpn.flow) and the \
        jump host (ssh.session.*), with device, port, first and last seen, records and \
        bytes each way (up: user to host). --by host: the same per host, user by user. \
        Only what went through counts, unless --outcome refused asks for the refusals. \
        --by day / --by hour: counts of logins, refusals, denials, changes, flows and \
        jump host sessions. --by kind: records per kind.\n\n\
        Takes the filters of `accessctl audit` (--since, --user, --host CIDR, ...).\n\n\
        Examples:\n  \
        accessctl audit summary --by host --host 10.0.3.140 --since 7d\n  \
        accessctl audit summary --by user --user alice --since 24h\n  \
        accessctl audit summary --by day --since 30d\n  \
        accessctl audit summary --by host --json | jq -c 'select(.bytes_down > 1e9)'"
    )]
    Summary(SummaryArgs),
    /// Write the matching records as CSV or JSON lines, page by page.
    #[command(
        long_about = "Write every matching record, oldest first, to standard output (or \
        --out FILE), fetched page by page so a log of millions of records never sits in \
        memory.\n\n\
        --format jsonl (the default): one record per line, exactly as stored and hashed. \
        --format csv: a header line, then one line per record (RFC 4180) with the \
        record's facets as columns of their own (via, outcome, user, device, host, port, \
        bytes_up, bytes_down) and the detail as JSON; the portal's auditor view downloads \
        the same bytes. Fields a spreadsheet would run as formulas are prefixed with '.\n\n\
        Takes the filters of `accessctl audit`.\n\n\
        Examples:\n  \
        accessctl audit export --format csv --host 10.0.3.0/24 --since 7d --out research.csv\n  \
        accessctl audit export --kind vpn.flow --user alice | jq -c .detail"
    )]
    Export(ExportArgs),
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

/// `accessctl audit summary --by KEY [FILTERS]`.
#[derive(Debug, Clone, Args)]
pub struct SummaryArgs {
    /// How to group: user, host, day, hour or kind.
    #[arg(long, value_name = "KEY", value_parser = parse_by)]
    pub by: SummaryBy,
    #[command(flatten)]
    pub filter: ReviewFilter,
}

/// `accessctl audit export [--format csv|jsonl] [--out FILE] [FILTERS]`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// csv or jsonl.
    #[arg(long, value_name = "FORMAT", default_value = "jsonl", value_parser = ["csv", "jsonl"])]
    pub format: String,
    /// Write here instead of standard output (replaced if it exists).
    #[arg(long, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub filter: ReviewFilter,
}

/// Which records `audit` shows.
#[derive(Debug, Clone, Default, Args)]
pub struct AuditFilter {
    #[command(flatten)]
    pub review: ReviewFilter,
    /// At most N records, the newest ones (still printed oldest first).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Keep printing new records as they are written, until Ctrl-C.
    #[arg(long)]
    pub follow: bool,
}

/// The filters every review command takes.
#[derive(Debug, Clone, Default, Args)]
pub struct ReviewFilter {
    /// Records from this point on: a duration back from now (24h, 7d) or a time.
    #[arg(long, value_name = "DUR|TIME", value_parser = parse_time_arg)]
    pub since: Option<TimeArg>,
    /// Records up to this point: a time (or a duration back from now).
    #[arg(long, value_name = "TIME", value_parser = parse_time_arg)]
    pub until: Option<TimeArg>,
    /// Records whose actor or target is this user (summary: records about them).
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
    /// Records whose target is exactly this (10.0.3.140:22, alice/laptop).
    #[arg(long, value_name = "TARGET")]
    pub target: Option<String>,
    /// Records from a client address in this network (198.51.100.0/24 or one address).
    #[arg(long, value_name = "CIDR", value_parser = parse_network)]
    pub source: Option<String>,
    /// Records about a private host in this network: VPN flows to it, jump
    /// host sessions to it (10.0.3.140, 10.0.3.0/24).
    #[arg(long, value_name = "CIDR", value_parser = parse_network)]
    pub host: Option<String>,
    /// ok, or refused (failed logins, denied packets and channels).
    #[arg(long, value_name = "OUTCOME", value_parser = parse_outcome)]
    pub outcome: Option<Outcome>,
    /// How the actor came: vpn, ssh, portal, admin or gateway.
    #[arg(long, value_name = "WAY", value_parser = parse_via)]
    pub via: Option<Via>,
}

fn parse_by(text: &str) -> Result<SummaryBy, String> {
    match text {
        "user" => Ok(SummaryBy::User),
        "host" => Ok(SummaryBy::Host),
        "day" => Ok(SummaryBy::Day),
        "hour" => Ok(SummaryBy::Hour),
        "kind" => Ok(SummaryBy::Kind),
        _ => Err(format!(
            "{text:?} is not one of user, host, day, hour, kind"
        )),
    }
}

fn parse_outcome(text: &str) -> Result<Outcome, String> {
    text.parse()
}

fn parse_via(text: &str) -> Result<Via, String> {
    text.parse()
}

/// A network or one address, checked here so a typo fails before a request.
fn parse_network(text: &str) -> Result<String, String> {
    let ok = text.parse::<ipnet::IpNet>().is_ok() || text.parse::<std::net::IpAddr>().is_ok();
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not an address or a network (10.0.3.140, 10.0.3.0/24, 2001:db8::/32)"
        ))
    }
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
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen for Ctrl-C: {0}")]
    Signal(#[source] io::Error),
    #[error("{0}")]
    Anchored(#[from] AnchoredError),
    /// `audit verify --anchored` found a record that differs from S3's.
    #[error("audit log differs from its anchored copy at record {seq}")]
    AnchoredDiffers { seq: u64, reason: String },
    /// `audit verify`'s answer ended before its report.
    #[error("accessd's answer to the audit check ended before its report; see accessd's log")]
    VerifyCutShort,
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
        Some(AuditCommand::Summary(args)) => summary(&args, ctx).await,
        Some(AuditCommand::Export(args)) => export(&args, ctx).await,
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
            limit: self.limit,
            ..self.review.query(now)
        }
    }
}

impl ReviewFilter {
    fn query(&self, now: SystemTime) -> AuditQuery {
        AuditQuery {
            since: self.since.map(|t| t.to_rfc3339(now)),
            until: self.until.map(|t| t.to_rfc3339(now)),
            user: self.user.clone(),
            kind: self.kind.clone(),
            target: self.target.clone(),
            source: self.source.clone(),
            host: self.host.clone(),
            outcome: self.outcome,
            via: self.via,
            ..AuditQuery::default()
        }
    }
}

/// Rows per summary page asked for.
const SUMMARY_PAGE: u64 = 1_000;
/// Records per export page asked for.
const EXPORT_PAGE: u64 = 5_000;

async fn summary(args: &SummaryArgs, ctx: &Ctx) -> Result<(), AuditError> {
    let mut query = AuditQuery {
        by: Some(args.by),
        limit: Some(SUMMARY_PAGE),
        ..args.filter.query(SystemTime::now())
    };
    let mut rows: Vec<serde_json::Value> = Vec::new();
    let mut pages: Vec<SummaryRows> = Vec::new();
    loop {
        let reply = ctx
            .client
            .get::<AuditSummary>(&client::with_query("/v1/audit/summary", &query)?)
            .await?;
        if let Some(items) = reply.json.get("rows").and_then(|r| r.as_array()) {
            rows.extend(items.iter().cloned());
        }
        let more = reply.body.more;
        let count = summary_len(&reply.body.rows) as u64;
        pages.push(reply.body.rows);
        if !more || count == 0 {
            break;
        }
        query.offset = Some(query.offset.unwrap_or(0) + count);
    }
    if ctx.json {
        return Ok(ctx
            .out
            .emit(&json_lines(&serde_json::Value::Array(rows))?)?);
    }
    let mut table = summary_table(args.by);
    for page in &pages {
        summary_rows(&mut table, page);
    }
    if rows.is_empty() {
        ctx.out.emit("no matching audit records\n")?;
    } else {
        ctx.out.emit(&table.render())?;
    }
    Ok(())
}

fn summary_len(rows: &SummaryRows) -> usize {
    match rows {
        SummaryRows::User(r) | SummaryRows::Host(r) => r.len(),
        SummaryRows::Day(r) | SummaryRows::Hour(r) => r.len(),
        SummaryRows::Kind(r) => r.len(),
    }
}

fn summary_table(by: SummaryBy) -> Table {
    let use_columns = [
        "VIA", "DEVICE", "PORT", "FIRST", "LAST", "RECORDS", "UP", "DOWN",
    ];
    match by {
        SummaryBy::User => Table::new(&[&["USER", "HOST"][..], &use_columns].concat()),
        SummaryBy::Host => Table::new(&[&["HOST", "USER"][..], &use_columns].concat()),
        SummaryBy::Day | SummaryBy::Hour => Table::new(&[
            if by == SummaryBy::Day { "DAY" } else { "HOUR" },
            "RECORDS",
            "LOGINS",
            "REFUSALS",
            "DENIALS",
            "CHANGES",
            "FLOWS",
            "SESSIONS",
        ]),
        SummaryBy::Kind => Table::new(&["KIND", "RECORDS", "FIRST", "LAST"]),
    }
}

fn summary_rows(table: &mut Table, rows: &SummaryRows) {
    match rows {
        SummaryRows::User(uses) | SummaryRows::Host(uses) => {
            let by_user = matches!(rows, SummaryRows::User(_));
            for u in uses {
                let (first, second) = if by_user {
                    (u.user.clone(), u.host.clone())
                } else {
                    (u.host.clone(), u.user.clone())
                };
                table.row(vec![
                    first,
                    second,
                    u.via.to_string(),
                    output::or_dash(u.device.as_deref()),
                    u.port.map_or_else(|| "-".to_string(), |p| p.to_string()),
                    output::short_time(&u.first),
                    output::short_time(&u.last),
                    u.records.to_string(),
                    output::human_bytes(u.bytes_up),
                    output::human_bytes(u.bytes_down),
                ]);
            }
        }
        SummaryRows::Day(counts) | SummaryRows::Hour(counts) => {
            for c in counts {
                table.row(vec![
                    c.period.clone(),
                    c.records.to_string(),
                    c.logins.to_string(),
                    c.refusals.to_string(),
                    c.denials.to_string(),
                    c.changes.to_string(),
                    c.flows.to_string(),
                    c.sessions.to_string(),
                ]);
            }
        }
        SummaryRows::Kind(kinds) => {
            for k in kinds {
                table.row(vec![
                    k.kind.clone(),
                    k.records.to_string(),
                    output::short_time(&k.first),
                    output::short_time(&k.last),
                ]);
            }
        }
    }
}

/// Pages through the matching records oldest first, writing each page as
/// it comes: memory holds one page, whatever the log's size.
async fn export(args: &ExportArgs, ctx: &Ctx) -> Result<(), AuditError> {
    use std::io::Write as _;
    let mut sink: Box<dyn io::Write> = match &args.out {
        Some(path) => Box::new(io::BufWriter::new(std::fs::File::create(path).map_err(
            |source| AuditError::Write {
                path: path.display().to_string(),
                source,
            },
        )?)),
        None => Box::new(io::BufWriter::new(io::stdout().lock())),
    };
    let write = |sink: &mut Box<dyn io::Write>, text: &str| {
        sink.write_all(text.as_bytes())
            .map_err(|source| AuditError::Write {
                path: args
                    .out
                    .as_ref()
                    .map_or("standard output".into(), |p| p.display().to_string()),
                source,
            })
    };
    let csv = args.format == "csv";
    if csv {
        write(&mut sink, gatehouse_config::audit_csv::HEADER)?;
    }
    let mut query = AuditQuery {
        after_seq: Some(0),
        limit: Some(EXPORT_PAGE),
        ..args.filter.query(SystemTime::now())
    };
    let mut exported = 0u64;
    loop {
        let reply = ctx
            .client
            .get::<Vec<AuditRecord>>(&client::with_query("/v1/audit", &query)?)
            .await?;
        let Some(last) = reply.body.last().map(|r| r.seq) else {
            break;
        };
        let text = if csv {
            reply
                .body
                .iter()
                .map(gatehouse_config::audit_csv::row)
                .collect()
        } else {
            json_lines(&reply.json)?
        };
        write(&mut sink, &text)?;
        exported += reply.body.len() as u64;
        if args.out.is_some() && !ctx.json {
            eprint!("\rexported {exported} records");
        }
        query.after_seq = Some(last);
    }
    sink.flush().map_err(|source| AuditError::Write {
        path: args
            .out
            .as_ref()
            .map_or("standard output".into(), |p| p.display().to_string()),
        source,
    })?;
    if args.out.is_some() && !ctx.json {
        eprintln!("\rexported {exported} records");
    }
    Ok(())
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
    let (report, json) = verify_with_progress(ctx).await?;
    if ctx.json {
        ctx.out.emit_json(&json)?;
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

/// The chain check with its progress (`?progress=true`): a line on a
/// terminal's stderr while it runs (not with `--json`, not on a pipe),
/// and each line bounds the wait for the next, so a long log is not cut
/// off by the request timeout. The report, and its JSON as sent.
async fn verify_with_progress(ctx: &Ctx) -> Result<(VerifyReport, serde_json::Value), AuditError> {
    use gatehouse_config::api::{VerifyLine, VerifyQuery};

    let mut line = crate::progress::ProgressLine::on_stderr("checked", !ctx.json);
    let mut last = None;
    let path = client::with_query("/v1/audit/verify", &VerifyQuery { progress: true })?;
    let read = ctx
        .client
        .get_lines(&path, |json| {
            match serde_json::from_value::<VerifyLine>(json.clone()) {
                Ok(VerifyLine::Progress(p)) => line.update(p.checked, p.total),
                Ok(VerifyLine::Report(report)) => last = Some(Ok((report, json))),
                Ok(VerifyLine::Error(error)) => last = Some(Err(error)),
                // Judged below: the answer ended without its report.
                Err(_) => {}
            }
        })
        .await;
    line.clear();
    read?;
    match last {
        Some(Ok(reported)) => Ok(reported),
        Some(Err(error)) => Err(ClientError::Api {
            status: hyper::StatusCode::OK,
            error,
        }
        .into()),
        None => Err(AuditError::VerifyCutShort),
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
    let (report, _) = verify_with_progress(ctx).await?;
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
            review: ReviewFilter {
                since: Some(TimeArg::Ago(Duration::from_secs(3600))),
                user: Some("alice".into()),
                kind: Some("ssh".into()),
                host: Some("10.0.3.0/24".into()),
                outcome: Some(Outcome::Refused),
                via: Some(Via::Ssh),
                ..ReviewFilter::default()
            },
            limit: Some(10),
            follow: false,
        };
        let query = filter.query(at("2026-05-02T12:00:00Z"));
        let path = client::with_query("/v1/audit", &query).expect("encodes");
        assert_eq!(
            path,
            "/v1/audit?since=2026-05-02T11%3A00%3A00Z&user=alice&kind=ssh&limit=10&host=10.0.3.0%2F24&outcome=refused&via=ssh"
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
            review: ReviewFilter {
                user: Some("alice".into()),
                ..ReviewFilter::default()
            },
            limit: Some(2),
            follow: true,
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
        assert!(
            requests
                .iter()
                .all(|r| r.target == "/v1/audit/verify?progress=true"),
            "{requests:?}"
        );

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
    async fn verify_reads_progress_lines_then_the_report_or_the_error() {
        use crate::testutil::{Canned, FakeServer};
        let lines = concat!(
            r#"{"checked":0,"total":3}"#,
            "\n",
            r#"{"checked":2,"total":3}"#,
            "\n",
            r#"{"intact":true,"records":3,"problem":null,"checkpoints":1,"keyed_from":1}"#,
            "\n"
        );
        let failed = concat!(
            r#"{"checked":0,"total":3}"#,
            "\n",
            r#"{"code":"store_unavailable","message":"the database cannot be reached"}"#,
            "\n"
        );
        let server = FakeServer::start(vec![
            Canned::json(200, lines),
            Canned::json(200, failed),
            Canned::json(200, r#"{"checked":0,"total":3}"#),
            Canned::json(200, lines),
        ])
        .await;
        let ctx = ctx_for(&server, false);
        verify(&ctx).await.expect("intact");
        assert_eq!(
            ctx.out.captured(),
            "audit log intact: 3 records, keyed from record 1, 1 signed checkpoint\n"
        );
        let err = verify(&ctx).await.expect_err("an error line");
        assert!(
            matches!(&err, AuditError::Client(ClientError::Api { error, .. }) if error.code == gatehouse_config::api::ErrorCode::StoreUnavailable),
            "{err:?}"
        );
        let err = verify(&ctx).await.expect_err("no report");
        assert!(matches!(err, AuditError::VerifyCutShort), "{err:?}");
        // --json prints the report line as sent, and no progress.
        let ctx = ctx_for(&server, true);
        verify(&ctx).await.expect("intact");
        let printed: serde_json::Value =
            serde_json::from_str(ctx.out.captured().trim()).expect("one JSON report");
        assert_eq!(printed["records"], 3);
        assert!(printed.get("checked").is_none(), "{printed}");
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
