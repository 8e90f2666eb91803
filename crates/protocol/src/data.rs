//! Data structures of the Agent Chat API v3.5 (§10 of the reference):
//! chats, threads, every event type, users, access, properties, routing
//! statuses, queues, typing indicators and sneak peeks.
//!
//! Optional fields are omitted from the JSON when absent, as the vendor does.
//! Timestamps are RFC 3339 strings with microseconds (`2020-05-07T07:11:28.288340Z`)
//! except where the vendor uses Unix seconds (noted per field).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `{namespace: {name: value}}`.
pub type Properties = BTreeMap<String, Map<String, Value>>;

/// Routing status of an agent or bot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingStatus {
    AcceptingChats,
    NotAcceptingChats,
    Offline,
}

impl RoutingStatus {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RoutingStatus::AcceptingChats => "accepting_chats",
            RoutingStatus::NotAcceptingChats => "not_accepting_chats",
            RoutingStatus::Offline => "offline",
        }
    }
}

/// Agent permission (`role` in the Configuration API, `permission` in `my_profile`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Owner,
    #[serde(alias = "viceowner")]
    Administrator,
    Normal,
}

/// Priority of an agent or bot within a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupPriority {
    First,
    Normal,
    Last,
    Supervisor,
}

/// Chat or thread access.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(default)]
    pub group_ids: Vec<u32>,
}

/// Event visibility.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    #[default]
    All,
    Agents,
}

/// Queue position of a queued thread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    pub position: u32,
    /// Approximate wait in seconds.
    pub wait_time: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<String>,
}

/// Fields common to every event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventCommon {
    /// Server-assigned; absent in `send_event` requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    #[serde(default)]
    pub visibility: Visibility,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Properties>,
    /// Absent for `system_message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// `postback` of a `message` event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessagePostback {
    pub id: String,
    pub thread_id: String,
    pub event_id: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// Image of a rich-message element.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RichImage {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternative_text: Option<String>,
}

/// A rich-message button.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RichButton {
    pub text: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webview_height: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postback_id: Option<String>,
    #[serde(default)]
    pub user_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A rich-message element.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RichElement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtitle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<RichImage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<RichButton>,
}

/// A form field (`form`) or filled form field (`filled_form`); kept as JSON
/// because field shapes vary by field `type`.
pub type FormField = Value;

/// Every event type. Internally tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Message {
        #[serde(flatten)]
        common: EventCommon,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        postback: Option<MessagePostback>,
    },
    SystemMessage {
        #[serde(flatten)]
        common: EventCommon,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        system_message_type: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text_vars: Option<BTreeMap<String, String>>,
    },
    File {
        #[serde(flatten)]
        common: EventCommon,
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_type: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        width: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        height: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thumbnail_url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thumbnail2x_url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alternative_text: Option<String>,
    },
    RichMessage {
        #[serde(flatten)]
        common: EventCommon,
        template_id: String,
        #[serde(default)]
        elements: Vec<RichElement>,
    },
    FilledForm {
        #[serde(flatten)]
        common: EventCommon,
        form_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        form_type: Option<String>,
        fields: Vec<FormField>,
    },
    Form {
        #[serde(flatten)]
        common: EventCommon,
        form_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        form_type: Option<String>,
        fields: Vec<FormField>,
    },
    Custom {
        #[serde(flatten)]
        common: EventCommon,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<Value>,
    },
    /// v3.6, read-only.
    System {
        #[serde(flatten)]
        common: EventCommon,
        source: String,
        subtype: String,
        version: String,
        details: String,
    },
}

impl Event {
    /// Common fields of any event.
    pub fn common(&self) -> &EventCommon {
        match self {
            Event::Message { common, .. }
            | Event::SystemMessage { common, .. }
            | Event::File { common, .. }
            | Event::RichMessage { common, .. }
            | Event::FilledForm { common, .. }
            | Event::Form { common, .. }
            | Event::Custom { common, .. }
            | Event::System { common, .. } => common,
        }
    }

    /// Common fields of any event, mutably.
    pub fn common_mut(&mut self) -> &mut EventCommon {
        match self {
            Event::Message { common, .. }
            | Event::SystemMessage { common, .. }
            | Event::File { common, .. }
            | Event::RichMessage { common, .. }
            | Event::FilledForm { common, .. }
            | Event::Form { common, .. }
            | Event::Custom { common, .. }
            | Event::System { common, .. } => common,
        }
    }
}

/// Seen marker and presence of a chat user.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatUserState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_seen_up_to: Option<String>,
}

