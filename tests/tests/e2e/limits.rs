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

#[tokio::test]
async fn customer_bot_and_access_tokens_expire() {
    let s = server(|c| {
        // Lifetimes are whole seconds: 2 s leaves at least 1 s of validity.
        c.engine.customer_token_ttl = 2;
        c.engine.bot_token_ttl = 2;
        c.engine.access_token_ttl = 2;
    })
    .await;
    let (customer, _) = s.customer_token("acme", None).await;
    let (_, bot) = s
        .config(
            "create_bot",
            Some("Bearer alice-pat-1"),
            json!({"name": "B"}),
        )
        .await;
    let issue = json!({"bot_id": bot["id"], "bot_secret": bot["secret"], "client_id": "c", "organization_id": "acme"});
    let (_, token) = s.config("issue_bot_token", None, issue).await;
    let bot_auth = format!("Bearer {}", token["token"].as_str().unwrap());
    let access = reqwest::Client::new()
        .post(s.url("/v1/auth"))
        .header("x-api-key", "alice-key-1")
        .body(json!({"secret": "alice-secret-0123456789"}).to_string())
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(access["expires_in"], 2);
    let access_auth = format!("Bearer {}", access["access_token"].as_str().unwrap());
    // Valid now (a bot token also logs in over RTM, as a documented extension).
    let (code, _) = s
        .customer_web("acme", "get_customer", &customer, json!({}))
        .await;
    assert_eq!(code, 200);
    let (code, _) = s.web("list_chats", Some(&bot_auth), json!({})).await;
    assert_eq!(code, 200);
    let mut rtm = s.rtm().await;
    let r = rtm.request("login", json!({"token": bot_auth})).await;
    assert_eq!(r["payload"]["my_profile"]["type"], "bot", "{r}");
    let (code, _) = s.web("list_chats", Some(&access_auth), json!({})).await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    for (what, code, body) in [
        (
            "customer",
            s.customer_web("acme", "get_customer", &customer, json!({}))
                .await
                .0,
            json!(null),
        ),
        (
            "bot",
            s.web("list_chats", Some(&bot_auth), json!({})).await.0,
            json!(null),
        ),
        (
            "access",
            s.web("list_chats", Some(&access_auth), json!({})).await.0,
            json!(null),
        ),
    ] {
        assert_eq!(code, 401, "{what} token should have expired {body}");
    }
    let (_, body) = s.web("list_chats", Some(&access_auth), json!({})).await;
    assert_eq!(body["error"]["message"], "Access token expired");
    let refresh = reqwest::Client::new()
        .post(s.url("/v1/refresh_token"))
        .header("authorization", &access_auth)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refresh.status(),
        401,
        "an expired token cannot be refreshed"
    );
}

#[tokio::test]
async fn expired_tokens_are_forgotten_from_memory_and_store() {
    let s = server(|_| {}).await;
    let (customer, _) = s.customer_token("acme", None).await;
    let ok = |code: u16| code == 200;
    let (code, _) = s
        .customer_web("acme", "get_customer", &customer, json!({}))
        .await;
    assert!(ok(code));
    let engine = s.running.as_ref().unwrap().engine.clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Within its lifetime (8 h) plus the hour of grace nothing is forgotten.
    assert_eq!(engine.sweep_tokens(now + 8 * 3600).await.unwrap(), 0);
    let (code, _) = s
        .customer_web("acme", "get_customer", &customer, json!({}))
        .await;
    assert!(ok(code), "still valid");
    // Past expiry and grace: gone, and a restart does not bring it back;
    // tokens without an expiry (personal access tokens) stay.
    assert_eq!(engine.sweep_tokens(now + 10 * 3600).await.unwrap(), 1);
    let (code, body) = s
        .customer_web("acme", "get_customer", &customer, json!({}))
        .await;
    assert_eq!(code, 401, "{body}");
    drop(engine);
    let s = s.restart().await;
    let (code, _) = s
        .customer_web("acme", "get_customer", &customer, json!({}))
        .await;
    assert_eq!(code, 401, "forgotten in the store too");
    let (code, _) = s
        .web("list_routing_statuses", Some("Bearer bob-pat-1"), json!({}))
        .await;
    assert_eq!(code, 200);
}
