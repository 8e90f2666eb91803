//! The embedded default store: SQLite (bundled) behind one writer thread.
//!
//! Why a dedicated thread and not an async pool: SQLite allows one writer at a
//! time anyway, and a thread that owns the write connection can drain every
//! waiting submission into one transaction, so N concurrent writes cost one
//! fsync instead of N (group commit). Throughput grows with load while each
//! acknowledged write stays durable (`synchronous=FULL`). The full-text
//! index, derived from the events, trails their commits (see `index_text`).

use crate::metrics::{Counters, WriterMetrics};
use crate::{
    AgentRecord, ChatRecord, ChatUserRecord, Committed, Completion, CustomerRecord, EventRecord,
    Op, OrgRecord, PropertyDefRecord, Snapshot, Store, StoreError, StoreStats, TagRecord,
    ThreadRecord, TokenKind, TokenRecord, UploadRecord,
};
use chatgate_domain::{
    Agent, AgentId, AgentKind, AgentProfile, Group, GroupPriority, OrgId, Organization, Role,
    RoutingStatus,
};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Tunables of the embedded store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Submissions that may wait for the writer before `submit` answers
    /// [`StoreError::Busy`].
    pub queue_capacity: usize,
    /// Submissions committed together in one transaction at most.
    pub max_batch: usize,
    /// How long the writer holds a lone write for others to join its
    /// transaction, when writes arrive faster than one per two delays
    /// ([`CommitPacer`]); zero commits every group at once.
    pub commit_delay: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            queue_capacity: 16_384,
            max_batch: 1_024,
            commit_delay: DEFAULT_COMMIT_DELAY,
        }
    }
}

/// The writer's default [`StoreConfig::commit_delay`]: at 3,000 chat
/// events a second it cut the server's CPU from 73–75% of a core to 57–70%
/// (median 63%) with a send-to-push p99 of the same order, and at 8,000 a
/// second the p99 from 299 ms to 33–87 ms (loadtest/README.md, seventh
/// session).
pub const DEFAULT_COMMIT_DELAY: Duration = Duration::from_micros(300);

/// Decides whether the writer waits before committing a group (the idea of
/// PostgreSQL's `commit_delay`).
///
/// Each transaction costs a sync of the log, whose CPU (block submission,
/// the wait, the wake-up) is paid again for every group however small. At a
/// few thousand writes a second arriving one by one, most groups held a
/// single write (1.3 on average at 3,000/s) and the syncs took half the
/// server's CPU. Waiting `delay` lets the writes that follow join the
/// group, which is worth it only when some are expected: the pacer keeps a
/// moving average of the time between writes and waits only while it is
/// at most twice the delay (1,667 writes a second and up at the default),
/// and only when the queue held nothing besides the group's first write (a
/// writer that is behind already commits large groups). At lower rates a
/// write is committed at once, so a lone push pays no delay.
#[derive(Debug)]
pub(crate) struct CommitPacer {
    delay: Duration,
    last_arrival: Option<Instant>,
    /// Moving average of the time between writes' arrivals, in seconds.
    interval: f64,
}

impl CommitPacer {
    pub fn new(delay: Duration) -> Self {
        CommitPacer {
            delay,
            last_arrival: None,
            // Start as if idle: no wait until the rate is seen.
            interval: f64::INFINITY,
        }
    }

    /// Notes a write that entered the queue at `queued`.
    pub fn arrived(&mut self, queued: Instant) {
        if let Some(last) = self.last_arrival {
            let gap = queued.saturating_duration_since(last).as_secs_f64();
            self.interval = if self.interval.is_finite() {
                // A sixteenth of each new gap: one pause of 32 delays
                // ends the waiting at once; when the rate drops to a steady
                // slow one the waiting ends within about eight writes, and
                // when it climbs again it starts within a few dozen.
                self.interval + (gap - self.interval) / 16.0
            } else {
                gap
            };
        }
        if self.last_arrival.is_none_or(|last| queued > last) {
            self.last_arrival = Some(queued);
        }
    }

    /// How long to wait before committing a group of `writes` writes that
    /// emptied the queue, if at all.
    pub fn wait(&self, writes: usize) -> Option<Duration> {
        (writes == 1 && !self.delay.is_zero() && self.interval <= 2.0 * self.delay.as_secs_f64())
            .then_some(self.delay)
    }
}

/// Schema migrations, applied in order; `PRAGMA user_version` records how many
/// ran. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    license_id  BIGINT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);
CREATE TABLE groups (
    org_id  TEXT NOT NULL REFERENCES organizations(id),
    id      BIGINT NOT NULL,
    name    TEXT NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE TABLE agents (
    org_id               TEXT NOT NULL REFERENCES organizations(id),
    id                   TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    name                 TEXT NOT NULL,
    role                 TEXT NOT NULL,
    max_chats            BIGINT NOT NULL,
    login_status         TEXT NOT NULL,
    last_routing_status  TEXT,
    suspended            BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (org_id, id)
);
CREATE TABLE agent_groups (
    org_id    TEXT NOT NULL,
    agent_id  TEXT NOT NULL,
    group_id  BIGINT NOT NULL,
    priority  TEXT NOT NULL,
    PRIMARY KEY (org_id, agent_id, group_id),
    FOREIGN KEY (org_id, agent_id) REFERENCES agents(org_id, id) ON DELETE CASCADE
);
CREATE TABLE tokens (
    hash        BLOB PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    agent_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    scopes      TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);
CREATE TABLE customers (
    org_id          TEXT NOT NULL REFERENCES organizations(id),
    id              TEXT NOT NULL,
    name            TEXT,
    email           TEXT,
    avatar          TEXT,
    session_fields  TEXT,
    banned_until    BIGINT,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE TABLE chats (
    org_id       TEXT NOT NULL REFERENCES organizations(id),
    id           TEXT NOT NULL,
    customer_id  TEXT,
    last_seq     BIGINT NOT NULL DEFAULT 0,
    access       TEXT NOT NULL DEFAULT '[]',
    properties   TEXT NOT NULL DEFAULT '{}',
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE TABLE threads (
    org_id      TEXT NOT NULL,
    chat_id     TEXT NOT NULL,
    id          TEXT NOT NULL,
    active      BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    closed_at   BIGINT,
    queued_at   BIGINT,
    properties  TEXT NOT NULL DEFAULT '{}',
    tags        TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, chat_id) REFERENCES chats(org_id, id)
);
CREATE INDEX threads_by_chat ON threads (org_id, chat_id, created_at);
CREATE TABLE chat_users (
    org_id       TEXT NOT NULL,
    chat_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    user_type    TEXT NOT NULL,
    present      BIGINT NOT NULL,
    seen_up_to   BIGINT,
    PRIMARY KEY (org_id, chat_id, user_id)
);
CREATE TABLE events (
    org_id      TEXT NOT NULL,
    chat_id     TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    thread_id   TEXT NOT NULL,
    id          TEXT NOT NULL,
    author_id   TEXT,
    custom_id   TEXT,
    kind        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (org_id, chat_id, seq),
    FOREIGN KEY (org_id, chat_id) REFERENCES chats(org_id, id)
);
CREATE UNIQUE INDEX events_by_custom_id ON events (org_id, chat_id, author_id, custom_id)
    WHERE custom_id IS NOT NULL;
"#,
    r#"
ALTER TABLE chat_users ADD COLUMN visibility TEXT NOT NULL DEFAULT 'all';
CREATE INDEX events_by_thread ON events (org_id, thread_id, seq);
"#,
    r#"
ALTER TABLE agents ADD COLUMN avatar TEXT;
ALTER TABLE agents ADD COLUMN job_title TEXT;
ALTER TABLE agents ADD COLUMN owner_client_id TEXT;
CREATE INDEX tokens_by_agent ON tokens (org_id, agent_id);
"#,
    r#"
ALTER TABLE organizations ADD COLUMN allowed_origins TEXT NOT NULL DEFAULT '';
"#,
    r#"
CREATE TABLE tags (
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    name        TEXT NOT NULL,
    group_ids   TEXT NOT NULL,
    author_id   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, name)
);
"#,
    // Full-text index over the text of events (message, system_message and
    // every other event with a `text`; a file's `name`). Only the text is
    // tokenized; the ids ride along unindexed. Backfilled from what exists.
    r#"
CREATE VIRTUAL TABLE events_fts USING fts5(
    text,
    org_id UNINDEXED,
    chat_id UNINDEXED,
    thread_id UNINDEXED,
    event_id UNINDEXED,
    tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO events_fts (text, org_id, chat_id, thread_id, event_id)
    SELECT COALESCE(json_extract(body, '$.text'), json_extract(body, '$.name')),
           org_id, chat_id, thread_id, id
    FROM events
    WHERE COALESCE(json_extract(body, '$.text'), json_extract(body, '$.name')) IS NOT NULL;
"#,
    r#"
CREATE TABLE property_defs (
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    namespace   TEXT NOT NULL,
    name        TEXT NOT NULL,
    definition  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, namespace, name)
);
"#,
    r#"
CREATE TABLE uploads (
    org_id        TEXT NOT NULL REFERENCES organizations(id),
    id            TEXT NOT NULL,
    name          TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size          BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    permanent     BIGINT NOT NULL,
    PRIMARY KEY (org_id, id)
);
"#,
    r#"
ALTER TABLE threads ADD COLUMN customer_visit TEXT;
"#,
    // The full-text index is written behind the events (see `index_text`):
    // every event up to this rowid is in `events_fts`; on open the rest is
    // indexed from `events`. Events are never deleted, so rowids only grow.
    r#"
CREATE TABLE fts_state (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    indexed_up_to  BIGINT NOT NULL
);
INSERT INTO fts_state (id, indexed_up_to) VALUES (1, COALESCE((SELECT max(rowid) FROM events), 0));
"#,
    // A chat's last sequence number is its last event's (`last_seq!`):
    // the counter column cost a written page per event.
    r#"
ALTER TABLE chats DROP COLUMN last_seq;
"#,
];

