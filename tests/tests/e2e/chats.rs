//! Chats end to end: customers start chats, routing hands them to agents,
//! both sides exchange events, chats close; recipients of every push; the
//! routing rules; durability across a restart.

use crate::harness::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

fn message(text: &str) -> Value {
    json!({"type": "message", "text": text})
}

#[tokio::test]
async fn customer_and_agent_chat_over_rtm() {
    let s = TestServer::start().await;
    let mut alice = s.login("alice-pat-1").await;
    let mut carol = s.login("carol-pat-1").await; // group 1 only, not accepting
    let (mut cust, cust_id) = s.customer("acme").await;
    let r = cust
        .request(
            "start_chat",
            json!({"chat": {"thread": {"events": [message("Hello, I need help")]}}}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let chat_id = r["payload"]["chat_id"].as_str().unwrap().to_owned();
    let thread_id = r["payload"]["thread_id"].as_str().unwrap().to_owned();
    assert_eq!(r["payload"]["event_ids"], json!([format!("{thread_id}_1")]));
    // The customer SDK resolves start_chat on the incoming_chat push that
    // carries the request_id.
    let own = cust.push("incoming_chat").await;
    assert_eq!(own["request_id"], r["request_id"]);
    assert_eq!(own["payload"]["chat"]["id"], chat_id);
    // Routed to Alice (the only accepting agent of group 0).
    let p = alice.push("incoming_chat").await;
    let chat = &p["payload"]["chat"];
    assert_eq!(chat["id"], chat_id);
    assert!(p.get("request_id").is_none());
    let users: Vec<(String, bool)> = chat["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["id"].as_str().unwrap().to_owned(),
                u["present"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(
        users.contains(&(cust_id.clone(), true))
            && users.contains(&("alice@acme.test".into(), true)),
        "{users:?}"
    );
    assert_eq!(chat["thread"]["events"][0]["text"], "Hello, I need help");
    assert_eq!(chat["thread"]["events"][0]["author_id"], cust_id);
    assert_eq!(chat["thread"]["active"], true);
    assert_eq!(chat["access"], json!({"group_ids": [0]}));
    // Carol is an administrator: she sees the new chat, but not its events.
    carol.push("incoming_chat").await;

    // Agent → customer.
    let r = alice
        .request(
            "send_event",
            json!({"chat_id": chat_id, "event": message("Hi! How can I help?")}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let event_id = r["payload"]["event_id"].as_str().unwrap().to_owned();
    assert_eq!(event_id, format!("{thread_id}_2"));
    let p = cust.push("incoming_event").await;
    assert_eq!(p["payload"]["event"]["id"], event_id);
    assert_eq!(p["payload"]["event"]["author_id"], "alice@acme.test");
    assert_eq!(p["payload"]["thread_id"], thread_id);
    let own = alice.push("incoming_event").await;
    assert_eq!(
        own["request_id"], r["request_id"],
        "the requester's copy carries its request_id"
    );
    // Customer → agent, with a custom_id.
    let r = cust
        .request("send_event", json!({"chat_id": chat_id, "event": {"type": "message", "text": "My order is late", "custom_id": "c-1"}}))
        .await;
    assert_eq!(r["success"], true);
    let p = alice.push("incoming_event").await;
    assert_eq!(p["payload"]["event"]["text"], "My order is late");
    assert_eq!(p["payload"]["event"]["custom_id"], "c-1");
    let own = cust.push("incoming_event").await;
    assert_eq!(own["request_id"], r["request_id"]);
    // An agents-only note never reaches the customer.
    let r = alice
        .request("send_event", json!({"chat_id": chat_id, "event": {"type": "message", "text": "internal note", "visibility": "agents"}}))
        .await;
    assert_eq!(r["success"], true);
    alice.push("incoming_event").await;
    cust.no_push("incoming_event", QUIET).await;
    carol.no_push("incoming_event", QUIET).await;
    // Other event types.
    for event in [
        json!({"type": "custom", "content": {"order": 42}}),
        json!({"type": "rich_message", "template_id": "quick_replies", "elements": [{"title": "Pick", "buttons": [{"text": "Yes", "postback_id": "yes", "user_ids": []}]}]}),
        json!({"type": "file", "url": "https://files.example/x.png", "name": "x.png"}),
        json!({"type": "system_message", "system_message_type": "manual", "text": "note"}),
        json!({"type": "form", "form_id": "rating", "fields": [{"type": "rating", "id": "1", "label": "Rate us"}]}),
        json!({"type": "filled_form", "form_id": "prechat", "fields": [{"type": "name", "id": "n", "label": "Name", "answer": "Jo"}]}),
    ] {
        let r = alice
            .request("send_event", json!({"chat_id": chat_id, "event": event}))
            .await;
        assert_eq!(r["success"], true, "{r}");
        let p = cust.push("incoming_event").await;
        assert_eq!(p["payload"]["event"]["type"], event["type"]);
    }
    // Bad events are refused.
    for (event, text) in [
        (json!({"type": "message", "text": ""}), "must not be empty"),
        (
            json!({"type": "message", "text": "x".repeat(17 * 1024)}),
            "exceeds",
        ),
        (
            json!({"type": "rich_message", "template_id": "nope", "elements": []}),
            "template_id",
        ),
        (json!({"type": "message"}), "missing field `text`"),
        (json!({"type": "teleport"}), "unknown variant"),
    ] {
        let r = alice
            .request("send_event", json!({"chat_id": chat_id, "event": event}))
            .await;
        assert_eq!(r["payload"]["error"]["type"], "validation", "{r}");
        assert!(
            r["payload"]["error"]["message"]
                .as_str()
                .unwrap()
                .contains(text),
            "{r}"
        );
    }
    let r = cust.request("send_event", json!({"chat_id": chat_id, "event": {"type": "system_message", "system_message_type": "x"}})).await;
    assert_eq!(r["payload"]["error"]["type"], "validation");

    // get_chat: the customer does not see the agents-only note.
    let agent_view = alice.request("get_chat", json!({"chat_id": chat_id})).await;
    let cust_view = cust.request("get_chat", json!({"chat_id": chat_id})).await;
    let texts = |v: &Value| -> Vec<String> {
        v["payload"]["thread"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["text"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(texts(&agent_view).contains(&"internal note".to_owned()));
    assert!(!texts(&cust_view).contains(&"internal note".to_owned()));
    assert_eq!(
        agent_view["payload"]["thread"]["events"]
            .as_array()
            .unwrap()
            .len(),
        10
    );

    // list_chats on both sides.
    let l = alice.request("list_chats", json!({})).await;
    assert_eq!(l["payload"]["found_chats"], 1);
    assert_eq!(l["payload"]["chats_summary"][0]["id"], chat_id);
    assert_eq!(
        l["payload"]["chats_summary"][0]["last_thread_summary"]["active"],
        true
    );
    assert_eq!(
        l["payload"]["chats_summary"][0]["last_event_per_type"]["message"]["event"]["text"],
        "internal note"
    );
    let l = cust.request("list_chats", json!({})).await;
    assert_eq!(l["payload"]["total_chats"], 1);
    assert_eq!(
        l["payload"]["chats_summary"][0]["last_event_per_type"]["message"]["event"]["text"],
        "My order is late"
    );

    // Deactivate: everyone who saw the chat hears it.
    let r = alice
        .request("deactivate_chat", json!({"id": chat_id}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let p = cust.push("chat_deactivated").await;
    assert_eq!(
        p["payload"],
        json!({"chat_id": chat_id, "thread_id": thread_id, "user_id": "alice@acme.test"})
    );
    carol.push("chat_deactivated").await;
    alice.push("chat_deactivated").await;
    let r = alice
        .request(
            "send_event",
            json!({"chat_id": chat_id, "event": message("late")}),
        )
        .await;
    assert_eq!(r["payload"]["error"]["type"], "chat_inactive");
    let r = alice
        .request("deactivate_chat", json!({"id": chat_id}))
        .await;
    assert_eq!(r["payload"]["error"]["type"], "chat_inactive");
    let r = cust
        .request(
            "send_event",
            json!({"chat_id": chat_id, "event": message("ps"), "attach_to_last_thread": true}),
        )
        .await;
    assert_eq!(
        r["success"], true,
        "attach_to_last_thread appends to the closed thread: {r}"
    );
    // Not found and no access.
    let r = alice
        .request("get_chat", json!({"chat_id": "NOSUCHCHAT"}))
        .await;
    assert_eq!(r["payload"]["error"]["type"], "not_found");
    let mut eve = s.login("eve-pat-1").await;
    let r = eve.request("get_chat", json!({"chat_id": chat_id})).await;
    assert_eq!(
        r["payload"]["error"]["type"], "not_found",
        "another organization's chat does not exist: {r}"
    );
}

const ROUTING: &str = r#"
[[organization]]
id = "route"
name = "Route"
[[organization.group]]
id = 0
name = "General"
[[organization.group]]
id = 5
name = "Support"
[[organization.agent]]
id = "first@r.test"
role = "owner"
groups = [{ id = 5, priority = "first" }]
max_chats = 1
tokens = ["first-token"]
login_status = "not_accepting_chats"
[[organization.agent]]
id = "normal@r.test"
groups = [5]
max_chats = 1
tokens = ["normal-token"]
[[organization.agent]]
id = "last@r.test"
groups = [{ id = 5, priority = "last" }]
max_chats = 1
tokens = ["last-token"]
[[organization.agent]]
id = "super@r.test"
groups = [{ id = 5, priority = "supervisor" }]
max_chats = 5
tokens = ["super-token"]
"#;

async fn routing_server() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.provision = Some(toml_spec(ROUTING));
    TestServer::start_with(dir, cfg).await
}

/// Waits for the `incoming_chat` that makes `agent` a present user of a chat
/// (every agent with access also gets `incoming_chat` for new chats).
async fn assigned(c: &mut Rtm, agent: &str) -> String {
    loop {
        let p = c.push("incoming_chat").await;
        let users = p["payload"]["chat"]["users"].as_array().unwrap();
        if users
            .iter()
            .any(|u| u["id"] == agent && u["present"] == true)
        {
            return p["payload"]["chat"]["id"].as_str().unwrap().to_owned();
        }
    }
}

async fn start_in(c: &mut Rtm, group: u32) -> Value {
    c.request(
        "start_chat",
        json!({"chat": {"access": {"group_ids": [group]}, "thread": {"events": [message("hi")]}}}),
    )
    .await
}

#[tokio::test]
async fn routing_priorities_capacity_and_queue() {
    let s = routing_server().await;
    // Nobody accepting in group 5 yet: the customer is told the group is offline.
    let (mut early, _) = s.customer("route").await;
    let r = start_in(&mut early, 5).await;
    assert_eq!(r["payload"]["error"]["type"], "group_offline", "{r}");
    let r = early
        .request("list_group_statuses", json!({"all": true}))
        .await;
    assert_eq!(r["payload"]["groups_status"]["5"], "offline");

    let mut first = s.login("first-token").await; // not accepting at login
    let mut normal = s.login("normal-token").await;
    let mut last = s.login("last-token").await;
    let mut sup = s.login("super-token").await;
    let r = early
        .request("list_group_statuses", json!({"group_ids": [5, 99]}))
        .await;
    assert_eq!(r["payload"]["groups_status"], json!({"5": "online"}));

    // normal before last; the supervisor never.
    let (mut c1, _) = s.customer("route").await;
    let r = start_in(&mut c1, 5).await;
    let chat1 = r["payload"]["chat_id"].as_str().unwrap().to_owned();
    assert_eq!(assigned(&mut normal, "normal@r.test").await, chat1);
    let (mut c2, _) = s.customer("route").await;
    let r = start_in(&mut c2, 5).await;
    let chat2 = r["payload"]["chat_id"].as_str().unwrap().to_owned();
    assert_eq!(
        assigned(&mut last, "last@r.test").await,
        chat2,
        "last takes chats only when normal is full"
    );
    // Everyone full (first is not accepting): queue, in arrival order.
    let (mut c3, _) = s.customer("route").await;
    let r = start_in(&mut c3, 5).await;
    assert_eq!(r["success"], true, "{r}");
    let chat3 = r["payload"]["chat_id"].as_str().unwrap().to_owned();
    let q = c3.push("queue_position_updated").await;
    assert_eq!(
        (
            q["payload"]["chat_id"].as_str(),
            q["payload"]["queue"]["position"].as_u64()
        ),
        (Some(chat3.as_str()), Some(1))
    );
    let own = c3.push("incoming_chat").await;
    assert_eq!(own["payload"]["chat"]["thread"]["queue"]["position"], 1);
    let (mut c4, _) = s.customer("route").await;
    let r = start_in(&mut c4, 5).await;
    let chat4 = r["payload"]["chat_id"].as_str().unwrap().to_owned();
    let q = c4.push("queue_position_updated").await;
    assert_eq!(q["payload"]["queue"]["position"], 2);
    let agents_view = sup.push("queue_positions_updated").await;
    assert!(
        agents_view["payload"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["chat_id"] == chat3)
    );
    // Both queued chats appear in a fresh agent login's chats_summary.
    let mut sup2 = s.rtm().await;
    let r = sup2
        .request("login", json!({"token": "Bearer super-token"}))
        .await;
    let ids: Vec<&str> = r["payload"]["chats_summary"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&chat3.as_str()) && ids.contains(&chat4.as_str()),
        "{ids:?}"
    );

    // Capacity frees: the oldest queued chat goes first.
    let r = normal
        .request("deactivate_chat", json!({"id": chat1}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(
        assigned(&mut normal, "normal@r.test").await,
        chat3,
        "queue order"
    );
    let q = c4.push("queue_position_updated").await;
    assert_eq!(q["payload"]["queue"]["position"], 1);
    // An agent who starts accepting takes the next one; first priority.
    let r = first
        .request("set_routing_status", json!({"status": "accepting_chats"}))
        .await;
    assert_eq!(r["success"], true);
    assert_eq!(assigned(&mut first, "first@r.test").await, chat4);
    // Now `first` (priority first) is full; a new chat would queue again.
    let (mut c5, _) = s.customer("route").await;
    start_in(&mut c5, 5).await;
    c5.push("queue_position_updated").await;
    // The supervisor saw every chat but was never assigned one.
    while let Some(p) = sup.pushes.pop_front() {
        if p["action"] == "incoming_chat" {
            let users = p["payload"]["chat"]["users"].as_array().unwrap();
            assert!(!users.iter().any(|u| u["id"] == "super@r.test"), "{p}");
        }
    }

    // A returning customer goes back to the previous agent when possible.
    let r = normal
        .request("deactivate_chat", json!({"id": chat3}))
        .await;
    assert_eq!(r["success"], true);
    // c5 takes normal's slot from the queue...
    assigned(&mut normal, "normal@r.test").await;
    let r = last.request("deactivate_chat", json!({"id": chat2})).await;
    assert_eq!(r["success"], true);
    // ...and c2 resumes: back to `last`, who served it before.
    let r = c2
        .request("resume_chat", json!({"chat": {"id": chat2}}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    assert!(r["payload"].get("chat_id").is_none());
    assert_eq!(assigned(&mut last, "last@r.test").await, chat2);
    let r = c2
        .request("resume_chat", json!({"chat": {"id": chat2}}))
        .await;
    assert_eq!(
        r["payload"]["error"]["type"], "validation",
        "already active: {r}"
    );
}

#[tokio::test]
async fn fifty_concurrent_starts_never_exceed_a_limit() {
    let s = routing_server().await;
    let _normal = s.login("normal-token").await;
    let _last = s.login("last-token").await;
    let mut tokens = Vec::new();
    for _ in 0..50 {
        tokens.push(s.customer_token("route", None).await.0);
    }
    let starts = tokens.iter().map(|t| {
        s.customer_web(
            "route",
            "start_chat",
            t,
            json!({"chat": {"access": {"group_ids": [5]}}}),
        )
    });
    let results = futures_util::future::join_all(starts).await;
    let ok = results.iter().filter(|(code, _)| *code == 200).count();
    assert_eq!(ok, 50, "{:?}", results.iter().find(|(c, _)| *c != 200));
    for token in ["normal-token", "last-token"] {
        let (_, body) = s
            .web(
                "list_chats",
                Some(&format!("Bearer {token}")),
                json!({"limit": 100}),
            )
            .await;
        let mine = body["chats_summary"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                c["last_thread_summary"]["active"] == true
                    && c["users"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|u| u["type"] == "agent" && u["present"] == true)
            })
            .filter(|c| {
                c["last_thread_summary"]["user_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|u| {
                        u.as_str()
                            .unwrap()
                            .starts_with(token.split('-').next().unwrap())
                    })
            })
            .count();
        assert_eq!(mine, 1, "{token} holds exactly its max_chats (1)");
    }
    let (_, body) = s
        .web(
            "list_chats",
            Some("Bearer normal-token"),
            json!({"limit": 100}),
        )
        .await;
    let queued = body["chats_summary"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["last_thread_summary"]["queue"].is_null())
        .count();
    assert_eq!(queued, 48, "everyone else waits in the queue");
}

/// A new customer starts a chat with `first`; Alice gets it and answers
/// with `reply`, then her connection closes. Returns the customer's token,
/// the customer's id and the chat id.
async fn answered_chat(s: &TestServer, first: &str, reply: &str) -> (String, String, String) {
    let mut alice = s.login("alice-pat-1").await;
    let (token, cust) = s.customer_token("acme", None).await;
    let (code, r) = s
        .customer_web(
            "acme",
            "start_chat",
            &token,
            json!({"chat": {"thread": {"events": [message(first)]}}}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    let chat_id = r["chat_id"].as_str().unwrap().to_owned();
    alice.push("incoming_chat").await;
    let r = alice
        .request(
            "send_event",
            json!({"chat_id": chat_id, "event": message(reply)}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    (token, cust, chat_id)
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_conversation_keeps_everything() {
    let s = TestServer::start().await;
    let (token, cust_id, chat_id) = answered_chat(&s, "before restart", "agent reply").await;
    let s2 = s.restart().await;
    // The customer's token survives; the chat, its thread, events and users too.
    let (code, chat) = s2
        .customer_web("acme", "get_chat", &token, json!({"chat_id": chat_id}))
        .await;
    assert_eq!(code, 200, "{chat}");
    let texts: Vec<&str> = chat["thread"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["before restart", "agent reply"]);
    assert_eq!(chat["thread"]["active"], true);
    // Alice still holds the chat: it is in her login summary, and she can go on.
    let mut alice = s2.rtm().await;
    let r = alice
        .request("login", json!({"token": "Bearer alice-pat-1"}))
        .await;
    let ids: Vec<&str> = r["payload"]["chats_summary"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![chat_id.as_str()]);
    let r = alice
        .request(
            "send_event",
            json!({"chat_id": chat_id, "event": message("after restart")}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    assert!(
        r["payload"]["event_id"].as_str().unwrap().ends_with("_3"),
        "numbering continues: {r}"
    );
    let (_, cust) = s2
        .customer_web("acme", "get_customer", &token, json!({}))
        .await;
    assert_eq!(cust["id"], cust_id);
    assert_eq!(cust["chat_ids"], json!([chat_id]));
}

#[tokio::test]
async fn customer_tokens_and_isolation() {
    let s = TestServer::start().await;
    let (code, body) = web_call(
        &s.url("/customer/token"),
        None,
        json!({"organization_id": "nope"}).to_string(),
        &[],
    )
    .await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (404, Some("not_found"))
    );
    let (code, _) = web_call(
        &s.url("/customer/token"),
        None,
        json!({"organization_id": "acme", "customer_id": "ghost"}).to_string(),
        &[],
    )
    .await;
    assert_eq!(code, 404);
    let (code, body) = web_call(&s.url("/customer/token"), None, "{}".into(), &[]).await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (400, Some("validation"))
    );
    let (token, id) = s.customer_token("acme", None).await;
    assert_eq!(token.len(), 64);
    // The same customer continues with a new token.
    let (token2, id2) = s.customer_token("acme", Some(&id)).await;
    assert_eq!(id2, id);
    assert_ne!(token2, token);
    let (code, _) = s
        .customer_web("acme", "get_customer", &token2, json!({}))
        .await;
    assert_eq!(code, 200);
    let (code, body) = s
        .customer_web(
            "acme",
            "update_customer",
            &token,
            json!({"name": "Jo", "email": "jo@example.com"}),
        )
        .await;
    assert_eq!((code, body), (200, json!({})));
    let (_, me) = s
        .customer_web("acme", "get_customer", &token, json!({}))
        .await;
    assert_eq!(
        (me["name"].as_str(), me["email"].as_str()),
        (Some("Jo"), Some("jo@example.com"))
    );
    // Customer tokens are not agent credentials and vice versa.
    let (code, _) = s
        .web("list_chats", Some(&format!("Bearer {token}")), json!({}))
        .await;
    assert_eq!(code, 401);
    let (code, _) = s
        .customer_web("acme", "get_customer", "alice-pat-1", json!({}))
        .await;
    assert_eq!(code, 401);
    // A token of one organization on another's URL is refused.
    let (code, _) = s
        .customer_web("globex", "get_customer", &token, json!({}))
        .await;
    assert_eq!(code, 401);
    // Agent-only and unknown methods on the customer API.
    let (code, body) = s
        .customer_web("acme", "set_routing_status", &token, json!({}))
        .await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (400, Some("validation"))
    );
    // Customers see only their own chats.
    let (other, _) = s.customer_token("acme", None).await;
    let _alice = s.login("alice-pat-1").await;
    let (_, r) = s
        .customer_web("acme", "start_chat", &token, json!({}))
        .await;
    let chat_id = r["chat_id"].as_str().unwrap().to_owned();
    let (code, body) = s
        .customer_web("acme", "get_chat", &other, json!({"chat_id": chat_id}))
        .await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (404, Some("not_found"))
    );
    let (code, body) = s
        .customer_web(
            "acme",
            "send_event",
            &other,
            json!({"chat_id": chat_id, "event": message("hi")}),
        )
        .await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (404, Some("not_found"))
    );
}

/// `events_seen_up_to` of each user of the chat, by user id, and the
/// `created_at` of each event of the last thread, by text (customer view).
async fn seen_and_times(
    s: &TestServer,
    token: &str,
    chat_id: &str,
) -> (HashMap<String, String>, HashMap<String, String>) {
    let (code, chat) = s
        .customer_web("acme", "get_chat", token, json!({"chat_id": chat_id}))
        .await;
    assert_eq!(code, 200, "{chat}");
    let seen = chat["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["id"].as_str().unwrap().to_owned(),
                u["events_seen_up_to"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let times = chat["thread"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["text"].as_str().unwrap().to_owned(),
                e["created_at"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (seen, times)
}

/// The author of an event has seen the chat up to it. The store keeps no
/// per-event copy of that marker: it is rebuilt from the last thread's
/// events on load, and written for every user when a new thread begins.
#[tokio::test]
async fn an_authors_seen_marker_follows_their_events_across_threads_and_restarts() {
    let s = TestServer::start().await;
    let (token, cust, chat_id) = answered_chat(&s, "hello", "reply").await;
    let alice_id = "alice@acme.test".to_owned();
    let (seen, times) = seen_and_times(&s, &token, &chat_id).await;
    assert_eq!(seen[&alice_id], times["reply"], "{seen:?} {times:?}");
    assert_eq!(seen[&cust], times["hello"], "{seen:?} {times:?}");
    let s = s.restart().await;
    assert_eq!(
        seen_and_times(&s, &token, &chat_id).await,
        (seen.clone(), times.clone()),
        "the same markers after a restart"
    );
    // The marker only moves forward: an event after a later mark keeps it.
    let later = "2031-05-06T07:08:09.000001Z";
    let (code, _) = s
        .customer_web(
            "acme",
            "mark_events_as_seen",
            &token,
            json!({"chat_id": chat_id, "seen_up_to": later}),
        )
        .await;
    assert_eq!(code, 200);
    let (code, r) = s
        .customer_web(
            "acme",
            "send_event",
            &token,
            json!({"chat_id": chat_id, "event": message("again")}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    let (seen_now, _) = seen_and_times(&s, &token, &chat_id).await;
    assert_eq!(seen_now[&cust], later);
    // A new thread: the first thread's events are no longer loaded, and
    // the markers they moved are still there after another restart.
    let alice = s.login("alice-pat-1").await;
    let (code, r) = s
        .customer_web("acme", "deactivate_chat", &token, json!({"id": chat_id}))
        .await;
    assert_eq!(code, 200, "{r}");
    let (code, r) = s
        .customer_web(
            "acme",
            "resume_chat",
            &token,
            json!({"chat": {"id": chat_id}}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    drop(alice);
    let s = s.restart().await;
    let (seen_after, times_after) = seen_and_times(&s, &token, &chat_id).await;
    assert!(times_after.is_empty(), "a new thread: {times_after:?}");
    assert_eq!(seen_after[&alice_id], seen[&alice_id], "{seen_after:?}");
    assert_eq!(seen_after[&cust], later, "{seen_after:?}");
}

#[tokio::test]
async fn a_restart_keeps_the_queue_and_seen_markers() {
    let s = TestServer::start().await;
    // Nobody is online: a continuous chat waits in the queue.
    let (token, _) = s.customer_token("acme", None).await;
    let (code, r) = s
        .customer_web(
            "acme",
            "start_chat",
            &token,
            json!({"continuous": true, "chat": {"thread": {"events": [message("anyone?")]}}}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    let chat_id = r["chat_id"].as_str().unwrap().to_owned();
    let (code, _) = s
        .customer_web(
            "acme",
            "mark_events_as_seen",
            &token,
            json!({"chat_id": chat_id, "seen_up_to": "2031-05-06T07:08:09.000001Z"}),
        )
        .await;
    assert_eq!(code, 200);
    let s2 = s.restart().await;
    let (_, chat) = s2
        .customer_web("acme", "get_chat", &token, json!({"chat_id": chat_id}))
        .await;
    assert_eq!(
        chat["thread"]["queue"]["position"], 1,
        "still queued: {chat}"
    );
    let me = chat["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["type"] == "customer")
        .unwrap()
        .clone();
    assert_eq!(me["events_seen_up_to"], "2031-05-06T07:08:09.000001Z");
    // The first agent to log in after the restart takes it.
    let mut alice = s2.rtm().await;
    let r = alice
        .request("login", json!({"token": "Bearer alice-pat-1"}))
        .await;
    let summary = &r["payload"]["chats_summary"][0];
    assert_eq!(summary["id"], chat_id.as_str());
    let users = summary["users"].as_array().unwrap();
    assert!(
        users
            .iter()
            .any(|u| u["id"] == "alice@acme.test" && u["present"] == true),
        "{summary}"
    );
    assert!(
        summary["last_thread_summary"]["queue"].is_null(),
        "no longer queued: {summary}"
    );
}

#[tokio::test]
async fn the_whole_flow_over_the_web_api() {
    let s = TestServer::start().await;
    // Agents accept chats while they hold an RTM session; everything else
    // here goes over HTTP.
    let _alice_online = s.login("alice-pat-1").await;
    let _bob_online = s.login("bob-pat-1").await;
    s.web(
        "set_routing_status",
        Some("Bearer bob-pat-1"),
        json!({"status": "not_accepting_chats"}),
    )
    .await;
    let (token, _) = s.customer_token("acme", None).await;
    let (code, r) = s
        .customer_web(
            "acme",
            "start_chat",
            &token,
            json!({"chat": {"thread": {"events": [message("over http")]}}}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    let chat_id = r["chat_id"].as_str().unwrap().to_owned();
    let (code, chat) = s
        .web(
            "get_chat",
            Some("Bearer alice-pat-1"),
            json!({"chat_id": chat_id}),
        )
        .await;
    assert_eq!(code, 200);
    assert!(
        chat["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["id"] == "alice@acme.test" && u["present"] == true),
        "{chat}"
    );
    let (code, r) = s
        .web(
            "send_event",
            Some("Bearer alice-pat-1"),
            json!({"chat_id": chat_id, "event": message("reply over http")}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    let (code, _) = s
        .customer_web(
            "acme",
            "send_event",
            &token,
            json!({"chat_id": chat_id, "event": message("thanks")}),
        )
        .await;
    assert_eq!(code, 200);
    s.web(
        "set_routing_status",
        Some("Bearer bob-pat-1"),
        json!({"status": "accepting_chats"}),
    )
    .await;
    let (code, r) = s
        .web(
            "transfer_chat",
            Some("Bearer alice-pat-1"),
            json!({"id": chat_id, "target": {"type": "agent", "ids": ["bob@acme.test"]}}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    let (code, r) = s
        .web(
            "deactivate_chat",
            Some("Bearer bob-pat-1"),
            json!({"id": chat_id}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    let (code, body) = s
        .web(
            "deactivate_chat",
            Some("Bearer bob-pat-1"),
            json!({"id": chat_id}),
        )
        .await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (409, Some("chat_inactive"))
    );
    let (_, chat) = s
        .customer_web("acme", "get_chat", &token, json!({"chat_id": chat_id}))
        .await;
    let texts: Vec<&str> = chat["thread"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["over http", "reply over http", "thanks"]);
    assert_eq!(chat["thread"]["active"], false);
}

#[tokio::test]
async fn customers_are_told_why_before_a_server_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.web.rtm.login_timeout = Duration::from_millis(300);
    let s = TestServer::start_with(dir, cfg).await;
    let mut c = Rtm::connect_path(s.addr, "/v3.5/customer/rtm/ws?organization_id=acme").await;
    let d = c.push("customer_disconnected").await;
    assert_eq!(d["payload"]["reason"], "connection_timeout");
    assert!(c.closed_soon().await);
    // A logged-in customer hears about a shutdown the same way.
    let (mut cust, _) = s.customer("acme").await;
    let mut s = s;
    s.stop().await;
    let d = cust.push("customer_disconnected").await;
    assert_eq!(d["payload"]["data"]["detail"], "shutdown");
}

#[tokio::test]
async fn customer_tokens_from_browsers_only_from_allowed_origins() {
    let s = TestServer::start().await;
    let token = |org: &str, origin: Option<&str>| {
        let url = s.url("/customer/token");
        let body = json!({"organization_id": org}).to_string();
        let origin = origin.map(str::to_owned);
        async move {
            let mut req = reqwest::Client::new().post(url).body(body);
            if let Some(o) = origin {
                req = req.header("origin", o);
            }
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    // Globex lists one origin.
    let (code, _) = token("globex", Some("https://shop.globex.test")).await;
    assert_eq!(code, 200);
    let (code, body) = token("globex", Some("https://evil.test")).await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (403, Some("authorization"))
    );
    // Server-side requests carry no Origin.
    let (code, _) = token("globex", None).await;
    assert_eq!(code, 200);
    // Acme lists none: any origin.
    let (code, _) = token("acme", Some("https://anything.test")).await;
    assert_eq!(code, 200);
    // The list survives a restart.
    let s = s.restart().await;
    let resp = reqwest::Client::new()
        .post(s.url("/customer/token"))
        .header("origin", "https://evil.test")
        .body(json!({"organization_id": "globex"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}
