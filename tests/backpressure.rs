//! A client that stops reading is disconnected once its backlog passes
//! MAX_BUFFERED_BYTES, and nobody else in its room notices: the others get
//! every message, in order.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use civicpulse::RunningNode;
use civicpulse::config::Config;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

const SECRET: &str = "backpressure-test-secret-0123456789abcdef";

struct Node {
    node: RunningNode,
    http: reqwest::blocking::Client,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(max_buffered: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let vars: HashMap<String, String> = [
            ("HOST", "127.0.0.1".to_string()),
            ("PORT", "0".to_string()),
            ("WORKERS", "2".to_string()),
            ("JWT_SECRET", SECRET.to_string()),
            ("MAX_BUFFERED_BYTES", max_buffered.to_string()),
            ("DATABASE_URL", format!("sqlite://{}", dir.path().join("c.db").display())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let node = RunningNode::start(Config::from_vars(&vars).expect("config")).expect("node");
        Self { node, http: reqwest::blocking::Client::new(), _dir: dir }
    }

    fn post(&self, path: &str, token: Option<&str>, body: Value) -> Value {
        let mut req = self.http.post(format!("{}{path}", self.node.url())).json(&body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req.send().expect("request");
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().expect("json")
    }

    fn register(&self, name: &str) -> String {
        let body = json!({"email": format!("{name}@example.com"), "password": "long enough", "displayName": name, "city": "springfield"});
        self.post("/api/auth/register", None, body)["accessToken"].as_str().expect("token").to_string()
    }
}

/// A raw Socket.IO client over a socket with a tiny receive buffer, so that
/// what the server queues for it is not hidden in the kernel.
fn connect(node: &Node, token: &str, issue_id: &str, small_buffer: bool) -> WebSocket<TcpStream> {
    let addr = node.node.addr;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    if small_buffer {
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    }
    socket.connect(&addr.into()).expect("connect");
    let stream: TcpStream = socket.into();
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tungstenite::client(url, stream).expect("websocket handshake");
    let open = read_text(&mut ws);
    assert!(open.starts_with("0{"), "{open}");
    ws.send(Message::text(format!("40{}", json!({"token": token})))).expect("send");
    let connected = read_text(&mut ws);
    assert!(connected.starts_with("40{"), "{connected}");
    ws.send(Message::text(format!("421{}", json!(["join:issue", issue_id])))).expect("send");
    loop {
        let text = read_text(&mut ws);
        if text.starts_with("431") {
            assert!(text.contains(r#""ok":true"#), "{text}");
            break;
        }
    }
    ws
}

fn read_text(ws: &mut WebSocket<TcpStream>) -> String {
    loop {
        match ws.read().expect("read") {
            Message::Text(text) => return text.to_string(),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

#[test]
fn a_client_that_stops_reading_is_disconnected_and_the_room_carries_on() {
    let node = Node::start(64 * 1024);
    let alice = node.register("alice");
    let bob = node.register("bob");
    let carol = node.register("carol");
    let issue =
        node.post("/api/issues", Some(&alice), json!({"title": "Flooded underpass", "category": "water"}));
    let issue_id = issue["issueId"].as_str().expect("issue id").to_string();

    let mut stalled = connect(&node, &bob, &issue_id, true);
    let mut reader = connect(&node, &carol, &issue_id, false);
    reader.get_ref().set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");

    // Bob reads nothing from here on; Carol reads everything.
    // Kernel socket buffers on loopback hold a few MB before the server's
    // own backlog grows, so send well past that: 700 × ~8 KB (2,000
    // four-byte characters each).
    let total = 700;
    // The sender waits for Carol every few messages, so only Bob, who reads
    // nothing, can fall behind, however slow this machine is today.
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen_so_far = progress.clone();
    let reading = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while seen.len() < total {
            let text = read_text(&mut reader);
            if text == "2" {
                reader.send(Message::text("3")).expect("pong");
            } else if let Some(payload) = text.strip_prefix("42[\"message:new\",") {
                let message: Value =
                    serde_json::from_str(payload.trim_end_matches(']')).expect("message json");
                seen.push(message["content"].as_str().expect("content").to_string());
                seen_so_far.store(seen.len(), std::sync::atomic::Ordering::SeqCst);
            }
        }
        seen
    });
    let filler = "🎉".repeat(1990);
    for i in 0..total {
        if i % 4 == 0 {
            let deadline = Instant::now() + Duration::from_secs(30);
            while progress.load(std::sync::atomic::Ordering::SeqCst) < i {
                assert!(Instant::now() < deadline, "the reading member stopped receiving at {i}");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        node.post(
            &format!("/api/issues/{issue_id}/messages"),
            Some(&alice),
            json!({"content": format!("{i:04} {filler}")}),
        );
    }
    let seen = reading.join().expect("reader thread");
    let expected: Vec<String> = (0..total).map(|i| format!("{i:04} {filler}")).collect();
    assert_eq!(seen, expected, "the reading member got every message, in order");

    // Bob's connection was closed by the server: draining it ends in a
    // close frame or EOF rather than all 150 messages.
    stalled.get_ref().set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut delivered = 0;
    let closed = loop {
        assert!(Instant::now() < deadline, "stalled client was never disconnected");
        match stalled.read() {
            Ok(Message::Text(text)) if text.starts_with("42[\"message:new\"") => delivered += 1,
            Ok(Message::Close(_)) => break true,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut =>
            {
                break false;
            }
            Err(_) => break true,
        }
    };
    assert!(closed, "the stalled socket was closed by the server (it read {delivered} messages)");
    assert!(delivered < total, "the stalled client did not receive everything ({delivered})");

    let metrics =
        node.http.get(format!("{}/metrics", node.node.url())).send().expect("metrics").text().expect("text");
    let disconnects: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("civicpulse_slow_client_disconnects_total "))
        .and_then(|n| n.parse().ok())
        .expect("slow client counter");
    assert!(disconnects >= 1, "{metrics}");
}
