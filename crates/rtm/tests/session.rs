//! The RTM session driven through channels with paused time: login window,
//! server pings and dead-peer detection, healthy clients that never ping,
//! the pending-request limit, the request timeout, and bad frames that get
//! errors while the connection survives, and a socket that stops
//! taking frames ending the session after `write_timeout`.

use axum::extract::ws::Message;
use chatgate_domain::*;
use chatgate_engine::{Engine, EngineConfig, hash_secret};
use chatgate_rtm::{RtmConfig, run};
use chatgate_store::*;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// An in-memory store whose commits can be held back: completions wait
/// until the gate opens.
#[derive(Default)]
struct GatedStore {
    gate: Arc<Gate>,
    /// Searches answer `StoreError::Busy` (the real store's writer queue,
    /// full, cannot take the job that indexes pending text first).
    search_busy: AtomicBool,
}

#[derive(Default)]
struct Gate {
    closed: AtomicBool,
    held: Mutex<Vec<Completion>>,
}

impl Gate {
    fn submit(&self, done: Completion) {
        if self.closed.load(Ordering::SeqCst) {
            self.held.lock().unwrap().push(done);
        } else {
            done(Ok(Committed::default()));
        }
    }
}

impl GatedStore {
    fn hold(&self) {
        self.gate.closed.store(true, Ordering::SeqCst);
    }
    fn release(&self) {
        self.gate.closed.store(false, Ordering::SeqCst);
        let held: Vec<_> = std::mem::take(&mut *self.gate.held.lock().unwrap());
        for done in held {
            done(Ok(Committed::default()));
        }
    }
}

impl Store for GatedStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        let agent = |id: &str, role| AgentRecord {
            agent: Agent {
                id: AgentId(id.into()),
                kind: AgentKind::Agent,
                name: id.into(),
                role,
                max_chats: 6,
                login_status: RoutingStatus::AcceptingChats,
                groups: vec![(0, GroupPriority::Normal)],
                suspended: false,
                profile: Default::default(),
            },
            last_routing_status: None,
        };
        Ok(Snapshot {
            orgs: vec![OrgRecord {
                org: Organization {
                    id: OrgId("acme".into()),
                    name: "Acme".into(),
                    license_id: 123,
                    created_at: 1,
                    allowed_origins: Vec::new(),
                },
                groups: vec![Group {
                    id: 0,
                    name: "General".into(),
                }],
                agents: vec![agent("alice@acme.test", Role::Owner)],
            }],
            tokens: vec![TokenRecord {
                hash: hash_secret("alice-token"),
                org: OrgId("acme".into()),
                agent: "alice@acme.test".into(),
                kind: TokenKind::Pat,
                expires_at: None,
                scopes: None,
            }],
            ..Snapshot::default()
        })
    }
    fn submit(&self, _ops: Vec<Op>, done: Completion) -> Result<(), StoreError> {
        self.gate.submit(done);
        Ok(())
    }
    fn reserve(&self) -> Result<Reservation, StoreError> {
        let gate = self.gate.clone();
        Ok(Reservation::new(move |_ops, done| gate.submit(done)))
    }
    fn chat_events(&self, _: &str, _: &str) -> Result<Vec<EventRecord>, StoreError> {
        Ok(vec![])
    }
    fn thread_events(&self, _: &str, _: &str) -> Result<Vec<EventRecord>, StoreError> {
        Ok(vec![])
    }
    // This store keeps no chats: nothing older to find.
    fn chat_threads(&self, _: &str, _: &str) -> Result<Vec<ThreadRecord>, StoreError> {
        Ok(vec![])
    }
    fn org_threads(&self, _: &str) -> Result<Vec<(String, ThreadRecord)>, StoreError> {
        Ok(vec![])
    }
    fn custom_event(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<(Option<String>, u64), StoreError> {
        Ok((None, 0))
    }
    fn search_text(
        &self,
        _: &str,
        _: &chatgate_store::TextQuery,
    ) -> Result<Vec<chatgate_store::TextHit>, StoreError> {
        Ok(vec![])
    }
    fn search_threads(&self, _: &str, _: &str, _: u32) -> Result<Vec<String>, StoreError> {
        if self.search_busy.load(Ordering::SeqCst) {
            return Err(StoreError::Busy);
        }
        Ok(vec![])
    }
    fn thread_facts(
        &self,
        _: &str,
        ids: &[String],
    ) -> Result<Vec<Vec<chatgate_store::EventFact>>, StoreError> {
        Ok(vec![Vec::new(); ids.len()])
    }
    fn put_file(&self, _: &str, _: &[u8]) -> Result<(), StoreError> {
        Err(StoreError::Closed)
    }
    fn read_file(&self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    fn delete_file(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
    fn close(&self) {}
}

struct Client {
    to_server: mpsc::Sender<Message>,
    from_server: mpsc::Receiver<Message>,
    store: Arc<GatedStore>,
    engine: Engine,
    task: tokio::task::JoinHandle<()>,
}

/// Frames the test sends, as the session's inbound stream.
fn channel_stream(
    rx: mpsc::Receiver<Message>,
) -> impl futures_util::Stream<Item = Result<Message, Infallible>> + Unpin + Send {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|m| (Ok::<_, Infallible>(m), rx))
    }))
}

