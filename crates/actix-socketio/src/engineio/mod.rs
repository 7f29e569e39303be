//! Engine.IO v4 server on actix: sessions, transports (WebSocket and HTTP
//! long-polling with upgrade) and heartbeats. It knows nothing of Socket.IO
//! or of any application: whatever runs on top implements [`EngineHandler`].
//!
//! - `session`: the [`SocketSession`] actor, one per Engine.IO session,
//!   whatever carries it: the handler, the heartbeat, closing, and the
//!   messages of its WebSocket.
//! - `polling`: the long-polling transport (GET, POST, the outbox).
//! - `probe`: a WebSocket taking over a polling session (the upgrade).
//! - `ws`: one WebSocket connection on its own TCP stream, relaying frames.
//! - `inbound`: the bound on client messages being worked on.
//! - `drain`: closing every session when the server stops, so that clients
//!   reconnect elsewhere at once ([`DrainPlan`]).
//! - `endpoint`: the HTTP entry point (handshake, polling GET and POST).
//! - `upgrade`: WebSocket upgrades, taken off the HTTP layer.
//! - `server`: the HTTP server with that bypass built in.
//! - `limits`: the server's caps on connections (per address, in all,
//!   with a reserve for health checks) and on slow request bodies.
//! - `origin`: the application's rule for browser origins, for the
//!   upgrades and refusals its CORS middleware never sees.
//! - `router`: which node owns a session, when several nodes serve one
//!   endpoint without sticky sessions ([`SessionRouter`], the sid format).
//! - `forward`: requests for another node's session, passed to it.

mod drain;
pub mod endpoint;
mod forward;
// The fuzz targets' way in to checks that are not public API.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod inbound;
pub mod limits;
pub mod origin;
mod polling;
mod probe;
pub mod router;
pub mod server;
pub mod session;
pub mod upgrade;
pub mod ws;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use dashmap::DashMap;

use crate::protocol::engine;
pub use drain::{DrainPlan, Drained};
pub use inbound::InboundPermit;
pub use router::{FORWARDED_HEADER, InvalidTag, SessionRouter};
pub use session::SocketSession;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub max_payload: usize,
    pub upgrade_timeout: Duration,
    /// Bytes that may wait for a client that is not reading (WebSocket
    /// write backlog, or the polling outbox) before it is disconnected.
    pub max_buffered_bytes: usize,
    /// Client messages the application may be working on at once per
    /// connection before the server stops reading from it (see `inbound`).
    pub max_inflight: usize,
    /// How long a server-side close on polling waits for the client's next
    /// GET to deliver it.
    pub polling_close_timeout: Duration,
    /// Where the engine counts what an operator wants to see; the
    /// application passes in its own to read them (there is no global).
    pub stats: Arc<EngineStats>,
}

/// Counters of one engine, read by the application's metrics.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Sessions closed because their client stopped reading.
    pub slow_client_disconnects: AtomicU64,
    /// Polling requests answered by the node that owns their session.
    pub forwarded_requests: AtomicU64,
    /// WebSocket upgrades handed to the node that owns their session.
    pub forwarded_upgrades: AtomicU64,
    /// Requests and upgrades for another node's session that could not be
    /// forwarded (no live node with the tag, or it did not answer); they
    /// were answered "Session ID unknown".
    pub forward_failures: AtomicU64,
    /// Bytes of binary attachments held for packets still incomplete, by
    /// every session (see `socketio::BinaryLimits`).
    pub pending_binary_bytes: AtomicUsize,
    /// Sessions closed for a packet with more attachments, or more bytes
    /// of them, than one may have.
    pub binary_packet_refusals: AtomicU64,
    /// Sessions closed because the attachments held by all of them would
    /// have gone past their budget.
    pub binary_budget_refusals: AtomicU64,
}

