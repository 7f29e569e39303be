//! The HTTP surface: routes, handlers per resource, the error type and the
//! extractors. Handlers translate between HTTP and the domain, nothing more.

pub mod demo;
pub mod cors;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod rate_limit;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, Resource, web};

use error::ApiError;

/// Registers every route. Each resource answers other methods with 405 and
/// an `Allow` header; anything unmatched gets the contract's 404.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use handlers::{auth, issues, messages, ops, users};
    cfg.app_data(web::QueryConfig::default().error_handler(|e, _| ApiError::malformed(e.to_string()).into()))
        .app_data(web::PathConfig::default().error_handler(|_, _| ApiError::not_found().into()))
        .service(resource("/healthz", "GET").route(web::get().to(ops::healthz)))
        .service(resource("/readyz", "GET").route(web::get().to(ops::readyz)))
        .service(resource("/metrics", "GET").route(web::get().to(ops::metrics)))
        .service(
            web::scope("/api")
                .service(resource("/auth/register", "POST").route(web::post().to(auth::register)))
                .service(resource("/auth/login", "POST").route(web::post().to(auth::login)))
                .service(resource("/auth/refresh", "POST").route(web::post().to(auth::refresh)))
                .service(resource("/auth/logout", "POST").route(web::post().to(auth::logout)))
                .service(resource("/users/me", "GET").route(web::get().to(users::me)))
                .service(
                    resource("/users/{id}", "GET, PATCH")
                        .route(web::get().to(users::get))
                        .route(web::patch().to(users::set_role)),
                )
                .service(
                    resource("/issues", "GET, POST")
                        .route(web::get().to(issues::list))
                        .route(web::post().to(issues::create)),
                )
                .service(
                    resource("/issues/{id}", "GET, PATCH")
                        .route(web::get().to(issues::get))
                        .route(web::patch().to(issues::update)),
                )
                .service(
                    resource("/issues/{id}/upvote", "POST, DELETE")
                        .route(web::post().to(issues::upvote))
                        .route(web::delete().to(issues::withdraw_upvote)),
                )
                .service(
                    resource("/issues/{id}/messages", "GET, POST")
                        .route(web::get().to(messages::history))
                        .route(web::post().to(messages::post)),
                )
                .service(
                    resource("/messages/{id}/reactions/{emoji}", "PUT, DELETE")
                        .route(web::put().to(messages::react))
                        .route(web::delete().to(messages::unreact)),
                )
                .service(resource("/presence", "GET").route(web::get().to(users::presence))),
        )
        .default_service(web::to(not_found));
}

fn resource(path: &str, allow: &'static str) -> Resource {
    web::resource(path).default_service(web::to(move || async move {
        let mut response =
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("allowed: {allow}"));
        response.details = Some(Box::new(serde_json::json!({ "allow": allow })));
        let mut res = actix_web::ResponseError::error_response(&response);
        res.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
        res
    }))
}

async fn not_found(_req: HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::not_found())
}
