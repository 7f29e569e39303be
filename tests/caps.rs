//! The caps on what clients can hold of a node (issue 11): connections per
//! address, connections in all (with descriptors kept for /healthz,
//! /readyz and /metrics), request bodies that do not arrive, binary
//! attachments per packet and per process. Each refusal is a clear error
//! the client sees, is counted in /metrics and leaves other clients alone.
//! Nodes whose logs are checked (logged once per offender, not per
//! connection) run as the real binary; the fd tests run it under a small
//! RLIMIT_NOFILE.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::binary::Server;
use common::raw::{PATIENCE, Raw, connect_from, read_response};
use common::socket::{Frame, SocketClient, SocketOptions, WAIT};
use common::{Method, StatusCode, TestApp};
use serde_json::{Value, json};
use tungstenite::Message;

// ---- clients from a chosen address (common::raw) ----------------------------

type Ws = tungstenite::WebSocket<TcpStream>;

/// An Engine.IO WebSocket from `source`, its OPEN packet read.
fn ws_from(source: &str, addr: SocketAddr) -> Result<Ws, tungstenite::Error> {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tungstenite::client(url, connect_from(source, addr)).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => panic!("a blocking handshake was interrupted"),
    })?;
    let open = ws.read()?;
    assert!(open.to_text().is_ok_and(|t| t.starts_with("0{")), "OPEN expected: {open:?}");
    Ok(ws)
}

/// A refusal answered before any route: the error shape, and the
/// connection closed after it.
#[track_caller]
fn assert_refused(raw: &Raw, status: u16, code: &str) {
    raw.assert_error_shape(status, code);
    assert_eq!(raw.header("connection"), Some("close"), "{raw:?}");
    assert!(raw.closed, "the connection is closed after the refusal: {raw:?}");
}

fn get_from(source: &str, addr: SocketAddr, path: &str) -> Raw {
    let mut stream = connect_from(source, addr);
    write!(stream, "GET {path} HTTP/1.1\r\nHost: civicpulse\r\n\r\n").expect("write");
    read_response(&mut stream)
}

fn server_addr(server: &Server) -> SocketAddr {
    server.url().trim_start_matches("http://").parse().expect("the server's address")
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("civicpulse.db").display())
}

/// A metric's value as the node at `url` reports it (0 when absent).
fn metric_at(url: &str, name: &str) -> u64 {
    let http = reqwest::blocking::Client::builder().no_proxy().build().expect("client");
    let text = http.get(format!("{url}/metrics")).send().and_then(|r| r.text()).expect("metrics");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Waits until `metric` reads `value`.
#[track_caller]
fn wait_for_metric(url: &str, name: &str, value: u64) {
    let deadline = Instant::now() + PATIENCE;
    while metric_at(url, name) != value {
        assert!(Instant::now() < deadline, "{name} never read {value} (it reads {})", metric_at(url, name));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lines_with(server: &Server, needle: &str) -> usize {
    server.stderr().lines().filter(|l| l.contains(needle)).count()
}

/// Registers a user on a binary node; answers the access token.
fn register(server: &Server, name: &str) -> String {
    let email = format!("{}-{}@example.com", name.to_lowercase(), rand::random::<u32>());
    let (status, body) = server.request(
        Method::POST,
        "/api/auth/register",
        None,
        json!({ "email": email, "password": common::PASSWORD, "displayName": name, "city": common::CITY }),
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["accessToken"].as_str().expect("a token").to_string()
}

// ---- connections per address ---------------------------------------------

#[test]
fn an_address_past_its_connection_cap_is_refused_and_others_are_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&sqlite_url(&dir), &[("MAX_CONNECTIONS_PER_ADDRESS", "4")]);
    let addr = server_addr(&server);
    let token = register(&server, "Alice");

    // 127.0.0.3 takes its four.
    let mut crowd: Vec<Ws> = (0..4).map(|_| ws_from("127.0.0.3", addr).expect("under the cap")).collect();
    // Past them, HTTP and WebSocket alike are refused, in the error shape.
    for _ in 0..3 {
        assert_refused(&get_from("127.0.0.3", addr, "/api/issues"), 429, "too_many_connections");
    }
    match ws_from("127.0.0.3", addr) {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body: Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).expect("a JSON body");
            assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
        }
        other => panic!("the handshake is refused with 429, not {other:?}"),
    }

    // Other addresses are served: REST, and a Socket.IO client.
    assert_eq!(get_from("127.0.0.4", addr, "/healthz").status, 200);
    let mut other = SocketClient::connect(addr, SocketOptions::auth(json!({ "token": token })))
        .expect("another address connects");
    assert_eq!(other.emit("presence:list", json!({}))["ok"], true);
    // And the crowd's own sockets go on: one joins the namespace.
    crowd[0].send(Message::text(format!("40{}", json!({ "token": token })))).expect("send CONNECT");
    let reply = crowd[0].read().expect("the CONNECT reply");
    assert!(reply.to_text().is_ok_and(|t| t.starts_with("40{\"sid\"")), "{reply:?}");

    // One of the crowd gone, the address may connect again.
    let mut leaving = crowd.pop().expect("four");
    let _ = leaving.close(None);
    let _ = leaving.read();
    let deadline = Instant::now() + PATIENCE;
    let again = loop {
        match ws_from("127.0.0.3", addr) {
            Ok(ws) => break ws,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("the address never got its place back: {e}"),
        }
    };
    drop(again);

    // Counted each time, logged once for the address.
    assert!(metric_at(server.url(), "civicpulse_address_connection_refusals_total") >= 4);
    assert_eq!(lines_with(&server, "address 127.0.0.3 has 4 connections open"), 1, "{}", server.stderr());
}

