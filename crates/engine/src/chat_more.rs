//! The rest of the chat methods: following, transfers, adding and removing
//! users, seen markers, typing indicators and sneak peeks, multicast,
//! agents for transfer, rich-message postbacks, thread lists; and the
//! re-routing of an agent's chats when it goes offline.

use crate::Engine;
use crate::chat_methods::{Actor, ChatCaller, not_found, readable};
use crate::chats::{
    Audience, ChatUser, Neighbors, ThreadState, UserKind, agent_sessions, close_agent, drain_queue,
    has_group_access, incoming_chat_pushes, incoming_chat_to_agent, load_chat_threads,
    load_thread_events, now_us, queue_of, recipients, rfc3339, route_chat, union, wire_thread,
    wire_users,
};
use crate::dispatch::Reply;
use crate::error::{err, internal, validation};
use crate::push::{Outgoing, commit, reserve, submit};
use crate::state::OrgState;
use crate::tags::MAX_TAG_CHARS;
use chatgate_domain::{OrgId, RoutingStatus};
use chatgate_protocol::chats::*;
use chatgate_protocol::data::{Event, SneakPeek, TypingIndicator, User, Visibility};
use chatgate_protocol::{ErrorBody, ErrorType};
use chatgate_store::Op;
use serde_json::json;
use std::collections::HashSet;

fn agent_of(caller: &ChatCaller) -> &str {
    match &caller.actor {
        Actor::Agent(a) => a,
        Actor::Customer(_) => unreachable!("agent-only method"),
    }
}

fn require_active<'a>(
    chat: &'a crate::chats::ChatState,
    id: &str,
) -> Result<&'a crate::chats::ThreadState, ErrorBody> {
    chat.active_thread().ok_or_else(|| {
        err(
            ErrorType::ChatInactive,
            format!("chat `{id}` has no active thread"),
        )
    })
}

fn require_presence(
    chat: &crate::chats::ChatState,
    me: &str,
    ignore: Option<bool>,
) -> Result<(), ErrorBody> {
    if ignore != Some(true) && !chat.user(me).is_some_and(|u| u.present) {
        return Err(err(
            ErrorType::MissingAccess,
            "the requester is not present in this chat (set `ignore_requester_presence`)",
        ));
    }
    Ok(())
}

/// `follow_chat`.
pub(crate) async fn follow_chat(
    engine: &Engine,
    caller: &ChatCaller,
    req: ChatIdRequest,
) -> Result<Reply, ErrorBody> {
    let me = agent_of(caller).to_owned();
    let pending = {
        let mut guard = caller.org.lock();
        let state = &mut *guard;
        let chat = readable(state, caller, &req.id)?;
        let already = chat.followers.contains(&me) || chat.user(&me).is_some_and(|u| u.present);
        let mut pushes = Vec::new();
        if !already {
            state
                .chats
                .get_mut(&req.id)
                .expect("checked")
                .followers
                .insert(me.clone());
            let chat = &state.chats[&req.id];
            let mut p =
                incoming_chat_pushes(state, chat, Some(&me), caller.cause.clone(), now_us());
            // Only the follower is told.
            let mine = agent_sessions(state, &me);
            for push in &mut p {
                push.recipients
                    .retain(|c| mine.iter().any(|m| m.id() == c.id()));
            }
            pushes.extend(p.into_iter().filter(|p| !p.recipients.is_empty()));
        }
        submit(&engine.inner.store, Vec::new(), pushes)?
    };
    pending.wait().await?;
    Ok(Reply::ok(json!({})))
}

/// `unfollow_chat`.
pub(crate) async fn unfollow_chat(
    engine: &Engine,
    caller: &ChatCaller,
    req: ChatIdRequest,
) -> Result<Reply, ErrorBody> {
    let me = agent_of(caller).to_owned();
    let pending = {
        let mut guard = caller.org.lock();
        let state = &mut *guard;
        let chat = readable(state, caller, &req.id)?;
        if chat.user(&me).is_some_and(|u| u.present) {
            return Err(validation("users of a chat cannot unfollow it"));
        }
        let was = state
            .chats
            .get_mut(&req.id)
            .expect("checked")
            .followers
            .remove(&me);
        let pushes = if was {
            vec![Outgoing::new(
                "chat_unfollowed",
                ChatUnfollowed {
                    chat_id: req.id.clone(),
                },
                agent_sessions(state, &me),
                caller.cause.clone(),
            )]
        } else {
            Vec::new()
        };
        submit(&engine.inner.store, Vec::new(), pushes)?
    };
    pending.wait().await?;
    Ok(Reply::ok(json!({})))
}

