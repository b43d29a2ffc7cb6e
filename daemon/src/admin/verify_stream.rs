//! The answer of `GET /v1/audit/verify?progress=true`: JSON lines, a
//! [`VerifyProgress`] after each page of records the store checked, then
//! the [`VerifyReport`] (or the [`ApiError`] that ended the check).
//!
//! The check runs on a blocking thread (`Store::read`); its progress comes
//! out through a small bounded channel (a full channel drops a line: the
//! next one says more). The body polls the check itself, so no task is
//! left behind: when the client goes away the body is dropped, its guard
//! cancels the check's token, and the check stops after its current page,
//! as it does when accessd shuts down (the token is a child of the admin
//! API's).

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use gatehouse_config::api::{ApiError, ErrorCode, VerifyLine, VerifyProgress};
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::store::audit_verify::{VERIFY_PAGE, Verified};
use crate::store::{Store, StoreError};

/// Progress lines waiting for the client at most.
const PROGRESS_BACKLOG: usize = 8;

/// The check of the whole chain, stopped when `stop` is cancelled;
/// each page's progress goes to `progress`.
pub async fn check(
    store: &Store,
    stop: CancellationToken,
    progress: Option<mpsc::Sender<VerifyProgress>>,
) -> Result<Verified<()>, StoreError> {
    store
        .read(move |r| {
            r.verify_audit_paged(VERIFY_PAGE, |p| {
                if stop.is_cancelled() {
                    return ControlFlow::Break(());
                }
                if let Some(progress) = &progress {
                    // Full: this line is dropped, the next says more.
                    let _ = progress.try_send(p);
                }
                ControlFlow::Continue(())
            })
        })
        .await
}

/// The streamed answer: the check starts when the body is first polled.
pub fn respond(store: Store, stop: CancellationToken) -> Response {
    let (tx, rx) = mpsc::channel(PROGRESS_BACKLOG);
    let guard = stop.clone().drop_guard();
    let outcome = Box::pin(async move { check(&store, stop, Some(tx)).await });
    let body = Lines {
        progress: rx,
        outcome: Some(outcome),
        last: None,
        _stop: guard,
    };
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        )],
        Body::new(body),
    )
        .into_response()
}

type Outcome = Pin<Box<dyn Future<Output = Result<Verified<()>, StoreError>> + Send>>;

/// The body: progress lines while the check runs, then its last line.
struct Lines {
    progress: mpsc::Receiver<VerifyProgress>,
    /// `None` once the check ended.
    outcome: Option<Outcome>,
    /// The last line, once the check ended, until it went out.
    last: Option<VerifyLine>,
    /// Cancels the check when the body is dropped.
    _stop: DropGuard,
}

impl hyper::body::Body for Lines {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        loop {
            // Progress first, also what is left once the check ended, so
            // the lines come out in order.
            if let Poll::Ready(Some(p)) = self.progress.poll_recv(cx) {
                return Poll::Ready(Some(Ok(frame(&VerifyLine::Progress(p)))));
            }
            if let Some(last) = self.last.take() {
                return Poll::Ready(Some(Ok(frame(&last))));
            }
            let Some(outcome) = self.outcome.as_mut() else {
                return Poll::Ready(None);
            };
            let Poll::Ready(done) = outcome.as_mut().poll(cx) else {
                return Poll::Pending;
            };
            self.outcome = None;
            self.last = Some(last_line(done));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.outcome.is_none() && self.last.is_none()
    }
}

/// The line that ends the answer.
fn last_line(done: Result<Verified<()>, StoreError>) -> VerifyLine {
    match done {
        Ok(Verified::Report(report)) => VerifyLine::Report(report),
        // Told to stop: the client is gone, or accessd is stopping.
        Ok(Verified::Stopped(())) => VerifyLine::Error(shutting_down()),
        Err(err) => {
            tracing::error!(error = %err, "the audit check failed");
            VerifyLine::Error(ApiError {
                code: err.api_code(),
                message: err.to_string(),
                details: Vec::new(),
            })
        }
    }
}

/// The error of a check stopped because accessd is shutting down.
pub fn shutting_down() -> ApiError {
    ApiError {
        code: ErrorCode::Internal,
        message: "accessd is shutting down: the audit check stopped before the end; run it again"
            .into(),
        details: Vec::new(),
    }
}

