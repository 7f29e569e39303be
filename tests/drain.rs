//! The graceful drain of a node told to stop: the real binary over SQLite,
//! SIGTERM while fifty official Socket.IO clients (WebSocket and polling)
//! send acknowledged messages (tests/js/drain.mjs). The rolling restart of
//! a cluster is in tests/cluster/main.rs.

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use common::binary::Server;
use common::{Method, PASSWORD};

const DRAIN_TIMEOUT: Duration = Duration::from_secs(4);
const DRAIN_DELAY: Duration = Duration::from_millis(500);
/// Sockets closed a second: 25 WebSockets take over a second, in batches.
const DRAIN_RATE: u32 = 20;
/// What the exit may take beyond the bound: the process winding down.
const EXIT_MARGIN: Duration = Duration::from_millis(750);

fn node(db_url: &str) -> Server {
    let (timeout, delay, rate) =
        (DRAIN_TIMEOUT.as_secs().to_string(), DRAIN_DELAY.as_millis().to_string(), DRAIN_RATE.to_string());
    Server::start(
        db_url,
        &[
            ("DRAIN_TIMEOUT_SECS", &timeout),
            ("DRAIN_DELAY_MS", &delay),
            ("DRAIN_RATE", &rate),
            ("RUST_LOG", "info,civicpulse::http=warn,civicpulse::socket=warn"),
        ],
    )
}

/// A citizen registered on `server`, as the scripts take users.
fn register(server: &Server, name: &str) -> Value {
    let email = format!("{}-{}@example.test", name.to_lowercase(), rand::random::<u32>());
    let (status, v) = server.request(
        Method::POST,
        "/api/auth/register",
        None,
        json!({ "email": email, "password": PASSWORD, "displayName": name, "city": "springfield" }),
    );
    assert_eq!(status, 201, "register {name}: {v}");
    json!({ "id": v["user"]["userId"], "name": name, "token": v["accessToken"] })
}

