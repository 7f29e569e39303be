//! The Socket.IO v5 layer on an Engine.IO session: namespaces, the CONNECT
//! handshake (with the application's auth decision), events and
//! acknowledgements both ways, binary attachments. The application plugs in
//! through [`SocketApp`]; CivicPulse is one such application, the
//! `protocol_echo` example another.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::engineio::{
    CloseReason, EngineHandler, EngineStats, HandlerFactory, InboundPermit, Incoming, Outgoing, Output, Push,
    SessionHandle, SharedMessage, SocketSession,
};
use crate::protocol::socket::{Decoder, MAX_ATTACHMENTS, Packet, PacketKind, SocketError};

/// What [`SocketApp::authenticate`] hands back: the auth `connect` decides on.
pub type PendingAuth = std::pin::Pin<Box<dyn std::future::Future<Output = Map<String, Value>> + Send>>;

/// How long a client refused with `close` has to leave by itself.
const REFUSED_CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Why a CONNECT was refused.
pub enum Refusal {
    /// No such namespace: `{"message":"Invalid namespace"}`; the engine
    /// connection stays open.
    InvalidNamespace,
    /// The application said no (e.g. authentication). With `close`, the
    /// engine connection is closed once the CONNECT_ERROR is written.
    Refused { message: String, close: bool },
}

/// A CONNECT the application accepts: the socket's state, and what the
/// connection starts with beyond the plain `{"sid"}` reply. Connection
/// state recovery is built on it (a recovered socket keeps its id, gets its
/// `pid` in the reply and the events it missed before it); the protocol
/// itself stays the application's business.
pub struct Accepted<S> {
    pub state: S,
    /// The socket's id, instead of the one its handle was made with (see
    /// [`SocketRef::with_id`]).
    pub id: Option<Arc<str>>,
    /// Fields of the CONNECT reply beside `sid`.
    pub reply: Map<String, Value>,
    /// Written before the CONNECT reply, in order.
    pub before: Vec<Arc<SharedMessage>>,
    /// Written right after it, before anything the app sends later.
    pub after: Vec<Arc<SharedMessage>>,
}

impl<S> Accepted<S> {
    /// The plain `{"sid"}` reply and nothing else.
    pub fn new(state: S) -> Self {
        Self { state, id: None, reply: Map::new(), before: Vec::new(), after: Vec::new() }
    }
}

/// One event from the client.
pub struct Event {
    pub name: String,
    pub args: Vec<Value>,
    /// Buffers for the `{"_placeholder":true,"num":i}` values in `args`.
    pub attachments: Vec<Bytes>,
    /// Set when the client waits for an acknowledgement.
    pub ack: Option<u64>,
    /// Keep it while the event is being worked on (move it into the future
    /// or callback that finishes the work): once a connection has too many
    /// events in hand the server stops reading from it.
    pub permit: InboundPermit,
}

/// An application served over Socket.IO.
pub trait SocketApp: Send + Sync + 'static {
    /// State of one namespace connection.
    type Socket: Unpin + 'static;

    /// A client asks to join `socket.namespace` with `auth` (`{}` if none).
    fn connect(
        &self,
        socket: &SocketRef<Self>,
        auth: &Map<String, Value>,
    ) -> Result<Accepted<Self::Socket>, Refusal>
    where
        Self: Sized;

    /// Work a CONNECT's decision needs that must not hold up the session's
    /// thread (a password to check against its hash, a database lookup):
    /// the session waits for the future, then calls `connect` with the auth
    /// it yields instead of the client's. The client hears nothing until
    /// then, and any other packet for the namespace meanwhile closes the
    /// connection, as one for a namespace not joined does. `None` (the
    /// default): `connect` decides at once on the client's auth.
    fn authenticate(&self, _socket: &SocketRef<Self>, _auth: &Map<String, Value>) -> Option<PendingAuth>
    where
        Self: Sized,
    {
        None
    }

    fn event(&self, state: &mut Self::Socket, socket: &SocketRef<Self>, event: Event)
    where
        Self: Sized;

    /// The socket's connection moved from long-polling to WebSocket.
    fn upgraded(&self, _state: &mut Self::Socket, _socket: &SocketRef<Self>)
    where
        Self: Sized,
    {
    }

    /// The socket is gone (`reason` as Socket.IO names it).
    fn disconnect(&self, state: Self::Socket, socket: &SocketRef<Self>, reason: &str)
    where
        Self: Sized;
}

