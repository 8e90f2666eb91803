//! `chatgate`: the gateway binary. Configuration comes from flags, each also
//! readable from a `CHATGATE_…` environment variable, and is validated before
//! any port is bound; a bad one exits non-zero with one clear line.

use chatgate_server::{ServerConfig, TlsSettings, load_provision, start};
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "chatgate",
    version,
    about = "Self-hosted gateway speaking the Agent Chat API v3.5"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway.
    Serve(Serve),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Parser, Debug)]
struct Serve {
    /// Plain HTTP and WebSocket listener.
    #[arg(long, env = "CHATGATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory of the embedded store (created if missing).
    #[arg(long, env = "CHATGATE_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// HTTPS / WSS listener; needs --tls-cert and --tls-key.
    #[arg(long, env = "CHATGATE_TLS_LISTEN", requires_all = ["tls_cert", "tls_key"])]
    tls_listen: Option<SocketAddr>,
    /// Listener that serves only `GET /metrics` (OpenMetrics text, for
    /// Prometheus); none by default. Bind it to an address only the
    /// operator's scraper reaches.
    #[arg(long, env = "CHATGATE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// PEM certificate chain for --tls-listen.
    #[arg(long, env = "CHATGATE_TLS_CERT", requires = "tls_listen")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-listen.
    #[arg(long, env = "CHATGATE_TLS_KEY", requires = "tls_listen")]
    tls_key: Option<PathBuf>,
    /// TOML file of organizations, groups, agents and tokens to create or
    /// update at start (idempotent).
    #[arg(long, env = "CHATGATE_PROVISION")]
    provision: Option<PathBuf>,
    /// Listen backlog.
    #[arg(long, env = "CHATGATE_BACKLOG", default_value_t = 4096)]
    backlog: u32,
    /// Send buffer (SO_SNDBUF) of every accepted socket, in bytes; 0 leaves
    /// the kernel's autotuning. Bounds what a client that stopped reading
    /// can soak up before it is cut off as a slow consumer.
    #[arg(long, env = "CHATGATE_SOCKET_SEND_BUFFER", default_value_t = chatgate_server::DEFAULT_SOCKET_SEND_BUFFER)]
    socket_send_buffer: u32,
    /// Seconds allowed for a graceful shutdown.
    #[arg(long, env = "CHATGATE_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    shutdown_grace_secs: u64,
    /// Seconds a new RTM connection has to log in.
    #[arg(long, env = "CHATGATE_LOGIN_TIMEOUT_SECS", default_value_t = 30)]
    login_timeout_secs: u64,
    /// Largest RTM request frame in bytes (`entity_too_large` above it).
    #[arg(long, env = "CHATGATE_MAX_REQUEST_FRAME", default_value_t = 256 * 1024)]
    max_request_frame: usize,
    /// Largest Web API request body in bytes.
    #[arg(long, env = "CHATGATE_MAX_BODY", default_value_t = 1024 * 1024)]
    max_body: usize,
    /// WebSocket read buffer per connection in bytes: memory per idle
    /// session against read calls for larger frames (a larger frame grows
    /// the buffer while it is read).
    #[arg(long, env = "CHATGATE_WS_READ_BUFFER", default_value_t = chatgate_web::WebConfig::default().ws_read_buffer)]
    ws_read_buffer: usize,
    /// Frames that may wait for one slow session before it is disconnected.
    #[arg(long, env = "CHATGATE_OUTBOUND_QUEUE", default_value_t = 1024)]
    outbound_queue: usize,
    /// Bytes of pushes that may wait for one slow session before it is
    /// disconnected.
    #[arg(long, env = "CHATGATE_OUTBOUND_QUEUE_BYTES", default_value_t = 2 * 1024 * 1024)]
    outbound_queue_bytes: usize,
    /// Microseconds the store's writer holds a lone write so that the
    /// writes that follow share its transaction and its sync of the log;
    /// applied only while writes arrive at least every two delays (0: never
    /// wait). Trades this much latency for CPU under load.
    #[arg(long, env = "CHATGATE_COMMIT_DELAY_US", default_value_t = chatgate_store::sqlite::DEFAULT_COMMIT_DELAY.as_micros() as u64)]
    commit_delay_us: u64,
    /// Seconds a session that asked for exact resume is kept after its
    /// connection drops (proto-docs/resume.md).
    #[arg(long, env = "CHATGATE_RESUME_WINDOW_SECS", default_value_t = 60)]
    resume_window_secs: u64,
    /// Latest pushes a resume stream keeps (at most --outbound-queue).
    #[arg(long, env = "CHATGATE_RESUME_LOG", default_value_t = 1024)]
    resume_log: usize,
    /// Requests per second each agent, bot or customer may make (0: no limit).
    #[arg(long, env = "CHATGATE_RATE_LIMIT_PER_SEC", default_value_t = 50.0)]
    rate_limit_per_sec: f64,
    /// Requests a principal may make at once before the rate applies.
    #[arg(long, env = "CHATGATE_RATE_LIMIT_BURST", default_value_t = 200.0)]
    rate_limit_burst: f64,
    /// Live RTM sessions per agent; one more evicts the oldest.
    #[arg(long, env = "CHATGATE_MAX_SESSIONS_PER_AGENT", default_value_t = 16)]
    max_sessions_per_agent: usize,
    /// Connections per client address that may wait for their login.
    #[arg(
        long,
        env = "CHATGATE_MAX_UNAUTHENTICATED_PER_ADDRESS",
        default_value_t = 1024
    )]
    max_unauthenticated_per_address: usize,
    /// Lifetime of customer tokens, seconds.
    #[arg(long, env = "CHATGATE_CUSTOMER_TOKEN_TTL_SECS", default_value_t = 8 * 3600)]
    customer_token_ttl_secs: u64,
    /// Lifetime of bot tokens, seconds.
    #[arg(long, env = "CHATGATE_BOT_TOKEN_TTL_SECS", default_value_t = 24 * 3600)]
    bot_token_ttl_secs: u64,
    /// Lifetime of access tokens from /v1/auth, seconds.
    #[arg(long, env = "CHATGATE_ACCESS_TOKEN_TTL_SECS", default_value_t = 3600)]
    access_token_ttl_secs: u64,
    /// Base URL clients reach this deployment at, returned by GET /v1/apis
    /// (default: http://<Host header>).
    #[arg(long, env = "CHATGATE_PUBLIC_URL")]
    public_url: Option<String>,
    /// Log format.
    #[arg(long, env = "CHATGATE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHATGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Installs the SIGINT / SIGTERM handlers at once (before the server starts,
