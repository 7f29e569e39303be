//! `broadcast`: N sockets listen while upvotes arrive over REST at a set
//! rate; each upvote is a global `issue:upvoted` event that must reach every
//! socket. Upvote k is made by user k mod U on issue k div U, so every
//! upvote changes a count (one per user per issue) and the event's
//! `(issueId, upvotedBy)` names k, whose trigger time is known.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::fleet::{self, Fleet, Phase};
use crate::net::{self, Http, Incoming, Target, event_name, str_field};
use crate::redis::RedisWindow;
use crate::setup::Fixture;
use crate::stats::{CpuWindow, Histogram, now_us, round3, rss_total};
use crate::{Args, Report, Triggers};

const EVENT: &str = "issue:upvoted";

struct Shared {
    /// Trigger time (µs clock) of upvote k; 0 until sent.
    triggered: Vec<AtomicU64>,
    issue_index: HashMap<String, usize>,
    user_index: HashMap<String, usize>,
    users: usize,
    latency: Histogram,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    unknown: AtomicU64,
    first_trigger_us: AtomicU64,
    last_receipt_us: AtomicU64,
}

impl Shared {
    fn upvote_of(&self, payload: &str) -> Option<usize> {
        let issue = self.issue_index.get(str_field(payload, "issueId")?)?;
        let user = self.user_index.get(str_field(payload, "upvotedBy")?)?;
        let k = issue * self.users + user;
        (k < self.triggered.len()).then_some(k)
    }
}

struct SocketResult {
    unique: u64,
}

