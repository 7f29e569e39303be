//! `SocketSession`: one Engine.IO session, whatever carries it. Polling
//! requests, WebSocket frames, pushes from rooms and timers all arrive as
//! messages to this actor, so they are serialised without locks (a POST, a
//! GET and an upgrade racing on different connections cannot interleave).
//!
//! This file holds what every transport shares: the handler, writing,
//! closing, the heartbeat, and the reports of the session's WebSocket. The
//! long-polling transport is in `polling`, the upgrade probe in `probe`.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::inbound::InboundPermit;
use super::polling::Polling;
use super::probe::Upgrade;
use super::ws::{self, WsEvent, WsOutlet};
use super::{
    CloseReason, Engine, EngineConfig, EngineHandler, HandlerFactory, Incoming, Outgoing, Output, Push,
};
use crate::protocol::engine::{self, Packet, WsMessage};

/// How long a polling session closed because the server is stopping still
/// answers the POSTs its client sent before it read the close.
const LATE_POST_GRACE: Duration = Duration::from_secs(1);

pub(super) enum Transport {
    /// Boxed: most sessions live on a WebSocket, and an idle one should
    /// not carry the polling state.
    Polling(Box<Polling>),
    WebSocket(WsOutlet),
}

pub struct SocketSession<H: EngineHandler> {
    pub(super) sid: Arc<str>,
    pub(super) engine_config: Arc<EngineConfig>,
    registry: Arc<dyn Fn(&str) + Send + Sync>,
    pub(super) transport: Transport,
    /// A WebSocket asking to take over a polling session.
    pub(super) upgrade: Option<Upgrade>,
    pub(super) pong_deadline: Option<SpawnHandle>,
    /// Set once the session is ending; on polling the close packet may still
    /// wait for the client's next GET.
    pub(super) closing: Option<CloseReason>,
    /// Set when the server stops and this session's turn to close has
    /// come (see `drain`): what the client sends from then on is not
    /// handled, so that the work in hand can finish before the close.
    pub(super) draining: bool,
    pub handler: H,
}

impl<H: EngineHandler> SocketSession<H> {
    /// Starts a session and registers it in `engine`; its first outgoing
    /// packet is the handshake. `websocket` is the connection of a session
    /// that starts on a WebSocket; without one it starts on polling.
    pub fn start<F>(
        engine: &Arc<Engine<F>>,
        websocket: Option<WsOutlet>,
        request: &actix_http::RequestHead,
    ) -> (Arc<str>, Addr<Self>)
    where
        F: HandlerFactory<Handler = H>,
    {
        let sid = engine.new_sid();
        let handshake = engine::Handshake {
            sid: sid.to_string(),
            upgrades: if websocket.is_some() { vec![] } else { vec!["websocket".into()] },
            ping_interval_ms: engine.config.ping_interval.as_millis() as u64,
            ping_timeout_ms: engine.config.ping_timeout.as_millis() as u64,
            max_payload: engine.config.max_payload as u64,
        };
        let weak = Arc::downgrade(engine);
        let registry: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(move |sid: &str| {
            if let Some(engine) = weak.upgrade() {
                engine.sessions.remove(sid);
            }
        });
        let transport_name = if websocket.is_some() { "websocket" } else { "polling" };
        let transport = match websocket {
            Some(conn) => {
                send_ws(&conn, Outgoing::Packet(handshake.open_packet()));
                Transport::WebSocket(conn)
            }
            None => Transport::Polling(Box::new(Polling::new(Outgoing::Packet(handshake.open_packet())))),
        };
        let addr = SocketSession::create(|ctx| {
            let handle = super::SessionHandle { sid: sid.clone(), addr: ctx.address() };
            let handler = engine.factory.create(handle, request);
            SocketSession {
                sid: sid.clone(),
                engine_config: engine.config.clone(),
                registry,
                transport,
                upgrade: None,
                pong_deadline: None,
                closing: None,
                draining: false,
                handler,
            }
        });
        engine.sessions.insert(sid.clone(), addr.clone());
        log::debug!("sid={sid} open transport={transport_name}");
        (sid, addr)
    }

