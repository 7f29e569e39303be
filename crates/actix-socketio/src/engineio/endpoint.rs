//! The HTTP entry point of an Engine.IO endpoint: the handshake and
//! polling GET and POST. WebSocket upgrades never reach actix-web (see
//! `upgrade`), but both go through [`route`], so clients and conformance
//! suites see the reference server's checks, in its order, either way.
//! A request for a session another node owns is passed to it (`forward`).

use std::collections::HashMap;
use std::sync::Arc;

use actix::Addr;
use actix_http::RequestHead;
use actix_web::http::{Method, StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::SocketSession;
use super::forward::Forward;
use super::limits;
use super::polling::{PollGet, PostBody, PostStart};
use super::router::FORWARDED_HEADER;
use super::{Engine, EngineHandler, HandlerFactory};
use crate::protocol::engine::HttpError;

/// Mounts an Engine.IO endpoint's polling side at `path` (e.g. `/socket.io/`).
pub fn mount<F: HandlerFactory>(cfg: &mut web::ServiceConfig, path: &str, engine: Arc<Engine<F>>) {
    cfg.service(web::resource(path).app_data(web::Data::from(engine)).route(web::route().to(handle::<F>)));
}

/// Where a request goes: a new session (`None`) or an existing one, on
/// polling or on a WebSocket, or to the node that owns its session.
pub(crate) enum Route<H: EngineHandler> {
    Polling(Option<Addr<SocketSession<H>>>),
    WebSocket(Option<Addr<SocketSession<H>>>),
    Forward(Forward),
    /// A new session while the engine drains: refused with
    /// [`SHUTTING_DOWN`], so that the client's next attempt goes elsewhere
    /// instead of to a session about to be closed.
    Draining,
}

/// The answer to a handshake while the engine drains (with status 503).
pub(crate) const SHUTTING_DOWN: &str = r#"{"message":"Server is shutting down"}"#;

/// The reference server's checks, in its order. `upgrade` says whether the
/// request asks for a WebSocket (`Upgrade: websocket`). A session another
/// node owns is left to that node to check.
pub(crate) fn route<F: HandlerFactory>(
    engine: &Engine<F>,
    head: &RequestHead,
    upgrade: bool,
) -> Result<Route<F::Handler>, HttpError> {
    let query = web::Query::<HashMap<String, String>>::from_query(head.uri.query().unwrap_or(""))
        .map(|q| q.into_inner())
        .unwrap_or_default();
    let websocket = match query.get("transport").map(String::as_str) {
        Some("polling") => false,
        Some("websocket") => true,
        _ => return Err(HttpError::TransportUnknown),
    };
    if let Some(sid) = query.get("sid") {
        let Some(session) = engine.sessions.get(sid.as_str()).map(|s| s.clone()) else {
            return forward(engine, head, sid).map(Route::Forward).ok_or(HttpError::SessionIdUnknown);
        };
        return match (websocket, upgrade) {
            (true, true) => Ok(Route::WebSocket(Some(session))),
            (false, false) => Ok(Route::Polling(Some(session))),
            // A transport that does not match the request.
            _ => Err(HttpError::BadRequest),
        };
    }
    if head.method != Method::GET {
        return Err(HttpError::BadHandshakeMethod);
    }
    if websocket != upgrade {
        return Err(HttpError::BadRequest);
    }
    if query.get("EIO").map(String::as_str) != Some("4") {
        return Err(HttpError::UnsupportedProtocolVersion);
    }
    if engine.is_draining() {
        return Ok(Route::Draining);
    }
    Ok(if websocket { Route::WebSocket(None) } else { Route::Polling(None) })
}

/// How to reach the owner of a sid this node does not know. Never for a
/// request that was forwarded already: a sid its owner no longer knows is
/// unknown, not a reason to go round the nodes.
fn forward<F: HandlerFactory>(engine: &Engine<F>, head: &RequestHead, sid: &str) -> Option<Forward> {
    if head.headers().contains_key(FORWARDED_HEADER) {
        return None;
    }
    engine.routing.as_ref()?.forward(sid, &engine.config)
}

fn error(e: HttpError) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST))
        .content_type("application/json")
        .body(e.body())
}

