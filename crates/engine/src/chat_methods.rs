//! The chat methods: customer tokens, customer login, and `start_chat`,
//! `resume_chat`, `send_event`, `deactivate_chat`, `get_chat`, `list_chats`
//! for agents and customers, plus the customer's own `get_customer`,
//! `update_customer` and `list_group_statuses`.
//!
//! Every write follows one shape: reserve a place in the store queue, lock
//! the organization, check, change hot state, build ops and pushes, commit
//! with the reservation (still under the lock), unlock, await the commit.

use crate::Engine;
use crate::auth::{authenticate, hash_secret, now_secs};
use crate::chats::{
    Audience, ChatState, ChatUser, CustomerState, Neighbors, Routed, ThreadState, UserKind,
    append_event, can_read, close_thread, drain_queue, incoming_chat_pushes, load_chat_threads,
    load_thread_events, now_us, queue_pushes, random_id, recipients, route_chat, summary,
    validate_event, visible_to_customer, wire_chat, wire_thread,
};
use crate::connection::{Connection, LoginState, Side, Subscriptions};
use crate::dispatch::{Reply, parse};
use crate::error::{err, internal, validation};
use crate::push::{Cause, Outgoing, commit, reserve};
use crate::state::{Org, OrgState, TokenEntry};
use chatgate_domain::{OrgId, RoutingStatus};
use chatgate_protocol::chats::*;
use chatgate_protocol::data::Visibility;
use chatgate_protocol::{ErrorBody, ErrorType};
use chatgate_store::{Op, TokenKind};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most chats listed at once.
const MAX_LIST_LIMIT: u32 = 100;

/// The acting principal of a chat request.
pub(crate) enum Actor {
    Agent(String),
    Customer(String),
}

impl Actor {
    pub(crate) fn id(&self) -> &str {
        match self {
            Actor::Agent(id) | Actor::Customer(id) => id,
        }
    }
    pub(crate) fn is_customer(&self) -> bool {
        matches!(self, Actor::Customer(_))
    }
}

/// An authenticated chat request.
pub(crate) struct ChatCaller {
    pub org: Arc<Org>,
    pub actor: Actor,
    pub cause: Option<Cause>,
    /// The request's version (payload formats and filters differ).
    pub version: chatgate_protocol::Version,
    /// An agent's effective scopes (`None` for customers).
    pub scopes: Option<chatgate_domain::scopes::ScopeSet>,
}

impl ChatCaller {
    /// Whether the caller reads every chat (`chats--all`) or only those of
    /// its groups.
    pub(crate) fn reads_all_chats(&self) -> bool {
        self.scopes.as_ref().is_some_and(|s| s.has("chats--all:ro"))
    }
}

pub(crate) fn not_found(what: &str, id: &str) -> ErrorBody {
    err(ErrorType::NotFound, format!("{what} `{id}` not found"))
}

/// Looks up a chat the caller may read; chats of other organizations and
/// chats the caller has no access to look the same as missing ones, except
/// that an agent of the same organization without access gets
/// `missing_access`.
pub(crate) fn readable<'a>(
    state: &'a OrgState,
    caller: &ChatCaller,
    chat_id: &str,
) -> Result<&'a ChatState, ErrorBody> {
    let chat = state
        .chats
        .get(chat_id)
        .ok_or_else(|| not_found("chat", chat_id))?;
    match &caller.actor {
        Actor::Customer(id) => {
            if chat.customer_id.as_deref() != Some(id.as_str()) {
                return Err(not_found("chat", chat_id));
            }
        }
        Actor::Agent(id) => {
            let agent = &state.agents[id];
            if !can_read(agent, chat, caller.reads_all_chats()) {
                return Err(err(
                    ErrorType::MissingAccess,
                    format!("no access to chat `{chat_id}`"),
                ));
            }
        }
    }
    Ok(chat)
}

/// Customer tokens: `POST /customer/token`.
pub(crate) async fn issue_customer_token(
    engine: &Engine,
    req: CustomerTokenRequest,
    origin: Option<&str>,
) -> Result<CustomerTokenResponse, ErrorBody> {
    let org = engine.org(&req.organization_id).ok_or_else(|| {
        err(
            ErrorType::NotFound,
            format!("organization `{}` not found", req.organization_id),
        )
    })?;
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let hash = hash_secret(&token);
    let ttl = engine.inner.config.customer_token_ttl;
    let expires_at = now_secs() + ttl as i64;
    let reservation = reserve(&engine.inner.store)?;
    let (pending, customer_id) = {
        let mut state = org.lock();
        // Browser requests must come from a listed origin (when the
        // organization lists any); server-side requests carry no Origin.
        if let Some(origin) = origin
            && !state.allowed_origins.is_empty()
            && !state.allowed_origins.iter().any(|o| o == origin)
        {
            return Err(err(
                ErrorType::Authorization,
                format!("origin `{origin}` may not request customer tokens for this organization"),
            ));
        }
        let mut ops = Vec::new();
        let customer_id = match &req.customer_id {
            Some(id) => {
                let c = state
                    .customers
                    .get(id)
                    .ok_or_else(|| not_found("customer", id))?;
                if crate::customers::is_banned(c) {
                    return Err(crate::customers::banned_error());
                }
                id.clone()
            }
            None => {
                let c = CustomerState {
                    id: uuid::Uuid::new_v4().to_string(),
                    name: None,
                    email: None,
                    avatar: None,
                    session_fields: Vec::new(),
                    created_at_us: now_us(),
                    banned_until_us: None,
                    sessions: Vec::new(),
                    chat_ids: Vec::new(),
                };
                ops.push(Op::UpsertCustomer(c.record(&org.org.id)));
                let id = c.id.clone();
                state.customers.insert(id.clone(), c);
                id
            }
        };
        ops.push(Op::PutToken {
            hash,
            org: org.org.id.clone(),
            agent: customer_id.clone(),
            kind: TokenKind::Customer,
            created_at: now_secs(),
            expires_at: Some(expires_at),
        });
        (commit(reservation, ops, Vec::new()), customer_id)
    };
    pending.wait().await?;
    engine.inner.tokens.insert(
        hash,
        TokenEntry {
            scopes: None,
            org: org.org.id.0.clone(),
            agent: customer_id.clone(),
            kind: TokenKind::Customer,
            expires_at: Some(expires_at),
        },
    );
    Ok(CustomerTokenResponse {
        access_token: token,
        token_type: "Bearer".into(),
        expires_in: ttl,
        entity_id: customer_id,
        organization_id: org.org.id.0.clone(),
    })
}

