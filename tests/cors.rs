//! Browser origins at the HTTP level, where a browser hides the details
//! (the real-browser side is tests/browser.rs): `CORS_ORIGINS` read
//! strictly at start, refused preflights in the error shape, the
//! `WS_ORIGIN_CHECK` on WebSocket upgrades, and the connection cap's
//! refusal readable by allowed pages.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::raw::{Raw, connect_from, read_response};
use common::{TestApp, binary};

const PAGE: &str = "http://127.0.0.1:8790";
const OTHER: &str = "http://127.0.0.1:8791";

/// A refusal in the contract's error shape, as JSON.
#[track_caller]
fn assert_refused(raw: &Raw, status: u16, code: &str) {
    raw.assert_error_shape(status, code);
    assert!(raw.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{raw:?}");
}

/// Sends `request` (a head, `\r\n\r\n` added) and reads the answer.
fn exchange(stream: &mut TcpStream, request: &str) -> Raw {
    write!(stream, "{request}\r\n\r\n").expect("write");
    read_response(stream)
}

fn request(app: &TestApp, request: &str) -> Raw {
    exchange(&mut connect_from("127.0.0.1", app.node.addr), request)
}

fn preflight(app: &TestApp, origin: &str, method: &str, headers: &str) -> Raw {
    request(
        app,
        &format!(
            "OPTIONS /api/issues HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: {method}\r\n\
             Access-Control-Request-Headers: {headers}\r\nConnection: close",
            app.node.addr
        ),
    )
}

/// A WebSocket upgrade to the Engine.IO endpoint with these extra header
/// lines (each ending in CRLF).
fn upgrade(app: &TestApp, extra: &str) -> Raw {
    request(
        app,
        format!(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}",
            app.node.addr
        )
        .trim_end_matches("\r\n"),
    )
}

fn allowing_the_page() -> common::TestAppBuilder {
    TestApp::builder().env("CORS_ORIGINS", format!("https://app.example, {PAGE}"))
}

#[test]
fn a_malformed_origin_stops_the_start_with_one_line_naming_the_variable_and_the_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    for (value, why) in [
        ("http://127.0.0.1:8790/", "trailing slash"),
        ("https://app.example, app.example", "no scheme"),
        ("https://App.example", "lowercase"),
        ("*, https://app.example", "only entry"),
    ] {
        let out = binary::run(dir.path(), &[], &[("DATABASE_URL", &db), ("CORS_ORIGINS", value)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "CORS_ORIGINS={value}: {stderr}");
        assert!(stderr.contains("invalid CORS_ORIGINS"), "CORS_ORIGINS={value}: {stderr}");
        assert!(stderr.contains(why), "CORS_ORIGINS={value}: {stderr}");
    }
    let out = binary::run(dir.path(), &[], &[("DATABASE_URL", &db), ("WS_ORIGIN_CHECK", "sometimes")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid WS_ORIGIN_CHECK"));
}

#[test]
fn preflights_are_answered_for_listed_origins_and_refused_in_the_error_shape() {
    let app = allowing_the_page().sqlite();
    let allowed = preflight(&app, PAGE, "POST", "authorization,content-type");
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header("access-control-allow-origin"), Some(PAGE));

    for origin in [OTHER, "http://127.0.0.1:8790/", "https://app.example.evil"] {
        let refused = preflight(&app, origin, "POST", "authorization");
        assert_refused(&refused, 403, "origin_not_allowed");
        assert_eq!(refused.header("access-control-allow-origin"), None, "{refused:?}");
    }
    assert_refused(&preflight(&app, PAGE, "TRACE", "authorization"), 403, "forbidden");
    assert_refused(&preflight(&app, PAGE, "GET", "x-not-allowed"), 403, "forbidden");

    // An actual request from another origin is served (CORS protects the
    // page's user, the browser enforces it) but carries no CORS header.
    let get =
        request(&app, &format!("GET /healthz HTTP/1.1\r\nHost: x\r\nOrigin: {OTHER}\r\nConnection: close"));
    assert_eq!(get.status, 200);
    assert_eq!(get.header("access-control-allow-origin"), None, "{get:?}");
    let get =
        request(&app, &format!("GET /healthz HTTP/1.1\r\nHost: x\r\nOrigin: {PAGE}\r\nConnection: close"));
    assert_eq!(get.header("access-control-allow-origin"), Some(PAGE), "{get:?}");
    assert_eq!(get.header("access-control-expose-headers"), Some("retry-after"), "{get:?}");
}

#[test]
fn websocket_upgrades_from_pages_of_other_origins_are_refused_403() {
    let app = allowing_the_page().sqlite();
    let own = format!("http://{}", app.node.addr);
    for (origin, status) in [
        (Some(PAGE), 101),
        (Some("https://app.example"), 101),
        // The server's own pages, and clients that are not browsers.
        (Some(own.as_str()), 101),
        (None, 101),
        (Some(OTHER), 403),
        (Some("http://127.0.0.1:8790/"), 403),
        (Some("null"), 403),
    ] {
        let extra = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
        let answer = upgrade(&app, &extra);
        if status == 403 {
            assert_refused(&answer, 403, "origin_not_allowed");
        } else {
            assert_eq!(answer.status, 101, "Origin {origin:?}: {answer:?}");
        }
    }
    let metrics = reqwest::blocking::get(app.url("/metrics")).and_then(|r| r.text()).expect("metrics");
    assert!(metrics.contains("civicpulse_ws_origin_refusals_total 3"), "{metrics}");
}

#[test]
fn the_websocket_check_follows_ws_origin_check() {
    // Off: any page may open a WebSocket (the reference server's default).
    let app = allowing_the_page().env("WS_ORIGIN_CHECK", "off").sqlite();
    assert_eq!(upgrade(&app, &format!("Origin: {OTHER}\r\n")).status, 101);
    // Without CORS_ORIGINS it is off unless asked for; on, only the
    // server's own pages (and non-browsers) may.
    let app = TestApp::sqlite();
    assert_eq!(upgrade(&app, &format!("Origin: {OTHER}\r\n")).status, 101);
    let app = TestApp::builder().env("WS_ORIGIN_CHECK", "on").sqlite();
    assert_refused(&upgrade(&app, &format!("Origin: {OTHER}\r\n")), 403, "origin_not_allowed");
    assert_eq!(upgrade(&app, &format!("Origin: http://{}\r\n", app.node.addr)).status, 101);
    assert_eq!(upgrade(&app, "").status, 101);
}

#[test]
fn the_connection_caps_429_is_readable_by_allowed_pages_only() {
    let app = allowing_the_page().env("MAX_CONNECTIONS_PER_ADDRESS", "1").sqlite();
    // An address of its own, so that the harness's connections do not count.
    let _held = connect_from("127.0.0.42", app.node.addr);
    std::thread::sleep(Duration::from_millis(100));
    let ask = |origin: &str| {
        exchange(
            &mut connect_from("127.0.0.42", app.node.addr),
            &format!("GET /api/issues HTTP/1.1\r\nHost: x\r\nOrigin: {origin}"),
        )
    };
    let allowed = ask(PAGE);
    assert_refused(&allowed, 429, "too_many_connections");
    assert_eq!(allowed.header("retry-after"), Some("5"));
    assert_eq!(allowed.header("access-control-allow-origin"), Some(PAGE), "{allowed:?}");
    assert_eq!(allowed.header("access-control-expose-headers"), Some("retry-after"), "{allowed:?}");
    let other = ask(OTHER);
    assert_refused(&other, 429, "too_many_connections");
    assert_eq!(other.header("access-control-allow-origin"), None, "{other:?}");
}
