//! The push catalogue and the payloads of the status pushes.

use crate::data::RoutingStatus;
use crate::disconnect::DisconnectReason;
use crate::version::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Agent pushes of v3.5 (§9.0).
pub const AGENT_PUSHES_V3_5: &[&str] = &[
    "incoming_chat",
    "chat_deactivated",
    "chat_deleted",
    "thread_deleted",
    "threads_deleted",
    "chat_access_updated",
    "chat_transferred",
    "user_added_to_chat",
    "user_removed_from_chat",
    "incoming_event",
    "event_updated",
    "incoming_rich_message_postback",
    "chat_properties_updated",
    "chat_properties_deleted",
    "thread_properties_updated",
    "thread_properties_deleted",
    "event_properties_updated",
    "event_properties_deleted",
    "thread_tagged",
    "thread_untagged",
    "incoming_customers",
    "incoming_customer",
    "customer_updated",
    "customer_page_updated",
    "customer_banned",
    "customer_transferred",
    "customer_left",
    "routing_status_set",
    "agent_disconnected",
    "agent_created",
    "agent_approved",
    "agent_updated",
    "agent_suspended",
    "agent_unsuspended",
    "agent_deleted",
    "auto_accesses_updated",
    "bot_created",
    "bot_updated",
    "bot_deleted",
    "group_created",
    "group_updated",
    "group_deleted",
    "tag_created",
    "tag_deleted",
    "tag_updated",
    "groups_status_updated",
    "events_marked_as_seen",
    "incoming_sneak_peek",
    "incoming_typing_indicator",
    "incoming_multicast",
    "chat_unfollowed",
    "queue_positions_updated",
];

/// Agent pushes added in v3.6 (§13).
pub const AGENT_PUSHES_V3_6_ADDED: &[&str] = &[
    "event_deleted",
    "subscribed_customers_totals_updated",
    "ticket_created",
    "ticket_deleted",
    "customer_statistics_updated",
    "license_properties_updated",
    "group_properties_updated",
    "incoming_thinking_indicator",
    "thread_summary_set",
    "incoming_error",
];

/// Customer pushes of v3.5 (Customer Chat API).
pub const CUSTOMER_PUSHES_V3_5: &[&str] = &[
    "incoming_chat",
    "chat_deactivated",
    "chat_transferred",
    "user_added_to_chat",
    "user_removed_from_chat",
    "incoming_event",
    "event_updated",
    "incoming_rich_message_postback",
    "chat_properties_updated",
    "chat_properties_deleted",
    "thread_properties_updated",
    "thread_properties_deleted",
    "event_properties_updated",
    "event_properties_deleted",
    "customer_updated",
    "customer_page_updated",
    "customer_side_storage_updated",
    "customer_disconnected",
    "groups_status_updated",
    "incoming_typing_indicator",
    "incoming_multicast",
    "events_marked_as_seen",
    "incoming_greeting",
    "greeting_accepted",
    "greeting_canceled",
    "queue_position_updated",
];

/// Customer pushes chatgate adds for v3.6 sessions: the preview an agent
/// sends with `send_event_preview` (a chatgate name; see
/// proto-docs/decisions.md).
pub const CUSTOMER_PUSHES_V3_6_ADDED: &[&str] = &["incoming_event_preview"];

static AGENT_V3_5: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
    std::sync::LazyLock::new(|| AGENT_PUSHES_V3_5.iter().copied().collect());
static AGENT_V3_6: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
    std::sync::LazyLock::new(|| AGENT_PUSHES_V3_6_ADDED.iter().copied().collect());
static CUSTOMER_V3_5: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
    std::sync::LazyLock::new(|| CUSTOMER_PUSHES_V3_5.iter().copied().collect());

/// Whether `name` is a customer push.
pub fn is_customer_push(name: &str) -> bool {
    CUSTOMER_V3_5.contains(name)
}

/// Whether `name` is a customer push of `version`.
pub fn is_customer_push_of(version: Version, name: &str) -> bool {
    is_customer_push(name)
        || (version >= Version::V3_6 && CUSTOMER_PUSHES_V3_6_ADDED.contains(&name))
}

/// A set of push names as bits (see [`push_bit`]): subscription checks
/// on every recipient of every push are a bit test, not a string lookup.
pub type PushBits = [u64; 4];