/// A user of a chat: agent, bot (type `agent`) or customer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum User {
    Agent {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        avatar: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        visibility: Option<Visibility>,
        #[serde(flatten)]
        state: ChatUserState,
    },
    Customer {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        avatar: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_fields: Option<Vec<BTreeMap<String, String>>>,
        #[serde(flatten)]
        state: ChatUserState,
        /// Any further customer fields (`last_visit`, `statistics`, ...).
        #[serde(flatten)]
        extra: Map<String, Value>,
    },
}

/// A thread (§10.5).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    pub id: String,
    pub active: bool,
    #[serde(default)]
    pub user_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<Event>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Properties>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restricted_access: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<Queue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_thread_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_thread_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_accessible_thread_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_accessible_thread_id: Option<String>,
    /// v3.6 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_visit: Option<Value>,
    /// `list_archives` with `highlights`: the thread's events that matched
    /// `filters.query`, their text with each match marked (a chatgate
    /// field; see proto-docs/archives.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highlight: Option<Vec<Highlight>>,
    pub created_at: String,
}

/// One event's matched text in `list_archives`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Highlight {
    pub event_id: String,
    pub text: String,
}

/// A chat (§10.6).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Chat {
    pub id: String,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Properties>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<Thread>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<Vec<Thread>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_followed: Option<bool>,
}

/// One entry of `last_event_per_type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastEvent {
    pub thread_id: String,
    pub thread_created_at: String,
    pub event: Value,
}

/// `last_thread_summary` of a chat summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadSummary {
    pub id: String,
    pub created_at: String,
    #[serde(default)]
    pub user_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Properties>,
    #[serde(default)]
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<Queue>,
}

/// A chat summary (`list_chats`, `login`'s `chats_summary`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatSummary {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_thread_summary: Option<ThreadSummary>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub last_event_per_type: BTreeMap<String, LastEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Properties>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_followed: Option<bool>,
}

/// Typing indicator (timestamps in Unix seconds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TypingIndicator {
    pub author_id: String,
    pub visibility: Visibility,
    pub timestamp: i64,
    pub is_typing: bool,
}

/// Sneak peek (timestamps in Unix seconds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SneakPeek {
    pub author_id: String,
    pub text: String,
    pub timestamp: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_of_every_type_round_trip() {
        let samples = [
            json!({"id":"K600PKZON8_1","custom_id":"31","type":"message","author_id":"b7ef","created_at":"2017-10-12T15:19:21.010200Z","text":"hello there","visibility":"all","properties":{"ns":{"p":"v"}}}),
            json!({"id":"K600PKZON8_3","type":"system_message","created_at":"2017-10-12T15:19:21.010200Z","visibility":"all","text":"Chat assigned to John Doe","system_message_type":"routing.assigned","text_vars":{"agent":"John Doe"}}),
            json!({"id":"K_2","type":"file","author_id":"a@b","created_at":"x","visibility":"all","name":"i.png","url":"https://h/i.png","content_type":"image/png","size":1,"width":2,"height":3}),
            json!({"id":"K_4","type":"rich_message","author_id":"a@b","created_at":"x","visibility":"all","template_id":"cards","elements":[{"title":"L","buttons":[{"text":"yes","postback_id":"y","user_ids":[]}]}]}),
            json!({"id":"K_5","type":"filled_form","author_id":"c","created_at":"x","visibility":"all","form_id":"f","form_type":"prechat","fields":[{"type":"name","id":"1","label":"Name","answer":"Jo"}]}),
            json!({"id":"K_6","type":"form","author_id":"c","created_at":"x","visibility":"agents","form_id":"f","fields":[]}),
            json!({"id":"K_7","type":"custom","author_id":"c","created_at":"x","visibility":"all","content":{"any":[1,2]}}),
        ];
        for s in samples {
            let e: Event = serde_json::from_value(s.clone()).unwrap();
            assert_eq!(serde_json::to_value(&e).unwrap(), s);
        }
    }

    #[test]
    fn users_and_chat_round_trip() {
        let chat = json!({
            "id":"PJ0MRSHTDG",
            "users":[
                {"id":"b7ef","type":"customer","name":"Jo","present":true,"last_visit":{"started_at":"x"}},
                {"id":"smith@example.com","type":"agent","name":"Agent Smith","present":true,"events_seen_up_to":"x","visibility":"all"}
            ],
            "access":{"group_ids":[0]},
            "thread":{"id":"K600PKZON8","active":true,"user_ids":["b7ef"],"events":[],"created_at":"x","queue":{"position":1,"wait_time":3}}
        });
        let c: Chat = serde_json::from_value(chat.clone()).unwrap();
        assert_eq!(serde_json::to_value(&c).unwrap(), chat);
    }
}
