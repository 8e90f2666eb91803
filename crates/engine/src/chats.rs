//! Chats: hot state, conversion to wire form, who receives which push,
//! routing of new and queued chats, and the chat methods of agents and
//! customers.
//!
//! Everything about a chat lives in its organization's state and changes
//! under that organization's lock, together with the agents' loads, so a
//! routing decision and the chat change it causes are one commit: no agent
//! ever exceeds its limit.

use crate::connection::Connection;
use crate::push::{Cause, Outgoing};
use crate::state::{AgentState, OrgState};
use chatgate_domain::routing::{Candidate, Decision, decide};
use chatgate_domain::scopes::ScopeSet;
use chatgate_domain::{GroupPriority, OrgId};
use chatgate_protocol::chats::{IncomingChat, QueuePositionEntry};
use chatgate_protocol::data::{
    Access, Chat, ChatSummary, ChatUserState, Event, LastEvent, Properties, Queue, Thread,
    ThreadSummary, User, Visibility,
};
use chatgate_store::{ChatRecord, ChatUserRecord, EventRecord, Op, ThreadRecord};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Current time in microseconds since the Unix epoch.
pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC with microseconds: `2020-05-07T07:11:28.288340Z`.
pub(crate) fn rfc3339(us: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// A random upper-case alphanumeric id of `len` characters (chat and thread
/// ids look like `PJ0MRSHTDG`).
pub(crate) fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in uuid::Uuid::new_v4().as_bytes() {
            if out.len() == len {
                break;
            }
            // 252 = 7 * 36: reject the tail to stay uniform.
            if *b < 252 {
                out.push(ALPHABET[(*b % 36) as usize] as char);
            }
        }
    }
    out
}

/// Kind of a chat user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UserKind {
    Agent,
    Customer,
}

impl UserKind {
    fn as_str(self) -> &'static str {
        match self {
            UserKind::Agent => "agent",
            UserKind::Customer => "customer",
        }
    }
}

/// A user of a chat.
#[derive(Clone, Debug)]
pub(crate) struct ChatUser {
    pub id: String,
    pub kind: UserKind,
    /// Currently a participant (assigned agents, the customer).
    pub present: bool,
    pub visibility: Visibility,
    pub seen_up_to_us: Option<i64>,
}

impl ChatUser {
    pub fn record(&self) -> ChatUserRecord {
        ChatUserRecord {
            user_id: self.id.clone(),
            user_type: self.kind.as_str().into(),
            present: self.present,
            visibility: match self.visibility {
                Visibility::All => "all".into(),
                Visibility::Agents => "agents".into(),
            },
            seen_up_to_us: self.seen_up_to_us,
        }
    }
}

/// A thread of a chat.
#[derive(Clone, Debug)]
pub(crate) struct ThreadState {
    pub id: String,
    pub active: bool,
    pub created_at_us: i64,
    pub closed_at_us: Option<i64>,
    /// Set while the thread waits in the queue.
    pub queued_at_us: Option<i64>,
    pub properties: Properties,
    /// Tags, in the order they were added.
    pub tags: Vec<String>,
    /// v3.6: where the customer was when it started this thread, as JSON
    /// text (every thread of every chat is held in memory: a `Value` map
    /// here cost ~0.7 KiB per thread in the soak run; text costs its bytes).
    pub customer_visit: Option<Box<str>>,
}

impl ThreadState {
    /// A thread as stored.
    pub fn from_record(t: ThreadRecord) -> Result<ThreadState, String> {
        Ok(ThreadState {
            properties: serde_json::from_str(&t.properties)
                .map_err(|e| format!("thread {}: {e}", t.id))?,
            tags: serde_json::from_str(&t.tags)
                .map_err(|e| format!("thread {} tags: {e}", t.id))?,
            customer_visit: match t.customer_visit {
                Some(text) => {
                    serde_json::from_str::<serde_json::Value>(&text)
                        .map_err(|e| format!("thread {} customer_visit: {e}", t.id))?;
                    Some(text.into_boxed_str())
                }
                None => None,
            },
            id: t.id,
            active: t.active,
            created_at_us: t.created_at_us,
            closed_at_us: t.closed_at_us,
            queued_at_us: t.queued_at_us,
        })
    }

    pub fn record(&self) -> ThreadRecord {
        ThreadRecord {
            id: self.id.clone(),
            active: self.active,
            created_at_us: self.created_at_us,
            closed_at_us: self.closed_at_us,
            queued_at_us: self.queued_at_us,
            properties: serde_json::to_string(&self.properties).expect("properties serialize"),
            tags: serde_json::to_string(&self.tags).expect("tags serialize"),
            customer_visit: self.customer_visit.as_deref().map(str::to_owned),
        }
    }
}

/// A chat, hot.
#[derive(Clone, Debug)]
pub(crate) struct ChatState {
    pub id: String,
    pub customer_id: Option<String>,
    pub access: Vec<u32>,
    pub properties: Properties,
    pub created_at_us: i64,
    pub users: Vec<ChatUser>,
    /// The hot threads, oldest first; only the last may be active. Once a
    /// new thread has started (and its start is decided), the threads before
    /// it leave memory ([`ChatState::retire_older`]): they are read from the
    /// store when asked for, so a chat's memory does not grow with its
    /// history.
    pub threads: Vec<ThreadState>,
    /// How many threads come before `threads` (only in the store).
    pub older: usize,
    /// The id of the last of those: the first hot thread's previous one.
    pub older_last_id: Option<String>,
    /// `custom_ids` may lack the events with a sequence number up to this
    /// one (retired with their threads): a miss must look in the store.
    pub custom_floor_seq: u64,
    /// Events of the last thread while the chat is active; empty once it
    /// is not (`events_retired`): an inactive chat's events are read from
    /// the store when asked for.
    pub events: Vec<Event>,
    /// The last thread's events are in the store only.
    pub events_retired: bool,
    /// How many events the last thread has (numbers the next one).
    pub event_count: usize,
    /// When the customer, and an agent, last wrote in the last thread
    /// (`list_customers` filters and sorts on these).
    pub last_customer_event_us: Option<i64>,
    pub last_agent_event_us: Option<i64>,
    /// Last per-chat sequence number committed (or submitted) for this chat.
    pub last_seq: u64,
    /// Agents following the chat.
    pub followers: HashSet<String>,
    /// The agent most recently assigned (a returning customer goes back to it).
    pub last_agent: Option<String>,
    /// `(author, custom_id)` → event id of the hot events sent with a
    /// `custom_id` (see `custom_floor_seq` for the others): a repeated send
    /// returns the original event (and the store's unique index is never
    /// violated).
    pub custom_ids: HashMap<(String, String), String>,
}

