//! `chatgate-load`, the black-box load harness: it speaks RTM and Web like
//! an agent app, a customer widget and a bot (frames from the protocol
//! crate), against chatgate or against a room-relay peer, and reports
//! latency (HDR histograms, corrected for coordinated omission by an
//! open-loop schedule) and throughput. Every scenario is bounded in
//! connections and time.

mod client;
mod plot;
mod relay;
mod scenarios;
mod server_metrics;
mod soak;
mod stats;
mod web;

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "chatgate-load",
    about = "Load harness for chatgate and room-relay servers"
)]
struct Cli {
    /// The harness's worker threads. 1 (the default when the process may
    /// use one core, as under `taskset -c 1`) runs a single-threaded
    /// runtime, which costs that core less than a one-worker multi-thread
    /// runtime; the default otherwise is one per core.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a provisioning file for the load organization (`load`): N
    /// agents `agent<i>@load.test` with tokens `load-agent-<i>`, and an
    /// owner `owner@load.test` with token `load-owner`.
    Provision {
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Chats each agent may hold (1-20).
        #[arg(long, default_value_t = 20)]
        max_chats: u32,
        #[arg(long)]
        out: PathBuf,
    },
    /// N agents connect, log in and stay (heartbeating with `ping`).
    Idle(IdleArgs),
    /// Customers start chats routed to agents; both sides exchange messages
    /// at a fixed offered rate.
    Chat(ChatArgs),
    /// One sender, many receivers: `multicast` through chatgate, or the same
    /// shape through a room-relay server (`--target raw`).
    Fanout(FanoutArgs),
    /// All sessions drop at once and reconnect while a sender multicasts:
    /// time until all are back, and how many pushes each missed.
    Storm(StormArgs),
    /// A long run that must stay flat: agents churn (half of their
    /// reconnects with exact resume), a pool of customers visit again and
    /// again (start or resume a chat, messages, a transfer, deactivate);
    /// memory and latency per interval.
    Soak(SoakArgs),
    /// `fanout` at rising rates until p99 passes a bound; the last rate
    /// that held.
    Ramp(RampArgs),
    /// Hostile clients: sockets that never log in, random bytes, oversized
    /// frames and request floods; server memory before, during and after.
    Hostile(HostileArgs),
    /// The fanout scenario against chatgate, the baseline relay and the
    /// room-relay peers one after another (each server started here, pinned
    /// to a core), printed as one table.
    Compare(CompareArgs),
    /// Run the bare baseline relay (the room-relay protocol on the same
    /// crates chatgate uses); measure it with `fanout --target raw`.
    Baseline {
        #[arg(long, default_value = "127.0.0.1:9200")]
        listen: SocketAddr,
    },
}

#[derive(Args, Clone)]
pub struct Common {
    /// Server address (host:port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub server: SocketAddr,
    /// The server's pid, to read its memory and CPU from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
    /// The address of chatgate's `--metrics-listen`: `chat` and `fanout`
    /// then report the server's own request, store-queue and commit times
    /// and its error answers for the traffic (from `/metrics` read before
    /// and after it).
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Source addresses to spread connections over (127.0.0.2, .3, …).
    #[arg(long, default_value_t = 1)]
    pub sources: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG plot of the latency distribution (and, where the
    /// scenario records it, of p50/p99 by second) here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sessions to open (agent i uses token `load-agent-<i>`).
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Offered connect+login rate per second.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Seconds to hold the sessions once all are up.
    #[arg(long, default_value_t = 10)]
    pub hold: u64,
    /// `login.pushes` for v3.5: `all` (what agent apps do), or a
    /// comma-separated list of push names (what a bot farm may do; e.g.
    /// `incoming_chat,incoming_event` leaves out everyone's
    /// `routing_status_set`, whose fan-out grows with the square of the
    /// sessions while they log in).
    #[arg(long, default_value = "all")]
    pub subscribe: String,
}

#[derive(Args, Clone)]
pub struct ChatArgs {
    #[command(flatten)]
    pub common: Common,
    /// Agents (tokens `load-agent-0` …).
    #[arg(long, default_value_t = 50)]
    pub agents: usize,
    /// Customers, one chat each (at most agents × max_chats).
    #[arg(long, default_value_t = 500)]
    pub customers: usize,
    /// Offered messages per second, both directions together.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Organization the customers belong to.
    #[arg(long, default_value = "load")]
    pub org: String,
    /// `chatgate`, or a room-relay server: `raw` (plain WebSocket frames)
    /// or `socketio`. Against a relay each customer is a pair of
    /// connections (customer and agent), each sending to the other.
    #[arg(long, default_value = "chatgate")]
    pub target: String,
}

#[derive(Args, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// `chatgate` (multicast to every agent), `raw` (room relay on plain
    /// WebSocket frames) or `socketio` (room relay on Socket.IO).
    #[arg(long, default_value = "chatgate")]
    pub target: String,
    /// Receivers.
    #[arg(long, default_value_t = 1000)]
    pub receivers: usize,
    /// Messages per second from the one sender.
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Receivers (the first K) that log in and then never read: slow
    /// consumers. The others' latency shows whether they cost anyone else.
    #[arg(long, default_value_t = 0)]
    pub stalled: usize,
    /// Padding bytes in each message (fills a stalled reader's buffers
    /// sooner).
    #[arg(long, default_value_t = 0)]
    pub pad: usize,
    /// How the sender sends, against chatgate: `rtm` (a logged-in RTM
    /// session) or `web` (`POST /v3.5/agent/action/multicast` on 8
    /// keep-alive connections, as a bot or back-office system would).
    #[arg(long, default_value = "rtm")]
    pub send_via: String,
}