fn online_groups(state: &OrgState) -> Vec<u32> {
    state
        .groups
        .keys()
        .copied()
        .filter(|g| {
            state.agents.values().any(|a| {
                (*g == 0 || a.agent.in_group(*g)) && a.effective() == RoutingStatus::AcceptingChats
            })
        })
        .collect()
}

/// `customer_groups` of the dynamic configuration: the group the customer is
/// monitored in (the login's `group_id`, default 0).
fn monitoring_group(group: u32) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("monitoring".into(), json!({ "id": group }));
    m
}

pub(crate) fn apply_fields(c: &mut CustomerState, f: &CustomerFields) -> Result<(), ErrorBody> {
    if let Some(fields) = &f.session_fields
        && fields.len() > 100
    {
        return Err(validation("`session_fields` may hold at most 100 entries"));
    }
    if let Some(n) = &f.name {
        c.name = Some(n.clone());
    }
    if let Some(e) = &f.email {
        c.email = Some(e.clone());
    }
    if let Some(a) = &f.avatar {
        c.avatar = Some(a.clone());
    }
    if let Some(s) = &f.session_fields {
        c.session_fields = s.clone();
    }
    Ok(())
}

/// Customer `login` (RTM).
pub(crate) async fn customer_login(
    engine: &Engine,
    conn: &Arc<Connection>,
    payload: Value,
) -> Result<Reply, ErrorBody> {
    if conn.is_logged_in() {
        return Err(validation("this connection is already logged in"));
    }
    let req: CustomerLoginRequest = parse(payload)?;
    let subs = match &req.pushes {
        Some(p) => Subscriptions::parse(Side::Customer, conn.version(), p).map_err(validation)?,
        None => Subscriptions::default_for(Side::Customer, conn.version()),
    };
    let entry = authenticate(&engine.inner, &req.token, Side::Customer)?;
    let org = engine
        .org(&entry.org)
        .ok_or_else(|| err(ErrorType::Authentication, "Invalid access token"))?;
    let reservation = reserve(&engine.inner.store)?;
    let (pending, response) = {
        let mut state = org.lock();
        let online_groups_ids = online_groups(&state);
        let state = &mut *state;
        let customer = state
            .customers
            .get_mut(&entry.agent)
            .ok_or_else(|| err(ErrorType::Authentication, "Invalid access token"))?;
        if crate::customers::is_banned(customer) {
            return Err(crate::customers::banned_error());
        }
        let mut ops = Vec::new();
        if let Some(fields) = &req.customer {
            apply_fields(customer, fields)?;
            ops.push(Op::UpsertCustomer(customer.record(&org.org.id)));
        }
        if conn
            .login
            .set(LoginState {
                org: entry.org.clone(),
                agent: entry.agent.clone(),
                subs,
                scopes: Default::default(),
            })
            .is_err()
        {
            return Err(validation("this connection is already logged in"));
        }
        let returning = customer.sessions.is_empty();
        customer.sessions.push(conn.clone());
        let customer = &state.customers[&entry.agent];
        // A customer arriving on the site: `incoming_customer` to those who
        // monitor it.
        let mut pushes = Vec::new();
        if returning {
            pushes.push(Outgoing::new(
                "incoming_customer",
                customer.to_wire(state),
                crate::customers::customer_audience(state, &entry.agent),
                None,
            ));
        }
        let chats: Vec<CustomerChatRef> = customer
            .chat_ids
            .iter()
            .map(|id| CustomerChatRef {
                chat_id: id.clone(),
                has_active_thread: state
                    .chats
                    .get(id)
                    .is_some_and(|c| c.active_thread().is_some()),
                has_unread_events: false,
            })
            .collect();
        let has_active_thread = customer.chat_ids.iter().any(|id| {
            state
                .chats
                .get(id)
                .is_some_and(|c| c.active_thread().is_some())
        });
        let response = CustomerLoginResponse {
            customer: customer.to_wire(state),
            has_active_thread,
            chats,
            dynamic_config: DynamicConfig {
                online_groups_ids,
                customer_groups: monitoring_group(req.group_id.unwrap_or(0)),
            },
        };
        (commit(reservation, ops, pushes), response)
    };
    pending.wait().await?;
    Ok(Reply::ok(
        serde_json::to_value(response).expect("serializes"),
    ))
}

/// Forgets a closed customer connection.
pub(crate) fn customer_session_ended(engine: &Engine, conn: &Arc<Connection>) {
    let Some(login) = conn.login_state() else {
        return;
    };
    let Some(org) = engine.org(&login.org) else {
        return;
    };
    let mut state = org.lock();
    let Some(c) = state.customers.get_mut(&login.agent) else {
        return;
    };
    c.sessions.retain(|s| s.id() != conn.id());
    if !c.sessions.is_empty() {
        return;
    }
    // The customer left the site: those who monitor it hear so (after
    // everything already submitted, like any push).
    let push = Outgoing::new(
        "customer_left",
        json!({ "id": login.agent, "left_at": crate::chats::rfc3339(now_us()) }),
        crate::customers::customer_audience(&state, &login.agent),
        None,
    );
    if let Err(e) = crate::push::submit(&engine.inner.store, Vec::new(), vec![push]) {
        tracing::debug!(error = ?e, "customer_left not sent");
    }
}