/// A handle on one namespace connection, usable from anywhere (other actors,
/// futures): everything goes through the session's mailbox.
pub struct SocketRef<A: SocketApp> {
    /// The Socket.IO socket id (not the Engine.IO sid).
    pub id: Arc<str>,
    pub namespace: Arc<str>,
    /// The address the session's handshake came from (a proxy's, behind
    /// one).
    pub peer: Option<IpAddr>,
    /// Whether the connection was a WebSocket at CONNECT; a later upgrade
    /// is told by [`SocketApp::upgraded`].
    pub websocket: bool,
    session: SessionHandle<SocketIo<A>>,
}

impl<A: SocketApp> Clone for SocketRef<A> {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            namespace: self.namespace.clone(),
            peer: self.peer,
            websocket: self.websocket,
            session: self.session.clone(),
        }
    }
}

impl<A: SocketApp> SocketRef<A> {
    /// The same connection under another socket id: the handle an app that
    /// picks the id (in [`Accepted::id`]) registers its socket with.
    pub fn with_id(&self, id: Arc<str>) -> Self {
        Self { id, ..self.clone() }
    }

    pub fn engine_sid(&self) -> &Arc<str> {
        &self.session.sid
    }

    /// Where rooms and broadcasters push pre-encoded frames.
    pub fn recipient(&self) -> Recipient<Push> {
        self.session.recipient()
    }

    pub fn send(&self, packet: Packet) {
        self.session.addr.do_send(Push::Packets(frames(&packet)));
    }

    pub fn emit(&self, name: &str, args: Vec<Value>) {
        self.send(Packet::event(&self.namespace, name, args));
    }

    /// Answers the client's acknowledgement `id`; binary when `attachments`
    /// is not empty.
    pub fn ack(&self, id: u64, args: Vec<Value>, attachments: Vec<Bytes>) {
        let packet = if attachments.is_empty() {
            Packet::ack(&self.namespace, id, args)
        } else {
            Packet::binary_ack(&self.namespace, id, args, attachments)
        };
        self.send(packet);
    }

    /// Emits and calls `on_ack` with the client's acknowledgement arguments.
    pub fn emit_with_ack(
        &self,
        name: &str,
        args: Vec<Value>,
        on_ack: impl FnOnce(Vec<Value>) + Send + 'static,
    ) {
        let namespace = self.namespace.clone();
        let packet = Packet::event(&namespace, name, args);
        self.session.call(move |handler, out| {
            if let Some(socket) = handler.socket(&namespace) {
                let id = socket.next_ack_id;
                socket.next_ack_id += 1;
                socket.pending_acks.insert(id, Box::new(on_ack));
                for frame in frames(&packet.with_ack_id(id)) {
                    out.frames.push(frame);
                }
            }
        });
    }

    /// Runs `f` on this socket's application state inside its session.
    pub fn update(&self, f: impl FnOnce(&mut A::Socket, &SocketRef<A>) + Send + 'static) {
        let namespace = self.namespace.clone();
        self.session.call(move |handler, _| {
            if let Some(socket) = handler.socket(&namespace) {
                f(&mut socket.state, &socket.handle);
            }
        });
    }

    /// Closes the whole engine connection.
    pub fn close(&self, reason: CloseReason) {
        self.session.addr.do_send(Push::Close(reason));
    }

    /// Ends this namespace connection from the server, as the reference's
    /// `socket.disconnect()`: the client hears DISCONNECT (its reason is
    /// "io server disconnect", after which it does not reconnect by
    /// itself), and the app's `disconnect` runs with "server namespace
    /// disconnect". Frames queued before this one reach the client first.
    pub fn disconnect(&self) {
        let namespace = self.namespace.clone();
        self.session.call(move |handler, out| handler.disconnect(&namespace, out));
    }
}

fn frames(packet: &Packet) -> Vec<Outgoing> {
    packet.engine_packets().into_iter().map(Outgoing::Packet).collect()
}

/// Encodes a packet once for many recipients.
pub fn encode_shared(packet: &Packet) -> Arc<SharedMessage> {
    let attachments = if packet.kind.is_binary() { packet.attachments.clone() } else { Vec::new() };
    SharedMessage::message(&packet.encode(), attachments)
}

