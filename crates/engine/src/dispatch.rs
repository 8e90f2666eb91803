//! The dispatcher: one entry point for every method, whichever transport
//! carried it, for agents and customers.

use crate::auth::authenticate;
use crate::chat_methods::{self, Actor, ChatCaller};
use crate::chat_more::{self, Typing};
use crate::connection::{Connection, Side};
use crate::error::{err, validation};
use crate::push::Cause;
use crate::state::Org;
use crate::{Engine, status};
use chatgate_domain::AgentKind;
use chatgate_domain::scopes::ScopeSet;
use chatgate_protocol::chats::{
    CustomerFields, SendSneakPeekRequest, SendThinkingIndicatorRequest, SendTypingIndicatorRequest,
    SessionFieldsRequest,
};
use chatgate_protocol::methods::{Transports, agent_method, customer_method};
use chatgate_protocol::{ErrorBody, ErrorType, Version};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Requester {
    /// An RTM connection (agent or customer, logged in or not).
    Rtm(Arc<Connection>),
    /// An Agent Web API call with its `Authorization` header, if any.
    Web { authorization: Option<String> },
    /// A Configuration API call with its `Authorization` header, if any.
    ConfigWeb { authorization: Option<String> },
    /// A Customer Web API call: `Authorization` and the `organization_id`
    /// query parameter.
    CustomerWeb {
        authorization: Option<String>,
        organization_id: Option<String>,
    },
}

impl Requester {
    pub(crate) fn side(&self) -> Side {
        match self {
            Requester::Rtm(c) => c.side(),
            Requester::Web { .. } | Requester::ConfigWeb { .. } => Side::Agent,
            Requester::CustomerWeb { .. } => Side::Customer,
        }
    }
}

/// One request, transport-neutral.
#[derive(Debug, Clone)]
pub struct Request {
    pub requester: Requester,
    /// The version the request asked for (already checked against the
    /// connection's by the transport).
    pub version: Version,
    pub action: String,
    /// The method's payload (`{}` when absent).
    pub payload: Value,
    pub request_id: Option<String>,
    /// v3.5: act as this bot (RTM `author_id`, Web `X-Author-Id`).
    pub author_id: Option<String>,
}

/// What the transport does after sending the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterReply {
    Nothing,
    /// Close the connection (after `logout`).
    Close,
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub payload: Value,
    pub after: AfterReply,
}

impl Reply {
    pub(crate) fn ok(payload: Value) -> Self {
        Reply {
            payload,
            after: AfterReply::Nothing,
        }
    }
}

/// An authenticated agent requester.
pub(crate) struct Caller {
    pub org: Arc<Org>,
    /// The acting agent or bot.
    pub agent: String,
    /// Effective scopes: the role's (or a bot's) defaults, narrowed by the
    /// credential's own scopes when it has any.
    pub scopes: ScopeSet,
    /// The RTM connection, for RTM requests.
    pub conn: Option<Arc<Connection>>,
    pub cause: Option<Cause>,
}

/// Parses a method payload; failures are `validation` errors naming the field.
pub(crate) fn parse<T: DeserializeOwned>(payload: Value) -> Result<T, ErrorBody> {
    let payload = match payload {
        Value::Null => Value::Object(Default::default()),
        Value::Object(_) => payload,
        _ => return Err(validation("`payload` must be a JSON object")),
    };
    serde_json::from_value(payload).map_err(|e| validation(format!("invalid payload: {e}")))
}

/// Scopes that allow an Agent Chat API method, any one of them (the
/// reference's §7). `set_routing_status` is checked against its target.
fn agent_method_scopes(action: &str) -> &'static [&'static str] {
    match action {
        "list_chats"
        | "list_threads"
        | "get_chat"
        | "list_archives"
        | "follow_chat"
        | "mark_events_as_seen" => &["chats--all:ro", "chats--access:ro"],
        "start_chat"
        | "resume_chat"
        | "deactivate_chat"
        | "transfer_chat"
        | "add_user_to_chat"
        | "remove_user_from_chat"
        | "send_event"
        | "send_rich_message_postback"
        | "send_typing_indicator"
        | "send_thinking_indicator"
        | "send_event_preview"
        | "update_chat_properties"
        | "delete_chat_properties"
        | "update_thread_properties"
        | "delete_thread_properties"
        | "update_event_properties"
        | "delete_event_properties"
        | "tag_thread"
        | "untag_thread" => &["chats--all:rw", "chats--access:rw"],
        "get_customer" | "list_customers" => &["customers:ro"],
        "create_customer" | "update_customer" => &["customers:rw"],
        "ban_customer" => &["customers.ban:rw"],
        "set_away_status" => &["agents--my:rw"],
        "list_routing_statuses" => &["agents--all:ro"],
        "multicast" => &["multicast:rw"],
        _ => &[],
    }
}