/// Validates `users` of `start_chat` and returns the chat users to add
/// besides the requester.
fn initial_users(
    state: &OrgState,
    caller: &ChatCaller,
    users: &[UserRef],
) -> Result<Vec<ChatUser>, ErrorBody> {
    let mut out: Vec<ChatUser> = Vec::new();
    let mut customers = 0;
    let mut agents = 0;
    for u in users {
        if u.id == caller.actor.id() || out.iter().any(|o| o.id == u.id) {
            continue;
        }
        match u.kind.as_str() {
            "customer" => {
                if caller.actor.is_customer() {
                    return Err(validation(
                        "customers may only name themselves in `chat.users`",
                    ));
                }
                customers += 1;
                if !state.customers.contains_key(&u.id) {
                    return Err(not_found("customer", &u.id));
                }
                out.push(ChatUser {
                    id: u.id.clone(),
                    kind: UserKind::Customer,
                    present: true,
                    visibility: Visibility::All,
                    seen_up_to_us: None,
                });
            }
            "agent" => {
                if caller.actor.is_customer() {
                    return Err(validation(
                        "customers may only name themselves in `chat.users`",
                    ));
                }
                agents += 1;
                if !state.agents.contains_key(&u.id) {
                    return Err(not_found("agent", &u.id));
                }
                out.push(ChatUser {
                    id: u.id.clone(),
                    kind: UserKind::Agent,
                    present: true,
                    visibility: Visibility::All,
                    seen_up_to_us: None,
                });
            }
            other => {
                return Err(validation(format!(
                    "`chat.users[].type` must be agent or customer, not `{other}`"
                )));
            }
        }
    }
    if customers > 1 {
        return Err(validation("a chat has at most one customer"));
    }
    if agents > 4 {
        return Err(validation("`chat.users` may name at most 4 other agents"));
    }
    Ok(out)
}

