//! The HTTP surface: routes, handlers per resource, the error type and the
//! extractors. Handlers translate between HTTP and the domain, nothing more.

pub mod bodies;
pub mod cors;
pub mod demo;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod openapi;
pub mod rate_limit;

use actix_web::http::{Method, StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, Resource, Route, web};

use error::ApiError;

/// The routes, one handler a line, in the order they are matched (so
/// `/api/users/me` comes before `/api/users/{id}`). Each handler's
/// `#[utoipa::path]` says its method and path: [`routes`] registers it
/// there and the OpenAPI document describes it from the same attribute,
/// so the router and the document are one list.
macro_rules! route_table {
    ($($module:ident :: $handler:ident),* $(,)?) => {
        /// The operations of the OpenAPI document (`openapi` adds the rest).
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($(handlers::$module::$handler),*))]
        pub struct Operations;

        /// Each handler as a route, by its operation ID (its name).
        fn handlers() -> Vec<(&'static str, Route)> {
            vec![$((stringify!($handler), web::route().to(handlers::$module::$handler))),*]
        }
    };
}

route_table! {
    ops::healthz,
    ops::readyz,
    ops::metrics,
    ops::openapi_json,
    auth::register,
    auth::login,
    auth::refresh,
    auth::logout,
    users::me,
    users::get_user,
    users::set_role,
    issues::list_issues,
    issues::create_issue,
    issues::get_issue,
    issues::update_issue,
    issues::upvote,
    issues::withdraw_upvote,
    messages::history,
    messages::post_message,
    messages::react,
    messages::unreact,
    users::presence,
}

/// Registers every route of the table. Each path answers the methods it
/// has no handler for with 405 and an `Allow` header; anything unmatched
/// gets the contract's 404.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(|e, _| ApiError::malformed(e.to_string()).into()))
        .app_data(web::PathConfig::default().error_handler(|_, _| ApiError::not_found().into()));
    let mut paths: Vec<(String, Vec<(Method, Route)>)> = Vec::new();
    for (operation, route) in handlers() {
        // A handler without its attribute is a programming error that any
        // start (and every test) shows at once.
        let (path, method) = openapi::place(operation)
            .unwrap_or_else(|| panic!("handler {operation} has no #[utoipa::path] in the document"));
        let method = Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        match paths.iter_mut().find(|(p, _)| *p == path) {
            Some((_, routes)) => routes.push((method, route)),
            None => paths.push((path, vec![(method, route)])),
        }
    }
    for (path, routes) in paths {
        let allow = routes.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>().join(", ");
        let resource = routes
            .into_iter()
            .fold(resource(&path, allow), |resource, (method, route)| resource.route(route.method(method)));
        cfg.service(resource);
    }
    cfg.default_service(web::to(not_found));
}

fn resource(path: &str, allow: String) -> Resource {
    web::resource(path).default_service(web::to(move || {
        let allow = allow.clone();
        async move {
            let mut response = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("allowed: {allow}"),
            );
            response.details = Some(Box::new(serde_json::json!({ "allow": allow })));
            let mut res = actix_web::ResponseError::error_response(&response);
            if let Ok(value) = header::HeaderValue::from_str(&allow) {
                res.headers_mut().insert(header::ALLOW, value);
            }
            res
        }
    }))
}

async fn not_found(_req: HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::not_found())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{handlers, openapi};

    #[test]
    fn the_route_table_is_the_documents_operations() {
        let table: Vec<&str> = handlers().iter().map(|(id, _)| *id).collect();
        let unique: BTreeSet<&str> = table.iter().copied().collect();
        assert_eq!(unique.len(), table.len(), "a handler twice in the table: {table:?}");
        let mut documented = BTreeSet::new();
        for item in openapi::document()["paths"].as_object().expect("paths").values() {
            for (key, _) in openapi::METHODS {
                if let Some(id) = item[key]["operationId"].as_str() {
                    assert!(documented.insert(id), "operationId {id} twice");
                }
            }
        }
        assert_eq!(documented, unique, "operations without a route, or routes without an operation");
        for id in table {
            assert!(openapi::place(id).is_some(), "{id}");
        }
    }
}
