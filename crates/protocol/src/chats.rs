//! Payloads of the chat methods and pushes (agent and customer side), the
//! customer token endpoint, and the customer object.

use crate::data::{Access, Chat, ChatSummary, Event, Properties, Queue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `POST /customer/token` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerTokenRequest {
    pub organization_id: String,
    /// Continue as this existing customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
}

/// `POST /customer/token` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerTokenResponse {
    pub access_token: String,
    pub token_type: String,
    /// Seconds.
    pub expires_in: u64,
    pub entity_id: String,
    pub organization_id: String,
}

/// Customer statistics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerStatistics {
    pub chats_count: u64,
    pub threads_count: u64,
    pub visits_count: u64,
    pub page_views_count: u64,
    pub greetings_shown_count: u64,
    pub greetings_accepted_count: u64,
}

/// A customer as `get_customer` and the customer `login` return it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    #[serde(rename = "type", default = "customer_type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub session_fields: Vec<BTreeMap<String, String>>,
    #[serde(default)]
    pub statistics: CustomerStatistics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chat_ids: Vec<String>,
}

fn customer_type() -> String {
    "customer".into()
}

/// Customer-side fields a customer may set about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_fields: Option<Vec<BTreeMap<String, String>>>,
}

/// Customer `login` request. Unknown fields are ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerLoginRequest {
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<CustomerFields>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_page: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushes: Option<BTreeMap<String, Vec<String>>>,
}

/// One entry of the customer login's `chats`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerChatRef {
    pub chat_id: String,
    pub has_active_thread: bool,
    pub has_unread_events: bool,
}

/// A chat summary as the Customer Chat API lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerChatSummary {
    pub id: String,
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_thread_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_thread_created_at: Option<String>,
    #[serde(default)]
    pub last_event_per_type: BTreeMap<String, crate::data::LastEvent>,
    #[serde(default)]
    pub users: Vec<crate::data::User>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Properties>,
}

/// Customer `login` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerLoginResponse {
    pub customer: Customer,
    pub has_active_thread: bool,
    pub chats: Vec<CustomerChatRef>,
    #[serde(rename = "__priv_dynamic_config")]
    pub dynamic_config: DynamicConfig,
}

/// The dynamic configuration the customer SDK reads at login: it decides
/// the customer's availability from whether `customer_groups.monitoring.id`
/// is among `online_groups_ids`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DynamicConfig {
    pub online_groups_ids: Vec<u32>,
    #[serde(default)]
    pub customer_groups: Map<String, Value>,
}

/// A user named in `start_chat`'s `chat.users`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserRef {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// `chat.thread` of `start_chat` / `resume_chat`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InitialThread {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Properties>,
}

/// `chat` of `start_chat` / `resume_chat`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InitialChat {
    /// `resume_chat` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Properties>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<InitialThread>,
}

/// `start_chat` and `resume_chat` request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StartChatRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<InitialChat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuous: Option<bool>,
}

/// `start_chat` response (`resume_chat` omits `chat_id`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StartChatResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
    pub thread_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_ids: Vec<String>,
}

/// `send_event` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendEventRequest {
    pub chat_id: String,
    pub event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_to_last_thread: Option<bool>,
}

/// `send_event` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendEventResponse {
    pub event_id: String,
}

/// `deactivate_chat` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeactivateChatRequest {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_requester_presence: Option<bool>,
}

/// `get_chat` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GetChatRequest {
    pub chat_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
}

/// `list_chats` request (first page only for now).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListChatsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_order: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Value>,
}

/// `list_archives` request (filters are read by the engine).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListArchivesRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_order: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highlights: Option<Highlights>,
}

/// `list_archives` `highlights`: an empty object enables the defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Highlights {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_tag: Option<String>,
}

/// `list_archives` response: one chat per matching thread.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListArchivesResponse {
    pub chats: Vec<Chat>,
    pub found_chats: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_page_id: Option<String>,
}

/// Agent `list_chats` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListChatsResponse {
    pub chats_summary: Vec<ChatSummary>,
    pub found_chats: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_page_id: Option<String>,
}

/// `incoming_chat`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncomingChat {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_id: Option<String>,
    pub chat: Chat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transferred_from: Option<Value>,
}

/// `incoming_event`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncomingEvent {
    pub chat_id: String,
    pub thread_id: String,
    pub event: Event,
}

/// `chat_deactivated`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatDeactivated {
    pub chat_id: String,
    pub thread_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// One entry of `queue_positions_updated` (agents).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueuePositionEntry {
    pub chat_id: String,
    pub thread_id: String,
    pub queue: Queue,
}

/// `queue_position_updated` (customer).
pub type QueuePositionUpdated = QueuePositionEntry;

/// `follow_chat` / `unfollow_chat` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatIdRequest {
    pub id: String,
}

/// `target` of `transfer_chat`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransferTarget {
    /// `agent` or `group`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Agent ids (strings) or group ids (numbers).
    pub ids: Vec<Value>,
}

/// `transfer_chat` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransferChatRequest {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TransferTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_agents_availability: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_requester_presence: Option<bool>,
}

/// `add_user_to_chat` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AddUserToChatRequest {
    pub chat_id: String,
    pub user_id: String,
    pub user_type: String,
    pub visibility: crate::data::Visibility,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_requester_presence: Option<bool>,
}

/// `remove_user_from_chat` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoveUserFromChatRequest {
    pub chat_id: String,
    pub user_id: String,
    pub user_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_requester_presence: Option<bool>,
}

/// `mark_events_as_seen` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarkEventsAsSeenRequest {
    pub chat_id: String,
    pub seen_up_to: String,
}

