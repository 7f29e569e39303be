//! `flood`: one client against everyone else.
//!
//! A victim (another user, joined to its own issue) sends `message:send`
//! at a steady rate and times its own round trips (the ack, and the
//! `message:new` echo from its room); a prober GETs `/healthz` on a new
//! connection every `--healthz-interval-ms`; the server's RSS is read from
//! /proc every 100 ms. After a baseline with no flood, one authenticated
//! socket with a small receive buffer writes `--frames` frames of one kind
//! as fast as its socket takes them and never reads, then a cool-down
//! follows. Everything is reported per phase, with what the flooder
//! managed to write before the server cut it off, and (with `--db`) how
//! many of its messages were stored, sampled over time so that one can see
//! whether storing stops when the flooder is disconnected.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::ValueEnum;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, MissedTickBehavior};

use actix_socketio::protocol::engine::{self, WsMessage};
use actix_socketio::protocol::socket::{self, Decoded, PacketKind};
use civicpulse::protocol::events;

use crate::fleet;
use crate::net::{self, Conn, Http, Incoming, Target, event_name, str_field};
use crate::setup::Fixture;
use crate::stats::{Histogram, Summary, now_us, round3, rss_bytes};
use crate::{Args, Report};

/// What the flooder sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FloodKind {
    /// `user:typing` to an issue it joined (no ack asked, as clients do).
    Typing,
    /// `presence:list` with an ack id on every frame.
    Presence,
    /// `message:send` with ack ids to an issue it has not joined.
    SendUnjoined,
    /// `message:send` with ack ids to an issue it joined (its own room
    /// echoes every message back to it).
    SendJoined,
}

impl FloodKind {
    pub fn name(self) -> &'static str {
        match self {
            FloodKind::Typing => "typing",
            FloodKind::Presence => "presence",
            FloodKind::SendUnjoined => "send-unjoined",
            FloodKind::SendJoined => "send-joined",
        }
    }

    fn joins(self) -> bool {
        matches!(self, FloodKind::Typing | FloodKind::SendJoined)
    }

    fn stores(self) -> bool {
        matches!(self, FloodKind::SendUnjoined | FloodKind::SendJoined)
    }

    /// The Engine.IO message of frame `i` (0-based) at `issue`.
    fn payload(self, i: u64, issue: &str) -> String {
        let packet = match self {
            FloodKind::Typing => socket::Packet::event(
                "/",
                events::USER_TYPING,
                vec![json!({ "issueId": issue, "isTyping": i.is_multiple_of(2) })],
            ),
            FloodKind::Presence => {
                socket::Packet::event("/", events::PRESENCE_LIST, vec![json!({})]).with_ack_id(i + 1)
            }
            FloodKind::SendUnjoined | FloodKind::SendJoined => socket::Packet::event(
                "/",
                events::MESSAGE_SEND,
                vec![json!({ "issueId": issue, "content": format!("flood {i}") })],
            )
            .with_ack_id(i + 1),
        };
        match engine::Packet::Message(packet.encode()).encode_ws() {
            WsMessage::Text(text) => text,
            // A text packet is always encoded as text.
            WsMessage::Binary(_) => unreachable!("a Socket.IO event without attachments is text"),
        }
    }
}

/// Appends one client-to-server WebSocket text frame (FIN, masked, as RFC
/// 6455 requires of clients). The flooder writes these straight to its TCP
/// stream: through a WebSocket library every frame would be one write
/// call, and the point is to write as fast as the socket takes them.
pub fn masked_text_frame(payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.push(0x81);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// Frames are encoded and written in chunks of about this many bytes.
const CHUNK_BYTES: usize = 64 * 1024;
/// A request the health prober waits longer for counts as failed.
const HEALTHZ_TIMEOUT: Duration = Duration::from_secs(5);
const RSS_EVERY: Duration = Duration::from_millis(100);
const METRICS_EVERY: Duration = Duration::from_millis(100);
const STORED_EVERY: Duration = Duration::from_millis(100);

/// How the flood ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FloodEnd {
    /// Every frame was taken by the socket.
    AllWritten,
    /// The connection broke under the writes: the server closed it.
    WriteFailed,
    /// `--flood-timeout` passed with frames still unwritten.
    TimedOut,
    /// The server's RSS passed `--max-server-rss-mib`: the flood was
    /// abandoned so as not to take the machine down.
    RssCap,
}

