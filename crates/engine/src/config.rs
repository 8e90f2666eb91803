//! The Configuration API subset: agents, groups, bots, bot tokens. Changes
//! take effect for routing and access in the same commit (no propagation
//! delay), and are announced with the configuration pushes.
//!
//! Roles: every agent may read; owners and administrators may write; only
//! owners may create, promote, delete or suspend administrators, and nobody
//! may delete, suspend or demote an owner.

use crate::Engine;
use crate::auth::{hash_secret, now_secs};
use crate::chat_more::reroute_offline_agent;
use crate::chats::{drain_queue, now_us};
use crate::dispatch::{Caller, Reply, parse};
use crate::error::{err, validation};
use crate::push::{Outgoing, commit, reserve};
use crate::state::{AgentState, OrgState, TokenEntry};
use chatgate_domain::{
    Agent, AgentId, AgentKind, AgentProfile, DEFAULT_MAX_CHATS, Group, GroupId, GroupPriority,
    Role, RoutingStatus,
};
use chatgate_protocol::config::*;
use chatgate_protocol::{DisconnectReason, ErrorBody, ErrorType};
use chatgate_store::{Op, TokenKind};
use serde_json::{Value, json};

fn not_found(what: &str, id: impl std::fmt::Display) -> ErrorBody {
    err(ErrorType::NotFound, format!("{what} `{id}` not found"))
}

fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn login_status_name(s: RoutingStatus) -> &'static str {
    match s {
        RoutingStatus::AcceptingChats => "accepting chats",
        RoutingStatus::NotAcceptingChats => "not accepting chats",
        RoutingStatus::Offline => "offline",
    }
}

fn parse_login_status(s: &str) -> Result<RoutingStatus, ErrorBody> {
    match s {
        "accepting chats" | "accepting_chats" => Ok(RoutingStatus::AcceptingChats),
        "not accepting chats" | "not_accepting_chats" => Ok(RoutingStatus::NotAcceptingChats),
        other => Err(validation(format!(
            "`login_status` must be \"accepting chats\" or \"not accepting chats\", not `{other}`"
        ))),
    }
}

fn parse_role(s: &str) -> Result<Role, ErrorBody> {
    match s {
        "viceowner" | "administrator" => Ok(Role::Administrator),
        "normal" => Ok(Role::Normal),
        other => Err(validation(format!(
            "`role` must be viceowner, administrator or normal, not `{other}`"
        ))),
    }
}

fn parse_priority(s: &str) -> Result<GroupPriority, ErrorBody> {
    GroupPriority::parse(s).ok_or_else(|| {
        validation(format!(
            "priority must be first, normal, last or supervisor, not `{s}`"
        ))
    })
}

fn memberships(
    state: &OrgState,
    groups: &[GroupMembership],
) -> Result<Vec<(GroupId, GroupPriority)>, ErrorBody> {
    let mut out: Vec<(GroupId, GroupPriority)> = Vec::new();
    for g in groups {
        if !state.groups.contains_key(&g.id) {
            return Err(err(
                ErrorType::GroupNotFound,
                format!("group {} not found", g.id),
            ));
        }
        if out.iter().any(|(id, _)| *id == g.id) {
            return Err(validation(format!("group {} is listed twice", g.id)));
        }
        out.push((g.id, parse_priority(&g.priority)?));
    }
    out.sort_by_key(|(g, _)| *g);
    Ok(out)
}

fn wire_groups(a: &Agent) -> Vec<GroupMembership> {
    a.groups
        .iter()
        .map(|(id, p)| GroupMembership {
            id: *id,
            priority: p.as_str().into(),
        })
        .collect()
}

fn config_agent(a: &Agent) -> ConfigAgent {
    ConfigAgent {
        id: a.id.0.clone(),
        name: a.name.clone(),
        role: a.role.as_str().into(),
        login_status: login_status_name(a.login_status).into(),
        max_chats_count: a.max_chats,
        groups: wire_groups(a),
        suspended: a.suspended,
        avatar: a.profile.avatar.clone(),
        job_title: a.profile.job_title.clone(),
    }
}

