//! Connections: the target address (loopback only), source addresses,
//! the file limit, REST calls over reqwest, and a Socket.IO client over
//! tokio-tungstenite that speaks through the project's codecs.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use actix_socketio::protocol::engine::{self, WsMessage};
use actix_socketio::protocol::socket::{self, Decoded, PacketKind};

/// Where the load goes, and from where.
pub struct Target {
    /// The first node: set-up data, and every connection of the scenarios
    /// that do not spread.
    pub addr: SocketAddr,
    /// Every node of the server under test (one unless it is a cluster).
    pub nodes: Vec<SocketAddr>,
    sources: Vec<Ipv4Addr>,
    next_source: AtomicUsize,
    pub connect_timeout: Duration,
}

/// `http://HOST:PORT` with a loopback HOST, as a socket address.
pub fn loopback_addr(url: &str, scheme: &str) -> Result<SocketAddr, String> {
    let rest = url.strip_prefix(scheme).ok_or_else(|| format!("{url}: must start with {scheme}"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = hostport.replace("localhost", "127.0.0.1");
    let addr: SocketAddr =
        hostport.parse().map_err(|_| format!("expected {scheme}127.0.0.x:PORT, got {url}"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to load {}: only loopback targets (127.0.0.0/8) are allowed",
            addr.ip()
        ));
    }
    Ok(addr)
}

impl Target {
    /// `url` is `http://HOST:PORT` with a loopback HOST, or several such
    /// separated by commas (the nodes of a cluster); `sources` source
    /// addresses 127.0.0.2, 127.0.0.3, … are used in turn.
    pub fn parse(url: &str, sources: usize, connect_timeout: Duration) -> Result<Self, String> {
        let nodes = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| loopback_addr(u, "http://").map_err(|e| format!("--url: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let addr = *nodes.first().ok_or("--url: no address")?;
        let sources = (0..sources.clamp(1, 250)).map(|i| Ipv4Addr::new(127, 0, 0, 2 + i as u8)).collect();
        Ok(Self { addr, nodes, sources, next_source: AtomicUsize::new(0), connect_timeout })
    }

    /// Node `i mod N`.
    pub fn node(&self, i: usize) -> SocketAddr {
        self.nodes[i % self.nodes.len()]
    }

    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// The source address for the next connection: 127.0.0.2, 127.0.0.3, …
    /// in turn (an IPv6 loopback target is reached from itself).
    pub fn next_source(&self) -> IpAddr {
        let n = self.next_source.fetch_add(1, Ordering::Relaxed);
        match self.addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(self.sources[n % self.sources.len()]),
            IpAddr::V6(v6) => IpAddr::V6(v6),
        }
    }

    /// A TCP connection to `to` from the next source address (bound before
    /// connect, so each source address has its own ephemeral port range).
    ///
    /// With `recv_buffer`, the receive buffer is set to that many bytes
    /// before connecting (so the window the kernel advertises is small from
    /// the start): a client that stops reading then really stops the
    /// server's writes, instead of hiding megabytes in its kernel buffer.
    pub async fn tcp_with(&self, to: SocketAddr, recv_buffer: Option<u32>) -> io::Result<TcpStream> {
        let source = self.next_source();
        let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        socket.bind(SocketAddr::new(source, 0))?;
        let stream = tokio::time::timeout(self.connect_timeout, socket.connect(to))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard).
pub fn raise_nofile() -> (u64, u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        // Try for a million first (needs CAP_SYS_RESOURCE), then the hard limit.
        let want = libc::rlimit { rlim_cur: 1_048_576, rlim_max: 1_048_576.max(lim.rlim_max) };
        if lim.rlim_max < want.rlim_max && libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
            lim = want;
        } else {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    (lim.rlim_cur, lim.rlim_max)
}

// ---------------------------------------------------------------- HTTP ----

/// REST calls (JSON POSTs) over one keep-alive HTTP/1.1 connection from
/// one source address: a reqwest client of its own, bound to the next
/// source address when it is made, pooling at most one idle connection
/// (its caller sends one request at a time). No proxy and no redirects:
/// requests go to the loopback target and nowhere else.
pub struct Http {
    client: reqwest::Client,
    base: String,
}

pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A failed request (connect, send, timeout or body): the error and its
/// causes on one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl From<reqwest::Error> for HttpError {
    fn from(e: reqwest::Error) -> Self {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        Self(text)
    }
}

/// Time allowed for a whole request, connecting included.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

impl Http {
    /// A client for the first node.
    pub fn new(target: &Target) -> Result<Self, HttpError> {
        Self::to(target, target.addr)
    }

    /// A client for node `to` of the target.
    pub fn to(target: &Target, to: SocketAddr) -> Result<Self, HttpError> {
        let client = reqwest::Client::builder()
            .local_address(target.next_source())
            .connect_timeout(target.connect_timeout)
            .timeout(HTTP_TIMEOUT)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1)
            .http1_only()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { client, base: format!("http://{to}") })
    }

    /// A client that opens a new connection for every request (none is
    /// kept idle), each request bounded by `timeout`: a prober that sees
    /// what a newcomer sees, accept queue included, rather than one warm
    /// connection.
    pub fn fresh(target: &Target, timeout: Duration) -> Result<Self, HttpError> {
        let client = reqwest::Client::builder()
            .local_address(target.next_source())
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(0)
            .http1_only()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { client, base: format!("http://{}", target.addr) })
    }

    /// GETs `path`: the status and the whole body.
    pub async fn get(&self, path: &str) -> Result<HttpResponse, HttpError> {
        let response = self.client.get(format!("{}{path}", self.base)).send().await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?.to_vec();
        Ok(HttpResponse { status, body })
    }

    /// POSTs `body` as JSON (or nothing) to `path`, with a bearer token if
    /// given; the status and the whole body. A pooled connection that the
    /// server closed before the request went out is replaced (hyper
    /// retries such requests on a new connection).
    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<HttpResponse, HttpError> {
        let mut request = self.client.post(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request = match body {
            Some(body) => request.json(body),
            // Said explicitly: hyper sends no length for an empty body.
            None => request.header(reqwest::header::CONTENT_LENGTH, "0"),
        };
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?.to_vec();
        Ok(HttpResponse { status, body })
    }
}