fn frame(line: &VerifyLine) -> Frame<Bytes> {
    let mut text = serde_json::to_string(line).unwrap_or_else(|err| {
        format!(r#"{{"code":"internal","message":"cannot encode a line: {err}"}}"#)
    });
    text.push('\n');
    Frame::data(Bytes::from(text))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use axum::http::{Method, StatusCode};
    use gatehouse_config::api::VerifyReport;

    use super::*;
    use crate::audit::event::{Actor, Kind, Source, event};
    use crate::testing::{CONFIG, TestGateway};

    /// `n` more records in the test gateway's log.
    async fn fill(gw: &TestGateway, n: usize) {
        gw.core
            .store()
            .write(move |w| {
                for i in 0..n {
                    w.audit(
                        event(Kind::UserAdd, Actor::Gateway, Source::Local).on(format!("u{i}")),
                    )?;
                }
                Ok(())
            })
            .await
            .unwrap();
    }

    fn lines(text: &str) -> Vec<VerifyLine> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }

    #[tokio::test]
    async fn progress_lines_come_before_the_report_and_the_plain_answer_is_unchanged() {
        let gw = TestGateway::new(CONFIG).await;
        fill(&gw, 2 * VERIFY_PAGE + 5).await;
        let plain = gw.admin(Method::GET, "/v1/audit/verify", None).await;
        assert_eq!(plain.status, StatusCode::OK, "{}", plain.text);
        let report: VerifyReport = serde_json::from_value(plain.json.clone()).unwrap();
        assert!(report.intact, "{report:?}");
        let total = report.records;
        assert!(total > 2 * VERIFY_PAGE as u64, "{total}");

        let streamed = gw
            .admin(Method::GET, "/v1/audit/verify?progress=true", None)
            .await;
        assert_eq!(streamed.status, StatusCode::OK, "{}", streamed.text);
        assert_eq!(
            streamed.headers[header::CONTENT_TYPE],
            "application/x-ndjson"
        );
        let lines = lines(&streamed.text);
        let progress: Vec<(u64, u64)> = lines
            .iter()
            .filter_map(|l| match l {
                VerifyLine::Progress(p) => Some((p.checked, p.total)),
                _ => None,
            })
            .collect();
        let page = VERIFY_PAGE as u64;
        assert_eq!(progress, [(0, total), (page, total), (2 * page, total)]);
        let Some(VerifyLine::Report(last)) = lines.last() else {
            panic!("no report last: {}", streamed.text);
        };
        assert_eq!(serde_json::to_value(last).unwrap(), plain.json);
        assert_eq!(lines.len(), 4, "{}", streamed.text);
    }

    /// Polls `body` for its next frame.
    async fn next_frame(body: &mut Body) -> Option<Frame<Bytes>> {
        use hyper::body::Body as _;
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx))
            .await
            .map(Result::unwrap)
    }

    #[tokio::test]
    async fn a_client_that_goes_away_stops_the_check() {
        let gw = TestGateway::new(CONFIG).await;
        fill(&gw, 3).await;
        let stop = CancellationToken::new();
        let mut body = respond(gw.core.store().clone(), stop.clone()).into_body();
        let first = next_frame(&mut body).await.unwrap();
        let first: VerifyLine = serde_json::from_slice(first.data_ref().unwrap()).unwrap();
        assert!(
            matches!(first, VerifyLine::Progress(p) if p.checked == 0),
            "{first:?}"
        );
        assert!(!stop.is_cancelled());
        // The client hangs up: the body is dropped, and with it the check.
        drop(body);
        assert!(stop.is_cancelled(), "the check's token is cancelled");
        let (tx, mut rx) = mpsc::channel(PROGRESS_BACKLOG);
        let stopped = check(gw.core.store(), stop, Some(tx)).await.unwrap();
        assert!(matches!(stopped, Verified::Stopped(())), "{stopped:?}");
        assert!(rx.try_recv().is_err(), "a stopped check tells nothing");
    }

    #[tokio::test]
    async fn a_check_ends_when_accessd_shuts_down() {
        let gw = TestGateway::new(CONFIG).await;
        fill(&gw, 3).await;
        gw.admin_shutdown.cancel();
        let plain = gw.admin(Method::GET, "/v1/audit/verify", None).await;
        assert_eq!(
            plain.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            plain.text
        );
        assert!(
            plain.json["message"]
                .as_str()
                .unwrap()
                .contains("shutting down")
        );
        let streamed = gw
            .admin(Method::GET, "/v1/audit/verify?progress=true", None)
            .await;
        match lines(&streamed.text).as_slice() {
            [VerifyLine::Error(error)] => assert!(error.message.contains("shutting down")),
            other => panic!("{other:?}"),
        }
    }
}
