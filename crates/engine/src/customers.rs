//! Customers as agents manage them: `get_customer`, `list_customers`
//! (3.5 only), `create_customer`, `update_customer`, `ban_customer`, and
//! `get_license_info`; and customer monitoring: which agent sessions hear
//! about which customers (`customer_monitoring_level` chosen at `login`),
//! `incoming_customers` after login, `customer_left`, `customer_transferred`.

use crate::Engine;
use crate::chat_methods::not_found;
use crate::chats::has_group_access;
use crate::chats::{CustomerState, now_us, rfc3339};
use crate::connection::Connection;
use crate::dispatch::{Caller, Reply};
use crate::error::{err, validation};
use crate::push::{Outgoing, commit, reserve, submit};
use crate::state::{AgentState, OrgState};
use chatgate_domain::scopes::ScopeSet;
use chatgate_protocol::chats::*;
use chatgate_protocol::{DisconnectReason, ErrorBody, ErrorType, Version};
use chatgate_store::Op;
use serde_json::{Value, json};
use std::sync::Arc;

/// An agent's `customer_monitoring_level` (shared by its sessions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Monitoring {
    /// Customers of chats the agent takes part in (the default).
    #[default]
    My,
    /// Customers with an active chat the agent can read.
    Chatting,
    /// As `chatting` (chatgate sends no invitations).
    Invited,
    /// Every customer of the agent's groups: on the site, chatting, or
    /// known to the organization.
    Online,
    /// The highest level the agent may have: `online`.
    HighestAvailable,
}

impl Monitoring {
    pub(crate) fn parse(s: &str) -> Option<Monitoring> {
        Some(match s {
            "my" => Monitoring::My,
            "chatting" => Monitoring::Chatting,
            "invited" => Monitoring::Invited,
            "online" => Monitoring::Online,
            "highest_available" => Monitoring::HighestAvailable,
            _ => return None,
        })
    }
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Monitoring::My => "my",
            Monitoring::Chatting => "chatting",
            Monitoring::Invited => "invited",
            Monitoring::Online => "online",
            Monitoring::HighestAvailable => "highest_available",
        }
    }
}

/// The groups a customer belongs to for monitoring: its latest chat's
/// access, or the general group when it has no chat.
fn customer_groups<'a>(state: &'a OrgState, c: &CustomerState) -> &'a [u32] {
    c.chat_ids
        .iter()
        .rev()
        .find_map(|id| state.chats.get(id))
        .map(|chat| chat.access.as_slice())
        .unwrap_or(&[0])
}

/// Whether `agent`'s monitoring level covers customer `c`.
pub(crate) fn covers(state: &OrgState, agent: &AgentState, c: &CustomerState) -> bool {
    let me = agent.agent.id.0.as_str();
    let active = || {
        c.chat_ids
            .iter()
            .filter_map(|id| state.chats.get(id))
            .filter(|chat| chat.active_thread().is_some())
    };
    match agent.monitoring {
        Monitoring::My => active().any(|chat| chat.user(me).is_some_and(|u| u.present)),
        Monitoring::Chatting | Monitoring::Invited => active().any(|chat| {
            crate::chats::can_read(agent, chat, false) || has_group_access(agent, &chat.access)
        }),
        Monitoring::Online | Monitoring::HighestAvailable => {
            has_group_access(agent, customer_groups(state, c))
        }
    }
}

/// Whether a session may receive customer pushes at all (`customers:ro`
/// in its role, narrowed by its token's scopes).
fn session_sees_customers(agent: &AgentState, conn: &Connection) -> bool {
    ScopeSet::session_grants(
        conn.login_state().and_then(|l| l.scopes()).as_deref(),
        agent.agent.kind,
        agent.agent.role,
        "customers:ro",
    )
}

