//! The demo client served at `/` (`DEMO_CLIENT`, on by default): a page a
//! newcomer opens after `cargo run`, and the page the browser tier drives.
//! Plain HTML/JS in `demo/`, compiled into the binary so that it needs no
//! files beside it.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};

const INDEX: &str = include_str!("demo/index.html");
const APP_JS: &str = include_str!("demo/app.js");
const APP_CSS: &str = include_str!("demo/app.css");

/// Only this origin's scripts and the official client's CDN; requests and
/// WebSockets to this origin only; no inline script or style at all, so
/// that a message that slipped past `textContent` could not run.
const CSP: &str = "default-src 'none'; script-src 'self' https://cdn.socket.io; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

pub fn routes(cfg: &mut web::ServiceConfig) {
    let page = |path, body, content_type| {
        super::resource(path, "GET".into())
            .route(web::get().to(move || async move { asset(body, content_type) }))
    };
    cfg.service(page("/", INDEX, "text/html; charset=utf-8"))
        .service(page("/demo/app.js", APP_JS, "text/javascript; charset=utf-8"))
        .service(page("/demo/app.css", APP_CSS, "text/css; charset=utf-8"));
}

fn asset(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, HeaderValue::from_static(content_type)))
        .insert_header((header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .insert_header((header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        // Small and part of the binary: always the running version's.
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-cache")))
        .body(body)
}
