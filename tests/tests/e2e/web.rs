//! The Web API: the same engine as RTM, HTTP statuses, headers, limits,
//! health.

use crate::harness::*;
use base64::Engine as _;
use serde_json::json;

#[tokio::test]
async fn same_method_same_result_over_rtm_and_web() {
    let s = TestServer::start().await;
    let mut alice = s.login("alice-pat-1").await;
    let rtm = alice
        .request(
            "list_routing_statuses",
            json!({"filters": {"group_ids": [0, 1]}}),
        )
        .await;
    let (code, web) = s
        .web(
            "list_routing_statuses",
            Some("Bearer alice-pat-1"),
            json!({"filters": {"group_ids": [0, 1]}}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(rtm["payload"], web);
    // Errors have the same body.
    let rtm = alice.request("set_routing_status", json!({})).await;
    let (code, web) = s
        .web("set_routing_status", Some("Bearer alice-pat-1"), json!({}))
        .await;
    assert_eq!(code, 400);
    assert_eq!(rtm["payload"], web);
    // A Web call changes state and pushes to RTM sessions.
    let basic = base64::engine::general_purpose::STANDARD.encode("alice@acme.test:alice-pat-2");
    let (code, body) = s
        .web(
            "set_routing_status",
            Some(&format!("Basic {basic}")),
            json!({"status": "not_accepting_chats"}),
        )
        .await;
    assert_eq!((code, body), (200, json!({})));
    let p = alice.push("routing_status_set").await;
    assert_eq!(
        p["payload"],
        json!({"agent_id": "alice@acme.test", "status": "not_accepting_chats"})
    );
    assert!(p.get("request_id").is_none());
}

#[tokio::test]
async fn web_errors_and_statuses() {
    let s = TestServer::start().await;
    let url = s.url("/v3.5/agent/action/list_routing_statuses");
    let (code, body) = web_call(&url, None, "{}".into(), &[]).await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (401, Some("authentication"))
    );
    let (code, body) = web_call(&url, Some("Bearer wrong"), "{}".into(), &[]).await;
    assert_eq!(code, 401);
    assert_eq!(
        body,
        json!({"error": {"type": "authentication", "message": "Invalid access token"}})
    );
    let (code, body) = web_call(&url, Some("Bearer alice-pat-1"), "{nope".into(), &[]).await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (400, Some("validation"))
    );
    let (code, body) = web_call(&url, Some("Bearer alice-pat-1"), "[1]".into(), &[]).await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (400, Some("validation"))
    );
    // An empty body means `{}`.
    let (code, _) = web_call(&url, Some("Bearer alice-pat-1"), String::new(), &[]).await;
    assert_eq!(code, 200);
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let (code, body) = web_call(&url, Some("Bearer alice-pat-1"), big, &[]).await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (413, Some("entity_too_large"))
    );
    let (code, body) = s
        .web("no_such_method", Some("Bearer alice-pat-1"), json!({}))
        .await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (400, Some("validation"))
    );
    let (code, body) = s
        .web("login", Some("Bearer alice-pat-1"), json!({"token": "x"}))
        .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("RTM only"),
        "{body}"
    );
    assert_eq!(code, 400);
    let (code, body) = s
        .web(
            "set_routing_status",
            Some("Bearer dave-pat-1"),
            json!({"status": "accepting_chats"}),
        )
        .await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (403, Some("requester_suspended"))
    );
    let (code, body) = s
        .web(
            "set_routing_status",
            Some("Bearer bob-pat-1"),
            json!({"status": "accepting_chats", "agent_id": "alice@acme.test"}),
        )
        .await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (403, Some("authorization"))
    );
    let (code, body) = s
        .web(
            "set_routing_status",
            Some("Bearer bob-pat-1"),
            json!({"status": "accepting_chats"}),
        )
        .await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (409, Some("agent_offline"))
    );
    let (code, body) = web_call(
        &s.url("/v3.4/agent/action/list_routing_statuses"),
        Some("Bearer alice-pat-1"),
        "{}".into(),
        &[],
    )
    .await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (400, Some("unsupported_version"))
    );
    let (code, body) = web_call(&s.url("/nothing/here"), None, "{}".into(), &[]).await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn version_header_is_honoured() {
    let s = TestServer::start().await;
    let url = s.url("/v3.5/agent/action/list_routing_statuses");
    let auth = Some("Bearer alice-pat-1");
    let (code, _) = web_call(&url, auth, "{}".into(), &[("X-API-Version", "3.6")]).await;
    assert_eq!(code, 200);
    let (code, body) = web_call(&url, auth, "{}".into(), &[("X-API-Version", "3.9")]).await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (400, Some("unsupported_version"))
    );
    let url36 = s.url("/v3.6/agent/action/list_routing_statuses");
    let (code, body) = web_call(&url36, auth, "{}".into(), &[("X-API-Version", "3.5")]).await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (400, Some("validation"))
    );
    // X-Author-Id is refused in 3.6 and must name a bot in 3.5.
    let (code, body) = web_call(&url36, auth, "{}".into(), &[("X-Author-Id", "somebot")]).await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = web_call(&url, auth, "{}".into(), &[("X-Author-Id", "bob@acme.test")]).await;
    assert_eq!(code, 400, "an agent is not a bot: {body}");
}

#[tokio::test]
async fn health_and_readiness() {
    let s = TestServer::start().await;
    let r = reqwest::get(s.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(s.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ready");
}