/// `transfer_chat`: to agents, to groups, or (no target) re-routed in its group.
pub(crate) async fn transfer_chat(
    engine: &Engine,
    caller: &ChatCaller,
    req: TransferChatRequest,
) -> Result<Reply, ErrorBody> {
    let me = agent_of(caller).to_owned();
    let now = now_us();
    let org_id = caller.org.org.id.clone();
    let reservation = reserve(&engine.inner.store)?;
    let pending = {
        let mut guard = caller.org.lock();
        let state = &mut *guard;
        let chat = readable(state, caller, &req.id)?;
        let thread_id = require_active(chat, &req.id)?.id.clone();
        require_presence(chat, &me, req.ignore_requester_presence)?;
        let queue_allowed = req.ignore_agents_availability == Some(true);
        let previous: Vec<String> = chat.present_agents().map(str::to_owned).collect();
        let old_access = chat.access.clone();
        // Who could see the chat before (they hear about the transfer even
        // if they lose access).
        let before = recipients(state, chat, Audience::Everyone);
        let (new_access, target_agent) = match &req.target {
            None => (old_access.clone(), None),
            Some(t) if t.kind == "group" => {
                if t.ids.is_empty() {
                    return Err(validation("`target.ids` must name at least one group"));
                }
                let mut groups = Vec::new();
                for id in &t.ids {
                    let g = id
                        .as_u64()
                        .ok_or_else(|| validation("group `target.ids` must be numbers"))?
                        as u32;
                    if !state.groups.contains_key(&g) {
                        return Err(err(
                            ErrorType::GroupNotFound,
                            format!("group {g} not found"),
                        ));
                    }
                    groups.push(g);
                }
                (groups, None)
            }
            Some(t) if t.kind == "agent" => {
                let [id] = &t.ids[..] else {
                    return Err(validation(
                        "an agent transfer names exactly one agent in `target.ids`",
                    ));
                };
                let id = id
                    .as_str()
                    .ok_or_else(|| validation("agent `target.ids` must be strings"))?;
                let agent = state.agents.get(id).ok_or_else(|| not_found("agent", id))?;
                if !has_group_access(agent, &old_access) {
                    return Err(err(
                        ErrorType::MissingAccess,
                        format!("agent `{id}` has no access to this chat"),
                    ));
                }
                if previous.iter().any(|p| p == id) {
                    return Err(validation(format!("agent `{id}` is already in this chat")));
                }
                let free = agent.effective() == RoutingStatus::AcceptingChats
                    && (agent.active_chats.len() as u32) < agent.agent.max_chats;
                if agent.effective() == RoutingStatus::Offline || (!free && !queue_allowed) {
                    return Err(err(
                        ErrorType::AgentOffline,
                        format!("agent `{id}` cannot take the chat now"),
                    ));
                }
                (old_access.clone(), Some(id.to_owned()))
            }
            Some(t) => {
                return Err(validation(format!(
                    "`target.type` must be agent or group, not `{}`",
                    t.kind
                )));
            }
        };
        // Check capacity for group and re-route transfers before changing anything.
        if target_agent.is_none() && !queue_allowed {
            let probe = crate::chats::candidates_for(
                state,
                new_access.first().copied().unwrap_or(0),
                &previous,
            );
            if !probe.iter().any(|c| c.can_take()) {
                return Err(err(
                    ErrorType::AgentOffline,
                    "no agent of the target can take the chat now (set `ignore_agents_availability` to queue it)",
                ));
            }
        }
        let mut ops = Vec::new();
        let mut pushes = Vec::new();
        // Who monitored the chat's customer before the move.
        let customer = state.chats[&req.id].customer_id.clone();
        let monitors_before = customer
            .as_deref()
            .map(|c| crate::customers::customer_audience(state, c))
            .unwrap_or_default();
        // The previous agents leave.
        for agent in &previous {
            ops.extend(close_agent(state, &org_id, &req.id, agent));
        }
        let chat = state.chats.get_mut(&req.id).expect("exists");
        let access_changed = chat.access != new_access;
        chat.access = new_access.clone();
        if access_changed {
            ops.push(Op::UpdateChat {
                org: org_id.clone(),
                chat_id: req.id.clone(),
                access: serde_json::to_string(&chat.access).expect("serializes"),
                properties: serde_json::to_string(&chat.properties).expect("serializes"),
            });
        }
        // Assign: the named agent, or routing in the (new) group excluding the previous agents.
        let assigned = match &target_agent {
            Some(a) => {
                ops.extend(crate::chats::assign_to(state, &org_id, &req.id, a, now));
                Some(a.clone())
            }
            None => {
                let (routed, rops) = route_chat_excluding(state, &org_id, &req.id, &previous, now);
                ops.extend(rops);
                routed
            }
        };
        let chat = &state.chats[&req.id];
        let queue = if assigned.is_none() {
            queue_of(state, chat, now)
        } else {
            None
        };
        let transferred_to = match (&target_agent, &req.target) {
            (Some(a), _) => TransferredTo {
                group_ids: vec![],
                agent_ids: vec![a.clone()],
            },
            (None, _) => TransferredTo {
                group_ids: new_access.clone(),
                agent_ids: assigned.iter().cloned().collect(),
            },
        };
        let audience = union(before, recipients(state, chat, Audience::Everyone));
        pushes.push(Outgoing::new(
            "chat_transferred",
            ChatTransferred {
                chat_id: req.id.clone(),
                thread_id: Some(thread_id.clone()),
                requester_id: Some(me.clone()),
                reason: "manual".into(),
                transferred_to,
                queue,
            },
            audience.clone(),
            caller.cause.clone(),
        ));
        if access_changed {
            pushes.push(Outgoing::new(
                "chat_access_updated",
                ChatAccessUpdated {
                    id: req.id.clone(),
                    access: chatgate_protocol::data::Access {
                        group_ids: new_access.clone(),
                    },
                },
                audience,
                None,
            ));
        }
        for agent in &previous {
            let mut to = recipients(state, chat, Audience::Members { customer: true });
            to.extend(agent_sessions(state, agent));
            pushes.push(Outgoing::new(
                "user_removed_from_chat",
                UserRemovedFromChat {
                    chat_id: req.id.clone(),
                    thread_id: Some(thread_id.clone()),
                    user_id: agent.clone(),
                    reason: "manual".into(),
                    requester_id: Some(me.clone()),
                },
                to,
                None,
            ));
        }
        if let Some(new) = &assigned {
            let from = json!({"group_ids": old_access, "agent_ids": previous});
            pushes.extend(incoming_chat_to_agent(
                state,
                chat,
                new,
                Some(&me),
                from,
                now,
            ));
        } else {
            pushes.extend(crate::chats::queue_pushes(state, now));
        }
        let (qops, qpushes) = drain_queue(state, &org_id, now);
        ops.extend(qops);
        pushes.extend(qpushes);
        if let Some(c) = &customer {
            let groups = state.chats[&req.id].access.clone();
            pushes.extend(crate::customers::customer_transferred(
                state,
                c,
                monitors_before,
                &groups,
            ));
        }
        commit(reservation, ops, pushes)
    };
    pending.wait().await?;
    Ok(Reply::ok(json!({})))
}

