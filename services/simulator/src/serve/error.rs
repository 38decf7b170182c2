//! Errors of `testbed.v1.SimulatorService` and their one mapping to gRPC
//! status codes.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// The resource type named in `google.rpc.ResourceInfo`.
const RUN_RESOURCE: &str = "testbed.v1.Run";

/// The domain of this API's `google.rpc.ErrorInfo` reasons.
pub const ERROR_DOMAIN: &str = "testbed.v1.SimulatorService";

/// `google.rpc.ErrorInfo.reason` of a target off the allow-list.
pub const TARGET_NOT_ALLOWED: &str = "TARGET_NOT_ALLOWED";

/// `google.rpc.ErrorInfo.reason` of a run that would take the total rate
/// of the active runs above `--max-total-rate`.
pub const TOTAL_RATE_EXCEEDED: &str = "TOTAL_RATE_EXCEEDED";

/// Why a simulator RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is missing, out of bounds or malformed: the client's
    /// mistake.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The field path, as in the proto (`spec.rate.events_per_second`).
        field: String,
        /// What is wrong with it, in words.
        reason: String,
    },
    /// No run has this id (never started, or finished and no longer kept).
    #[error("run {0:?} not found: unknown, or finished and no longer kept")]
    NotFound(String),
    /// The run id is taken by a run this server knows.
    #[error("run {0:?} already exists; choose another run_id or leave it empty")]
    AlreadyExists(String),
    /// The run has ended (or is stopping) and cannot change any more.
    #[error("run {id:?} has already ended ({state})")]
    Ended {
        /// The run.
        id: String,
        /// Its state name, e.g. `RUN_STATE_COMPLETED`.
        state: &'static str,
    },
    /// `--max-runs` runs are active.
    #[error("{max} runs are already active (the --max-runs limit); stop one or retry later")]
    TooManyRuns {
        /// The limit.
        max: usize,
        /// The suggested retry delay (`--retry-after`).
        retry_after: Duration,
    },
    /// The target is not on this server's allow-list (`--allow-target`).
    #[error("target {target} is not allowed by this simulator{}; see --allow-target", .address.as_ref().map(|a| format!(" (it resolves to {a})")).unwrap_or_default())]
    TargetNotAllowed {
        /// The field naming the target (`spec.target`).
        field: String,
        /// The target, as requested.
        target: String,
        /// The resolved address refused, when the target is a name.
        address: Option<String>,
    },
    /// The run would take the total rate of the active runs above
    /// `--max-total-rate`.
    #[error(
        "{field}: {requested} events/s on top of the {active} events/s of the active runs is above this server's total limit of {max} (--max-total-rate)"
    )]
    TotalRateExceeded {
        /// The field asking for the rate.
        field: String,
        /// The peak rate the request asks for.
        requested: f64,
        /// The peak rates of the other active runs, summed.
        active: f64,
        /// The cap.
        max: f64,
        /// The suggested retry delay (`--retry-after`).
        retry_after: Duration,
    },
    /// The target could not be resolved, or the server is shutting down.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The `reason` label of `sim_requests_refused_total` and the audit
    /// line's outcome.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::InvalidArgument { .. } => "invalid_argument",
            ApiError::NotFound(_) => "not_found",
            ApiError::AlreadyExists(_) => "already_exists",
            ApiError::Ended { .. } => "ended",
            ApiError::TooManyRuns { .. } => "too_many_runs",
            ApiError::TargetNotAllowed { .. } => "target_not_allowed",
            ApiError::TotalRateExceeded { .. } => "total_rate_exceeded",
            ApiError::Unavailable(_) => "unavailable",
        }
    }

    /// A bad `field`, because of `reason`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let message = err.to_string();
        match err {
            ApiError::InvalidArgument { field, reason } => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request_violation(field, reason),
            ),
            ApiError::NotFound(id) => Status::with_error_details(
                Code::NotFound,
                message,
                ErrorDetails::with_resource_info(RUN_RESOURCE, id, "", "no such run"),
            ),
            ApiError::AlreadyExists(id) => Status::with_error_details(
                Code::AlreadyExists,
                message,
                ErrorDetails::with_resource_info(RUN_RESOURCE, id, "", "run id in use"),
            ),
            ApiError::Ended { id, state } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_precondition_failure_violation(
                    "STATE",
                    format!("runs/{id}"),
                    format!("the run is {state}, not running"),
                ),
            ),
            ApiError::TooManyRuns { retry_after, .. } => Status::with_error_details(
                Code::ResourceExhausted,
                message,
                ErrorDetails::with_retry_info(Some(retry_after)),
            ),
            ApiError::TargetNotAllowed {
                field,
                target,
                address,
            } => {
                let mut metadata =
                    HashMap::from([("field".to_owned(), field), ("target".to_owned(), target)]);
                if let Some(address) = address {
                    metadata.insert("address".to_owned(), address);
                }
                Status::with_error_details(
                    Code::PermissionDenied,
                    message,
                    ErrorDetails::with_error_info(TARGET_NOT_ALLOWED, ERROR_DOMAIN, metadata),
                )
            }
            ApiError::TotalRateExceeded {
                field,
                max,
                retry_after,
                ..
            } => {
                let mut details = ErrorDetails::with_quota_failure_violation(
                    field.clone(),
                    format!("at most {max} events/s across active runs (--max-total-rate)"),
                );
                details.set_retry_info(Some(retry_after)).set_error_info(
                    TOTAL_RATE_EXCEEDED,
                    ERROR_DOMAIN,
                    HashMap::from([
                        ("field".to_owned(), field),
                        ("cap".to_owned(), "--max-total-rate".to_owned()),
                        ("max".to_owned(), max.to_string()),
                    ]),
                );
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            ApiError::Unavailable(_) => Status::unavailable(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each variant maps to its documented code, with the detail a client
    /// acts on.
    #[test]
    fn codes_and_details() {
        let s = Status::from(ApiError::invalid(
            "spec.rate.events_per_second",
            "must be > 0",
        ));
        assert_eq!(s.code(), Code::InvalidArgument);
        let bad = s.get_details_bad_request().unwrap();
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "spec.rate.events_per_second");
        assert_eq!(bad.field_violations[0].description, "must be > 0");

        let s = Status::from(ApiError::NotFound("r1".into()));
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.get_details_resource_info().unwrap().resource_name, "r1");

        let s = Status::from(ApiError::AlreadyExists("r1".into()));
        assert_eq!(s.code(), Code::AlreadyExists);

        let s = Status::from(ApiError::Ended {
            id: "r1".into(),
            state: "RUN_STATE_COMPLETED",
        });
        assert_eq!(s.code(), Code::FailedPrecondition);
        let pre = s.get_details_precondition_failure().unwrap();
        assert_eq!(pre.violations[0].subject, "runs/r1");

        let s = Status::from(ApiError::TooManyRuns {
            max: 4,
            retry_after: Duration::from_secs(5),
        });
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.get_details_retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(5))
        );

        let s = Status::from(ApiError::TargetNotAllowed {
            field: "spec.target".into(),
            target: "http://x:1".into(),
            address: Some("10.0.0.1:1".into()),
        });
        assert_eq!(s.code(), Code::PermissionDenied);
        let info = s.get_details_error_info().unwrap();
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            (TARGET_NOT_ALLOWED, ERROR_DOMAIN)
        );
        assert_eq!(info.metadata["target"], "http://x:1");
        assert_eq!(info.metadata["address"], "10.0.0.1:1");

        let s = Status::from(ApiError::TotalRateExceeded {
            field: "spec.rate.events_per_second".into(),
            requested: 10.0,
            active: 95.0,
            max: 100.0,
            retry_after: Duration::from_secs(5),
        });
        assert_eq!(s.code(), Code::ResourceExhausted);
        let quota = s.get_details_quota_failure().unwrap();
        assert_eq!(quota.violations[0].subject, "spec.rate.events_per_second");
        assert_eq!(
            s.get_details_error_info().unwrap().reason,
            TOTAL_RATE_EXCEEDED
        );
        assert!(s.get_details_retry_info().is_some());

        let s = Status::from(ApiError::Unavailable("shutting down".into()));
        assert_eq!(s.code(), Code::Unavailable);
    }
}
