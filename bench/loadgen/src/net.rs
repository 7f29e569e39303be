//! Connections: the target address (loopback only), source addresses,
//! the file limit, a tiny HTTP/1.1 client, and a Socket.IO client over
//! tokio-tungstenite that speaks through the project's codecs.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use actix_socketio::protocol::engine::{self, WsMessage};
use actix_socketio::protocol::socket::{self, Decoded, PacketKind};

/// Where the load goes, and from where.
pub struct Target {
    pub addr: SocketAddr,
    sources: Vec<Ipv4Addr>,
    next_source: AtomicUsize,
    pub connect_timeout: Duration,
}

impl Target {
    /// `url` is `http://HOST:PORT` with a loopback HOST; `sources` source
    /// addresses 127.0.0.2, 127.0.0.3, … are used in turn.
    pub fn parse(url: &str, sources: usize, connect_timeout: Duration) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or("--url must start with http://")?;
        let hostport = rest.split('/').next().unwrap_or(rest);
        let hostport = hostport.replace("localhost", "127.0.0.1");
        let addr: SocketAddr =
            hostport.parse().map_err(|_| format!("--url: expected http://127.0.0.x:PORT, got {url}"))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "refusing to load {}: only loopback targets (127.0.0.0/8) are allowed",
                addr.ip()
            ));
        }
        let sources = (0..sources.clamp(1, 250)).map(|i| Ipv4Addr::new(127, 0, 0, 2 + i as u8)).collect();
        Ok(Self { addr, sources, next_source: AtomicUsize::new(0), connect_timeout })
    }

    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// A TCP connection from the next source address (bound before connect,
    /// so each source address has its own ephemeral port range).
    pub async fn tcp(&self) -> io::Result<TcpStream> {
        let n = self.next_source.fetch_add(1, Ordering::Relaxed);
        let source = match self.addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(self.sources[n % self.sources.len()]),
            IpAddr::V6(v6) => IpAddr::V6(v6),
        };
        let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.bind(SocketAddr::new(source, 0))?;
        let stream = tokio::time::timeout(self.connect_timeout, socket.connect(self.addr))
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

/// One keep-alive HTTP/1.1 connection. Requests are written by hand: the
/// load generator only needs JSON POSTs and their status and body.
pub struct Http<'t> {
    target: &'t Target,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl<'t> Http<'t> {
    pub fn new(target: &'t Target) -> Self {
        Self { target, stream: None, buf: Vec::with_capacity(4096) }
    }

    /// Sends a request, reconnecting once if a reused connection was closed.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> io::Result<HttpResponse> {
        let reused = self.stream.is_some();
        match self.try_request(method, path, token, body).await {
            Ok(r) => Ok(r),
            Err(_) if reused => {
                self.stream = None;
                self.try_request(method, path, token, body).await
            }
            Err(e) => Err(e),
        }
    }

    async fn try_request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> io::Result<HttpResponse> {
        let result = tokio::time::timeout(Duration::from_secs(30), self.exchange(method, path, token, body))
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "HTTP request timed out")));
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> io::Result<HttpResponse> {
        if self.stream.is_none() {
            self.stream = Some(self.target.tcp().await?);
            self.buf.clear();
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.target.addr);
        if let Some(token) = token {
            req.push_str("Authorization: Bearer ");
            req.push_str(token);
            req.push_str("\r\n");
        }
        if !body.is_empty() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        req.push_str(&body);
        let stream = self.stream.as_mut().ok_or_else(|| io::Error::other("no connection"))?;
        stream.write_all(req.as_bytes()).await?;

        let head_end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos;
            }
            read_more(stream, &mut self.buf).await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other("bad HTTP status line"))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        self.buf.drain(..head_end + 4);
        let body = if chunked {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(pos) = find(&self.buf, b"\r\n") {
                        break pos;
                    }
                    read_more(stream, &mut self.buf).await?;
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| io::Error::other("bad chunk size"))?;
                while self.buf.len() < line_end + 2 + size + 2 {
                    read_more(stream, &mut self.buf).await?;
                }
                body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    break body;
                }
            }
        } else if let Some(length) = length {
            while self.buf.len() < length {
                read_more(stream, &mut self.buf).await?;
            }
            self.buf.drain(..length).collect()
        } else {
            close = true;
            loop {
                match read_more(stream, &mut self.buf).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        break std::mem::take(&mut self.buf);
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if close {
            self.stream = None;
        }
        Ok(HttpResponse { status, body })
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
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

/// Opens an Engine.IO WebSocket session and joins `/` with `auth.token`:
/// TCP connect, upgrade, `open` packet, CONNECT, CONNECT reply.
pub async fn connect(target: &Target, token: &str) -> Result<Conn, ConnectError> {
    tokio::time::timeout(target.connect_timeout, connect_inner(target, token))
        .await
        .unwrap_or(Err(ConnectError::Timeout))
}

async fn connect_inner(target: &Target, token: &str) -> Result<Conn, ConnectError> {
    let stream = target.tcp().await?;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", target.addr);
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

    #[test]
    fn only_loopback_targets() {
        let t = Duration::from_secs(1);
        assert!(Target::parse("http://127.0.0.1:3001", 4, t).is_ok());
        assert!(Target::parse("http://localhost:3001", 4, t).is_ok());
        assert!(Target::parse("http://10.0.0.1:3001", 4, t).is_err());
        assert!(Target::parse("http://192.168.1.1:80", 4, t).is_err());
    }
}