static ALL_NAMES: std::sync::LazyLock<std::collections::HashMap<&'static str, usize>> =
    std::sync::LazyLock::new(|| {
        let mut m = std::collections::HashMap::new();
        for name in AGENT_PUSHES_V3_5
            .iter()
            .chain(AGENT_PUSHES_V3_6_ADDED)
            .chain(CUSTOMER_PUSHES_V3_5)
            .chain(CUSTOMER_PUSHES_V3_6_ADDED)
        {
            let next = m.len();
            m.entry(*name).or_insert(next);
        }
        assert!(m.len() <= 256, "push names fit PushBits");
        m
    });

/// The bit of a known push name (`None` for names outside every catalogue).
pub fn push_bit(name: &str) -> Option<usize> {
    ALL_NAMES.get(name).copied()
}

/// Sets bit `b`.
pub fn set_bit(bits: &mut PushBits, b: usize) {
    bits[b / 64] |= 1 << (b % 64);
}

/// Whether bit `b` is set.
pub fn has_bit(bits: &PushBits, b: usize) -> bool {
    bits[b / 64] & (1 << (b % 64)) != 0
}

static CATALOGUES: std::sync::LazyLock<[PushBits; 4]> = std::sync::LazyLock::new(|| {
    let mut out = [[0; 4]; 4];
    for (i, (agent, version)) in [
        (true, Version::V3_5),
        (true, Version::V3_6),
        (false, Version::V3_5),
        (false, Version::V3_6),
    ]
    .into_iter()
    .enumerate()
    {
        for (name, b) in ALL_NAMES.iter() {
            let is = if agent {
                is_agent_push(version, name)
            } else {
                is_customer_push_of(version, name)
            };
            if is {
                set_bit(&mut out[i], *b);
            }
        }
    }
    out
});

/// Every push of the agent (`agent`) or customer catalogue of `version`.
pub fn catalogue_bits(agent: bool, version: Version) -> &'static PushBits {
    let i = if agent { 0 } else { 2 } + usize::from(version >= Version::V3_6);
    &CATALOGUES[i]
}

/// Whether `name` is an agent push of `version`.
pub fn is_agent_push(version: Version, name: &str) -> bool {
    // Asked once per recipient of every push: a hash lookup, not a scan.
    AGENT_V3_5.contains(name) || (version >= Version::V3_6 && AGENT_V3_6.contains(name))
}

/// `routing_status_set`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingStatusSet {
    pub agent_id: String,
    pub status: RoutingStatus,
}

/// `agent_disconnected`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentDisconnected {
    pub reason: DisconnectReason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_membership() {
        assert!(is_agent_push(Version::V3_5, "routing_status_set"));
        assert!(!is_agent_push(Version::V3_5, "event_deleted"));
        assert!(is_agent_push(Version::V3_6, "event_deleted"));
        assert!(!is_agent_push(Version::V3_6, "bogus"));
    }

    #[test]
    fn catalogue_bits_match_the_lists() {
        let bit = |n| push_bit(n).unwrap();
        assert!(push_bit("bogus").is_none());
        let a5 = catalogue_bits(true, Version::V3_5);
        let a6 = catalogue_bits(true, Version::V3_6);
        let c5 = catalogue_bits(false, Version::V3_5);
        let c6 = catalogue_bits(false, Version::V3_6);
        assert!(has_bit(a5, bit("routing_status_set")) && has_bit(a6, bit("routing_status_set")));
        assert!(!has_bit(a5, bit("event_deleted")) && has_bit(a6, bit("event_deleted")));
        assert!(!has_bit(c5, bit("routing_status_set")));
        assert!(has_bit(c5, bit("queue_position_updated")));
        assert!(!has_bit(c5, bit("incoming_event_preview")));
        assert!(has_bit(c6, bit("incoming_event_preview")));
        // Every listed name has its own bit.
        let all: std::collections::HashSet<usize> = AGENT_PUSHES_V3_5
            .iter()
            .chain(AGENT_PUSHES_V3_6_ADDED)
            .chain(CUSTOMER_PUSHES_V3_5)
            .map(|n| bit(n))
            .collect();
        let names: std::collections::HashSet<&str> = AGENT_PUSHES_V3_5
            .iter()
            .chain(AGENT_PUSHES_V3_6_ADDED)
            .chain(CUSTOMER_PUSHES_V3_5)
            .copied()
            .collect();
        assert_eq!(all.len(), names.len());
    }
}
