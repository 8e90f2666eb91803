//! `baseline`: a bare room relay built from the crates chatgate uses
//! (tokio, tokio-tungstenite with small buffers, batched writes). It speaks
//! the reference peers' room-relay protocol (`../shared/bench/README.md`):
//! connect to `/?room=R`; a text frame `r=<room>;…` goes unchanged to every
//! connection of that room. What it costs is what the transport alone
//! costs, with no authentication, access checks or durable commits.

use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Frames one connection may have waiting; beyond it frames to that
/// connection are dropped (and counted), never blocking the publisher.
const QUEUE: usize = 1024;

type Rooms = Arc<Mutex<HashMap<String, Vec<(u64, mpsc::Sender<Message>)>>>>;

fn room_of(path_and_query: &str) -> String {
    path_and_query
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("room="))
        .unwrap_or("pub")
        .to_owned()
}

/// Serves until the process ends.
pub async fn serve(listen: SocketAddr) -> io::Result<()> {
    let sock = if listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(listen)?;
    let listener: TcpListener = sock.listen(4096)?;
    println!("baseline relay on {}", listener.local_addr()?);
    let rooms: Rooms = Default::default();
    let dropped = Arc::new(AtomicU64::new(0));
    let mut next_id = 0u64;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let (id, rooms, dropped) = (next_id, rooms.clone(), dropped.clone());
        tokio::spawn(async move {
            let mut room = String::from("pub");
            // Frames collect in an 8 KiB buffer and go out per flush (as in
            // chatgate), not one write per frame.
            let config = WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(8 * 1024)
                .max_write_buffer_size(1 << 20);
            // The handshake callback's signature is tungstenite's.
            #[allow(clippy::result_large_err)]
            let callback = |req: &Request, resp: Response| {
                room = room_of(
                    req.uri()
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/"),
                );
                Ok(resp)
            };
            let Ok(ws) =
                tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config))
                    .await
            else {
                return;
            };
            let (mut sink, mut stream) = ws.split();
            let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
            if room != "pub" {
                rooms
                    .lock()
                    .unwrap()
                    .entry(room.clone())
                    .or_default()
                    .push((id, tx));
            }
            // Writer: as many queued frames as are ready, then one flush.
            let writer = tokio::spawn(async move {
                while let Some(m) = rx.recv().await {
                    if sink.feed(m).await.is_err() {
                        return;
                    }
                    while let Ok(m) = rx.try_recv() {
                        if sink.feed(m).await.is_err() {
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
            });
            while let Some(Ok(m)) = stream.next().await {
                let Message::Text(t) = m else { continue };
                let Some(target) = t
                    .as_str()
                    .strip_prefix("r=")
                    .and_then(|r| r.split_once(';'))
                    .map(|(r, _)| r.to_owned())
                else {
                    continue;
                };
                let subscribers: Vec<mpsc::Sender<Message>> = rooms
                    .lock()
                    .unwrap()
                    .get(&target)
                    .map(|v| v.iter().map(|(_, s)| s.clone()).collect())
                    .unwrap_or_default();
                let frame = Message::Text(t);
                for s in subscribers {
                    if s.try_send(frame.clone()).is_err() {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if let Some(v) = rooms.lock().unwrap().get_mut(&room) {
                v.retain(|(i, _)| *i != id);
            }
            writer.abort();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_come_from_the_query() {
        assert_eq!(room_of("/?room=r1"), "r1");
        assert_eq!(room_of("/?x=1&room=lobby"), "lobby");
        assert_eq!(room_of("/"), "pub");
    }
}
