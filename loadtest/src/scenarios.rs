//! The scenarios: `idle`, `chat`, `fanout` (chatgate or a room relay).
//!
//! Shape shared by all: connections are set up first (each measured), then
//! an open-loop schedule offers traffic at a fixed rate for a fixed time,
//! receivers record `received - intended send time`, the harness waits a
//! short drain, stops everything and prints one table (and JSON with
//! `--json`).

use crate::client::{self, Ws};
use crate::server_metrics;
use crate::stats::{CpuWindow, Latency, micros_since, rss_kib};
use crate::web;
use crate::{
    ChatArgs, Common, CompareArgs, FanoutArgs, HostileArgs, IdleArgs, RampArgs, StormArgs,
};
use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// How long receivers keep reading after the last send.
const DRAIN: Duration = Duration::from_secs(2);
/// Connections set up at once.
const SETUP_CONCURRENCY: usize = 256;
/// Frames a sender may have queued before the schedule counts it as a
/// client-side backlog (the harness, not the server, falling behind).
const SENDER_QUEUE: usize = 4096;

pub(crate) fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Writes the load organization's provisioning file.
pub fn write_provisioning(agents: usize, max_chats: u32, out: &std::path::Path) -> io::Result<()> {
    let mut s = String::from(
        "# Written by chatgate-load provision.\n[[organization]]\nid = \"load\"\nname = \"Load\"\n\
         [[organization.group]]\nid = 0\nname = \"General\"\n\
         [[organization.agent]]\nid = \"owner@load.test\"\nname = \"Owner\"\nrole = \"owner\"\n\
         login_status = \"not_accepting_chats\"\ntokens = [\"load-owner\"]\n",
    );
    for i in 0..agents {
        s.push_str(&format!(
            "[[organization.agent]]\nid = \"agent{i}@load.test\"\nname = \"Agent {i}\"\nmax_chats = {max_chats}\ntokens = [\"load-agent-{i}\"]\n"
        ));
    }
    std::fs::write(out, s)?;
    println!("wrote {} agents + owner to {}", agents, out.display());
    Ok(())
}

/// What one connection saw.
#[derive(Default)]
pub(crate) struct ConnOut {
    pub latency: Latency,
    pub deliveries: u64,
    pub acks: u64,
    pub errors: BTreeMap<String, u64>,
    pub closed_early: bool,
}

/// Request ids of a scenario's clean-up requests, which are not counted.
const END_PREFIX: &str = "end-";

/// Turns a received text frame into the intended send time (µs since the
/// epoch) when it is a delivery this connection measures.
/// The second argument is the moment the frame was read (µs since the
/// epoch), read from the clock once per frame.
pub(crate) type Measure = Arc<dyn Fn(&str, u64) -> Option<u64> + Send + Sync>;

/// Frames `drive` reads per wake-up, at most, before it looks at its other
/// duties (stop, outbound frames, pings) again.
const READ_BATCH: usize = 64;

/// Drives one connection until `stop`: writes queued frames, reads frames,
/// records deliveries, counts acknowledgements and errors, sends an RTM
/// `ping` every `ping_every`. Without `measure` it records nothing (and
/// allocates no histogram).
pub(crate) fn drive(
    mut ws: Ws,
    mut outbound: mpsc::Receiver<String>,
    mut stop: watch::Receiver<bool>,
    epoch: Instant,
    measure: Option<Measure>,
    ping_every: Option<Duration>,
    delivered: Arc<AtomicU64>,
) -> JoinHandle<ConnOut> {
    tokio::spawn(async move {
        let mut out = ConnOut::default();
        if measure.is_some() {
            // Allocated now, not at the first delivery in the middle of
            // the measurement (thousands of receivers at once).
            out.latency = Latency::allocated();
        }
        let mut ping = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(3600)));
        ping.tick().await;
        let mut n = 0u64;
        'conn: loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = ping.tick(), if ping_every.is_some() => {
                    n += 1;
                    let f = client::frame("ping", &format!("p{n}"), json!({}));
                    if ws.send(Message::text(f)).await.is_err() {
                        out.closed_early = true;
                        break;
                    }
                }
                Some(f) = outbound.recv() => {
                    if ws.send(Message::text(f)).await.is_err() {
                        out.closed_early = true;
                        break;
                    }
                }
                m = ws.next() => {
                    // This frame and up to READ_BATCH - 1 more that are
                    // already readable, without a turn of the `select!`
                    // (which polls every branch) per frame.
                    let mut first = Some(m);
                    for _ in 0..READ_BATCH {
                        let Some(m) = first.take().or_else(|| ws.next().now_or_never()) else {
                            break;
                        };
                        let text = match m {
                            Some(Ok(Message::Text(t))) => t,
                            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                                out.closed_early = !*stop.borrow();
                                break 'conn;
                            }
                            Some(Ok(_)) => continue,
                        };
                        if text.as_str() == "2" {
                            // An Engine.IO ping (Socket.IO targets): pong.
                            if ws.send(Message::text("3")).await.is_err() {
                                out.closed_early = true;
                                break 'conn;
                            }
                            continue;
                        }
                        let now = micros_since(epoch);
                        if let Some(intended) = measure.as_ref().and_then(|m| m(text.as_str(), now)) {
                            let latency = now.saturating_sub(intended);
                            out.latency.record_us(latency);
                            crate::stats::LIVE.record_us(latency);
                            out.deliveries += 1;
                            delivered.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        // Responses: acknowledgements and errors by type.
                        if text.as_str().contains("\"response\"")
                            && let Ok(v) = serde_json::from_str::<Value>(text.as_str())
                            && v["type"] == "response"
                        {
                            let cleanup = v["request_id"]
                                .as_str()
                                .is_some_and(|r| r.starts_with(END_PREFIX));
                            if cleanup {
                                // A scenario's clean-up, not its traffic.
                            } else if v["success"] == true {
                                out.acks += 1;
                            } else {
                                let kind = v["payload"]["error"]["type"].as_str().unwrap_or("?");
                                *out.errors.entry(kind.to_owned()).or_default() += 1;
                                crate::stats::LIVE.error();
                            }
                        }
                    }
                }
            }
        }
        out
    })
}

/// `storm`: N sessions up; a sender multicasts numbered messages; every
/// session drops at once and reconnects; the harness measures the time
/// until all are logged in again and, per session, which numbers it never
/// received (what a client without a resume mechanism loses). With
/// `--resume` the sessions use chatgate's exact resume and log in again with
/// their cursor.
pub async fn storm(a: StormArgs) -> io::Result<()> {
    raise_nofile();
    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let seqs: Vec<Arc<Mutex<Vec<u64>>>> = (0..a.sessions).map(|_| Default::default()).collect();
    // Per session: its resume stream and the last `resume_seq` it read.
    let streams: Vec<Arc<Mutex<Option<String>>>> =
        (0..a.sessions).map(|_| Default::default()).collect();
    let cursors: Vec<Arc<AtomicU64>> = (0..a.sessions).map(|_| Default::default()).collect();
    let measure_for = |i: usize| -> Measure {
        let seen = seqs[i].clone();
        let cursor = cursors[i].clone();
        Arc::new(move |text: &str, _now: u64| {
            if let Some(n) = resume_seq(text) {
                cursor.store(n, Ordering::Relaxed);
            }
            let c = multicast_stamp(text)?;
            seen.lock().unwrap().push(c.seq?);
            Some(c.t)
        })
    };
    // Connects every session; returns the running receivers and the login
    // latency (from the moment the phase started).
    let connect_all = |phase_stop: watch::Receiver<bool>, name: &'static str| {
        let common = a.common.clone();
        let delivered = delivered.clone();
        let measures: Vec<Measure> = (0..a.sessions).map(measure_for).collect();
        let (streams, cursors, resume) = (streams.clone(), cursors.clone(), a.resume);
        async move {
            let sem = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
            let start_us = micros_since(epoch);
            let phase = Arc::new(crate::stats::Phase::default());
            let progress = PhaseProgress::start(name, measures.len(), phase.clone());
            let mut setups = Vec::new();
            for (i, measure) in measures.into_iter().enumerate() {
                let permit = sem.clone().acquire_owned().await.map_err(err)?;
                let (common, stop, delivered) =
                    (common.clone(), phase_stop.clone(), delivered.clone());
                let (stream, cursor) = (streams[i].clone(), cursors[i].clone());
                let phase = phase.clone();
                setups.push(tokio::spawn(async move {
                    let mut login = json!({"token": format!("Bearer load-agent-{i}")});
                    if resume {
                        login["resume"] = match stream.lock().unwrap().clone() {
                            None => json!(true),
                            Some(id) => {
                                json!({"stream_id": id, "last_seq": cursor.load(Ordering::Relaxed)})
                            }
                        };
                    }
                    let r =
                        login_with(&common, i, "/v3.5/agent/rtm/ws", login, epoch, start_us).await;
                    drop(permit);
                    match &r {
                        Ok(s) => phase.logged_in(s.latency_us),
                        Err(_) => phase.failed(),
                    }
                    r.map(|s| {
                        let status = s.login["resume"]["status"].as_str().map(str::to_owned);
                        if let Some(id) = s.login["resume"]["stream_id"].as_str() {
                            *stream.lock().unwrap() = Some(id.to_owned());
                        }
                        let replayed = s.login["resume"]["replayed"].as_u64().unwrap_or(0);
                        let (tx, rx) = mpsc::channel(1);
                        (
                            s.latency_us,
                            tx,
                            drive(s.ws, rx, stop, epoch, Some(measure), None, delivered),
                            status,
                            replayed,
                        )
                    })
                }));
            }
            let mut login = Latency::default();
            let mut running = Vec::new();
            let mut failed = 0u64;
            let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
            let mut replayed = 0u64;
            for s in setups {
                match s.await.map_err(err)? {
                    Ok((lat, tx, h, status, n)) => {
                        login.record_us(lat);
                        running.push((tx, h));
                        if let Some(st) = status {
                            *statuses.entry(st).or_default() += 1;
                        }
                        replayed += n;
                    }
                    Err(_) => failed += 1,
                }
            }
            progress.finish().await;
            Ok::<_, io::Error>((running, login, failed, statuses, replayed))
        }
    };
    let (stop1_tx, stop1_rx) = watch::channel(false);
    let (first, login1, failed1, _, _) = connect_all(stop1_rx, "first login").await?;
    // The sender, for the whole run.
    let (stop_tx, stop_rx) = watch::channel(false);
    let sender_ws = connect_login(&a.common, 0, "/v3.5/agent/rtm/ws", "load-owner", epoch, 0)
        .await?
        .ws;
    let (tx, sender) = sender(sender_ws, stop_rx.clone(), epoch);
    let rate = a.rate.max(1);
    let sending = {
        let tx = tx.clone();
        let delivered = delivered.clone();
        let total = a.settle * 3 + 60;
        tokio::spawn(async move {
            schedule(epoch, rate, Duration::from_secs(total), std::slice::from_ref(&tx), &delivered, |k, t| {
                Some((0, client::frame("multicast", &format!("m{k}"), json!({"recipients": {"agents": {"all": true}}, "content": {"t": t, "seq": k}}))))
            })
            .await
        })
    };
    tokio::time::sleep(Duration::from_secs(a.settle)).await;
    // The storm: every session drops at once...
    let dropped_at = Instant::now();
    let _ = stop1_tx.send(true);
    for (_, h) in first {
        let _ = h.await;
    }
    // ...and reconnects.
    let (stop2_tx, stop2_rx) = watch::channel(false);
    let (second, login2, failed2, statuses, replayed) =
        connect_all(stop2_rx, "after the drop").await?;
    let back_secs = dropped_at.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(a.settle)).await;
    sending.abort();
    tokio::time::sleep(DRAIN).await;
    let _ = stop2_tx.send(true);
    let _ = stop_tx.send(true);
    let mut after = Latency::default();
    for (_, h) in second {
        after.add(&h.await.map_err(err)?.latency);
    }
    let _ = sender.await;
    // Numbers each session missed between the first and the last it saw.
    let (mut missed_total, mut sessions_missing, mut duplicates) = (0u64, 0u64, 0u64);
    for s in &seqs {
        let mut v = s.lock().unwrap().clone();
        v.sort_unstable();
        let n = v.len();
        v.dedup();
        duplicates += (n - v.len()) as u64;
        if let (Some(lo), Some(hi)) = (v.first(), v.last()) {
            let missed = (hi - lo + 1) - v.len() as u64;
            missed_total += missed;
            sessions_missing += u64::from(missed > 0);
        }
    }
    println!("{}", login1.line("first login"));
    println!("{}", login2.line("login after the drop"));
    println!("{}", after.line("delivery after the storm"));
    println!(
        "all {} sessions back {back_secs:.2} s after the drop ({} failed before, {} after); {sessions_missing} sessions missed {missed_total} multicasts in all; {duplicates} received twice",
        a.sessions - failed2 as usize,
        failed1,
        failed2
    );
    if a.resume {
        println!("resume: {statuses:?}, {replayed} pushes replayed");
    }
    finish(
        &a.common,
        "storm",
        json!({
            "scenario": "storm",
            "sessions": a.sessions,
            "failed_first": failed1,
            "failed_after": failed2,
            "seconds_until_all_back": back_secs,
            "login_first": login1.summary(),
            "login_after_drop": login2.summary(),
            "sessions_that_missed_pushes": sessions_missing,
            "pushes_missed": missed_total,
            "pushes_received_twice": duplicates,
            "resume": a.resume,
            "resume_statuses": statuses,
            "pushes_replayed": replayed,
        }),
    )
}

