//! The OpenAPI 3.1 document, served at `/api/openapi.json`: the operations
//! come from the handlers' `#[utoipa::path]` attributes (the route table
//! in `http`, which the router registers too), the schemas from the types
//! the handlers really answer with. What every operation of a kind can
//! answer (401 where a token is needed, 400/408/413/422 where a body is
//! read, 404 where a path names a resource, 429/500/503 anywhere) is added
//! here, from the operation's own shape, once.

use std::sync::LazyLock;

use serde_json::{Map, Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::Operations;
use super::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CivicPulse",
        description = "Civic issue reporting with realtime updates. The contract, realtime events \
            included, is docs/API.md; this document covers the REST surface. Errors are \
            `{\"error\": {\"code\", \"message\", \"details\"?}}`; unknown routes answer 404 and known \
            paths with another method 405 (with `Allow`), in that shape.",
    ),
    components(schemas(ErrorBody)),
    modifiers(&Bearer),
    tags(
        (name = "auth", description = "accounts and sign-ins"),
        (name = "users", description = "users and who is online"),
        (name = "issues", description = "reporting, triage and upvotes"),
        (name = "messages", description = "issue chat and reactions"),
        (name = "operations", description = "health, readiness, metrics and this document"),
    )
)]
struct Document;

/// The `bearer` scheme the authenticated operations name.
struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some("an access token from /api/auth/register, /login or /refresh"))
            .build();
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
        }
    }
}

static DOCUMENT: LazyLock<Value> = LazyLock::new(build);
static JSON: LazyLock<String> = LazyLock::new(|| DOCUMENT.to_string());

/// The document as a JSON value.
pub fn document() -> &'static Value {
    &DOCUMENT
}

/// The document as served.
pub fn json() -> &'static str {
    &JSON
}

/// The path and method (upper case) of the operation `operation_id`.
pub fn place(operation_id: &str) -> Option<(String, &'static str)> {
    let paths = DOCUMENT["paths"].as_object()?;
    paths.iter().find_map(|(path, item)| {
        METHODS.iter().find_map(|&(key, method)| {
            (item[key]["operationId"] == operation_id).then(|| (path.clone(), method))
        })
    })
}

/// The operations' keys in a path item, and their methods.
pub const METHODS: [(&str, &str); 5] =
    [("get", "GET"), ("put", "PUT"), ("post", "POST"), ("delete", "DELETE"), ("patch", "PATCH")];

fn build() -> Value {
    let mut api = Document::openapi();
    api.merge(Operations::openapi());
    // The conversion of a document of plain data cannot fail.
    let mut doc = serde_json::to_value(api).unwrap_or_default();
    doc["components"]["responses"] = shared_responses();
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            for (key, _) in METHODS {
                if let Some(operation) = item.get_mut(key).and_then(Value::as_object_mut) {
                    add_shared(operation);
                }
            }
        }
    }
    doc
}

/// The answers any operation of a kind may give, by the names of
/// [`shared_responses`].
fn add_shared(operation: &mut Map<String, Value>) {
    // OpenAPI requires it of path parameters; utoipa drops it from those
    // whose schema is `schema_with`.
    for param in operation.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten() {
        if param["in"] == "path" {
            param["required"] = json!(true);
        }
    }
    let params = |place: &str| {
        operation
            .get("parameters")
            .and_then(Value::as_array)
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == place))
    };
    let mut shared = vec![("429", "TooManyRequests"), ("500", "Internal"), ("503", "Unavailable")];
    if operation.contains_key("security") {
        shared.push(("401", "Unauthorized"));
    }
    if operation.contains_key("requestBody") {
        shared.extend([
            ("400", "Malformed"),
            ("408", "RequestTimeout"),
            ("413", "PayloadTooLarge"),
            ("422", "ValidationFailed"),
        ]);
    }
    if params("query") {
        shared.extend([("400", "Malformed"), ("422", "ValidationFailed")]);
    }
    if params("path") {
        shared.push(("404", "NotFound"));
    }
    let responses = operation.entry("responses").or_insert_with(|| json!({}));
    if let Some(responses) = responses.as_object_mut() {
        for (status, name) in shared {
            responses
                .entry(status)
                .or_insert_with(|| json!({ "$ref": format!("#/components/responses/{name}") }));
        }
        // Sent with every 429 and 503 (utoipa cannot mark a header required).
        for response in responses.values_mut() {
            if let Some(header) = response.pointer_mut("/headers/Retry-After") {
                header["required"] = json!(true);
            }
        }
        responses.sort_keys();
    }
}

fn shared_responses() -> Value {
    let error = |description: &str| {
        json!({
            "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } },
        })
    };
    let retry = |description: &str| {
        let mut response = error(description);
        response["headers"] = json!({ "Retry-After": {
            "description": "seconds to wait before trying again",
            "required": true,
            "schema": { "type": "integer", "minimum": 0 },
        }});
        response
    };
    json!({
        "Malformed": error("`malformed_request` or `malformed_json`: no body, a body that is not \
            JSON, or a query string that cannot be read"),
        "Unauthorized": error("`invalid_token` (missing, malformed, badly signed or expired access \
            token) or `token_revoked`"),
        "NotFound": error("`not_found`: no such resource (a malformed ID included)"),
        "RequestTimeout": error("`request_timeout`: the body did not arrive within BODY_READ_TIMEOUT_MS"),
        "PayloadTooLarge": error("`payload_too_large`: the body exceeds 1 MiB"),
        "ValidationFailed": error("`validation_failed`: `details.fields` names each bad field and why"),
        "TooManyRequests": retry("`rate_limited` (too many writes, or sign-in attempts) or \
            `too_many_connections` (this address holds MAX_CONNECTIONS_PER_ADDRESS connections)"),
        "Internal": error("`internal`: a failure of the server (never its internals)"),
        "Unavailable": retry("`unavailable` (the database is away) or `over_capacity` (the server is \
            at its connection limit)"),
    })
}
