//! The auditor's view as HTML (maud escapes every value): the filter form,
//! the page links that carry the filter, the timeline, the per-user and
//! per-host tables, the chain's state. No script and no inline style (the
//! portal's CSP): bars are `<meter>` elements, marks are classes of
//! `portal.css`. Renders only what [`super::audit_pages`] read.

use gatehouse_config::api::{
    AuditQuery, AuditRecord, AuditStatus, AuditSummary, HostUse, PeriodCounts, SummaryRows,
};
use gatehouse_config::audit_facets::{Facets, Outcome};
use gatehouse_config::audit_kind::AuditKind;
use maud::{Markup, html};

use super::audit_filter::{
    FilterForm, Shown, filter_only, form_of, href, outcome_words, path_of, via_words,
};
use super::audit_views::AuditPage;

/// The longest detail shown in the records list (the CSV has it whole).
const DETAIL_SHOWN: usize = 160;

/// `/audit`: the chain, the filter, activity per hour, the newest records.
/// `older`: the query of the next older page of records, if any;
/// `hours_page`: the hours a full page of the timeline holds.
pub fn timeline(
    shown: &Shown,
    hours: &AuditSummary,
    hours_page: u64,
    records: &[AuditRecord],
    older: Option<AuditQuery>,
    status: &AuditStatus,
) -> Markup {
    let rows: &[PeriodCounts] = match &hours.rows {
        SummaryRows::Hour(rows) => rows,
        _ => &[],
    };
    let busiest = rows.iter().map(|r| r.records).max().unwrap_or(0).max(1);
    html! {
        div .audit {
            h1 { "Audit log" }
            (nav(shown))
            (chain(status))
            (filter_form(shown.page, &form_of(&shown.query)))
            section aria-labelledby="hours-h" {
                h2 #hours-h { "Activity per hour (UTC)" }
                p .hint { "Hours with refusals (failed logins, refused channels) or denials (packets the policy dropped) are marked." }
                @if rows.is_empty() {
                    p #no-hours { "No records match." }
                } @else {
                    table #hours .audit {
                        thead { tr {
                            th { "Hour" } th { "Activity" } th { "Records" } th { "Logins" }
                            th { "Refusals" } th { "Denials" } th { "Changes" } th { "Flows" } th { "Sessions" }
                        } }
                        tbody { @for row in rows { (hour_row(shown, row, busiest)) } }
                    }
                }
                (pager(shown, hours, hours_page, "Earlier hours", "Later hours"))
            }
            section aria-labelledby="records-h" {
                h2 #records-h { "Newest records" }
                @if records.is_empty() {
                    p #no-records { "No records match." }
                } @else {
                    table #records .audit {
                        thead { tr {
                            th { "Seq" } th { "Time" } th { "Kind" } th { "Actor" } th { "Source" } th { "Target" } th { "Detail" }
                        } }
                        tbody { @for record in records.iter().rev() { (record_row(record)) } }
                    }
                }
                @if let Some(older) = older {
                    p { a #older href=(href(AuditPage::Timeline, &older)) { "Older records" } }
                }
            }
        }
    }
}

/// `/audit/users` and `/audit/hosts`: one row per user, host, way in,
/// device and port; `rows_page`: the rows a full page holds.
pub fn uses(shown: &Shown, title: &str, summary: &AuditSummary, rows_page: u64) -> Markup {
    let (rows, host_first): (&[HostUse], bool) = match &summary.rows {
        SummaryRows::User(rows) => (rows, false),
        SummaryRows::Host(rows) => (rows, true),
        _ => (&[], false),
    };
    html! {
        div .audit {
            h1 { (title) }
            (nav(shown))
            (filter_form(shown.page, &form_of(&shown.query)))
            section aria-labelledby="uses-h" {
                h2 #uses-h { (title) }
                p .hint {
                    "What went through (unless the filter asks for an outcome): VPN flows and jump host sessions. "
                    "A user links to the hosts they reached, a host to the users who reached it."
                }
                @if rows.is_empty() {
                    p #no-rows { "No records match." }
                } @else {
                    table #uses .audit {
                        thead { tr {
                            @if host_first { th { "Host" } th { "User" } } @else { th { "User" } th { "Host" } }
                            th { "Port" } th { "Via" } th { "Device" } th { "First seen" } th { "Last seen" }
                            th { "Records" } th { "Bytes up" } th { "Bytes down" }
                        } }
                        tbody { @for row in rows { (use_row(shown, row, host_first)) } }
                    }
                }
                (pager(shown, summary, rows_page, "Previous rows", "Next rows"))
            }
        }
    }
}