pub async fn run(args: &Args, target: Arc<Target>) -> Result<Report, String> {
    let n = args.connections;
    let total = (args.rate * args.duration).round().max(1.0) as usize;
    let users = args.users.max(1);
    let issues = total.div_ceil(users);
    eprintln!("loadgen: registering {users} users and creating {issues} issues");
    let fixture = Arc::new(Fixture::build(&target, &args.secret, users, issues).await?);
    let shared = Arc::new(Shared {
        triggered: (0..total).map(|_| AtomicU64::new(0)).collect(),
        issue_index: fixture.issues.iter().enumerate().map(|(i, id)| (id.clone(), i)).collect(),
        user_index: fixture.users.iter().enumerate().map(|(i, u)| (u.id.clone(), i)).collect(),
        users,
        latency: Histogram::default(),
        delivered: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        unknown: AtomicU64::new(0),
        first_trigger_us: AtomicU64::new(u64::MAX),
        last_receipt_us: AtomicU64::new(0),
    });

    let fleet = Arc::new(Fleet::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Connect);
    let handles = fleet::launch(n, args.concurrency, |i, permit| {
        let (target, fixture, fleet, shared) =
            (target.clone(), fixture.clone(), fleet.clone(), shared.clone());
        let mut phase = phase_rx.clone();
        async move {
            let started = now_us();
            // Socket i on node i mod N (one node unless a cluster).
            let mut conn = match net::connect_to(&target, target.node(i), &fixture.token(i)).await {
                Ok(conn) => conn,
                Err(e) => {
                    fleet.fail(e);
                    return SocketResult { unique: 0 };
                }
            };
            fleet.ready(started);
            drop(permit);
            let mut seen = vec![0u64; shared.triggered.len().div_ceil(64)];
            let mut unique = 0;
            loop {
                tokio::select! {
                    _ = fleet::phase_reached(&mut phase, Phase::Stop) => break,
                    incoming = conn.recv() => {
                        let Incoming::Message(text) = incoming else {
                            fleet.dropped.fetch_add(1, Ordering::Relaxed);
                            break;
                        };
                        let Some((EVENT, payload)) = event_name(&text) else { continue };
                        let now = now_us();
                        let Some(k) = shared.upvote_of(payload) else {
                            shared.unknown.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        let (word, bit) = (k / 64, 1u64 << (k % 64));
                        if seen[word] & bit != 0 {
                            shared.duplicates.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        seen[word] |= bit;
                        unique += 1;
                        let sent = shared.triggered[k].load(Ordering::Relaxed);
                        shared.latency.record(now.saturating_sub(sent));
                        shared.delivered.fetch_add(1, Ordering::Relaxed);
                        shared.last_receipt_us.fetch_max(now, Ordering::Relaxed);
                    }
                }
            }
            SocketResult { unique }
        }
    })
    .await;
    fleet.wait(n, args.ramp_timeout(n)).await;
    let ready = fleet.ready.load(Ordering::Relaxed) as u64;
    eprintln!("loadgen: {ready} sockets ready; triggering {total} upvotes at {}/s", args.rate);
    // Let presence updates of the connection burst pass.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Open-loop triggers: upvote k is due at start + k / rate, sent by the
    // first free one of `http_connections` triggers, each with one
    // keep-alive client per node (each from its own source address). With
    // several nodes, upvote k goes to node k mod N (`--triggers all`) or to
    // the first (`--triggers first`).
    let trigger_nodes = match args.triggers {
        Triggers::All => target.nodes.len(),
        Triggers::First => 1,
    };
    let clients = (0..args.http_connections.max(1))
        .map(|_| {
            (0..trigger_nodes).map(|node| Http::to(&target, target.node(node))).collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let redis = RedisWindow::start(args.redis.as_deref()).await;
    let rest_latency = Arc::new(Histogram::default());
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let next = Arc::new(AtomicUsize::new(0));
    let start = tokio::time::Instant::now();
    let cpu = CpuWindow::start(&args.pid);
    let own_cpu = CpuWindow::self_process();
    let interval = 1.0 / args.rate.max(1e-3);
    let cutoff = start + args.duration() + Duration::from_secs(2);
    let triggers: Vec<_> = clients
        .into_iter()
        .map(|http| {
            let (fixture, shared) = (fixture.clone(), shared.clone());
            let (rest_latency, ok, failed, next) =
                (rest_latency.clone(), ok.clone(), failed.clone(), next.clone());
            tokio::spawn(async move {
                let tokens: Vec<String> = (0..users).map(|u| fixture.token(u)).collect();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= total {
                        return;
                    }
                    let due = start + Duration::from_secs_f64(k as f64 * interval);
                    // A server that cannot keep up gets no more triggers
                    // once the sending window (plus slack) is over.
                    if tokio::time::Instant::now() > cutoff && tokio::time::Instant::now() > due {
                        return;
                    }
                    tokio::time::sleep_until(due).await;
                    let path = format!("/api/issues/{}/upvote", fixture.issues[k / users]);
                    let sent = now_us();
                    shared.triggered[k].store(sent, Ordering::Relaxed);
                    shared.first_trigger_us.fetch_min(sent, Ordering::Relaxed);
                    match http[k % http.len()].post(&path, Some(&tokens[k % users]), None).await {
                        Ok(res) if res.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(res) => {
                            if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!(
                                    "loadgen: upvote: HTTP {} {}",
                                    res.status,
                                    String::from_utf8_lossy(&res.body)
                                );
                            }
                        }
                        Err(e) => {
                            if failed.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("loadgen: upvote: {e}");
                            }
                        }
                    }
                    rest_latency.record(now_us() - sent);
                }
            })
        })
        .collect();
    // Requests still in flight past this are abandoned (and not counted).
    let send_limit = args.duration() + Duration::from_secs(30);
    fleet::collect(triggers, send_limit).await;
    let send_secs = start.elapsed().as_secs_f64();
    let _ = phase_tx.send(Phase::Drain);

    // Drain: until every socket has every successful upvote, bounded.
    let expected = ok.load(Ordering::Relaxed) * ready;
    let drain_deadline = Instant::now() + args.drain();
    while shared.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server_cpu = cpu.percent();
    let server_cpu_each = cpu.percent_each();
    let loadgen_cpu = own_cpu.percent();
    let ok_now = ok.load(Ordering::Relaxed);
    let redis = match redis {
        Some(w) => Some(w.finish(ok_now).await),
        None => None,
    };
    let rss = rss_total(&args.pid);
    let _ = phase_tx.send(Phase::Stop);
    let results = fleet::collect(handles, Duration::from_secs(20)).await;

    let delivered = shared.delivered.load(Ordering::Relaxed);
    let ok = ok.load(Ordering::Relaxed);
    let first = shared.first_trigger_us.load(Ordering::Relaxed);
    let last = shared.last_receipt_us.load(Ordering::Relaxed);
    let span = if last > first && first != u64::MAX { (last - first) as f64 / 1e6 } else { send_secs };
    let frames_per_s = delivered as f64 / span.max(1e-6);
    let lost = expected.saturating_sub(delivered);
    let short_sockets = results.iter().filter(|r| r.unique < ok).count();
    let summary = shared.latency.summary();

    let mut r = Report::new("broadcast");
    r.row(
        "sockets",
        format!(
            "{ready} of {n} ({} failed, {} dropped)",
            fleet.failed.load(Ordering::Relaxed),
            fleet.dropped.load(Ordering::Relaxed)
        ),
    );
    r.row(
        "upvotes",
        format!(
            "{ok} ok, {} failed, in {send_secs:.1} s ({:.1}/s, asked {}/s)",
            failed.load(Ordering::Relaxed),
            ok as f64 / send_secs,
            args.rate
        ),
    );
    r.row(
        "deliveries",
        format!(
            "{delivered} of {expected} expected ({lost} lost, {} duplicated)",
            shared.duplicates.load(Ordering::Relaxed)
        ),
    );
    r.row("latency trigger → socket", summary.line());
    r.row("delivered frames/s", format!("{frames_per_s:.0} over {span:.2} s"));
    r.row("REST upvote latency", rest_latency.summary().line());
    if let Some(cpu) = server_cpu {
        r.row("server CPU", format!("{cpu:.1} % of a core"));
    }
    if let Some(redis) = &redis {
        r.row("redis per upvote", crate::redis::line(redis));
    }
    r.set("connections", n);
    r.set(
        "triggers",
        match (target.nodes.len(), trigger_nodes) {
            (1, _) => "the only node",
            (_, 1) => "the first node",
            _ => "round-robin",
        },
    );
    r.set("server_cpu_pct_per_node", server_cpu_each);
    r.set("redis", redis);
    r.set("ready", ready);
    r.set("failed", fleet.failed.load(Ordering::Relaxed));
    r.set("dropped", fleet.dropped.load(Ordering::Relaxed));
    r.set("rate", args.rate);
    r.set("duration_s", args.duration);
    r.set("upvotes_ok", ok);
    r.set("upvotes_failed", failed.load(Ordering::Relaxed));
    let triggered = shared.triggered.iter().filter(|t| t.load(Ordering::Relaxed) != 0).count();
    r.set("upvotes_not_sent", total - triggered);
    r.set("upvotes_per_s", round3(ok as f64 / send_secs));
    r.set("expected", expected);
    r.set("delivered", delivered);
    r.set("lost", lost);
    r.set("duplicated", shared.duplicates.load(Ordering::Relaxed));
    r.set("unknown_events", shared.unknown.load(Ordering::Relaxed));
    r.set("sockets_missing_events", short_sockets);
    r.set("latency", summary.json());
    r.set("frames_per_s", round3(frames_per_s));
    r.set("span_s", round3(span));
    r.set("rest_latency", rest_latency.summary().json());
    r.set("server_cpu_pct", server_cpu);
    r.set("loadgen_cpu_pct", loadgen_cpu);
    r.set("rss_end_bytes", rss);
    r.set("errors", fleet.errors());
    r.ok = ready == n as u64 && lost == 0 && failed.load(Ordering::Relaxed) == 0;
    Ok(r)
}
