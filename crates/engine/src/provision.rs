//! Idempotent provisioning of organizations, groups, agents and their
//! personal access tokens (the `--provision FILE` of the server). Everything
//! is validated before anything is written, and written in one commit.

use crate::auth::hash_secret;
use crate::push::submit;
use crate::state::{AgentState, Org, TokenEntry};
use crate::{Engine, EngineError};
use chatgate_domain::scopes::ScopeSet;
use chatgate_domain::{
    Agent, AgentId, AgentKind, DEFAULT_MAX_CHATS, Group, GroupId, GroupPriority, OrgId,
    Organization, Role, RoutingStatus,
};
use chatgate_store::{AgentRecord, Op, OrgRecord, TokenKind};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The provisioning document.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionSpec {
    #[serde(default, rename = "organization")]
    pub organizations: Vec<ProvisionOrg>,
}

/// `[[organization]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionOrg {
    /// Random when omitted; an existing organization with the same `name` is
    /// reused so that re-provisioning stays idempotent.
    pub id: Option<String>,
    pub name: String,
    #[serde(default, rename = "group")]
    pub groups: Vec<ProvisionGroup>,
    #[serde(default, rename = "agent")]
    pub agents: Vec<ProvisionAgent>,
    /// Browser origins (`https://shop.example`) allowed to request customer
    /// tokens; empty or absent = any origin.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// `[[organization.group]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionGroup {
    pub id: GroupId,
    pub name: String,
}

/// A group membership: a bare id (priority `normal`) or `{id, priority}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum GroupRef {
    Id(GroupId),
    WithPriority { id: GroupId, priority: String },
}

/// `[[organization.agent]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionAgent {
    /// The agent's e-mail (or a bot id).
    pub id: String,
    pub name: Option<String>,
    /// `owner` | `administrator` | `normal` (default).
    pub role: Option<String>,
    /// `agent` (default) | `bot`.
    pub kind: Option<String>,
    /// Default `[0]`.
    pub groups: Option<Vec<GroupRef>>,
    /// Default 6; at most 20 for agents, 500 for bots.
    pub max_chats: Option<u32>,
    /// `accepting_chats` (default) | `not_accepting_chats`.
    pub login_status: Option<String>,
    #[serde(default)]
    pub suspended: bool,
    /// Personal access tokens (at least 8 characters each).
    #[serde(default)]
    pub tokens: Vec<TokenSpec>,
    /// API keys with their secrets, exchanged for access tokens at
    /// `POST /v1/auth`.
    #[serde(default)]
    pub api_keys: Vec<ProvisionApiKey>,
}

/// A personal access token: the token itself, or `{token, scopes}` to
/// restrict it to some of its owner's scopes.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum TokenSpec {
    Plain(String),
    Scoped { token: String, scopes: Vec<String> },
}

/// `[[organization.agent.api_keys]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvisionApiKey {
    /// At least 8 characters.
    pub key: String,
    /// At least 16 characters; stored only as a hash.
    pub secret: String,
}

/// What provisioning did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProvisionReport {
    /// `(id, name)` of every provisioned organization.
    pub organizations: Vec<(String, String)>,
    pub groups: usize,
    pub agents: usize,
    pub tokens: usize,
}

/// Minimum length of a provisioned token.
const MIN_TOKEN_LEN: usize = 8;

fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::Provision(msg.into())
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn random_license_id() -> u64 {
    let n = u64::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .expect("8 bytes"),
    );
    100_000_000 + n % 900_000_000
}

struct PlannedOrg {
    org: Organization,
    groups: Vec<Group>,
    agents: Vec<Agent>,
    tokens: Vec<([u8; 32], TokenKind)>,
    token_owner: Vec<String>,
    /// Scopes of each token (parallel to `tokens`).
    token_scopes: Vec<Option<ScopeSet>>,
}

impl Engine {
    /// Applies `spec`: creates or updates everything it names, in one commit.
    pub async fn provision(&self, spec: &ProvisionSpec) -> Result<ProvisionReport, EngineError> {
        let mut plans = Vec::new();
        let mut seen_tokens: HashMap<[u8; 32], String> = HashMap::new();
        for o in &spec.organizations {
            plans.push(self.plan_org(o, &mut seen_tokens)?);
        }
        let mut ops = Vec::new();
        let mut report = ProvisionReport::default();
        for p in &plans {
            ops.push(Op::UpsertOrganization(p.org.clone()));
            for g in &p.groups {
                ops.push(Op::UpsertGroup {
                    org: p.org.id.clone(),
                    group: g.clone(),
                });
            }
            for a in &p.agents {
                ops.push(Op::UpsertAgent {
                    org: p.org.id.clone(),
                    agent: a.clone(),
                });
            }
            for (((hash, kind), agent), scopes) in
                p.tokens.iter().zip(&p.token_owner).zip(&p.token_scopes)
            {
                ops.push(Op::PutToken {
                    hash: *hash,
                    org: p.org.id.clone(),
                    agent: agent.clone(),
                    kind: *kind,
                    created_at: now_secs(),
                    expires_at: None,
                });
                if let Some(scopes) = scopes {
                    ops.push(Op::SetTokenScopes {
                        hash: *hash,
                        scopes: scopes.iter().collect::<Vec<_>>().join(" "),
                    });
                }
            }
            report
                .organizations
                .push((p.org.id.0.clone(), p.org.name.clone()));
            report.groups += p.groups.len();
            report.agents += p.agents.len();
            report.tokens += p.tokens.len();
        }
        submit(&self.inner.store, ops, Vec::new())
            .map_err(|e| bad(e.message))?
            .wait()
            .await
            .map_err(|e| bad(e.message))?;
        for p in plans {
            self.install(p);
        }
        Ok(report)
    }

