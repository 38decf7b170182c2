//! Query errors and their one mapping to gRPC status codes.

use testbed_server::store_status;
use testbed_stream::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A request field is out of bounds or malformed: the client's mistake.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The field, named as in the proto.
        field: &'static str,
        /// What is wrong with it, in words.
        reason: String,
    },
    /// The device or run has nothing retained.
    #[error("{kind} {id:?} not found: nothing of it is retained")]
    NotFound {
        /// `device` or `run`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The query did not finish within its budget (`--query-timeout`):
    /// the store may be fine, the query too large or Redis too busy.
    #[error("the query did not finish within --query-timeout {budget:?}")]
    DeadlineExceeded {
        /// The budget it ran out of.
        budget: std::time::Duration,
    },
    /// The store failed or answered something unexpected.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl QueryError {
    /// A bad `field`, because of `reason`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    /// Data in the store this version cannot read (a bug or a foreign
    /// writer, never the client's fault).
    pub fn corrupt(key: &str, field: &str, value: &str) -> Self {
        Self::Store(StoreError::Protocol(format!(
            "key {key:?} field {field:?} holds unreadable value {value:?}"
        )))
    }
}

impl From<QueryError> for Status {
    fn from(err: QueryError) -> Self {
        match &err {
            QueryError::InvalidArgument { field, reason } => Status::with_error_details(
                Code::InvalidArgument,
                err.to_string(),
                ErrorDetails::with_bad_request_violation(*field, reason.clone()),
            ),
            QueryError::NotFound { .. } => Status::not_found(err.to_string()),
            // Not UNAVAILABLE: that tells clients and health checks the
            // store is down, which a slow query does not show.
            QueryError::DeadlineExceeded { .. } => Status::deadline_exceeded(format!(
                "{err}; narrow the window, use a smaller page, or retry later"
            )),
            QueryError::Store(store) => store_status(store, "reading statistics", "retry later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each variant maps to its documented code; bad requests name the field
    /// and internal causes stay in the logs.
    #[test]
    fn codes_and_details() {
        let status = Status::from(QueryError::invalid("window", "too short"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().unwrap();
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "window");
        assert_eq!(bad.field_violations[0].description, "too short");

        let status = Status::from(QueryError::NotFound {
            kind: "device",
            id: "d1".into(),
        });
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("\"d1\""), "{}", status.message());

        let status = Status::from(QueryError::Store(StoreError::Unavailable("down".into())));
        assert_eq!(status.code(), Code::Unavailable);

        let status = Status::from(QueryError::DeadlineExceeded {
            budget: std::time::Duration::from_secs(2),
        });
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(
            status.message().contains("--query-timeout"),
            "{}",
            status.message()
        );

        let status = Status::from(QueryError::corrupt("k", "n", "boom"));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("boom"));
    }
}
