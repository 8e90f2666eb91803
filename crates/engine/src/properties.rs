//! Properties: definitions (Configuration API `register_property`,
//! `list_properties`, `unregister_property`, plus the built-in namespaces)
//! and the six methods that set and delete chat, thread and event
//! properties, with their pushes.
//!
//! A value is accepted only for a defined property, with write access for
//! the requester's kind (agent or customer) at that location, and of the
//! defined type, domain and range. Customers see and hear only what their
//! read access covers.

use crate::Engine;
use crate::chat_methods::{ChatCaller, not_found, readable};
use crate::chats::{
    Audience, ChatState, load_chat_threads, load_thread_events, now_us, recipients,
};
use crate::dispatch::{Reply, parse};
use crate::error::{err, validation};
use crate::push::{Outgoing, commit, reserve};
use crate::state::OrgState;
use chatgate_domain::OrgId;
use chatgate_protocol::chats::{PropertiesPush, PropertiesRequest, PropertyNames};
use chatgate_protocol::data::{Event, Properties};
use chatgate_protocol::{ErrorBody, ErrorType};
use chatgate_store::{Op, PropertyDefRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The six property methods (agents and customers alike).
pub(crate) const METHODS: &[&str] = &[
    "update_chat_properties",
    "delete_chat_properties",
    "update_thread_properties",
    "delete_thread_properties",
    "update_event_properties",
    "delete_event_properties",
];

/// Longest property or namespace name.
const MAX_NAME_CHARS: usize = 64;
/// Longest string value.
pub(crate) const MAX_STRING_CHARS: usize = 4096;
/// Most registered properties per organization.
const MAX_DEFINITIONS: usize = 1000;
/// Most properties one object (chat, thread or event) carries.
const MAX_PER_OBJECT: usize = 100;

/// Where a property lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Location {
    Chat,
    Thread,
    Event,
}

impl Location {
    fn as_str(self) -> &'static str {
        match self {
            Location::Chat => "chat",
            Location::Thread => "thread",
            Location::Event => "event",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PropType {
    Int,
    Bool,
    String,
    TokenizedString,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    Read,
    Write,
}

/// Who may read and write at one location.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Who {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    agent: Vec<Mode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    customer: Vec<Mode>,
}

/// Access per location.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PropertyAccess {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chat: Option<Who>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    thread: Option<Who>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<Who>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    license: Option<Who>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<Who>,
}

