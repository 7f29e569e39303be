//! The OpenAPI document at /api/openapi.json: a structurally valid 3.1
//! document, and the router's routes exactly (each documented operation is
//! served by a handler on its path, and each documented path answers every
//! other method 405 with exactly the documented methods in `Allow`).
//! tests/openapi/schemathesis.sh checks the answers against it.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

on_both_backends!(document_is_structurally_openapi_3_1, routes_and_document_agree);

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn document(app: &TestApp) -> Value {
    let res = app.send(Method::GET, "/api/openapi.json", None, Body::Empty);
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let content_type = res.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    serde_json::from_str(&res.text).expect("the document is JSON")
}

/// Each operation of the document: (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, &'static str, &Value)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut out = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                out.push((path.clone(), method, operation));
            }
        }
    }
    out
}

/// Every `$ref` in `value`, with where it is.
fn refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(target)) => out.push((at.clone(), target)),
                    _ => refs(v, format!("{at}/{key}"), out),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn document_is_structurally_openapi_3_1(app: &TestApp) {
    let doc = document(app);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string(), "info: {}", doc["info"]);
    let schemes = doc["components"]["securitySchemes"].as_object().expect("securitySchemes");
    assert_eq!(
        schemes["bearer"],
        json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": schemes["bearer"]["description"]})
    );

    // Every reference names something that is there.
    let mut found = Vec::new();
    refs(&doc, String::new(), &mut found);
    assert!(!found.is_empty());
    for (at, target) in found {
        let pointer = target.strip_prefix('#').unwrap_or_else(|| panic!("{at}: external $ref {target}"));
        assert!(doc.pointer(pointer).is_some(), "{at}: $ref {target} resolves to nothing");
    }

    let mut ids = BTreeSet::new();
    for (path, method, operation) in operations(&doc) {
        let at = format!("{method} {path}");
        let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{at}: no operationId"));
        assert!(ids.insert(id.to_string()), "{at}: operationId {id} is not unique");
        assert!(
            operation["summary"].is_string() || operation["description"].is_string(),
            "{at}: undescribed"
        );

        // Path parameters: exactly the template's, each required.
        let template: BTreeSet<&str> =
            path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect();
        let params = operation["parameters"].as_array().map(Vec::as_slice).unwrap_or_default();
        let in_path: BTreeSet<&str> =
            params.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect();
        assert_eq!(in_path, template, "{at}: path parameters");
        for p in params {
            assert!(p["schema"].is_object(), "{at}: parameter {} has no schema", p["name"]);
            if p["in"] == "path" {
                assert_eq!(p["required"], true, "{at}: path parameter {} not required", p["name"]);
            }
        }

        // Responses: status codes, each described; errors in the contract's shape.
        let responses = operation["responses"].as_object().unwrap_or_else(|| panic!("{at}: no responses"));
        assert!(responses.keys().any(|s| s.starts_with('2')), "{at}: no success");
        for (status, response) in responses {
            let code: u16 = status.parse().unwrap_or_else(|_| panic!("{at}: status {status}"));
            assert!((100..600).contains(&code), "{at}: status {status}");
            let response = match response["$ref"].as_str() {
                Some(target) => doc.pointer(&target[1..]).expect("resolved above"),
                None => response,
            };
            assert!(response["description"].is_string(), "{at} {status}: no description");
            if code >= 400 {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{at} {status}: not the error shape"
                );
            }
            if code == 429 || code == 503 {
                assert_eq!(
                    response["headers"]["Retry-After"]["required"], true,
                    "{at} {status}: Retry-After"
                );
            }
        }

        // Only operations that take a token say so, with the bearer scheme.
        if let Some(security) = operation.get("security") {
            assert_eq!(security, &json!([{"bearer": []}]), "{at}: security");
            assert!(responses.contains_key("401"), "{at}: authenticated but no 401");
        }
    }
    assert!(ids.len() >= 20, "only {} operations", ids.len());
}

fn routes_and_document_agree(app: &TestApp) {
    let doc = document(app);
    let user = app.register("Router");
    let issue = app.issue_id(&user);
    let message = app.post_message(&user, &issue, "hello")["messageId"].as_str().expect("an id").to_string();
    let concrete = |path: &str| {
        let mut out = Vec::new();
        for segment in path.split('/') {
            out.push(match segment {
                "{id}" if path.starts_with("/api/users/") => user.id.clone(),
                "{id}" if path.starts_with("/api/issues/") => issue.clone(),
                "{id}" if path.starts_with("/api/messages/") => message.clone(),
                "{emoji}" => "%F0%9F%91%8D".to_string(),
                s if s.starts_with('{') => panic!("no sample value for {s} in {path}: add one here"),
                s => s.to_string(),
            });
        }
        out.join("/")
    };

    // Every documented operation reaches a handler registered on its path
    // (the access metrics name the route that matched).
    let mut answered: BTreeMap<(String, u16), u32> = BTreeMap::new();
    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, method, operation) in operations(&doc) {
        documented.entry(path.clone()).or_default().insert(method.to_uppercase());
        let body = if operation.get("requestBody").is_some() { Body::Json(json!({})) } else { Body::Empty };
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
        let res = app.send(m, &concrete(&path), user.auth(), body);
        assert_ne!(res.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is documented: {}", res.text);
        let status = res.status.as_u16().to_string();
        assert!(
            operation["responses"].get(&status).is_some(),
            "{method} {path}: undocumented {status}: {}",
            res.text
        );
        *answered.entry((path, res.status.as_u16())).or_default() += 1;
    }
    let metrics = app.send(Method::GET, "/metrics", None, Body::Empty).text;
    for ((route, status), n) in answered {
        let line = format!("civicpulse_http_requests_total{{route=\"{route}\",status=\"{status}\"}} ");
        let counted = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no request matched the route {route} (status {status}):\n{metrics}"));
        assert!(counted >= n, "{route} {status}: {counted} < {n}");
    }

    // Every documented path has no other method: 405, `Allow` the documented.
    for (path, methods) in documented {
        for method in METHODS.map(str::to_uppercase) {
            if methods.contains(&method) {
                continue;
            }
            let m = Method::from_bytes(method.as_bytes()).expect("a method");
            let res = app.send(m, &concrete(&path), user.auth(), Body::Empty);
            assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {}", res.text);
            let allow = res.headers.get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default();
            let listed: BTreeSet<String> = allow.split(',').map(|m| m.trim().to_string()).collect();
            assert_eq!(listed, methods, "{method} {path}: Allow");
        }
    }
}
