//! `civicpulse-loadgen`: a Socket.IO load generator for CivicPulse and its
//! benchmark peers (the Node.js system and the bare "limit" server).
//!
//! It speaks Engine.IO 4 / Socket.IO 5 over WebSocket through the project's
//! own codecs (`civicpulse::protocol`), answers heartbeats, joins `/` with
//! `auth.token` (access tokens minted locally with the shared `JWT_SECRET`),
//! raises its own file limit and spreads its connections over several
//! 127.0.0.x source addresses. Only loopback targets are accepted.
//!
//! ```text
//! civicpulse-loadgen idle      --url http://127.0.0.1:3001 --secret … --connections 10000 --duration 30 --pid PID
//! civicpulse-loadgen broadcast --url … --connections 5000 --rate 20 --duration 20
//! civicpulse-loadgen rooms     --url … --rooms 100 --members 20 --rate 2 --duration 20
//! civicpulse-loadgen handshake --url … --connections 5000 --concurrency 200
//! civicpulse-loadgen typing    --url … --rooms 50 --members 20 --rate 2 --duration 20
//! civicpulse-loadgen flood     --url … --pid PID --flood-kind send-unjoined --frames 300000 --db server.db
//! civicpulse-loadgen scale     --url … --connections 14300 --barrier DIR --index K   (one of several processes)
//! ```
//!
//! Every scenario prints a human table on stdout and then exactly one line
//! `RESULT {json}` for scripts (see BENCHMARKS.md).

mod broadcast;
mod connections;
mod fleet;
mod flood;
mod net;
mod redis;
mod rooms;
mod scale;
mod setup;
mod stats;

use std::fmt::Display;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N authenticated sockets held for the duration: server RSS and CPU.
    Idle,
    /// N sockets; upvotes over REST at --rate; latency to every socket.
    Broadcast,
    /// --rooms × --members; one member per room sends message:send at --rate.
    Rooms,
    /// Authenticated connections completed per second.
    Handshake,
    /// Every member of --rooms × --members toggles user:typing at --rate.
    Typing,
    /// One socket writes --frames frames without reading; a victim's round
    /// trips, /healthz and the server's RSS before, during and after.
    Flood,
    /// One process of a fleet too large for one (see `scale.rs`): holds
    /// --connections sockets until the script's `go`, then times one
    /// global event to each of them.
    Scale,
}

/// Which nodes receive the REST writes that trigger broadcast events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Triggers {
    /// Round-robin: upvote k goes to node k mod N.
    All,
    /// Every upvote goes to the first node.
    First,
}

#[derive(Debug, Parser)]
#[command(name = "civicpulse-loadgen", version, about = "Socket.IO load generator for CivicPulse benchmarks")]
pub struct Args {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Server base URL; must be a loopback address. Several, comma-separated,
    /// are the nodes of one cluster: broadcast, rooms and typing place
    /// socket i on node i mod N (so the members of a room sit on different
    /// nodes); set-up data goes to the first; idle and handshake use only the
    /// first.
    #[arg(long, default_value = "http://127.0.0.1:3001")]
    pub url: String,
    /// The server's JWT_SECRET, to mint access tokens.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Sockets (idle, broadcast) or handshakes (handshake).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Seconds to hold (idle) or to send (broadcast, rooms, typing).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Upvotes/s (broadcast), messages/s per room (rooms), typing events/s
    /// per member (typing).
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// The server's process id, to read its RSS and CPU from /proc; several,
    /// comma-separated, for a cluster's nodes (CPU and RSS are their sum).
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Source addresses 127.0.0.2, 127.0.0.3, … to spread connections over.
    #[arg(long, default_value_t = 8)]
    pub sources: usize,
    /// HTTP connections triggering upvotes (broadcast).
    #[arg(long, default_value_t = 8)]
    pub http_connections: usize,
    /// Where broadcast's upvotes go with several nodes: `all` sends upvote k
    /// to node k mod N, `first` sends every upvote to the first node.
    #[arg(long, value_enum, default_value_t = Triggers::All)]
    pub triggers: Triggers,
    /// A Redis the servers use (redis://127.0.0.1:PORT, loopback only): its
    /// `INFO stats commandstats cpu` is read 1 s before sending starts (the
    /// idle background), when it starts and after the drain, and the deltas
    /// are reported per event.
    #[arg(long)]
    pub redis: Option<String>,
    /// Seconds to wait for stragglers after the sending stops.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Seconds allowed for one connection's set-up.
    #[arg(long, default_value_t = 30.0)]
    pub connect_timeout: f64,
    /// Seconds to let the server settle before measuring idle memory.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Users to register (at least --members are registered anyway).
    #[arg(long, default_value_t = 16)]
    pub users: usize,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// A name for the server under test, copied into the JSON.
    #[arg(long, default_value = "")]
    pub label: String,
    /// flood: what the flooder sends.
    #[arg(long, value_enum, default_value_t = flood::FloodKind::Typing)]
    pub flood_kind: flood::FloodKind,
    /// flood: frames the flooder writes.
    #[arg(long, default_value_t = 300_000)]
    pub frames: u64,
    /// flood: seconds measured before the flood starts.
    #[arg(long, default_value_t = 5.0)]
    pub baseline: f64,
    /// flood: the flood phase lasts at least this many seconds.
    #[arg(long, default_value_t = 5.0)]
    pub flood_min: f64,
    /// flood: seconds after which a flooder still writing gives up.
    #[arg(long, default_value_t = 120.0)]
    pub flood_timeout: f64,
    /// flood: seconds measured after the flood.
    #[arg(long, default_value_t = 5.0)]
    pub cooldown: f64,
    /// flood: SO_RCVBUF of the flooder's socket, in bytes.
    #[arg(long, default_value_t = 4096)]
    pub flood_recv_buffer: u32,
    /// flood: the victim's message:send round trips per second.
    #[arg(long, default_value_t = 20.0)]
    pub victim_rate: f64,
    /// flood: milliseconds between /healthz probes.
    #[arg(long, default_value_t = 100)]
    pub healthz_interval_ms: u64,
    /// flood: the server's SQLite file, to count the flooder's stored
    /// messages over time (with the sqlite3 shell).
    #[arg(long)]
    pub db: Option<std::path::PathBuf>,
    /// flood: abandon the flood once the server's RSS passes this many MiB
    /// (0: never), so that a server without limits cannot take the machine
    /// down.
    #[arg(long, default_value_t = 4096)]
    pub max_server_rss_mib: u64,
    /// idle: rooms to spread the sockets over (socket i joins issue i mod
    /// N's room, as a client viewing an issue does); 0: none.
    #[arg(long, default_value_t = 0)]
    pub join_rooms: usize,
    /// scale: the directory where the fleet's processes meet.
    #[arg(long)]
    pub barrier: Option<std::path::PathBuf>,
    /// scale: this process's number in the fleet (0 triggers the event).
    #[arg(long, default_value_t = 0)]
    pub index: usize,
}

