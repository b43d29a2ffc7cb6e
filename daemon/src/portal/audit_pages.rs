//! The auditor's view: a read-only look at the audit log for members of
//! `portal.auditor_groups` ([`crate::auth::is_auditor`]).
//!
//! - `GET /audit`: activity per hour (refusals and denials marked), the
//!   chain's state, the newest matching records;
//! - `GET /audit/users`, `GET /audit/hosts`: who reached which host, per
//!   user and per host, each linking to the other;
//! - `GET /audit/export.csv`: the matching records as CSV, the same bytes
//!   as `accessctl audit export --format csv`, streamed a page at a time.
//!
//! Every page takes the filters of `accessctl audit` as a GET form; what
//! they mean is the review service's ([`crate::access::review`]), what the
//! summaries count is the store's. Nothing here changes anything but the
//! `audit.view` record each view leaves ([`super::audit_views`]).
//! Anonymous visitors go to the login page; members who are not auditors
//! get 403.

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use gatehouse_config::api::{AuditQuery, AuditSummary, SummaryBy};
use gatehouse_config::audit_csv;

use super::PortalState;
use super::audit_filter::{FilterForm, Shown, form_of};
use super::audit_markup as markup;
use super::audit_views::{AuditPage, AuditViewed, record_view};
use super::error::Failure;
use super::pages::{layout, page, see_other};
use super::sessions::{ClientAddr, Session};
use crate::access::review;
use crate::store::{AuditFilter, StoreError};
use crate::time_fmt::{now_unix, rfc3339};

/// Hours per page of the timeline.
pub const HOURS_PAGE: u64 = 168;
/// Rows per page of the user and host tables.
pub const ROWS_PAGE: u64 = 200;
/// The newest records the timeline lists.
pub const RECORDS_SHOWN: u64 = 50;
/// Records per page read for the CSV download.
pub const CSV_PAGE: u64 = 1_000;
/// The timeline's period when the form gives no time: the last week.
pub const DEFAULT_SINCE_SECS: i64 = 7 * 86_400;

/// `GET /audit`: the timeline.
pub async fn timeline(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    session: Result<Session, Failure>,
    form: Result<Query<FilterForm>, QueryRejection>,
) -> Response {
    let (session, mut query) = match admitted(&state, session, form, AuditPage::Timeline) {
        Ok(admitted) => admitted,
        Err(page) => return page,
    };
    if query.since.is_none() && query.until.is_none() {
        query.since = Some(rfc3339(now_unix().saturating_sub(DEFAULT_SINCE_SECS)));
    }
    let shown = match reviewed(&state, &session, source, AuditPage::Timeline, query).await {
        Ok(shown) => shown,
        Err(page) => return page,
    };
    let mut records_filter = shown.filter.clone();
    records_filter.limit = Some(RECORDS_SHOWN);
    records_filter.after_seq = None;
    // Older pages of records leave the hours as they are.
    let hours_filter = AuditFilter {
        through_seq: None,
        ..shown.filter.clone()
    };
    let offset = shown.query.offset.unwrap_or(0);
    let read = state
        .core
        .store()
        .read(move |r| {
            Ok((
                r.audit_summary(&hours_filter, SummaryBy::Hour, offset, HOURS_PAGE)?,
                r.audit_records(&records_filter)?,
            ))
        })
        .await;
    let status = crate::export::status::audit_status(&state.core).await;
    match (read, status) {
        (Ok((hours, records)), Ok(status)) => {
            let older = records
                .first()
                .filter(|_| records.len() as u64 >= RECORDS_SHOWN)
                .map(|r| AuditQuery {
                    through_seq: Some(r.seq.saturating_sub(1)),
                    ..shown.query.clone()
                });
            let body = markup::timeline(&shown, &hours, HOURS_PAGE, &records, older, &status);
            audit_page(&session, "Audit log", body)
        }
        (Err(err), _) | (_, Err(err)) => store_failed(&session, &shown, err),
    }
}