/// Agent sessions that hear about customer `id`.
pub(crate) fn customer_audience(state: &OrgState, id: &str) -> Vec<Arc<Connection>> {
    let Some(c) = state.customers.get(id) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for a in state.agents.values() {
        if a.sessions.is_empty() || !covers(state, a, c) {
            continue;
        }
        out.extend(
            a.sessions
                .iter()
                .filter(|s| session_sees_customers(a, &s.conn))
                .map(|s| s.conn.clone()),
        );
    }
    out
}

/// Most customers listed in one `incoming_customers`.
const MAX_INCOMING_CUSTOMERS: usize = 1000;

/// `incoming_customers` for a session that just logged in: the customers
/// its level covers that are on the site or chatting now (none: no push).
pub(crate) fn incoming_customers(
    state: &OrgState,
    agent: &AgentState,
    conn: &Arc<Connection>,
) -> Option<Outgoing> {
    if !session_sees_customers(agent, conn) {
        return None;
    }
    let mut list: Vec<&CustomerState> = state
        .customers
        .values()
        .filter(|c| {
            let here = !c.sessions.is_empty()
                || c.chat_ids
                    .iter()
                    .filter_map(|id| state.chats.get(id))
                    .any(|chat| chat.active_thread().is_some());
            here && covers(state, agent, c)
        })
        .collect();
    // Nothing to report, nothing sent (clients that read only responses
    // after login see no extra frame).
    if list.is_empty() {
        return None;
    }
    list.sort_by(|a, b| a.id.cmp(&b.id));
    list.truncate(MAX_INCOMING_CUSTOMERS);
    let customers: Vec<Value> = list
        .into_iter()
        .map(|c| serde_json::to_value(c.to_wire(state)).expect("serializes"))
        .collect();
    Some(Outgoing::new(
        "incoming_customers",
        json!({
            "customer_monitoring_level": agent.monitoring.as_str(),
            "customers": customers,
        }),
        vec![conn.clone()],
        None,
    ))
}

/// `customer_transferred` to the sessions in `before` that no longer hear
/// about the customer after its chat moved to `group_ids`.
pub(crate) fn customer_transferred(
    state: &OrgState,
    customer_id: &str,
    before: Vec<Arc<Connection>>,
    group_ids: &[u32],
) -> Option<Outgoing> {
    let after = customer_audience(state, customer_id);
    let lost: Vec<Arc<Connection>> = before
        .into_iter()
        .filter(|c| !after.iter().any(|a| a.id() == c.id()))
        .collect();
    (!lost.is_empty()).then(|| {
        Outgoing::new(
            "customer_transferred",
            json!({
                "id": customer_id,
                "transferred_to": { "group_ids": group_ids },
                "followed": false,
            }),
            lost,
            None,
        )
    })
}

fn changed_fields(id: &str, f: &CustomerFields) -> Value {
    let mut v = serde_json::to_value(f).expect("serializes");
    v["id"] = json!(id);
    v
}

/// Whether a customer is banned now.
pub(crate) fn is_banned(c: &CustomerState) -> bool {
    c.banned_until_us.is_some_and(|until| until > now_us())
}

pub(crate) fn banned_error() -> ErrorBody {
    err(ErrorType::CustomerBanned, "Customer is banned")
}

impl Engine {
    pub(crate) async fn agent_get_customer(
        &self,
        caller: &Caller,
        payload: Value,
    ) -> Result<Reply, ErrorBody> {
        let req: chatgate_protocol::config::IdRequest = crate::dispatch::parse(payload)?;
        let (pending, body) = {
            let state = caller.org.lock();
            let c = state
                .customers
                .get(&req.id)
                .ok_or_else(|| not_found("customer", &req.id))?;
            (
                submit(&self.inner.store, Vec::new(), Vec::new())?,
                serde_json::to_value(c.to_wire(&state)).expect("serializes"),
            )
        };
        pending.wait().await?;
        Ok(Reply::ok(body))
    }

