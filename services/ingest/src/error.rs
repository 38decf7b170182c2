//! Ingest errors and their one mapping to gRPC status codes.

use std::time::Duration;

use prost::Message as _;
use testbed_proto::google::rpc;
use testbed_server::store_status;
use testbed_stream::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// Why a whole batch was refused. Per-event problems are not errors: they
/// are rejections inside a successful response.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The batch has no events.
    #[error("the batch has no events")]
    EmptyBatch {
        /// The field holding the events.
        field: &'static str,
    },
    /// The batch is over `--max-batch`.
    #[error("the batch has {len} events; at most {max} are allowed")]
    BatchTooLarge {
        /// The field holding the events.
        field: &'static str,
        /// Events in the batch.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The producer id breaks the id rules.
    #[error("invalid producer_id: {0}")]
    InvalidProducer(String),
    /// A producer's sequence is past what the store can compare exactly.
    #[error("sequence {0} is over the largest producer sequence, 2^53-1")]
    SequenceTooLarge(u64),
    /// A partition's backlog is over `--backlog-limit`.
    #[error(
        "backlog of partition {partition} is {backlog} events, over the limit of {limit}; retry later"
    )]
    Backpressure {
        /// The partition.
        partition: u32,
        /// Its backlog.
        backlog: u64,
        /// The limit.
        limit: u64,
        /// Suggested delay.
        retry_after: Duration,
    },
    /// The store failed; the batch may be retried.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<IngestError> for Status {
    fn from(err: IngestError) -> Self {
        match &err {
            IngestError::EmptyBatch { field } | IngestError::BatchTooLarge { field, .. } => {
                Status::with_error_details(
                    Code::InvalidArgument,
                    err.to_string(),
                    ErrorDetails::with_bad_request_violation(*field, err.to_string()),
                )
            }
            IngestError::InvalidProducer(reason) => Status::with_error_details(
                Code::InvalidArgument,
                err.to_string(),
                ErrorDetails::with_bad_request_violation("producer_id", reason.clone()),
            ),
            IngestError::SequenceTooLarge(_) => Status::with_error_details(
                Code::InvalidArgument,
                err.to_string(),
                ErrorDetails::with_bad_request_violation("sequence", err.to_string()),
            ),
            IngestError::Backpressure { retry_after, .. } => Status::with_error_details(
                Code::ResourceExhausted,
                err.to_string(),
                ErrorDetails::with_retry_info(Some(*retry_after)),
            ),
            IngestError::Store(store) => store_status(
                store,
                "appending the batch",
                "nothing of this batch is acknowledged, retry it",
            ),
        }
    }
}

/// The `google.rpc.Status` of a refused stream batch: the same code,
/// message and details a unary call would have had.
///
/// The code and message always come from `status` itself. Its details
/// bytes are the encoded `google.rpc.Status` that tonic builds for a status
/// made with details, and are *empty* for one made without (UNAVAILABLE,
/// INTERNAL): empty bytes decode successfully as a default message, code 0
/// (OK), so only the decoded details list is taken from them, never the code.
pub fn to_rpc_status(status: &Status) -> rpc::Status {
    let details = if status.details().is_empty() {
        Vec::new()
    } else {
        match rpc::Status::decode(status.details()) {
            Ok(decoded) => decoded.details,
            Err(err) => {
                // Only this crate builds these statuses, so this is a bug;
                // the code and message still go out intact.
                tracing::error!(error = %err, code = ?status.code(), "undecodable status details dropped");
                Vec::new()
            }
        }
    };
    rpc::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each error maps to its documented code, with details naming the field.
    #[test]
    fn codes_and_details() {
        let status = Status::from(IngestError::EmptyBatch { field: "events" });
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().unwrap();
        assert_eq!(bad.field_violations[0].field, "events");

        let status = Status::from(IngestError::Backpressure {
            partition: 1,
            backlog: 10,
            limit: 5,
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(Duration::from_millis(1500))
        );

        let status = Status::from(IngestError::Store(StoreError::Unavailable("down".into())));
        assert_eq!(status.code(), Code::Unavailable);
        let status = Status::from(IngestError::SequenceTooLarge(1 << 60));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().unwrap();
        assert_eq!(bad.field_violations[0].field, "sequence");

        let status = Status::from(IngestError::Store(StoreError::StaleSequence {
            producer_id: "sim-1".into(),
            sequence: 3,
            highest: 70_000,
            window: 65_536,
        }));
        assert_eq!(status.code(), Code::FailedPrecondition);
        let failure = status.get_details_precondition_failure().unwrap();
        assert_eq!(failure.violations[0].r#type, "STALE_SEQUENCE");
        assert!(failure.violations[0].subject.contains("sequence"));

        let status = Status::from(IngestError::Store(StoreError::Protocol("boom".into())));
        assert_eq!(status.code(), Code::Internal);
        assert!(
            !status.message().contains("boom"),
            "internal causes stay in the logs"
        );
    }
}
