//! Rich error details: one flat [`ErrorDetails`] from a failed call's
//! `tonic::Status` or from a stream acknowledgement's `google.rpc.Status`
//! (a batch refused as a whole on `PublishStream`), decoded by
//! `tonic-types` in both cases so there is one decoder.
//!
//! The fields are the Python client's `ErrorDetails`: field violations
//! (`google.rpc.BadRequest`), the retry delay (`google.rpc.RetryInfo`),
//! reason, domain and metadata (`google.rpc.ErrorInfo`) and precondition
//! types (`google.rpc.PreconditionFailure`, e.g. `STALE_SEQUENCE`).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use prost::Message as _;
use tonic::Code;
use tonic_types::{RpcStatusExt as _, StatusExt as _};

/// One `google.rpc.BadRequest` field violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the offending field, e.g. `events` or `producer_id`.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

/// What a refusal says, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetails {
    /// The status code.
    pub code: Code,
    /// The status message.
    pub message: String,
    /// `google.rpc.BadRequest`: the fields to fix (do not retry as is).
    pub field_violations: Vec<FieldViolation>,
    /// `google.rpc.RetryInfo`: wait at least this long before retrying.
    pub retry_delay: Option<Duration>,
    /// `google.rpc.ErrorInfo` reason.
    pub reason: Option<String>,
    /// `google.rpc.ErrorInfo` domain.
    pub domain: Option<String>,
    /// `google.rpc.ErrorInfo` metadata.
    pub metadata: HashMap<String, String>,
    /// `google.rpc.PreconditionFailure` violation types.
    pub precondition_types: Vec<String>,
}

impl ErrorDetails {
    /// Decodes a failed call's status (details it cannot decode are left out).
    pub fn from_status(status: &tonic::Status) -> Self {
        Self::build(status.code(), status.message(), status.get_error_details())
    }

    /// Decodes a `google.rpc.Status`, such as
    /// `PublishStreamResponse.status`.
    pub fn from_rpc_status(status: &testbed_proto::google::rpc::Status) -> Self {
        // The same message on the wire as tonic-types' own: re-read it as that.
        let details = tonic_types::Status::decode(status.encode_to_vec().as_slice())
            .map(|s| s.get_error_details())
            .unwrap_or_default();
        Self::build(Code::from_i32(status.code), &status.message, details)
    }

    fn build(code: Code, message: &str, details: tonic_types::ErrorDetails) -> Self {
        let info = details.error_info();
        Self {
            code,
            message: message.to_owned(),
            field_violations: details
                .bad_request()
                .map(|b| {
                    b.field_violations
                        .iter()
                        .map(|v| FieldViolation {
                            field: v.field.clone(),
                            description: v.description.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            retry_delay: details.retry_info().and_then(|r| r.retry_delay),
            reason: info.map(|i| i.reason.clone()),
            domain: info.map(|i| i.domain.clone()),
            metadata: info.map(|i| i.metadata.clone()).unwrap_or_default(),
            precondition_types: details
                .precondition_failure()
                .map(|p| p.violations.iter().map(|v| v.r#type.clone()).collect())
                .unwrap_or_default(),
        }
    }
}

impl fmt::Display for ErrorDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)?;
        for v in &self.field_violations {
            write!(f, "; {}: {}", v.field, v.description)?;
        }
        if let Some(delay) = self.retry_delay {
            write!(f, "; retry after {delay:?}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A status built with BadRequest and RetryInfo decodes to the same
    /// figures from a tonic::Status and from a google.rpc.Status.
    #[test]
    fn both_status_forms_decode_alike() {
        let mut details =
            tonic_types::ErrorDetails::with_bad_request_violation("events", "must not be empty");
        details.set_retry_info(Some(Duration::from_millis(250)));
        let status =
            tonic::Status::with_error_details(Code::InvalidArgument, "empty batch", details);
        let from_call = ErrorDetails::from_status(&status);
        assert_eq!(from_call.code, Code::InvalidArgument);
        assert_eq!(from_call.message, "empty batch");
        assert_eq!(
            from_call.field_violations,
            vec![FieldViolation {
                field: "events".to_owned(),
                description: "must not be empty".to_owned()
            }]
        );
        assert_eq!(from_call.retry_delay, Some(Duration::from_millis(250)));
        let rpc = testbed_proto::google::rpc::Status::decode(status.details()).unwrap();
        assert_eq!(ErrorDetails::from_rpc_status(&rpc), from_call);
        assert_eq!(
            from_call.to_string(),
            "InvalidArgument: empty batch; events: must not be empty; retry after 250ms"
        );
    }
}