/// Every message of `issue`, by content: how many times each is stored.
fn stored(server: &Server, token: &str, issue: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut before = String::new();
    loop {
        let path = format!("/api/issues/{issue}/messages?limit=100&before={before}");
        let (status, page) = server.request(Method::GET, &path, Some(token), Value::Null);
        assert_eq!(status, 200, "history: {page}");
        for m in page["items"].as_array().expect("items") {
            *counts.entry(m["content"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
        match page["nextCursor"].as_str() {
            Some(cursor) => before = cursor.to_string(),
            None => return counts,
        }
    }
}

fn epoch_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64
}

#[test]
fn sigterm_drains_within_the_bound_and_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_url = format!("sqlite://{}", dir.path().join("civicpulse.db").display());
    let mut server = node(&db_url);
    let users: Vec<Value> = (0..5).map(|i| register(&server, &format!("Drainee{i}"))).collect();
    let token = users[0]["token"].as_str().expect("token").to_string();
    let (status, issue) = server.request(
        Method::POST,
        "/api/issues",
        Some(&token),
        json!({ "title": "Pothole on the way out", "category": "roads" }),
    );
    assert_eq!(status, 201, "{issue}");
    let issue_id = issue["issueId"].as_str().expect("issueId").to_string();
    let results = dir.path().join("results.json");
    let input = json!({
        "url": server.url(),
        "pid": server.pid(),
        "users": users,
        "issueId": issue_id,
        "sockets": { "websocket": 25, "polling": 25 },
        "delayMs": DRAIN_DELAY.as_millis() as u64,
        "timeoutMs": DRAIN_TIMEOUT.as_millis() as u64,
        "resultsFile": results,
    });

    // The script sends the SIGTERM; this side times the exit.
    let script = std::thread::spawn(move || {
        common::clients::js_within("drain.mjs", "single", &input, Duration::from_secs(40))
    });
    let status = server.wait_exit(Duration::from_secs(60)).expect("the node exits");
    let exited_at = epoch_ms();
    let log = server.stderr();
    if let Err(panic) = script.join() {
        eprintln!("--- the node's stderr ---\n{log}");
        std::panic::resume_unwind(panic);
    }
    assert!(status.success(), "exit status {status}; stderr:\n{log}");

    let seen: Value =
        serde_json::from_slice(&std::fs::read(&results).expect("results")).expect("results JSON");
    let took = Duration::from_millis(exited_at.saturating_sub(seen["termAt"].as_u64().expect("termAt")));
    println!("exited {took:?} after SIGTERM (DRAIN_TIMEOUT_SECS={})", DRAIN_TIMEOUT.as_secs());
    assert!(took <= DRAIN_TIMEOUT + EXIT_MARGIN, "exited {took:?} after SIGTERM; stderr:\n{log}");

    // Each phase logged once, every session closed by the drain.
    for phase in [
        "SIGTERM: draining, exit within 4 s",
        "listener closed",
        "HTTP connections close after their current response",
        "closing socket sessions",
        "socket sessions closed: 50 by",
        "message writer flushed",
        "drained in",
    ] {
        assert_eq!(log.matches(phase).count(), 1, "{phase:?} logged once; stderr:\n{log}");
    }
    assert!(!log.contains("with work in hand"), "sessions waited for their acks; stderr:\n{log}");

    // The sessions closed in batches: the WebSockets two every 100 ms (1.2 s),
    // (25 at 20 a second), the polling ones first, while their GETs waited.
    let clients = seen["clients"].as_array().expect("clients");
    let gone = |kind: &str| -> Vec<u64> {
        let mut at: Vec<u64> = clients
            .iter()
            .filter(|c| c["kind"] == kind)
            .filter_map(|c| {
                c["timeline"].as_array()?.iter().find(|e| e["what"] == "disconnect")?["at"].as_u64()
            })
            .collect();
        at.sort_unstable();
        at
    };
    let (ws, polling) = (gone("websocket"), gone("polling"));
    assert_eq!((ws.len(), polling.len()), (25, 25), "every socket was disconnected");
    let spread = ws[ws.len() - 1] - ws[0];
    println!("WebSockets disconnected over {spread} ms, polling over {} ms", polling[24] - polling[0]);
    assert!(spread >= 600, "25 WebSockets at 20 a second (13 batches) closed within {spread} ms");
    assert!(polling[24] + 300 < ws[24], "polling sessions go first");

    // Every acknowledged message is stored, once, across a restart.
    let acked: Vec<&str> = clients
        .iter()
        .flat_map(|c| c["acked"].as_array().expect("acked").iter())
        .map(|m| m["content"].as_str().expect("content"))
        .collect();
    let unacked: u64 = clients.iter().map(|c| c["failed"].as_u64().unwrap_or(0)).sum();
    println!("{} message(s) acknowledged, {unacked} not", acked.len());
    assert!(acked.len() > 200, "the clients were sending: {} acknowledged", acked.len());
    drop(server);
    let server = node(&db_url);
    let counts = stored(&server, &token, &issue_id);
    for content in &acked {
        assert_eq!(counts.get(*content), Some(&1), "acknowledged {content:?} is stored once");
    }
}

/// `DRAIN_TIMEOUT_SECS=0`: every socket closed at once, nothing waited for.
#[test]
fn a_zero_drain_timeout_exits_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_url = format!("sqlite://{}", dir.path().join("civicpulse.db").display());
    let mut server = Server::start(&db_url, &[("DRAIN_TIMEOUT_SECS", "0")]);
    let signalled = std::time::Instant::now();
    server.terminate();
    let status = server.wait_exit(Duration::from_secs(10)).expect("the node exits");
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}; stderr:\n{}", server.stderr());
    assert!(took < Duration::from_millis(500), "exited {took:?} after SIGTERM");
    assert!(server.stderr().contains("SIGTERM: draining, exit within 0 s"), "{}", server.stderr());
}
