//! Constructors for request errors. A request error answers one request; the
//! session stays. Internal faults are logged and hidden behind a generic
//! message.

use chatgate_protocol::{ErrorBody, ErrorType};

/// A `validation` error.
pub fn validation(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorType::Validation, message)
}

/// An `internal` error; the cause is logged, not shown.
pub fn internal(cause: impl std::fmt::Display) -> ErrorBody {
    tracing::error!(error = %cause, "internal error");
    ErrorBody::new(ErrorType::Internal, ErrorType::Internal.default_message())
}

pub(crate) fn err(kind: ErrorType, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(kind, message)
}

/// Maps a store refusal or failure to the wire.
pub(crate) fn store_error(e: chatgate_store::StoreError) -> ErrorBody {
    use chatgate_store::StoreError::*;
    match e {
        Busy => err(
            ErrorType::ServiceUnavailable,
            "the store is saturated; retry shortly",
        ),
        Closed => err(ErrorType::ServiceUnavailable, "the server is shutting down"),
        other => internal(other),
    }
}