/// The 403 page's body.
pub fn forbidden() -> Markup {
    html! {
        h1 { "Not an auditor" }
        p .error role="alert" #forbidden {
            "The audit log is shown only to members of an auditor group (portal.auditor_groups). Ask an admin if you need it."
        }
        p { a href="/devices" { "Back to your devices" } }
    }
}

/// A filter the review service refused: the form again, with why.
pub fn refused_filter(page_of: AuditPage, form: &FilterForm, message: &str) -> Markup {
    html! {
        div .audit {
            h1 { "Audit log" }
            p .error role="alert" #filter-error { (message) }
            (filter_form(page_of, form))
        }
    }
}

/// A page that could not be read, or not audited.
pub fn failed(message: &str) -> Markup {
    html! {
        h1 { "Audit log" }
        p .error role="alert" { (message) }
        p { a href="/audit" { "Try again" } }
    }
}

/// Links to the pages, each with the current filter.
fn nav(shown: &Shown) -> Markup {
    let filter = filter_only(&shown.query);
    let pages = [
        (AuditPage::Timeline, "Timeline"),
        (AuditPage::Users, "Per user"),
        (AuditPage::Hosts, "Per host"),
    ];
    html! {
        nav .audit-nav aria-label="Audit log pages" {
            @for (page_of, name) in pages {
                @if page_of == shown.page {
                    a href=(href(page_of, &filter)) aria-current="page" { (name) }
                } @else {
                    a href=(href(page_of, &filter)) { (name) }
                }
            }
            a #csv-download href=(href(AuditPage::Csv, &filter)) download="gatehouse-audit.csv" { "Download CSV" }
        }
    }
}

/// The filters of `accessctl audit`, as a GET form to the page shown.
fn filter_form(page_of: AuditPage, form: &FilterForm) -> Markup {
    let action = match page_of {
        AuditPage::Csv => AuditPage::Timeline,
        other => other,
    };
    let field = |name: &'static str, label: &'static str, value: &str, hint: &'static str| {
        html! {
            div {
                label for={ "f-" (name) } { (label) }
                input id={ "f-" (name) } type="text" name=(name) value=(value) placeholder=(hint) autocomplete="off" list=[(name == "kind").then_some("kinds")];
            }
        }
    };
    let choice =
        |name: &'static str, label: &'static str, value: &str, words: Vec<&'static str>| {
            html! {
                div {
                    label for={ "f-" (name) } { (label) }
                    select id={ "f-" (name) } name=(name) {
                        option value="" selected[value.is_empty()] { "any" }
                        @for word in words {
                            option value=(word) selected[value == word] { (word) }
                        }
                    }
                }
            }
        };
    html! {
        section aria-labelledby="filter-h" {
            h2 #filter-h { "Filter" }
            form #filter method="get" action=(path_of(action)) {
                div .filters {
                    (field("since", "Since", &form.since, "e.g. 2026-12-01T00:00:00Z"))
                    (field("until", "Until", &form.until, "e.g. 2026-12-02T00:00:00Z"))
                    (field("user", "User", &form.user, "e.g. alice"))
                    (field("kind", "Kind (or its first segments)", &form.kind, "e.g. ssh.session"))
                    (field("target", "Target (exactly)", &form.target, "e.g. 10.0.3.140:22"))
                    (field("source", "Source (address or CIDR)", &form.source, "e.g. 198.51.100.0/24"))
                    (field("host", "Host (address or CIDR)", &form.host, "e.g. 10.0.3.140"))
                    (choice("outcome", "Outcome", &form.outcome, outcome_words().collect()))
                    (choice("via", "Via", &form.via, via_words().collect()))
                }
                datalist #kinds {
                    @for kind in AuditKind::ALL { option value=(kind.as_str()) {} }
                }
                p .hint { "Times are RFC 3339, UTC. Empty fields do not filter; the timeline shows the last 7 days when no time is given." }
                button type="submit" { "Filter" }
                " "
                a .clear href=(path_of(action)) { "Clear" }
            }
        }
    }
}

