//! A client that stops reading is disconnected once its backlog passes
//! MAX_BUFFERED_BYTES, and nobody else in its room notices: the others get
//! every message, in order.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::TestApp;
use common::socket::{Frame, SocketOptions};
use serde_json::json;

#[test]
fn a_client_that_stops_reading_is_disconnected_and_the_room_carries_on() {
    let app = TestApp::builder().unlimited().env("MAX_BUFFERED_BYTES", 64 * 1024).sqlite();
    let alice = app.register("alice");
    let bob = app.register("bob");
    let carol = app.register("carol");
    let issue = app.create_issue(&alice, json!({"title": "Flooded underpass", "category": "water"}));
    let issue_id = issue["issueId"].as_str().expect("issue id").to_string();

    // Bob's socket has a tiny receive buffer, so that what the server
    // queues for it is not hidden in the kernel.
    let mut stalled = app
        .socket_with(SocketOptions {
            small_receive_buffer: true,
            label: "bob (stops reading)".into(),
            ..SocketOptions::auth(json!({ "token": bob.token }))
        })
        .expect("bob connects");
    stalled.join(&issue_id);
    let mut reader = app.socket_labelled(&carol, "carol (reads everything)");
    reader.join(&issue_id);

    // Bob reads nothing from here on; Carol reads everything.
    // Kernel socket buffers on loopback hold a few MB before the server's
    // own backlog grows, so send well past that: 700 × ~8 KB (2,000
    // four-byte characters each).
    let total = 700;
    // The sender waits for Carol every few messages, so only Bob, who reads
    // nothing, can fall behind, however slow this machine is today.
    let progress = Arc::new(AtomicUsize::new(0));
    let seen_so_far = progress.clone();
    let reading = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while seen.len() < total {
            let message = reader.expect_event_within("message:new", Duration::from_secs(10));
            seen.push(message["content"].as_str().expect("content").to_string());
            seen_so_far.store(seen.len(), Ordering::SeqCst);
        }
        seen
    });
    let filler = "🎉".repeat(1990);
    for i in 0..total {
        if i % 4 == 0 {
            let deadline = Instant::now() + Duration::from_secs(30);
            while progress.load(Ordering::SeqCst) < i {
                assert!(Instant::now() < deadline, "the reading member stopped receiving at {i}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        app.post_message(&alice, &issue_id, &format!("{i:04} {filler}"));
    }
    let seen = reading.join().expect("reader thread");
    let expected: Vec<String> = (0..total).map(|i| format!("{i:04} {filler}")).collect();
    assert_eq!(seen, expected, "the reading member got every message, in order");

    // Bob's connection was closed by the server: draining it ends in a
    // close frame or EOF rather than all the messages.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut delivered = 0;
    let closed = loop {
        assert!(Instant::now() < deadline, "stalled client was never disconnected");
        match stalled.next_frame(Duration::from_secs(10)) {
            Frame::Text(text) if text.starts_with("42[\"message:new\"") => delivered += 1,
            Frame::Closed => break true,
            Frame::TimedOut => break false,
            _ => {}
        }
    };
    assert!(closed, "the stalled socket was closed by the server (it read {delivered} messages)");
    assert!(delivered < total, "the stalled client did not receive everything ({delivered})");

    let metrics = app.client().get(app.url("/metrics")).send().expect("metrics").text().expect("text");
    let disconnects: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("civicpulse_slow_client_disconnects_total "))
        .and_then(|n| n.parse().ok())
        .expect("slow client counter");
    assert!(disconnects >= 1, "{metrics}");
}

/// The other direction: a client that floods `message:send` without
/// reading is held back by TCP once the server has its bound of events in
/// hand (each counts until its message is stored), instead of the server
/// reading everything into memory. Storage is held still (the test takes
/// SQLite's write lock), so the count is exact rather than a race with the
/// writer; once storage moves again, so does the flood, and a neighbour is
/// served.
#[test]
fn a_client_that_floods_without_reading_is_not_read_past_its_bound() {
    use diesel::RunQueryDsl;

    let app = TestApp::builder()
        // This test is about the inbound bound, not the rate limits that
        // would cut the flooder off first (tests/limits.rs).
        .unlimited()
        .sqlite();
    let (alice, bob) = (app.register("alice"), app.register("bob"));
    let issue_id = app.issue_id(&alice);
    let mut flooder = app.socket_labelled(&alice, "alice (floods)");
    let mut neighbour = app.socket_labelled(&bob, "bob (reads)");
    neighbour.join(&issue_id);

    let mut lock = app.node.services.domain.db.get().expect("a connection");
    diesel::sql_query("BEGIN IMMEDIATE").execute(&mut *lock).expect("take the write lock");
    // ~2 KB each, no acks asked: 100,000 of them are 200 MB, far more than
    // the kernel's buffers hold.
    let frame = format!(r#"42["message:send",{{"issueId":"{issue_id}","content":"{}"}}]"#, "x".repeat(2000));
    let total = 100_000;
    let written = flooder.flood(&frame, total, Duration::from_millis(500));
    diesel::sql_query("ROLLBACK").execute(&mut *lock).expect("release the write lock");
    drop(lock);
    assert!(written < total, "the server read all {total} messages (200 MB) while none could be stored");

    // Storage moves again: the neighbour's own message is stored and
    // reaches it, behind those of the flood that were in hand.
    let ack = neighbour.emit("message:send", json!({ "issueId": issue_id, "content": "still here" }));
    assert_eq!(ack["ok"], true, "{ack}");
    neighbour.expect_matching("message:new", |m| m["content"] == "still here");
}
