//! The HTTP layer: errors in the contract's shape, and the operations endpoints.

use std::collections::BTreeSet;

use crate::common::*;
use crate::reactions::reaction_path;
use civicpulse::domain::Role;
use serde_json::{Value, json};

on_both_backends!(
    body_over_one_mib_is_413,
    malformed_json_is_400,
    non_object_json_bodies_are_refused_in_the_error_shape,
    unknown_routes_are_404_in_the_error_shape,
    wrong_method_is_405_with_allow,
    hostile_inputs_never_answer_500,
    health_readiness_and_metrics,
);

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

const MIB: usize = 1024 * 1024;

fn body_over_one_mib_is_413(app: &TestApp) {
    let user = app.register("Bulky");
    let issue = app.issue_id(&user);
    let path = format!("/api/issues/{issue}/messages");
    // Valid JSON, just too big.
    let big = format!("{{\"content\": \"{}\"}}", "x".repeat(MIB));
    for body in [Body::Raw(big.clone().into_bytes()), Body::Chunked(big.clone().into_bytes())] {
        let res = app.send(Method::POST, &path, user.auth(), body);
        assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", res.text);
        assert_error(&(res.status, res.json), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    }
    let res = app.send(Method::POST, "/api/auth/register", None, Body::Raw(big.into_bytes()));
    assert_error(&(res.status, res.json), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // Exactly 1 MiB is within the limit: it is parsed and validated.
    let head = "{\"content\": \"hi\"}";
    let exact = format!("{head}{}", " ".repeat(MIB - head.len()));
    assert_eq!(exact.len(), MIB);
    let res = app.send(Method::POST, &path, user.auth(), Body::Raw(exact.into_bytes()));
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    // The server still answers normally afterwards.
    assert_eq!(app.get("/healthz", None).0, StatusCode::OK);
}

fn malformed_json_is_400(app: &TestApp) {
    let user = app.register("Sloppy");
    let issue = app.issue_id(&user);
    let routes = [
        (Method::POST, "/api/auth/register".to_string(), None),
        (Method::POST, "/api/auth/login".to_string(), None),
        (Method::POST, "/api/auth/refresh".to_string(), None),
        (Method::POST, "/api/auth/logout".to_string(), None),
        (Method::POST, "/api/issues".to_string(), user.auth()),
        (Method::PATCH, format!("/api/issues/{issue}"), user.auth()),
        (Method::POST, format!("/api/issues/{issue}/messages"), user.auth()),
    ];
    for (method, path, token) in routes {
        for bad in [
            "{\"email\":",
            "{'single': 'quotes'}",
            "{\"a\": 1,}",
            "nul",
            "\u{feff}{}",
            "{\"a\":\"\\x\"}",
            "\u{1}",
        ] {
            let res = app.raw(method.clone(), &path, token, bad);
            assert_eq!(res.status, StatusCode::BAD_REQUEST, "{method} {path} {bad:?}: {}", res.text);
            assert_eq!(res.json["error"]["code"], "malformed_json", "{}", res.text);
        }
        let res = app.raw(method.clone(), &path, token, vec![0xff, 0xfe, b'{', b'}']);
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "invalid UTF-8: {}", res.text);
        // No body at all.
        let res = app.send(method.clone(), &path, token, Body::Empty);
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{method} {path} without a body: {}", res.text);
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let res = app.raw(Method::POST, "/api/auth/login", None, deep);
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.text);
}

fn non_object_json_bodies_are_refused_in_the_error_shape(app: &TestApp) {
    let user = app.register("Listy");
    let issue = app.issue_id(&user);
    let before = app.get(&format!("/api/issues/{issue}"), None).1;
    let routes = [
        (Method::POST, "/api/auth/register".to_string(), None),
        (Method::POST, "/api/auth/login".to_string(), None),
        (Method::POST, "/api/auth/refresh".to_string(), None),
        (Method::POST, "/api/auth/logout".to_string(), None),
        (Method::POST, "/api/issues".to_string(), user.auth()),
        (Method::PATCH, format!("/api/issues/{issue}"), user.auth()),
        (Method::PATCH, format!("/api/users/{}", user.id), user.auth()),
        (Method::POST, format!("/api/issues/{issue}/messages"), user.auth()),
    ];
    for (method, path, token) in routes {
        for body in
            [json!([1, 2]), json!("text"), json!(42), json!(null), json!(true), json!([{ "content": "x" }])]
        {
            let res = app.send(method.clone(), &path, token, Body::Json(body.clone()));
            assert!(res.status.is_client_error(), "{method} {path} {body}: {}", res.text);
            assert!(
                [StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY].contains(&res.status),
                "{method} {path} {body}: {}",
                res.status
            );
        }
    }
    let (_, v) = app.get(&format!("/api/issues/{issue}"), None);
    assert_eq!(v, before, "the issue is untouched");
    let (_, me) = app.get("/api/users/me", user.auth());
    assert_eq!(me["role"], "citizen");
}

fn unknown_routes_are_404_in_the_error_shape(app: &TestApp) {
    let user = app.register("Wanderer");
    for (method, path) in [
        (Method::GET, "/index.html"), // `/` is the demo client (tests/demo.rs)
        (Method::GET, "/api"),
        (Method::GET, "/api/nope"),
        (Method::POST, "/api/nope"),
        (Method::GET, "/api/issues/x/y/z"),
        (Method::DELETE, "/api/users"),
        (Method::GET, "/api/messages"),
        (Method::GET, "/nope.php"),
        (Method::GET, "/api/issues//messages"),
    ] {
        let res = app.send(method.clone(), path, user.auth(), Body::Empty);
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{method} {path}: {}", res.text);
        assert_eq!(res.json["error"]["code"], "not_found");
    }
}

fn wrong_method_is_405_with_allow(app: &TestApp) {
    let user = app.register("Confused");
    let issue = app.issue_id(&user);
    let message = str_of(&app.post_message(&user, &issue, "hi")["messageId"]);
    let cases = [
        (Method::DELETE, "/api/issues".to_string(), vec!["GET", "POST"]),
        (Method::GET, "/api/auth/login".to_string(), vec!["POST"]),
        (Method::PUT, "/api/auth/register".to_string(), vec!["POST"]),
        (Method::POST, "/api/users/me".to_string(), vec!["GET"]),
        (Method::DELETE, format!("/api/users/{}", user.id), vec!["GET", "PATCH"]),
        (Method::PUT, format!("/api/issues/{issue}"), vec!["GET", "PATCH"]),
        (Method::GET, format!("/api/issues/{issue}/upvote"), vec!["POST", "DELETE"]),
        (Method::DELETE, format!("/api/issues/{issue}/messages"), vec!["GET", "POST"]),
        (Method::POST, reaction_path(&message, "👍"), vec!["PUT", "DELETE"]),
        (Method::POST, "/healthz".to_string(), vec!["GET"]),
        (Method::DELETE, "/metrics".to_string(), vec!["GET"]),
    ];
    for (method, path, allowed) in cases {
        let res = app.send(method.clone(), &path, user.auth(), Body::Empty);
        assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {}", res.text);
        assert_eq!(res.json["error"]["code"], "method_not_allowed");
        let allow = res.headers.get("allow").unwrap_or_else(|| panic!("{method} {path}: no Allow header"));
        let listed: BTreeSet<&str> = allow.to_str().unwrap().split(',').map(str::trim).collect();
        assert_eq!(listed, allowed.into_iter().collect(), "{method} {path}");
    }
}

fn hostile_inputs_never_answer_500(app: &TestApp) {
    // `send` fails the test on any 5xx; here the inputs are simply thrown at
    // the API, and each answer must also be a sensible 2xx/4xx.
    let user = app.register("Mallory");
    let official = app.staff(Role::Official);
    let issue = app.issue_id(&user);
    let message = str_of(&app.post_message(&user, &issue, "hi")["messageId"]);
    let nul = "bad\u{0}value";
    let expect_4xx = |res: (StatusCode, Value), what: &str| {
        assert!(res.0.is_client_error(), "{what}: {} {}", res.0, res.1);
    };

    // NUL characters in every text field (PostgreSQL cannot store them).
    expect_4xx(
        app.post(
            "/api/auth/register",
            None,
            Some(json!({ "email": "nul\u{0}@example.com", "password": PASSWORD, "displayName": "N" })),
        ),
        "NUL in email",
    );
    expect_4xx(
        app.post(
            "/api/auth/register",
            None,
            Some(json!({ "email": "nul2@example.com", "password": PASSWORD, "displayName": nul })),
        ),
        "NUL in displayName",
    );
    expect_4xx(
        app.post(
            "/api/auth/login",
            None,
            Some(json!({ "email": "a\u{0}@example.com", "password": PASSWORD })),
        ),
        "NUL in login email",
    );
    expect_4xx(
        app.post("/api/issues", user.auth(), Some(json!({ "title": nul, "category": "roads" }))),
        "NUL in title",
    );
    expect_4xx(
        app.post(
            "/api/issues",
            user.auth(),
            Some(json!({ "title": "Fine", "description": nul, "category": "roads" })),
        ),
        "NUL in description",
    );
    expect_4xx(
        app.patch(&format!("/api/issues/{issue}"), user.auth(), Some(json!({ "title": nul }))),
        "NUL in PATCH title",
    );
    expect_4xx(
        app.post(&format!("/api/issues/{issue}/messages"), user.auth(), Some(json!({ "content": nul }))),
        "NUL in content",
    );
    expect_4xx(app.get("/api/issues?city=a%00b", user.auth()), "NUL in a filter");
    expect_4xx(app.get(&format!("/api/issues/{issue}%00"), None), "NUL in an id");
    expect_4xx(
        app.put(&format!("/api/messages/{message}/reactions/%F0%9F%91%8D%00"), user.auth(), None),
        "NUL after an emoji",
    );
    // A password may contain anything: it is only hashed.
    let (status, _) = app.post(
        "/api/auth/register",
        None,
        Some(json!({ "email": "nulpw@example.com", "password": "pass\u{0}word", "displayName": "P" })),
    );
    assert_eq!(status, StatusCode::CREATED);
    expect_4xx(
        app.post("/api/auth/refresh", None, Some(json!({ "refreshToken": nul }))),
        "NUL refresh token",
    );
    expect_4xx(app.post("/api/auth/logout", None, Some(json!({ "refreshToken": nul }))), "NUL logout token");

    // Broken percent-encoding and odd bytes in paths and queries.
    for path in [
        "/api/issues/%FF%FE".to_string(),
        "/api/users/%FF".to_string(),
        format!("/api/messages/{message}/reactions/%FF"),
        format!("/api/messages/{message}/reactions/%F0%9F"),
        format!("/api/messages/{message}/reactions/%ZZ"),
        "/api/issues?limit=%FF".to_string(),
        "/api/issues?cursor=%00".to_string(),
        "/api/issues?sort=%E2%80%AE".to_string(),
        format!("/api/issues?reportedBy={}", "u".repeat(5000)),
        format!("/api/issues/{issue}/messages?before=%FF&limit=%00"),
    ] {
        for method in [Method::GET, Method::PUT] {
            let res = app.send(method.clone(), &path, user.auth(), Body::Empty);
            assert!(
                res.status.is_client_error() || res.status.is_success(),
                "{method} {path}: {}",
                res.status
            );
        }
    }
    // Numbers, types and sizes nobody expects.
    for body in [
        json!({ "title": "Big", "category": "roads", "priority": 1e308 }),
        json!({ "title": { "nested": true }, "category": "roads" }),
        json!({ "title": "Huge", "category": "roads", "description": "d".repeat(900_000) }),
        json!({ "title": "Big", "category": "roads", "city": "a".repeat(10_000) }),
    ] {
        expect_4xx(app.post("/api/issues", user.auth(), Some(body)), "odd issue body");
    }
    for body in [
        json!({ "status": ["open"] }),
        json!({ "priority": 18446744073709551615u64 }),
        json!({ "assignedTo": "\u{0}" }),
        json!({ "assignedTo": format!("off_{}", "Z".repeat(10_000)) }),
    ] {
        expect_4xx(app.patch(&format!("/api/issues/{issue}"), official.auth(), Some(body)), "odd PATCH body");
    }
    expect_4xx(
        app.post("/api/auth/login", None, Some(json!({ "email": "e".repeat(100_000), "password": "p" }))),
        "huge email",
    );
    expect_4xx(
        app.post(
            "/api/auth/login",
            None,
            Some(json!({ "email": "a@b.co", "password": "p".repeat(100_000) })),
        ),
        "huge password",
    );
    // Odd headers.
    let res = app
        .client()
        .get(app.url("/api/users/me"))
        .header("Authorization", reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap())
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app.get("/api/users/me", Some(&"a".repeat(10_000)));
    assert_eq!(res.0, StatusCode::UNAUTHORIZED);

    // Nothing odd was stored.
    let (_, list) = app.get("/api/issues?limit=100", user.auth());
    assert_eq!(ids_of(&list, "issueId"), std::slice::from_ref(&issue));
    let (_, v) = app.get(&format!("/api/issues/{issue}/messages"), user.auth());
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

fn health_readiness_and_metrics(app: &TestApp) {
    assert_eq!(app.get("/healthz", None), (StatusCode::OK, json!({ "status": "ok" })));
    let (status, _) = app.get("/readyz", None);
    assert_eq!(status, StatusCode::OK);

    let user = app.register("Measured");
    app.issue_id(&user);
    app.get("/api/nope", None);
    let res = app.send(Method::GET, "/metrics", None, Body::Empty);
    assert_eq!(res.status, StatusCode::OK);
    let content_type = res.headers.get("content-type").unwrap().to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    for line in [
        "# TYPE civicpulse_http_requests_total counter",
        "civicpulse_http_requests_total{route=\"/healthz\",status=\"200\"} 1",
        "civicpulse_http_requests_total{route=\"/api/auth/register\",status=\"201\"} 1",
        "civicpulse_http_requests_total{route=\"/api/issues\",status=\"201\"} 1",
        "civicpulse_events_emitted_total{event=\"issue:created\"} 1",
    ] {
        assert!(res.text.lines().any(|l| l == line), "missing {line:?} in:\n{}", res.text);
    }
    assert!(res.text.contains("civicpulse_http_requests_total{route=\""), "{}", res.text);
    assert!(res.text.contains("status=\"404\"}"), "unmatched routes are counted too:\n{}", res.text);
}