/// How far the chain is verified, signed and anchored.
fn chain(status: &AuditStatus) -> Markup {
    let s3 = status.exporters.iter().find(|e| e.name == "s3");
    let syslog = status.exporters.iter().find(|e| e.name == "syslog");
    html! {
        section aria-labelledby="chain-h" #chain {
            h2 #chain-h { "The chain" }
            p #newest { "Newest record: " strong { (status.newest_seq) } "." }
            @match s3 {
                Some(e) if e.cursor > 0 => {
                    p #verified {
                        "Verified up to record " strong { (e.cursor) } ", and anchored in S3 under Object Lock: "
                        "the S3 export checks each record's chain under the audit key before it writes it. "
                        (e.lag) " newer record(s) not anchored yet"
                        @if let Some(updated) = &e.updated { "; last moved " (updated) }
                        "."
                    }
                }
                Some(_) => {
                    p #verified .notice { "Nothing is anchored in S3 yet: the S3 export has not written its first object." }
                }
                None => {
                    p #verified .notice {
                        "Not anchored outside this gateway ([audit.s3] is off). An admin checks the whole chain with "
                        code { "accessctl audit verify" } "."
                    }
                }
            }
            @match &status.last_checkpoint {
                Some(c) => p #checkpoint {
                    "Last signed checkpoint: record " strong { (c.seq) } " at " (c.time)
                    " (ed25519, the key " code { "accessctl audit key" } " shows)."
                },
                None => p #checkpoint { "No signed checkpoint yet." },
            }
            @if let Some(e) = syslog {
                p #syslog { "Sent to syslog up to record " (e.cursor) " (" (e.lag) " behind)." }
            }
        }
    }
}

fn hour_row(shown: &Shown, row: &PeriodCounts, busiest: u64) -> Markup {
    let marked = row.refusals + row.denials > 0;
    let count = |n: u64, mark: bool| {
        html! {
            @if mark && n > 0 { strong .refused { (n) } } @else { (n) }
        }
    };
    html! {
        tr .alert[marked] {
            td data-label="Hour" {
                @match hour_query(&shown.query, &row.period) {
                    Some(query) => a href=(href(AuditPage::Timeline, &query)) { (row.period) },
                    None => (row.period),
                }
            }
            td data-label="Activity" {
                meter min="0" max=(busiest) value=(row.records) { (row.records) }
            }
            td data-label="Records" { (row.records) }
            td data-label="Logins" { (row.logins) }
            td data-label="Refusals" { (count(row.refusals, true)) }
            td data-label="Denials" { (count(row.denials, true)) }
            td data-label="Changes" { (row.changes) }
            td data-label="Flows" { (row.flows) }
            td data-label="Sessions" { (row.sessions) }
        }
    }
}

/// The filter narrowed to one hour (`2026-12-05T14:00Z`): the records of
/// that hour.
fn hour_query(query: &AuditQuery, period: &str) -> Option<AuditQuery> {
    let hour = period.strip_suffix(":00Z")?;
    (hour.len() == 13).then(|| AuditQuery {
        since: Some(format!("{hour}:00:00Z")),
        until: Some(format!("{hour}:59:59Z")),
        ..filter_only(query)
    })
}

fn record_row(record: &AuditRecord) -> Markup {
    let refused = Facets::of(record).outcome == Some(Outcome::Refused);
    let detail = record.detail.to_string();
    let detail = match detail.char_indices().nth(DETAIL_SHOWN) {
        Some((cut, _)) => format!("{}…", &detail[..cut]),
        None => detail,
    };
    html! {
        tr .alert[refused] {
            td data-label="Seq" { (record.seq) }
            td data-label="Time" { (record.time) }
            td data-label="Kind" { @if refused { strong .refused { (record.kind) } } @else { (record.kind) } }
            td data-label="Actor" { (record.actor) }
            td data-label="Source" { (record.source) }
            td data-label="Target" { (record.target) }
            td data-label="Detail" { code .detail { (detail) } }
        }
    }
}