// ---- request bodies that do not arrive -----------------------------------

#[test]
fn a_body_that_does_not_arrive_in_time_is_answered_408_and_its_connection_closed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&sqlite_url(&dir), &[("BODY_READ_TIMEOUT_MS", "1000")]);
    let addr = server_addr(&server);
    let http = reqwest::blocking::Client::builder().no_proxy().build().expect("client");
    let handshake = http
        .get(format!("{}/socket.io/?EIO=4&transport=polling", server.url()))
        .send()
        .and_then(|r| r.text())
        .expect("a polling handshake");
    let sid: Value = serde_json::from_str(&handshake[1..]).expect("OPEN JSON");
    let sid = sid["sid"].as_str().expect("a sid").to_string();

    // Two slow bodies from one address, both open at once: a REST one and
    // a polling POST, each sent in part and then held back.
    let mut rest = connect_from("127.0.0.5", addr);
    write!(
        rest,
        "POST /api/auth/register HTTP/1.1\r\nHost: c\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"email\":"
    )
    .expect("write");
    let mut polling = connect_from("127.0.0.5", addr);
    write!(
        polling,
        "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: c\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: 50\r\n\r\n40"
    )
    .expect("write");
    // A chunked body to a handler that does not read it (the token is
    // checked first) must not hold its connection either.
    let mut chunked = connect_from("127.0.0.5", addr);
    write!(
        chunked,
        "POST /api/issues HTTP/1.1\r\nHost: c\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{{\r\n"
    )
    .expect("write");

    // Meanwhile everyone else is served.
    register(&server, "Bob");

    assert_refused(&read_response(&mut rest), 408, "request_timeout");
    assert_refused(&read_response(&mut polling), 408, "request_timeout");
    let unread = read_response(&mut chunked);
    assert_eq!(unread.status, 401, "{unread:?}");
    assert!(unread.closed, "a chunked body left unread closes its connection: {unread:?}");
    // The polling session lost part of its stream: it is closed.
    let gone = http
        .get(format!("{}/socket.io/?EIO=4&transport=polling&sid={sid}", server.url()))
        .send()
        .and_then(|r| r.text())
        .expect("a GET");
    assert!(gone.contains("Session ID unknown"), "{gone}");

    assert_eq!(metric_at(server.url(), "civicpulse_body_timeouts_total"), 2);
    assert_eq!(lines_with(&server, "request body from 127.0.0.5 did not arrive"), 1, "{}", server.stderr());
}

// ---- binary attachments ----------------------------------------------------

/// A BINARY_EVENT's text frame declaring `n` attachments.
fn binary_event(n: usize) -> String {
    let placeholders: Vec<Value> = (0..n).map(|i| json!({ "_placeholder": true, "num": i })).collect();
    let mut args = vec![json!("upload")];
    args.extend(placeholders);
    format!("45{n}-{}", Value::Array(args))
}

