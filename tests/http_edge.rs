//! The HTTP edge: browsers on the origins in CORS_ORIGINS may long-poll and
//! call the REST API (others get no CORS grant), and the credential
//! endpoints are rate limited per client address.

use std::collections::HashMap;

use civicpulse::RunningNode;
use civicpulse::config::Config;

fn node(origins: &str) -> (RunningNode, tempfile::TempDir) {
    node_with(&[("CORS_ORIGINS", origins)])
}

fn node_with(extra: &[(&str, &str)]) -> (RunningNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let vars: HashMap<String, String> = [
        ("HOST", "127.0.0.1".to_string()),
        ("PORT", "0".to_string()),
        ("WORKERS", "1".to_string()),
        ("JWT_SECRET", "cors-test-secret-0123456789abcdef0123456789".to_string()),
        ("DATABASE_URL", format!("sqlite://{}", dir.path().join("c.db").display())),
    ]
    .into_iter()
    .chain(extra.iter().map(|(k, v)| (*k, v.to_string())))
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    (RunningNode::start(Config::from_vars(&vars).expect("config")).expect("node"), dir)
}

fn allow_origin(res: &reqwest::blocking::Response) -> Option<String> {
    res.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap_or_default().to_string())
}

#[test]
fn polling_from_an_allowed_origin_is_granted() {
    let (node, _dir) = node("https://app.example, https://admin.example");
    let http = reqwest::blocking::Client::new();
    let handshake = format!("{}/socket.io/?EIO=4&transport=polling", node.url());

    let res = http.get(&handshake).header("Origin", "https://app.example").send().expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(allow_origin(&res).as_deref(), Some("https://app.example"));
    assert!(res.text().expect("body").starts_with("0{\"sid\""));

    // The preflight a browser sends before POSTing a polling payload or JSON.
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{}/api/issues", node.url()))
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
    let (node, _dir) = node("https://app.example");
    let res = reqwest::blocking::Client::new()
        .get(format!("{}/socket.io/?EIO=4&transport=polling", node.url()))
        .header("Origin", "https://evil.example")
        .send()
        .expect("request");
    assert_eq!(allow_origin(&res), None);
}

#[test]
fn credential_endpoints_answer_429_with_retry_after_past_the_limit() {
    let (node, _dir) = node_with(&[("AUTH_RATE_PER_MINUTE", "3")]);
    let http = reqwest::blocking::Client::new();
    let login = |n: usize| {
        http.post(format!("{}/api/auth/login", node.url()))
            .json(&serde_json::json!({"email": format!("nobody{n}@example.com"), "password": "whatever1"}))
            .send()
            .expect("request")
    };
    for n in 0..3 {
        assert_eq!(login(n).status(), 401, "within the limit, attempts are judged on their merits");
    }
    let limited = login(3);
    assert_eq!(limited.status(), 429);
    let retry_after: u64 =
        limited.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry_after));
    let body: serde_json::Value = limited.json().expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");

    // Other routes are not limited.
    let health = http.get(format!("{}/healthz", node.url())).send().expect("request");
    assert_eq!(health.status(), 200);
}
