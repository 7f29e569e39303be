//! No sticky sessions (PROTOCOL.md 7): a request for a session that
//! another node owns is answered by that node through whichever node it
//! reached, exactly as the owner answers it directly.
//!
//! Two routed engines run in this process, `a` and `b`, each on its own
//! port, and find each other through a static router that also knows a
//! node `down` whose port is closed. Sessions are opened on `a` and driven
//! through `b`. The application echoes every message at the Engine.IO
//! level, so each body below is exactly what the protocol says.

mod common;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use actix::Context;
use futures_util::future::BoxFuture;
use reqwest::Method;
use reqwest::blocking::Client;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::{Message, WebSocket};

use actix_socketio::engineio::{
    CloseReason, Engine, EngineConfig, EngineHandler, EngineStats, FORWARDED_HEADER, HandlerFactory,
    InboundPermit, Incoming, Output, SessionHandle, SessionRouter, SocketSession,
};
use actix_socketio::protocol::engine::Packet;

const PATH: &str = "/engine.io/";
const MAX_PAYLOAD: usize = 1_000_000;
const SOON: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Two nodes
// ---------------------------------------------------------------------------

/// Every node's base address by tag, shared by the nodes' routers.
type Directory = Arc<Mutex<HashMap<String, String>>>;

struct StaticRouter {
    tag: &'static str,
    nodes: Directory,
}

impl SessionRouter for StaticRouter {
    fn local_tag(&self) -> &str {
        self.tag
    }

    fn resolve(&self, tag: &str) -> BoxFuture<'static, Option<String>> {
        let base = self.nodes.lock().expect("directory").get(tag).cloned();
        Box::pin(async move { base })
    }
}

/// Echoes every message, text as text and binary as binary.
struct Echo;

impl EngineHandler for Echo {
    fn message(
        &mut self,
        message: Incoming,
        _: InboundPermit,
        out: &mut Output,
        _: &mut Context<SocketSession<Self>>,
    ) {
        out.send(match message {
            Incoming::Text(text) => Packet::Message(text),
            Incoming::Binary(bytes) => Packet::Binary(bytes),
        });
    }

    fn closed(&mut self, _: CloseReason) {}
}

struct EchoFactory;

impl HandlerFactory for EchoFactory {
    type Handler = Echo;

    fn create(&self, _: SessionHandle<Echo>, _: &actix_http::RequestHead) -> Echo {
        Echo
    }
}

struct Node {
    port: u16,
    stats: Arc<EngineStats>,
}

impl Node {
    fn forwarded_requests(&self) -> u64 {
        self.stats.forwarded_requests.load(Ordering::Relaxed)
    }

    fn forwarded_upgrades(&self) -> u64 {
        self.stats.forwarded_upgrades.load(Ordering::Relaxed)
    }

    fn forward_failures(&self) -> u64 {
        self.stats.forward_failures.load(Ordering::Relaxed)
    }
}

struct Cluster {
    a: Node,
    b: Node,
    http: Client,
}

/// Nodes `a` and `b`, and `down`, which is known but not listening. The
/// reference defaults: no ping interleaves with a test.
fn cluster() -> Cluster {
    cluster_with(EngineConfig::default().ping_interval)
}

fn cluster_with(ping_interval: Duration) -> Cluster {
    let nodes = Directory::default();
    let start = |tag: &'static str| {
        let stats = Arc::new(EngineStats::default());
        let config = EngineConfig {
            ping_interval,
            max_payload: MAX_PAYLOAD,
            stats: stats.clone(),
            ..EngineConfig::default()
        };
        let router = Arc::new(StaticRouter { tag, nodes: nodes.clone() });
        let engine = Engine::routed(config, EchoFactory, router).expect("a valid tag");
        let addr = common::serve_engine(engine, PATH);
        nodes.lock().expect("directory").insert(tag.to_owned(), format!("http://{addr}"));
        Node { port: addr.port(), stats }
    };
    let (a, b) = (start("a"), start("b"));
    let closed = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
    nodes.lock().expect("directory").insert("down".to_owned(), format!("http://{closed}/"));
    let http = Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client");
    Cluster { a, b, http }
}

// ---------------------------------------------------------------------------
// A raw long-polling client
// ---------------------------------------------------------------------------

/// What a test compares of an HTTP answer.
#[derive(Debug, Clone, PartialEq)]
struct Reply {
    status: u16,
    content_type: String,
    cache_control: String,
    body: String,
}