/// Scopes that allow a Configuration API method.
fn config_method_scopes(action: &str) -> &'static [&'static str] {
    match action {
        "get_agent" => &["agents--all:ro", "agents--my:ro"],
        "list_agents" => &["agents--all:ro"],
        "create_agent" | "delete_agent" | "suspend_agent" | "unsuspend_agent" => {
            &["agents--all:rw"]
        }
        "update_agent" | "revoke_agent_tokens" | "create_agent_token" => {
            &["agents--all:rw", "agents--my:rw"]
        }
        "get_group" | "list_groups" => &["groups--all:ro"],
        "list_tags" => &["tags--all:ro", "tags--groups:ro"],
        "list_properties" => &["properties--my:ro"],
        "register_property" | "unregister_property" => &["properties--my:rw"],
        "create_tag" | "update_tag" | "delete_tag" => &["tags--all:rw", "tags--groups:rw"],
        "create_group" | "update_group" | "delete_group" => &["groups--all:rw"],
        "get_bot" | "list_bots" => &["agents-bot--all:ro", "agents-bot--my:ro"],
        "create_bot" | "update_bot" | "delete_bot" | "reset_bot_secret" => {
            &["agents-bot--all:rw", "agents-bot--my:rw"]
        }
        _ => &[],
    }
}

/// `authorization` unless `scopes` grants one of `required`.
pub(crate) fn require_scopes(scopes: &ScopeSet, required: &[&str]) -> Result<(), ErrorBody> {
    if scopes.any(required) {
        Ok(())
    } else {
        Err(err(
            ErrorType::Authorization,
            format!("missing scope: one of {}", required.join(", ")),
        ))
    }
}

fn not_yet(action: &str) -> ErrorBody {
    err(
        ErrorType::Validation,
        format!("`{action}` is not available in this chatgate build yet"),
    )
}

fn cause_of(req: &Request) -> Option<Cause> {
    match (&req.requester, &req.request_id) {
        (Requester::Rtm(c), Some(id)) => Some(Cause {
            conn: c.id(),
            request_id: id.clone(),
        }),
        _ => None,
    }
}

impl Engine {
    /// Executes one method. Pushes it causes are delivered by the engine after
    /// the change is durable; the response is returned here, also only after
    /// the commit.
    pub async fn execute(&self, req: Request) -> Result<Reply, ErrorBody> {
        self.execute_recorded(req, None).await
    }

    /// [`execute`](Self::execute) bounded by `limit` (RTM's processing time
    /// per request). A request past it is answered `request_timeout` and
    /// counted so in the request metrics; what it had started is dropped
    /// (a write already handed to the store still commits and its pushes
    /// are delivered, on the store's completion path: the client only
    /// learns that it did not hear back in time).
    pub async fn execute_within(
        &self,
        req: Request,
        limit: std::time::Duration,
    ) -> Result<Reply, ErrorBody> {
        self.execute_recorded(req, Some(limit)).await
    }

    /// Dispatches, bounded by `limit` if any, and records the request's
    /// outcome and time in the metrics.
    async fn execute_recorded(
        &self,
        req: Request,
        limit: Option<std::time::Duration>,
    ) -> Result<Reply, ErrorBody> {
        // tokio's clock, which is std's unless a test pauses it.
        let started = tokio::time::Instant::now();
        let labels = crate::metrics::RequestKind::of(&req.requester, &req.action);
        let result = match limit {
            None => self.dispatch(req).await,
            Some(limit) => match tokio::time::timeout(limit, self.dispatch(req)).await {
                Ok(result) => result,
                Err(_) => Err(ErrorBody::new(
                    ErrorType::RequestTimeout,
                    format!("request not processed within {} s", limit.as_secs()),
                )),
            },
        };
        self.inner
            .metrics
            .record(labels, result.as_ref().map(|_| ()), started.elapsed());
        result
    }

