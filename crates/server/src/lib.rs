//! The `chatgate` server as a library: configuration (validated before any
//! port is bound), provisioning, TLS, listeners with an explicit backlog,
//! serving, and graceful shutdown. `main.rs` is a thin CLI over [`start`];
//! the end-to-end tests call [`start`] directly on `127.0.0.1:0`.

mod metrics;
mod tls;

use axum::serve::ListenerExt;
use chatgate_engine::{Engine, EngineConfig, ProvisionReport, ProvisionSpec};
use chatgate_protocol::DisconnectReason;
use chatgate_store::{SqliteStore, Store, StoreConfig};
use chatgate_web::WebConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use chatgate_engine::{ProvisionSpec as Provisioning, Rate};
pub use tls::load_tls;

/// TLS listener settings.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Default `SO_SNDBUF` of accepted sockets: 256 KiB is far more than chat
/// traffic needs in flight on one connection, and a quarter of what Linux's
/// autotuning grows to on a fast link.
pub const DEFAULT_SOCKET_SEND_BUFFER: u32 = 256 * 1024;

/// Everything the server needs. Built by the CLI or by tests.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Plain HTTP and WebSocket listener.
    pub listen: SocketAddr,
    /// Where the embedded store keeps its files.
    pub data_dir: PathBuf,
    /// Optional HTTPS / WSS listener.
    pub tls: Option<TlsSettings>,
    /// Optional listener that serves only `GET /metrics` (OpenMetrics text).
    pub metrics_listen: Option<SocketAddr>,
    /// Applied at start, before any port is bound.
    pub provision: Option<ProvisionSpec>,
    /// Listen backlog (pending connections the kernel queues).
    pub backlog: u32,
    /// `SO_SNDBUF` of every accepted socket, in bytes (Linux doubles it
    /// for bookkeeping); `None` leaves the kernel's autotuning. A small
    /// buffer bounds how much the server pushes into the kernel for a
    /// client that stopped reading before its queue fills and it is cut off
    /// as a slow consumer (loadtest/README.md has the measurements).
    pub socket_send_buffer: Option<u32>,
    /// Time allowed for sessions to close and requests to finish at shutdown.
    pub shutdown_grace: Duration,
    pub web: WebConfig,
    pub engine: EngineConfig,
    pub store: StoreConfig,
}

impl ServerConfig {
    /// Defaults for everything but the data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: data_dir.into(),
            tls: None,
            metrics_listen: None,
            provision: None,
            backlog: 4096,
            socket_send_buffer: Some(DEFAULT_SOCKET_SEND_BUFFER),
            shutdown_grace: Duration::from_secs(10),
            web: WebConfig::default(),
            engine: EngineConfig::default(),
            store: StoreConfig::default(),
        }
    }
}

