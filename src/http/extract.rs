//! Request extractors: the signed-in user and bounded JSON bodies, both
//! failing with [`ApiError`] so every rejection has the contract's shape.

use std::future::{Ready, ready};
use std::pin::Pin;

use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use futures_util::StreamExt;
use serde_json::Value;

use actix_socketio::engineio::endpoint::discard_body;
use actix_socketio::engineio::limits::body_timeout;

use super::error::ApiError;
use super::rate_limit::WriteLimits;
use crate::domain::{Domain, DomainError, Principal};

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A refused body is read out (so that the client, or a proxy, hears the
/// 413 rather than a reset) up to this size; a bigger one is cut off.
const DISCARD_BYTES: usize = 16 * MAX_BODY_BYTES;

/// The user named by a valid `Authorization: Bearer` access token.
pub struct Auth(pub Principal);

impl FromRequest for Auth {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).map(Auth))
    }
}

/// The signed-in user of a write (creating, changing, upvoting, posting,
/// reacting), within the write limits of the user and of the address.
pub struct Writer(pub Principal);

impl FromRequest for Writer {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).and_then(|who| {
            if let Some(limits) = req.app_data::<web::Data<WriteLimits>>() {
                limits.check(&who.user_id, req.peer_addr().map(|a| a.ip()))?;
            }
            Ok(Writer(who))
        }))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Principal, ApiError> {
    let domain = req
        .app_data::<web::Data<Domain>>()
        .ok_or_else(|| ApiError::from(DomainError::Internal("no domain".into())))?;
    let header = req.headers().get(actix_web::http::header::AUTHORIZATION).and_then(|h| h.to_str().ok());
    let token = header
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 4096)
        .ok_or_else(|| ApiError::from(DomainError::invalid_token()))?;
    Ok(Principal::from(domain.verify_access(token)?))
}

/// A JSON body of at most [`MAX_BODY_BYTES`], parsed but not yet validated
/// (validation lives in the domain, shared with socket payloads).
pub struct JsonBody(pub Value);

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
                if declared.is_some_and(|n| n <= DISCARD_BYTES) {
                    discard_body(&mut payload, 0, DISCARD_BYTES).await;
                }
                return Err(too_large());
            }
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| match body_timeout(&e) {
                    Some(timeout) => ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        format!("the request body did not arrive within {} ms", timeout.as_millis()),
                    ),
                    None => ApiError::malformed(format!("could not read the body: {e}")),
                })?;
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    discard_body(&mut payload, body.len() + chunk.len(), DISCARD_BYTES).await;
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            if body.is_empty() {
                return Err(ApiError::malformed("a JSON body is required"));
            }
            serde_json::from_slice(&body).map(JsonBody).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_json",
                    format!("body is not valid JSON: {e}"),
                )
            })
        })
    }
}

fn too_large() -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request body exceeds 1 MiB")
}
