//! What one socket may send: its event rate (a token bucket; `rate_limited`
//! acks beyond it, then a disconnect for a client that goes on), and the
//! rooms it may be in. Neighbours are not disturbed.

mod common;

use std::time::Duration;

use common::TestApp;
use serde_json::json;

fn metric(app: &TestApp, name: &str) -> u64 {
    let text = app.client().get(app.url("/metrics")).send().and_then(|r| r.text()).expect("metrics");
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

#[test]
fn a_socket_over_its_rate_is_refused_then_a_flooder_is_disconnected() {
    let app = TestApp::builder()
        .env("SOCKET_EVENT_RATE", 2)
        .env("SOCKET_EVENT_BURST", 10)
        .env("SOCKET_FLOOD_STRIKES", 20)
        .sqlite();
    let (alice, bob) = (app.register("Alice"), app.register("Bob"));
    let mut flooder = app.socket(&alice);
    let mut neighbour = app.socket(&bob);
    // The burst passes…
    for _ in 0..10 {
        assert_eq!(flooder.emit("presence:list", json!({}))["ok"], true);
    }
    // …then events are refused, with the contract's error shape.
    let refused = flooder.emit("presence:list", json!({}));
    assert_eq!(
        refused,
        json!({ "ok": false, "error": { "code": "rate_limited", "message": "too many events: slow down" } })
    );
    // The neighbour is not slowed.
    assert_eq!(neighbour.emit("presence:list", json!({}))["ok"], true);
    // Going on past the refusals it may collect ends the socket.
    for _ in 0..40 {
        flooder.emit_no_ack("user:typing", json!({ "issueId": "x", "isTyping": true }));
    }
    flooder.read_for(Duration::from_millis(500));
    assert!(!flooder.is_connected(), "the flooder is disconnected: {}", flooder.dump());
    neighbour.assert_connected();
    assert_eq!(neighbour.emit("presence:list", json!({}))["ok"], true);
    assert!(metric(&app, "civicpulse_socket_events_rate_limited_total") >= 20);
    assert_eq!(metric(&app, "civicpulse_socket_flood_disconnects_total"), 1);
}

#[test]
fn a_socket_in_too_many_rooms_is_told_to_leave_one() {
    let app = TestApp::builder().env("MAX_ROOMS_PER_SOCKET", 2).sqlite();
    let alice = app.register("Alice");
    let issues: Vec<String> = (0..3).map(|_| app.issue_id(&alice)).collect();
    let mut socket = app.socket(&alice);
    assert_eq!(socket.emit("join:issue", json!(issues[0])), json!({ "ok": true }));
    assert_eq!(socket.emit("join:issue", json!(issues[1])), json!({ "ok": true }));
    // Joining one it is already in is not one more.
    assert_eq!(socket.emit("join:issue", json!(issues[1])), json!({ "ok": true }));
    let refused = socket.emit("join:issue", json!(issues[2]));
    assert_eq!(refused["error"]["code"], "limit_reached", "{refused}");
    assert_eq!(socket.emit("leave:issue", json!(issues[0])), json!({ "ok": true }));
    assert_eq!(socket.emit("join:issue", json!(issues[2])), json!({ "ok": true }));
    assert_eq!(metric(&app, "civicpulse_room_cap_refusals_total"), 1);
}
