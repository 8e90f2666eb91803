//! `/metrics` on `--metrics-listen`: the engine's request counts, its
//! sessions, the store's commits and the process's resources, in the
//! OpenMetrics text format, on a listener of its own.

use crate::harness::*;
use serde_json::json;

/// The value of the series written exactly as `series` (name and labels).
fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series `{series}` in:\n{body}"))
        .parse()
        .unwrap()
}

async fn scrape(s: &TestServer) -> (u16, String, String) {
    let addr = s
        .running
        .as_ref()
        .unwrap()
        .metrics_addr
        .expect("metrics listener");
    let r = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

#[tokio::test]
async fn metrics_count_requests_sessions_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let s = TestServer::start_with(dir, c).await;
    let (_, _, before) = scrape(&s).await;
    let commits_before = value(&before, "chatgate_store_commit_seconds_count");

    let mut alice = s.login("alice-pat-1").await;
    let (mut cust, _) = s.customer("acme").await;
    cust.start_chat_saying("hello").await;
    let _ = alice.push("incoming_chat").await;
    // Not in the catalogue: counted as `unknown`, whatever the client sent.
    let r = alice.request("no_such_method_0123", json!({})).await;
    assert_eq!(r["payload"]["error"]["type"], "validation", "{r}");
    let r = alice.request("no_such_method_4567", json!({})).await;
    assert_eq!(r["payload"]["error"]["type"], "validation", "{r}");
    // A Web API call without credentials.
    let (status, _) = s.web("list_chats", None, json!({})).await;
    assert_eq!(status, 401);

    let (status, content_type, body) = scrape(&s).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    let ok = |side: &str, action: &str| {
        format!(
            "chatgate_requests_total{{side=\"{side}\",transport=\"rtm\",action=\"{action}\",outcome=\"ok\"}}"
        )
    };
    assert_eq!(value(&body, &ok("agent", "login")), 1.0);
    assert_eq!(value(&body, &ok("customer", "login")), 1.0);
    assert_eq!(value(&body, &ok("customer", "start_chat")), 1.0);
    assert_eq!(
        value(
            &body,
            "chatgate_requests_total{side=\"agent\",transport=\"rtm\",action=\"unknown\",outcome=\"validation\"}"
        ),
        2.0
    );
    assert!(
        !body.contains("no_such_method"),
        "a client's method name became a label"
    );
    assert_eq!(
        value(
            &body,
            "chatgate_requests_total{side=\"agent\",transport=\"web\",action=\"list_chats\",outcome=\"authentication\"}"
        ),
        1.0
    );
    // Every request answered is timed: 2 logins, start_chat, 2 unknown.
    let timed = value(
        &body,
        "chatgate_request_duration_seconds_count{side=\"agent\",transport=\"rtm\"}",
    ) + value(
        &body,
        "chatgate_request_duration_seconds_count{side=\"customer\",transport=\"rtm\"}",
    );
    assert!(timed >= 5.0, "{timed}");
    assert_eq!(
        value(
            &body,
            "chatgate_sessions{side=\"agent\",logged_in=\"true\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &body,
            "chatgate_sessions{side=\"customer\",logged_in=\"true\"}"
        ),
        1.0
    );
    // start_chat committed at least once more; its writes waited in the
    // queue and were grouped.
    assert!(value(&body, "chatgate_store_commit_seconds_count") > commits_before);
    assert!(value(&body, "chatgate_store_transactions_total") >= 1.0);
    // Exported (`value` panics on a missing series); whether provisioning's
    // back-to-back writes were held depends on the disk's speed.
    assert!(value(&body, "chatgate_store_commit_delays_total") >= 0.0);
    assert!(value(&body, "chatgate_store_queue_wait_seconds_count") >= 1.0);
    assert!(value(&body, "chatgate_store_group_size_count") >= 1.0);
    assert!(value(&body, "chatgate_frames_queued_total") >= 1.0);
    assert!(value(&body, "process_resident_memory_bytes") > 0.0);
    assert!(value(&body, "process_open_fds") > 0.0);
    assert!(value(&body, "process_threads") > 0.0);
    // This test's process is the server's: it has used CPU by now.
    assert!(value(&body, "process_cpu_seconds_total") > 0.0);

    // The session gauge follows a close.
    drop(alice);
    let mut gone = false;
    for _ in 0..100 {
        let (_, _, body) = scrape(&s).await;
        if value(
            &body,
            "chatgate_sessions{side=\"agent\",logged_in=\"true\"}",
        ) == 0.0
        {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(gone, "the closed session is still counted");
}

#[tokio::test]
async fn metrics_are_not_served_on_the_public_listener() {
    let s = TestServer::start().await;
    assert!(s.running.as_ref().unwrap().metrics_addr.is_none());
    let r = reqwest::get(s.url("/metrics")).await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

/// Requests that never reach the dispatcher are counted too: RTM frames
/// refused by the session (not JSON, over the frame limit, binary) and Web
/// calls whose body is refused, plus `upload_file`, served beside it.
#[tokio::test]
async fn metrics_count_requests_refused_before_dispatch() {
    use futures_util::SinkExt;
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    c.web.rtm.max_request_frame = 4096;
    let s = TestServer::start_with(dir, c).await;
    let mut alice = s.login("alice-pat-1").await;

    alice.send_text("{oops".into()).await;
    let r = next_response(&mut alice).await;
    assert_eq!(r["payload"]["error"]["type"], "validation", "{r}");
    alice
        .send_text(
            json!({"action": "send_event", "request_id": "big", "payload": {"pad": "x".repeat(5000)}})
                .to_string(),
        )
        .await;
    let r = alice.response_to("big").await;
    assert_eq!(r["payload"]["error"]["type"], "entity_too_large", "{r}");
    alice
        .ws
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            vec![1, 2, 3].into(),
        ))
        .await
        .unwrap();
    let r = next_response(&mut alice).await;
    assert_eq!(r["payload"]["error"]["type"], "validation", "{r}");
    // The session answered all three and still serves requests.
    let r = alice.request("list_routing_statuses", json!({})).await;
    assert_eq!(r["success"], true, "{r}");

    // A Web call whose body is not JSON, and an upload that is not multipart.
    let (status, _) = web_call(
        &s.url("/v3.5/agent/action/list_chats"),
        Some("Bearer alice-pat-1"),
        "{oops".into(),
        &[],
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = web_call(
        &s.url("/v3.5/agent/action/upload_file"),
        Some("Bearer alice-pat-1"),
        "{}".into(),
        &[],
    )
    .await;
    assert_eq!(status, 400);

    let (_, _, body) = scrape(&s).await;
    let series = |transport: &str, action: &str, outcome: &str| {
        format!(
            "chatgate_requests_total{{side=\"agent\",transport=\"{transport}\",action=\"{action}\",outcome=\"{outcome}\"}}"
        )
    };
    // `{oops` and the binary frame name no method.
    assert_eq!(value(&body, &series("rtm", "unknown", "validation")), 2.0);
    assert_eq!(
        value(&body, &series("rtm", "send_event", "entity_too_large")),
        1.0
    );
    assert_eq!(
        value(&body, &series("web", "list_chats", "validation")),
        1.0
    );
    assert_eq!(
        value(&body, &series("web", "upload_file", "validation")),
        1.0
    );
    // The refusals are not timed (they did no work); the upload is.
    assert_eq!(
        value(
            &body,
            "chatgate_request_duration_seconds_count{side=\"agent\",transport=\"rtm\"}"
        ),
        2.0, // login, list_routing_statuses
    );
    assert_eq!(
        value(
            &body,
            "chatgate_request_duration_seconds_count{side=\"agent\",transport=\"web\"}"
        ),
        1.0,
    );
}

/// The next frame that is not a push.
async fn next_response(c: &mut Rtm) -> serde_json::Value {
    loop {
        let f = c.next_frame().await.expect("a frame");
        if f["type"] != "push" {
            return f;
        }
    }
}
