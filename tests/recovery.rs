//! Connection state recovery (`CONNECTION_STATE_RECOVERY_SECS`) on one
//! node, against the real server: a socket whose connection drops comes
//! back within the window with its id, its rooms and every event it
//! missed (once each, in order, before the CONNECT reply); anything that
//! cannot be recovered whole is a fresh socket; presence does not flap;
//! typing is never replayed; with the feature off nothing changes on the
//! wire. Then the same with the official client (`socket.recovered`) and
//! python-socketio (which has no recovery of its own).

mod common;

use std::time::{Duration, Instant};

use common::clients::{self, expired_token};
use common::socket::{QUIET, SocketClient, SocketOptions, WAIT};
use common::{TestApp, TestUser};
use serde_json::{Value, json};

/// A node with recovery on for `secs`.
fn app_with_window(secs: u64) -> TestApp {
    TestApp::builder().env("CONNECTION_STATE_RECOVERY_SECS", secs).sqlite()
}

fn metric(app: &TestApp, name: &str) -> i64 {
    let text = app.client().get(app.url("/metrics")).send().and_then(|r| r.text()).expect("metrics");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Waits until the node counts `n` connected sockets (a dropped one has
/// been noticed and parked).
#[track_caller]
fn wait_connected(app: &TestApp, n: i64) {
    let deadline = Instant::now() + WAIT;
    while metric(app, "civicpulse_connected_sockets") != n {
        assert!(Instant::now() < deadline, "the node never counted {n} sockets");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The offset an event carries: its last argument, a string.
#[track_caller]
fn offset_of(event: &common::socket::Event) -> String {
    assert_eq!(event.args.len(), 2, "{} carries its payload and its offset: {:?}", event.name, event.args);
    event.args[1].as_str().unwrap_or_else(|| panic!("the offset is a string: {:?}", event.args)).to_string()
}

/// The pid of a CONNECT reply.
#[track_caller]
fn pid_of(socket: &SocketClient) -> String {
    let reply = socket.connect_reply();
    let pid = reply["pid"].as_str().unwrap_or_else(|| panic!("a pid in {reply}"));
    assert!(pid.len() >= 16, "a random pid: {pid}");
    pid.to_string()
}

/// Connects `user` again with the pid and offset a client keeps.
fn reconnect(app: &TestApp, user: &TestUser, pid: &str, offset: Option<&str>) -> Result<SocketClient, Value> {
    let mut auth = json!({ "token": user.token, "pid": pid });
    if let Some(offset) = offset {
        auth["offset"] = json!(offset);
    }
    app.socket_with(SocketOptions { label: format!("{} again", user.name), ..SocketOptions::auth(auth) })
}

/// The message ids of the `message:new`s among `events`.
fn message_ids(events: &[common::socket::Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.name == "message:new")
        .map(|e| common::str_of(&e.payload["messageId"]))
        .collect()
}

#[test]
fn off_by_default_the_wire_is_the_conformance_one() {
    let app = TestApp::sqlite();
    let (alice, bob) = (app.register("Alice"), app.register("Bob"));
    let issue = app.issue_id(&alice);
    let mut socket = app.socket(&alice);
    let reply = socket.connect_reply().clone();
    assert_eq!(
        reply.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["sid".to_string()])
    );
    socket.join(&issue);
    app.post_message(&bob, &issue, "plain");
    let event = socket.expect_event_at("message:new", WAIT);
    assert_eq!(event.args.len(), 1, "no offset: {:?}", event.args);
    app.update_issue(&alice, &issue, json!({ "title": "Plain title" }));
    assert_eq!(socket.expect_event_at("issue:updated", WAIT).args.len(), 1);
    // A dropped socket is gone: a pid (of nothing) gets a fresh one with no pid.
    let sid = socket.sid().to_string();
    socket.drop_transport();
    wait_connected(&app, 0);
    let again = reconnect(&app, &alice, "made-up", Some("1")).expect("connects");
    assert_ne!(again.sid(), sid);
    assert!(again.connect_reply().get("pid").is_none(), "{}", again.connect_reply());
}

#[test]
fn a_dropped_socket_comes_back_with_what_it_missed_once_in_order_before_anything_new() {
    let app = app_with_window(30);
    let (alice, bob, carol) = (app.register("Alice"), app.register("Bob"), app.register("Carol"));
    let (issue, elsewhere) = (app.issue_id(&bob), app.issue_id(&bob));
    let mut socket = app.socket(&alice);
    let pid = pid_of(&socket);
    socket.join(&issue);
    let mut typist = app.socket(&carol);
    typist.join(&issue);

    app.post_message(&bob, &issue, "before");
    let seen = socket.expect_event_at("message:new", WAIT);
    let offset = offset_of(&seen);
    // Typing is volatile: no offset, and never logged.
    typist.emit("user:typing", json!({ "issueId": issue, "isTyping": true }));
    let typing = socket.expect_event_at("user:typing", WAIT);
    assert_eq!(typing.args.len(), 1, "typing carries no offset: {:?}", typing.args);
    let sid = socket.sid().to_string();
    socket.drop_transport();
    wait_connected(&app, 1);

    // While it is away: room messages (its room and another), a global
    // issue event, typing in its room.
    let m1 = common::str_of(&app.post_message(&bob, &issue, "missed 1")["messageId"]);
    app.post_message(&bob, &elsewhere, "not for alice");
    typist.emit("user:typing", json!({ "issueId": issue, "isTyping": false }));
    let created = app.create_issue(&bob, json!({}));
    let m2 = common::str_of(&app.post_message(&bob, &issue, "missed 2")["messageId"]);

    let mut back = reconnect(&app, &alice, &pid, Some(&offset)).expect("recovers");
    assert_eq!(back.sid(), sid, "the same socket id");
    assert_eq!(back.connect_reply()["pid"], json!(pid), "the same pid: the client's `recovered`");
    let missed: Vec<_> = back.received().to_vec();
    assert_eq!(
        back.events_before_connect(),
        missed.len(),
        "every missed event comes before the CONNECT reply"
    );
    let names: Vec<&str> = missed.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["message:new", "issue:created", "message:new"], "{}", back.dump());
    assert_eq!(message_ids(&missed), [m1.clone(), m2.clone()]);
    assert_eq!(missed[1].payload["issueId"], created["issueId"]);
    let offsets: Vec<u64> = missed.iter().map(|e| offset_of(e).parse().expect("a number")).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets grow: {offsets:?}");
    assert!(offsets[0] > offset.parse::<u64>().expect("a number"));

    // Back in its room: new events follow, once.
    let m3 = common::str_of(&app.post_message(&bob, &issue, "after")["messageId"]);
    back.expect_matching("message:new", |m| m["messageId"] == json!(m3));
    back.read_for(QUIET);
    assert_eq!(message_ids(back.received()), [m1, m2, m3]);
    assert!(
        back.received().iter().all(|e| e.name != "user:typing"),
        "typing is never replayed: {}",
        back.dump()
    );
    assert_eq!(metric(&app, "civicpulse_recoveries_total"), 1);

    // And again: recovery works more than once, from the last offset seen.
    let last = offset_of(back.received().last().expect("events"));
    back.drop_transport();
    wait_connected(&app, 1);
    let m4 = common::str_of(&app.post_message(&bob, &issue, "missed 4")["messageId"]);
    let third = reconnect(&app, &alice, &pid, Some(&last)).expect("recovers again");
    assert_eq!(third.sid(), sid);
    assert_eq!(message_ids(third.received()), [m4]);
    assert_eq!(metric(&app, "civicpulse_recoveries_total"), 2);
}

#[test]
fn a_client_that_saw_no_event_yet_sends_no_offset_and_still_recovers() {
    let app = app_with_window(30);
    let (alice, bob) = (app.register("Alice"), app.register("Bob"));
    let issue = app.issue_id(&bob);
    let mut socket = app.socket(&alice);
    let pid = pid_of(&socket);
    socket.join(&issue);
    let sid = socket.sid().to_string();
    socket.drop_transport();
    wait_connected(&app, 0);
    let missed = common::str_of(&app.post_message(&bob, &issue, "while away")["messageId"]);
    let back = reconnect(&app, &alice, &pid, None).expect("recovers");
    assert_eq!((back.sid(), message_ids(back.received())), (sid.as_str(), vec![missed]));
}

#[test]
fn presence_does_not_flap_for_a_recovered_socket_and_follows_the_window_otherwise() {
    let app = app_with_window(2);
    let (alice, dave) = (app.register("Alice"), app.register("Dave"));
    let mut watcher = app.socket(&dave);
    let socket = app.socket(&alice);
    let alice_online =
        |p: &Value, online: bool| p["userId"] == json!(alice.id) && p["online"] == json!(online);
    watcher.expect_matching("presence:update", |p| alice_online(p, true));
    let pid = pid_of(&socket);
    socket.drop_transport();
    wait_connected(&app, 1);
    std::thread::sleep(Duration::from_millis(500));
    let back = reconnect(&app, &alice, &pid, None).expect("recovers");
    assert_eq!(back.connect_reply()["pid"], json!(pid));
    watcher.read_for(QUIET);
    let alice_updates = |w: &SocketClient| {
        w.received()
            .iter()
            .filter(|e| e.name == "presence:update" && e.payload["userId"] == json!(alice.id))
            .count()
    };
    assert_eq!(alice_updates(&watcher), 1, "online once, no offline/online pair: {}", watcher.dump());
    let (_, users) = app.get("/api/presence", Some(&dave.token));
    assert!(users["items"].as_array().is_some_and(|u| u.iter().any(|u| u["userId"] == json!(alice.id))));

    // Not back in time: offline when the window ends, not at the drop.
    let dropped = Instant::now();
    back.drop_transport();
    wait_connected(&app, 1);
    watcher.read_for(Duration::from_millis(1000));
    assert_eq!(alice_updates(&watcher), 1, "still online a second after the drop: {}", watcher.dump());
    watcher.expect_matching("presence:update", |p| alice_online(p, false));
    assert!(dropped.elapsed() >= Duration::from_secs(2), "offline only after the window");
    let late = reconnect(&app, &alice, &pid, None).expect("a fresh socket");
    assert_ne!(late.connect_reply()["pid"], json!(pid), "not recovered");
}

#[test]
fn an_unknown_pid_an_expired_window_or_a_gap_is_a_fresh_socket_never_a_partial_replay() {
    let app = TestApp::builder()
        .env("CONNECTION_STATE_RECOVERY_SECS", 1)
        .env("CONNECTION_STATE_RECOVERY_MAX_EVENTS", 3)
        .sqlite();
    let (alice, bob) = (app.register("Alice"), app.register("Bob"));
    let issue = app.issue_id(&bob);

    let fresh = reconnect(&app, &alice, "no-such-pid", Some("1")).expect("connects");
    assert_ne!(fresh.connect_reply()["pid"], json!("no-such-pid"));
    assert_eq!(fresh.events_before_connect(), 0);
    let first_sid = fresh.sid().to_string();
    fresh.drop_transport();
    wait_connected(&app, 0);

    // Expired: the window is one second.
    let mut socket = app.socket(&alice);
    let (pid, sid) = (pid_of(&socket), socket.sid().to_string());
    assert_ne!(sid, first_sid);
    socket.join(&issue);
    socket.drop_transport();
    wait_connected(&app, 0);
    std::thread::sleep(Duration::from_millis(1500));
    let late = reconnect(&app, &alice, &pid, None).expect("connects");
    assert_ne!(late.sid(), sid);
    assert_ne!(late.connect_reply()["pid"], json!(pid));
    late.drop_transport();
    wait_connected(&app, 0);

    // A gap: more events than the log keeps went by.
    let mut socket = app.socket(&alice);
    let (pid, sid) = (pid_of(&socket), socket.sid().to_string());
    socket.join(&issue);
    socket.drop_transport();
    wait_connected(&app, 0);
    for n in 0..4 {
        app.post_message(&bob, &issue, &format!("overflow {n}"));
    }
    let mut gapped = reconnect(&app, &alice, &pid, None).expect("connects");
    assert_ne!(gapped.sid(), sid);
    assert_ne!(gapped.connect_reply()["pid"], json!(pid));
    assert_eq!(gapped.events_before_connect(), 0, "nothing replayed: {}", gapped.dump());
    app.post_message(&bob, &issue, "not in the room any more");
    gapped.expect_no_event("message:new", QUIET);
    assert_eq!(metric(&app, "civicpulse_recoveries_total"), 0);
    assert_eq!(metric(&app, "civicpulse_recoveries_failed_total"), 3);
}

#[test]
fn the_token_is_checked_again_a_revoked_or_expired_one_is_refused() {
    let app = app_with_window(30);
    let alice = app.register("Alice");
    let socket = app.socket(&alice);
    let pid = pid_of(&socket);
    socket.drop_transport();
    wait_connected(&app, 0);
    let expired = TestUser { token: expired_token(&alice), ..alice.clone() };
    let refused = reconnect(&app, &expired, &pid, None).err().expect("an expired token is refused");
    assert_eq!(refused["message"], json!("Authentication failed"));
    let (status, _) = app.post("/api/auth/logout", None, Some(json!({ "refreshToken": alice.refresh })));
    assert_eq!(status.as_u16(), 204);
    let refused = reconnect(&app, &alice, &pid, None).err().expect("a revoked token is refused");
    assert_eq!(refused["message"], json!("Authentication failed"));
    // Another user's token with this pid is a fresh socket of theirs.
    let bob = app.register("Bob");
    let bobs = reconnect(&app, &bob, &pid, None).expect("connects");
    assert_ne!(bobs.connect_reply()["pid"], json!(pid));
}

#[test]
fn a_goodbye_is_not_recoverable() {
    let app = app_with_window(30);
    let (alice, dave) = (app.register("Alice"), app.register("Dave"));
    let mut watcher = app.socket(&dave);
    let mut socket = app.socket(&alice);
    let (pid, sid) = (pid_of(&socket), socket.sid().to_string());
    socket.close();
    watcher.expect_matching("presence:update", |p| {
        p["userId"] == json!(alice.id) && p["online"] == json!(false)
    });
    let again = reconnect(&app, &alice, &pid, None).expect("connects");
    assert_ne!(again.sid(), sid);
}

// ---- the clients ------------------------------------------------------------

/// Runs a scenario of tests/js/recovery.mjs as alice, with bob posting.
fn official_client(app: &TestApp, scenario: &str) {
    clients::js_ready();
    let (alice, bob) = (app.register("Alice"), app.register("Bob"));
    clients::js("recovery.mjs", scenario, &clients::input(app, &[("alice", &alice), ("bob", &bob)]));
}

#[test]
fn the_official_client_recovers_and_says_so() {
    official_client(&app_with_window(30), "recovered");
}

#[test]
fn the_official_client_is_told_when_it_was_not_recovered() {
    let app = TestApp::builder()
        .env("CONNECTION_STATE_RECOVERY_SECS", 30)
        .env("CONNECTION_STATE_RECOVERY_MAX_EVENTS", 2)
        .sqlite();
    official_client(&app, "not-recovered");
}

#[test]
fn python_socketio_without_recovery_of_its_own_still_works_with_it_on() {
    clients::py_ready();
    let app = app_with_window(30);
    let (alice, bob) = (app.register("Alice"), app.register("Bob"));
    let input = clients::input(&app, &[("alice", &alice), ("bob", &bob)]);
    clients::py("recovery.py", "fresh-after-reconnect", &input);
}