    fn plan_org(
        &self,
        o: &ProvisionOrg,
        seen_tokens: &mut HashMap<[u8; 32], String>,
    ) -> Result<PlannedOrg, EngineError> {
        if o.name.trim().is_empty() {
            return Err(bad("organization `name` must not be empty"));
        }
        let existing: Option<Arc<Org>> = match &o.id {
            Some(id) => self.org(id),
            None => self
                .inner
                .orgs
                .iter()
                .find(|e| e.value().org.name == o.name)
                .map(|e| e.value().clone()),
        };
        let id = match (&o.id, &existing) {
            (Some(id), _) => {
                if id.is_empty()
                    || id.len() > 64
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(bad(format!(
                        "organization id `{id}` must be 1-64 characters of [A-Za-z0-9_-]"
                    )));
                }
                id.clone()
            }
            (None, Some(e)) => e.org.id.0.clone(),
            (None, None) => uuid::Uuid::new_v4().to_string(),
        };
        let org = match &existing {
            Some(e) => Organization {
                name: o.name.clone(),
                allowed_origins: o.allowed_origins.clone(),
                ..e.org.clone()
            },
            None => Organization {
                id: OrgId(id.clone()),
                name: o.name.clone(),
                license_id: random_license_id(),
                created_at: now_secs(),
                allowed_origins: o.allowed_origins.clone(),
            },
        };
        let mut groups: BTreeMap<GroupId, Group> = BTreeMap::new();
        if let Some(e) = &existing {
            for g in e.lock().groups.values() {
                groups.insert(g.id, g.clone());
            }
        }
        groups.entry(0).or_insert_with(|| Group {
            id: 0,
            name: "General".into(),
        });
        let mut new_groups = vec![];
        for g in &o.groups {
            if g.name.trim().is_empty() {
                return Err(bad(format!("group {} of `{}` needs a name", g.id, o.name)));
            }
            let group = Group {
                id: g.id,
                name: g.name.clone(),
            };
            groups.insert(g.id, group.clone());
            new_groups.push(group);
        }
        if !new_groups.iter().any(|g| g.id == 0) {
            new_groups.push(groups[&0].clone());
        }
        let mut agents = Vec::new();
        let mut tokens = Vec::new();
        let mut token_owner = Vec::new();
        let mut token_scopes = Vec::new();
        let mut seen_agents = std::collections::HashSet::new();
        for a in &o.agents {
            let agent = plan_agent(a, &groups)?;
            if !seen_agents.insert(agent.id.0.clone()) {
                return Err(bad(format!("agent `{}` is listed twice", agent.id)));
            }
            for spec in &a.tokens {
                let (t, scopes) = match spec {
                    TokenSpec::Plain(t) => (t, None),
                    TokenSpec::Scoped { token, scopes } => (
                        token,
                        Some(
                            ScopeSet::parse(scopes)
                                .map_err(|e| bad(format!("a token of `{}`: {e}", a.id)))?,
                        ),
                    ),
                };
                if t.len() < MIN_TOKEN_LEN {
                    return Err(bad(format!(
                        "a token of `{}` is shorter than {MIN_TOKEN_LEN} characters",
                        a.id
                    )));
                }
                let hash = hash_secret(t);
                let owner = format!("{id}/{}", a.id);
                if let Some(prev) = seen_tokens.insert(hash, owner.clone())
                    && prev != owner
                {
                    return Err(bad(format!(
                        "a token of `{}` is also given to `{prev}`",
                        a.id
                    )));
                }
                if let Some(e) = self.inner.tokens.get(&hash)
                    && (e.org != id || e.agent != a.id)
                {
                    return Err(bad(format!(
                        "a token of `{}` already belongs to another agent",
                        a.id
                    )));
                }
                tokens.push((hash, TokenKind::Pat));
                token_owner.push(a.id.clone());
                token_scopes.push(scopes);
            }
            for k in &a.api_keys {
                if k.key.len() < MIN_TOKEN_LEN || k.secret.len() < 16 {
                    return Err(bad(format!(
                        "an API key of `{}` needs a key of at least {MIN_TOKEN_LEN} and a secret of at least 16 characters",
                        a.id
                    )));
                }
                let hash = crate::auth::api_key_hash(&k.key, &k.secret);
                if seen_tokens.insert(hash, format!("{id}/{}", a.id)).is_some() {
                    return Err(bad(format!("an API key of `{}` is given twice", a.id)));
                }
                tokens.push((hash, TokenKind::ApiKey));
                token_owner.push(a.id.clone());
                token_scopes.push(None);
            }
            agents.push(agent);
        }
        Ok(PlannedOrg {
            org,
            groups: new_groups,
            agents,
            tokens,
            token_owner,
            token_scopes,
        })
    }

    fn install(&self, p: PlannedOrg) {
        let org = match self.org(&p.org.id.0) {
            Some(o) => o,
            None => {
                let o = Arc::new(Org::from_record(OrgRecord {
                    org: p.org.clone(),
                    groups: Vec::new(),
                    agents: Vec::<AgentRecord>::new(),
                }));
                self.inner.orgs.insert(p.org.id.0.clone(), o.clone());
                o
            }
        };
        {
            let mut state = org.lock();
            state.allowed_origins = p.org.allowed_origins.clone();
            for g in p.groups {
                state.groups.insert(g.id, g);
            }
            for a in p.agents {
                match state.agents.get_mut(&a.id.0) {
                    Some(existing) => existing.agent = a,
                    None => {
                        state
                            .agents
                            .insert(a.id.0.clone(), AgentState::new(a, None));
                    }
                }
            }
        }
        for (((hash, kind), agent), scopes) in
            p.tokens.into_iter().zip(p.token_owner).zip(p.token_scopes)
        {
            self.inner.tokens.insert(
                hash,
                TokenEntry {
                    scopes: scopes.map(Arc::new),
                    org: p.org.id.0.clone(),
                    agent,
                    kind,
                    expires_at: None,
                },
            );
        }
    }
}

