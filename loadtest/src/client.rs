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

/// Source ports the harness hands out itself (see [`bind_source`]).
const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 10_000..=65_000;

/// Binds `sock` to `ip` on a port the harness picks.
///
/// `bind(ip:0)` makes Linux search its bind table for a free port, which
/// costs more the more ports are bound: with 10,000 connections the
/// harness spent 17 s of system time there (and logged in 567 agents per
/// second). Binding an explicit port is a hash lookup; a port in use (by a
/// socket in `TIME_WAIT`, say) is skipped.
fn bind_source(sock: &TcpSocket, ip: IpAddr) -> io::Result<()> {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    // Each run starts somewhere else in the range, away from the ports an
    // earlier run left in `TIME_WAIT`.
    static START: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    });
    let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
    let mut last = None;
    // As many tries as there are ports: a run right after another starts
    // may land inside the thousands of ports the last one left in
    // `TIME_WAIT` (1,000 tries failed a `compare` run with `Address already
    // in use`); a refused bind or connect costs microseconds.
    for _ in 0..span {
        let n = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
        let port = *SOURCE_PORTS.start() + (n % span) as u16;
        match sock.bind(SocketAddr::new(ip, port)) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

/// A TCP connection from `source` to `server`.
pub async fn tcp(server: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let mut attempts = 0;
    loop {
        let sock = if server.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = source {
            bind_source(&sock, ip)?;
        }
        match sock.connect(server).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            // The picked port is free to bind but its connection to
            // `server` still exists (in `TIME_WAIT` from an earlier run):
            // take the next port.
            Err(e)
                if source.is_some()
                    && e.kind() == io::ErrorKind::AddrInUse
                    && attempts < SOURCE_PORTS.len() =>
            {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A Socket.IO connection (Engine.IO v4 over a WebSocket, no polling) to a
/// room-relay peer, joined to `room`: the server's open packet (`0{…}`) is
/// answered with a namespace connect (`40`), and its acknowledgement
/// (`40{…}`) awaited. Events are then `42["m","…"]`; the server's pings
/// (`2`) must be answered with `3` (the harness's reader does).
pub async fn socketio(server: SocketAddr, source: Option<IpAddr>, room: &str) -> io::Result<Ws> {
    let mut ws = websocket(
        server,
        source,
        &format!("/socket.io/?EIO=4&transport=websocket&room={room}"),
    )
    .await?;
    let next_text = async |ws: &mut Ws| -> io::Result<String> {
        loop {
            match tokio::time::timeout(REQUEST_TIMEOUT, ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return Ok(t.as_str().to_owned()),
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(e))) => return Err(err(e)),
                Ok(None) => return Err(err("socket.io: closed during the handshake")),
                Err(_) => return Err(err("socket.io: no handshake")),
            }
        }
    };
    let open = next_text(&mut ws).await?;
    if !open.starts_with('0') {
        return Err(err(format!(
            "socket.io: expected an open packet, got {open:.40}"
        )));
    }
    ws.send(Message::text("40")).await.map_err(err)?;
    loop {
        let f = next_text(&mut ws).await?;
        if f.starts_with("40") {
            return Ok(ws);
        }
        if f == "2" {
            ws.send(Message::text("3")).await.map_err(err)?;
        }
    }
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
            let mut v: Value = serde_json::from_str(t.as_str()).map_err(err)?;
            if v["type"] == "response" && v["request_id"] == request_id {
                if v["success"] == true {
                    return Ok(v["payload"].take());
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
