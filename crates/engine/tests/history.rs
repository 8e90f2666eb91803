//! A chat's history leaves memory: only its last thread stays hot (and its
//! events only while the chat is active), and every older thread is still
//! listed, shown, searched, tagged, given properties and deduplicated by
//! `custom_id` from the store, before and after a restart.

use chatgate_engine::*;
use chatgate_protocol::Version;
use chatgate_store::{SqliteStore, StoreConfig};
use serde_json::{Value, json};
use std::sync::Arc;

const SPEC: &str = r#"{
    "organization": [{
        "id": "acme", "name": "Acme",
        "agent": [
            {"id": "alice@acme.test", "role": "owner", "tokens": ["alice-token"]}
        ]
    }]
}"#;

async fn engine(dir: &std::path::Path) -> (Engine, Arc<SqliteStore>) {
    let store = Arc::new(SqliteStore::open(dir, StoreConfig::default()).unwrap());
    let engine = Engine::start(store.clone(), EngineConfig::default()).unwrap();
    let spec: ProvisionSpec = serde_json::from_str(SPEC).unwrap();
    engine.provision(&spec).await.unwrap();
    (engine, store)
}

async fn call(engine: &Engine, action: &str, payload: Value) -> Result<Value, String> {
    let authorization = Some("Bearer alice-token".to_owned());
    let requester = if action == "create_tag" {
        Requester::ConfigWeb { authorization }
    } else {
        Requester::Web { authorization }
    };
    let r = engine
        .execute(Request {
            requester,
            version: Version::V3_6,
            action: action.into(),
            payload,
            request_id: None,
            author_id: None,
        })
        .await;
    match r {
        Ok(reply) => Ok(reply.payload),
        Err(e) => Err(serde_json::to_string(&e).unwrap()),
    }
}

async fn ok(engine: &Engine, action: &str, payload: Value) -> Value {
    call(engine, action, payload)
        .await
        .unwrap_or_else(|e| panic!("{action}: {e}"))
}

fn message(text: &str, custom_id: &str) -> Value {
    json!({"type": "message", "text": text, "visibility": "all", "custom_id": custom_id})
}

/// A chat with three threads; returns its id and the threads' ids.
async fn three_threads(engine: &Engine) -> (String, Vec<String>) {
    let started = ok(
        engine,
        "start_chat",
        json!({"chat": {"thread": {"events": [message("first", "c-1")]}}}),
    )
    .await;
    let chat = started["chat_id"].as_str().unwrap().to_owned();
    let mut threads = vec![started["thread_id"].as_str().unwrap().to_owned()];
    for n in 2..=3 {
        ok(engine, "deactivate_chat", json!({"id": chat})).await;
        let resumed = ok(
            engine,
            "resume_chat",
            json!({"chat": {"id": chat, "thread": {"events": [message(&format!("thread {n}"), &format!("c-{n}"))]}}}),
        )
        .await;
        threads.push(resumed["thread_id"].as_str().unwrap().to_owned());
    }
    (chat, threads)
}