/// Where a thread sits among its chat's threads.
#[derive(Clone, Debug, Default)]
pub(crate) struct Neighbors {
    /// The chat's last thread (its users and queue are the chat's now).
    pub is_last: bool,
    pub previous: Option<String>,
    pub next: Option<String>,
}

impl Neighbors {
    /// The neighbors of `list[index]` in a chat's whole thread list.
    pub fn within(list: &[&ThreadState], index: usize) -> Neighbors {
        Neighbors {
            is_last: index + 1 == list.len(),
            previous: index.checked_sub(1).map(|i| list[i].id.clone()),
            next: list.get(index + 1).map(|t| t.id.clone()),
        }
    }
}

impl ChatState {
    /// How many threads the chat has (hot and older).
    pub fn thread_count(&self) -> usize {
        self.older + self.threads.len()
    }

    /// The hot thread `id` with its index among all the chat's threads.
    pub fn hot_thread(&self, id: &str) -> Option<(usize, &ThreadState)> {
        self.threads
            .iter()
            .position(|t| t.id == id)
            .map(|i| (self.older + i, &self.threads[i]))
    }

    /// The neighbors of the hot thread at `index` (among all threads).
    pub fn hot_neighbors(&self, index: usize) -> Neighbors {
        let i = index - self.older;
        Neighbors {
            is_last: i + 1 == self.threads.len(),
            previous: match i.checked_sub(1) {
                Some(p) => Some(self.threads[p].id.clone()),
                None => self.older_last_id.clone(),
            },
            next: self.threads.get(i + 1).map(|t| t.id.clone()),
        }
    }

    /// Every thread, oldest first: the older ones from `stored` (the chat's
    /// threads as [`load_chat_threads`] read them), then the hot ones.
    pub fn all_threads<'a>(&'a self, stored: &'a [ThreadState]) -> Vec<&'a ThreadState> {
        stored
            .iter()
            .take(self.older)
            .chain(self.threads.iter())
            .collect()
    }

    /// Moves every thread but the last out of memory (they are in the
    /// store), with their `custom_id`s. Called once a new thread's start is
    /// decided.
    pub fn retire_older(&mut self) {
        let keep = self.threads.len().saturating_sub(1);
        if keep == 0 {
            return;
        }
        for t in self.threads.drain(..keep) {
            self.older += 1;
            self.older_last_id = Some(t.id);
        }
        self.custom_ids.clear();
        self.custom_floor_seq = self.last_seq;
    }

    /// Drops the last thread's events from memory (the chat is no longer
    /// active; they are in the store).
    pub fn retire_events(&mut self) {
        self.events = Vec::new();
        self.events_retired = true;
    }

    /// A new last thread: no events yet, held in memory.
    pub fn reset_events(&mut self) {
        self.events = Vec::new();
        self.events_retired = false;
        self.event_count = 0;
        self.last_customer_event_us = None;
        self.last_agent_event_us = None;
    }

    /// Notes an event of the last thread written by `author` at `at`.
    ///
    /// The author has seen the chat up to their own event: their
    /// `seen_up_to` moves forward to it, here and only here, both when the
    /// event is sent and when the chat is loaded again, so the store needs
    /// no write of the author's chat user per event. The stored value
    /// covers every thread before the last, because the only way a thread
    /// stops being the last is a new thread, whose commit writes every
    /// user of the chat (`start_chat` / `resume_chat`).
    fn note_author(&mut self, author: Option<&str>, at: i64) {
        if let Some(u) = author.and_then(|a| self.user_mut(a)) {
            u.seen_up_to_us = Some(u.seen_up_to_us.map_or(at, |old| old.max(at)));
        }
        match author {
            None => {}
            Some(a) if self.customer_id.as_deref() == Some(a) => {
                self.last_customer_event_us = Some(at)
            }
            Some(_) => self.last_agent_event_us = Some(at),
        }
    }

    /// The active thread, if any (always the last one).
    pub fn active_thread(&self) -> Option<&ThreadState> {
        self.threads.last().filter(|t| t.active)
    }

    pub fn active_thread_mut(&mut self) -> Option<&mut ThreadState> {
        self.threads.last_mut().filter(|t| t.active)
    }

    /// Agents currently present in the chat.
    pub fn present_agents(&self) -> impl Iterator<Item = &str> {
        self.users
            .iter()
            .filter(|u| u.kind == UserKind::Agent && u.present)
            .map(|u| u.id.as_str())
    }

    pub fn user(&self, id: &str) -> Option<&ChatUser> {
        self.users.iter().find(|u| u.id == id)
    }

    pub fn user_mut(&mut self, id: &str) -> Option<&mut ChatUser> {
        self.users.iter_mut().find(|u| u.id == id)
    }

    /// The routing group: the first access group (0 when none).
    pub fn group(&self) -> u32 {
        self.access.first().copied().unwrap_or(0)
    }