/// What binary attachments clients may make the server hold. A packet's
/// attachments are held until its last one arrives, for as long as the
/// client keeps that one back: each packet is bounded, and so is what all
/// the sessions of the engine hold at once. A session past either byte
/// bound is sent CONNECT_ERROR (its client's `connect_error`, with
/// `data.code`) and closed; one past `max_attachments` is closed without
/// a packet, as the reference parser does.
#[derive(Debug, Clone)]
pub struct BinaryLimits {
    /// Attachments one packet may declare.
    pub max_attachments: usize,
    /// Bytes the attachments of one packet may come to.
    pub max_packet_bytes: usize,
    /// Bytes of attachments all sessions may hold for incomplete packets.
    pub max_pending_bytes: usize,
    /// Where the bytes held are accounted, and refusals counted.
    pub stats: Arc<EngineStats>,
}

impl Default for BinaryLimits {
    fn default() -> Self {
        Self {
            max_attachments: MAX_ATTACHMENTS,
            max_packet_bytes: 1_000_000,
            max_pending_bytes: 32 << 20,
            stats: Arc::default(),
        }
    }
}

/// Called with the client's ack arguments (alias for clippy's type_complexity).
type AckCallback = Box<dyn FnOnce(Vec<Value>) + Send>;

struct Connected<A: SocketApp> {
    state: A::Socket,
    handle: SocketRef<A>,
    next_ack_id: u64,
    pending_acks: HashMap<u64, AckCallback>,
}

/// The Engine.IO handler that speaks Socket.IO for an application.
pub struct SocketIo<A: SocketApp> {
    app: Arc<A>,
    session: SessionHandle<Self>,
    connect_timeout: Duration,
    decoder: Decoder,
    binary: Arc<BinaryLimits>,
    /// The bytes of the decoder's incomplete packet counted in the
    /// engine's `pending_binary_bytes`.
    held: usize,
    /// The namespaces joined: almost always just one, so a list (a hash
    /// map would cost a kilobyte per idle connection).
    sockets: Vec<Connected<A>>,
    ever_connected: bool,
    /// Drops a client that joins no namespace in time; cancelled once one is.
    connect_timer: Option<SpawnHandle>,
    peer: Option<IpAddr>,
    websocket: bool,
    /// The namespace whose CONNECT waits for `SocketApp::authenticate`.
    authenticating: Option<Arc<str>>,
}

impl<A: SocketApp> SocketIo<A> {
    fn socket(&mut self, namespace: &str) -> Option<&mut Connected<A>> {
        self.sockets.iter_mut().find(|s| &*s.handle.namespace == namespace)
    }

    fn disconnect(&mut self, namespace: &str, out: &mut Output) {
        let Some(i) = self.sockets.iter().position(|s| &*s.handle.namespace == namespace) else {
            return;
        };
        let socket = self.sockets.swap_remove(i);
        for frame in frames(&Packet::disconnect(namespace)) {
            out.frames.push(frame);
        }
        self.app.disconnect(socket.state, &socket.handle, "server namespace disconnect");
        if self.sockets.is_empty() {
            // The client closes a connection left without namespaces; one
            // that does not is closed for it.
            self.close_later();
        }
    }

    /// Closes the engine connection after a grace period, leaving the
    /// client time to close it first (see `connect`).
    fn close_later(&self) {
        let session = self.session.addr.clone();
        actix::spawn(async move {
            tokio::time::sleep(REFUSED_CLOSE_GRACE).await;
            session.do_send(Push::Close(CloseReason::ForcedClose));
        });
    }

    fn handle_packet(&mut self, packet: Packet, permit: InboundPermit, out: &mut Output) {
        let connected = self.sockets.iter().any(|s| *s.handle.namespace == *packet.namespace);
        let authenticating = self.authenticating.as_deref() == Some(packet.namespace.as_str());
        match packet.kind {
            PacketKind::Connect if !connected && !authenticating => {
                self.connect(packet.namespace.as_str().into(), packet, permit, out)
            }
            PacketKind::Disconnect if connected => {
                if let Some(i) = self.sockets.iter().position(|s| *s.handle.namespace == *packet.namespace) {
                    let socket = self.sockets.swap_remove(i);
                    self.app.disconnect(socket.state, &socket.handle, "client namespace disconnect");
                }
            }
            PacketKind::Event | PacketKind::BinaryEvent if connected => {
                let name = packet.event_name().map(|n| n.into_owned()).unwrap_or_default();
                let args = packet.args().to_vec();
                let event = Event { name, args, attachments: packet.attachments, ack: packet.ack_id, permit };
                let app = self.app.clone();
                if let Some(socket) = self.socket(&packet.namespace) {
                    app.event(&mut socket.state, &socket.handle, event);
                }
            }
            PacketKind::Ack | PacketKind::BinaryAck if connected => {
                let ack_id = packet.ack_id;
                let callback = self
                    .socket(&packet.namespace)
                    .and_then(|s| ack_id.and_then(|id| s.pending_acks.remove(&id)));
                // An ack nobody waits for is ignored, as the reference does.
                if let Some(callback) = callback {
                    callback(packet.args().to_vec());
                }
            }
            // A packet for a namespace not joined, a second CONNECT, or a
            // CONNECT_ERROR from a client: the reference closes at once.
            _ => out.close(CloseReason::ForcedClose),
        }
    }