async fn handle<F: HandlerFactory>(
    req: HttpRequest,
    payload: web::Payload,
    engine: web::Data<Engine<F>>,
) -> HttpResponse {
    match route(&engine, req.head(), false) {
        Err(e) => error(e),
        Ok(Route::Forward(forward)) => {
            forward.polling(req.head(), payload).await.unwrap_or_else(|| error(HttpError::SessionIdUnknown))
        }
        Ok(Route::Polling(Some(session))) => match *req.method() {
            Method::GET => poll(session).await,
            Method::POST => post(&req, payload, session, engine.config.max_payload).await,
            _ => HttpResponse::InternalServerError().finish(),
        },
        Ok(Route::Polling(None)) => {
            let (_, session) = SocketSession::start(&engine.into_inner(), None, req.head());
            poll(session).await
        }
        // `route` answers a WebSocket only to an upgrade, and upgrades are
        // served before actix-web.
        Ok(Route::WebSocket(_)) => error(HttpError::BadRequest),
        Ok(Route::Draining) => HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .force_close()
            .body(SHUTTING_DOWN),
    }
}

async fn poll<H: EngineHandler>(session: Addr<SocketSession<H>>) -> HttpResponse {
    let (reply, answer) = oneshot::channel();
    if session.send(PollGet(reply)).await.is_err() {
        return error(HttpError::SessionIdUnknown);
    }
    match answer.await {
        Ok(Ok(body)) => HttpResponse::Ok()
            .content_type("text/plain; charset=UTF-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(body),
        Ok(Err(e)) => error(e),
        // The session ended without answering.
        Err(_) => error(HttpError::SessionIdUnknown),
    }
}

async fn post<H: EngineHandler>(
    req: &HttpRequest,
    mut payload: web::Payload,
    session: Addr<SocketSession<H>>,
    max_payload: usize,
) -> HttpResponse {
    match session.send(PostStart).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return error(e),
        Err(_) => return error(HttpError::SessionIdUnknown),
    }
    let binary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    let outcome = if binary {
        PostBody::NotText
    } else {
        let mut body = web::BytesMut::new();
        let mut outcome = None;
        while let Some(chunk) = payload.next().await {
            match chunk {
                Ok(chunk) if body.len() + chunk.len() <= max_payload => body.extend_from_slice(&chunk),
                Ok(chunk) => {
                    discard(&mut payload, body.len() + chunk.len(), max_payload).await;
                    outcome = Some(PostBody::TooLarge);
                    break;
                }
                Err(e) => {
                    outcome = Some(match limits::body_timeout(&e) {
                        Some(timeout) => PostBody::TimedOut(timeout),
                        None => PostBody::NotText,
                    });
                    break;
                }
            }
        }
        outcome.unwrap_or(PostBody::Received(body.freeze()))
    };
    let too_large = matches!(outcome, PostBody::TooLarge);
    let timed_out = match outcome {
        PostBody::TimedOut(timeout) => Some(timeout),
        _ => None,
    };
    let answer = session.send(outcome).await;
    if let Some(timeout) = timed_out {
        // The session is closed (its stream lost a piece), and the server
        // closes the connection (see `limits`).
        return HttpResponse::RequestTimeout()
            .content_type("application/json")
            .body(limits::body_timeout_body(timeout));
    }
    match answer {
        Ok(Ok(_)) if too_large => HttpResponse::PayloadTooLarge().finish(),
        Ok(Ok(inflight)) => {
            // Answered once the application is below its bound on messages
            // in hand: a client sends its next POST only after this one is
            // answered, so a flood of POSTs holds itself back.
            inflight.room().await;
            HttpResponse::Ok().content_type("text/html").body("ok")
        }
        Ok(Err(e)) => error(e),
        Err(_) => error(HttpError::SessionIdUnknown),
    }
}

/// Reads and drops the rest of a body over `max_payload`, of which `read`
/// bytes are in.
async fn discard(payload: &mut web::Payload, read: usize, max_payload: usize) {
    discard_body(payload, read, max_payload.saturating_mul(4).max(16 << 20)).await;
}

/// Reads and drops the rest of a request body that is refused as too
/// large, of which `read` bytes are in, up to `bound` bytes in all: a 413
/// sent before the body is read closes the connection under a client, or a
/// proxy, that sends the whole body before it reads, and it sees a reset (a
/// proxy answers 502) instead. A body that goes on past the bound is cut
/// off, connection and all.
pub async fn discard_body<S, E>(payload: &mut S, mut read: usize, bound: usize)
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    while read <= bound {
        match payload.next().await {
            Some(Ok(chunk)) => read += chunk.len(),
            _ => return,
        }
    }
}