fn plan_agent(a: &ProvisionAgent, groups: &BTreeMap<GroupId, Group>) -> Result<Agent, EngineError> {
    if a.id.trim().is_empty() || a.id.len() > 254 {
        return Err(bad("agent `id` must be 1-254 characters"));
    }
    let kind = match a.kind.as_deref().unwrap_or("agent") {
        "agent" => AgentKind::Agent,
        "bot" => AgentKind::Bot,
        other => {
            return Err(bad(format!(
                "agent `{}`: kind `{other}` is not agent or bot",
                a.id
            )));
        }
    };
    if kind == AgentKind::Agent && !a.id.contains('@') {
        return Err(bad(format!(
            "agent `{}`: agents are identified by e-mail",
            a.id
        )));
    }
    let role = match &a.role {
        None => Role::Normal,
        Some(r) => Role::parse(r).ok_or_else(|| {
            bad(format!(
                "agent `{}`: role `{r}` is not owner, administrator or normal",
                a.id
            ))
        })?,
    };
    let login_status = match a.login_status.as_deref() {
        None => RoutingStatus::AcceptingChats,
        Some(s) => match RoutingStatus::parse(s) {
            Some(st @ (RoutingStatus::AcceptingChats | RoutingStatus::NotAcceptingChats)) => st,
            _ => {
                return Err(bad(format!(
                    "agent `{}`: login_status `{s}` is not accepting_chats or not_accepting_chats",
                    a.id
                )));
            }
        },
    };
    let max_limit = if kind == AgentKind::Bot { 500 } else { 20 };
    let max_chats = a.max_chats.unwrap_or(DEFAULT_MAX_CHATS);
    if max_chats == 0 || max_chats > max_limit {
        return Err(bad(format!(
            "agent `{}`: max_chats must be 1-{max_limit}",
            a.id
        )));
    }
    let mut memberships = Vec::new();
    for g in a.groups.clone().unwrap_or_else(|| vec![GroupRef::Id(0)]) {
        let (id, priority) = match g {
            GroupRef::Id(id) => (id, GroupPriority::Normal),
            GroupRef::WithPriority { id, priority } => (
                id,
                GroupPriority::parse(&priority)
                    .ok_or_else(|| bad(format!("agent `{}`: priority `{priority}` is not first, normal, last or supervisor", a.id)))?,
            ),
        };
        if !groups.contains_key(&id) {
            return Err(bad(format!("agent `{}`: group {id} is not defined", a.id)));
        }
        if memberships.iter().any(|(g, _)| *g == id) {
            return Err(bad(format!("agent `{}`: group {id} listed twice", a.id)));
        }
        memberships.push((id, priority));
    }
    memberships.sort_by_key(|(g, _)| *g);
    Ok(Agent {
        id: AgentId(a.id.clone()),
        kind,
        name: a.name.clone().unwrap_or_else(|| a.id.clone()),
        role,
        max_chats,
        login_status,
        groups: memberships,
        suspended: a.suspended,
        profile: Default::default(),
    })
}
