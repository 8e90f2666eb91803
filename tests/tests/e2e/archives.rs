//! `list_archives` end to end: every filter alone and combined, full-text
//! search with highlights over a couple of thousand events, access, paging
//! forwards and backwards through a changing data set, 3.5 against 3.6.

use crate::harness::*;
use serde_json::{Value, json};

const ALICE: Option<&str> = Some("Bearer alice-pat-1");
const BOB: Option<&str> = Some("Bearer bob-pat-1");

fn message(text: &str) -> Value {
    json!({"type": "message", "text": text})
}

/// Alice starts a chat with these messages in a thread; returns (chat, thread).
async fn start(s: &TestServer, groups: Value, texts: &[&str], active: bool) -> (String, String) {
    let events: Vec<Value> = texts.iter().map(|t| message(t)).collect();
    let (code, r) = s
        .web(
            "start_chat",
            ALICE,
            json!({"chat": {"access": {"group_ids": groups}, "thread": {"events": events}}, "active": active}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    (
        r["chat_id"].as_str().unwrap().to_owned(),
        r["thread_id"].as_str().unwrap().to_owned(),
    )
}

async fn archives(s: &TestServer, auth: Option<&str>, body: Value) -> Value {
    let (code, r) = s.web("list_archives", auth, body.clone()).await;
    assert_eq!(code, 200, "{body} -> {r}");
    r
}

/// (chat id, thread id) of each listed entry, in order.
fn entries(r: &Value) -> Vec<(String, String)> {
    r["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["thread"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn found(s: &TestServer, filters: Value) -> u64 {
    let r = archives(s, ALICE, json!({"filters": filters, "limit": 100})).await;
    let n = r["found_chats"].as_u64().unwrap();
    assert_eq!(n as usize, entries(&r).len(), "{r}");
    n
}

#[tokio::test]
async fn filters_search_highlights_and_access() {
    let s = TestServer::start().await;
    let (c1, t1) = start(
        &s,
        json!([0]),
        &["My refund is late", "We will refund you today"],
        false,
    )
    .await;
    let (c2, t2) = start(&s, json!([1]), &["Refund for order 7"], false).await;
    let (c3, t3) = start(&s, json!([0]), &["hello there"], false).await;
    let (code, r) = s
        .config(
            "create_tag",
            ALICE,
            json!({"name": "vip", "group_ids": [0]}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    let (code, r) = s
        .web(
            "tag_thread",
            ALICE,
            json!({"chat_id": c3, "thread_id": t3, "tag": "vip"}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    let (c4, t4) = start(&s, json!([0]), &["with a custom event"], true).await;
    let (code, r) = s
        .web(
            "send_event",
            ALICE,
            json!({"chat_id": c4, "event": {"type": "custom", "content": {"k": 1}}}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    let (code, r) = s.web("deactivate_chat", ALICE, json!({"id": c4})).await;
    assert_eq!(code, 200, "{r}");
    let (code, r) = s
        .web(
            "resume_chat",
            ALICE,
            json!({"chat": {"id": c1, "thread": {"events": [message("refund again, please")]}}, "active": false}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    let t1b = r["thread_id"].as_str().unwrap().to_owned();

    // Everything, newest thread first: one entry per thread.
    let all = archives(&s, ALICE, json!({})).await;
    assert_eq!(all["found_chats"], 5);
    assert_eq!(
        entries(&all),
        vec![
            (c1.clone(), t1b.clone()),
            (c4.clone(), t4.clone()),
            (c3.clone(), t3.clone()),
            (c2.clone(), t2.clone()),
            (c1.clone(), t1.clone()),
        ]
    );
    let first = &all["chats"][0];
    assert_eq!(first["thread"]["previous_thread_id"], json!(t1));
    assert_eq!(first["thread"]["previous_accessible_thread_id"], json!(t1));
    assert_eq!(first["thread"]["events"][0]["text"], "refund again, please");
    assert!(first["thread"].get("highlight").is_none());
    assert_eq!(first["is_followed"], false);
    let asc = archives(&s, ALICE, json!({"sort_order": "asc"})).await;
    let mut reversed = entries(&all);
    reversed.reverse();
    assert_eq!(entries(&asc), reversed);

    // Full text, with default and custom highlight tags.
    let r = archives(
        &s,
        ALICE,
        json!({"filters": {"query": "REFUND"}, "highlights": {}}),
    )
    .await;
    assert_eq!(
        entries(&r),
        vec![
            (c1.clone(), t1b.clone()),
            (c2.clone(), t2.clone()),
            (c1.clone(), t1.clone())
        ]
    );
    let hl = &r["chats"][2]["thread"]["highlight"];
    let texts: Vec<&str> = hl
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 2, "{hl}");
    assert!(texts.contains(&"My <em>refund</em> is late"), "{hl}");
    assert!(texts.contains(&"We will <em>refund</em> you today"), "{hl}");
    let r = archives(
        &s,
        ALICE,
        json!({"filters": {"query": "refund order"}, "highlights": {"pre_tag": "[", "post_tag": "]"}}),
    )
    .await;
    assert_eq!(entries(&r), vec![(c2.clone(), t2.clone())]);
    assert_eq!(
        r["chats"][0]["thread"]["highlight"][0]["text"],
        "[Refund] for [order] 7"
    );
    assert_eq!(found(&s, json!({"query": "nowhere"})).await, 0);

    // Bob reads group 0 only: the group-1 chat is not his to find.
    let r = archives(&s, BOB, json!({"filters": {"query": "refund"}})).await;
    assert_eq!(
        entries(&r),
        vec![(c1.clone(), t1b.clone()), (c1.clone(), t1.clone())]
    );

    // Each metadata filter alone, then combined.
    assert_eq!(found(&s, json!({"group_ids": [1]})).await, 1);
    assert_eq!(found(&s, json!({"tags": {"values": ["vip"]}})).await, 1);
    assert_eq!(found(&s, json!({"tags": {"exists": false}})).await, 4);
    assert_eq!(
        found(&s, json!({"tags": {"exclude_values": ["vip"]}})).await,
        4
    );
    assert_eq!(
        found(&s, json!({"event_types": {"values": ["custom"]}})).await,
        1
    );
    assert_eq!(
        found(
            &s,
            json!({"event_types": {"values": ["custom", "message"], "require_every_value": true}})
        )
        .await,
        1
    );
    assert_eq!(
        found(&s, json!({"event_types": {"exclude_values": ["custom"]}})).await,
        4
    );
    assert_eq!(
        found(&s, json!({"agents": {"values": ["alice@acme.test"]}})).await,
        5
    );
    assert_eq!(
        found(&s, json!({"agents": {"values": ["bob@acme.test"]}})).await,
        0
    );
    assert_eq!(found(&s, json!({"agents": {"exists": false}})).await, 0);
    assert_eq!(
        found(&s, json!({"agent_response": {"exists": true}})).await,
        5
    );
    assert_eq!(
        found(&s, json!({"agent_response": {"first": true, "agents": {"exclude_values": ["alice@acme.test"]}}})).await,
        0
    );
    assert_eq!(
        found(&s, json!({"agent_response": {"groups": {"values": [1]}}})).await,
        5
    );
    let t3_created = all["chats"][2]["thread"]["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let t4_created = all["chats"][1]["thread"]["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(found(&s, json!({"from": t3_created})).await, 3);
    assert_eq!(
        found(&s, json!({"from": t3_created, "to": t4_created})).await,
        2
    );
    assert_eq!(
        found(
            &s,
            json!({"from": t3_created, "query": "refund", "group_ids": [0]})
        )
        .await,
        1
    );
    assert_eq!(found(&s, json!({"thread_ids": [t2, t3]})).await, 2);
    // Data chatgate does not record matches only "nothing recorded".
    assert_eq!(found(&s, json!({"greetings": {"exists": true}})).await, 0);
    assert_eq!(found(&s, json!({"sales": {"exists": false}})).await, 5);
    assert_eq!(
        found(&s, json!({"customer_countries": {"values": ["PL"]}})).await,
        0
    );

    // Bad filters are `validation`, with the request untouched.
    for bad in [
        json!({"filters": {"thread_ids": [t2], "query": "refund"}}),
        json!({"filters": {"nope": 1}}),
        json!({"filters": {"tags": {"values": ["vip"], "exists": true}}}),
        json!({"filters": {"from": "last tuesday"}}),
        json!({"filters": {"query": "  ?! "}}),
        json!({"filters": {"customer_id": "x"}}),
        json!({"limit": 101}),
        json!({"sort_order": "sideways"}),
        json!({"highlights": {"pre_tag": "<".repeat(65)}}),
    ] {
        let (code, r) = s.web("list_archives", ALICE, bad.clone()).await;
        assert_eq!(code, 400, "{bad} -> {r}");
        assert_eq!(r["error"]["type"], "validation", "{bad} -> {r}");
    }
    // The read-only token reads archives; a customer cannot.
    let r = archives(&s, Some("Bearer alice-ro-1"), json!({})).await;
    assert_eq!(r["found_chats"], 5);
}

#[tokio::test]
async fn archives_page_through_a_changing_set_and_differ_by_version() {
    let s = TestServer::start().await;
    let mut threads = Vec::new();
    for i in 0..7 {
        let (_, t) = start(&s, json!([0]), &[&format!("message number {i}")], false).await;
        threads.push(t);
    }
    threads.reverse(); // newest first
    // Forwards, two at a time; a chat started meanwhile shifts nothing.
    let mut r = archives(&s, ALICE, json!({"limit": 2})).await;
    assert!(r.get("previous_page_id").is_none());
    let mut seen: Vec<String> = entries(&r).into_iter().map(|e| e.1).collect();
    let mut pages = vec![r.clone()];
    start(&s, json!([0]), &["arrived while paging"], false).await;
    while let Some(next) = r.get("next_page_id").and_then(Value::as_str) {
        r = archives(&s, ALICE, json!({"page_id": next})).await;
        assert_eq!(r["found_chats"], 7, "frozen as of the first page: {r}");
        seen.extend(entries(&r).into_iter().map(|e| e.1));
        pages.push(r.clone());
    }
    assert_eq!(seen, threads);
    assert_eq!(pages.len(), 4);
    // Backwards from the last page gives the same pages.
    let mut back = Vec::new();
    let mut r = pages.last().unwrap().clone();
    while let Some(prev) = r.get("previous_page_id").and_then(Value::as_str) {
        r = archives(&s, ALICE, json!({"page_id": prev})).await;
        back.push(entries(&r));
    }
    let expected: Vec<_> = pages[..3].iter().rev().map(entries).collect();
    assert_eq!(back, expected);
    // A page id freezes the filters; it is not Bob's to use.
    let next = pages[0]["next_page_id"].as_str().unwrap();
    let (code, e) = s
        .web(
            "list_archives",
            ALICE,
            json!({"page_id": next, "filters": {"query": "number"}}),
        )
        .await;
    assert_eq!(
        (code, e["error"]["type"].clone()),
        (400, json!("validation"))
    );
    let (code, _) = s.web("list_archives", BOB, json!({"page_id": next})).await;
    assert_eq!(code, 400);
    // thread_ids cannot page.
    let (code, _) = s
        .web(
            "list_archives",
            ALICE,
            json!({"page_id": next, "filters": {"thread_ids": [threads[0]]}}),
        )
        .await;
    assert_eq!(code, 400);

    // 3.6 filters on RTM: refused under 3.5, served under 3.6.
    let mut alice = s.login("alice-pat-1").await;
    let (mut cust, customer_id) = s.customer("acme").await;
    let r = cust
        .request(
            "start_chat",
            json!({"chat": {"thread": {"events": [message("where is my number")]}}}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let chat_id = r["payload"]["chat_id"].as_str().unwrap().to_owned();
    let frame = |version: &str| {
        json!({"action": "list_archives", "version": version,
               "payload": {"filters": {"customer_id": customer_id, "query": "number"}}})
    };
    let r = alice.request_frame(frame("3.5")).await;
    assert_eq!(r["payload"]["error"]["type"], "validation", "{r}");
    let r = alice.request_frame(frame("3.6")).await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["payload"]["found_chats"], 1, "{r}");
    assert_eq!(r["payload"]["chats"][0]["id"], json!(chat_id));
    // A customer is not an agent: the method is not on its API.
    let (token, _) = s.customer_token("acme", None).await;
    let (code, _) = s
        .customer_web("acme", "list_archives", &token, json!({}))
        .await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn full_text_over_a_few_thousand_events() {
    let s = TestServer::start().await;
    // 40 chats of 60 messages; every 7th message mentions a parcel.
    let mut expected = 0;
    for c in 0..40 {
        let texts: Vec<String> = (0..60)
            .map(|i| {
                let n = c * 60 + i;
                if n % 7 == 0 {
                    format!("message {n} about the parcel")
                } else {
                    format!("message {n} about nothing much")
                }
            })
            .collect();
        if texts.iter().any(|t| t.contains("parcel")) {
            expected += 1;
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        start(&s, json!([0]), &refs, false).await;
    }
    let r = archives(
        &s,
        ALICE,
        json!({"filters": {"query": "parcel"}, "highlights": {}, "limit": 100}),
    )
    .await;
    assert_eq!(r["found_chats"], expected);
    let mut highlighted = 0;
    for chat in r["chats"].as_array().unwrap() {
        for h in chat["thread"]["highlight"].as_array().unwrap() {
            assert!(
                h["text"].as_str().unwrap().ends_with("the <em>parcel</em>"),
                "{h}"
            );
            highlighted += 1;
        }
    }
    assert_eq!(highlighted, (0..2400).filter(|n| n % 7 == 0).count());
    // One exact message among 2,400.
    let r = archives(&s, ALICE, json!({"filters": {"query": "message 1234"}})).await;
    assert_eq!(r["found_chats"], 1);
    assert_eq!(
        r["chats"][0]["thread"]["events"].as_array().unwrap().len(),
        60
    );
    // The index is durable: found again after a restart.
    let s = s.restart().await;
    let r = archives(&s, ALICE, json!({"filters": {"query": "parcel"}})).await;
    assert_eq!(r["found_chats"], expected);
}