fn route_chat_excluding(
    state: &mut OrgState,
    org: &OrgId,
    chat_id: &str,
    exclude: &[String],
    now: i64,
) -> (Option<String>, Vec<Op>) {
    let group = state.chats[chat_id].group();
    let candidates = crate::chats::candidates_for(state, group, exclude);
    let pick = chatgate_domain::routing::decide(&candidates, None);
    match pick {
        chatgate_domain::routing::Decision::Assign(a) => {
            let a = a.to_owned();
            let ops = crate::chats::assign_to(state, org, chat_id, &a, now);
            (Some(a), ops)
        }
        _ => {
            let (_, ops) = route_chat(state, org, chat_id, true, now);
            (None, ops)
        }
    }
}

/// `add_user_to_chat`.
pub(crate) async fn add_user_to_chat(
    engine: &Engine,
    caller: &ChatCaller,
    req: AddUserToChatRequest,
) -> Result<Reply, ErrorBody> {
    let me = agent_of(caller).to_owned();
    let now = now_us();
    let org_id = caller.org.org.id.clone();
    let reservation = reserve(&engine.inner.store)?;
    let pending = {
        let mut guard = caller.org.lock();
        let state = &mut *guard;
        let chat = readable(state, caller, &req.chat_id)?;
        let thread_id = require_active(chat, &req.chat_id)?.id.clone();
        require_presence(chat, &me, req.ignore_requester_presence)?;
        if chat.user(&req.user_id).is_some_and(|u| u.present) {
            return Err(validation(format!(
                "`{}` is already in this chat",
                req.user_id
            )));
        }
        let kind = match req.user_type.as_str() {
            "agent" => {
                let a = state
                    .agents
                    .get(&req.user_id)
                    .ok_or_else(|| not_found("agent", &req.user_id))?;
                if !has_group_access(a, &chat.access) {
                    return Err(err(
                        ErrorType::MissingAccess,
                        format!("agent `{}` has no access to this chat", req.user_id),
                    ));
                }
                UserKind::Agent
            }
            "customer" => {
                if !state.customers.contains_key(&req.user_id) {
                    return Err(not_found("customer", &req.user_id));
                }
                if req.visibility != Visibility::All {
                    return Err(validation("a customer is added with visibility `all`"));
                }
                if chat
                    .customer_id
                    .as_deref()
                    .is_some_and(|c| c != req.user_id)
                {
                    return Err(validation("a chat has at most one customer"));
                }
                UserKind::Customer
            }
            other => {
                return Err(validation(format!(
                    "`user_type` must be agent or customer, not `{other}`"
                )));
            }
        };
        let chat = state.chats.get_mut(&req.chat_id).expect("checked");
        match chat.user_mut(&req.user_id) {
            Some(u) => {
                u.present = true;
                u.visibility = req.visibility;
            }
            None => chat.users.push(ChatUser {
                id: req.user_id.clone(),
                kind,
                present: true,
                visibility: req.visibility,
                seen_up_to_us: None,
            }),
        }
        if kind == UserKind::Customer {
            chat.customer_id = Some(req.user_id.clone());
        }
        let ops = vec![Op::SetChatUser {
            org: org_id.clone(),
            chat_id: req.chat_id.clone(),
            user: chat.user(&req.user_id).expect("added").record(),
        }];
        if kind == UserKind::Agent
            && req.visibility == Visibility::All
            && let Some(a) = state.agents.get_mut(&req.user_id)
        {
            a.active_chats.insert(req.chat_id.clone());
            a.last_assigned_us = now;
        }
        let chat = &state.chats[&req.chat_id];
        let for_customer = req.visibility == Visibility::All;
        let user = wire_users(state, chat, false)
            .into_iter()
            .find(|u| user_id(u) == req.user_id)
            .expect("added");
        let pushes = vec![Outgoing::new(
            "user_added_to_chat",
            UserAddedToChat {
                chat_id: req.chat_id.clone(),
                thread_id: Some(thread_id),
                user,
                reason: "manual".into(),
                requester_id: Some(me),
            },
            recipients(
                state,
                chat,
                Audience::Members {
                    customer: for_customer,
                },
            ),
            caller.cause.clone(),
        )];
        commit(reservation, ops, pushes)
    };
    pending.wait().await?;
    Ok(Reply::ok(json!({})))
}