/// An agent session of `version` reading `stream`; what it writes comes out
/// of the returned receiver. The session runs when the future is awaited or
/// spawned.
fn agent_session<R, E>(
    engine: Engine,
    version: chatgate_protocol::Version,
    stream: R,
    config: RtmConfig,
) -> (
    impl std::future::Future<Output = ()> + Send,
    mpsc::Receiver<Message>,
)
where
    R: futures_util::Stream<Item = Result<Message, E>> + Unpin + Send,
    E: chatgate_rtm::ReadError + Send,
{
    let (server_tx, from_server) = mpsc::channel::<Message>(256);
    let sink = Box::pin(futures_util::sink::unfold(
        server_tx,
        |tx, m: Message| async move { tx.send(m).await.map(|_| tx) },
    ));
    let session = run(
        engine,
        chatgate_engine::Side::Agent,
        version,
        Default::default(),
        sink,
        stream,
        config,
    );
    (session, from_server)
}

fn start(config: RtmConfig) -> Client {
    start_with(config, EngineConfig::default())
}

fn start_with(config: RtmConfig, engine_config: EngineConfig) -> Client {
    let store = Arc::new(GatedStore::default());
    let engine = Engine::start(store.clone(), engine_config).unwrap();
    let (to_server, server_rx) = mpsc::channel::<Message>(64);
    let (session, from_server) = agent_session(
        engine.clone(),
        chatgate_protocol::Version::V3_5,
        channel_stream(server_rx),
        config,
    );
    let task = tokio::spawn(session);
    Client {
        to_server,
        from_server,
        store,
        engine,
        task,
    }
}

impl Client {
    fn shutdown_engine(&self) {
        self.engine.shutdown(
            chatgate_protocol::DisconnectReason::InternalError,
            "shutdown",
        );
    }

