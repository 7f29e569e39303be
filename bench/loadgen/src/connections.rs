//! `idle` (memory and CPU per held session) and `handshake` (authenticated
//! connections per second).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::fleet::{self, Fleet, Phase};
use crate::net::{self, Conn, Incoming, Target};
use crate::setup::Fixture;
use crate::stats::{CpuWindow, Histogram, now_us, round3, rss_total};
use crate::{Args, Report};

/// Holds a connected socket until `Stop`, answering pings; returns the
/// pings answered.
async fn hold(mut conn: Conn, mut phase: watch::Receiver<Phase>, fleet: Arc<Fleet>) -> u64 {
    loop {
        tokio::select! {
            _ = fleet::phase_reached(&mut phase, Phase::Stop) => break,
            incoming = conn.recv() => {
                if let Incoming::Closed = incoming {
                    fleet.dropped.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    conn.pings
}

fn mib(bytes: u64) -> f64 {
    round3(bytes as f64 / (1024.0 * 1024.0))
}

pub async fn idle(args: &Args, target: Arc<Target>) -> Result<Report, String> {
    let n = args.connections;
    let fixture = Arc::new(Fixture::synthetic(&args.secret, args.users));
    // Rooms to join need issues; made (with the one user who reports them)
    // before the baseline is read, so that only sessions are measured.
    let rooms: Arc<Vec<String>> = Arc::new(if args.join_rooms > 0 {
        Fixture::build(&target, &args.secret, 1, args.join_rooms).await?.issues
    } else {
        Vec::new()
    });
    let rss_before = rss_total(&args.pid);

    let fleet = Arc::new(Fleet::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Connect);
    let ramp = Instant::now();
    let handles = fleet::launch(n, args.concurrency, |i, permit| {
        let (target, fixture, fleet, phase, rooms) =
            (target.clone(), fixture.clone(), fleet.clone(), phase_rx.clone(), rooms.clone());
        async move {
            let started = now_us();
            let mut conn = match net::connect(&target, &fixture.token(i)).await {
                Ok(conn) => conn,
                Err(e) => {
                    fleet.fail(e);
                    return 0;
                }
            };
            if !rooms.is_empty()
                && let Err(e) =
                    fleet::join_issue(&mut conn, &rooms[i % rooms.len()], target.connect_timeout).await
            {
                fleet.fail(e);
                return 0;
            }
            fleet.ready(started);
            drop(permit);
            hold(conn, phase, fleet).await
        }
    })
    .await;
    fleet.wait(n, args.ramp_timeout(n)).await;
    let ramp_secs = ramp.elapsed().as_secs_f64();
    let ready = fleet.ready.load(Ordering::Relaxed);

    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let rss_connected = rss_total(&args.pid);
    let dropped_before = fleet.dropped.load(Ordering::Relaxed);
    let cpu = CpuWindow::start(&args.pid);
    let own_cpu = CpuWindow::self_process();
    tokio::time::sleep(args.duration()).await;
    let server_cpu = cpu.percent();
    let loadgen_cpu = own_cpu.percent();
    let rss_after = rss_total(&args.pid);
    let dropped_during_hold = fleet.dropped.load(Ordering::Relaxed) - dropped_before;
    let still_open = ready - fleet.dropped.load(Ordering::Relaxed);

    let _ = phase_tx.send(Phase::Stop);
    let pings: u64 = fleet::collect(handles, Duration::from_secs(20)).await.into_iter().sum();

    let mut r = Report::new("idle");
    r.row("sockets connected", format!("{ready} of {n} ({} failed)", fleet.failed.load(Ordering::Relaxed)));
    r.row("connect ramp", format!("{ramp_secs:.1} s ({:.0} connections/s)", ready as f64 / ramp_secs));
    r.row("held", format!("{:.0} s, {still_open} still open, {dropped_during_hold} dropped", args.duration));
    r.row("pings answered", pings);
    let per_session = match (rss_before, rss_after) {
        (Some(before), Some(after)) if ready > 0 => Some(after.saturating_sub(before) as f64 / ready as f64),
        _ => None,
    };
    if let (Some(before), Some(connected), Some(after)) = (rss_before, rss_connected, rss_after) {
        r.row(
            "server RSS",
            format!(
                "{} MiB before, {} MiB connected, {} MiB after hold",
                mib(before),
                mib(connected),
                mib(after)
            ),
        );
    }
    if let Some(b) = per_session {
        r.row("server RSS per session", format!("{:.0} bytes ({:.2} KiB)", b, b / 1024.0));
    }
    if let Some(cpu) = server_cpu {
        r.row("server CPU while idle", format!("{cpu:.1} % of a core"));
    }
    r.row("connect latency", fleet.connect_latency.summary().line());
    r.set("connections", n);
    r.set("users", fixture.users.len());
    r.set("rooms_joined", rooms.len());
    r.set("ready", ready);
    r.set("failed", fleet.failed.load(Ordering::Relaxed));
    r.set("dropped", dropped_during_hold);
    r.set("hold_s", args.duration);
    r.set("pings", pings);
    r.set("ramp_s", round3(ramp_secs));
    r.set("rss_before_bytes", rss_before);
    r.set("rss_connected_bytes", rss_connected);
    r.set("rss_after_bytes", rss_after);
    r.set("bytes_per_session", per_session.map(|b| b.round()));
    r.set("server_cpu_pct", server_cpu);
    r.set("loadgen_cpu_pct", loadgen_cpu);
    r.set("connect", fleet.connect_latency.summary().json());
    r.set("errors", fleet.errors());
    r.ok = ready == n && dropped_during_hold == 0;
    Ok(r)
}

pub async fn handshake(args: &Args, target: Arc<Target>) -> Result<Report, String> {
    let n = args.connections;
    let fixture = Arc::new(Fixture::synthetic(&args.secret, args.users));
    let fleet = Arc::new(Fleet::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Connect);
    let latency = Arc::new(Histogram::default());
    let next = Arc::new(AtomicUsize::new(0));

    let cpu = CpuWindow::start(&args.pid);
    let own_cpu = CpuWindow::self_process();
    let start_us = now_us();
    let start = Instant::now();
    // `concurrency` clients each connect, hand the socket to a holder task
    // (which answers pings) and connect again: a closed loop.
    let workers: Vec<_> = (0..args.concurrency.clamp(1, n.max(1)))
        .map(|_| {
            let (target, fixture, fleet, phase) =
                (target.clone(), fixture.clone(), fleet.clone(), phase_rx.clone());
            let (latency, next) = (latency.clone(), next.clone());
            tokio::spawn(async move {
                let mut holders = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return holders;
                    }
                    let token = fixture.token(i);
                    let started = now_us();
                    match net::connect(&target, &token).await {
                        Ok(conn) => {
                            latency.record(now_us() - started);
                            fleet.ready(started);
                            holders.push(tokio::spawn(hold(conn, phase.clone(), fleet.clone())));
                        }
                        Err(e) => fleet.fail(e),
                    }
                }
            })
        })
        .collect();
    let mut holders = Vec::with_capacity(n);
    for worker in fleet::collect(workers, args.ramp_timeout(n)).await {
        holders.extend(worker);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let server_cpu = cpu.percent();
    let loadgen_cpu = own_cpu.percent();
    let ready = fleet.ready.load(Ordering::Relaxed);
    let last_us = fleet.last_ready_us.load(Ordering::Relaxed);
    let span = if last_us > start_us { (last_us - start_us) as f64 / 1e6 } else { elapsed };
    let rate = ready as f64 / span.max(1e-6);
    let rss = rss_total(&args.pid);
    let _ = phase_tx.send(Phase::Stop);
    fleet::collect(holders, Duration::from_secs(20)).await;

    let summary = latency.summary();
    let mut r = Report::new("handshake");
    r.row(
        "handshakes",
        format!(
            "{ready} of {n} ({} failed), {} in flight",
            fleet.failed.load(Ordering::Relaxed),
            args.concurrency
        ),
    );
    r.row("rate", format!("{rate:.0} authenticated connections/s over {span:.2} s"));
    r.row("latency (connect → CONNECT ack)", summary.line());
    if let Some(cpu) = server_cpu {
        r.row("server CPU", format!("{cpu:.1} % of a core"));
    }
    if let Some(rss) = rss {
        r.row("server RSS at the end", format!("{} MiB", mib(rss)));
    }
    r.set("connections", n);
    r.set("concurrency", args.concurrency);
    r.set("ready", ready);
    r.set("failed", fleet.failed.load(Ordering::Relaxed));
    r.set("handshakes_per_s", round3(rate));
    r.set("elapsed_s", round3(span));
    r.set("latency", summary.json());
    r.set("server_cpu_pct", server_cpu);
    r.set("loadgen_cpu_pct", loadgen_cpu);
    r.set("rss_end_bytes", rss);
    r.set("errors", fleet.errors());
    r.ok = ready == n;
    Ok(r)
}
