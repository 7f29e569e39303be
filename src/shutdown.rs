//! The graceful drain of a node told to stop (SIGTERM or SIGINT): every
//! client reconnects to another node at once, nothing acknowledged is lost,
//! and the process exits within `DRAIN_TIMEOUT_SECS`.
//!
//! 1. `/readyz` answers 503 (with `Retry-After`) from the signal on; for
//!    `DRAIN_DELAY_MS` (0 by default: nginx, like most balancers, retries a
//!    refused connection on the next node) nothing else changes.
//! 2. No new Socket.IO session starts, and the polling sessions close, each
//!    while one of its GETs waits: their clients may need a new connection
//!    for every request, so the listener waits for them (a second at most).
//! 3. The listener closes: connection attempts are refused. Connections
//!    made are served on, and each HTTP one closes after its current
//!    response, idle keep-alive ones at once, so that a client's next
//!    request (a reconnection above all) opens a connection elsewhere.
//! 4. The WebSocket sessions close in batches (`DRAIN_RATE` a second, more
//!    if that is what it takes to finish in time). Every session closes
//!    after the work it has in hand, `message:send`s included, has been
//!    answered, with the close the official client answers by reconnecting
//!    after its first backoff: "transport close", never "io server
//!    disconnect" (see `actix_socketio::engineio::DrainPlan`).
//! 5. The message writer's last batches are stored; in cluster mode the
//!    node leaves Redis (its users go offline now, not when its heartbeat
//!    would have expired) and what it had yet to publish is published.
//!    HTTP requests still running get the time that is left.
//! 6. The process exits, with 0, by the deadline, whatever is unfinished; a
//!    second signal exits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix::Addr;
use actix_socketio::engineio::server::Stopper;
use actix_socketio::engineio::{DrainPlan, Drained};

use crate::actors::presence::{LeaveCluster, PresenceRegistry};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::domain::messages::Writer;
use crate::realtime::CivicEngine;

/// After the listener closes, HTTP connections accepted just before it did
/// are left this long to start their first request: told to close before
/// it, a connection is closed without an answer, which a proxy turns into
/// a 502 for a POST it cannot retry.
const SETTLE: Duration = Duration::from_millis(100);
/// Of what is left for the sessions once the listener is closed, the last
/// part is kept for the work they have in hand and the steps after them:
/// a quarter, at most this.
const RESERVE: Duration = Duration::from_secs(2);
/// How long the polling sessions have to close (each waits for one of its
/// GETs) before the listener closes anyway.
const POLLING_WITHIN: Duration = Duration::from_secs(1);
/// How often a step that waits for something to empty looks again.
const POLL: Duration = Duration::from_millis(10);

const TARGET: &str = "civicpulse::shutdown";

/// SIGTERM and SIGINT, taken over from their default (killing the process)
/// as soon as this is made.
pub struct Signals {
    #[cfg(unix)]
    term: actix_rt::signal::unix::Signal,
    #[cfg(unix)]
    int: actix_rt::signal::unix::Signal,
}

impl Signals {
    /// Must run inside the actix system.
    pub fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use actix_rt::signal::unix::{SignalKind, signal};
            Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next signal's name.
    pub async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = actix_rt::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// What the drain stops, in its order.
pub struct Drain<'a> {
    pub config: &'a Config,
    /// What `/readyz` reads.
    pub draining: &'a AtomicBool,
    pub http: &'a Stopper,
    pub engine: &'a CivicEngine,
    pub writer: &'a Writer,
    pub presence: &'a Addr<PresenceRegistry>,
    pub cluster: Option<&'a Arc<Cluster>>,
}