/// `GET /audit/users`: per user, the hosts they reached.
pub async fn users(
    state: State<PortalState>,
    source: ClientAddr,
    session: Result<Session, Failure>,
    form: Result<Query<FilterForm>, QueryRejection>,
) -> Response {
    summary_page(state, source, session, form, AuditPage::Users).await
}

/// `GET /audit/hosts`: per host, the users who reached it.
pub async fn hosts(
    state: State<PortalState>,
    source: ClientAddr,
    session: Result<Session, Failure>,
    form: Result<Query<FilterForm>, QueryRejection>,
) -> Response {
    summary_page(state, source, session, form, AuditPage::Hosts).await
}

/// `GET /audit/export.csv`: the matching records, oldest first, as
/// `accessctl audit export --format csv` writes them. Read a page at a time
/// up to the newest record when the download began, so memory holds one
/// page whatever the log's size, and the file ends.
pub async fn export_csv(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    session: Result<Session, Failure>,
    form: Result<Query<FilterForm>, QueryRejection>,
) -> Response {
    let (session, query) = match admitted(&state, session, form, AuditPage::Csv) {
        Ok(admitted) => admitted,
        Err(page) => return page,
    };
    let query = AuditQuery {
        offset: None,
        ..query
    };
    let shown = match reviewed(&state, &session, source, AuditPage::Csv, query).await {
        Ok(shown) => shown,
        Err(page) => return page,
    };
    let newest = match state.core.store().read(|r| r.audit_last()).await {
        Ok(newest) => newest.map_or(0, |h| h.seq),
        Err(err) => return store_failed(&session, &shown, err),
    };
    let mut first = shown.filter.clone();
    first.after_seq = Some(0);
    first.limit = Some(CSV_PAGE);
    first.through_seq = Some(first.through_seq.map_or(newest, |t| t.min(newest)));
    let store = state.core.store().clone();
    let pages = futures_util::stream::unfold(Some(first), move |next| {
        let store = store.clone();
        async move {
            let filter = next?;
            let page = filter.clone();
            match store.read(move |r| r.audit_records(&page)).await {
                Ok(records) => {
                    let last = records.last()?.seq;
                    let more = records.len() as u64 == CSV_PAGE;
                    let text: String = records.iter().map(audit_csv::row).collect();
                    let next = more.then_some(AuditFilter {
                        after_seq: Some(last),
                        ..filter
                    });
                    Some((Ok::<_, StoreError>(Bytes::from(text)), next))
                }
                Err(err) => {
                    // The download stops short: the browser sees it fail.
                    tracing::error!(error = %err, "portal: the audit CSV stopped");
                    Some((Err(err), None))
                }
            }
        }
    });
    let header = futures_util::stream::once(std::future::ready(Ok(Bytes::from_static(
        audit_csv::HEADER.as_bytes(),
    ))));
    (
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                CONTENT_DISPOSITION,
                "attachment; filename=\"gatehouse-audit.csv\"",
            ),
        ],
        Body::from_stream(header.chain(pages)),
    )
        .into_response()
}

async fn summary_page(
    State(state): State<PortalState>,
    ClientAddr(source): ClientAddr,
    session: Result<Session, Failure>,
    form: Result<Query<FilterForm>, QueryRejection>,
    page_of: AuditPage,
) -> Response {
    let (session, query) = match admitted(&state, session, form, page_of) {
        Ok(admitted) => admitted,
        Err(page) => return page,
    };
    let query = AuditQuery {
        through_seq: None,
        ..query
    };
    let shown = match reviewed(&state, &session, source, page_of, query).await {
        Ok(shown) => shown,
        Err(page) => return page,
    };
    let (by, title) = match page_of {
        AuditPage::Hosts => (SummaryBy::Host, "Who reached each host"),
        _ => (SummaryBy::User, "The hosts each user reached"),
    };
    let (filter, offset) = (shown.filter.clone(), shown.query.offset.unwrap_or(0));
    let read: Result<AuditSummary, StoreError> = state
        .core
        .store()
        .read(move |r| r.audit_summary(&filter, by, offset, ROWS_PAGE))
        .await;
    match read {
        Ok(summary) => audit_page(
            &session,
            title,
            markup::uses(&shown, title, &summary, ROWS_PAGE),
        ),
        Err(err) => store_failed(&session, &shown, err),
    }
}