/// `start_chat` and `resume_chat`, for agents and customers.
pub(crate) async fn start_chat(
    engine: &Engine,
    caller: &ChatCaller,
    req: StartChatRequest,
    resume: bool,
) -> Result<Reply, ErrorBody> {
    let chat_req = req.chat.unwrap_or_default();
    let active = req.active.unwrap_or(true);
    let continuous = req.continuous.unwrap_or(false);
    let initial = chat_req.thread.clone().unwrap_or_default();
    let mut seen_custom = std::collections::HashSet::new();
    for e in &initial.events {
        validate_event(e, caller.actor.is_customer()).map_err(validation)?;
        if let Some(c) = &e.common().custom_id
            && !seen_custom.insert((e.common().author_id.clone(), c.clone()))
        {
            return Err(validation(format!(
                "`custom_id` `{c}` is used twice in the initial events"
            )));
        }
        if let Some(a) = &e.common().author_id
            && a != caller.actor.id()
            && !chat_req.users.iter().any(|u| &u.id == a)
        {
            return Err(validation(format!(
                "initial event author `{a}` is not a user of the chat"
            )));
        }
    }
    let org_id: OrgId = caller.org.org.id.clone();
    // A resumed chat's initial events may not repeat a custom id its author
    // used earlier in the chat (the store's unique index would refuse the
    // whole start after the hot change). The chat's older events are in the
    // store: ask it (after a barrier), once the caller may read the chat.
    let resumed_id = chat_req
        .id
        .clone()
        .filter(|_| resume && !seen_custom.is_empty());
    if let Some(chat_id) = resumed_id {
        readable(&caller.org.lock(), caller, &chat_id)?;
        crate::push::barrier(&engine.inner.store).await?;
        for (author, custom) in &seen_custom {
            let author = author
                .clone()
                .unwrap_or_else(|| caller.actor.id().to_owned());
            let store = engine.inner.store.clone();
            let (org, chat, c) = (org_id.0.clone(), chat_id.clone(), custom.clone());
            let (found, _) =
                tokio::task::spawn_blocking(move || store.custom_event(&org, &chat, &author, &c))
                    .await
                    .map_err(internal)?
                    .map_err(internal)?;
            if found.is_some() {
                return Err(validation(format!(
                    "`custom_id` `{custom}` was already used by its author in chat `{chat_id}`"
                )));
            }
        }
    }
    let now = now_us();
    let reservation = reserve(&engine.inner.store)?;
    let (pending, response) = {
        let mut guard = caller.org.lock();
        let state = &mut *guard;
        {
            use crate::properties::{Location, check_write};
            let by_customer = caller.actor.is_customer();
            if let Some(p) = &chat_req.properties {
                check_write(state, Location::Chat, by_customer, p)?;
            }
            if let Some(p) = &initial.properties {
                check_write(state, Location::Thread, by_customer, p)?;
            }
            for e in &initial.events {
                if let Some(p) = &e.common().properties {
                    check_write(state, Location::Event, by_customer, p)?;
                }
            }
        }
        let access: Option<Vec<u32>> = chat_req.access.as_ref().map(|a| a.group_ids.clone());
        if let Some(groups) = &access {
            if groups.is_empty() || groups.len() > 200 {
                return Err(validation(
                    "`chat.access.group_ids` must name 1 to 200 groups",
                ));
            }
            if let Some(g) = groups.iter().find(|g| !state.groups.contains_key(g)) {
                return Err(err(
                    ErrorType::GroupNotFound,
                    format!("group {g} not found"),
                ));
            }
        }
        let mut ops = Vec::new();
        let chat_id = if resume {
            let id = chat_req
                .id
                .clone()
                .ok_or_else(|| validation("`chat.id` is required"))?;
            let chat = readable(state, caller, &id)?;
            if chat.active_thread().is_some() {
                return Err(validation(format!(
                    "chat `{id}` already has an active thread"
                )));
            }
            // Custom ids of the chat's hot events (the store was asked for
            // the others above).
            for (author, custom) in &seen_custom {
                let author = author
                    .clone()
                    .unwrap_or_else(|| caller.actor.id().to_owned());
                if chat.custom_ids.contains_key(&(author, custom.clone())) {
                    return Err(validation(format!(
                        "`custom_id` `{custom}` was already used by its author in chat `{id}`"
                    )));
                }
            }
            id
        } else {
            let extra = initial_users(state, caller, &chat_req.users)?;
            let id = random_id(10);
            let mut users = Vec::new();
            let customer_id = match &caller.actor {
                Actor::Customer(c) => {
                    users.push(ChatUser {
                        id: c.clone(),
                        kind: UserKind::Customer,
                        present: true,
                        visibility: Visibility::All,
                        seen_up_to_us: None,
                    });
                    Some(c.clone())
                }
                Actor::Agent(a) => {
                    users.push(ChatUser {
                        id: a.clone(),
                        kind: UserKind::Agent,
                        present: true,
                        visibility: Visibility::All,
                        seen_up_to_us: Some(now),
                    });
                    extra
                        .iter()
                        .find(|u| u.kind == UserKind::Customer)
                        .map(|u| u.id.clone())
                }
            };
            users.extend(extra);
            ops.push(Op::CreateChat {
                org: org_id.clone(),
                chat_id: id.clone(),
                customer_id: customer_id.clone(),
                created_at_us: now,
            });
            let last_agent = match &caller.actor {
                Actor::Agent(a) => Some(a.clone()),
                Actor::Customer(_) => None,
            };
            state.chats.insert(
                id.clone(),
                ChatState {
                    id: id.clone(),
                    customer_id: customer_id.clone(),
                    access: vec![0],
                    properties: Default::default(),
                    created_at_us: now,
                    users,
                    threads: Vec::new(),
                    older: 0,
                    older_last_id: None,
                    custom_floor_seq: 0,
                    events: Vec::new(),
                    events_retired: false,
                    event_count: 0,
                    last_customer_event_us: None,
                    last_agent_event_us: None,
                    last_seq: 0,
                    followers: Default::default(),
                    last_agent,
                    custom_ids: Default::default(),
                },
            );
            if let Some(c) = customer_id
                .as_ref()
                .and_then(|c| state.customers.get_mut(c))
            {
                c.chat_ids.push(id.clone());
            }
            id
        };
        // Everything below changes the hot state before anything is
        // submitted: on any refusal the chat goes back to what it was.
        let before = resume.then(|| state.chats[&chat_id].clone());
        let started = (|| -> Result<_, ErrorBody> {
            let visit = match &caller.actor {
                Actor::Customer(id) => customer_visit(state, id),
                Actor::Agent(_) => None,
            };
            let chat = state.chats.get_mut(&chat_id).expect("chat exists");
            if let Some(groups) = access {
                chat.access = groups;
            }
            if let Some(p) = chat_req.properties {
                chat.properties = p;
            }
            ops.push(Op::UpdateChat {
                org: org_id.clone(),
                chat_id: chat_id.clone(),
                access: serde_json::to_string(&chat.access).expect("serializes"),
                properties: serde_json::to_string(&chat.properties).expect("serializes"),
            });
            let thread = ThreadState {
                id: random_id(10),
                active,
                created_at_us: now,
                closed_at_us: (!active).then_some(now),
                queued_at_us: None,
                properties: initial.properties.unwrap_or_default(),
                tags: Vec::new(),
                customer_visit: visit,
            };
            let thread_id = thread.id.clone();
            ops.push(Op::CreateThread {
                org: org_id.clone(),
                chat_id: chat_id.clone(),
                thread: thread.record(),
            });
            chat.threads.push(thread);
            chat.reset_events();
            // The requester (and, on resume, the customer) is present again.
            let me = caller.actor.id().to_owned();
            if let Some(u) = chat.user_mut(&me) {
                u.present = true;
                // The marker only moves forward.
                u.seen_up_to_us = Some(u.seen_up_to_us.map_or(now, |old| old.max(now)));
            }
            for u in &chat.users {
                ops.push(Op::SetChatUser {
                    org: org_id.clone(),
                    chat_id: chat_id.clone(),
                    user: u.record(),
                });
            }
            let mut event_ids = Vec::new();
            for mut e in initial.events {
                ops.extend(crate::uploads::adopt_in(
                    &mut state.uploads,
                    &org_id.0,
                    &mut e,
                )?);
                let chat = state.chats.get_mut(&chat_id).expect("chat exists");
                let author = e.common().author_id.clone().unwrap_or_else(|| me.clone());
                let (e, op) = append_event(&org_id, chat, e, Some(&author), now);
                event_ids.push(e.common().id.clone().expect("assigned"));
                ops.push(op);
            }
            let chat = state.chats.get_mut(&chat_id).expect("chat exists");
            if let Actor::Agent(a) = &caller.actor
                && active
            {
                let present: Vec<String> = chat.present_agents().map(str::to_owned).collect();
                for agent in present {
                    if let Some(st) = state.agents.get_mut(&agent) {
                        st.active_chats.insert(chat_id.clone());
                        if &agent == a {
                            st.last_assigned_us = now;
                        }
                    }
                }
            }
            let mut queued = false;
            if caller.actor.is_customer() && active {
                let (routed, routing_ops) = route_chat(state, &org_id, &chat_id, continuous, now);
                match routed {
                    Routed::Offline => {
                        let group = state.chats[&chat_id].group();
                        return Err(err(
                            ErrorType::GroupOffline,
                            format!("no agent of group {group} is accepting chats"),
                        ));
                    }
                    Routed::Queued => queued = true,
                    Routed::Assigned => {}
                }
                ops.extend(routing_ops);
            }
            Ok((ops, queued, thread_id, event_ids))
        })();
        let (ops, queued, thread_id, event_ids) = match started {
            Ok(x) => x,
            Err(e) => {
                undo_start(state, &chat_id, before);
                return Err(e);
            }
        };
        // The start stands: the threads before the new one leave memory.
        state
            .chats
            .get_mut(&chat_id)
            .expect("chat exists")
            .retire_older();
        let chat = &state.chats[&chat_id];
        let mut pushes = incoming_chat_pushes(
            state,
            chat,
            Some(caller.actor.id()),
            caller.cause.clone(),
            now,
        );
        if queued {
            pushes.extend(queue_pushes(state, now));
        }
        let response = StartChatResponse {
            chat_id: (!resume).then_some(chat_id.clone()),
            thread_id,
            event_ids,
        };
        (commit(reservation, ops, pushes), response)
    };
    pending.wait().await?;
    Ok(Reply::ok(
        serde_json::to_value(response).expect("serializes"),
    ))
}

