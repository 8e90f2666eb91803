//! `soak`: a long run whose memory and latency must stay flat.
//!
//! Agents churn: each logs in, stays a few seconds, drops its connection and
//! comes back — every other time with exact resume (its cursor), otherwise
//! as a stock client. Customers from a fixed pool visit again and again: a
//! token the first time (kept after, as a widget does), an RTM login, `start_chat` the first time and
//! `resume_chat` after, a few messages, a transfer to another agent by the
//! owner over the Web API, `deactivate_chat`, and the connection closes.
//! Every `--report-every` seconds one line: visits, request latency, errors
//! and the server's memory; the JSON holds every interval so a trend shows.

use crate::SoakArgs;
use crate::client;
use crate::scenarios::{
    ConnOut, Measure, drive, err, finish, login_with, raise_nofile, resume_seq,
};
use crate::stats::{Latency, micros_since, rss_kib};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// What happened during one report interval.
#[derive(Default)]
struct Interval {
    start: Latency,
    send: Latency,
    transfer: Latency,
    deactivate: Latency,
    visits: u64,
    agent_logins: u64,
    resumed: u64,
    resync_needed: u64,
    unexpected_closes: u64,
    errors: BTreeMap<String, u64>,
}

impl Interval {
    fn error(&mut self, e: &io::Error) {
        // Keep the error's kind, not its ids: `send_event failed: {...}`.
        let text = e.to_string();
        let kind = serde_json::from_str::<Value>(text.split_once(": ").map_or("", |(_, j)| j))
            .ok()
            .and_then(|v| {
                let t = v["error"]["type"].as_str()?;
                // Ids (between backticks) left out, so errors group.
                let m: String = v["error"]["message"]
                    .as_str()?
                    .split('`')
                    .step_by(2)
                    .collect::<Vec<_>>()
                    .join("…");
                Some(format!("{t} ({m})"))
            })
            .map(|t| format!("{}: {t}", text.split(' ').next().unwrap_or("")))
            .unwrap_or(text);
        *self.errors.entry(kind).or_default() += 1;
    }
}

type Shared = Arc<Mutex<Interval>>;

/// A customer of the pool, once it has visited.
#[derive(Clone)]
struct Customer {
    id: String,
    token: String,
    chat: Option<String>,
}

/// A tiny deterministic generator (xorshift), so runs can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

async fn timed<T>(
    lat: impl FnOnce(&mut Interval) -> &mut Latency,
    shared: &Shared,
    f: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    let t = Instant::now();
    let r = f.await;
    let mut s = shared.lock().unwrap();
    match &r {
        Ok(_) => lat(&mut s).record_us(t.elapsed().as_micros() as u64),
        Err(e) => s.error(e),
    }
    r
}