impl PropertyAccess {
    fn at(&self, loc: Location) -> Option<&Who> {
        match loc {
            Location::Chat => self.chat.as_ref(),
            Location::Thread => self.thread.as_ref(),
            Location::Event => self.event.as_ref(),
        }
    }
    fn allows(&self, loc: Location, by_customer: bool, mode: Mode) -> bool {
        self.at(loc).is_some_and(|w| {
            let modes = if by_customer { &w.customer } else { &w.agent };
            // Write includes read.
            modes.contains(&mode) || (mode == Mode::Read && modes.contains(&Mode::Write))
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Range {
    from: i64,
    to: i64,
}

/// A property definition, as `list_properties` shows it and the store
/// keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct PropertyDef {
    #[serde(rename = "type")]
    kind: PropType,
    access: PropertyAccess,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    domain: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    range: Option<Range>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_value: Option<Value>,
}

impl PropertyDef {
    /// Whether `v` is a value of this property.
    fn check_value(&self, v: &Value) -> Result<(), String> {
        let ok = match self.kind {
            PropType::Int => v.is_i64(),
            PropType::Bool => v.is_boolean(),
            PropType::String | PropType::TokenizedString => v.is_string(),
        };
        if !ok {
            let t = serde_json::to_value(self.kind).expect("serializes");
            return Err(format!("must be of type {}", t.as_str().unwrap_or("?")));
        }
        if let Some(s) = v.as_str()
            && s.chars().count() > MAX_STRING_CHARS
        {
            return Err(format!("is longer than {MAX_STRING_CHARS} characters"));
        }
        if let Some(domain) = &self.domain
            && !domain.contains(v)
        {
            return Err("is not in the property's domain".into());
        }
        if let (Some(r), Some(i)) = (&self.range, v.as_i64())
            && (i < r.from || i > r.to)
        {
            return Err(format!("is outside the range {}-{}", r.from, r.to));
        }
        Ok(())
    }

    /// Checks a definition being registered.
    fn check(&self) -> Result<(), String> {
        let a = &self.access;
        if a.chat.is_none()
            && a.thread.is_none()
            && a.event.is_none()
            && a.license.is_none()
            && a.group.is_none()
        {
            return Err("`access` must name at least one location".into());
        }
        if self.range.is_some() && self.kind != PropType::Int {
            return Err("`range` is only for int properties".into());
        }
        if let Some(r) = &self.range
            && r.from > r.to
        {
            return Err("`range.from` is greater than `range.to`".into());
        }
        if self.domain.as_ref().is_some_and(Vec::is_empty) {
            return Err("`domain` must not be empty".into());
        }
        let plain = PropertyDef {
            domain: None,
            range: None,
            ..self.clone()
        };
        for v in self.domain.iter().flatten() {
            plain
                .check_value(v)
                .map_err(|e| format!("a `domain` value {e}"))?;
        }
        if let Some(v) = &self.default_value {
            self.check_value(v)
                .map_err(|e| format!("`default_value` {e}"))?;
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > MAX_STRING_CHARS)
        {
            return Err(format!(
                "`description` is longer than {MAX_STRING_CHARS} characters"
            ));
        }
        Ok(())
    }
}

/// The built-in namespaces (the reference's §10.4): always defined, never
/// registered or unregistered.
static BUILT_IN: LazyLock<BTreeMap<(String, String), PropertyDef>> = LazyLock::new(|| {
    let rw = vec![Mode::Read, Mode::Write];
    let agents_rw_customers_r = Who {
        agent: rw.clone(),
        customer: vec![Mode::Read],
    };
    let everyone_rw = Who {
        agent: rw.clone(),
        customer: rw.clone(),
    };
    let read_only = Who {
        agent: vec![Mode::Read],
        customer: vec![Mode::Read],
    };
    let def = |kind, who: &Who, locs: &[Location]| PropertyDef {
        kind,
        access: PropertyAccess {
            chat: locs.contains(&Location::Chat).then(|| who.clone()),
            thread: locs.contains(&Location::Thread).then(|| who.clone()),
            event: locs.contains(&Location::Event).then(|| who.clone()),
            license: None,
            group: None,
        },
        description: None,
        domain: None,
        range: None,
        default_value: None,
    };
    let chat_thread = [Location::Chat, Location::Thread];
    let all = [Location::Chat, Location::Thread, Location::Event];
    let mut m = BTreeMap::new();
    let mut put = |ns: &str, name: &str, d: PropertyDef| {
        m.insert((ns.to_owned(), name.to_owned()), d);
    };
    for name in [
        "continuous",
        "idle",
        "unassigned",
        "pinned",
        "was_pinned",
        "ignore_agents_routing",
        "ignore_bots",
        "unreplied",
        "offline_message",
        "email_follow_up",
    ] {
        put(
            "routing",
            name,
            def(PropType::Bool, &agents_rw_customers_r, &chat_thread),
        );
    }
    put(
        "routing",
        "last_transfer_timestamp",
        def(PropType::Int, &agents_rw_customers_r, &chat_thread),
    );
    for name in ["referrer", "start_url", "transcript_email"] {
        put(
            "routing",
            name,
            def(PropType::String, &agents_rw_customers_r, &chat_thread),
        );
    }
    put(
        "rating",
        "score",
        PropertyDef {
            domain: Some(vec![json!(0), json!(1)]),
            ..def(PropType::Int, &everyone_rw, &chat_thread)
        },
    );
    put(
        "rating",
        "comment",
        def(PropType::String, &everyone_rw, &chat_thread),
    );
    for name in ["client_id", "customer_client_id"] {
        put(
            "source",
            name,
            def(PropType::String, &read_only, &chat_thread),
        );
    }
    put(
        "test",
        "bool_property",
        def(PropType::Bool, &everyone_rw, &all),
    );
    put(
        "test",
        "int_property",
        def(PropType::Int, &everyone_rw, &all),
    );
    put(
        "test",
        "string_property",
        def(PropType::String, &everyone_rw, &all),
    );
    put(
        "test",
        "tokenized_string_property",
        def(PropType::TokenizedString, &everyone_rw, &all),
    );
    m
});

/// Namespaces that cannot be registered into.
const RESERVED: &[&str] = &["routing", "rating", "source", "test", "chats", "groups"];

/// The definition of `ns.name`: registered, else built in.
pub(crate) fn definition<'a>(state: &'a OrgState, ns: &str, name: &str) -> Option<&'a PropertyDef> {
    let key = (ns.to_owned(), name.to_owned());
    state.property_defs.get(&key).or_else(|| BUILT_IN.get(&key))
}

/// Checks that the requester may set every value of `props` at `loc`.
pub(crate) fn check_write(
    state: &OrgState,
    loc: Location,
    by_customer: bool,
    props: &Properties,
) -> Result<(), ErrorBody> {
    let count: usize = props.values().map(Map::len).sum();
    if count > MAX_PER_OBJECT {
        return Err(validation(format!(
            "at most {MAX_PER_OBJECT} properties per {}",
            loc.as_str()
        )));
    }
    for (ns, values) in props {
        for (name, v) in values {
            let def = writable(state, loc, by_customer, ns, name)?;
            def.check_value(v)
                .map_err(|e| validation(format!("property `{ns}.{name}` {e}")))?;
        }
    }
    Ok(())
}

fn writable<'a>(
    state: &'a OrgState,
    loc: Location,
    by_customer: bool,
    ns: &str,
    name: &str,
) -> Result<&'a PropertyDef, ErrorBody> {
    let def = definition(state, ns, name).ok_or_else(|| {
        validation(format!(
            "property `{ns}.{name}` is not registered (Configuration API `register_property`)"
        ))
    })?;
    if def.access.at(loc).is_none() {
        return Err(validation(format!(
            "property `{ns}.{name}` is not a {} property",
            loc.as_str()
        )));
    }
    if !def.access.allows(loc, by_customer, Mode::Write) {
        return Err(err(
            ErrorType::Authorization,
            format!(
                "{} may not write property `{ns}.{name}` of a {}",
                if by_customer {
                    "a customer"
                } else {
                    "an agent"
                },
                loc.as_str()
            ),
        ));
    }
    Ok(def)
}