    fn connect(&mut self, namespace: Arc<str>, packet: Packet, permit: InboundPermit, out: &mut Output) {
        let auth = match packet.data {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let handle = SocketRef {
            id: crate::engineio::new_sid(),
            namespace: namespace.clone(),
            peer: self.peer,
            websocket: self.websocket,
            session: self.session.clone(),
        };
        let Some(pending) = self.app.authenticate(&handle, &auth) else {
            return self.decide(handle, &auth, out);
        };
        // One at a time (only one CONNECT per namespace is in flight), and
        // the permit is held meanwhile: a client cannot pile them up.
        self.authenticating = Some(namespace);
        let session = self.session.clone();
        actix::spawn(async move {
            let auth = pending.await;
            session.call(move |handler, out| {
                drop(permit);
                handler.authenticating = None;
                let mut handle = handle;
                handle.websocket = handler.websocket;
                handler.decide(handle, &auth, out);
            });
        });
    }

    fn decide(&mut self, handle: SocketRef<A>, auth: &Map<String, Value>, out: &mut Output) {
        let namespace = handle.namespace.clone();
        match self.app.connect(&handle, auth) {
            Ok(Accepted { state, id, reply, before, after }) => {
                let handle = match id {
                    Some(id) => handle.with_id(id),
                    None => handle,
                };
                // The CONNECT reply is written before anything the app emits:
                // the app's emits travel through the mailbox, after this.
                out.frames.extend(before.into_iter().map(Outgoing::Shared));
                out.frames.extend(frames(&Packet::connect_ok_with(&namespace, &handle.id, reply)));
                out.frames.extend(after.into_iter().map(Outgoing::Shared));
                self.ever_connected = true;
                self.sockets.reserve_exact(1);
                self.sockets.push(Connected { state, handle, next_ack_id: 0, pending_acks: HashMap::new() });
            }
            Err(Refusal::InvalidNamespace) => {
                for frame in frames(&Packet::connect_error(&namespace, "Invalid namespace")) {
                    out.frames.push(frame);
                }
            }
            Err(Refusal::Refused { message, close }) => {
                for frame in frames(&Packet::connect_error(&namespace, &message)) {
                    out.frames.push(frame);
                }
                if close {
                    // Clients drop their connection themselves on a refused
                    // CONNECT; closing it under them at the same instant races
                    // their own goodbye (python-engineio then hangs for a
                    // ping interval). So close after a grace period. Until then
                    // nothing from this client is processed: any further
                    // packet for the refused namespace closes at once.
                    self.close_later();
                }
            }
        }
    }
}

/// Which bound on binary attachments a session went past.
#[derive(Debug, Clone, Copy)]
enum BinaryRefusal {
    Packet,
    Budget,
}

impl<A: SocketApp> SocketIo<A> {
    /// Accounts for the decoder holding `bytes` now; false, holding
    /// nothing more, when that would take the engine past its budget.
    fn hold(&mut self, bytes: usize) -> bool {
        let pending = &self.binary.stats.pending_binary_bytes;
        if bytes <= self.held {
            pending.fetch_sub(self.held - bytes, Ordering::AcqRel);
            self.held = bytes;
            return true;
        }
        let more = bytes - self.held;
        let max = self.binary.max_pending_bytes;
        let taken = pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            now.checked_add(more).filter(|total| *total <= max)
        });
        if taken.is_ok() {
            self.held = bytes;
        }
        taken.is_ok()
    }

    /// Closes a session that went past a bound on binary attachments,
    /// telling its client why first. Logged here, once: the session ends.
    fn refuse_binary(&mut self, refusal: BinaryRefusal, out: &mut Output) {
        let limits = &self.binary;
        let (code, message) = match refusal {
            BinaryRefusal::Packet => {
                limits.stats.binary_packet_refusals.fetch_add(1, Ordering::Relaxed);
                (
                    "payload_too_large",
                    format!(
                        "the binary attachments of a packet may come to {} bytes at most",
                        limits.max_packet_bytes
                    ),
                )
            }
            BinaryRefusal::Budget => {
                limits.stats.binary_budget_refusals.fetch_add(1, Ordering::Relaxed);
                (
                    "over_capacity",
                    format!(
                        "the server holds {} bytes of incomplete binary packets, its limit; try again later",
                        limits.max_pending_bytes
                    ),
                )
            }
        };
        log::warn!("sid={} binary packet refused ({code}): {message}; closing the session", self.session.sid);
        // The packet is dropped now, not when the session ends.
        self.decoder = Decoder::with_limits(limits.max_attachments, limits.max_packet_bytes);
        self.hold(0);
        let namespaces: Vec<Arc<str>> = self.sockets.iter().map(|s| s.handle.namespace.clone()).collect();
        let namespaces = if namespaces.is_empty() { vec![Arc::from("/")] } else { namespaces };
        for namespace in namespaces {
            let packet = Packet::connect_error_with_data(&namespace, &message, json!({ "code": code }));
            out.frames.extend(frames(&packet));
        }
        out.close(CloseReason::ForcedClose);
    }
}