/// A server process started for one `compare` run; killed when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program args…` pinned to `core` and waits until `addr` accepts.
async fn start_server(
    core: &str,
    program: &str,
    args: &[String],
    addr: std::net::SocketAddr,
) -> io::Result<Server> {
    let child = std::process::Command::new("taskset")
        .arg("-c")
        .arg(core)
        .arg(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let server = Server(child);
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(err(format!("{program} did not start listening on {addr}")))
}

/// The live progress line of a connect+login phase: redrawn every second,
/// and once more, final, when [`PhaseProgress::finish`] is called.
struct PhaseProgress {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl PhaseProgress {
    fn start(name: &'static str, total: usize, phase: Arc<crate::stats::Phase>) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut progress = crate::stats::Progress::new();
            let second = Duration::from_secs(1);
            let mut tick = tokio::time::interval_at((start + second).into(), second);
            loop {
                tokio::select! {
                    _ = tick.tick() => progress.show(&phase.line(name, total, start.elapsed())),
                    _ = &mut stopped => break,
                }
            }
            progress.show(&phase.line(name, total, start.elapsed()));
            progress.done();
        });
        PhaseProgress { stop, task }
    }

    async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// `compare`: the same fanout through each server, one after another.
pub async fn compare(a: CompareArgs) -> io::Result<()> {
    let exe = std::env::current_exe()?.display().to_string();
    let tmp = std::env::temp_dir().join(format!("chatgate-compare-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let chat = match a.shape.as_str() {
        "fanout" => false,
        "chat" => true,
        other => return Err(err(format!("--shape must be fanout or chat, not {other}"))),
    };
    let provision = tmp.join("provision.toml");
    write_provisioning(a.receivers.max(a.agents), 20, &provision)?;
    if a.repeat == 0 {
        return Err(err("--repeat must be at least 1"));
    }
    let mut plan: Vec<(String, String, Vec<String>, String, &str)> = vec![
        (
            "chatgate".into(),
            a.chatgate_bin.display().to_string(),
            vec![
                "serve".into(),
                "--listen".into(),
                "127.0.0.1:19301".into(),
                "--data-dir".into(),
                // A fresh directory per round (see below).
                tmp.join("data").display().to_string(),
                "--provision".into(),
                provision.display().to_string(),
                "--rate-limit-per-sec".into(),
                "0".into(),
                "--max-unauthenticated-per-address".into(),
                "100000".into(),
            ],
            "127.0.0.1:19301".into(),
            "chatgate",
        ),
        (
            "baseline".into(),
            exe.clone(),
            vec![
                "baseline".into(),
                "--listen".into(),
                "127.0.0.1:19302".into(),
            ],
            "127.0.0.1:19302".into(),
            "raw",
        ),
    ];
    if let Some(dir) = &a.peers_dir {
        let peers = [
            ("uws_rooms.js", "raw"),
            ("ws_rooms.js", "raw"),
            ("socketio_rooms.js", "socketio"),
        ];
        for (i, (peer, target)) in peers.iter().enumerate() {
            let script = dir.join(peer);
            if script.exists() {
                // Node reads the port from the environment: wrap in `env`.
                plan.push((
                    peer.trim_end_matches(".js").into(),
                    "env".into(),
                    vec![
                        format!("PORT={}", 19303 + i),
                        "node".into(),
                        script.display().to_string(),
                    ],
                    format!("127.0.0.1:{}", 19303 + i),
                    *target,
                ));
            }
        }
    }
    const METRICS: &str = "127.0.0.1:19311";
    if a.metrics {
        plan[0]
            .2
            .extend(["--metrics-listen".into(), METRICS.into()]);
    }
    let mut rounds: Vec<(String, Vec<Value>)> =
        plan.iter().map(|p| (p.0.clone(), Vec::new())).collect();
    for round in 0..a.repeat {
        if a.repeat > 1 {
            println!("compare: round {} of {}", round + 1, a.repeat);
        }
        for (i, (_, program, args, addr, target)) in plan.iter().enumerate() {
            let target = *target;
            let mut args = args.clone();
            if let Some(d) = args.iter().position(|x| x == "--data-dir") {
                args[d + 1] = tmp.join(format!("data{round}")).display().to_string();
            }
            let addr: std::net::SocketAddr = addr.parse().map_err(err)?;
            let server = start_server(&a.server_core, program, &args, addr).await?;
            // `taskset` execs the server: the child's pid is the server's.
            let pid = server.0.id();
            let run = FanoutArgs {
                common: Common {
                    server: addr,
                    pid: Some(pid),
                    // Only chatgate (the first in the plan) has metrics.
                    metrics: (a.metrics && i == 0)
                        .then(|| METRICS.parse().expect("a socket address")),
                    sources: 1,
                    json: None,
                    svg: None,
                },
                target: target.into(),
                receivers: a.receivers,
                rate: a.rate,
                duration: a.duration,
                stalled: 0,
                pad: 0,
                send_via: "rtm".into(),
            };
            let r = if chat {
                let c = ChatArgs {
                    common: run.common.clone(),
                    agents: a.agents,
                    customers: a.customers,
                    rate: a.rate,
                    duration: a.duration,
                    org: "load".into(),
                    target: target.into(),
                };
                chat_any(&c).await
            } else {
                fanout_run(&run).await
            };
            drop(server);
            rounds[i].1.push(match r {
                Ok(v) => v,
                Err(e) => json!({"error": e.to_string()}),
            });
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let rows: Vec<(String, Value)> = rounds
        .into_iter()
        .map(|(name, mut runs)| {
            let row = if runs.len() == 1 {
                runs.pop().expect("one run")
            } else {
                median_row(runs)
            };
            (name, row)
        })
        .collect();
    if a.repeat > 1 {
        println!(
            "\nmedians of {} rounds (p99 of each round below the table)",
            a.repeat
        );
    }
    println!(
        "\n{:<12} {:>12} {:>14} {:>10} {:>10} {:>10} {:>9} {:>10} {:>8}",
        "server",
        "delivered",
        "deliveries/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "CPU s",
        "harness s",
        "steal s"
    );
    for (name, v) in &rows {
        if let Some(e) = v.get("error") {
            println!("{name:<12} failed: {e}");
            continue;
        }
        println!(
            "{:<12} {:>12} {:>14.0} {:>10.2} {:>10.2} {:>10.2} {:>9.2} {:>10.2} {:>8.2}",
            name,
            format!("{}/{}", v["delivered"], v["expected_deliveries"]),
            v["deliveries_per_second"].as_f64().unwrap_or(0.0),
            v["latency"]["p50_ms"].as_f64().unwrap_or(0.0),
            v["latency"]["p99_ms"].as_f64().unwrap_or(0.0),
            v["latency"]["max_ms"].as_f64().unwrap_or(0.0),
            v["server_cpu_seconds"].as_f64().unwrap_or(f64::NAN),
            v["harness_cpu_seconds"].as_f64().unwrap_or(f64::NAN),
            v["steal_seconds"].as_f64().unwrap_or(f64::NAN),
        );
    }
    for (name, v) in &rows {
        if let Some(runs) = v["rounds"].as_array() {
            let p99: Vec<String> = runs
                .iter()
                .map(|r| {
                    r["latency"]["p99_ms"]
                        .as_f64()
                        .map_or_else(|| "failed".to_owned(), |x| format!("{x:.2}"))
                })
                .collect();
            println!("{name}: p99 by round {} ms", p99.join(", "));
        }
    }
    // chatgate's own view (`--metrics`), per round.
    for (name, v) in &rows {
        let runs = match v["rounds"].as_array() {
            Some(runs) => runs.iter().collect(),
            None => vec![v],
        };
        for (k, run) in runs.iter().enumerate() {
            let m = &run["server_metrics"];
            if m.is_null() {
                continue;
            }
            let ms = |x: &Value| {
                x.as_f64()
                    .map_or_else(|| "-".into(), |x| format!("≤ {x:.2}"))
            };
            println!(
                "{name} round {}, its /metrics: request p99 {} ms, store queue wait p99 {} ms, commit p99 {} ms, {:.1} writes per commit, errors {}",
                k + 1,
                ms(&m["rtm_requests"]["p99_ms_at_most"]),
                ms(&m["store_queue_wait"]["p99_ms_at_most"]),
                ms(&m["store_commit"]["p99_ms_at_most"]),
                m["writes_per_commit"].as_f64().unwrap_or(0.0),
                m["request_errors"],
            );
        }
    }
    if let Some(path) = &a.json {
        let table: serde_json::Map<String, Value> = rows.into_iter().collect();
        std::fs::write(path, serde_json::to_vec_pretty(&table).map_err(err)?)?;
    }
    Ok(())
}

/// Reads frames until the socket ends or `limit` passes; counts response
/// error types and notes the disconnect reason.
async fn read_outcome(ws: &mut Ws, limit: Duration) -> (BTreeMap<String, u64>, Option<String>) {
    let mut errors = BTreeMap::new();
    let mut reason = None;
    let read = async {
        loop {
            let m = match ws.next().await {
                Some(Ok(m)) => m,
                // The server ended the connection without (or after) a
                // readable `agent_disconnected`.
                Some(Err(_)) | None => {
                    reason.get_or_insert_with(|| "connection closed".to_owned());
                    break;
                }
            };
            match m {
                Message::Text(t) => {
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                        continue;
                    };
                    if v["action"] == "agent_disconnected" {
                        reason = v["payload"]["reason"].as_str().map(str::to_owned);
                    } else if v["type"] == "response" {
                        let kind = if v["success"] == true {
                            "success"
                        } else {
                            v["payload"]["error"]["type"].as_str().unwrap_or("?")
                        };
                        *errors.entry(kind.to_owned()).or_default() += 1;
                    }
                }
                Message::Close(_) => {
                    reason.get_or_insert_with(|| "connection closed".to_owned());
                    break;
                }
                _ => {}
            }
        }
    };
    let _ = tokio::time::timeout(limit, read).await;
    (errors, reason)
}

/// `hostile`: what abusive clients cost and get.
pub async fn hostile(a: HostileArgs) -> io::Result<()> {
    raise_nofile();
    let rss = || a.common.pid.and_then(rss_kib);
    let before = rss();
    let mut report = serde_json::Map::new();

    // 1. Sockets that connect and never log in, all from one address.
    let mut idle = Vec::new();
    let mut refused = 0u64;
    for _ in 0..a.idle_sockets {
        match client::websocket(
            a.common.server,
            Some(client::source_for(0, 1)),
            "/v3.5/agent/rtm/ws",
        )
        .await
        {
            Ok(ws) => idle.push(ws),
            Err(_) => refused += 1,
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with_idle = rss();
    let mut outcomes = BTreeMap::<String, u64>::new();
    let checks: Vec<_> = idle
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move { read_outcome(&mut ws, Duration::from_millis(500)).await.1 })
        })
        .collect();
    for c in checks {
        let r = c.await.map_err(err)?.unwrap_or_else(|| "still open".into());
        *outcomes.entry(r).or_default() += 1;
    }
    println!(
        "never logged in: {} sockets ({refused} refused at connect): {outcomes:?}; server RSS {:?} -> {:?} KiB",
        a.idle_sockets, before, with_idle
    );
    report.insert("unauthenticated".into(), json!({"sockets": a.idle_sockets, "refused": refused, "outcomes": outcomes, "rss_kib_before": before, "rss_kib_with_them": with_idle}));

    // 2. Random bytes as text frames on fresh connections.
    let mut garbage = BTreeMap::<String, u64>::new();
    let mut survived = 0u64;
    for i in 0..a.garbage {
        let mut ws = client::websocket(
            a.common.server,
            Some(client::source_for(i + 1, 8)),
            "/v3.5/agent/rtm/ws",
        )
        .await?;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ i as u64;
        for _ in 0..100 {
            let bytes: String = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(32 + (x % 95) as u8)
                })
                .collect();
            if ws.send(Message::text(bytes)).await.is_err() {
                break;
            }
        }
        // Then a real login on the same connection.
        let ok = client::request(
            &mut ws,
            "login",
            "after",
            json!({"token": format!("Bearer load-agent-{i}")}),
        )
        .await
        .is_ok();
        survived += u64::from(ok);
        let (errs, _) = read_outcome(&mut ws, Duration::from_millis(200)).await;
        for (k, v) in errs {
            *garbage.entry(k).or_default() += v;
        }
    }
    println!(
        "random frames: {} connections x 100 frames; {survived} logged in afterwards on the same connection; other responses {garbage:?}",
        a.garbage
    );
    report.insert(
        "random_frames".into(),
        json!({"connections": a.garbage, "logged_in_after": survived, "responses": garbage}),
    );

    // 3. Oversized frames: over the request limit, then over the hard limit
    // (the client itself must be allowed to write such a frame).
    let mut ws =
        client::websocket_sized(a.common.server, None, "/v3.5/agent/rtm/ws", 16 << 20).await?;
    client::request(
        &mut ws,
        "login",
        "l",
        json!({"token": "Bearer load-agent-0"}),
    )
    .await?;
    let big = format!(
        "{{\"action\":\"ping\",\"request_id\":\"big\",\"payload\":{{\"x\":\"{}\"}}}}",
        "y".repeat(300 * 1024)
    );
    ws.send(Message::text(big)).await.map_err(err)?;
    let after_big = client::request(&mut ws, "ping", "p", json!({}))
        .await
        .is_ok();
    let huge = "z".repeat(5 * 1024 * 1024);
    let huge_reason = match ws.send(Message::text(huge)).await {
        // Cut off while still sending: the server stopped at the header.
        Err(e) => Some(format!("connection closed while sending ({e})")),
        Ok(()) => read_outcome(&mut ws, Duration::from_secs(3)).await.1,
    };
    println!(
        "a 300 KiB request: connection usable afterwards: {after_big}; a 5 MiB frame: {huge_reason:?}"
    );
    report.insert(
        "oversized".into(),
        json!({"usable_after_300_kib": after_big, "after_5_mib": huge_reason}),
    );

    // 4. A flood of requests without waiting for answers.
    let mut ws = client::websocket(a.common.server, None, "/v3.5/agent/rtm/ws").await?;
    client::request(
        &mut ws,
        "login",
        "l",
        json!({"token": "Bearer load-agent-1"}),
    )
    .await?;
    for k in 0..a.flood {
        ws.feed(Message::text(client::frame(
            "list_routing_statuses",
            &format!("f{k}"),
            json!({}),
        )))
        .await
        .map_err(err)?;
    }
    ws.flush().await.map_err(err)?;
    let (flood, flood_reason) = read_outcome(&mut ws, Duration::from_secs(5)).await;
    println!(
        "{} requests at once: {flood:?}, disconnect: {flood_reason:?}",
        a.flood
    );
    report.insert(
        "flood".into(),
        json!({"requests": a.flood, "responses": flood, "disconnect": flood_reason}),
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss();
    println!(
        "server RSS: before {before:?} KiB, with the idle sockets {with_idle:?} KiB, after everything {after:?} KiB"
    );
    report.insert("rss_kib_after".into(), json!(after));
    finish(&a.common, "hostile", Value::Object(report))
}

/// A fanout receiver: reading, or logged in and never reading again.
enum Receiver {
    Reading(mpsc::Sender<String>, JoinHandle<ConnOut>),
    Stalled(Box<Ws>),
}

/// The `t=<µs>` stamp at the start of a message text.
fn stamp_of(text: &str) -> Option<u64> {
    text.strip_prefix("t=")?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The CPU line of a run: the server's (per million deliveries) and the
/// harness's own, from setup to the end of the drain.
/// `unit` names what `n` counts ("deliveries", "logins"): seconds per
/// million of them are microseconds per one.
/// One server's rounds of `compare --repeat` as one row: the deliveries
/// summed, the rest the median of the rounds that did not fail (the lower
/// middle one for an even count); every round under `rounds`.
fn median_row(runs: Vec<Value>) -> Value {
    let ok: Vec<&Value> = runs.iter().filter(|v| v.get("error").is_none()).collect();
    if ok.is_empty() {
        return json!({"error": "every round failed", "rounds": runs});
    }
    let median = |f: &dyn Fn(&Value) -> Option<f64>| -> Option<f64> {
        let mut xs: Vec<f64> = ok.iter().filter_map(|v| f(v)).collect();
        xs.sort_by(f64::total_cmp);
        xs.get(xs.len().checked_sub(1)? / 2).copied()
    };
    let sum = |key: &str| ok.iter().filter_map(|v| v[key].as_u64()).sum::<u64>();
    json!({
        "scenario": ok[0]["scenario"],
        "target": ok[0]["target"],
        "rounds_ok": ok.len(),
        "delivered": sum("delivered"),
        "expected_deliveries": sum("expected_deliveries"),
        "deliveries_per_second": median(&|v| v["deliveries_per_second"].as_f64()),
        "latency": {
            "p50_ms": median(&|v| v["latency"]["p50_ms"].as_f64()),
            "p99_ms": median(&|v| v["latency"]["p99_ms"].as_f64()),
            "max_ms": median(&|v| v["latency"]["max_ms"].as_f64()),
        },
        "server_cpu_seconds": median(&|v| v["server_cpu_seconds"].as_f64()),
        "harness_cpu_seconds": median(&|v| v["harness_cpu_seconds"].as_f64()),
        "steal_seconds": median(&|v| v["steal_seconds"].as_f64()),
        "rounds": runs,
    })
}

fn print_cpu(server: Option<f64>, harness: Option<f64>, n: u64, unit: &str, stolen: Option<f64>) {
    if let Some(c) = server {
        print!(
            "server CPU {c:.2} s ({:.2} s per million {unit}); ",
            c / (n.max(1) as f64 / 1e6)
        );
    }
    if let Some(h) = harness {
        print!("harness CPU {h:.2} s; ");
    }
    match stolen {
        Some(s) => println!("stolen by the hypervisor {s:.2} s"),
        None => println!(),
    }
}

/// The stamp of a room relay's frame: `r=<room>;t=<µs>;…`.
fn relay_stamp(text: &str) -> Option<u64> {
    stamp_of(text.split_once(';')?.1)
}

/// The stamp of a Socket.IO relay's frame: `42["m","r=<room>;t=<µs>;…"]`,
/// an Engine.IO message carrying a Socket.IO event.
fn socketio_stamp(text: &str) -> Option<u64> {
    relay_stamp(text.strip_prefix("42[\"m\",\"")?)
}

/// What [`schedule`] offered.
pub(crate) struct Offered {
    /// Frames handed to a connection.
    pub offered: u64,
    /// Frames not sent because the connection's queue was full: the
    /// harness, not the server, falling behind.
    pub backlog: u64,
    /// How late the harness handed each frame to its connection, against
    /// the intended time the frame carries: part of every measured latency
    /// that is not the server's.
    pub lag: Latency,
}

impl Offered {
    /// The lag's line for a report.
    pub(crate) fn lag_line(&self) -> String {
        self.lag.line("harness send lag")
    }
}

/// The shortest step of the [`Pacer`]: at higher rates a wake-up sends
/// every frame that has come due since the last one.
const PACER_MIN_STEP: Duration = Duration::from_micros(50);

/// Wakes [`schedule`] at its send times, from an OS thread of its own.
///
/// tokio's timer has millisecond granularity: a `sleep` of 500 µs ends
/// 1–2 ms later, and each frame sent at that wake-up carries the delay
/// into its measured latency (the stamp is the intended time, as an
/// open-loop harness must stamp it). That put a floor of about 1.5 ms
/// under the p50 of even the bare baseline relay at 1,000 messages/s. A
/// thread sleeping to its kernel's timer slack (about 50 µs) and waking
/// the runtime through a `Notify` hands each frame over within tens of
/// microseconds of its time.
struct Pacer {
    tick: Arc<tokio::sync::Notify>,
    done: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pacer {
    /// Ticks every `step` (at least [`PACER_MIN_STEP`]) from `start` until
    /// dropped.
    fn start(start: Instant, step: Duration) -> io::Result<Pacer> {
        let step = step.max(PACER_MIN_STEP);
        let tick = Arc::new(tokio::sync::Notify::new());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("chatgate-load-pacer".into())
            .spawn({
                let (tick, done) = (tick.clone(), done.clone());
                move || {
                    set_own_timer_slack_ns(1);
                    let mut at = step;
                    while !done.load(Ordering::Acquire) {
                        let now = start.elapsed();
                        if now < at {
                            // Woken early by `Drop` (or spuriously): look
                            // at `done` again before sleeping on.
                            std::thread::park_timeout(at - now);
                            continue;
                        }
                        tick.notify_one();
                        // The next step after now: a late wake-up (a busy
                        // core) does not turn into a burst of ticks.
                        while at <= now {
                            at += step;
                        }
                    }
                }
            })?;
        Ok(Pacer {
            tick,
            done,
            thread: Some(thread),
        })
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Sets the calling thread's timer slack (the kernel's default is 50 µs,
/// by which it may delay a sleep's end to batch wake-ups). Through
/// `/proc/<tid>/timerslack_ns`, since the workspace forbids `unsafe` (and
/// with it `prctl`). Best effort: without it the pacer is 50 µs coarser.
fn set_own_timer_slack_ns(ns: u64) {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|t| t.to_string_lossy().into_owned()));
    if let Some(tid) = tid {
        let _ = std::fs::write(format!("/proc/{tid}/timerslack_ns"), ns.to_string());
    }
}

/// Offers `rate` frames per second for `duration` (open loop: the schedule
/// never waits for the server). `make(k, intended_us)` picks the sender and
/// builds the frame.
async fn schedule(
    epoch: Instant,
    rate: u64,
    duration: Duration,
    senders: &[mpsc::Sender<String>],
    delivered: &AtomicU64,
    mut make: impl FnMut(u64, u64) -> Option<(usize, String)>,
) -> io::Result<Offered> {
    let total = rate * duration.as_secs();
    let interval_ns = 1e9 / rate.max(1) as f64;
    // The schedule's zero, on the µs grid of the stamps: no frame is
    // handed over before the time it carries.
    let start_us = micros_since(epoch);
    let start = epoch + Duration::from_micros(start_us);
    let pacer = Pacer::start(start, Duration::from_nanos(interval_ns as u64))?;
    let mut out = Offered {
        offered: 0,
        backlog: 0,
        lag: Latency::default(),
    };
    let mut k = 0u64;
    let mut next_report = Duration::from_secs(1);
    let mut progress = crate::stats::Progress::new();
    while k < total {
        let elapsed = start.elapsed();
        let due = ((elapsed.as_nanos() as f64 / interval_ns) as u64 + 1).min(total);
        while k < due {
            let intended = start_us + (k as f64 * interval_ns / 1000.0) as u64;
            if let Some((i, f)) = make(k, intended) {
                match senders[i].try_send(f) {
                    Ok(()) => out.offered += 1,
                    Err(_) => out.backlog += 1,
                }
                out.lag
                    .record_us(micros_since(epoch).saturating_sub(intended));
            }
            k += 1;
        }
        if elapsed >= next_report {
            // The progress line: rate, p99 so far (approximate) and errors.
            let live = &crate::stats::LIVE;
            let secs = next_report.as_secs();
            let done = delivered.load(Ordering::Relaxed);
            let line = format!(
                "{} {secs:>4}s offered {:>9} delivered {done:>10} ({:>8.0}/s)  p99 so far {}  errors {}",
                crate::stats::bar(elapsed.as_secs_f64() / duration.as_secs_f64().max(1e-9), 20),
                out.offered,
                done as f64 / elapsed.as_secs_f64(),
                live.quantile_ms(0.99)
                    .map_or_else(|| "      -".to_owned(), |ms| format!("{ms:>7.1} ms")),
                live.errors()
            );
            progress.show(&line);
            next_report += Duration::from_secs(1);
        }
        if k < total {
            pacer.tick.notified().await;
        }
    }
    progress.done();
    drop(pacer);
    Ok(out)
}

/// A connection that only sends (what it is given on the returned queue),
/// counting acknowledgements and errors.
fn sender(
    ws: Ws,
    stop: watch::Receiver<bool>,
    epoch: Instant,
) -> (mpsc::Sender<String>, JoinHandle<ConnOut>) {
    let (tx, rx) = mpsc::channel(SENDER_QUEUE);
    let h = drive(ws, rx, stop, epoch, None, None, Arc::new(AtomicU64::new(0)));
    (tx, h)
}

/// The `resume_seq` a chatgate push starts with, if any.
pub(crate) fn resume_seq(text: &str) -> Option<u64> {
    let rest = text.strip_prefix("{\"resume_seq\":")?;
    let end = rest.find(',')?;
    rest[..end].parse().ok()
}

pub(crate) struct Setup {
    pub ws: Ws,
    pub latency_us: u64,
    /// The login response's payload.
    pub login: Value,
}

/// Connects `path` and logs in with `token`; measures from `intended`.
async fn connect_login(
    common: &Common,
    i: usize,
    path: &str,
    token: &str,
    epoch: Instant,
    intended_us: u64,
) -> io::Result<Setup> {
    let login = json!({"token": format!("Bearer {token}")});
    login_with(common, i, path, login, epoch, intended_us).await
}

pub(crate) async fn login_with(
    common: &Common,
    i: usize,
    path: &str,
    login: Value,
    epoch: Instant,
    intended_us: u64,
) -> io::Result<Setup> {
    let source = (common.sources > 1 || common.server.ip().is_loopback())
        .then(|| client::source_for(i, common.sources));
    let mut ws = client::websocket(common.server, source, path).await?;
    let login = client::request(&mut ws, "login", "login", login).await?;
    Ok(Setup {
        ws,
        latency_us: micros_since(epoch).saturating_sub(intended_us),
        login,
    })
}

pub(crate) fn finish(common: &Common, name: &str, result: Value) -> io::Result<()> {
    if let Some(path) = &common.json {
        std::fs::write(path, serde_json::to_vec_pretty(&result).map_err(err)?)?;
        println!("{name}: JSON written to {}", path.display());
    }
    if let Some(path) = &common.svg {
        match crate::plot::svg(name, &result) {
            Some(svg) => {
                std::fs::write(path, svg)?;
                println!("{name}: plot written to {}", path.display());
            }
            None => println!("{name}: no latency distribution to plot"),
        }
    }
    Ok(())
}

pub(crate) fn raise_nofile() {
    // The soft limit up to the hard one (the harness holds many sockets).
    #[cfg(target_os = "linux")]
    {
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits")
            && let Some(line) = limits.lines().find(|l| l.starts_with("Max open files"))
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 5 {
                eprintln!("open files: soft {} hard {}", f[3], f[4]);
            }
        }
    }
}

/// `idle`: N agents connect and log in at an offered rate, then hold.
pub async fn idle(a: IdleArgs) -> io::Result<()> {
    raise_nofile();
    let epoch = Instant::now();
    let rss_before = a.common.pid.and_then(rss_kib);
    let (stop_tx, stop_rx) = watch::channel(false);
    let delivered = Arc::new(AtomicU64::new(0));
    let sem = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let interval_us = 1e6 / a.rate.max(1) as f64;
    let lag: Arc<Mutex<Latency>> = Default::default();
    let cpu_window = CpuWindow::start(a.common.pid);
    let phase = Arc::new(crate::stats::Phase::default());
    let progress = PhaseProgress::start("connect+login", a.sessions, phase.clone());
    let start = Instant::now();
    let start_us = micros_since(epoch);
    let mut setups = Vec::with_capacity(a.sessions);
    for i in 0..a.sessions {
        let intended = (i as f64 * interval_us) as u64;
        let wait = Duration::from_micros(intended).saturating_sub(start.elapsed());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let permit = sem.clone().acquire_owned().await.map_err(err)?;
        let common = a.common.clone();
        let (stop, delivered) = (stop_rx.clone(), delivered.clone());
        let intended_us = start_us + intended;
        let mut login = json!({"token": format!("Bearer load-agent-{i}")});
        if a.subscribe != "all" {
            let names: Vec<&str> = a.subscribe.split(',').map(str::trim).collect();
            login["pushes"] = json!({ "3.5": names });
        }
        let (lag, phase) = (lag.clone(), phase.clone());
        setups.push(tokio::spawn(async move {
            // How late the harness itself starts this connection: part of
            // its login latency that is not the server's.
            let late = micros_since(epoch).saturating_sub(intended_us);
            lag.lock().unwrap().record_us(late);
            let r = login_with(&common, i, "/v3.5/agent/rtm/ws", login, epoch, intended_us).await;
            drop(permit);
            match &r {
                Ok(s) => phase.logged_in(s.latency_us),
                Err(_) => phase.failed(),
            }
            r.map(|s| {
                let (_tx, rx) = mpsc::channel(1);
                let h = drive(
                    s.ws,
                    rx,
                    stop,
                    epoch,
                    None,
                    Some(Duration::from_secs(15)),
                    delivered,
                );
                (s.latency_us, h, _tx)
            })
        }));
    }
    let mut login = Latency::default();
    let mut handles = Vec::new();
    let mut failed = BTreeMap::<String, u64>::new();
    for s in setups {
        match s.await.map_err(err)? {
            Ok((lat, h, tx)) => {
                login.record_us(lat);
                handles.push((h, tx));
            }
            Err(e) => *failed.entry(e.to_string()).or_default() += 1,
        }
    }
    let setup_secs = start.elapsed().as_secs_f64();
    let (login_cpu, login_harness_cpu) = cpu_window.used();
    let login_stolen = cpu_window.stolen();
    progress.finish().await;
    let up = handles.len();
    println!(
        "idle: {up}/{} sessions logged in in {setup_secs:.2} s ({:.0}/s offered {}/s)",
        a.sessions,
        up as f64 / setup_secs,
        a.rate
    );
    print!("login phase: ");
    print_cpu(
        login_cpu,
        login_harness_cpu,
        up as u64,
        "logins",
        login_stolen,
    );
    tokio::time::sleep(Duration::from_secs(a.hold)).await;
    let rss_after = a.common.pid.and_then(rss_kib);
    let _ = stop_tx.send(true);
    let mut closed_early = 0;
    for (h, _) in handles {
        if h.await.map_err(err)?.closed_early {
            closed_early += 1;
        }
    }
    println!("{}", login.line("connect+login"));
    let lag = std::mem::take(&mut *lag.lock().unwrap());
    println!("{}", lag.line("(harness start lag)"));
    let per_session = match (rss_before, rss_after) {
        (Some(b), Some(a)) if up > 0 => Some((a.saturating_sub(b)) as f64 / up as f64),
        _ => None,
    };
    if let Some(k) = per_session {
        println!(
            "server RSS {} KiB -> {} KiB: {k:.2} KiB per session",
            rss_before.unwrap_or(0),
            rss_after.unwrap_or(0)
        );
    }
    println!("failed connects: {failed:?}; unexpected closes: {closed_early}");
    finish(
        &a.common,
        "idle",
        json!({
            "scenario": "idle",
            "sessions_offered": a.sessions,
            "sessions_up": up,
            "offered_rate": a.rate,
            "achieved_rate": up as f64 / setup_secs,
            "login": login.summary(),
            "login_distribution": login.distribution(),
            "harness_start_lag": lag.summary(),
            "login_phase_server_cpu_seconds": login_cpu,
            "login_phase_harness_cpu_seconds": login_harness_cpu,
            "login_phase_steal_seconds": login_stolen,
            "server_rss_kib_before": rss_before,
            "server_rss_kib_after": rss_after,
            "kib_per_session": per_session,
            "failed": failed,
            "unexpected_closes": closed_early,
        }),
    )
}

/// `chat`: customers start chats routed to agents, then both sides send
/// messages at a fixed offered rate.
pub async fn chat(a: ChatArgs) -> io::Result<()> {
    let result = chat_any(&a).await?;
    finish(&a.common, "chat", result)
}

/// The chat shape against the target `a.target` names.
async fn chat_any(a: &ChatArgs) -> io::Result<Value> {
    match a.target.as_str() {
        "chatgate" => chat_run(a).await,
        "raw" => chat_relay_run(a, false).await,
        "socketio" => chat_relay_run(a, true).await,
        other => Err(err(format!(
            "--target must be chatgate, raw or socketio, not {other}"
        ))),
    }
}

/// The chat shape through a room-relay server: each of `customers` pairs is
/// two connections, each joined to its own room, sending to the other's
/// room (one delivery per message, as a chat event reaches the other side).
async fn chat_relay_run(a: &ChatArgs, socketio: bool) -> io::Result<Value> {
    raise_nofile();
    let epoch = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let delivered = Arc::new(AtomicU64::new(0));
    let cpu_window = CpuWindow::start(a.common.pid);
    let measure: Measure = if socketio {
        Arc::new(|text: &str, _now: u64| socketio_stamp(text))
    } else {
        Arc::new(|text: &str, _now: u64| relay_stamp(text))
    };
    let sem = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut setups = Vec::new();
    // Connection 2p is pair p's customer (room `c<p>`), 2p+1 its agent
    // (room `a<p>`).
    for i in 0..a.customers * 2 {
        let permit = sem.clone().acquire_owned().await.map_err(err)?;
        let common = a.common.clone();
        let (stop, delivered, measure) = (stop_rx.clone(), delivered.clone(), measure.clone());
        setups.push(tokio::spawn(async move {
            let room = format!("{}{}", if i % 2 == 0 { 'c' } else { 'a' }, i / 2);
            let source = Some(client::source_for(i, common.sources));
            let r: io::Result<_> = async {
                let ws = if socketio {
                    client::socketio(common.server, source, &room).await?
                } else {
                    client::websocket(common.server, source, &format!("/?room={room}")).await?
                };
                let (tx, rx) = mpsc::channel(SENDER_QUEUE);
                Ok((
                    tx,
                    drive(ws, rx, stop, epoch, Some(measure), None, delivered),
                ))
            }
            .await;
            drop(permit);
            r
        }));
    }
    let mut conns = Vec::new();
    for s in setups {
        conns.push(s.await.map_err(err)??);
    }
    let pairs = a.customers;
    println!("chat ({}): {pairs} pairs up", a.target);
    let senders: Vec<mpsc::Sender<String>> = conns.iter().map(|(tx, _)| tx.clone()).collect();
    let started = Instant::now();
    let sent = schedule(
        epoch,
        a.rate,
        Duration::from_secs(a.duration),
        &senders,
        &delivered,
        |k, intended| {
            // Even k: a customer writes to its agent; odd k: the agent
            // answers. Pairs take turns.
            let pair = ((k / 2) as usize) % pairs.max(1);
            let (from, to) = if k % 2 == 0 {
                (2 * pair, format!("a{pair}"))
            } else {
                (2 * pair + 1, format!("c{pair}"))
            };
            let body = format!("r={to};t={intended}");
            let f = if socketio {
                format!("42[\"m\",\"{body}\"]")
            } else {
                body
            };
            Some((from, f))
        },
    )
    .await?;
    let (offered, backlog) = (sent.offered, sent.backlog);
    let secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(DRAIN).await;
    let _ = stop_tx.send(true);
    let mut all = ConnOut::default();
    let mut closed = 0u64;
    for (_, h) in conns {
        let o = h.await.map_err(err)?;
        all.latency.add(&o.latency);
        all.deliveries += o.deliveries;
        closed += u64::from(o.closed_early);
    }
    let (cpu, harness_cpu) = cpu_window.used();
    let stolen = cpu_window.stolen();
    println!("{}", all.latency.line("send -> push (other side)"));
    println!("{}", sent.lag_line());
    println!(
        "offered {offered} in {secs:.1} s ({:.0}/s), delivered {} ({:.0}/s), lost {}, client backlog {backlog}, connections closed early {closed}",
        offered as f64 / secs,
        all.deliveries,
        all.deliveries as f64 / secs,
        offered.saturating_sub(all.deliveries),
    );
    print_cpu(cpu, harness_cpu, all.deliveries, "deliveries", stolen);
    Ok(json!({
        "scenario": "chat",
        "target": a.target,
        "pairs": pairs,
        "offered_rate": a.rate,
        "offered": offered,
        "expected_deliveries": offered,
        "delivered": all.deliveries,
        "deliveries_per_second": all.deliveries as f64 / secs,
        "lost": offered.saturating_sub(all.deliveries),
        "client_backlog": backlog,
        "send_lag": sent.lag.summary(),
        "latency": all.latency.summary(),
        "latency_distribution": all.latency.distribution(),
        "server_cpu_seconds": cpu,
            "harness_cpu_seconds": harness_cpu,
            "steal_seconds": stolen,
    }))
}

/// The chat shape through chatgate: customers start chats routed to agents,
/// both sides send events.
async fn chat_run(a: &ChatArgs) -> io::Result<Value> {
    raise_nofile();
    let epoch = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let delivered = Arc::new(AtomicU64::new(0));
    let cpu_window = CpuWindow::start(a.common.pid);
    // Customer id -> when its start_chat was sent; incoming_chat latency.
    let started: Arc<Mutex<BTreeMap<String, u64>>> = Default::default();
    let incoming_chat: Arc<Mutex<Latency>> = Default::default();

    // Agents.
    let mut agents = Vec::new();
    for i in 0..a.agents {
        let s = connect_login(
            &a.common,
            i,
            "/v3.5/agent/rtm/ws",
            &format!("load-agent-{i}"),
            epoch,
            micros_since(epoch),
        )
        .await?;
        let chats: Arc<Mutex<Vec<String>>> = Default::default();
        let (c, st, ic) = (chats.clone(), started.clone(), incoming_chat.clone());
        let me = format!("agent{i}@load.test");
        let measure: Measure = Arc::new(move |text: &str, _now: u64| {
            if text.contains("\"incoming_chat\"") {
                let v: Value = serde_json::from_str(text).ok()?;
                if v["action"] != "incoming_chat" {
                    return None;
                }
                // Every agent of the group hears of a new chat; only the
                // one it was routed to measures and answers it.
                let chat = &v["payload"]["chat"];
                let mine = chat["users"]
                    .as_array()?
                    .iter()
                    .any(|u| u["id"] == me.as_str() && u["present"] == true);
                if !mine {
                    return None;
                }
                // Only chats of this run's customers (a server that ran
                // before may hand over older, queued chats at login).
                let t = chat["users"].as_array()?.iter().find_map(|u| {
                    (u["type"] == "customer")
                        .then(|| st.lock().unwrap().get(u["id"].as_str()?).copied())
                        .flatten()
                });
                if let Some(t) = t {
                    ic.lock()
                        .unwrap()
                        .record_us(micros_since(epoch).saturating_sub(t));
                    if let Some(id) = chat["id"].as_str() {
                        c.lock().unwrap().push(id.to_owned());
                    }
                }
                return None;
            }
            if !text.contains("\"incoming_event\"") {
                return None;
            }
            let v: Value = serde_json::from_str(text).ok()?;
            let e = &v["payload"]["event"];
            let author = e["author_id"].as_str()?;
            if author.ends_with("@load.test") {
                return None;
            }
            stamp_of(e["text"].as_str()?)
        });
        let (tx, rx) = mpsc::channel(SENDER_QUEUE);
        let h = drive(
            s.ws,
            rx,
            stop_rx.clone(),
            epoch,
            Some(measure),
            None,
            delivered.clone(),
        );
        agents.push((tx, h, chats));
    }
    println!("chat: {} agents logged in", agents.len());

    // Customers: token, RTM login, start_chat.
    let sem = Arc::new(Semaphore::new(64));
    let mut setups = Vec::new();
    for i in 0..a.customers {
        let permit = sem.clone().acquire_owned().await.map_err(err)?;
        let (common, org, st) = (a.common.clone(), a.org.clone(), started.clone());
        let (stop, delivered) = (stop_rx.clone(), delivered.clone());
        setups.push(tokio::spawn(async move {
            let r: io::Result<_> = async {
                let (code, body) = client::post_json(
                    common.server,
                    "/customer/token",
                    None,
                    &json!({"organization_id": org}),
                )
                .await?;
                if code != 200 {
                    return Err(err(format!("customer token: {code} {body}")));
                }
                let token = body["access_token"].as_str().unwrap_or_default().to_owned();
                let id = body["entity_id"].as_str().unwrap_or_default().to_owned();
                let source = Some(client::source_for(i + 1, common.sources));
                let mut ws = client::customer_login(common.server, source, &org, &token).await?;
                st.lock().unwrap().insert(id, micros_since(epoch));
                let r = client::request(
                    &mut ws,
                    "start_chat",
                    "start",
                    json!({"chat": {"thread": {"events": [{"type": "message", "text": "hello"}]}}}),
                )
                .await?;
                let chat_id = r["chat_id"].as_str().unwrap_or_default().to_owned();
                let measure: Measure = Arc::new(move |text: &str, _now: u64| {
                    if !text.contains("\"incoming_event\"") {
                        return None;
                    }
                    let v: Value = serde_json::from_str(text).ok()?;
                    let e = &v["payload"]["event"];
                    if !e["author_id"].as_str()?.ends_with("@load.test") {
                        return None;
                    }
                    stamp_of(e["text"].as_str()?)
                });
                let (tx, rx) = mpsc::channel(SENDER_QUEUE);
                let h = drive(ws, rx, stop, epoch, Some(measure), None, delivered);
                Ok((tx, h, chat_id))
            }
            .await;
            drop(permit);
            r
        }));
    }
    let mut customers = Vec::new();
    let mut setup_failures = BTreeMap::<String, u64>::new();
    for s in setups {
        match s.await.map_err(err)? {
            Ok(c) => customers.push(c),
            Err(e) => *setup_failures.entry(e.to_string()).or_default() += 1,
        }
    }
    // Let the last incoming_chat pushes land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    println!(
        "chat: {} customers chatting ({} failed)",
        customers.len(),
        setup_failures.values().sum::<u64>()
    );
    if customers.is_empty() {
        return Err(err(format!(
            "no customer could start a chat: {setup_failures:?}"
        )));
    }

    // Traffic: even k from customers, odd k from agents (their own chats,
    // round robin).
    let agent_chats: Vec<Vec<String>> = agents
        .iter()
        .map(|(_, _, c)| c.lock().unwrap().clone())
        .collect();
    let busy: Vec<usize> = (0..agents.len())
        .filter(|i| !agent_chats[*i].is_empty())
        .collect();
    let mut senders: Vec<mpsc::Sender<String>> =
        customers.iter().map(|(tx, _, _)| tx.clone()).collect();
    let agent_base = senders.len();
    senders.extend(agents.iter().map(|(tx, _, _)| tx.clone()));
    let mut turn = vec![0usize; agents.len()];
    let (nc, nb) = (customers.len(), busy.len());
    let chat_ids: Vec<String> = customers.iter().map(|(_, _, c)| c.clone()).collect();
    let metrics_before = match a.common.metrics {
        Some(addr) => Some(server_metrics::scrape(addr).await?),
        None => None,
    };
    let started_traffic = Instant::now();
    let sent = schedule(
        epoch,
        a.rate,
        Duration::from_secs(a.duration),
        &senders,
        &delivered,
        |k, intended| {
            let text = format!("t={intended}");
            if k % 2 == 0 || nb == 0 {
                let c = ((k / 2) as usize) % nc;
                let f = client::frame(
                    "send_event",
                    &format!("m{k}"),
                    json!({"chat_id": chat_ids[c], "event": {"type": "message", "text": text}}),
                );
                Some((c, f))
            } else {
                let ai = busy[((k / 2) as usize) % nb];
                let chats = &agent_chats[ai];
                let chat = &chats[turn[ai] % chats.len()];
                turn[ai] += 1;
                let f = client::frame(
                    "send_event",
                    &format!("m{k}"),
                    json!({"chat_id": chat, "event": {"type": "message", "text": text}}),
                );
                Some((agent_base + ai, f))
            }
        },
    )
    .await?;
    let (offered, backlog) = (sent.offered, sent.backlog);
    let traffic_secs = started_traffic.elapsed().as_secs_f64();
    tokio::time::sleep(DRAIN).await;
    let server = match (a.common.metrics, &metrics_before) {
        (Some(addr), Some(before)) => Some(server_metrics::report(
            before,
            &server_metrics::scrape(addr).await?,
        )),
        _ => None,
    };
    // Leave the server as we found it: each customer ends its chat, so the
    // agents' capacity is free for the next run (a `ramp` step, say). These
    // requests (`end…`) are not traffic: `drive` does not count them.
    for (i, (tx, _, chat)) in customers.iter().enumerate() {
        let f = client::frame(
            "deactivate_chat",
            &format!("{END_PREFIX}{i}"),
            json!({ "id": chat }),
        );
        let _ = tx.send(f).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(true);
    let mut all = ConnOut::default();
    let n_customers = customers.len();
    let handles = customers
        .into_iter()
        .map(|(_, h, _)| h)
        .chain(agents.into_iter().map(|(_, h, _)| h));
    let (mut to_customers, mut to_agents, mut closed) = (0u64, 0u64, 0u64);
    for (i, h) in handles.enumerate() {
        let o = h.await.map_err(err)?;
        if i < n_customers {
            to_customers += o.deliveries;
        } else {
            to_agents += o.deliveries;
        }
        closed += u64::from(o.closed_early);
        all.latency.add(&o.latency);
        all.deliveries += o.deliveries;
        all.acks += o.acks;
        for (k, v) in o.errors {
            *all.errors.entry(k).or_default() += v;
        }
        all.closed_early |= o.closed_early;
    }
    let (cpu, harness_cpu) = cpu_window.used();
    let stolen = cpu_window.stolen();
    let ic = incoming_chat.lock().unwrap().clone();
    let lost = all.acks.saturating_sub(all.deliveries);
    println!("{}", ic.line("incoming_chat after start"));
    println!(
        "delivered to customers {to_customers}, to agents {to_agents}; sessions closed early {closed}"
    );
    println!("{}", all.latency.line("send -> push (other side)"));
    println!("{}", sent.lag_line());
    println!(
        "offered {offered} in {traffic_secs:.1} s ({:.0}/s), acknowledged {}, delivered {} ({:.0}/s), lost {lost}, client backlog {backlog}, errors {:?}",
        offered as f64 / traffic_secs,
        all.acks,
        all.deliveries,
        all.deliveries as f64 / traffic_secs,
        all.errors
    );
    print_cpu(cpu, harness_cpu, all.deliveries, "deliveries", stolen);
    if let Some((line, _)) = &server {
        println!("{line}");
    }
    Ok(json!({
            "scenario": "chat",
            "target": "chatgate",
            "server_metrics": server.map(|(_, v)| v),
            "agents": a.agents,
            "customers": nc,
            "setup_failures": setup_failures,
            "offered_rate": a.rate,
            "offered": offered,
            "expected_deliveries": offered,
            "acknowledged": all.acks,
            "delivered": all.deliveries,
            "deliveries_per_second": all.deliveries as f64 / traffic_secs,
            "lost": lost,
            "client_backlog": backlog,
        "send_lag": sent.lag.summary(),
            "errors": all.errors,
            "incoming_chat": ic.summary(),
            "latency": all.latency.summary(),
            "latency_distribution": all.latency.distribution(),
            "server_cpu_seconds": cpu,
            "harness_cpu_seconds": harness_cpu,
            "steal_seconds": stolen,
    }))
}

/// `fanout`: one sender, N receivers.
pub async fn fanout(a: FanoutArgs) -> io::Result<()> {
    let result = fanout_run(&a).await?;
    finish(&a.common, "fanout", result)
}

/// `ramp`: `fanout` at rising rates (each step its own run with fresh
/// connections) until p99 passes the bound or something is lost; reports
/// the last rate that held.
pub async fn ramp(a: RampArgs) -> io::Result<()> {
    let chat = match a.shape.as_str() {
        "fanout" => false,
        "chat" => true,
        other => return Err(err(format!("--shape must be fanout or chat, not {other}"))),
    };
    let mut steps = Vec::new();
    let mut held: Option<u64> = None;
    let mut held_deliveries = 0.0;
    let mut rate = a.start;
    for _ in 0..a.max_steps {
        let mut f = a.fanout.clone();
        f.rate = rate;
        f.common.json = None;
        f.common.svg = None;
        let (r, shape) = if chat {
            let c = ChatArgs {
                common: f.common.clone(),
                agents: a.agents,
                customers: a.customers,
                rate,
                duration: f.duration,
                org: "load".into(),
                target: f.target.clone(),
            };
            (chat_any(&c).await?, format!("{} chats", a.customers))
        } else {
            (fanout_run(&f).await?, format!("{} receivers", f.receivers))
        };
        let p99 = r["latency"]["p99_ms"].as_f64().unwrap_or(f64::INFINITY);
        let complete = r["delivered"] == r["expected_deliveries"];
        println!(
            "ramp: {rate} msg/s, {shape}: p99 {p99:.2} ms, {} of {} delivered",
            r["delivered"], r["expected_deliveries"]
        );
        let per_second = r["deliveries_per_second"].as_f64().unwrap_or(0.0);
        steps.push(json!({"rate": rate, "p99_ms": p99, "complete": complete, "result": r}));
        if p99 > a.bound_ms || !complete {
            break;
        }
        held = Some(rate);
        held_deliveries = per_second;
        rate += a.step;
    }
    match held {
        Some(r) => println!(
            "ramp: the last rate that held p99 <= {} ms with nothing lost: {r} msg/s ({held_deliveries:.0} deliveries/s)",
            a.bound_ms,
        ),
        None => println!("ramp: even {} msg/s passed the bound", a.start),
    }
    finish(
        &a.fanout.common,
        "ramp",
        json!({"scenario": "ramp", "shape": a.shape, "bound_ms": a.bound_ms, "held_rate": held, "steps": steps}),
    )
}

/// The harness's stamp in an `incoming_multicast` push.
#[derive(serde::Deserialize)]
struct Stamp {
    t: u64,
    seq: Option<u64>,
}

/// Reads the stamp of an `incoming_multicast` push. Only the `content`
/// object is parsed (into a typed struct, unknown fields skipped): at a
/// million pushes a second, parsing the whole frame was a third of the
/// harness's core, while a relay's frame costs it a string split, so
/// chatgate's fan-out latency was partly the harness's own.
fn multicast_stamp(text: &str) -> Option<Stamp> {
    use std::sync::LazyLock;
    static KIND: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"\"incoming_multicast\""));
    static CONTENT: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"\"content\":"));
    let bytes = text.as_bytes();
    KIND.find(bytes)?;
    let at = CONTENT.find(bytes)? + CONTENT.needle().len();
    serde_json::Deserializer::from_str(&text[at..])
        .into_iter::<Stamp>()
        .next()?
        .ok()
}

