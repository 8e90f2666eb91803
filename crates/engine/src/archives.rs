//! `list_archives`: the threads of the chats an agent may read, one chat
//! per matching thread, filtered by the reference's filters and paged like
//! every list ([`crate::paging`]).
//!
//! Where each filter is answered:
//! - `query`: the store's full-text index (SQLite FTS5), never a scan of
//!   event bodies: [`chatgate_store::Store::search_threads`] finds the
//!   matching threads, [`chatgate_store::Store::search_text`] highlights the
//!   matches of the page's threads only;
//! - chat and thread metadata (`group_ids`, `from`/`to`, `thread_ids`,
//!   `tags`, `properties`, v3.6 `chat_ids`/`customer_id`/`customer_email`):
//!   the hot state, under the organization's lock;
//! - `agents`, `event_types`, `agent_response`: the kinds and authors of the
//!   candidate threads' events ([`chatgate_store::Store::thread_facts`]), read
//!   only when one of them is given.
//!
//! chatgate records no greetings, sales, goals, surveys or customer
//! countries: those filters see an empty set (`exists: false` and
//! `exclude_values` match every thread; `exists: true` and `values` none).

use crate::Engine;
use crate::chat_methods::ChatCaller;
use crate::chat_more::parse_time_us;
use crate::chats::{can_read, load_thread_events, now_us, wire_thread, wire_users};
use crate::dispatch::Reply;
use crate::error::{internal, store_error, validation};
use crate::paging::{ListRequest, Paging};
use crate::push::submit;
use chatgate_protocol::chats::{ListArchivesRequest, ListArchivesResponse};
use chatgate_protocol::data::{Access, Chat, Highlight};
use chatgate_protocol::{ErrorBody, Version};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// `filters.thread_ids` holds at most this many ids.
const MAX_THREAD_IDS: usize = 20;
/// `filters.group_ids` holds at most this many ids.
const MAX_GROUP_IDS: usize = 200;
/// v3.6 `filters.chat_ids` holds at most this many ids.
const MAX_CHAT_IDS: usize = 1000;
/// Most threads one full-text search finds (further matches are cut;
/// named in proto-docs/archives.md).
const MAX_TEXT_HITS: u32 = 100_000;
/// Longest highlight tag.
const MAX_TAG_CHARS: usize = 64;

/// `exists` / `values` / `exclude_values` (+ `require_every_value`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValueFilter {
    exists: Option<bool>,
    values: Option<Vec<Value>>,
    exclude_values: Option<Vec<Value>>,
    #[serde(default)]
    require_every_value: bool,
}

impl ValueFilter {
    fn check(&self, name: &str) -> Result<(), ErrorBody> {
        let given = [
            self.exists.is_some(),
            self.values.is_some(),
            self.exclude_values.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given != 1 {
            return Err(validation(format!(
                "`filters.{name}` takes exactly one of `exists`, `values`, `exclude_values`"
            )));
        }
        Ok(())
    }

    /// Whether a thread whose values are `have` passes.
    fn matches(&self, have: &[Value]) -> bool {
        let has = |v: &Value| have.contains(v);
        if let Some(e) = self.exists {
            return have.is_empty() != e;
        }
        if let Some(vs) = &self.values {
            return if self.require_every_value {
                !vs.is_empty() && vs.iter().all(has)
            } else {
                vs.iter().any(has)
            };
        }
        if let Some(vs) = &self.exclude_values {
            return if self.require_every_value {
                vs.is_empty() || !vs.iter().all(has)
            } else {
                !vs.iter().any(has)
            };
        }
        true
    }
}

/// `values` / `exclude_values` of ids.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdsFilter<T> {
    values: Option<Vec<T>>,
    exclude_values: Option<Vec<T>>,
}