    pub(crate) async fn agent_list_customers(
        &self,
        caller: &Caller,
        version: Version,
        payload: Value,
    ) -> Result<Reply, ErrorBody> {
        if version >= Version::V3_6 {
            return Err(validation("`list_customers` was removed in 3.6"));
        }
        let req: ListCustomersRequest = crate::dispatch::parse(payload)?;
        let filters = match req.filters {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) if m.is_empty() => None,
            Some(f) => Some(f),
        };
        SortBy::parse(req.sort_by.as_deref())?;
        let ids = (
            caller.org.org.id.0.as_str(),
            caller.agent.as_str(),
            "list_customers",
        );
        let key = &self.inner.page_key;
        // A page id freezes the filters and the sort together (like
        // `list_threads` freezes its chat); with a page id they are only
        // compared when the request repeats them.
        let frozen =
            (req.page_id.is_none() || filters.is_some() || req.sort_by.is_some()).then(|| {
                json!({
                    "filters": filters,
                    "sort_by": req.sort_by.as_deref().unwrap_or("created_at"),
                })
            });
        let list = crate::paging::ListRequest {
            page_id: req.page_id.as_deref(),
            sort_order: req.sort_order.as_deref(),
            limit: req.limit,
            filters: frozen,
            filters_name: Some("`filters` and `sort_by`"),
        };
        let paging =
            crate::paging::Paging::from_request(key, ids, list, (10, 100), crate::chats::now_us())?;
        let sort_by = SortBy::parse(paging.filters["sort_by"].as_str())?;
        let filters: CustomerFilters = match &paging.filters["filters"] {
            Value::Null => CustomerFilters::default(),
            f => serde_json::from_value(f.clone())
                .map_err(|e| validation(format!("invalid `filters`: {e}")))?,
        };
        filters.check()?;
        let (pending, body) = {
            let state = caller.org.lock();
            let keyed = state
                .customers
                .values()
                .filter(|c| filters.matches(&state, c))
                .map(|c| ((sort_by.key(&state, c), c.id.clone()), c.created_at_us, c))
                .collect();
            let (page, total, next, prev) = paging.page(key, ids, keyed);
            let customers: Vec<Customer> = page.into_iter().map(|c| c.to_wire(&state)).collect();
            let mut body = json!({ "customers": customers, "total_customers": total });
            if let Some(p) = next {
                body["next_page_id"] = p.into();
            }
            if let Some(p) = prev {
                body["previous_page_id"] = p.into();
            }
            (submit(&self.inner.store, Vec::new(), Vec::new())?, body)
        };
        pending.wait().await?;
        Ok(Reply::ok(body))
    }

    pub(crate) async fn agent_create_customer(
        &self,
        caller: &Caller,
        version: Version,
        payload: Value,
    ) -> Result<Reply, ErrorBody> {
        if version >= Version::V3_6 {
            return Err(validation("`create_customer` was removed in 3.6"));
        }
        let fields: CustomerFields = crate::dispatch::parse(payload)?;
        let reservation = reserve(&self.inner.store)?;
        let (pending, id) = {
            let mut state = caller.org.lock();
            let mut c = CustomerState {
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
            crate::chat_methods::apply_fields(&mut c, &fields)?;
            let op = Op::UpsertCustomer(c.record(&caller.org.org.id));
            let wire = c.to_wire(&state);
            let id = c.id.clone();
            state.customers.insert(id.clone(), c);
            let push = Outgoing::new(
                "incoming_customer",
                wire,
                customer_audience(&state, &id),
                caller.cause.clone(),
            );
            (commit(reservation, vec![op], vec![push]), id)
        };
        pending.wait().await?;
        Ok(Reply::ok(json!({ "customer_id": id })))
    }

    pub(crate) async fn agent_update_customer(
        &self,
        caller: &Caller,
        payload: Value,
    ) -> Result<Reply, ErrorBody> {
        let req: UpdateCustomerRequest = crate::dispatch::parse(payload)?;
        if req.fields == CustomerFields::default() {
            return Err(validation(
                "give at least one of `name`, `email`, `avatar`, `session_fields`",
            ));
        }
        let reservation = reserve(&self.inner.store)?;
        let pending = {
            let mut state = caller.org.lock();
            let c = state
                .customers
                .get_mut(&req.id)
                .ok_or_else(|| not_found("customer", &req.id))?;
            crate::chat_methods::apply_fields(c, &req.fields)?;
            let op = Op::UpsertCustomer(c.record(&caller.org.org.id));
            let own = c.sessions.clone();
            let c = &state.customers[&req.id];
            let pushes = vec![
                Outgoing::new(
                    "customer_updated",
                    changed_fields(&req.id, &req.fields),
                    customer_audience(&state, &req.id),
                    caller.cause.clone(),
                ),
                Outgoing::new("customer_updated", c.to_wire(&state), own, None),
            ];
            commit(reservation, vec![op], pushes)
        };
        pending.wait().await?;
        Ok(Reply::ok(json!({})))
    }

    pub(crate) async fn agent_ban_customer(
        &self,
        caller: &Caller,
        payload: Value,
    ) -> Result<Reply, ErrorBody> {
        let req: BanCustomerRequest = crate::dispatch::parse(payload)?;
        if req.ban.days == 0 || req.ban.days > 3650 {
            return Err(validation("`ban.days` must be 1-3650"));
        }
        let reservation = reserve(&self.inner.store)?;
        let pending = {
            let mut state = caller.org.lock();
            let c = state
                .customers
                .get_mut(&req.id)
                .ok_or_else(|| not_found("customer", &req.id))?;
            c.banned_until_us = Some(now_us() + i64::from(req.ban.days) * 86_400_000_000);
            let op = Op::UpsertCustomer(c.record(&caller.org.org.id));
            // The customer's connections end now; new ones are refused.
            for s in &c.sessions {
                s.close(DisconnectReason::CustomerBanned, None);
            }
            let push = Outgoing::new(
                "customer_banned",
                json!({ "customer_id": req.id, "ban": { "days": req.ban.days } }),
                customer_audience(&state, &req.id),
                caller.cause.clone(),
            );
            commit(reservation, vec![op], vec![push])
        };
        pending.wait().await?;
        Ok(Reply::ok(json!({})))
    }

    pub(crate) fn agent_license_info(&self, caller: &Caller) -> Reply {
        let o = &caller.org.org;
        let info = LicenseInfo {
            license_id: o.license_id.to_string(),
            expires_at: rfc3339(crate::status::LICENSE_EXPIRATION * 1_000_000),
            created_at: rfc3339(o.created_at * 1_000_000),
            in_trial: false,
        };
        Reply::ok(serde_json::to_value(info).expect("serializes"))
    }
}