impl FloodEnd {
    fn as_str(self) -> &'static str {
        match self {
            FloodEnd::AllWritten => "all written",
            FloodEnd::WriteFailed => "write failed (the server closed the connection)",
            FloodEnd::TimedOut => "timed out (still blocked)",
            FloodEnd::RssCap => "abandoned at the server RSS cap",
        }
    }
}

struct FloodOutcome {
    end: FloodEnd,
    end_us: u64,
    frames: u64,
    bytes: u64,
    error: Option<String>,
    /// (time, frames written so far), one entry per write call.
    progress: Vec<(u64, u64)>,
    /// Kept open (never read) until the run ends once every frame is
    /// written; dropped when it broke or the flood was abandoned.
    conn: Option<Conn>,
}

/// Writes `n` frames of `kind` to the flooder's TCP stream without ever
/// reading from it.
async fn flood(
    mut conn: Conn,
    kind: FloodKind,
    issue: String,
    n: u64,
    deadline: Instant,
    cap: Arc<Notify>,
) -> FloodOutcome {
    let mask = [0x5a, 0xc3, 0x17, 0x9e];
    let (mut frames, mut bytes) = (0u64, 0u64);
    let mut progress = Vec::new();
    let mut next = 0u64;
    let mut chunk = Vec::with_capacity(CHUNK_BYTES + 256);
    // Where each frame of the chunk ends, to count whole frames written.
    let mut ends: Vec<usize> = Vec::new();
    let stream = conn.ws.get_mut();
    let finish = |end, error, frames, bytes, progress| FloodOutcome {
        end,
        end_us: now_us(),
        frames,
        bytes,
        error,
        progress,
        conn: None,
    };
    while next < n {
        chunk.clear();
        ends.clear();
        while next < n && chunk.len() < CHUNK_BYTES {
            masked_text_frame(kind.payload(next, &issue).as_bytes(), mask, &mut chunk);
            ends.push(chunk.len());
            next += 1;
        }
        let mut offset = 0;
        let mut counted = 0;
        while offset < chunk.len() {
            let written = tokio::select! {
                biased;
                _ = cap.notified() => {
                    return finish(FloodEnd::RssCap, None, frames, bytes, progress);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return finish(FloodEnd::TimedOut, None, frames, bytes, progress);
                }
                written = stream.write(&chunk[offset..]) => written,
            };
            match written {
                Ok(0) => {
                    let error = Some("write returned 0".to_owned());
                    return finish(FloodEnd::WriteFailed, error, frames, bytes, progress);
                }
                Ok(k) => {
                    offset += k;
                    bytes += k as u64;
                    while counted < ends.len() && ends[counted] <= offset {
                        counted += 1;
                        frames += 1;
                    }
                    progress.push((now_us(), frames));
                }
                Err(e) => {
                    return finish(FloodEnd::WriteFailed, Some(e.to_string()), frames, bytes, progress);
                }
            }
        }
    }
    let mut outcome = finish(FloodEnd::AllWritten, None, frames, bytes, progress);
    outcome.conn = Some(conn);
    outcome
}

/// One `message:send` of the victim: when it went, when its ack and its
/// echo came back.
#[derive(Clone, Copy, Default)]
struct Trip {
    sent_us: u64,
    ack_us: Option<u64>,
    echo_us: Option<u64>,
    refused: bool,
}