/// One agent, churning until `stop`.
async fn agent_loop(a: SoakArgs, i: usize, shared: Shared, mut stop: watch::Receiver<bool>) {
    let epoch = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1));
    let mut stream: Option<String> = None;
    let cursor = Arc::new(AtomicU64::new(0));
    let mut round = 0u64;
    while !*stop.borrow() {
        round += 1;
        let mut login = json!({"token": format!("Bearer load-agent-{i}")});
        let resuming = round.is_multiple_of(2);
        if resuming {
            login["resume"] = match &stream {
                Some(id) => json!({"stream_id": id, "last_seq": cursor.load(Ordering::Relaxed)}),
                None => json!(true),
            };
        }
        let setup = match login_with(&a.common, i, "/v3.5/agent/rtm/ws", login, epoch, 0).await {
            Ok(s) => s,
            Err(e) => {
                shared.lock().unwrap().error(&e);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        {
            let mut s = shared.lock().unwrap();
            s.agent_logins += 1;
            match setup.login["resume"]["status"].as_str() {
                Some("resumed") => s.resumed += 1,
                Some("resync_needed") => s.resync_needed += 1,
                _ => {}
            }
        }
        // Only a resuming round moves the stream and its cursor; a stock
        // round leaves them for the next resuming one (the kept session
        // goes on meanwhile).
        let c = cursor.clone();
        if resuming {
            stream = setup.login["resume"]["stream_id"]
                .as_str()
                .map(str::to_owned);
            cursor.store(
                setup.login["resume"]["seq"].as_u64().unwrap_or(0),
                Ordering::Relaxed,
            );
        }
        let measure: Measure = Arc::new(move |text: &str, _now: u64| {
            if resuming && let Some(n) = resume_seq(text) {
                c.store(n, Ordering::Relaxed);
            }
            None
        });
        let (phase_tx, phase_rx) = watch::channel(false);
        let (_tx, rx) = mpsc::channel::<String>(1);
        let h = drive(
            setup.ws,
            rx,
            phase_rx,
            epoch,
            Some(measure),
            Some(Duration::from_secs(10)),
            Arc::new(AtomicU64::new(0)),
        );
        let hold = Duration::from_millis(a.agent_hold_ms / 2 + rng.below(a.agent_hold_ms));
        tokio::select! {
            _ = tokio::time::sleep(hold) => {}
            _ = stop.changed() => {}
        }
        // The connection drops without a goodbye (what a network does).
        let _ = phase_tx.send(true);
        let out: ConnOut = match h.await {
            Ok(o) => o,
            Err(_) => continue,
        };
        if out.closed_early {
            shared.lock().unwrap().unexpected_closes += 1;
        }
    }
}

/// One customer visit: token, login, start or resume, messages, transfer,
/// deactivate.
async fn visit(
    a: &SoakArgs,
    slot: &Mutex<Option<Customer>>,
    rng: &mut Rng,
    shared: &Shared,
    k: usize,
) -> io::Result<()> {
    let known = slot.lock().unwrap().clone();
    // A returning customer's widget keeps its token (valid for hours); a
    // new customer gets one.
    let (token, id) = match &known {
        Some(c) => (c.token.clone(), c.id.clone()),
        None => {
            let body = json!({"organization_id": a.org});
            let (code, tok) =
                client::post_json(a.common.server, "/customer/token", None, &body).await?;
            if code != 200 {
                return Err(err(format!("customer token: {code} {tok}")));
            }
            (
                tok["access_token"].as_str().unwrap_or_default().to_owned(),
                tok["entity_id"].as_str().unwrap_or_default().to_owned(),
            )
        }
    };
    let source = Some(client::source_for(k + 1, a.common.sources));
    let mut ws = client::customer_login(a.common.server, source, &a.org, &token).await?;
    let hello = json!({"events": [{"type": "message", "text": "hello again"}]});
    let chat_id = match known.and_then(|c| c.chat) {
        Some(chat) => {
            let r = timed(
                |s| &mut s.start,
                shared,
                client::request(
                    &mut ws,
                    "resume_chat",
                    "start",
                    json!({"chat": {"id": chat, "thread": hello}}),
                ),
            )
            .await;
            // A chat left active by an earlier failed visit goes on as is.
            if let Err(e) = r
                && !e.to_string().contains("chat_active")
            {
                return Err(e);
            }
            chat
        }
        None => {
            let r = timed(
                |s| &mut s.start,
                shared,
                client::request(
                    &mut ws,
                    "start_chat",
                    "start",
                    json!({"chat": {"thread": hello}}),
                ),
            )
            .await?;
            r["chat_id"].as_str().unwrap_or_default().to_owned()
        }
    };
    *slot.lock().unwrap() = Some(Customer {
        id,
        token,
        chat: Some(chat_id.clone()),
    });
    for m in 0..a.messages {
        timed(
            |s| &mut s.send,
            shared,
            client::request(
                &mut ws,
                "send_event",
                &format!("e{m}"),
                json!({"chat_id": chat_id, "event": {"type": "message", "text": format!("message {m}")}}),
            ),
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(a.pause_ms)).await;
    }
    // The owner moves the chat to another agent (who may be between
    // connections: then `agent_offline`, counted, and the visit goes on).
    let target = format!("agent{}@load.test", rng.below(a.agents as u64));
    let _ = timed(|s| &mut s.transfer, shared, async {
        let (code, body) = client::post_json(
            a.common.server,
            "/v3.5/agent/action/transfer_chat",
            Some("Bearer load-owner"),
            &json!({"id": chat_id, "target": {"type": "agent", "ids": [target]},
                        "ignore_requester_presence": true, "ignore_agents_availability": true}),
        )
        .await?;
        if code == 200 {
            Ok(body)
        } else {
            Err(err(format!("transfer_chat failed: {}", body)))
        }
    })
    .await;
    timed(
        |s| &mut s.deactivate,
        shared,
        client::request(&mut ws, "deactivate_chat", "end", json!({"id": chat_id})),
    )
    .await?;
    shared.lock().unwrap().visits += 1;
    Ok(())
}

pub async fn soak(a: SoakArgs) -> io::Result<()> {
    raise_nofile();
    let epoch = Instant::now();
    let shared: Shared = Default::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..a.agents {
        tasks.push(tokio::spawn(agent_loop(
            a.clone(),
            i,
            shared.clone(),
            stop_rx.clone(),
        )));
    }
    let slots: Arc<Vec<Mutex<Option<Customer>>>> =
        Arc::new((0..a.customers.max(1)).map(|_| Mutex::new(None)).collect());
    for w in 0..a.workers {
        let (a, slots, shared, stop) = (a.clone(), slots.clone(), shared.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (w as u64 + 7));
            let mut j = 0usize;
            while !*stop.borrow() {
                // Workers take customers round robin: no customer is in two
                // visits at once.
                let k = (w + j * a.workers) % slots.len();
                j += 1;
                if let Err(e) = visit(&a, &slots[k], &mut rng, &shared, k).await {
                    shared.lock().unwrap().error(&e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    let mut intervals = Vec::new();
    let every = Duration::from_secs(a.report_every.max(1));
    let end = Instant::now() + Duration::from_secs(a.duration);
    let mut next = Instant::now() + every;
    while next <= end + Duration::from_millis(10) {
        tokio::time::sleep_until(next.into()).await;
        next += every;
        let iv = std::mem::take(&mut *shared.lock().unwrap());
        let rss = a.common.pid.and_then(rss_kib);
        let t = micros_since(epoch) as f64 / 1e6;
        println!(
            "t={t:>7.1}s visits {:>6} agent logins {:>4} (resumed {}, resync {}) send p50 {:.2} ms p99 {:.2} ms, start p99 {:.2} ms, transfer p99 {:.2} ms, errors {:?}, rss {}",
            iv.visits,
            iv.agent_logins,
            iv.resumed,
            iv.resync_needed,
            iv.send.quantile_us(0.5) as f64 / 1e3,
            iv.send.quantile_us(0.99) as f64 / 1e3,
            iv.start.quantile_us(0.99) as f64 / 1e3,
            iv.transfer.quantile_us(0.99) as f64 / 1e3,
            iv.errors,
            rss.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        );
        intervals.push(json!({
            "t_seconds": t,
            "visits": iv.visits,
            "agent_logins": iv.agent_logins,
            "resumed": iv.resumed,
            "resync_needed": iv.resync_needed,
            "unexpected_closes": iv.unexpected_closes,
            "start_or_resume_chat": iv.start.summary(),
            "send_event": iv.send.summary(),
            "transfer_chat": iv.transfer.summary(),
            "deactivate_chat": iv.deactivate.summary(),
            "errors": iv.errors,
            "server_rss_kib": rss,
        }));
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
    }
    let first = intervals.first().cloned().unwrap_or(Value::Null);
    let last = intervals.last().cloned().unwrap_or(Value::Null);
    let total_visits: u64 = intervals.iter().filter_map(|i| i["visits"].as_u64()).sum();
    println!(
        "soak: {total_visits} visits in {} s; send_event p99 first interval {} ms, last {} ms; server RSS first {} KiB, last {} KiB",
        a.duration,
        first["send_event"]["p99_ms"],
        last["send_event"]["p99_ms"],
        first["server_rss_kib"],
        last["server_rss_kib"],
    );
    if total_visits == 0 {
        return Err(err("no visit completed"));
    }
    finish(
        &a.common,
        "soak",
        json!({
            "scenario": "soak",
            "duration_seconds": a.duration,
            "agents": a.agents,
            "customers": a.customers,
            "workers": a.workers,
            "visits": total_visits,
            "intervals": intervals,
        }),
    )
}
