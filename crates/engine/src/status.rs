//! Status methods: `login`, `set_routing_status`, `list_routing_statuses`,
//! `set_away_status`, `logout`, and what happens when a session ends.

use crate::Engine;
use crate::auth::authenticate;
use crate::chat_methods::chats_summary_for;
use crate::chat_more::reroute_offline_agent;
use crate::chats::{drain_queue, now_us};
use crate::connection::{Connection, LoginState, Side, Subscriptions};
use crate::dispatch::{AfterReply, Caller, Reply, parse};
use crate::error::{err, validation};
use crate::push::{Cause, Outgoing, commit, reserve, submit};
use crate::state::{OrgState, SessionRef};
use chatgate_domain::rules::{StatusRefusal, may_see_routing_status, may_set_routing_status};
use chatgate_domain::{AgentKind, Role, RoutingStatus};
use chatgate_protocol::data::{Permission, RoutingStatus as WireStatus};
use chatgate_protocol::methods::{
    License, ListRoutingStatusesRequest, LoginRequest, LoginResponse, MyProfile,
    RoutingStatusEntry, SetAwayStatusRequest, SetRoutingStatusRequest, empty,
};
use chatgate_protocol::pushes::RoutingStatusSet;
use chatgate_protocol::{DisconnectReason, ErrorBody, ErrorType};
use chatgate_store::Op;
use serde_json::Value;
use std::sync::Arc;

/// `customer_monitoring_level` values accepted at login.
const MONITORING_LEVELS: &[&str] = &["my", "chatting", "invited", "online", "highest_available"];

/// Far-future expiration reported for self-hosted licenses (2100-01-01).
pub(crate) const LICENSE_EXPIRATION: i64 = 4_102_444_800;

pub(crate) fn to_wire(s: RoutingStatus) -> WireStatus {
    match s {
        RoutingStatus::AcceptingChats => WireStatus::AcceptingChats,
        RoutingStatus::NotAcceptingChats => WireStatus::NotAcceptingChats,
        RoutingStatus::Offline => WireStatus::Offline,
    }
}

fn from_wire(s: WireStatus) -> RoutingStatus {
    match s {
        WireStatus::AcceptingChats => RoutingStatus::AcceptingChats,
        WireStatus::NotAcceptingChats => RoutingStatus::NotAcceptingChats,
        WireStatus::Offline => RoutingStatus::Offline,
    }
}

fn permission(role: Role) -> Permission {
    match role {
        Role::Owner => Permission::Owner,
        Role::Administrator => Permission::Administrator,
        Role::Normal => Permission::Normal,
    }
}

/// `routing_status_set` about `agent` to every session that may see it.
fn status_push(state: &OrgState, agent: &str, cause: Option<Cause>) -> Outgoing {
    let target = &state.agents[agent];
    // Sent on every login to every session of the organization: only the
    // sessions that take it are walked (`status_watchers`), so sessions that
    // filtered it out cost nothing.
    let recipients: Vec<_> = state
        .status_watchers
        .iter()
        .filter(|c| c.is_open())
        .filter(|c| {
            c.login_state()
                .and_then(|l| state.agents.get(&l.agent))
                .is_some_and(|viewer| may_see_routing_status(&viewer.agent, &target.agent))
        })
        .cloned()
        .collect();
    Outgoing::new(
        "routing_status_set",
        RoutingStatusSet {
            agent_id: agent.to_owned(),
            status: to_wire(target.effective()),
        },
        recipients,
        cause,
    )
}

fn unknown_agent(id: &str) -> ErrorBody {
    err(ErrorType::NotFound, format!("agent `{id}` not found"))
}

