//! `WsConnection`: owns one WebSocket and relays between it and its
//! session. It holds no protocol state, so a session can change sockets
//! (polling → WebSocket upgrade) without losing anything.

use std::sync::atomic::{AtomicU64, Ordering};

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

pub struct WsConnection {
    id: u64,
    session: Recipient<WsIn>,
    attach: Option<AttachFn>,
    reported: bool,
}

impl WsConnection {
    /// `attach` tells the session about this socket once it runs.
    pub fn new(session: Recipient<WsIn>, attach: impl FnOnce(u64, Recipient<WsWrite>) + 'static) -> Self {
        Self {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            session,
            attach: Some(Box::new(attach)),
            reported: false,
        }
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
            WsWrite::Text(text) => ctx.text(text),
            WsWrite::Binary(bytes) => ctx.binary(bytes),
            WsWrite::Close => {
                self.reported = true;
                ctx.close(Some(ws::CloseCode::Normal.into()));
                ctx.stop();
            }
        }
    }
}
