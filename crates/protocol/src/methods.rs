//! Per-method request and response payloads. This surface is the
//! status group (`login`, `set_routing_status`, `list_routing_statuses`,
//! `set_away_status`, `logout`, `ping`); later groups add modules here.

use crate::data::{ChatSummary, Permission, RoutingStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Which transports serve a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transports {
    RtmOnly,
    WebOnly,
    Both,
}

/// The Agent Chat API v3.5 method catalogue (§7) plus v3.6 additions, with
/// the transports that serve each.
pub const AGENT_METHODS: &[(&str, Transports)] = &[
    ("list_chats", Transports::Both),
    ("list_threads", Transports::Both),
    ("get_chat", Transports::Both),
    ("list_archives", Transports::Both),
    ("start_chat", Transports::Both),
    ("resume_chat", Transports::Both),
    ("deactivate_chat", Transports::Both),
    ("follow_chat", Transports::Both),
    ("unfollow_chat", Transports::Both),
    ("transfer_chat", Transports::Both),
    ("add_user_to_chat", Transports::Both),
    ("remove_user_from_chat", Transports::Both),
    ("send_event", Transports::Both),
    ("upload_file", Transports::WebOnly),
    ("send_rich_message_postback", Transports::Both),
    ("update_chat_properties", Transports::Both),
    ("delete_chat_properties", Transports::Both),
    ("update_thread_properties", Transports::Both),
    ("delete_thread_properties", Transports::Both),
    ("update_event_properties", Transports::Both),
    ("delete_event_properties", Transports::Both),
    ("tag_thread", Transports::Both),
    ("untag_thread", Transports::Both),
    ("get_customer", Transports::Both),
    ("list_customers", Transports::Both),
    ("create_customer", Transports::Both),
    ("update_customer", Transports::Both),
    ("ban_customer", Transports::Both),
    ("login", Transports::RtmOnly),
    ("set_routing_status", Transports::Both),
    ("set_away_status", Transports::RtmOnly),
    ("logout", Transports::RtmOnly),
    ("list_routing_statuses", Transports::Both),
    ("mark_events_as_seen", Transports::Both),
    ("send_typing_indicator", Transports::Both),
    ("multicast", Transports::Both),
    ("list_agents_for_transfer", Transports::Both),
    ("get_license_info", Transports::WebOnly),
    ("ping", Transports::RtmOnly),
    // v3.6
    ("update_session", Transports::RtmOnly),
    ("send_thinking_indicator", Transports::Both),
    ("send_event_preview", Transports::Both),
];

/// The Customer Chat API v3.5 method catalogue (§14.3) with transports.
pub const CUSTOMER_METHODS: &[(&str, Transports)] = &[
    ("login", Transports::RtmOnly),
    ("ping", Transports::RtmOnly),
    ("list_chats", Transports::Both),
    ("list_threads", Transports::Both),
    ("get_chat", Transports::Both),
    ("start_chat", Transports::Both),
    ("resume_chat", Transports::Both),
    ("deactivate_chat", Transports::Both),
    ("send_event", Transports::Both),
    ("send_rich_message_postback", Transports::Both),
    ("send_sneak_peek", Transports::Both),
    ("send_typing_indicator", Transports::Both),
    ("update_chat_properties", Transports::Both),
    ("delete_chat_properties", Transports::Both),
    ("update_thread_properties", Transports::Both),
    ("delete_thread_properties", Transports::Both),
    ("update_event_properties", Transports::Both),
    ("delete_event_properties", Transports::Both),
    ("update_customer", Transports::Both),
    ("update_customer_page", Transports::RtmOnly),
    ("set_customer_session_fields", Transports::Both),
    ("get_customer", Transports::Both),
    ("list_group_statuses", Transports::Both),
    ("get_form", Transports::Both),
    ("get_predicted_agent", Transports::Both),
    ("get_url_info", Transports::Both),
    ("mark_events_as_seen", Transports::Both),
    ("accept_greeting", Transports::Both),
    ("cancel_greeting", Transports::Both),
    ("upload_file", Transports::WebOnly),
];

/// Looks a method up in [`CUSTOMER_METHODS`].
pub fn customer_method(name: &str) -> Option<Transports> {
    CUSTOMER_METHODS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
}

/// Looks a method up in [`AGENT_METHODS`].
pub fn agent_method(name: &str) -> Option<Transports> {
    AGENT_METHODS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
}

/// `{"name","version"}` of the client application.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Application {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `login` request. Unknown fields (such as the removed `push_notifications`)
/// are ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoginRequest {
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<Application>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_monitoring_level: Option<String>,
    /// `{"3.5": ["incoming_chat", ...], "3.6": ["all"]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushes: Option<BTreeMap<String, Vec<String>>>,
    /// chatgate extension (proto-docs/resume.md): `true` to start a resume
    /// stream, or `{"stream_id", "last_seq"}` to resume one. Checked by the
    /// engine, so a malformed value gets a clear `validation` message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Value>,
}