/// What `fanout` talks to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// chatgate's RTM: `multicast` to every agent.
    Chatgate,
    /// A room-relay server on plain WebSocket frames.
    Raw,
    /// A room-relay server on Socket.IO (Engine.IO v4 over a WebSocket).
    SocketIo,
}

async fn fanout_run(a: &FanoutArgs) -> io::Result<Value> {
    raise_nofile();
    let target = match a.target.as_str() {
        "chatgate" => Target::Chatgate,
        "raw" => Target::Raw,
        "socketio" => Target::SocketIo,
        other => {
            return Err(err(format!(
                "--target must be chatgate, raw or socketio, not {other}"
            )));
        }
    };
    let raw = target != Target::Chatgate;
    let via_web = match a.send_via.as_str() {
        "rtm" => false,
        "web" if !raw => true,
        "web" => return Err(err("--send-via web needs --target chatgate")),
        other => return Err(err(format!("--send-via must be rtm or web, not {other}"))),
    };
    let epoch = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let delivered = Arc::new(AtomicU64::new(0));
    let cpu_window = CpuWindow::start(a.common.pid);
    let measure: Measure = if target == Target::SocketIo {
        Arc::new(|text: &str, _now: u64| socketio_stamp(text))
    } else if raw {
        Arc::new(|text: &str, _now: u64| relay_stamp(text))
    } else {
        Arc::new(|text: &str, _now: u64| multicast_stamp(text).map(|c| c.t))
    };
    // Latency by the second the message was meant to be sent in, so a
    // disturbance (a stalled reader being cut off, say) shows when it hit.
    let timeline: Arc<Mutex<Vec<Latency>>> = Default::default();
    let measure: Measure = {
        let (inner, tl) = (measure, timeline.clone());
        Arc::new(move |text: &str, now: u64| {
            let t = inner(text, now)?;
            let sec = (t / 1_000_000) as usize;
            let mut v = tl.lock().unwrap();
            if v.len() <= sec {
                v.resize_with(sec + 1, Default::default);
            }
            v[sec].record_us(now.saturating_sub(t));
            Some(t)
        })
    };
    let sem = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let stalled = a.stalled.min(a.receivers);
    let pad = "x".repeat(a.pad);
    let mut setups = Vec::new();
    for i in 0..a.receivers {
        let permit = sem.clone().acquire_owned().await.map_err(err)?;
        let common = a.common.clone();
        let (stop, delivered, measure) = (stop_rx.clone(), delivered.clone(), measure.clone());
        setups.push(tokio::spawn(async move {
            let r: io::Result<_> = async {
                let ws = if target == Target::SocketIo {
                    let source = Some(client::source_for(i, common.sources));
                    client::socketio(common.server, source, "r1").await?
                } else if raw {
                    let source = Some(client::source_for(i, common.sources));
                    client::websocket(common.server, source, "/?room=r1").await?
                } else {
                    connect_login(
                        &common,
                        i,
                        "/v3.5/agent/rtm/ws",
                        &format!("load-agent-{i}"),
                        epoch,
                        0,
                    )
                    .await?
                    .ws
                };
                if i < stalled {
                    // Logged in, never read again.
                    return Ok(Receiver::Stalled(Box::new(ws)));
                }
                let (tx, rx) = mpsc::channel(1);
                Ok(Receiver::Reading(
                    tx,
                    drive(ws, rx, stop, epoch, Some(measure), None, delivered),
                ))
            }
            .await;
            drop(permit);
            r
        }));
    }
    let mut receivers = Vec::new();
    let mut stalled_ws = Vec::new();
    for s in setups {
        match s.await.map_err(err)?? {
            Receiver::Reading(tx, h) => receivers.push((tx, h)),
            Receiver::Stalled(ws) => stalled_ws.push(ws),
        }
    }
    // The sender.
    let (tx, sender) = if via_web {
        web::sender(
            a.common.server,
            "load-owner",
            stop_rx.clone(),
            epoch,
            SENDER_QUEUE,
        )
    } else {
        let sender_ws = if target == Target::SocketIo {
            client::socketio(a.common.server, None, "pub").await?
        } else if raw {
            client::websocket(a.common.server, None, "/?room=pub").await?
        } else {
            connect_login(&a.common, 0, "/v3.5/agent/rtm/ws", "load-owner", epoch, 0)
                .await?
                .ws
        };
        sender(sender_ws, stop_rx.clone(), epoch)
    };
    println!(
        "fanout ({}, sending over {}): {} receivers up",
        a.target,
        if via_web {
            "the Web API"
        } else {
            "a WebSocket"
        },
        receivers.len()
    );
    let metrics_before = match (a.common.metrics, raw) {
        (Some(addr), false) => Some(server_metrics::scrape(addr).await?),
        _ => None,
    };
    let started = Instant::now();
    let sent = schedule(
        epoch,
        a.rate,
        Duration::from_secs(a.duration),
        std::slice::from_ref(&tx),
        &delivered,
        |k, intended| {
            let f = if target == Target::SocketIo {
                format!("42[\"m\",\"r=r1;t={intended};{pad}\"]")
            } else if raw {
                format!("r=r1;t={intended};{pad}")
            } else {
                client::frame(
                    "multicast",
                    &format!("m{k}"),
                    json!({"recipients": {"agents": {"all": true}}, "content": {"t": intended, "pad": pad}}),
                )
            };
            Some((0, f))
        },
    )
    .await?;
    let (offered, backlog) = (sent.offered, sent.backlog);
    let secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(DRAIN).await;
    let server = match (a.common.metrics, &metrics_before) {
        (Some(addr), Some(before)) => Some(server_metrics::report(
            before,
            &server_metrics::scrape(addr).await?,
        )),
        _ => None,
    };
    let _ = stop_tx.send(true);
    let sender_out = sender.await.map_err(err)?;
    let mut all = ConnOut::default();
    for (_, h) in receivers {
        let o = h.await.map_err(err)?;
        all.latency.add(&o.latency);
        all.deliveries += o.deliveries;
    }
    // What the stalled readers got in the end: read through their backlog
    // to the server's disconnect (or give up after 10 s each, in parallel).
    // A reader that stopped reading may never be told why: the reason frame
    // waits behind what its buffers hold, and the server gives it a bounded
    // time (`close_drain`) before it closes the socket.
    let checks: Vec<_> = stalled_ws
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let read = async {
                    while let Some(Ok(m)) = ws.next().await {
                        if let Message::Text(t) = m
                            && t.as_str().contains("\"agent_disconnected\"")
                        {
                            return Some(t.as_str().to_owned());
                        }
                    }
                    None
                };
                match tokio::time::timeout(Duration::from_secs(10), read).await {
                    Ok(Some(t)) => serde_json::from_str::<Value>(&t)
                        .ok()
                        .map(|v| {
                            let p = &v["payload"];
                            format!(
                                "{} {}",
                                p["reason"].as_str().unwrap_or("?"),
                                p["data"]["detail"].as_str().unwrap_or("")
                            )
                        })
                        .unwrap_or_default(),
                    Ok(None) => "closed without a reason".to_owned(),
                    Err(_) => "not disconnected".to_owned(),
                }
            })
        })
        .collect();
    let mut cut_off = BTreeMap::<String, u64>::new();
    for c in checks {
        *cut_off.entry(c.await.map_err(err)?).or_default() += 1;
    }
    if stalled > 0 {
        println!("stalled receivers: {cut_off:?}");
    }
    let n = (a.receivers - stalled) as u64;
    let expected = offered * n;
    let (cpu, harness_cpu) = cpu_window.used();
    let stolen = cpu_window.stolen();
    println!("{}", all.latency.line("send -> delivery"));
    if via_web {
        println!("{}", sender_out.latency.line("Web request round trip"));
    }
    println!("{}", sent.lag_line());
    let by_second: Vec<Value> = timeline
        .lock()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, l)| l.count() > 0)
        .map(|(s, l)| {
            json!({
                "second": s,
                "count": l.count(),
                "p50_ms": l.quantile_us(0.5) as f64 / 1e3,
                "p99_ms": l.quantile_us(0.99) as f64 / 1e3,
            })
        })
        .collect();
    println!(
        "p99 by second of sending (ms): {}",
        by_second
            .iter()
            .map(|v| format!("{:.1}", v["p99_ms"].as_f64().unwrap_or(0.0)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "offered {offered} messages ({:.0}/s) x {n} receivers: delivered {} of {expected} ({:.0} deliveries/s), client backlog {backlog}, sender errors {:?}",
        offered as f64 / secs,
        all.deliveries,
        all.deliveries as f64 / secs,
        sender_out.errors
    );
    print_cpu(cpu, harness_cpu, all.deliveries, "deliveries", stolen);
    if let Some((line, _)) = &server {
        println!("{line}");
    }
    Ok(json!({
            "scenario": "fanout",
            "target": a.target,
            "server_metrics": server.map(|(_, v)| v),
            "receivers": n,
            "stalled": stalled,
            "stalled_outcome": cut_off,
            "pad_bytes": a.pad,
            "offered_rate": a.rate,
            "offered": offered,
            "expected_deliveries": expected,
            "delivered": all.deliveries,
            "deliveries_per_second": all.deliveries as f64 / secs,
            "client_backlog": backlog,
        "send_lag": sent.lag.summary(),
            "sender_errors": sender_out.errors,
            "send_via": a.send_via,
            "web_requests": via_web.then(|| json!({
                "answered": sender_out.acks,
                "round_trip": sender_out.latency.summary(),
            })),
            "latency": all.latency.summary(),
            "latency_distribution": all.latency.distribution(),
            "latency_by_second": by_second,
            "server_cpu_seconds": cpu,
            "harness_cpu_seconds": harness_cpu,
            "steal_seconds": stolen,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_schedule_offers_every_frame_once_never_before_its_time() {
        let epoch = Instant::now();
        let (tx0, mut rx0) = mpsc::channel(SENDER_QUEUE);
        let (tx1, mut rx1) = mpsc::channel(SENDER_QUEUE);
        let delivered = AtomicU64::new(0);
        let mut early = 0;
        let mut stamps = Vec::new();
        let senders = [tx0, tx1];
        let run = schedule(
            epoch,
            2000,
            Duration::from_secs(1),
            &senders,
            &delivered,
            |k, t| {
                if micros_since(epoch) < t {
                    early += 1;
                }
                stamps.push(t);
                Some(((k % 2) as usize, format!("{k};{t}")))
            },
        );
        // A pacer that stopped ticking would hang the schedule: fail instead.
        let sent = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("the schedule ended")
            .expect("schedule");
        assert_eq!((sent.offered, sent.backlog), (2000, 0));
        assert_eq!(sent.lag.count(), 2000, "every frame's lag is recorded");
        assert_eq!(early, 0, "a frame handed over before its intended time");
        // 500 µs apart, in order.
        for w in stamps.windows(2) {
            assert_eq!(w[1] - w[0], 500, "{w:?}");
        }
        // Each connection got its half, in order.
        for (rx, first) in [(&mut rx0, 0u64), (&mut rx1, 1)] {
            let mut k = first;
            while let Ok(f) = rx.try_recv() {
                assert!(f.starts_with(&format!("{k};")), "{f} (expected frame {k})");
                k += 2;
            }
            assert_eq!(k, 2000 + first);
        }
    }

    #[test]
    fn repeated_rounds_sum_deliveries_and_take_medians_of_the_rest() {
        let run = |p99: f64, steal: f64| {
            json!({"scenario": "chat", "target": "chatgate", "delivered": 10, "expected_deliveries": 10,
                   "deliveries_per_second": 100.0, "latency": {"p50_ms": 1.0, "p99_ms": p99, "max_ms": p99 * 2.0},
                   "server_cpu_seconds": 1.0, "harness_cpu_seconds": 0.5, "steal_seconds": steal})
        };
        let row = median_row(vec![
            run(30.0, 3.0),
            run(10.0, 0.1),
            json!({"error": "boom"}),
            run(20.0, 0.5),
        ]);
        assert_eq!(row["rounds"].as_array().unwrap().len(), 4);
        assert_eq!(row["rounds_ok"], 3);
        assert_eq!(
            (row["delivered"].clone(), row["expected_deliveries"].clone()),
            (json!(30), json!(30))
        );
        assert_eq!(row["latency"]["p99_ms"], 20.0);
        assert_eq!(row["latency"]["max_ms"], 40.0);
        assert_eq!(row["steal_seconds"], 0.5);
        // An even count takes the lower middle one.
        let row = median_row(vec![run(30.0, 0.0), run(10.0, 0.0)]);
        assert_eq!(row["latency"]["p99_ms"], 10.0);
        let row = median_row(vec![json!({"error": "a"}), json!({"error": "b"})]);
        assert!(row["error"].is_string());
    }

    #[test]
    fn stamps_are_read_from_the_text_start() {
        assert_eq!(stamp_of("t=12345"), Some(12345));
        assert_eq!(stamp_of("t=42;rest"), Some(42));
        assert_eq!(stamp_of("hello"), None);
        assert_eq!(stamp_of("t=x"), None);
        assert_eq!(relay_stamp("r=r1;t=77;xx"), Some(77));
        assert_eq!(socketio_stamp("42[\"m\",\"r=r1;t=78;\"]"), Some(78));
        assert_eq!(socketio_stamp("r=r1;t=78;"), None);
    }

    #[test]
    fn multicast_stamps_are_read_from_the_content_only() {
        let push = r#"{"action":"incoming_multicast","type":"push","payload":{"author_id":"a1","content":{"pad":"x,\"t\":9","seq":7,"t":123}}}"#;
        let s = multicast_stamp(push).expect("a stamp");
        assert_eq!((s.t, s.seq), (123, Some(7)));
        // Another push with a `content` is not a delivery.
        let other = r#"{"action":"incoming_event","type":"push","payload":{"content":{"t":1}}}"#;
        assert!(multicast_stamp(other).is_none());
        // A multicast without the harness's stamp is not one either.
        let foreign =
            r#"{"action":"incoming_multicast","type":"push","payload":{"content":{"hello":1}}}"#;
        assert!(multicast_stamp(foreign).is_none());
    }
}
