//! The TLS listener: WSS login and HTTPS calls with a self-signed
//! certificate, as the vendor's Python SDK makes them.

use crate::harness::*;
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn wss_and_https_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut cfg = config(dir.path());
    cfg.tls = Some(chatgate_server::TlsSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: cert_path,
        key: key_path,
    });
    let s = TestServer::start_with(dir, cfg).await;
    let tls_addr = s.running.as_ref().unwrap().tls_addr.unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(cert.cert.der().to_vec()))
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    };

    // WSS: log in and call a method.
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!("wss://localhost:{}/v3.5/agent/rtm/ws", tls_addr.port()),
        connect().await,
    )
    .await
    .unwrap();
    ws.send(Message::Text(
        json!({"action":"login","request_id":"1","payload":{"token":"Bearer alice-pat-1"}})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let reply: Value = loop {
        if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
            break serde_json::from_str(t.as_str()).unwrap();
        }
    };
    assert_eq!(reply["success"], true, "{reply}");
    assert_eq!(reply["payload"]["my_profile"]["id"], "alice@acme.test");

    // HTTPS: a Web API call.
    let mut tls = connect().await;
    let body = "{}";
    let req = format!(
        "POST /v3.5/agent/action/list_routing_statuses HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer alice-pat-1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    let _ = tls.read_to_string(&mut resp).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"agent_id\":\"alice@acme.test\""), "{resp}");

    // A client that never finishes its handshake does not block others.
    let _silent = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    let mut again = connect().await;
    again.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    let _ = again.read_to_string(&mut resp).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test]
async fn bad_tls_files_are_refused_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.pem"), "not a pem").unwrap();
    let mut cfg = config(dir.path());
    cfg.tls = Some(chatgate_server::TlsSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        cert: dir.path().join("bad.pem"),
        key: dir.path().join("missing.pem"),
    });
    let err = chatgate_server::start(cfg).await.unwrap_err().to_string();
    assert!(err.starts_with("TLS:"), "{err}");
}