pub(crate) async fn login(
    engine: &Engine,
    conn: &Arc<Connection>,
    payload: Value,
) -> Result<Reply, ErrorBody> {
    if conn.is_logged_in() {
        return Err(validation("this connection is already logged in"));
    }
    let req: LoginRequest = parse(payload)?;
    if let Some(level) = &req.customer_monitoring_level
        && !MONITORING_LEVELS.contains(&level.as_str())
    {
        return Err(validation(format!(
            "`customer_monitoring_level` must be one of {MONITORING_LEVELS:?}"
        )));
    }
    let resume = crate::resume::parse_request(req.resume.as_ref())?;
    let subs = match &req.pushes {
        Some(p) => Subscriptions::parse(Side::Agent, conn.version(), p).map_err(validation)?,
        None => Subscriptions::default_for(Side::Agent, conn.version()),
    };
    let entry = authenticate(&engine.inner, &req.token, Side::Agent)?;
    let org = engine
        .org(&entry.org)
        .ok_or_else(|| err(ErrorType::Authentication, "Invalid access token"))?;
    let reservation = reserve(&engine.inner.store)?;
    let (pending, response) = {
        let mut state = org.lock();
        let agent = state
            .agents
            .get_mut(&entry.agent)
            .ok_or_else(|| err(ErrorType::Authentication, "Invalid access token"))?;
        if agent.agent.suspended {
            return Err(err(ErrorType::RequesterSuspended, "Requester suspended"));
        }
        // Set under the organization lock: two concurrent logins on one
        // connection cannot both pass.
        if conn
            .login
            .set(LoginState {
                org: entry.org.clone(),
                agent: entry.agent.clone(),
                subs,
                scopes: std::sync::Mutex::new(entry.scopes.clone()),
            })
            .is_err()
        {
            return Err(validation("this connection is already logged in"));
        }
        // The monitoring level: as asked, else `my` for a first session,
        // else unchanged.
        match req.customer_monitoring_level.as_deref() {
            Some(level) => {
                agent.monitoring =
                    crate::customers::Monitoring::parse(level).expect("checked above");
            }
            None if agent.sessions.is_empty() => agent.monitoring = Default::default(),
            None => {}
        }
        let before = agent.effective();
        if agent.sessions.is_empty() {
            agent.chosen = match (req.reconnect, agent.last_chosen) {
                (Some(true), Some(last)) => last,
                _ => agent.agent.login_status,
            };
        }
        // Over the per-agent cap, the oldest session makes room.
        let cap = engine.inner.config.max_sessions_per_agent.max(1);
        while agent.sessions.len() >= cap {
            let oldest = agent.sessions_mut().remove(0);
            oldest.conn.close(DisconnectReason::ConnectionEvicted, None);
        }
        agent.sessions_mut().push(SessionRef {
            conn: conn.clone(),
            away: req.away.unwrap_or(false),
        });
        // Exact resume (extension): a replaced holder leaves the sessions
        // here, so the agent's presence is what it was.
        let resume_info = resume.map(|r| {
            let (info, replaced) =
                crate::resume::attach(engine, &mut state, &entry.org, &entry.agent, conn, r);
            if let Some(old) = replaced {
                old.close(
                    DisconnectReason::ConnectionEvicted,
                    Some(serde_json::json!({"detail": "resumed_elsewhere"})),
                );
            }
            info
        });
        let agent = state.agents.get_mut(&entry.agent).expect("looked up above");
        let after = agent.effective();
        // The index of sessions that take `routing_status_set` (closed ones
        // are dropped here, at the next login).
        state.status_watchers.retain(|c| c.is_open());
        if conn.wants(chatgate_protocol::pushes::push_bit("routing_status_set")) {
            state.status_watchers.push(conn.clone());
        }
        // Everyone else who may see this agent learns the new status; the
        // logging-in connection reads it from `my_profile.routing_status`.
        let mut pushes = if before != after {
            let mut push = status_push(&state, &entry.agent, None);
            push.recipients.retain(|c| c.id() != conn.id());
            vec![push]
        } else {
            Vec::new()
        };
        // A newly available agent takes queued chats.
        let (ops, queue_pushes) = drain_queue(&mut state, &org.org.id, now_us());
        pushes.extend(queue_pushes);
        let mut response = login_response(&org.org, &state, &entry.agent, after);
        response.resume = resume_info;
        // After the response: the customers this session monitors.
        pushes.extend(crate::customers::incoming_customers(
            &state,
            &state.agents[&entry.agent],
            conn,
        ));
        (commit(reservation, ops, pushes), response)
    };
    pending.wait().await?;
    tracing::debug!(org = %entry.org, agent = %entry.agent, connection = conn.id(), "agent logged in");
    Ok(Reply::ok(
        serde_json::to_value(response).expect("login response serializes"),
    ))
}

fn login_response(
    org: &chatgate_domain::Organization,
    state: &OrgState,
    agent_id: &str,
    status: RoutingStatus,
) -> LoginResponse {
    let agent = &state.agents[agent_id];
    LoginResponse {
        license: License {
            id: org.license_id.to_string(),
            organization_id: org.id.0.clone(),
            plan: "enterprise".into(),
            expiration_timestamp: LICENSE_EXPIRATION,
            creation_timestamp: org.created_at,
            in_trial: false,
            website_last_activity: None,
        },
        my_profile: MyProfile {
            id: agent.agent.id.0.clone(),
            kind: match agent.agent.kind {
                AgentKind::Agent => "agent".into(),
                AgentKind::Bot => "bot".into(),
            },
            name: agent.agent.name.clone(),
            email: agent.agent.id.0.clone(),
            present: true,
            events_seen_up_to: None,
            avatar: None,
            routing_status: to_wire(status),
            permission: permission(agent.agent.role),
        },
        chats_summary: chats_summary_for(state, agent_id),
        resume: None,
    }
}

