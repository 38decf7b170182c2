//! Retries that stay exact, for unary calls.
//!
//! Retried codes are the two the server documents as "nothing was done,
//! retry": UNAVAILABLE (store unreachable, or the server not up yet) and
//! RESOURCE_EXHAUSTED (backpressure or load shedding, with a
//! `google.rpc.RetryInfo` delay). Every attempt sends the very same request,
//! so the server's dedupe (by `producer_id` + `sequence` when set, else by
//! `event_id`) makes a retried batch that was in fact appended count once.
//!
//! The waits are `backon`'s exponential backoff with jitter; its `adjust`
//! hook lengthens a wait to the server's `RetryInfo` delay when that is
//! longer (the server's figure is a floor, never cut short).

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder, Retryable as _};
use tonic::Code;
use tonic_types::StatusExt as _;

/// How a call is retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first call included (at least 1).
    pub max_attempts: usize,
    /// The first retry's wait.
    pub initial_backoff: Duration,
    /// The longest wait (before `RetryInfo` lengthens it).
    pub max_backoff: Duration,
    /// Growth of the wait per retry.
    pub multiplier: f32,
    /// Lengthens each wait by a random 0-100% (backon's jitter), so
    /// clients that failed together do not retry together.
    pub jitter: bool,
    /// Stop retrying once the waits add up to this much (`None`: only
    /// `max_attempts` bounds them).
    pub max_elapsed: Option<Duration>,
    /// The codes worth another attempt.
    pub retry_codes: Vec<Code>,
    /// The deadline of each attempt (sent as `grpc-timeout`) by the
    /// [`crate::Client`] helpers; DEADLINE_EXCEEDED is not retried by default.
    pub attempt_timeout: Option<Duration>,
}

impl Default for RetryPolicy {
    /// 5 attempts, 100 ms doubling to 5 s, with jitter, waits within 30 s,
    /// on UNAVAILABLE and RESOURCE_EXHAUSTED, 10 s per attempt (the Python
    /// client's figures).
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: true,
            max_elapsed: Some(Duration::from_secs(30)),
            retry_codes: vec![Code::Unavailable, Code::ResourceExhausted],
            attempt_timeout: Some(Duration::from_secs(10)),
        }
    }
}

impl RetryPolicy {
    /// The waits between attempts, as a `backon` backoff (an iterator of
    /// durations that ends when retries are used up).
    pub fn backoff(&self) -> ExponentialBackoff {
        let builder = ExponentialBuilder::new()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff)
            .with_factor(self.multiplier)
            .with_max_times(self.max_attempts.saturating_sub(1))
            .with_total_delay(self.max_elapsed);
        if self.jitter {
            builder.with_jitter().build()
        } else {
            builder.build()
        }
    }

    /// `message` as a request carrying [`RetryPolicy::attempt_timeout`].
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(timeout) = self.attempt_timeout {
            request.set_timeout(timeout);
        }
        request
    }

    /// Whether `code` is worth another attempt under this policy.
    pub fn retries(&self, code: Code) -> bool {
        self.retry_codes.contains(&code)
    }
}

/// The wait before a retry: the backoff's, or the server's `RetryInfo`
/// delay when that is longer. `None` when retries are used up.
pub fn next_delay(backoff: Option<Duration>, retry_info: Option<Duration>) -> Option<Duration> {
    backoff.map(|d| retry_info.map_or(d, |hint| d.max(hint)))
}

/// Runs `call` until it succeeds, fails with a code `policy` does not
/// retry, or attempts run out; returns the last result. `call` must build
/// the same request each time (clone it) so that retries stay exact.
pub async fn with_retries<T, F, Fut>(policy: &RetryPolicy, call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    call.retry(policy.backoff())
        .when(|status: &tonic::Status| policy.retries(status.code()))
        .adjust(|status: &tonic::Status, backoff| {
            let hint = status.get_details_retry_info().and_then(|r| r.retry_delay);
            next_delay(backoff, hint)
        })
        .notify(|status: &tonic::Status, wait| {
            tracing::debug!(code = ?status.code(), message = status.message(), ?wait, "retrying");
        })
        .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;

    fn exhausted(delay: Duration) -> tonic::Status {
        tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "backlog over the limit",
            tonic_types::ErrorDetails::with_retry_info(Some(delay)),
        )
    }

    /// A RESOURCE_EXHAUSTED with RetryInfo 150 ms is tried exactly
    /// max_attempts (3) times, waiting at least 150 ms before each retry.
    #[tokio::test]
    async fn retry_info_is_a_floor_and_attempts_are_capped() {
        let policy = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        let calls = AtomicUsize::new(0);
        let start = Instant::now();
        let result: Result<(), _> = with_retries(&policy, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(exhausted(Duration::from_millis(150)))
        })
        .await;
        assert_eq!(result.unwrap_err().code(), Code::ResourceExhausted);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(
            start.elapsed() >= Duration::from_millis(300),
            "{:?}",
            start.elapsed()
        );
    }

    /// A code the policy does not retry (INVALID_ARGUMENT) is tried once;
    /// a retried one that then succeeds returns the success.
    #[tokio::test]
    async fn only_retry_codes_are_retried() {
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        let calls = AtomicUsize::new(0);
        let result: Result<(), _> = with_retries(&policy, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(tonic::Status::invalid_argument("no"))
        })
        .await;
        assert_eq!(result.unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicUsize::new(0);
        let result = with_retries(&policy, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(tonic::Status::unavailable("down")),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(result.unwrap(), 2);
    }

    /// The server's delay wins when longer, the backoff's otherwise, and
    /// used-up retries stay used up.
    #[test]
    fn next_delay_takes_the_longer() {
        let ms = Duration::from_millis;
        assert_eq!(next_delay(Some(ms(100)), Some(ms(500))), Some(ms(500)));
        assert_eq!(next_delay(Some(ms(800)), Some(ms(500))), Some(ms(800)));
        assert_eq!(next_delay(Some(ms(100)), None), Some(ms(100)));
        assert_eq!(next_delay(None, Some(ms(500))), None);
    }
}