    /// Rebuilds a chat from the store.
    pub fn from_record(rec: ChatRecord) -> Result<ChatState, String> {
        let access: Vec<u32> = serde_json::from_str(&rec.access)
            .map_err(|e| format!("chat {} access: {e}", rec.id))?;
        let properties: Properties = serde_json::from_str(&rec.properties)
            .map_err(|e| format!("chat {} properties: {e}", rec.id))?;
        let threads = rec
            .threads
            .into_iter()
            .map(ThreadState::from_record)
            .collect::<Result<Vec<_>, _>>()?;
        let older = rec.older_threads as usize;
        let mut events: Vec<Event> = Vec::new();
        let mut authors = Vec::new();
        for e in rec.last_thread_events {
            authors.push((e.author_id.clone(), e.created_at_us));
            events.push(
                serde_json::from_str(&e.body).map_err(|err| format!("event {}: {err}", e.id))?,
            );
        }
        let users: Vec<ChatUser> = rec
            .users
            .into_iter()
            .map(|u| ChatUser {
                kind: if u.user_type == "customer" {
                    UserKind::Customer
                } else {
                    UserKind::Agent
                },
                id: u.user_id,
                present: u.present,
                visibility: if u.visibility == "agents" {
                    Visibility::Agents
                } else {
                    Visibility::All
                },
                seen_up_to_us: u.seen_up_to_us,
            })
            .collect();
        let last_agent = users
            .iter()
            .rev()
            .find(|u| u.kind == UserKind::Agent)
            .map(|u| u.id.clone());
        let mut chat = ChatState {
            id: rec.id,
            customer_id: rec.customer_id,
            access,
            properties,
            created_at_us: rec.created_at_us,
            users,
            threads,
            older,
            older_last_id: rec.older_last_thread_id,
            // Only the last thread's custom ids were loaded.
            custom_floor_seq: if older > 0 { rec.last_seq } else { 0 },
            event_count: events.len(),
            events,
            events_retired: false,
            last_customer_event_us: None,
            last_agent_event_us: None,
            last_seq: rec.last_seq,
            followers: HashSet::new(),
            last_agent,
            custom_ids: rec
                .custom_ids
                .into_iter()
                .map(|(author, custom, id)| ((author, custom), id))
                .collect(),
        };
        for (author, at) in authors {
            chat.note_author(author.as_deref(), at);
        }
        // An inactive chat's events stay in the store.
        if chat.active_thread().is_none() {
            chat.retire_events();
        }
        Ok(chat)
    }
}

/// A customer, hot.
#[derive(Clone, Debug)]
pub(crate) struct CustomerState {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub avatar: Option<String>,
    pub session_fields: Vec<BTreeMap<String, String>>,
    pub created_at_us: i64,
    /// Microseconds; the customer is banned until then.
    pub banned_until_us: Option<i64>,
    /// Live RTM connections.
    pub sessions: Vec<Arc<Connection>>,
    /// Chats of this customer, oldest first.
    pub chat_ids: Vec<String>,
}

impl CustomerState {
    pub fn record(&self, org: &OrgId) -> chatgate_store::CustomerRecord {
        chatgate_store::CustomerRecord {
            org: org.clone(),
            id: self.id.clone(),
            name: self.name.clone(),
            email: self.email.clone(),
            avatar: self.avatar.clone(),
            session_fields: serde_json::to_string(&self.session_fields).expect("serializes"),
            created_at_us: self.created_at_us,
            banned_until_us: self.banned_until_us,
        }
    }

    pub fn to_wire(&self, state: &OrgState) -> chatgate_protocol::chats::Customer {
        let threads: u64 = self
            .chat_ids
            .iter()
            .filter_map(|c| state.chats.get(c))
            .map(|c| c.thread_count() as u64)
            .sum();
        chatgate_protocol::chats::Customer {
            id: self.id.clone(),
            kind: "customer".into(),
            name: self.name.clone(),
            email: self.email.clone(),
            avatar: self.avatar.clone(),
            session_fields: self.session_fields.clone(),
            statistics: chatgate_protocol::chats::CustomerStatistics {
                chats_count: self.chat_ids.len() as u64,
                threads_count: threads,
                ..Default::default()
            },
            created_at: Some(rfc3339(self.created_at_us)),
            chat_ids: self.chat_ids.clone(),
        }
    }
}

/// Whether `agent` may see chats with `access`: through its groups, or
/// everywhere when its role's scopes include `chats--all` (the audience of
/// pushes is decided by the role; a request by its token's scopes).
pub(crate) fn has_group_access(agent: &AgentState, access: &[u32]) -> bool {
    ScopeSet::role_grants(agent.agent.kind, agent.agent.role, "chats--all:ro")
        || in_groups(agent, access)
}

fn in_groups(agent: &AgentState, access: &[u32]) -> bool {
    access.contains(&0) || agent.agent.groups.iter().any(|(g, _)| access.contains(g))
}

/// Whether a requester may read the chat: a user, a follower, through its
/// groups, or anywhere with `chats--all` (`all_chats`).
pub(crate) fn can_read(agent: &AgentState, chat: &ChatState, all_chats: bool) -> bool {
    all_chats
        || chat.user(&agent.agent.id.0).is_some()
        || chat.followers.contains(&agent.agent.id.0)
        || in_groups(agent, &chat.access)
}

/// Who receives a push about a chat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Audience {
    /// Present agents, followers and (when `customer`) the customer.
    Members { customer: bool },
    /// Members and followers plus every agent with access to the chat: key
    /// changes such as a new chat, deactivation, transfers, queue moves.
    Everyone,
}

/// Sessions that receive a push about `chat`.
pub(crate) fn recipients(
    state: &OrgState,
    chat: &ChatState,
    audience: Audience,
) -> Vec<Arc<Connection>> {
    let mut out: Vec<Arc<Connection>> = Vec::new();
    let mut agents: BTreeSet<&str> = chat.present_agents().collect();
    agents.extend(chat.followers.iter().map(String::as_str));
    for id in &agents {
        if let Some(a) = state.agents.get(*id) {
            out.extend(a.sessions.iter().map(|s| s.conn.clone()));
        }
    }
    if audience == Audience::Everyone {
        // Agents who see the chat only through access: each session by the
        // scopes it logged in with (a restricted token narrows its role).
        for (id, a) in &state.agents {
            // Most agents of a large organization are offline: the cheapest
            // test first.
            if a.sessions.is_empty()
                || !has_group_access(a, &chat.access)
                || agents.contains(id.as_str())
            {
                continue;
            }
            let in_groups = in_groups(a, &chat.access);
            for s in &a.sessions {
                let reads_all = || {
                    ScopeSet::session_grants(
                        s.conn.login_state().and_then(|l| l.scopes()).as_deref(),
                        a.agent.kind,
                        a.agent.role,
                        "chats--all:ro",
                    )
                };
                if in_groups || reads_all() {
                    out.push(s.conn.clone());
                }
            }
        }
    }
    let to_customer = match audience {
        Audience::Members { customer } => customer,
        Audience::Everyone => true,
    };
    if to_customer
        && let Some(c) = chat
            .customer_id
            .as_ref()
            .and_then(|id| state.customers.get(id))
    {
        out.extend(c.sessions.iter().cloned());
    }
    out
}