impl Args {
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration.max(0.0))
    }
    pub fn drain(&self) -> Duration {
        Duration::from_secs_f64(self.drain.max(0.0))
    }
    /// Bounded wait for a whole fleet to connect.
    pub fn ramp_timeout(&self, sockets: usize) -> Duration {
        Duration::from_secs_f64(self.connect_timeout + sockets as f64 / 200.0)
    }
}

/// What a scenario found: human rows and the JSON object.
pub struct Report {
    scenario: &'static str,
    rows: Vec<(String, String)>,
    pub json: Map<String, Value>,
    pub ok: bool,
}

impl Report {
    pub fn new(scenario: &'static str) -> Self {
        Self { scenario, rows: Vec::new(), json: Map::new(), ok: true }
    }

    pub fn row(&mut self, label: &str, value: impl Display) {
        self.rows.push((label.to_owned(), value.to_string()));
    }

    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.json.insert(key.to_owned(), value.into());
    }

    fn print(&self, args: &Args) {
        let target =
            if args.label.is_empty() { args.url.clone() } else { format!("{} ({})", args.label, args.url) };
        println!("== {} against {}", self.scenario, target);
        let width = self.rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (label, value) in &self.rows {
            println!("  {label:<width$}  {value}");
        }
        let mut json = Map::new();
        json.insert("scenario".into(), json!(self.scenario));
        json.insert("label".into(), json!(args.label));
        json.insert("url".into(), json!(args.url));
        json.insert("ok".into(), json!(self.ok));
        json.extend(self.json.clone());
        println!("RESULT {}", Value::Object(json));
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    stats::init_clock();
    let (soft, hard) = net::raise_nofile();
    let target =
        match net::Target::parse(&args.url, args.sources, Duration::from_secs_f64(args.connect_timeout)) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                eprintln!("civicpulse-loadgen: {e}");
                return ExitCode::from(2);
            }
        };
    let sockets = match args.scenario {
        Scenario::Idle | Scenario::Broadcast | Scenario::Handshake | Scenario::Scale => args.connections,
        Scenario::Rooms | Scenario::Typing => args.rooms * args.members,
        Scenario::Flood => 2,
    };
    if sockets as u64 + 64 > soft {
        eprintln!(
            "civicpulse-loadgen: warning: {sockets} sockets but RLIMIT_NOFILE is {soft} (hard {hard}); \
             raise the hard limit (ulimit -Hn, needs CAP_SYS_RESOURCE) for this many"
        );
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = args.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("civicpulse-loadgen: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match args.scenario {
            Scenario::Idle => connections::idle(&args, target.clone()).await,
            Scenario::Handshake => connections::handshake(&args, target.clone()).await,
            Scenario::Broadcast => broadcast::run(&args, target.clone()).await,
            Scenario::Rooms => rooms::rooms(&args, target.clone()).await,
            Scenario::Typing => rooms::typing(&args, target.clone()).await,
            Scenario::Flood => flood::run(&args, target.clone()).await,
            Scenario::Scale => scale::run(&args, target.clone()).await,
        }
    });
    // Sockets still open are simply dropped with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(mut report) => {
            report.set("nofile_limit", soft);
            report.set("source_addresses", target.source_count());
            report.set("nodes", target.nodes.len());
            report.print(&args);
            if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("civicpulse-loadgen: {e}");
            println!(
                "RESULT {}",
                json!({"scenario": format!("{:?}", args.scenario).to_lowercase(), "label": args.label, "ok": false, "error": e})
            );
            ExitCode::FAILURE
        }
    }
}