fn user_id(u: &User) -> &str {
    match u {
        User::Agent { id, .. } | User::Customer { id, .. } => id,
    }
}

/// `remove_user_from_chat`.
pub(crate) async fn remove_user_from_chat(
    engine: &Engine,
    caller: &ChatCaller,
    req: RemoveUserFromChatRequest,
) -> Result<Reply, ErrorBody> {
    let me = agent_of(caller).to_owned();
    let now = now_us();
    let org_id = caller.org.org.id.clone();
    if req.user_type != "agent" {
        return Err(validation(
            "only agents can be removed from a chat (`user_type` must be agent)",
        ));
    }
    let reservation = reserve(&engine.inner.store)?;
    let pending = {
        let mut guard = caller.org.lock();
        let state = &mut *guard;
        let chat = readable(state, caller, &req.chat_id)?;
        let thread_id = require_active(chat, &req.chat_id)?.id.clone();
        if req.user_id != me {
            require_presence(chat, &me, req.ignore_requester_presence)?;
        }
        if !chat
            .user(&req.user_id)
            .is_some_and(|u| u.present && u.kind == UserKind::Agent)
        {
            return Err(not_found("chat user", &req.user_id));
        }
        let mut to = recipients(state, chat, Audience::Members { customer: true });
        let mut ops = close_agent(state, &org_id, &req.chat_id, &req.user_id);
        for s in agent_sessions(state, &req.user_id) {
            if !to.iter().any(|t| t.id() == s.id()) {
                to.push(s);
            }
        }
        let mut pushes = vec![Outgoing::new(
            "user_removed_from_chat",
            UserRemovedFromChat {
                chat_id: req.chat_id.clone(),
                thread_id: Some(thread_id),
                user_id: req.user_id.clone(),
                reason: "manual".into(),
                requester_id: Some(me),
            },
            to,
            caller.cause.clone(),
        )];
        let (qops, qpushes) = drain_queue(state, &org_id, now);
        ops.extend(qops);
        pushes.extend(qpushes);
        commit(reservation, ops, pushes)
    };
    pending.wait().await?;
    Ok(Reply::ok(json!({})))
}

pub(crate) fn parse_time_us(s: &str) -> Result<i64, ErrorBody> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| validation(format!("`seen_up_to` is not an RFC 3339 date-time: {e}")))?;
    Ok((t.unix_timestamp_nanos() / 1000) as i64)
}

/// `mark_events_as_seen` (agents and customers).
pub(crate) async fn mark_events_as_seen(
    engine: &Engine,
    caller: &ChatCaller,
    req: MarkEventsAsSeenRequest,
) -> Result<Reply, ErrorBody> {
    let seen = parse_time_us(&req.seen_up_to)?;
    let org_id = caller.org.org.id.clone();
    let reservation = reserve(&engine.inner.store)?;
    let pending = {
        let mut guard = caller.org.lock();
        let state = &mut *guard;
        readable(state, caller, &req.chat_id)?;
        let me = caller.actor.id().to_owned();
        let chat = state.chats.get_mut(&req.chat_id).expect("checked");
        let Some(user) = chat.user_mut(&me) else {
            return Err(err(
                ErrorType::MissingAccess,
                "the requester is not a user of this chat",
            ));
        };
        // The marker only moves forward.
        let new = user.seen_up_to_us.map_or(seen, |old| old.max(seen));
        user.seen_up_to_us = Some(new);
        let op = Op::SetChatUser {
            org: org_id,
            chat_id: req.chat_id.clone(),
            user: user.record(),
        };
        let chat = &state.chats[&req.chat_id];
        let push = Outgoing::new(
            "events_marked_as_seen",
            EventsMarkedAsSeen {
                user_id: me,
                chat_id: req.chat_id.clone(),
                seen_up_to: rfc3339(new),
            },
            recipients(state, chat, Audience::Members { customer: true }),
            caller.cause.clone(),
        );
        commit(reservation, vec![op], vec![push])
    };
    pending.wait().await?;
    Ok(Reply::ok(json!({})))
}

