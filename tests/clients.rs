//! Real clients against a real node: the official JavaScript client
//! (`socket.io-client`, run by `node tests/js/scenarios.mjs <scenario>`) and
//! python-socketio (`tests/python/scenarios.py <scenario>`), each scenario
//! a child process whose exit code is the verdict.
//!
//! Each test starts its own node over a fresh SQLite file, makes users and
//! issues over HTTP, and hands them to the script as JSON in `CP_INPUT`.
//! Running the scripts and installing the clients is `common::clients`.

mod common;

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use civicpulse::domain::Role;
use common::TestApp;
use common::clients::{self, user_json};
use serde_json::{Value, json};

// ---- the fixture ----------------------------------------------------------

/// A node with four citizens and two issues, and the JSON that describes
/// them to a script.
struct Fixture {
    app: TestApp,
    input: Value,
}

impl Fixture {
    fn new() -> Self {
        let app = TestApp::sqlite();
        let alice = app.register("Alice");
        let bob = app.register("Bob");
        let carol = app.register("Carol");
        let dave = app.register("Dave");
        let users = [("alice", &alice), ("bob", &bob), ("carol", &carol), ("dave", &dave)];
        let mut input = clients::input(&app, &users);
        input["badTokens"] = clients::bad_tokens(&alice);
        input["expiredToken"] = json!(clients::expired_token(&alice));
        Self { app, input }
    }

    /// Adds an official (for scenarios that change status or assignment).
    fn with_official(mut self) -> Self {
        let official = self.app.staff(Role::Official);
        self.input["official"] = user_json(&official);
        self
    }
}

// ---- running the clients ----------------------------------------------------

/// Runs a scenario of tests/js/scenarios.mjs with the official client.
fn js(scenario: &str, fixture: &Fixture) {
    clients::js("scenarios.mjs", scenario, &fixture.input);
}

/// Runs a scenario of tests/python/scenarios.py with python-socketio.
fn py(scenario: &str, fixture: &Fixture) {
    clients::py("scenarios.py", scenario, &fixture.input);
}

// ---- the official JavaScript client ---------------------------------------------

#[test]
fn js_connects_over_websocket_with_the_seed_options() {
    js("connect-websocket", &Fixture::new());
}

#[test]
fn js_default_options_poll_then_upgrade_to_websocket() {
    js("connect-default", &Fixture::new());
}

#[test]
fn js_connects_over_long_polling_only() {
    js("connect-polling", &Fixture::new());
}

#[test]
fn js_every_bad_credential_gets_authentication_failed() {
    js("auth-failures", &Fixture::new());
}

#[test]
fn js_seed_refresh_path_reconnects_with_a_new_token() {
    js("auth-refresh", &Fixture::new());
}

#[test]
fn js_live_socket_refreshes_in_band_and_ends_at_logout() {
    js("session-lifecycle", &Fixture::new());
}

#[test]
fn js_other_namespaces_get_invalid_namespace() {
    js("invalid-namespace", &Fixture::new());
}

#[test]
fn js_acks_answer_good_and_bad_payloads() {
    js("acks", &Fixture::new());
}

#[test]
fn js_room_messages_reach_members_only() {
    js("rooms", &Fixture::new());
}

#[test]
fn js_issue_events_reach_every_client_with_the_contract_fields() {
    js("global-events", &Fixture::new().with_official());
}

#[test]
fn js_a_dropped_client_reconnects_and_rejoins() {
    js("reconnect", &Fixture::new());
}

#[test]
fn js_garbage_closes_the_offender_and_spares_its_neighbours() {
    js("garbage", &Fixture::new());
}

// ---- python-socketio ----------------------------------------------------------

#[test]
fn py_connects_over_websocket() {
    py("connect-websocket", &Fixture::new());
}

#[test]
fn py_connects_over_long_polling() {
    py("connect-polling", &Fixture::new());
}

#[test]
fn py_bad_credentials_get_authentication_failed() {
    py("auth-failures", &Fixture::new());
}

#[test]
fn py_acks_answer_good_and_bad_payloads() {
    py("acks", &Fixture::new());
}

#[test]
fn py_room_messages_reach_members_only() {
    py("rooms", &Fixture::new());
}

#[test]
fn py_issue_events_reach_every_client() {
    py("global-events", &Fixture::new());
}

// ---- the node itself ------------------------------------------------------------

/// Panics on the node's actix threads (recorded, then printed as usual).
fn server_panics() -> &'static Mutex<Vec<String>> {
    static PANICS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    PANICS.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("");
            if name.starts_with("actix-rt|")
                && let Some(panics) = PANICS.get()
            {
                let mut panics = panics.lock().unwrap_or_else(|p| p.into_inner());
                panics.push(format!("thread {name:?}: {info}"));
            }
            previous(info);
        }));
        Mutex::new(Vec::new())
    })
}

/// Stopping a node while a long-polling client is connected (and has no GET
/// waiting) must not panic: the session's close path schedules a timer from
/// `stopped()` while the runtime is being torn down.
#[test]
fn stopping_the_node_with_a_polling_client_connected_does_not_panic() {
    let panics = server_panics();
    let app = TestApp::sqlite();
    let alice = app.register("Alice");
    let http = app.client();
    let open = http.get(app.url("/socket.io/?EIO=4&transport=polling")).send().and_then(|r| r.text());
    let open = open.expect("polling handshake");
    let sid = open
        .strip_prefix('0')
        .and_then(|json| serde_json::from_str::<Value>(json).ok())
        .and_then(|v| v["sid"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("not an open packet: {open:?}"));
    let session = app.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    let connect = format!("40{}", json!({ "token": alice.token }));
    let posted = http.post(&session).body(connect).send().expect("POST CONNECT");
    assert!(posted.status().is_success(), "POST CONNECT: {}", posted.status());
    let answer = http.get(&session).send().and_then(|r| r.text()).expect("GET the CONNECT answer");
    assert!(answer.starts_with("40{"), "CONNECT answer {answer:?}");

    drop(app);
    // The worker threads wind down after the drop returns.
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline && panics.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = panics.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(
        seen.is_empty(),
        "the node panicked while stopping with a polling client connected:\n{}",
        seen.join("\n")
    );
}
