//! Abuse limits: rate limits trip and recover without touching other
//! clients; sessions per agent and unauthenticated connections per address
//! are capped.

use crate::harness::*;
use chatgate_server::ServerConfig;
use serde_json::json;
use std::time::Duration;

async fn server(tune: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    tune(&mut cfg);
    TestServer::start_with(dir, cfg).await
}

#[tokio::test]
async fn rate_limits_trip_and_recover_per_principal() {
    let s = server(|c| c.engine.rate_limit = Some(chatgate_engine_rate(4.0, 3.0))).await;
    let bob = Some("Bearer bob-pat-1");
    for _ in 0..3 {
        let (code, _) = s.web("list_routing_statuses", bob, json!({})).await;
        assert_eq!(code, 200);
    }
    let resp = reqwest::Client::new()
        .post(s.url("/v3.5/agent/action/list_routing_statuses"))
        .header("authorization", "Bearer bob-pat-1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "too_many_requests");
    assert_eq!(body["error"]["data"]["retry_after"], 1);
    // Another agent is not affected.
    let (code, _) = s
        .web(
            "list_routing_statuses",
            Some("Bearer alice-pat-1"),
            json!({}),
        )
        .await;
    assert_eq!(code, 200);
    // Over RTM the same budget answers with the same error; the connection stays.
    let mut rtm = s.login("bob-pat-1").await;
    let r = rtm.request("list_routing_statuses", json!({})).await;
    assert_eq!(r["payload"]["error"]["type"], "too_many_requests", "{r}");
    // The budget refills.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = rtm.request("list_routing_statuses", json!({})).await;
    assert_eq!(r["success"], true, "{r}");
    // Customers have budgets of their own.
    let (token, _) = s.customer_token("acme", None).await;
    for _ in 0..3 {
        let (code, _) = s
            .customer_web("acme", "get_customer", &token, json!({}))
            .await;
        assert_eq!(code, 200);
    }
    let (code, _) = s
        .customer_web("acme", "get_customer", &token, json!({}))
        .await;
    assert_eq!(code, 429);
}

fn chatgate_engine_rate(per_second: f64, burst: f64) -> chatgate_server::Rate {
    chatgate_server::Rate { per_second, burst }
}

#[tokio::test]
async fn a_login_over_the_session_cap_evicts_the_oldest() {
    let s = server(|c| c.engine.max_sessions_per_agent = 2).await;
    let mut first = s.login("alice-pat-1").await;
    let mut second = s.login("alice-pat-1").await;
    let _third = s.login("alice-pat-1").await;
    let d = first.disconnected().await;
    assert_eq!(d["payload"]["reason"], "connection_evicted");
    let r = second.request("ping", json!({})).await;
    assert_eq!(r["success"], true, "the newer sessions stay");
}

#[tokio::test]
async fn unauthenticated_connections_per_address_are_capped() {
    let s = server(|c| c.engine.max_unauthenticated_per_address = 2).await;
    let mut a = s.rtm().await;
    let _b = s.rtm().await;
    let mut c = s.rtm().await;
    let d = c.disconnected().await;
    assert_eq!(d["payload"]["reason"], "too_many_unauthorized_connections");
    // Logging in frees the place.
    let r = a
        .request("login", json!({"token": "Bearer alice-pat-1"}))
        .await;
    assert_eq!(r["success"], true);
    let mut d2 = s.rtm().await;
    let r = d2
        .request("login", json!({"token": "Bearer bob-pat-1"}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    // A closed, never logged-in connection frees its place too.
    drop(_b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut e = s.rtm().await;
    let _f = s.rtm().await;
    let r = e.request("ping", json!({})).await;
    assert_eq!(r["success"], true);
}
