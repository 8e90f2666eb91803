//! Fan-out through the engine with the real store: a session that stops
//! reading is cut off without slowing anyone, and pushes follow commit order
//! under concurrent writers.

use chatgate_engine::*;
use chatgate_protocol::{DisconnectReason, Version};
use chatgate_store::{SqliteStore, StoreConfig};
use serde_json::{Value, json};
use std::sync::Arc;

async fn engine(dir: &std::path::Path, queue: usize) -> Engine {
    let store = Arc::new(SqliteStore::open(dir, StoreConfig::default()).unwrap());
    let engine = Engine::start(
        store,
        EngineConfig {
            outbound_queue: queue,
            ..EngineConfig::default()
        },
    )
    .unwrap();
    let spec: ProvisionSpec = serde_json::from_value(json!({
        "organization": [{
            "id": "acme", "name": "Acme",
            "agent": [
                {"id": "alice@acme.test", "role": "owner", "tokens": ["alice-token"]},
                {"id": "bob@acme.test", "tokens": ["bob-token"]},
                {"id": "carol@acme.test", "tokens": ["carol-token"]}
            ]
        }]
    }))
    .unwrap();
    engine.provision(&spec).await.unwrap();
    engine
}

fn request(requester: Requester, action: &str, payload: Value) -> Request {
    Request {
        requester,
        version: Version::V3_5,
        action: action.into(),
        payload,
        request_id: None,
        author_id: None,
    }
}

async fn login(engine: &Engine, token: &str) -> (Arc<Connection>, ConnectionRx) {
    let (conn, rx) = engine.connect(Side::Agent, Version::V3_5, None);
    let r = engine
        .execute(request(
            Requester::Rtm(conn.clone()),
            "login",
            json!({"token": format!("Bearer {token}")}),
        ))
        .await;
    assert!(r.is_ok(), "{r:?}");
    (conn, rx)
}

fn web(token: &str) -> Requester {
    Requester::Web {
        authorization: Some(format!("Bearer {token}")),
    }
}

fn drain(rx: &mut ConnectionRx) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(b) = rx.try_recv() {
        out.push(serde_json::from_slice(&b).unwrap());
    }
    out
}

#[tokio::test]
async fn a_session_that_stops_reading_is_cut_off_and_slows_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), 8).await;
    let (_alice, _alice_rx) = login(&engine, "alice-token").await;
    let (reader, mut reader_rx) = login(&engine, "bob-token").await;
    let (stuck, _stuck_rx_never_read) = login(&engine, "carol-token").await;
    drain(&mut reader_rx);
    const N: usize = 40;
    for i in 0..N {
        let status = if i % 2 == 0 {
            "not_accepting_chats"
        } else {
            "accepting_chats"
        };
        let r = engine
            .execute(request(
                web("alice-token"),
                "set_routing_status",
                json!({"status": status}),
            ))
            .await;
        assert!(
            r.is_ok(),
            "the writer is never held up by a stuck reader: {r:?}"
        );
        // The reader keeps up.
        for p in drain(&mut reader_rx) {
            assert_eq!(p["payload"]["agent_id"], "alice@acme.test");
        }
    }
    let (reason, data) = stuck.close_reason().expect("the stuck session was closed");
    assert_eq!(reason, DisconnectReason::ConnectionTimeout);
    assert_eq!(data.unwrap()["detail"], "slow_consumer");
    assert!(stuck.dropped_frames() >= 1);
    assert!(
        reader.close_reason().is_none(),
        "the reading session is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_follow_commit_order_under_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), 4096).await;
    let (_alice, _a) = login(&engine, "alice-token").await;
    let (_watcher, mut watcher_rx) = login(&engine, "bob-token").await;
    drain(&mut watcher_rx);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let status = if i % 3 == 0 {
                    "not_accepting_chats"
                } else {
                    "accepting_chats"
                };
                engine
                    .execute(request(
                        web("alice-token"),
                        "set_routing_status",
                        json!({"status": status}),
                    ))
                    .await
                    .unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let pushes: Vec<Value> = drain(&mut watcher_rx)
        .into_iter()
        .filter(|p| p["payload"]["agent_id"] == "alice@acme.test")
        .collect();
    assert_eq!(
        pushes.len(),
        64,
        "one push per committed change, none lost or doubled"
    );
    let listed = engine
        .execute(request(
            web("bob-token"),
            "list_routing_statuses",
            json!({}),
        ))
        .await
        .unwrap()
        .payload;
    let now = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["agent_id"] == "alice@acme.test")
        .unwrap()["status"]
        .clone();
    assert_eq!(
        pushes.last().unwrap()["payload"]["status"],
        now,
        "the last push is the last committed state"
    );
}

#[tokio::test]
async fn a_response_follows_the_commit() {
    // After set_routing_status answers, a fresh engine on the same data sees
    // the change: the answer came after the durable commit.
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = engine(dir.path(), 16).await;
        let (_a, _rx) = login(&engine, "alice-token").await;
        engine
            .execute(request(
                web("alice-token"),
                "set_routing_status",
                json!({"status": "not_accepting_chats"}),
            ))
            .await
            .unwrap();
        // No graceful close: the store is dropped with the engine.
    }
    let store = Arc::new(SqliteStore::open(dir.path(), StoreConfig::default()).unwrap());
    let engine = Engine::start(store, EngineConfig::default()).unwrap();
    let (conn, _rx) = engine.connect(Side::Agent, Version::V3_5, None);
    let r = engine
        .execute(request(
            Requester::Rtm(conn),
            "login",
            json!({"token": "Bearer alice-token", "reconnect": true}),
        ))
        .await
        .unwrap();
    assert_eq!(
        r.payload["my_profile"]["routing_status"],
        "not_accepting_chats"
    );
}

/// How many `incoming_multicast` pushes are waiting on `rx`.
fn multicasts(rx: &mut ConnectionRx) -> usize {
    drain(rx)
        .iter()
        .filter(|f| f["action"] == "incoming_multicast")
        .count()
}

#[tokio::test]
async fn a_multicast_to_everyone_follows_logins_and_disconnects() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path(), 64).await;
    let everyone = json!({"recipients": {"agents": {"all": true}}, "content": {}});
    let multicast = || engine.execute(request(web("alice-token"), "multicast", everyone.clone()));
    let (_bob, mut bob_rx) = login(&engine, "bob-token").await;
    multicast().await.unwrap();
    assert_eq!(multicasts(&mut bob_rx), 1);
    // A session that logs in after the last multicast hears the next one
    // (the organization's list of sessions is cached between changes).
    let (carol, mut carol_rx) = login(&engine, "carol-token").await;
    multicast().await.unwrap();
    assert_eq!(multicasts(&mut bob_rx), 1);
    assert_eq!(multicasts(&mut carol_rx), 1);
    // A second session of the same agent, too.
    let (_carol2, mut carol2_rx) = login(&engine, "carol-token").await;
    multicast().await.unwrap();
    assert_eq!(multicasts(&mut bob_rx), 1);
    assert_eq!(multicasts(&mut carol_rx), 1);
    assert_eq!(multicasts(&mut carol2_rx), 1);
    // A session that ended is no longer addressed; the others still are.
    engine.disconnect(&carol).await;
    multicast().await.unwrap();
    assert_eq!(multicasts(&mut carol_rx), 0);
    assert_eq!(multicasts(&mut carol2_rx), 1);
    assert_eq!(multicasts(&mut bob_rx), 1);
}
