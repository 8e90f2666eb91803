//! Write operations and the snapshot read at start.

use chatgate_domain::{Agent, Group, OrgId, Organization, RoutingStatus};

/// Kind of a stored credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Personal access token of an agent (Basic or Bearer).
    Pat,
    /// Access token of a customer (`POST /customer/token`).
    Customer,
    /// A bot's secret (exchanged for bot tokens; never an access token).
    BotSecret,
    /// A bot access token from `issue_bot_token`.
    Bot,
    /// An API key with its secret (hash of `key:secret`), exchanged for
    /// access tokens at `POST /v1/auth`.
    ApiKey,
    /// A short-lived agent access token from `/v1/auth` or
    /// `/v1/refresh_token`.
    Access,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Pat => "pat",
            TokenKind::Customer => "customer",
            TokenKind::BotSecret => "bot_secret",
            TokenKind::Bot => "bot",
            TokenKind::ApiKey => "api_key",
            TokenKind::Access => "access",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pat" => Some(TokenKind::Pat),
            "customer" => Some(TokenKind::Customer),
            "bot_secret" => Some(TokenKind::BotSecret),
            "bot" => Some(TokenKind::Bot),
            "api_key" => Some(TokenKind::ApiKey),
            "access" => Some(TokenKind::Access),
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
        /// Unix seconds; `None` = does not expire.
        expires_at: Option<i64>,
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
    /// Delete an agent or bot and revoke its credentials.
    DeleteAgent { org: OrgId, agent: String, at: i64 },
    /// Delete a group and every membership in it.
    DeleteGroup { org: OrgId, group: u32 },
    /// Restrict a credential to these scopes (space-separated).
    SetTokenScopes { hash: [u8; 32], scopes: String },
    /// Revoke one credential.
    RevokeToken { hash: [u8; 32], at: i64 },
    /// Delete every credential that expired before `before` (Unix seconds).
    PurgeExpiredTokens { before: i64 },
    /// Revoke an agent's or bot's credentials of the given kinds.
    RevokeTokens {
        org: OrgId,
        agent: String,
        kinds: Vec<TokenKind>,
        at: i64,
    },
    /// Create or update a customer.
    UpsertCustomer(CustomerRecord),
    /// Replace a chat's access groups and properties (JSON).
    UpdateChat {
        org: OrgId,
        chat_id: String,
        access: String,
        properties: String,
    },
    /// Create a thread of a chat.
    CreateThread {
        org: OrgId,
        chat_id: String,
        thread: ThreadRecord,
    },
    /// Update a thread's state (activity, queue, close time).
    UpdateThread {
        org: OrgId,
        thread_id: String,
        active: bool,
        closed_at_us: Option<i64>,
        queued_at_us: Option<i64>,
    },
    /// Create or update a tag definition.
    UpsertTag(TagRecord),
    /// Delete a tag definition (threads keep the tag).
    DeleteTag { org: OrgId, name: String },
    /// Replace a thread's tags (JSON array of names).
    SetThreadTags {
        org: OrgId,
        thread_id: String,
        tags: String,
    },
    /// Register or replace a property definition.
    UpsertPropertyDef(PropertyDefRecord),
    /// Unregister a property definition (values already set stay).
    DeletePropertyDef {
        org: OrgId,
        namespace: String,
        name: String,
    },
    /// Record an uploaded file (its bytes were written with
    /// [`crate::Store::put_file`] first).
    PutUpload(UploadRecord),
    /// An upload was used in a `file` event: it never expires.
    SetUploadPermanent { org: OrgId, id: String },
    /// Forget an expired upload (its bytes are removed after the commit).
    DeleteUpload { org: OrgId, id: String },
    /// Replace a thread's properties (JSON object).
    SetThreadProperties {
        org: OrgId,
        thread_id: String,
        properties: String,
    },
    /// Merge a JSON merge patch (RFC 7396) into an event's JSON: keys set
    /// to `null` are removed. Merged in the committing transaction, so two
    /// patches of different keys never undo each other.
    PatchEvent {
        org: OrgId,
        chat_id: String,
        event_id: String,
        patch: String,
    },
    /// Replace the JSON of an existing event (e.g. rich-message button state).
    UpdateEvent {
        org: OrgId,
        chat_id: String,
        event_id: String,
        body: String,
    },
    /// Create or update a user of a chat.
    SetChatUser {
        org: OrgId,
        chat_id: String,
        user: ChatUserRecord,
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
    /// The agent, or the customer for customer tokens.
    pub agent: String,
    pub kind: TokenKind,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Space-separated scopes the credential is restricted to, if any.
    pub scopes: Option<String>,
}