fn config_bot(a: &Agent) -> ConfigBot {
    ConfigBot {
        id: a.id.0.clone(),
        name: a.name.clone(),
        default_group_priority: a
            .groups
            .first()
            .map(|(_, p)| p.as_str())
            .unwrap_or("normal")
            .into(),
        owner_client_id: a.profile.owner_client_id.clone().unwrap_or_default(),
        max_chats_count: a.max_chats,
        groups: wire_groups(a),
        avatar: a.profile.avatar.clone(),
        job_title: a.profile.job_title.clone(),
    }
}

fn group_status(state: &OrgState, group: GroupId) -> &'static str {
    let members = state
        .agents
        .values()
        .filter(|a| group == 0 || a.agent.in_group(group));
    let mut best = "offline";
    for a in members {
        match a.effective() {
            RoutingStatus::AcceptingChats => return "accepting_chats",
            RoutingStatus::NotAcceptingChats => best = "not_accepting_chats",
            RoutingStatus::Offline => {}
        }
    }
    best
}

fn config_group(state: &OrgState, g: &Group) -> ConfigGroup {
    let agent_priorities = state
        .agents
        .values()
        .filter_map(|a| {
            a.agent
                .groups
                .iter()
                .find(|(id, _)| *id == g.id)
                .map(|(_, p)| (a.agent.id.0.clone(), p.as_str().to_owned()))
        })
        .collect();
    ConfigGroup {
        id: g.id,
        name: g.name.clone(),
        language_code: "en".into(),
        agent_priorities,
        routing_status: group_status(state, g.id).into(),
    }
}

/// A configuration push to every agent session of the organization.
fn config_push(state: &OrgState, name: &'static str, payload: impl serde::Serialize) -> Outgoing {
    Outgoing::new(name, payload, state.sessions_where(|_| true), None)
}

fn requester(state: &OrgState, caller: &Caller) -> Agent {
    state.agents[&caller.agent].agent.clone()
}

fn require_admin(me: &Agent) -> Result<(), ErrorBody> {
    match me.role {
        Role::Owner | Role::Administrator => Ok(()),
        Role::Normal => Err(err(
            ErrorType::Authorization,
            "only owners and administrators may change the configuration",
        )),
    }
}

/// Whether `me` may manage (change role, delete, suspend) `target`.
fn may_manage(me: &Agent, target: &Agent) -> Result<(), ErrorBody> {
    require_admin(me)?;
    match (me.role, target.role) {
        (_, Role::Owner) => Err(err(
            ErrorType::Authorization,
            "the owner cannot be changed this way",
        )),
        (Role::Administrator, Role::Administrator) if me.id != target.id => Err(err(
            ErrorType::Authorization,
            "only the owner may manage administrators",
        )),
        _ => Ok(()),
    }
}

fn agent_of<'a>(
    state: &'a OrgState,
    id: &str,
    kind: AgentKind,
) -> Result<&'a AgentState, ErrorBody> {
    state
        .agents
        .get(id)
        .filter(|a| a.agent.kind == kind)
        .ok_or_else(|| {
            not_found(
                if kind == AgentKind::Bot {
                    "bot"
                } else {
                    "agent"
                },
                id,
            )
        })
}

/// Ends every session of `agent` with `reason` and re-routes its chats.
fn cut_off(
    state: &mut OrgState,
    org: &chatgate_domain::OrgId,
    agent: &str,
    reason: DisconnectReason,
    detail: &str,
) -> (Vec<Op>, Vec<Outgoing>) {
    if let Some(a) = state.agents.get_mut(agent) {
        for s in a.sessions_mut().drain(..) {
            s.conn.close(reason, Some(json!({ "detail": detail })));
        }
    }
    reroute_offline_agent(state, org, agent, now_us())
}

