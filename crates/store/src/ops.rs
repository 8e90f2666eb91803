//! Write operations and the snapshot read at start.

use chatgate_domain::{Agent, Group, OrgId, Organization, RoutingStatus};

/// Kind of a stored credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Personal access token of an agent (Basic or Bearer).
    Pat,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Pat => "pat",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pat" => Some(TokenKind::Pat),
            _ => None,
        }
    }
}

/// One write. A submission's ops are applied atomically.
#[derive(Clone, Debug)]
pub enum Op {
    /// Create or update an organization.
    UpsertOrganization(Organization),
    /// Create or update a group.
    UpsertGroup { org: OrgId, group: Group },
    /// Create or update an agent or bot, replacing its group memberships.
    UpsertAgent { org: OrgId, agent: Agent },
    /// Store a credential by its SHA-256 hash (never in clear).
    PutToken {
        hash: [u8; 32],
        org: OrgId,
        agent: String,
        kind: TokenKind,
        created_at: i64,
    },
    /// Remember the status an agent last chose (restored on `reconnect`).
    SetLastRoutingStatus {
        org: OrgId,
        agent: String,
        status: RoutingStatus,
    },
    /// Create a chat with sequence 0.
    CreateChat {
        org: OrgId,
        chat_id: String,
        customer_id: Option<String>,
        created_at_us: i64,
    },
    /// Append an event to a chat; its per-chat sequence number is assigned
    /// inside the committing transaction and returned in
    /// [`crate::Committed::seqs`].
    AppendEvent(EventRecord),
}

/// A stored event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    pub org: OrgId,
    pub chat_id: String,
    /// Assigned by the store (ignored on append).
    pub seq: u64,
    pub thread_id: String,
    pub id: String,
    pub author_id: Option<String>,
    pub custom_id: Option<String>,
    pub kind: String,
    pub created_at_us: i64,
    /// The event's JSON.
    pub body: String,
}

/// A stored agent with what is remembered about its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRecord {
    pub agent: Agent,
    pub last_routing_status: Option<RoutingStatus>,
}

/// One organization with its groups and agents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgRecord {
    pub org: Organization,
    pub groups: Vec<Group>,
    pub agents: Vec<AgentRecord>,
}

/// A stored credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    pub hash: [u8; 32],
    pub org: OrgId,
    pub agent: String,
    pub kind: TokenKind,
}

/// Everything loaded at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub orgs: Vec<OrgRecord>,
    pub tokens: Vec<TokenRecord>,
}
