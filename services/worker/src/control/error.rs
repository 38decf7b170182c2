//! Control errors and their one mapping to gRPC status codes.

use testbed_server::store_status;
use testbed_stream::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// Why a control call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A request field is out of bounds or missing.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field path, as in the proto.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ControlError {
    pub(crate) fn field(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

impl From<ControlError> for Status {
    fn from(err: ControlError) -> Self {
        match &err {
            ControlError::InvalidField { field, reason } => Status::with_error_details(
                Code::InvalidArgument,
                err.to_string(),
                ErrorDetails::with_bad_request_violation(*field, reason.clone()),
            ),
            ControlError::Store(store) => {
                store_status(store, "reading or writing control state", "retry later")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field errors are INVALID_ARGUMENT naming the field; outages UNAVAILABLE.
    #[test]
    fn mapping() {
        let s = Status::from(ControlError::field("concurrency", "must be 1..256"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.get_details_bad_request().unwrap().field_violations[0].field,
            "concurrency"
        );
        let s = Status::from(ControlError::Store(StoreError::Unavailable("x".into())));
        assert_eq!(s.code(), Code::Unavailable);
        let s = Status::from(ControlError::Store(StoreError::Protocol("secret".into())));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("secret"));
    }
}