// ----------------------------------------------------------- Socket.IO ----

pub type Ws = WebSocketStream<TcpStream>;

/// Small buffers: the load generator holds tens of thousands of sockets.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0).max_write_buffer_size(1 << 20)
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("tcp: {0}")]
    Tcp(#[from] io::Error),
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("timed out")]
    Timeout,
    #[error("closed during the handshake")]
    Closed,
    #[error("refused: {0}")]
    Refused(String),
    #[error("protocol: {0}")]
    Protocol(String),
}

fn text(frame: WsMessage) -> Message {
    match frame {
        WsMessage::Text(s) => Message::text(s),
        WsMessage::Binary(b) => Message::binary(b),
    }
}

/// The WebSocket message carrying one Socket.IO packet (no attachments).
pub fn sio_message(packet: &socket::Packet) -> Message {
    text(engine::Packet::Message(packet.encode()).encode_ws())
}

/// Opens an Engine.IO WebSocket session on the first node and joins `/`
/// with `auth.token`: TCP connect, upgrade, `open` packet, CONNECT, CONNECT
/// reply.
pub async fn connect(target: &Target, token: &str) -> Result<Conn, ConnectError> {
    connect_to(target, target.addr, token).await
}

/// [`connect`] to node `to` of the target.
pub async fn connect_to(target: &Target, to: SocketAddr, token: &str) -> Result<Conn, ConnectError> {
    connect_with(target, to, token, None).await
}

/// [`connect_to`] over a TCP connection whose receive buffer is
/// `recv_buffer` bytes (see [`Target::tcp_with`]).
pub async fn connect_with(
    target: &Target,
    to: SocketAddr,
    token: &str,
    recv_buffer: Option<u32>,
) -> Result<Conn, ConnectError> {
    tokio::time::timeout(target.connect_timeout, connect_inner(target, to, token, recv_buffer))
        .await
        .unwrap_or(Err(ConnectError::Timeout))
}

async fn connect_inner(
    target: &Target,
    to: SocketAddr,
    token: &str,
    recv_buffer: Option<u32>,
) -> Result<Conn, ConnectError> {
    let stream = target.tcp_with(to, recv_buffer).await?;
    let url = format!("ws://{to}/socket.io/?EIO=4&transport=websocket");
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())).await?;
    let mut conn = Conn { ws, pings: 0 };
    // The `open` packet comes first.
    match conn.next_engine().await? {
        engine::Packet::Open(_) => {}
        other => return Err(ConnectError::Protocol(format!("expected open, got {other:?}"))),
    }
    let mut auth = Map::new();
    auth.insert("token".into(), Value::String(token.to_owned()));
    conn.ws.send(sio_message(&socket::Packet::connect("/", Some(auth)))).await?;
    loop {
        let engine::Packet::Message(text) = conn.next_engine().await? else { continue };
        match socket::decode(&text) {
            Ok(Decoded::Complete(p)) if p.kind == PacketKind::Connect => return Ok(conn),
            Ok(Decoded::Complete(p)) if p.kind == PacketKind::ConnectError => {
                let message = p.data.as_ref().and_then(|d| d.get("message")).and_then(Value::as_str);
                return Err(ConnectError::Refused(message.unwrap_or("CONNECT_ERROR").to_owned()));
            }
            Ok(_) => continue,
            Err(e) => return Err(ConnectError::Protocol(e.to_string())),
        }
    }
}

