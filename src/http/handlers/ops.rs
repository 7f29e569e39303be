//! Liveness, readiness and metrics, for load balancers and Prometheus; and
//! the OpenAPI document.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::cluster::Cluster;
use crate::domain::Domain;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::openapi;
use crate::metrics::Metrics;

/// The answer of `/healthz` (`ok`) and `/readyz` (`ready`).
#[derive(Serialize, ToSchema)]
pub struct Status {
    #[schema(value_type = String, pattern = "^(ok|ready)$")]
    pub status: &'static str,
}

/// 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "the process runs", body = Status)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok" })
}

/// What readiness depends on besides the database.
pub struct Readiness {
    /// In cluster mode: a node that cannot reach Redis serves its own
    /// sockets but is not one server with the others.
    pub cluster: Option<Arc<Cluster>>,
    /// Set from the moment the node is told to stop (see `shutdown`).
    pub draining: Arc<AtomicBool>,
}

/// 200 when the database (and in cluster mode Redis) answers and the node
/// is not stopping.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "ready", body = Status),
        (status = 503, description = "`not_ready`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds to wait"))),
    ))]
pub async fn readyz(domain: web::Data<Domain>, readiness: web::Data<Readiness>) -> HttpResponse {
    let not_ready = |message: &str| {
        ApiError {
            retry_after: Some(2),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
        }
        .error_response()
    };
    if readiness.draining.load(Ordering::Relaxed) {
        return not_ready("this node is shutting down");
    }
    if !domain.db.ping().await {
        return not_ready("the database does not answer");
    }
    if readiness.cluster.as_ref().is_some_and(|c| !c.is_healthy()) {
        return not_ready("Redis does not answer: this node is not in the cluster");
    }
    HttpResponse::Ok().json(Status { status: "ready" })
}

/// Prometheus' text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "the node's counters and gauges",
        content_type = "text/plain; version=0.0.4; charset=utf-8", body = String)))]
pub async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(metrics.render())
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations",
    responses((status = 200, description = "the OpenAPI 3.1 document of this API", body = Object)))]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(openapi::json())
}