fn agent_user(state: &OrgState, u: &ChatUser) -> User {
    let a = state.agents.get(&u.id);
    User::Agent {
        id: u.id.clone(),
        name: a.map(|a| a.agent.name.clone()),
        email: Some(u.id.clone()),
        avatar: None,
        visibility: Some(u.visibility),
        state: ChatUserState {
            present: Some(u.present),
            events_seen_up_to: u.seen_up_to_us.map(rfc3339),
        },
    }
}

fn customer_user(state: &OrgState, u: &ChatUser) -> User {
    let c = state.customers.get(&u.id);
    User::Customer {
        id: u.id.clone(),
        name: c.and_then(|c| c.name.clone()),
        email: c.and_then(|c| c.email.clone()),
        avatar: c.and_then(|c| c.avatar.clone()),
        session_fields: c
            .map(|c| c.session_fields.clone())
            .filter(|f| !f.is_empty()),
        state: ChatUserState {
            present: Some(u.present),
            events_seen_up_to: u.seen_up_to_us.map(rfc3339),
        },
        extra: Default::default(),
    }
}

/// The chat's users as the viewer may see them (customers do not see
/// agents added with visibility `agents`).
pub(crate) fn wire_users(state: &OrgState, chat: &ChatState, for_customer: bool) -> Vec<User> {
    chat.users
        .iter()
        .filter(|u| !(for_customer && u.visibility == Visibility::Agents))
        .map(|u| match u.kind {
            UserKind::Agent => agent_user(state, u),
            UserKind::Customer => customer_user(state, u),
        })
        .collect()
}

/// Whether a customer may see `event`.
pub(crate) fn visible_to_customer(event: &Event) -> bool {
    event.common().visibility == Visibility::All
}

/// Queue position of a queued thread.
pub(crate) fn queue_of(state: &OrgState, chat: &ChatState, now: i64) -> Option<Queue> {
    let thread = chat.active_thread()?;
    let queued_at = thread.queued_at_us?;
    let position = state
        .queue
        .iter()
        .position(|c| *c == chat.id)
        .map(|p| p as u32 + 1)?;
    Some(Queue {
        position,
        wait_time: ((now - queued_at).max(0) / 1_000_000) as u64,
        queued_at: Some(rfc3339(queued_at)),
    })
}

/// A thread in wire form. `events` are the thread's events (already loaded).
pub(crate) fn wire_thread(
    state: &OrgState,
    chat: &ChatState,
    t: &ThreadState,
    at: Neighbors,
    events: Vec<Event>,
    for_customer: bool,
    now: i64,
) -> Thread {
    let events: Vec<Event> = events
        .into_iter()
        .filter(|e| !for_customer || visible_to_customer(e))
        .map(|e| {
            if for_customer {
                crate::properties::customer_event(state, &e)
            } else {
                e
            }
        })
        .collect();
    let mut user_ids: Vec<String> = Vec::new();
    let is_last = at.is_last;
    if is_last {
        user_ids.extend(
            chat.users
                .iter()
                .filter(|u| u.present)
                .map(|u| u.id.clone()),
        );
    }
    for e in &events {
        if let Some(a) = &e.common().author_id
            && !user_ids.contains(a)
        {
            user_ids.push(a.clone());
        }
    }
    Thread {
        id: t.id.clone(),
        active: t.active,
        user_ids,
        events: Some(events),
        properties: Some(crate::properties::view(
            state,
            crate::properties::Location::Thread,
            &t.properties,
            for_customer,
        )),
        access: Some(Access {
            group_ids: chat.access.clone(),
        }),
        tags: (!for_customer).then(|| t.tags.clone()),
        queue: if is_last {
            queue_of(state, chat, now)
        } else {
            None
        },
        previous_thread_id: at.previous,
        next_thread_id: at.next,
        created_at: rfc3339(t.created_at_us),
        ..Default::default()
    }
}

/// v3.6 responses to agents show the thread's `customer_visit`.
pub(crate) fn add_visit(
    thread: &mut Thread,
    t: &ThreadState,
    version: chatgate_protocol::Version,
    for_customer: bool,
) {
    if version >= chatgate_protocol::Version::V3_6 && !for_customer {
        thread.customer_visit = t
            .customer_visit
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok());
    }
}

/// The chat with its last thread, as `incoming_chat` and `get_chat` show it.
/// `last_events` are the last thread's (`chat.events`, or read from the
/// store when they are retired).
pub(crate) fn wire_chat(
    state: &OrgState,
    chat: &ChatState,
    last_events: &[Event],
    for_customer: bool,
    viewer: Option<&str>,
    now: i64,
) -> Chat {
    let thread = chat.threads.last().map(|t| {
        let at = chat.hot_neighbors(chat.thread_count() - 1);
        wire_thread(state, chat, t, at, last_events.to_vec(), for_customer, now)
    });
    Chat {
        id: chat.id.clone(),
        users: wire_users(state, chat, for_customer),
        properties: Some(crate::properties::view(
            state,
            crate::properties::Location::Chat,
            &chat.properties,
            for_customer,
        )),
        access: Some(Access {
            group_ids: chat.access.clone(),
        }),
        thread,
        threads: None,
        is_followed: (!for_customer).then(|| viewer.is_some_and(|v| chat.followers.contains(v))),
    }
}

