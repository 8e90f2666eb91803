//! `upload_file` end to end: multipart uploads by agents and customers,
//! the 10 MB limit, executables refused, files served back, a `file` event
//! making an upload permanent, expiry after 24 h (with the clock the test
//! chooses), durability across a restart.

use crate::harness::*;
use serde_json::{Value, json};

const ALICE: &str = "Bearer alice-pat-1";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n-not-really-an-image-";

/// A multipart body with one part per `(field, file name, type, bytes)`.
fn multipart(parts: &[(&str, &str, &str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "chatgate-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (field, name, ctype, bytes) in parts {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\nContent-Type: {ctype}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn post(url: &str, auth: Option<&str>, ctype: &str, body: Vec<u8>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", ctype)
        .body(body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn upload(s: &TestServer, auth: &str, name: &str, ctype: &str, bytes: &[u8]) -> (u16, Value) {
    let (ct, body) = multipart(&[("file", name, ctype, bytes)]);
    post(
        &s.url("/v3.5/agent/action/upload_file"),
        Some(auth),
        &ct,
        body,
    )
    .await
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.unwrap()
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

#[tokio::test]
async fn uploads_limits_events_and_expiry() {
    let s = TestServer::start().await;
    // An agent uploads; the file is served back at the returned URL.
    let (code, r) = upload(&s, ALICE, "photo.png", "image/png", PNG).await;
    assert_eq!(code, 200, "{r}");
    let used = r["url"].as_str().unwrap().to_owned();
    assert!(used.starts_with(&s.url("/files/acme/")), "{used}");
    assert!(used.ends_with("/photo.png"), "{used}");
    let resp = get(&used).await;
    assert_eq!(resp.status().as_u16(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );
    assert_eq!(resp.bytes().await.unwrap().as_ref(), PNG);

    // Exactly 10 MB passes; one byte more is `entity_too_large`.
    let mut big = vec![b'a'; 10 * 1024 * 1024];
    let (code, r) = upload(&s, ALICE, "big.txt", "text/plain", &big).await;
    assert_eq!(code, 200, "{r}");
    let unused_big = r["url"].as_str().unwrap().to_owned();
    big.push(b'a');
    let (code, r) = upload(&s, ALICE, "big.txt", "text/plain", &big).await;
    assert_eq!(code, 413, "{r}");
    assert_eq!(r["error"]["type"], "entity_too_large");
    assert_eq!(r["error"]["message"], "Upload limit exceeded (10MB).");
    drop(big);

    // Executables are refused by name and by content; bad requests are
    // `validation`; no credentials is `authentication`.
    for (name, bytes) in [
        ("setup.exe", b"plain bytes".as_slice()),
        ("invoice.pdf", b"MZ\x90\x00\x03".as_slice()),
        ("notes", b"#!/bin/sh\nrm -rf /".as_slice()),
    ] {
        let (code, r) = upload(&s, ALICE, name, "application/octet-stream", bytes).await;
        assert_eq!(
            (code, r["error"]["type"].clone()),
            (400, json!("validation")),
            "{name}: {r}"
        );
    }
    let (code, r) = s.web("upload_file", Some(ALICE), json!({})).await;
    assert_eq!(
        (code, r["error"]["type"].clone()),
        (400, json!("validation")),
        "{r}"
    );
    let (ct, body) = multipart(&[("attachment", "a.png", "image/png", PNG)]);
    let (code, r) = post(
        &s.url("/v3.5/agent/action/upload_file"),
        Some(ALICE),
        &ct,
        body,
    )
    .await;
    assert_eq!(
        (code, r["error"]["type"].clone()),
        (400, json!("validation")),
        "{r}"
    );
    let (ct, body) = multipart(&[("file", "a.png", "image/png", PNG)]);
    let (code, r) = post(&s.url("/v3.5/agent/action/upload_file"), None, &ct, body).await;
    assert_eq!(
        (code, r["error"]["type"].clone()),
        (401, json!("authentication")),
        "{r}"
    );
    // Web only.
    let mut alice = s.login("alice-pat-1").await;
    let r = alice.request("upload_file", json!({})).await;
    assert_eq!(r["payload"]["error"]["type"], "validation", "{r}");

    // A customer uploads too (Customer Web API).
    let (mut cust, _) = s.customer("acme").await;
    let r = cust
        .request(
            "start_chat",
            json!({"chat": {"thread": {"events": [{"type": "message", "text": "hi"}]}}}),
        )
        .await;
    let chat_id = r["payload"]["chat_id"].as_str().unwrap().to_owned();
    alice.push("incoming_chat").await;
    let (token, _) = s.customer_token("acme", None).await;
    let (ct, body) = multipart(&[("file", "scan.pdf", "application/pdf", b"%PDF-1.7 ...")]);
    let (code, r) = post(
        &s.url("/v3.5/customer/action/upload_file?organization_id=acme"),
        Some(&format!("Bearer {token}")),
        &ct,
        body,
    )
    .await;
    assert_eq!(code, 200, "{r}");
    let unused_customer = r["url"].as_str().unwrap().to_owned();

    // A `file` event with the URL: filled in from the upload, and permanent.
    let r = alice
        .request(
            "send_event",
            json!({"chat_id": chat_id, "event": {"type": "file", "url": used}}),
        )
        .await;
    assert_eq!(r["success"], true, "{r}");
    let p = cust.push("incoming_event").await;
    let e = &p["payload"]["event"];
    assert_eq!(e["url"], json!(used));
    assert_eq!(e["name"], "photo.png");
    assert_eq!(e["content_type"], "image/png");
    assert_eq!(e["size"], PNG.len());

    // 23 hours on nothing expires; 25 hours on, the unused ones are gone.
    let engine = s.running.as_ref().unwrap().engine.clone();
    let hour = 3_600_000_000i64;
    assert_eq!(engine.sweep_uploads(now_us() + 23 * hour).await.unwrap(), 0);
    assert_eq!(get(&unused_big).await.status().as_u16(), 200);
    assert_eq!(engine.sweep_uploads(now_us() + 25 * hour).await.unwrap(), 2);
    assert_eq!(get(&unused_big).await.status().as_u16(), 404);
    assert_eq!(get(&unused_customer).await.status().as_u16(), 404);
    assert_eq!(get(&used).await.status().as_u16(), 200);
    // An expired upload's URL cannot be sent as a file of ours any more.
    let r = alice
        .request(
            "send_event",
            json!({"chat_id": chat_id, "event": {"type": "file", "url": unused_big}}),
        )
        .await;
    assert_eq!(r["payload"]["error"]["type"], "validation", "{r}");
    // Other URLs are anyone's business.
    let r = alice
        .request("send_event", json!({"chat_id": chat_id, "event": {"type": "file", "url": "https://cdn.example.com/a.png"}}))
        .await;
    assert_eq!(r["success"], true, "{r}");

    // Durable: the permanent upload survives a restart and a later sweep.
    drop((alice, cust, engine));
    let s = s.restart().await;
    let engine = s.running.as_ref().unwrap().engine.clone();
    assert_eq!(
        engine.sweep_uploads(now_us() + 100 * hour).await.unwrap(),
        0
    );
    // (The restarted server listens on a new port.)
    let used = s.url(&format!("/files/{}", used.split_once("/files/").unwrap().1));
    let resp = get(&used).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), PNG);
    // Another organization's id in the path finds nothing.
    let foreign = used.replace("/files/acme/", "/files/globex/");
    assert_eq!(get(&foreign).await.status().as_u16(), 404);
}
