//! The one operation surface both transports call.
//!
//! [`Engine::execute`] takes who is asking (an RTM [`Connection`] or a Web
//! `Authorization` header), the protocol version, the action and its payload,
//! and answers with the response payload or an error. Pushes the request
//! caused are fanned out by the engine itself, *after* the change is durable
//! and in commit order: every write goes to the [`Store`] with a completion
//! that delivers its pushes, and the store runs completions in commit order.
//! Reads wait on a store barrier, so no response reveals state that is not yet
//! durable.
//!
//! Hot state (organizations, agents, presence, sessions) lives in memory,
//! loaded from the store at start. Each organization's state sits behind one
//! `std::sync::Mutex` held only for short, synchronous critical sections (no
//! `.await` inside); submitting to the store while holding it is what ties
//! the order of state changes to the order of commits.

mod apikeys;
mod archives;
mod auth;
mod chat_methods;
mod chat_more;
mod chats;
mod config;
mod connection;
mod customers;
mod dispatch;
mod error;
mod limits;
mod metrics;
mod paging;
mod properties;
mod provision;
mod push;
mod resume;
mod state;
mod status;
mod tags;
mod uploads;

pub use auth::hash_secret;
pub use connection::{ClientInfo, Connection, ConnectionRx, Side, Subscriptions};
pub use dispatch::{AfterReply, Reply, Request, Requester};
pub use error::{internal, validation};
pub use limits::Rate;
pub use provision::{ProvisionAgent, ProvisionGroup, ProvisionOrg, ProvisionReport, ProvisionSpec};
pub use resume::RESUME_LOG_BYTES;
pub use uploads::{
    FILES_PREFIX, MAX_UPLOAD, ServedFile, UPLOAD_TTL_US, UploadedFile, encode_segment, upload_path,
    upload_response,
};

use chatgate_protocol::{DisconnectReason, Version};
use chatgate_store::{Store, StoreError};
use dashmap::DashMap;
use state::{Org, TokenEntry};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use thiserror::Error;

/// Limits the engine enforces. Every bound is named and configurable.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Frames that may wait in one session's outbound queue. A session whose
    /// queue is full is disconnected (`connection_timeout`, `data.detail =
    /// "slow_consumer"`) instead of slowing the publisher.
    pub outbound_queue: usize,
    /// Bytes that may wait in one session's outbound queue (the same
    /// disconnect beyond it): large pushes fill memory long before the
    /// frame count does.
    pub outbound_queue_bytes: usize,
    /// Requests per principal (agent, bot or customer); `None` = unlimited.
    pub rate_limit: Option<Rate>,
    /// Live RTM sessions per agent; a login beyond it evicts the oldest
    /// session (`connection_evicted`).
    pub max_sessions_per_agent: usize,
    /// Connections per address that have not logged in yet; more are closed
    /// at once (`too_many_unauthorized_connections`).
    pub max_unauthenticated_per_address: usize,
    /// Lifetime of customer tokens (`POST /customer/token`), seconds.
    pub customer_token_ttl: u64,
    /// Lifetime of bot tokens (`issue_bot_token`), seconds.
    pub bot_token_ttl: u64,
    /// Lifetime of access tokens from `/v1/auth`, seconds.
    pub access_token_ttl: u64,
    /// How long a session that asked for exact resume is kept after its
    /// connection drops (proto-docs/resume.md).
    pub resume_window: std::time::Duration,
    /// Latest pushes a resume stream keeps (at most `outbound_queue`, and at
    /// most [`RESUME_LOG_BYTES`] bytes of them).
    pub resume_log: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            outbound_queue: 1024,
            outbound_queue_bytes: 2 * 1024 * 1024,
            rate_limit: Some(Rate {
                per_second: 50.0,
                burst: 200.0,
            }),
            max_sessions_per_agent: 16,
            max_unauthenticated_per_address: 1024,
            customer_token_ttl: 8 * 3600,
            bot_token_ttl: 24 * 3600,
            access_token_ttl: 3600,
            resume_window: std::time::Duration::from_secs(60),
            resume_log: 1024,
        }
    }
}

