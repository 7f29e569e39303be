//! Cross-origin requests from browser pages: actix-cors set from
//! `CORS_ORIGINS`, its refusals rendered in the contract's error shape
//! (it answers them in plain text itself), and the check of WebSocket
//! upgrades, which never reach the App and so never meet the middleware.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix_cors::{Cors, CorsError};
use actix_socketio::engineio::origin::OriginPolicy;
use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::{Error, HttpResponse};
use futures_util::future::LocalBoxFuture;

use super::error::ApiError;
use crate::metrics::Metrics;
use crate::origins::AllowedOrigins;

/// The CORS middleware for `origins`. Entries were checked at start (see
/// `origins`), so each one is an origin actix-cors accepts.
pub fn middleware(origins: &AllowedOrigins) -> Cors {
    let cors = Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        // So that a page can read how long to wait after a 429 or a 503.
        .expose_headers([header::RETRY_AFTER])
        .max_age(3600);
    match origins {
        AllowedOrigins::Any => cors.allow_any_origin(),
        AllowedOrigins::None => cors,
        // Credentials for the origins named (never for "*"): CivicPulse sets
        // no cookie, but clients that send them (the Admin UI's
        // `withCredentials`, a proxy's sticky cookie) must be let through.
        AllowedOrigins::List(list) => {
            list.iter().fold(cors.supports_credentials(), |cors, origin| cors.allowed_origin(origin))
        }
    }
}

/// Wraps the CORS middleware: a request it refuses itself (a preflight
/// from an origin, for a method or with headers not allowed) is answered
/// in the error shape instead of its plain text.
pub fn error_shape<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> LocalBoxFuture<'static, Result<ServiceResponse<EitherBody<B, BoxBody>>, Error>>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    let fut = srv.call(req);
    Box::pin(async move {
        let res = fut.await?;
        let Some(refusal) = res.response().error().and_then(|e| e.as_error::<CorsError>()) else {
            return Ok(res.map_into_left_body());
        };
        let error = refused(refusal);
        log::debug!(target: "civicpulse::http", "cross-origin request refused: {refusal}");
        let (req, _) = res.into_parts();
        let mut answer = HttpResponse::build(error.status);
        answer.insert_header((header::VARY, "Origin"));
        Ok(ServiceResponse::new(req, answer.json(error.body())).map_into_right_body())
    })
}

fn refused(refusal: &CorsError) -> ApiError {
    match refusal {
        CorsError::OriginNotAllowed => ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this origin is not in CORS_ORIGINS (entries must equal the page's origin exactly)",
        ),
        CorsError::MethodNotAllowed | CorsError::HeadersNotAllowed => {
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", refusal.to_string())
        }
        other => ApiError::malformed(other.to_string()),
    }
}

/// The check of WebSocket upgrades (`WS_ORIGIN_CHECK`): a page must be of
/// an allowed origin or the server's own (upgrades without an `Origin`,
/// from clients that are not browsers, pass before this is asked).
/// Refusals are counted.
pub fn upgrade_check(origins: &AllowedOrigins, metrics: Arc<Metrics>) -> OriginPolicy {
    let origins = origins.clone();
    OriginPolicy::new(move |origin, host| {
        let allowed = origins.allows(origin, host);
        if !allowed {
            metrics.ws_origin_refusals.fetch_add(1, Ordering::Relaxed);
            log::debug!(target: "civicpulse::http", "websocket upgrade from origin {origin:?} refused");
        }
        allowed
    })
}

/// Who may read the refusals answered before the App (429
/// `too_many_connections`, 503 `over_capacity`): the pages CORS allows.
pub fn refusals_readable_by(origins: &AllowedOrigins) -> OriginPolicy {
    let origins = origins.clone();
    OriginPolicy::new(move |origin, host| origins.allows(origin, host))
}
