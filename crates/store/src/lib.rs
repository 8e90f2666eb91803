//! Durable state behind a small trait.
//!
//! [`Store`] is what the engine sees: a one-time [`Store::load`] of everything
//! hot at start, and [`Store::submit`] of a batch of [`Op`]s whose completion
//! callback runs *after* the batch is durable, in submission order. Submission
//! never blocks; a full queue is refused with [`StoreError::Busy`] so that
//! backpressure reaches the client as `service_unavailable` instead of stalling
//! a task.
//!
//! [`sqlite::SqliteStore`] is the embedded default: SQLite compiled into the
//! binary, WAL mode with `synchronous=FULL`, one dedicated writer thread that
//! commits whatever is waiting in one transaction and one fsync (group
//! commit), migrations on open, and an advisory lock on the data directory.
//! The SQL is kept to what PostgreSQL also accepts, for the second
//! implementation.

mod metrics;
pub mod ops;
pub mod sqlite;

pub use ops::*;
pub use sqlite::{SqliteStore, StoreConfig};

use thiserror::Error;

/// Errors of the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The write queue is full; try again later.
    #[error("store write queue is full")]
    Busy,
    /// The store was closed (shutdown in progress).
    #[error("store is closed")]
    Closed,
    /// Another process holds the data directory.
    #[error("data directory {0} is in use by another chatgate process")]
    Locked(String),
    /// A constraint or consistency check failed for one submission; the rest of
    /// its batch is unaffected.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// What a committed submission produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The per-chat sequence number assigned to each [`Op::AppendEvent`] of the
    /// submission, in op order.
    pub seqs: Vec<u64>,
}

/// Called exactly once, on the writer, after the submission's batch has
/// committed (or failed). Must not block.
pub type Completion = Box<dyn FnOnce(Result<Committed, StoreError>) + Send>;

/// Counters for tests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed (each one fsync).
    pub transactions: u64,
    /// Submissions completed.
    pub submissions: u64,
    /// Groups the writer held for its commit delay.
    pub commit_delays: u64,
}

/// A reserved place in the store's write queue: submitting with it cannot be
/// refused. Take it before changing hot state, so that a full queue is
/// answered before anything changed.
pub struct Reservation(Box<dyn FnOnce(Vec<Op>, Completion) + Send>);

impl Reservation {
    /// Wraps a backend's way of sending into its reserved slot.
    pub fn new(send: impl FnOnce(Vec<Op>, Completion) + Send + 'static) -> Self {
        Reservation(Box::new(send))
    }

    /// Queues `ops`; `done` runs after they are durable, in commit order.
    pub fn submit(self, ops: Vec<Op>, done: Completion) {
        (self.0)(ops, done)
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reservation")
    }
}

/// A full-text search.
#[derive(Clone, Debug)]
pub struct TextQuery {
    /// The user's words; all must occur.
    pub text: String,
    /// Marks put around each matched word.
    pub pre_tag: String,
    pub post_tag: String,
    /// At most this many events are returned.
    pub max_hits: u32,
    /// Only events of these threads, when given.
    pub thread_ids: Option<Vec<String>>,
}

/// An event found by [`Store::search_text`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextHit {
    pub chat_id: String,
    pub thread_id: String,
    pub event_id: String,
    /// The event's text with each match between the query's tags.
    pub highlighted: String,
}

/// What the archive filters need to know of one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFact {
    pub kind: String,
    pub author_id: Option<String>,
    pub created_at_us: i64,
}

/// Durable state.
pub trait Store: Send + Sync + 'static {
    /// Everything the engine keeps hot, read once at start.
    fn load(&self) -> Result<Snapshot, StoreError>;

    /// Queues `ops` to be applied atomically. `done` runs after they are
    /// durable, in submission order relative to every other submission. An
    /// empty `ops` is a barrier: `done` runs once everything submitted before
    /// it is durable.
    fn submit(&self, ops: Vec<Op>, done: Completion) -> Result<(), StoreError>;

    /// Reserves a place in the write queue ([`StoreError::Busy`] when full,
    /// [`StoreError::Closed`] after close).
    fn reserve(&self) -> Result<Reservation, StoreError>;

    /// Events of one chat in sequence order (used by tests now and by
    /// history reads later).
    fn chat_events(&self, org: &str, chat_id: &str) -> Result<Vec<EventRecord>, StoreError>;

    /// Events of one thread in sequence order.
    fn thread_events(&self, org: &str, thread_id: &str) -> Result<Vec<EventRecord>, StoreError>;

    /// Events of the organization whose text has every word of
    /// `query.text` (full-text index), each with its text highlighted.
    fn search_text(&self, org: &str, query: &TextQuery) -> Result<Vec<TextHit>, StoreError>;

    /// The threads with an event whose text has every word of `text` (at
    /// most `max`), without reading the texts: what filtering needs.
    fn search_threads(&self, org: &str, text: &str, max: u32) -> Result<Vec<String>, StoreError>;

    /// Every thread of one chat, oldest first (committed state).
    fn chat_threads(&self, org: &str, chat_id: &str) -> Result<Vec<ThreadRecord>, StoreError>;

    /// Every thread of the organization as `(chat id, thread)`, grouped by
    /// chat, each chat's oldest first (committed state). The archive search
    /// reads older threads here: they are not kept in memory.
    fn org_threads(&self, org: &str) -> Result<Vec<(String, ThreadRecord)>, StoreError>;

    /// The id of the event `author` sent in the chat with `custom_id`, if
    /// any, and the chat's committed `last_seq`, read together (so the
    /// caller knows which events the answer covers).
    fn custom_event(
        &self,
        org: &str,
        chat_id: &str,
        author: &str,
        custom_id: &str,
    ) -> Result<(Option<String>, u64), StoreError>;

    /// Kind, author and time of every event of each thread (for the archive
    /// filters that look at events), in the order of `thread_ids`.
    fn thread_facts(
        &self,
        org: &str,
        thread_ids: &[String],
    ) -> Result<Vec<Vec<EventFact>>, StoreError>;

    /// Writes an upload's bytes durably (synced before it returns). Called
    /// before the upload's metadata is committed, so committed metadata
    /// always has its bytes.
    fn put_file(&self, id: &str, bytes: &[u8]) -> Result<(), StoreError>;

    /// An upload's bytes; `None` when absent.
    fn read_file(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes an upload's bytes (after its metadata was deleted).
    fn delete_file(&self, id: &str) -> Result<(), StoreError>;

    /// Counters.
    fn stats(&self) -> StoreStats;

    /// Adds the store's metrics (commit times, group sizes, queue depth) to
    /// the registry the server exports at `/metrics`. None by default.
    fn register_metrics(&self, _registry: &mut prometheus_client::registry::Registry) {}

    /// Stops accepting submissions, finishes the queued ones, waits for the
    /// writer to exit and releases the data directory (another store may
    /// open it at once, even while handles to this one are still alive).
    fn close(&self);
}
