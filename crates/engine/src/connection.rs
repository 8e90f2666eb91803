//! An RTM connection as the engine sees it: an id, its side (agent or
//! customer), a bounded outbound queue, a close signal with its reason, and,
//! after login, who it belongs to and which pushes it subscribed to.

use bytes::Bytes;
use chatgate_protocol::pushes::{PushBits, catalogue_bits, has_bit, push_bit, set_bit};
use chatgate_protocol::{DisconnectReason, Version};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use tokio::sync::Notify;

/// Which API a connection or credential belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Agent Chat API (agents and bots).
    Agent,
    /// Customer Chat API.
    Customer,
}

impl Side {
    /// The push that precedes a server-initiated close.
    pub fn disconnect_push(self) -> &'static str {
        match self {
            Side::Agent => "agent_disconnected",
            Side::Customer => "customer_disconnected",
        }
    }
}

/// Per-version push subscriptions of a session (`login.pushes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscriptions {
    /// Indexed by [`Version::index`]: `None` = nothing in that version,
    /// else the pushes wanted in it (all = the side's catalogue), as bits.
    by_version: [Option<PushBits>; 2],
}

impl Subscriptions {
    /// The default: every push, in the connection's version.
    pub fn default_for(side: Side, version: Version) -> Self {
        let mut by_version = [None, None];
        by_version[version.index()] = Some(*catalogue_bits(side == Side::Agent, version));
        Subscriptions { by_version }
    }

    /// Parses `login.pushes`, e.g. `{"3.5": ["incoming_chat"], "3.6": ["all"]}`.
    /// Versions lower than the connection's and unknown versions are refused
    /// with a message. Unknown push names are accepted and simply never sent:
    /// the vendor's own customer SDK subscribes to names outside its
    /// documented catalogue.
    pub fn parse(
        side: Side,
        connection_version: Version,
        pushes: &BTreeMap<String, Vec<String>>,
    ) -> Result<Self, String> {
        let mut by_version = [None, None];
        for (v, names) in pushes {
            let version: Version = v.parse().map_err(|e| format!("`pushes`: {e}"))?;
            if version < connection_version {
                return Err(format!(
                    "`pushes`: version {version} is lower than the connection's version {connection_version}"
                ));
            }
            if names.iter().any(|n| n == "all") {
                by_version[version.index()] = Some(*catalogue_bits(side == Side::Agent, version));
                continue;
            }
            let mut bits: PushBits = [0; 4];
            for b in names.iter().filter_map(|n| push_bit(n)) {
                set_bit(&mut bits, b);
            }
            by_version[version.index()] = Some(bits);
        }
        Ok(Subscriptions { by_version })
    }

    /// The versions in which this session wants push `name`.
    pub fn versions_for(&self, name: &str) -> impl Iterator<Item = Version> + '_ {
        self.versions_for_bit(push_bit(name))
    }

    /// [`Self::versions_for`] with the name already turned into its bit
    /// (once per push, not once per recipient).
    pub fn versions_for_bit(&self, bit: Option<usize>) -> impl Iterator<Item = Version> + '_ {
        Version::ALL
            .into_iter()
            .filter(move |v| match (&self.by_version[v.index()], bit) {
                (Some(bits), Some(b)) => has_bit(bits, b),
                _ => false,
            })
    }
}

/// Who a logged-in connection belongs to.
#[derive(Debug)]
pub(crate) struct LoginState {
    pub org: String,
    /// The agent, or the customer on the customer side.
    pub agent: String,
    pub subs: Subscriptions,
    /// Scopes of the session's token, if restricted. Replaced by the 3.6
    /// `update_session`.
    pub scopes: std::sync::Mutex<Option<Arc<chatgate_domain::scopes::ScopeSet>>>,
}

