//! The demo client at `/` (src/http/demo): served with a strict CSP, turned
//! off by `DEMO_CLIENT=false`, and working in Debian's Chromium in two tabs
//! against the real binary, as a newcomer would use it after `cargo run`.

mod common;

use std::time::Duration;

use common::binary::{Server, run, secret};
use common::clients::browser;
use common::*;
use serde_json::json;

#[test]
fn the_demo_is_served_with_a_strict_policy() {
    let app = TestApp::sqlite();
    let http = app.client();
    for (path, kind) in
        [("/", "text/html"), ("/demo/app.js", "text/javascript"), ("/demo/app.css", "text/css")]
    {
        let res = http.get(app.url(path)).send().expect("request");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let header =
            |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(header("content-type").starts_with(kind), "{path}: {}", header("content-type"));
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("script-src 'self' https://cdn.socket.io;"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    }
    let page = http.get(app.url("/")).send().expect("request").text().expect("body");
    // The official client from its CDN, pinned by its hash.
    assert!(page.contains(r#"src="https://cdn.socket.io/4.8.1/socket.io.min.js""#), "{page}");
    assert!(page.contains(r#"integrity="sha384-"#), "{page}");

    let res = http.post(app.url("/")).send().expect("request");
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers().get("allow").and_then(|v| v.to_str().ok()), Some("GET"));
}

#[test]
fn demo_client_false_leaves_the_root_to_the_contract_404() {
    let app = TestApp::builder().env("DEMO_CLIENT", "false").sqlite();
    for path in ["/", "/demo/app.js"] {
        let res = app.get(path, None);
        assert_error(&res, StatusCode::NOT_FOUND, "not_found");
    }
}

#[test]
#[ignore = "needs Debian's chromium (.ci/run installs it)"]
fn two_tabs_see_each_other_live_in_the_demo() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = format!("sqlite://{}", dir.path().join("civicpulse.db").display());
    let server = Server::start(&database_url, &[]);
    let vars = [("DATABASE_URL", database_url.as_str()), ("JWT_SECRET", secret()), ("RUST_LOG", "warn")];
    let (email, password) = ("chief@city.example", "official-password");
    let out = run(
        dir.path(),
        &[
            "user",
            "create",
            "--role",
            "official",
            "--email",
            email,
            "--password",
            password,
            "--name",
            "Chief Wiggum",
            "--city",
            "springfield",
        ],
        &vars,
    );
    assert!(out.status.success(), "user create: {}", String::from_utf8_lossy(&out.stderr));

    let input = json!({ "url": server.url(), "official": { "email": email, "password": password } });
    browser("demo.mjs", "two-tabs", &input, Duration::from_secs(120));
}

#[test]
#[ignore = "needs Debian's chromium (.ci/run installs it)"]
fn the_demo_keeps_its_socket_through_token_refreshes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = format!("sqlite://{}", dir.path().join("civicpulse.db").display());
    // Short tokens and no grace: a page that did not refresh would be cut
    // off within seconds.
    let ttl = 4;
    let server =
        Server::start(&database_url, &[("ACCESS_TOKEN_TTL_SECS", "4"), ("SOCKET_TOKEN_GRACE_SECS", "1")]);
    let input = json!({ "url": server.url(), "accessTokenTtlSecs": ttl });
    browser("demo.mjs", "refresh", &input, Duration::from_secs(120));
}
