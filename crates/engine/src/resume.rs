//! Exact resume (chatgate extension, proto-docs/resume.md).
//!
//! A session that asks for it at `login` gets a *resume stream*: every push
//! the session is sent is numbered (`resume_seq`) and the latest ones are
//! kept. When the connection drops (the client vanished, stopped answering,
//! or could not keep up), the session is not ended: it stays registered for
//! the resume window, still an audience of everything it took, and its pushes
//! keep being numbered and kept. A new connection that logs in with the
//! stream's cursor takes the session over in the same critical section (no
//! presence change), receives the pushes after its cursor, in order, then
//! live ones. When the cursor can no longer be served the answer says so
//! (`resync_needed`) instead of losing pushes silently.
//!
//! Why a held session rather than rebuilding missed pushes from the store:
//! pushes are computed from hot state per session (scopes, subscriptions,
//! presence); holding the session computes exactly the pushes it would have
//! been sent, with no second code path to drift from the first.

use crate::Engine;
use crate::connection::Connection;
use crate::state::OrgState;
use bytes::{BufMut, Bytes, BytesMut};
use chatgate_protocol::methods::{ResumeInfo, ResumeStatus};
use chatgate_protocol::{DisconnectReason, ErrorBody};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Bytes of pushes a stream keeps at most, whatever its frame count.
pub const RESUME_LOG_BYTES: usize = 1024 * 1024;

/// What `login.resume` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ResumeRequest {
    Start,
    Cursor { stream_id: String, last_seq: u64 },
}

/// Parses `login.resume`: `true`, `false`/absent, or
/// `{"stream_id": "...", "last_seq": N}`.
pub(crate) fn parse_request(value: Option<&Value>) -> Result<Option<ResumeRequest>, ErrorBody> {
    let bad = || {
        crate::error::validation(
            "`resume` must be `true` (start a resume stream) or \
             {\"stream_id\": string, \"last_seq\": non-negative integer}",
        )
    };
    match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(None),
        Some(Value::Bool(true)) => Ok(Some(ResumeRequest::Start)),
        Some(Value::Object(m)) => {
            if m.keys().any(|k| k != "stream_id" && k != "last_seq") {
                return Err(bad());
            }
            let stream_id = m.get("stream_id").and_then(Value::as_str).ok_or_else(bad)?;
            let last_seq = m.get("last_seq").and_then(Value::as_u64).ok_or_else(bad)?;
            if stream_id.is_empty() || stream_id.len() > 64 {
                return Err(bad());
            }
            Ok(Some(ResumeRequest::Cursor {
                stream_id: stream_id.to_owned(),
                last_seq,
            }))
        }
        Some(_) => Err(bad()),
    }
}

/// One resume stream: the numbered pushes of a session that may outlive its
/// connections.
#[derive(Debug)]
pub(crate) struct ResumeStream {
    pub id: String,
    pub org: String,
    pub agent: String,
    /// The connection registered in the engine for this stream (0: ended).
    /// Written under `log`'s lock; read without it.
    holder: AtomicU64,
    log: Mutex<StreamLog>,
}

#[derive(Debug)]
struct StreamLog {
    last_seq: u64,
    /// The latest pushes, oldest first, as sent (with `resume_seq`).
    frames: VecDeque<(u64, Bytes)>,
    bytes: usize,
    max_frames: usize,
    /// At most [`RESUME_LOG_BYTES`] and half the session's queue in bytes, so
    /// a replay always fits the new connection's queue.
    max_bytes: usize,
    /// The holder while its transport is up; `None` while detached.
    live: Option<Arc<Connection>>,
}