/// `send_typing_indicator` (agents and customers) and the customer's
/// `send_sneak_peek`. Nothing is stored; the push still goes through the
/// store's ordered completion path so it never overtakes an earlier change.
pub(crate) async fn typing(
    engine: &Engine,
    caller: &ChatCaller,
    chat_id: &str,
    what: Typing,
) -> Result<Reply, ErrorBody> {
    let now_s = now_us() / 1_000_000;
    let pending = {
        let state = caller.org.lock();
        let chat = readable(&state, caller, chat_id)?;
        let thread_id = require_active(chat, chat_id)?.id.clone();
        let me = caller.actor.id().to_owned();
        if chat.user(&me).is_none() {
            return Err(err(
                ErrorType::MissingAccess,
                "the requester is not a user of this chat",
            ));
        }
        // Members other than the requester's own sessions; the customer
        // only for `visibility: all` from an agent.
        let others = |visibility: Visibility| {
            let to_customer = !caller.actor.is_customer() && visibility == Visibility::All;
            let mut to = recipients(
                &state,
                chat,
                Audience::Members {
                    customer: to_customer,
                },
            );
            let mine: Vec<u64> = match &caller.actor {
                Actor::Agent(a) => agent_sessions(&state, a).iter().map(|c| c.id()).collect(),
                Actor::Customer(c) => state
                    .customers
                    .get(c)
                    .map(|c| c.sessions.iter().map(|s| s.id()).collect())
                    .unwrap_or_default(),
            };
            to.retain(|c| !mine.contains(&c.id()));
            to
        };
        let push = match what {
            Typing::Preview { mut event } => {
                let common = event.common_mut();
                common.author_id = Some(me.clone());
                common.created_at = Some(rfc3339(now_us()));
                common.id = None;
                let to = chat
                    .customer_id
                    .as_ref()
                    .and_then(|c| state.customers.get(c))
                    .map(|c| c.sessions.clone())
                    .unwrap_or_default();
                Outgoing::new(
                    "incoming_event_preview",
                    json!({ "chat_id": chat_id, "thread_id": thread_id, "event": event }),
                    to,
                    None,
                )
            }
            Typing::Thinking {
                title,
                description,
                visibility,
                custom_id,
            } => {
                let mut payload = json!({
                    "chat_id": chat_id,
                    "thread_id": thread_id,
                    "author_id": me,
                    "sent_at": rfc3339(now_us()),
                });
                for (k, v) in [
                    ("title", title),
                    ("description", description),
                    ("custom_id", custom_id),
                ] {
                    if let Some(v) = v {
                        payload[k] = v.into();
                    }
                }
                Outgoing::new(
                    "incoming_thinking_indicator",
                    payload,
                    others(visibility),
                    None,
                )
            }
            Typing::Indicator {
                is_typing,
                visibility,
            } => {
                let to = others(visibility);
                Outgoing::new(
                    "incoming_typing_indicator",
                    IncomingTypingIndicator {
                        chat_id: chat_id.to_owned(),
                        thread_id,
                        typing_indicator: TypingIndicator {
                            author_id: me,
                            visibility,
                            timestamp: now_s,
                            is_typing,
                        },
                    },
                    to,
                    None,
                )
            }
            Typing::SneakPeek { text } => Outgoing::new(
                "incoming_sneak_peek",
                IncomingSneakPeek {
                    chat_id: chat_id.to_owned(),
                    thread_id,
                    sneak_peek: SneakPeek {
                        author_id: me,
                        text,
                        timestamp: now_s,
                    },
                },
                recipients(&state, chat, Audience::Members { customer: false }),
                None,
            ),
        };
        submit(&engine.inner.store, Vec::new(), vec![push])?
    };
    pending.wait().await?;
    Ok(Reply::ok(json!({})))
}

/// What a typing request carries.
pub(crate) enum Typing {
    Indicator {
        is_typing: bool,
        visibility: Visibility,
    },
    SneakPeek {
        text: String,
    },
    /// v3.6 `send_event_preview`: a message not stored, for the customer.
    Preview {
        event: Box<Event>,
    },
    /// v3.6 `send_thinking_indicator` (agents and bots).
    Thinking {
        title: Option<String>,
        description: Option<String>,
        visibility: Visibility,
        custom_id: Option<String>,
    },
}

