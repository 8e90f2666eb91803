//! The error object `{"error":{"type","message","data"}}` and the whole v3.5
//! error-type catalogue, with the HTTP status chatgate uses for each on the
//! Web API (the vendor documents none; see proto-docs/errors.md).

use serde::{Deserialize, Serialize};
use serde_json::Value;

macro_rules! error_types {
    ($( $variant:ident = $wire:literal, $msg:literal, $status:literal; )*) => {
        /// Every error `type` of the Agent Chat, Customer Chat and Configuration APIs v3.5.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum ErrorType {
            $( #[serde(rename = $wire)] #[doc = $msg] $variant, )*
        }

        impl ErrorType {
            /// Every error type, in catalogue order.
            pub const ALL: &'static [ErrorType] = &[$(ErrorType::$variant,)*];

            /// The wire name (`"validation"`).
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorType::$variant => $wire,)* }
            }

            /// The vendor's default message for this type.
            pub fn default_message(self) -> &'static str {
                match self { $(ErrorType::$variant => $msg,)* }
            }

            /// The HTTP status chatgate answers with on the Web API.
            pub fn http_status(self) -> u16 {
                match self { $(ErrorType::$variant => $status,)* }
            }
        }
    };
}

error_types! {
    Authentication = "authentication", "Authentication error", 401;
    Authorization = "authorization", "Authorization error", 403;
    Validation = "validation", "Wrong format of request", 400;
    Internal = "internal", "Internal server error", 500;
    NotFound = "not_found", "Not found", 404;
    MissingAccess = "missing_access", "Missing access", 403;
    ChatInactive = "chat_inactive", "Chat is inactive", 409;
    AgentOffline = "agent_offline", "Agent offline", 409;
    TooManyRequests = "too_many_requests", "Too many requests", 429;
    PendingRequestsLimitReached = "pending_requests_limit_reached", "Requests limit reached", 429;
    RequestTimeout = "request_timeout", "Request timed out", 504;
    ServiceUnavailable = "service_unavailable", "Service unavailable", 503;
    LicenseExpired = "license_expired", "License expired", 403;
    LicenseNotFound = "license_not_found", "License not found", 404;
    WrongProductVersion = "wrong_product_version", "Wrong product version", 403;
    UnsupportedVersion = "unsupported_version", "Cannot call unsupported API versions.", 400;
    EntityTooLarge = "entity_too_large", "Upload limit exceeded (10MB).", 413;
    LimitReached = "limit_reached", "Limit reached", 409;
    MisdirectedRequest = "misdirected_request", "Wrong region", 421;
    RequesterAlreadyOffline = "requester_already_offline", "Requester is already offline", 409;
    RequesterAwaitingApproval = "requester_awaiting_approval", "Requester awaiting approval", 403;
    RequesterSuspended = "requester_suspended", "Requester suspended", 403;
    SeatsLimitExceeded = "seats_limit_exceeded", "Seats limit exceeded", 409;
    CustomerBanned = "customer_banned", "Customer is banned", 403;
    UsersLimitReached = "users_limit_reached", "Users limit reached", 409;
    GroupNotFound = "group_not_found", "Group not found", 404;
    GroupOffline = "group_offline", "Group is offline", 409;
    GroupUnavailable = "group_unavailable", "No agent available for group", 409;
    GroupsOffline = "groups_offline", "Groups offline", 409;
    GreetingNotFound = "greeting_not_found", "Greeting not found", 404;
    NotAllowed = "not_allowed", "Not allowed", 403;
    ChatAnonymized = "chat_anonymized", "Chat anonymized", 409;
    AlreadyExists = "already_exists", "Already exists", 409;
    OwnershipTransfer = "ownership_transfer", "Invalid transfer ownership request", 409;
}

/// The inner error object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// `{"error": {...}}`: the Web API error body and the RTM error payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

impl ErrorBody {
    /// An error with an explicit message.
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        ErrorBody {
            kind,
            message: message.into(),
            data: None,
        }
    }

    /// Wraps the body into `{"error": ...}`.
    pub fn into_envelope(self) -> ErrorEnvelope {
        ErrorEnvelope { error: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for &t in ErrorType::ALL {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            let back: ErrorType = serde_json::from_str(&json).unwrap();
            assert_eq!(back, t);
            assert!((400..600).contains(&t.http_status()), "{t:?}");
        }
        assert_eq!(ErrorType::ALL.len(), 34);
    }

    #[test]
    fn envelope_shape() {
        let e = ErrorBody::new(ErrorType::Authentication, "Invalid access token").into_envelope();
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"error":{"type":"authentication","message":"Invalid access token"}})
        );
    }
}
