//! Pushes: built once, encoded once per protocol version (the bytes shared by
//! every recipient), delivered only after the change that caused them is
//! durable, in commit order.

use crate::connection::Connection;
use crate::error::{internal, store_error};
use bytes::Bytes;
use chatgate_protocol::envelope::FrameType;
use chatgate_protocol::{ErrorBody, PushFrame, Version};
use chatgate_store::{Committed, Op, Reservation, Store, StoreError};
use serde::Serialize;
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use tokio::sync::oneshot;

/// The connection and request that caused a push: that connection gets the
/// push with the request's `request_id`.
#[derive(Clone, Debug)]
pub(crate) struct Cause {
    pub conn: u64,
    pub request_id: String,
}

/// One push and who receives it.
pub(crate) struct Outgoing {
    pub name: &'static str,
    pub payload: Value,
    pub recipients: Recipients,
    pub cause: Option<Cause>,
}

/// Who receives a push: a list of its own, or one shared with other pushes
/// (every session of the organization, [`crate::state::OrgState::all_sessions`]).
pub(crate) enum Recipients {
    Own(Vec<Arc<Connection>>),
    Shared(Arc<[Arc<Connection>]>),
}

impl Recipients {
    pub fn iter(&self) -> std::slice::Iter<'_, Arc<Connection>> {
        match self {
            Recipients::Own(v) => v.iter(),
            Recipients::Shared(s) => s.iter(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.iter().len() == 0
    }

    /// Keeps the recipients `keep` accepts (a shared list becomes one's own).
    pub fn retain(&mut self, keep: impl FnMut(&Arc<Connection>) -> bool) {
        if let Recipients::Shared(s) = self {
            *self = Recipients::Own(s.to_vec());
        }
        if let Recipients::Own(v) = self {
            v.retain(keep);
        }
    }
}

impl From<Vec<Arc<Connection>>> for Recipients {
    fn from(v: Vec<Arc<Connection>>) -> Self {
        Recipients::Own(v)
    }
}

impl From<Arc<[Arc<Connection>]>> for Recipients {
    fn from(s: Arc<[Arc<Connection>]>) -> Self {
        Recipients::Shared(s)
    }
}

impl Outgoing {
    pub fn new(
        name: &'static str,
        payload: impl Serialize,
        recipients: impl Into<Recipients>,
        cause: Option<Cause>,
    ) -> Self {
        Outgoing {
            name,
            payload: serde_json::to_value(payload).expect("push payloads serialize"),
            recipients: recipients.into(),
            cause,
        }
    }

    fn encode(&self, version: Version, request_id: Option<&str>) -> Bytes {
        let frame = PushFrame {
            version,
            request_id: request_id.map(str::to_owned),
            action: self.name.to_owned(),
            frame_type: FrameType::Push,
            payload: &self.payload,
        };
        Bytes::from(serde_json::to_vec(&frame).expect("push frames serialize"))
    }

    /// Queues the push on every recipient, in each version it subscribed to.
    /// Never waits.
    pub fn deliver(self) {
        let shared: [OnceLock<Bytes>; 2] = [OnceLock::new(), OnceLock::new()];
        let bit = chatgate_protocol::pushes::push_bit(self.name);
        for conn in self.recipients.iter() {
            let Some(login) = conn.login_state() else {
                continue;
            };
            for version in login.subs.versions_for_bit(bit) {
                let frame = match &self.cause {
                    Some(c) if c.conn == conn.id() => self.encode(version, Some(&c.request_id)),
                    _ => shared[version.index()]
                        .get_or_init(|| self.encode(version, None))
                        .clone(),
                };
                conn.deliver(frame);
            }
        }
    }
}

/// A submitted change: await it to learn whether it committed.
pub(crate) struct Pending(oneshot::Receiver<Result<Committed, StoreError>>);

/// Reserves a place in the store's queue. Take it *before* changing hot
/// state: a full store is then refused before anything changed.
pub(crate) fn reserve(store: &Arc<dyn Store>) -> Result<Reservation, ErrorBody> {
    store.reserve().map_err(store_error)
}

/// Submits `ops` with a reservation; once they are durable the `pushes` are
/// delivered (on the store's completion path, so in commit order). Call while
/// holding the lock that ordered the change. Never waits, never fails.
pub(crate) fn commit(reservation: Reservation, ops: Vec<Op>, pushes: Vec<Outgoing>) -> Pending {
    let (tx, rx) = oneshot::channel();
    reservation.submit(
        ops,
        Box::new(move |result| {
            if result.is_ok() {
                for p in pushes {
                    p.deliver();
                }
            }
            let _ = tx.send(result);
        }),
    );
    Pending(rx)
}

/// [`reserve`] then [`commit`], for changes made after the reservation.
pub(crate) fn submit(
    store: &Arc<dyn Store>,
    ops: Vec<Op>,
    pushes: Vec<Outgoing>,
) -> Result<Pending, ErrorBody> {
    Ok(commit(reserve(store)?, ops, pushes))
}

impl Pending {
    /// Waits for the commit.
    pub async fn wait(self) -> Result<Committed, ErrorBody> {
        match self.0.await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(store_error(e)),
            Err(_) => Err(internal("store dropped a completion")),
        }
    }
}

/// Waits until everything submitted before now is durable (read-after-commit).
pub(crate) async fn barrier(store: &Arc<dyn Store>) -> Result<(), ErrorBody> {
    submit(store, Vec::new(), Vec::new())?
        .wait()
        .await
        .map(|_| ())
}