/// Reads frames until the server's CONNECT_ERROR; then the socket must end.
#[track_caller]
fn expect_refusal(socket: &mut SocketClient, code: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        match socket.next_frame(deadline.saturating_duration_since(Instant::now())) {
            Frame::Text(text) if text.starts_with("44") => {
                let error: Value = serde_json::from_str(&text[2..]).expect("CONNECT_ERROR JSON");
                assert_eq!(error["data"]["code"], code, "{error}");
                assert!(error["message"].is_string(), "{error}");
                break;
            }
            // Engine.IO pings and the like.
            Frame::Text(_) | Frame::Binary(_) => {}
            other => panic!("{}: no CONNECT_ERROR, got {other:?}", socket.label()),
        }
    }
    loop {
        match socket.next_frame(deadline.saturating_duration_since(Instant::now())) {
            Frame::Closed => return,
            Frame::TimedOut => panic!("{}: still open after the refusal", socket.label()),
            _ => {}
        }
    }
}

#[test]
fn a_packet_past_the_attachment_caps_closes_its_socket_alone() {
    let app =
        TestApp::builder().env("MAX_BINARY_ATTACHMENTS", 3).env("MAX_PACKET_BINARY_BYTES", 1000).sqlite();
    let (alice, bob, carol) = (app.register("Alice"), app.register("Bob"), app.register("Carol"));
    let mut neighbour = app.socket(&bob);

    // 600 + 600 bytes is past the 1000 one packet may carry.
    let mut big = app.socket(&alice);
    big.send_text(&binary_event(2));
    big.send_frame(Message::binary(vec![1u8; 600]));
    big.send_frame(Message::binary(vec![2u8; 600]));
    expect_refusal(&mut big, "payload_too_large");

    // Four attachments are past the three one packet may declare: closed
    // as the reference closes a packet past its maxAttachments, at once.
    let mut many = app.socket(&carol);
    many.send_text(&binary_event(4));
    let deadline = Instant::now() + WAIT;
    while many.next_frame(deadline.saturating_duration_since(Instant::now())) != Frame::Closed {
        assert!(Instant::now() < deadline, "still open past MAX_BINARY_ATTACHMENTS");
    }

    // Within both, a binary event is an event like any other.
    let mut fine = app.socket(&carol);
    fine.send_text(&binary_event(2));
    fine.send_frame(Message::binary(vec![1u8; 400]));
    fine.send_frame(Message::binary(vec![2u8; 400]));
    assert_eq!(fine.emit("presence:list", json!({}))["ok"], true);

    neighbour.assert_connected();
    assert_eq!(neighbour.emit("presence:list", json!({}))["ok"], true);
    assert_eq!(metric_at(&app.url(""), "civicpulse_binary_packet_refusals_total"), 2);
    assert_eq!(metric_at(&app.url(""), "civicpulse_pending_binary_bytes"), 0);
}

#[test]
fn attachments_held_past_the_process_budget_are_refused_until_it_frees() {
    let app = TestApp::builder()
        .env("MAX_PACKET_BINARY_BYTES", 1500)
        .env("MAX_PENDING_BINARY_BYTES", 2000)
        .sqlite();
    let url = app.url("");
    let (alice, bob) = (app.register("Alice"), app.register("Bob"));

    // Alice holds 1400 bytes of a packet she has not finished.
    let mut holder = app.socket(&alice);
    holder.send_text(&binary_event(2));
    holder.send_frame(Message::binary(vec![1u8; 1400]));
    wait_for_metric(&url, "civicpulse_pending_binary_bytes", 1400);

    // 700 more would take the process past its 2000.
    let mut late = app.socket(&bob);
    late.send_text(&binary_event(2));
    late.send_frame(Message::binary(vec![1u8; 700]));
    expect_refusal(&mut late, "over_capacity");

    // Alice finishes hers; the budget is free again.
    holder.send_frame(Message::binary(vec![2u8; 50]));
    assert_eq!(holder.emit("presence:list", json!({}))["ok"], true);
    wait_for_metric(&url, "civicpulse_pending_binary_bytes", 0);
    let mut next = app.socket(&bob);
    next.send_text(&binary_event(2));
    next.send_frame(Message::binary(vec![1u8; 1400]));
    wait_for_metric(&url, "civicpulse_pending_binary_bytes", 1400);
    // A socket that leaves with a packet unfinished gives its bytes back.
    next.close();
    wait_for_metric(&url, "civicpulse_pending_binary_bytes", 0);

    assert_eq!(metric_at(&url, "civicpulse_binary_budget_refusals_total"), 1);
    assert_eq!(metric_at(&url, "civicpulse_binary_packet_refusals_total"), 0);
}

// ---- descriptors -----------------------------------------------------------