impl LoginState {
    /// Scopes of the session's current token, if restricted.
    pub(crate) fn scopes(&self) -> Option<Arc<chatgate_domain::scopes::ScopeSet>> {
        self.scopes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The engine's record of one RTM connection.
#[derive(Debug)]
pub struct Connection {
    id: u64,
    side: Side,
    version: Version,
    /// Frames for the client. Bounded; publishers never wait.
    outbox: Outbox,
    /// Set once: why the server closes this connection.
    close_reason: OnceLock<(DisconnectReason, Option<Value>)>,
    close_signal: Notify,
    /// Set once, when `login` succeeds (a connection logs in at most once).
    pub(crate) login: OnceLock<LoginState>,
    dropped_frames: AtomicU64,
    /// The client's address, when the transport knows it.
    pub(crate) peer: Option<std::net::IpAddr>,
    /// The client's `User-Agent`, when the transport knows it.
    user_agent: OnceLock<String>,
    /// Whether this connection is counted among its address's
    /// unauthenticated connections (until it logs in or ends).
    pub(crate) counted_unauthenticated: std::sync::atomic::AtomicBool,
    /// Set at login when the session asked for exact resume: its pushes go
    /// through the stream (numbered, kept), see [`crate::resume`].
    pub(crate) resume: OnceLock<Arc<crate::resume::ResumeStream>>,
}

/// What the transport knows about a client.
#[derive(Clone, Debug, Default)]
pub struct ClientInfo {
    pub ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
}

/// A session's queue of frames for its client: many publishers, one
/// transport. Bounded in frames and in bytes.
///
/// It replaced a tokio `mpsc` channel, which `perf` on the fan-out scenario
/// showed at about a tenth of the server's CPU (semaphore, block list,
/// waker). Here a publisher takes one uncontended lock and wakes the
/// transport only when the queue was empty; the transport takes a whole
/// batch under one lock. An idle queue holds no allocation.
#[derive(Debug)]
struct Outbox {
    state: Mutex<OutboxState>,
    max_frames: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct OutboxState {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// The transport, waiting for a frame.
    waker: Option<Waker>,
    /// The transport dropped its end: nothing will be read any more.
    receiver_gone: bool,
}

/// Why a frame was not queued.
enum Refused {
    /// Over the frame or byte bound: the client is not keeping up.
    Full,
    /// The transport is gone.
    Gone,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, frame: Bytes) -> Result<(), Refused> {
        let waker = {
            let mut s = self.lock();
            if s.receiver_gone {
                return Err(Refused::Gone);
            }
            if s.frames.len() >= self.max_frames || s.bytes + frame.len() > self.max_bytes {
                return Err(Refused::Full);
            }
            s.bytes += frame.len();
            s.frames.push_back(frame);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Moves up to `max` frames out, oldest first.
    fn take(&self, max: usize) -> Vec<Bytes> {
        Self::take_locked(&mut self.lock(), max)
    }

    fn take_locked(s: &mut OutboxState, max: usize) -> Vec<Bytes> {
        let n = s.frames.len().min(max);
        let out: Vec<Bytes> = s.frames.drain(..n).collect();
        s.bytes -= out.iter().map(Bytes::len).sum::<usize>();
        if s.frames.is_empty() && s.frames.capacity() > 64 {
            // A burst is over: do not keep its memory for an idle session.
            s.frames = VecDeque::new();
        }
        out
    }

    fn poll_take(&self, cx: &mut Context<'_>, max: usize) -> Poll<Vec<Bytes>> {
        let mut s = self.lock();
        if s.frames.is_empty() {
            match &mut s.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        Poll::Ready(Self::take_locked(&mut s, max))
    }

    /// Wakes the transport if it waits (for a frame or for the close).
    fn wake(&self) {
        let waker = self.lock().waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn is_receiver_gone(&self) -> bool {
        self.lock().receiver_gone
    }
}

/// The receiving side of a connection's queue, owned by the transport.
#[derive(Debug)]
pub struct ConnectionRx {
    conn: Arc<Connection>,
}

impl ConnectionRx {
    /// Waits until a frame is queued, then takes up to `max` (oldest first;
    /// at least one).
    pub async fn recv_batch(&mut self, max: usize) -> Vec<Bytes> {
        let max = max.max(1);
        std::future::poll_fn(|cx| self.conn.outbox.poll_take(cx, max)).await
    }

    /// Takes up to `max` frames without waiting (none if the queue is empty).
    pub fn try_recv_batch(&mut self, max: usize) -> Vec<Bytes> {
        self.conn.outbox.take(max.max(1))
    }

    /// Waits for the next frame.
    pub async fn recv(&mut self) -> Bytes {
        self.recv_batch(1).await.pop().expect("at least one frame")
    }

    /// The next frame, if one is queued.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.try_recv_batch(1).pop()
    }
}

impl Drop for ConnectionRx {
    fn drop(&mut self) {
        let mut s = self.conn.outbox.lock();
        s.receiver_gone = true;
        s.frames = VecDeque::new();
        s.bytes = 0;
        s.waker = None;
    }
}

impl Connection {
    #[cfg(test)]
    pub(crate) fn new(
        id: u64,
        side: Side,
        version: Version,
        capacity: usize,
    ) -> (Arc<Connection>, ConnectionRx) {
        Self::with_peer(id, side, version, capacity, usize::MAX, None)
    }

    pub(crate) fn with_peer(
        id: u64,
        side: Side,
        version: Version,
        capacity: usize,
        max_queued_bytes: usize,
        peer: Option<std::net::IpAddr>,
    ) -> (Arc<Connection>, ConnectionRx) {
        let conn = Arc::new(Connection {
            id,
            side,
            version,
            outbox: Outbox {
                state: Mutex::new(OutboxState::default()),
                max_frames: capacity.max(1),
                max_bytes: max_queued_bytes.max(1),
            },
            close_reason: OnceLock::new(),
            close_signal: Notify::new(),
            login: OnceLock::new(),
            dropped_frames: AtomicU64::new(0),
            peer,
            user_agent: OnceLock::new(),
            counted_unauthenticated: std::sync::atomic::AtomicBool::new(false),
            resume: OnceLock::new(),
        });
        (conn.clone(), ConnectionRx { conn })
    }

    /// Whether this logged-in connection takes the push with this bit
    /// ([`chatgate_protocol::pushes::push_bit`]) in any version.
    pub(crate) fn wants(&self, bit: Option<usize>) -> bool {
        self.login_state()
            .is_some_and(|l| l.subs.versions_for_bit(bit).next().is_some())
    }

    /// Neither closed by the server nor left by its transport.
    /// A session kept for resume is open while it holds its stream, with
    /// or without a transport.
    pub(crate) fn is_open(&self) -> bool {
        match self.resume.get() {
            Some(stream) => stream.holder() == self.id,
            None => self.close_reason.get().is_none() && !self.outbox.is_receiver_gone(),
        }
    }

    /// Records the client's `User-Agent` (at most 512 characters kept).
    pub fn set_user_agent(&self, ua: String) {
        let _ = self.user_agent.set(ua.chars().take(512).collect());
    }

    pub(crate) fn user_agent(&self) -> Option<&str> {
        self.user_agent.get().map(String::as_str)
    }

    /// Connection id, unique within the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Agent or customer connection.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The version of the connection URL.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Whether `login` succeeded on this connection.
    pub fn is_logged_in(&self) -> bool {
        self.login.get().is_some()
    }

    pub(crate) fn login_state(&self) -> Option<&LoginState> {
        self.login.get()
    }

    /// Sends a push: through the session's resume stream if it has one
    /// (numbered and kept), else straight to its queue.
    pub(crate) fn deliver(&self, frame: Bytes) {
        match self.resume.get() {
            Some(stream) => stream.publish(&frame),
            None => self.enqueue(frame),
        }
    }

    /// Queues a frame without waiting. A full queue (in frames or in
    /// bytes) means the client is not keeping up: the connection is closed
    /// rather than letting it slow the publisher or hold memory.
    pub(crate) fn enqueue(&self, frame: Bytes) {
        match self.outbox.push(frame) {
            Ok(()) => {
                crate::metrics::FRAMES_QUEUED.fetch_add(1, Ordering::Relaxed);
            }
            Err(Refused::Gone) => {}
            Err(Refused::Full) => self.slow_consumer(),
        }
    }

    fn slow_consumer(&self) {
        if self.dropped_frames.fetch_add(1, Ordering::Relaxed) == 0 {
            crate::metrics::SLOW_CONSUMERS.fetch_add(1, Ordering::Relaxed);
        }
        self.close(
            DisconnectReason::ConnectionTimeout,
            Some(serde_json::json!({"detail": "slow_consumer"})),
        );
    }

    /// Asks the transport to close this connection with `reason`. The first
    /// reason wins.
    pub fn close(&self, reason: DisconnectReason, data: Option<Value>) {
        if self.close_reason.set((reason, data)).is_ok() {
            // The transport polls for the close with [`Self::poll_closed`],
            // whose waker shares the queue's slot; anyone else awaits
            // [`Self::closed`].
            self.outbox.wake();
            self.close_signal.notify_waiters();
        }
    }

    /// The reason set by [`Connection::close`], if any.
    pub fn close_reason(&self) -> Option<(DisconnectReason, Option<Value>)> {
        self.close_reason.get().cloned()
    }

    /// The transport's check for [`Connection::close`]: ready with the
    /// reason once it was called, else the task is woken when it is. It
    /// keeps no state of its own (unlike [`Self::closed`], whose future
    /// would be part of every idle session's memory): the task's waker
    /// goes into the queue's slot, which is the same task's.
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<(DisconnectReason, Option<Value>)> {
        if let Some(r) = self.close_reason.get() {
            return Poll::Ready(r.clone());
        }
        let mut s = self.outbox.lock();
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        // Checked again under the lock: `close` sets the reason before it
        // takes the waker, so a close racing with this registration is seen
        // here or wakes the task.
        match self.close_reason.get() {
            Some(r) => Poll::Ready(r.clone()),
            None => Poll::Pending,
        }
    }

    /// Resolves once [`Connection::close`] was called.
    pub async fn closed(&self) -> (DisconnectReason, Option<Value>) {
        loop {
            // Registered before the check, so a close between the two is
            // not missed (`notify_waiters` reaches futures not yet polled).
            let notified = self.close_signal.notified();
            if let Some(r) = self.close_reason.get() {
                return r.clone();
            }
            notified.await;
        }
    }

    /// Frames dropped because the queue was full (the connection was closed
    /// at the first one).
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(side: Side, v: Version, json: serde_json::Value) -> Result<Subscriptions, String> {
        Subscriptions::parse(side, v, &serde_json::from_value(json).unwrap())
    }

    #[test]
    fn subscriptions() {
        let d = Subscriptions::default_for(Side::Agent, Version::V3_5);
        let versions = |s: &Subscriptions, n: &str| s.versions_for(n).collect::<Vec<_>>();
        assert_eq!(versions(&d, "routing_status_set"), vec![Version::V3_5]);
        assert_eq!(versions(&d, "agent_disconnected"), vec![Version::V3_5]);
        assert!(
            versions(&d, "queue_position_updated").is_empty(),
            "a customer push"
        );
        let json = serde_json::json!({"3.5": ["incoming_chat"], "3.6": ["all"]});
        let s = subs(Side::Agent, Version::V3_5, json).unwrap();
        assert_eq!(
            versions(&s, "incoming_chat"),
            vec![Version::V3_5, Version::V3_6]
        );
        assert_eq!(versions(&s, "routing_status_set"), vec![Version::V3_6]);
        let lower = serde_json::json!({"3.5": ["all"]});
        assert!(subs(Side::Agent, Version::V3_6, lower).is_err());
        let unknown_version = serde_json::json!({"9.9": ["all"]});
        assert!(subs(Side::Agent, Version::V3_5, unknown_version).is_err());
        // Unknown names are accepted and never match (the vendor's customer
        // SDK subscribes to names outside the documented catalogue).
        let json = serde_json::json!({"3.5": ["bogus", "routing_status_set"]});
        let u = subs(Side::Agent, Version::V3_5, json).unwrap();
        assert_eq!(versions(&u, "routing_status_set"), vec![Version::V3_5]);
        assert!(versions(&u, "incoming_chat").is_empty());
        let c = Subscriptions::default_for(Side::Customer, Version::V3_5);
        assert_eq!(versions(&c, "queue_position_updated"), vec![Version::V3_5]);
        assert!(
            versions(&c, "routing_status_set").is_empty(),
            "an agent push"
        );
    }

    #[tokio::test]
    async fn full_queue_closes_as_slow_consumer() {
        use crate::metrics::{FRAMES_QUEUED, SLOW_CONSUMERS};
        // Process-wide counters: other tests may add to them meanwhile, so
        // only their growth is checked.
        let (queued, slow) = (
            FRAMES_QUEUED.load(Ordering::Relaxed),
            SLOW_CONSUMERS.load(Ordering::Relaxed),
        );
        let (c, mut rx) = Connection::new(1, Side::Agent, Version::V3_5, 2);
        c.deliver(Bytes::from_static(b"1"));
        c.deliver(Bytes::from_static(b"2"));
        assert!(c.close_reason().is_none());
        assert!(FRAMES_QUEUED.load(Ordering::Relaxed) >= queued + 2);
        c.deliver(Bytes::from_static(b"3"));
        let (reason, data) = c.closed().await;
        assert_eq!(reason, DisconnectReason::ConnectionTimeout);
        assert_eq!(data.unwrap()["detail"], "slow_consumer");
        assert_eq!(c.dropped_frames(), 1);
        assert!(
            SLOW_CONSUMERS.load(Ordering::Relaxed) > slow,
            "the cut-off is counted"
        );
        assert_eq!(rx.recv().await, Bytes::from_static(b"1"));
    }

    #[tokio::test]
    async fn the_queue_hands_out_batches_wakes_its_reader_and_knows_when_it_is_gone() {
        let (c, mut rx) = Connection::new(1, Side::Agent, Version::V3_5, 100);
        for f in ["a", "b", "c"] {
            c.deliver(Bytes::from(f));
        }
        assert_eq!(
            rx.recv_batch(2).await,
            vec![Bytes::from("a"), Bytes::from("b")]
        );
        assert_eq!(rx.try_recv_batch(10), vec![Bytes::from("c")]);
        assert!(rx.try_recv_batch(10).is_empty());
        // A reader waiting on an empty queue is woken by the next frame.
        let reader = tokio::spawn(async move {
            let got = rx.recv_batch(10).await;
            (rx, got)
        });
        tokio::task::yield_now().await;
        c.deliver(Bytes::from("d"));
        let (rx, got) = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("the waiting reader was woken")
            .unwrap();
        assert_eq!(got, vec![Bytes::from("d")]);
        assert!(c.is_open());
        drop(rx);
        assert!(!c.is_open(), "the transport is gone");
        c.deliver(Bytes::from("e"));
        assert!(c.close_reason().is_none(), "not a slow consumer");
    }

    #[tokio::test]
    async fn a_close_wakes_the_transport_waiting_in_poll_closed() {
        // The transport waits for frames and for the close with one waker
        // (the queue's slot). A close must wake it whichever it last
        // registered: here the close signal, then the queue.
        let (c, mut rx) = Connection::new(1, Side::Agent, Version::V3_5, 2);
        let c2 = c.clone();
        let transport = tokio::spawn(async move {
            let closed = std::future::poll_fn(|cx| c2.poll_closed(cx));
            tokio::pin!(closed);
            tokio::select! {
                biased;
                (reason, _) = &mut closed => reason,
                _ = rx.recv_batch(8) => panic!("no frame was sent"),
            }
        });
        tokio::task::yield_now().await;
        assert!(!transport.is_finished());
        c.close(DisconnectReason::AgentDisconnectedByServer, None);
        let reason = tokio::time::timeout(std::time::Duration::from_secs(5), transport)
            .await
            .expect("the transport was woken by the close")
            .unwrap();
        assert_eq!(reason, DisconnectReason::AgentDisconnectedByServer);
        // Once closed it is ready at once, for every later poll.
        let again = std::future::poll_fn(|cx| c.poll_closed(cx)).await;
        assert_eq!(again.0, DisconnectReason::AgentDisconnectedByServer);
    }

    #[tokio::test]
    async fn a_close_reaches_every_waiter() {
        let (c, _rx) = Connection::new(1, Side::Agent, Version::V3_5, 2);
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.closed().await.0 })
            })
            .collect();
        tokio::task::yield_now().await;
        c.close(DisconnectReason::AgentDisconnectedByServer, None);
        for w in waiters {
            let reason = tokio::time::timeout(std::time::Duration::from_secs(5), w)
                .await
                .expect("every waiter hears the close")
                .unwrap();
            assert_eq!(reason, DisconnectReason::AgentDisconnectedByServer);
        }
    }

    #[tokio::test]
    async fn a_queue_over_its_bytes_closes_as_slow_consumer() {
        let (c, mut rx) = Connection::with_peer(1, Side::Agent, Version::V3_5, 100, 10, None);
        c.deliver(Bytes::from_static(b"12345"));
        c.deliver(Bytes::from_static(b"67890"));
        // Taken by the transport: room again.
        assert_eq!(rx.recv().await, Bytes::from_static(b"12345"));
        c.deliver(Bytes::from_static(b"abcde"));
        assert!(c.close_reason().is_none(), "10 bytes fit");
        c.deliver(Bytes::from_static(b"x"));
        let (reason, data) = c.closed().await;
        assert_eq!(reason, DisconnectReason::ConnectionTimeout);
        assert_eq!(data.unwrap()["detail"], "slow_consumer");
    }
}
