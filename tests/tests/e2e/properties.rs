//! Properties end to end: definitions through the Configuration API, the
//! six methods for agents and customers, access per location and requester
//! kind, their pushes (customers hear only what they may read), events of
//! older threads, durability, and the `list_archives` property filter.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);
const ALICE: Option<&str> = Some("Bearer alice-pat-1");

async fn register(s: &TestServer, auth: Option<&str>, body: Value) -> (u16, Value) {
    s.config("register_property", auth, body).await
}

#[tokio::test]
async fn definitions_are_registered_listed_and_unregistered() {
    let s = TestServer::start().await;
    let priority = json!({
        "name": "priority", "owner_client_id": "crm", "type": "int",
        "access": {"chat": {"agent": ["read", "write"], "customer": ["read"]},
                   "thread": {"agent": ["read", "write"]}},
        "range": {"from": 1, "to": 5}, "description": "1 = low"
    });
    let (code, r) = register(&s, ALICE, priority.clone()).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r, json!({}));
    let (code, r) = register(&s, ALICE, priority.clone()).await;
    assert_eq!(
        (code, r["error"]["type"].clone()),
        (409, json!("already_exists"))
    );
    for (bad, why) in [
        (
            json!({"name": "x", "owner_client_id": "routing", "type": "bool", "access": {"chat": {}}}),
            "built-in namespace",
        ),
        (
            json!({"name": "a b", "owner_client_id": "crm", "type": "bool", "access": {"chat": {}}}),
            "bad name",
        ),
        (
            json!({"name": "x", "owner_client_id": "crm", "type": "float", "access": {"chat": {}}}),
            "bad type",
        ),
        (
            json!({"name": "x", "owner_client_id": "crm", "type": "bool", "access": {}}),
            "no location",
        ),
        (
            json!({"name": "x", "owner_client_id": "crm", "type": "string", "access": {"chat": {}}, "range": {"from": 1, "to": 2}}),
            "range on a string",
        ),
        (
            json!({"name": "x", "owner_client_id": "crm", "type": "int", "access": {"chat": {}}, "default_value": "no"}),
            "default of the wrong type",
        ),
    ] {
        let (code, r) = register(&s, ALICE, bad).await;
        assert_eq!(
            (code, r["error"]["type"].clone()),
            (400, json!("validation")),
            "{why}: {r}"
        );
    }
    // A normal agent has no properties scope.
    let (code, r) = register(
        &s,
        Some("Bearer bob-pat-1"),
        json!({"name": "y", "owner_client_id": "crm", "type": "bool", "access": {"chat": {}}}),
    )
    .await;
    assert_eq!(
        (code, r["error"]["type"].clone()),
        (403, json!("authorization"))
    );
    let (code, r) = register(
        &s,
        ALICE,
        json!({"name": "note", "owner_client_id": "other", "type": "string", "access": {"event": {"agent": ["write"]}}}),
    )
    .await;
    assert_eq!(code, 200, "{r}");
    let mut expected = priority.clone();
    let obj = expected.as_object_mut().unwrap();
    obj.remove("name");
    obj.remove("owner_client_id");
    let (code, list) = s
        .config("list_properties", ALICE, json!({"owner_client_id": "crm"}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(list, json!({"crm": {"priority": expected}}));
    // Definitions survive a restart; unregistering removes one.
    let s = s.restart().await;
    let (_, list) = s.config("list_properties", ALICE, json!({})).await;
    assert_eq!(list.as_object().unwrap().len(), 2, "{list}");
    let key = json!({"name": "priority", "owner_client_id": "crm"});
    let (code, _) = s.config("unregister_property", ALICE, key.clone()).await;
    assert_eq!(code, 200);
    let (code, r) = s.config("unregister_property", ALICE, key).await;
    assert_eq!(
        (code, r["error"]["type"].clone()),
        (404, json!("not_found"))
    );
    let (_, list) = s.config("list_properties", ALICE, json!({})).await;
    assert_eq!(
        list,
        json!({"other": {"note": {"type": "string", "access": {"event": {"agent": ["write"]}}}}})
    );
}

#[tokio::test]
async fn chat_thread_and_event_properties_with_their_pushes() {
    let s = TestServer::start().await;
    for def in [
        json!({"name": "priority", "owner_client_id": "crm", "type": "int",
               "access": {"chat": {"agent": ["read", "write"], "customer": ["read"]},
                          "thread": {"agent": ["read", "write"]},
                          "event": {"agent": ["read", "write"], "customer": ["read"]}},
               "range": {"from": 1, "to": 5}}),
        json!({"name": "secret", "owner_client_id": "crm", "type": "string",
               "access": {"chat": {"agent": ["read", "write"]}}}),
    ] {
        let (code, r) = register(&s, ALICE, def).await;
        assert_eq!(code, 200, "{r}");
    }
    let mut alice = s.login("alice-pat-1").await;
    let (mut cust, _) = s.customer("acme").await;
    let started = cust.start_chat_saying("hello").await;
    let chat_id = started["chat_id"].as_str().unwrap().to_owned();
    let thread_id = started["thread_id"].as_str().unwrap().to_owned();
    let event_id = started["event_ids"][0].as_str().unwrap().to_owned();
    alice.push("incoming_chat").await;
    cust.push("incoming_chat").await;

    // Chat properties: the agent hears everything that changed, the
    // customer only what it may read.
    let upd = json!({"id": chat_id, "properties": {"crm": {"priority": 3, "secret": "vip"}}});
    let r = alice.request("update_chat_properties", upd.clone()).await;
    assert_eq!(r["success"], true, "{r}");
    let p = alice.push("chat_properties_updated").await;
    assert_eq!(
        p["payload"],
        json!({"chat_id": chat_id, "properties": {"crm": {"priority": 3, "secret": "vip"}}})
    );
    let p = cust.push("chat_properties_updated").await;
    assert_eq!(
        p["payload"],
        json!({"chat_id": chat_id, "properties": {"crm": {"priority": 3}}})
    );
    // The same values again change nothing and push nothing.
    assert_eq!(
        alice.request("update_chat_properties", upd).await["success"],
        true
    );
    alice.no_push("chat_properties_updated", QUIET).await;
    // Only the changed property is pushed.
    let r = alice
        .request(
            "update_chat_properties",
            json!({"id": chat_id, "properties": {"crm": {"priority": 3, "secret": "gold"}}}),
        )
        .await;
    assert_eq!(r["success"], true);
    let p = alice.push("chat_properties_updated").await;
    assert_eq!(
        p["payload"]["properties"],
        json!({"crm": {"secret": "gold"}})
    );
    cust.no_push("chat_properties_updated", QUIET).await;
    // What the customer reads of the chat.
    let r = cust.request("get_chat", json!({"chat_id": chat_id})).await;
    assert_eq!(
        r["payload"]["properties"],
        json!({"crm": {"priority": 3}}),
        "{r}"
    );
    let r = alice.request("get_chat", json!({"chat_id": chat_id})).await;
    assert_eq!(
        r["payload"]["properties"],
        json!({"crm": {"priority": 3, "secret": "gold"}})
    );

    // Refusals: unregistered, wrong type, out of range, wrong location,
    // the customer writing what it may only read, a missing id.
    for (who, action, payload, kind) in [
        (
            "agent",
            "update_chat_properties",
            json!({"id": chat_id, "properties": {"crm": {"nope": 1}}}),
            "validation",
        ),
        (
            "agent",
            "update_chat_properties",
            json!({"id": chat_id, "properties": {"crm": {"priority": "3"}}}),
            "validation",
        ),
        (
            "agent",
            "update_chat_properties",
            json!({"id": chat_id, "properties": {"crm": {"priority": 9}}}),
            "validation",
        ),
        (
            "agent",
            "update_thread_properties",
            json!({"chat_id": chat_id, "thread_id": thread_id, "properties": {"crm": {"secret": "x"}}}),
            "validation",
        ),
        (
            "agent",
            "update_chat_properties",
            json!({"chat_id": chat_id, "properties": {"crm": {"priority": 2}}}),
            "validation",
        ),
        (
            "agent",
            "update_chat_properties",
            json!({"id": chat_id, "properties": ["crm"]}),
            "validation",
        ),
        (
            "customer",
            "update_chat_properties",
            json!({"id": chat_id, "properties": {"crm": {"priority": 2}}}),
            "authorization",
        ),
        (
            "customer",
            "delete_chat_properties",
            json!({"id": chat_id, "properties": {"crm": ["priority"]}}),
            "authorization",
        ),
        (
            "agent",
            "update_thread_properties",
            json!({"chat_id": chat_id, "thread_id": "NOPE", "properties": {"crm": {"priority": 2}}}),
            "not_found",
        ),
    ] {
        let conn = if who == "agent" {
            &mut alice
        } else {
            &mut cust
        };
        let r = conn.request(action, payload.clone()).await;
        assert_eq!(r["payload"]["error"]["type"], kind, "{payload} -> {r}");
    }

    // Deleting: the agent hears it; the customer cannot read `secret`, so
    // it hears nothing.
    let r = alice
        .request(
            "delete_chat_properties",
            json!({"id": chat_id, "properties": {"crm": ["secret"]}}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let p = alice.push("chat_properties_deleted").await;
    assert_eq!(
        p["payload"],
        json!({"chat_id": chat_id, "properties": {"crm": ["secret"]}})
    );
    cust.no_push("chat_properties_deleted", QUIET).await;

    // Thread properties: agents only.
    let r = alice
        .request("update_thread_properties", json!({"chat_id": chat_id, "thread_id": thread_id, "properties": {"crm": {"priority": 2}}}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let p = alice.push("thread_properties_updated").await;
    assert_eq!(
        p["payload"],
        json!({"chat_id": chat_id, "thread_id": thread_id, "properties": {"crm": {"priority": 2}}})
    );
    cust.no_push("thread_properties_updated", QUIET).await;

    // Event properties, by the agent and (the test namespace) the customer.
    let r = alice
        .request("update_event_properties", json!({"chat_id": chat_id, "thread_id": thread_id, "event_id": event_id, "properties": {"crm": {"priority": 5}}}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    for conn in [&mut alice, &mut cust] {
        let p = conn.push("event_properties_updated").await;
        assert_eq!(
            p["payload"],
            json!({"chat_id": chat_id, "thread_id": thread_id, "event_id": event_id, "properties": {"crm": {"priority": 5}}})
        );
    }
    let r = cust
        .request("update_event_properties", json!({"chat_id": chat_id, "thread_id": thread_id, "event_id": event_id, "properties": {"test": {"string_property": "by customer"}}}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    alice.push("event_properties_updated").await;
    // An event sent with properties: the customer's copy keeps what it reads.
    let (code, r) = s
        .web("send_event", ALICE, json!({"chat_id": chat_id, "event": {"type": "message", "text": "noted", "properties": {"crm": {"priority": 1}}}}))
        .await;
    assert_eq!(code, 200, "{r}");
    let p = cust.push("incoming_event").await;
    assert_eq!(
        p["payload"]["event"]["properties"],
        json!({"crm": {"priority": 1}})
    );
    let (code, r) = s
        .web("send_event", ALICE, json!({"chat_id": chat_id, "event": {"type": "message", "text": "x", "properties": {"crm": {"secret": "no"}}}}))
        .await;
    assert_eq!(
        (code, r["error"]["type"].clone()),
        (400, json!("validation")),
        "{r}"
    );

    // An event of an older thread is changed in the store.
    let r = alice
        .request("deactivate_chat", json!({"id": chat_id}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let r = alice
        .request(
            "resume_chat",
            json!({"chat": {"id": chat_id, "properties": {"crm": {"priority": 4}}}}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let r = alice
        .request("delete_event_properties", json!({"chat_id": chat_id, "thread_id": thread_id, "event_id": event_id, "properties": {"test": ["string_property"]}}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let p = alice.push("event_properties_deleted").await;
    assert_eq!(
        p["payload"]["properties"],
        json!({"test": ["string_property"]})
    );
    let r = alice
        .request("update_event_properties", json!({"chat_id": chat_id, "thread_id": thread_id, "event_id": event_id, "properties": {"crm": {"priority": 2}}}))
        .await;
    assert_eq!(r["success"], true, "{r}");

    // Everything is durable.
    drop((alice, cust));
    let s = s.restart().await;
    let (_, chat) = s
        .web(
            "get_chat",
            ALICE,
            json!({"chat_id": chat_id, "thread_id": thread_id}),
        )
        .await;
    assert_eq!(
        chat["thread"]["properties"],
        json!({"crm": {"priority": 2}}),
        "{chat}"
    );
    assert_eq!(chat["properties"], json!({"crm": {"priority": 4}}));
    assert_eq!(
        chat["thread"]["events"][0]["properties"],
        json!({"crm": {"priority": 2}}),
        "{chat}"
    );

    // The archive filter reads a thread's property, else its chat's.
    for (value, expected) in [(2, 1), (4, 1), (3, 0)] {
        let (_, r) = s
            .web(
                "list_archives",
                ALICE,
                json!({"filters": {"properties": {"crm": {"priority": {"values": [value]}}}}}),
            )
            .await;
        assert_eq!(r["found_chats"], expected, "priority {value}: {r}");
    }
    // start_chat validates its properties too.
    let (code, r) = s
        .web(
            "start_chat",
            ALICE,
            json!({"chat": {"properties": {"crm": {"nope": true}}}}),
        )
        .await;
    assert_eq!(
        (code, r["error"]["type"].clone()),
        (400, json!("validation")),
        "{r}"
    );
}
