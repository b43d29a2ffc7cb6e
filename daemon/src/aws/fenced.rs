//! AWS calls made under an HA lease's fence (the active gateway's part: the
//! elastic IP's association and the pool routes). A call that the SDK
//! retries for seconds could land after the lease passed to the other node,
//! so here the SDK does not retry: each attempt is bounded by an operation
//! timeout that ends it before the fence's deadline (itself the lease
//! margin before the lease can pass), and the fence is asked again before
//! every attempt. A request AWS received and carries out after its sender
//! gave up is still possible; the HA active's reconcile puts that right.

use std::future::Future;
use std::time::Duration;

use super::errors::{AwsError, MAX_ATTEMPTS};

/// The longest one fenced attempt may take, whatever time the fence has left.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The first pause between attempts; it doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How long the holder may still act: `None` once the fence no longer
/// holds, else the time left before its deadline.
pub type TimeLeft<'a> = &'a (dyn Fn() -> Option<Duration> + Send + Sync);

/// What to do after an attempt failed with `error` (attempt `n`, from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Pause this long, ask the fence, then try again.
    RetryAfter(Duration),
    GiveUp,
}

/// Whether (and after what pause) an attempt that failed is tried again:
/// only what may pass by itself (throttling, the network, a timeout), and
/// at most [`MAX_ATTEMPTS`] attempts in all.
pub fn next(attempt: u32, error: &AwsError) -> Next {
    let passing = matches!(
        error,
        AwsError::Throttled { .. } | AwsError::Unreachable { .. } | AwsError::TimedOut { .. }
    );
    if !passing || attempt >= MAX_ATTEMPTS {
        return Next::GiveUp;
    }
    let doubled = FIRST_BACKOFF.saturating_mul(1 << (attempt - 1).min(8));
    Next::RetryAfter(doubled.min(MAX_BACKOFF))
}

/// Runs `call` (one attempt each time it is called, without the SDK's
/// retries) while `left` says the fence holds, each attempt bounded by the
/// time left (at most [`CALL_TIMEOUT`]); `what` names it in a timeout.
pub async fn attempt<T, F, Fut>(
    what: &'static str,
    left: TimeLeft<'_>,
    mut call: F,
) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, AwsError>>,
{
    let mut n = 1;
    loop {
        let Some(time) = left() else {
            return Err(AwsError::NotActive);
        };
        let limit = time.min(CALL_TIMEOUT);
        let error = match tokio::time::timeout(limit, call()).await {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(error)) => error,
            Err(_) => AwsError::TimedOut { what, limit },
        };
        match next(n, &error) {
            Next::GiveUp => return Err(error),
            Next::RetryAfter(pause) => {
                tracing::debug!(%error, attempt = n, ?pause, "a fenced AWS call failed; trying again while the lease holds");
                tokio::time::sleep(pause).await;
                n += 1;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    use super::*;

    fn throttled() -> AwsError {
        AwsError::Throttled {
            action: "ec2:AssociateAddress",
            code: "RequestLimitExceeded".into(),
        }
    }

    /// The hole of issue 24, finding 3: a call that hangs ended only when
    /// AWS answered, and the SDK retried without asking the fence. Here it
    /// ends within the fence's time, and the lost fence stops the retry.
    #[tokio::test]
    async fn a_hanging_call_ends_within_the_fence_and_a_lost_fence_stops_the_retry() {
        let asked = AtomicU32::new(0);
        let left = || match asked.fetch_add(1, Ordering::SeqCst) {
            0 => Some(Duration::from_millis(50)),
            _ => None,
        };
        let attempts = AtomicU32::new(0);
        let started = Instant::now();
        let result: Result<(), AwsError> = attempt("ec2:AssociateAddress", &left, || {
            attempts.fetch_add(1, Ordering::SeqCst);
            std::future::pending()
        })
        .await;
        assert!(matches!(result, Err(AwsError::NotActive)), "{result:?}");
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        assert_eq!(
            asked.load(Ordering::SeqCst),
            2,
            "asked again before the retry"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn each_attempt_is_bounded_by_the_call_timeout_too() {
        let left = || Some(Duration::from_secs(3600));
        let limits = Mutex::new(Vec::new());
        let started = Instant::now();
        let result: Result<(), AwsError> = tokio::time::timeout(
            CALL_TIMEOUT + Duration::from_millis(500),
            attempt("ec2:ReplaceRoute", &left, || {
                limits.lock().unwrap().push(started.elapsed());
                std::future::pending()
            }),
        )
        .await
        .unwrap_or(Ok(()));
        // The first attempt timed out at CALL_TIMEOUT and a second began.
        assert!(result.is_ok(), "{result:?}");
        let limits = limits.lock().unwrap();
        assert_eq!(limits.len(), 2, "{limits:?}");
        assert!(limits[1] >= CALL_TIMEOUT, "{limits:?}");
    }

    #[tokio::test]
    async fn passing_errors_are_retried_while_the_fence_holds_and_refusals_are_not() {
        let left = || Some(Duration::from_secs(5));
        let attempts = AtomicU32::new(0);
        let result = attempt("ec2:AssociateAddress", &left, || {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            async move { if n < 2 { Err(throttled()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(result.unwrap(), 2);

        let attempts = AtomicU32::new(0);
        let result: Result<(), AwsError> = attempt("ec2:AssociateAddress", &left, || {
            attempts.fetch_add(1, Ordering::SeqCst);
            async {
                Err(AwsError::Denied {
                    action: "ec2:AssociateAddress",
                    code: "UnauthorizedOperation".into(),
                    message: String::new(),
                })
            }
        })
        .await;
        assert!(matches!(result, Err(AwsError::Denied { .. })));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_schedule_backs_off_and_stops_after_the_last_attempt() {
        assert_eq!(next(1, &throttled()), Next::RetryAfter(FIRST_BACKOFF));
        assert_eq!(next(2, &throttled()), Next::RetryAfter(FIRST_BACKOFF * 2));
        assert_eq!(next(4, &throttled()), Next::RetryAfter(MAX_BACKOFF));
        assert_eq!(next(MAX_ATTEMPTS, &throttled()), Next::GiveUp);
        assert_eq!(next(1, &AwsError::NotActive), Next::GiveUp);
    }
}
