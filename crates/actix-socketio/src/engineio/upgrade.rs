//! WebSocket upgrades, taken off the HTTP layer. actix-http hands every
//! `Upgrade: websocket` request here with its connection; an Engine.IO
//! endpoint checks it exactly as a polling request is checked
//! (`endpoint::route`), answers the handshake itself and serves the socket
//! on the bare TCP stream (`ws::spawn`), so the HTTP/1 dispatcher and its
//! buffers are gone for the life of the socket. An upgrade for a session
//! another node owns is spliced onto a connection to that node, which
//! answers it (`forward`).

use std::sync::Arc;

use actix_codec::Framed;
use actix_http::StatusCode;
use actix_http::header;
use actix_http::{Request, RequestHead, h1};
use bytes::BytesMut;
use futures_util::future::LocalBoxFuture;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::SocketSession;
use super::endpoint::{self, Route};
use super::limits::{Conn, Slot};
use super::origin::OriginPolicy;
use super::probe::WsAttach;
use super::ws::{self, WsEvent, WsOutlet};
use super::{Engine, HandlerFactory};
use crate::protocol::engine::HttpError;

/// Serves one upgrade request on its connection; the bytes are whatever
/// the client sent behind the request, the slot the connection's place in
/// the server's count (held for as long as the socket lives).
type Accept = Arc<dyn Fn(Request, TcpStream, BytesMut, Slot) -> LocalBoxFuture<'static, ()> + Send + Sync>;

/// The answer to an upgrade from a page the origin check refuses.
const ORIGIN_REFUSED: &str =
    r#"{"error":{"code":"origin_not_allowed","message":"WebSockets from this origin are not allowed"}}"#;

/// The WebSocket endpoints of a server, by exact path.
#[derive(Clone, Default)]
pub struct WsRoutes {
    routes: Vec<(String, Accept)>,
    origin: Option<OriginPolicy>,
}

impl WsRoutes {
    /// Serves the WebSocket side of `engine` at `path` (its polling side is
    /// mounted on the App with `endpoint::mount`).
    pub fn engine<F: HandlerFactory>(mut self, path: &str, engine: Arc<Engine<F>>) -> Self {
        let accept: Accept =
            Arc::new(move |req, io, early, slot| Box::pin(accept(engine.clone(), req, io, early, slot)));
        self.routes.push((path.to_string(), accept));
        self
    }

    /// Refuses, 403, every upgrade from a page `policy` does not allow,
    /// whatever path (browsers do not apply CORS to WebSockets: this is
    /// where a server says which pages may open them). Upgrades without
    /// an `Origin` (clients that are not browsers) pass.
    pub fn check_origin(mut self, policy: OriginPolicy) -> Self {
        self.origin = Some(policy);
        self
    }

    /// Takes over an upgrade request's connection from the HTTP layer.
    pub async fn serve(&self, req: Request, framed: Framed<Conn, h1::Codec>) {
        let parts = framed.into_parts();
        // Keep only what the client sent after its request, not the HTTP
        // layer's buffers.
        let early = BytesMut::from(&parts.read_buf[..]);
        let (io, slot) = parts.io.into_parts();
        if slot.overflow() {
            // Past the connection limit no socket is opened, whatever path.
            if let Some(refusal) = slot.info().refusal(&req) {
                // A browser reads nothing of a refused upgrade: no CORS.
                return respond_raw(io, &refusal.raw_response(None)).await;
            }
        }
        if self.origin.as_ref().is_some_and(|policy| !policy.allows(req.head().headers())) {
            return respond(io, StatusCode::FORBIDDEN, ORIGIN_REFUSED).await;
        }
        match self.routes.iter().find(|(path, _)| path == req.path()) {
            Some((_, accept)) => accept(req, io, early, slot).await,
            None => {
                let body = r#"{"error":{"code":"not_found","message":"no such route"}}"#;
                respond(io, StatusCode::NOT_FOUND, body).await
            }
        }
    }
}

async fn accept<F: HandlerFactory>(
    engine: Arc<Engine<F>>,
    req: Request,
    mut io: TcpStream,
    early: BytesMut,
    slot: Slot,
) {
    let head = req.head();
    let session = match endpoint::route(&engine, head, true) {
        Ok(Route::WebSocket(session)) => session,
        Ok(Route::Forward(forward)) => {
            if let Err(io) = forward.upgrade(head, io, early, slot).await {
                refuse(io, HttpError::SessionIdUnknown).await;
            }
            return;
        }
        Ok(Route::Polling(_)) => return refuse(io, HttpError::BadRequest).await,
        Ok(Route::Draining) => {
            return respond(io, StatusCode::SERVICE_UNAVAILABLE, endpoint::SHUTTING_DOWN).await;
        }
        Err(e) => return refuse(io, e).await,
    };
    let Some(accept_key) = handshake_key(head) else { return refuse(io, HttpError::BadRequest).await };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: {accept_key}\r\n\r\n"
    );
    let outlet = WsOutlet::new(engine.config.clone());
    // An upgrade attaches before its 101 goes out: a client can open
    // another WebSocket for the session only after reading this 101, so
    // the session hears of the two in the order the client opened them
    // (the second is the one refused), whichever worker serves each.
    let upgrading = session.map(|session| {
        log::debug!("websocket conn={} upgrading a polling session", outlet.id());
        session.do_send(WsAttach(outlet.clone()));
        session.recipient()
    });
    if io.write_all(response.as_bytes()).await.is_err() {
        if let Some(session) = upgrading {
            session.do_send(WsEvent::Closed { conn_id: outlet.id() });
        }
        return;
    }
    // Engine.IO frames are small and latency matters more than packing.
    let _ = io.set_nodelay(true);
    let recipient = match upgrading {
        Some(session) => session,
        None => SocketSession::start(&engine, Some(outlet.clone()), head).1.recipient(),
    };
    // The socket outlives this request: it runs on its own task, so that
    // nothing of the HTTP connection stays behind.
    ws::spawn(io, early, outlet, recipient, engine.config.max_payload, slot);
}

/// The `Sec-WebSocket-Accept` for a valid handshake (RFC 6455 4.2.1).
/// Extensions such as permessage-deflate are declined by not naming them.
pub(crate) fn handshake_key(head: &RequestHead) -> Option<String> {
    if let Err(e) = actix_http::ws::verify_handshake(head) {
        log::debug!("websocket upgrade refused: {e}");
        return None;
    }
    let key = head.headers().get(header::SEC_WEBSOCKET_KEY)?;
    String::from_utf8(actix_http::ws::hash_key(key.as_bytes()).to_vec()).ok()
}

async fn refuse(io: TcpStream, e: HttpError) {
    respond(io, StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST), &e.body()).await
}

/// Answers with a JSON body and closes the connection.
async fn respond(io: TcpStream, status: StatusCode, body: &str) {
    respond_raw(io, &super::limits::raw_response(status, body, None)).await
}

async fn respond_raw(mut io: TcpStream, response: &str) {
    if io.write_all(response.as_bytes()).await.is_ok() {
        let _ = io.shutdown().await;
    }
}
