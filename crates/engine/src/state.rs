//! Hot state: organizations, their groups and agents, presence.

use crate::chats::{ChatState, CustomerState};
use crate::connection::{Connection, Side};
use chatgate_domain::presence::{Presence, effective_status};
use chatgate_domain::{Agent, Group, GroupId, Organization, RoutingStatus};
use chatgate_store::OrgRecord;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bumped at every change to any agent's list of sessions (through
/// [`AgentState::sessions_mut`]): a cached list of an organization's
/// sessions is current while the epoch it was built at is. Changes happen
/// under the organization's lock, as do the cache's reads; a change in
/// another organization only costs a rebuild.
static SESSIONS_EPOCH: AtomicU64 = AtomicU64::new(0);

/// Owner of a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenEntry {
    pub org: String,
    /// The agent, or the customer for customer tokens.
    pub agent: String,
    pub kind: chatgate_store::TokenKind,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Scopes the credential is restricted to (within its owner's role);
    /// `None` = the role's defaults.
    pub scopes: Option<std::sync::Arc<chatgate_domain::scopes::ScopeSet>>,
}

impl TokenEntry {
    /// The API this credential authenticates on; `None` for a bot secret,
    /// which is only ever exchanged for bot tokens.
    pub fn side(&self) -> Option<Side> {
        use chatgate_store::TokenKind::*;
        match self.kind {
            Pat | Bot | Access => Some(Side::Agent),
            Customer => Some(Side::Customer),
            BotSecret | ApiKey => None,
        }
    }
}

/// One organization.
pub(crate) struct Org {
    pub org: Organization,
    /// Everything mutable about the organization. A plain mutex: critical
    /// sections are short and synchronous, and store submission happens inside
    /// them so that state order equals commit order.
    state: Mutex<OrgState>,
}

pub(crate) struct OrgState {
    pub groups: BTreeMap<GroupId, Group>,
    pub agents: HashMap<String, AgentState>,
    pub customers: HashMap<String, CustomerState>,
    pub chats: HashMap<String, ChatState>,
    /// Chats whose active thread waits for an agent, in arrival order.
    pub queue: Vec<String>,
    /// Browser origins allowed to request customer tokens; empty = any.
    pub allowed_origins: Vec<String>,
    /// Tag definitions by name (case-sensitive).
    pub tags: BTreeMap<String, TagDef>,
    /// Registered property definitions by (namespace, name); the built-in
    /// namespaces live in [`crate::properties`].
    pub property_defs: BTreeMap<(String, String), crate::properties::PropertyDef>,
    /// Logged-in agent sessions that take `routing_status_set` (closed ones
    /// are skipped and pruned at the next login).
    pub status_watchers: Vec<Arc<Connection>>,
    /// Each group's status as last announced (`groups_status_updated`).
    pub group_statuses: BTreeMap<GroupId, &'static str>,
    /// Something that may change a group's status happened since the last
    /// flush.
    pub group_statuses_dirty: bool,
    /// Uploaded files by id (metadata; the bytes are in the store).
    pub uploads: HashMap<String, crate::uploads::UploadMeta>,
    /// Every session of every agent, as of an epoch of [`SESSIONS_EPOCH`]
    /// (see [`OrgState::all_sessions`]).
    all_sessions: Option<(u64, Arc<[Arc<Connection>]>)>,
}

/// A tag definition: the groups whose threads may carry it.
#[derive(Clone, Debug)]
pub(crate) struct TagDef {
    pub name: String,
    pub group_ids: Vec<GroupId>,
    pub author_id: String,
    pub created_at_us: i64,
}

/// A live RTM session of an agent.
pub(crate) struct SessionRef {
    pub conn: Arc<Connection>,
    pub away: bool,
}

pub(crate) struct AgentState {
    pub agent: Agent,
    /// Status chosen for the current login session.
    pub chosen: RoutingStatus,
    /// Durable: the last status chosen with `set_routing_status`, restored on
    /// `login` with `reconnect: true`.
    pub last_chosen: Option<RoutingStatus>,
    pub sessions: Vec<SessionRef>,
    /// Chats with an active thread this agent is assigned to (its load).
    pub active_chats: BTreeSet<String>,
    /// When the agent last got a chat (µs; idle-longest tie-break).
    pub last_assigned_us: i64,
    /// Which customers its sessions hear about.
    pub monitoring: crate::customers::Monitoring,
}

