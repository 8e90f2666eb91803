//! Status methods over RTM: routing-status pushes between agents and across
//! sessions, permissions, away across connections, logout, shutdown.

use crate::harness::*;
use serde_json::json;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

fn status_of(list: &serde_json::Value, agent: &str) -> String {
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e["agent_id"] == agent)
        .unwrap_or_else(|| panic!("{agent} missing from {list}"))["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn routing_status_pushes_reach_other_agents_and_the_requester() {
    let s = TestServer::start().await;
    let mut alice = s.login("alice-pat-1").await;
    let mut bob = s.login("bob-pat-1").await;
    // Bob's login changed his status from offline: Alice is told, Bob is not.
    let p = alice.push("routing_status_set").await;
    assert_eq!(
        p["payload"],
        json!({"agent_id": "bob@acme.test", "status": "accepting_chats"})
    );
    assert_eq!(p["version"], "3.5");
    assert!(p.get("request_id").is_none(), "{p}");

    let r = bob
        .request(
            "set_routing_status",
            json!({"status": "not_accepting_chats"}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["payload"], json!({}));
    // The requester gets the push with its request_id, others without.
    let own = bob.push("routing_status_set").await;
    assert_eq!(own["request_id"], r["request_id"]);
    assert_eq!(own["payload"]["status"], "not_accepting_chats");
    let other = alice.push("routing_status_set").await;
    assert_eq!(
        other["payload"],
        json!({"agent_id": "bob@acme.test", "status": "not_accepting_chats"})
    );
    assert!(other.get("request_id").is_none());

    let list = alice.request("list_routing_statuses", json!({})).await;
    assert_eq!(
        status_of(&list["payload"], "bob@acme.test"),
        "not_accepting_chats"
    );
    assert_eq!(status_of(&list["payload"], "carol@acme.test"), "offline");
    // Filter by group: Bob is only in group 0.
    let list = alice
        .request(
            "list_routing_statuses",
            json!({"filters": {"group_ids": [1]}}),
        )
        .await;
    let ids: Vec<_> = list["payload"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["alice@acme.test", "carol@acme.test"]);

    // Another organization never hears about Acme's agents.
    let mut eve = s.login("eve-pat-1").await;
    bob.request("set_routing_status", json!({"status": "accepting_chats"}))
        .await;
    alice.push("routing_status_set").await;
    eve.no_push("routing_status_set", QUIET).await;
    let list = eve.request("list_routing_statuses", json!({})).await;
    assert_eq!(
        list["payload"],
        json!([{"agent_id": "eve@globex.test", "status": "accepting_chats"}])
    );
}

#[tokio::test]
async fn pushes_reach_every_session_of_an_agent() {
    let s = TestServer::start().await;
    let mut desktop = s.login("alice-pat-1").await;
    let mut mobile = s.login("alice-pat-2").await;
    // A second session of an already-online agent changes nothing.
    desktop.no_push("routing_status_set", QUIET).await;
    let r = desktop
        .request(
            "set_routing_status",
            json!({"status": "not_accepting_chats"}),
        )
        .await;
    assert_eq!(r["success"], true);
    let p = mobile.push("routing_status_set").await;
    assert_eq!(
        p["payload"],
        json!({"agent_id": "alice@acme.test", "status": "not_accepting_chats"})
    );
    desktop.push("routing_status_set").await;
    // Push subscriptions: a session that subscribed to nothing relevant gets nothing.
    let mut picky = s.rtm().await;
    let r = picky
        .request(
            "login",
            json!({"token": "Bearer bob-pat-1", "pushes": {"3.5": ["incoming_chat"]}}),
        )
        .await;
    assert_eq!(r["success"], true);
    mobile.push("routing_status_set").await; // bob came online
    desktop
        .request("set_routing_status", json!({"status": "accepting_chats"}))
        .await;
    picky.no_push("routing_status_set", QUIET).await;
    // A session subscribed to 3.6 gets the push in the 3.6 format.
    let mut v36 = s.rtm().await;
    let r = v36
        .request(
            "login",
            json!({"token": "Bearer carol-pat-1", "pushes": {"3.6": ["routing_status_set"]}}),
        )
        .await;
    assert_eq!(r["success"], true);
    desktop
        .request(
            "set_routing_status",
            json!({"status": "not_accepting_chats"}),
        )
        .await;
    let p = v36.push("routing_status_set").await;
    assert_eq!(p["version"], "3.6");
}

#[tokio::test]
async fn setting_another_agents_status_needs_a_role() {
    let s = TestServer::start().await;
    let mut alice = s.login("alice-pat-1").await;
    let mut bob = s.login("bob-pat-1").await;
    alice.push("routing_status_set").await;
    // Normal agents may not change others.
    let r = bob
        .request(
            "set_routing_status",
            json!({"status": "not_accepting_chats", "agent_id": "alice@acme.test"}),
        )
        .await;
    assert_eq!(r["payload"]["error"]["type"], "authorization", "{r}");
    // Owners may; the target is told.
    let r = alice
        .request(
            "set_routing_status",
            json!({"status": "not_accepting_chats", "agent_id": "bob@acme.test"}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let p = bob.push("routing_status_set").await;
    assert_eq!(
        p["payload"],
        json!({"agent_id": "bob@acme.test", "status": "not_accepting_chats"})
    );
    // Unknown agents, other organizations' agents, offline agents, and `offline` for agents.
    let r = alice
        .request(
            "set_routing_status",
            json!({"status": "accepting_chats", "agent_id": "ghost@acme.test"}),
        )
        .await;
    assert_eq!(r["payload"]["error"]["type"], "not_found");
    let r = alice
        .request(
            "set_routing_status",
            json!({"status": "accepting_chats", "agent_id": "eve@globex.test"}),
        )
        .await;
    assert_eq!(
        r["payload"]["error"]["type"], "not_found",
        "other tenants look absent: {r}"
    );
    let r = alice
        .request(
            "set_routing_status",
            json!({"status": "accepting_chats", "agent_id": "carol@acme.test"}),
        )
        .await;
    assert_eq!(r["payload"]["error"]["type"], "agent_offline");
    let r = alice
        .request("set_routing_status", json!({"status": "offline"}))
        .await;
    assert_eq!(r["payload"]["error"]["type"], "validation");
}

#[tokio::test]
async fn away_counts_only_when_every_connection_is_away() {
    let s = TestServer::start().await;
    let mut a1 = s.login("alice-pat-1").await;
    let mut a2 = s.login("alice-pat-2").await;
    let mut bob = s.login("bob-pat-1").await;
    let r = a1.request("set_away_status", json!({"away": true})).await;
    assert_eq!(r["success"], true);
    bob.no_push("routing_status_set", QUIET).await;
    let list = bob.request("list_routing_statuses", json!({})).await;
    assert_eq!(
        status_of(&list["payload"], "alice@acme.test"),
        "accepting_chats"
    );
    a2.request("set_away_status", json!({"away": true})).await;
    let p = bob.push("routing_status_set").await;
    assert_eq!(
        p["payload"],
        json!({"agent_id": "alice@acme.test", "status": "not_accepting_chats"})
    );
    a1.request("set_away_status", json!({"away": false})).await;
    let p = bob.push("routing_status_set").await;
    assert_eq!(p["payload"]["status"], "accepting_chats");
    // The one connection that was not away goes: only an away one is left.
    drop(a1);
    let p = bob.push("routing_status_set").await;
    assert_eq!(
        p["payload"],
        json!({"agent_id": "alice@acme.test", "status": "not_accepting_chats"})
    );
    // Both sessions gone: offline.
    drop(a2);
    let p = bob.push("routing_status_set").await;
    assert_eq!(
        p["payload"],
        json!({"agent_id": "alice@acme.test", "status": "offline"})
    );
    // A connection that logs in away does not make the agent available.
    let mut away = s.rtm().await;
    away.request(
        "login",
        json!({"token": "Bearer alice-pat-1", "away": true}),
    )
    .await;
    let p = bob.push("routing_status_set").await;
    assert_eq!(p["payload"]["status"], "not_accepting_chats");
    // Web has no set_away_status.
    let (code, body) = s
        .web(
            "set_away_status",
            Some("Bearer bob-pat-1"),
            json!({"away": true}),
        )
        .await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (400, Some("validation"))
    );
}

#[tokio::test]
async fn logout_ends_every_session_of_the_agent() {
    let s = TestServer::start().await;
    let mut a1 = s.login("alice-pat-1").await;
    let mut a2 = s.login("alice-pat-2").await;
    let mut bob = s.login("bob-pat-1").await;
    a1.push("routing_status_set").await; // bob online
    let r = a1.request("logout", json!({})).await;
    assert_eq!(
        (r["success"].as_bool(), &r["payload"]),
        (Some(true), &json!({}))
    );
    assert!(a1.closed_soon().await, "the logged-out connection closes");
    let d = a2.disconnected().await;
    assert_eq!(d["payload"]["reason"], "agent_logged_out_remotely");
    let p = bob.push("routing_status_set").await;
    assert_eq!(
        p["payload"],
        json!({"agent_id": "alice@acme.test", "status": "offline"})
    );
}

#[tokio::test]
async fn shutdown_tells_every_session_why() {
    let mut s = TestServer::start().await;
    let mut alice = s.login("alice-pat-1").await;
    let mut anon = s.rtm().await;
    let stop = tokio::spawn(async move {
        s.stop().await;
        s
    });
    let d = alice.disconnected().await;
    assert_eq!(d["payload"]["reason"], "internal_error");
    assert_eq!(d["payload"]["data"]["detail"], "shutdown");
    let d = anon.disconnected().await;
    assert_eq!(d["payload"]["reason"], "internal_error");
    let s = stop.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(s.addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn update_session_swaps_the_token_of_a_live_session() {
    let s = TestServer::start().await;
    // Logged in with a read-only token: status changes are refused.
    let mut alice = s.login("alice-ro-1").await;
    let set = json!({"status": "not_accepting_chats"});
    let r = alice.request("set_routing_status", set.clone()).await;
    assert_eq!(r["payload"]["error"]["type"], "authorization", "{r}");
    let update = |token: &str| json!({"action": "update_session", "version": "3.6", "payload": {"token": format!("Bearer {token}")}});
    // 3.6 only; the token must be valid and the same agent's.
    let r = alice
        .request("update_session", json!({"token": "Bearer alice-pat-1"}))
        .await;
    assert_eq!(r["payload"]["error"]["type"], "validation", "{r}");
    let r = alice.request_frame(update("nope")).await;
    assert_eq!(r["payload"]["error"]["type"], "authentication", "{r}");
    let r = alice.request_frame(update("bob-pat-1")).await;
    assert_eq!(r["payload"]["error"]["type"], "authorization", "{r}");
    let r = alice.request("set_routing_status", set.clone()).await;
    assert_eq!(r["payload"]["error"]["type"], "authorization", "unchanged");
    // The full token widens the session; the connection stays.
    let r = alice.request_frame(update("alice-pat-1")).await;
    assert_eq!(
        (r["success"].as_bool(), &r["payload"]),
        (Some(true), &json!({})),
        "{r}"
    );
    let r = alice.request("set_routing_status", set.clone()).await;
    assert_eq!(r["success"], true, "{r}");
    // And a restricted token narrows it again.
    let r = alice.request_frame(update("alice-ro-1")).await;
    assert_eq!(r["success"], true, "{r}");
    let r = alice.request("set_routing_status", set).await;
    assert_eq!(r["payload"]["error"]["type"], "authorization", "{r}");
    // Not a Web method.
    let (code, _) = s
        .web(
            "update_session",
            Some("Bearer alice-pat-1"),
            json!({"token": "Bearer alice-pat-1"}),
        )
        .await;
    assert_eq!(code, 400);
}