/// A chat summary (`list_chats`, login `chats_summary`).
pub(crate) fn summary(
    state: &OrgState,
    chat: &ChatState,
    last_events: &[Event],
    for_customer: bool,
    viewer: Option<&str>,
    now: i64,
) -> ChatSummary {
    let mut last_event_per_type = BTreeMap::new();
    let last_thread = chat.threads.last();
    if let Some(t) = last_thread {
        for e in last_events
            .iter()
            .filter(|e| !for_customer || visible_to_customer(e))
        {
            let kind = serde_json::to_value(e)
                .ok()
                .and_then(|v| v["type"].as_str().map(str::to_owned));
            if let Some(kind) = kind {
                last_event_per_type.insert(
                    kind,
                    LastEvent {
                        thread_id: t.id.clone(),
                        thread_created_at: rfc3339(t.created_at_us),
                        event: if for_customer {
                            serde_json::to_value(crate::properties::customer_event(state, e))
                        } else {
                            serde_json::to_value(e)
                        }
                        .expect("events serialize"),
                    },
                );
            }
        }
    }
    ChatSummary {
        id: chat.id.clone(),
        last_thread_summary: last_thread.map(|t| ThreadSummary {
            id: t.id.clone(),
            created_at: rfc3339(t.created_at_us),
            user_ids: chat
                .users
                .iter()
                .filter(|u| u.present)
                .map(|u| u.id.clone())
                .collect(),
            properties: Some(crate::properties::view(
                state,
                crate::properties::Location::Thread,
                &t.properties,
                for_customer,
            )),
            active: t.active,
            access: Some(Access {
                group_ids: chat.access.clone(),
            }),
            // Tags are the agents' bookkeeping; customers never see them.
            tags: (!for_customer).then(|| t.tags.clone()),
            queue: queue_of(state, chat, now),
        }),
        users: wire_users(state, chat, for_customer),
        last_event_per_type,
        properties: Some(crate::properties::view(
            state,
            crate::properties::Location::Chat,
            &chat.properties,
            for_customer,
        )),
        access: Some(Access {
            group_ids: chat.access.clone(),
        }),
        is_followed: (!for_customer).then(|| viewer.is_some_and(|v| chat.followers.contains(v))),
    }
}

/// A chat summary in the Customer Chat API's shape.
pub(crate) fn customer_summary(
    state: &OrgState,
    chat: &ChatState,
    last_events: &[Event],
) -> chatgate_protocol::chats::CustomerChatSummary {
    let last = chat.threads.last();
    let mut last_event_per_type = BTreeMap::new();
    if let Some(t) = last {
        for e in last_events.iter().filter(|e| visible_to_customer(e)) {
            last_event_per_type.insert(
                event_kind(e),
                LastEvent {
                    thread_id: t.id.clone(),
                    thread_created_at: rfc3339(t.created_at_us),
                    event: serde_json::to_value(crate::properties::customer_event(state, e))
                        .expect("events serialize"),
                },
            );
        }
    }
    chatgate_protocol::chats::CustomerChatSummary {
        id: chat.id.clone(),
        active: chat.active_thread().is_some(),
        last_thread_id: last.map(|t| t.id.clone()),
        last_thread_created_at: last.map(|t| rfc3339(t.created_at_us)),
        last_event_per_type,
        users: wire_users(state, chat, true),
        access: Some(Access {
            group_ids: chat.access.clone(),
        }),
        properties: Some(crate::properties::customer_view(
            state,
            crate::properties::Location::Chat,
            &chat.properties,
        )),
    }
}

/// `a` plus the sessions of `b` not already in it.
pub(crate) fn union(mut a: Vec<Arc<Connection>>, b: Vec<Arc<Connection>>) -> Vec<Arc<Connection>> {
    for c in b {
        if !a.iter().any(|x| x.id() == c.id()) {
            a.push(c);
        }
    }
    a
}

/// The live sessions of one agent.
pub(crate) fn agent_sessions(state: &OrgState, agent: &str) -> Vec<Arc<Connection>> {
    state
        .agents
        .get(agent)
        .map(|a| a.sessions.iter().map(|s| s.conn.clone()).collect())
        .unwrap_or_default()
}

/// `incoming_chat` to the sessions of `agent` only (a chat handed to it by
/// a transfer or a re-route), carrying `transferred_from`.
pub(crate) fn incoming_chat_to_agent(
    state: &OrgState,
    chat: &ChatState,
    agent: &str,
    requester: Option<&str>,
    transferred_from: serde_json::Value,
    now: i64,
) -> Vec<Outgoing> {
    let theirs = agent_sessions(state, agent);
    let mut pushes = incoming_chat_pushes(state, chat, requester, None, now);
    for p in &mut pushes {
        p.recipients
            .retain(|c| theirs.iter().any(|t| t.id() == c.id()));
        p.payload["transferred_from"] = transferred_from.clone();
    }
    pushes.retain(|p| !p.recipients.is_empty());
    pushes
}

/// Events of the given threads, read from the store off the async threads.
pub(crate) async fn load_thread_events(
    store: &Arc<dyn chatgate_store::Store>,
    org: &str,
    thread_ids: Vec<String>,
) -> Result<Vec<Vec<Event>>, chatgate_protocol::ErrorBody> {
    // Every event submitted before the read is in it (retired events may
    // have been submitted an instant ago).
    crate::push::barrier(store).await?;
    let store = store.clone();
    let org = org.to_owned();
    tokio::task::spawn_blocking(move || -> Result<Vec<Vec<Event>>, String> {
        let mut out = Vec::new();
        for id in thread_ids {
            let mut events = Vec::new();
            for r in store.thread_events(&org, &id).map_err(|e| e.to_string())? {
                events.push(serde_json::from_str(&r.body).map_err(|e| e.to_string())?);
            }
            out.push(events);
        }
        Ok(out)
    })
    .await
    .map_err(crate::error::internal)?
    .map_err(crate::error::internal)
}