/// Why the server could not start. Each renders as one clear line.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot read provisioning file {path}: {source}")]
    ProvisionRead {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid provisioning file {path}: {message}")]
    ProvisionParse { path: String, message: String },
    #[error("provisioning failed: {0}")]
    Provision(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("store: {0}")]
    Store(#[from] chatgate_store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Reads and parses a provisioning file.
pub fn load_provision(path: &Path) -> Result<ProvisionSpec, ServerError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServerError::ProvisionRead {
        path: path.display().to_string(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ServerError::ProvisionParse {
        path: path.display().to_string(),
        message: e.message().to_string()
            + &e.span()
                .map(|s| {
                    let line = text[..s.start].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default(),
    })
}

/// A running server.
pub struct Running {
    /// Bound address of the plain listener.
    pub http_addr: SocketAddr,
    /// Bound address of the TLS listener.
    pub tls_addr: Option<SocketAddr>,
    /// Bound address of the metrics listener.
    pub metrics_addr: Option<SocketAddr>,
    pub engine: Engine,
    /// What provisioning did at start.
    pub provisioned: Option<ProvisionReport>,
    store: Arc<SqliteStore>,
    /// Cancelled to stop accepting.
    stop_accepting: CancellationToken,
    /// Listener tasks; each ends once its listener stopped and its HTTP
    /// connections finished.
    tasks: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("http_addr", &self.http_addr)
            .field("tls_addr", &self.tls_addr)
            .field("metrics_addr", &self.metrics_addr)
            .finish()
    }
}

/// Binds a listener. Accepted sockets inherit the listener's `SO_SNDBUF`
/// (Linux copies it, and its lock against autotuning, on accept).
fn bind(
    addr: SocketAddr,
    backlog: u32,
    send_buffer: Option<u32>,
) -> Result<TcpListener, ServerError> {
    let err = |source| ServerError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    if let Some(bytes) = send_buffer {
        socket.set_send_buffer_size(bytes).map_err(err)?;
    }
    socket.bind(addr).map_err(err)?;
    socket.listen(backlog).map_err(err)
}

/// Validates the configuration, opens the store, provisions, and only then
/// binds and serves.
pub async fn start(config: ServerConfig) -> Result<Running, ServerError> {
    let tls = match &config.tls {
        Some(t) => Some(load_tls(&t.cert, &t.key)?),
        None => None,
    };
    let store = Arc::new(SqliteStore::open(&config.data_dir, config.store.clone())?);
    let engine = Engine::start(store.clone(), config.engine.clone())
        .map_err(|e| ServerError::Provision(e.to_string()))?;
    let provisioned = match &config.provision {
        Some(spec) => Some(
            engine
                .provision(spec)
                .await
                .map_err(|e| ServerError::Provision(e.to_string()))?,
        ),
        None => None,
    };
    let router = chatgate_web::app(engine.clone(), config.web.clone());
    let stop_accepting = CancellationToken::new();
    let mut tasks = Vec::new();

    let listener = bind(config.listen, config.backlog, config.socket_send_buffer)?;
    let http_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let tls_listener = match (&config.tls, tls) {
        (Some(t), Some(acceptor)) => Some((
            bind(t.listen, config.backlog, config.socket_send_buffer)?,
            acceptor,
        )),
        _ => None,
    };
    let metrics_listener = match config.metrics_listen {
        Some(addr) => {
            let listener = bind(addr, 64, None)?;
            let local = listener
                .local_addr()
                .map_err(|source| ServerError::Bind { addr, source })?;
            Some((listener, local))
        }
        None => None,
    };

    let stop = stop_accepting.clone();
    let app = router.clone();
    tasks.push(tokio::spawn(async move {
        let listener = listener.tap_io(|s| {
            let _ = s.set_nodelay(true);
        });
        if let Err(e) = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
        {
            tracing::error!(error = %e, "http listener failed");
        }
    }));
    // Group statuses: changes are coalesced and pushed every 250 ms.
    let (flusher, stop) = (engine.clone(), stop_accepting.clone());
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => flusher.flush_group_statuses().await,
            }
        }
    }));
    // Uploads no `file` event used expire after 24 h, expired tokens are
    // forgotten an hour after they expire, refilled rate-limit buckets are
    // forgotten: all swept every 10 min.
    let (sweeper, stop) = (engine.clone(), stop_accepting.clone());
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_micros() as i64)
                        .unwrap_or(0);
                    match sweeper.sweep_uploads(now).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(deleted = n, "expired uploads deleted"),
                        Err(e) => tracing::warn!(error = ?e, "upload sweep failed"),
                    }
                    // Expired credentials (customer tokens above all).
                    match sweeper.sweep_tokens(now / 1_000_000).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(forgotten = n, "expired tokens forgotten"),
                        Err(e) => tracing::warn!(error = ?e, "token sweep failed"),
                    }
                    // Rate-limit buckets of principals not seen lately.
                    let n = sweeper.sweep_rate_limits();
                    tracing::debug!(forgotten = n, "refilled rate-limit buckets forgotten");
                }
            }
        }
    }));
    let mut tls_addr = None;
    if let Some((listener, acceptor)) = tls_listener {
        let local = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: listener.local_addr().unwrap_or(config.listen),
            source,
        })?;
        tls_addr = Some(local);
        // `tap_io` (a no-op here) gives the listener axum's connect-info support.
        let tls_listener =
            tls::TlsListener::spawn(listener, acceptor, stop_accepting.clone()).tap_io(|_| {});
        let stop = stop_accepting.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(
                tls_listener,
                router
                    .layer(axum::Extension(chatgate_web::Https))
                    .into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            {
                tracing::error!(error = %e, "tls listener failed");
            }
        }));
    }
    let mut metrics_addr = None;
    if let Some((listener, addr)) = metrics_listener {
        metrics_addr = Some(addr);
        let app = metrics::router(&engine);
        let stop = stop_accepting.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "metrics listener failed");
            }
        }));
    }
    tracing::info!(%http_addr, tls_addr = ?tls_addr, metrics_addr = ?metrics_addr, data_dir = %config.data_dir.display(), "chatgate serving");
    Ok(Running {
        http_addr,
        tls_addr,
        metrics_addr,
        engine,
        provisioned,
        store,
        stop_accepting,
        tasks,
        grace: config.shutdown_grace,
    })
}

impl Running {
    /// Graceful shutdown: stop accepting, tell every session why
    /// (`agent_disconnected`, reason `internal_error`, `data.detail =
    /// "shutdown"`, which tells clients to reconnect), wait for sessions and
    /// requests within the grace period, then flush and close the store.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.stop_accepting.cancel();
        self.engine
            .shutdown(DisconnectReason::InternalError, "shutdown");
        let deadline = tokio::time::Instant::now() + self.grace;
        while self.engine.connection_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for task in self.tasks {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if tokio::time::timeout(remaining, task).await.is_err() {
                tracing::warn!("a listener did not finish within the grace period");
            }
        }
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        tracing::info!("stopped");
    }
}