    /// Counts a request that [`execute`](Self::execute) did not see, in the
    /// same request metrics: one its transport refused before dispatch (an
    /// RTM frame that is not JSON or is over the size limit, a request past
    /// the pending limit, a Web body that is not JSON), with `took: None`,
    /// since it did no work to time; or one served outside the dispatcher
    /// (`upload_file`), timed. `action` is counted as `unknown` when the
    /// client named none, or none in the catalogue.
    pub fn record_request(
        &self,
        requester: &Requester,
        action: Option<&str>,
        outcome: Result<(), &ErrorBody>,
        took: Option<std::time::Duration>,
    ) {
        let labels = crate::metrics::RequestKind::of(requester, action.unwrap_or(""));
        match took {
            Some(took) => self.inner.metrics.record(labels, outcome, took),
            None => self.inner.metrics.count(labels, outcome),
        }
    }

    async fn dispatch(&self, req: Request) -> Result<Reply, ErrorBody> {
        if let Requester::ConfigWeb { authorization } = &req.requester {
            if !chatgate_protocol::config::CONFIGURATION_METHODS.contains(&req.action.as_str()) {
                return Err(validation(format!("unknown action `{}`", req.action)));
            }
            let caller = match authorization {
                Some(_) => Some(self.caller(&req)?),
                None => None,
            };
            if let Some(c) = &caller {
                self.rate_check(&format!("a:{}:{}", c.org.org.id, c.agent))?;
                require_scopes(&c.scopes, config_method_scopes(&req.action))?;
            }
            return self
                .config_method(caller.as_ref(), &req.action, req.payload)
                .await;
        }
        let side = req.requester.side();
        let transports = match side {
            Side::Agent => agent_method(&req.action),
            Side::Customer => customer_method(&req.action),
        }
        .ok_or_else(|| validation(format!("unknown action `{}`", req.action)))?;
        match (matches!(req.requester, Requester::Rtm(_)), transports) {
            (false, Transports::RtmOnly) => {
                return Err(validation(format!(
                    "`{}` is available over RTM only",
                    req.action
                )));
            }
            (true, Transports::WebOnly) => {
                return Err(validation(format!(
                    "`{}` is available over the Web API only",
                    req.action
                )));
            }
            _ => {}
        }
        if req.action == "ping" {
            return Ok(Reply::ok(chatgate_protocol::methods::empty()));
        }
        if req.action == "login" {
            let Requester::Rtm(conn) = &req.requester else {
                unreachable!("login is RTM-only")
            };
            let result = match side {
                Side::Agent => status::login(self, conn, req.payload).await,
                Side::Customer => chat_methods::customer_login(self, conn, req.payload).await,
            };
            if result.is_ok() {
                self.release_unauthenticated(conn);
            }
            return result;
        }
        match side {
            Side::Agent => self.agent_method(req).await,
            Side::Customer => self.customer_method(req).await,
        }
    }

    /// Takes one request from the principal's rate budget.
    fn rate_check(&self, key: &str) -> Result<(), ErrorBody> {
        let Some(rate) = self.inner.config.rate_limit else {
            return Ok(());
        };
        self.inner
            .rate
            .check(key, rate, std::time::Instant::now())
            .map_err(|wait| {
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                let mut e = err(
                    ErrorType::TooManyRequests,
                    format!("rate limit reached: retry in {secs} s"),
                );
                e.data = Some(serde_json::json!({ "retry_after": secs }));
                e
            })
    }

