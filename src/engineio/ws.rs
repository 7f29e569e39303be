//! `WsConnection`: owns one WebSocket and relays between it and its
//! session. It holds no protocol state, so a session can change sockets
//! (polling → WebSocket upgrade) without losing anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use actix::prelude::*;
use actix_web_actors::ws;
use bytes::Bytes;
use bytestring::ByteString;

/// Frames for the client.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum WsWrite {
    Text(ByteString),
    Binary(Bytes),
    Close,
}

/// What the socket reports to its session.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum WsIn {
    Text {
        conn_id: u64,
        text: ByteString,
    },
    Binary {
        conn_id: u64,
        bytes: Bytes,
    },
    /// The client closed the socket (or it went away).
    Closed {
        conn_id: u64,
    },
    /// The socket broke the WebSocket protocol (e.g. a frame over maxPayload).
    Failed {
        conn_id: u64,
    },
}

impl WsIn {
    pub fn conn_id(&self) -> u64 {
        match self {
            WsIn::Text { conn_id, .. }
            | WsIn::Binary { conn_id, .. }
            | WsIn::Closed { conn_id }
            | WsIn::Failed { conn_id } => *conn_id,
        }
    }
}

/// Tells the session about its socket (alias for clippy's type_complexity).
type AttachFn = Box<dyn FnOnce(u64, Recipient<WsWrite>)>;

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Bytes written to a WebSocket but not yet taken by the HTTP layer, i.e.
/// what a client that stops reading leaves queued in the server. The
/// connection adds what it writes; the response stream subtracts what it
/// hands on (see `endpoint::upgrade`).
#[derive(Clone, Default)]
pub struct Backlog(Arc<AtomicUsize>);

impl Backlog {
    fn add(&self, n: usize) -> usize {
        self.0.fetch_add(n, Ordering::Relaxed) + n
    }

    pub fn drained(&self, n: usize) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |queued| Some(queued.saturating_sub(n)));
    }
}

/// Connections closed because their client stopped reading.
pub static SLOW_CLIENT_DISCONNECTS: AtomicU64 = AtomicU64::new(0);

pub struct WsConnection {
    id: u64,
    session: Recipient<WsIn>,
    attach: Option<AttachFn>,
    reported: bool,
    backlog: Backlog,
    max_backlog: usize,
}

impl WsConnection {
    /// `attach` tells the session about this socket once it runs.
    pub fn new(
        session: Recipient<WsIn>,
        backlog: Backlog,
        max_backlog: usize,
        attach: impl FnOnce(u64, Recipient<WsWrite>) + 'static,
    ) -> Self {
        Self {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            session,
            attach: Some(Box::new(attach)),
            reported: false,
            backlog,
            max_backlog,
        }
    }

    /// Accounts for `n` more bytes; false (and the socket is being closed)
    /// when the client has fallen too far behind.
    fn admit(&mut self, n: usize, ctx: &mut ws::WebsocketContext<Self>) -> bool {
        let queued = self.backlog.add(n);
        if queued <= self.max_backlog {
            return true;
        }
        SLOW_CLIENT_DISCONNECTS.fetch_add(1, Ordering::Relaxed);
        log::warn!(target: "civicpulse::engine", "websocket conn={} is not reading ({queued} bytes queued); disconnecting", self.id);
        self.report_end(true);
        ctx.close(Some(ws::CloseCode::Policy.into()));
        ctx.stop();
        false
    }

    fn report_end(&mut self, failed: bool) {
        if !self.reported {
            self.reported = true;
            let conn_id = self.id;
            self.session.do_send(if failed { WsIn::Failed { conn_id } } else { WsIn::Closed { conn_id } });
        }
    }
}

impl Actor for WsConnection {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(attach) = self.attach.take() {
            attach(self.id, ctx.address().recipient());
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.report_end(false);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsConnection {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        let conn_id = self.id;
        match msg {
            Ok(ws::Message::Text(text)) => self.session.do_send(WsIn::Text { conn_id, text }),
            Ok(ws::Message::Binary(bytes)) => self.session.do_send(WsIn::Binary { conn_id, bytes }),
            Ok(ws::Message::Ping(payload)) => ctx.pong(&payload),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Close(_)) => {
                self.report_end(false);
                ctx.close(None);
                ctx.stop();
            }
            // Fragmented messages are not used by Engine.IO clients.
            Ok(ws::Message::Continuation(_)) => {
                self.report_end(true);
                ctx.close(Some(ws::CloseCode::Unsupported.into()));
                ctx.stop();
            }
            Err(e) => {
                log::debug!(target: "civicpulse::engine", "websocket conn={conn_id} protocol error: {e}");
                self.report_end(true);
                let code = match e {
                    ws::ProtocolError::Overflow => ws::CloseCode::Size,
                    _ => ws::CloseCode::Protocol,
                };
                ctx.close(Some(code.into()));
                ctx.stop();
            }
        }
    }
}

impl Handler<WsWrite> for WsConnection {
    type Result = ();

    fn handle(&mut self, msg: WsWrite, ctx: &mut Self::Context) {
        match msg {
            WsWrite::Text(text) => {
                if self.admit(text.len(), ctx) {
                    ctx.text(text)
                }
            }
            WsWrite::Binary(bytes) => {
                if self.admit(bytes.len(), ctx) {
                    ctx.binary(bytes)
                }
            }
            WsWrite::Close => {
                self.reported = true;
                ctx.close(Some(ws::CloseCode::Normal.into()));
                ctx.stop();
            }
        }
    }
}