#[derive(Args, Clone)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sessions (agent i uses token `load-agent-<i>`).
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Multicasts per second from `load-owner` during the whole run.
    #[arg(long, default_value_t = 20)]
    pub rate: u64,
    /// Seconds before the storm, and at least as long after it.
    #[arg(long, default_value_t = 3)]
    pub settle: u64,
    /// Sessions ask for exact resume (proto-docs/resume.md) and log in again
    /// with their cursor after the drop.
    #[arg(long)]
    pub resume: bool,
}

#[derive(Args, Clone)]
pub struct SoakArgs {
    #[command(flatten)]
    pub common: Common,
    /// Churning agents (tokens `load-agent-0` …).
    #[arg(long, default_value_t = 20)]
    pub agents: usize,
    /// Mean time an agent stays connected before its connection drops, ms.
    #[arg(long, default_value_t = 4000)]
    pub agent_hold_ms: u64,
    /// Customers in the pool (each visits again and again).
    #[arg(long, default_value_t = 200)]
    pub customers: usize,
    /// Customer visits in progress at once.
    #[arg(long, default_value_t = 20)]
    pub workers: usize,
    /// Messages per visit.
    #[arg(long, default_value_t = 5)]
    pub messages: usize,
    /// Pause after each message, ms.
    #[arg(long, default_value_t = 20)]
    pub pause_ms: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Seconds per report line.
    #[arg(long, default_value_t = 10)]
    pub report_every: u64,
    /// Organization the customers belong to.
    #[arg(long, default_value = "load")]
    pub org: String,
}

#[derive(Args, Clone)]
pub struct CompareArgs {
    /// `fanout` (one sender, `--receivers`) or `chat` (`--customers` chats
    /// with `--agents` agents; against the relays, pairs of connections).
    #[arg(long, default_value = "fanout")]
    pub shape: String,
    /// Agents, for `--shape chat`.
    #[arg(long, default_value_t = 100)]
    pub agents: usize,
    /// Customers (chats), for `--shape chat`.
    #[arg(long, default_value_t = 1000)]
    pub customers: usize,
    /// Receivers per run.
    #[arg(long, default_value_t = 1000)]
    pub receivers: usize,
    /// Messages per second (from the one sender for `fanout`; all chats
    /// together for `chat`).
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Seconds of traffic per run.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// The chatgate binary.
    #[arg(long, default_value = "target/release/chatgate")]
    pub chatgate_bin: PathBuf,
    /// The peers' folder (from `../shared/bench/peers/setup.sh`); peers are
    /// skipped when it is missing.
    #[arg(long)]
    pub peers_dir: Option<PathBuf>,
    /// The core the servers are pinned to (`taskset -c`).
    #[arg(long, default_value = "0")]
    pub server_core: String,
    /// Rounds: each runs every server once, in turn (a fresh chatgate data
    /// directory each time). With more than one, the table gives each
    /// server's median over the rounds, and the JSON every round (`rounds`):
    /// on a shared host a single run can be a disturbed one.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Start chatgate with `--metrics-listen` (127.0.0.1:19311) and report
    /// its own view of each run, as `chat --metrics` does: request,
    /// store-queue and commit times, and requests answered with errors (in
    /// the JSON as `server_metrics`).
    #[arg(long)]
    pub metrics: bool,
    /// Write the table as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct HostileArgs {
    #[command(flatten)]
    pub common: Common,
    /// WebSocket connections that never log in.
    #[arg(long, default_value_t = 2000)]
    pub idle_sockets: usize,
    /// Connections that send random bytes (100 frames each).
    #[arg(long, default_value_t = 50)]
    pub garbage: usize,
    /// Requests a logged-in session fires without waiting.
    #[arg(long, default_value_t = 2000)]
    pub flood: usize,
}

#[derive(Args, Clone)]
pub struct RampArgs {
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// `fanout` (the flags above) or `chat` (`--agents`, `--customers`;
    /// `--target`, `--duration` and the rates as above).
    #[arg(long, default_value = "fanout")]
    pub shape: String,
    /// Agents, for `--shape chat`.
    #[arg(long, default_value_t = 50)]
    pub agents: usize,
    /// Customers (chats), for `--shape chat`.
    #[arg(long, default_value_t = 500)]
    pub customers: usize,
    /// First rate (messages per second).
    #[arg(long, default_value_t = 50)]
    pub start: u64,
    /// Added at each step.
    #[arg(long, default_value_t = 50)]
    pub step: u64,
    /// At most this many steps.
    #[arg(long, default_value_t = 20)]
    pub max_steps: u32,
    /// The p99 bound in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    pub bound_ms: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Pinned to one core (`taskset -c 1`, as the README asks), the harness
    // runs on a single-threaded runtime: with a one-worker multi-thread
    // runtime its own start lag at 5,000 logins/s reached p99 45–215 ms in
    // two of four `idle` runs, against 5–16 ms (loadtest/README.md).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cli.threads.unwrap_or(cores).max(1);
    let mut rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let rt = rt.enable_all().build().expect("runtime");
    let result = rt.block_on(async move {
        match cli.command {
            Command::Provision {
                agents,
                max_chats,
                out,
            } => scenarios::write_provisioning(agents, max_chats, &out),
            Command::Idle(a) => scenarios::idle(a).await,
            Command::Chat(a) => scenarios::chat(a).await,
            Command::Fanout(a) => scenarios::fanout(a).await,
            Command::Storm(a) => scenarios::storm(a).await,
            Command::Soak(a) => soak::soak(a).await,
            Command::Ramp(a) => scenarios::ramp(a).await,
            Command::Hostile(a) => scenarios::hostile(a).await,
            Command::Compare(a) => scenarios::compare(a).await,
            Command::Baseline { listen } => relay::serve(listen).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatgate-load: {e}");
            ExitCode::FAILURE
        }
    }
}
