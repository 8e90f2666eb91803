//! Request, response and push envelopes (§3.2 of the reference).

use crate::error::ErrorEnvelope;
use crate::version::Version;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A request frame, client → server. Unknown top-level fields are ignored.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct RequestFrame {
    /// Method name. Required.
    pub action: String,
    /// Any client-chosen id, echoed in the response and in pushes caused by
    /// this request (to the requesting connection only). SDKs send strings;
    /// numbers are accepted and echoed as strings.
    #[serde(
        default,
        deserialize_with = "string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_id: Option<String>,
    /// Method parameters; absent means `{}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Requested version; defaults to the connection's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// v3.5 and lower: act as this bot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_id: Option<String>,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(serde::de::Error::custom(
            "`request_id` must be a string or a number",
        )),
    }
}

/// Only the parts of a frame needed to answer it, read without keeping the
/// payload (used for frames that are too large to process).
#[derive(Debug, Default, Deserialize)]
pub struct FrameHead {
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    pub request_id: Option<String>,
}

/// Frame `type` discriminator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameType {
    Response,
    Push,
}

/// A response frame, server → client. On failure `payload` is an
/// [`ErrorEnvelope`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseFrame<P = Value> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Absent only when the request could not be parsed at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(rename = "type")]
    pub frame_type: FrameType,
    pub success: bool,
    pub payload: P,
}

impl ResponseFrame<Value> {
    /// A successful response.
    pub fn ok(request_id: Option<String>, action: impl Into<String>, payload: Value) -> Self {
        ResponseFrame {
            request_id,
            action: Some(action.into()),
            frame_type: FrameType::Response,
            success: true,
            payload,
        }
    }
}

impl ResponseFrame<ErrorEnvelope> {
    /// A failed response.
    pub fn err(request_id: Option<String>, action: Option<String>, error: ErrorEnvelope) -> Self {
        ResponseFrame {
            request_id,
            action,
            frame_type: FrameType::Response,
            success: false,
            payload: error,
        }
    }
}

/// A push frame, server → client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushFrame<P = Value> {
    /// The version whose payload format is used.
    pub version: Version,
    /// Present only on the connection whose request caused the push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub action: String,
    #[serde(rename = "type")]
    pub frame_type: FrameType,
    pub payload: P,
}

/// Any server → client frame, for clients (tests, the load harness).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ServerFrame {
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(rename = "type")]
    pub frame_type: FrameType,
    #[serde(default)]
    pub success: Option<bool>,
    #[serde(default)]
    pub version: Option<Version>,
    #[serde(default)]
    pub payload: Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_tolerates_unknown_fields_and_numeric_ids() {
        let f: RequestFrame =
            serde_json::from_str(r#"{"action":"ping","request_id":7,"extra":true}"#).unwrap();
        assert_eq!(f.request_id.as_deref(), Some("7"));
        assert_eq!(f.payload, None);
        assert!(serde_json::from_str::<RequestFrame>(r#"{"request_id":"1"}"#).is_err());
        assert!(serde_json::from_str::<RequestFrame>(r#"{"action":"x","request_id":{}}"#).is_err());
    }

    #[test]
    fn response_and_push_shapes() {
        let r = ResponseFrame::ok(Some("1".into()), "ping", json!({}));
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"request_id":"1","action":"ping","type":"response","success":true,"payload":{}})
        );
        let p = PushFrame {
            version: Version::V3_5,
            request_id: None,
            action: "routing_status_set".into(),
            frame_type: FrameType::Push,
            payload: json!({"agent_id":"a","status":"accepting_chats"}),
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"version":"3.5","action":"routing_status_set","type":"push","payload":{"agent_id":"a","status":"accepting_chats"}})
        );
    }
}