pub(crate) async fn set_routing_status(
    engine: &Engine,
    caller: &Caller,
    req: SetRoutingStatusRequest,
) -> Result<Reply, ErrorBody> {
    let status = from_wire(req.status);
    let target_id = req.agent_id.unwrap_or_else(|| caller.agent.clone());
    let reservation = reserve(&engine.inner.store)?;
    let pending = {
        let mut state = caller.org.lock();
        let requester = &state.agents[&caller.agent];
        let target = state
            .agents
            .get(&target_id)
            .ok_or_else(|| unknown_agent(&target_id))?;
        let required: &[&str] = match (target.agent.kind, target_id == caller.agent) {
            (AgentKind::Agent, true) => &["agents--my:rw", "agents--all:rw"],
            (AgentKind::Agent, false) => &["agents--all:rw"],
            (AgentKind::Bot, true) => &["agents-bot--my:rw", "agents-bot--all:rw"],
            (AgentKind::Bot, false) => &["agents-bot--all:rw", "agents-bot--my:rw"],
        };
        crate::dispatch::require_scopes(&caller.scopes, required)?;
        match may_set_routing_status(&requester.agent, &target.agent, status) {
            Ok(()) => {}
            Err(StatusRefusal::NotPermitted) => {
                return Err(err(
                    ErrorType::Authorization,
                    "only owners and administrators may set another agent's routing status",
                ));
            }
            Err(StatusRefusal::StatusNotAllowed) => {
                return Err(validation(
                    "agents may set only `accepting_chats` or `not_accepting_chats`",
                ));
            }
        }
        if target.agent.kind == AgentKind::Agent && target.sessions.is_empty() {
            return Err(err(
                ErrorType::AgentOffline,
                format!("agent `{target_id}` is not logged in over RTM"),
            ));
        }
        let target = state.agents.get_mut(&target_id).expect("checked above");
        target.chosen = status;
        target.last_chosen = Some(status);
        let mut pushes = vec![status_push(&state, &target_id, caller.cause.clone())];
        let mut ops = vec![Op::SetLastRoutingStatus {
            org: caller.org.org.id.clone(),
            agent: target_id.clone(),
            status,
        }];
        let (queue_ops, queue_pushes) = drain_queue(&mut state, &caller.org.org.id, now_us());
        ops.extend(queue_ops);
        pushes.extend(queue_pushes);
        commit(reservation, ops, pushes)
    };
    pending.wait().await?;
    Ok(Reply::ok(empty()))
}

pub(crate) async fn list_routing_statuses(
    engine: &Engine,
    caller: &Caller,
    req: ListRoutingStatusesRequest,
) -> Result<Reply, ErrorBody> {
    if let Some(groups) = &req.filters.group_ids
        && groups.len() > 200
    {
        return Err(validation("`filters.group_ids` may hold at most 200 ids"));
    }
    let (pending, mut entries) = {
        let state = caller.org.lock();
        let requester = &state.agents[&caller.agent].agent;
        let entries: Vec<RoutingStatusEntry> = state
            .agents
            .values()
            .filter(|a| may_see_routing_status(requester, &a.agent))
            .filter(|a| match &req.filters.group_ids {
                Some(groups) => groups.iter().any(|g| a.agent.in_group(*g)),
                None => true,
            })
            .map(|a| RoutingStatusEntry {
                agent_id: a.agent.id.0.clone(),
                status: to_wire(a.effective()),
            })
            .collect();
        (
            submit(&engine.inner.store, Vec::new(), Vec::new())?,
            entries,
        )
    };
    pending.wait().await?;
    entries.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    Ok(Reply::ok(
        serde_json::to_value(entries).expect("entries serialize"),
    ))
}

pub(crate) async fn set_away_status(
    engine: &Engine,
    caller: &Caller,
    req: SetAwayStatusRequest,
) -> Result<Reply, ErrorBody> {
    let conn = caller
        .conn
        .as_ref()
        .ok_or_else(|| validation("`set_away_status` is available over RTM only"))?;
    let reservation = reserve(&engine.inner.store)?;
    let pending = {
        let mut state = caller.org.lock();
        let agent = state.agents.get_mut(&caller.agent).expect("caller exists");
        let before = agent.effective();
        let Some(session) = agent.sessions.iter_mut().find(|s| s.conn.id() == conn.id()) else {
            return Err(err(
                ErrorType::RequesterAlreadyOffline,
                "this session is no longer logged in",
            ));
        };
        session.away = req.away;
        let after = agent.effective();
        let mut pushes = if before != after {
            vec![status_push(&state, &caller.agent, caller.cause.clone())]
        } else {
            Vec::new()
        };
        let (ops, queue_pushes) = drain_queue(&mut state, &caller.org.org.id, now_us());
        pushes.extend(queue_pushes);
        commit(reservation, ops, pushes)
    };
    pending.wait().await?;
    Ok(Reply::ok(empty()))
}

