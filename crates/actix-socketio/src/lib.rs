//! A Socket.IO v4 server on actix: Engine.IO 4 sessions over WebSocket and
//! HTTP long-polling (with upgrade), and Socket.IO 5 namespaces, events,
//! acknowledgements and binary attachments on top. It knows nothing of the
//! application it serves: an application implements [`socketio::SocketApp`]
//! (or, for Engine.IO alone, [`engineio::EngineHandler`]).
//!
//! - [`protocol`]: the pure codecs (Engine.IO packets and payloads,
//!   Socket.IO packets); no IO, no actors.
//! - [`engineio`]: sessions, transports, heartbeats and the HTTP server with
//!   WebSocket upgrades taken off the HTTP layer.
//! - [`socketio`]: the Socket.IO layer, one [`engineio::EngineHandler`] that
//!   calls a [`socketio::SocketApp`].
//!
//! `examples/protocol_echo.rs` is the smallest complete server; the wire
//! conformance tests in `tests/` run against it.

pub mod engineio;
pub mod protocol;
pub mod socketio;
