//! Three nodes behind nginx in plain round-robin (no sticky sessions, no
//! upstream keep-alive) are one server to the official clients: the
//! compatibility scenarios of tests/clients.rs and tests/realtime.rs run
//! unchanged against the proxy, with the clients' default transports
//! (polling, then the upgrade), polling only and WebSocket only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{TestUser, absent_id, clients};
use crate::harness::{Cluster, Nginx};

struct Proxied {
    cluster: Cluster,
    nginx: Nginx,
    users: Vec<(&'static str, TestUser)>,
    official: TestUser,
}

/// Three nodes behind nginx, and the users the scripts know, registered on
/// different nodes.
fn proxied() -> Proxied {
    let cluster = Cluster::start(3);
    let urls = cluster.urls();
    let nginx = Nginx::start(&urls.iter().map(String::as_str).collect::<Vec<_>>());
    let users = vec![
        ("alice", cluster.register(0, "Alice")),
        ("bob", cluster.register(1, "Bob")),
        ("carol", cluster.register(2, "Carol")),
        ("dave", cluster.register_in(0, "Dave", Some("shelbyville"))),
        ("erin", cluster.register_in(1, "Erin", None)),
    ];
    let official = cluster.official();
    Proxied { cluster, nginx, users, official }
}

impl Proxied {
    /// The scripts' data as tests/clients.rs and tests/realtime.rs give
    /// it, with the proxy's URL (every request and socket lands on
    /// whichever node nginx picks) and issues of its own, as each of those
    /// tests has.
    fn input(&self) -> Value {
        let alice = &self.users[0].1;
        let users: serde_json::Map<String, Value> =
            self.users.iter().map(|(k, u)| (k.to_string(), clients::user_json(u))).collect();
        json!({
            "url": self.nginx.url,
            "users": users,
            "official": clients::user_json(&self.official),
            "issueId": self.cluster.issue_id(alice),
            "otherIssueId": self.cluster.issue_id(alice),
            "absentIssueId": absent_id("iss_"),
            "badTokens": clients::bad_tokens(alice),
            "expiredToken": clients::expired_token(alice),
        })
    }

    /// Requests the nodes forwarded to each other, in all.
    fn forwarded(&self) -> f64 {
        (0..3)
            .map(|i| {
                self.cluster.metric(i, "civicpulse_forwarded_requests_total")
                    + self.cluster.metric(i, "civicpulse_forwarded_upgrades_total")
            })
            .sum()
    }
}

const JS_SCENARIOS: [&str; 11] = [
    "connect-websocket",
    "connect-default",
    "connect-polling",
    "auth-failures",
    "auth-refresh",
    "invalid-namespace",
    "acks",
    "rooms",
    "global-events",
    "reconnect",
    "garbage",
];

#[test]
#[ignore = "needs PostgreSQL, redis-server, node and nginx; CI runs it"]
fn through_round_robin_nginx_the_official_js_client_sees_one_server() {
    let p = proxied();
    for scenario in JS_SCENARIOS {
        clients::js("scenarios.mjs", scenario, &p.input());
    }
    for scenario in ["messages", "reactions"] {
        clients::js("realtime.mjs", scenario, &p.input());
    }
    assert!(p.forwarded() > 0.0, "round-robin sent requests to nodes that do not own the session");
}

#[test]
#[ignore = "needs PostgreSQL, redis-server, python-socketio and nginx; CI runs it"]
fn through_round_robin_nginx_python_socketio_sees_one_server() {
    let p = proxied();
    for scenario in
        ["connect-websocket", "connect-polling", "auth-failures", "acks", "rooms", "global-events"]
    {
        clients::py("scenarios.py", scenario, &p.input());
    }
    for scenario in ["typing-presence", "messages"] {
        clients::py("realtime.py", scenario, &p.input());
    }
}

/// Sends `head` and an 8 MB body (more than loopback buffers hold, so a
/// node that answers before reading it resets the proxy) through nginx;
/// answers the status line.
fn post_big(nginx: &Nginx, head: &str) -> String {
    let port = nginx.url.rsplit(':').next().expect("port");
    let mut stream = TcpStream::connect(format!("127.0.0.1:{port}")).expect("connect to nginx");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let body = vec![b'x'; 8_000_000];
    let head = format!("{head}Host: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(&body).expect("body");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_string()
}

/// An oversized body reaches the client as the node's 413, not as the
/// proxy's 502: the node reads the body out before answering. Polling
/// POSTs and REST alike.
#[test]
#[ignore = "needs PostgreSQL, redis-server and nginx; CI runs it"]
fn an_oversized_body_through_nginx_is_a_413() {
    let p = proxied();
    let alice = &p.users[0].1;
    let issue = p.cluster.issue_id(alice);
    let rest = format!(
        "POST /api/issues/{issue}/messages HTTP/1.1\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n",
        alice.token
    );
    for _ in 0..3 {
        let status = post_big(&p.nginx, &rest);
        assert!(status.contains(" 413 "), "REST: expected 413 through nginx, got {status:?}");
    }
    let http = reqwest::blocking::Client::builder().no_proxy().build().expect("client");
    let open = http
        .get(format!("{}/socket.io/?EIO=4&transport=polling", p.nginx.url))
        .send()
        .and_then(|r| r.text())
        .expect("handshake through nginx");
    let sid = open
        .strip_prefix('0')
        .and_then(|j| serde_json::from_str::<Value>(j).ok())
        .and_then(|v| v["sid"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("not an open packet: {open:?}"));
    let polling = format!(
        "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nContent-Type: text/plain\r\n"
    );
    // Several tries, so that nginx sends some to a node that does not own
    // the session (it forwards) and some to the owner.
    for _ in 0..3 {
        let status = post_big(&p.nginx, &polling);
        assert!(status.contains(" 413 "), "polling: expected 413 through nginx, got {status:?}");
    }
}