impl Engine {
    /// Executes a Configuration API method for an authenticated caller
    /// (`issue_bot_token` needs no caller: the bot secret is the credential).
    pub(crate) async fn config_method(
        &self,
        caller: Option<&Caller>,
        action: &str,
        payload: Value,
    ) -> Result<Reply, ErrorBody> {
        if action == "issue_bot_token" {
            return self.issue_bot_token(parse(payload)?).await;
        }
        let caller = caller
            .ok_or_else(|| err(ErrorType::Authentication, "missing `Authorization` header"))?;
        match action {
            "get_agent" | "list_agents" | "get_group" | "list_groups" | "get_bot" | "list_bots"
            | "list_tags" | "list_properties" => self.config_read(caller, action, payload).await,
            _ => self.config_write(caller, action, payload).await,
        }
    }

    async fn config_read(
        &self,
        caller: &Caller,
        action: &str,
        payload: Value,
    ) -> Result<Reply, ErrorBody> {
        let (pending, body) = {
            let state = caller.org.lock();
            let body = match action {
                "get_agent" => {
                    let req: IdRequest = parse(payload)?;
                    serde_json::to_value(config_agent(&agent_of(&state, &req.id, AgentKind::Agent)?.agent))
                }
                "list_agents" => {
                    let req: ListAgentsRequest = parse(payload)?;
                    let mut list: Vec<ConfigAgent> = state
                        .agents
                        .values()
                        .filter(|a| a.agent.kind == AgentKind::Agent)
                        .filter(|a| req.filters.suspended.is_none_or(|s| a.agent.suspended == s))
                        .filter(|a| req.filters.group_ids.as_ref().is_none_or(|g| g.iter().any(|g| a.agent.in_group(*g))))
                        .map(|a| config_agent(&a.agent))
                        .collect();
                    list.sort_by(|a, b| a.id.cmp(&b.id));
                    serde_json::to_value(list)
                }
                "get_group" => {
                    let req: IdRequest<u32> = parse(payload)?;
                    let g = state.groups.get(&req.id).ok_or_else(|| err(ErrorType::GroupNotFound, format!("group {} not found", req.id)))?;
                    serde_json::to_value(config_group(&state, g))
                }
                "list_properties" => Ok(crate::properties::list_definitions(&state, payload)?),
                "list_tags" => {
                    let me = requester(&state, caller);
                    Ok(crate::tags::list_tags(&state, &me, &caller.scopes, payload)?)
                }
                "list_groups" => serde_json::to_value(state.groups.values().map(|g| config_group(&state, g)).collect::<Vec<_>>()),
                "get_bot" => {
                    let req: IdRequest = parse(payload)?;
                    serde_json::to_value(config_bot(&agent_of(&state, &req.id, AgentKind::Bot)?.agent))
                }
                _ => {
                    let _req: ListBotsRequest = parse(payload)?;
                    let mut list: Vec<Value> = state
                        .agents
                        .values()
                        .filter(|a| a.agent.kind == AgentKind::Bot)
                        .map(|a| json!({"id": a.agent.id.0, "name": a.agent.name, "avatar": a.agent.profile.avatar}))
                        .collect();
                    list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
                    Ok(Value::Array(list))
                }
            }
            .expect("serializes");
            (
                crate::push::submit(&self.inner.store, Vec::new(), Vec::new())?,
                body,
            )
        };
        pending.wait().await?;
        Ok(Reply::ok(body))
    }