/// Errors starting the engine.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("provisioning: {0}")]
    Provision(String),
    #[error("corrupt state in the store: {0}")]
    Corrupt(String),
}

/// Cheap-to-clone handle on the engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("orgs", &self.inner.orgs.len())
            .field("connections", &self.inner.connections.len())
            .finish()
    }
}

pub(crate) struct Inner {
    /// Durable state; every change is committed here before it is answered.
    pub(crate) store: Arc<dyn Store>,
    /// Hot state per organization. DashMap: lookups on every request from
    /// many tasks; entries are only added (provisioning), never held across
    /// `.await`.
    pub(crate) orgs: DashMap<String, Arc<Org>>,
    /// SHA-256 of every valid credential → its owner.
    pub(crate) tokens: DashMap<[u8; 32], TokenEntry>,
    /// Every open RTM connection (logged in or not), so shutdown can tell
    /// each one why it is closed.
    pub(crate) connections: DashMap<u64, Arc<Connection>>,
    pub(crate) next_connection: AtomicU64,
    /// Token buckets per principal.
    pub(crate) rate: limits::RateLimiter,
    /// Connections per address that have not logged in.
    pub(crate) unauthenticated: limits::UnauthenticatedCount,
    pub(crate) config: EngineConfig,
    /// Set by [`Engine::shutdown`]: connections opened afterwards are closed
    /// at once with the same reason.
    pub(crate) shutting_down: OnceLock<(DisconnectReason, String)>,
    /// Signs page ids (drawn at start; page ids do not outlive the process).
    pub(crate) page_key: [u8; 32],
    /// Resume streams by id (sessions that asked for exact resume).
    pub(crate) resume_streams: DashMap<String, Arc<resume::ResumeStream>>,
    /// Held across the read-modify-write of a thread (or an event) that is
    /// only in the store: such edits are rare, and two at once must not
    /// lose one another's change.
    pub(crate) cold_edits: tokio::sync::Mutex<()>,
    pub(crate) metrics: metrics::EngineMetrics,
}