/// The victim: `message:send` to its own issue at `rate`, until `stop`.
async fn victim(
    mut conn: Conn,
    issue: String,
    rate: f64,
    mut stop: watch::Receiver<bool>,
) -> (Vec<Trip>, bool) {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut ticker = tokio::time::interval(period);
    // A stalled server is what is being measured: missed ticks are not
    // made up in a burst afterwards.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut trips: Vec<Trip> = Vec::new();
    let mut sending = true;
    loop {
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return (trips, false);
                }
            }
            _ = ticker.tick(), if sending => {
                let seq = trips.len() as u64 + 1;
                let t = now_us();
                let packet = socket::Packet::event(
                    "/",
                    events::MESSAGE_SEND,
                    vec![json!({ "issueId": issue, "content": format!("v {seq} {t}") })],
                )
                .with_ack_id(seq);
                trips.push(Trip { sent_us: t, ..Trip::default() });
                if !conn.send(&packet).await {
                    sending = false;
                }
            }
            incoming = conn.recv() => {
                let Incoming::Message(text) = incoming else { return (trips, true) };
                let now = now_us();
                if let Some(("message:new", payload)) = event_name(&text) {
                    let seq = str_field(payload, "content")
                        .and_then(|c| c.strip_prefix("v "))
                        .and_then(|c| c.split(' ').next())
                        .and_then(|s| s.parse::<usize>().ok());
                    if let Some(trip) = seq.and_then(|s| s.checked_sub(1)).and_then(|i| trips.get_mut(i)) {
                        trip.echo_us.get_or_insert(now);
                    }
                } else if text.starts_with('3')
                    && let Ok(Decoded::Complete(p)) = socket::decode(&text)
                    && let (PacketKind::Ack, Some(id)) = (p.kind, p.ack_id)
                    && let Some(trip) = (id as usize).checked_sub(1).and_then(|i| trips.get_mut(i))
                {
                    let ok = p.args().first().and_then(|a| a.get("ok")).and_then(Value::as_bool) == Some(true);
                    trip.ack_us.get_or_insert(now);
                    trip.refused |= !ok;
                }
            }
        }
    }
}

/// One `/healthz` probe: when it went, and its latency if it succeeded.
type Probe = (u64, Option<u64>);

/// GETs `/healthz` every `every`, each probe on a task of its own so that
/// one slow answer does not hold back the next probes.
async fn healthz(target: Arc<Target>, every: Duration, mut stop: watch::Receiver<bool>) -> Vec<Probe> {
    let http = match Http::fresh(&target, HEALTHZ_TIMEOUT) {
        Ok(http) => Arc::new(http),
        Err(e) => {
            eprintln!("loadgen: healthz client: {e}");
            return Vec::new();
        }
    };
    let probes = Arc::new(Mutex::new(Vec::new()));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut tasks = Vec::new();
    loop {
        tokio::select! {
            biased;
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
            _ = ticker.tick() => {
                let (http, probes) = (http.clone(), probes.clone());
                tasks.push(tokio::spawn(async move {
                    let t = now_us();
                    let ok = matches!(http.get("/healthz").await, Ok(r) if r.status == 200);
                    let latency = ok.then(|| now_us() - t);
                    probes.lock().unwrap_or_else(|p| p.into_inner()).push((t, latency));
                }));
            }
        }
    }
    // Each probe ends within HEALTHZ_TIMEOUT.
    fleet::collect(tasks, HEALTHZ_TIMEOUT + Duration::from_secs(2)).await;
    let mut probes = std::mem::take(&mut *probes.lock().unwrap_or_else(|p| p.into_inner()));
    probes.sort_unstable();
    probes
}

