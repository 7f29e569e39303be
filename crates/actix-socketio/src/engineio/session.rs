//! `SocketSession`: one Engine.IO session, whatever carries it. Polling
//! requests, WebSocket frames, pushes from rooms and timers all arrive as
//! messages to this actor, so they are serialised without locks (a POST, a
//! GET and an upgrade racing on different connections cannot interleave).

use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use tokio::sync::oneshot;

use super::ws::{self, WsEvent, WsOutlet};
use super::{CloseReason, Engine, EngineHandler, HandlerFactory, Incoming, Outgoing, Output, Push};
use crate::protocol::engine::{self, HttpError, Packet};

/// The answer to a polling GET: a payload, or an HTTP error.
pub type PollReply = Result<String, HttpError>;

enum Transport {
    /// Long-polling: at most one GET waits here for something to send.
    Polling {
        pending_get: Option<oneshot::Sender<PollReply>>,
        post_in_flight: bool,
    },
    WebSocket(WsOutlet),
}

/// A WebSocket that asked to take over a polling session (2probe … 5).
struct Upgrade {
    conn: WsOutlet,
    probed: bool,
    timeout: SpawnHandle,
}

pub struct SocketSession<H: EngineHandler> {
    sid: Arc<str>,
    engine_config: Arc<super::EngineConfig>,
    registry: Arc<dyn Fn(&str) + Send + Sync>,
    transport: Transport,
    upgrade: Option<Upgrade>,
    /// Frames waiting for a polling GET (or for the WebSocket to attach),
    /// and their size: a client that stops polling cannot make it grow
    /// past `max_buffered_bytes`.
    outbox: Vec<Outgoing>,
    outbox_bytes: usize,
    pong_deadline: Option<SpawnHandle>,
    /// Set once the session is ending; on polling the close packet may still
    /// wait for the client's next GET.
    closing: Option<CloseReason>,
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
        let sid = super::new_sid();
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
        let (transport, outbox) = match websocket {
            Some(conn) => {
                send_ws(&conn, Outgoing::Packet(handshake.open_packet()));
                (Transport::WebSocket(conn), Vec::new())
            }
            None => (
                Transport::Polling { pending_get: None, post_in_flight: false },
                vec![Outgoing::Packet(handshake.open_packet())],
            ),
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
                outbox,
                outbox_bytes: 0,
                pong_deadline: None,
                closing: None,
                handler,
            }
        });
        engine.sessions.insert(sid.clone(), addr.clone());
        log::debug!("sid={sid} open transport={transport_name}");
        (sid, addr)
    }

    fn take_outbox(&mut self) -> Vec<Outgoing> {
        self.outbox_bytes = 0;
        std::mem::take(&mut self.outbox)
    }

    /// Queues frames for the next GET; false if that leaves too much queued.
    fn queue(&mut self, frames: impl IntoIterator<Item = Outgoing>) -> bool {
        for frame in frames {
            self.outbox_bytes += frame.len();
            self.outbox.push(frame);
        }
        self.outbox_bytes <= self.engine_config.max_buffered_bytes
    }

    /// Runs a handler callback and applies what it asked for.
    pub fn dispatch(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut H, &mut Output, &mut Context<Self>),
    ) {
        let mut out = Output::default();
        f(&mut self.handler, &mut out, ctx);
        self.apply(out, ctx);
    }

    fn apply(&mut self, out: Output, ctx: &mut Context<Self>) {
        self.write(out.frames, ctx);
        if let Some(reason) = out.close {
            self.close(reason, ctx);
        }
    }

    /// Writes frames on the current transport. An iterator, so that a push
    /// of one shared frame (every recipient of a broadcast) allocates nothing.
    fn write(&mut self, frames: impl IntoIterator<Item = Outgoing>, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            return;
        }
        match &mut self.transport {
            Transport::WebSocket(conn) => {
                for frame in frames {
                    send_ws(conn, frame);
                }
            }
            Transport::Polling { .. } => {
                let queued = self.outbox.len();
                let fits = self.queue(frames);
                if self.outbox.len() == queued {
                    // Nothing new: a waiting GET keeps waiting.
                    return;
                }
                if !fits {
                    self.engine_config.stats.slow_client_disconnected();
                    log::warn!(
                        "sid={} is not polling ({} bytes queued); disconnecting",
                        self.sid,
                        self.outbox_bytes
                    );
                    return self.close(CloseReason::TransportError, ctx);
                }
                let get = match &mut self.transport {
                    Transport::Polling { pending_get, .. } => pending_get.take(),
                    _ => None,
                };
                if let Some(get) = get {
                    let body = encode_payload(self.take_outbox());
                    if get.send(Ok(body)).is_err() {
                        // The client abandoned its GET: the reference treats
                        // that as a broken transport.
                        self.close(CloseReason::TransportError, ctx);
                    }
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
                conn.close();
                ctx.stop();
            }
            Transport::Polling { pending_get, .. } => {
                let pending_get = pending_get.take();
                let mut packets = self.take_outbox();
                // A client that said goodbye itself gets no close packet back.
                let goodbye =
                    if reason == CloseReason::TransportClose { Packet::Noop } else { Packet::Close };
                packets.push(Outgoing::Packet(goodbye));
                if let Some(get) = pending_get {
                    let _ = get.send(Ok(encode_payload(packets)));
                    ctx.stop();
                } else if !matches!(reason, CloseReason::ForcedClose | CloseReason::ServerShuttingDown) {
                    // Only a close the server decides on waits for the next
                    // GET. A session that died (ping timeout, transport or
                    // parse error, client's `1`) is forgotten at once, as
                    // the reference does: the next request gets code 1
                    // (PROTOCOL.md 2.7, 2.8; the suites check it).
                    ctx.stop();
                } else {
                    // Deliver the close with the next GET, or give up.
                    self.outbox = packets;
                    // Not while the actor is already stopping (e.g. at
                    // shutdown): there is no runtime left to run a timer.
                    if ctx.state() == actix::ActorState::Running {
                        ctx.run_later(self.engine_config.polling_close_timeout, |_, ctx| ctx.stop());
                    }
                }
            }
        }
    }

    fn schedule_ping(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(self.engine_config.ping_interval, |act, ctx| {
            if act.closing.is_some() {
                return;
            }
            act.write(vec![Outgoing::Packet(Packet::Ping)], ctx);
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

    /// A packet from the client on the session's current transport.
    fn receive(&mut self, packet: Packet, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            return;
        }
        match packet {
            Packet::Pong => self.pong(ctx),
            Packet::Message(text) => {
                self.dispatch(ctx, |h, out, ctx| h.message(Incoming::Text(text), out, ctx))
            }
            Packet::Binary(bytes) => {
                self.dispatch(ctx, |h, out, ctx| h.message(Incoming::Binary(bytes), out, ctx))
            }
            Packet::Close => self.close(CloseReason::TransportClose, ctx),
            // v4 clients never ping; a ping here means a confused peer.
            Packet::Ping | Packet::PingProbe => self.close(CloseReason::TransportError, ctx),
            Packet::Open(_) | Packet::PongProbe | Packet::Upgrade | Packet::Noop => {
                self.close(CloseReason::ParseError, ctx)
            }
        }
    }

    /// A frame from the WebSocket that is trying to take over (upgrade).
    fn receive_probe(&mut self, packet: Packet, ctx: &mut Context<Self>) {
        let Some(upgrade) = &mut self.upgrade else { return };
        match packet {
            // A repeated probe is answered again, and `5` completes the
            // upgrade even without a probe: the reference closes the
            // upgrading socket only for other packets (PROTOCOL.md 2.6).
            Packet::PingProbe => {
                upgrade.probed = true;
                send_ws(&upgrade.conn, Outgoing::Packet(Packet::PongProbe));
                // Release the client's waiting GET so it can stop polling.
                self.release_get_with_noop();
            }
            Packet::Upgrade => {
                let Some(upgrade) = self.upgrade.take() else { return };
                ctx.cancel_future(upgrade.timeout);
                self.release_get_with_noop();
                log::debug!("sid={} upgraded to websocket", self.sid);
                self.transport = Transport::WebSocket(upgrade.conn);
                let pending = self.take_outbox();
                self.write(pending, ctx);
            }
            _ => {
                // Anything else ends the attempt; the session stays on polling.
                if let Some(upgrade) = self.upgrade.take() {
                    ctx.cancel_future(upgrade.timeout);
                    upgrade.conn.close();
                }
            }
        }
    }

    fn release_get_with_noop(&mut self) {
        if let Transport::Polling { pending_get, .. } = &mut self.transport
            && let Some(get) = pending_get.take()
        {
            let mut packets = self.take_outbox();
            packets.push(Outgoing::Packet(Packet::Noop));
            let _ = get.send(Ok(encode_payload(packets)));
        }
    }
}

fn send_ws(conn: &WsOutlet, frame: Outgoing) {
    match frame {
        Outgoing::Packet(Packet::Binary(bytes)) => conn.send(ws::binary_frame(bytes)),
        Outgoing::Packet(packet) => {
            conn.send(ws::text_frame(ByteString::from(packet.encode_text().unwrap_or_default())))
        }
        Outgoing::Shared(frame) => {
            for encoded in frame.ws_frames() {
                conn.send(encoded.clone());
            }
        }
    }
}

/// One long-polling body from queued frames.
fn encode_payload(frames: Vec<Outgoing>) -> String {
    let mut packets = Vec::with_capacity(frames.len());
    for frame in frames {
        match frame {
            Outgoing::Packet(p) => packets.push(p),
            Outgoing::Shared(shared) => {
                // The text already carries its Engine.IO type digit.
                packets.push(Packet::Message(shared.text[1..].to_string()));
                packets.extend(shared.binaries.iter().cloned().map(Packet::Binary));
            }
        }
    }
    engine::encode_payload(&packets)
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
pub struct RunOnHandler<H>(pub HandlerFn<H>);

/// What a [`RunOnHandler`] runs (an alias only to satisfy clippy's type_complexity).
pub type HandlerFn<H> = Box<dyn FnOnce(&mut H, &mut Output) + Send>;

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

/// A polling GET. The reply comes through the channel, now or later.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PollGet(pub oneshot::Sender<PollReply>);

impl<H: EngineHandler> Handler<PollGet> for SocketSession<H> {
    type Result = ();

    fn handle(&mut self, PollGet(reply): PollGet, ctx: &mut Context<Self>) {
        let Transport::Polling { pending_get, .. } = &mut self.transport else {
            let _ = reply.send(Err(HttpError::BadRequest));
            return;
        };
        if self.closing.is_some() {
            // The deferred close: whatever was left, then `1`.
            let _ = reply.send(Ok(encode_payload(self.take_outbox())));
            ctx.stop();
            return;
        }
        if pending_get.is_some() {
            // Two GETs at once break the protocol: refuse this one, and the
            // first one receives the close.
            let _ = reply.send(Err(HttpError::BadRequest));
            self.close(CloseReason::TransportError, ctx);
            return;
        }
        if self.upgrade.as_ref().is_some_and(|u| u.probed) {
            let _ = reply.send(Ok(encode_payload(vec![Outgoing::Packet(Packet::Noop)])));
            return;
        }
        if self.outbox.is_empty() {
            *pending_get = Some(reply);
        } else {
            let _ = reply.send(Ok(encode_payload(self.take_outbox())));
        }
    }
}

/// A polling POST starts: only one may be in flight.
#[derive(Message)]
#[rtype(result = "Result<(), HttpError>")]
pub struct PostStart;

impl<H: EngineHandler> Handler<PostStart> for SocketSession<H> {
    type Result = Result<(), HttpError>;

    fn handle(&mut self, _: PostStart, ctx: &mut Context<Self>) -> Self::Result {
        let Transport::Polling { post_in_flight, .. } = &mut self.transport else {
            return Err(HttpError::BadRequest);
        };
        if self.closing.is_some() {
            return Err(HttpError::SessionIdUnknown);
        }
        if *post_in_flight {
            self.close(CloseReason::TransportError, ctx);
            return Err(HttpError::BadRequest);
        }
        *post_in_flight = true;
        Ok(())
    }
}

/// How the POST begun with `PostStart` ended.
#[derive(Message)]
#[rtype(result = "Result<(), HttpError>")]
pub enum PostBody {
    Received(Bytes),
    /// Over maxPayload: refused with 413, the session goes on.
    TooLarge,
    /// Not a text payload (e.g. `application/octet-stream`): the session is closed.
    NotText,
}

impl<H: EngineHandler> Handler<PostBody> for SocketSession<H> {
    type Result = Result<(), HttpError>;

    fn handle(&mut self, body: PostBody, ctx: &mut Context<Self>) -> Self::Result {
        if let Transport::Polling { post_in_flight, .. } = &mut self.transport {
            *post_in_flight = false;
        }
        let packets = match body {
            PostBody::TooLarge => return Ok(()),
            PostBody::NotText => Err(()),
            PostBody::Received(bytes) => std::str::from_utf8(&bytes)
                .map_err(|_| ())
                .and_then(|text| engine::decode_payload(text).map_err(|_| ())),
        };
        match packets {
            Ok(packets) => {
                for packet in packets {
                    self.receive(packet, ctx);
                }
                Ok(())
            }
            Err(()) => {
                self.close(CloseReason::ParseError, ctx);
                Err(HttpError::BadRequest)
            }
        }
    }
}

/// A WebSocket asks to take over a polling session (upgrade).
#[derive(Message)]
#[rtype(result = "()")]
pub struct WsAttach(pub WsOutlet);

impl<H: EngineHandler> Handler<WsAttach> for SocketSession<H> {
    type Result = ();

    fn handle(&mut self, WsAttach(conn): WsAttach, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            conn.close();
            return;
        }
        match &self.transport {
            Transport::Polling { .. } if self.upgrade.is_none() => {
                let timeout = ctx.run_later(self.engine_config.upgrade_timeout, |act, _| {
                    if let Some(upgrade) = act.upgrade.take() {
                        upgrade.conn.close();
                    }
                });
                self.upgrade = Some(Upgrade { conn, probed: false, timeout });
            }
            // Already upgraded or upgrading: one WebSocket per session.
            _ => conn.close(),
        }
    }
}

impl<H: EngineHandler> Handler<WsEvent> for SocketSession<H> {
    type Result = ();

    fn handle(&mut self, msg: WsEvent, ctx: &mut Context<Self>) {
        let is_main = matches!(&self.transport, Transport::WebSocket(conn) if conn.id() == msg.conn_id());
        let is_probe = self.upgrade.as_ref().is_some_and(|u| u.conn.id() == msg.conn_id());
        match msg {
            WsEvent::Closed { .. } if is_main => self.close(CloseReason::TransportClose, ctx),
            WsEvent::Closed { .. } if is_probe => {
                if let Some(upgrade) = self.upgrade.take() {
                    ctx.cancel_future(upgrade.timeout);
                }
            }
            WsEvent::Failed { .. } if is_main => self.close(CloseReason::TransportError, ctx),
            WsEvent::Failed { conn_id } if is_probe => {
                self.handle(WsEvent::Closed { conn_id }, ctx);
            }
            WsEvent::Text { text, .. } => {
                let packet = engine::decode_text(&text);
                match (packet, is_main, is_probe) {
                    (Ok(packet), true, _) => self.receive(packet, ctx),
                    (Ok(packet), _, true) => self.receive_probe(packet, ctx),
                    (Err(_), true, _) => self.close(CloseReason::ParseError, ctx),
                    (Err(_), _, true) => self.receive_probe(Packet::Noop, ctx),
                    _ => {}
                }
            }
            WsEvent::Binary { bytes, .. } if is_main => self.receive(Packet::Binary(bytes), ctx),
            WsEvent::Binary { .. } if is_probe => self.receive_probe(Packet::Noop, ctx),
            _ => {}
        }
    }
}