/// v3.6 `customer_visit` of a thread a customer starts: the address and
/// `User-Agent` of its live RTM connection (chatgate has no geolocation).
fn customer_visit(state: &OrgState, customer: &str) -> Option<Box<str>> {
    let conn = state.customers.get(customer)?.sessions.first()?;
    let mut visit = serde_json::Map::new();
    if let Some(ip) = conn.peer {
        visit.insert("ip".into(), json!(ip.to_string()));
    }
    if let Some(ua) = conn.user_agent() {
        visit.insert("user_agent".into(), json!(ua));
    }
    (!visit.is_empty()).then(|| Value::Object(visit).to_string().into_boxed_str())
}

/// Reverts an in-memory start or resume that was refused (before anything
/// was submitted): a resumed chat gets back its state from `before`, a new
/// one is forgotten.
fn undo_start(state: &mut OrgState, chat_id: &str, before: Option<ChatState>) {
    if let Some(before) = before {
        state.chats.insert(chat_id.to_owned(), before);
    } else if let Some(chat) = state.chats.remove(chat_id)
        && let Some(c) = chat
            .customer_id
            .as_ref()
            .and_then(|c| state.customers.get_mut(c))
    {
        c.chat_ids.retain(|c| c != chat_id);
    }
}

/// `send_event`.
pub(crate) async fn send_event(
    engine: &Engine,
    caller: &ChatCaller,
    req: SendEventRequest,
) -> Result<Reply, ErrorBody> {
    validate_event(&req.event, caller.actor.is_customer()).map_err(validation)?;
    let now = now_us();
    let org_id = caller.org.org.id.clone();
    let mut checked_up_to = 0;
    // Moved into the chat on the pass that appends it (the last pass).
    let mut pending_event = Some(req.event);
    let (pending, event_id) = loop {
        let reservation = reserve(&engine.inner.store)?;
        let outcome = 'locked: {
            let mut guard = caller.org.lock();
            let state = &mut *guard;
            readable(state, caller, &req.chat_id)?;
            let req_event = pending_event.as_ref().expect("taken only on the last pass");
            if let Some(p) = &req_event.common().properties {
                crate::properties::check_write(
                    state,
                    crate::properties::Location::Event,
                    caller.actor.is_customer(),
                    p,
                )?;
            }
            let chat = &state.chats[&req.chat_id];
            let me = caller.actor.id();
            let Some(user) = chat.user(me) else {
                return Err(err(
                    ErrorType::MissingAccess,
                    "the requester is not a user of this chat",
                ));
            };
            // A repeated custom_id from the same author is a retry: answer with
            // the original event, store and push nothing (after a barrier, so
            // the original is durable before we say so).
            if let Some(custom) = &req_event.common().custom_id
                && let Some(original) = chat.custom_ids.get(&(me.to_owned(), custom.clone()))
            {
                break 'locked Ok((
                    commit(reservation, Vec::new(), Vec::new()),
                    original.clone(),
                ));
            }
            // Events of retired threads are not in `custom_ids`: unless the
            // store was asked since they retired, ask it.
            if req_event.common().custom_id.is_some() && chat.custom_floor_seq > checked_up_to {
                break 'locked Err(chat.custom_floor_seq);
            }
            if user.visibility == Visibility::Agents
                && req_event.common().visibility == Visibility::All
            {
                return Err(validation(
                    "users added with visibility `agents` can only send events with visibility `agents`",
                ));
            }
            if chat.active_thread().is_none()
                && (req.attach_to_last_thread != Some(true) || chat.threads.is_empty())
            {
                return Err(err(
                    ErrorType::ChatInactive,
                    format!("chat `{}` has no active thread", req.chat_id),
                ));
            }
            let mut event = pending_event.take().expect("taken only on the last pass");
            let adopted = crate::uploads::adopt(state, &org_id.0, &mut event)?;
            let chat = state.chats.get_mut(&req.chat_id).expect("checked");
            let (event, op) = append_event(&org_id, chat, event, Some(me), now);
            // The author's `seen_up_to` moved with the event (`note_author`).
            let mut ops = vec![op];
            ops.extend(adopted);
            let chat = &state.chats[&req.chat_id];
            let thread_id = chat.threads.last().expect("a thread").id.clone();
            // A customer hears the event with only the properties it may read.
            let to_customer = visible_to_customer(&event);
            let split = to_customer && event.common().properties.is_some();
            let recipients = recipients(
                state,
                chat,
                Audience::Members {
                    customer: to_customer && !split,
                },
            );
            let event_id = event.common().id.clone().expect("assigned");
            let mut pushes = Vec::new();
            if split
                && let Some(c) = chat
                    .customer_id
                    .as_ref()
                    .and_then(|c| state.customers.get(c))
            {
                pushes.push(Outgoing::new(
                    "incoming_event",
                    IncomingEvent {
                        chat_id: req.chat_id.clone(),
                        thread_id: thread_id.clone(),
                        event: crate::properties::customer_event(state, &event),
                    },
                    c.sessions.clone(),
                    caller.cause.clone(),
                ));
            }
            pushes.insert(
                0,
                Outgoing::new(
                    "incoming_event",
                    IncomingEvent {
                        chat_id: req.chat_id.clone(),
                        thread_id,
                        event,
                    },
                    recipients,
                    caller.cause.clone(),
                ),
            );
            Ok((commit(reservation, ops, pushes), event_id))
        };
        match outcome {
            Ok(done) => break done,
            Err(floor) => {
                // After a barrier every retired event is committed: the
                // store's answer covers them all.
                crate::push::barrier(&engine.inner.store).await?;
                let custom = pending_event
                    .as_ref()
                    .and_then(|e| e.common().custom_id.clone())
                    .expect("checked");
                let store = engine.inner.store.clone();
                let (org, chat_id, author) = (
                    org_id.0.clone(),
                    req.chat_id.clone(),
                    caller.actor.id().to_owned(),
                );
                let (found, seq) = tokio::task::spawn_blocking(move || {
                    store.custom_event(&org, &chat_id, &author, &custom)
                })
                .await
                .map_err(internal)?
                .map_err(internal)?;
                if let Some(event_id) = found {
                    return Ok(Reply::ok(
                        serde_json::to_value(SendEventResponse { event_id }).expect("serializes"),
                    ));
                }
                checked_up_to = seq.max(floor);
            }
        }
    };
    pending.wait().await?;
    Ok(Reply::ok(
        serde_json::to_value(SendEventResponse { event_id }).expect("serializes"),
    ))
}

