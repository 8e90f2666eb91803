//! Organizations, groups, agents and their enumerations.

use std::fmt;

/// Organization (tenant) id: random, unguessable.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgId(pub String);

/// Agent or bot id (agents are identified by e-mail, bots by 32 hex chars).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(pub String);

/// Group id; `0` is the default "General" group.
pub type GroupId = u32;

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! names {
    ($(#[$m:meta])* $ty:ident { $($variant:ident = $s:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $ty { $($variant),* }

        impl $ty {
            /// Canonical lower-case name (also the storage form).
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $s),* }
            }

            /// Parses the canonical name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($ty::$variant),)* _ => None }
            }
        }
    };
}

names!(
    /// Agent role.
    Role { Owner = "owner", Administrator = "administrator", Normal = "normal" }
);
names!(
    /// Routing status of an agent or bot.
    RoutingStatus {
        AcceptingChats = "accepting_chats",
        NotAcceptingChats = "not_accepting_chats",
        Offline = "offline",
    }
);
names!(
    /// Priority within a group.
    GroupPriority { First = "first", Normal = "normal", Last = "last", Supervisor = "supervisor" }
);
names!(
    /// What kind of principal an agent record is.
    AgentKind { Agent = "agent", Bot = "bot" }
);

/// An organization (the vendor's "license").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organization {
    pub id: OrgId,
    pub name: String,
    /// Numeric license id, shown as a string on the wire.
    pub license_id: u64,
    /// Unix seconds.
    pub created_at: i64,
    /// Browser origins allowed to request customer tokens; empty = any.
    pub allowed_origins: Vec<String>,
}

/// A group of agents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub id: GroupId,
    pub name: String,
}

/// Default `max_chats_count` of an agent.
pub const DEFAULT_MAX_CHATS: u32 = 6;

/// An agent or bot as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub id: AgentId,
    pub kind: AgentKind,
    pub name: String,
    pub role: Role,
    pub max_chats: u32,
    /// Status an agent gets when it logs in without `reconnect`.
    pub login_status: RoutingStatus,
    /// Group memberships with priorities, sorted by group id.
    pub groups: Vec<(GroupId, GroupPriority)>,
    pub suspended: bool,
    /// Display-only fields.
    pub profile: AgentProfile,
}

/// Display-only fields of an agent or bot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentProfile {
    pub avatar: Option<String>,
    pub job_title: Option<String>,
    /// Bots: the client (application) that owns the bot.
    pub owner_client_id: Option<String>,
}

impl Agent {
    /// Whether the agent belongs to `group`.
    pub fn in_group(&self, group: GroupId) -> bool {
        self.groups.iter().any(|(g, _)| *g == group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in [Role::Owner, Role::Administrator, Role::Normal] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        for s in [
            RoutingStatus::AcceptingChats,
            RoutingStatus::NotAcceptingChats,
            RoutingStatus::Offline,
        ] {
            assert_eq!(RoutingStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(GroupPriority::parse("first"), Some(GroupPriority::First));
        assert_eq!(Role::parse("boss"), None);
    }
}