/// Everything the test checks of the three threads, asked of `engine`.
async fn check(engine: &Engine, chat: &str, threads: &[String]) {
    // `list_threads` lists all three, oldest linked to the next.
    let listed = ok(
        engine,
        "list_threads",
        json!({"chat_id": chat, "sort_order": "asc"}),
    )
    .await;
    let ids: Vec<&str> = listed["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, threads.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(listed["found_threads"], 3);
    let first = &listed["threads"][0];
    assert_eq!(first["events"][0]["text"], "first");
    assert_eq!(first["next_thread_id"], threads[1].as_str());
    assert!(first.get("previous_thread_id").is_none_or(Value::is_null));

    // `get_chat` of the middle thread: its events and both neighbors.
    let got = ok(
        engine,
        "get_chat",
        json!({"chat_id": chat, "thread_id": threads[1]}),
    )
    .await;
    let t = &got["thread"];
    assert_eq!(t["id"], threads[1].as_str());
    assert_eq!(t["events"][0]["text"], "thread 2");
    assert_eq!(t["previous_thread_id"], threads[0].as_str());
    assert_eq!(t["next_thread_id"], threads[2].as_str());
    assert_eq!(t["active"], false);
    // Without a thread id: the last one, whose previous is an older one.
    let got = ok(engine, "get_chat", json!({"chat_id": chat})).await;
    assert_eq!(got["thread"]["id"], threads[2].as_str());
    assert_eq!(got["thread"]["previous_thread_id"], threads[1].as_str());
    let unknown = call(
        engine,
        "get_chat",
        json!({"chat_id": chat, "thread_id": "nope"}),
    )
    .await
    .unwrap_err();
    assert!(unknown.contains("not_found"), "{unknown}");

    // The archive search finds the older thread by its tag and property.
    let found = ok(
        engine,
        "list_archives",
        json!({"filters": {"tags": {"values": ["vip"]}}}),
    )
    .await;
    let found: Vec<&str> = found["chats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["thread"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(found, vec![threads[0].as_str()]);
    let all = ok(engine, "list_archives", json!({})).await;
    assert_eq!(all["found_chats"], 3, "every thread is an archive entry");
    let old = ok(
        engine,
        "get_chat",
        json!({"chat_id": chat, "thread_id": threads[0]}),
    )
    .await;
    assert_eq!(old["thread"]["tags"], json!(["vip"]));
    assert_eq!(
        old["thread"]["properties"]["routing"]["pinned"], true,
        "{old}"
    );

    // A retry of an older thread's send returns the original event and
    // stores nothing.
    let retried = ok(
        engine,
        "send_event",
        json!({"chat_id": chat, "event": message("first again", "c-1")}),
    )
    .await;
    let original = first["events"][0]["id"].as_str().unwrap();
    assert_eq!(retried["event_id"], original);
    let last = ok(engine, "get_chat", json!({"chat_id": chat})).await;
    let texts: Vec<&str> = last["thread"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert_eq!(texts, vec!["thread 3"], "the retry added nothing");

    // The chat's summary carries its last event (read from the store when
    // the chat is inactive).
    let listed = ok(engine, "list_chats", json!({})).await;
    let s = &listed["chats_summary"][0];
    assert_eq!(s["id"], chat);
    assert_eq!(
        s["last_event_per_type"]["message"]["event"]["text"], "thread 3",
        "{s}"
    );
}

#[tokio::test]
async fn older_threads_are_served_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (chat, threads) = {
        let (engine, store) = engine(dir.path()).await;
        let (chat, threads) = three_threads(&engine).await;
        assert_eq!(
            engine.hot_threads(),
            1,
            "only the chat's last thread stays in memory"
        );
        // Edits of a thread no longer in memory go to the store.
        ok(
            &engine,
            "create_tag",
            json!({"name": "vip", "group_ids": [0]}),
        )
        .await;
        ok(
            &engine,
            "tag_thread",
            json!({"chat_id": chat, "thread_id": threads[0], "tag": "vip"}),
        )
        .await;
        ok(
            &engine,
            "update_thread_properties",
            json!({"chat_id": chat, "thread_id": threads[0],
                   "properties": {"routing": {"pinned": true}}}),
        )
        .await;
        check(&engine, &chat, &threads).await;
        assert_eq!(engine.hot_threads(), 1);
        assert_eq!(engine.hot_events(), 1, "the active chat's last thread");
        // Inactive, the chat's events leave memory and are still served.
        ok(&engine, "deactivate_chat", json!({"id": chat})).await;
        assert_eq!(engine.hot_events(), 0);
        // Resuming with an initial event that repeats a custom id of the
        // first thread (in the store) or of the last (in memory) is refused,
        // and changes nothing.
        for used in ["c-1", "c-3"] {
            let refused = call(
                &engine,
                "resume_chat",
                json!({"chat": {"id": chat, "thread": {"events": [message("again", used)]}}}),
            )
            .await
            .unwrap_err();
            assert!(
                refused.contains("validation") && refused.contains(used),
                "{refused}"
            );
        }
        check(&engine, &chat, &threads).await;
        drop(engine);
        chatgate_store::Store::close(&*store);
        (chat, threads)
    };
    // After a restart: the same answers, and still one thread in memory.
    let (engine, _store) = engine(dir.path()).await;
    assert_eq!(engine.hot_threads(), 1);
    assert_eq!(engine.hot_events(), 0, "an inactive chat loads no events");
    check(&engine, &chat, &threads).await;
}