/// `deactivate_chat`.
pub(crate) async fn deactivate_chat(
    engine: &Engine,
    caller: &ChatCaller,
    req: DeactivateChatRequest,
) -> Result<Reply, ErrorBody> {
    let now = now_us();
    let org_id = caller.org.org.id.clone();
    let reservation = reserve(&engine.inner.store)?;
    let pending = {
        let mut guard = caller.org.lock();
        let state = &mut *guard;
        let chat = readable(state, caller, &req.id)?;
        let me = caller.actor.id().to_owned();
        let Some(thread) = chat.active_thread() else {
            return Err(err(
                ErrorType::ChatInactive,
                format!("chat `{}` has no active thread", req.id),
            ));
        };
        if !caller.actor.is_customer()
            && req.ignore_requester_presence != Some(true)
            && !chat.user(&me).is_some_and(|u| u.present)
        {
            return Err(err(
                ErrorType::MissingAccess,
                "the requester is not present in this chat (set `ignore_requester_presence`)",
            ));
        }
        let thread_id = thread.id.clone();
        // Everyone who saw the chat active hears it closed.
        let audience = recipients(state, chat, Audience::Everyone);
        let mut ops = close_thread(state, &org_id, &req.id, now);
        let mut pushes = vec![Outgoing::new(
            "chat_deactivated",
            ChatDeactivated {
                chat_id: req.id.clone(),
                thread_id,
                user_id: Some(me),
            },
            audience,
            caller.cause.clone(),
        )];
        let (more_ops, more_pushes) = drain_queue(state, &org_id, now);
        ops.extend(more_ops);
        pushes.extend(more_pushes);
        commit(reservation, ops, pushes)
    };
    pending.wait().await?;
    Ok(Reply::ok(json!({})))
}

/// `get_chat`.
pub(crate) async fn get_chat(
    engine: &Engine,
    caller: &ChatCaller,
    req: GetChatRequest,
) -> Result<Reply, ErrorBody> {
    let now = now_us();
    let for_customer = caller.actor.is_customer();
    // The last thread is hot; an older thread, its metadata and its events
    // are read from the store outside the lock (and read again should the
    // thread asked for have left memory in between).
    let mut older: Option<(Vec<ThreadState>, Vec<chatgate_protocol::data::Event>)> = None;
    // An inactive chat's last thread has its events in the store only:
    // (thread id, events) read outside the lock.
    let mut last_events: Option<(String, Vec<chatgate_protocol::data::Event>)> = None;
    let (pending, chat) = loop {
        let retired_last = {
            let state = caller.org.lock();
            let chat = readable(&state, caller, &req.chat_id)?;
            chat.threads
                .last()
                .filter(|_| chat.events_retired)
                .map(|t| t.id.clone())
        };
        if let Some(last) = retired_last
            && last_events.as_ref().is_none_or(|(id, _)| *id != last)
        {
            let org = &caller.org.org.id.0;
            let mut loaded =
                load_thread_events(&engine.inner.store, org, vec![last.clone()]).await?;
            last_events = Some((last, loaded.pop().unwrap_or_default()));
        }
        if let Some(thread_id) = req.thread_id.as_ref().filter(|_| older.is_none()) {
            let hot = {
                let state = caller.org.lock();
                let chat = readable(&state, caller, &req.chat_id)?;
                chat.hot_thread(thread_id).is_some()
            };
            if !hot {
                let org = &caller.org.org.id.0;
                let stored = load_chat_threads(&engine.inner.store, org, &req.chat_id).await?;
                let mut loaded =
                    load_thread_events(&engine.inner.store, org, vec![thread_id.clone()]).await?;
                older = Some((stored, loaded.pop().unwrap_or_default()));
            }
        }
        let state = caller.org.lock();
        let chat = readable(&state, caller, &req.chat_id)?;
        let viewer = (!for_customer).then(|| caller.actor.id());
        let last: &[chatgate_protocol::data::Event] = if chat.events_retired {
            match (&last_events, chat.threads.last()) {
                (Some((id, events)), Some(t)) if *id == t.id => events,
                // Retired since we looked: read them.
                _ => continue,
            }
        } else {
            &chat.events
        };
        let mut wire = wire_chat(&state, chat, last, for_customer, viewer, now);
        let mut shown = chat.threads.last();
        if let Some(t) = &req.thread_id {
            if let Some((index, hot)) = chat.hot_thread(t) {
                if index + 1 < chat.thread_count() {
                    wire.thread = Some(wire_thread(
                        &state,
                        chat,
                        hot,
                        chat.hot_neighbors(index),
                        chat.events.clone(),
                        for_customer,
                        now,
                    ));
                }
                shown = Some(hot);
            } else if let Some((stored, events)) = &older {
                let all = chat.all_threads(stored);
                let index = all
                    .iter()
                    .position(|x| &x.id == t)
                    .ok_or_else(|| not_found("thread", t))?;
                wire.thread = Some(wire_thread(
                    &state,
                    chat,
                    all[index],
                    Neighbors::within(&all, index),
                    events.clone(),
                    for_customer,
                    now,
                ));
                shown = Some(all[index]);
            } else {
                // It left memory since we looked: read it from the store.
                continue;
            }
        }
        if let (Some(w), Some(t)) = (wire.thread.as_mut(), shown) {
            crate::chats::add_visit(w, t, caller.version, for_customer);
        }
        break (
            crate::push::submit(&engine.inner.store, Vec::new(), Vec::new())?,
            wire,
        );
    };
    pending.wait().await?;
    Ok(Reply::ok(serde_json::to_value(chat).expect("serializes")))
}