    async fn config_write(
        &self,
        caller: &Caller,
        action: &str,
        payload: Value,
    ) -> Result<Reply, ErrorBody> {
        let org = caller.org.org.id.clone();
        let reservation = reserve(&self.inner.store)?;
        let mut new_tokens: Vec<([u8; 32], TokenEntry)> = Vec::new();
        let mut dropped_tokens_of: Option<(String, Vec<TokenKind>)> = None;
        let (pending, body) = {
            let mut guard = caller.org.lock();
            let state = &mut *guard;
            let me = requester(state, caller);
            let mut ops = Vec::new();
            let mut pushes = Vec::new();
            let body = match action {
                "create_agent" => {
                    require_admin(&me)?;
                    let req: AgentFields = parse(payload)?;
                    if !req.id.contains('@') || req.id.len() > 254 {
                        return Err(validation("`id` must be the agent's e-mail"));
                    }
                    if state.agents.contains_key(&req.id) {
                        return Err(err(
                            ErrorType::AlreadyExists,
                            format!("agent `{}` already exists", req.id),
                        ));
                    }
                    let name = req
                        .name
                        .clone()
                        .filter(|n| !n.trim().is_empty())
                        .ok_or_else(|| validation("`name` is required"))?;
                    let role = req
                        .role
                        .as_deref()
                        .map(parse_role)
                        .transpose()?
                        .unwrap_or(Role::Normal);
                    if role != Role::Normal && me.role != Role::Owner {
                        return Err(err(
                            ErrorType::Authorization,
                            "only the owner may create administrators",
                        ));
                    }
                    let max = req.max_chats_count.unwrap_or(DEFAULT_MAX_CHATS);
                    if max == 0 || max > 20 {
                        return Err(validation("`max_chats_count` must be 1-20"));
                    }
                    let groups = match &req.groups {
                        Some(g) => memberships(state, g)?,
                        None => vec![(0, GroupPriority::Normal)],
                    };
                    let agent = Agent {
                        id: AgentId(req.id.clone()),
                        kind: AgentKind::Agent,
                        name,
                        role,
                        max_chats: max,
                        login_status: req
                            .login_status
                            .as_deref()
                            .map(parse_login_status)
                            .transpose()?
                            .unwrap_or(RoutingStatus::AcceptingChats),
                        groups,
                        suspended: false,
                        profile: AgentProfile {
                            avatar: req.avatar.clone(),
                            job_title: req.job_title.clone(),
                            owner_client_id: None,
                        },
                    };
                    ops.push(Op::UpsertAgent {
                        org: org.clone(),
                        agent: agent.clone(),
                    });
                    pushes.push(config_push(state, "agent_created", config_agent(&agent)));
                    state
                        .agents
                        .insert(req.id.clone(), AgentState::new(agent, None));
                    json!({ "id": req.id })
                }
                "update_agent" => {
                    let req: AgentFields = parse(payload)?;
                    let target = agent_of(state, &req.id, AgentKind::Agent)?.agent.clone();
                    let manages =
                        req.role.is_some() || req.groups.is_some() || req.max_chats_count.is_some();
                    if me.id != target.id || manages {
                        require_admin(&me)?;
                    }
                    let mut updated = target.clone();
                    if let Some(r) = &req.role {
                        let role = parse_role(r)?;
                        if role != target.role {
                            may_manage(&me, &target)?;
                            if role != Role::Normal && me.role != Role::Owner {
                                return Err(err(
                                    ErrorType::Authorization,
                                    "only the owner may promote to administrator",
                                ));
                            }
                            updated.role = role;
                        }
                    }
                    if let Some(n) = &req.name {
                        if n.trim().is_empty() {
                            return Err(validation("`name` must not be empty"));
                        }
                        updated.name = n.clone();
                    }
                    if let Some(m) = req.max_chats_count {
                        if m == 0 || m > 20 {
                            return Err(validation("`max_chats_count` must be 1-20"));
                        }
                        updated.max_chats = m;
                    }
                    if let Some(g) = &req.groups {
                        updated.groups = memberships(state, g)?;
                    }
                    if let Some(s) = &req.login_status {
                        updated.login_status = parse_login_status(s)?;
                    }
                    if req.avatar.is_some() {
                        updated.profile.avatar = req.avatar.clone();
                    }
                    if req.job_title.is_some() {
                        updated.profile.job_title = req.job_title.clone();
                    }
                    ops.push(Op::UpsertAgent {
                        org: org.clone(),
                        agent: updated.clone(),
                    });
                    pushes.push(config_push(state, "agent_updated", config_agent(&updated)));
                    let role_changed = updated.role != target.role;
                    state.agents.get_mut(&req.id).expect("checked").agent = updated;
                    if role_changed {
                        let (o, p) = cut_off(
                            state,
                            &org,
                            &req.id,
                            DisconnectReason::RolePermissionsChanged,
                            "role_changed",
                        );
                        ops.extend(o);
                        pushes.extend(p);
                    }
                    json!({})
                }
                "delete_agent" | "delete_bot" | "suspend_agent" | "unsuspend_agent" => {
                    let req: IdRequest = parse(payload)?;
                    let kind = if action == "delete_bot" {
                        AgentKind::Bot
                    } else {
                        AgentKind::Agent
                    };
                    let target = agent_of(state, &req.id, kind)?.agent.clone();
                    if kind == AgentKind::Bot {
                        require_admin(&me)?;
                    } else {
                        may_manage(&me, &target)?;
                        if target.id == me.id && action != "unsuspend_agent" {
                            return Err(validation("an agent cannot delete or suspend itself"));
                        }
                    }
                    match action {
                        "suspend_agent" | "unsuspend_agent" => {
                            let suspend = action == "suspend_agent";
                            let mut updated = target.clone();
                            updated.suspended = suspend;
                            ops.push(Op::UpsertAgent {
                                org: org.clone(),
                                agent: updated.clone(),
                            });
                            state.agents.get_mut(&req.id).expect("checked").agent = updated;
                            if suspend {
                                let (o, p) = cut_off(
                                    state,
                                    &org,
                                    &req.id,
                                    DisconnectReason::AgentDisconnectedByServer,
                                    "agent_suspended",
                                );
                                ops.extend(o);
                                pushes.extend(p);
                            }
                            let name = if suspend {
                                "agent_suspended"
                            } else {
                                "agent_unsuspended"
                            };
                            pushes.push(config_push(state, name, json!({ "id": req.id })));
                        }
                        _ => {
                            let (o, p) = cut_off(
                                state,
                                &org,
                                &req.id,
                                DisconnectReason::AgentDisconnectedByServer,
                                "agent_deleted",
                            );
                            ops.extend(o);
                            pushes.extend(p);
                            ops.push(Op::DeleteAgent {
                                org: org.clone(),
                                agent: req.id.clone(),
                                at: now_secs(),
                            });
                            state.agents.remove(&req.id);
                            for chat in state.chats.values_mut() {
                                chat.followers.remove(&req.id);
                            }
                            dropped_tokens_of = Some((
                                req.id.clone(),
                                vec![TokenKind::Pat, TokenKind::Bot, TokenKind::BotSecret],
                            ));
                            let name = if kind == AgentKind::Bot {
                                "bot_deleted"
                            } else {
                                "agent_deleted"
                            };
                            pushes.push(config_push(state, name, json!({ "id": req.id })));
                        }
                    }
                    json!({})
                }
                "create_group" | "update_group" => {
                    require_admin(&me)?;
                    let req: GroupFields = parse(payload)?;
                    let (id, create) = match (action, req.id) {
                        ("create_group", _) => {
                            (state.groups.keys().max().map_or(1, |m| m + 1), true)
                        }
                        (_, Some(id)) if state.groups.contains_key(&id) => (id, false),
                        (_, Some(id)) => {
                            return Err(err(
                                ErrorType::GroupNotFound,
                                format!("group {id} not found"),
                            ));
                        }
                        (_, None) => return Err(validation("`id` is required")),
                    };
                    let name = match (&req.name, create) {
                        (Some(n), _) if n.trim().is_empty() || n.len() > 180 => {
                            return Err(validation("`name` must be 1-180 characters"));
                        }
                        (Some(n), _) => n.clone(),
                        (None, true) => return Err(validation("`name` is required")),
                        (None, false) => state.groups[&id].name.clone(),
                    };
                    let priorities: Option<Vec<(String, GroupPriority)>> = match &req
                        .agent_priorities
                    {
                        Some(map) => {
                            let mut out = Vec::new();
                            for (agent, p) in map {
                                if !state.agents.contains_key(agent) {
                                    return Err(not_found("agent", agent));
                                }
                                out.push((agent.clone(), parse_priority(p)?));
                            }
                            Some(out)
                        }
                        None if create => return Err(validation("`agent_priorities` is required")),
                        None => None,
                    };
                    let group = Group { id, name };
                    ops.push(Op::UpsertGroup {
                        org: org.clone(),
                        group: group.clone(),
                    });
                    state.groups.insert(id, group.clone());
                    if let Some(priorities) = priorities {
                        let ids: Vec<String> = state.agents.keys().cloned().collect();
                        for agent_id in ids {
                            let a = state.agents.get_mut(&agent_id).expect("listed");
                            let wanted = priorities
                                .iter()
                                .find(|(x, _)| *x == agent_id)
                                .map(|(_, p)| *p);
                            let before = a.agent.groups.clone();
                            a.agent.groups.retain(|(g, _)| *g != id);
                            if let Some(p) = wanted {
                                a.agent.groups.push((id, p));
                                a.agent.groups.sort_by_key(|(g, _)| *g);
                            }
                            if a.agent.groups != before {
                                ops.push(Op::UpsertAgent {
                                    org: org.clone(),
                                    agent: a.agent.clone(),
                                });
                            }
                        }
                    }
                    let wire = config_group(state, &group);
                    pushes.push(config_push(
                        state,
                        if create {
                            "group_created"
                        } else {
                            "group_updated"
                        },
                        &wire,
                    ));
                    if create {
                        json!({ "id": id })
                    } else {
                        json!({})
                    }
                }
                "delete_group" => {
                    require_admin(&me)?;
                    let req: IdRequest<u32> = parse(payload)?;
                    if req.id == 0 {
                        return Err(validation("group 0 cannot be deleted"));
                    }
                    if state.groups.remove(&req.id).is_none() {
                        return Err(err(
                            ErrorType::GroupNotFound,
                            format!("group {} not found", req.id),
                        ));
                    }
                    for a in state.agents.values_mut() {
                        a.agent.groups.retain(|(g, _)| *g != req.id);
                    }
                    ops.push(Op::DeleteGroup {
                        org: org.clone(),
                        group: req.id,
                    });
                    pushes.push(config_push(state, "group_deleted", json!({ "id": req.id })));
                    json!({})
                }
                "create_bot" | "update_bot" => {
                    require_admin(&me)?;
                    let req: BotFields = parse(payload)?;
                    let create = action == "create_bot";
                    let mut bot = if create {
                        let name = req
                            .name
                            .clone()
                            .filter(|n| !n.trim().is_empty())
                            .ok_or_else(|| validation("`name` is required"))?;
                        Agent {
                            id: AgentId(random_hex()),
                            kind: AgentKind::Bot,
                            name,
                            role: Role::Normal,
                            max_chats: DEFAULT_MAX_CHATS,
                            login_status: RoutingStatus::Offline,
                            groups: Vec::new(),
                            suspended: false,
                            profile: AgentProfile {
                                avatar: None,
                                job_title: None,
                                owner_client_id: Some(
                                    req.owner_client_id
                                        .clone()
                                        .unwrap_or_else(|| "chatgate".into()),
                                ),
                            },
                        }
                    } else {
                        let id = req
                            .id
                            .clone()
                            .ok_or_else(|| validation("`id` is required"))?;
                        agent_of(state, &id, AgentKind::Bot)?.agent.clone()
                    };
                    if let Some(n) = &req.name {
                        if n.trim().is_empty() {
                            return Err(validation("`name` must not be empty"));
                        }
                        bot.name = n.clone();
                    }
                    if let Some(m) = req.max_chats_count {
                        if m == 0 || m > 500 {
                            return Err(validation("`max_chats_count` must be 1-500"));
                        }
                        bot.max_chats = m;
                    }
                    let default_priority = req
                        .default_group_priority
                        .as_deref()
                        .map(parse_priority)
                        .transpose()?;
                    match (&req.groups, create) {
                        (Some(g), _) => bot.groups = memberships(state, g)?,
                        (None, true) => {
                            bot.groups =
                                vec![(0, default_priority.unwrap_or(GroupPriority::Normal))]
                        }
                        (None, false) => {}
                    }
                    if req.avatar.is_some() {
                        bot.profile.avatar = req.avatar.clone();
                    }
                    if req.job_title.is_some() {
                        bot.profile.job_title = req.job_title.clone();
                    }
                    ops.push(Op::UpsertAgent {
                        org: org.clone(),
                        agent: bot.clone(),
                    });
                    let id = bot.id.0.clone();
                    if create {
                        let secret = random_hex();
                        let hash = hash_secret(&secret);
                        ops.push(Op::PutToken {
                            hash,
                            org: org.clone(),
                            agent: id.clone(),
                            kind: TokenKind::BotSecret,
                            created_at: now_secs(),
                            expires_at: None,
                        });
                        new_tokens.push((
                            hash,
                            TokenEntry {
                                scopes: None,
                                org: org.0.clone(),
                                agent: id.clone(),
                                kind: TokenKind::BotSecret,
                                expires_at: None,
                            },
                        ));
                        pushes.push(config_push(state, "bot_created", config_bot(&bot)));
                        state.agents.insert(id.clone(), AgentState::new(bot, None));
                        json!({ "id": id, "secret": secret })
                    } else {
                        pushes.push(config_push(state, "bot_updated", config_bot(&bot)));
                        state.agents.get_mut(&id).expect("checked").agent = bot;
                        json!({})
                    }
                }
                "create_agent_token" => {
                    // chatgate extension: a new personal access token,
                    // optionally restricted to some of the agent's scopes.
                    let req: CreateAgentToken = parse(payload)?;
                    let target = agent_of(state, &req.id, AgentKind::Agent)?.agent.clone();
                    if target.id != me.id {
                        may_manage(&me, &target)?;
                    }
                    let scopes = match &req.scopes {
                        Some(list) => Some(
                            chatgate_domain::scopes::ScopeSet::parse(list).map_err(validation)?,
                        ),
                        None => None,
                    };
                    let token = format!("{}{}", random_hex(), random_hex());
                    let hash = hash_secret(&token);
                    ops.push(Op::PutToken {
                        hash,
                        org: org.clone(),
                        agent: req.id.clone(),
                        kind: TokenKind::Pat,
                        created_at: now_secs(),
                        expires_at: None,
                    });
                    if let Some(sc) = &scopes {
                        ops.push(Op::SetTokenScopes {
                            hash,
                            scopes: sc.iter().collect::<Vec<_>>().join(" "),
                        });
                    }
                    new_tokens.push((
                        hash,
                        TokenEntry {
                            scopes: scopes.map(std::sync::Arc::new),
                            org: org.0.clone(),
                            agent: req.id.clone(),
                            kind: TokenKind::Pat,
                            expires_at: None,
                        },
                    ));
                    json!({ "token": token })
                }
                "revoke_agent_tokens" => {
                    // chatgate extension: revoke an agent's personal access
                    // tokens and API access tokens; its sessions end.
                    let req: IdRequest = parse(payload)?;
                    let target = agent_of(state, &req.id, AgentKind::Agent)?.agent.clone();
                    if target.id != me.id {
                        may_manage(&me, &target)?;
                    }
                    let kinds = vec![TokenKind::Pat, TokenKind::Access];
                    ops.push(Op::RevokeTokens {
                        org: org.clone(),
                        agent: req.id.clone(),
                        kinds: kinds.clone(),
                        at: now_secs(),
                    });
                    let (o, p) = cut_off(
                        state,
                        &org,
                        &req.id,
                        DisconnectReason::AccessTokenRevoked,
                        "tokens_revoked",
                    );
                    ops.extend(o);
                    pushes.extend(p);
                    dropped_tokens_of = Some((req.id.clone(), kinds));
                    json!({})
                }
                "reset_bot_secret" => {
                    require_admin(&me)?;
                    let req: IdRequest = parse(payload)?;
                    agent_of(state, &req.id, AgentKind::Bot)?;
                    let secret = random_hex();
                    let hash = hash_secret(&secret);
                    let at = now_secs();
                    ops.push(Op::RevokeTokens {
                        org: org.clone(),
                        agent: req.id.clone(),
                        kinds: vec![TokenKind::BotSecret, TokenKind::Bot],
                        at,
                    });
                    ops.push(Op::PutToken {
                        hash,
                        org: org.clone(),
                        agent: req.id.clone(),
                        kind: TokenKind::BotSecret,
                        created_at: at,
                        expires_at: None,
                    });
                    if let Some(a) = state.agents.get_mut(&req.id) {
                        for s in a.sessions_mut().drain(..) {
                            s.conn.close(DisconnectReason::AccessTokenRevoked, None);
                        }
                    }
                    dropped_tokens_of =
                        Some((req.id.clone(), vec![TokenKind::BotSecret, TokenKind::Bot]));
                    new_tokens.push((
                        hash,
                        TokenEntry {
                            scopes: None,
                            org: org.0.clone(),
                            agent: req.id.clone(),
                            kind: TokenKind::BotSecret,
                            expires_at: None,
                        },
                    ));
                    json!({ "secret": secret })
                }
                "register_property" | "unregister_property" => {
                    crate::properties::write_definition(state, &org, action, payload, &mut ops)?
                }
                "create_tag" | "update_tag" | "delete_tag" => crate::tags::write_tag(
                    state,
                    &org,
                    &me,
                    &caller.scopes,
                    action,
                    payload,
                    (&mut ops, &mut pushes),
                )?,
                other => return Err(validation(format!("unknown action `{other}`"))),
            };
            // Capacity may have appeared (groups, limits, statuses).
            let (qops, qpushes) = drain_queue(state, &org, now_us());
            ops.extend(qops);
            pushes.extend(qpushes);
            // Token map changes are made under the organization lock, before
            // the commit is awaited, so a revoked token is refused from the
            // next request on.
            if let Some((agent, kinds)) = &dropped_tokens_of {
                self.inner.tokens.retain(|_, e| {
                    !(e.org == org.0 && &e.agent == agent && kinds.contains(&e.kind))
                });
            }
            (commit(reservation, ops, pushes), body)
        };
        pending.wait().await?;
        for (hash, entry) in new_tokens {
            self.inner.tokens.insert(hash, entry);
        }
        Ok(Reply::ok(body))
    }

