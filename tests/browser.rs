//! The real-browser tier against the `civicpulse` binary: Debian's
//! Chromium, driven by playwright-core, runs pages on an origin of their own
//! through the official socket.io-client browser build (the scenarios are
//! tests/browser/tier.mjs). Ignored by plain `cargo test` (they need
//! Chromium); CI runs them with `--ignored`. The three-node cluster behind
//! nginx runs the same scenarios in tests/cluster/browser.rs.
//!
//! Each test starts its own node over a fresh SQLite file, allowing one
//! page origin (`CORS_ORIGINS=http://127.0.0.1:<page port>`); the
//! scenarios open pages there and on other ports, which it does not allow.

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::binary::{Server, free_port};
use common::clients::{self, user_json};
use serde_json::{Value, json};

/// A scenario's own limit (Chromium starting on a busy machine included).
const SCENARIO_LIMIT: Duration = Duration::from_secs(90);

/// One scenario at a time: Chromiums in parallel on a small machine make
/// timing flaky, and a page port found free must stay free until the
/// scenario binds it (another test's server could take it meanwhile).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A node allowing the page origin `http://127.0.0.1:<page_port>`.
struct Node {
    server: Server,
    db_url: String,
    vars: Vec<(String, String)>,
    page_port: u16,
    _dir: tempfile::TempDir,
    /// Last: released once the server is stopped (fields drop in order).
    _turn: MutexGuard<'static, ()>,
}

impl Node {
    fn start(vars: &[(&str, &str)]) -> Self {
        // A test that failed holding it poisoned it; the next may still run.
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().expect("temp dir");
        let db_url = format!("sqlite://{}", dir.path().join("civicpulse.db").display());
        let page_port = free_port();
        let mut all = vec![("CORS_ORIGINS".to_string(), format!("http://127.0.0.1:{page_port}"))];
        all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let server = Server::start(&db_url, &borrowed(&all));
        Self { server, db_url, vars: all, page_port, _dir: dir, _turn: turn }
    }

    /// The node again on its port, as a restart brings it back.
    fn restart(&mut self) {
        self.server = Server::start_on(self.server.port(), &self.db_url, &borrowed(&self.vars));
    }

    /// What every scenario reads: alice and bob of springfield, an issue of
    /// alice's, alice's token expired, the node's process.
    fn input(&self) -> Value {
        let alice = self.server.register("Alice");
        let bob = self.server.register("Bob");
        let (status, issue) = self.server.request(
            reqwest::Method::POST,
            "/api/issues",
            Some(&alice.token),
            json!({ "title": "Streetlight out on Elm St", "category": "electricity" }),
        );
        assert_eq!(status, 201, "create issue: {issue}");
        json!({
            "url": self.server.url(),
            "pagePort": self.page_port,
            "users": { "alice": user_json(&alice), "bob": user_json(&bob) },
            "issueId": issue["issueId"],
            "expiredToken": clients::expired_token(&alice),
            "pids": [self.server.pid()],
        })
    }
}

fn borrowed(vars: &[(String, String)]) -> Vec<(&str, &str)> {
    vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn metric(server: &Server, name: &str) -> f64 {
    let text = reqwest::blocking::get(format!("{}/metrics", server.url()))
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(f64::NAN)
}

#[test]
#[ignore = "needs Debian's chromium"]
fn default_transports_upgrade_and_websocket_only_and_polling_only_work_from_another_origin() {
    let node = Node::start(&[]);
    clients::browser("tier.mjs", "transports", &node.input(), SCENARIO_LIMIT);
}

#[test]
#[ignore = "needs Debian's chromium"]
fn a_refused_handshake_is_recovered_by_the_readmes_refresh_flow() {
    let node = Node::start(&[]);
    clients::browser("tier.mjs", "auth", &node.input(), SCENARIO_LIMIT);
}

#[test]
#[ignore = "needs Debian's chromium"]
fn rooms_typing_and_presence_between_two_browser_profiles() {
    let node = Node::start(&[]);
    clients::browser("tier.mjs", "rooms", &node.input(), SCENARIO_LIMIT);
}

#[test]
#[ignore = "needs Debian's chromium"]
fn a_page_reconnects_and_rejoins_its_room_across_a_server_restart() {
    let mut node = Node::start(&[("DRAIN_TIMEOUT_SECS", "2")]);
    let input = node.input();
    let script =
        std::thread::spawn(move || clients::browser("tier.mjs", "reconnect", &input, SCENARIO_LIMIT));
    // The page stops the node (SIGTERM) once its socket is in the room.
    let stopped = loop {
        if let Some(status) = node.server.wait_exit(Duration::from_millis(100)) {
            break status;
        }
        if script.is_finished() {
            // It failed before stopping the node: its own verdict says why.
            resume(script.join());
            panic!("the scenario ended without stopping the node");
        }
    };
    assert!(stopped.success(), "a drained node exits 0: {stopped}");
    node.restart();
    resume(script.join());
}

fn resume(joined: std::thread::Result<()>) {
    if let Err(panic) = joined {
        std::panic::resume_unwind(panic);
    }
}

#[test]
#[ignore = "needs Debian's chromium"]
fn a_page_whose_transport_drops_is_recovered_with_what_it_missed() {
    let node = Node::start(&[("CONNECTION_STATE_RECOVERY_SECS", "60")]);
    clients::browser("tier.mjs", "recovery", &node.input(), SCENARIO_LIMIT);
    assert_eq!(metric(&node.server, "civicpulse_recoveries_total"), 1.0);
}

#[test]
#[ignore = "needs Debian's chromium"]
fn an_allowed_page_reads_retry_after_and_a_refused_page_fails_in_the_browser() {
    let node = Node::start(&[("REST_USER_WRITE_RATE", "1"), ("REST_USER_WRITE_BURST", "3")]);
    clients::browser("tier.mjs", "cors", &node.input(), SCENARIO_LIMIT);
    // The WebSocket refused was the server's origin check, not the browser.
    assert!(metric(&node.server, "civicpulse_ws_origin_refusals_total") >= 1.0);
}

#[test]
#[ignore = "needs Debian's chromium"]
fn an_allowed_page_reads_the_connection_caps_429_and_its_retry_after() {
    let node = Node::start(&[("MAX_CONNECTIONS_PER_ADDRESS", "4")]);
    let mut input = node.input();
    input["maxPerAddress"] = 4.into();
    clients::browser("tier.mjs", "refusals", &input, SCENARIO_LIMIT);
}

#[test]
#[ignore = "needs Debian's chromium"]
fn with_the_websocket_origin_check_off_a_refused_page_can_open_a_websocket() {
    let node = Node::start(&[
        ("WS_ORIGIN_CHECK", "off"),
        ("REST_USER_WRITE_RATE", "1"),
        ("REST_USER_WRITE_BURST", "3"),
    ]);
    let mut input = node.input();
    input["wsCheck"] = false.into();
    clients::browser("tier.mjs", "cors", &input, SCENARIO_LIMIT);
    assert_eq!(metric(&node.server, "civicpulse_ws_origin_refusals_total"), 0.0);
}