/// `license` of the login response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct License {
    pub id: String,
    pub organization_id: String,
    pub plan: String,
    /// Unix seconds.
    pub expiration_timestamp: i64,
    /// Unix seconds.
    pub creation_timestamp: i64,
    pub in_trial: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub website_last_activity: Option<String>,
}

/// `my_profile` of the login response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MyProfile {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub email: String,
    pub present: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_seen_up_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    pub routing_status: RoutingStatus,
    pub permission: Permission,
}

/// `login` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoginResponse {
    pub license: License,
    pub my_profile: MyProfile,
    pub chats_summary: Vec<ChatSummary>,
    /// chatgate extension, only when the login asked for `resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeInfo>,
}

/// How a login's resume stream starts (chatgate extension,
/// proto-docs/resume.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeStatus {
    /// A new stream: its first push will carry `resume_seq` 1.
    New,
    /// The stream goes on: the pushes after `last_seq` follow the response
    /// (`replayed` of them), then live ones.
    Resumed,
    /// The cursor's stream is gone or no longer holds `last_seq + 1`: the
    /// client rebuilds its state from this response's snapshot; a new stream
    /// starts.
    ResyncNeeded,
}

/// `login` response field `resume` (chatgate extension).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeInfo {
    pub stream_id: String,
    pub status: ResumeStatus,
    /// The stream's last sequence number when the login was answered: the
    /// replayed pushes carry `last_seq + 1 ..= seq`.
    pub seq: u64,
    /// Pushes replayed after this response.
    pub replayed: u64,
    /// How long the stream is kept after its connection drops, seconds.
    pub window_seconds: u64,
    /// How many of its latest pushes the stream retains.
    pub retained: u64,
}

/// `set_routing_status` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetRoutingStatusRequest {
    pub status: RoutingStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

/// `set_away_status` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetAwayStatusRequest {
    pub away: bool,
}

/// Filters of `list_routing_statuses`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingStatusFilters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_ids: Option<Vec<u32>>,
}

/// `list_routing_statuses` request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListRoutingStatusesRequest {
    #[serde(default)]
    pub filters: RoutingStatusFilters,
}

/// One entry of the `list_routing_statuses` response array.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingStatusEntry {
    pub agent_id: String,
    pub status: RoutingStatus,
}

/// `logout` request (`agent_id` is accepted as the v3.6 SDKs send it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogoutRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

/// The empty object answered by methods without a response payload.
pub fn empty() -> Value {
    Value::Object(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn login_ignores_removed_fields() {
        let l: LoginRequest = serde_json::from_value(json!({
            "token": "Bearer x", "push_notifications": {"firebase_token": "t"},
            "pushes": {"3.5": ["all"]}, "away": true
        }))
        .unwrap();
        assert_eq!(l.token, "Bearer x");
        assert_eq!(l.away, Some(true));
        assert!(serde_json::from_value::<LoginRequest>(json!({})).is_err());
    }

    #[test]
    fn catalogue_has_no_duplicates() {
        let mut names: Vec<_> = AGENT_METHODS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), AGENT_METHODS.len());
        assert_eq!(agent_method("login"), Some(Transports::RtmOnly));
        assert_eq!(agent_method("nope"), None);
    }
}
