//! Liveness, readiness and metrics, for load balancers and Prometheus.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::domain::Domain;
use crate::metrics::Metrics;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(domain: web::Data<Domain>) -> HttpResponse {
    if domain.db.ping().await {
        HttpResponse::Ok().json(json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable().json(json!({
            "error": { "code": "not_ready", "message": "the database does not answer" }
        }))
    }
}

pub async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(metrics.render())
}
