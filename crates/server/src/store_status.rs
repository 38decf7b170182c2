//! The one mapping of a store failure to the gRPC status a client sees,
//! shared by every service that reads or writes the store (ingest, query,
//! worker control), so the same fault answers with the same code
//! everywhere.

use testbed_stream::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The status of `err`, met while `doing` (e.g. "appending the batch");
/// `advice` tells the client what to do about a transient fault (e.g.
/// "nothing of this batch is acknowledged, retry it"):
///
/// - [`StoreError::Unavailable`]: `UNAVAILABLE` with the cause and the
///   advice: the store is down or slow, and a retry may succeed.
/// - [`StoreError::NotReplicated`]: `UNAVAILABLE` with a
///   `google.rpc.RetryInfo` of the wait timeout: the write is on the
///   master only; a retry (deduplicated) waits for the replicas again.
/// - [`StoreError::StaleSequence`]: `FAILED_PRECONDITION` with a
///   `google.rpc.PreconditionFailure` of type `STALE_SEQUENCE` (only
///   appends of idempotent producers meet it): not retryable as it is.
/// - [`StoreError::Disagreement`]: `FAILED_PRECONDITION` with a
///   `PreconditionFailure` of type `SETTINGS_DISAGREE`: this process's flags
///   disagree with the ones recorded for the key prefix.
/// - [`StoreError::Config`]: `FAILED_PRECONDITION`: store settings the
///   backend cannot serve, or credentials Redis refuses (not retryable
///   until someone fixes them).
/// - [`StoreError::Protocol`]: `INTERNAL` with a generic message; the
///   cause is logged here, never sent.
pub fn store_status(err: &StoreError, doing: &str, advice: &str) -> Status {
    match err {
        StoreError::Unavailable(_) => Status::unavailable(format!("{err}; {advice}")),
        StoreError::NotReplicated { timeout, .. } => Status::with_error_details(
            Code::Unavailable,
            format!("{err}; {advice}"),
            ErrorDetails::with_retry_info(Some(*timeout)),
        ),
        StoreError::StaleSequence { producer_id, .. } => Status::with_error_details(
            Code::FailedPrecondition,
            format!("{err}; send it again under a new producer_id if it must go in"),
            ErrorDetails::with_precondition_failure_violation(
                "STALE_SEQUENCE",
                format!("producer_id {producer_id:?}, field sequence"),
                err.to_string(),
            ),
        ),
        StoreError::Disagreement { flag, .. } => Status::with_error_details(
            Code::FailedPrecondition,
            err.to_string(),
            ErrorDetails::with_precondition_failure_violation(
                "SETTINGS_DISAGREE",
                format!("server flag {flag}"),
                err.to_string(),
            ),
        ),
        StoreError::Config(_) => Status::failed_precondition(err.to_string()),
        StoreError::Protocol(cause) => {
            tracing::error!(error = %cause, doing, "store protocol error");
            Status::internal(format!("internal error {doing}; {advice}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each store error has its code; an internal cause stays in the logs.
    #[test]
    fn codes() {
        let s = store_status(
            &StoreError::Unavailable("Connection refused".into()),
            "reading",
            "retry later",
        );
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(
            s.message(),
            "event store unavailable: Connection refused; retry later"
        );
        let s = store_status(
            &StoreError::Protocol("secret".into()),
            "reading",
            "retry later",
        );
        assert_eq!(s.code(), Code::Internal);
        assert_eq!(s.message(), "internal error reading; retry later");
        let s = store_status(
            &StoreError::StaleSequence {
                producer_id: "p".into(),
                sequence: 1,
                highest: 70_000,
                window: 65_536,
            },
            "appending",
            "retry",
        );
        assert_eq!(s.code(), Code::FailedPrecondition);
        let failure = s.get_details_precondition_failure().unwrap();
        assert_eq!(failure.violations[0].r#type, "STALE_SEQUENCE");
        let s = store_status(
            &StoreError::NotReplicated {
                wanted: 1,
                replicated: 0,
                timeout: std::time::Duration::from_millis(100),
            },
            "appending",
            "retry",
        );
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(
            s.get_details_retry_info().unwrap().retry_delay,
            Some(std::time::Duration::from_millis(100))
        );
    }
}