impl Engine {
    /// Loads hot state from `store`.
    pub fn start(store: Arc<dyn Store>, config: EngineConfig) -> Result<Engine, EngineError> {
        let snapshot = store.load()?;
        let inner = Inner {
            store,
            orgs: DashMap::new(),
            tokens: DashMap::new(),
            connections: DashMap::new(),
            next_connection: AtomicU64::new(1),
            rate: Default::default(),
            unauthenticated: Default::default(),
            config,
            shutting_down: OnceLock::new(),
            resume_streams: DashMap::new(),
            cold_edits: tokio::sync::Mutex::new(()),
            metrics: metrics::EngineMetrics::default(),
            page_key: {
                let mut k = [0u8; 32];
                k[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
                k[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
                k
            },
        };
        for rec in snapshot.orgs {
            let id = rec.org.id.0.clone();
            inner.orgs.insert(id, Arc::new(Org::from_record(rec)));
        }
        for t in snapshot.tokens {
            inner.tokens.insert(
                t.hash,
                TokenEntry {
                    org: t.org.0,
                    agent: t.agent,
                    kind: t.kind,
                    expires_at: t.expires_at,
                    scopes: t
                        .scopes
                        .as_deref()
                        .and_then(|s| {
                            let list: Vec<&str> = s.split_whitespace().collect();
                            chatgate_domain::scopes::ScopeSet::parse(&list).ok()
                        })
                        .map(Arc::new),
                },
            );
        }
        for c in snapshot.customers {
            let Some(org) = inner.orgs.get(&c.org.0) else {
                continue;
            };
            let session_fields = serde_json::from_str(&c.session_fields).unwrap_or_default();
            org.lock().customers.insert(
                c.id.clone(),
                chats::CustomerState {
                    id: c.id,
                    name: c.name,
                    email: c.email,
                    avatar: c.avatar,
                    session_fields,
                    created_at_us: c.created_at_us,
                    banned_until_us: c.banned_until_us,
                    sessions: Vec::new(),
                    chat_ids: Vec::new(),
                },
            );
        }
        for t in snapshot.tags {
            let Some(org) = inner.orgs.get(&t.org.0) else {
                continue;
            };
            let group_ids = serde_json::from_str(&t.group_ids)
                .map_err(|e| EngineError::Corrupt(format!("tag {}: {e}", t.name)))?;
            org.lock().tags.insert(
                t.name.clone(),
                state::TagDef {
                    name: t.name,
                    group_ids,
                    author_id: t.author_id,
                    created_at_us: t.created_at_us,
                },
            );
        }
        for p in &snapshot.property_defs {
            let Some(org) = inner.orgs.get(&p.org.0) else {
                continue;
            };
            let def = properties::from_record(p).map_err(EngineError::Corrupt)?;
            org.lock()
                .property_defs
                .insert((p.namespace.clone(), p.name.clone()), def);
        }
        for u in snapshot.uploads {
            let Some(org) = inner.orgs.get(&u.org.0) else {
                continue;
            };
            org.lock().uploads.insert(
                u.id,
                uploads::UploadMeta {
                    name: u.name,
                    content_type: u.content_type,
                    size: u.size,
                    created_at_us: u.created_at_us,
                    permanent: u.permanent,
                },
            );
        }
        for rec in snapshot.chats {
            let Some(org) = inner.orgs.get(&rec.org.0).map(|o| o.value().clone()) else {
                continue;
            };
            let chat = chats::ChatState::from_record(rec).map_err(EngineError::Corrupt)?;
            let mut state = org.lock();
            if let Some(c) = chat
                .customer_id
                .as_ref()
                .and_then(|id| state.customers.get_mut(id))
            {
                c.chat_ids.push(chat.id.clone());
            }
            if chat.active_thread().is_some() {
                for agent in chat.present_agents() {
                    if let Some(a) = state.agents.get_mut(agent) {
                        a.active_chats.insert(chat.id.clone());
                    }
                }
                if chat
                    .active_thread()
                    .is_some_and(|t| t.queued_at_us.is_some())
                {
                    state.queue.push(chat.id.clone());
                }
            }
            state.chats.insert(chat.id.clone(), chat);
        }
        for org in inner.orgs.iter() {
            let mut state = org.lock();
            let mut queue = std::mem::take(&mut state.queue);
            queue.sort_by_key(|c| state.chats[c].active_thread().and_then(|t| t.queued_at_us));
            state.queue = queue;
        }
        Ok(Engine {
            inner: Arc::new(inner),
        })
    }

    /// Opens a new RTM connection record. The transport reads frames for the
    /// client from the returned receiver and watches [`Connection::closed`].
    ///
    /// With the client's address, at most `max_unauthenticated_per_address`
    /// connections per address may wait for their login; one more is closed
    /// at once with `too_many_unauthorized_connections`.
    pub fn connect(
        &self,
        side: Side,
        version: Version,
        peer: Option<std::net::IpAddr>,
    ) -> (Arc<Connection>, ConnectionRx) {
        let id = self.inner.next_connection.fetch_add(1, Ordering::Relaxed);
        let (conn, rx) = Connection::with_peer(
            id,
            side,
            version,
            self.inner.config.outbound_queue,
            self.inner.config.outbound_queue_bytes,
            peer,
        );
        self.inner.connections.insert(id, conn.clone());
        if let Some((reason, detail)) = self.inner.shutting_down.get() {
            conn.close(*reason, Some(serde_json::json!({ "detail": detail })));
        } else if let Some(addr) = peer {
            if self
                .inner
                .unauthenticated
                .try_add(addr, self.inner.config.max_unauthenticated_per_address)
            {
                conn.counted_unauthenticated.store(true, Ordering::Relaxed);
            } else {
                conn.close(DisconnectReason::TooManyUnauthorizedConnections, None);
            }
        }
        (conn, rx)
    }

    /// The connection logged in or ended: it no longer counts as
    /// unauthenticated.
    pub(crate) fn release_unauthenticated(&self, conn: &Connection) {
        if conn.counted_unauthenticated.swap(false, Ordering::Relaxed)
            && let Some(addr) = conn.peer
        {
            self.inner.unauthenticated.remove(addr);
        }
    }

    /// Forgets a connection that has ended: the agent's presence is updated
    /// and the resulting status change is pushed.
    pub async fn disconnect(&self, conn: &Arc<Connection>) {
        self.inner.connections.remove(&conn.id());
        self.release_unauthenticated(conn);
        match conn.side() {
            Side::Agent => {
                if !resume::detach(self, conn) {
                    status::session_ended(self, conn).await
                }
            }
            Side::Customer => chat_methods::customer_session_ended(self, conn),
        }
    }

    /// Tells every open connection that the server is going away. The
    /// transports send `agent_disconnected` with `reason` and close.
    pub fn shutdown(&self, reason: DisconnectReason, detail: &str) {
        let _ = self.inner.shutting_down.set((reason, detail.to_owned()));
        for c in self.inner.connections.iter() {
            c.value()
                .close(reason, Some(serde_json::json!({ "detail": detail })));
        }
    }

    /// Issues a customer access token (`POST /customer/token`), creating the
    /// customer unless an existing `customer_id` is given.
    /// A browser's `Origin` must be among the organization's allowed
    /// origins when it lists any.
    pub async fn issue_customer_token(
        &self,
        req: chatgate_protocol::chats::CustomerTokenRequest,
        origin: Option<&str>,
    ) -> Result<chatgate_protocol::chats::CustomerTokenResponse, chatgate_protocol::ErrorBody> {
        chat_methods::issue_customer_token(self, req, origin).await
    }

    /// Number of open RTM connections.
    /// Sends `groups_status_updated` for every organization whose group
    /// statuses may have changed since the last call (the server calls this
    /// every 250 ms; changes in between are coalesced into one push).
    pub async fn flush_group_statuses(&self) {
        let orgs: Vec<Arc<state::Org>> =
            self.inner.orgs.iter().map(|o| o.value().clone()).collect();
        for org in orgs {
            let pending = {
                let mut state = org.lock();
                if !state.group_statuses_dirty {
                    continue;
                }
                let pushes = chats::group_status_pushes(&mut state);
                if pushes.is_empty() {
                    continue;
                }
                // After everything already submitted, like any push.
                match push::submit(&self.inner.store, Vec::new(), pushes) {
                    Ok(p) => p,
                    Err(_) => {
                        state.group_statuses_dirty = true;
                        continue;
                    }
                }
            };
            let _ = pending.wait().await;
        }
    }

    pub fn connection_count(&self) -> usize {
        self.inner.connections.len()
    }

    /// Forgets the request-rate buckets that have refilled (run with the
    /// other sweeps): otherwise every principal ever seen, every customer
    /// above all, would keep one. Returns how many were forgotten.
    pub fn sweep_rate_limits(&self) -> usize {
        match self.inner.config.rate_limit {
            Some(rate) => self.inner.rate.sweep(rate, std::time::Instant::now()),
            None => 0,
        }
    }

    /// Events held in memory, every organization together: only active
    /// chats keep their last thread's events; the others' are read from
    /// the store when asked for.
    pub fn hot_events(&self) -> usize {
        self.sum_over_chats(|c| c.events.len())
    }

    /// Threads held in memory, every organization together: a chat keeps
    /// its last thread hot and reads the older ones from the store when
    /// asked, so this follows the number of chats, not their history.
    pub fn hot_threads(&self) -> usize {
        self.sum_over_chats(|c| c.threads.len())
    }

    fn sum_over_chats(&self, f: impl Fn(&chats::ChatState) -> usize) -> usize {
        let orgs: Vec<Arc<Org>> = self.inner.orgs.iter().map(|o| o.value().clone()).collect();
        orgs.iter()
            .map(|o| o.lock().chats.values().map(&f).sum::<usize>())
            .sum()
    }

    /// Whether the engine can take requests (the store accepts writes).
    pub async fn ready(&self) -> bool {
        push::barrier(&self.inner.store).await.is_ok()
    }

    pub(crate) fn org(&self, id: &str) -> Option<Arc<Org>> {
        self.inner.orgs.get(id).map(|o| o.value().clone())
    }
}
