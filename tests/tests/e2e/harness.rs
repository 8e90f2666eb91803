//! Test harness: a real server on port 0 with a temporary data directory, an
//! RTM client that separates responses from pushes, and an HTTP client.

use chatgate_server::{Provisioning as ProvisionSpec, Running, ServerConfig, start};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Provisioning used by most tests.
pub const PROVISION: &str = r#"
[[organization]]
id = "acme"
name = "Acme"
[[organization.group]]
id = 0
name = "General"
[[organization.group]]
id = 1
name = "Sales"
[[organization.agent]]
id = "alice@acme.test"
name = "Alice"
role = "owner"
groups = [0, 1]
tokens = ["alice-pat-1", "alice-pat-2", { token = "alice-ro-1", scopes = ["chats--access:ro"] }]
api_keys = [{ key = "alice-key-1", secret = "alice-secret-0123456789" }]
[[organization.agent]]
id = "bob@acme.test"
name = "Bob"
role = "normal"
groups = [0]
tokens = ["bob-pat-1", { token = "bob-all-1", scopes = ["chats--all:rw", "agents--my:rw"] }]
[[organization.agent]]
id = "carol@acme.test"
name = "Carol"
role = "administrator"
groups = [1]
login_status = "not_accepting_chats"
tokens = ["carol-pat-1", { token = "carol-access-1", scopes = ["chats--access:rw", "agents--my:rw"] }]
[[organization.agent]]
id = "dave@acme.test"
name = "Dave"
suspended = true
tokens = ["dave-pat-1"]

[[organization]]
id = "globex"
name = "Globex"
allowed_origins = ["https://shop.globex.test"]
[[organization.agent]]
id = "eve@globex.test"
role = "owner"
tokens = ["eve-pat-1"]
"#;

/// How long a test waits for an expected frame.
pub const WAIT: Duration = Duration::from_secs(5);

pub struct TestServer {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

pub fn config(dir: &std::path::Path) -> ServerConfig {
    let mut c = ServerConfig::new(dir.join("data"));
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.shutdown_grace = Duration::from_secs(3);
    c.provision = Some(toml_spec(PROVISION));
    c
}

pub fn toml_spec(text: &str) -> ProvisionSpec {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(&p, text).unwrap();
    chatgate_server::load_provision(&p).unwrap()
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        Self::start_with(dir, c).await
    }

    pub async fn start_with(dir: tempfile::TempDir, config: ServerConfig) -> TestServer {
        let running = start(config).await.expect("server starts");
        let addr = running.http_addr;
        TestServer {
            running: Some(running),
            dir,
            addr,
        }
    }

    /// Stops the server gracefully and starts a new one on the same data
    /// directory, provisioning nothing: everything comes from the store.
    pub async fn restart(mut self) -> TestServer {
        self.stop().await;
        let mut cfg = config(self.dir.path());
        cfg.provision = None;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        TestServer::start_with(dir, cfg).await
    }

    pub async fn rtm(&self) -> Rtm {
        Rtm::connect(self.addr, "v3.5").await
    }