/// The gate of every page: a session (else the login page), an auditor
/// (else 403), a form that parses (else 400 with the form again).
#[allow(
    clippy::result_large_err,
    reason = "the refusal is the handler's answer, returned once"
)]
fn admitted(
    state: &PortalState,
    session: Result<Session, Failure>,
    form: Result<Query<FilterForm>, QueryRejection>,
    page_of: AuditPage,
) -> Result<(Session, AuditQuery), Response> {
    let Ok(session) = session else {
        return Err(see_other("/login"));
    };
    if !crate::auth::is_auditor(&session.user, &state.core.config(), now_unix()) {
        return Err(not_an_auditor(&session));
    }
    let form = match form {
        Ok(Query(form)) => form,
        Err(rejection) => {
            let error = Failure::bad_request(format!(
                "The filter is malformed: {}",
                rejection.body_text()
            ));
            return Err(refused_filter(
                &session,
                page_of,
                &FilterForm::default(),
                &error,
            ));
        }
    };
    match form.query() {
        Ok(query) => Ok((session, query)),
        Err(error) => Err(refused_filter(&session, page_of, &form, &error)),
    }
}

/// The review service's filter for `query`, and the view recorded; else
/// the page to answer (a 400 with the form, or 503 when the record
/// cannot be written: nothing is shown unaudited).
async fn reviewed(
    state: &PortalState,
    session: &Session,
    source: std::net::IpAddr,
    page_of: AuditPage,
    query: AuditQuery,
) -> Result<Shown, Response> {
    let filter = match review::filter(&query) {
        Ok(filter) => filter,
        Err(err) => {
            let form = form_of(&query);
            let error = Failure::bad_request(err.to_string());
            return Err(refused_filter(session, page_of, &form, &error));
        }
    };
    let view = AuditViewed {
        page: page_of,
        filter: query.clone(),
    };
    if let Err(error) = record_view(state, &session.user.name, source, view).await {
        return Err(audit_page_status(
            error.status,
            session,
            "Audit log",
            markup::failed(&error.message),
        ));
    }
    Ok(Shown {
        page: page_of,
        query,
        filter,
    })
}

fn not_an_auditor(session: &Session) -> Response {
    audit_page_status(
        StatusCode::FORBIDDEN,
        session,
        "Not an auditor",
        markup::forbidden(),
    )
}

fn refused_filter(
    session: &Session,
    page_of: AuditPage,
    form: &FilterForm,
    error: &Failure,
) -> Response {
    audit_page_status(
        error.status,
        session,
        "Audit log",
        markup::refused_filter(page_of, form, &error.message),
    )
}

fn store_failed(session: &Session, shown: &Shown, err: StoreError) -> Response {
    tracing::error!(error = %err, page = shown.page.as_str(), "portal: audit review failed");
    audit_page_status(
        StatusCode::INTERNAL_SERVER_ERROR,
        session,
        "Audit log",
        markup::failed(&Failure::internal().message),
    )
}

fn audit_page(session: &Session, title: &str, body: maud::Markup) -> Response {
    audit_page_status(StatusCode::OK, session, title, body)
}

fn audit_page_status(
    status: StatusCode,
    session: &Session,
    title: &str,
    body: maud::Markup,
) -> Response {
    page(
        status,
        layout(title, Some((&session.user.name, &session.csrf)), body),
    )
}
