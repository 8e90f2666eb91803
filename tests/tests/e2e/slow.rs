//! Slow consumers over real sockets: a session that stops reading is cut
//! off with `connection_timeout` / `slow_consumer` once its bounded queue
//! fills, the others get every push, the cut-off session ends within
//! `close_drain` however long a blocked write could wait, and a client that
//! reads again within that time finds the reason.

use crate::harness::*;
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::MaybeTlsStream;

const MULTICASTS: usize = 20;
/// Each push is larger than what the kernel buffers of a stalled client
/// hold, so the session's writer stays blocked until it is cut off.
const PAD: usize = 100_000;

/// A server whose stalled sessions fill up fast: a 256 KiB queue (two
/// waiting pushes) and 4 KiB socket send buffers; a blocked write could wait
/// two minutes.
async fn server(close_drain: Duration) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.engine.outbound_queue = 32;
    c.engine.resume_log = 32;
    c.engine.outbound_queue_bytes = 256 * 1024;
    c.socket_send_buffer = Some(4096);
    c.web.rtm.write_timeout = Duration::from_secs(120);
    c.web.rtm.close_drain = close_drain;
    TestServer::start_with(dir, c).await
}

/// Bob, logged in over a socket with a small receive buffer (so that the
/// kernel cannot soak up megabytes on his behalf).
async fn stalled_bob(s: &TestServer) -> Rtm {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(s.addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{}/v3.5/agent/rtm/ws", s.addr),
        MaybeTlsStream::Plain(tcp),
    )
    .await
    .unwrap();
    let mut bob = Rtm::from_ws(ws);
    bob.login_bearer("bob-pat-1").await;
    bob
}

/// Carol multicasts to every agent; Alice reads along and must get every
/// one, in order, while Bob reads nothing.
async fn multicast_past_bob(s: &TestServer) {
    let mut alice = s.login("alice-pat-1").await;
    let mut carol = s.login("carol-pat-1").await;
    let pad = "x".repeat(PAD);
    let reader = tokio::spawn(async move {
        let mut next = 0;
        while next < MULTICASTS {
            let f = alice.push("incoming_multicast").await;
            assert_eq!(f["payload"]["content"]["i"], next, "{f}");
            next += 1;
        }
        alice
    });
    for i in 0..MULTICASTS {
        let r = carol
            .request(
                "multicast",
                json!({"recipients": {"agents": {"all": true}}, "content": {"i": i, "pad": pad}}),
            )
            .await;
        assert_eq!(r["success"], true, "{r}");
        carol.pushes.clear();
    }
    let alice = reader.await.expect("alice got every multicast in order");
    drop((alice, carol));
}

#[tokio::test]
async fn a_stalled_session_is_cut_off_within_close_drain_and_others_get_everything() {
    let s = server(Duration::from_secs(1)).await;
    let bob = stalled_bob(&s).await;
    let engine = s.running.as_ref().unwrap().engine.clone();
    let before = engine.connection_count();
    multicast_past_bob(&s).await;
    // Bob still reads nothing; his session must end long before a blocked
    // write's two-minute timeout: within the 1 s close drain of the cut-off.
    let deadline = Instant::now() + Duration::from_secs(30);
    while engine.connection_count() >= before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        engine.connection_count() < before,
        "the stalled session is still open 30 s after it was cut off"
    );
    drop(bob);
}

#[tokio::test]
async fn a_stalled_client_that_reads_again_finds_why_it_was_cut_off() {
    let s = server(Duration::from_secs(30)).await;
    let mut bob = stalled_bob(&s).await;
    multicast_past_bob(&s).await;
    // Bob wakes up: he reads what the buffers held, then the reason.
    let mut got = 0;
    let reason = loop {
        let f = bob
            .next_frame()
            .await
            .expect("the reason comes before the close");
        match f["action"].as_str() {
            Some("incoming_multicast") => got += 1,
            Some("agent_disconnected") => break f,
            _ => {}
        }
    };
    assert_eq!(
        reason["payload"]["reason"], "connection_timeout",
        "{reason}"
    );
    assert_eq!(reason["payload"]["data"]["detail"], "slow_consumer");
    assert!(got < MULTICASTS, "bob was cut off, not served: {got}");
    assert!(bob.closed_soon().await);
}