    async fn agent_method(&self, req: Request) -> Result<Reply, ErrorBody> {
        let caller = self.caller(&req)?;
        self.rate_check(&format!("a:{}:{}", caller.org.org.id, caller.agent))?;
        require_scopes(&caller.scopes, agent_method_scopes(&req.action))?;
        let version = req.version;
        let chat_caller = || ChatCaller {
            org: caller.org.clone(),
            actor: Actor::Agent(caller.agent.clone()),
            cause: caller.cause.clone(),
            version,
            scopes: Some(caller.scopes.clone()),
        };
        match req.action.as_str() {
            "set_routing_status" => {
                status::set_routing_status(self, &caller, parse(req.payload)?).await
            }
            "list_routing_statuses" => {
                status::list_routing_statuses(self, &caller, parse(req.payload)?).await
            }
            "set_away_status" => status::set_away_status(self, &caller, parse(req.payload)?).await,
            "logout" => status::logout(self, &caller).await,
            "update_session" => status::update_session(self, &caller, req.version, req.payload),
            "start_chat" => {
                chat_methods::start_chat(self, &chat_caller(), parse(req.payload)?, false).await
            }
            "resume_chat" => {
                chat_methods::start_chat(self, &chat_caller(), parse(req.payload)?, true).await
            }
            "send_event" => {
                chat_methods::send_event(self, &chat_caller(), parse(req.payload)?).await
            }
            "deactivate_chat" => {
                chat_methods::deactivate_chat(self, &chat_caller(), parse(req.payload)?).await
            }
            "get_chat" => chat_methods::get_chat(self, &chat_caller(), parse(req.payload)?).await,
            "list_chats" => {
                chat_methods::list_chats(self, &chat_caller(), parse(req.payload)?).await
            }
            "list_threads" => {
                chat_more::list_threads(self, &chat_caller(), parse(req.payload)?).await
            }
            "list_archives" => {
                crate::archives::list_archives(self, &chat_caller(), parse(req.payload)?).await
            }
            m if crate::properties::METHODS.contains(&m) => {
                crate::properties::properties_method(self, &chat_caller(), &req.action, req.payload)
                    .await
            }
            "follow_chat" => {
                chat_more::follow_chat(self, &chat_caller(), parse(req.payload)?).await
            }
            "unfollow_chat" => {
                chat_more::unfollow_chat(self, &chat_caller(), parse(req.payload)?).await
            }
            "transfer_chat" => {
                chat_more::transfer_chat(self, &chat_caller(), parse(req.payload)?).await
            }
            "add_user_to_chat" => {
                chat_more::add_user_to_chat(self, &chat_caller(), parse(req.payload)?).await
            }
            "remove_user_from_chat" => {
                chat_more::remove_user_from_chat(self, &chat_caller(), parse(req.payload)?).await
            }
            "mark_events_as_seen" => {
                chat_more::mark_events_as_seen(self, &chat_caller(), parse(req.payload)?).await
            }
            "send_typing_indicator" => {
                let r: SendTypingIndicatorRequest = parse(req.payload)?;
                let what = Typing::Indicator {
                    is_typing: r.is_typing,
                    visibility: r.visibility.unwrap_or_default(),
                };
                chat_more::typing(self, &chat_caller(), &r.chat_id, what).await
            }
            "send_event_preview" => {
                if version < chatgate_protocol::Version::V3_6 {
                    return Err(validation(
                        "`send_event_preview` is a 3.6 method: send it with version 3.6",
                    ));
                }
                let r: chatgate_protocol::chats::SendEventPreviewRequest = parse(req.payload)?;
                if !matches!(r.event, chatgate_protocol::data::Event::Message { .. }) {
                    return Err(validation(
                        "`send_event_preview` takes only `message` events",
                    ));
                }
                if r.event.common().visibility != chatgate_protocol::data::Visibility::All {
                    return Err(validation(
                        "`send_event_preview` takes only events with visibility `all`",
                    ));
                }
                crate::chats::validate_event(&r.event, false).map_err(validation)?;
                let what = Typing::Preview {
                    event: Box::new(r.event),
                };
                chat_more::typing(self, &chat_caller(), &r.chat_id, what).await
            }
            "send_thinking_indicator" => {
                if version < chatgate_protocol::Version::V3_6 {
                    return Err(validation(
                        "`send_thinking_indicator` is a 3.6 method: send it with version 3.6",
                    ));
                }
                let r: SendThinkingIndicatorRequest = parse(req.payload)?;
                for (name, v, max) in [
                    ("title", &r.title, 256),
                    ("description", &r.description, 1024),
                    ("custom_id", &r.custom_id, 256),
                ] {
                    if v.as_ref().is_some_and(|v| v.chars().count() > max) {
                        return Err(validation(format!(
                            "`{name}` is longer than {max} characters"
                        )));
                    }
                }
                let what = Typing::Thinking {
                    title: r.title,
                    description: r.description,
                    visibility: r.visibility.unwrap_or_default(),
                    custom_id: r.custom_id,
                };
                chat_more::typing(self, &chat_caller(), &r.chat_id, what).await
            }
            "send_rich_message_postback" => {
                chat_more::rich_message_postback(self, &chat_caller(), parse(req.payload)?).await
            }
            "multicast" => chat_more::multicast(self, &chat_caller(), parse(req.payload)?).await,
            "tag_thread" => {
                chat_more::tag_thread(self, &chat_caller(), parse(req.payload)?, true).await
            }
            "untag_thread" => {
                chat_more::tag_thread(self, &chat_caller(), parse(req.payload)?, false).await
            }
            "get_customer" => self.agent_get_customer(&caller, req.payload).await,
            "list_customers" => {
                self.agent_list_customers(&caller, req.version, req.payload)
                    .await
            }
            "create_customer" => {
                self.agent_create_customer(&caller, req.version, req.payload)
                    .await
            }
            "update_customer" => self.agent_update_customer(&caller, req.payload).await,
            "ban_customer" => self.agent_ban_customer(&caller, req.payload).await,
            "get_license_info" => Ok(self.agent_license_info(&caller)),
            "list_agents_for_transfer" => {
                chat_more::list_agents_for_transfer(self, &chat_caller(), parse(req.payload)?).await
            }
            other => Err(not_yet(other)),
        }
    }

