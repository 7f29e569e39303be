//! Closing an engine's sessions when its server stops, so that every client
//! reconnects (to another node) at once and loses nothing it was told had
//! happened.
//!
//! A session is closed as the reference server closes its sockets on the
//! way down: a WebSocket with a close frame (1001, Going Away), a polling
//! session with the close packet `1` in the answer to its GET. The official
//! client takes either as "transport close" and reconnects after its first
//! backoff (0.5 to 1.5 s by default). It must never get a Socket.IO
//! DISCONNECT ("io server disconnect"): after that it does not reconnect by
//! itself.
//!
//! When its turn comes a session stops handling what its client sends and
//! waits until the messages it has in hand are done with (their permits,
//! see `inbound`), so that what that work queued for the client, such as
//! the ack of a stored chat message, goes out ahead of the close. A message
//! dropped unanswered fails its ack with the disconnect, so the client
//! knows to send it again.
//!
//! Sessions close in batches spread over the time given, at most `rate` a
//! second unless more are needed to finish in time, so that the other
//! nodes do not take every reconnection in the same instant. Polling
//! sessions go first, each while one of its GETs waits: each of their
//! requests may need a new connection (the official client in Node.js
//! opens one per request; behind a load balancer without sticky sessions
//! they come through the other nodes), so they must be closed before the
//! listener is.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::session::{SocketSession, Transport};
use super::{CloseReason, Engine, EngineHandler, HandlerFactory};

/// One batch of sessions is closed this often.
const BATCH_EVERY: Duration = Duration::from_millis(100);
/// How often a closing session looks whether its work in hand is done,
/// and the drain whether every session is closed.
const POLL: Duration = Duration::from_millis(10);

/// When an engine's sessions are closed.
#[derive(Debug, Clone, Copy)]
pub struct DrainPlan {
    /// Sessions closed a second at most, unless more are needed to be done
    /// by `close_by`.
    pub rate: u32,
    /// The polling sessions not closed by then (none of their GETs came)
    /// are closed anyway: their close packet waits for their next GET.
    pub polling_by: Instant,
    /// The last batch starts closing by then.
    pub close_by: Instant,
    /// A session still working on its client's messages then is closed
    /// anyway, and the drain returns.
    pub give_up: Instant,
}

/// What a drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Sessions there were to close.
    pub sessions: usize,
    /// Closed at `give_up` with work still in hand (what it would have
    /// sent, acks included, was not).
    pub cut_off: usize,
    /// Not closed yet when the drain gave up.
    pub open: usize,
}

/// Held by every session of one drain until it has closed: the drain is
/// over when nobody else holds it.
#[derive(Debug)]
struct Progress {
    start: Instant,
    /// WebSocket sessions closed in one batch.
    per_batch: usize,
    /// The next WebSocket session's place, in the order they hear of the
    /// drain (polling ones take none: they close at once).
    next: AtomicUsize,
    cut_off: AtomicUsize,
}

impl Progress {
    /// When the next WebSocket session to ask closes.
    fn take_turn(&self, close_by: Instant) -> Instant {
        let place = self.next.fetch_add(1, Ordering::Relaxed);
        (self.start + BATCH_EVERY * (place / self.per_batch) as u32).min(close_by)
    }
}