/// `send_typing_indicator` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendTypingIndicatorRequest {
    pub chat_id: String,
    pub is_typing: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<crate::data::Visibility>,
}

/// `send_sneak_peek` request (customer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendSneakPeekRequest {
    pub chat_id: String,
    pub sneak_peek_text: String,
}

/// `recipients.agents` of `multicast`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MulticastAgents {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<u32>>,
}

/// `recipients` of `multicast`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MulticastRecipients {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<MulticastAgents>,
}

/// `multicast` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MulticastRequest {
    pub recipients: MulticastRecipients,
    pub content: Value,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// `list_agents_for_transfer` / `list_threads` chat reference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatRef {
    pub chat_id: String,
}

/// One entry of `list_agents_for_transfer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentForTransfer {
    pub agent_id: String,
    pub total_active_chats: u32,
}

/// `postback` of `send_rich_message_postback`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Postback {
    pub id: String,
    pub toggled: bool,
}

/// `send_rich_message_postback` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RichMessagePostbackRequest {
    pub chat_id: String,
    pub thread_id: String,
    pub event_id: String,
    pub postback: Postback,
}

/// `list_threads` request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListThreadsRequest {
    pub chat_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_order: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_events_count: Option<u32>,
}

/// `chat_transferred`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatTransferred {
    pub chat_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_id: Option<String>,
    pub reason: String,
    pub transferred_to: TransferredTo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<Queue>,
}

/// `transferred_to` / `transferred_from`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TransferredTo {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_ids: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_ids: Vec<String>,
}

/// `chat_access_updated`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatAccessUpdated {
    pub id: String,
    pub access: Access,
}

/// `user_added_to_chat`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserAddedToChat {
    pub chat_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    pub user: crate::data::User,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_id: Option<String>,
}

/// `user_removed_from_chat`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserRemovedFromChat {
    pub chat_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    pub user_id: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_id: Option<String>,
}

/// `events_marked_as_seen`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventsMarkedAsSeen {
    pub user_id: String,
    pub chat_id: String,
    pub seen_up_to: String,
}

/// `incoming_typing_indicator`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncomingTypingIndicator {
    pub chat_id: String,
    pub thread_id: String,
    pub typing_indicator: crate::data::TypingIndicator,
}

/// `incoming_sneak_peek`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncomingSneakPeek {
    pub chat_id: String,
    pub thread_id: String,
    pub sneak_peek: crate::data::SneakPeek,
}

/// `incoming_multicast`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncomingMulticast {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_id: Option<String>,
    pub content: Value,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// `chat_unfollowed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatUnfollowed {
    pub chat_id: String,
}

/// `incoming_rich_message_postback`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncomingRichMessagePostback {
    pub user_id: String,
    pub chat_id: String,
    pub thread_id: String,
    pub event_id: String,
    pub postback: Postback,
}

/// `event_updated`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventUpdated {
    pub chat_id: String,
    pub thread_id: String,
    pub event: Event,
}

/// `list_threads` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListThreadsResponse {
    pub threads: Vec<crate::data::Thread>,
    pub found_threads: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_page_id: Option<String>,
}

/// `set_customer_session_fields` request (customer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionFieldsRequest {
    pub session_fields: Vec<BTreeMap<String, String>>,
}

/// `update_customer_page` request (customer, RTM).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerPageRequest {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// `customer_page_updated` (agents).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomerPageUpdated {
    pub customer_id: String,
    pub visit_id: u64,
    pub opened_at: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// `POST /v1/auth` body (the API key travels in `X-Api-Key`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiAuthRequest {
    pub secret: String,
}

/// `POST /v1/auth` and `/v1/refresh_token` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiAccessToken {
    pub access_token: String,
    pub token_type: String,
    /// Seconds.
    pub expires_in: u64,
    /// Unix seconds.
    pub expires_at: i64,
}

/// `list_customers` request (3.5; removed in 3.6).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListCustomersRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_order: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Value>,
    /// `created_at` (default), `threads_count`, `visits_count`,
    /// `agent_last_event`, `customer_last_event`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort_by: Option<String>,
}

/// `update_customer` request (agent side).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateCustomerRequest {
    pub id: String,
    #[serde(flatten)]
    pub fields: CustomerFields,
}

/// `ban` of `ban_customer`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ban {
    pub days: u32,
}

/// `ban_customer` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BanCustomerRequest {
    pub id: String,
    pub ban: Ban,
}

/// `get_license_info` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LicenseInfo {
    pub license_id: String,
    pub expires_at: String,
    pub created_at: String,
    pub in_trial: bool,
}

/// `tag_thread` / `untag_thread` request, and the `thread_tagged` /
/// `thread_untagged` push (the same three fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadTag {
    pub chat_id: String,
    pub thread_id: String,
    pub tag: String,
}

/// v3.6 `send_thinking_indicator` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendThinkingIndicatorRequest {
    pub chat_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<crate::data::Visibility>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
}

/// v3.6 `send_event_preview` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendEventPreviewRequest {
    pub chat_id: String,
    pub event: Event,
}

/// Names to delete per namespace (`delete_*_properties`).
pub type PropertyNames = BTreeMap<String, Vec<String>>;

/// A property method's request: `update_*_properties` carry
/// [`Properties`], `delete_*_properties` carry [`PropertyNames`]. The chat
/// methods name the chat `id`; the thread and event methods `chat_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PropertiesRequest<P> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub properties: P,
}

/// The six property pushes (`chat_properties_updated`, …): the changed or
/// deleted properties.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PropertiesPush<P> {
    pub chat_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub properties: P,
}