fn use_row(shown: &Shown, row: &HostUse, host_first: bool) -> Markup {
    // A user leads to every host they reached, a host to every user who
    // reached it (the other filters stay).
    let filter = filter_only(&shown.query);
    let user_link = href(
        AuditPage::Users,
        &AuditQuery {
            user: Some(row.user.clone()),
            host: None,
            ..filter.clone()
        },
    );
    let host_link = href(
        AuditPage::Hosts,
        &AuditQuery {
            host: Some(row.host.clone()),
            user: None,
            ..filter
        },
    );
    let user = html! { td data-label="User" { a .user href=(user_link) { (row.user) } } };
    let host = html! { td data-label="Host" { a .host href=(host_link) { (row.host) } } };
    html! {
        tr {
            @if host_first { (host) (user) } @else { (user) (host) }
            td data-label="Port" { (row.port.map(|p| p.to_string()).unwrap_or_default()) }
            td data-label="Via" { (row.via.as_str()) }
            td data-label="Device" { (row.device.as_deref().unwrap_or("")) }
            td data-label="First seen" { (row.first) }
            td data-label="Last seen" { (row.last) }
            td data-label="Records" { (row.records) }
            td data-label="Bytes up" { (row.bytes_up) }
            td data-label="Bytes down" { (row.bytes_down) }
        }
    }
}

/// Links to the page before and after this one of a summary.
/// `page_rows`: the rows a full page holds.
fn pager(shown: &Shown, summary: &AuditSummary, page_rows: u64, back: &str, on: &str) -> Markup {
    let rows = match &summary.rows {
        SummaryRows::User(r) | SummaryRows::Host(r) => r.len(),
        SummaryRows::Day(r) | SummaryRows::Hour(r) => r.len(),
        SummaryRows::Kind(r) => r.len(),
    } as u64;
    let at = |offset: u64| {
        href(
            shown.page,
            &AuditQuery {
                offset: Some(offset),
                through_seq: None,
                ..shown.query.clone()
            },
        )
    };
    html! {
        @if summary.offset > 0 || summary.more {
            p .pager {
                @if summary.offset > 0 {
                    a .back href=(at(summary.offset.saturating_sub(page_rows))) { (back) }
                    " "
                }
                @if summary.more {
                    a .on href=(at(summary.offset + rows)) { (on) }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn links_carry_the_filter_and_escape_it() {
        let query = AuditQuery {
            host: Some("10.0.3.0/24".into()),
            user: Some("a&b=c".into()),
            outcome: Some(Outcome::Refused),
            offset: Some(200),
            ..AuditQuery::default()
        };
        let link = href(AuditPage::Hosts, &query);
        assert_eq!(
            link,
            "/audit/hosts?user=a%26b%3Dc&host=10.0.3.0%2F24&outcome=refused&offset=200"
        );
        assert_eq!(
            href(AuditPage::Users, &AuditQuery::default()),
            "/audit/users"
        );
        // What a link says, the form reads back.
        let form: FilterForm = serde_urlencoded::from_str(link.split_once('?').unwrap().1).unwrap();
        let back = form.query().unwrap();
        assert_eq!(back.user.as_deref(), Some("a&b=c"));
        assert_eq!(back.outcome, Some(Outcome::Refused));
        assert_eq!(back.offset, Some(200));
    }

    #[test]
    fn an_hour_links_to_its_records() {
        let query = AuditQuery {
            host: Some("10.0.3.140".into()),
            offset: Some(168),
            ..AuditQuery::default()
        };
        let hour = hour_query(&query, "2026-12-05T14:00Z").unwrap();
        assert_eq!(hour.since.as_deref(), Some("2026-12-05T14:00:00Z"));
        assert_eq!(hour.until.as_deref(), Some("2026-12-05T14:59:59Z"));
        assert_eq!(hour.host.as_deref(), Some("10.0.3.140"));
        assert_eq!(hour.offset, None);
        assert!(hour_query(&query, "2026-12-05").is_none());
    }

    #[test]
    fn the_form_shows_values_escaped_and_the_choice_made() {
        let form = FilterForm {
            user: "\"><script>x</script>".into(),
            via: "ssh".into(),
            ..FilterForm::default()
        };
        let html = filter_form(AuditPage::Users, &form).into_string();
        assert!(!html.contains("<script>x"), "{html}");
        assert!(html.contains("action=\"/audit/users\""));
        assert!(
            html.contains("<option value=\"ssh\" selected>ssh</option>"),
            "{html}"
        );
        assert!(html.contains("<option value=\"\">any</option>"), "{html}");
    }
}
