//! Customer monitoring: `customer_monitoring_level` at login decides which
//! sessions hear about which customers; `incoming_customers` after login,
//! `incoming_customer` when a customer arrives, `customer_transferred` when
//! a transfer takes a customer out of an agent's sight, `customer_left`.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

async fn login(s: &TestServer, token: &str, level: Option<&str>) -> Rtm {
    let mut rtm = s.rtm().await;
    let mut payload = json!({"token": format!("Bearer {token}")});
    if let Some(l) = level {
        payload["customer_monitoring_level"] = json!(l);
    }
    let r = rtm.request("login", payload).await;
    assert_eq!(r["success"], true, "{r}");
    rtm
}

fn ids(list: &Value) -> Vec<String> {
    list["customers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn monitoring_levels_decide_who_hears_about_customers() {
    let s = TestServer::start().await;
    // Nobody to report yet: no `incoming_customers` at all.
    let mut alice = login(&s, "alice-pat-1", None).await;
    alice.no_push("incoming_customers", QUIET).await;
    let mut bob = login(&s, "bob-pat-1", Some("online")).await;
    let r = bob
        .request(
            "set_routing_status",
            json!({"status": "not_accepting_chats"}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let mut carol = login(&s, "carol-pat-1", Some("chatting")).await;
    // A level outside the reference's list is refused.
    let mut x = s.rtm().await;
    let r = x
        .request(
            "login",
            json!({"token": "Bearer bob-pat-1", "customer_monitoring_level": "all"}),
        )
        .await;
    assert_eq!(r["payload"]["error"]["type"], "validation", "{r}");

    // A customer arrives: `online` hears it, `my` and `chatting` do not.
    let (mut cust, customer_id) = s.customer("acme").await;
    let p = bob.push("incoming_customer").await;
    assert_eq!(p["payload"]["id"], json!(customer_id));
    alice.no_push("incoming_customer", QUIET).await;
    carol.no_push("incoming_customer", QUIET).await;

    // It starts a chat, routed to Alice.
    let r = cust
        .request(
            "start_chat",
            json!({"chat": {"thread": {"events": [{"type": "message", "text": "hi"}]}}}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let chat_id = r["payload"]["chat_id"].as_str().unwrap().to_owned();
    alice.push("incoming_chat").await;
    // Sessions logging in now list it by their level: Alice's second
    // session keeps her level (`my`, her chat); an idle `chatting` session
    // sees the active chat.
    let mut alice2 = login(&s, "alice-pat-2", None).await;
    let list = alice2.push("incoming_customers").await["payload"].clone();
    assert_eq!(list["customer_monitoring_level"], "my");
    assert_eq!(ids(&list), vec![customer_id.clone()]);
    assert_eq!(list["customers"][0]["id"], json!(customer_id));
    // A token without `customers:ro` hears nothing about customers.
    let mut limited = s.rtm().await;
    let r = limited
        .request("login", json!({"token": "Bearer carol-access-1"}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    limited.no_push("incoming_customers", QUIET).await;
    let mut carol2 = login(&s, "carol-pat-1", None).await;
    let list = carol2.push("incoming_customers").await["payload"].clone();
    assert_eq!(
        list["customer_monitoring_level"], "chatting",
        "Carol's level is kept"
    );
    assert_eq!(ids(&list), vec![customer_id.clone()]);

    // Transferred to group 1: Bob (group 0 only) loses sight of the customer.
    let r = alice
        .request(
            "transfer_chat",
            json!({"id": chat_id, "target": {"type": "group", "ids": [1]}, "ignore_agents_availability": true}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let p = bob.push("customer_transferred").await;
    assert_eq!(
        p["payload"],
        json!({"id": customer_id, "transferred_to": {"group_ids": [1]}, "followed": false})
    );
    carol.no_push("customer_transferred", QUIET).await;

    // The customer leaves: those who still monitor it hear so.
    drop(cust);
    let p = carol.push("customer_left").await;
    assert_eq!(p["payload"]["id"], json!(customer_id));
    assert!(p["payload"]["left_at"].as_str().is_some());
    bob.no_push("customer_left", QUIET).await;
}
