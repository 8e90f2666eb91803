//! Configuration API v3.5 payloads: agents, groups, bots, bot tokens.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `{id, priority}` membership of an agent or bot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMembership {
    pub id: u32,
    #[serde(default = "normal")]
    pub priority: String,
}

fn normal() -> String {
    "normal".into()
}

/// An agent as the Configuration API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigAgent {
    pub id: String,
    pub name: String,
    pub role: String,
    /// `"accepting chats"` or `"not accepting chats"` (with a space, as the vendor).
    pub login_status: String,
    pub max_chats_count: u32,
    pub groups: Vec<GroupMembership>,
    pub suspended: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
}

/// `create_agent` / `update_agent` request (update: `id` plus any field).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentFields {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chats_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<GroupMembership>>,
}

/// A request naming one entity by id (`get_agent`, `delete_bot`, …).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdRequest<T = String> {
    pub id: T,
}

/// `list_agents` request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListAgentsRequest {
    #[serde(default)]
    pub filters: ListAgentsFilters,
}

/// `list_agents` filters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListAgentsFilters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_ids: Option<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<bool>,
}

/// A group as the Configuration API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigGroup {
    pub id: u32,
    pub name: String,
    pub language_code: String,
    pub agent_priorities: BTreeMap<String, String>,
    pub routing_status: String,
}

/// `create_group` / `update_group` request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupFields {
    /// `update_group` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_priorities: Option<BTreeMap<String, String>>,
}

/// A bot as the Configuration API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigBot {
    pub id: String,
    pub name: String,
    pub default_group_priority: String,
    pub owner_client_id: String,
    pub max_chats_count: u32,
    pub groups: Vec<GroupMembership>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
}

/// `create_bot` / `update_bot` request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BotFields {
    /// `update_bot` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chats_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_group_priority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<GroupMembership>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_client_id: Option<String>,
    /// Accepted and ignored (work schedules are not enforced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_scheduler: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// `create_bot` / `reset_bot_secret` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BotSecret {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub secret: String,
}

/// `list_bots` request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListBotsRequest {
    #[serde(default)]
    pub all: bool,
}

/// `issue_bot_token` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IssueBotTokenRequest {
    pub bot_id: String,
    pub bot_secret: String,
    pub client_id: String,
    pub organization_id: String,
}

/// `issue_bot_token` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BotToken {
    pub token: String,
}

/// `create_agent_token` request (chatgate extension).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreateAgentToken {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
}

/// The Configuration API methods chatgate serves.
pub const CONFIGURATION_METHODS: &[&str] = &[
    "create_agent",
    "get_agent",
    "list_agents",
    "update_agent",
    "delete_agent",
    "suspend_agent",
    "unsuspend_agent",
    "create_group",
    "get_group",
    "list_groups",
    "update_group",
    "delete_group",
    "create_bot",
    "get_bot",
    "list_bots",
    "update_bot",
    "delete_bot",
    "reset_bot_secret",
    "issue_bot_token",
    "create_tag",
    "list_tags",
    "update_tag",
    "delete_tag",
    "register_property",
    "list_properties",
    "unregister_property",
    // chatgate extensions
    "create_agent_token",
    "revoke_agent_tokens",
];