impl<T: PartialEq> IdsFilter<T> {
    /// Whether any of `have` is allowed: one of `values`, none of
    /// `exclude_values`.
    fn any_allowed<'a>(&self, mut have: impl Iterator<Item = &'a [T]> + Clone) -> bool
    where
        T: 'a,
    {
        let ok_values = self
            .values
            .as_ref()
            .is_none_or(|vs| have.clone().any(|h| h.iter().any(|x| vs.contains(x))));
        let ok_exclude = self
            .exclude_values
            .as_ref()
            .is_none_or(|vs| !have.any(|h| h.iter().any(|x| vs.contains(x))));
        ok_values && ok_exclude
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentResponseFilter {
    exists: Option<bool>,
    #[serde(default)]
    first: bool,
    agents: Option<IdsFilter<String>>,
    groups: Option<IdsFilter<u32>>,
}

/// Filters over data chatgate does not record (greetings, surveys, forms).
#[derive(Clone, Debug, Default, Deserialize)]
struct AbsentFilter {
    exists: Option<bool>,
    values: Option<Value>,
    #[serde(flatten)]
    _rest: BTreeMap<String, Value>,
}

impl AbsentFilter {
    /// Nothing is recorded: only filters that ask for something fail.
    fn matches(&self) -> bool {
        self.exists != Some(true) && self.values.is_none()
    }
}

/// `filters` of `list_archives`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ArchiveFilters {
    query: Option<String>,
    from: Option<String>,
    to: Option<String>,
    thread_ids: Option<Vec<String>>,
    group_ids: Option<Vec<u32>>,
    properties: Option<BTreeMap<String, BTreeMap<String, ValueFilter>>>,
    agents: Option<ValueFilter>,
    tags: Option<ValueFilter>,
    sales: Option<ValueFilter>,
    goals: Option<ValueFilter>,
    surveys: Option<Vec<AbsentFilter>>,
    forms: Option<BTreeMap<String, AbsentFilter>>,
    event_types: Option<ValueFilter>,
    greetings: Option<AbsentFilter>,
    agent_response: Option<AgentResponseFilter>,
    customer_countries: Option<ValueFilter>,
    /// v3.6.
    customer_id: Option<String>,
    /// v3.6.
    customer_email: Option<String>,
    /// v3.6 (final).
    chat_ids: Option<Vec<String>>,
}

/// Filters checked and with their times parsed.
struct Compiled {
    f: ArchiveFilters,
    from_us: Option<i64>,
    to_us: Option<i64>,
}

impl Compiled {
    fn new(f: ArchiveFilters, version: Version) -> Result<Compiled, ErrorBody> {
        let time = |s: &Option<String>, name: &str| {
            s.as_deref()
                .map(|s| {
                    parse_time_us(s).map_err(|_| {
                        validation(format!("`filters.{name}` is not an RFC 3339 date-time"))
                    })
                })
                .transpose()
        };
        let from_us = time(&f.from, "from")?;
        let to_us = time(&f.to, "to")?;
        if let Some(ids) = &f.thread_ids {
            if ids.is_empty() || ids.len() > MAX_THREAD_IDS {
                return Err(validation(format!(
                    "`filters.thread_ids` takes 1-{MAX_THREAD_IDS} ids"
                )));
            }
            let alone = ArchiveFilters {
                thread_ids: f.thread_ids.clone(),
                ..Default::default()
            };
            if serde_json_like(&alone) != serde_json_like(&f) {
                return Err(validation(
                    "`filters.thread_ids` cannot be combined with other filters",
                ));
            }
        }
        if f.group_ids
            .as_ref()
            .is_some_and(|g| g.len() > MAX_GROUP_IDS)
        {
            return Err(validation(format!(
                "`filters.group_ids` takes at most {MAX_GROUP_IDS} ids"
            )));
        }
        if f.chat_ids.as_ref().is_some_and(|c| c.len() > MAX_CHAT_IDS) {
            return Err(validation(format!(
                "`filters.chat_ids` takes at most {MAX_CHAT_IDS} ids"
            )));
        }
        if version < Version::V3_6
            && (f.customer_id.is_some() || f.customer_email.is_some() || f.chat_ids.is_some())
        {
            return Err(validation(
                "`filters.customer_id`, `customer_email` and `chat_ids` are v3.6 filters",
            ));
        }
        if let Some(q) = &f.query
            && !q.chars().any(char::is_alphanumeric)
        {
            return Err(validation("`filters.query` has no word to search for"));
        }
        for (name, filter) in [
            ("agents", &f.agents),
            ("tags", &f.tags),
            ("sales", &f.sales),
            ("goals", &f.goals),
            ("event_types", &f.event_types),
            ("customer_countries", &f.customer_countries),
        ] {
            if let Some(filter) = filter {
                filter.check(name)?;
            }
        }
        if let Some(e) = &f.event_types
            && e.exists.is_some()
        {
            return Err(validation(
                "`filters.event_types` takes `values` or `exclude_values`",
            ));
        }
        for (ns, props) in f.properties.iter().flatten() {
            for (name, filter) in props {
                filter.check(&format!("properties.{ns}.{name}"))?;
            }
        }
        Ok(Compiled { f, from_us, to_us })
    }

