//! The HTTP edge: browsers on the origins in CORS_ORIGINS may long-poll and
//! call the REST API (others get no CORS grant), and the credential
//! endpoints are rate limited per client address.

mod common;

use common::{StatusCode, TestApp, assert_error};
use serde_json::json;

fn allow_origin(res: &reqwest::blocking::Response) -> Option<String> {
    res.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap_or_default().to_string())
}

#[test]
fn polling_from_an_allowed_origin_is_granted() {
    let app = TestApp::builder().env("CORS_ORIGINS", "https://app.example, https://admin.example").sqlite();
    let http = app.client();

    let res = http
        .get(app.url("/socket.io/?EIO=4&transport=polling"))
        .header("Origin", "https://app.example")
        .send()
        .expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(allow_origin(&res).as_deref(), Some("https://app.example"));
    assert!(res.text().expect("body").starts_with("0{\"sid\""));

    // The preflight a browser sends before POSTing a polling payload or JSON.
    let preflight = http
        .request(reqwest::Method::OPTIONS, app.url("/api/issues"))
        .header("Origin", "https://admin.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization, content-type")
        .send()
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(allow_origin(&preflight).as_deref(), Some("https://admin.example"));
}

#[test]
fn other_origins_get_no_grant() {
    let app = TestApp::builder().env("CORS_ORIGINS", "https://app.example").sqlite();
    let res = app
        .client()
        .get(app.url("/socket.io/?EIO=4&transport=polling"))
        .header("Origin", "https://evil.example")
        .send()
        .expect("request");
    assert_eq!(allow_origin(&res), None);
}

#[test]
fn credential_endpoints_answer_429_with_retry_after_past_the_limit() {
    let app = TestApp::builder().env("AUTH_RATE_PER_MINUTE", "3").sqlite();
    let api = app.anonymous();
    let login = |n: usize| {
        api.send(
            common::Method::POST,
            "/api/auth/login",
            common::Body::Json(json!({"email": format!("nobody{n}@example.com"), "password": "whatever1"})),
        )
    };
    for n in 0..3 {
        let res = login(n);
        assert_eq!(
            res.status,
            StatusCode::UNAUTHORIZED,
            "within the limit, attempts are judged on their merits"
        );
    }
    let limited = login(3);
    assert_error(&(limited.status, limited.json.clone()), StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry_after: u64 = limited.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry_after));

    // Other routes are not limited.
    assert_eq!(api.get("/healthz").0, StatusCode::OK);
}