/// Removes sessions of `agent` matching `which` and returns the push the
/// presence change causes, if any. The caller submits it.
fn end_sessions(
    state: &mut OrgState,
    agent: &str,
    mut which: impl FnMut(&SessionRef) -> bool,
    cause: Option<Cause>,
) -> (Vec<Arc<Connection>>, Option<Outgoing>) {
    let Some(a) = state.agents.get_mut(agent) else {
        return (Vec::new(), None);
    };
    let before = a.effective();
    let mut removed = Vec::new();
    a.sessions_mut().retain(|s| {
        if which(s) {
            removed.push(s.conn.clone());
            false
        } else {
            true
        }
    });
    if a.sessions.is_empty() {
        a.chosen = a.agent.login_status;
    }
    let after = a.effective();
    let push = (before != after).then(|| status_push(state, agent, cause));
    (removed, push)
}

pub(crate) async fn logout(engine: &Engine, caller: &Caller) -> Result<Reply, ErrorBody> {
    let conn = caller
        .conn
        .as_ref()
        .ok_or_else(|| validation("`logout` is available over RTM only"))?;
    let reservation = reserve(&engine.inner.store)?;
    let pending = {
        let mut state = caller.org.lock();
        let (removed, push) = end_sessions(&mut state, &caller.agent, |_| true, None);
        // Logged out on purpose: no session of the agent may be resumed.
        for c in &removed {
            crate::resume::end(engine, c);
        }
        for other in removed.iter().filter(|c| c.id() != conn.id()) {
            other.close(DisconnectReason::AgentLoggedOutRemotely, None);
        }
        let mut pushes: Vec<Outgoing> = push.into_iter().collect();
        let (ops, more) =
            reroute_offline_agent(&mut state, &caller.org.org.id, &caller.agent, now_us());
        pushes.extend(more);
        state.group_statuses_dirty = true;
        commit(reservation, ops, pushes)
    };
    pending.wait().await?;
    Ok(Reply {
        payload: empty(),
        after: AfterReply::Close,
    })
}

/// Called when a connection ends for any reason. When it was the agent's
/// last, the agent is offline: its chats are re-routed (or queued).
pub(crate) async fn session_ended(engine: &Engine, conn: &Arc<Connection>) {
    let Some(login) = conn.login_state() else {
        return;
    };
    let Some(org) = engine.org(&login.org) else {
        return;
    };
    let reservation = reserve(&engine.inner.store);
    let pending = {
        let mut state = org.lock();
        let (_, push) = end_sessions(&mut state, &login.agent, |s| s.conn.id() == conn.id(), None);
        let reservation = match reservation {
            Ok(r) => r,
            Err(e) => {
                // The session is gone either way; without a place in the
                // store the agent's chats stay assigned until it returns or
                // a later change moves them.
                tracing::warn!(error = %e.message, agent = %login.agent, "no store capacity to re-route after disconnect");
                return;
            }
        };
        let offline = state
            .agents
            .get(&login.agent)
            .is_some_and(|a| a.sessions.is_empty());
        let mut pushes: Vec<Outgoing> = push.into_iter().collect();
        let mut ops = Vec::new();
        if offline {
            let (rops, more) =
                reroute_offline_agent(&mut state, &org.org.id, &login.agent, now_us());
            ops.extend(rops);
            pushes.extend(more);
        }
        state.group_statuses_dirty = true;
        commit(reservation, ops, pushes)
    };
    if let Err(e) = pending.wait().await {
        tracing::warn!(error = %e.message, "status change after disconnect failed");
    }
}

/// `update_session` (3.6, RTM): the session goes on under a new token of
/// the same agent and from now on has that token's scopes, so a connection
/// can outlive the token it logged in with.
pub(crate) fn update_session(
    engine: &Engine,
    caller: &Caller,
    version: chatgate_protocol::Version,
    payload: Value,
) -> Result<Reply, ErrorBody> {
    #[derive(serde::Deserialize)]
    struct UpdateSession {
        token: String,
    }
    if version < chatgate_protocol::Version::V3_6 {
        return Err(validation(
            "`update_session` is a 3.6 method: send it with \"version\": \"3.6\"",
        ));
    }
    let req: UpdateSession = parse(payload)?;
    let login = caller
        .conn
        .as_ref()
        .and_then(|c| c.login_state())
        .ok_or_else(|| validation("`update_session` is an RTM method"))?;
    let entry = authenticate(&engine.inner, &req.token, Side::Agent)?;
    if entry.org != login.org || entry.agent != login.agent {
        return Err(err(
            ErrorType::Authorization,
            "the token belongs to another agent: a session keeps its agent",
        ));
    }
    *login.scopes.lock().unwrap_or_else(|e| e.into_inner()) = entry.scopes;
    Ok(Reply::ok(serde_json::json!({})))
}