impl Drain<'_> {
    /// Drains the node after `signal`; returns when the process may exit:
    /// when all is done, at the deadline, or on another of `signals`.
    pub async fn run(self, signal: &str, signals: &mut Signals) {
        let started = Instant::now();
        let deadline = started + self.config.drain_timeout;
        self.draining.store(true, Ordering::Relaxed);
        log::info!(target: TARGET, "{signal}: draining, exit within {} s; /readyz answers 503", self.config.drain_timeout.as_secs());
        tokio::select! {
            () = self.steps(started, deadline) => {
                log::info!(target: TARGET, "drained in {} ms; exiting", started.elapsed().as_millis());
            }
            second = signals.next() => {
                log::warn!(target: TARGET, "{second} while draining: exiting now");
            }
        }
    }

    async fn steps(&self, started: Instant, deadline: Instant) {
        tokio::time::sleep_until((started + self.config.drain_delay).into()).await;
        let now = Instant::now();
        let reserve = (deadline.saturating_duration_since(now) / 4).min(RESERVE);
        let plan = DrainPlan {
            rate: self.config.drain_rate,
            polling_by: (now + POLLING_WITHIN).min(deadline - reserve).max(now),
            close_by: (deadline - reserve).max(now),
            give_up: (deadline - reserve / 2).max(now),
        };
        log::info!(target: TARGET, "closing socket sessions: polling ones first, then at most {} a second, the last by {} ms", plan.rate, plan.close_by.duration_since(started).as_millis());
        // The listener stays open until the polling sessions are closed:
        // their next request may need a new connection.
        let (polling_closed, closed) = tokio::sync::oneshot::channel();
        let sessions = self.engine.drain(plan, move || {
            let _ = polling_closed.send(());
        });
        let http = async {
            let _ = closed.await;
            self.close_http(deadline).await;
        };
        let (Drained { sessions, cut_off, open }, ()) = tokio::join!(sessions, http);
        let cut = if cut_off + open > 0 {
            format!(" ({cut_off} closed with work in hand, {open} not closed by the deadline)")
        } else {
            String::new()
        };
        log::info!(target: TARGET, "socket sessions closed: {sessions} by {} ms{cut}", started.elapsed().as_millis());

        // Requests still running (relayed long-polls of other nodes'
        // sessions can take up to a ping interval) get what time is left,
        // while the rest goes on.
        let http = async {
            // With no time at all, nothing was meant to be waited for.
            if !self.http.stop(deadline).await && !self.config.drain_timeout.is_zero() {
                log::warn!(target: TARGET, "HTTP connections still open at the deadline are cut");
            }
        };
        tokio::join!(http, self.flush(deadline));
    }

    /// New connections are refused, then every HTTP connection closes
    /// after its current response.
    async fn close_http(&self, deadline: Instant) {
        match self.http.stop_accepting().await {
            Ok(()) => log::info!(target: TARGET, "listener closed: connection attempts are refused"),
            Err(e) => log::warn!(target: TARGET, "cannot close the listener before exiting: {e}"),
        }
        tokio::time::sleep_until((Instant::now() + SETTLE).min(deadline).into()).await;
        self.http.close_keep_alive();
        log::info!(target: TARGET, "HTTP connections close after their current response");
    }

    /// What the node still has to write or say before it goes.
    async fn flush(&self, deadline: Instant) {
        if until(deadline, || self.writer.is_idle()).await {
            log::info!(target: TARGET, "message writer flushed");
        } else {
            log::warn!(target: TARGET, "message writer still busy at the deadline: what it had not stored was never acknowledged");
        }
        let Some(cluster) = self.cluster else { return };
        // The node's users go offline now (its sockets are closed), and
        // its route with it; logged by the presence link.
        let left = tokio::time::timeout_at(deadline.into(), self.presence.send(LeaveCluster)).await;
        if !matches!(left, Ok(Ok(true))) {
            log::warn!(target: TARGET, "could not leave the cluster; the others take this node's users offline when its heartbeat expires");
        }
        if until(deadline, || cluster.is_flushed()).await {
            log::info!(target: TARGET, "cluster events published");
        } else {
            log::warn!(target: TARGET, "cluster events not all published by the deadline");
        }
    }
}

/// Waits until `done` holds (true) or `deadline` (false).
async fn until(deadline: Instant, done: impl Fn() -> bool) -> bool {
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}