    /// Whether the event-based filters need the store's facts.
    fn needs_facts(&self) -> bool {
        self.f.agents.is_some() || self.f.event_types.is_some() || self.f.agent_response.is_some()
    }

    /// Filters nobody can satisfy because chatgate records nothing for them.
    fn absent_ok(&self) -> bool {
        let none: &[Value] = &[];
        [&self.f.sales, &self.f.goals, &self.f.customer_countries]
            .iter()
            .all(|f| f.as_ref().is_none_or(|f| f.matches(none)))
            && self.f.greetings.as_ref().is_none_or(AbsentFilter::matches)
            && self.f.surveys.iter().flatten().all(AbsentFilter::matches)
            && self.f.forms.iter().flatten().all(|(_, f)| f.matches())
    }
}

/// A comparable rendering of which filters are set (for the `thread_ids`
/// exclusivity check).
fn serde_json_like(f: &ArchiveFilters) -> String {
    format!("{f:?}")
}

/// A thread that passed the metadata filters.
struct Candidate {
    chat_id: String,
    thread_id: String,
    created_us: i64,
    /// Agents present in the chat when this is its last thread.
    present_agents: Vec<String>,
}

/// `list_archives`.
pub(crate) async fn list_archives(
    engine: &Engine,
    caller: &ChatCaller,
    req: ListArchivesRequest,
) -> Result<Reply, ErrorBody> {
    let org_id = caller.org.org.id.0.clone();
    let me = caller.actor.id().to_owned();
    let ids = (org_id.as_str(), me.as_str(), "list_archives");
    let key = &engine.inner.page_key;
    let list = ListRequest {
        page_id: req.page_id.as_deref(),
        sort_order: req.sort_order.as_deref(),
        limit: req.limit,
        filters: req.filters.clone(),
        filters_name: None,
    };
    let mut paging = Paging::from_request(key, ids, list, (10, 100), now_us())?;
    let filters: ArchiveFilters = match &paging.filters {
        Value::Null => ArchiveFilters::default(),
        v => serde_json::from_value(v.clone())
            .map_err(|e| validation(format!("invalid `filters`: {e}")))?,
    };
    let c = Compiled::new(filters, caller.version)?;
    if c.f.thread_ids.is_some() {
        if req.page_id.is_some() {
            return Err(validation(
                "`filters.thread_ids` cannot be used with pagination",
            ));
        }
        paging.limit = MAX_THREAD_IDS as u32;
    }
    let highlights = match &req.highlights {
        None => None,
        Some(h) => {
            let pre = h.pre_tag.clone().unwrap_or_else(|| "<em>".into());
            let post = h.post_tag.clone().unwrap_or_else(|| "</em>".into());
            if pre.chars().count() > MAX_TAG_CHARS || post.chars().count() > MAX_TAG_CHARS {
                return Err(validation(format!(
                    "`highlights` tags take at most {MAX_TAG_CHARS} characters"
                )));
            }
            Some((pre, post))
        }
    };

    // Full text first, through the index, outside the lock: which threads
    // match (highlights are made for the page's threads only, at the end).
    let text_threads: Option<HashSet<String>> = match &c.f.query {
        None => None,
        Some(q) => {
            let store = engine.inner.store.clone();
            let (org, q) = (org_id.clone(), q.clone());
            let threads =
                tokio::task::spawn_blocking(move || store.search_threads(&org, &q, MAX_TEXT_HITS))
                    .await
                    .map_err(internal)?
                    .map_err(store_error)?;
            Some(threads.into_iter().collect())
        }
    };

    // Threads before a chat's last are in the store only: read them all
    // (after a barrier) when any chat has some.
    let any_older = c.absent_ok() && caller.org.lock().chats.values().any(|c| c.older > 0);
    let stored = if any_older {
        crate::chats::load_org_threads(&engine.inner.store, &org_id).await?
    } else {
        HashMap::new()
    };

    // Metadata filters.
    let (mut candidates, agent_groups) = {
        let state = caller.org.lock();
        let agent = state
            .agents
            .get(&me)
            .ok_or_else(|| validation("requester is not an agent"))?;
        let all = caller.reads_all_chats();
        let mut out = Vec::new();
        if c.absent_ok() {
            for chat in state.chats.values() {
                if !can_read(agent, chat, all) || !chat_matches(&c.f, &state, chat) {
                    continue;
                }
                let all = chat.all_threads(stored.get(&chat.id).map_or(&[], Vec::as_slice));
                for (index, t) in all.iter().enumerate() {
                    if !thread_matches(&c, chat, t, text_threads.as_ref()) {
                        continue;
                    }
                    let last = index + 1 == all.len();
                    out.push(Candidate {
                        chat_id: chat.id.clone(),
                        thread_id: t.id.clone(),
                        created_us: t.created_at_us,
                        present_agents: if last {
                            chat.present_agents().map(str::to_owned).collect()
                        } else {
                            Vec::new()
                        },
                    });
                }
            }
        }
        let agent_groups: HashMap<String, Vec<u32>> = if c.needs_facts() {
            state
                .agents
                .iter()
                .map(|(id, a)| (id.clone(), a.agent.groups.iter().map(|(g, _)| *g).collect()))
                .collect()
        } else {
            HashMap::new()
        };
        (out, agent_groups)
    };

    // Event-based filters on the candidates' event facts.
    if c.needs_facts() && !candidates.is_empty() {
        let store = engine.inner.store.clone();
        let org = org_id.clone();
        let thread_ids: Vec<String> = candidates.iter().map(|x| x.thread_id.clone()).collect();
        let facts = tokio::task::spawn_blocking(move || store.thread_facts(&org, &thread_ids))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        let keep: Vec<bool> = candidates
            .iter()
            .zip(&facts)
            .map(|(cand, facts)| facts_match(&c.f, cand, facts, &agent_groups))
            .collect();
        let mut keep = keep.into_iter();
        candidates.retain(|_| keep.next().unwrap_or(false));
    }

    let items = candidates
        .into_iter()
        .map(|x| ((x.created_us, x.thread_id.clone()), x.created_us, x))
        .collect();
    let (page, total, mut next_page_id, mut previous_page_id) = paging.page(key, ids, items);
    if c.f.thread_ids.is_some() {
        next_page_id = None;
        previous_page_id = None;
    }
    let page_threads: Vec<String> = page.iter().map(|x| x.thread_id.clone()).collect();
    let text_hits: HashMap<String, Vec<Highlight>> = match (&c.f.query, &highlights) {
        (Some(q), Some((pre, post))) if !page_threads.is_empty() => {
            let query = chatgate_store::TextQuery {
                text: q.clone(),
                pre_tag: pre.clone(),
                post_tag: post.clone(),
                max_hits: MAX_TEXT_HITS,
                thread_ids: Some(page_threads.clone()),
            };
            let store = engine.inner.store.clone();
            let org = org_id.clone();
            let hits = tokio::task::spawn_blocking(move || store.search_text(&org, &query))
                .await
                .map_err(internal)?
                .map_err(store_error)?;
            let mut by_thread: HashMap<String, Vec<Highlight>> = HashMap::new();
            for h in hits {
                by_thread.entry(h.thread_id).or_default().push(Highlight {
                    event_id: h.event_id,
                    text: h.highlighted,
                });
            }
            by_thread
        }
        _ => HashMap::new(),
    };
    let loaded = load_thread_events(&engine.inner.store, &org_id, page_threads).await?;
    let now = now_us();
    let (pending, chats) = {
        let state = caller.org.lock();
        let mut chats = Vec::with_capacity(page.len());
        for (cand, events) in page.into_iter().zip(loaded) {
            let Some(chat) = state.chats.get(&cand.chat_id) else {
                continue;
            };
            // Where the thread sits now: hot threads as they are now, older
            // ones as read before the lock.
            let all = chat.all_threads(stored.get(&cand.chat_id).map_or(&[], Vec::as_slice));
            let Some(index) = all.iter().position(|t| t.id == cand.thread_id) else {
                continue;
            };
            let (t, at) = (all[index], crate::chats::Neighbors::within(&all, index));
            // The last thread's events are hot while the chat is active.
            let events = if at.is_last && !chat.events_retired {
                chat.events.clone()
            } else {
                events
            };
            let mut thread = wire_thread(&state, chat, t, at, events, false, now);
            crate::chats::add_visit(&mut thread, t, caller.version, false);
            // Access is per chat: every thread of a readable chat is
            // accessible.
            thread.previous_accessible_thread_id = thread.previous_thread_id.clone();
            thread.next_accessible_thread_id = thread.next_thread_id.clone();
            if highlights.is_some() {
                thread.highlight =
                    Some(text_hits.get(&cand.thread_id).cloned().unwrap_or_default());
            }
            chats.push(Chat {
                id: chat.id.clone(),
                users: wire_users(&state, chat, false),
                properties: Some(chat.properties.clone()),
                access: Some(Access {
                    group_ids: chat.access.clone(),
                }),
                thread: Some(thread),
                threads: None,
                is_followed: Some(chat.followers.contains(&me)),
            });
        }
        (submit(&engine.inner.store, Vec::new(), Vec::new())?, chats)
    };
    pending.wait().await?;
    let body = ListArchivesResponse {
        chats,
        found_chats: total as u64,
        next_page_id,
        previous_page_id,
    };
    Ok(Reply::ok(serde_json::to_value(body).expect("serializes")))
}

