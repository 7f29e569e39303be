//! Many sockets at once: bounded concurrent connection set-up, progress
//! counters, the run phases every socket task follows, and room joins.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

use actix_socketio::protocol::socket::{self, Decoded, PacketKind};
use civicpulse::protocol::events;

use crate::Args;
use crate::net::{Conn, Incoming};
use crate::redis::RedisWindow;
use crate::stats::{CpuWindow, Histogram, rss_total};

/// Where a run is. Socket tasks watch it: senders send only in `Run`, and
/// every task ends at `Stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Connect,
    Run,
    Drain,
    Stop,
}

/// What a run measured around its sending window.
pub struct Window {
    /// How long the senders ran.
    pub send_secs: f64,
    /// The server's and this process's CPU over sending and draining, in %
    /// of a core.
    pub server_cpu: Option<f64>,
    pub loadgen_cpu: Option<f64>,
    /// The same per node (one entry per `--pid`).
    pub server_cpu_each: Vec<Option<f64>>,
    /// The server's RSS at the end of the drain.
    pub rss: Option<u64>,
    /// What Redis did over the window, per event (with `--redis`).
    pub redis: Option<Value>,
}

/// The sending window of a run: `Run` for the duration, then `Drain` until
/// `drained()` says everything expected has arrived (or the drain time is
/// up), then `Stop`. `events()` is how many events the run triggered, for
/// the Redis cost per event.
pub async fn send_and_drain(
    args: &Args,
    phase: &watch::Sender<Phase>,
    drained: impl Fn() -> bool,
    events: impl Fn() -> u64,
) -> Window {
    let redis = RedisWindow::start(args.redis.as_deref()).await;
    let cpu = CpuWindow::start(&args.pid);
    let own_cpu = CpuWindow::self_process();
    let start = Instant::now();
    let _ = phase.send(Phase::Run);
    tokio::time::sleep(args.duration()).await;
    let _ = phase.send(Phase::Drain);
    let send_secs = start.elapsed().as_secs_f64();
    let deadline = Instant::now() + args.drain();
    while !drained() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (server_cpu, server_cpu_each, loadgen_cpu) = (cpu.percent(), cpu.percent_each(), own_cpu.percent());
    let redis = match redis {
        Some(w) => Some(w.finish(events()).await),
        None => None,
    };
    let window =
        Window { send_secs, server_cpu, server_cpu_each, loadgen_cpu, rss: rss_total(&args.pid), redis };
    let _ = phase.send(Phase::Stop);
    window
}

/// Counters shared by all sockets of a run.
#[derive(Default)]
pub struct Fleet {
    pub ready: AtomicUsize,
    pub failed: AtomicUsize,
    /// Sockets that were closed by the other side before `Stop`.
    pub dropped: AtomicUsize,
    /// Time from TCP connect to the CONNECT reply (plus the room join, where
    /// there is one).
    pub connect_latency: Histogram,
    /// When the last socket became ready (µs clock).
    pub last_ready_us: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Fleet {
    pub fn fail(&self, error: impl ToString) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errors.len() < 5 {
            errors.push(error.to_string());
        }
    }

    pub fn ready(&self, started_us: u64) {
        let now = crate::stats::now_us();
        self.connect_latency.record(now.saturating_sub(started_us));
        self.last_ready_us.fetch_max(now, Ordering::Relaxed);
        self.ready.fetch_add(1, Ordering::Relaxed);
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits (bounded) until `n` sockets are ready or failed; prints progress.
    pub async fn wait(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut last_print = Instant::now();
        loop {
            let (ready, failed) = (self.ready.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed));
            if ready + failed >= n {
                return true;
            }
            if Instant::now() >= deadline {
                eprintln!("loadgen: gave up waiting: {ready} ready, {failed} failed of {n}");
                return false;
            }
            if last_print.elapsed() >= Duration::from_secs(5) {
                eprintln!("loadgen: {ready} ready, {failed} failed of {n}");
                last_print = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Spawns `n` socket tasks, at most `concurrency` of them still setting up
/// at once: each gets a permit, to drop once its connection is ready.
pub async fn launch<T, F, Fut>(n: usize, concurrency: usize, spawn: F) -> Vec<JoinHandle<T>>
where
    T: Send + 'static,
    F: Fn(usize, OwnedSemaphorePermit) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let Ok(permit) = gate.clone().acquire_owned().await else { break };
        handles.push(tokio::spawn(spawn(i, permit)));
    }
    handles
}

/// Joins all tasks, giving up on stragglers after `timeout`.
pub async fn collect<T>(handles: Vec<JoinHandle<T>>, timeout: Duration) -> Vec<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        match tokio::time::timeout_at(deadline, handle).await {
            Ok(Ok(t)) => out.push(t),
            Ok(Err(_)) => {}
            Err(_) => break,
        }
    }
    out
}

/// Waits for the phase to reach `at_least` (or the sender to go away).
pub async fn phase_reached(rx: &mut watch::Receiver<Phase>, at_least: Phase) {
    let _ = rx.wait_for(|p| *p >= at_least).await;
}

/// Joins `room:issue:<issue>` with `join:issue` and waits for the ok ack.
pub async fn join_issue(conn: &mut Conn, issue: &str, timeout: Duration) -> Result<(), String> {
    const ACK: u64 = 0;
    let packet = socket::Packet::event("/", events::JOIN_ISSUE, vec![json!(issue)]).with_ack_id(ACK);
    if !conn.send(&packet).await {
        return Err("join:issue: connection closed".into());
    }
    let wait = async {
        loop {
            let Incoming::Message(text) = conn.recv().await else {
                return Err("join:issue: connection closed".to_owned());
            };
            if !text.starts_with('3') {
                continue;
            }
            if let Ok(Decoded::Complete(p)) = socket::decode(&text)
                && p.kind == PacketKind::Ack
                && p.ack_id == Some(ACK)
            {
                let ok = p.args().first().and_then(|a| a.get("ok")).and_then(Value::as_bool);
                return if ok == Some(true) { Ok(()) } else { Err(format!("join:issue refused: {text}")) };
            }
        }
    };
    tokio::time::timeout(timeout, wait).await.unwrap_or_else(|_| Err("join:issue: no ack".into()))
}