/// `multicast`.
pub(crate) async fn multicast(
    engine: &Engine,
    caller: &ChatCaller,
    req: MulticastRequest,
) -> Result<Reply, ErrorBody> {
    let me = agent_of(caller).to_owned();
    let agents = req.recipients.agents.clone().unwrap_or_default();
    if agents.all != Some(true) && agents.ids.is_none() && agents.groups.is_none() {
        return Err(validation(
            "`recipients.agents` needs `all`, `ids` or `groups`",
        ));
    }
    let pending = {
        let mut state = caller.org.lock();
        let to: crate::push::Recipients = if agents.all == Some(true) {
            state.all_sessions().into()
        } else {
            // One pass over the agents, skipping at once those without a
            // session (in a large organization most are offline): `perf` on
            // the fanout scenario showed a sorted set of every agent id and
            // a map lookup per agent taking a sixth of the server's CPU.
            let ids: HashSet<&str> = agents.ids.iter().flatten().map(String::as_str).collect();
            state
                .agents
                .iter()
                .filter(|(_, a)| !a.sessions.is_empty())
                .filter(|(id, a)| {
                    ids.contains(id.as_str())
                        || agents
                            .groups
                            .as_ref()
                            .is_some_and(|gs| gs.iter().any(|g| a.agent.in_group(*g)))
                })
                .flat_map(|(_, a)| a.sessions.iter().map(|s| s.conn.clone()))
                .collect::<Vec<_>>()
                .into()
        };
        let push = Outgoing::new(
            "incoming_multicast",
            IncomingMulticast {
                author_id: Some(me),
                content: req.content,
                kind: req.kind,
            },
            to,
            None,
        );
        submit(&engine.inner.store, Vec::new(), vec![push])?
    };
    pending.wait().await?;
    Ok(Reply::ok(json!({})))
}

/// `list_agents_for_transfer`.
pub(crate) async fn list_agents_for_transfer(
    engine: &Engine,
    caller: &ChatCaller,
    req: ChatRef,
) -> Result<Reply, ErrorBody> {
    let (pending, mut list) = {
        let state = caller.org.lock();
        let chat = readable(&state, caller, &req.chat_id)?;
        let list: Vec<AgentForTransfer> = state
            .agents
            .values()
            .filter(|a| a.effective() != RoutingStatus::Offline)
            .filter(|a| has_group_access(a, &chat.access))
            .filter(|a| !chat.user(&a.agent.id.0).is_some_and(|u| u.present))
            .map(|a| AgentForTransfer {
                agent_id: a.agent.id.0.clone(),
                total_active_chats: a
                    .active_chats
                    .iter()
                    .filter(|c| state.chats.get(*c).is_some_and(|c| c.customer_id.is_some()))
                    .count() as u32,
            })
            .collect();
        (submit(&engine.inner.store, Vec::new(), Vec::new())?, list)
    };
    pending.wait().await?;
    list.sort_by(|a, b| {
        a.total_active_chats
            .cmp(&b.total_active_chats)
            .then(a.agent_id.cmp(&b.agent_id))
    });
    Ok(Reply::ok(serde_json::to_value(list).expect("serializes")))
}

/// `send_rich_message_postback` (agents and customers).
pub(crate) async fn rich_message_postback(
    engine: &Engine,
    caller: &ChatCaller,
    req: RichMessagePostbackRequest,
) -> Result<Reply, ErrorBody> {
    let org_id = caller.org.org.id.clone();
    let reservation = reserve(&engine.inner.store)?;
    let pending = {
        let mut guard = caller.org.lock();
        let state = &mut *guard;
        let chat = readable(state, caller, &req.chat_id)?;
        let thread = chat
            .active_thread()
            .filter(|t| t.id == req.thread_id)
            .ok_or_else(|| {
                err(
                    ErrorType::ChatInactive,
                    format!(
                        "thread `{}` is not the active thread of chat `{}`",
                        req.thread_id, req.chat_id
                    ),
                )
            })?;
        let thread_id = thread.id.clone();
        let me = caller.actor.id().to_owned();
        let chat = state.chats.get_mut(&req.chat_id).expect("checked");
        let event = chat
            .events
            .iter_mut()
            .find(|e| e.common().id.as_deref() == Some(req.event_id.as_str()))
            .ok_or_else(|| not_found("event", &req.event_id))?;
        let Event::RichMessage { elements, .. } = event else {
            return Err(validation(format!(
                "event `{}` is not a rich message",
                req.event_id
            )));
        };
        let mut found = false;
        for b in elements.iter_mut().flat_map(|el| el.buttons.iter_mut()) {
            if b.postback_id.as_deref() == Some(req.postback.id.as_str()) {
                found = true;
                b.user_ids.retain(|u| *u != me);
                if req.postback.toggled {
                    b.user_ids.push(me.clone());
                }
            }
        }
        if !found {
            return Err(not_found("postback", &req.postback.id));
        }
        let event = event.clone();
        let op = Op::UpdateEvent {
            org: org_id,
            chat_id: req.chat_id.clone(),
            event_id: req.event_id.clone(),
            body: serde_json::to_string(&event).expect("serializes"),
        };
        let chat = &state.chats[&req.chat_id];
        let to = recipients(state, chat, Audience::Members { customer: true });
        let pushes = vec![
            Outgoing::new(
                "incoming_rich_message_postback",
                IncomingRichMessagePostback {
                    user_id: me,
                    chat_id: req.chat_id.clone(),
                    thread_id: thread_id.clone(),
                    event_id: req.event_id.clone(),
                    postback: req.postback,
                },
                to.clone(),
                caller.cause.clone(),
            ),
            Outgoing::new(
                "event_updated",
                EventUpdated {
                    chat_id: req.chat_id.clone(),
                    thread_id,
                    event,
                },
                to,
                None,
            ),
        ];
        commit(reservation, vec![op], pushes)
    };
    pending.wait().await?;
    Ok(Reply::ok(json!({})))
}