/// Every thread of a chat as stored, oldest first, after a barrier: every
/// change submitted before the call is in (older threads are not in memory;
/// see [`ChatState::retire_older`]).
pub(crate) async fn load_chat_threads(
    store: &Arc<dyn chatgate_store::Store>,
    org: &str,
    chat_id: &str,
) -> Result<Vec<ThreadState>, chatgate_protocol::ErrorBody> {
    crate::push::barrier(store).await?;
    let store = store.clone();
    let (org, chat_id) = (org.to_owned(), chat_id.to_owned());
    tokio::task::spawn_blocking(move || -> Result<Vec<ThreadState>, String> {
        store
            .chat_threads(&org, &chat_id)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(ThreadState::from_record)
            .collect()
    })
    .await
    .map_err(crate::error::internal)?
    .map_err(crate::error::internal)
}

/// Every thread of the organization as stored, by chat id (each chat's
/// oldest first), after a barrier like [`load_chat_threads`].
pub(crate) async fn load_org_threads(
    store: &Arc<dyn chatgate_store::Store>,
    org: &str,
) -> Result<HashMap<String, Vec<ThreadState>>, chatgate_protocol::ErrorBody> {
    crate::push::barrier(store).await?;
    let store = store.clone();
    let org = org.to_owned();
    tokio::task::spawn_blocking(
        move || -> Result<HashMap<String, Vec<ThreadState>>, String> {
            let mut out: HashMap<String, Vec<ThreadState>> = HashMap::new();
            for (chat, t) in store.org_threads(&org).map_err(|e| e.to_string())? {
                out.entry(chat)
                    .or_default()
                    .push(ThreadState::from_record(t)?);
            }
            Ok(out)
        },
    )
    .await
    .map_err(crate::error::internal)?
    .map_err(crate::error::internal)
}

/// `incoming_chat` to the chat's key audience; the requester's copy carries
/// its `request_id`.
pub(crate) fn incoming_chat_pushes(
    state: &OrgState,
    chat: &ChatState,
    requester: Option<&str>,
    cause: Option<Cause>,
    now: i64,
) -> Vec<Outgoing> {
    // Agents and customers see different user lists and events: two pushes.
    let all = recipients(state, chat, Audience::Everyone);
    let customer_sessions: HashSet<u64> = chat
        .customer_id
        .as_ref()
        .and_then(|id| state.customers.get(id))
        .map(|c| c.sessions.iter().map(|s| s.id()).collect())
        .unwrap_or_default();
    let (to_customer, to_agents): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|c| customer_sessions.contains(&c.id()));
    let mut out = Vec::new();
    if !to_agents.is_empty() {
        out.push(Outgoing::new(
            "incoming_chat",
            IncomingChat {
                requester_id: requester.map(str::to_owned),
                chat: wire_chat(state, chat, &chat.events, false, None, now),
                transferred_from: None,
            },
            to_agents,
            cause.clone(),
        ));
    }
    if !to_customer.is_empty() {
        out.push(Outgoing::new(
            "incoming_chat",
            IncomingChat {
                requester_id: requester.map(str::to_owned),
                chat: wire_chat(state, chat, &chat.events, true, None, now),
                transferred_from: None,
            },
            to_customer,
            cause,
        ));
    }
    out
}

/// Appends `event` to the chat's current (last) thread: assigns id, time and
/// sequence, and returns the store op.
pub(crate) fn append_event(
    org: &OrgId,
    chat: &mut ChatState,
    mut event: Event,
    author: Option<&str>,
    now: i64,
) -> (Event, Op) {
    let thread_id = chat.threads.last().expect("a thread exists").id.clone();
    chat.last_seq += 1;
    chat.event_count += 1;
    let id = format!("{thread_id}_{}", chat.event_count);
    let is_system = matches!(event, Event::SystemMessage { .. });
    {
        let c = event.common_mut();
        c.id = Some(id.clone());
        c.created_at = Some(rfc3339(now));
        c.author_id = if is_system {
            None
        } else {
            author.map(str::to_owned)
        };
    }
    let c = event.common();
    if let (Some(author), Some(custom)) = (&c.author_id, &c.custom_id) {
        chat.custom_ids
            .insert((author.clone(), custom.clone()), id.clone());
    }
    let op = Op::AppendEvent(EventRecord {
        org: org.clone(),
        chat_id: chat.id.clone(),
        seq: chat.last_seq,
        thread_id,
        id,
        author_id: c.author_id.clone(),
        custom_id: c.custom_id.clone(),
        kind: event_kind(&event),
        created_at_us: now,
        body: serde_json::to_string(&event).expect("events serialize"),
    });
    chat.note_author(c.author_id.as_deref(), now);
    if !chat.events_retired {
        chat.events.push(event.clone());
    }
    (event, op)
}

/// Wire `type` of an event.
pub(crate) fn event_kind(e: &Event) -> String {
    match e {
        Event::Message { .. } => "message",
        Event::SystemMessage { .. } => "system_message",
        Event::File { .. } => "file",
        Event::RichMessage { .. } => "rich_message",
        Event::FilledForm { .. } => "filled_form",
        Event::Form { .. } => "form",
        Event::Custom { .. } => "custom",
        Event::System { .. } => "system",
    }
    .to_owned()
}

/// Largest `message` text, in bytes.
pub(crate) const MAX_MESSAGE_TEXT: usize = 16 * 1024;

/// Checks an event a client wants to send.
pub(crate) fn validate_event(e: &Event, by_customer: bool) -> Result<(), String> {
    match e {
        Event::Message { text, .. } => {
            if text.is_empty() {
                return Err("`event.text` must not be empty".into());
            }
            if text.len() > MAX_MESSAGE_TEXT {
                return Err(format!("`event.text` exceeds {MAX_MESSAGE_TEXT} bytes"));
            }
        }
        Event::System { .. } => return Err("events of type `system` cannot be sent".into()),
        Event::SystemMessage { .. } if by_customer => {
            return Err("customers cannot send `system_message` events".into());
        }
        Event::RichMessage {
            elements,
            template_id,
            ..
        } => {
            if !matches!(template_id.as_str(), "cards" | "sticker" | "quick_replies") {
                return Err("`event.template_id` must be cards, sticker or quick_replies".into());
            }
            if elements.len() > 10 {
                return Err("`event.elements` may hold at most 10 elements".into());
            }
            if elements.iter().any(|el| el.buttons.len() > 13) {
                return Err("a rich message element may hold at most 13 buttons".into());
            }
        }
        _ => {}
    }
    if by_customer && e.common().visibility != Visibility::All {
        return Err("customers may only send events with visibility `all`".into());
    }
    Ok(())
}