    /// Runs a handler callback and applies what it asked for.
    pub fn dispatch(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut H, &mut Output, &mut Context<Self>),
    ) {
        let mut out = Output::default();
        f(&mut self.handler, &mut out, ctx);
        self.write(out.frames, ctx);
        if let Some(reason) = out.close {
            self.close(reason, ctx);
        }
    }

    /// Writes frames on the current transport. An iterator, so that a push
    /// of one shared frame (every recipient of a broadcast) allocates nothing.
    pub(super) fn write(&mut self, frames: impl IntoIterator<Item = Outgoing>, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            return;
        }
        match &mut self.transport {
            Transport::WebSocket(conn) => {
                for frame in frames {
                    send_ws(conn, frame);
                }
            }
            Transport::Polling(polling) => {
                if let Err(reason) = polling.write(frames, &self.engine_config, &self.sid) {
                    self.close(reason, ctx);
                }
            }
        }
    }

    /// Ends the session: the handler hears it once; the client gets a close
    /// packet where the transport can carry one.
    pub fn close(&mut self, reason: CloseReason, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            return;
        }
        log::debug!("sid={} close reason={}", self.sid, reason.as_str());
        self.closing = Some(reason);
        self.handler.closed(reason);
        if let Some(upgrade) = self.upgrade.take() {
            upgrade.conn.close();
        }
        match &mut self.transport {
            Transport::WebSocket(conn) => {
                if reason == CloseReason::ServerShuttingDown {
                    conn.close_going_away();
                } else {
                    conn.close();
                }
                ctx.stop();
            }
            Transport::Polling(polling) => {
                if polling.close(reason) {
                    if reason == CloseReason::ServerShuttingDown && ctx.state() == actix::ActorState::Running
                    {
                        // A POST the client sent before it read the close
                        // still gets its "ok": it may read an error for it
                        // first, and take that for a broken transport.
                        ctx.run_later(LATE_POST_GRACE, |_, ctx| ctx.stop());
                    } else {
                        ctx.stop();
                    }
                } else if ctx.state() == actix::ActorState::Running {
                    // The close waits for the next GET, or gives up. Not
                    // while the actor is already stopping (e.g. at
                    // shutdown): there is no runtime left to run a timer.
                    ctx.run_later(self.engine_config.polling_close_timeout, |_, ctx| ctx.stop());
                }
            }
        }
    }

    fn schedule_ping(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(self.engine_config.ping_interval, |act, ctx| {
            if act.closing.is_some() {
                return;
            }
            act.write(std::iter::once(Outgoing::Packet(Packet::Ping)), ctx);
            // The deadline runs from when the ping is queued, GET or not.
            act.pong_deadline = Some(ctx.run_later(act.engine_config.ping_timeout, |act, ctx| {
                act.close(CloseReason::PingTimeout, ctx)
            }));
        });
    }

    fn pong(&mut self, ctx: &mut Context<Self>) {
        if let Some(deadline) = self.pong_deadline.take() {
            ctx.cancel_future(deadline);
            self.schedule_ping(ctx);
        }
    }

    /// A packet from the client on the session's current transport; a
    /// message comes with the permit it holds (see `inbound`).
    pub(super) fn receive(&mut self, packet: Packet, permit: InboundPermit, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            return;
        }
        match packet {
            Packet::Pong => self.pong(ctx),
            // Dropped with its permit, unanswered: the client's ack fails
            // with the disconnect, so it knows to send it again elsewhere.
            Packet::Message(_) | Packet::Binary(_) if self.draining => {}
            Packet::Message(text) => {
                self.dispatch(ctx, |h, out, ctx| h.message(Incoming::Text(text), permit, out, ctx))
            }
            Packet::Binary(bytes) => {
                self.dispatch(ctx, |h, out, ctx| h.message(Incoming::Binary(bytes), permit, out, ctx))
            }
            Packet::Close => self.close(CloseReason::TransportClose, ctx),
            // v4 clients never ping; a ping here means a confused peer.
            Packet::Ping | Packet::PingProbe => self.close(CloseReason::TransportError, ctx),
            Packet::Open(_) | Packet::PongProbe | Packet::Upgrade | Packet::Noop => {
                self.close(CloseReason::ParseError, ctx)
            }
        }
    }
}