/// `list_chats`, paged by [`crate::paging`]: chats sorted by their last
/// thread's creation, newest first unless `sort_order` is `asc`.
pub(crate) async fn list_chats(
    engine: &Engine,
    caller: &ChatCaller,
    req: ListChatsRequest,
) -> Result<Reply, ErrorBody> {
    let for_customer = caller.actor.is_customer();
    let max = if for_customer { 25 } else { MAX_LIST_LIMIT };
    let ids = (
        caller.org.org.id.0.as_str(),
        caller.actor.id(),
        "list_chats",
    );
    let key = &engine.inner.page_key;
    let list = crate::paging::ListRequest {
        page_id: req.page_id.as_deref(),
        sort_order: req.sort_order.as_deref(),
        limit: req.limit,
        filters: req.filters,
        filters_name: None,
    };
    let paging = crate::paging::Paging::from_request(key, ids, list, (10, max), now_us())?;
    let filters = paging.filters.clone();
    // 3.5 filters with `include_active`; 3.6 replaced it with `active`.
    let v36 = caller.version >= chatgate_protocol::Version::V3_6;
    let include_active = filters
        .get("include_active")
        .filter(|_| !v36)
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let only_active = filters
        .get("active")
        .filter(|_| v36)
        .and_then(Value::as_bool);
    let group_ids: Option<Vec<u32>> = match filters.get("group_ids") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value(v.clone())
                .map_err(|e| validation(format!("`filters.group_ids`: {e}")))?,
        ),
    };
    let now = now_us();
    // Inactive chats' last events are in the store: read the page's
    // (outside the lock), then answer; again if one retired meanwhile.
    let mut loaded: std::collections::HashMap<String, Vec<chatgate_protocol::data::Event>> =
        std::collections::HashMap::new();
    let (pending, body) = 'answer: loop {
        let missing: Vec<String> = 'page: {
            let state = caller.org.lock();
            let chats: Vec<&ChatState> = state
                .chats
                .values()
                .filter(|c| match &caller.actor {
                    Actor::Customer(id) => c.customer_id.as_deref() == Some(id.as_str()),
                    Actor::Agent(id) => can_read(&state.agents[id], c, caller.reads_all_chats()),
                })
                .filter(|c| include_active || c.active_thread().is_none())
                .filter(|c| only_active.is_none_or(|want| c.active_thread().is_some() == want))
                .filter(|c| {
                    group_ids
                        .as_ref()
                        .is_none_or(|g| c.access.iter().any(|a| g.contains(a)))
                })
                .collect();
            let keyed = chats
                .into_iter()
                .map(|c| {
                    let at = c
                        .threads
                        .last()
                        .map(|t| t.created_at_us)
                        .unwrap_or(c.created_at_us);
                    ((at, c.id.clone()), c.created_at_us, c)
                })
                .collect();
            let (page, found, next_page_id, previous_page_id) = paging.page(key, ids, keyed);
            let missing: Vec<String> = page
                .iter()
                .filter(|c| c.events_retired)
                .filter_map(|c| c.threads.last())
                .filter(|t| !loaded.contains_key(&t.id))
                .map(|t| t.id.clone())
                .collect();
            if !missing.is_empty() {
                break 'page missing;
            }
            fn last<'a>(
                c: &'a ChatState,
                loaded: &'a std::collections::HashMap<String, Vec<chatgate_protocol::data::Event>>,
            ) -> &'a [chatgate_protocol::data::Event] {
                match c.threads.last().filter(|_| c.events_retired) {
                    Some(t) => loaded.get(&t.id).map_or(&[], Vec::as_slice),
                    None => &c.events,
                }
            }
            let found = found as u64;
            let viewer = (!for_customer).then(|| caller.actor.id());
            let body = if for_customer {
                let summaries: Vec<_> = page
                    .into_iter()
                    .map(|c| crate::chats::customer_summary(&state, c, last(c, &loaded)))
                    .collect();
                let mut body = json!({"chats_summary": summaries, "total_chats": found});
                if let Some(p) = next_page_id {
                    body["next_page_id"] = p.into();
                }
                if let Some(p) = previous_page_id {
                    body["previous_page_id"] = p.into();
                }
                body
            } else {
                let summaries: Vec<_> = page
                    .into_iter()
                    .map(|c| summary(&state, c, last(c, &loaded), for_customer, viewer, now))
                    .collect();
                serde_json::to_value(ListChatsResponse {
                    chats_summary: summaries,
                    found_chats: found,
                    next_page_id,
                    previous_page_id,
                })
                .expect("serializes")
            };
            break 'answer (
                crate::push::submit(&engine.inner.store, Vec::new(), Vec::new())?,
                body,
            );
        };
        let events =
            load_thread_events(&engine.inner.store, &caller.org.org.id.0, missing.clone()).await?;
        loaded.extend(missing.into_iter().zip(events));
    };
    pending.wait().await?;
    Ok(Reply::ok(body))
}