/// Routing candidates of `group`, leaving out `exclude`.
pub(crate) fn candidates_for<'a>(
    state: &'a OrgState,
    group: u32,
    exclude: &[String],
) -> Vec<Candidate<'a>> {
    state
        .agents
        .values()
        .filter(|a| !exclude.contains(&a.agent.id.0) && !a.agent.suspended)
        .filter_map(|a| {
            let priority = if group == 0 {
                a.agent
                    .groups
                    .first()
                    .map(|(_, p)| *p)
                    .unwrap_or(GroupPriority::Normal)
            } else {
                a.agent
                    .groups
                    .iter()
                    .find(|(g, _)| *g == group)
                    .map(|(_, p)| *p)?
            };
            Some(Candidate {
                id: a.agent.id.0.as_str(),
                priority,
                status: a.effective(),
                load: a.active_chats.len() as u32,
                max_chats: a.agent.max_chats,
                last_assigned: a.last_assigned_us,
            })
        })
        .collect()
}

/// Routing outcome for one chat.
pub(crate) enum Routed {
    Assigned,
    Queued,
    Offline,
}

/// Routes the chat's active thread: assigns an agent or queues it. Returns
/// the store ops of the change; pushes are the caller's.
pub(crate) fn route_chat(
    state: &mut OrgState,
    org: &OrgId,
    chat_id: &str,
    allow_offline_queue: bool,
    now: i64,
) -> (Routed, Vec<Op>) {
    let chat = &state.chats[chat_id];
    let previous = chat.last_agent.clone();
    let group = chat.group();
    let decision = match decide(&candidates_for(state, group, &[]), previous.as_deref()) {
        Decision::Assign(id) => Some(id.to_owned()),
        Decision::Queue => None,
        Decision::Offline => {
            if !allow_offline_queue {
                return (Routed::Offline, Vec::new());
            }
            None
        }
    };
    let mut ops = Vec::new();
    match decision {
        Some(agent) => {
            ops.extend(assign_to(state, org, chat_id, &agent, now));
            (Routed::Assigned, ops)
        }
        None => {
            let chat = state.chats.get_mut(chat_id).expect("chat exists");
            let thread = chat.active_thread_mut().expect("routing an active thread");
            if thread.queued_at_us.is_none() {
                thread.queued_at_us = Some(now);
                ops.push(thread_update(org, thread));
            }
            if !state.queue.iter().any(|c| c == chat_id) {
                state.queue.push(chat_id.to_owned());
            }
            (Routed::Queued, ops)
        }
    }
}

fn thread_update(org: &OrgId, t: &ThreadState) -> Op {
    Op::UpdateThread {
        org: org.clone(),
        thread_id: t.id.clone(),
        active: t.active,
        closed_at_us: t.closed_at_us,
        queued_at_us: t.queued_at_us,
    }
}

/// Makes `agent` a present user of the chat and counts the chat on it.
pub(crate) fn assign_to(
    state: &mut OrgState,
    org: &OrgId,
    chat_id: &str,
    agent: &str,
    now: i64,
) -> Vec<Op> {
    let mut ops = Vec::new();
    let chat = state.chats.get_mut(chat_id).expect("chat exists");
    match chat.user_mut(agent) {
        Some(u) => {
            u.present = true;
            u.visibility = Visibility::All;
        }
        None => chat.users.push(ChatUser {
            id: agent.to_owned(),
            kind: UserKind::Agent,
            present: true,
            visibility: Visibility::All,
            seen_up_to_us: None,
        }),
    }
    chat.last_agent = Some(agent.to_owned());
    ops.push(Op::SetChatUser {
        org: org.clone(),
        chat_id: chat_id.to_owned(),
        user: chat.user(agent).expect("just added").record(),
    });
    if let Some(t) = chat.active_thread_mut()
        && t.queued_at_us.take().is_some()
    {
        let t = t.clone();
        ops.push(thread_update(org, &t));
    }
    state.queue.retain(|c| c != chat_id);
    let a = state.agents.get_mut(agent).expect("candidate exists");
    a.active_chats.insert(chat_id.to_owned());
    a.last_assigned_us = now;
    ops
}

/// `agent` leaves the chat's active thread (it stays a user, not present).
pub(crate) fn close_agent(
    state: &mut OrgState,
    org: &OrgId,
    chat_id: &str,
    agent: &str,
) -> Vec<Op> {
    let mut ops = Vec::new();
    if let Some(chat) = state.chats.get_mut(chat_id)
        && let Some(u) = chat.user_mut(agent)
        && u.present
    {
        u.present = false;
        ops.push(Op::SetChatUser {
            org: org.clone(),
            chat_id: chat_id.to_owned(),
            user: u.record(),
        });
    }
    if let Some(a) = state.agents.get_mut(agent) {
        a.active_chats.remove(chat_id);
    }
    ops
}