/// `list_threads` (first page; `page_id` arrives with the pagination work).
pub(crate) async fn list_threads(
    engine: &Engine,
    caller: &ChatCaller,
    req: ListThreadsRequest,
) -> Result<Reply, ErrorBody> {
    // The chat is part of what a page id freezes.
    let ids = (
        caller.org.org.id.0.as_str(),
        caller.actor.id(),
        "list_threads",
    );
    let key = &engine.inner.page_key;
    let list = crate::paging::ListRequest {
        page_id: req.page_id.as_deref(),
        sort_order: req.sort_order.as_deref(),
        limit: req.limit,
        filters: Some(json!({ "chat_id": req.chat_id })),
        filters_name: Some("`chat_id`"),
    };
    let paging = crate::paging::Paging::from_request(key, ids, list, (3, 100), now_us())?;
    let for_customer = caller.actor.is_customer();
    // Older threads are in the store only: read them (outside the lock)
    // when the chat has any, and again should more leave memory meanwhile.
    let mut stored: Vec<ThreadState> = Vec::new();
    loop {
        let older = {
            let state = caller.org.lock();
            readable(&state, caller, &req.chat_id)?.older
        };
        if older <= stored.len() {
            break;
        }
        stored = load_chat_threads(&engine.inner.store, &caller.org.org.id.0, &req.chat_id).await?;
        if stored.len() < older {
            return Err(internal("the store has fewer threads than the chat"));
        }
    }
    let (page, total, next_page_id, previous_page_id) = {
        let state = caller.org.lock();
        let chat = readable(&state, caller, &req.chat_id)?;
        let all = chat.all_threads(&stored);
        let keyed = all
            .iter()
            .enumerate()
            .map(|(i, t)| ((t.created_at_us, t.id.clone()), t.created_at_us, i))
            .collect();
        let (idx, total, next, prev) = paging.page(key, ids, keyed);
        // A snapshot of the page's threads: the answer is built from it.
        let page: Vec<ThreadState> = idx.into_iter().map(|i| all[i].clone()).collect();
        (page, total as u64, next, prev)
    };
    let thread_ids: Vec<String> = page.iter().map(|t| t.id.clone()).collect();
    // Older threads' events come from the store, outside the lock.
    let loaded = load_thread_events(&engine.inner.store, &caller.org.org.id.0, thread_ids).await?;
    let now = now_us();
    let (pending, threads) = {
        let state = caller.org.lock();
        let chat = readable(&state, caller, &req.chat_id)?;
        let all = chat.all_threads(&stored);
        let threads: Vec<_> = page
            .iter()
            .zip(loaded)
            .filter_map(|(snap, events)| {
                let index = all.iter().position(|t| t.id == snap.id)?;
                let at = Neighbors::within(&all, index);
                // The hot threads as they are now, their events from memory.
                let (t, events) = match chat.hot_thread(&snap.id) {
                    Some((_, hot)) if at.is_last && !chat.events_retired => {
                        (hot, chat.events.clone())
                    }
                    Some((_, hot)) => (hot, events),
                    None => (snap, events),
                };
                let mut w = wire_thread(&state, chat, t, at, events, for_customer, now);
                crate::chats::add_visit(&mut w, t, caller.version, for_customer);
                Some(w)
            })
            .collect();
        (
            submit(&engine.inner.store, Vec::new(), Vec::new())?,
            threads,
        )
    };
    pending.wait().await?;
    let body = ListThreadsResponse {
        threads,
        found_threads: total,
        next_page_id,
        previous_page_id,
    };
    Ok(Reply::ok(serde_json::to_value(body).expect("serializes")))
}

/// An agent went offline (last connection closed or logged out): its
/// active chats go to other agents of their groups, or to the queue.
pub(crate) fn reroute_offline_agent(
    state: &mut OrgState,
    org: &OrgId,
    agent: &str,
    now: i64,
) -> (Vec<Op>, Vec<Outgoing>) {
    let mut ops = Vec::new();
    let mut pushes = Vec::new();
    let chats: Vec<String> = state
        .agents
        .get(agent)
        .map(|a| a.active_chats.iter().cloned().collect())
        .unwrap_or_default();
    for chat_id in chats {
        let Some(thread_id) = state
            .chats
            .get(&chat_id)
            .and_then(|c| c.active_thread())
            .map(|t| t.id.clone())
        else {
            continue;
        };
        let audience_before = recipients(state, &state.chats[&chat_id], Audience::Everyone);
        ops.extend(close_agent(state, org, &chat_id, agent));
        let (assigned, rops) = route_chat_excluding(state, org, &chat_id, &[agent.to_owned()], now);
        ops.extend(rops);
        let chat = &state.chats[&chat_id];
        let audience = union(audience_before, recipients(state, chat, Audience::Everyone));
        pushes.push(Outgoing::new(
            "user_removed_from_chat",
            UserRemovedFromChat {
                chat_id: chat_id.clone(),
                thread_id: Some(thread_id.clone()),
                user_id: agent.to_owned(),
                reason: "other".into(),
                requester_id: None,
            },
            recipients(state, chat, Audience::Members { customer: true }),
            None,
        ));
        pushes.push(Outgoing::new(
            "chat_transferred",
            ChatTransferred {
                chat_id: chat_id.clone(),
                thread_id: Some(thread_id),
                requester_id: None,
                reason: if assigned.is_some() {
                    "assigned"
                } else {
                    "unassigned"
                }
                .into(),
                transferred_to: TransferredTo {
                    group_ids: chat.access.clone(),
                    agent_ids: assigned.iter().cloned().collect(),
                },
                queue: if assigned.is_none() {
                    queue_of(state, chat, now)
                } else {
                    None
                },
            },
            audience,
            None,
        ));
        if let Some(new) = &assigned {
            let from = json!({"agent_ids": [agent]});
            pushes.extend(incoming_chat_to_agent(state, chat, new, None, from, now));
        }
    }
    if !pushes.is_empty() {
        pushes.extend(crate::chats::queue_pushes(state, now));
    }
    (ops, pushes)
}

