//! Liveness, readiness and metrics, for load balancers and Prometheus.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::cluster::Cluster;
use crate::domain::Domain;
use crate::metrics::Metrics;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// What readiness depends on besides the database.
pub struct Readiness {
    /// In cluster mode: a node that cannot reach Redis serves its own
    /// sockets but is not one server with the others.
    pub cluster: Option<Arc<Cluster>>,
    /// Set from the moment the node is told to stop (see `shutdown`).
    pub draining: Arc<AtomicBool>,
}

pub async fn readyz(domain: web::Data<Domain>, readiness: web::Data<Readiness>) -> HttpResponse {
    let not_ready = |message: &str| {
        HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "2"))
            .json(json!({ "error": { "code": "not_ready", "message": message } }))
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
    HttpResponse::Ok().json(json!({ "status": "ready" }))
}

pub async fn metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(metrics.render())
}