/// Ends the chat's active thread: agents leave, loads drop.
pub(crate) fn close_thread(state: &mut OrgState, org: &OrgId, chat_id: &str, now: i64) -> Vec<Op> {
    let mut ops = Vec::new();
    let chat = state.chats.get_mut(chat_id).expect("chat exists");
    let Some(t) = chat.active_thread_mut() else {
        return ops;
    };
    t.active = false;
    t.closed_at_us = Some(now);
    t.queued_at_us = None;
    let t = t.clone();
    ops.push(thread_update(org, &t));
    // Inactive: its events leave memory (they are in the store).
    chat.retire_events();
    let mut left = Vec::new();
    for u in chat
        .users
        .iter_mut()
        .filter(|u| u.kind == UserKind::Agent && u.present)
    {
        u.present = false;
        left.push(u.id.clone());
        ops.push(Op::SetChatUser {
            org: org.clone(),
            chat_id: chat_id.to_owned(),
            user: u.record(),
        });
    }
    state.queue.retain(|c| c != chat_id);
    for a in left {
        if let Some(a) = state.agents.get_mut(&a) {
            a.active_chats.remove(chat_id);
        }
    }
    ops
}

/// Assigns queued chats, oldest first, wherever capacity allows. Returns
/// the ops and pushes (`incoming_chat` to the new assignees, queue updates).
pub(crate) fn drain_queue(state: &mut OrgState, org: &OrgId, now: i64) -> (Vec<Op>, Vec<Outgoing>) {
    let mut ops = Vec::new();
    let mut pushes = Vec::new();
    let queued: Vec<String> = state.queue.clone();
    let mut moved = false;
    for chat_id in queued {
        let chat = &state.chats[&chat_id];
        let group = chat.group();
        let previous = chat.last_agent.clone();
        if let Decision::Assign(agent) =
            decide(&candidates_for(state, group, &[]), previous.as_deref())
        {
            let agent = agent.to_owned();
            ops.extend(assign_to(state, org, &chat_id, &agent, now));
            moved = true;
            let chat = &state.chats[&chat_id];
            pushes.extend(incoming_chat_pushes(state, chat, None, None, now));
        }
    }
    if moved {
        pushes.extend(queue_pushes(state, now));
    }
    // Statuses may have moved with capacity: group statuses are
    // recomputed by the next flush (see `group_status_pushes`).
    state.group_statuses_dirty = true;
    (ops, pushes)
}

/// A group's status for agents: `accepting_chats` when one of its agents
/// (every agent for the general group 0) accepts, `not_accepting_chats` when
/// one is online without accepting, else `offline`.
fn group_statuses(state: &OrgState) -> BTreeMap<u32, &'static str> {
    let mut out: BTreeMap<u32, &'static str> =
        state.groups.keys().map(|g| (*g, "offline")).collect();
    let rank = |s: &str| match s {
        "accepting_chats" => 2,
        "not_accepting_chats" => 1,
        _ => 0,
    };
    for a in state.agents.values() {
        let status = match a.effective() {
            chatgate_domain::RoutingStatus::AcceptingChats => "accepting_chats",
            chatgate_domain::RoutingStatus::NotAcceptingChats => "not_accepting_chats",
            chatgate_domain::RoutingStatus::Offline => continue,
        };
        let groups = a.agent.groups.iter().map(|(g, _)| *g).chain([0]);
        for g in groups {
            if let Some(slot) = out.get_mut(&g)
                && rank(status) > rank(slot)
            {
                *slot = status;
            }
        }
    }
    out
}

/// `groups_status_updated` for the groups whose status changed since the
/// last call: to each logged-in agent, the changed groups it can access.
/// Computing statuses walks every agent, so changes only mark the state
/// dirty and [`crate::Engine::flush_group_statuses`] runs this at most every
/// few hundred milliseconds: a burst of logins costs one walk, not one per
/// login, and pushes carry the net change.
pub(crate) fn group_status_pushes(state: &mut OrgState) -> Vec<Outgoing> {
    state.group_statuses_dirty = false;
    let now = group_statuses(state);
    let changed: Vec<(u32, &'static str)> = now
        .iter()
        .filter(|(g, s)| state.group_statuses.get(g).copied().unwrap_or("offline") != **s)
        .map(|(g, s)| (*g, *s))
        .collect();
    state.group_statuses = now;
    if changed.is_empty() {
        return Vec::new();
    }
    let mut pushes = Vec::new();
    for a in state.agents.values().filter(|a| !a.sessions.is_empty()) {
        let visible: Vec<serde_json::Value> = changed
            .iter()
            .filter(|(g, _)| has_group_access(a, &[*g]))
            .map(|(g, s)| serde_json::json!({ "id": g, "status": s }))
            .collect();
        if visible.is_empty() {
            continue;
        }
        pushes.push(Outgoing::new(
            "groups_status_updated",
            serde_json::json!({ "groups": visible }),
            a.sessions
                .iter()
                .map(|s| s.conn.clone())
                .collect::<Vec<_>>(),
            None,
        ));
    }
    pushes
}

/// `queue_positions_updated` to agents with access and
/// `queue_position_updated` to each queued customer.
pub(crate) fn queue_pushes(state: &OrgState, now: i64) -> Vec<Outgoing> {
    let mut pushes = Vec::new();
    let mut per_agent: BTreeMap<&str, Vec<QueuePositionEntry>> = BTreeMap::new();
    for chat_id in &state.queue {
        let chat = &state.chats[chat_id];
        let (Some(thread), Some(queue)) = (chat.active_thread(), queue_of(state, chat, now)) else {
            continue;
        };
        let entry = QueuePositionEntry {
            chat_id: chat.id.clone(),
            thread_id: thread.id.clone(),
            queue,
        };
        for (id, a) in &state.agents {
            if has_group_access(a, &chat.access) && !a.sessions.is_empty() {
                per_agent
                    .entry(id.as_str())
                    .or_default()
                    .push(entry.clone());
            }
        }
        if let Some(c) = chat
            .customer_id
            .as_ref()
            .and_then(|id| state.customers.get(id))
            && !c.sessions.is_empty()
        {
            pushes.push(Outgoing::new(
                "queue_position_updated",
                &entry,
                c.sessions.clone(),
                None,
            ));
        }
    }
    for (agent, entries) in per_agent {
        let sessions: Vec<_> = state.agents[agent]
            .sessions
            .iter()
            .map(|s| s.conn.clone())
            .collect();
        pushes.push(Outgoing::new(
            "queue_positions_updated",
            entries,
            sessions,
            None,
        ));
    }
    pushes
}
