//! Exact resume (chatgate extension, proto-docs/resume.md): a session that
//! asked for a resume stream and lost its connection logs in again with its
//! cursor and gets exactly the pushes it missed, in order, then live ones;
//! a cursor that cannot be served gets `resync_needed`, never silent loss.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

/// Logs in on a new connection with `resume`; returns the client and the
/// response's `resume` object.
async fn login_resuming(s: &TestServer, token: &str, resume: Value) -> (Rtm, Value) {
    let mut c = s.rtm().await;
    let r = c
        .request(
            "login",
            json!({"token": format!("Bearer {token}"), "resume": resume}),
        )
        .await;
    assert_eq!(r["success"], true, "login failed: {r}");
    let info = r["payload"]["resume"].clone();
    assert!(info.is_object(), "no resume in {r}");
    (c, info)
}

/// Logs in as Alice with the cursor `(stream, last_seq)`; returns the
/// client and the response's `resume`.
async fn alice_resuming(s: &TestServer, stream: &str, last_seq: u64) -> (Rtm, Value) {
    login_resuming(
        s,
        "alice-pat-1",
        json!({"stream_id": stream, "last_seq": last_seq}),
    )
    .await
}

/// The customer says `text` in `chat`; returns once it is acknowledged.
async fn say(cust: &mut Rtm, chat: &str, text: &str) {
    let r = cust
        .request(
            "send_event",
            json!({"chat_id": chat, "event": {"type": "message", "text": text}}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
}

/// Reads pushes until an `incoming_event` whose text is `last` arrives;
/// returns every push read (with what was already buffered).
async fn pushes_until_text(c: &mut Rtm, last: &str) -> Vec<Value> {
    let mut out: Vec<Value> = c.pushes.drain(..).collect();
    while !out
        .iter()
        .any(|p| p["action"] == "incoming_event" && p["payload"]["event"]["text"] == last)
    {
        let f = c.next_frame().await.expect("socket open");
        assert_eq!(f["type"], "push", "only pushes expected: {f}");
        out.push(f);
    }
    out
}

/// Reads the next `n` pushes (after what was already buffered).
async fn read_n(c: &mut Rtm, n: u64) -> Vec<Value> {
    let mut out: Vec<Value> = c.pushes.drain(..).collect();
    while (out.len() as u64) < n {
        let f = c.next_frame().await.expect("socket open");
        assert_eq!(f["type"], "push", "only pushes expected: {f}");
        out.push(f);
    }
    out
}

/// Asserts the pushes are numbered `from`, `from + 1`, … without a gap.
fn numbered_from(pushes: &[Value], from: u64) {
    assert_eq!(
        seqs(pushes),
        (from..from + pushes.len() as u64).collect::<Vec<_>>(),
        "{pushes:?}"
    );
}

fn seqs(pushes: &[Value]) -> Vec<u64> {
    pushes
        .iter()
        .map(|p| {
            p["resume_seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("push without resume_seq: {p}"))
        })
        .collect()
}

fn texts(pushes: &[Value]) -> Vec<String> {
    pushes
        .iter()
        .filter(|p| p["action"] == "incoming_event")
        .map(|p| p["payload"]["event"]["text"].as_str().unwrap().to_owned())
        .collect()
}

/// Starts a chat from a new customer; returns the customer and the chat id.
async fn customer_chat(s: &TestServer) -> (Rtm, String) {
    let (mut cust, _) = s.customer("acme").await;
    let chat = cust.start_chat_saying("hello").await["chat_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (cust, chat)
}

#[tokio::test]
async fn a_dropped_session_gets_exactly_what_it_missed_then_live_pushes() {
    let s = TestServer::start().await;
    // A stock client (Carol: an administrator who sees statuses, not routed
    // group 0 chats): no `resume` in its login response, no `resume_seq`.
    let mut carol = s.rtm().await;
    let r = carol
        .request("login", json!({"token": "Bearer carol-pat-1"}))
        .await;
    assert!(r["payload"].get("resume").is_none(), "{r}");

    let (mut alice, info) = login_resuming(&s, "alice-pat-1", json!(true)).await;
    assert_eq!(info["status"], "new");
    assert_eq!(info["seq"], 0);
    assert_eq!(info["window_seconds"], 60);
    let stream = info["stream_id"].as_str().unwrap().to_owned();
    let st = carol.push("routing_status_set").await;
    assert!(st.get("resume_seq").is_none(), "{st}");
    assert_eq!(st["payload"]["status"], "accepting_chats");

    let (mut cust, chat) = customer_chat(&s).await;
    say(&mut cust, &chat, "m1").await;
    let before = pushes_until_text(&mut alice, "m1").await;
    let before_seqs = seqs(&before);
    assert_eq!(
        before_seqs,
        (1..=before.len() as u64).collect::<Vec<_>>(),
        "numbered from 1 without a gap"
    );
    let last_seen = *before_seqs.last().unwrap();

    // The connection vanishes without a close frame.
    drop(alice);
    for i in 2..=6 {
        say(&mut cust, &chat, &format!("m{i}")).await;
    }
    // Alice's session is kept: nobody saw her go offline.
    carol.no_push("routing_status_set", QUIET).await;

    let (mut alice, info) = alice_resuming(&s, &stream, last_seen).await;
    assert_eq!(info["status"], "resumed", "{info}");
    assert_eq!(info["stream_id"], stream.as_str());
    let replayed = info["replayed"].as_u64().unwrap();
    assert_eq!(info["seq"].as_u64().unwrap(), last_seen + replayed);
    // Everything after the cursor, in order (the coalesced
    // `groups_status_updated` of the absence among them).
    let missed = read_n(&mut alice, replayed).await;
    numbered_from(&missed, last_seen + 1);
    assert_eq!(texts(&missed), ["m2", "m3", "m4", "m5", "m6"]);
    // Then live pushes, continuing the sequence.
    say(&mut cust, &chat, "m7").await;
    let live = pushes_until_text(&mut alice, "m7").await;
    numbered_from(&live, last_seen + replayed + 1);
    assert_eq!(texts(&live), ["m7"]);
    carol.no_push("routing_status_set", QUIET).await;
    let all: Vec<Value> = before.iter().chain(&missed).chain(&live).cloned().collect();

    // A cursor behind what the client last saw replays from there: the
    // server keeps the window, the client decides where it stands.
    drop(alice);
    let end = *seqs(&all).last().unwrap();
    let (mut alice, info) = alice_resuming(&s, &stream, end - 2).await;
    assert_eq!(info["status"], "resumed", "{info}");
    assert_eq!(info["replayed"], 2);
    let again = read_n(&mut alice, 2).await;
    assert_eq!(
        again,
        all[all.len() - 2..],
        "the same two pushes, byte for byte"
    );
    alice.no_push("incoming_event", QUIET).await;
}

#[tokio::test]
async fn cursors_that_cannot_be_served_get_resync_needed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.engine.resume_log = 3;
    let s = TestServer::start_with(dir, cfg).await;

    // Malformed requests: a clear validation error, the connection lives.
    let mut c = s.rtm().await;
    for bad in [
        json!("yes"),
        json!({"stream_id": "x"}),
        json!({"last_seq": 1}),
    ] {
        let r = c
            .request(
                "login",
                json!({"token": "Bearer alice-pat-1", "resume": bad}),
            )
            .await;
        assert_eq!(r["success"], false, "{r}");
        assert_eq!(r["payload"]["error"]["type"], "validation", "{r}");
    }
    // An unknown stream: resync, with a new stream to go on with.
    let r = c
        .request(
            "login",
            json!({"token": "Bearer alice-pat-1", "resume": {"stream_id": "nope", "last_seq": 3}}),
        )
        .await;
    let info = &r["payload"]["resume"];
    assert_eq!(info["status"], "resync_needed", "{r}");
    assert_ne!(info["stream_id"], "nope");
    assert_eq!(info["seq"], 0);
    assert_eq!(info["retained"], 3);
    let stream = info["stream_id"].as_str().unwrap().to_owned();

    // Another agent cannot take Alice's stream: for Carol it does not exist.
    let (_carol, binfo) = login_resuming(
        &s,
        "carol-pat-1",
        json!({"stream_id": stream, "last_seq": 0}),
    )
    .await;
    assert_eq!(binfo["status"], "resync_needed");
    assert_ne!(binfo["stream_id"], stream.as_str());

    // More pushes missed than the stream keeps: the early cursor cannot be
    // served, and the answer says so.
    let (mut cust, chat) = customer_chat(&s).await;
    say(&mut cust, &chat, "m1").await;
    let seen = pushes_until_text(&mut c, "m1").await;
    let last_seen = *seqs(&seen).last().unwrap();
    drop(c);
    for i in 2..=6 {
        say(&mut cust, &chat, &format!("m{i}")).await;
    }
    let (mut alice, info) = alice_resuming(&s, &stream, last_seen).await;
    assert_eq!(info["status"], "resync_needed", "{info}");
    assert_eq!(info["replayed"], 0);
    let fresh = info["stream_id"].as_str().unwrap().to_owned();
    assert_ne!(fresh, stream);
    // Nothing replayed; the new stream numbers from 1.
    say(&mut cust, &chat, "m7").await;
    let live = pushes_until_text(&mut alice, "m7").await;
    assert_eq!(texts(&live), ["m7"]);
    numbered_from(&live, 1);
    // The old stream is gone for good.
    let (_again, info) = alice_resuming(&s, &stream, 1).await;
    assert_eq!(info["status"], "resync_needed");
}

#[tokio::test]
async fn a_kept_session_ends_when_its_window_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.engine.resume_window = Duration::from_millis(600);
    let s = TestServer::start_with(dir, cfg).await;
    let mut carol = s.login("carol-pat-1").await;
    let (alice, info) = login_resuming(&s, "alice-pat-1", json!(true)).await;
    let stream = info["stream_id"].as_str().unwrap().to_owned();
    carol.push("routing_status_set").await;
    drop(alice);
    // After the window the session ends like any other: offline.
    let p = carol.push("routing_status_set").await;
    assert_eq!(p["payload"]["agent_id"], "alice@acme.test");
    assert_eq!(p["payload"]["status"], "offline");
    let (_alice, info) = alice_resuming(&s, &stream, 0).await;
    assert_eq!(info["status"], "resync_needed");
}

#[tokio::test]
async fn resuming_while_the_old_connection_lives_takes_it_over() {
    let s = TestServer::start().await;
    let mut carol = s.login("carol-pat-1").await;
    let (mut old, info) = login_resuming(&s, "alice-pat-1", json!(true)).await;
    let stream = info["stream_id"].as_str().unwrap().to_owned();
    carol.push("routing_status_set").await;
    let (mut cust, chat) = customer_chat(&s).await;
    say(&mut cust, &chat, "m1").await;
    let seen = pushes_until_text(&mut old, "m1").await;
    let last = *seqs(&seen).last().unwrap();

    let (mut new, info) = alice_resuming(&s, &stream, last).await;
    assert_eq!(info["status"], "resumed");
    assert_eq!(info["replayed"], 0);
    let bye = old.disconnected().await;
    assert_eq!(bye["payload"]["reason"], "connection_evicted");
    assert_eq!(bye["payload"]["data"]["detail"], "resumed_elsewhere");
    say(&mut cust, &chat, "m2").await;
    let live = pushes_until_text(&mut new, "m2").await;
    assert_eq!(texts(&live), ["m2"]);
    numbered_from(&live, last + 1);
    new.no_push("incoming_event", QUIET).await;
    // The hand-over changed nothing anyone could see.
    carol.no_push("routing_status_set", QUIET).await;
}

#[tokio::test]
async fn logging_out_ends_the_stream() {
    let s = TestServer::start().await;
    let (mut alice, info) = login_resuming(&s, "alice-pat-1", json!(true)).await;
    let stream = info["stream_id"].as_str().unwrap().to_owned();
    let r = alice.request("logout", json!({})).await;
    assert_eq!(r["success"], true, "{r}");
    let (_alice, info) = alice_resuming(&s, &stream, 0).await;
    assert_eq!(info["status"], "resync_needed");
}

#[tokio::test]
async fn a_kept_session_evicted_over_the_session_cap_cannot_be_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.engine.max_sessions_per_agent = 2;
    let s = TestServer::start_with(dir, cfg).await;
    let (alice, info) = login_resuming(&s, "alice-pat-1", json!(true)).await;
    let stream = info["stream_id"].as_str().unwrap().to_owned();
    drop(alice);
    // Two more sessions: the second evicts the oldest, the kept one. Pushes
    // after that are no longer computed for it, so its cursor must not be
    // honoured.
    let _b = s.login("alice-pat-1").await;
    let _c = s.login("alice-pat-1").await;
    let (_alice, info) = alice_resuming(&s, &stream, 0).await;
    assert_eq!(info["status"], "resync_needed", "{info}");
}