impl<F: HandlerFactory> Engine<F> {
    /// Set once a drain has begun: no new session is started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Closes every session as the module's doc says and starts no new
    /// ones; calls `polling_closed` once the polling sessions are closed
    /// (or at `plan.polling_by`). Resolves once every session is closed,
    /// or at `plan.give_up`.
    ///
    /// The official client in Node.js opens a connection for each polling
    /// request: the listener must stay open until `polling_closed`.
    pub async fn drain(&self, plan: DrainPlan, polling_closed: impl FnOnce()) -> Drained {
        self.draining.store(true, Ordering::Release);
        let start = Instant::now();
        let sessions: Vec<_> = self.sessions.iter().map(|s| (s.key().clone(), s.value().clone())).collect();
        let batches = (plan.close_by.saturating_duration_since(start).as_millis() / BATCH_EVERY.as_millis())
            .max(1) as usize;
        let at_rate = (u128::from(plan.rate) * BATCH_EVERY.as_millis()).div_ceil(1000) as usize;
        // As if every session were a WebSocket: they fit in time whatever.
        let per_batch = at_rate.max(sessions.len().div_ceil(batches)).max(1);
        let progress =
            Arc::new(Progress { start, per_batch, next: AtomicUsize::new(0), cut_off: AtomicUsize::new(0) });
        let polling = Arc::new(());
        let drain = || Drain { plan, progress: progress.clone(), polling: Some(polling.clone()) };
        let mut sent = HashSet::with_capacity(sessions.len());
        for (sid, session) in sessions {
            session.do_send(drain());
            sent.insert(sid);
        }
        let mut polling_closed = Some(polling_closed);
        let mut rescanned = start;
        loop {
            tokio::time::sleep(POLL).await;
            let now = Instant::now();
            if now >= rescanned + BATCH_EVERY {
                // Sessions whose handshake was under way when the drain
                // began: they go in the next batch.
                rescanned = now;
                for session in self.sessions.iter() {
                    if sent.insert(session.key().clone()) {
                        session.value().do_send(drain());
                    }
                }
            }
            if (Arc::strong_count(&polling) == 1 || now >= plan.polling_by)
                && let Some(closed) = polling_closed.take()
            {
                closed();
            }
            let all_closed = rescanned > start && Arc::strong_count(&progress) == 1;
            if all_closed || now >= plan.give_up {
                break;
            }
        }
        if let Some(closed) = polling_closed.take() {
            closed();
        }
        Drained {
            sessions: sent.len(),
            cut_off: progress.cut_off.load(Ordering::Relaxed),
            open: Arc::strong_count(&progress) - 1,
        }
    }
}

/// A session's place in a drain.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Drain {
    plan: DrainPlan,
    progress: Arc<Progress>,
    /// Held by a polling session until it has closed.
    polling: Option<Arc<()>>,
}

impl<H: EngineHandler> Handler<Drain> for SocketSession<H> {
    type Result = ();

    fn handle(&mut self, mut drain: Drain, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            return;
        }
        let now = Instant::now();
        let at = match self.transport {
            Transport::Polling(_) => now,
            Transport::WebSocket(_) => {
                drain.polling = None;
                drain.progress.take_turn(drain.plan.close_by)
            }
        };
        ctx.run_later(at.saturating_duration_since(now), move |session, ctx| session.drain_step(drain, ctx));
    }
}

impl<H: EngineHandler> SocketSession<H> {
    fn drain_step(&mut self, drain: Drain, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            return;
        }
        self.draining = true;
        let (idle, reachable, give_up) = match &self.transport {
            Transport::WebSocket(conn) => (conn.is_idle(), true, drain.plan.give_up),
            // Closed while a GET waits, the close reaches the client at
            // once, before it can send anything more.
            Transport::Polling(polling) => (polling.is_idle(), polling.has_get(), drain.plan.polling_by),
        };
        if idle && reachable {
            // Through the mailbox: the work finished put what it has to
            // send there first, and it must go out ahead of the close.
            ctx.address().do_send(DrainClose { _drain: drain });
        } else if Instant::now() >= give_up {
            if !idle {
                drain.progress.cut_off.fetch_add(1, Ordering::Relaxed);
            }
            self.close(CloseReason::ServerShuttingDown, ctx);
        } else {
            ctx.run_later(POLL, move |session, ctx| session.drain_step(drain, ctx));
        }
    }
}

/// Closes a draining session whose work in hand is done.
#[derive(Message)]
#[rtype(result = "()")]
struct DrainClose {
    /// Held until the close: the drain waits for it.
    _drain: Drain,
}

impl<H: EngineHandler> Handler<DrainClose> for SocketSession<H> {
    type Result = ();

    fn handle(&mut self, _: DrainClose, ctx: &mut Context<Self>) {
        self.close(CloseReason::ServerShuttingDown, ctx);
    }
}