/// `list_customers` `sort_by`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SortBy {
    CreatedAt,
    ThreadsCount,
    VisitsCount,
    AgentLastEvent,
    CustomerLastEvent,
}

impl SortBy {
    fn parse(s: Option<&str>) -> Result<SortBy, ErrorBody> {
        Ok(match s {
            None | Some("created_at") => SortBy::CreatedAt,
            Some("threads_count") => SortBy::ThreadsCount,
            Some("visits_count") => SortBy::VisitsCount,
            Some("agent_last_event") => SortBy::AgentLastEvent,
            Some("customer_last_event") => SortBy::CustomerLastEvent,
            Some(other) => {
                return Err(validation(format!(
                    "`sort_by` must be created_at, threads_count, visits_count, agent_last_event or customer_last_event, not `{other}`"
                )));
            }
        })
    }
    /// The sort value (ties go by id; the paging key is (value, id)).
    fn key(self, state: &OrgState, c: &CustomerState) -> i64 {
        match self {
            SortBy::CreatedAt => c.created_at_us,
            SortBy::ThreadsCount => threads_count(state, c) as i64,
            SortBy::VisitsCount => visits_count(c) as i64,
            SortBy::AgentLastEvent => last_event_us(state, c, false).unwrap_or(i64::MIN),
            SortBy::CustomerLastEvent => last_event_us(state, c, true).unwrap_or(i64::MIN),
        }
    }
}

