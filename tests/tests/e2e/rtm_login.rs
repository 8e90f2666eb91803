//! RTM login: success, each failure, the login window, pings, versions, bad
//! frames.

use crate::harness::*;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn login_succeeds_with_bearer_and_basic_and_tolerates_removed_fields() {
    let s = TestServer::start().await;
    let mut c = s.rtm().await;
    let r = c
        .request(
            "login",
            json!({
                "token": "Bearer alice-pat-1",
                "timezone": "Europe/Warsaw",
                "application": {"name": "test", "version": "1"},
                "customer_monitoring_level": "my",
                "push_notifications": {"firebase_token": "x", "platform": "ios"}
            }),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["action"], "login");
    let p = &r["payload"];
    assert_eq!(p["license"]["organization_id"], "acme");
    assert!(
        p["license"]["id"].as_str().unwrap().parse::<u64>().is_ok(),
        "license id is a numeric string"
    );
    assert_eq!(p["my_profile"]["id"], "alice@acme.test");
    assert_eq!(p["my_profile"]["type"], "agent");
    assert_eq!(p["my_profile"]["name"], "Alice");
    assert_eq!(p["my_profile"]["permission"], "owner");
    assert_eq!(p["my_profile"]["routing_status"], "accepting_chats");
    assert_eq!(p["chats_summary"], json!([]));
    // The response parses as the protocol type.
    serde_json::from_value::<chatgate_protocol::methods::LoginResponse>(p.clone()).unwrap();

    let basic = base64::engine::general_purpose::STANDARD.encode("carol@acme.test:carol-pat-1");
    let mut c2 = s.rtm().await;
    let r = c2
        .request("login", json!({"token": format!("Basic {basic}")}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(
        r["payload"]["my_profile"]["routing_status"], "not_accepting_chats",
        "login_status applies"
    );
}

#[tokio::test]
async fn bad_credentials_leave_the_session_unauthenticated() {
    let s = TestServer::start().await;
    let mut c = s.rtm().await;
    let wrong_basic = base64::engine::general_purpose::STANDARD.encode("bob@acme.test:alice-pat-1");
    let cases = [
        (
            json!({"token": "Bearer nope"}),
            "authentication",
            "Invalid access token",
        ),
        (json!({"token": "alice-pat-1"}), "authentication", "Bearer"),
        (
            json!({"token": "Digest abc"}),
            "authentication",
            "unsupported authorization scheme",
        ),
        (
            json!({"token": format!("Basic {wrong_basic}")}),
            "authentication",
            "Invalid access token",
        ),
        (json!({"token": "Basic !!!"}), "authentication", "base64"),
        (json!({}), "validation", "missing field `token`"),
        (json!({"token": 5}), "validation", "invalid payload"),
        (
            json!({"token": "Bearer alice-pat-1", "customer_monitoring_level": "all"}),
            "validation",
            "customer_monitoring_level",
        ),
        (
            json!({"token": "Bearer alice-pat-1", "pushes": {"2.0": ["all"]}}),
            "validation",
            "unsupported API version",
        ),
        (
            json!({"token": "Bearer dave-pat-1"}),
            "requester_suspended",
            "suspended",
        ),
    ];
    for (payload, kind, text) in cases {
        let r = c.request("login", payload.clone()).await;
        assert_eq!(r["success"], false, "{payload}: {r}");
        assert_eq!(r["payload"]["error"]["type"], kind, "{payload}: {r}");
        let msg = r["payload"]["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(text),
            "{payload}: {msg:?} should mention {text:?}"
        );
    }
    // Still unauthenticated: other methods are refused...
    let r = c.request("list_routing_statuses", json!({})).await;
    assert_eq!(r["payload"]["error"]["type"], "authentication", "{r}");
    // ...and a good login on the same connection works.
    let r = c
        .request("login", json!({"token": "Bearer alice-pat-1"}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let r = c.request("list_routing_statuses", json!({})).await;
    assert_eq!(r["success"], true, "{r}");
}

#[tokio::test]
async fn login_window_closes_silent_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.web.rtm.login_timeout = Duration::from_millis(300);
    let s = TestServer::start_with(dir, cfg).await;
    let mut c = s.rtm().await;
    let d = c.disconnected().await;
    assert_eq!(d["payload"]["reason"], "connection_timeout");
    assert_eq!(d["payload"]["data"]["detail"], "login_timeout");
    // A connection that logs in in time stays past the window.
    let mut ok = s.login("alice-pat-1").await;
    ok.no_push("agent_disconnected", Duration::from_millis(600))
        .await;
    let r = ok.request("ping", json!({})).await;
    assert_eq!(r["success"], true);
}

#[tokio::test]
async fn ping_action_and_websocket_ping() {
    let s = TestServer::start().await;
    let mut c = s.login("alice-pat-1").await;
    let r = c.request("ping", json!({})).await;
    assert_eq!(
        r,
        json!({"request_id": "req-2", "action": "ping", "type": "response", "success": true, "payload": {}})
    );
    c.ws.send(Message::Ping(b"hi".to_vec().into()))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(WAIT, c.ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"hi");
                break;
            }
            Message::Text(t) => panic!("unexpected {t}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn per_request_versions() {
    let s = TestServer::start().await;
    let mut c = s.login("alice-pat-1").await;
    let r = c
        .request_frame(json!({"action": "ping", "version": "3.6"}))
        .await;
    assert_eq!(
        r["success"], true,
        "a higher version than the connection's is allowed: {r}"
    );
    let r = c
        .request_frame(json!({"action": "ping", "version": "4.0"}))
        .await;
    assert_eq!(r["payload"]["error"]["type"], "validation");

    let mut c36 = Rtm::connect(s.addr, "v3.6").await;
    let r = c36
        .request("login", json!({"token": "Bearer alice-pat-1"}))
        .await;
    assert_eq!(r["success"], true);
    let r = c36
        .request_frame(json!({"action": "ping", "version": "3.5"}))
        .await;
    assert_eq!(
        r["payload"]["error"]["type"], "validation",
        "lower than the connection: {r}"
    );
    // v3.6 refuses author_id (bots need bot tokens).
    let r = c36
        .request_frame(json!({"action": "list_routing_statuses", "author_id": "x", "payload": {}}))
        .await;
    assert!(
        r["payload"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("removed in 3.6"),
        "{r}"
    );
    // Unsupported version in the URL is refused before upgrading.
    let err = tokio_tungstenite::connect_async(format!("ws://{}/v3.4/agent/rtm/ws", s.addr)).await;
    assert!(err.is_err());
}

#[tokio::test]
async fn bad_frames_get_errors_and_nothing_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.web.rtm.max_request_frame = 4096;
    let s = TestServer::start_with(dir, cfg).await;
    let mut c = s.login("alice-pat-1").await;
    c.send_text("{oops".into()).await;
    // (Pushes such as `groups_status_updated` may come first.)
    let r = loop {
        let f = c.next_frame().await.unwrap();
        if f["type"] != "push" {
            break f;
        }
    };
    assert_eq!(r["payload"]["error"]["type"], "validation");
    c.send_text(json!({"action": "send_nothing", "request_id": "u"}).to_string())
        .await;
    let r = c.response_to("u").await;
    assert!(
        r["payload"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown action")
    );
    c.send_text(
        json!({"action": "ping", "request_id": "big", "payload": {"pad": "x".repeat(10_000)}})
            .to_string(),
    )
    .await;
    let r = c.response_to("big").await;
    assert_eq!(r["payload"]["error"]["type"], "entity_too_large", "{r}");
    c.send_text(
        json!({"action": "set_routing_status", "request_id": "t", "payload": {"status": "busy"}})
            .to_string(),
    )
    .await;
    let r = c.response_to("t").await;
    assert_eq!(r["payload"]["error"]["type"], "validation", "{r}");
    // The connection and the data survive.
    let r = c.request("list_routing_statuses", json!({})).await;
    assert_eq!(r["success"], true);
    assert!(
        r["payload"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["agent_id"] == "alice@acme.test")
    );
}

#[tokio::test]
async fn a_message_above_the_hard_limit_ends_the_session_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.web.ws_max_message = 64 * 1024;
    cfg.web.rtm.max_request_frame = 16 * 1024;
    let s = TestServer::start_with(dir, cfg).await;
    let mut c = s.login("alice-pat-1").await;
    let mut other = s.login("bob-pat-1").await;
    c.send_text(format!(
        "{{\"action\":\"ping\",\"payload\":{{\"x\":\"{}\"}}}}",
        "y".repeat(100 * 1024)
    ))
    .await;
    let d = c.disconnected().await;
    assert_eq!(
        d["payload"]["reason"], "agent_disconnected_by_server",
        "{d}"
    );
    assert_eq!(d["payload"]["data"]["detail"], "protocol_error");
    // Everyone else is unaffected.
    let r = other.request("list_routing_statuses", json!({})).await;
    assert_eq!(r["success"], true);
}