/// A chat's last event sequence number (0 before its first event), as a
/// subquery on `chats`: the end of the events' primary key for the chat.
/// Events are never deleted, so the number only grows. A macro, so that
/// `concat!` builds each statement at compile time (no `format!` per
/// event on the writer).
macro_rules! last_seq {
    () => {
        "(SELECT COALESCE(max(seq), 0) FROM events
          WHERE events.org_id = chats.org_id AND events.chat_id = chats.id)"
    };
}

struct Job {
    ops: Vec<Op>,
    done: Completion,
    /// Index every event committed so far before `done` runs (a search's
    /// way of reading its own writes).
    index_text: bool,
    /// When the job entered the writer's queue.
    queued: Instant,
}

/// The embedded SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    /// Submission queue to the writer; `None` once closed.
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    /// The writer thread, joined on close.
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The checkpointer thread and the sender whose drop stops it.
    checkpointer: Mutex<Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>>,
    /// Read connection for loads and history reads (reads never block the
    /// writer in WAL mode).
    reader: Mutex<Connection>,
    stats: Arc<Counters>,
    metrics: WriterMetrics,
    /// The data directory's advisory lock; released by `close` once the
    /// writer has finished, so a successor can open the directory even
    /// while a straggling task still holds this handle.
    lock: Mutex<Option<File>>,
    path: PathBuf,
}

impl Counters {
    /// A barrier (no ops) when nothing is outstanding: everything submitted
    /// before it is durable and its completion has run, so it completes
    /// here, without a round trip through the writer thread. The caller
    /// holds the lock that orders its changes (see `Reservation`), so no
    /// submission it must follow can slip in between; one from elsewhere
    /// that does is unrelated and may complete after it. Returns `done`
    /// back when the job must go through the writer.
    fn barrier_inline(&self, ops: &[Op], done: Completion) -> Option<Completion> {
        if ops.is_empty() && self.outstanding.load(Ordering::Acquire) == 0 {
            self.submissions.fetch_add(1, Ordering::Relaxed);
            done(Ok(Committed::default()));
            None
        } else {
            Some(done)
        }
    }
}

