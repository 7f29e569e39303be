//! `scale`: one process of a fleet spread over several load generators
//! (a process holds at most 20,000 descriptors here, so 100,000 sessions
//! take several): it holds `--connections` authenticated sockets on its
//! node, answering heartbeats, until the script that runs the fleet says
//! `go`; then process 0 upvotes once (one global `issue:upvoted`) and every
//! process times that event's arrival at each of its sockets.
//!
//! The processes meet through files in `--barrier` (the script reads the
//! servers' RSS and CPU itself, between the phases):
//!
//! ```text
//! connected.<index>   written by each process once its fleet is up: {ready, failed}
//! go                  written by the script after the hold
//! t0                  written by process 0 just before its upvote: wall-clock µs
//! lat.<index>         written by each process: one latency in µs per line
//! ```
//!
//! Latencies compare the wall clock of two processes on one machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::sync::watch;

use crate::fleet::{self, Fleet, Phase};
use crate::net::{self, Http, Incoming, Target, event_name};
use crate::setup::Fixture;
use crate::stats::{Histogram, now_us};
use crate::{Args, Report};

const EVENT: &str = "issue:upvoted";
/// How long after `go` a process waits for the event to reach all its
/// sockets.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

fn wall_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

async fn wait_for_file(path: &Path, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return Ok(text);
        }
        if Instant::now() >= deadline {
            return Err(format!("{} did not appear within {timeout:?}", path.display()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Written whole or not at all: readers poll for the name.
fn write_file(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub async fn run(args: &Args, target: Arc<Target>) -> Result<Report, String> {
    let dir: PathBuf = args.barrier.clone().ok_or("scale needs --barrier DIR")?;
    let index = args.index;
    let n = args.connections;
    // Process 0 makes the one user and issue the upvote needs before any
    // socket connects, so that the hold measures sessions only.
    let trigger = if index == 0 {
        let fixture = Fixture::build(&target, &args.secret, 1, 1).await?;
        let issue = fixture.issues.first().cloned().ok_or("no issue was created")?;
        Some((fixture.token(0), issue))
    } else {
        None
    };
    let sockets = Arc::new(Fixture::synthetic(&args.secret, args.users));
    let fleet = Arc::new(Fleet::default());
    let received = Arc::new(AtomicUsize::new(0));
    // Wall-clock µs of each socket's first issue:upvoted; 0 until then.
    let arrivals: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let pings = Arc::new(AtomicU64::new(0));
    let (phase_tx, phase_rx) = watch::channel(Phase::Connect);
    let ramp = Instant::now();
    let handles = fleet::launch(n, args.concurrency, |i, permit| {
        let (target, sockets, fleet, received, arrivals, pings) =
            (target.clone(), sockets.clone(), fleet.clone(), received.clone(), arrivals.clone(), pings.clone());
        let mut phase = phase_rx.clone();
        // Socket i of process k is user (k·n + i) mod U: the fleet's users
        // are spread evenly whatever the number of processes.
        let token = sockets.token(index * n + i);
        async move {
            let started = now_us();
            let mut conn = match net::connect(&target, &token).await {
                Ok(conn) => conn,
                Err(e) => return fleet.fail(e),
            };
            fleet.ready(started);
            drop(permit);
            loop {
                tokio::select! {
                    _ = fleet::phase_reached(&mut phase, Phase::Stop) => break,
                    incoming = conn.recv() => {
                        let Incoming::Message(text) = incoming else {
                            fleet.dropped.fetch_add(1, Ordering::Relaxed);
                            break;
                        };
                        if matches!(event_name(&text), Some((EVENT, _))) && arrivals[i].load(Ordering::Relaxed) == 0 {
                            arrivals[i].store(wall_us(), Ordering::Relaxed);
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            pings.fetch_add(conn.pings, Ordering::Relaxed);
        }
    })
    .await;
    fleet.wait(n, args.ramp_timeout(n)).await;
    let ramp_secs = ramp.elapsed().as_secs_f64();
    let ready = fleet.ready.load(Ordering::Relaxed);
    let failed = fleet.failed.load(Ordering::Relaxed);
    write_file(
        &dir.join(format!("connected.{index}")),
        &json!({ "ready": ready, "failed": failed, "ramp_secs": ramp_secs }).to_string(),
    )?;

    // The hold is the script's: it measures the servers meanwhile.
    wait_for_file(&dir.join("go"), Duration::from_secs(3600)).await?;
    let dropped_in_hold = fleet.dropped.load(Ordering::Relaxed);
    if let Some((token, issue)) = &trigger {
        let http = Http::new(&target).map_err(|e| format!("HTTP client: {e}"))?;
        write_file(&dir.join("t0"), &wall_us().to_string())?;
        let res = http
            .post(&format!("/api/issues/{issue}/upvote"), Some(token), None)
            .await
            .map_err(|e| format!("upvote: {e}"))?;
        if res.status >= 300 {
            return Err(format!("upvote: HTTP {} {}", res.status, res.json()));
        }
    }
    let t0: u64 = wait_for_file(&dir.join("t0"), Duration::from_secs(30))
        .await?
        .trim()
        .parse()
        .map_err(|e| format!("t0: {e}"))?;
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    while received.load(Ordering::Relaxed) + fleet.dropped.load(Ordering::Relaxed) < ready
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let latency = Histogram::default();
    let mut lines = String::new();
    for arrival in arrivals.iter().map(|a| a.load(Ordering::Relaxed)).filter(|&a| a != 0) {
        let us = arrival.saturating_sub(t0);
        latency.record(us);
        lines.push_str(&us.to_string());
        lines.push('\n');
    }
    write_file(&dir.join(format!("lat.{index}")), &lines)?;
    let received = received.load(Ordering::Relaxed);
    let dropped = fleet.dropped.load(Ordering::Relaxed);
    let _ = phase_tx.send(Phase::Stop);
    let _ = fleet::collect(handles, Duration::from_secs(20)).await;

    let mut report = Report::new("scale");
    report.ok = failed == 0 && dropped == 0 && received == ready && ready == n;
    let summary = latency.summary();
    report.row("sockets ready", format!("{ready} of {n} ({failed} failed) in {ramp_secs:.1} s"));
    report.row("dropped", format!("{dropped_in_hold} in the hold, {dropped} in all"));
    report.row("event received by", format!("{received} sockets"));
    report.row("latency", summary.line());
    report.set("index", index);
    report.set("connections", n);
    report.set("ready", ready);
    report.set("failed", failed);
    report.set("ramp_secs", ramp_secs);
    report.set("dropped_in_hold", dropped_in_hold);
    report.set("dropped", dropped);
    report.set("received", received);
    report.set("pings", pings.load(Ordering::Relaxed));
    report.set("latency", summary.json());
    let errors = fleet.errors();
    if !errors.is_empty() {
        report.set("errors", errors);
    }
    Ok(report)
}
