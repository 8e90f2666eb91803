//! The harness against the real server: each scenario, small and short,
//! must set up every connection, lose nothing and report what it measured.

use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_chatgate-load");

/// A server provisioned with the load organization (`agents` agents),
/// without a rate limit.
async fn server(dir: &std::path::Path, agents: usize) -> chatgate_server::Running {
    let p = dir.join("p.toml");
    let out = Command::new(BIN)
        .args(["provision", "--agents", &agents.to_string(), "--out"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut c = chatgate_server::ServerConfig::new(dir.join("data"));
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.shutdown_grace = Duration::from_secs(3);
    c.engine.rate_limit = None;
    c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    c.provision = Some(chatgate_server::load_provision(&p).unwrap());
    chatgate_server::start(c).await.unwrap()
}

/// Runs a scenario (blocking, off the runtime) and returns its JSON.
async fn run(args: Vec<String>, dir: &std::path::Path) -> Value {
    let json = dir.join(format!("{}.json", args[0]));
    let mut full = args.clone();
    full.push("--json".into());
    full.push(json.display().to_string());
    let out = tokio::task::spawn_blocking(move || Command::new(BIN).args(&full).output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

/// `scenario` against a room relay at `addr` (`--target`), with `who`
/// (`--receivers` or `--customers`) set to `n`: 20 messages a second for 2 s.
async fn relay_run(
    dir: &std::path::Path,
    scenario: &str,
    target: &str,
    addr: &str,
    who: &str,
    n: &str,
) -> Value {
    let list = [
        scenario,
        "--target",
        target,
        "--server",
        addr,
        who,
        n,
        "--rate",
        "20",
        "--duration",
        "2",
    ];
    run(args(&list), dir).await
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_chat_and_fanout_against_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let running = server(dir.path(), 40).await;
    let addr = running.http_addr.to_string();
    let metrics = running.metrics_addr.unwrap().to_string();
    let pid = std::process::id().to_string();

    let r = run(
        args(&[
            "idle",
            "--server",
            &addr,
            "--pid",
            &pid,
            "--sessions",
            "30",
            "--rate",
            "300",
            "--hold",
            "1",
            // The single-threaded runtime (the default under `taskset -c 1`).
            "--threads",
            "1",
        ]),
        dir.path(),
    )
    .await;
    assert_eq!(r["sessions_up"], 30, "{r}");
    assert_eq!(r["login"]["count"], 30);
    assert_eq!(r["harness_start_lag"]["count"], 30, "{r}");
    assert!(
        r["login_phase_harness_cpu_seconds"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    assert!(r["login_phase_server_cpu_seconds"].is_number(), "{r}");
    assert!(
        r["login_phase_steal_seconds"].as_f64().unwrap() >= 0.0,
        "{r}"
    );
    assert_eq!(r["unexpected_closes"], 0);
    assert!(r["kib_per_session"].is_number(), "{r}");

    let r = run(
        args(&[
            "chat",
            "--server",
            &addr,
            "--agents",
            "5",
            "--customers",
            "20",
            "--rate",
            "200",
            "--duration",
            "2",
            "--threads",
            "1",
            "--metrics",
            &metrics,
        ]),
        dir.path(),
    )
    .await;
    assert_eq!(r["customers"], 20, "{r}");
    // The server's own view of the traffic (its /metrics before and after):
    // the 400 send_event requests, each write committed.
    let server = &r["server_metrics"];
    assert_eq!(server["rtm_requests"]["count"], 400.0, "{r}");
    assert!(
        server["store_queue_wait"]["count"].as_f64().unwrap() >= 400.0,
        "{r}"
    );
    assert!(server["commits"].as_f64().unwrap() >= 1.0, "{r}");
    assert!(server["writes_per_commit"].as_f64().unwrap() >= 1.0, "{r}");
    assert!(
        server["store_commit"]["p99_ms_at_most"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    assert!(r["harness_cpu_seconds"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["steal_seconds"].as_f64().unwrap() >= 0.0, "{r}");
    assert_eq!(
        r["incoming_chat"]["count"], 20,
        "each chat reached its agent: {r}"
    );
    assert_eq!(r["offered"], 400);
    assert_eq!(r["acknowledged"], 400, "{r}");
    assert_eq!(
        r["delivered"], 400,
        "every acknowledged event reached the other side: {r}"
    );
    assert_eq!(r["lost"], 0);
    assert_eq!(r["latency"]["count"], 400);
    assert_eq!(
        r["send_lag"]["count"], 400,
        "the harness's own lag is reported for every frame: {r}"
    );
    assert!(r["latency"]["p99_ms"].as_f64().unwrap() > 0.0);

    // The run ended its chats: one agent (max 20 chats) takes 20 new ones
    // at once. Left active, the first run's chats would have been queued
    // when their agents left and handed to this agent first.
    let r = run(
        args(&[
            "chat",
            "--server",
            &addr,
            "--agents",
            "1",
            "--customers",
            "20",
            "--rate",
            "50",
            "--duration",
            "1",
        ]),
        dir.path(),
    )
    .await;
    assert_eq!(
        r["incoming_chat"]["count"], 20,
        "the agent had room for every new chat: {r}"
    );
    assert_eq!(r["delivered"], 50, "{r}");

    let r = run(
        args(&[
            "fanout",
            "--server",
            &addr,
            "--receivers",
            "25",
            "--rate",
            "20",
            "--duration",
            "2",
        ]),
        dir.path(),
    )
    .await;
    assert_eq!(r["offered"], 40, "{r}");
    assert_eq!(r["expected_deliveries"], 1000);
    assert_eq!(r["delivered"], 1000, "{r}");
    assert!(r["harness_cpu_seconds"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["steal_seconds"].as_f64().unwrap() >= 0.0, "{r}");
    assert_eq!(r["send_lag"]["count"], 40, "{r}");

    // The same with the sender on the Web API: every multicast answered
    // over HTTP and delivered over RTM.
    let r = run(
        args(&[
            "fanout",
            "--server",
            &addr,
            "--receivers",
            "25",
            "--rate",
            "20",
            "--duration",
            "2",
            "--send-via",
            "web",
            "--metrics",
            &metrics,
        ]),
        dir.path(),
    )
    .await;
    assert_eq!(r["send_via"], "web", "{r}");
    // The server's own view of the window: no error answers (the Web
    // multicasts are not RTM requests, so none is in `rtm_requests`).
    assert_eq!(
        r["server_metrics"]["request_errors"],
        serde_json::json!({}),
        "{r}"
    );
    assert_eq!(r["server_metrics"]["rtm_requests"]["count"], 0.0, "{r}");
    assert_eq!(r["offered"], 40, "{r}");
    assert_eq!(r["web_requests"]["answered"], 40, "{r}");
    assert_eq!(r["web_requests"]["round_trip"]["count"], 40, "{r}");
    assert_eq!(r["sender_errors"], serde_json::json!({}), "{r}");
    assert_eq!(r["delivered"], 1000, "{r}");

    // A receiver that never reads: the others still get everything, and it
    // is accounted for on its own.
    let r = run(
        args(&[
            "fanout",
            "--server",
            &addr,
            "--receivers",
            "10",
            "--stalled",
            "2",
            "--pad",
            "100",
            "--rate",
            "20",
            "--duration",
            "1",
        ]),
        dir.path(),
    )
    .await;
    assert_eq!(r["receivers"], 8, "{r}");
    assert_eq!(r["stalled"], 2);
    assert_eq!(r["delivered"], r["expected_deliveries"], "{r}");
    let outcomes: u64 = r["stalled_outcome"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(outcomes, 2, "{r}");

    // Everyone drops at once and comes back: stock clients, then the same
    // storm with exact resume, where every session comes back with its
    // cursor and misses nothing, receives nothing twice.
    for resume in [false, true] {
        let mut a = args(&[
            "storm",
            "--server",
            &addr,
            "--sessions",
            "12",
            "--rate",
            "20",
            "--settle",
            "1",
        ]);
        if resume {
            a.push("--resume".into());
        }
        let r = run(a, dir.path()).await;
        assert_eq!(r["failed_first"], 0, "{r}");
        assert_eq!(r["failed_after"], 0, "{r}");
        assert_eq!(r["login_after_drop"]["count"], 12, "{r}");
        assert!(r["seconds_until_all_back"].as_f64().unwrap() > 0.0);
        assert!(r["pushes_missed"].is_u64(), "{r}");
        if resume {
            assert_eq!(r["resume_statuses"]["resumed"], 12, "{r}");
            assert_eq!(r["pushes_missed"], 0, "{r}");
            assert_eq!(r["pushes_received_twice"], 0, "{r}");
        }
    }

    // Ramp: steps until the bound; a bound nobody can miss holds every step.
    let r = run(
        args(&[
            "ramp",
            "--server",
            &addr,
            "--receivers",
            "5",
            "--duration",
            "1",
            "--start",
            "10",
            "--step",
            "10",
            "--max-steps",
            "2",
            "--bound-ms",
            "60000",
        ]),
        dir.path(),
    )
    .await;
    assert_eq!(r["steps"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(r["held_rate"], 20, "{r}");
    assert_eq!(r["steps"][1]["result"]["delivered"], 100, "{r}");

    // Hostile clients get answers, not a broken server.
    let r = run(
        args(&[
            "hostile",
            "--server",
            &addr,
            "--pid",
            &pid,
            "--idle-sockets",
            "30",
            "--garbage",
            "3",
            "--flood",
            "50",
        ]),
        dir.path(),
    )
    .await;
    assert_eq!(r["unauthenticated"]["sockets"], 30, "{r}");
    assert_eq!(r["random_frames"]["logged_in_after"], 3, "{r}");
    assert_eq!(r["oversized"]["usable_after_300_kib"], true, "{r}");
    assert!(
        r["oversized"]["after_5_mib"].is_string(),
        "a frame over the hard limit ends its connection: {r}"
    );
    let answered: u64 = r["flood"]["responses"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(answered, 50, "every flooded request is answered: {r}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_relay_delivers_the_room_relay_protocol() {
    let dir = tempfile::tempdir().unwrap();
    // A free port: bind, read it, release it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut relay = Command::new(BIN)
        .args(["baseline", "--listen", &addr])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..50 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = relay_run(dir.path(), "fanout", "raw", &addr, "--receivers", "20").await;
    // The chat shape: pairs sending to each other's room, one delivery
    // per message (none back to the sender).
    let c = relay_run(dir.path(), "chat", "raw", &addr, "--customers", "10").await;
    relay.kill().unwrap();
    let _ = relay.wait();
    assert_eq!(r["offered"], 40, "{r}");
    assert_eq!(r["delivered"], 800, "{r}");
    assert_eq!(r["latency"]["count"], 800);
    assert_eq!(c["pairs"], 10, "{c}");
    assert_eq!(c["offered"], 40, "{c}");
    assert_eq!(c["delivered"], 40, "{c}");
    assert_eq!(c["lost"], 0, "{c}");
    assert_eq!(c["latency"]["count"], 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_runs_chatgate_and_the_baseline_one_after_another() {
    // The `chatgate` binary sits next to this test's own deps folder (the
    // workspace's test run builds it for the server crate's tests).
    let chatgate = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("chatgate");
    assert!(
        chatgate.exists(),
        "build the workspace first: {}",
        chatgate.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let table = compare(&chatgate, dir.path(), &["--receivers", "5"]).await;
    for server in ["chatgate", "baseline"] {
        assert_eq!(table[server]["delivered"], 50, "{server}: {table}");
        assert_eq!(table[server]["expected_deliveries"], 50);
    }
    // The chat shape: chats through chatgate, connection pairs through the
    // baseline; every message reaches the other side.
    let chat = ["--shape", "chat", "--agents", "2", "--customers", "4"];
    let table = compare(&chatgate, dir.path(), &chat).await;
    for server in ["chatgate", "baseline"] {
        assert_eq!(table[server]["scenario"], "chat", "{server}: {table}");
        assert_eq!(table[server]["delivered"], 10, "{server}: {table}");
        assert_eq!(table[server]["expected_deliveries"], 10);
    }
    // Two rounds: each server twice, chatgate on a fresh data directory
    // each time (its chats of the first round do not take the agents'
    // capacity in the second); deliveries summed, every round kept.
    // `--metrics`: chatgate's own view of each of its rounds (read from
    // the `/metrics` listener compare gives it), none for the baseline.
    let twice = [&chat[..], &["--repeat", "2", "--metrics"]].concat();
    let table = compare(&chatgate, dir.path(), &twice).await;
    for server in ["chatgate", "baseline"] {
        let rounds = table[server]["rounds"].as_array().unwrap();
        assert_eq!(rounds.len(), 2, "{server}: {table}");
        assert_eq!(table[server]["rounds_ok"], 2, "{server}: {table}");
        assert_eq!(table[server]["delivered"], 20, "{server}: {table}");
        assert!(table[server]["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
        for round in rounds {
            let m = &round["server_metrics"];
            if server == "baseline" {
                assert!(m.is_null(), "{round}");
                continue;
            }
            // Each round's 5 customers sent 5 events, each committed.
            assert!(m["rtm_requests"]["count"].as_f64().unwrap() >= 10.0, "{m}");
            assert!(m["commits"].as_f64().unwrap() >= 1.0, "{m}");
            assert!(m["writes_per_commit"].as_f64().unwrap() >= 1.0, "{m}");
            assert!(m["commit_delays"].as_f64().is_some(), "{m}");
            assert_eq!(m["request_errors"], serde_json::json!({}), "{m}");
        }
    }
}

/// `compare` at 10 messages/s for 1 s with `extra` flags; its JSON table.
async fn compare(chatgate: &std::path::Path, dir: &std::path::Path, extra: &[&str]) -> Value {
    let json = dir.join("compare.json");
    let mut cmd = Command::new(BIN);
    cmd.args(["compare", "--rate", "10", "--duration", "1"])
        .args(extra)
        .arg("--chatgate-bin")
        .arg(chatgate)
        .arg("--json")
        .arg(&json);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}

/// The soak, short in CI; `CHATGATE_SOAK_SECS=1800 cargo test -p
/// chatgate-load --release --test harness soak` makes it the long run (the
/// figures in loadtest/README.md come from the command line instead, with
/// the server in its own process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_churns_agents_and_customers_and_reports_every_interval() {
    let secs: u64 = std::env::var("CHATGATE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let every = if secs >= 60 { 10 } else { 1 };
    let dir = tempfile::tempdir().unwrap();
    let running = server(dir.path(), 6).await;
    let addr = running.http_addr.to_string();
    let pid = std::process::id().to_string();
    let r = run(
        args(&[
            "soak",
            "--server",
            &addr,
            "--pid",
            &pid,
            "--agents",
            "4",
            "--agent-hold-ms",
            "500",
            "--customers",
            "12",
            "--workers",
            "3",
            "--messages",
            "3",
            "--pause-ms",
            "5",
            "--duration",
            &secs.to_string(),
            "--report-every",
            &every.to_string(),
        ]),
        dir.path(),
    )
    .await;
    let intervals = r["intervals"].as_array().unwrap();
    assert_eq!(intervals.len() as u64, secs / every, "{r}");
    assert!(r["visits"].as_u64().unwrap() > 0, "{r}");
    let sum = |key: &str| -> u64 { intervals.iter().map(|i| i[key].as_u64().unwrap()).sum() };
    // Agents came back, and half of those logins used exact resume (a
    // `resumed` or an explicit `resync_needed`, never silence).
    assert!(sum("agent_logins") >= 8, "{r}");
    assert!(sum("resumed") + sum("resync_needed") >= 1, "{r}");
    for i in intervals {
        assert!(i["server_rss_kib"].as_u64().unwrap() > 0, "{i}");
        assert!(i["send_event"]["count"].as_u64().unwrap() > 0, "{i}");
        // The only refusals a soak may see: a transfer to the agent who
        // already has the chat, or to one between connections.
        for (kind, _) in i["errors"].as_object().unwrap() {
            assert!(
                kind.contains("is already in this chat") || kind.contains("agent_offline"),
                "{kind}: {r}"
            );
        }
    }
}

/// A minimal Socket.IO room relay (Engine.IO v4 over a WebSocket, the part
/// `../shared/bench/peers/socketio_rooms.js` uses): open packet, namespace
/// connect, one ping per connection, events relayed to the room named in
/// the message. Counts the pongs it gets back.
// tungstenite's handshake callback returns its (large) error response type.
#[allow(clippy::result_large_err)]
async fn mini_socketio(
    listener: tokio::net::TcpListener,
    pongs: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use futures_util::{SinkExt, StreamExt};
    use tokio::sync::mpsc;
    use tokio_tungstenite::tungstenite::Message;
    type Rooms = std::sync::Arc<std::sync::Mutex<Vec<(String, mpsc::UnboundedSender<String>)>>>;
    let rooms: Rooms = Default::default();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let (rooms, pongs) = (rooms.clone(), pongs.clone());
        tokio::spawn(async move {
            let mut room = String::new();
            let ws = tokio_tungstenite::accept_hdr_async(
                tcp,
                |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                    let q = req.uri().query().unwrap_or("");
                    assert!(
                        q.contains("EIO=4") && q.contains("transport=websocket"),
                        "{q}"
                    );
                    room = q
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("room="))
                        .unwrap_or("")
                        .to_owned();
                    Ok(resp)
                },
            )
            .await
            .unwrap();
            let (mut sink, mut stream) = ws.split();
            sink.send(Message::text(
                r#"0{"sid":"s","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
            ))
            .await
            .unwrap();
            match stream.next().await {
                Some(Ok(Message::Text(t))) if t.as_str() == "40" => {}
                other => panic!("expected a namespace connect, got {other:?}"),
            }
            sink.send(Message::text(r#"40{"sid":"n"}"#)).await.unwrap();
            sink.send(Message::text("2")).await.unwrap();
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            if room != "pub" {
                rooms.lock().unwrap().push((room, tx));
            }
            tokio::spawn(async move {
                while let Some(f) = rx.recv().await {
                    if sink.send(Message::text(f)).await.is_err() {
                        return;
                    }
                }
            });
            while let Some(Ok(Message::Text(t))) = stream.next().await {
                let t = t.as_str();
                if t == "3" {
                    pongs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else if let Some(body) = t.strip_prefix(r#"42["m",""#) {
                    let target = body.strip_prefix("r=").and_then(|b| b.split(';').next());
                    for (r, tx) in rooms.lock().unwrap().iter() {
                        if Some(r.as_str()) == target {
                            let _ = tx.send(t.to_owned());
                        }
                    }
                }
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_speaks_socketio_to_a_socketio_relay() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let pongs = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let relay = tokio::spawn(mini_socketio(listener, pongs.clone()));
    let r = relay_run(dir.path(), "fanout", "socketio", &addr, "--receivers", "10").await;
    relay.abort();
    assert_eq!(r["offered"], 40, "{r}");
    assert_eq!(
        r["delivered"], 400,
        "every event reached every receiver: {r}"
    );
    assert_eq!(r["latency"]["count"], 400);
    assert_eq!(
        r["send_lag"]["count"], 40,
        "the harness's own lag is reported for every frame: {r}"
    );
    // Every connection (10 receivers and the sender) answered its ping.
    assert_eq!(pongs.load(std::sync::atomic::Ordering::Relaxed), 11);
}