impl From<reqwest::blocking::Response> for Reply {
    fn from(response: reqwest::blocking::Response) -> Reply {
        let header = |name: &str| {
            response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
        };
        let (content_type, cache_control) = (header("content-type"), header("cache-control"));
        let status = response.status().as_u16();
        Reply { status, content_type, cache_control, body: response.text().expect("response body") }
    }
}

/// A polling payload, as a GET carries it.
fn payload(body: &str) -> Reply {
    Reply {
        status: 200,
        content_type: "text/plain; charset=UTF-8".into(),
        cache_control: "no-store".into(),
        body: body.into(),
    }
}

/// A POST taken in.
fn ok() -> Reply {
    Reply { status: 200, content_type: "text/html".into(), cache_control: String::new(), body: "ok".into() }
}

/// A PROTOCOL.md 2.9 error.
fn http_error(code: u8, message: &str) -> Reply {
    Reply {
        status: 400,
        content_type: "application/json".into(),
        cache_control: String::new(),
        body: format!(r#"{{"code":{code},"message":"{message}"}}"#),
    }
}

fn session_unknown() -> Reply {
    http_error(1, "Session ID unknown")
}

fn polling(sid: &str) -> String {
    format!("EIO=4&transport=polling&sid={sid}")
}

fn url(node: &Node, query: &str) -> String {
    format!("http://127.0.0.1:{}{PATH}?{query}", node.port)
}

impl Cluster {
    fn request(&self, node: &Node, method: Method, query: &str, body: Option<&str>) -> Reply {
        let mut request = self.http.request(method, url(node, query));
        if let Some(body) = body {
            request = request.header("content-type", "text/plain;charset=UTF-8").body(body.to_owned());
        }
        Reply::from(request.send().expect("HTTP request"))
    }

    fn get(&self, node: &Node, query: &str) -> Reply {
        self.request(node, Method::GET, query, None)
    }

    fn post(&self, node: &Node, query: &str, body: &str) -> Reply {
        self.request(node, Method::POST, query, Some(body))
    }

    /// A polling handshake on `node`; the new session's sid.
    fn open(&self, node: &Node) -> String {
        let reply = self.get(node, "EIO=4&transport=polling");
        assert_eq!(reply.status, 200, "{reply:?}");
        let json = reply.body.strip_prefix('0').unwrap_or_else(|| panic!("not an open packet: {reply:?}"));
        let open: serde_json::Value = serde_json::from_str(json).expect("handshake JSON");
        open["sid"].as_str().expect("sid").to_owned()
    }

    /// A GET on `node` from another thread, to be waiting while the test
    /// goes on.
    fn get_in_background(&self, node: &Node, sid: &str) -> thread::JoinHandle<Reply> {
        let (http, url) = (self.http.clone(), url(node, &polling(sid)));
        let get = thread::spawn(move || Reply::from(http.get(url).send().expect("background GET")));
        // Time for the GET to reach the owner and be parked there.
        thread::sleep(Duration::from_millis(500));
        get
    }
}

// ---------------------------------------------------------------------------
// A raw WebSocket client
// ---------------------------------------------------------------------------

type Ws = WebSocket<TcpStream>;

/// Opens a WebSocket on `node`; an error is the HTTP answer refusing it.
fn ws_connect(node: &Node, query: &str, forwarded: bool) -> Result<Ws, Reply> {
    let stream = TcpStream::connect(("127.0.0.1", node.port)).expect("TCP connect");
    stream.set_read_timeout(Some(SOON)).expect("read timeout");
    let mut request =
        format!("ws://127.0.0.1:{}{PATH}?{query}", node.port).into_client_request().expect("request");
    if forwarded {
        request.headers_mut().insert(FORWARDED_HEADER, "c".parse().expect("header value"));
    }
    match tungstenite::client(request, stream) {
        Ok((socket, _)) => Ok(socket),
        Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let header = |name: &str| {
                response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
            };
            Err(Reply {
                status: response.status().as_u16(),
                content_type: header("content-type"),
                cache_control: header("cache-control"),
                body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
            })
        }
        Err(e) => panic!("WebSocket handshake: {e:?}"),
    }
}