    async fn customer_method(&self, req: Request) -> Result<Reply, ErrorBody> {
        let caller = self.customer_caller(&req)?;
        self.rate_check(&format!("c:{}:{}", caller.org.org.id, caller.actor.id()))?;
        match req.action.as_str() {
            "start_chat" => {
                chat_methods::start_chat(self, &caller, parse(req.payload)?, false).await
            }
            "resume_chat" => {
                chat_methods::start_chat(self, &caller, parse(req.payload)?, true).await
            }
            "send_event" => chat_methods::send_event(self, &caller, parse(req.payload)?).await,
            "deactivate_chat" => {
                chat_methods::deactivate_chat(self, &caller, parse(req.payload)?).await
            }
            "get_chat" => chat_methods::get_chat(self, &caller, parse(req.payload)?).await,
            "list_chats" => chat_methods::list_chats(self, &caller, parse(req.payload)?).await,
            m if crate::properties::METHODS.contains(&m) => {
                crate::properties::properties_method(self, &caller, &req.action, req.payload).await
            }
            "get_customer" => chat_methods::get_customer(&caller),
            "update_customer" => {
                chat_methods::update_customer(self, &caller, parse(req.payload)?).await
            }
            "list_group_statuses" => chat_methods::list_group_statuses(&caller, req.payload),
            "set_customer_session_fields" => {
                let fields = CustomerFields {
                    session_fields: Some(
                        parse::<SessionFieldsRequest>(req.payload)?.session_fields,
                    ),
                    ..CustomerFields::default()
                };
                chat_methods::update_customer(self, &caller, fields).await
            }
            "update_customer_page" => {
                chat_methods::update_customer_page(self, &caller, parse(req.payload)?).await
            }
            "list_threads" => chat_more::list_threads(self, &caller, parse(req.payload)?).await,
            "mark_events_as_seen" => {
                chat_more::mark_events_as_seen(self, &caller, parse(req.payload)?).await
            }
            "send_typing_indicator" => {
                let r: SendTypingIndicatorRequest = parse(req.payload)?;
                let what = Typing::Indicator {
                    is_typing: r.is_typing,
                    visibility: chatgate_protocol::data::Visibility::All,
                };
                chat_more::typing(self, &caller, &r.chat_id, what).await
            }
            "send_sneak_peek" => {
                let r: SendSneakPeekRequest = parse(req.payload)?;
                if r.sneak_peek_text.len() > crate::chats::MAX_MESSAGE_TEXT {
                    return Err(validation("`sneak_peek_text` is too long"));
                }
                chat_more::typing(
                    self,
                    &caller,
                    &r.chat_id,
                    Typing::SneakPeek {
                        text: r.sneak_peek_text,
                    },
                )
                .await
            }
            "send_rich_message_postback" => {
                chat_more::rich_message_postback(self, &caller, parse(req.payload)?).await
            }
            other => Err(not_yet(other)),
        }
    }

