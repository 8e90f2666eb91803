//! A minimal RTM and Web client: what an agent app, a widget or a bot
//! does on the wire, built on the protocol crate's frame types.

use chatgate_protocol::RequestFrame;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

pub type Ws = WebSocketStream<TcpStream>;

/// How long any single request may take before the harness calls it lost.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The source address of connection `i`: `127.0.0.2`, `127.0.0.3`, … so
/// that more than 28k connections fit the ephemeral port range (each
/// (source, destination) pair has its own).
pub fn source_for(i: usize, sources: usize) -> IpAddr {
    let n = (i % sources.max(1)) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + n))
}

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// A TCP connection from `source` (any port) to `server`.
pub async fn tcp(server: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let sock = if server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = sock.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A WebSocket to `ws://server{path}` with small buffers (the harness holds
/// thousands of them).
pub async fn websocket(server: SocketAddr, source: Option<IpAddr>, path: &str) -> io::Result<Ws> {
    websocket_sized(server, source, path, 1 << 20).await
}

/// [`websocket`] that may send frames up to `max_write` bytes.
pub async fn websocket_sized(
    server: SocketAddr,
    source: Option<IpAddr>,
    path: &str,
    max_write: usize,
) -> io::Result<Ws> {
    let stream = tcp(server, source).await?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(max_write);
    let (ws, _) = client_async_with_config(format!("ws://{server}{path}"), stream, Some(config))
        .await
        .map_err(err)?;
    Ok(ws)
}

/// Connects to the Customer RTM API of `org` and logs in with `token`.
pub async fn customer_login(
    server: SocketAddr,
    source: Option<std::net::IpAddr>,
    org: &str,
    token: &str,
) -> io::Result<Ws> {
    let path = format!("/v3.5/customer/rtm/ws?organization_id={org}");
    let mut ws = websocket(server, source, &path).await?;
    let login = json!({"token": format!("Bearer {token}")});
    request(&mut ws, "login", "login", login).await?;
    Ok(ws)
}

/// A request frame as text.
pub fn frame(action: &str, request_id: &str, payload: Value) -> String {
    let f = RequestFrame {
        action: action.to_owned(),
        request_id: Some(request_id.to_owned()),
        payload: Some(payload),
        version: None,
        author_id: None,
    };
    serde_json::to_string(&f).expect("frames serialize")
}

/// Sends a request and waits for its response (pushes before it are
/// dropped). Errors: transport failures, timeouts, and `success: false`.
pub async fn request(
    ws: &mut Ws,
    action: &str,
    request_id: &str,
    payload: Value,
) -> io::Result<Value> {
    ws.send(Message::text(frame(action, request_id, payload)))
        .await
        .map_err(err)?;
    let wait = async {
        while let Some(m) = ws.next().await {
            let Message::Text(t) = m.map_err(err)? else {
                continue;
            };
            let v: Value = serde_json::from_str(t.as_str()).map_err(err)?;
            if v["type"] == "response" && v["request_id"] == request_id {
                if v["success"] == true {
                    return Ok(v["payload"].clone());
                }
                return Err(err(format!("{action} failed: {}", v["payload"])));
            }
        }
        Err(err("connection closed"))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, wait)
        .await
        .map_err(|_| err(format!("{action} timed out")))?
}

/// A minimal HTTP/1.1 POST of JSON (no client library: one request per
/// connection, `Connection: close`). Returns (status, body).
pub async fn post_json(
    server: SocketAddr,
    path: &str,
    auth: Option<&str>,
    body: &Value,
) -> io::Result<(u16, Value)> {
    let mut stream = tcp(server, None).await?;
    let body = body.to_string();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(a) = auth {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(REQUEST_TIMEOUT, stream.read_to_end(&mut buf))
        .await
        .map_err(|_| err("HTTP request timed out"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| err("malformed HTTP response"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err("malformed status line"))?;
    // The server answers with a Content-Length body (no chunking).
    let body: Value = serde_json::from_str(body.trim()).unwrap_or(json!(body.trim()));
    Ok((status, body))
}