impl AgentState {
    /// The session list, to change it. Every change goes through here, so
    /// that cached lists of sessions ([`OrgState::all_sessions`]) are
    /// rebuilt.
    pub fn sessions_mut(&mut self) -> &mut Vec<SessionRef> {
        SESSIONS_EPOCH.fetch_add(1, Ordering::Relaxed);
        &mut self.sessions
    }

    pub fn new(agent: Agent, last_chosen: Option<RoutingStatus>) -> Self {
        // Bots need no connection: the status last set for them stands
        // across restarts. Agents start from their login status.
        let chosen = match (agent.kind, last_chosen) {
            (chatgate_domain::AgentKind::Bot, Some(last)) => last,
            _ => agent.login_status,
        };
        AgentState {
            chosen,
            agent,
            last_chosen,
            sessions: Vec::new(),
            active_chats: BTreeSet::new(),
            last_assigned_us: i64::MIN,
            monitoring: Default::default(),
        }
    }

    /// The status routing and other agents see.
    pub fn effective(&self) -> RoutingStatus {
        effective_status(Presence {
            kind: self.agent.kind,
            chosen: self.chosen,
            connections: self.sessions.len(),
            away_connections: self.sessions.iter().filter(|s| s.away).count(),
        })
    }
}

impl Org {
    pub fn from_record(rec: OrgRecord) -> Org {
        let allowed_origins = rec.org.allowed_origins.clone();
        Org {
            org: rec.org,
            state: Mutex::new(OrgState {
                groups: rec.groups.into_iter().map(|g| (g.id, g)).collect(),
                agents: rec
                    .agents
                    .into_iter()
                    .map(|a| {
                        (
                            a.agent.id.0.clone(),
                            AgentState::new(a.agent, a.last_routing_status),
                        )
                    })
                    .collect(),
                customers: HashMap::new(),
                tags: BTreeMap::new(),
                property_defs: BTreeMap::new(),
                uploads: HashMap::new(),
                group_statuses: BTreeMap::new(),
                status_watchers: Vec::new(),
                group_statuses_dirty: false,
                all_sessions: None,
                chats: HashMap::new(),
                queue: Vec::new(),
                allowed_origins,
            }),
        }
    }

    /// Locks the organization's state. Never hold the guard across `.await`.
    pub fn lock(&self) -> MutexGuard<'_, OrgState> {
        self.state.lock().expect("organization state lock poisoned")
    }
}

impl OrgState {
    /// Every session of every agent (what a multicast to everyone and the
    /// organization-wide configuration pushes address), shared, and rebuilt
    /// only after sessions changed. `perf` on fan-out showed the scan over
    /// every agent (most of them offline) at 4.6% of the server at 400
    /// multicasts a second.
    pub fn all_sessions(&mut self) -> Arc<[Arc<Connection>]> {
        let epoch = SESSIONS_EPOCH.load(Ordering::Relaxed);
        if let Some((built, list)) = &self.all_sessions
            && *built == epoch
        {
            debug_assert_eq!(
                list.iter().map(|c| c.id()).collect::<BTreeSet<_>>(),
                self.sessions_where(|_| true)
                    .iter()
                    .map(|c| c.id())
                    .collect::<BTreeSet<_>>(),
                "a change to an agent's sessions bypassed AgentState::sessions_mut"
            );
            return list.clone();
        }
        let list: Arc<[Arc<Connection>]> = self.sessions_where(|_| true).into();
        self.all_sessions = Some((epoch, list.clone()));
        list
    }

    /// Every live connection of every agent that passes `filter`.
    pub fn sessions_where(
        &self,
        mut filter: impl FnMut(&AgentState) -> bool,
    ) -> Vec<Arc<Connection>> {
        self.agents
            .values()
            .filter(|a| filter(a))
            .flat_map(|a| a.sessions.iter().map(|s| s.conn.clone()))
            .collect()
    }
}