/// An established Socket.IO connection on `/`.
pub struct Conn {
    pub ws: Ws,
    /// Engine.IO pings answered.
    pub pings: u64,
}

/// What [`Conn::recv`] hands back.
pub enum Incoming {
    /// The text of a Socket.IO packet (an Engine.IO message).
    Message(String),
    Closed,
}

impl Conn {
    /// The next Engine.IO packet other than a ping (pings are answered
    /// here); `None` once the connection is gone.
    async fn recv_engine(&mut self) -> Option<engine::Packet> {
        loop {
            let decoded = match self.ws.next().await {
                Some(Ok(Message::Text(t))) => engine::decode_text(t.as_str()),
                Some(Ok(Message::Binary(b))) => engine::decode_ws(WsMessage::Binary(b)),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
            };
            match decoded {
                Ok(engine::Packet::Ping) => {
                    self.pings += 1;
                    if self.ws.send(text(engine::Packet::Pong.encode_ws())).await.is_err() {
                        return None;
                    }
                }
                Ok(engine::Packet::Close) | Err(_) => return None,
                Ok(packet) => return Some(packet),
            }
        }
    }

    async fn next_engine(&mut self) -> Result<engine::Packet, ConnectError> {
        self.recv_engine().await.ok_or(ConnectError::Closed)
    }

    /// The text of the next Socket.IO packet; pings are answered and other
    /// Engine.IO packets skipped on the way.
    pub async fn recv(&mut self) -> Incoming {
        loop {
            match self.recv_engine().await {
                Some(engine::Packet::Message(text)) => return Incoming::Message(text),
                Some(_) => {}
                None => return Incoming::Closed,
            }
        }
    }

    pub async fn send(&mut self, packet: &socket::Packet) -> bool {
        self.ws.send(sio_message(packet)).await.is_ok()
    }
}

// ------------------------------------------------- payload fast paths ----

/// For a Socket.IO EVENT on `/` (`2["name",…]`, no ack id): its name and
/// the text after the name. Cheaper than decoding the JSON, which matters
/// when tens of thousands of sockets receive every event.
pub fn event_name(sio: &str) -> Option<(&str, &str)> {
    let rest = sio.strip_prefix("2[\"")?;
    let end = rest.find('"')?;
    Some((&rest[..end], &rest[end + 1..]))
}

/// The value of the first `"key":"value"` in compact JSON (values without
/// escapes, such as ids).
pub fn str_field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pattern = format!("\"{key}\":\"");
    let start = json.find(&pattern)? + pattern.len();
    let len = json[start..].find('"')?;
    Some(&json[start..start + len])
}

