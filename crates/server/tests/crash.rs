//! Crash safety: `kill -9` of the real binary while concurrent writers are
//! being acknowledged; after a restart every acknowledged event is there,
//! numbering has no gap or duplicate, and nothing half-applied shows.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const PROVISION: &str = r#"
[[organization]]
id = "crash"
name = "Crash"
[[organization.agent]]
id = "writer@crash.test"
role = "owner"
tokens = ["writer-token-1"]
"#;

/// Starts the binary and returns it with its HTTP address. The caller
/// kills and waits for the child; a failed start panics the test, which
/// ends the child with the test process.
#[allow(clippy::zombie_processes)]
fn start(dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatgate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--rate-limit-per-sec",
            "0",
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--provision")
        .arg(dir.join("p.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = lines.next().expect("server output").unwrap();
        if line.contains("chatgate serving") {
            let v: Value = serde_json::from_str(&line).unwrap();
            // Keep draining stdout so the server never blocks on it.
            std::thread::spawn(move || for _ in lines {});
            return (child, v["fields"]["http_addr"].as_str().unwrap().to_owned());
        }
        assert!(Instant::now() < deadline, "server did not start");
    }
}

async fn call(
    client: &reqwest::Client,
    addr: &str,
    method: &str,
    body: Value,
) -> Result<Value, String> {
    let resp = client
        .post(format!("http://{addr}/v3.5/agent/action/{method}"))
        .header("authorization", "Bearer writer-token-1")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let v: Value = resp.json().await.map_err(|e| e.to_string())?;
    if status == 200 {
        Ok(v)
    } else {
        Err(v.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), PROVISION).unwrap();
    let (mut child, addr) = start(dir.path());
    let client = reqwest::Client::new();
    let chat = call(&client, &addr, "start_chat", json!({})).await.unwrap();
    let chat_id = chat["chat_id"].as_str().unwrap().to_owned();

    // Eight writers send events as fast as they are acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, addr, chat_id, stop) =
            (client.clone(), addr.clone(), chat_id.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let body = json!({"chat_id": chat_id, "event": {"type": "message", "text": format!("w{w} n{n}"), "custom_id": format!("w{w}-{n}")}});
                match call(&client, &addr, "send_event", body).await {
                    Ok(v) => acked.push((format!("w{w}-{n}"), v["event_id"].as_str().unwrap().to_owned())),
                    Err(_) => break, // the server is gone
                }
                n += 1;
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SIGKILL: no graceful anything.
    child.kill().unwrap();
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 50,
        "the load was real: {} acknowledged writes",
        acked.len()
    );

    let (mut child, addr) = start(dir.path());
    let chat = call(&client, &addr, "get_chat", json!({"chat_id": chat_id}))
        .await
        .unwrap();
    let events = chat["thread"]["events"].as_array().unwrap();
    let stored: std::collections::HashMap<&str, &str> = events
        .iter()
        .map(|e| (e["custom_id"].as_str().unwrap(), e["id"].as_str().unwrap()))
        .collect();
    for (custom, id) in &acked {
        assert_eq!(
            stored.get(custom.as_str()),
            Some(&id.as_str()),
            "acknowledged event {custom} ({id}) was lost"
        );
    }
    // Numbering is contiguous: no gap, no duplicate, nothing half-applied.
    let mut numbers: Vec<u64> = events
        .iter()
        .map(|e| {
            e["id"]
                .as_str()
                .unwrap()
                .rsplit('_')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=events.len() as u64).collect::<Vec<_>>());
    // Full-text search finds the last acknowledged event of every writer:
    // their text was likely still waiting to be indexed at the kill (the
    // index trails the commits), so the restart indexed it again, once.
    let mut last: std::collections::BTreeMap<&str, (&str, &str)> = Default::default();
    for (custom, id) in &acked {
        let (writer, _) = custom.split_once('-').unwrap();
        last.insert(writer, (custom.as_str(), id.as_str()));
    }
    for (writer, (custom, id)) in &last {
        let n = custom.split_once('-').unwrap().1;
        let found = call(
            &client,
            &addr,
            "list_archives",
            json!({"filters": {"query": format!("{writer} n{n}")}, "highlights": {}}),
        )
        .await
        .unwrap();
        let hits: Vec<&str> = found["chats"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["thread"]["highlight"].as_array().unwrap())
            .map(|h| h["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(hits, vec![*id], "searching for {custom}'s text: {found}");
    }
    // The chat goes on where it stopped; a retried write is not doubled.
    let (custom, id) = &acked[0];
    let again = call(&client, &addr, "send_event", json!({"chat_id": chat_id, "event": {"type": "message", "text": "retry", "custom_id": custom}})).await.unwrap();
    assert_eq!(again["event_id"].as_str(), Some(id.as_str()));
    let next = call(
        &client,
        &addr,
        "send_event",
        json!({"chat_id": chat_id, "event": {"type": "message", "text": "after"}}),
    )
    .await
    .unwrap();
    assert!(
        next["event_id"]
            .as_str()
            .unwrap()
            .ends_with(&format!("_{}", events.len() + 1))
    );
    eprintln!(
        "kill -9: {} acknowledged writes before the kill, {} events stored, all acknowledged ones found",
        acked.len(),
        events.len()
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