    fn customer_caller(&self, req: &Request) -> Result<ChatCaller, ErrorBody> {
        let (org_id, customer) = match &req.requester {
            Requester::Rtm(conn) => {
                let login = conn.login_state().ok_or_else(|| {
                    err(
                        ErrorType::Authentication,
                        "log in first: send `login` with a token",
                    )
                })?;
                (login.org.clone(), login.agent.clone())
            }
            Requester::CustomerWeb {
                authorization,
                organization_id,
            } => {
                let header = authorization.as_deref().ok_or_else(|| {
                    err(ErrorType::Authentication, "missing `Authorization` header")
                })?;
                let entry = authenticate(&self.inner, header, Side::Customer)?;
                if let Some(org) = organization_id
                    && *org != entry.org
                {
                    return Err(err(ErrorType::Authentication, "Invalid access token"));
                }
                (entry.org, entry.agent)
            }
            Requester::Web { .. } | Requester::ConfigWeb { .. } => unreachable!("agent side"),
        };
        let org = self
            .org(&org_id)
            .ok_or_else(|| err(ErrorType::Authentication, "Invalid access token"))?;
        if org
            .lock()
            .customers
            .get(&customer)
            .is_some_and(crate::customers::is_banned)
        {
            return Err(crate::customers::banned_error());
        }
        Ok(ChatCaller {
            org,
            actor: Actor::Customer(customer),
            cause: cause_of(req),
            version: req.version,
            scopes: None,
        })
    }

    /// The organization of an authenticated agent or bot request (rate
    /// limited like any method).
    pub(crate) fn authenticate_agent(
        &self,
        req: &Request,
    ) -> Result<Arc<crate::state::Org>, ErrorBody> {
        let caller = self.caller(req)?;
        self.rate_check(&format!("a:{}:{}", caller.org.org.id, caller.agent))?;
        Ok(caller.org)
    }

    /// The organization of an authenticated customer request.
    pub(crate) fn authenticate_customer(
        &self,
        req: &Request,
    ) -> Result<Arc<crate::state::Org>, ErrorBody> {
        let caller = self.customer_caller(req)?;
        self.rate_check(&format!("c:{}:{}", caller.org.org.id, caller.actor.id()))?;
        Ok(caller.org)
    }

    fn caller(&self, req: &Request) -> Result<Caller, ErrorBody> {
        let (org_id, agent_id, conn, token_scopes) = match &req.requester {
            Requester::Rtm(conn) => {
                let login = conn.login_state().ok_or_else(|| {
                    err(
                        ErrorType::Authentication,
                        "log in first: send `login` with a token",
                    )
                })?;
                (
                    login.org.clone(),
                    login.agent.clone(),
                    Some(conn.clone()),
                    login.scopes(),
                )
            }
            Requester::Web { authorization } | Requester::ConfigWeb { authorization } => {
                let header = authorization.as_deref().ok_or_else(|| {
                    err(ErrorType::Authentication, "missing `Authorization` header")
                })?;
                let entry = authenticate(&self.inner, header, Side::Agent)?;
                (entry.org, entry.agent, None, entry.scopes)
            }
            Requester::CustomerWeb { .. } => unreachable!("customer side"),
        };
        let org = self
            .org(&org_id)
            .ok_or_else(|| err(ErrorType::Authentication, "Invalid access token"))?;
        let mut acting = agent_id;
        let scopes = {
            let state = org.lock();
            let agent = state
                .agents
                .get(&acting)
                .ok_or_else(|| err(ErrorType::Authentication, "Invalid access token"))?;
            if agent.agent.suspended {
                return Err(err(ErrorType::RequesterSuspended, "Requester suspended"));
            }
            if let Some(bot) = &req.author_id {
                if req.version >= Version::V3_6 {
                    return Err(validation(
                        "`author_id` was removed in 3.6: authenticate with a bot token",
                    ));
                }
                match state.agents.get(bot) {
                    Some(b) if b.agent.kind == AgentKind::Bot => acting = bot.clone(),
                    _ => return Err(validation(format!("`author_id`: no bot `{bot}`"))),
                }
            }
            let who = &state.agents[&acting].agent;
            let defaults = ScopeSet::defaults(who.kind, who.role);
            match &token_scopes {
                Some(s) => s.intersect(&defaults),
                None => defaults,
            }
        };
        Ok(Caller {
            org,
            agent: acting,
            scopes,
            conn,
            cause: cause_of(req),
        })
    }
}