/// Most tags one thread can carry.
pub(crate) const MAX_TAGS_PER_THREAD: usize = 50;

/// `tag_thread` (`add`) and `untag_thread`. Any thread of a readable chat,
/// active or not. Adding a tag the thread has, or removing one it lacks,
/// succeeds without a write or a push, so retries are harmless.
pub(crate) async fn tag_thread(
    engine: &Engine,
    caller: &ChatCaller,
    req: ThreadTag,
    add: bool,
) -> Result<Reply, ErrorBody> {
    let tag = req.tag.trim();
    if tag.is_empty() {
        return Err(validation("`tag` must not be empty"));
    }
    if tag.chars().count() > MAX_TAG_CHARS {
        return Err(validation(format!(
            "`tag` is longer than {MAX_TAG_CHARS} characters"
        )));
    }
    let tag = tag.to_owned();
    let org_id = caller.org.org.id.clone();
    // A thread that is no longer hot is read from the store and written
    // back, one such edit at a time.
    let mut cold: Option<(tokio::sync::MutexGuard<'_, ()>, Vec<ThreadState>)> = None;
    loop {
        let reservation = reserve(&engine.inner.store)?;
        let step = 'locked: {
            let mut guard = caller.org.lock();
            let state = &mut *guard;
            readable(state, caller, &req.chat_id)?;
            let chat = &state.chats[&req.chat_id];
            let mut cold_copy: Option<ThreadState> = None;
            if chat.hot_thread(&req.thread_id).is_none() {
                match &cold {
                    None => break 'locked None,
                    Some((_, stored)) => {
                        cold_copy = Some(
                            chat.all_threads(stored)
                                .into_iter()
                                .find(|t| t.id == req.thread_id)
                                .cloned()
                                .ok_or_else(|| not_found("thread", &req.thread_id))?,
                        );
                    }
                }
            }
            let tags = match &cold_copy {
                Some(t) => &t.tags,
                None => &chat.hot_thread(&req.thread_id).expect("hot").1.tags,
            };
            if tags.contains(&tag) == add {
                return Ok(Reply::ok(json!({})));
            }
            if add {
                crate::tags::check_applicable(state, &tag, &chat.access)?;
                if tags.len() >= MAX_TAGS_PER_THREAD {
                    return Err(validation(format!(
                        "a thread carries at most {MAX_TAGS_PER_THREAD} tags"
                    )));
                }
            }
            let chat = state.chats.get_mut(&req.chat_id).expect("checked");
            let thread: &mut ThreadState = match cold_copy.as_mut() {
                Some(t) => t,
                None => chat
                    .threads
                    .iter_mut()
                    .find(|t| t.id == req.thread_id)
                    .expect("hot"),
            };
            if add {
                thread.tags.push(tag.clone());
            } else {
                thread.tags.retain(|t| *t != tag);
            }
            let op = Op::SetThreadTags {
                org: org_id.clone(),
                thread_id: req.thread_id.clone(),
                tags: serde_json::to_string(&thread.tags).expect("tags serialize"),
            };
            let chat = &state.chats[&req.chat_id];
            let push = Outgoing::new(
                if add {
                    "thread_tagged"
                } else {
                    "thread_untagged"
                },
                ThreadTag {
                    chat_id: req.chat_id.clone(),
                    thread_id: req.thread_id.clone(),
                    tag: tag.clone(),
                },
                recipients(state, chat, Audience::Members { customer: false }),
                caller.cause.clone(),
            );
            Some(commit(reservation, vec![op], vec![push]))
        };
        match step {
            Some(pending) => {
                pending.wait().await?;
                // The cold edit's lock is released after the commit.
                drop(cold);
                return Ok(Reply::ok(json!({})));
            }
            None => {
                let lock = engine.inner.cold_edits.lock().await;
                let stored =
                    load_chat_threads(&engine.inner.store, &org_id.0, &req.chat_id).await?;
                cold = Some((lock, stored));
            }
        }
    }
}
