//! One RTM WebSocket session.
//!
//! [`run`] owns a connection from upgrade to close: the 30 s login window,
//! server pings and dead-peer detection, the pending-request limit, per-request
//! versions, frame limits, writing pushes queued by the engine, and
//! `agent_disconnected` before every server-initiated close. It is generic
//! over `Sink`/`Stream` of WebSocket messages, so unit tests drive it with
//! channels and production hands it the split socket.
//!
//! The session is one task. Requests run concurrently inside it (up to
//! `max_pending`), each bounded by `request_timeout`; their responses and the
//! engine's pushes are written by the same loop, so for one request the push
//! it caused (already queued at commit) is written before its response.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use chatgate_engine::{AfterReply, Connection, Engine, Request, Requester, Side};
use chatgate_protocol::envelope::{FrameHead, FrameType};
use chatgate_protocol::pushes::AgentDisconnected;
use chatgate_protocol::{
    DisconnectReason, ErrorBody, ErrorType, PushFrame, RequestFrame, ResponseFrame, Version,
};
use futures_util::stream::FuturesUnordered;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::time::{Instant, sleep_until, timeout};

/// Limits and timers of an RTM session. Every value is documented in
/// proto-docs/limits.md.
#[derive(Clone, Debug)]
pub struct RtmConfig {
    /// Time allowed between connecting and a successful `login`.
    pub login_timeout: Duration,
    /// How often the server sends a WebSocket ping.
    pub ping_interval: Duration,
    /// A connection from which nothing (frame, ping or pong) arrives for this
    /// long is closed with `connection_timeout`.
    pub idle_timeout: Duration,
    /// Requests that may be processed at once on one connection.
    pub max_pending: usize,
    /// Processing time allowed per request (`request_timeout`).
    pub request_timeout: Duration,
    /// Largest request frame processed; larger ones get `entity_too_large`.
    /// (The transport's own hard limit, above which the socket is closed, is
    /// set at the upgrade.)
    pub max_request_frame: usize,
    /// Time allowed for one write to the socket before the client is
    /// considered gone.
    pub write_timeout: Duration,
    /// When the server closes a session, time allowed for the requests
    /// already in flight to be answered before `agent_disconnected`.
    pub close_drain: Duration,
}

impl Default for RtmConfig {
    fn default() -> Self {
        RtmConfig {
            login_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            max_pending: 10,
            request_timeout: Duration::from_secs(15),
            max_request_frame: 256 * 1024,
            write_timeout: Duration::from_secs(10),
            close_drain: Duration::from_secs(5),
        }
    }
}

/// Frames written per flush at most when draining the push queue.
const WRITE_BATCH: usize = 64;

type Pending = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// A finished request.
struct Answer {
    frame: String,
    after: AfterReply,
    /// A `login` answer: written before any push queued meanwhile, since
    /// those pushes are about changes after the login's snapshot.
    is_login: bool,
}

fn response_ok(request_id: Option<String>, action: &str, payload: Value) -> String {
    serde_json::to_string(&ResponseFrame::ok(request_id, action, payload)).expect("serializes")
}

fn response_err(request_id: Option<String>, action: Option<String>, error: ErrorBody) -> String {
    serde_json::to_string(&ResponseFrame::err(
        request_id,
        action,
        error.into_envelope(),
    ))
    .expect("serializes")
}

fn disconnect_frame(
    side: Side,
    version: Version,
    reason: DisconnectReason,
    data: Option<Value>,
) -> String {
    serde_json::to_string(&PushFrame {
        version,
        request_id: None,
        action: side.disconnect_push().to_owned(),
        frame_type: FrameType::Push,
        payload: AgentDisconnected { reason, data },
    })
    .expect("serializes")
}

/// A transport's read error, as the session needs to see it.
pub trait ReadError: std::fmt::Display {
    /// The peer is gone (the connection was reset or closed without a close
    /// frame): the session ends without writing `agent_disconnected` to a
    /// socket nobody reads. Otherwise (a protocol violation) the client is
    /// told why before the close.
    fn peer_gone(&self) -> bool {
        false
    }
}

impl ReadError for std::convert::Infallible {}