/// What the descriptor tests run the binary with: a small RLIMIT_NOFILE,
/// no cap per address (every client here is 127.0.0.1), and sockets that
/// outlive the test without answering pings.
const DESCRIPTORS: u64 = 256;
const QUIET_SOCKETS: [(&str, &str); 4] = [
    ("MAX_CONNECTIONS_PER_ADDRESS", "0"),
    ("PING_INTERVAL_MS", "300000"),
    ("CONNECT_TIMEOUT_MS", "300000"),
    ("RUST_LOG", "info,civicpulse::http=warn,civicpulse::socket=warn"),
];

#[test]
fn at_the_connection_limit_health_checks_and_metrics_still_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with_descriptor_limit(&sqlite_url(&dir), &QUIET_SOCKETS, DESCRIPTORS);
    let addr = server_addr(&server);
    let max = metric_at(server.url(), "civicpulse_max_connections");
    assert!(max > 0 && max < DESCRIPTORS, "MAX_CONNECTIONS comes from the descriptor limit: {max}");
    let token = register(&server, "Alice");
    let mut alice =
        SocketClient::connect(addr, SocketOptions::auth(json!({ "token": token }))).expect("alice");

    // Sockets until the server answers 503: the limit is reached.
    let mut held = Vec::new();
    let refused = loop {
        assert!(held.len() < DESCRIPTORS as usize, "no refusal within the descriptor limit");
        match ws_from("127.0.0.1", addr) {
            Ok(ws) => held.push(ws),
            Err(tungstenite::Error::Http(response)) => break response,
            Err(e) => panic!("after {} sockets: {e}", held.len()),
        }
    };
    assert_eq!(refused.status(), 503);
    let body: Value =
        serde_json::from_slice(refused.body().as_deref().unwrap_or_default()).expect("a JSON body");
    assert_eq!(body["error"]["code"], "over_capacity", "{body}");

    // The ops paths answer; anything else is refused, clearly.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = get_from("127.0.0.1", addr, path);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.header("connection"), Some("close"), "past the limit a connection serves one request");
    }
    let r = get_from("127.0.0.1", addr, "/api/issues");
    assert_refused(&r, 503, "over_capacity");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    // Sockets already connected are served as before.
    assert_eq!(alice.emit("presence:list", json!({}))["ok"], true);
    assert!(metric_at(server.url(), "civicpulse_capacity_refusals_total") >= 2);
    assert_eq!(lines_with(&server, "the connection limit"), 1, "{}", server.stderr());

    // Once they close, everything is served again.
    drop(held);
    let deadline = Instant::now() + PATIENCE;
    while get_from("127.0.0.1", addr, "/api/issues").status != 401 {
        assert!(Instant::now() < deadline, "still refusing after the sockets closed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ws_from("127.0.0.1", addr).is_ok());
    assert_eq!(alice.emit("presence:list", json!({}))["ok"], true);
}

#[test]
fn running_out_of_descriptors_is_logged_once_counted_and_survived() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A MAX_CONNECTIONS past the descriptor limit: accept() itself fails.
    let mut vars = QUIET_SOCKETS.to_vec();
    vars.push(("MAX_CONNECTIONS", "5000"));
    let server = Server::start_with_descriptor_limit(&sqlite_url(&dir), &vars, DESCRIPTORS);
    let addr = server_addr(&server);
    server.wait_for_line("past the descriptor limit", WAIT);

    // Sockets until one is not answered: the server cannot accept it.
    let mut held = Vec::new();
    loop {
        assert!(held.len() < 2 * DESCRIPTORS as usize, "accept never failed");
        let stream = connect_from("127.0.0.1", addr);
        stream.set_read_timeout(Some(Duration::from_secs(2))).expect("read timeout");
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        match tungstenite::client(url, stream) {
            Ok((ws, _)) => held.push(ws),
            Err(_) => break,
        }
    }
    server.wait_for_line("cannot accept connections", PATIENCE);
    // actix-server retries every 500 ms: a few seconds are several failures,
    // logged as one.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lines_with(&server, "cannot accept connections"), 1, "{}", server.stderr());
    assert_eq!(lines_with(&server, "Error accepting connection"), 0, "{}", server.stderr());

    drop(held);
    let deadline = Instant::now() + PATIENCE;
    while !get_from_quietly(addr, "/healthz") {
        assert!(Instant::now() < deadline, "not serving again after the sockets closed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metric_at(server.url(), "civicpulse_accept_errors_total") >= 2);
    server.wait_for_line("accepting connections again", PATIENCE);
}

/// Whether `path` answers 200; false when the connection fails.
fn get_from_quietly(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET {path} HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.starts_with("HTTP/1.1 200")
}