/// Queues one frame on a WebSocket: a shared message as the frames encoded
/// once for every recipient, a packet of this session's own as the frame
/// the protocol says carries it.
pub(super) fn send_ws(conn: &WsOutlet, frame: Outgoing) {
    match frame {
        Outgoing::Packet(packet) => conn.send(match packet.encode_ws() {
            WsMessage::Text(text) => ws::text_frame(text.into()),
            WsMessage::Binary(bytes) => ws::binary_frame(bytes),
        }),
        Outgoing::Shared(frame) => {
            for encoded in frame.ws_frames() {
                conn.send(encoded.clone());
            }
        }
    }
}

impl<H: EngineHandler> Actor for SocketSession<H> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Pushes from rooms use try_send; this bounds what may queue (the
        // bytes a slow client leaves queued are bounded behind it, in its
        // outlet or outbox). Room for bursts: one batch of the message
        // writer can hand a socket hundreds of acks and messages at once.
        ctx.set_mailbox_capacity(4096);
        self.schedule_ping(ctx);
        self.dispatch(ctx, |h, out, ctx| h.opened(out, ctx));
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        if self.closing.is_none() {
            self.close(CloseReason::ForcedClose, ctx);
        }
        (self.registry)(&self.sid);
    }
}

/// Runs a closure on the handler (see `SessionHandle::call`).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct RunOnHandler<H>(pub(crate) HandlerFn<H>);

/// What a [`RunOnHandler`] runs (an alias only to satisfy clippy's type_complexity).
pub(crate) type HandlerFn<H> = Box<dyn FnOnce(&mut H, &mut Output) + Send>;

impl<H: EngineHandler> Handler<RunOnHandler<H>> for SocketSession<H> {
    type Result = ();

    fn handle(&mut self, RunOnHandler(f): RunOnHandler<H>, ctx: &mut Context<Self>) {
        if self.closing.is_none() {
            self.dispatch(ctx, |h, out, _| f(h, out));
        }
    }
}

impl<H: EngineHandler> Handler<Push> for SocketSession<H> {
    type Result = ();

    fn handle(&mut self, push: Push, ctx: &mut Context<Self>) {
        match push {
            Push::Shared(frame) => self.write(std::iter::once(Outgoing::Shared(frame)), ctx),
            Push::Packets(frames) => self.write(frames, ctx),
            Push::Close(reason) => self.close(reason, ctx),
        }
    }
}

/// What the session's WebSocket, or the one probing to take it over, says.
impl<H: EngineHandler> Handler<WsEvent> for SocketSession<H> {
    type Result = ();

    fn handle(&mut self, event: WsEvent, ctx: &mut Context<Self>) {
        let conn_id = event.conn_id();
        let is_main = matches!(&self.transport, Transport::WebSocket(conn) if conn.id() == conn_id);
        let is_probe = self.upgrade.as_ref().is_some_and(|u| u.conn.id() == conn_id);
        if is_probe {
            return self.probe_event(event, ctx);
        }
        if !is_main {
            return;
        }
        match event {
            WsEvent::Closed { .. } => self.close(CloseReason::TransportClose, ctx),
            WsEvent::Failed { .. } => self.close(CloseReason::TransportError, ctx),
            WsEvent::Text { text, permit, .. } => match engine::decode_text(&text) {
                Ok(packet) => self.receive(packet, permit, ctx),
                Err(_) => self.close(CloseReason::ParseError, ctx),
            },
            WsEvent::Binary { bytes, permit, .. } => self.receive(Packet::Binary(bytes), permit, ctx),
        }
    }
}