/// Chats an agent sees at login: those it is present in or follows, and
/// queued chats it can access.
pub(crate) fn chats_summary_for(
    state: &OrgState,
    agent: &str,
) -> Vec<chatgate_protocol::data::ChatSummary> {
    let now = now_us();
    let a = &state.agents[agent];
    let mut chats: Vec<&ChatState> = state
        .chats
        .values()
        .filter(|c| c.active_thread().is_some())
        .filter(|c| {
            c.present_agents().any(|p| p == agent)
                || c.followers.contains(agent)
                || (state.queue.contains(&c.id) && crate::chats::has_group_access(a, &c.access))
        })
        .collect();
    chats.sort_by_key(|c| (c.created_at_us, c.id.clone()));
    chats
        .into_iter()
        .map(|c| summary(state, c, &c.events, false, Some(agent), now))
        .collect()
}

/// `get_customer` (customer side: self).
pub(crate) fn get_customer(caller: &ChatCaller) -> Result<Reply, ErrorBody> {
    let state = caller.org.lock();
    let c = state
        .customers
        .get(caller.actor.id())
        .ok_or_else(|| not_found("customer", caller.actor.id()))?;
    Ok(Reply::ok(
        serde_json::to_value(c.to_wire(&state)).expect("serializes"),
    ))
}

/// `update_customer` (customer side: self).
pub(crate) async fn update_customer(
    engine: &Engine,
    caller: &ChatCaller,
    req: CustomerFields,
) -> Result<Reply, ErrorBody> {
    if req == CustomerFields::default() {
        return Err(validation(
            "give at least one of `name`, `email`, `avatar`, `session_fields`",
        ));
    }
    let reservation = reserve(&engine.inner.store)?;
    let pending = {
        let mut state = caller.org.lock();
        let c = state
            .customers
            .get_mut(caller.actor.id())
            .ok_or_else(|| not_found("customer", caller.actor.id()))?;
        apply_fields(c, &req)?;
        let op = Op::UpsertCustomer(c.record(&caller.org.org.id));
        commit(reservation, vec![op], Vec::new())
    };
    pending.wait().await?;
    Ok(Reply::ok(json!({})))
}

/// `update_customer_page` (customer side): agents who can see one of the
/// customer's active chats get `customer_page_updated`. The page is not
/// stored (visits are tracked with the customer-monitoring work).
pub(crate) async fn update_customer_page(
    engine: &Engine,
    caller: &ChatCaller,
    req: CustomerPageRequest,
) -> Result<Reply, ErrorBody> {
    if req.url.is_empty() || req.url.len() > 2048 {
        return Err(validation("`url` must be 1-2048 characters"));
    }
    let pending = {
        let state = caller.org.lock();
        let me = caller.actor.id();
        let customer = state
            .customers
            .get(me)
            .ok_or_else(|| not_found("customer", me))?;
        let mut to: Vec<Arc<Connection>> = Vec::new();
        for chat in customer.chat_ids.iter().filter_map(|c| state.chats.get(c)) {
            if chat.active_thread().is_none() {
                continue;
            }
            for c in recipients(&state, chat, Audience::Everyone) {
                if c.side() == Side::Agent && !to.iter().any(|t| t.id() == c.id()) {
                    to.push(c);
                }
            }
        }
        let push = Outgoing::new(
            "customer_page_updated",
            CustomerPageUpdated {
                customer_id: me.to_owned(),
                visit_id: 1,
                opened_at: crate::chats::rfc3339(now_us()),
                url: req.url,
                title: req.title,
            },
            to,
            None,
        );
        crate::push::submit(&engine.inner.store, Vec::new(), vec![push])?
    };
    pending.wait().await?;
    Ok(Reply::ok(json!({})))
}

/// `list_group_statuses` (customer side).
pub(crate) fn list_group_statuses(caller: &ChatCaller, payload: Value) -> Result<Reply, ErrorBody> {
    let all = payload.get("all").and_then(Value::as_bool).unwrap_or(false);
    let ids: Option<Vec<u32>> = match payload.get("group_ids") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value(v.clone())
                .map_err(|e| validation(format!("`group_ids`: {e}")))?,
        ),
    };
    if !all && ids.is_none() {
        return Err(validation("give `all: true` or `group_ids`"));
    }
    let state = caller.org.lock();
    let online = online_groups(&state);
    let mut statuses = BTreeMap::new();
    for g in state.groups.keys() {
        if all || ids.as_ref().is_some_and(|i| i.contains(g)) {
            let status = if online.contains(g) {
                "online"
            } else if state.agents.values().any(|a| {
                (*g == 0 || a.agent.in_group(*g)) && a.effective() != RoutingStatus::Offline
            }) {
                "online_for_queue"
            } else {
                "offline"
            };
            statuses.insert(g.to_string(), status);
        }
    }
    Ok(Reply::ok(json!({ "groups_status": statuses })))
}