/// The part of `props` a customer may read at `loc`.
pub(crate) fn customer_view(state: &OrgState, loc: Location, props: &Properties) -> Properties {
    let mut out = Properties::new();
    for (ns, values) in props {
        let kept: Map<String, Value> = values
            .iter()
            .filter(|(name, _)| {
                definition(state, ns, name).is_some_and(|d| d.access.allows(loc, true, Mode::Read))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !kept.is_empty() {
            out.insert(ns.clone(), kept);
        }
    }
    out
}

/// `props` as the viewer may read them at `loc` (agents read everything).
pub(crate) fn view(
    state: &OrgState,
    loc: Location,
    props: &Properties,
    for_customer: bool,
) -> Properties {
    if for_customer {
        customer_view(state, loc, props)
    } else {
        props.clone()
    }
}

/// An event as a customer may read it: only the properties it may read.
pub(crate) fn customer_event(state: &OrgState, e: &Event) -> Event {
    let mut e = e.clone();
    let c = e.common_mut();
    if let Some(p) = c.properties.take() {
        let kept = customer_view(state, Location::Event, &p);
        c.properties = (!kept.is_empty()).then_some(kept);
    }
    e
}

/// The names of `names` a customer may read at `loc`.
fn customer_names(state: &OrgState, loc: Location, names: &PropertyNames) -> PropertyNames {
    names
        .iter()
        .map(|(ns, list)| {
            let kept: Vec<String> = list
                .iter()
                .filter(|n| {
                    definition(state, ns, n).is_some_and(|d| d.access.allows(loc, true, Mode::Read))
                })
                .cloned()
                .collect();
            (ns.clone(), kept)
        })
        .filter(|(_, l)| !l.is_empty())
        .collect()
}

// ---- the six methods --------------------------------------------------------

/// Applies an update to `target`: returns the properties that changed.
fn merge(target: &mut Properties, update: &Properties) -> Properties {
    let mut changed = Properties::new();
    for (ns, values) in update {
        for (name, v) in values {
            let slot = target.entry(ns.clone()).or_default();
            if slot.get(name) != Some(v) {
                slot.insert(name.clone(), v.clone());
                changed
                    .entry(ns.clone())
                    .or_default()
                    .insert(name.clone(), v.clone());
            }
        }
    }
    changed
}

/// Removes names from `target`: returns those that were there.
fn remove(target: &mut Properties, names: &PropertyNames) -> PropertyNames {
    let mut removed = PropertyNames::new();
    for (ns, list) in names {
        let Some(slot) = target.get_mut(ns) else {
            continue;
        };
        for name in list {
            if slot.remove(name).is_some() {
                removed.entry(ns.clone()).or_default().push(name.clone());
            }
        }
        if slot.is_empty() {
            target.remove(ns);
        }
    }
    removed
}

fn check_delete(
    state: &OrgState,
    loc: Location,
    by_customer: bool,
    names: &PropertyNames,
) -> Result<(), ErrorBody> {
    for (ns, list) in names {
        for name in list {
            writable(state, loc, by_customer, ns, name)?;
        }
    }
    Ok(())
}

/// A change of properties, before it is applied.
enum Change {
    Update(Properties),
    Delete(PropertyNames),
}

/// What changed, ready for the pushes.
enum Changed {
    Updated(Properties),
    Deleted(PropertyNames),
}

impl Changed {
    fn is_empty(&self) -> bool {
        match self {
            Changed::Updated(p) => p.is_empty(),
            Changed::Deleted(n) => n.is_empty(),
        }
    }
}

fn apply(target: &mut Properties, change: &Change) -> Changed {
    match change {
        Change::Update(p) => Changed::Updated(merge(target, p)),
        Change::Delete(n) => Changed::Deleted(remove(target, n)),
    }
}

/// The RFC 7396 patch that makes an event's stored properties follow
/// `changed`; `after` is the event's properties after the change (emptied
/// namespaces and an emptied object are removed, as in the hot state).
fn event_patch(changed: &Changed, after: &Properties) -> String {
    if after.is_empty() {
        return json!({ "properties": null }).to_string();
    }
    let mut props = Map::new();
    match changed {
        Changed::Updated(p) => {
            for (ns, values) in p {
                props.insert(ns.clone(), Value::Object(values.clone()));
            }
        }
        Changed::Deleted(n) => {
            for (ns, list) in n {
                let patch = if after.contains_key(ns) {
                    Value::Object(list.iter().map(|k| (k.clone(), Value::Null)).collect())
                } else {
                    Value::Null
                };
                props.insert(ns.clone(), patch);
            }
        }
    }
    json!({ "properties": props }).to_string()
}

/// `update_*_properties` and `delete_*_properties` (agents and customers).
pub(crate) async fn properties_method(
    engine: &Engine,
    caller: &ChatCaller,
    action: &str,
    payload: Value,
) -> Result<Reply, ErrorBody> {
    let (loc, update) = match action {
        "update_chat_properties" => (Location::Chat, true),
        "delete_chat_properties" => (Location::Chat, false),
        "update_thread_properties" => (Location::Thread, true),
        "delete_thread_properties" => (Location::Thread, false),
        "update_event_properties" => (Location::Event, true),
        _ => (Location::Event, false),
    };
    let req: PropertiesRequest<Value> = parse(payload)?;
    let change = if update {
        Change::Update(serde_json::from_value(req.properties).map_err(|e| {
            validation(format!(
                "`properties` must be {{namespace: {{name: value}}}}: {e}"
            ))
        })?)
    } else {
        Change::Delete(serde_json::from_value(req.properties).map_err(|e| {
            validation(format!(
                "`properties` must be {{namespace: [name, ...]}}: {e}"
            ))
        })?)
    };
    let required = |v: &Option<String>, name: &str| {
        v.clone()
            .ok_or_else(|| validation(format!("`{name}` is required")))
    };
    let chat_id = match loc {
        Location::Chat => required(&req.id, "id")?,
        _ => required(&req.chat_id, "chat_id")?,
    };
    let thread_id = match loc {
        Location::Chat => None,
        _ => Some(required(&req.thread_id, "thread_id")?),
    };
    let event_id = match loc {
        Location::Event => Some(required(&req.event_id, "event_id")?),
        _ => None,
    };
    let by_customer = caller.actor.is_customer();
    {
        let state = caller.org.lock();
        match &change {
            Change::Update(p) => check_write(&state, loc, by_customer, p)?,
            Change::Delete(n) => check_delete(&state, loc, by_customer, n)?,
        }
    }
    // A thread that has left memory (and its events) is read from the store
    // first, under the engine's cold-edit lock (a thread's properties are
    // written back whole; two such edits at once must not lose one).
    let mut _cold_lock = None;
    let (older_thread, older_events) = match &thread_id {
        Some(t) => {
            // (thread in memory, its events in memory)
            let (hot, hot_events) = {
                let state = caller.org.lock();
                let chat = readable(&state, caller, &chat_id)?;
                let hot = chat.hot_thread(t).is_some();
                (hot, hot && !chat.events_retired)
            };
            let org = &caller.org.org.id.0;
            let store = &engine.inner.store;
            let thread = if loc == Location::Thread && !hot {
                _cold_lock = Some(engine.inner.cold_edits.lock().await);
                let stored = load_chat_threads(store, org, &chat_id).await?;
                Some(
                    stored
                        .into_iter()
                        .find(|x| &x.id == t)
                        .ok_or_else(|| not_found("thread", t))?,
                )
            } else {
                None
            };
            let events = if event_id.is_some() && !hot_events {
                let mut loaded = load_thread_events(store, org, vec![t.clone()]).await?;
                Some(loaded.pop().unwrap_or_default())
            } else {
                None
            };
            (thread, events)
        }
        None => (None, None),
    };
    let org_id = caller.org.org.id.clone();
    let reservation = reserve(&engine.inner.store)?;
    let pending = {
        let mut guard = caller.org.lock();
        let state = &mut *guard;
        readable(state, caller, &chat_id)?;
        let chat = state.chats.get_mut(&chat_id).expect("readable");
        let (changed, op) = match loc {
            Location::Chat => {
                let changed = apply(&mut chat.properties, &change);
                let op = Op::UpdateChat {
                    org: org_id.clone(),
                    chat_id: chat_id.clone(),
                    access: serde_json::to_string(&chat.access).expect("serializes"),
                    properties: serde_json::to_string(&chat.properties).expect("serializes"),
                };
                (changed, op)
            }
            Location::Thread => {
                let t = thread_id.as_deref().expect("required");
                let mut copy;
                let thread = match chat.threads.iter_mut().find(|x| x.id == t) {
                    Some(hot) => hot,
                    None => {
                        // Read before the lock (under the cold-edit lock).
                        let Some(stored) = &older_thread else {
                            return Err(err(
                                ErrorType::ServiceUnavailable,
                                "the thread was closed meanwhile; retry",
                            ));
                        };
                        copy = stored.clone();
                        &mut copy
                    }
                };
                let changed = apply(&mut thread.properties, &change);
                let op = Op::SetThreadProperties {
                    org: org_id.clone(),
                    thread_id: t.to_owned(),
                    properties: serde_json::to_string(&thread.properties).expect("serializes"),
                };
                (changed, op)
            }
            Location::Event => {
                let t = thread_id.as_deref().expect("required");
                let e = event_id.as_deref().expect("required");
                // The last thread's events, while they are in memory.
                let is_last =
                    chat.threads.last().is_some_and(|x| x.id == t) && !chat.events_retired;
                if !is_last && older_events.is_none() && chat.hot_thread(t).is_none() {
                    return Err(not_found("thread", t));
                }
                let mut copy;
                let event: &mut Event = if is_last {
                    chat.events
                        .iter_mut()
                        .find(|x| x.common().id.as_deref() == Some(e))
                        .ok_or_else(|| not_found("event", e))?
                } else {
                    // Loaded before the lock; the patch merges in the
                    // store, so a concurrent change of other keys stays.
                    let Some(events) = &older_events else {
                        return Err(err(
                            ErrorType::ServiceUnavailable,
                            "the thread was closed meanwhile; retry",
                        ));
                    };
                    copy = events
                        .iter()
                        .find(|x| x.common().id.as_deref() == Some(e))
                        .cloned()
                        .ok_or_else(|| not_found("event", e))?;
                    &mut copy
                };
                if by_customer
                    && event.common().visibility != chatgate_protocol::data::Visibility::All
                {
                    return Err(not_found("event", e));
                }
                let common = event.common_mut();
                let mut props = common.properties.take().unwrap_or_default();
                let changed = apply(&mut props, &change);
                let patch = event_patch(&changed, &props);
                common.properties = (!props.is_empty()).then_some(props);
                let op = Op::PatchEvent {
                    org: org_id.clone(),
                    chat_id: chat_id.clone(),
                    event_id: e.to_owned(),
                    patch,
                };
                (changed, op)
            }
        };
        if changed.is_empty() {
            return Ok(Reply::ok(json!({})));
        }
        let chat = &state.chats[&chat_id];
        let pushes = property_pushes(state, chat, loc, thread_id, event_id, changed, caller);
        commit(reservation, vec![op], pushes)
    };
    pending.wait().await?;
    Ok(Reply::ok(json!({})))
}

fn property_pushes(
    state: &OrgState,
    chat: &ChatState,
    loc: Location,
    thread_id: Option<String>,
    event_id: Option<String>,
    changed: Changed,
    caller: &ChatCaller,
) -> Vec<Outgoing> {
    let verb = match changed {
        Changed::Updated(_) => "updated",
        Changed::Deleted(_) => "deleted",
    };
    let name = format!("{}_properties_{verb}", loc.as_str());
    let name: &'static str = match name.as_str() {
        "chat_properties_updated" => "chat_properties_updated",
        "chat_properties_deleted" => "chat_properties_deleted",
        "thread_properties_updated" => "thread_properties_updated",
        "thread_properties_deleted" => "thread_properties_deleted",
        "event_properties_updated" => "event_properties_updated",
        _ => "event_properties_deleted",
    };
    let agents = recipients(state, chat, Audience::Members { customer: false });
    let customer_sessions = chat
        .customer_id
        .as_ref()
        .and_then(|c| state.customers.get(c))
        .map(|c| c.sessions.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    let push = |props: Value| PropertiesPush {
        chat_id: chat.id.clone(),
        thread_id: thread_id.clone(),
        event_id: event_id.clone(),
        properties: props,
    };
    let (all, for_customer) = match &changed {
        Changed::Updated(p) => (serde_json::to_value(p).expect("serializes"), {
            let v = customer_view(state, loc, p);
            (!v.is_empty()).then(|| serde_json::to_value(v).expect("serializes"))
        }),
        Changed::Deleted(n) => (serde_json::to_value(n).expect("serializes"), {
            let v = customer_names(state, loc, n);
            (!v.is_empty()).then(|| serde_json::to_value(v).expect("serializes"))
        }),
    };
    out.push(Outgoing::new(name, push(all), agents, caller.cause.clone()));
    if let Some(props) = for_customer
        && !customer_sessions.is_empty()
    {
        out.push(Outgoing::new(
            name,
            push(props),
            customer_sessions,
            caller.cause.clone(),
        ));
    }
    out
}

// ---- Configuration API ----------------------------------------------------

#[derive(Deserialize)]
struct RegisterProperty {
    name: String,
    owner_client_id: String,
    #[serde(flatten)]
    def: PropertyDef,
}

#[derive(Deserialize)]
struct PropertyKey {
    name: String,
    owner_client_id: String,
}

#[derive(Default, Deserialize)]
struct ListProperties {
    owner_client_id: Option<String>,
}

fn check_name(what: &str, s: &str) -> Result<(), ErrorBody> {
    if s.is_empty()
        || s.chars().count() > MAX_NAME_CHARS
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(validation(format!(
            "`{what}` must be 1-{MAX_NAME_CHARS} letters, digits, `_` or `-`"
        )));
    }
    Ok(())
}

/// `register_property` and `unregister_property`.
pub(crate) fn write_definition(
    state: &mut OrgState,
    org: &OrgId,
    action: &str,
    payload: Value,
    ops: &mut Vec<Op>,
) -> Result<Value, ErrorBody> {
    if action == "unregister_property" {
        let req: PropertyKey = parse(payload)?;
        let key = (req.owner_client_id.clone(), req.name.clone());
        if state.property_defs.remove(&key).is_none() {
            return Err(err(
                ErrorType::NotFound,
                format!(
                    "property `{}.{}` is not registered",
                    req.owner_client_id, req.name
                ),
            ));
        }
        ops.push(Op::DeletePropertyDef {
            org: org.clone(),
            namespace: req.owner_client_id,
            name: req.name,
        });
        return Ok(json!({}));
    }
    let req: RegisterProperty = parse(payload)?;
    check_name("name", &req.name)?;
    check_name("owner_client_id", &req.owner_client_id)?;
    if RESERVED.contains(&req.owner_client_id.as_str()) {
        return Err(validation(format!(
            "namespace `{}` is built in",
            req.owner_client_id
        )));
    }
    req.def.check().map_err(validation)?;
    let key = (req.owner_client_id.clone(), req.name.clone());
    if state.property_defs.contains_key(&key) {
        return Err(err(
            ErrorType::AlreadyExists,
            format!("property `{}.{}` is already registered", key.0, key.1),
        ));
    }
    if state.property_defs.len() >= MAX_DEFINITIONS {
        return Err(validation(format!(
            "an organization registers at most {MAX_DEFINITIONS} properties"
        )));
    }
    ops.push(Op::UpsertPropertyDef(PropertyDefRecord {
        org: org.clone(),
        namespace: key.0.clone(),
        name: key.1.clone(),
        definition: serde_json::to_string(&req.def).expect("serializes"),
        created_at_us: now_us(),
    }));
    state.property_defs.insert(key, req.def);
    Ok(json!({}))
}

/// `list_properties`: `{namespace: {name: definition}}`; one namespace with
/// `owner_client_id`, else every registered one.
pub(crate) fn list_definitions(state: &OrgState, payload: Value) -> Result<Value, ErrorBody> {
    let req: ListProperties = parse(payload)?;
    let mut out: BTreeMap<&str, BTreeMap<&str, &PropertyDef>> = BTreeMap::new();
    for ((ns, name), def) in &state.property_defs {
        if req.owner_client_id.as_ref().is_none_or(|o| o == ns) {
            out.entry(ns).or_default().insert(name, def);
        }
    }
    Ok(serde_json::to_value(out).expect("serializes"))
}

/// A stored definition, back into the hot state.
pub(crate) fn from_record(rec: &PropertyDefRecord) -> Result<PropertyDef, String> {
    serde_json::from_str(&rec.definition)
        .map_err(|e| format!("property {}.{}: {e}", rec.namespace, rec.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(v: Value) -> PropertyDef {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn values_are_checked_against_type_domain_and_range() {
        let d = def(
            json!({"type": "int", "access": {"chat": {"agent": ["read", "write"]}}, "range": {"from": 1, "to": 5}}),
        );
        assert!(d.check().is_ok());
        assert!(d.check_value(&json!(3)).is_ok());
        assert!(d.check_value(&json!(6)).is_err());
        assert!(d.check_value(&json!("3")).is_err());
        let d = def(
            json!({"type": "string", "access": {"thread": {"customer": ["read"]}}, "domain": ["a", "b"]}),
        );
        assert!(d.check_value(&json!("a")).is_ok());
        assert!(d.check_value(&json!("c")).is_err());
        assert!(d.access.allows(Location::Thread, true, Mode::Read));
        assert!(!d.access.allows(Location::Thread, true, Mode::Write));
        assert!(!d.access.allows(Location::Thread, false, Mode::Read));
        assert!(!d.access.allows(Location::Chat, true, Mode::Read));
        // Bad definitions.
        assert!(def(json!({"type": "bool", "access": {}})).check().is_err());
        assert!(
            def(json!({"type": "bool", "access": {"chat": {}}, "range": {"from": 0, "to": 1}}))
                .check()
                .is_err()
        );
        assert!(
            def(json!({"type": "int", "access": {"chat": {}}, "domain": ["x"]}))
                .check()
                .is_err()
        );
        assert!(
            def(json!({"type": "int", "access": {"chat": {}}, "default_value": true}))
                .check()
                .is_err()
        );
        assert!(
            serde_json::from_value::<PropertyDef>(json!({"type": "float", "access": {}})).is_err()
        );
    }

    #[test]
    fn merge_and_remove_report_only_changes() {
        let mut p: Properties = serde_json::from_value(json!({"ns": {"a": 1, "b": 2}})).unwrap();
        let upd: Properties =
            serde_json::from_value(json!({"ns": {"a": 1, "b": 3, "c": 4}})).unwrap();
        let changed = merge(&mut p, &upd);
        assert_eq!(
            serde_json::to_value(&changed).unwrap(),
            json!({"ns": {"b": 3, "c": 4}})
        );
        let names: PropertyNames =
            serde_json::from_value(json!({"ns": ["a", "zz"], "other": ["x"]})).unwrap();
        let removed = remove(&mut p, &names);
        assert_eq!(
            serde_json::to_value(&removed).unwrap(),
            json!({"ns": ["a"]})
        );
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"ns": {"b": 3, "c": 4}})
        );
        let patch = event_patch(&Changed::Deleted(removed), &p);
        assert_eq!(patch, r#"{"properties":{"ns":{"a":null}}}"#);
        let gone: PropertyNames = serde_json::from_value(json!({"ns": ["b", "c"]})).unwrap();
        let removed = remove(&mut p, &gone);
        assert!(p.is_empty());
        assert_eq!(
            event_patch(&Changed::Deleted(removed), &p),
            r#"{"properties":null}"#
        );
    }
}