/// Chat-level filters.
fn chat_matches(
    f: &ArchiveFilters,
    state: &crate::state::OrgState,
    chat: &crate::chats::ChatState,
) -> bool {
    if let Some(groups) = &f.group_ids
        && !groups.iter().any(|g| chat.access.contains(g))
    {
        return false;
    }
    if let Some(ids) = &f.chat_ids
        && !ids.contains(&chat.id)
    {
        return false;
    }
    if let Some(id) = &f.customer_id
        && chat.customer_id.as_ref() != Some(id)
    {
        return false;
    }
    if let Some(email) = &f.customer_email {
        let has = chat
            .customer_id
            .as_ref()
            .and_then(|c| state.customers.get(c))
            .and_then(|c| c.email.as_ref())
            .is_some_and(|e| e.eq_ignore_ascii_case(email));
        if !has {
            return false;
        }
    }
    true
}

/// Thread-level filters answered by the hot state and the text hits.
fn thread_matches(
    c: &Compiled,
    chat: &crate::chats::ChatState,
    t: &crate::chats::ThreadState,
    text_threads: Option<&HashSet<String>>,
) -> bool {
    if let Some(ids) = &c.f.thread_ids
        && !ids.contains(&t.id)
    {
        return false;
    }
    if c.from_us.is_some_and(|from| t.created_at_us < from)
        || c.to_us.is_some_and(|to| t.created_at_us > to)
    {
        return false;
    }
    if let Some(hits) = text_threads
        && !hits.contains(&t.id)
    {
        return false;
    }
    if let Some(tags) = &c.f.tags {
        let have: Vec<Value> = t.tags.iter().map(|x| Value::String(x.clone())).collect();
        if !tags.matches(&have) {
            return false;
        }
    }
    for (ns, props) in c.f.properties.iter().flatten() {
        for (name, filter) in props {
            // A thread property, else the chat's property of that name.
            let value = t
                .properties
                .get(ns)
                .and_then(|p| p.get(name))
                .or_else(|| chat.properties.get(ns).and_then(|p| p.get(name)));
            let have: Vec<Value> = value.cloned().into_iter().collect();
            if !filter.matches(&have) {
                return false;
            }
        }
    }
    true
}