    async fn issue_bot_token(&self, req: IssueBotTokenRequest) -> Result<Reply, ErrorBody> {
        let org = self
            .org(&req.organization_id)
            .ok_or_else(|| not_found("organization", &req.organization_id))?;
        let valid = self
            .inner
            .tokens
            .get(&hash_secret(&req.bot_secret))
            .is_some_and(|e| {
                e.kind == TokenKind::BotSecret
                    && e.org == req.organization_id
                    && e.agent == req.bot_id
            });
        if !valid {
            return Err(err(ErrorType::Authentication, "invalid bot id or secret"));
        }
        let token = format!("{}{}", random_hex(), random_hex());
        let hash = hash_secret(&token);
        let expires_at = now_secs() + self.inner.config.bot_token_ttl as i64;
        let reservation = reserve(&self.inner.store)?;
        let pending = {
            let state = org.lock();
            agent_of(&state, &req.bot_id, AgentKind::Bot)?;
            let op = Op::PutToken {
                hash,
                org: org.org.id.clone(),
                agent: req.bot_id.clone(),
                kind: TokenKind::Bot,
                created_at: now_secs(),
                expires_at: Some(expires_at),
            };
            commit(reservation, vec![op], Vec::new())
        };
        pending.wait().await?;
        self.inner.tokens.insert(
            hash,
            TokenEntry {
                scopes: None,
                org: req.organization_id,
                agent: req.bot_id,
                kind: TokenKind::Bot,
                expires_at: Some(expires_at),
            },
        );
        Ok(Reply::ok(
            serde_json::to_value(BotToken { token }).expect("serializes"),
        ))
    }
}