#[track_caller]
fn expect(ws: &mut Ws, expected: Message) {
    let message = ws.read().expect("a message");
    assert_eq!(message, expected);
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn a_routed_engine_puts_its_tag_in_its_sids() {
    let cluster = cluster();
    let sid = cluster.open(&cluster.a);
    let (tag, random) = sid.split_once('.').unwrap_or_else(|| panic!("no tag in {sid:?}"));
    assert_eq!(tag, "a");
    assert_eq!(random.len(), 20, "{sid}");
    assert!(random.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{sid}");
}

#[test]
fn polling_through_another_node_is_answered_as_the_owner_answers() {
    let c = cluster();
    let sid = c.open(&c.a);
    let query = polling(&sid);

    // A POST through b and one straight to a get the same answer, and the
    // GET through b carries both echoes, in order.
    assert_eq!(c.post(&c.b, &query, "4hello\x1e4world"), ok());
    assert_eq!(c.post(&c.a, &query, "4direct"), ok());
    assert_eq!(c.get(&c.b, &query), payload("4hello\x1e4world\x1e4direct"));
    // And the other way round.
    assert_eq!(c.post(&c.b, &query, "4again"), ok());
    assert_eq!(c.get(&c.a, &query), payload("4again"));

    // The owner's refusals come back as they are: a polling GET that names
    // the websocket transport is a mismatch (code 3), not an unknown sid.
    let mismatch = format!("EIO=4&transport=websocket&sid={sid}");
    assert_eq!(c.get(&c.b, &mismatch), http_error(3, "Bad request"));
    assert_eq!(c.get(&c.a, &mismatch), http_error(3, "Bad request"));

    // The client's close: the waiting GET (through b) is released with a
    // noop, and the session is gone on every node.
    let waiting = c.get_in_background(&c.b, &sid);
    assert_eq!(c.post(&c.b, &query, "1"), ok());
    assert_eq!(waiting.join().expect("GET thread"), payload("6"));
    assert_eq!(c.get(&c.b, &query), session_unknown());
    assert_eq!(c.get(&c.a, &query), session_unknown());

    // Every request b passed on was answered by a; a passed none on.
    assert_eq!((c.b.forwarded_requests(), c.b.forward_failures()), (7, 0));
    assert_eq!((c.a.forwarded_requests(), c.a.forward_failures()), (0, 0));
}

#[test]
fn a_long_poll_through_another_node_waits_as_long_as_the_owner_holds_it() {
    // Past awc's default request timeout (5 s), at which a forwarded GET
    // must not be cut off.
    let c = cluster_with(Duration::from_secs(6));
    let sid = c.open(&c.a);
    let start = Instant::now();
    assert_eq!(c.get(&c.b, &polling(&sid)), payload("2"));
    assert!(start.elapsed() > Duration::from_secs(5), "answered after {:?}", start.elapsed());
}

#[test]
fn a_long_poll_abandoned_through_another_node_breaks_the_session_as_it_does_directly() {
    let c = cluster();
    for node in [&c.a, &c.b] {
        let sid = c.open(&c.a);
        let mut get = TcpStream::connect(("127.0.0.1", node.port)).expect("connect");
        write!(get, "GET {PATH}?{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", polling(&sid)).expect("GET");
        // Parked at the owner, then abandoned.
        thread::sleep(Duration::from_millis(500));
        drop(get);
        thread::sleep(Duration::from_millis(500));
        // The owner finds out when it answers the GET with this echo: a
        // broken transport, which ends the session.
        assert_eq!(c.post(&c.a, &polling(&sid), "4lost"), ok());
        assert_eq!(c.get(&c.a, &polling(&sid)), session_unknown());
    }
}

#[test]
fn an_upgrade_through_another_node_takes_over_the_session() {
    let c = cluster();
    let sid = c.open(&c.a);
    let query = polling(&sid);
    assert_eq!(c.post(&c.b, &query, "4on polling"), ok());
    assert_eq!(c.get(&c.b, &query), payload("4on polling"));

    let waiting = c.get_in_background(&c.b, &sid);
    let mut ws = ws_connect(&c.b, &format!("EIO=4&transport=websocket&sid={sid}"), false).expect("upgrade");
    ws.send(Message::text("2probe")).expect("probe");
    expect(&mut ws, Message::text("3probe"));
    assert_eq!(waiting.join().expect("GET thread"), payload("6"));
    // Still polling until `5`: the echo of this POST waits for the upgrade.
    assert_eq!(c.post(&c.b, &query, "4buffered"), ok());
    ws.send(Message::text("5")).expect("upgrade packet");
    expect(&mut ws, Message::text("4buffered"));

    ws.send(Message::text("4over the socket")).expect("text");
    expect(&mut ws, Message::text("4over the socket"));
    ws.send(Message::binary(vec![1, 2, 3])).expect("binary");
    expect(&mut ws, Message::binary(vec![1, 2, 3]));
    // Polling is over for the session, as the owner says.
    assert_eq!(c.get(&c.b, &query), http_error(3, "Bad request"));

    // The client's close packet ends the session and the socket.
    ws.send(Message::text("1")).expect("close packet");
    match ws.read() {
        Ok(Message::Close(_)) => {}
        Err(tungstenite::Error::Io(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("the socket is still open after the close packet")
        }
        Err(_) => {}
        Ok(other) => panic!("after the close packet: {other:?}"),
    }
    assert_eq!(c.get(&c.a, &query), session_unknown());

    assert_eq!((c.b.forwarded_upgrades(), c.b.forward_failures()), (1, 0));
    assert_eq!(c.a.forwarded_upgrades(), 0);
}

#[test]
fn a_sid_no_live_node_owns_is_unknown() {
    let c = cluster();
    let random = "AAAAAAAAAAAAAAAAAAAA";
    // Unknown tag; a known node that is down; no tag; this node's tag.
    let owned_by_nobody = [format!("zz.{random}"), format!("down.{random}")];
    let not_forwarded = [random.to_owned(), format!("b.{random}")];
    for sid in owned_by_nobody.iter().chain(&not_forwarded) {
        assert_eq!(c.get(&c.b, &polling(sid)), session_unknown(), "{sid}");
        assert_eq!(c.post(&c.b, &polling(sid), "4x"), session_unknown(), "{sid}");
        let refused = ws_connect(&c.b, &format!("EIO=4&transport=websocket&sid={sid}"), false);
        assert_eq!(refused.err(), Some(session_unknown()), "{sid}");
    }
    // Only the sids of another node were tried, three times each.
    assert_eq!((c.b.forwarded_requests(), c.b.forwarded_upgrades(), c.b.forward_failures()), (0, 0, 6));
}

#[test]
fn a_forwarded_request_is_not_forwarded_again() {
    let c = cluster();
    let sid = c.open(&c.a);
    let query = polling(&sid);
    let forwarded = |node: &Node, method: Method, body: &str| {
        let request = c.http.request(method, url(node, &query)).header(FORWARDED_HEADER, "c");
        Reply::from(
            request
                .header("content-type", "text/plain;charset=UTF-8")
                .body(body.to_owned())
                .send()
                .expect("HTTP"),
        )
    };
    assert_eq!(forwarded(&c.b, Method::GET, ""), session_unknown());
    assert_eq!(forwarded(&c.b, Method::POST, "4lost"), session_unknown());
    let refused = ws_connect(&c.b, &format!("EIO=4&transport=websocket&sid={sid}"), true);
    assert_eq!(refused.err(), Some(session_unknown()));
    assert_eq!((c.b.forwarded_requests(), c.b.forwarded_upgrades(), c.b.forward_failures()), (0, 0, 0));

    // The owner serves the header like any request, and the session is as
    // it was: nothing of the refused POST reached it.
    assert_eq!(forwarded(&c.a, Method::POST, "4kept"), ok());
    assert_eq!(c.get(&c.a, &query), payload("4kept"));
}

/// Writes a POST of `len` bytes (over `maxPayload`) whole over a raw
/// socket, the way a proxy streams one before it reads, and returns the
/// status line of the answer. The rest of the body follows a pause once
/// `maxPayload` is past, so that it cannot all sit in the kernel's buffers
/// before the server decides: a server that answers and closes at once
/// resets the connection under the rest.
fn post_whole(node: &Node, sid: &str, len: usize) -> String {
    let mut socket = TcpStream::connect(("127.0.0.1", node.port)).expect("connect");
    socket.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
    let head = format!(
        "POST {PATH}?{} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain;charset=UTF-8\r\n\
         Content-Length: {len}\r\n\r\n",
        polling(sid)
    );
    let mut request = head.into_bytes();
    request.push(b'4');
    request.resize(request.len() + len - 1, b'a');
    let (first, rest) = request.split_at(request.len() - (len - MAX_PAYLOAD) / 2);
    socket.write_all(first).expect("the start of the request is taken in");
    thread::sleep(Duration::from_millis(500));
    socket.write_all(rest).expect("the rest of the body is taken in");
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf) {
            Ok(0) => panic!("closed before an answer: {:?}", String::from_utf8_lossy(&answer)),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("no answer ({e}) after {:?}", String::from_utf8_lossy(&answer)),
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn an_oversized_post_written_whole_is_answered_413_directly_and_through_another_node() {
    let c = cluster();
    let sid = c.open(&c.a);
    for node in [&c.a, &c.b] {
        assert_eq!(post_whole(node, &sid, 2 * MAX_PAYLOAD), "HTTP/1.1 413 Payload Too Large");
        // The session goes on.
        assert_eq!(c.post(node, &polling(&sid), "4after"), ok());
        assert_eq!(c.get(node, &polling(&sid)), payload("4after"));
    }
    assert_eq!((c.b.forwarded_requests(), c.b.forward_failures()), (3, 0));
}