/// A stored customer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerRecord {
    pub org: OrgId,
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub avatar: Option<String>,
    /// JSON array of single-key objects.
    pub session_fields: String,
    pub created_at_us: i64,
    /// Microseconds; banned until then.
    pub banned_until_us: Option<i64>,
}

/// A stored thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadRecord {
    pub id: String,
    pub active: bool,
    pub created_at_us: i64,
    pub closed_at_us: Option<i64>,
    pub queued_at_us: Option<i64>,
    /// JSON object.
    pub properties: String,
    /// JSON array of tag names.
    pub tags: String,
    /// v3.6 `customer_visit` (JSON), for threads a customer started.
    pub customer_visit: Option<String>,
}

/// A tag definition (Configuration API `create_tag`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagRecord {
    pub org: OrgId,
    pub name: String,
    /// JSON array of group ids.
    pub group_ids: String,
    pub author_id: String,
    pub created_at_us: i64,
}

/// A registered property (Configuration API `register_property`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropertyDefRecord {
    pub org: OrgId,
    /// The owner's client id.
    pub namespace: String,
    pub name: String,
    /// JSON: type, access, description, domain, range, default value.
    pub definition: String,
    pub created_at_us: i64,
}

/// An uploaded file (`upload_file`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadRecord {
    pub org: OrgId,
    pub id: String,
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub created_at_us: i64,
    /// Used in a `file` event; temporary uploads expire.
    pub permanent: bool,
}

/// A stored chat user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatUserRecord {
    pub user_id: String,
    /// `agent` or `customer`.
    pub user_type: String,
    pub present: bool,
    /// `all` or `agents`.
    pub visibility: String,
    pub seen_up_to_us: Option<i64>,
}

/// A stored chat with what the engine keeps hot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatRecord {
    pub org: OrgId,
    pub id: String,
    pub customer_id: Option<String>,
    pub last_seq: u64,
    /// JSON array of group ids.
    pub access: String,
    /// JSON object.
    pub properties: String,
    pub created_at_us: i64,
    pub users: Vec<ChatUserRecord>,
    /// The last thread only (at most one): older threads stay in the store
    /// and are read when asked for.
    pub threads: Vec<ThreadRecord>,
    /// How many threads come before `threads`.
    pub older_threads: u64,
    /// The id of the thread just before `threads` (its `previous_thread_id`).
    pub older_last_thread_id: Option<String>,
    /// Events of the last thread, in sequence order.
    pub last_thread_events: Vec<EventRecord>,
    /// `(author, custom_id, event id)` of the last thread's events with a
    /// `custom_id` (older ones are looked up with
    /// [`crate::Store::custom_event`]).
    pub custom_ids: Vec<(String, String, String)>,
}

/// Everything loaded at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub orgs: Vec<OrgRecord>,
    pub tokens: Vec<TokenRecord>,
    pub customers: Vec<CustomerRecord>,
    pub chats: Vec<ChatRecord>,
    pub tags: Vec<TagRecord>,
    pub property_defs: Vec<PropertyDefRecord>,
    pub uploads: Vec<UploadRecord>,
}
