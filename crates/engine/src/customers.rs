//! Customers as agents manage them: `get_customer`, `list_customers`
//! (3.5 only), `create_customer`, `update_customer`, `ban_customer`, and
//! `get_license_info`. Customer pushes go to every agent session of the
//! organization whose scopes include `customers:ro` (customer monitoring
//! levels are not applied yet).

use crate::Engine;
use crate::chat_methods::not_found;
use crate::chats::{CustomerState, now_us, rfc3339};
use crate::connection::Connection;
use crate::dispatch::{Caller, Reply};
use crate::error::{err, validation};
use crate::push::{Outgoing, commit, reserve, submit};
use crate::state::OrgState;
use chatgate_domain::scopes::ScopeSet;
use chatgate_protocol::chats::*;
use chatgate_protocol::{DisconnectReason, ErrorBody, ErrorType, Version};
use chatgate_store::Op;
use serde_json::{Value, json};
use std::sync::Arc;

/// Agent sessions that may see customers.
fn customer_watchers(state: &OrgState) -> Vec<Arc<Connection>> {
    state.sessions_where(|a| ScopeSet::defaults(a.agent.kind, a.agent.role).has("customers:ro"))
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
            Some(_) => {
                return Err(validation(
                    "`list_customers` filters are not supported by this chatgate build yet",
                ));
            }
        };
        let ids = (
            caller.org.org.id.0.as_str(),
            caller.agent.as_str(),
            "list_customers",
        );
        let key = &self.inner.page_key;
        let list = crate::paging::ListRequest {
            page_id: req.page_id.as_deref(),
            sort_order: req.sort_order.as_deref(),
            limit: req.limit,
            filters,
            filters_name: None,
        };
        let paging =
            crate::paging::Paging::from_request(key, ids, list, (10, 100), crate::chats::now_us())?;
        let (pending, body) = {
            let state = caller.org.lock();
            let keyed = state
                .customers
                .values()
                .map(|c| ((c.created_at_us, c.id.clone()), c.created_at_us, c))
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
                customer_watchers(&state),
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
                    customer_watchers(&state),
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
                customer_watchers(&state),
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