impl EngineStats {
    pub(crate) fn slow_client_disconnected(&self) {
        self.slow_client_disconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn forwarded_request(&self) {
        self.forwarded_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn forwarded_upgrade(&self) {
        self.forwarded_upgrades.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn forward_failed(&self) {
        self.forward_failures.fetch_add(1, Ordering::Relaxed);
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            max_payload: 1_000_000,
            upgrade_timeout: Duration::from_millis(10_000),
            max_buffered_bytes: 4 * 1024 * 1024,
            max_inflight: 128,
            polling_close_timeout: Duration::from_millis(30_000),
            stats: Arc::default(),
        }
    }
}

/// Engine.IO close reasons (also what Socket.IO reports as disconnect reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    TransportClose,
    TransportError,
    PingTimeout,
    ParseError,
    ForcedClose,
    /// The server is stopping (see `drain`): the Socket.IO reference's
    /// reason when it closes its sockets on the way down. Clients see
    /// "transport close" and reconnect.
    ServerShuttingDown,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ParseError => "parse error",
            CloseReason::ForcedClose => "forced close",
            CloseReason::ServerShuttingDown => "server shutting down",
        }
    }
}

/// A message as the client sent it.
#[derive(Debug, Clone)]
pub enum Incoming {
    Text(String),
    Binary(Bytes),
}

/// A message encoded once and shared by every recipient: the Engine.IO
/// text packet (e.g. `42["issue:created",{…}]`) and any binary messages.
#[derive(Debug)]
pub struct SharedMessage {
    pub text: ByteString,
    pub binaries: Vec<Bytes>,
    /// The text and binaries as WebSocket frames, made by the first
    /// WebSocket recipient and shared by the rest.
    ws_frames: OnceLock<Vec<Bytes>>,
}

impl SharedMessage {
    /// Wraps a Socket.IO packet's text (without the Engine.IO `4`).
    pub fn message(socket_text: &str, binaries: Vec<Bytes>) -> Arc<Self> {
        let mut text = String::with_capacity(socket_text.len() + 1);
        text.push('4');
        text.push_str(socket_text);
        Arc::new(Self { text: ByteString::from(text), binaries, ws_frames: OnceLock::new() })
    }

    /// The message as WebSocket frames (the text, then each binary),
    /// encoded once for every recipient.
    pub fn ws_frames(&self) -> &[Bytes] {
        self.ws_frames.get_or_init(|| {
            let binaries = self.binaries.iter().cloned().map(ws::binary_frame);
            std::iter::once(ws::text_frame(self.text.clone())).chain(binaries).collect()
        })
    }

    /// What the message costs to hold, for the buffering bound.
    pub(crate) fn len(&self) -> usize {
        self.text.len() + self.binaries.iter().map(Bytes::len).sum::<usize>()
    }
}

/// Something to write to the client.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Packet(engine::Packet),
    Shared(Arc<SharedMessage>),
}

impl Outgoing {
    /// Roughly what the frame costs to hold, for the buffering bound.
    pub(crate) fn len(&self) -> usize {
        match self {
            Outgoing::Packet(engine::Packet::Message(text) | engine::Packet::Open(text)) => text.len() + 1,
            Outgoing::Packet(engine::Packet::Binary(bytes)) => bytes.len(),
            Outgoing::Packet(_) => 1,
            Outgoing::Shared(frame) => frame.len(),
        }
    }
}

/// Frames pushed to a session from outside it (rooms, broadcasts, the
/// results of asynchronous work). Sent with `try_send`, so a session that
/// cannot keep up refuses instead of growing without bound.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub enum Push {
    /// One message shared with other recipients (a broadcast, a room event).
    Shared(Arc<SharedMessage>),
    /// Packets for this session alone (an acknowledgement, a direct emit).
    Packets(Vec<Outgoing>),
    Close(CloseReason),
}

/// What a handler asks of its session while handling something: frames to
/// write, and whether to close.
#[derive(Default)]
pub struct Output {
    pub(crate) frames: Vec<Outgoing>,
    pub(crate) close: Option<CloseReason>,
}

impl Output {
    pub fn send(&mut self, packet: engine::Packet) {
        self.frames.push(Outgoing::Packet(packet));
    }

    /// Closes the session after the frames queued so far are written.
    pub fn close(&mut self, reason: CloseReason) {
        self.close.get_or_insert(reason);
    }
}

