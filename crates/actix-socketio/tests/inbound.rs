//! What a client sends is bounded the way what it receives is: once the
//! application has `max_inflight` of a connection's events in hand, the
//! server stops reading from it (WebSocket: TCP pushes back on the client;
//! polling: the POST is not answered), and carries on as the application
//! finishes with them. The application here holds every event's permit
//! until the test lets go, so the counts are exact, not timings.

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tungstenite::Message;

use actix_socketio::engineio::{CloseReason, EngineConfig, InboundPermit};
use actix_socketio::socketio::{Accepted, Event, Refusal, SocketApp, SocketRef};

const MAX_INFLIGHT: usize = 16;

/// Keeps every event it is given, permit and all.
#[derive(Clone, Default)]
struct Holder {
    held: Arc<Mutex<Vec<InboundPermit>>>,
    received: Arc<Mutex<usize>>,
}

impl Holder {
    fn received(&self) -> usize {
        *self.received.lock().expect("lock")
    }

    fn release(&self) {
        self.held.lock().expect("lock").clear();
    }

    /// Waits until `n` events have been received (panics after a while).
    fn wait_received(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.received() < n {
            assert!(Instant::now() < deadline, "received {} of {n} events", self.received());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl SocketApp for Holder {
    type Socket = ();

    fn connect(&self, _: &SocketRef<Self>, _: &Map<String, Value>) -> Result<Accepted<()>, Refusal> {
        Ok(Accepted::new(()))
    }

    fn event(&self, _: &mut (), _: &SocketRef<Self>, event: Event) {
        *self.received.lock().expect("lock") += 1;
        self.held.lock().expect("lock").push(event.permit);
    }

    fn disconnect(&self, _: (), _: &SocketRef<Self>, _: &str) {}
}

fn serve(holder: &Holder) -> std::net::SocketAddr {
    let config = EngineConfig { max_inflight: MAX_INFLIGHT, ..EngineConfig::default() };
    common::serve(config, holder.clone())
}

/// One masked WebSocket text frame, as a client sends it (RFC 6455 5.2).
fn client_text_frame(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    // A zero mask leaves the payload as it is; still a masked frame.
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

#[test]
fn a_websocket_that_floods_is_not_read_past_the_bound_and_resumes_when_events_finish() {
    let holder = Holder::default();
    let addr = serve(&holder);
    let (mut ws, _) =
        tungstenite::connect(format!("ws://{addr}/socket.io/?EIO=4&transport=websocket")).expect("connect");
    ws.send(Message::text("40")).expect("CONNECT");
    loop {
        if let Message::Text(text) = ws.read().expect("CONNECT reply")
            && text.starts_with("40")
        {
            break;
        }
    }
    let tungstenite::stream::MaybeTlsStream::Plain(stream) = ws.get_mut() else { panic!("plain TCP") };
    let mut stream: TcpStream = stream.try_clone().expect("clone the stream");
    stream.set_write_timeout(Some(Duration::from_millis(400))).expect("write timeout");

    // 1 KiB events, far more than the kernel's buffers on both sides hold.
    let frame = client_text_frame(&format!(r#"42["hold","{}"]"#, "x".repeat(1000)));
    let total = 200_000;
    let mut written = 0;
    for _ in 0..total {
        match stream.write_all(&frame) {
            Ok(()) => written += 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("write failed: {e}"),
        }
    }
    assert!(written < total, "the server read all {total} events (200 MB) without working through them");
    holder.wait_received(MAX_INFLIGHT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        holder.received(),
        MAX_INFLIGHT,
        "events are taken only while fewer than the bound are in hand"
    );

    // Finishing with them lets the connection read on.
    holder.release();
    holder.wait_received(2 * MAX_INFLIGHT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(holder.received(), 2 * MAX_INFLIGHT);
}

#[test]
fn a_polling_post_is_answered_only_once_the_events_it_carried_are_below_the_bound() {
    let holder = Holder::default();
    let addr = serve(&holder);
    let http = reqwest::blocking::Client::builder().no_proxy().build().expect("client");
    let base = format!("http://{addr}/socket.io/?EIO=4&transport=polling");
    let open = http.get(&base).send().and_then(|r| r.text()).expect("handshake");
    let sid = open
        .split("\"sid\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("sid in the handshake")
        .to_string();
    let url = format!("{base}&sid={sid}");
    assert_eq!(http.post(&url).body("40").send().and_then(|r| r.text()).expect("CONNECT"), "ok");
    assert!(http.get(&url).send().and_then(|r| r.text()).expect("CONNECT reply").starts_with("40"));

    // One POST with more events than the bound: all are handed over (the
    // body is already here), but its answer waits.
    let events: Vec<String> = (0..MAX_INFLIGHT + 4).map(|i| format!(r#"42["hold",{i}]"#)).collect();
    let body = events.join("\x1e");
    let post = {
        let (http, url) = (http.clone(), url.clone());
        std::thread::spawn(move || http.post(&url).body(body).send().and_then(|r| r.text()))
    };
    holder.wait_received(MAX_INFLIGHT + 4);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!post.is_finished(), "the POST was answered with {} events in hand", MAX_INFLIGHT + 4);
    holder.release();
    assert_eq!(post.join().expect("POST thread").expect("POST answered"), "ok");
}

/// Closes every socket at its first event, as an application cuts off a
/// flooder.
#[derive(Clone, Default)]
struct Closer;

impl SocketApp for Closer {
    type Socket = ();

    fn connect(&self, _: &SocketRef<Self>, _: &Map<String, Value>) -> Result<Accepted<()>, Refusal> {
        Ok(Accepted::new(()))
    }

    fn event(&self, _: &mut (), socket: &SocketRef<Self>, _: Event) {
        socket.close(CloseReason::ForcedClose);
    }

    fn disconnect(&self, _: (), _: &SocketRef<Self>, _: &str) {}
}

#[test]
fn a_client_still_sending_after_the_server_closed_it_is_dropped_not_read_on() {
    let addr = common::serve(EngineConfig::default(), Closer);
    let (mut ws, _) =
        tungstenite::connect(format!("ws://{addr}/socket.io/?EIO=4&transport=websocket")).expect("connect");
    ws.send(Message::text("40")).expect("CONNECT");
    loop {
        if let Message::Text(text) = ws.read().expect("CONNECT reply")
            && text.starts_with("40")
        {
            break;
        }
    }
    let tungstenite::stream::MaybeTlsStream::Plain(stream) = ws.get_mut() else { panic!("plain TCP") };
    let mut stream: TcpStream = stream.try_clone().expect("clone the stream");
    // Only so that a server that neither reads nor hangs up fails the test
    // rather than hanging it.
    stream.set_write_timeout(Some(Duration::from_secs(20))).expect("write timeout");

    // The first event has the socket closed; the client never reads and
    // goes on writing. While it lingers for the client's close frame, the
    // server reads only a little more and then hangs up, so the writes
    // fail once the kernel's buffers (a few MB on loopback) are full,
    // rather than being read and thrown away for the whole linger.
    let frame = client_text_frame(&format!(r#"42["flood","{}"]"#, "x".repeat(1000)));
    let limit = 32 << 20;
    let mut written = 0;
    let error = loop {
        if written >= limit {
            panic!("the server took {written} bytes from a socket it had closed");
        }
        match stream.write_all(&frame) {
            Ok(()) => written += frame.len(),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(error.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
        "the server hung up (after {written} bytes), rather than stopping reading: {error}"
    );
}