/// so a signal that arrives while it is starting is not lost to the default
/// action) and returns a future that resolves on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn config_from(args: &Serve) -> Result<ServerConfig, String> {
    let mut config = ServerConfig::new(&args.data_dir);
    config.listen = args.listen;
    config.backlog = args.backlog;
    config.socket_send_buffer = (args.socket_send_buffer > 0).then_some(args.socket_send_buffer);
    config.shutdown_grace = Duration::from_secs(args.shutdown_grace_secs);
    if args.login_timeout_secs == 0 {
        return Err("--login-timeout-secs must be at least 1".into());
    }
    config.web.rtm.login_timeout = Duration::from_secs(args.login_timeout_secs);
    if args.max_request_frame < 1024 || args.max_request_frame > config.web.ws_max_message {
        return Err(format!(
            "--max-request-frame must be between 1024 and {} bytes",
            config.web.ws_max_message
        ));
    }
    config.web.rtm.max_request_frame = args.max_request_frame;
    if args.max_body < 1024 {
        return Err("--max-body must be at least 1024 bytes".into());
    }
    config.web.max_body = args.max_body;
    if !(256..=64 * 1024).contains(&args.ws_read_buffer) {
        return Err("--ws-read-buffer must be between 256 and 65536 bytes".into());
    }
    config.web.ws_read_buffer = args.ws_read_buffer;
    if args.outbound_queue == 0 {
        return Err("--outbound-queue must be at least 1".into());
    }
    config.engine.outbound_queue = args.outbound_queue;
    if args.commit_delay_us > 10_000 {
        return Err("--commit-delay-us must be at most 10000 (10 ms)".into());
    }
    config.store.commit_delay = Duration::from_micros(args.commit_delay_us);
    if args.outbound_queue_bytes < 64 * 1024 {
        return Err("--outbound-queue-bytes must be at least 65536".into());
    }
    config.engine.outbound_queue_bytes = args.outbound_queue_bytes;
    if args.resume_log == 0 || args.resume_log > args.outbound_queue {
        return Err(
            "--resume-log must be at least 1 and at most --outbound-queue (a replay must fit the queue)"
                .into(),
        );
    }
    config.engine.resume_log = args.resume_log;
    config.engine.resume_window = std::time::Duration::from_secs(args.resume_window_secs);
    config.engine.rate_limit = if args.rate_limit_per_sec > 0.0 {
        if args.rate_limit_burst < 1.0 {
            return Err("--rate-limit-burst must be at least 1".into());
        }
        Some(chatgate_engine::Rate {
            per_second: args.rate_limit_per_sec,
            burst: args.rate_limit_burst,
        })
    } else {
        None
    };
    if args.max_sessions_per_agent == 0 || args.max_unauthenticated_per_address == 0 {
        return Err(
            "--max-sessions-per-agent and --max-unauthenticated-per-address must be at least 1"
                .into(),
        );
    }
    config.engine.max_sessions_per_agent = args.max_sessions_per_agent;
    config.engine.max_unauthenticated_per_address = args.max_unauthenticated_per_address;
    if args.customer_token_ttl_secs == 0
        || args.bot_token_ttl_secs == 0
        || args.access_token_ttl_secs == 0
    {
        return Err("token lifetimes must be at least 1 second".into());
    }
    config.engine.customer_token_ttl = args.customer_token_ttl_secs;
    config.engine.bot_token_ttl = args.bot_token_ttl_secs;
    config.engine.access_token_ttl = args.access_token_ttl_secs;
    if let Some(url) = &args.public_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err("--public-url must start with http:// or https://".into());
        }
        config.web.public_url = Some(url.clone());
    }
    if let Some(addr) = args.metrics_listen {
        if addr == args.listen && addr.port() != 0 {
            return Err("--metrics-listen must differ from --listen".into());
        }
        config.metrics_listen = Some(addr);
    }
    if let (Some(listen), Some(cert), Some(key)) = (args.tls_listen, &args.tls_cert, &args.tls_key)
    {
        if listen == args.listen && listen.port() != 0 {
            return Err("--tls-listen must differ from --listen".into());
        }
        config.tls = Some(TlsSettings {
            listen,
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    if let Some(path) = &args.provision {
        config.provision = Some(load_provision(path).map_err(|e| e.to_string())?);
    }
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Serve(args) = cli.command;
    init_tracing(args.log_format);
    let config = match config_from(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chatgate: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    runtime.block_on(async move {
        let stop = shutdown_signal();
        let running = match start(config).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("chatgate: {e}");
                return ExitCode::from(1);
            }
        };
        if let Some(report) = &running.provisioned {
            for (id, name) in &report.organizations {
                tracing::info!(organization = %id, %name, "provisioned organization");
            }
            tracing::info!(
                groups = report.groups,
                agents = report.agents,
                tokens = report.tokens,
                "provisioning applied"
            );
        }
        stop.await;
        running.shutdown().await;
        ExitCode::SUCCESS
    })
}