/// The application side of one Engine.IO session.
pub trait EngineHandler: Sized + Unpin + 'static {
    /// Called once, when the session starts.
    fn opened(&mut self, _out: &mut Output, _ctx: &mut Context<SocketSession<Self>>) {}

    /// A message from the client. Keep `permit` while still working on it
    /// (e.g. move it into the future that does the work): the connection
    /// stops reading once too many are out.
    fn message(
        &mut self,
        message: Incoming,
        permit: InboundPermit,
        out: &mut Output,
        ctx: &mut Context<SocketSession<Self>>,
    );

    /// The session moved from long-polling to its WebSocket.
    fn upgraded(&mut self, _out: &mut Output) {}

    /// The session is gone; called exactly once.
    fn closed(&mut self, reason: CloseReason);
}

/// Makes a handler for each new session.
pub trait HandlerFactory: Send + Sync + 'static {
    type Handler: EngineHandler;

    /// `session` addresses the new session; `request` is the handshake.
    fn create(
        &self,
        session: SessionHandle<Self::Handler>,
        request: &actix_http::RequestHead,
    ) -> Self::Handler;
}

/// A handler's way back into its own session from asynchronous work.
pub struct SessionHandle<H: EngineHandler> {
    pub sid: Arc<str>,
    pub addr: Addr<SocketSession<H>>,
}

impl<H: EngineHandler> Clone for SessionHandle<H> {
    fn clone(&self) -> Self {
        Self { sid: self.sid.clone(), addr: self.addr.clone() }
    }
}

impl<H: EngineHandler> SessionHandle<H> {
    /// Where rooms and broadcasters send frames.
    pub fn recipient(&self) -> Recipient<Push> {
        self.addr.clone().recipient()
    }

    /// Runs `f` on the handler inside the session actor (e.g. to apply the
    /// result of a database call). Dropped if the session has ended.
    pub fn call(&self, f: impl FnOnce(&mut H, &mut Output) + Send + 'static) {
        self.addr.do_send(session::RunOnHandler(Box::new(f)));
    }
}

/// The live sessions of one Engine.IO endpoint, by sid.
pub struct Engine<F: HandlerFactory> {
    /// Shared by every session (a copy each would cost 80 bytes a session).
    pub config: Arc<EngineConfig>,
    pub factory: F,
    pub(crate) sessions: DashMap<Arc<str>, Addr<SocketSession<F::Handler>>>,
    /// Set when the endpoint is served by several nodes (see `router`).
    pub(crate) routing: Option<router::Routing>,
    /// Set by `drain`: no new sessions.
    draining: AtomicBool,
}

impl<F: HandlerFactory> Engine<F> {
    /// An engine that serves its own sessions alone.
    pub fn new(config: EngineConfig, factory: F) -> Arc<Self> {
        Self::build(config, factory, None)
    }

    /// An engine that is one of several nodes of an endpoint: its sids
    /// carry `router`'s local tag, and requests for the sessions of other
    /// nodes are forwarded to them (see `router`). Fails when the local
    /// tag does not fit the sid format.
    pub fn routed(
        config: EngineConfig,
        factory: F,
        router: Arc<dyn SessionRouter>,
    ) -> Result<Arc<Self>, InvalidTag> {
        Ok(Self::build(config, factory, Some(router::Routing::new(router)?)))
    }

    fn build(config: EngineConfig, factory: F, routing: Option<router::Routing>) -> Arc<Self> {
        Arc::new(Self {
            config: Arc::new(config),
            factory,
            sessions: DashMap::new(),
            routing,
            draining: AtomicBool::new(false),
        })
    }

    /// An id for a new session of this engine.
    pub(crate) fn new_sid(&self) -> Arc<str> {
        self.routing.as_ref().map_or_else(new_sid, router::Routing::new_sid)
    }
}

/// A new session id: 15 random bytes in URL-safe base64 (20 characters),
/// as the reference server makes them. A routed engine puts its tag in
/// front (see `router`).
pub fn new_sid() -> Arc<str> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 15]>()).into()
}