/// The value of the first `"key":true|false`.
pub fn bool_field(json: &str, key: &str) -> Option<bool> {
    let pattern = format!("\"{key}\":");
    let start = json.find(&pattern)? + pattern.len();
    let rest = &json[start..];
    if rest.starts_with("true") {
        Some(true)
    } else if rest.starts_with("false") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_paths() {
        let sio = r#"2["issue:upvoted",{"issueId":"iss_1","upvotes":3,"upvotedBy":"usr_9","upvoted":true}]"#;
        let (name, rest) = event_name(sio).unwrap();
        assert_eq!(name, "issue:upvoted");
        assert_eq!(str_field(rest, "upvotedBy"), Some("usr_9"));
        assert_eq!(bool_field(rest, "upvoted"), Some(true));
        assert_eq!(event_name(r#"31[{"ok":true}]"#), None);
    }

    /// Reads one request (head and Content-Length body) off `stream`.
    async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let find = |b: &[u8]| b.windows(4).position(|w| w == b"\r\n\r\n");
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(pos) = find(buf) {
                break pos;
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).ok()?.to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap_or(0));
        while buf.len() < head_end + 4 + length {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[head_end + 4..head_end + 4 + length].to_vec();
        buf.drain(..head_end + 4 + length);
        Some((head, body))
    }

    fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
        head.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }

    /// The requests `post` sends are the ones the scenarios rely on, over one
    /// keep-alive connection from the chosen source address.
    #[tokio::test]
    async fn posts_json_and_empty_bodies_over_one_connection() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, peer) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut seen = Vec::new();
            for reply in [
                "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}",
                "HTTP/1.1 409 Conflict\r\ntransfer-encoding: chunked\r\n\r\n3\r\nno!\r\n0\r\n\r\n",
            ] {
                seen.push(read_request(&mut stream, &mut buf).await.unwrap());
                stream.write_all(reply.as_bytes()).await.unwrap();
            }
            // The client keeps the connection: it closes only when dropped.
            let after = read_request(&mut stream, &mut buf).await;
            (peer, seen, after.is_none())
        });

        let target = Target::parse(&format!("http://{addr}"), 1, Duration::from_secs(5)).unwrap();
        let http = Http::new(&target).unwrap();
        let body = serde_json::json!({"email": "a@b.test", "n": 1});
        let res = http.post("/api/auth/register", None, Some(&body)).await.unwrap();
        assert_eq!(res.status, 201);
        assert_eq!(res.json(), serde_json::json!({"ok": true}));
        let res = http.post("/api/issues/iss_1/upvote", Some("tok.en"), None).await.unwrap();
        assert_eq!(res.status, 409);
        assert_eq!(res.body, b"no!");
        assert_eq!(res.json(), Value::Null);
        drop(http);

        let (peer, seen, closed) = server.await.unwrap();
        assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), "bound to the first source address");
        assert!(closed);
        let (head, sent) = &seen[0];
        assert!(head.starts_with("post /api/auth/register http/1.1\r\n"), "{head}");
        assert_eq!(header(head, "host"), Some(addr.to_string().as_str()));
        assert_eq!(header(head, "content-type"), Some("application/json"));
        assert_eq!(header(head, "content-length"), Some(body.to_string().len().to_string().as_str()));
        assert_eq!(header(head, "authorization"), None);
        assert_eq!(sent, body.to_string().as_bytes());
        let (head, sent) = &seen[1];
        assert!(head.starts_with("post /api/issues/iss_1/upvote http/1.1\r\n"), "{head}");
        assert_eq!(header(head, "authorization"), Some("bearer tok.en"));
        assert_eq!(header(head, "content-length"), Some("0"));
        assert_eq!(header(head, "content-type"), None);
        assert!(sent.is_empty());
    }

    /// A redirect is an answer like any other (never followed off the
    /// target), and a connection closed without an answer is an error.
    #[tokio::test]
    async fn redirects_are_answers_and_hang_ups_are_errors() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut buf = Vec::new();
            let (mut stream, _) = listener.accept().await.unwrap();
            read_request(&mut stream, &mut buf).await.unwrap();
            let reply = "HTTP/1.1 302 Found\r\nlocation: http://10.0.0.1/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            stream.write_all(reply.as_bytes()).await.unwrap();
            drop(stream);
            // The next request gets a new connection, closed unanswered.
            let (mut stream, _) = listener.accept().await.unwrap();
            buf.clear();
            read_request(&mut stream, &mut buf).await.unwrap();
        });
        let target = Target::parse(&format!("http://{addr}"), 4, Duration::from_secs(5)).unwrap();
        let http = Http::new(&target).unwrap();
        let res = http.post("/x", None, None).await.unwrap();
        assert_eq!(res.status, 302);
        let err = http.post("/x", None, None).await.err().expect("an error");
        assert!(!err.to_string().is_empty());
        server.await.unwrap();
    }

    #[test]
    fn only_loopback_targets() {
        let t = Duration::from_secs(1);
        assert!(Target::parse("http://127.0.0.1:3001", 4, t).is_ok());
        assert!(Target::parse("http://localhost:3001", 4, t).is_ok());
        assert!(Target::parse("http://10.0.0.1:3001", 4, t).is_err());
        assert!(Target::parse("http://192.168.1.1:80", 4, t).is_err());
        let cluster =
            Target::parse("http://127.0.0.1:3001,http://127.0.0.1:3002, http://localhost:3003", 4, t)
                .unwrap();
        assert_eq!(cluster.nodes.len(), 3);
        assert_eq!(cluster.addr, cluster.nodes[0]);
        assert_eq!(cluster.node(4).port(), 3002);
        assert!(Target::parse("http://127.0.0.1:3001,http://10.0.0.1:3002", 4, t).is_err());
    }
}