/// Event kinds that count as an agent's response.
fn is_response(kind: &str) -> bool {
    !matches!(kind, "system_message" | "system")
}

/// The event-based filters.
fn facts_match(
    f: &ArchiveFilters,
    cand: &Candidate,
    facts: &[chatgate_store::EventFact],
    agent_groups: &HashMap<String, Vec<u32>>,
) -> bool {
    let is_agent = |a: &str| agent_groups.contains_key(a);
    if let Some(filter) = &f.agents {
        let mut agents: Vec<Value> = Vec::new();
        let mut seen = HashSet::new();
        let authors = facts.iter().filter_map(|x| x.author_id.as_deref());
        for a in authors.chain(cand.present_agents.iter().map(String::as_str)) {
            if is_agent(a) && seen.insert(a) {
                agents.push(Value::String(a.to_owned()));
            }
        }
        if !filter.matches(&agents) {
            return false;
        }
    }
    if let Some(filter) = &f.event_types {
        let mut kinds: Vec<Value> = Vec::new();
        for x in facts {
            let k = Value::String(x.kind.clone());
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        if !filter.matches(&kinds) {
            return false;
        }
    }
    if let Some(r) = &f.agent_response {
        let mut responders: Vec<&str> = facts
            .iter()
            .filter(|x| is_response(&x.kind))
            .filter_map(|x| x.author_id.as_deref())
            .filter(|a| is_agent(a))
            .collect();
        if r.first {
            responders.truncate(1);
        }
        if let Some(e) = r.exists
            && responders.is_empty() == e
        {
            return false;
        }
        if (r.agents.is_some() || r.groups.is_some()) && responders.is_empty() {
            return false;
        }
        if let Some(a) = &r.agents {
            let ids: Vec<[String; 1]> = responders.iter().map(|x| [(*x).to_owned()]).collect();
            if !a.any_allowed(ids.iter().map(|x| &x[..])) {
                return false;
            }
        }
        if let Some(g) = &r.groups {
            let groups: Vec<&[u32]> = responders
                .iter()
                .map(|x| agent_groups.get(*x).map(Vec::as_slice).unwrap_or(&[]))
                .collect();
            if !g.any_allowed(groups.iter().copied()) {
                return false;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vf(v: Value) -> ValueFilter {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn value_filters_follow_the_reference() {
        let have = [json!("a"), json!("b")];
        assert!(vf(json!({"exists": true})).matches(&have));
        assert!(!vf(json!({"exists": false})).matches(&have));
        assert!(vf(json!({"exists": false})).matches(&[]));
        assert!(vf(json!({"values": ["b", "z"]})).matches(&have));
        assert!(!vf(json!({"values": ["b", "z"], "require_every_value": true})).matches(&have));
        assert!(vf(json!({"values": ["a", "b"], "require_every_value": true})).matches(&have));
        assert!(!vf(json!({"exclude_values": ["a"]})).matches(&have));
        assert!(vf(json!({"exclude_values": ["z"]})).matches(&have));
        assert!(
            vf(json!({"exclude_values": ["a", "z"], "require_every_value": true})).matches(&have)
        );
        assert!(
            !vf(json!({"exclude_values": ["a", "b"], "require_every_value": true})).matches(&have)
        );
        assert!(
            vf(json!({"values": ["a"], "exists": true}))
                .check("x")
                .is_err()
        );
        assert!(vf(json!({})).check("x").is_err());
    }

    #[test]
    fn thread_ids_stand_alone_and_v36_filters_need_v36() {
        let f = |v: Value| serde_json::from_value::<ArchiveFilters>(v).unwrap();
        assert!(Compiled::new(f(json!({"thread_ids": ["T"]})), Version::V3_5).is_ok());
        assert!(
            Compiled::new(f(json!({"thread_ids": ["T"], "query": "x"})), Version::V3_5).is_err()
        );
        assert!(Compiled::new(f(json!({"customer_id": "c"})), Version::V3_5).is_err());
        assert!(Compiled::new(f(json!({"customer_id": "c"})), Version::V3_6).is_ok());
        assert!(Compiled::new(f(json!({"query": " ?! "})), Version::V3_5).is_err());
        assert!(Compiled::new(f(json!({"from": "yesterday"})), Version::V3_5).is_err());
        assert!(serde_json::from_value::<ArchiveFilters>(json!({"nope": 1})).is_err());
    }
}