fn threads_count(state: &OrgState, c: &CustomerState) -> u64 {
    c.chat_ids
        .iter()
        .filter_map(|id| state.chats.get(id))
        .map(|chat| chat.thread_count() as u64)
        .sum()
}

/// chatgate does not track visits: a customer connected now counts one.
fn visits_count(c: &CustomerState) -> u64 {
    u64::from(!c.sessions.is_empty())
}

/// The newest event by the customer (`by_customer`) or by an agent in the
/// last threads of the customer's chats (each chat keeps both times).
fn last_event_us(state: &OrgState, c: &CustomerState, by_customer: bool) -> Option<i64> {
    c.chat_ids
        .iter()
        .filter_map(|id| state.chats.get(id))
        .filter_map(|chat| {
            if by_customer {
                chat.last_customer_event_us
            } else {
                chat.last_agent_event_us
            }
        })
        .max()
}

/// `values` / `exclude_values` of strings or numbers.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchFilter<T> {
    values: Option<Vec<T>>,
    exclude_values: Option<Vec<T>>,
}

impl<T: PartialEq> MatchFilter<T> {
    fn check(&self, name: &str) -> Result<(), ErrorBody> {
        if self.values.is_some() == self.exclude_values.is_some() {
            return Err(validation(format!(
                "`filters.{name}` takes one of `values`, `exclude_values`"
            )));
        }
        Ok(())
    }
    /// Whether a customer with `have` passes.
    fn matches(&self, have: &[T]) -> bool {
        if let Some(v) = &self.values {
            return v.iter().any(|x| have.contains(x));
        }
        if let Some(v) = &self.exclude_values {
            return !v.iter().any(|x| have.contains(x));
        }
        true
    }
}

/// `lte` / `lt` / `gte` / `gt` / `eq` of numbers or times.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeFilter<T> {
    lte: Option<T>,
    lt: Option<T>,
    gte: Option<T>,
    gt: Option<T>,
    eq: Option<T>,
}

impl RangeFilter<i64> {
    fn matches(&self, v: Option<i64>) -> bool {
        let Some(v) = v else {
            return self.lte.is_none()
                && self.lt.is_none()
                && self.gte.is_none()
                && self.gt.is_none()
                && self.eq.is_none();
        };
        self.lte.is_none_or(|x| v <= x)
            && self.lt.is_none_or(|x| v < x)
            && self.gte.is_none_or(|x| v >= x)
            && self.gt.is_none_or(|x| v > x)
            && self.eq.is_none_or(|x| v == x)
    }
}

impl RangeFilter<String> {
    fn parsed(&self, name: &str) -> Result<RangeFilter<i64>, ErrorBody> {
        let t = |v: &Option<String>| {
            v.as_deref()
                .map(|s| {
                    crate::chat_more::parse_time_us(s).map_err(|_| {
                        validation(format!("`filters.{name}` takes RFC 3339 date-times"))
                    })
                })
                .transpose()
        };
        Ok(RangeFilter {
            lte: t(&self.lte)?,
            lt: t(&self.lt)?,
            gte: t(&self.gte)?,
            gt: t(&self.gt)?,
            eq: t(&self.eq)?,
        })
    }
}

/// `list_customers` `filters` (the reference's §8.7).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerFilters {
    country: Option<MatchFilter<String>>,
    email: Option<MatchFilter<String>>,
    name: Option<MatchFilter<String>>,
    customer_id: Option<MatchFilter<String>>,
    chats_count: Option<RangeFilter<i64>>,
    threads_count: Option<RangeFilter<i64>>,
    visits_count: Option<RangeFilter<i64>>,
    created_at: Option<RangeFilter<String>>,
    agent_last_event_created_at: Option<RangeFilter<String>>,
    customer_last_event_created_at: Option<RangeFilter<String>>,
    chat_group_ids: Option<MatchFilter<u32>>,
    include_customers_without_chats: Option<bool>,
}