/// Why the loop ended.
enum End {
    /// The client closed or the socket failed: nothing more to write.
    Gone,
    /// A write waited `write_timeout` for a socket that took nothing: the
    /// session ends without another write (closing would wait as long again).
    Stalled,
    /// The server closes with a reason: `agent_disconnected`, then close.
    Disconnect(DisconnectReason, Option<Value>),
    /// A normal close after `logout`.
    LoggedOut,
}

/// Runs one session (agent or customer) until it ends, then tells the engine.
///
/// The connection is registered with the engine when this is called; the
/// returned future runs the session. It is built so that an idle session's
/// future stays small (it is most of a session's memory): the arguments
/// live once, in the session, and not again as the future's captures; the
/// configuration is shared; the session's timers are one boxed `Sleep`; and
/// the rare long awaits (close, disconnect, pings, errors) are boxed.
pub fn run<S, R, E1, E2>(
    engine: Engine,
    side: Side,
    version: Version,
    client: chatgate_engine::ClientInfo,
    sink: S,
    stream: R,
    config: impl Into<Arc<RtmConfig>>,
) -> impl Future<Output = ()>
where
    S: Sink<Message, Error = E1> + Unpin + Send,
    R: Stream<Item = Result<Message, E2>> + Unpin + Send,
    E1: std::fmt::Display,
    E2: ReadError,
{
    let (conn, rx) = engine.connect(side, version, client.ip);
    if let Some(ua) = client.user_agent {
        conn.set_user_agent(ua);
    }
    let mut session = Session {
        engine,
        conn,
        version,
        config: config.into(),
        sink,
        inflight: Inflight::default(),
        logins_pending: 0,
    };
    // The session is used where it was captured: an `async fn` taking it
    // by value would hold it twice (its argument and its binding).
    async move {
        let end = session.run_loop(stream, rx).await;
        Box::pin(session.finish(end)).await;
        let (engine, conn) = (session.engine.clone(), session.conn.clone());
        Box::pin(async move { engine.disconnect(&conn).await }).await;
    }
}

/// The requests in flight. Their `FuturesUnordered` (two allocations,
/// about 150 bytes) exists only while a request is: most sessions are idle
/// most of the time, and this is per-session memory.
#[derive(Default)]
struct Inflight(Option<FuturesUnordered<Pending>>);

impl Inflight {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, FuturesUnordered::len)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, request: Pending) {
        self.0
            .get_or_insert_with(FuturesUnordered::new)
            .push(request);
    }

    /// The next answer (pending while nothing is in flight).
    fn next(&mut self) -> impl Future<Output = Option<Answer>> + '_ {
        std::future::poll_fn(|cx| match &mut self.0 {
            Some(f) if !f.is_empty() => f.poll_next_unpin(cx),
            _ => Poll::Pending,
        })
    }

    fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.0 = None;
        }
    }
}

struct Session<S> {
    engine: Engine,
    conn: Arc<Connection>,
    version: Version,
    config: Arc<RtmConfig>,
    sink: S,
    inflight: Inflight,
    /// `login` requests in flight: pushes wait until their answer is
    /// written, so a client never sees a change before the snapshot it
    /// follows.
    logins_pending: usize,
}