impl ResumeStream {
    fn new(
        org: &str,
        agent: &str,
        holder: &Arc<Connection>,
        max_frames: usize,
        max_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(ResumeStream {
            id: uuid::Uuid::new_v4().simple().to_string(),
            org: org.to_owned(),
            agent: agent.to_owned(),
            holder: AtomicU64::new(holder.id()),
            log: Mutex::new(StreamLog {
                last_seq: 0,
                frames: VecDeque::new(),
                bytes: 0,
                max_frames: max_frames.max(1),
                max_bytes,
                live: Some(holder.clone()),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StreamLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the stream (with its log locked): nobody holds it, nothing is
    /// kept, nothing more is numbered.
    fn end_locked(&self, log: &mut StreamLog) {
        self.holder.store(0, Ordering::Release);
        log.frames.clear();
        log.bytes = 0;
        log.live = None;
    }

    /// The connection the engine counts as this stream's session (0 once
    /// the stream ended).
    pub fn holder(&self) -> u64 {
        self.holder.load(Ordering::Acquire)
    }

    /// Numbers `frame`, keeps it, and queues it on the live connection if
    /// there is one. Called for every push to any connection of the stream
    /// (the holder, or an earlier holder whose pushes were computed before
    /// it was replaced: they belong to the same sequence).
    pub fn publish(&self, frame: &Bytes) {
        let mut log = self.lock();
        if self.holder() == 0 {
            return;
        }
        log.last_seq += 1;
        let numbered = with_seq(frame, log.last_seq);
        log.bytes += numbered.len();
        let seq = log.last_seq;
        log.frames.push_back((seq, numbered.clone()));
        while log.frames.len() > log.max_frames || log.bytes > log.max_bytes {
            match log.frames.pop_front() {
                Some((_, f)) => log.bytes -= f.len(),
                None => break,
            }
        }
        if let Some(live) = &log.live {
            live.enqueue(numbered);
        }
    }
}

/// `{"resume_seq":N,` + the frame after its opening brace: the push with its
/// number as the first field, without decoding it again.
fn with_seq(frame: &Bytes, seq: u64) -> Bytes {
    debug_assert_eq!(frame.first(), Some(&b'{'));
    let prefix = format!("{{\"resume_seq\":{seq},");
    let mut out = BytesMut::with_capacity(prefix.len() + frame.len());
    out.put_slice(prefix.as_bytes());
    out.put_slice(&frame[1..]);
    out.freeze()
}

/// At `login`, inside the organization's critical section and after `conn`
/// joined the agent's sessions: starts or takes over a stream for `conn`.
/// A replaced holder leaves the agent's sessions here, so presence does not
/// change; it is returned so the caller can close its transport if it still
/// has one.
pub(crate) fn attach(
    engine: &Engine,
    state: &mut OrgState,
    org: &str,
    agent: &str,
    conn: &Arc<Connection>,
    request: ResumeRequest,
) -> (ResumeInfo, Option<Arc<Connection>>) {
    let cfg = &engine.inner.config;
    let max_frames = cfg.resume_log.min(cfg.outbound_queue).max(1);
    let max_bytes = RESUME_LOG_BYTES.min(cfg.outbound_queue_bytes / 2);
    let window_seconds = cfg.resume_window.as_secs();
    let start = |status| {
        let stream = ResumeStream::new(org, agent, conn, max_frames, max_bytes);
        let _ = conn.resume.set(stream.clone());
        engine
            .inner
            .resume_streams
            .insert(stream.id.clone(), stream.clone());
        ResumeInfo {
            stream_id: stream.id.clone(),
            status,
            seq: 0,
            replayed: 0,
            window_seconds,
            retained: max_frames as u64,
        }
    };
    let (stream_id, last_seq) = match request {
        ResumeRequest::Start => return (start(ResumeStatus::New), None),
        ResumeRequest::Cursor {
            stream_id,
            last_seq,
        } => (stream_id, last_seq),
    };
    let Some(stream) = engine
        .inner
        .resume_streams
        .get(&stream_id)
        .map(|s| s.value().clone())
        .filter(|s| s.org == org && s.agent == agent)
    else {
        // Unknown, expired, or another agent's: nothing to say about it.
        return (start(ResumeStatus::ResyncNeeded), None);
    };
    let mut log = stream.lock();
    // The previous holder leaves the agent's sessions in this critical
    // section, so presence does not flicker.
    let previous = stream.holder();
    let mut replaced = None;
    // The session must still be whole: among the agent's sessions (not
    // evicted or logged out while kept) and not closed on purpose since
    // (revocation, role change, ...). Otherwise pushes may have been
    // computed without it, and only a resync is honest.
    let mut whole = false;
    if previous != 0
        && previous != conn.id()
        && let Some(a) = state.agents.get_mut(agent)
        && let Some(i) = a.sessions.iter().position(|s| s.conn.id() == previous)
    {
        let old = a.sessions_mut().remove(i).conn;
        whole = match old.close_reason() {
            None => true,
            Some((reason, _)) => reason == DisconnectReason::ConnectionTimeout,
        };
        if log.live.as_ref().is_some_and(|l| l.id() == old.id()) {
            replaced = Some(old);
        }
    }
    let oldest_kept = log.frames.front().map_or(log.last_seq + 1, |(s, _)| *s);
    let servable = whole && last_seq <= log.last_seq && last_seq + 1 >= oldest_kept;
    if !servable {
        stream.end_locked(&mut log);
        drop(log);
        engine.inner.resume_streams.remove(&stream.id);
        return (start(ResumeStatus::ResyncNeeded), replaced);
    }
    // Queued now, written after the login response (the transport holds
    // pushes until then), before anything published later.
    let mut replayed = 0;
    for (_, frame) in log.frames.iter().filter(|(s, _)| *s > last_seq) {
        conn.enqueue(frame.clone());
        replayed += 1;
    }
    stream.holder.store(conn.id(), Ordering::Release);
    log.live = Some(conn.clone());
    let _ = conn.resume.set(stream.clone());
    let info = ResumeInfo {
        stream_id: stream.id.clone(),
        status: ResumeStatus::Resumed,
        seq: log.last_seq,
        replayed,
        window_seconds,
        retained: log.max_frames as u64,
    };
    (info, replaced)
}

/// When `conn`'s transport ended: keeps its session for the resume window if
/// it has a stream, still holds it, is still among the agent's sessions, and
/// was not closed on purpose (logout, eviction, revocation, shutdown).
/// Returns whether the session was kept.
pub(crate) fn detach(engine: &Engine, conn: &Arc<Connection>) -> bool {
    let Some(stream) = conn.resume.get() else {
        return false;
    };
    let resumable = match conn.close_reason() {
        None => true,
        Some((reason, _)) => reason == DisconnectReason::ConnectionTimeout,
    };
    let Some(org) = engine.org(&stream.org) else {
        return false;
    };
    let kept = {
        let state = org.lock();
        let mut log = stream.lock();
        let in_sessions = state
            .agents
            .get(&stream.agent)
            .is_some_and(|a| a.sessions.iter().any(|s| s.conn.id() == conn.id()));
        if stream.holder() != conn.id() {
            false
        } else if resumable && in_sessions && engine.inner.shutting_down.get().is_none() {
            log.live = None;
            true
        } else {
            // Ended for good: the stream goes with it.
            stream.end_locked(&mut log);
            false
        }
    };
    if !kept {
        if stream.holder() == 0 {
            engine.inner.resume_streams.remove(&stream.id);
        }
        return false;
    }
    tracing::debug!(connection = conn.id(), stream = %stream.id, "session kept for resume");
    let engine = engine.clone();
    let conn = conn.clone();
    let stream = stream.clone();
    let window = engine.inner.config.resume_window;
    tokio::spawn(async move {
        tokio::time::sleep(window).await;
        expire(&engine, &conn, &stream).await;
    });
    true
}

/// Ends `conn`'s stream at once, if it holds one (logout).
pub(crate) fn end(engine: &Engine, conn: &Connection) {
    let Some(stream) = conn.resume.get() else {
        return;
    };
    let mut log = stream.lock();
    if stream.holder() == conn.id() {
        stream.end_locked(&mut log);
        drop(log);
        engine.inner.resume_streams.remove(&stream.id);
    }
}

/// The window passed: if nobody took the stream over, the session ends the
/// way any session does (presence, re-routing) and the stream is dropped.
async fn expire(engine: &Engine, conn: &Arc<Connection>, stream: &Arc<ResumeStream>) {
    let Some(org) = engine.org(&stream.org) else {
        return;
    };
    let expired = {
        let _state = org.lock();
        let mut log = stream.lock();
        if stream.holder() == conn.id() && log.live.is_none() {
            stream.end_locked(&mut log);
            true
        } else {
            false
        }
    };
    if expired {
        engine.inner.resume_streams.remove(&stream.id);
        tracing::debug!(connection = conn.id(), stream = %stream.id, "resume window passed");
        crate::status::session_ended(engine, conn).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatgate_protocol::Version;

    #[test]
    fn requests_parse_or_explain() {
        assert_eq!(parse_request(None).unwrap(), None);
        assert_eq!(parse_request(Some(&Value::Bool(false))).unwrap(), None);
        assert_eq!(
            parse_request(Some(&Value::Bool(true))).unwrap(),
            Some(ResumeRequest::Start)
        );
        let c = serde_json::json!({"stream_id": "abc", "last_seq": 7});
        assert_eq!(
            parse_request(Some(&c)).unwrap(),
            Some(ResumeRequest::Cursor {
                stream_id: "abc".into(),
                last_seq: 7
            })
        );
        for bad in [
            serde_json::json!("yes"),
            serde_json::json!({"stream_id": "abc"}),
            serde_json::json!({"stream_id": "abc", "last_seq": -1}),
            serde_json::json!({"stream_id": 5, "last_seq": 1}),
            serde_json::json!({"stream_id": "abc", "last_seq": 1, "extra": 1}),
        ] {
            let e = parse_request(Some(&bad)).unwrap_err();
            assert!(e.message.contains("`resume`"), "{bad}: {}", e.message);
        }
    }

    #[tokio::test]
    async fn a_stream_numbers_keeps_a_bounded_window_and_forwards_live() {
        let (c, mut rx) = Connection::new(1, crate::connection::Side::Agent, Version::V3_5, 16);
        let s = ResumeStream::new("o", "a", &c, 3, RESUME_LOG_BYTES);
        for i in 0..5 {
            s.publish(&Bytes::from(format!("{{\"n\":{i}}}")));
        }
        for i in 0..5 {
            let f = rx.recv().await;
            assert_eq!(
                f,
                Bytes::from(format!("{{\"resume_seq\":{},\"n\":{i}}}", i + 1))
            );
        }
        let log = s.lock();
        assert_eq!(log.last_seq, 5);
        let kept: Vec<u64> = log.frames.iter().map(|(s, _)| *s).collect();
        assert_eq!(kept, vec![3, 4, 5], "only the latest three are kept");
    }
}
