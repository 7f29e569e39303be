//! The HTTP entry point of an Engine.IO endpoint: the handshake, polling
//! GET and POST, and WebSocket upgrades. Checks follow the reference
//! server's order, so clients and conformance suites see the same errors.

use std::collections::HashMap;
use std::sync::Arc;

use actix_http::ws::Codec;
use actix_web::http::{Method, StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::session::{PollGet, PostBody, PostStart, SocketSession, WsAttach};
use super::ws::{Backlog, WsConnection};
use super::{Engine, HandlerFactory};
use crate::protocol::engine::HttpError;

/// Mounts an Engine.IO endpoint at `path` (e.g. `/socket.io/`).
pub fn mount<F: HandlerFactory>(cfg: &mut web::ServiceConfig, path: &str, engine: Arc<Engine<F>>) {
    cfg.service(web::resource(path).app_data(web::Data::from(engine)).route(web::route().to(handle::<F>)));
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
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default();
    let websocket = match query.get("transport").map(String::as_str) {
        Some("polling") => false,
        Some("websocket") => true,
        _ => return error(HttpError::TransportUnknown),
    };
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));

    if let Some(sid) = query.get("sid") {
        let Some(session) = engine.sessions.get(sid.as_str()).map(|s| s.clone()) else {
            return error(HttpError::SessionIdUnknown);
        };
        return match (websocket, req.method()) {
            (true, _) if is_upgrade => upgrade(&req, payload, session, &engine.config),
            (true, _) => error(HttpError::BadRequest),
            (false, &Method::GET) => poll(session).await,
            (false, &Method::POST) => post(&req, payload, session, engine.config.max_payload).await,
            (false, _) => HttpResponse::InternalServerError().finish(),
        };
    }

    if req.method() != Method::GET {
        return error(HttpError::BadHandshakeMethod);
    }
    if websocket && !is_upgrade {
        return error(HttpError::BadRequest);
    }
    if query.get("EIO").map(String::as_str) != Some("4") {
        return error(HttpError::UnsupportedProtocolVersion);
    }
    let engine = engine.into_inner();
    let (_, session) = SocketSession::start(&engine, websocket, &req);
    if websocket { upgrade(&req, payload, session, &engine.config) } else { poll(session).await }
}

async fn poll<H: super::EngineHandler>(session: actix::Addr<SocketSession<H>>) -> HttpResponse {
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

async fn post<H: super::EngineHandler>(
    req: &HttpRequest,
    mut payload: web::Payload,
    session: actix::Addr<SocketSession<H>>,
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
                Ok(_) => {
                    outcome = Some(PostBody::TooLarge);
                    break;
                }
                Err(_) => {
                    outcome = Some(PostBody::NotText);
                    break;
                }
            }
        }
        outcome.unwrap_or(PostBody::Received(body.freeze()))
    };
    let too_large = matches!(outcome, PostBody::TooLarge);
    match session.send(outcome).await {
        Ok(Ok(())) if too_large => HttpResponse::PayloadTooLarge().finish(),
        Ok(Ok(())) => HttpResponse::Ok().content_type("text/html").body("ok"),
        Ok(Err(e)) => error(e),
        Err(_) => error(HttpError::SessionIdUnknown),
    }
}

fn upgrade<H: super::EngineHandler>(
    req: &HttpRequest,
    payload: web::Payload,
    session: actix::Addr<SocketSession<H>>,
    config: &super::EngineConfig,
) -> HttpResponse {
    let mut response = match ws::handshake(req) {
        Ok(response) => response,
        Err(e) => {
            log::debug!(target: "civicpulse::engine", "websocket upgrade refused: {e}");
            return error(HttpError::BadRequest);
        }
    };
    let attach_to = session.clone();
    let backlog = Backlog::default();
    let conn = WsConnection::new(
        session.recipient(),
        backlog.clone(),
        config.max_buffered_bytes,
        move |conn_id, conn| attach_to.do_send(WsAttach { conn_id, conn }),
    );
    let frames = ws::WebsocketContext::with_codec(conn, payload, Codec::new().max_size(config.max_payload));
    // What the HTTP layer takes from the stream is no longer queued here.
    response.streaming(frames.inspect(move |chunk| {
        if let Ok(bytes) = chunk {
            backlog.drained(bytes.len());
        }
    }))
}