impl<S, E1> Session<S>
where
    S: Sink<Message, Error = E1> + Unpin + Send,
    E1: std::fmt::Display,
{
    async fn run_loop<R, E2>(
        &mut self,
        mut stream: R,
        mut outbound: chatgate_engine::ConnectionRx,
    ) -> End
    where
        R: Stream<Item = Result<Message, E2>> + Unpin + Send,
        E2: ReadError,
    {
        // One timer for the login window and the pings: a boxed `Sleep` (a
        // tokio `Interval` plus a login `Sleep` were about 200 bytes of every
        // idle session's future).
        let start = Instant::now();
        let login_deadline = start + self.config.login_timeout;
        let mut next_ping = start + self.config.ping_interval;
        let mut timer = Box::pin(sleep_until(next_ping.min(login_deadline)));
        let mut last_seen = start;
        let conn = self.conn.clone();
        loop {
            tokio::select! {
                biased;
                (reason, data) = std::future::poll_fn(|cx| conn.poll_closed(cx)) => {
                    return End::Disconnect(reason, data);
                }
                // Answers before queued pushes: the answer's branch writes
                // the pushes queued before it first, with the answer in the
                // same flush (a request's own push and its response usually
                // become ready together).
                Some(answer) = self.inflight.next(), if !self.inflight.is_empty() => {
                    self.inflight.release_if_empty();
                    let mut frames = Vec::new();
                    if answer.is_login {
                        // Everything queued while the login was in flight is
                        // newer than its snapshot: the answer goes first.
                        self.logins_pending -= 1;
                    } else {
                        // Pushes already queued (e.g. the one this request
                        // caused) go out before the response, and the last
                        // of them in the same write: one flush, one segment.
                        while self.logins_pending == 0 {
                            let batch = outbound.try_recv_batch(WRITE_BATCH);
                            if batch.is_empty() {
                                break;
                            }
                            let full = std::mem::replace(&mut frames, batch);
                            if !full.is_empty()
                                && let Err(end) = self.write_pushes(full).await
                            {
                                return end;
                            }
                        }
                    }
                    frames.push(Bytes::from(answer.frame));
                    if let Err(end) = self.write_pushes(frames).await {
                        return end;
                    }
                    if answer.after == AfterReply::Close {
                        return End::LoggedOut;
                    }
                }
                batch = outbound.recv_batch(WRITE_BATCH), if self.logins_pending == 0 => {
                    if let Err(end) = self.write_pushes(batch).await {
                        return end;
                    }
                }
                msg = stream.next() => {
                    last_seen = Instant::now();
                    match msg {
                        None => return End::Gone,
                        Some(Err(e)) if e.peer_gone() => {
                            // Reset, or closed without a close frame: nobody
                            // is there to tell why.
                            tracing::debug!(connection = self.conn.id(), error = %e, "peer gone");
                            return End::Gone;
                        }
                        Some(Err(e)) => {
                            // A protocol violation (such as a message above the
                            // transport's hard limit). Tell the client why if
                            // it is still there; the write fails fast when it
                            // is not.
                            tracing::debug!(connection = self.conn.id(), error = %e, "socket read failed");
                            return End::Disconnect(
                                DisconnectReason::AgentDisconnectedByServer,
                                Some(serde_json::json!({"detail": "protocol_error", "error": e.to_string()})),
                            );
                        }
                        Some(Ok(Message::Text(text))) => {
                            if let Some(immediate) = self.handle_text(text) && !self.write(Message::Text(immediate.into())).await {
                                return End::Gone;
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            let f = self.refuse(None, None, ErrorBody::new(ErrorType::Validation, "binary frames are not supported: send JSON text frames"));
                            if !self.write(Message::Text(f.into())).await {
                                return End::Gone;
                            }
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) => return End::Gone,
                    }
                }
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= login_deadline && !self.conn.is_logged_in() {
                        return End::Disconnect(
                            DisconnectReason::ConnectionTimeout,
                            Some(serde_json::json!({"detail": "login_timeout"})),
                        );
                    }
                    if now >= next_ping {
                        if last_seen.elapsed() >= self.config.idle_timeout {
                            return End::Disconnect(
                                DisconnectReason::ConnectionTimeout,
                                Some(serde_json::json!({"detail": "no_traffic"})),
                            );
                        }
                        if !self.write(Message::Ping(Bytes::new())).await {
                            return End::Gone;
                        }
                        // As tokio's `Interval` with `MissedTickBehavior::Delay`:
                        // a tick more than 5 ms late moves the schedule.
                        next_ping = if now > next_ping + Duration::from_millis(5) {
                            now + self.config.ping_interval
                        } else {
                            next_ping + self.config.ping_interval
                        };
                    }
                    let next = if self.conn.is_logged_in() {
                        next_ping
                    } else {
                        next_ping.min(login_deadline)
                    };
                    timer.as_mut().reset(next);
                }
            }
        }
    }

    /// Parses one request frame. Returns a frame to write at once (errors
    /// found before dispatch), or queues the request.
    fn handle_text(&mut self, text: Utf8Bytes) -> Option<String> {
        let text = text.as_str();
        if text.len() > self.config.max_request_frame {
            let head: FrameHead = serde_json::from_str(text).unwrap_or_default();
            return Some(self.refuse(
                head.request_id,
                head.action,
                ErrorBody::new(
                    ErrorType::EntityTooLarge,
                    format!(
                        "request frame of {} bytes exceeds the limit of {} bytes",
                        text.len(),
                        self.config.max_request_frame
                    ),
                ),
            ));
        }
        let frame: RequestFrame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                let head: FrameHead = serde_json::from_str(text).unwrap_or_default();
                let message = if e.is_syntax() || e.is_eof() {
                    format!("malformed JSON: {e}")
                } else {
                    format!("invalid request frame: {e}")
                };
                return Some(self.refuse(
                    head.request_id,
                    head.action,
                    ErrorBody::new(ErrorType::Validation, message),
                ));
            }
        };
        let version = match frame.version.as_deref() {
            None => self.version,
            Some(v) => match v.parse::<Version>() {
                Err(e) => {
                    return Some(self.refuse(
                        frame.request_id,
                        Some(frame.action),
                        ErrorBody::new(ErrorType::Validation, e.to_string()),
                    ));
                }
                Ok(v) if v < self.version => {
                    let version = self.version;
                    return Some(self.refuse(
                        frame.request_id,
                        Some(frame.action),
                        ErrorBody::new(
                            ErrorType::Validation,
                            format!(
                                "request version {v} is lower than the connection's version {version}"
                            ),
                        ),
                    ));
                }
                Ok(v) => v,
            },
        };
        if self.inflight.len() >= self.config.max_pending {
            let max = self.config.max_pending;
            return Some(self.refuse(
                frame.request_id,
                Some(frame.action),
                ErrorBody::new(
                    ErrorType::PendingRequestsLimitReached,
                    format!("at most {max} requests may be pending on one connection"),
                ),
            ));
        }
        let engine = self.engine.clone();
        let request = Request {
            requester: Requester::Rtm(self.conn.clone()),
            version,
            action: frame.action.clone(),
            payload: frame.payload.unwrap_or(Value::Null),
            request_id: frame.request_id.clone(),
            author_id: frame.author_id,
        };
        let limit = self.config.request_timeout;
        let (request_id, action) = (frame.request_id, frame.action);
        let is_login = action == "login";
        if is_login {
            self.logins_pending += 1;
        }
        self.inflight.push(Box::pin(async move {
            // Past `limit` the engine answers `request_timeout` (and counts it).
            match engine.execute_within(request, limit).await {
                Ok(reply) => Answer {
                    frame: response_ok(request_id, &action, reply.payload),
                    after: reply.after,
                    is_login,
                },
                Err(error) => Answer {
                    frame: response_err(request_id, Some(action), error),
                    after: AfterReply::Nothing,
                    is_login,
                },
            }
        }));
        None
    }

    /// Answers a frame refused before dispatch, and counts it in the
    /// engine's request metrics.
    fn refuse(
        &self,
        request_id: Option<String>,
        action: Option<String>,
        error: ErrorBody,
    ) -> String {
        self.engine.record_request(
            &Requester::Rtm(self.conn.clone()),
            action.as_deref(),
            Err(&error),
            None,
        );
        response_err(request_id, action, error)
    }

    /// Writes a batch of frames (queued pushes, perhaps ending with a
    /// response), then flushes once.
    /// A write blocked by a client that stopped reading does not hold the
    /// session: when the engine closes the connection meanwhile (a
    /// `slow_consumer` cut-off, say), the write is abandoned and the session
    /// ends at once instead of after `write_timeout`.
    async fn write_pushes(&mut self, batch: Vec<Bytes>) -> Result<(), End> {
        let limit = self.config.write_timeout;
        let conn = &self.conn;
        let sink = &mut self.sink;
        let mut frames = batch.into_iter();
        // `feed` each frame, then `flush`, written out by hand: the `async`
        // form kept a frame and its `Feed` future in the session's future,
        // which is per-session memory.
        let mut write = std::future::poll_fn(move |cx| {
            while frames.len() > 0 {
                std::task::ready!(Pin::new(&mut *sink).poll_ready(cx))?;
                let frame = frames.next().expect("counted");
                let text = Utf8Bytes::try_from(frame).expect("engine frames are UTF-8 JSON");
                Pin::new(&mut *sink).start_send(Message::Text(text))?;
            }
            Pin::new(&mut *sink).poll_flush(cx)
        });
        // Most writes finish at once (the socket has room): those need no
        // timer, and arming one per batch showed in the fan-out profile.
        let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut write).poll(cx))).await;
        let result = match first {
            Poll::Ready(r) => r,
            // The socket is full: wait, bounded. Boxed, so that the timer and
            // the close signal this needs are not part of every idle
            // session's future (whose size is per-session memory).
            Poll::Pending => {
                Box::pin(async {
                    tokio::select! {
                        biased;
                        result = timeout(limit, write) => result.map_err(|_| End::Stalled),
                        (reason, data) = std::future::poll_fn(|cx| conn.poll_closed(cx)) => {
                            Err(End::Disconnect(reason, data))
                        }
                    }
                })
                .await?
            }
        };
        result.map_err(|_| End::Gone)
    }

    /// Writes one frame outside the push path (a ping, an error found
    /// before dispatch, the logout close). Boxed: these are rare, and their
    /// timer would otherwise be part of every idle session's future.
    async fn write(&mut self, msg: Message) -> bool {
        let limit = self.config.write_timeout;
        matches!(
            Box::pin(timeout(limit, self.sink.send(msg))).await,
            Ok(Ok(()))
        )
    }

    async fn write_until(&mut self, msg: Message, deadline: Instant) -> bool {
        matches!(
            tokio::time::timeout_at(deadline, self.sink.send(msg)).await,
            Ok(Ok(()))
        )
    }

    async fn finish(&mut self, end: End) {
        match end {
            End::Gone => {}
            End::Stalled => return,
            End::Disconnect(reason, data) => {
                // Requests already in flight are answered first (their
                // changes may already be committed), within `close_drain`;
                // then the reason and the close, within another. A client
                // that stopped reading (the usual cause of a `slow_consumer`
                // cut-off) holds the session no longer than that.
                let deadline = Instant::now() + self.config.close_drain;
                while !self.inflight.is_empty() {
                    match tokio::time::timeout_at(deadline, self.inflight.next()).await {
                        Ok(Some(answer)) => {
                            if !self
                                .write_until(Message::Text(answer.frame.into()), deadline)
                                .await
                            {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
                tracing::info!(
                    connection = self.conn.id(),
                    side = ?self.conn.side(),
                    version = %self.version,
                    reason = reason.as_str(),
                    "disconnecting session"
                );
                let frame = disconnect_frame(self.conn.side(), self.version, reason, data);
                let deadline = Instant::now() + self.config.close_drain;
                if self
                    .write_until(Message::Text(frame.into()), deadline)
                    .await
                {
                    let _ = self
                        .write_until(
                            Message::Close(Some(CloseFrame {
                                code: 1000,
                                reason: Utf8Bytes::from(reason.as_str()),
                            })),
                            deadline,
                        )
                        .await;
                }
                let _ = tokio::time::timeout_at(deadline, self.sink.close()).await;
                return;
            }
            End::LoggedOut => {
                let _ = self
                    .write(Message::Close(Some(CloseFrame {
                        code: 1000,
                        reason: Utf8Bytes::from_static("logout"),
                    })))
                    .await;
            }
        }
        let _ = timeout(self.config.write_timeout, self.sink.close()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(frame: &str) -> Pending {
        let frame = frame.to_owned();
        Box::pin(async move {
            Answer {
                frame,
                after: AfterReply::Nothing,
                is_login: false,
            }
        })
    }

    #[tokio::test]
    async fn an_idle_session_holds_no_request_set() {
        let mut inflight = Inflight::default();
        assert!(inflight.0.is_none(), "nothing allocated before a request");
        inflight.push(answer("a"));
        inflight.push(answer("b"));
        assert_eq!(inflight.len(), 2);
        let first = inflight.next().await.expect("an answer");
        inflight.release_if_empty();
        assert!(inflight.0.is_some(), "one request is still in flight");
        let second = inflight.next().await.expect("an answer");
        inflight.release_if_empty();
        assert!(inflight.0.is_none(), "released with the last answer");
        let mut frames = vec![first.frame, second.frame];
        frames.sort();
        assert_eq!(frames, ["a", "b"]);
        // Nothing in flight: pending, not finished.
        let idle = tokio::time::timeout(Duration::from_millis(10), inflight.next()).await;
        assert!(idle.is_err());
    }
}
