//! The rest of the chat methods end to end, with the recipients of every
//! push: follow/unfollow, transfers, adding and removing users, seen
//! markers, typing and sneak peeks, multicast, agents for transfer,
//! rich-message postbacks, thread lists, and re-routing on disconnect.

use crate::harness::*;
use serde_json::{Value, json};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

fn message(text: &str) -> Value {
    json!({"type": "message", "text": text})
}

/// A chat started by a new customer and routed to Alice (the only agent
/// accepting at that moment). Returns (alice, customer, chat id).
async fn chat_with_alice(s: &TestServer) -> (Rtm, Rtm, String) {
    let mut alice = s.login("alice-pat-1").await;
    let (mut cust, _) = s.customer("acme").await;
    let r = cust
        .request(
            "start_chat",
            json!({"chat": {"thread": {"events": [message("hello")]}}}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let chat_id = r["payload"]["chat_id"].as_str().unwrap().to_owned();
    alice.push("incoming_chat").await;
    cust.push("incoming_chat").await;
    (alice, cust, chat_id)
}

#[tokio::test]
async fn follow_and_unfollow() {
    let s = TestServer::start().await;
    let (mut alice, mut cust, chat_id) = chat_with_alice(&s).await;
    let mut bob = s.rtm().await;
    let r = bob
        .request("login", json!({"token": "Bearer bob-pat-1"}))
        .await;
    assert_eq!(
        r["payload"]["chats_summary"],
        json!([]),
        "bob is neither member nor follower"
    );
    bob.request(
        "set_routing_status",
        json!({"status": "not_accepting_chats"}),
    )
    .await;
    let r = bob.request("follow_chat", json!({"id": chat_id})).await;
    assert_eq!(r["success"], true, "{r}");
    let p = bob.push("incoming_chat").await;
    assert_eq!(p["request_id"], r["request_id"]);
    assert_eq!(
        p["payload"]["chat"]["is_followed"], false,
        "the chat as it is, the follower not a user"
    );
    // Followers get the chat's events.
    cust.request(
        "send_event",
        json!({"chat_id": chat_id, "event": message("anyone?")}),
    )
    .await;
    assert_eq!(
        bob.push("incoming_event").await["payload"]["event"]["text"],
        "anyone?"
    );
    alice.push("incoming_event").await;
    // Following twice pushes nothing new.
    bob.request("follow_chat", json!({"id": chat_id})).await;
    bob.no_push("incoming_chat", QUIET).await;
    // Members cannot unfollow.
    let r = alice.request("unfollow_chat", json!({"id": chat_id})).await;
    assert_eq!(r["payload"]["error"]["type"], "validation");
    let r = bob.request("unfollow_chat", json!({"id": chat_id})).await;
    assert_eq!(r["success"], true);
    assert_eq!(
        bob.push("chat_unfollowed").await["payload"],
        json!({"chat_id": chat_id})
    );
    cust.request(
        "send_event",
        json!({"chat_id": chat_id, "event": message("still there?")}),
    )
    .await;
    alice.push("incoming_event").await;
    bob.no_push("incoming_event", QUIET).await;
    // Key changes still reach agents with access.
    alice
        .request("deactivate_chat", json!({"id": chat_id}))
        .await;
    bob.push("chat_deactivated").await;
}

#[tokio::test]
async fn transfer_to_an_agent() {
    let s = TestServer::start().await;
    let (mut alice, mut cust, chat_id) = chat_with_alice(&s).await;
    let mut bob = s.login("bob-pat-1").await;
    let list = alice
        .request("list_agents_for_transfer", json!({"chat_id": chat_id}))
        .await;
    assert_eq!(
        list["payload"],
        json!([{"agent_id": "bob@acme.test", "total_active_chats": 0}]),
        "{list}"
    );
    let r = alice
        .request(
            "transfer_chat",
            json!({"id": chat_id, "target": {"type": "agent", "ids": ["bob@acme.test"]}}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let t = cust.push("chat_transferred").await;
    assert_eq!(
        t["payload"]["transferred_to"],
        json!({"agent_ids": ["bob@acme.test"]})
    );
    assert_eq!(t["payload"]["reason"], "manual");
    assert_eq!(t["payload"]["requester_id"], "alice@acme.test");
    let removed = cust.push("user_removed_from_chat").await;
    assert_eq!(removed["payload"]["user_id"], "alice@acme.test");
    alice.push("user_removed_from_chat").await;
    let own = alice.push("chat_transferred").await;
    assert_eq!(own["request_id"], r["request_id"]);
    let p = bob.push("incoming_chat").await;
    assert_eq!(
        p["payload"]["transferred_from"]["agent_ids"],
        json!(["alice@acme.test"])
    );
    // Bob answers; Alice is no longer in the conversation.
    let r = bob
        .request(
            "send_event",
            json!({"chat_id": chat_id, "event": message("Bob here")}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(
        cust.push("incoming_event").await["payload"]["event"]["author_id"],
        "bob@acme.test"
    );
    alice.no_push("incoming_event", QUIET).await;
    let r = alice
        .request(
            "send_event",
            json!({"chat_id": chat_id, "event": message("me too")}),
        )
        .await;
    assert_eq!(
        r["success"], true,
        "a former user may still write (still a user, not present)"
    );
    // Errors.
    let r = bob
        .request(
            "transfer_chat",
            json!({"id": chat_id, "target": {"type": "agent", "ids": ["bob@acme.test"]}}),
        )
        .await;
    assert_eq!(
        r["payload"]["error"]["type"], "validation",
        "already in the chat: {r}"
    );
    let r = bob
        .request(
            "transfer_chat",
            json!({"id": chat_id, "target": {"type": "agent", "ids": ["carol@acme.test"]}}),
        )
        .await;
    assert_eq!(
        r["payload"]["error"]["type"], "agent_offline",
        "carol is not logged in: {r}"
    );
    let r = bob
        .request(
            "transfer_chat",
            json!({"id": chat_id, "target": {"type": "robot", "ids": []}}),
        )
        .await;
    assert_eq!(r["payload"]["error"]["type"], "validation");
    let r = alice
        .request(
            "transfer_chat",
            json!({"id": chat_id, "target": {"type": "agent", "ids": ["alice@acme.test"]}}),
        )
        .await;
    assert_eq!(
        r["payload"]["error"]["type"], "missing_access",
        "alice is not present any more: {r}"
    );
    bob.request("deactivate_chat", json!({"id": chat_id})).await;
    let r = bob
        .request(
            "transfer_chat",
            json!({"id": chat_id, "target": {"type": "agent", "ids": ["alice@acme.test"]}}),
        )
        .await;
    assert_eq!(r["payload"]["error"]["type"], "chat_inactive");
}

#[tokio::test]
async fn transfer_to_a_group_changes_access() {
    let s = TestServer::start().await;
    let (mut alice, mut cust, chat_id) = chat_with_alice(&s).await;
    let mut bob = s.login("bob-pat-1").await; // group 0 only, normal
    bob.request(
        "set_routing_status",
        json!({"status": "not_accepting_chats"}),
    )
    .await;
    // Nobody in group 1 accepts yet: refused without changing anything.
    let r = alice
        .request(
            "transfer_chat",
            json!({"id": chat_id, "target": {"type": "group", "ids": [1]}}),
        )
        .await;
    assert_eq!(r["payload"]["error"]["type"], "agent_offline", "{r}");
    let r = alice
        .request(
            "transfer_chat",
            json!({"id": chat_id, "target": {"type": "group", "ids": [7]}}),
        )
        .await;
    assert_eq!(r["payload"]["error"]["type"], "group_not_found");
    let mut carol = s.login("carol-pat-1").await; // group 1, not accepting at login
    carol
        .request("set_routing_status", json!({"status": "accepting_chats"}))
        .await;
    let r = alice
        .request(
            "transfer_chat",
            json!({"id": chat_id, "target": {"type": "group", "ids": [1]}}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let access = bob.push("chat_access_updated").await;
    assert_eq!(
        access["payload"],
        json!({"id": chat_id, "access": {"group_ids": [1]}})
    );
    let t = bob.push("chat_transferred").await;
    assert_eq!(
        t["payload"]["transferred_to"],
        json!({"group_ids": [1], "agent_ids": ["carol@acme.test"]})
    );
    let p = carol.push("incoming_chat").await;
    assert_eq!(p["payload"]["chat"]["access"], json!({"group_ids": [1]}));
    cust.push("chat_transferred").await;
    // Bob (normal, group 0) lost access.
    let r = bob.request("get_chat", json!({"chat_id": chat_id})).await;
    assert_eq!(r["payload"]["error"]["type"], "missing_access", "{r}");
    carol
        .request(
            "send_event",
            json!({"chat_id": chat_id, "event": message("Carol from Sales")}),
        )
        .await;
    cust.push("incoming_event").await;
    bob.no_push("incoming_event", QUIET).await;
    // With ignore_agents_availability the chat queues instead of failing.
    carol
        .request(
            "set_routing_status",
            json!({"status": "not_accepting_chats"}),
        )
        .await;
    alice
        .request(
            "set_routing_status",
            json!({"status": "not_accepting_chats"}),
        )
        .await;
    let r = carol
        .request(
            "transfer_chat",
            json!({"id": chat_id, "target": {"type": "group", "ids": [0]}}),
        )
        .await;
    assert_eq!(
        r["payload"]["error"]["type"], "agent_offline",
        "nobody can take it now: {r}"
    );
    let r = carol
        .request("transfer_chat", json!({"id": chat_id, "target": {"type": "group", "ids": [0]}, "ignore_agents_availability": true}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let t = cust.push("chat_transferred").await;
    assert_eq!(t["payload"]["queue"]["position"], 1, "{t}");
    let q = cust.push("queue_position_updated").await;
    assert_eq!(q["payload"]["chat_id"], chat_id);
}

#[tokio::test]
async fn add_and_remove_users() {
    let s = TestServer::start().await;
    let (mut alice, mut cust, chat_id) = chat_with_alice(&s).await;
    let mut bob = s.login("bob-pat-1").await;
    // Bob supervises, invisible to the customer.
    let r = alice
        .request("add_user_to_chat", json!({"chat_id": chat_id, "user_id": "bob@acme.test", "user_type": "agent", "visibility": "agents"}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let added = bob.push("user_added_to_chat").await;
    assert_eq!(added["payload"]["user"]["id"], "bob@acme.test");
    assert_eq!(added["payload"]["user"]["visibility"], "agents");
    assert_eq!(added["payload"]["reason"], "manual");
    alice.push("user_added_to_chat").await;
    cust.no_push("user_added_to_chat", QUIET).await;
    let r = bob
        .request(
            "send_event",
            json!({"chat_id": chat_id, "event": message("visible?")}),
        )
        .await;
    assert_eq!(
        r["payload"]["error"]["type"], "validation",
        "a supervisor cannot write to the customer: {r}"
    );
    let r = bob.request("send_event", json!({"chat_id": chat_id, "event": {"type": "message", "text": "psst", "visibility": "agents"}})).await;
    assert_eq!(r["success"], true);
    assert_eq!(
        alice.push("incoming_event").await["payload"]["event"]["text"],
        "psst"
    );
    let view = cust.request("get_chat", json!({"chat_id": chat_id})).await;
    assert!(
        !view["payload"]["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["id"] == "bob@acme.test"),
        "{view}"
    );
    // Errors.
    for (body, kind) in [
        (
            json!({"chat_id": chat_id, "user_id": "bob@acme.test", "user_type": "agent", "visibility": "all"}),
            "validation",
        ),
        (
            json!({"chat_id": chat_id, "user_id": "ghost@acme.test", "user_type": "agent", "visibility": "all"}),
            "not_found",
        ),
        (
            json!({"chat_id": chat_id, "user_id": "x", "user_type": "bot", "visibility": "all"}),
            "validation",
        ),
        (
            json!({"chat_id": chat_id, "user_id": "bob@acme.test", "user_type": "agent"}),
            "validation",
        ),
    ] {
        let r = alice.request("add_user_to_chat", body.clone()).await;
        assert_eq!(r["payload"]["error"]["type"], kind, "{body}: {r}");
    }
    let r = alice
        .request(
            "remove_user_from_chat",
            json!({"chat_id": chat_id, "user_id": "x", "user_type": "customer"}),
        )
        .await;
    assert_eq!(
        r["payload"]["error"]["type"], "validation",
        "customers cannot be removed"
    );
    let r = alice
        .request(
            "remove_user_from_chat",
            json!({"chat_id": chat_id, "user_id": "bob@acme.test", "user_type": "agent"}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(
        bob.push("user_removed_from_chat").await["payload"]["user_id"],
        "bob@acme.test"
    );
    cust.push("user_removed_from_chat").await;
    let r = bob.request("send_event", json!({"chat_id": chat_id, "event": {"type": "message", "text": "x", "visibility": "agents"}})).await;
    assert_eq!(r["success"], true, "still a user, just not present");
}

#[tokio::test]
async fn seen_markers_typing_and_sneak_peeks() {
    let s = TestServer::start().await;
    let (mut alice, mut cust, chat_id) = chat_with_alice(&s).await;
    let r = cust
        .request(
            "mark_events_as_seen",
            json!({"chat_id": chat_id, "seen_up_to": "2030-01-02T03:04:05.123456Z"}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let p = alice.push("events_marked_as_seen").await;
    assert_eq!(p["payload"]["seen_up_to"], "2030-01-02T03:04:05.123456Z");
    // The marker never moves back.
    cust.request(
        "mark_events_as_seen",
        json!({"chat_id": chat_id, "seen_up_to": "2020-01-01T00:00:00+01:00"}),
    )
    .await;
    assert_eq!(
        alice.push("events_marked_as_seen").await["payload"]["seen_up_to"],
        "2030-01-02T03:04:05.123456Z"
    );
    let r = cust
        .request(
            "mark_events_as_seen",
            json!({"chat_id": chat_id, "seen_up_to": "yesterday"}),
        )
        .await;
    assert_eq!(r["payload"]["error"]["type"], "validation");
    // Typing both ways; the sneak peek only to agents; agents-only typing hidden.
    cust.request(
        "send_typing_indicator",
        json!({"chat_id": chat_id, "is_typing": true}),
    )
    .await;
    let t = alice.push("incoming_typing_indicator").await;
    assert_eq!(t["payload"]["typing_indicator"]["is_typing"], true);
    assert!(t["payload"]["typing_indicator"]["timestamp"].is_i64());
    cust.request(
        "send_sneak_peek",
        json!({"chat_id": chat_id, "sneak_peek_text": "I was wonder"}),
    )
    .await;
    assert_eq!(
        alice.push("incoming_sneak_peek").await["payload"]["sneak_peek"]["text"],
        "I was wonder"
    );
    cust.no_push("incoming_sneak_peek", QUIET).await;
    alice
        .request(
            "send_typing_indicator",
            json!({"chat_id": chat_id, "is_typing": true}),
        )
        .await;
    assert_eq!(
        cust.push("incoming_typing_indicator").await["payload"]["typing_indicator"]["author_id"],
        "alice@acme.test"
    );
    alice
        .request(
            "send_typing_indicator",
            json!({"chat_id": chat_id, "is_typing": true, "visibility": "agents"}),
        )
        .await;
    cust.no_push("incoming_typing_indicator", QUIET).await;
    alice.no_push("incoming_typing_indicator", QUIET).await;
}

#[tokio::test]
async fn multicast_reaches_the_chosen_agents_only() {
    let s = TestServer::start().await;
    let mut alice = s.login("alice-pat-1").await;
    let mut bob = s.login("bob-pat-1").await;
    let mut carol = s.login("carol-pat-1").await;
    let r = alice.request("multicast", json!({"recipients": {"agents": {"groups": [1]}}, "content": {"note": "sales meeting"}, "type": "info"})).await;
    assert_eq!(r["success"], true, "{r}");
    let m = carol.push("incoming_multicast").await;
    assert_eq!(
        m["payload"],
        json!({"author_id": "alice@acme.test", "content": {"note": "sales meeting"}, "type": "info"})
    );
    alice.push("incoming_multicast").await; // alice is in group 1 too
    bob.no_push("incoming_multicast", QUIET).await;
    alice
        .request(
            "multicast",
            json!({"recipients": {"agents": {"ids": ["bob@acme.test"]}}, "content": "hi"}),
        )
        .await;
    assert_eq!(
        bob.push("incoming_multicast").await["payload"]["content"],
        "hi"
    );
    let r = alice
        .request("multicast", json!({"recipients": {}, "content": 1}))
        .await;
    assert_eq!(r["payload"]["error"]["type"], "validation");
    let mut eve = s.login("eve-pat-1").await;
    alice
        .request(
            "multicast",
            json!({"recipients": {"agents": {"all": true}}, "content": "all"}),
        )
        .await;
    eve.no_push("incoming_multicast", QUIET).await;
}

#[tokio::test]
async fn rich_message_postbacks_are_stored_and_pushed() {
    let s = TestServer::start().await;
    let (mut alice, mut cust, chat_id) = chat_with_alice(&s).await;
    let r = alice
        .request(
            "send_event",
            json!({"chat_id": chat_id, "event": {"type": "rich_message", "template_id": "quick_replies",
                   "elements": [{"title": "Happy?", "buttons": [{"text": "Yes", "postback_id": "yes", "user_ids": []}]}]}}),
        )
        .await;
    let event_id = r["payload"]["event_id"].as_str().unwrap().to_owned();
    let thread_id = cust.push("incoming_event").await["payload"]["thread_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = cust
        .request("send_rich_message_postback", json!({"chat_id": chat_id, "thread_id": thread_id, "event_id": event_id, "postback": {"id": "yes", "toggled": true}}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let p = alice.push("incoming_rich_message_postback").await;
    assert_eq!(
        p["payload"]["postback"],
        json!({"id": "yes", "toggled": true})
    );
    let updated = alice.push("event_updated").await;
    let cust_id = p["payload"]["user_id"].clone();
    assert_eq!(
        updated["payload"]["event"]["elements"][0]["buttons"][0]["user_ids"],
        json!([cust_id])
    );
    let r = cust
        .request("send_rich_message_postback", json!({"chat_id": chat_id, "thread_id": thread_id, "event_id": event_id, "postback": {"id": "nope", "toggled": true}}))
        .await;
    assert_eq!(r["payload"]["error"]["type"], "not_found");
    let r = cust
        .request("send_rich_message_postback", json!({"chat_id": chat_id, "thread_id": thread_id, "event_id": format!("{thread_id}_1"), "postback": {"id": "yes", "toggled": true}}))
        .await;
    assert_eq!(
        r["payload"]["error"]["type"], "validation",
        "not a rich message: {r}"
    );
}

#[tokio::test]
async fn threads_and_rerouting_when_an_agent_drops() {
    let s = TestServer::start().await;
    let (mut alice, mut cust, chat_id) = chat_with_alice(&s).await;
    alice
        .request("deactivate_chat", json!({"id": chat_id}))
        .await;
    cust.push("chat_deactivated").await;
    let r = cust
        .request(
            "resume_chat",
            json!({"chat": {"id": chat_id, "thread": {"events": [message("me again")]}}}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    alice.push("incoming_chat").await;
    let threads = alice
        .request("list_threads", json!({"chat_id": chat_id}))
        .await;
    assert_eq!(threads["payload"]["found_threads"], 2);
    let list = threads["payload"]["threads"].as_array().unwrap();
    assert_eq!(list[0]["active"], true, "newest first");
    assert_eq!(list[0]["events"][0]["text"], "me again");
    assert_eq!(list[1]["events"][0]["text"], "hello");
    assert_eq!(list[1]["next_thread_id"], list[0]["id"]);
    let older = alice
        .request(
            "get_chat",
            json!({"chat_id": chat_id, "thread_id": list[1]["id"]}),
        )
        .await;
    assert_eq!(
        older["payload"]["thread"]["events"][0]["text"], "hello",
        "older threads come from the store"
    );
    // Paged one thread at a time, forwards then back; the chat is frozen
    // in the page id.
    let p1 = alice
        .request("list_threads", json!({"chat_id": chat_id, "limit": 1}))
        .await;
    assert_eq!(p1["payload"]["threads"][0]["id"], list[0]["id"]);
    let next = p1["payload"]["next_page_id"].as_str().unwrap().to_owned();
    let p2 = alice
        .request("list_threads", json!({"chat_id": chat_id, "page_id": next}))
        .await;
    assert_eq!(p2["payload"]["threads"][0]["id"], list[1]["id"], "{p2}");
    assert_eq!(p2["payload"]["threads"][0]["events"][0]["text"], "hello");
    assert!(p2["payload"].get("next_page_id").is_none(), "{p2}");
    let back = alice
        .request(
            "list_threads",
            json!({"chat_id": chat_id, "page_id": p2["payload"]["previous_page_id"]}),
        )
        .await;
    assert_eq!(back["payload"]["threads"][0]["id"], list[0]["id"], "{back}");
    let wrong = alice
        .request("list_threads", json!({"chat_id": "OTHER", "page_id": next}))
        .await;
    assert_eq!(wrong["payload"]["error"]["type"], "validation", "{wrong}");
    assert!(
        wrong["payload"]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("`chat_id` cannot change"),
        "{wrong}"
    );
    // Alice's connection drops; Bob is accepting: the chat moves to him.
    let mut bob = s.login("bob-pat-1").await;
    drop(alice);
    let p = bob.push("incoming_chat").await;
    assert_eq!(p["payload"]["chat"]["id"], chat_id);
    let users = p["payload"]["chat"]["users"].as_array().unwrap();
    assert!(
        users
            .iter()
            .any(|u| u["id"] == "bob@acme.test" && u["present"] == true),
        "{p}"
    );
    let t = cust.push("chat_transferred").await;
    assert_eq!(t["payload"]["reason"], "assigned");
    assert_eq!(
        t["payload"]["transferred_to"]["agent_ids"],
        json!(["bob@acme.test"])
    );
    // Bob leaves too: nobody else accepts, so the chat waits in the queue.
    let r = bob.request("logout", json!({})).await;
    assert_eq!(r["success"], true);
    let t = cust.push("chat_transferred").await;
    assert_eq!(t["payload"]["reason"], "unassigned");
    assert_eq!(t["payload"]["queue"]["position"], 1);
    // The next agent to log in takes it.
    let mut alice = s.rtm().await;
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
}

#[tokio::test]
async fn customer_session_fields_and_page_updates() {
    let s = TestServer::start().await;
    let (mut alice, mut cust, _chat_id) = chat_with_alice(&s).await;
    let r = cust
        .request(
            "set_customer_session_fields",
            json!({"session_fields": [{"plan": "gold"}, {"order": "42"}]}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let me = cust.request("get_customer", json!({})).await;
    assert_eq!(
        me["payload"]["session_fields"],
        json!([{"plan": "gold"}, {"order": "42"}])
    );
    let r = cust
        .request(
            "update_customer_page",
            json!({"url": "https://shop.example/cart", "title": "Cart"}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let p = alice.push("customer_page_updated").await;
    assert_eq!(p["payload"]["url"], "https://shop.example/cart");
    assert_eq!(p["payload"]["customer_id"], me["payload"]["id"]);
    let r = cust
        .request("update_customer_page", json!({"url": ""}))
        .await;
    assert_eq!(r["payload"]["error"]["type"], "validation");
    let (token, _) = s.customer_token("acme", None).await;
    let (code, _) = s
        .customer_web(
            "acme",
            "update_customer_page",
            &token,
            json!({"url": "https://x"}),
        )
        .await;
    assert_eq!(code, 400, "RTM only");
}

#[tokio::test]
async fn chat_pushes_follow_commit_order_with_no_gaps() {
    let s = TestServer::start().await;
    let (_alice, _cust, chat_id) = chat_with_alice(&s).await;
    let mut bob = s.login("bob-pat-1").await;
    let r = bob.request("follow_chat", json!({"id": chat_id})).await;
    assert_eq!(r["success"], true);
    bob.push("incoming_chat").await;
    // 40 concurrent writers over the Web API.
    let server = &s;
    let sends = (0..40).map(|i| {
        let body = json!({"chat_id": chat_id, "event": message(&format!("m{i}"))});
        async move {
            server
                .web("send_event", Some("Bearer alice-pat-1"), body)
                .await
        }
    });
    let results = futures_util::future::join_all(sends).await;
    assert!(results.iter().all(|(code, _)| *code == 200), "{results:?}");
    let mut numbers = Vec::new();
    for _ in 0..40 {
        let p = bob.push("incoming_event").await;
        let id = p["payload"]["event"]["id"].as_str().unwrap().to_owned();
        numbers.push(id.rsplit('_').next().unwrap().parse::<u32>().unwrap());
    }
    // The chat's first event is the customer's greeting (_1).
    assert_eq!(
        numbers,
        (2..=41).collect::<Vec<_>>(),
        "commit order, no gaps, no duplicates"
    );
    bob.no_push("incoming_event", QUIET).await;
}

#[tokio::test]
async fn list_chats_filters_by_version() {
    let s = TestServer::start().await;
    let (mut alice, _cust, chat_id) = chat_with_alice(&s).await;
    let (_other, _) = {
        let (mut c, id) = s.customer("acme").await;
        let r = c.request("start_chat", json!({})).await;
        let other = r["payload"]["chat_id"].as_str().unwrap().to_owned();
        alice.push("incoming_chat").await;
        alice.request("deactivate_chat", json!({"id": other})).await;
        (c, id)
    };
    let ids = |r: &Value| -> Vec<String> {
        r["payload"]["chats_summary"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // 3.5: include_active=false leaves only inactive chats; `active` is not a 3.5 filter.
    let r = alice
        .request("list_chats", json!({"filters": {"include_active": false}}))
        .await;
    assert!(!ids(&r).contains(&chat_id), "{r}");
    assert_eq!(ids(&r).len(), 1);
    let r = alice
        .request("list_chats", json!({"filters": {"active": true}}))
        .await;
    assert_eq!(ids(&r).len(), 2, "ignored in 3.5");
    // 3.6: `active` replaces include_active.
    let r = alice.request_frame(json!({"action": "list_chats", "version": "3.6", "payload": {"filters": {"active": true}}})).await;
    assert_eq!(ids(&r), vec![chat_id.clone()]);
    let r = alice.request_frame(json!({"action": "list_chats", "version": "3.6", "payload": {"filters": {"include_active": false}}})).await;
    assert_eq!(ids(&r).len(), 2, "include_active is not a 3.6 filter");
}

#[tokio::test]
async fn a_repeated_custom_id_returns_the_original_event() {
    let s = TestServer::start().await;
    let (mut alice, mut cust, chat_id) = chat_with_alice(&s).await;
    let send = json!({"chat_id": chat_id, "event": {"type": "message", "text": "pay now", "custom_id": "c-77"}});
    let first = cust.request("send_event", send.clone()).await;
    assert_eq!(first["success"], true, "{first}");
    alice.push("incoming_event").await;
    cust.push("incoming_event").await;
    // A retry after a lost response: the same event, nothing stored or pushed twice.
    let again = cust.request("send_event", send.clone()).await;
    assert_eq!(again["success"], true, "{again}");
    assert_eq!(again["payload"]["event_id"], first["payload"]["event_id"]);
    alice.no_push("incoming_event", QUIET).await;
    // Another author may use the same custom_id.
    let r = alice.request("send_event", json!({"chat_id": chat_id, "event": {"type": "message", "text": "ok", "custom_id": "c-77"}})).await;
    assert_ne!(r["payload"]["event_id"], first["payload"]["event_id"]);
    // The chat holds each event once, and the numbering has no hole.
    let chat = alice.request("get_chat", json!({"chat_id": chat_id})).await;
    let ids: Vec<&str> = chat["payload"]["thread"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    // And across a restart (and into a new thread) the custom_id is still known.
    drop((alice, cust));
    let s = s.restart().await;
    let mut alice = s.login("alice-pat-1").await;
    let r = alice.request("send_event", json!({"chat_id": chat_id, "event": {"type": "message", "text": "ok", "custom_id": "c-77"}})).await;
    assert_eq!(r["success"], true, "{r}");
    let chat = alice.request("get_chat", json!({"chat_id": chat_id})).await;
    assert_eq!(
        chat["payload"]["thread"]["events"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn agents_manage_customers_and_bans_take_effect() {
    let s = TestServer::start().await;
    // Bob monitors every customer of his groups.
    let mut bob = s.rtm().await;
    let r = bob
        .request(
            "login",
            json!({"token": "Bearer bob-pat-1", "customer_monitoring_level": "online"}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let owner = Some("Bearer alice-pat-1");
    // create_customer (3.5) pushes incoming_customer.
    let (code, body) = s
        .web(
            "create_customer",
            owner,
            json!({"name": "Ann", "email": "ann@example.com", "session_fields": [{"vip": "yes"}]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let id = body["customer_id"].as_str().unwrap().to_owned();
    let p = bob.push("incoming_customer").await;
    assert_eq!(
        (p["payload"]["id"].as_str(), p["payload"]["name"].as_str()),
        (Some(id.as_str()), Some("Ann"))
    );
    let (code, c) = s.web("get_customer", owner, json!({"id": id})).await;
    assert_eq!((code, c["email"].as_str()), (200, Some("ann@example.com")));
    let (code, _) = s.web("get_customer", owner, json!({"id": "nope"})).await;
    assert_eq!(code, 404);
    // update_customer pushes customer_updated to agents and to the customer itself.
    let (token, _) = s.customer_token("acme", Some(&id)).await;
    let mut cust = Rtm::connect_path(s.addr, "/v3.5/customer/rtm/ws?organization_id=acme").await;
    let r = cust
        .request("login", json!({"token": format!("Bearer {token}")}))
        .await;
    assert_eq!(r["success"], true);
    let (code, _) = s
        .web(
            "update_customer",
            owner,
            json!({"id": id, "name": "Ann B."}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        bob.push("customer_updated").await["payload"],
        json!({"id": id, "name": "Ann B."})
    );
    assert_eq!(
        cust.push("customer_updated").await["payload"]["name"],
        "Ann B."
    );
    // list_customers (3.5), removed in 3.6.
    let (code, list) = s.web("list_customers", owner, json!({"limit": 5})).await;
    assert_eq!(code, 200, "{list}");
    assert!(
        list["customers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == id.as_str())
    );
    assert_eq!(list["total_customers"], 1);
    // Paged: two more customers, one per page, oldest first.
    for name in ["Cy", "Di"] {
        let (code, _) = s.web("create_customer", owner, json!({"name": name})).await;
        assert_eq!(code, 200);
    }
    let mut names = Vec::new();
    let mut body = json!({"limit": 1, "sort_order": "asc"});
    loop {
        let (code, page) = s.web("list_customers", owner, body).await;
        assert_eq!(code, 200, "{page}");
        assert_eq!(page["total_customers"], 3);
        names.push(page["customers"][0]["name"].as_str().unwrap().to_owned());
        match page.get("next_page_id") {
            Some(next) => body = json!({"page_id": next}),
            None => break,
        }
        assert!(names.len() < 5, "paging must end");
    }
    assert_eq!(names, vec!["Ann B.", "Cy", "Di"]);
    let (code, r) = s
        .web(
            "list_customers",
            owner,
            json!({"filters": {"name": {"values": ["Cy"]}}}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["total_customers"], 1, "filters apply: {r}");
    let (code, _) = web_call(
        &s.url("/v3.6/agent/action/list_customers"),
        owner,
        "{}".into(),
        &[],
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = web_call(
        &s.url("/v3.6/agent/action/create_customer"),
        owner,
        "{}".into(),
        &[],
    )
    .await;
    assert_eq!(code, 400);
    // Bans: a normal agent lacks customers.ban; the owner bans; the customer is cut off.
    let (code, _) = s
        .web(
            "ban_customer",
            Some("Bearer bob-pat-1"),
            json!({"id": id, "ban": {"days": 2}}),
        )
        .await;
    assert_eq!(code, 403);
    let (code, _) = s
        .web("ban_customer", owner, json!({"id": id, "ban": {"days": 2}}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        bob.push("customer_banned").await["payload"],
        json!({"customer_id": id, "ban": {"days": 2}})
    );
    let d = cust.push("customer_disconnected").await;
    assert_eq!(d["payload"]["reason"], "customer_banned");
    let (code, body) = s
        .customer_web("acme", "start_chat", &token, json!({}))
        .await;
    assert_eq!(
        (code, body["error"]["type"].as_str()),
        (403, Some("customer_banned"))
    );
    let (code, _) = web_call(
        &s.url("/customer/token"),
        None,
        json!({"organization_id": "acme", "customer_id": id}).to_string(),
        &[],
    )
    .await;
    assert_eq!(code, 403, "a banned customer gets no new token");
    let mut again = Rtm::connect_path(s.addr, "/v3.5/customer/rtm/ws?organization_id=acme").await;
    let r = again
        .request("login", json!({"token": format!("Bearer {token}")}))
        .await;
    assert_eq!(r["payload"]["error"]["type"], "customer_banned");
    // The ban survives a restart.
    drop((bob, cust, again));
    let s = s.restart().await;
    let (code, _) = s
        .customer_web("acme", "get_customer", &token, json!({}))
        .await;
    assert_eq!(code, 403);
    // License information (Web only).
    let (code, info) = s.web("get_license_info", owner, json!({})).await;
    assert_eq!(code, 200);
    assert!(info["license_id"].as_str().unwrap().parse::<u64>().is_ok());
    assert_eq!(info["in_trial"], false);
}

#[tokio::test]
async fn threads_are_tagged_and_untagged() {
    let s = TestServer::start().await;
    let (mut alice, mut cust, chat_id) = chat_with_alice(&s).await;
    let chat = alice.request("get_chat", json!({"chat_id": chat_id})).await;
    let thread_id = chat["payload"]["thread"]["id"].as_str().unwrap().to_owned();
    assert_eq!(chat["payload"]["thread"]["tags"], json!([]));
    // A follower hears about tags; the customer never does.
    let mut bob = s.login("bob-pat-1").await;
    assert_eq!(
        bob.request("follow_chat", json!({"id": chat_id})).await["success"],
        true
    );
    bob.push("incoming_chat").await;
    let tag = json!({"chat_id": chat_id, "thread_id": thread_id, "tag": "bug_report"});
    // Only defined tags of the chat's groups (the chat is in group 0).
    let r = alice.request("tag_thread", tag.clone()).await;
    assert_eq!(r["payload"]["error"]["type"], "not_found", "{r}");
    for (name, groups) in [
        ("bug_report", json!([0, 1])),
        ("vip", json!([0])),
        ("sales_only", json!([1])),
    ] {
        let (code, body) = s
            .config(
                "create_tag",
                Some("Bearer alice-pat-1"),
                json!({"name": name, "group_ids": groups}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        // Every session of the organization hears about the definition.
        let p = bob.push("tag_created").await;
        assert_eq!(p["payload"]["name"], name);
        assert_eq!(p["payload"]["group_ids"], groups);
        assert_eq!(p["payload"]["author_id"], "alice@acme.test");
    }
    let r = alice
        .request(
            "tag_thread",
            json!({"chat_id": chat_id, "thread_id": thread_id, "tag": "sales_only"}),
        )
        .await;
    assert_eq!(r["payload"]["error"]["type"], "validation", "{r}");
    let r = alice.request("tag_thread", tag.clone()).await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["payload"], json!({}));
    for agent in [&mut alice, &mut bob] {
        let p = agent.push("thread_tagged").await;
        assert_eq!(p["payload"], tag);
    }
    // Tagging again changes nothing and pushes nothing.
    assert_eq!(
        alice.request("tag_thread", tag.clone()).await["success"],
        true
    );
    alice.no_push("thread_tagged", QUIET).await;
    cust.no_push("thread_tagged", QUIET).await;
    let r = alice
        .request(
            "tag_thread",
            json!({"chat_id": chat_id, "thread_id": thread_id, "tag": "vip"}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    alice.push("thread_tagged").await;
    let r = cust.request("get_chat", json!({"chat_id": chat_id})).await;
    assert_eq!(r["success"], true, "{r}");
    assert!(
        r["payload"]["thread"].get("tags").is_none(),
        "customers never see tags: {r}"
    );
    // Errors: empty or overlong tag, unknown thread, read-only token,
    // another organization.
    for (payload, want) in [
        (
            json!({"chat_id": chat_id, "thread_id": thread_id, "tag": " "}),
            "validation",
        ),
        (
            json!({"chat_id": chat_id, "thread_id": thread_id, "tag": "x".repeat(101)}),
            "validation",
        ),
        (
            json!({"chat_id": chat_id, "thread_id": thread_id}),
            "validation",
        ),
        (
            json!({"chat_id": chat_id, "thread_id": "NOPE", "tag": "a"}),
            "not_found",
        ),
    ] {
        let r = alice.request("tag_thread", payload.clone()).await;
        assert_eq!(r["payload"]["error"]["type"], want, "{payload}: {r}");
    }
    let (status, r) = s
        .web("tag_thread", Some("Bearer alice-ro-1"), tag.clone())
        .await;
    assert_eq!(
        (status, r["error"]["type"].as_str()),
        (403, Some("authorization")),
        "{r}"
    );
    let (status, r) = s
        .web("untag_thread", Some("Bearer eve-pat-1"), tag.clone())
        .await;
    assert_eq!(
        (status, r["error"]["type"].as_str()),
        (404, Some("not_found")),
        "{r}"
    );
    // The tags are on the thread in order, over Web too, and survive a restart.
    let (status, chat) = s
        .web(
            "get_chat",
            Some("Bearer alice-pat-1"),
            json!({"chat_id": chat_id}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(chat["thread"]["tags"], json!(["bug_report", "vip"]));
    drop((alice, bob, cust));
    let s = s.restart().await;
    let mut alice = s.login("alice-pat-1").await;
    let chat = alice.request("get_chat", json!({"chat_id": chat_id})).await;
    assert_eq!(
        chat["payload"]["thread"]["tags"],
        json!(["bug_report", "vip"])
    );
    // Untagging over Web pushes thread_untagged; untagging again is a no-op.
    let (status, r) = s
        .web("untag_thread", Some("Bearer alice-pat-1"), tag.clone())
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(alice.push("thread_untagged").await["payload"], tag);
    let (status, _) = s
        .web("untag_thread", Some("Bearer alice-pat-1"), tag.clone())
        .await;
    assert_eq!(status, 200);
    alice.no_push("thread_untagged", QUIET).await;
    let r = alice.request("list_chats", json!({})).await;
    assert_eq!(
        r["payload"]["chats_summary"][0]["last_thread_summary"]["tags"],
        json!(["vip"]),
        "{r}"
    );
}

#[tokio::test]
async fn list_chats_pages_forwards_and_backwards() {
    let s = TestServer::start().await;
    // Someone must accept chats, or customers get group_offline.
    let mut alice = s.login("alice-pat-1").await;
    let mut customers = Vec::new();
    for _ in 0..5 {
        let (mut c, _) = s.customer("acme").await;
        let r = c.request("start_chat", json!({})).await;
        assert_eq!(r["success"], true, "{r}");
        customers.push(c);
    }
    const ALICE: Option<&str> = Some("Bearer alice-pat-1");
    let ids = |r: &Value| -> Vec<String> {
        r["chats_summary"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, all) = s.web("list_chats", ALICE, json!({"limit": 100})).await;
    let all = ids(&all);
    assert_eq!(all.len(), 5);
    assert!(all.iter().collect::<std::collections::HashSet<_>>().len() == 5);
    // Page 1, then a chat arrives, then pages 2 and 3: nothing shifts.
    let (code, p1) = s.web("list_chats", ALICE, json!({"limit": 2})).await;
    assert_eq!(code, 200, "{p1}");
    assert_eq!(ids(&p1), all[0..2]);
    assert_eq!(p1["found_chats"], 5);
    assert!(p1.get("previous_page_id").is_none(), "{p1}");
    let (mut late, _) = s.customer("acme").await;
    let r = late.request("start_chat", json!({})).await;
    assert_eq!(r["success"], true, "{r}");
    let next = p1["next_page_id"].as_str().unwrap();
    let (code, p2) = s.web("list_chats", ALICE, json!({"page_id": next})).await;
    assert_eq!(code, 200, "{p2}");
    assert_eq!(ids(&p2), all[2..4], "the limit is kept in the page id");
    let (_, p3) = s
        .web("list_chats", ALICE, json!({"page_id": p2["next_page_id"]}))
        .await;
    assert_eq!(ids(&p3), all[4..5]);
    assert!(p3.get("next_page_id").is_none(), "{p3}");
    // Backwards from page 3 gives page 2 again.
    let (_, back) = s
        .web(
            "list_chats",
            ALICE,
            json!({"page_id": p3["previous_page_id"]}),
        )
        .await;
    assert_eq!(ids(&back), all[2..4]);
    // A fresh listing sees the late chat first.
    let (_, fresh) = s.web("list_chats", ALICE, json!({"limit": 1})).await;
    assert_eq!(fresh["found_chats"], 6);
    assert!(!all.contains(&ids(&fresh)[0]));
    // Frozen filters, sort order and owner; forged or foreign page ids.
    let (_, f1) = s
        .web(
            "list_chats",
            ALICE,
            json!({"limit": 1, "sort_order": "asc", "filters": {"group_ids": [0]}}),
        )
        .await;
    assert_eq!(ids(&f1), all[4..5], "ascending starts with the oldest");
    let page = f1["next_page_id"].as_str().unwrap().to_owned();
    for (auth, body) in [
        (
            ALICE,
            json!({"page_id": page, "filters": {"group_ids": [1]}}),
        ),
        (ALICE, json!({"page_id": page, "sort_order": "desc"})),
        (ALICE, json!({"page_id": format!("x{page}")})),
        (Some("Bearer bob-pat-1"), json!({"page_id": page})),
        (Some("Bearer eve-pat-1"), json!({"page_id": page})),
    ] {
        let (code, r) = s.web("list_chats", auth, body.clone()).await;
        assert_eq!(
            (code, r["error"]["type"].as_str()),
            (400, Some("validation")),
            "{body}: {r}"
        );
    }
    let (code, same) = s
        .web(
            "list_chats",
            ALICE,
            json!({"page_id": page, "filters": {"group_ids": [0]}}),
        )
        .await;
    assert_eq!(code, 200, "the same filters may be repeated: {same}");
    assert_eq!(ids(&same), all[3..4]);
    // Over RTM too.
    let r = alice.request("list_chats", json!({"page_id": next})).await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(ids(&r["payload"]), all[2..4]);
}

#[tokio::test]
async fn thinking_indicators_reach_other_36_sessions() {
    let s = TestServer::start().await;
    let (mut alice, mut cust, chat_id) = chat_with_alice(&s).await;
    // Bob follows the chat on a 3.6 connection.
    let mut bob = Rtm::connect(s.addr, "v3.6").await;
    let r = bob
        .request("login", json!({"token": "Bearer bob-pat-1"}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    bob.request("follow_chat", json!({"id": chat_id})).await;
    bob.push("incoming_chat").await;
    let send = |payload: Value| json!({"action": "send_thinking_indicator", "version": "3.6", "payload": payload});
    let r = alice
        .request_frame(send(
            json!({"chat_id": chat_id, "title": "Checking your order", "custom_id": "t1"}),
        ))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let p = bob.push("incoming_thinking_indicator").await;
    assert_eq!(p["payload"]["chat_id"], chat_id);
    assert_eq!(p["payload"]["author_id"], "alice@acme.test");
    assert_eq!(p["payload"]["title"], "Checking your order");
    assert_eq!(p["payload"]["custom_id"], "t1");
    assert!(p["payload"]["sent_at"].as_str().unwrap().ends_with('Z'));
    assert!(p["payload"].get("description").is_none());
    // Not to the sender, and not to 3.5 sessions (a 3.6 push).
    alice.no_push("incoming_thinking_indicator", QUIET).await;
    cust.no_push("incoming_thinking_indicator", QUIET).await;
    // 3.6 only; bounded fields; the chat must be readable.
    let r = alice
        .request("send_thinking_indicator", json!({"chat_id": chat_id}))
        .await;
    assert_eq!(r["payload"]["error"]["type"], "validation", "{r}");
    let r = alice
        .request_frame(send(json!({"chat_id": chat_id, "title": "x".repeat(257)})))
        .await;
    assert_eq!(r["payload"]["error"]["type"], "validation", "{r}");
    let r = alice.request_frame(send(json!({"chat_id": "NOPE"}))).await;
    assert_eq!(r["payload"]["error"]["type"], "not_found", "{r}");
    // A follower is not a user of the chat; a closed chat has no thread.
    let r = bob.request_frame(send(json!({"chat_id": chat_id}))).await;
    assert_eq!(r["payload"]["error"]["type"], "missing_access", "{r}");
    alice
        .request("deactivate_chat", json!({"id": chat_id}))
        .await;
    let r = alice.request_frame(send(json!({"chat_id": chat_id}))).await;
    assert_eq!(r["payload"]["error"]["type"], "chat_inactive", "{r}");
}

#[tokio::test]
async fn a_thread_carries_at_most_fifty_tags() {
    let s = TestServer::start().await;
    let (mut alice, _cust, chat_id) = chat_with_alice(&s).await;
    let chat = alice.request("get_chat", json!({"chat_id": chat_id})).await;
    let thread_id = chat["payload"]["thread"]["id"].as_str().unwrap().to_owned();
    for i in 0..51 {
        let name = format!("t{i}");
        let (code, _) = s
            .config(
                "create_tag",
                Some("Bearer alice-pat-1"),
                json!({"name": name}),
            )
            .await;
        assert_eq!(code, 200);
        let r = alice
            .request(
                "tag_thread",
                json!({"chat_id": chat_id, "thread_id": thread_id, "tag": name}),
            )
            .await;
        if i < 50 {
            assert_eq!(r["success"], true, "{r}");
        } else {
            assert_eq!(r["payload"]["error"]["type"], "validation", "{r}");
        }
    }
    let chat = alice.request("get_chat", json!({"chat_id": chat_id})).await;
    assert_eq!(
        chat["payload"]["thread"]["tags"].as_array().unwrap().len(),
        50
    );
}

#[tokio::test]
async fn list_customers_filters_and_sorts() {
    let s = TestServer::start().await;
    let owner = Some("Bearer alice-pat-1");
    let mut ids = Vec::new();
    for (name, email) in [
        ("Ann", "ann@example.com"),
        ("Ben", "BEN@example.com"),
        ("Cid", "cid@example.com"),
    ] {
        let (code, body) = s
            .web(
                "create_customer",
                owner,
                json!({"name": name, "email": email}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        ids.push(body["customer_id"].as_str().unwrap().to_owned());
    }
    // A customer who chats (two threads), in group 1.
    let mut alice = s.login("alice-pat-1").await;
    let (mut cust, chatter) = s.customer("acme").await;
    let r = cust
        .request(
            "start_chat",
            json!({"chat": {"access": {"group_ids": [1]}, "thread": {"events": [message("hi")]}}}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let chat_id = r["payload"]["chat_id"].as_str().unwrap().to_owned();
    alice.push("incoming_chat").await;
    assert_eq!(
        alice
            .request("deactivate_chat", json!({"id": chat_id}))
            .await["success"],
        true
    );
    let r = cust
        .request(
            "resume_chat",
            json!({"chat": {"id": chat_id, "thread": {"events": [message("again")]}}}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let list = |filters: Value| {
        let s = &s;
        async move {
            let (code, r) = s
                .web(
                    "list_customers",
                    owner,
                    json!({"filters": filters, "limit": 100}),
                )
                .await;
            assert_eq!(code, 200, "{filters} -> {r}");
            let mut got: Vec<String> = r["customers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned())
                .collect();
            got.sort();
            assert_eq!(r["total_customers"], got.len(), "{r}");
            got
        }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        list(json!({"name": {"values": ["Ann", "Cid"]}})).await,
        sorted(vec![ids[0].clone(), ids[2].clone()])
    );
    assert_eq!(
        list(json!({"email": {"values": ["ben@EXAMPLE.com"]}})).await,
        vec![ids[1].clone()]
    );
    assert_eq!(
        list(json!({"email": {"exclude_values": ["ann@example.com"]}}))
            .await
            .len(),
        3
    );
    assert_eq!(
        list(json!({"customer_id": {"values": [chatter]}})).await,
        vec![chatter.clone()]
    );
    assert_eq!(
        list(json!({"chats_count": {"gte": 1}})).await,
        vec![chatter.clone()]
    );
    assert_eq!(
        list(json!({"threads_count": {"eq": 2}})).await,
        vec![chatter.clone()]
    );
    assert_eq!(
        list(json!({"include_customers_without_chats": false})).await,
        vec![chatter.clone()]
    );
    assert_eq!(
        list(json!({"chat_group_ids": {"values": [1]}})).await,
        vec![chatter.clone()]
    );
    assert_eq!(
        list(json!({"chat_group_ids": {"exclude_values": [1]}}))
            .await
            .len(),
        3
    );
    assert_eq!(
        list(json!({"customer_last_event_created_at": {"gte": "2000-01-01T00:00:00Z"}})).await,
        vec![chatter.clone()]
    );
    assert_eq!(
        list(json!({"created_at": {"lt": "2000-01-01T00:00:00Z"}}))
            .await
            .len(),
        0
    );
    assert_eq!(list(json!({"country": {"values": ["PL"]}})).await.len(), 0);
    assert_eq!(
        list(json!({"country": {"exclude_values": ["PL"]}}))
            .await
            .len(),
        4
    );
    assert_eq!(
        list(json!({"name": {"values": ["Ann", "Ben"]}, "email": {"exclude_values": ["ben@example.com"]}})).await,
        vec![ids[0].clone()]
    );
    // Sorted by threads: the chatter first (desc); the sort is frozen in the page id.
    let (code, r) = s
        .web(
            "list_customers",
            owner,
            json!({"sort_by": "threads_count", "limit": 1}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["customers"][0]["id"], json!(chatter));
    let next = r["next_page_id"].as_str().unwrap();
    let (code, r2) = s
        .web(
            "list_customers",
            owner,
            json!({"page_id": next, "limit": 10}),
        )
        .await;
    assert_eq!(code, 200, "{r2}");
    assert_eq!(r2["customers"].as_array().unwrap().len(), 3);
    assert!(
        r2["customers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != json!(chatter))
    );
    // The page id froze the sort: asking for another with it is refused.
    let (code, r3) = s
        .web(
            "list_customers",
            owner,
            json!({"page_id": next, "sort_by": "created_at"}),
        )
        .await;
    assert_eq!(
        (code, r3["error"]["type"].clone()),
        (400, json!("validation")),
        "{r3}"
    );
    // Bad filters are `validation`.
    for bad in [
        json!({"filters": {"nope": {"values": ["x"]}}}),
        json!({"filters": {"name": {"values": ["a"], "exclude_values": ["b"]}}}),
        json!({"filters": {"created_at": {"gte": "yesterday"}}}),
        json!({"filters": {"chats_count": {"gte": "one"}}}),
        json!({"sort_by": "height"}),
    ] {
        let (code, r) = s.web("list_customers", owner, bad.clone()).await;
        assert_eq!(
            (code, r["error"]["type"].clone()),
            (400, json!("validation")),
            "{bad} -> {r}"
        );
    }
}

#[tokio::test]
async fn v36_threads_show_the_customer_visit() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = TestServer::start().await;
    let mut alice = s.login("alice-pat-1").await;
    let (token, _) = s.customer_token("acme", None).await;
    let mut req = format!("ws://{}/v3.5/customer/rtm/ws?organization_id=acme", s.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("user-agent", "chatgate-test/1.0".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut cust = Rtm::from_ws(ws);
    cust.login_bearer(&token).await;
    let chat_id = cust.start_chat_saying("hi").await["chat_id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.push("incoming_chat").await;
    let visit = json!({"ip": "127.0.0.1", "user_agent": "chatgate-test/1.0"});
    let get = |version: &str| json!({"action": "get_chat", "version": version, "payload": {"chat_id": chat_id}});
    let r = alice.request_frame(get("3.6")).await;
    assert_eq!(r["payload"]["thread"]["customer_visit"], visit, "{r}");
    let r = alice.request_frame(get("3.5")).await;
    assert!(
        r["payload"]["thread"].get("customer_visit").is_none(),
        "{r}"
    );
    let r = alice
        .request_frame(
            json!({"action": "list_threads", "version": "3.6", "payload": {"chat_id": chat_id}}),
        )
        .await;
    assert_eq!(r["payload"]["threads"][0]["customer_visit"], visit, "{r}");
    // The customer never sees it; it is durable.
    let r = cust.request("get_chat", json!({"chat_id": chat_id})).await;
    assert!(
        r["payload"]["thread"].get("customer_visit").is_none(),
        "{r}"
    );
    drop((alice, cust));
    let s = s.restart().await;
    let (code, r) = web_call(
        &s.url("/v3.6/agent/action/get_chat"),
        Some("Bearer alice-pat-1"),
        json!({"chat_id": chat_id}).to_string(),
        &[],
    )
    .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["thread"]["customer_visit"], visit, "{r}");
}

#[tokio::test]
async fn v36_event_previews_reach_the_customer_and_are_not_stored() {
    let s = TestServer::start().await;
    let mut alice = s.login("alice-pat-1").await;
    // A customer on a 3.6 connection.
    let (token, _) = s.customer_token("acme", None).await;
    let mut cust = Rtm::connect_path(s.addr, "/v3.6/customer/rtm/ws?organization_id=acme").await;
    cust.login_bearer(&token).await;
    let chat_id = cust.start_chat_saying("hi").await["chat_id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice.push("incoming_chat").await;
    let preview = |event: Value, version: &str| {
        json!({"action": "send_event_preview", "version": version,
               "payload": {"chat_id": chat_id, "event": event}})
    };
    let r = alice
        .request_frame(preview(message("Let me check that for y"), "3.6"))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let p = cust.push("incoming_event_preview").await;
    assert_eq!(p["payload"]["chat_id"], json!(chat_id));
    assert_eq!(p["payload"]["event"]["text"], "Let me check that for y");
    assert_eq!(p["payload"]["event"]["author_id"], "alice@acme.test");
    // Refusals: 3.5, other event types, visibility agents, not a member.
    for (frame, kind) in [
        (preview(message("x"), "3.5"), "validation"),
        (
            preview(
                json!({"type": "file", "url": "https://x.test/a.png"}),
                "3.6",
            ),
            "validation",
        ),
        (
            preview(
                json!({"type": "message", "text": "x", "visibility": "agents"}),
                "3.6",
            ),
            "validation",
        ),
    ] {
        let r = alice.request_frame(frame).await;
        assert_eq!(r["payload"]["error"]["type"], kind, "{r}");
    }
    let mut bob = s.login("bob-pat-1").await;
    let r = bob.request_frame(preview(message("x"), "3.6")).await;
    assert_eq!(r["payload"]["error"]["type"], "missing_access", "{r}");
    // Nothing was stored.
    let r = alice.request("get_chat", json!({"chat_id": chat_id})).await;
    assert_eq!(
        r["payload"]["thread"]["events"].as_array().unwrap().len(),
        1,
        "{r}"
    );
}

#[tokio::test]
async fn group_statuses_are_pushed_when_they_change() {
    /// Waits for a `groups_status_updated` listing group `id` as `status`
    /// (changes within one flush interval arrive together).
    async fn until(rtm: &mut Rtm, id: u32, status: &str) -> Value {
        loop {
            let p = rtm.push("groups_status_updated").await;
            let hit = p["payload"]["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["id"] == id && g["status"] == status);
            if hit {
                return p["payload"].clone();
            }
        }
    }
    let s = TestServer::start().await;
    // Carol (group 1, not accepting at login; an administrator sees every
    // group) comes online: groups 0 and 1 are `not_accepting_chats`.
    let mut carol = s.login("carol-pat-1").await;
    let p = until(&mut carol, 1, "not_accepting_chats").await;
    assert!(p["groups"].as_array().unwrap().iter().any(|g| g["id"] == 0));
    // Bob logs in accepting: only group 0 changes.
    let mut bob = s.login("bob-pat-1").await;
    let p = until(&mut carol, 0, "accepting_chats").await;
    assert_eq!(
        p,
        json!({"groups": [{"id": 0, "status": "accepting_chats"}]})
    );
    until(&mut bob, 0, "accepting_chats").await;
    // Bob stops accepting: everyone online hears it, the requester too.
    let r = bob
        .request(
            "set_routing_status",
            json!({"status": "not_accepting_chats"}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    until(&mut carol, 0, "not_accepting_chats").await;
    until(&mut bob, 0, "not_accepting_chats").await;
    // Carol accepts: groups 0 and 1 become accepting; Bob (group 0 only)
    // hears only about group 0.
    let r = carol
        .request("set_routing_status", json!({"status": "accepting_chats"}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    let p = until(&mut bob, 0, "accepting_chats").await;
    assert_eq!(
        p,
        json!({"groups": [{"id": 0, "status": "accepting_chats"}]})
    );
    // Carol leaves: group 0 falls back to Bob's status.
    drop(carol);
    until(&mut bob, 0, "not_accepting_chats").await;
    // Nothing changes, nothing is sent.
    let r = bob
        .request(
            "set_routing_status",
            json!({"status": "not_accepting_chats"}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    bob.no_push("groups_status_updated", Duration::from_millis(700))
        .await;
}
