//! The Web API as a sending side: requests the scenarios would send as RTM
//! frames, POSTed to `/v3.5/agent/action/<method>` instead, over a few
//! keep-alive HTTP/1.1 connections, as a bot or a back-office system
//! calling chatgate would.

use crate::scenarios::ConnOut;
use crate::stats::micros_since;
use serde_json::Value;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;

/// Requests one Web sender has in flight at most (one per connection).
pub const CONNECTIONS: usize = 8;

/// One keep-alive HTTP/1.1 connection.
pub struct KeepAlive {
    server: SocketAddr,
    stream: BufReader<TcpStream>,
}

impl KeepAlive {
    pub async fn connect(server: SocketAddr) -> io::Result<KeepAlive> {
        let stream = crate::client::tcp(server, None).await?;
        stream.set_nodelay(true)?;
        Ok(KeepAlive {
            server,
            stream: BufReader::new(stream),
        })
    }

    /// POSTs `body` (JSON) and reads the answer: its status and body.
    pub async fn post(
        &mut self,
        path: &str,
        auth: &str,
        body: &[u8],
    ) -> io::Result<(u16, Vec<u8>)> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n",
            self.server,
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        read_response(&mut self.stream).await
    }
}

/// Reads one HTTP/1.1 response with a `Content-Length` body (chatgate's
/// answers all have one).
async fn read_response<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> io::Result<(u16, Vec<u8>)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("malformed status line"))?;
    let mut length = None;
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Err(bad("connection closed in the headers"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = Some(
                value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| bad("bad content-length"))?,
            );
        }
    }
    let mut body = vec![0; length.ok_or_else(|| bad("response without content-length"))?];
    r.read_exact(&mut body).await?;
    Ok((status, body))
}

/// The error type of a Web API error body, or the status when there is
/// none.
fn error_type(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["type"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("http {status}"))
}

/// A sending side over the Web API with `token`: takes RTM request frames
/// (as the RTM sender does) and POSTs each one's `payload` to its
/// `action`, on [`CONNECTIONS`] keep-alive connections so that a slow
/// answer does not hold the schedule. The returned `ConnOut` counts the
/// answers (`acks`), the refusals by error type and, as its latency, each
/// request's round trip.
pub fn sender(
    server: SocketAddr,
    token: &str,
    stop: watch::Receiver<bool>,
    epoch: Instant,
    queue: usize,
) -> (mpsc::Sender<String>, JoinHandle<ConnOut>) {
    let (tx, rx) = mpsc::channel::<String>(queue);
    let rx = Arc::new(Mutex::new(rx));
    let auth = format!("Bearer {token}");
    let h = tokio::spawn(async move {
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                let (rx, auth, mut stop) = (rx.clone(), auth.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut out = ConnOut::default();
                    let mut conn: Option<KeepAlive> = None;
                    loop {
                        let frame = tokio::select! {
                            f = async { rx.lock().await.recv().await } => f,
                            _ = stop.wait_for(|s| *s) => None,
                        };
                        let Some(frame) = frame else { break };
                        let Ok(v) = serde_json::from_str::<Value>(&frame) else {
                            *out.errors.entry("harness: bad frame".into()).or_default() += 1;
                            continue;
                        };
                        let path = format!(
                            "/v3.5/agent/action/{}",
                            v["action"].as_str().unwrap_or_default()
                        );
                        let body = serde_json::to_vec(&v["payload"]).expect("JSON serializes");
                        let started = micros_since(epoch);
                        let answer = async {
                            if conn.is_none() {
                                conn = Some(KeepAlive::connect(server).await?);
                            }
                            conn.as_mut()
                                .expect("connected")
                                .post(&path, &auth, &body)
                                .await
                        }
                        .await;
                        match answer {
                            Ok((200, _)) => {
                                out.acks += 1;
                                out.latency
                                    .record_us(micros_since(epoch).saturating_sub(started));
                            }
                            Ok((status, body)) => {
                                *out.errors.entry(error_type(status, &body)).or_default() += 1;
                            }
                            Err(e) => {
                                // Connect again for the next request.
                                conn = None;
                                *out.errors.entry(format!("web: {}", e.kind())).or_default() += 1;
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        let mut all = ConnOut::default();
        for w in workers {
            if let Ok(o) = w.await {
                all.acks += o.acks;
                all.latency.add(&o.latency);
                for (k, n) in o.errors {
                    *all.errors.entry(k).or_default() += n;
                }
            }
        }
        all
    });
    (tx, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_a_response_by_its_content_length_and_leaves_the_next() {
        let raw: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nCONTENT-LENGTH: 39\r\n\r\n{\"error\":{\"type\":\"validation\",\"m\":\"x\"}}\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        let mut r = BufReader::new(raw);
        let (status, body) = read_response(&mut r).await.unwrap();
        assert_eq!(status, 400);
        assert_eq!(error_type(status, &body), "validation");
        // The body ended where its length said: what follows is the next response.
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert!(rest.starts_with(b"\r\nHTTP/1.1 200"), "{rest:?}");
    }

    #[tokio::test]
    async fn a_response_without_a_length_or_cut_short_is_an_error() {
        let mut r = BufReader::new(&b"HTTP/1.1 200 OK\r\n\r\n{}"[..]);
        assert!(read_response(&mut r).await.is_err());
        let mut r = BufReader::new(&b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}"[..]);
        assert!(read_response(&mut r).await.is_err());
        let mut r = BufReader::new(&b""[..]);
        assert!(read_response(&mut r).await.is_err());
        assert_eq!(error_type(502, b"bad gateway"), "http 502");
    }
}