    async fn send(&self, v: Value) {
        self.to_server
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }
    async fn send_raw(&self, m: Message) {
        self.to_server.send(m).await.unwrap();
    }
    /// Next text frame as JSON, answering pings on the way.
    async fn next_json(&mut self) -> Value {
        loop {
            match self.from_server.recv().await.expect("server closed") {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Ping(p) => self.send_raw(Message::Pong(p)).await,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    async fn login(&mut self) {
        self.send(
            json!({"action":"login","request_id":"login","payload":{"token":"Bearer alice-token"}}),
        )
        .await;
        let r = self.next_json().await;
        assert_eq!(r["success"], true, "{r}");
    }
    async fn expect_disconnect(&mut self, reason: &str) -> Value {
        let f = self.next_json().await;
        assert_eq!(f["action"], "agent_disconnected", "{f}");
        assert_eq!(f["type"], "push");
        assert_eq!(f["payload"]["reason"], reason, "{f}");
        match self.from_server.recv().await {
            Some(Message::Close(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
        f
    }
}

#[tokio::test(start_paused = true)]
async fn no_login_within_the_window_disconnects() {
    let mut c = start(RtmConfig::default());
    let started = tokio::time::Instant::now();
    // A ping before login is a no-op: it neither logs in nor extends the window.
    c.send(json!({"action":"ping","request_id":"p"})).await;
    assert_eq!(c.next_json().await["success"], true);
    let f = c.expect_disconnect("connection_timeout").await;
    assert_eq!(f["payload"]["data"]["detail"], "login_timeout");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
    c.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn login_in_time_keeps_the_connection() {
    let mut c = start(RtmConfig::default());
    tokio::time::sleep(Duration::from_secs(29)).await;
    c.login().await;
    // Far past the login window, answering the server's pings: still open.
    let idle = tokio::time::timeout(Duration::from_secs(300), c.next_json()).await;
    assert!(idle.is_err(), "unexpected frame {idle:?}");
    assert!(!c.task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn pings_keep_their_interval_before_and_after_login() {
    // The login window and the pings share one timer: neither may move
    // the other. Login at 20 s, between the first ping (15 s) and the
    // second (30 s); the login deadline (30 s) passing after it must not
    // end or disturb the schedule.
    let mut c = start(RtmConfig::default());
    let started = tokio::time::Instant::now();
    let mut pings = Vec::new();
    let mut logged_in = false;
    while pings.len() < 4 {
        if !logged_in && started.elapsed() >= Duration::from_secs(20) {
            c.login().await;
            logged_in = true;
        }
        let wait = if logged_in {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(20) - started.elapsed()
        };
        match tokio::time::timeout(wait, c.from_server.recv()).await {
            Ok(Some(Message::Ping(p))) => {
                pings.push(started.elapsed());
                c.send_raw(Message::Pong(p)).await;
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => assert!(!logged_in, "no ping within 60 s after login"),
        }
    }
    let secs: Vec<u64> = pings.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, vec![15, 30, 45, 60], "{pings:?}");
    assert!(!c.task.is_finished(), "the session is still open");
}

#[tokio::test(start_paused = true)]
async fn server_pings_and_drops_a_silent_peer() {
    let mut c = start(RtmConfig::default());
    c.login().await;
    // The server pings on its own; a client that never answers is dropped.
    match c.from_server.recv().await {
        Some(Message::Ping(_)) => {}
        other => panic!("expected a ping, got {other:?}"),
    }
    let started = tokio::time::Instant::now();
    loop {
        match c.from_server.recv().await.unwrap() {
            Message::Ping(_) => continue, // deliberately unanswered
            Message::Text(t) => {
                let f: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(f["payload"]["reason"], "connection_timeout");
                assert_eq!(f["payload"]["data"]["detail"], "no_traffic");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(started.elapsed() <= Duration::from_secs(46));
}

#[tokio::test(start_paused = true)]
async fn pending_limit_and_request_timeout() {
    let mut c = start(RtmConfig::default());
    c.login().await;
    c.store.hold();
    for i in 0..11 {
        c.send(json!({"action":"list_routing_statuses","request_id":format!("r{i}")}))
            .await;
    }
    let refused = c.next_json().await;
    assert_eq!(refused["request_id"], "r10");
    assert_eq!(
        refused["payload"]["error"]["type"],
        "pending_requests_limit_reached"
    );
    c.store.release();
    let mut ok = 0;
    for _ in 0..10 {
        let r = c.next_json().await;
        assert_eq!(r["success"], true, "{r}");
        ok += 1;
    }
    assert_eq!(ok, 10);
    // A request whose commit never comes is answered with request_timeout after 15 s.
    c.store.hold();
    let started = tokio::time::Instant::now();
    c.send(json!({"action":"list_routing_statuses","request_id":"slow"}))
        .await;
    let r = c.next_json().await;
    assert_eq!(r["request_id"], "slow");
    assert_eq!(r["payload"]["error"]["type"], "request_timeout");
    assert!(started.elapsed() >= Duration::from_secs(15));
    c.store.release();
    // The connection still works.
    c.send(json!({"action":"ping","request_id":"after"})).await;
    let r = c.next_json().await;
    assert_eq!(
        (r["request_id"].as_str(), r["success"].as_bool()),
        (Some("after"), Some(true))
    );
    // Both refusals are in the engine's request metrics: the one refused
    // before dispatch counted, the one cut off counted and timed.
    let metrics = encode_metrics(&c.engine);
    let series = |outcome: &str| {
        format!(
            "chatgate_requests_total{{side=\"agent\",transport=\"rtm\",action=\"list_routing_statuses\",outcome=\"{outcome}\"}} "
        )
    };
    let count = |outcome: &str| -> f64 {
        let series = series(outcome);
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .unwrap_or_else(|| panic!("no `{series}` in:\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(count("pending_requests_limit_reached"), 1.0);
    assert_eq!(count("request_timeout"), 1.0);
    assert_eq!(count("ok"), 10.0);
    // 13 requests timed (the refused one is not); the timed-out one's
    // 15 s are past the last finite bucket (6.5 s), the others under it.
    for (series, n) in [
        ("chatgate_request_duration_seconds_count{", 13),
        (
            "chatgate_request_duration_seconds_bucket{le=\"6.5536\",",
            12,
        ),
    ] {
        let line = format!("{series}side=\"agent\",transport=\"rtm\"}} {n}\n");
        assert!(metrics.contains(&line), "no `{line}` in:\n{metrics}");
    }
}

/// The engine's metrics in the OpenMetrics text format.
fn encode_metrics(engine: &Engine) -> String {
    let mut registry = prometheus_client::registry::Registry::with_prefix("chatgate");
    engine.register_metrics(&mut registry);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
    out
}

#[tokio::test(start_paused = true)]
async fn bad_frames_get_errors_and_the_connection_survives() {
    let mut c = start(RtmConfig {
        max_request_frame: 1024,
        ..RtmConfig::default()
    });
    c.login().await;
    let cases: Vec<(Message, Option<&str>, &str, &str)> = vec![
        (
            Message::Text("{not json".into()),
            None,
            "validation",
            "malformed JSON",
        ),
        (
            Message::Text(r#"{"request_id":"m1","payload":{}}"#.into()),
            Some("m1"),
            "validation",
            "missing field `action`",
        ),
        (
            Message::Text(r#"{"action":"no_such","request_id":"m2"}"#.into()),
            Some("m2"),
            "validation",
            "unknown action",
        ),
        (
            Message::Text(
                r#"{"action":"set_routing_status","request_id":"m3","payload":{"status":42}}"#
                    .into(),
            ),
            Some("m3"),
            "validation",
            "invalid payload",
        ),
        (
            Message::Text(
                r#"{"action":"set_routing_status","request_id":"m4","payload":{}}"#.into(),
            ),
            Some("m4"),
            "validation",
            "missing field `status`",
        ),
        (
            Message::Text(r#"{"action":"ping","request_id":"m5","version":"3.4"}"#.into()),
            Some("m5"),
            "validation",
            "unsupported API version",
        ),
        (
            Message::Text(r#"{"action":"get_license_info","request_id":"m6"}"#.into()),
            Some("m6"),
            "validation",
            "Web API only",
        ),
        (
            Message::Text(
                r#"{"action":"login","request_id":"m7","payload":{"token":"Bearer alice-token"}}"#
                    .into(),
            ),
            Some("m7"),
            "validation",
            "already logged in",
        ),
        (
            Message::Binary(vec![1, 2, 3].into()),
            None,
            "validation",
            "binary frames",
        ),
        (
            Message::Text(
                format!(
                    r#"{{"action":"ping","request_id":"big","payload":{{"x":"{}"}}}}"#,
                    "a".repeat(2000)
                )
                .into(),
            ),
            Some("big"),
            "entity_too_large",
            "exceeds the limit",
        ),
    ];
    for (msg, request_id, kind, text) in cases {
        c.send_raw(msg).await;
        let r = c.next_json().await;
        assert_eq!(r["type"], "response", "{r}");
        assert_eq!(r["success"], false, "{r}");
        assert_eq!(r["request_id"].as_str(), request_id, "{r}");
        assert_eq!(r["payload"]["error"]["type"], kind, "{r}");
        let message = r["payload"]["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(text),
            "{message:?} should mention {text:?}"
        );
    }
    c.send(json!({"action":"ping","request_id":"alive","version":"3.6"}))
        .await;
    let r = c.next_json().await;
    assert_eq!(r["success"], true);
    assert_eq!(r["request_id"], "alive");
}

#[tokio::test(start_paused = true)]
async fn version_lower_than_the_connection_is_refused() {
    let store = Arc::new(GatedStore::default());
    let engine = Engine::start(store, EngineConfig::default()).unwrap();
    let (to_server, server_rx) = mpsc::channel::<Message>(8);
    let (session, mut from_server) = agent_session(
        engine,
        chatgate_protocol::Version::V3_6,
        channel_stream(server_rx),
        RtmConfig::default(),
    );
    tokio::spawn(session);
    to_server
        .send(Message::Text(
            r#"{"action":"ping","request_id":"1","version":"3.5"}"#.into(),
        ))
        .await
        .unwrap();
    let Some(Message::Text(t)) = from_server.recv().await else {
        panic!()
    };
    let r: Value = serde_json::from_str(t.as_str()).unwrap();
    assert_eq!(r["payload"]["error"]["type"], "validation");
    assert!(
        r["payload"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lower than")
    );
}

#[tokio::test(start_paused = true)]
async fn the_login_response_precedes_every_push_after_its_snapshot() {
    let store = Arc::new(GatedStore::default());
    let engine = Engine::start(store.clone(), EngineConfig::default()).unwrap();
    let (to_server, server_rx) = mpsc::channel::<Message>(64);
    let (session, mut from_server) = agent_session(
        engine.clone(),
        chatgate_protocol::Version::V3_5,
        channel_stream(server_rx),
        RtmConfig::default(),
    );
    tokio::spawn(session);
    // The login's commit is held; meanwhile another change (after the
    // login's snapshot) commits and pushes to the new session.
    store.hold();
    to_server
        .send(Message::Text(
            json!({"action":"login","request_id":"L","payload":{"token":"Bearer alice-token"}})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let web = chatgate_engine::Request {
        requester: chatgate_engine::Requester::Web {
            authorization: Some("Bearer alice-token".into()),
        },
        version: chatgate_protocol::Version::V3_5,
        action: "set_routing_status".into(),
        payload: json!({"status": "not_accepting_chats"}),
        request_id: None,
        author_id: None,
    };
    let change = tokio::spawn({
        let engine = engine.clone();
        async move { engine.execute(web).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    store.release();
    change.await.unwrap().unwrap();
    let first = loop {
        match from_server.recv().await.unwrap() {
            Message::Text(t) => break serde_json::from_str::<Value>(t.as_str()).unwrap(),
            _ => continue,
        }
    };
    assert_eq!(
        first["request_id"], "L",
        "the login response comes first: {first}"
    );
    assert_eq!(
        first["payload"]["my_profile"]["routing_status"],
        "accepting_chats"
    );
    let second = loop {
        match from_server.recv().await.unwrap() {
            Message::Text(t) => break serde_json::from_str::<Value>(t.as_str()).unwrap(),
            _ => continue,
        }
    };
    assert_eq!(second["action"], "routing_status_set", "{second}");
    assert_eq!(second["payload"]["status"], "not_accepting_chats");
}

#[tokio::test(start_paused = true)]
async fn a_server_close_answers_requests_in_flight_first() {
    let mut c = start(RtmConfig::default());
    c.login().await;
    c.store.hold();
    c.send(json!({"action":"list_routing_statuses","request_id":"inflight"}))
        .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The server shuts down while the request waits for its commit.
    let engine_closer = tokio::spawn({
        let store = c.store.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            store.release();
        }
    });
    c.shutdown_engine();
    let r = c.next_json().await;
    assert_eq!(
        r["request_id"], "inflight",
        "the in-flight request is answered first: {r}"
    );
    assert_eq!(r["success"], true);
    c.expect_disconnect("internal_error").await;
    engine_closer.await.unwrap();
}

mod fuzz {
    //! Property test (a stable-toolchain fuzzer): random frames never kill a
    //! session, each answerable frame is answered, and the session still
    //! works afterwards. 64 cases by default; `PROPTEST_CASES=100000` for a
    //! long run by hand. Failing inputs are kept by proptest in
    //! `proptest-regressions/` and replayed first.
    use super::*;
    use proptest::prelude::*;

    const FIELDS: &[&str] = &[
        "chat_id",
        "id",
        "event",
        "type",
        "text",
        "status",
        "agent_id",
        "filters",
        "group_ids",
        "thread_id",
        "event_id",
        "postback",
        "visibility",
        "token",
        "pushes",
        "away",
        "target",
        "ids",
        "seen_up_to",
        "is_typing",
        "recipients",
        "content",
        "limit",
        "page_id",
        "chat",
        "users",
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "\\PC{0,24}".prop_map(Value::String),
            prop::sample::select(vec![
                "accepting_chats",
                "message",
                "agent",
                "all",
                "3.6",
                "Bearer alice-token"
            ])
            .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(FIELDS.to_vec()), inner), 0..5)
                    .prop_map(|kv| Value::Object(
                        kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                    )),
            ]
        })
    }

    fn frame() -> impl Strategy<Value = Message> {
        let names: Vec<&'static str> = chatgate_protocol::methods::AGENT_METHODS
            .iter()
            .map(|(n, _)| *n)
            .chain(["", "nope", "LOGIN"])
            .collect();
        prop_oneof![
            "\\PC{0,64}".prop_map(|t| Message::Text(t.into())),
            (
                prop::sample::select(names),
                json_value(),
                prop::option::of(prop::sample::select(vec!["3.5", "3.6", "9"]))
            )
                .prop_map(|(action, payload, version)| {
                    let mut f = json!({"action": action, "request_id": "fz", "payload": payload});
                    if let Some(v) = version {
                        f["version"] = json!(v);
                    }
                    Message::Text(f.to_string().into())
                }),
            prop::collection::vec(any::<u8>(), 0..32).prop_map(|b| Message::Binary(b.into())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)
        ))]
        #[test]
        fn random_frames_never_break_a_session(frames in prop::collection::vec(frame(), 1..8)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
            rt.block_on(async move {
                let mut c = start(RtmConfig { max_request_frame: 4096, ..RtmConfig::default() });
                c.login().await;
                let logs_out = frames.iter().any(|f| matches!(f, Message::Text(t) if t.as_str().contains("\"logout\"")));
                for f in frames {
                    c.send_raw(f).await;
                }
                c.send(json!({"action": "ping", "request_id": "final"})).await;
                loop {
                    let m = tokio::time::timeout(Duration::from_secs(60), c.from_server.recv())
                        .await
                        .expect("the session answers");
                    match m {
                        Some(Message::Text(t)) => {
                            let f: Value = serde_json::from_str(t.as_str()).expect("every frame is JSON");
                            assert!(f["type"] == "response" || f["type"] == "push", "{f}");
                            if f["request_id"] == "final" {
                                assert_eq!(f["success"], true);
                                break;
                            }
                        }
                        Some(Message::Ping(p)) => c.send_raw(Message::Pong(p)).await,
                        // Only a (random) logout ends the session.
                        Some(Message::Close(_)) | None => {
                            assert!(logs_out, "the session closed without a logout");
                            break;
                        }
                        Some(other) => panic!("unexpected {other:?}"),
                    }
                }
            });
        }
    }
}

/// A read error for the tests: `gone` says whether it means the peer left.
#[derive(Debug)]
struct TestReadError {
    gone: bool,
}

impl std::fmt::Display for TestReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.gone { "reset" } else { "bad frame" })
    }
}

impl chatgate_rtm::ReadError for TestReadError {
    fn peer_gone(&self) -> bool {
        self.gone
    }
}

/// What the client receives when its socket's read fails with `error`.
async fn frames_after_read_error(gone: bool) -> Vec<Message> {
    let store = Arc::new(GatedStore::default());
    let engine = Engine::start(store, EngineConfig::default()).unwrap();
    let stream = futures_util::stream::iter(vec![Err::<Message, _>(TestReadError { gone })]);
    let (session, mut from_server) = agent_session(
        engine,
        chatgate_protocol::Version::V3_5,
        stream,
        RtmConfig::default(),
    );
    session.await;
    let mut got = Vec::new();
    while let Ok(m) = from_server.try_recv() {
        got.push(m);
    }
    got
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_is_gone_is_not_written_to_and_a_protocol_error_is_explained() {
    // Reset or closed without a close frame: the session ends quietly.
    let got = frames_after_read_error(true).await;
    assert!(got.is_empty(), "nothing is written to a gone peer: {got:?}");
    // A protocol violation: the client is told why, then closed.
    let got = frames_after_read_error(false).await;
    let Some(Message::Text(t)) = got.first() else {
        panic!("expected agent_disconnected first: {got:?}")
    };
    let f: Value = serde_json::from_str(t.as_str()).unwrap();
    assert_eq!(f["action"], "agent_disconnected");
    assert_eq!(f["payload"]["data"]["detail"], "protocol_error");
    assert!(matches!(got.last(), Some(Message::Close(_))), "{got:?}");
}

/// A client whose socket stopped taking frames while its queue never fills
/// (so no `slow_consumer` close): the write that has to wait gives up after
/// `write_timeout`, the session ends as gone, with nothing more attempted,
/// and another session of the same agent keeps working.
#[tokio::test(start_paused = true)]
async fn a_write_that_waits_past_write_timeout_ends_the_session() {
    let config = RtmConfig {
        write_timeout: Duration::from_secs(2),
        ..RtmConfig::default()
    };
    // No request-rate limit: the multicasts below come as fast as answered.
    let engine_config = EngineConfig {
        rate_limit: None,
        ..EngineConfig::default()
    };
    let mut stalled = start_with(config.clone(), engine_config);
    stalled.login().await;
    // A second session of alice's, read normally.
    let (to_b, b_rx) = mpsc::channel::<Message>(64);
    let (b_session, mut from_b) = agent_session(
        stalled.engine.clone(),
        chatgate_protocol::Version::V3_5,
        channel_stream(b_rx),
        config,
    );
    let b_task = tokio::spawn(b_session);
    async fn answer(to: &mpsc::Sender<Message>, from: &mut mpsc::Receiver<Message>, id: &str) {
        loop {
            match from.recv().await.expect("b is open") {
                Message::Text(t) => {
                    let f: Value = serde_json::from_str(t.as_str()).unwrap();
                    if f["request_id"] == id {
                        assert_eq!(f["success"], true, "{f}");
                        return;
                    }
                }
                Message::Ping(p) => to.send(Message::Pong(p)).await.unwrap(),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let send = |v: Value| Message::Text(v.to_string().into());
    to_b.send(send(
        json!({"action":"login","request_id":"login","payload":{"token":"Bearer alice-token"}}),
    ))
    .await
    .unwrap();
    answer(&to_b, &mut from_b, "login").await;
    // 300 multicasts reach the stalled session: more than the 256 frames its
    // socket (the test's channel) holds, fewer than its queue's 1,024.
    for k in 0..300 {
        let id = format!("m{k}");
        to_b.send(send(
            json!({"action":"multicast","request_id":id,"payload":{
            "recipients":{"agents":{"all":true}},"content":{"k":k}}}),
        ))
        .await
        .unwrap();
        answer(&to_b, &mut from_b, &id).await;
    }
    assert_eq!(stalled.from_server.len(), 256, "its socket is full");
    // It ends after the write timeout, without waiting as long again to
    // close a sink that takes nothing, nor close drains (5 s each).
    tokio::time::timeout(Duration::from_millis(2500), &mut stalled.task)
        .await
        .expect("the blocked write gave up within write_timeout")
        .unwrap();
    let mut got = Vec::new();
    while let Ok(m) = stalled.from_server.try_recv() {
        got.push(m);
    }
    assert!(
        got.iter().all(
            |m| !matches!(m, Message::Text(t) if t.as_str().contains("agent_disconnected"))
                && !matches!(m, Message::Close(_))
        ),
        "a gone client is not told why"
    );
    // The other session is unaffected.
    to_b.send(send(
        json!({"action":"multicast","request_id":"after","payload":{
        "recipients":{"agents":{"all":true}},"content":{"k":"after"}}}),
    ))
    .await
    .unwrap();
    answer(&to_b, &mut from_b, "after").await;
    assert!(!b_task.is_finished());
}

#[tokio::test]
async fn a_search_the_store_cannot_take_now_is_service_unavailable_and_the_session_goes_on() {
    let mut c = start(RtmConfig::default());
    c.login().await;
    c.store.search_busy.store(true, Ordering::SeqCst);
    let search = json!({"action":"list_archives","request_id":"s1","payload":{"filters":{"query":"refund"}}});
    c.send(search.clone()).await;
    let r = c.next_json().await;
    assert_eq!(r["success"], false, "{r}");
    assert_eq!(r["payload"]["error"]["type"], "service_unavailable", "{r}");
    // Once the store takes searches again, the same request is answered.
    c.store.search_busy.store(false, Ordering::SeqCst);
    c.send(search).await;
    let r = c.next_json().await;
    assert_eq!(r["success"], true, "{r}");
}