    pub async fn login(&self, token: &str) -> Rtm {
        let mut c = self.rtm().await;
        let r = c
            .request("login", json!({"token": format!("Bearer {token}")}))
            .await;
        assert_eq!(r["success"], true, "login failed: {r}");
        c
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// POST a Web API method; returns (status, body).
    pub async fn web(&self, method: &str, auth: Option<&str>, body: Value) -> (u16, Value) {
        web_call(
            &self.url(&format!("/v3.5/agent/action/{method}")),
            auth,
            body.to_string(),
            &[],
        )
        .await
    }

    /// A customer token for `org` (a new customer unless `customer_id`).
    pub async fn customer_token(&self, org: &str, customer_id: Option<&str>) -> (String, String) {
        let mut body = json!({"organization_id": org});
        if let Some(c) = customer_id {
            body["customer_id"] = json!(c);
        }
        let (code, resp) =
            web_call(&self.url("/customer/token"), None, body.to_string(), &[]).await;
        assert_eq!(code, 200, "{resp}");
        (
            resp["access_token"].as_str().unwrap().to_owned(),
            resp["entity_id"].as_str().unwrap().to_owned(),
        )
    }

    /// A logged-in customer RTM session; returns it with the customer id.
    pub async fn customer(&self, org: &str) -> (Rtm, String) {
        let (token, id) = self.customer_token(org, None).await;
        let mut c = Rtm::connect_path(
            self.addr,
            &format!("/v3.5/customer/rtm/ws?organization_id={org}"),
        )
        .await;
        let r = c
            .request("login", json!({"token": format!("Bearer {token}")}))
            .await;
        assert_eq!(r["success"], true, "customer login failed: {r}");
        (c, id)
    }

    /// POST a Configuration API method.
    pub async fn config(&self, method: &str, auth: Option<&str>, body: Value) -> (u16, Value) {
        web_call(
            &self.url(&format!("/v3.5/configuration/action/{method}")),
            auth,
            body.to_string(),
            &[],
        )
        .await
    }

    /// POST a Customer Web API method.
    pub async fn customer_web(
        &self,
        org: &str,
        method: &str,
        token: &str,
        body: Value,
    ) -> (u16, Value) {
        web_call(
            &self.url(&format!(
                "/v3.5/customer/action/{method}?organization_id={org}"
            )),
            Some(&format!("Bearer {token}")),
            body.to_string(),
            &[],
        )
        .await
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

pub async fn web_call(
    url: &str,
    auth: Option<&str>,
    body: String,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut req = client
        .post(url)
        .body(body)
        .header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An RTM client.
pub struct Rtm {
    pub ws: Ws,
    /// Pushes received while waiting for responses.
    pub pushes: VecDeque<Value>,
    next_id: u64,
}

impl Rtm {
    pub async fn connect(addr: SocketAddr, version: &str) -> Rtm {
        let (ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{addr}/{version}/agent/rtm/ws"))
                .await
                .expect("websocket connects");
        Rtm::from_ws(ws)
    }

    pub async fn connect_path(addr: SocketAddr, path: &str) -> Rtm {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
            .await
            .expect("websocket connects");
        Rtm::from_ws(ws)
    }

    pub fn from_ws(ws: Ws) -> Rtm {
        Rtm {
            ws,
            pushes: VecDeque::new(),
            next_id: 0,
        }
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// Sends a request and waits for its response, keeping pushes.
    pub async fn request(&mut self, action: &str, payload: Value) -> Value {
        self.request_frame(json!({"action": action, "payload": payload}))
            .await
    }

    pub async fn request_frame(&mut self, mut frame: Value) -> Value {
        self.next_id += 1;
        let id = format!("req-{}", self.next_id);
        frame["request_id"] = json!(id);
        self.send_text(frame.to_string()).await;
        self.response_to(&id).await
    }

    pub async fn response_to(&mut self, id: &str) -> Value {
        loop {
            let f = self
                .next_frame()
                .await
                .unwrap_or_else(|| panic!("closed while waiting for {id}"));
            if f["type"] == "response" && f["request_id"] == id {
                return f;
            }
            if f["type"] == "push" {
                self.pushes.push_back(f);
            } else {
                panic!("unexpected frame while waiting for {id}: {f}");
            }
        }
    }

    /// Next text frame as JSON; `None` when the socket closes.
    pub async fn next_frame(&mut self) -> Option<Value> {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")?;
            match m {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(t.as_str()).unwrap()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Logs in with a Bearer token; panics when refused.
    pub async fn login_bearer(&mut self, token: &str) {
        let r = self
            .request("login", json!({"token": format!("Bearer {token}")}))
            .await;
        assert_eq!(r["success"], true, "login failed: {r}");
    }

    /// `start_chat` with one message; returns the response payload.
    pub async fn start_chat_saying(&mut self, text: &str) -> Value {
        let r = self
            .request(
                "start_chat",
                json!({"chat": {"thread": {"events": [{"type": "message", "text": text}]}}}),
            )
            .await;
        assert_eq!(r["success"], true, "start_chat failed: {r}");
        r["payload"].clone()
    }

    /// The next push named `action` (earlier pushes of other names are kept).
    pub async fn push(&mut self, action: &str) -> Value {
        if let Some(i) = self.pushes.iter().position(|p| p["action"] == action) {
            return self.pushes.remove(i).unwrap();
        }
        loop {
            let f = self
                .next_frame()
                .await
                .unwrap_or_else(|| panic!("closed while waiting for push {action}"));
            if f["type"] == "push" && f["action"] == action {
                return f;
            }
            self.pushes.push_back(f);
        }
    }

    /// Asserts that no push named `action` arrives within `wait`.
    pub async fn no_push(&mut self, action: &str, wait: Duration) {
        assert!(
            !self.pushes.iter().any(|p| p["action"] == action),
            "unexpected {action}: {:?}",
            self.pushes
        );
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(m) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            match m {
                Some(Ok(Message::Text(t))) => {
                    let f: Value = serde_json::from_str(t.as_str()).unwrap();
                    assert_ne!(f["action"], action, "unexpected push {f}");
                    self.pushes.push_back(f);
                }
                Some(Ok(_)) => {}
                _ => break,
            }
        }
    }

    /// Waits for `agent_disconnected` and the close that follows.
    pub async fn disconnected(&mut self) -> Value {
        let f = self.push("agent_disconnected").await;
        assert!(
            self.closed_soon().await,
            "socket should close after agent_disconnected"
        );
        f
    }

    /// Whether the server closes the socket within the wait.
    pub async fn closed_soon(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}