impl CustomerFilters {
    fn check(&self) -> Result<(), ErrorBody> {
        for (name, f) in [
            ("country", &self.country),
            ("email", &self.email),
            ("name", &self.name),
            ("customer_id", &self.customer_id),
        ] {
            if let Some(f) = f {
                f.check(name)?;
            }
        }
        if let Some(g) = &self.chat_group_ids {
            g.check("chat_group_ids")?;
            let n = g
                .values
                .as_ref()
                .or(g.exclude_values.as_ref())
                .map_or(0, Vec::len);
            if n > 40 {
                return Err(validation("`filters.chat_group_ids` takes at most 40 ids"));
            }
        }
        for (name, f) in [
            ("created_at", &self.created_at),
            (
                "agent_last_event_created_at",
                &self.agent_last_event_created_at,
            ),
            (
                "customer_last_event_created_at",
                &self.customer_last_event_created_at,
            ),
        ] {
            if let Some(f) = f {
                f.parsed(name)?;
            }
        }
        Ok(())
    }

    fn time(&self, f: &Option<RangeFilter<String>>) -> Option<RangeFilter<i64>> {
        f.as_ref().and_then(|f| f.parsed("").ok())
    }

    fn matches(&self, state: &OrgState, c: &CustomerState) -> bool {
        let one = |s: &Option<String>| s.iter().cloned().collect::<Vec<_>>();
        if self.include_customers_without_chats == Some(false) && c.chat_ids.is_empty() {
            return false;
        }
        // chatgate records no countries: a customer has none.
        if self.country.as_ref().is_some_and(|f| !f.matches(&[])) {
            return false;
        }
        let email: Vec<String> = one(&c.email)
            .into_iter()
            .map(|e| e.to_lowercase())
            .collect();
        if let Some(f) = &self.email {
            let lowered = MatchFilter {
                values: f
                    .values
                    .as_ref()
                    .map(|v| v.iter().map(|e| e.to_lowercase()).collect()),
                exclude_values: f
                    .exclude_values
                    .as_ref()
                    .map(|v| v.iter().map(|e| e.to_lowercase()).collect()),
            };
            if !lowered.matches(&email) {
                return false;
            }
        }
        if self
            .name
            .as_ref()
            .is_some_and(|f| !f.matches(&one(&c.name)))
        {
            return false;
        }
        if self
            .customer_id
            .as_ref()
            .is_some_and(|f| !f.matches(std::slice::from_ref(&c.id)))
        {
            return false;
        }
        let counts = [
            (&self.chats_count, Some(c.chat_ids.len() as i64)),
            (&self.threads_count, Some(threads_count(state, c) as i64)),
            (&self.visits_count, Some(visits_count(c) as i64)),
        ];
        if counts
            .iter()
            .any(|(f, v)| f.as_ref().is_some_and(|f| !f.matches(*v)))
        {
            return false;
        }
        let times = [
            (self.time(&self.created_at), Some(c.created_at_us)),
            (
                self.time(&self.agent_last_event_created_at),
                last_event_us(state, c, false),
            ),
            (
                self.time(&self.customer_last_event_created_at),
                last_event_us(state, c, true),
            ),
        ];
        if times
            .iter()
            .any(|(f, v)| f.as_ref().is_some_and(|f| !f.matches(*v)))
        {
            return false;
        }
        if let Some(f) = &self.chat_group_ids {
            let groups: Vec<u32> = c
                .chat_ids
                .iter()
                .filter_map(|id| state.chats.get(id))
                .flat_map(|chat| chat.access.iter().copied())
                .collect();
            if !f.matches(&groups) {
                return false;
            }
        }
        true
    }
}