impl SqliteStore {
    /// Blocks until the writer has indexed the text of every event
    /// acknowledged so far (nothing to wait for, mostly): a search then
    /// finds what its caller was told is committed.
    fn index_acknowledged(&self) -> Result<(), StoreError> {
        if self.stats.unindexed.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let guard = self.tx.lock().expect("store sender lock poisoned");
            let Some(sender) = guard.as_ref() else {
                return Err(StoreError::Closed);
            };
            self.stats.outstanding.fetch_add(1, Ordering::AcqRel);
            let job = Job {
                ops: Vec::new(),
                done: Box::new(move |r| {
                    let _ = tx.send(r);
                }),
                index_text: true,
                queued: Instant::now(),
            };
            sender.try_send(job).map_err(|e| {
                self.stats.outstanding.fetch_sub(1, Ordering::Release);
                match e {
                    mpsc::error::TrySendError::Full(_) => StoreError::Busy,
                    mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
                }
            })?;
        }
        rx.recv().map_err(|_| StoreError::Closed)?.map(|_| ())
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;",
    )?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let done: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
        tracing::info!(migration = i + 1, "applied store migration");
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`, takes the advisory
    /// lock, applies migrations and starts the writer.
    pub fn open(data_dir: &Path, config: StoreConfig) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data_dir.join("chatgate.lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(data_dir.display().to_string()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let path = data_dir.join("chatgate.db");
        let mut write_conn = open_conn(&path)?;
        migrate(&mut write_conn)?;
        let recovered = index_unindexed(&mut write_conn)?;
        if recovered > 0 {
            tracing::info!(
                events = recovered,
                "indexed the text of events the last run left unindexed"
            );
        }
        // Checkpoints run on a thread of their own (below), not inside a
        // commit: copying the WAL back into the database and syncing it
        // took tens of milliseconds, and every request waiting on that
        // commit waited with it.
        write_conn.execute_batch("PRAGMA wal_autocheckpoint=0;")?;
        // Every write statement stays prepared: rusqlite keeps 16 by
        // default, fewer than the writer uses, and a statement that fell
        // out was parsed again on its next use (visible in `perf`).
        write_conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let checkpoint_conn = open_conn(&path)?;
        let (stop_checkpoints, stopped) = std::sync::mpsc::channel::<()>();
        let checkpointer = std::thread::Builder::new()
            .name("chatgate-store-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoint_conn, stopped))?;
        let reader = open_conn(&path)?;
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let stats = Arc::new(Counters::default());
        let writer_stats = stats.clone();
        let metrics = WriterMetrics::new();
        let writer_metrics = metrics.clone();
        let max_batch = config.max_batch.max(1);
        let commit_delay = config.commit_delay;
        let writer = std::thread::Builder::new()
            .name("chatgate-store-writer".into())
            .spawn(move || {
                writer_loop(
                    write_conn,
                    rx,
                    max_batch,
                    commit_delay,
                    writer_stats,
                    writer_metrics,
                )
            })?;
        Ok(SqliteStore {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            checkpointer: Mutex::new(Some((stop_checkpoints, checkpointer))),
            reader: Mutex::new(reader),
            stats,
            metrics,
            lock: Mutex::new(Some(lock)),
            path,
        })
    }
}

/// Prepared statements the writer keeps (more than it has).
const STATEMENT_CACHE: usize = 128;

/// How often the checkpointer copies committed pages from the WAL back into
/// the database.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// WAL frames (4 KiB pages) past which the checkpointer restarts the log.
const RESTART_FRAMES: i64 = 16_384;

/// Passive checkpoints every [`CHECKPOINT_INTERVAL`] until stopped, then a
/// last one that truncates the WAL. A passive checkpoint never blocks the
/// writer, but under steady writes it never catches up with the log's end
/// either, and the log only starts over once one has: so when the log is
/// past [`RESTART_FRAMES`], right after a passive pass (little is left to
/// copy), a `RESTART` checkpoint holds the writer back for the rest and
/// makes the next commit start the log over. The WAL stays bounded.
fn checkpoint_loop(conn: Connection, stop: std::sync::mpsc::Receiver<()>) {
    // (busy, frames in the log, frames checkpointed)
    let checkpoint = |mode: &str| -> Option<(i64, i64, i64)> {
        match conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        }) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, mode, "store checkpoint failed");
                None
            }
        }
    };
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(CHECKPOINT_INTERVAL)
    {
        if let Some((_, frames, _)) = checkpoint("PASSIVE")
            && frames > RESTART_FRAMES
        {
            checkpoint("RESTART");
        }
    }
    checkpoint("TRUNCATE");
}

/// Committed events whose text waits in memory, at most, before the writer
/// indexes it even with submissions waiting.
const TEXT_INDEX_MAX_PENDING: usize = 512;
/// Committed events whose text the writer indexes as soon as nothing else
/// waits for it. Each indexing is an FTS5 segment to merge later: at 3,000
/// chat events/s the writer is idle between most commits, and with 32 here
/// indexing took 6.5% of the server's CPU samples, with 256 4.5%. Searches
/// index what is pending first, so the text is never missing from one.
const TEXT_INDEX_IDLE_PENDING: usize = 256;

/// Moves what the queue holds into `batch`, up to `max_batch`, without
/// waiting.
fn drain(rx: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>, max_batch: usize) {
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// Tells the pacer of the writes among `jobs` (jobs without operations are
/// barriers and pushes that only keep their place in the order); returns
/// how many there were.
fn note_writes(pacer: &mut CommitPacer, jobs: &[Job]) -> usize {
    let mut writes = 0;
    for job in jobs.iter().filter(|j| !j.ops.is_empty()) {
        pacer.arrived(job.queued);
        writes += 1;
    }
    writes
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    commit_delay: Duration,
    stats: Arc<Counters>,
    metrics: WriterMetrics,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    let mut pacer = CommitPacer::new(commit_delay);
    // The text of committed events, not yet in `events_fts`.
    let mut unindexed = FtsRows::default();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        drain(&mut rx, &mut batch, max_batch);
        let mut writes = note_writes(&mut pacer, &batch);
        if let Some(delay) = pacer.wait(writes) {
            std::thread::sleep(delay);
            stats.commit_delays.fetch_add(1, Ordering::Relaxed);
            let before = batch.len();
            drain(&mut rx, &mut batch, max_batch);
            writes += note_writes(&mut pacer, &batch[before..]);
        }
        let began = Instant::now();
        if writes > 0 {
            for job in batch.iter().filter(|j| !j.ops.is_empty()) {
                metrics
                    .queue_wait
                    .observe(began.saturating_duration_since(job.queued).as_secs_f64());
            }
            metrics.group_size.observe(writes as f64);
        }
        let results = commit_batch(&mut conn, &batch, &mut unindexed);
        if writes > 0 {
            metrics.commit.observe(began.elapsed().as_secs_f64());
        }
        // Before any completion runs: a search that follows an
        // acknowledged write sees that its text is waiting.
        stats
            .unindexed
            .store(unindexed.rows as u64, Ordering::Release);
        let index_failed = if batch.iter().any(|j| j.index_text) {
            index_text(&mut conn, &mut unindexed, &stats)
                .err()
                .map(|e| e.to_string())
        } else {
            None
        };
        match results {
            Ok(per_job) => {
                if batch.iter().any(|j| !j.ops.is_empty()) {
                    stats.transactions.fetch_add(1, Ordering::Relaxed);
                }
                for (job, result) in batch.drain(..).zip(per_job) {
                    let result = match &index_failed {
                        Some(msg) if job.index_text => {
                            Err(StoreError::Conflict(format!("indexing text failed: {msg}")))
                        }
                        _ => result,
                    };
                    stats.submissions.fetch_add(1, Ordering::Relaxed);
                    (job.done)(result);
                    stats.outstanding.fetch_sub(1, Ordering::Release);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store transaction failed");
                let msg = e.to_string();
                for job in batch.drain(..) {
                    stats.submissions.fetch_add(1, Ordering::Relaxed);
                    (job.done)(Err(StoreError::Conflict(format!(
                        "transaction failed: {msg}"
                    ))));
                    stats.outstanding.fetch_sub(1, Ordering::Release);
                }
            }
        }
        if unindexed.rows >= TEXT_INDEX_MAX_PENDING
            || (unindexed.rows >= TEXT_INDEX_IDLE_PENDING && rx.is_empty())
        {
            // A failure is logged; the rows stay pending and are tried again.
            let _ = index_text(&mut conn, &mut unindexed, &stats);
        }
    }
    if let Err(e) = index_text(&mut conn, &mut unindexed, &stats) {
        tracing::warn!(error = %e, "text left unindexed at close; indexed at the next open");
    }
    tracing::debug!("store writer stopped");
}

/// Writes the pending text of committed events into `events_fts`, with
/// the watermark that says how far the index goes, in one transaction.
///
/// Why the index trails the events instead of riding in their commits: a
/// commit with the index wrote about 12 WAL pages for a single event, 6
/// without it (the FTS5 segment, its structure record, the content and
/// docsize rows), and every page is two `pwrite`s on the commit path. Here
/// up to [`TEXT_INDEX_MAX_PENDING`] events share one segment.
///
/// The transaction does not wait for the disk (`synchronous=NORMAL`): the
/// index is derived from `events`. A later commit's sync makes it durable;
/// a crash before that loses it whole (a WAL transaction is all or nothing)
/// and [`index_unindexed`] rebuilds it on open. Searches first ask the
/// writer to run this (`index_text` jobs), so they see every acknowledged
/// event.
fn index_text(
    conn: &mut Connection,
    pending: &mut FtsRows,
    stats: &Counters,
) -> Result<(), StoreError> {
    if pending.rows == 0 {
        return Ok(());
    }
    conn.execute_batch("PRAGMA synchronous=NORMAL")?;
    let written = (|| -> Result<(), StoreError> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        pending.insert(&tx)?;
        tx.prepare_cached(MARK_INDEXED)?.execute([])?;
        tx.commit()?;
        Ok(())
    })();
    // Every other transaction of this connection syncs. (Setting the flag
    // touches no file; should it ever fail, a writer that cannot promise
    // durability must not acknowledge another write.)
    if let Err(e) = conn.execute_batch("PRAGMA synchronous=FULL") {
        panic!("the store writer could not restore synchronous=FULL: {e}");
    }
    match written {
        Ok(()) => {
            pending.clear();
            stats.unindexed.store(0, Ordering::Release);
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, rows = pending.rows, "indexing text failed");
            Err(e)
        }
    }
}

/// Every event there is is indexed (run with the index's rows).
const MARK_INDEXED: &str = "UPDATE fts_state SET indexed_up_to = (SELECT COALESCE(max(rowid), 0) FROM events) WHERE id = 1";

/// Indexes the text of events past the watermark: what a crash (or a
/// failed [`index_text`]) left out. Run on open, before the writer starts.
fn index_unindexed(conn: &mut Connection) -> Result<usize, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let n = tx.execute(
        "INSERT INTO events_fts (text, org_id, chat_id, thread_id, event_id)
         SELECT t, org_id, chat_id, thread_id, id FROM (
           SELECT COALESCE(json_extract(body, '$.text'), json_extract(body, '$.name')) AS t,
                  org_id, chat_id, thread_id, id, rowid AS r
           FROM events
           WHERE rowid > (SELECT indexed_up_to FROM fts_state WHERE id = 1))
         WHERE t IS NOT NULL ORDER BY r",
        [],
    )?;
    tx.execute(MARK_INDEXED, [])?;
    tx.commit()?;
    Ok(n)
}

/// Applies every job in one transaction. A failing job is rolled back
/// alone: the batch is first tried as a whole (almost every job succeeds),
/// and only if one fails is it run again with a savepoint per job. The
/// text of the committed events is appended to `unindexed`.
fn commit_batch(
    conn: &mut Connection,
    batch: &[Job],
    unindexed: &mut FtsRows,
) -> Result<Vec<Result<Committed, StoreError>>, StoreError> {
    if batch.iter().all(|j| j.ops.is_empty()) {
        // Barriers only: everything before them is already committed.
        return Ok(batch.iter().map(|_| Ok(Committed::default())).collect());
    }
    let mark = unindexed.mark();
    if let Some(results) =
        commit_all(conn, batch, unindexed).inspect_err(|_| unindexed.truncate(mark))?
    {
        return Ok(results);
    }
    unindexed.truncate(mark);
    commit_each(conn, batch, unindexed).inspect_err(|_| unindexed.truncate(mark))
}

/// Write transactions take the write lock at `BEGIN` (`IMMEDIATE`): the
/// first statement of a group may be a read, and a deferred transaction
/// that reads first cannot wait for the lock when it then writes (the
/// checkpointer holds it briefly); it fails with `database is locked`.
///
/// The whole batch in one transaction without savepoints, or nothing
/// (`None`) when a job fails. A savepoint per job cost two more statements
/// per job on the hot path.
fn commit_all(
    conn: &mut Connection,
    batch: &[Job],
    fts: &mut FtsRows,
) -> Result<Option<Vec<Result<Committed, StoreError>>>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        let mut committed = Committed::default();
        for op in &job.ops {
            match apply(&tx, op, fts) {
                Ok(Some(seq)) => committed.seqs.push(seq),
                Ok(None) => {}
                // Dropping the transaction rolls the whole batch back.
                Err(_) => return Ok(None),
            }
        }
        results.push(Ok(committed));
    }
    tx.commit()?;
    Ok(Some(results))
}

/// The batch with a savepoint per job, so a failing job is rolled back alone.
fn commit_each(
    conn: &mut Connection,
    batch: &[Job],
    fts: &mut FtsRows,
) -> Result<Vec<Result<Committed, StoreError>>, StoreError> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        if job.ops.is_empty() {
            results.push(Ok(Committed::default()));
            continue;
        }
        let sp = tx.savepoint()?;
        let mut committed = Committed::default();
        let mut outcome = Ok(());
        let mark = fts.mark();
        for op in &job.ops {
            match apply(&sp, op, fts) {
                Ok(Some(seq)) => committed.seqs.push(seq),
                Ok(None) => {}
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        match outcome {
            Ok(()) => {
                sp.commit()?;
                results.push(Ok(committed));
            }
            Err(e) => {
                drop(sp); // rolls back this job only
                fts.truncate(mark);
                results.push(Err(e));
            }
        }
    }
    tx.commit()?;
    Ok(results)
}

/// The full-text rows of committed events, inserted with one statement by
/// [`index_text`]. FTS5 flushes its pending terms into a new segment at
/// every statement of a transaction, so a statement per event wrote a
/// segment per event and kept the merger busy (a sixth of the server's CPU
/// under `perf` on the chat scenario); one statement writes one segment for
/// all of them.
#[derive(Default)]
struct FtsRows {
    /// A JSON array of `[org, chat, thread, event, body]`; `body` is the
    /// event's stored JSON as it is.
    json: String,
    rows: usize,
}

impl FtsRows {
    fn push(&mut self, e: &EventRecord) {
        self.json.push(if self.rows == 0 { '[' } else { ',' });
        self.json.push('[');
        for id in [&e.org.0, &e.chat_id, &e.thread_id, &e.id] {
            self.json
                .push_str(&serde_json::to_string(id).expect("strings serialize"));
            self.json.push(',');
        }
        self.json.push_str(&e.body);
        self.json.push(']');
        self.rows += 1;
    }

    fn mark(&self) -> (usize, usize) {
        (self.json.len(), self.rows)
    }

    fn truncate(&mut self, (len, rows): (usize, usize)) {
        self.json.truncate(len);
        self.rows = rows;
    }

    fn clear(&mut self) {
        self.json.clear();
        self.rows = 0;
    }

    /// Inserts the rows; they stay here (for [`FtsRows::clear`] once
    /// committed, or another try).
    fn insert(&mut self, tx: &Connection) -> Result<(), StoreError> {
        if self.rows == 0 {
            return Ok(());
        }
        self.json.push(']');
        let inserted = Self::insert_json(tx, &self.json);
        self.json.pop();
        inserted
    }

    fn insert_json(tx: &Connection, json: &str) -> Result<(), StoreError> {
        tx.prepare_cached(
            "INSERT INTO events_fts (text, org_id, chat_id, thread_id, event_id)
             SELECT t, o, c, th, e FROM (
               SELECT COALESCE(json_extract(value, '$[4].text'), json_extract(value, '$[4].name')) AS t,
                      json_extract(value, '$[0]') AS o, json_extract(value, '$[1]') AS c,
                      json_extract(value, '$[2]') AS th, json_extract(value, '$[3]') AS e,
                      key AS k
               FROM json_each(?1))
             WHERE t IS NOT NULL ORDER BY k",
        )?
        .execute(params![json])?;
        Ok(())
    }
}

fn apply(tx: &Connection, op: &Op, fts: &mut FtsRows) -> Result<Option<u64>, StoreError> {
    match op {
        Op::UpsertOrganization(o) => {
            tx.prepare_cached(
                "INSERT INTO organizations (id, name, license_id, created_at, allowed_origins)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                   allowed_origins = excluded.allowed_origins",
            )?
            .execute(params![
                o.id.0,
                o.name,
                o.license_id as i64,
                o.created_at,
                origins_json(&o.allowed_origins)
            ])?;
        }
        Op::UpsertGroup { org, group } => {
            tx.prepare_cached(
                "INSERT INTO groups (org_id, id, name) VALUES (?1, ?2, ?3)
                 ON CONFLICT (org_id, id) DO UPDATE SET name = excluded.name",
            )?
            .execute(params![org.0, group.id, group.name])?;
        }
        Op::UpsertAgent { org, agent } => {
            tx.prepare_cached(
                "INSERT INTO agents (org_id, id, kind, name, role, max_chats, login_status, suspended,
                                     avatar, job_title, owner_client_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (org_id, id) DO UPDATE SET kind = excluded.kind, name = excluded.name,
                   role = excluded.role, max_chats = excluded.max_chats,
                   login_status = excluded.login_status, suspended = excluded.suspended,
                   avatar = excluded.avatar, job_title = excluded.job_title,
                   owner_client_id = excluded.owner_client_id",
            )?
            .execute(params![
                org.0,
                agent.id.0,
                agent.kind.as_str(),
                agent.name,
                agent.role.as_str(),
                agent.max_chats,
                agent.login_status.as_str(),
                agent.suspended as i64,
                agent.profile.avatar,
                agent.profile.job_title,
                agent.profile.owner_client_id
            ])?;
            tx.prepare_cached("DELETE FROM agent_groups WHERE org_id = ?1 AND agent_id = ?2")?
                .execute(params![org.0, agent.id.0])?;
            for (group, priority) in &agent.groups {
                tx.prepare_cached(
                    "INSERT INTO agent_groups (org_id, agent_id, group_id, priority) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(
                    params![org.0, agent.id.0, group, priority.as_str()],
                )?;
            }
        }
        Op::PutToken {
            hash,
            org,
            agent,
            kind,
            created_at,
            expires_at,
        } => {
            tx.prepare_cached(
                "INSERT INTO tokens (hash, org_id, agent_id, kind, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (hash) DO NOTHING",
            )?
            .execute(params![&hash[..], org.0, agent, kind.as_str(), created_at, expires_at])?;
            let owner: (String, String) = tx
                .prepare_cached("SELECT org_id, agent_id FROM tokens WHERE hash = ?1")?
                .query_row(params![&hash[..]], |r| Ok((r.get(0)?, r.get(1)?)))?;
            if owner != (org.0.clone(), agent.clone()) {
                return Err(StoreError::Conflict(
                    "this token is already assigned to another agent".into(),
                ));
            }
        }
        Op::SetLastRoutingStatus { org, agent, status } => {
            let n = tx
                .prepare_cached(
                    "UPDATE agents SET last_routing_status = ?3 WHERE org_id = ?1 AND id = ?2",
                )?
                .execute(params![org.0, agent, status.as_str()])?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("no agent {agent}")));
            }
        }
        Op::CreateChat {
            org,
            chat_id,
            customer_id,
            created_at_us,
        } => {
            tx.prepare_cached(
                "INSERT INTO chats (org_id, id, customer_id, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![org.0, chat_id, customer_id, created_at_us])?;
        }
        Op::DeleteAgent { org, agent, at } => {
            tx.prepare_cached(
                "UPDATE tokens SET revoked_at = ?3 WHERE org_id = ?1 AND agent_id = ?2 AND revoked_at IS NULL",
            )?
            .execute(params![org.0, agent, at])?;
            let n = tx
                .prepare_cached("DELETE FROM agents WHERE org_id = ?1 AND id = ?2")?
                .execute(params![org.0, agent])?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("no agent {agent}")));
            }
        }
        Op::DeleteGroup { org, group } => {
            tx.prepare_cached("DELETE FROM agent_groups WHERE org_id = ?1 AND group_id = ?2")?
                .execute(params![org.0, group])?;
            let n = tx
                .prepare_cached("DELETE FROM groups WHERE org_id = ?1 AND id = ?2")?
                .execute(params![org.0, group])?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("no group {group}")));
            }
        }
        Op::SetTokenScopes { hash, scopes } => {
            tx.prepare_cached("UPDATE tokens SET scopes = ?2 WHERE hash = ?1")?
                .execute(params![&hash[..], scopes])?;
        }
        Op::RevokeToken { hash, at } => {
            tx.prepare_cached(
                "UPDATE tokens SET revoked_at = ?2 WHERE hash = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![&hash[..], at])?;
        }
        Op::PurgeExpiredTokens { before } => {
            tx.prepare_cached(
                "DELETE FROM tokens WHERE expires_at IS NOT NULL AND expires_at < ?1",
            )?
            .execute(params![before])?;
        }
        Op::RevokeTokens {
            org,
            agent,
            kinds,
            at,
        } => {
            for kind in kinds {
                tx.prepare_cached(
                    "UPDATE tokens SET revoked_at = ?4
                     WHERE org_id = ?1 AND agent_id = ?2 AND kind = ?3 AND revoked_at IS NULL",
                )?
                .execute(params![org.0, agent, kind.as_str(), at])?;
            }
        }
        Op::UpsertCustomer(c) => {
            tx.prepare_cached(
                "INSERT INTO customers (org_id, id, name, email, avatar, session_fields, created_at, banned_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (org_id, id) DO UPDATE SET name = excluded.name, email = excluded.email,
                   avatar = excluded.avatar, session_fields = excluded.session_fields,
                   banned_until = excluded.banned_until",
            )?
            .execute(params![
                c.org.0,
                c.id,
                c.name,
                c.email,
                c.avatar,
                c.session_fields,
                c.created_at_us,
                c.banned_until_us
            ])?;
        }
        Op::UpdateChat {
            org,
            chat_id,
            access,
            properties,
        } => {
            let n = tx
                .prepare_cached(
                    "UPDATE chats SET access = ?3, properties = ?4 WHERE org_id = ?1 AND id = ?2",
                )?
                .execute(params![org.0, chat_id, access, properties])?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("no chat {chat_id}")));
            }
        }
        Op::CreateThread {
            org,
            chat_id,
            thread,
        } => {
            tx.prepare_cached(
                "INSERT INTO threads (org_id, chat_id, id, active, created_at, closed_at, queued_at, properties, tags, customer_visit)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                org.0,
                chat_id,
                thread.id,
                thread.active as i64,
                thread.created_at_us,
                thread.closed_at_us,
                thread.queued_at_us,
                thread.properties,
                thread.tags,
                thread.customer_visit
            ])?;
        }
        Op::UpsertTag(t) => {
            tx.prepare_cached(
                "INSERT INTO tags (org_id, name, group_ids, author_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (org_id, name) DO UPDATE SET group_ids = excluded.group_ids",
            )?
            .execute(params![
                t.org.0,
                t.name,
                t.group_ids,
                t.author_id,
                t.created_at_us
            ])?;
        }
        Op::UpsertPropertyDef(p) => {
            tx.prepare_cached(
                "INSERT INTO property_defs (org_id, namespace, name, definition, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (org_id, namespace, name) DO UPDATE SET definition = excluded.definition",
            )?
            .execute(params![
                p.org.0,
                p.namespace,
                p.name,
                p.definition,
                p.created_at_us
            ])?;
        }
        Op::DeletePropertyDef {
            org,
            namespace,
            name,
        } => {
            let n = tx
                .prepare_cached(
                    "DELETE FROM property_defs WHERE org_id = ?1 AND namespace = ?2 AND name = ?3",
                )?
                .execute(params![org.0, namespace, name])?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "no property {namespace}.{name}"
                )));
            }
        }
        Op::SetThreadProperties {
            org,
            thread_id,
            properties,
        } => {
            let n = tx
                .prepare_cached("UPDATE threads SET properties = ?3 WHERE org_id = ?1 AND id = ?2")?
                .execute(params![org.0, thread_id, properties])?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("no thread {thread_id}")));
            }
        }
        Op::PatchEvent {
            org,
            chat_id,
            event_id,
            patch,
        } => {
            let n = tx
                .prepare_cached(
                    "UPDATE events SET body = json_patch(body, ?4)
                     WHERE org_id = ?1 AND chat_id = ?2 AND id = ?3",
                )?
                .execute(params![org.0, chat_id, event_id, patch])?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("no event {event_id}")));
            }
        }
        Op::PutUpload(u) => {
            tx.prepare_cached(
                "INSERT INTO uploads (org_id, id, name, content_type, size, created_at, permanent)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                u.org.0,
                u.id,
                u.name,
                u.content_type,
                u.size as i64,
                u.created_at_us,
                u.permanent as i64
            ])?;
        }
        Op::SetUploadPermanent { org, id } => {
            let n = tx
                .prepare_cached("UPDATE uploads SET permanent = 1 WHERE org_id = ?1 AND id = ?2")?
                .execute(params![org.0, id])?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("no upload {id}")));
            }
        }
        Op::DeleteUpload { org, id } => {
            tx.prepare_cached("DELETE FROM uploads WHERE org_id = ?1 AND id = ?2")?
                .execute(params![org.0, id])?;
        }
        Op::DeleteTag { org, name } => {
            let n = tx
                .prepare_cached("DELETE FROM tags WHERE org_id = ?1 AND name = ?2")?
                .execute(params![org.0, name])?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("no tag {name}")));
            }
        }
        Op::SetThreadTags {
            org,
            thread_id,
            tags,
        } => {
            let n = tx
                .prepare_cached("UPDATE threads SET tags = ?3 WHERE org_id = ?1 AND id = ?2")?
                .execute(params![org.0, thread_id, tags])?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("no thread {thread_id}")));
            }
        }
        Op::UpdateThread {
            org,
            thread_id,
            active,
            closed_at_us,
            queued_at_us,
        } => {
            let n = tx
                .prepare_cached(
                    "UPDATE threads SET active = ?3, closed_at = ?4, queued_at = ?5
                     WHERE org_id = ?1 AND id = ?2",
                )?
                .execute(params![
                    org.0,
                    thread_id,
                    *active as i64,
                    closed_at_us,
                    queued_at_us
                ])?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("no thread {thread_id}")));
            }
        }
        Op::UpdateEvent {
            org,
            chat_id,
            event_id,
            body,
        } => {
            let n = tx
                .prepare_cached(
                    "UPDATE events SET body = ?4 WHERE org_id = ?1 AND chat_id = ?2 AND id = ?3",
                )?
                .execute(params![org.0, chat_id, event_id, body])?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("no event {event_id}")));
            }
        }
        Op::SetChatUser { org, chat_id, user } => {
            tx.prepare_cached(
                "INSERT INTO chat_users (org_id, chat_id, user_id, user_type, present, seen_up_to, visibility)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (org_id, chat_id, user_id) DO UPDATE SET user_type = excluded.user_type,
                   present = excluded.present, seen_up_to = excluded.seen_up_to,
                   visibility = excluded.visibility",
            )?
            .execute(params![
                org.0,
                chat_id,
                user.user_id,
                user.user_type,
                user.present as i64,
                user.seen_up_to_us,
                user.visibility
            ])?;
        }
        Op::AppendEvent(e) => {
            // The next number after the chat's last event. A read of the
            // index page the insert below writes anyway, where a counter in
            // `chats` was one more page written per event.
            let seq: Option<i64> = tx
                .prepare_cached(concat!(
                    "SELECT ",
                    last_seq!(),
                    " + 1 FROM chats WHERE org_id = ?1 AND id = ?2"
                ))?
                .query_row(params![e.org.0, e.chat_id], |r| r.get(0))
                .optional()?;
            let Some(seq) = seq else {
                return Err(StoreError::Conflict(format!("no chat {}", e.chat_id)));
            };
            tx.prepare_cached(
                "INSERT INTO events (org_id, chat_id, seq, thread_id, id, author_id, custom_id, kind, created_at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(
                params![
                    e.org.0,
                    e.chat_id,
                    seq,
                    e.thread_id,
                    e.id,
                    e.author_id,
                    e.custom_id,
                    e.kind,
                    e.created_at_us,
                    e.body
                ],
            )?;
            fts.push(e);
            return Ok(Some(seq as u64));
        }
    }
    Ok(None)
}

/// Origins are stored as lines (portable, no JSON functions needed).
fn origins_json(origins: &[String]) -> String {
    origins.join("\n")
}

fn parse_origins(stored: &str) -> Vec<String> {
    stored
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} `{value}`"))
}

impl Store for SqliteStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let conn = self.reader.lock().expect("reader lock poisoned");
        let mut snapshot = Snapshot::default();
        let mut orgs =
            conn.prepare("SELECT id, name, license_id, created_at, allowed_origins FROM organizations ORDER BY id")?;
        let org_rows = orgs.query_map([], |r| {
            Ok(Organization {
                id: OrgId(r.get(0)?),
                name: r.get(1)?,
                license_id: r.get::<_, i64>(2)? as u64,
                created_at: r.get(3)?,
                allowed_origins: parse_origins(&r.get::<_, String>(4)?),
            })
        })?;
        for org in org_rows {
            snapshot.orgs.push(OrgRecord {
                org: org?,
                groups: Vec::new(),
                agents: Vec::new(),
            });
        }
        for rec in &mut snapshot.orgs {
            let mut groups =
                conn.prepare("SELECT id, name FROM groups WHERE org_id = ?1 ORDER BY id")?;
            for g in groups.query_map([&rec.org.id.0], |r| {
                Ok(Group {
                    id: r.get(0)?,
                    name: r.get(1)?,
                })
            })? {
                rec.groups.push(g?);
            }
            let mut memberships = conn.prepare(
                "SELECT group_id, priority FROM agent_groups WHERE org_id = ?1 AND agent_id = ?2 ORDER BY group_id",
            )?;
            let mut agents = conn.prepare(
                "SELECT id, kind, name, role, max_chats, login_status, last_routing_status, suspended,
                        avatar, job_title, owner_client_id
                 FROM agents WHERE org_id = ?1 ORDER BY id",
            )?;
            let rows = agents.query_map([&rec.org.id.0], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, i64>(7)?,
                    AgentProfile {
                        avatar: r.get(8)?,
                        job_title: r.get(9)?,
                        owner_client_id: r.get(10)?,
                    },
                ))
            })?;
            for row in rows {
                let (id, kind, name, role, max_chats, login_status, last, suspended, profile) =
                    row?;
                let mut groups = Vec::new();
                for m in memberships.query_map(params![rec.org.id.0, id], |r| {
                    Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?))
                })? {
                    let (g, p) = m?;
                    groups.push((
                        g,
                        GroupPriority::parse(&p).ok_or_else(|| corrupt("priority", &p))?,
                    ));
                }
                let last_routing_status = match last {
                    Some(s) => Some(RoutingStatus::parse(&s).ok_or_else(|| corrupt("status", &s))?),
                    None => None,
                };
                rec.agents.push(AgentRecord {
                    agent: Agent {
                        kind: AgentKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
                        role: Role::parse(&role).ok_or_else(|| corrupt("role", &role))?,
                        login_status: RoutingStatus::parse(&login_status)
                            .ok_or_else(|| corrupt("status", &login_status))?,
                        id: AgentId(id),
                        name,
                        max_chats: max_chats as u32,
                        groups,
                        suspended: suspended != 0,
                        profile,
                    },
                    last_routing_status,
                });
            }
        }
        let mut tokens = conn.prepare(
            "SELECT hash, org_id, agent_id, kind, expires_at, scopes FROM tokens WHERE revoked_at IS NULL ORDER BY hash",
        )?;
        for t in tokens.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })? {
            let (hash, org, agent, kind, expires_at, scopes) = t?;
            snapshot.tokens.push(TokenRecord {
                hash: hash
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("token hash length".into()))?,
                org: OrgId(org),
                agent,
                kind: TokenKind::parse(&kind).ok_or_else(|| corrupt("token kind", &kind))?,
                expires_at,
                scopes,
            });
        }
        load_customers(&conn, &mut snapshot)?;
        load_tags(&conn, &mut snapshot)?;
        load_property_defs(&conn, &mut snapshot)?;
        load_uploads(&conn, &mut snapshot)?;
        load_chats(&conn, &mut snapshot)?;
        Ok(snapshot)
    }

    fn submit(&self, ops: Vec<Op>, done: Completion) -> Result<(), StoreError> {
        if self
            .tx
            .lock()
            .expect("store sender lock poisoned")
            .is_none()
        {
            return Err(StoreError::Closed);
        }
        // Outside the sender's lock: an inline completion may submit again.
        let Some(done) = self.stats.barrier_inline(&ops, done) else {
            return Ok(());
        };
        let guard = self.tx.lock().expect("store sender lock poisoned");
        let Some(tx) = guard.as_ref() else {
            return Err(StoreError::Closed);
        };
        self.stats.outstanding.fetch_add(1, Ordering::AcqRel);
        tx.try_send(Job {
            ops,
            done,
            index_text: false,
            queued: Instant::now(),
        })
        .map_err(|e| {
            self.stats.outstanding.fetch_sub(1, Ordering::Release);
            match e {
                mpsc::error::TrySendError::Full(_) => StoreError::Busy,
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            }
        })
    }

    fn reserve(&self) -> Result<crate::Reservation, StoreError> {
        let guard = self.tx.lock().expect("store sender lock poisoned");
        let Some(tx) = guard.as_ref() else {
            return Err(StoreError::Closed);
        };
        let permit = tx.clone().try_reserve_owned().map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::Busy,
            mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
        })?;
        let stats = self.stats.clone();
        Ok(crate::Reservation::new(move |ops, done| {
            let Some(done) = stats.barrier_inline(&ops, done) else {
                return;
            };
            stats.outstanding.fetch_add(1, Ordering::AcqRel);
            permit.send(Job {
                ops,
                done,
                index_text: false,
                queued: Instant::now(),
            });
        }))
    }

    fn chat_events(&self, org: &str, chat_id: &str) -> Result<Vec<EventRecord>, StoreError> {
        let conn = self.reader.lock().expect("reader lock poisoned");
        events_where(&conn, "org_id = ?1 AND chat_id = ?2", org, chat_id)
    }

    fn thread_events(&self, org: &str, thread_id: &str) -> Result<Vec<EventRecord>, StoreError> {
        let conn = self.reader.lock().expect("reader lock poisoned");
        events_where(&conn, "org_id = ?1 AND thread_id = ?2", org, thread_id)
    }

    fn search_text(
        &self,
        org: &str,
        query: &crate::TextQuery,
    ) -> Result<Vec<crate::TextHit>, StoreError> {
        let Some(expr) = fts_expression(&query.text) else {
            return Ok(Vec::new());
        };
        self.index_acknowledged()?;
        let conn = self.reader.lock().expect("reader lock poisoned");
        // Only these threads (the page being answered), when given.
        let mut sql = String::from(
            "SELECT chat_id, thread_id, event_id, highlight(events_fts, 0, ?3, ?4)
             FROM events_fts
             WHERE events_fts MATCH ?2 AND org_id = ?1",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![
            org.to_owned().into(),
            expr.into(),
            query.pre_tag.clone().into(),
            query.post_tag.clone().into(),
            (query.max_hits as i64).into(),
        ];
        if let Some(ids) = &query.thread_ids {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            sql.push_str(" AND thread_id IN (");
            for (i, id) in ids.iter().enumerate() {
                sql.push_str(if i == 0 { "?" } else { ", ?" });
                sql.push_str(&(args.len() + 1).to_string());
                args.push(id.clone().into());
            }
            sql.push(')');
        }
        sql.push_str(" LIMIT ?5");
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok(crate::TextHit {
                chat_id: r.get(0)?,
                thread_id: r.get(1)?,
                event_id: r.get(2)?,
                highlighted: r.get(3)?,
            })
        })?;
        rows.map(|r| r.map_err(StoreError::from)).collect()
    }

    fn search_threads(&self, org: &str, text: &str, max: u32) -> Result<Vec<String>, StoreError> {
        let Some(expr) = fts_expression(text) else {
            return Ok(Vec::new());
        };
        self.index_acknowledged()?;
        let conn = self.reader.lock().expect("reader lock poisoned");
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT thread_id FROM events_fts
             WHERE events_fts MATCH ?2 AND org_id = ?1
             LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![org, expr, max as i64], |r| r.get(0))?;
        rows.map(|r| r.map_err(StoreError::from)).collect()
    }

    fn chat_threads(&self, org: &str, chat_id: &str) -> Result<Vec<ThreadRecord>, StoreError> {
        let conn = self.reader.lock().expect("reader lock poisoned");
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {THREAD_COLUMNS} FROM threads
             WHERE org_id = ?1 AND chat_id = ?2 ORDER BY created_at, rowid"
        ))?;
        let rows = stmt.query_map(params![org, chat_id], thread_row)?;
        rows.map(|r| r.map_err(StoreError::from)).collect()
    }

    fn org_threads(&self, org: &str) -> Result<Vec<(String, ThreadRecord)>, StoreError> {
        let conn = self.reader.lock().expect("reader lock poisoned");
        // In table order (one pass, no index lookups), then each chat's
        // threads in their order: by creation, ties by insertion.
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT chat_id, rowid, {THREAD_COLUMNS} FROM threads NOT INDEXED WHERE org_id = ?1"
        ))?;
        let mut rows: Vec<(String, i64, ThreadRecord)> = stmt
            .query_map(params![org], |r| {
                Ok((r.get(0)?, r.get(1)?, thread_row_at(r, 2)?))
            })?
            .collect::<Result<_, _>>()?;
        rows.sort_unstable_by(|a, b| {
            (&a.0, a.2.created_at_us, a.1).cmp(&(&b.0, b.2.created_at_us, b.1))
        });
        Ok(rows.into_iter().map(|(chat, _, t)| (chat, t)).collect())
    }

    fn custom_event(
        &self,
        org: &str,
        chat_id: &str,
        author: &str,
        custom_id: &str,
    ) -> Result<(Option<String>, u64), StoreError> {
        let mut conn = self.reader.lock().expect("reader lock poisoned");
        // One read transaction: the answer and the sequence it covers come
        // from the same snapshot.
        let tx = conn.transaction()?;
        let found = tx
            .prepare_cached(
                "SELECT id FROM events
                 WHERE org_id = ?1 AND chat_id = ?2 AND author_id = ?3 AND custom_id = ?4",
            )?
            .query_row(params![org, chat_id, author, custom_id], |r| r.get(0))
            .optional()?;
        let seq = tx
            .prepare_cached(concat!(
                "SELECT ",
                last_seq!(),
                " FROM chats WHERE org_id = ?1 AND id = ?2"
            ))?
            .query_row(params![org, chat_id], |r| r.get::<_, i64>(0))
            .optional()?
            .unwrap_or(0);
        drop(tx);
        Ok((found, seq as u64))
    }

    fn thread_facts(
        &self,
        org: &str,
        thread_ids: &[String],
    ) -> Result<Vec<Vec<crate::EventFact>>, StoreError> {
        let conn = self.reader.lock().expect("reader lock poisoned");
        let mut stmt = conn.prepare_cached(
            "SELECT kind, author_id, created_at FROM events
             WHERE org_id = ?1 AND thread_id = ?2 ORDER BY seq",
        )?;
        let mut out = Vec::with_capacity(thread_ids.len());
        for id in thread_ids {
            let rows = stmt.query_map(params![org, id], |r| {
                Ok(crate::EventFact {
                    kind: r.get(0)?,
                    author_id: r.get(1)?,
                    created_at_us: r.get(2)?,
                })
            })?;
            out.push(rows.collect::<Result<Vec<_>, _>>()?);
        }
        Ok(out)
    }

    fn put_file(&self, id: &str, bytes: &[u8]) -> Result<(), StoreError> {
        use std::io::Write;
        let path = file_path(&self.path, id)?;
        let dir = path.parent().expect("files dir");
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{id}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        // The rename itself is durable once the directory is synced.
        File::open(dir)?.sync_all()?;
        Ok(())
    }

    fn read_file(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match std::fs::read(file_path(&self.path, id)?) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn delete_file(&self, id: &str) -> Result<(), StoreError> {
        match std::fs::remove_file(file_path(&self.path, id)?) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            transactions: self.stats.transactions.load(Ordering::Relaxed),
            submissions: self.stats.submissions.load(Ordering::Relaxed),
            commit_delays: self.stats.commit_delays.load(Ordering::Relaxed),
        }
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        crate::metrics::register(registry, &self.metrics, self.stats.clone());
    }

    fn close(&self) {
        // Dropping the sender lets the writer drain what is queued and exit.
        drop(self.tx.lock().expect("store sender lock poisoned").take());
        if let Some(handle) = self.writer.lock().expect("writer lock poisoned").take()
            && handle.join().is_err()
        {
            tracing::error!("store writer panicked");
        }
        if let Some((stop, handle)) = self
            .checkpointer
            .lock()
            .expect("checkpointer lock poisoned")
            .take()
        {
            drop(stop);
            if handle.join().is_err() {
                tracing::error!("store checkpointer panicked");
            }
        }
        // The writer is gone; nothing more can be written through this
        // handle, so the directory is free for the next process or store.
        drop(self.lock.lock().expect("store lock poisoned").take());
    }
}

/// A user's words as an FTS5 expression: every word must occur (like
/// PostgreSQL's `plainto_tsquery`); each is quoted, so no user input is
/// read as FTS syntax. `None` when there is no word.
fn fts_expression(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(32)
        .map(|w| format!("\"{w}\""))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

fn events_where(
    conn: &Connection,
    filter: &str,
    org: &str,
    key: &str,
) -> Result<Vec<EventRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT chat_id, seq, thread_id, id, author_id, custom_id, kind, created_at, body
         FROM events WHERE {filter} ORDER BY seq"
    ))?;
    let rows = stmt.query_map(params![org, key], |r| {
        Ok(EventRecord {
            org: OrgId(org.to_string()),
            chat_id: r.get(0)?,
            seq: r.get::<_, i64>(1)? as u64,
            thread_id: r.get(2)?,
            id: r.get(3)?,
            author_id: r.get(4)?,
            custom_id: r.get(5)?,
            kind: r.get(6)?,
            created_at_us: r.get(7)?,
            body: r.get(8)?,
        })
    })?;
    rows.map(|r| r.map_err(StoreError::from)).collect()
}

fn load_customers(conn: &Connection, snapshot: &mut Snapshot) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(
        "SELECT org_id, id, name, email, avatar, session_fields, created_at, banned_until
         FROM customers ORDER BY org_id, id",
    )?;
    for c in stmt.query_map([], |r| {
        Ok(CustomerRecord {
            org: OrgId(r.get(0)?),
            id: r.get(1)?,
            name: r.get(2)?,
            email: r.get(3)?,
            avatar: r.get(4)?,
            session_fields: r
                .get::<_, Option<String>>(5)?
                .unwrap_or_else(|| "[]".into()),
            created_at_us: r.get(6)?,
            banned_until_us: r.get(7)?,
        })
    })? {
        snapshot.customers.push(c?);
    }
    Ok(())
}

fn load_uploads(conn: &Connection, snapshot: &mut Snapshot) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(
        "SELECT org_id, id, name, content_type, size, created_at, permanent FROM uploads
         ORDER BY org_id, created_at",
    )?;
    for u in stmt.query_map([], |r| {
        Ok(UploadRecord {
            org: OrgId(r.get(0)?),
            id: r.get(1)?,
            name: r.get(2)?,
            content_type: r.get(3)?,
            size: r.get::<_, i64>(4)? as u64,
            created_at_us: r.get(5)?,
            permanent: r.get::<_, i64>(6)? != 0,
        })
    })? {
        snapshot.uploads.push(u?);
    }
    Ok(())
}

/// Where an upload's bytes live: `<data dir>/files/<id>`. Ids are random
/// hex chosen by the engine; anything else is refused.
fn file_path(db: &Path, id: &str) -> Result<PathBuf, StoreError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::Conflict(format!("bad file id {id}")));
    }
    let dir = db.parent().unwrap_or(Path::new(".")).join("files");
    Ok(dir.join(id))
}

fn load_property_defs(conn: &Connection, snapshot: &mut Snapshot) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(
        "SELECT org_id, namespace, name, definition, created_at FROM property_defs
         ORDER BY org_id, namespace, name",
    )?;
    for p in stmt.query_map([], |r| {
        Ok(PropertyDefRecord {
            org: OrgId(r.get(0)?),
            namespace: r.get(1)?,
            name: r.get(2)?,
            definition: r.get(3)?,
            created_at_us: r.get(4)?,
        })
    })? {
        snapshot.property_defs.push(p?);
    }
    Ok(())
}

fn load_tags(conn: &Connection, snapshot: &mut Snapshot) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(
        "SELECT org_id, name, group_ids, author_id, created_at FROM tags ORDER BY org_id, name",
    )?;
    for t in stmt.query_map([], |r| {
        Ok(TagRecord {
            org: OrgId(r.get(0)?),
            name: r.get(1)?,
            group_ids: r.get(2)?,
            author_id: r.get(3)?,
            created_at_us: r.get(4)?,
        })
    })? {
        snapshot.tags.push(t?);
    }
    Ok(())
}

const THREAD_COLUMNS: &str =
    "id, active, created_at, closed_at, queued_at, properties, tags, customer_visit";

/// A row of [`THREAD_COLUMNS`] starting at column `at`.
fn thread_row_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<ThreadRecord> {
    Ok(ThreadRecord {
        id: r.get(at)?,
        active: r.get::<_, i64>(at + 1)? != 0,
        created_at_us: r.get(at + 2)?,
        closed_at_us: r.get(at + 3)?,
        queued_at_us: r.get(at + 4)?,
        properties: r.get(at + 5)?,
        tags: r.get(at + 6)?,
        customer_visit: r.get(at + 7)?,
    })
}

fn thread_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ThreadRecord> {
    thread_row_at(r, 0)
}

fn load_chats(conn: &Connection, snapshot: &mut Snapshot) -> Result<(), StoreError> {
    let mut chats = conn.prepare(concat!(
        "SELECT org_id, id, customer_id, ",
        last_seq!(),
        ", access, properties, created_at FROM chats ORDER BY org_id, created_at, id"
    ))?;
    let mut users = conn.prepare(
        "SELECT user_id, user_type, present, visibility, seen_up_to FROM chat_users
         WHERE org_id = ?1 AND chat_id = ?2 ORDER BY rowid",
    )?;
    let mut threads = conn.prepare(&format!(
        "SELECT {THREAD_COLUMNS} FROM threads
         WHERE org_id = ?1 AND chat_id = ?2 ORDER BY created_at DESC, rowid DESC LIMIT 2"
    ))?;
    let mut count =
        conn.prepare("SELECT count(*) FROM threads WHERE org_id = ?1 AND chat_id = ?2")?;
    let rows: Vec<ChatRecord> = chats
        .query_map([], |r| {
            Ok(ChatRecord {
                org: OrgId(r.get(0)?),
                id: r.get(1)?,
                customer_id: r.get(2)?,
                last_seq: r.get::<_, i64>(3)? as u64,
                access: r.get(4)?,
                properties: r.get(5)?,
                created_at_us: r.get(6)?,
                users: Vec::new(),
                threads: Vec::new(),
                older_threads: 0,
                older_last_thread_id: None,
                last_thread_events: Vec::new(),
                custom_ids: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    for mut chat in rows {
        for u in users.query_map(params![chat.org.0, chat.id], |r| {
            Ok(ChatUserRecord {
                user_id: r.get(0)?,
                user_type: r.get(1)?,
                present: r.get::<_, i64>(2)? != 0,
                visibility: r.get(3)?,
                seen_up_to_us: r.get(4)?,
            })
        })? {
            chat.users.push(u?);
        }
        // Only the last thread is kept hot; the one before it is named
        // (its id is the last thread's `previous_thread_id`).
        let mut newest: Vec<ThreadRecord> = threads
            .query_map(params![chat.org.0, chat.id], thread_row)?
            .collect::<Result<_, _>>()?;
        chat.older_threads = count
            .query_row(params![chat.org.0, chat.id], |r| r.get::<_, i64>(0))?
            .saturating_sub(newest.len() as i64) as u64;
        if newest.len() == 2 {
            chat.older_last_thread_id = Some(newest[1].id.clone());
            newest.truncate(1);
            chat.older_threads += 1;
        }
        chat.threads = newest;
        if let Some(last) = chat.threads.last() {
            let mut custom = conn.prepare_cached(
                "SELECT author_id, custom_id, id FROM events
                 WHERE org_id = ?1 AND thread_id = ?2 AND custom_id IS NOT NULL AND author_id IS NOT NULL",
            )?;
            for c in custom.query_map(params![chat.org.0, last.id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })? {
                chat.custom_ids.push(c?);
            }
            chat.last_thread_events = events_where(
                conn,
                "org_id = ?1 AND thread_id = ?2",
                &chat.org.0,
                &last.id,
            )?;
        }
        snapshot.chats.push(chat);
    }
    Ok(())
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod pacer_tests {
    use super::CommitPacer;
    use std::time::{Duration, Instant};

    const DELAY: Duration = Duration::from_micros(300);

    /// Writes arriving every `gap` from `start`.
    fn feed(p: &mut CommitPacer, start: Instant, gap: Duration, n: u32) -> Instant {
        let mut at = start;
        for _ in 0..n {
            at += gap;
            p.arrived(at);
        }
        at
    }

    #[test]
    fn waits_only_for_a_lone_write_while_writes_come_faster_than_every_two_delays() {
        let mut p = CommitPacer::new(DELAY);
        let t0 = Instant::now();
        p.arrived(t0);
        assert_eq!(p.wait(1), None, "nothing is known of the rate yet");
        let t = feed(&mut p, t0, Duration::from_micros(200), 50);
        assert_eq!(p.wait(1), Some(DELAY));
        assert_eq!(
            p.wait(2),
            None,
            "a group that already has company commits at once"
        );
        assert_eq!(p.wait(0), None, "a group without writes commits at once");
        // A thousand a second (a write every 1 ms): no wait.
        feed(&mut p, t, Duration::from_millis(1), 50);
        assert_eq!(p.wait(1), None);
    }

    #[test]
    fn one_long_pause_ends_the_waiting() {
        let mut p = CommitPacer::new(DELAY);
        let t = feed(&mut p, Instant::now(), Duration::from_micros(100), 100);
        assert_eq!(p.wait(1), Some(DELAY));
        p.arrived(t + Duration::from_secs(1));
        assert_eq!(
            p.wait(1),
            None,
            "the first write after a pause is committed at once"
        );
    }

    #[test]
    fn a_zero_delay_never_waits_and_out_of_order_stamps_count_as_no_gap() {
        let mut p = CommitPacer::new(Duration::ZERO);
        feed(&mut p, Instant::now(), Duration::from_micros(10), 100);
        assert_eq!(p.wait(1), None);
        let mut p = CommitPacer::new(DELAY);
        let t0 = Instant::now() + Duration::from_secs(1);
        let t = feed(&mut p, t0, Duration::from_micros(100), 50);
        // Two submitters' stamps may reach the queue out of order.
        p.arrived(t0);
        p.arrived(t + Duration::from_micros(100));
        assert_eq!(p.wait(1), Some(DELAY));
    }
}

#[cfg(test)]
mod migration_tests {
    use super::*;
    use crate::ops::{EventRecord, Op};
    use crate::{Committed, Store};
    use chatgate_domain::OrgId;

    fn event(chat: &str, thread: &str, id: &str) -> Op {
        Op::AppendEvent(EventRecord {
            org: OrgId("acme".into()),
            chat_id: chat.into(),
            seq: 0,
            thread_id: thread.into(),
            id: id.into(),
            author_id: Some("x".into()),
            custom_id: None,
            kind: "message".into(),
            created_at_us: 20,
            body: r#"{"type":"message","text":"later"}"#.into(),
        })
    }

    /// A database written before the chat counter (`chats.last_seq`) was
    /// dropped: each chat keeps its sequence, and numbering goes on from it.
    #[test]
    fn a_database_with_the_old_chat_counter_keeps_each_chats_sequence() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = open_conn(&dir.path().join("chatgate.db")).unwrap();
            let old = MIGRATIONS.len() - 1;
            for sql in &MIGRATIONS[..old] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(&format!("PRAGMA user_version = {old}"))
                .unwrap();
            conn.execute_batch(
                r#"
INSERT INTO organizations (id, name, license_id, created_at) VALUES ('acme', 'Acme', 1, 0);
INSERT INTO chats (org_id, id, customer_id, last_seq, created_at)
    VALUES ('acme', 'A', NULL, 2, 10), ('acme', 'B', NULL, 0, 11);
INSERT INTO threads (org_id, chat_id, id, active, created_at)
    VALUES ('acme', 'A', 'TA', 1, 10), ('acme', 'B', 'TB', 1, 11);
INSERT INTO events (org_id, chat_id, seq, thread_id, id, author_id, kind, created_at, body)
    VALUES ('acme', 'A', 1, 'TA', 'TA_1', 'x', 'message', 12, '{"type":"message","text":"one"}'),
           ('acme', 'A', 2, 'TA', 'TA_2', 'x', 'message', 13, '{"type":"message","text":"two"}');
"#,
            )
            .unwrap();
        }
        let store = SqliteStore::open(dir.path(), StoreConfig::default()).unwrap();
        let seqs = |store: &SqliteStore| -> Vec<(String, u64)> {
            let snap = store.load().unwrap();
            snap.chats.into_iter().map(|c| (c.id, c.last_seq)).collect()
        };
        assert_eq!(seqs(&store), vec![("A".into(), 2), ("B".into(), 0)]);
        let (tx, rx) = std::sync::mpsc::channel();
        store
            .submit(
                vec![
                    event("A", "TA", "TA_3"),
                    event("B", "TB", "TB_1"),
                    event("A", "TA", "TA_4"),
                ],
                Box::new(move |r| tx.send(r).unwrap()),
            )
            .unwrap();
        let committed: Committed = rx.recv().unwrap().unwrap();
        assert_eq!(committed.seqs, vec![3, 1, 4]);
        assert_eq!(seqs(&store), vec![("A".into(), 4), ("B".into(), 1)]);
        assert_eq!(
            store.custom_event("acme", "A", "x", "none").unwrap(),
            (None, 4),
            "the custom-id lookup reads the same number"
        );
        let conn = store.reader.lock().unwrap();
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('chats')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!columns.iter().any(|c| c == "last_seq"), "{columns:?}");
    }
}