impl<A: SocketApp> EngineHandler for SocketIo<A> {
    fn opened(&mut self, _: &mut Output, ctx: &mut Context<SocketSession<Self>>) {
        self.connect_timer = Some(ctx.run_later(self.connect_timeout, |session, ctx| {
            if !session.handler.ever_connected {
                session.close(CloseReason::ForcedClose, ctx);
            }
        }));
    }

    fn message(
        &mut self,
        message: Incoming,
        permit: InboundPermit,
        out: &mut Output,
        ctx: &mut Context<SocketSession<Self>>,
    ) {
        let decoded = match message {
            Incoming::Text(text) => self.decoder.feed_text(&text),
            Incoming::Binary(bytes) => self.decoder.feed_binary(bytes),
        };
        if !self.hold(self.decoder.pending_bytes()) {
            return self.refuse_binary(BinaryRefusal::Budget, out);
        }
        match decoded {
            Ok(Some(packet)) => {
                // The permit of a binary event's last piece stands for the
                // whole event; the pieces before it are held by the decoder.
                self.handle_packet(packet, permit, out);
                if self.ever_connected
                    && let Some(timer) = self.connect_timer.take()
                {
                    ctx.cancel_future(timer);
                }
            }
            Ok(None) => {}
            Err(SocketError::TooManyAttachments(max)) => {
                // The reference parser's own bound: closed as it closes,
                // without a packet, but counted like the other caps.
                self.binary.stats.binary_packet_refusals.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "sid={} binary packet refused: more than {max} attachments; closing",
                    self.session.sid
                );
                out.close(CloseReason::ForcedClose);
            }
            Err(SocketError::AttachmentsTooLarge(_)) => self.refuse_binary(BinaryRefusal::Packet, out),
            Err(e) => {
                log::debug!("sid={} malformed packet: {e}", self.session.sid);
                out.close(CloseReason::ForcedClose);
            }
        }
    }

    fn upgraded(&mut self, _out: &mut Output) {
        self.websocket = true;
        for socket in &mut self.sockets {
            self.app.upgraded(&mut socket.state, &socket.handle);
        }
    }

    fn closed(&mut self, reason: CloseReason) {
        self.hold(0);
        for socket in self.sockets.drain(..) {
            self.app.disconnect(socket.state, &socket.handle, reason.as_str());
        }
    }
}

/// Makes a [`SocketIo`] handler for each Engine.IO session.
pub struct SocketIoFactory<A: SocketApp> {
    pub app: Arc<A>,
    pub connect_timeout: Duration,
    pub binary: Arc<BinaryLimits>,
}

impl<A: SocketApp> HandlerFactory for SocketIoFactory<A> {
    type Handler = SocketIo<A>;

    fn create(&self, session: SessionHandle<SocketIo<A>>, request: &actix_http::RequestHead) -> SocketIo<A> {
        SocketIo {
            app: self.app.clone(),
            session,
            connect_timeout: self.connect_timeout,
            decoder: Decoder::with_limits(self.binary.max_attachments, self.binary.max_packet_bytes),
            binary: self.binary.clone(),
            held: 0,
            sockets: Vec::new(),
            ever_connected: false,
            connect_timer: None,
            peer: request.peer_addr.map(|a| a.ip()),
            websocket: request.uri.query().is_some_and(|q| q.split('&').any(|p| p == "transport=websocket")),
            authenticating: None,
        }
    }
}
