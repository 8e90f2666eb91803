//! Hot state: organizations, their groups and agents, presence.

use crate::connection::Connection;
use chatgate_domain::presence::{Presence, effective_status};
use chatgate_domain::{Agent, Group, GroupId, Organization, RoutingStatus};
use chatgate_store::OrgRecord;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// Owner of a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenEntry {
    pub org: String,
    pub agent: String,
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
}

impl AgentState {
    pub fn new(agent: Agent, last_chosen: Option<RoutingStatus>) -> Self {
        AgentState {
            chosen: agent.login_status,
            agent,
            last_chosen,
            sessions: Vec::new(),
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
            }),
        }
    }

    /// Locks the organization's state. Never hold the guard across `.await`.
    pub fn lock(&self) -> MutexGuard<'_, OrgState> {
        self.state.lock().expect("organization state lock poisoned")
    }
}

impl OrgState {
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