/// Samples the server's RSS until `stop`; past `cap` bytes, `over` is
/// notified once.
async fn rss_sampler(
    pid: u32,
    cap: Option<u64>,
    over: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> Vec<(u64, u64)> {
    let mut samples = Vec::new();
    let mut ticker = tokio::time::interval(RSS_EVERY);
    let mut capped = false;
    loop {
        tokio::select! {
            biased;
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
            _ = ticker.tick() => {
                let Some(rss) = rss_bytes(pid) else { continue };
                samples.push((now_us(), rss));
                if !capped && cap.is_some_and(|c| rss > c) {
                    capped = true;
                    over.notify_one();
                }
            }
        }
    }
    samples
}

/// The value of a counter in a Prometheus text page.
fn counter(page: &str, name: &str) -> Option<u64> {
    page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

const FLOOD_DISCONNECTS: &str = "civicpulse_socket_flood_disconnects_total";
const RATE_LIMITED: &str = "civicpulse_socket_events_rate_limited_total";
const SLOW_CLIENTS: &str = "civicpulse_slow_client_disconnects_total";

/// The server's own counters (civicpulse's /metrics; a server without
/// them gives none).
async fn counters(http: &Http) -> Option<[u64; 3]> {
    let page = http.get("/metrics").await.ok().filter(|r| r.status == 200)?;
    let page = String::from_utf8_lossy(&page.body);
    Some([counter(&page, FLOOD_DISCONNECTS)?, counter(&page, RATE_LIMITED)?, counter(&page, SLOW_CLIENTS)?])
}

/// Polls /metrics until `stop`: when the server first counted a flood or a
/// slow-client disconnect beyond `before`.
async fn disconnect_watch(http: Http, before: [u64; 3], mut stop: watch::Receiver<bool>) -> Option<u64> {
    let mut ticker = tokio::time::interval(METRICS_EVERY);
    loop {
        tokio::select! {
            biased;
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return None },
            _ = ticker.tick() => {
                let Some(now) = counters(&http).await else { continue };
                if now[0] > before[0] || now[2] > before[2] {
                    return Some(now_us());
                }
            }
        }
    }
}

/// Messages stored at `issue` in the SQLite file `db` (both servers keep
/// them in a `messages` table with an `issue_id` column), by the `sqlite3`
/// command-line shell.
fn stored_count(db: &std::path::Path, issue: &str) -> Result<u64, String> {
    // Issue ids are made by the servers (a prefix and a ULID): no quoting
    // to worry about, but refuse anything else rather than build SQL from it.
    if !issue.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(format!("unexpected issue id {issue:?}"));
    }
    let output = std::process::Command::new("sqlite3")
        .arg(db)
        .arg(".timeout 2000")
        .arg(format!("SELECT count(*) FROM messages WHERE issue_id = '{issue}';"))
        .output()
        .map_err(|e| format!("sqlite3: {e}"))?;
    if !output.status.success() {
        return Err(format!("sqlite3: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().map_err(|e| format!("sqlite3 output: {e}"))
}

async fn stored_sampler(db: PathBuf, issue: String, mut stop: watch::Receiver<bool>) -> Vec<(u64, u64)> {
    let mut samples = Vec::new();
    let mut ticker = tokio::time::interval(STORED_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut errors = 0;
    loop {
        tokio::select! {
            biased;
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
            _ = ticker.tick() => {}
        }
        let (db, issue) = (db.clone(), issue.clone());
        match tokio::task::spawn_blocking(move || stored_count(&db, &issue)).await {
            Ok(Ok(n)) => samples.push((now_us(), n)),
            Ok(Err(e)) => {
                errors += 1;
                if errors <= 3 {
                    eprintln!("loadgen: stored count: {e}");
                }
            }
            Err(e) => eprintln!("loadgen: stored count: {e}"),
        }
    }
    samples
}

/// A phase of the run: `[start, end)` in µs of the loadgen's clock.
#[derive(Clone, Copy)]
struct Span {
    name: &'static str,
    start: u64,
    end: u64,
}

impl Span {
    fn holds(&self, t: u64) -> bool {
        (self.start..self.end).contains(&t)
    }
}

fn mib(bytes: u64) -> f64 {
    round3(bytes as f64 / (1024.0 * 1024.0))
}

fn secs(us: u64) -> f64 {
    round3(us as f64 / 1e6)
}

/// What one phase measured.
struct PhaseFigures {
    ack: Summary,
    echo: Summary,
    sent: usize,
    unanswered: usize,
    refused: usize,
    healthz: Summary,
    probes: usize,
    probe_failures: usize,
    rss_peak: Option<u64>,
    rss_end: Option<u64>,
}

fn phase_figures(span: Span, trips: &[Trip], probes: &[Probe], rss: &[(u64, u64)]) -> PhaseFigures {
    let (ack, echo, health) = (Histogram::default(), Histogram::default(), Histogram::default());
    let (mut sent, mut unanswered, mut refused) = (0, 0, 0);
    for trip in trips.iter().filter(|t| span.holds(t.sent_us)) {
        sent += 1;
        match trip.ack_us {
            Some(at) => ack.record(at.saturating_sub(trip.sent_us)),
            None => unanswered += 1,
        }
        if let Some(at) = trip.echo_us {
            echo.record(at.saturating_sub(trip.sent_us));
        }
        refused += usize::from(trip.refused);
    }
    let (mut n, mut failures) = (0, 0);
    for &(_, latency) in probes.iter().filter(|(t, _)| span.holds(*t)) {
        n += 1;
        match latency {
            Some(us) => health.record(us),
            None => failures += 1,
        }
    }
    let in_span: Vec<u64> = rss.iter().filter(|(t, _)| span.holds(*t)).map(|&(_, b)| b).collect();
    PhaseFigures {
        ack: ack.summary(),
        echo: echo.summary(),
        sent,
        unanswered,
        refused,
        healthz: health.summary(),
        probes: n,
        probe_failures: failures,
        rss_peak: in_span.iter().copied().max(),
        rss_end: in_span.last().copied(),
    }
}

pub async fn run(args: &Args, target: Arc<Target>) -> Result<Report, String> {
    let kind = args.flood_kind;
    let n = args.frames;
    let pid = args.pid.first().copied();
    eprintln!("loadgen: registering 2 users and creating 3 issues");
    let fixture = Fixture::build(&target, &args.secret, 2, 3).await?;
    // The victim's issue, the one the flooder joins, and one nobody joins.
    let (victim_issue, joined_issue, unjoined_issue) =
        (fixture.issues[0].clone(), fixture.issues[1].clone(), fixture.issues[2].clone());
    let flood_issue = if kind == FloodKind::SendUnjoined { unjoined_issue } else { joined_issue };

    let timeout = target.connect_timeout;
    let mut victim_conn =
        net::connect_to(&target, target.addr, &fixture.token(0)).await.map_err(|e| format!("victim: {e}"))?;
    fleet::join_issue(&mut victim_conn, &victim_issue, timeout).await.map_err(|e| format!("victim: {e}"))?;
    let mut flooder =
        net::connect_with(&target, target.addr, &fixture.token(1), Some(args.flood_recv_buffer))
            .await
            .map_err(|e| format!("flooder: {e}"))?;
    if kind.joins() {
        fleet::join_issue(&mut flooder, &flood_issue, timeout).await.map_err(|e| format!("flooder: {e}"))?;
    }
    let metrics = Http::fresh(&target, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let counters_before = counters(&metrics).await;

    let (stop_tx, stop_rx) = watch::channel(false);
    let over_cap = Arc::new(Notify::new());
    let rss_cap = (args.max_server_rss_mib > 0).then(|| args.max_server_rss_mib * 1024 * 1024);
    let rss_task = pid.map(|pid| tokio::spawn(rss_sampler(pid, rss_cap, over_cap.clone(), stop_rx.clone())));
    let health_task = tokio::spawn(healthz(
        target.clone(),
        Duration::from_millis(args.healthz_interval_ms.max(1)),
        stop_rx.clone(),
    ));
    let victim_task = tokio::spawn(victim(victim_conn, victim_issue, args.victim_rate, stop_rx.clone()));

    let run_start = now_us();
    tokio::time::sleep(Duration::from_secs_f64(args.baseline)).await;

    let stored_task = match (&args.db, kind.stores()) {
        (Some(db), true) => {
            Some(tokio::spawn(stored_sampler(db.clone(), flood_issue.clone(), stop_rx.clone())))
        }
        _ => None,
    };
    let watch_task =
        counters_before.map(|before| tokio::spawn(disconnect_watch(metrics, before, stop_rx.clone())));
    eprintln!("loadgen: flooding with {n} {} frames", kind.name());
    let flood_start = now_us();
    let flood_deadline = Instant::now() + Duration::from_secs_f64(args.flood_timeout);
    let outcome =
        tokio::spawn(flood(flooder, kind, flood_issue.clone(), n, flood_deadline, over_cap.clone()))
            .await
            .map_err(|e| format!("flooder task: {e}"))?;
    // The flood phase lasts at least --flood-min, so that its victim
    // figures rest on as many samples as the other phases'.
    let min_end = flood_start + (args.flood_min * 1e6) as u64;
    let flood_end = outcome.end_us.max(min_end);
    tokio::time::sleep(Duration::from_micros(flood_end.saturating_sub(now_us()))).await;
    eprintln!("loadgen: flood over ({}); cooling down", outcome.end.as_str());
    tokio::time::sleep(Duration::from_secs_f64(args.cooldown)).await;
    let run_end = now_us();
    // Round trips of the last sends still count; a short grace for them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop_tx.send(true);

    let (trips, victim_dropped) = victim_task.await.map_err(|e| format!("victim task: {e}"))?;
    let probes = health_task.await.unwrap_or_default();
    let rss = match rss_task {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let stored = match stored_task {
        Some(task) => Some(task.await.unwrap_or_default()),
        None => None,
    };
    let seen_us = match watch_task {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
    // /metrics is polled every 100 ms, but a write that failed because the
    // server hung up came after the cut too: the earlier of the two is the
    // closer bound on when it happened.
    let disconnected_us = match (seen_us, outcome.end) {
        (Some(seen), FloodEnd::WriteFailed) => Some(seen.min(outcome.end_us)),
        (seen, _) => seen,
    };
    let counters_after = match &counters_before {
        Some(_) => counters(&Http::fresh(&target, Duration::from_secs(5)).map_err(|e| e.to_string())?).await,
        None => None,
    };
    drop(outcome.conn);

    let spans = [
        Span { name: "baseline", start: run_start, end: flood_start },
        Span { name: "flood", start: flood_start, end: flood_end },
        Span { name: "cooldown", start: flood_end, end: run_end },
    ];
    let mut r = Report::new("flood");
    r.row(
        "flood",
        format!("{n} {} frames, flooder receive buffer {} bytes", kind.name(), args.flood_recv_buffer),
    );
    let baseline_rss = rss.iter().filter(|(t, _)| *t < flood_start).map(|&(_, b)| b).next_back();
    let mut phases = serde_json::Map::new();
    for span in spans {
        let f = phase_figures(span, &trips, &probes, &rss);
        r.row(
            &format!("{} ({:.1} s) victim ack", span.name, secs(span.end - span.start)),
            format!("{} ({} sent, {} unanswered, {} refused)", f.ack.line(), f.sent, f.unanswered, f.refused),
        );
        r.row(&format!("{} victim echo", span.name), f.echo.line());
        r.row(
            &format!("{} healthz", span.name),
            format!("{} ({} probes, {} failed)", f.healthz.line(), f.probes, f.probe_failures),
        );
        if let (Some(peak), Some(end)) = (f.rss_peak, f.rss_end) {
            r.row(
                &format!("{} server RSS", span.name),
                format!("peak {} MiB, end {} MiB", mib(peak), mib(end)),
            );
        }
        phases.insert(
            span.name.into(),
            json!({
                "secs": secs(span.end - span.start),
                "victim_sent": f.sent,
                "victim_unanswered": f.unanswered,
                "victim_refused": f.refused,
                "victim_ack": f.ack.json(),
                "victim_echo": f.echo.json(),
                "healthz": f.healthz.json(),
                "healthz_probes": f.probes,
                "healthz_failures": f.probe_failures,
                "rss_peak_bytes": f.rss_peak,
                "rss_end_bytes": f.rss_end,
                "rss_peak_delta_mib": f.rss_peak.zip(baseline_rss).map(|(p, b)| mib(p.saturating_sub(b))),
                "rss_end_delta_mib": f.rss_end.zip(baseline_rss).map(|(e, b)| mib(e.saturating_sub(b))),
            }),
        );
    }
    let rel = |t: u64| secs(t.saturating_sub(flood_start));
    let frames_at = |t: u64| outcome.progress.iter().take_while(|(at, _)| *at <= t).last().map_or(0, |p| p.1);
    r.row(
        "flooder",
        format!(
            "{} of {n} frames ({} MB) written in {:.2} s: {}{}",
            outcome.frames,
            round3(outcome.bytes as f64 / 1e6),
            rel(outcome.end_us),
            outcome.end.as_str(),
            outcome.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
        ),
    );
    if let Some(at) = disconnected_us {
        r.row(
            "server disconnected it",
            format!("{:.2} s into the flood, after {} frames written", rel(at), frames_at(at)),
        );
    }
    let deltas = counters_before.zip(counters_after).map(|(b, a)| {
        json!({
            "flood_disconnects": a[0] - b[0],
            "events_rate_limited": a[1] - b[1],
            "slow_client_disconnects": a[2] - b[2],
        })
    });
    if let Some(d) = &deltas {
        r.row("server counters", d.to_string());
    }
    let stored_json = stored.as_ref().map(|samples| {
        let at_end = samples.last().map_or(0, |s| s.1);
        // The issue is new and only the flooder writes to it, so the count
        // was 0 when the flood started: a first sample above 0 is growth.
        let start = [(flood_start, 0)];
        let series: Vec<(u64, u64)> = start.iter().chain(samples).copied().collect();
        let last_growth = series.windows(2).filter(|w| w[1].1 > w[0].1).map(|w| w[1].0).next_back();
        // The count by the last sample taken before the server was seen to
        // cut the flooder off: what was stored later (frames it had taken
        // in before) was stored after the disconnect.
        let at_disconnect = disconnected_us
            .map(|d| samples.iter().take_while(|(t, _)| *t <= d).last().map_or(0, |s| s.1));
        let line = format!(
            "{at_end} stored in all{}{}",
            at_disconnect.map(|c| format!(", {c} by the disconnect, {} after it", at_end - c)).unwrap_or_default(),
            last_growth
                .map(|t| match disconnected_us {
                    Some(d) => format!("; last growth {:.2} s after the disconnect", (t as f64 - d as f64) / 1e6),
                    None => format!("; last growth {:.2} s into the flood", rel(t)),
                })
                .unwrap_or_default()
        );
        r.row("flooder's messages stored", line);
        json!({
            "total": at_end,
            "at_disconnect": at_disconnect,
            "after_disconnect": at_disconnect.map(|c| at_end - c),
            "last_growth_s": last_growth.map(rel),
            "last_growth_after_disconnect_s": last_growth.zip(disconnected_us).map(|(g, d)| round3((g as f64 - d as f64) / 1e6)),
            "every_ms": STORED_EVERY.as_millis() as u64,
            "samples": samples.iter().map(|&(t, c)| json!([rel(t), c])).collect::<Vec<_>>(),
        })
    });

    // When the slowest round trips were sent, relative to the flood's
    // start: a stall the flood caused clusters after it, noise does not.
    let mut slowest: Vec<(u64, u64)> =
        trips.iter().filter_map(|t| Some((t.ack_us?.saturating_sub(t.sent_us), t.sent_us))).collect();
    slowest.sort_unstable_by(|a, b| b.cmp(a));
    let slowest: Vec<Value> = slowest
        .iter()
        .take(5)
        .map(|&(latency, sent)| json!({ "sent_s": round3((sent as f64 - flood_start as f64) / 1e6), "ms": round3(latency as f64 / 1e3) }))
        .collect();
    r.set("victim_slowest", slowest);
    r.set("kind", kind.name());
    r.set("frames_asked", n);
    r.set("flood_recv_buffer", args.flood_recv_buffer);
    r.set("victim_rate", args.victim_rate);
    r.set("phases", Value::Object(phases));
    r.set("rss_baseline_bytes", baseline_rss);
    r.set(
        "flooder",
        json!({
            "frames_written": outcome.frames,
            "bytes_written": outcome.bytes,
            "ended": outcome.end.as_str(),
            "end_s": rel(outcome.end_us),
            "error": outcome.error,
            "disconnected_at_s": disconnected_us.map(rel),
            "frames_at_disconnect": disconnected_us.map(frames_at),
        }),
    );
    r.set("server_counters", deltas);
    r.set("stored", stored_json);
    r.set("victim_dropped", victim_dropped);
    r.ok = !victim_dropped;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    /// Frames written by hand are what a WebSocket server accepts from a
    /// client: masked, in every length encoding.
    #[tokio::test]
    async fn hand_made_frames_are_read_by_a_websocket_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let texts: Vec<String> = vec![
            FloodKind::Typing.payload(0, "iss_1"),
            FloodKind::Presence.payload(41, "iss_1"),
            FloodKind::SendJoined.payload(7, "iss_2"),
            "x".repeat(125),
            "y".repeat(126),
            "z".repeat(70_000),
        ];
        let expected = texts.clone();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
            let mut seen = Vec::new();
            while seen.len() < expected.len() {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => seen.push(t.as_str().to_owned()),
                    other => panic!("unexpected {other:?}"),
                }
            }
            seen
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream).await.unwrap();
        let mut bytes = Vec::new();
        for text in &texts {
            masked_text_frame(text.as_bytes(), [1, 2, 3, 250], &mut bytes);
        }
        ws.get_mut().write_all(&bytes).await.unwrap();
        assert_eq!(server.await.unwrap(), texts);
        assert_eq!(texts[0], r#"42["user:typing",{"issueId":"iss_1","isTyping":true}]"#);
        assert_eq!(texts[1], r#"4242["presence:list",{}]"#);
        assert_eq!(texts[2], r#"428["message:send",{"issueId":"iss_2","content":"flood 7"}]"#);
    }

    #[test]
    fn counters_are_read_from_a_metrics_page() {
        let page = "# HELP a b\nciv_x_total 3\nciv_x_total_more 9\nciv_y 12\n";
        assert_eq!(counter(page, "civ_x_total"), Some(3));
        assert_eq!(counter(page, "civ_y"), Some(12));
        assert_eq!(counter(page, "civ_z"), None);
    }
}
