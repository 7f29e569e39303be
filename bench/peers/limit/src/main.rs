//! The benchmark floor: the least a server can do and still look like
//! CivicPulse to the load generator.
//!
//! - `GET /socket.io/?EIO=4&transport=websocket`: Engine.IO `open`, pings
//!   every `PING_INTERVAL_MS`, and a CONNECT reply to any CONNECT — no
//!   authentication, no polling transport.
//! - Rooms, just what the load generator's `rooms` and `typing` use:
//!   `join:issue` adds the socket to the issue's room (made on first join);
//!   `message:send` encodes one `message:new` frame and hands the same bytes
//!   to every member, the sender included; `user:typing` goes to the other
//!   members, naming the typist by the `sub` and `name` of the CONNECT
//!   token (unverified). Nothing is stored or checked; payloads are read
//!   with string scanning (no JSON library) and their strings pasted back
//!   still escaped.
//! - `POST /api/issues/{id}/upvote`: encodes one `issue:upvoted` frame and
//!   hands the same bytes to every connected socket (a tokio broadcast
//!   channel). `upvotedBy` is the `sub` of the bearer token, read without
//!   verification, so the load generator can key its latencies as it does
//!   for the real servers.
//! - `POST /api/auth/register`, `POST /api/issues`: made-up ids, nothing
//!   stored; `GET /healthz`.
//!
//! Run: `PORT=3003 civicpulse-limit` (listens on 127.0.0.1 unless HOST says
//! otherwise).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

struct Server {
    frames: broadcast::Sender<Utf8Bytes>,
    /// Issue id (as sent, still escaped) → its members: socket id and the
    /// sending end of that socket's room queue.
    rooms: Mutex<HashMap<String, Vec<(u64, RoomTx)>>>,
    ids: AtomicU64,
    upvotes: AtomicU64,
    messages: AtomicU64,
    ping_interval: Duration,
    ping_timeout: Duration,
}

/// A socket's queue of room frames. Unbounded: a room member must get
/// every message (the broadcast channel above may drop frames for a socket
/// that lags, which the upvote scenarios never reach).
type RoomTx = mpsc::UnboundedSender<Utf8Bytes>;
type RoomRx = mpsc::UnboundedReceiver<Utf8Bytes>;

impl Server {
    /// Hands the same bytes to every member of `room` but `except`.
    fn to_room(&self, room: &str, frame: Utf8Bytes, except: Option<u64>) {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        for (id, tx) in rooms.get(room).into_iter().flatten() {
            if Some(*id) != except {
                let _ = tx.send(frame.clone());
            }
        }
    }
}

/// The rooms one socket is in; it leaves them all when it ends, however
/// it ends.
struct Membership {
    server: Arc<Server>,
    id: u64,
    joined: Vec<String>,
    /// Made on the first join, so sockets that never join (idle,
    /// broadcast, handshake) cost no more than before.
    tx: Option<RoomTx>,
}

impl Membership {
    fn join(&mut self, room: &str, rx: &mut Option<RoomRx>) {
        let tx = self.tx.get_or_insert_with(|| {
            let (tx, new_rx) = mpsc::unbounded_channel();
            *rx = Some(new_rx);
            tx
        });
        if self.joined.iter().any(|r| r == room) {
            return;
        }
        self.joined.push(room.to_owned());
        let mut rooms = self.server.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms.entry(room.to_owned()).or_default().push((self.id, tx.clone()));
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if self.joined.is_empty() {
            return;
        }
        let mut rooms = self.server.rooms.lock().unwrap_or_else(|p| p.into_inner());
        for room in &self.joined {
            if let Some(members) = rooms.get_mut(room) {
                members.retain(|(id, _)| *id != self.id);
                if members.is_empty() {
                    rooms.remove(room);
                }
            }
        }
    }
}

/// Who a socket is, from its CONNECT token (raw JSON string contents).
#[derive(Default)]
struct User {
    id: String,
    name: String,
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = env_num("PORT", 3003);
    // A deep accept queue: a burst of connects must not overflow it (the
    // clients would wait a second for SYN retransmission).
    let addr: std::net::SocketAddr = format!("{host}:{port}").parse().map_err(std::io::Error::other)?;
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    let (frames, _) = broadcast::channel(4096);
    let server = Arc::new(Server {
        frames,
        rooms: Mutex::new(HashMap::new()),
        ids: AtomicU64::new(1),
        upvotes: AtomicU64::new(0),
        messages: AtomicU64::new(0),
        ping_interval: Duration::from_millis(env_num("PING_INTERVAL_MS", 25_000)),
        ping_timeout: Duration::from_millis(env_num("PING_TIMEOUT_MS", 20_000)),
    });
    println!("limit server listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(server.clone(), stream));
    }
}

/// Tells a WebSocket upgrade (left to tungstenite) from a REST request by
/// peeking at the request line.
async fn connection(server: Arc<Server>, stream: TcpStream) {
    let mut head = [0u8; 16];
    let peeked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.peek(&mut head).await {
                Ok(n) if n >= head.len() => return true,
                Ok(0) | Err(_) => return false,
                Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    })
    .await
    .unwrap_or(false);
    if !peeked {
        return;
    }
    if head.starts_with(b"GET /socket.io/") {
        websocket(server, stream).await;
    } else {
        let _ = http(server, stream).await;
    }
}

async fn websocket(server: Arc<Server>, stream: TcpStream) {
    // Small read buffer (clients send little); writes are buffered up to
    // 64 KiB so a burst of frames goes out in one system call.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(16 << 20);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else { return };
    let id = server.ids.fetch_add(1, Ordering::Relaxed);
    let open = format!(
        r#"0{{"sid":"limit{id:015}","upgrades":[],"pingInterval":{},"pingTimeout":{},"maxPayload":1000000}}"#,
        server.ping_interval.as_millis(),
        server.ping_timeout.as_millis()
    );
    if ws.send(Message::text(open)).await.is_err() {
        return;
    }
    let mut frames: Option<broadcast::Receiver<Utf8Bytes>> = None;
    let mut room_frames: Option<RoomRx> = None;
    let mut rooms = Membership { server: server.clone(), id, joined: Vec::new(), tx: None };
    let mut user = User::default();
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + server.ping_interval, server.ping_interval);
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            incoming = ws.next() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => continue,
                };
                match text.as_bytes() {
                    [b'3', ..] => awaiting_pong = false,
                    [b'1', ..] => return,
                    // CONNECT to `/` (with or without auth): accept.
                    [b'4', b'0', rest @ ..] if !rest.starts_with(b"/") => {
                        // `user:typing` names the typist by the token's
                        // subject, read without verification.
                        if let Some(token) = std::str::from_utf8(rest).ok().and_then(|auth| str_field(auth, "token")) {
                            user.id = jwt_claim(token, "sub").unwrap_or_default();
                            user.name = jwt_claim(token, "name").unwrap_or_default();
                        }
                        if ws.send(Message::text(format!(r#"40{{"sid":"s{id:019}"}}"#))).await.is_err() {
                            return;
                        }
                        frames.get_or_insert_with(|| server.frames.subscribe());
                    }
                    [b'4', b'2', ..] => {
                        if let Some(ack) = room_event(&server, &mut rooms, &mut room_frames, &user, text.as_str())
                            && ws.send(Message::text(ack)).await.is_err()
                        {
                            return;
                        }
                    }
                    _ => {}
                }
            }
            frame = recv(&mut frames) => match frame {
                Ok(frame) => {
                    if !write_coalesced(&mut ws, frame, &mut frames, &mut room_frames).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            // Never None: `rooms` holds a sender as long as the socket lives.
            Some(frame) = recv_room(&mut room_frames) => {
                if !write_coalesced(&mut ws, frame, &mut frames, &mut room_frames).await {
                    return;
                }
            }
            _ = ping.tick() => {
                if awaiting_pong {
                    // No pong within a whole interval (>= pingTimeout here).
                    return;
                }
                awaiting_pong = true;
                if ws.send(Message::text("2")).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Coalesces: queues `first` and every frame already waiting (broadcast
/// and room frames), then one write for all of them. False once the socket
/// is gone.
async fn write_coalesced(
    ws: &mut WebSocketStream<TcpStream>,
    first: Utf8Bytes,
    frames: &mut Option<broadcast::Receiver<Utf8Bytes>>,
    room_frames: &mut Option<RoomRx>,
) -> bool {
    if ws.feed(Message::Text(first)).await.is_err() {
        return false;
    }
    for _ in 0..256 {
        let next = match frames.as_mut().map(broadcast::Receiver::try_recv) {
            Some(Ok(frame)) => Some(frame),
            Some(Err(broadcast::error::TryRecvError::Lagged(_))) => continue,
            _ => room_frames.as_mut().and_then(|rx| rx.try_recv().ok()),
        };
        let Some(frame) = next else { break };
        if ws.feed(Message::Text(frame)).await.is_err() {
            return false;
        }
    }
    ws.flush().await.is_ok()
}

async fn recv_room(rx: &mut Option<RoomRx>) -> Option<Utf8Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

const ACK_OK: &str = r#"{"ok":true}"#;
const ACK_REFUSED: &str =
    r#"{"ok":false,"error":{"code":"validation_failed","message":"unexpected payload"}}"#;

/// The room events of the load generator (`42<ack id>?["name",arg]`);
/// returns the ACK to send, when the event asked for one.
fn room_event(
    server: &Server,
    rooms: &mut Membership,
    room_frames: &mut Option<RoomRx>,
    user: &User,
    text: &str,
) -> Option<String> {
    let (ack, name, arg) = parse_event(text)?;
    let answer = match name {
        "join:issue" => match string_literal(arg) {
            Some((issue, _)) => {
                rooms.join(issue, room_frames);
                ACK_OK.to_owned()
            }
            None => ACK_REFUSED.to_owned(),
        },
        "message:send" => match (str_field(arg, "issueId"), str_field(arg, "content")) {
            (Some(issue), Some(content)) => {
                let n = server.messages.fetch_add(1, Ordering::Relaxed) + 1;
                let message =
                    format!(r#"{{"messageId":"msg_{n}","issueId":"{issue}","content":"{content}"}}"#);
                // Encoded once; every member, the sender included, gets the same bytes.
                server.to_room(issue, Utf8Bytes::from(format!(r#"42["message:new",{message}]"#)), None);
                format!(r#"{{"ok":true,"message":{message}}}"#)
            }
            _ => ACK_REFUSED.to_owned(),
        },
        "user:typing" => match str_field(arg, "issueId") {
            Some(issue) => {
                let typing = field(arg, "isTyping") == Some("true");
                let frame = format!(
                    r#"42["user:typing",{{"issueId":"{issue}","userId":"{}","displayName":"{}","isTyping":{typing}}}]"#,
                    user.id, user.name
                );
                // To the others only, not back to the typist.
                server.to_room(issue, Utf8Bytes::from(frame), Some(rooms.id));
                ACK_OK.to_owned()
            }
            None => ACK_REFUSED.to_owned(),
        },
        _ => return None,
    };
    ack.map(|id| format!("43{id}[{answer}]"))
}

/// An EVENT to `/`: `42<ack id>?["name",arg]` → (ack id, name, raw arg).
/// Event names carry no escapes; a second argument would stay in `arg`.
fn parse_event(text: &str) -> Option<(Option<&str>, &str, &str)> {
    let rest = text.strip_prefix("42")?;
    let (ack, rest) = rest.split_at(rest.bytes().take_while(u8::is_ascii_digit).count());
    let (name, rest) = rest.strip_prefix("[\"")?.split_once('"')?;
    let arg = rest.strip_prefix(',')?.strip_suffix(']')?;
    Some(((!ack.is_empty()).then_some(ack), name, arg))
}

/// Splits the JSON string literal at the start of `s` into its contents,
/// still escaped (to be pasted into another JSON text as they are), and
/// what follows it.
fn string_literal(s: &str) -> Option<(&str, &str)> {
    let body = s.strip_prefix('"')?;
    let mut escaped = false;
    // Byte-wise is safe: `"` and `\` never occur inside a UTF-8 sequence.
    for (i, b) in body.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b'"' => return Some((&body[..i], &body[i + 1..])),
            _ => {}
        }
    }
    None
}

/// The raw text of `key`'s value in a JSON object (a string keeps its
/// quotes and escapes). Other values are skipped over, nested ones too.
fn field<'a>(object: &'a str, key: &str) -> Option<&'a str> {
    let mut rest = object.trim_start().strip_prefix('{')?;
    loop {
        let (name, after) = string_literal(rest.trim_start())?;
        let value = after.trim_start().strip_prefix(':')?.trim_start();
        let (value, after) = value.split_at(value_len(value)?);
        if name == key {
            return Some(value.trim_end());
        }
        // After the last member comes `}`: the key is not there.
        rest = after.trim_start().strip_prefix(',')?;
    }
}

/// The length of the JSON value at the start of `s` (up to the `,`, `}` or
/// `]` that ends it).
fn value_len(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let (mut depth, mut i) = (0usize, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let (_, rest) = string_literal(&s[i..])?;
                i = s.len() - rest.len();
                if depth == 0 {
                    return Some(i);
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => return Some(i),
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            b',' if depth == 0 => return Some(i),
            _ => {}
        }
        i += 1;
    }
    Some(i)
}

/// The contents of a string member of a JSON object, still escaped.
fn str_field<'a>(object: &'a str, key: &str) -> Option<&'a str> {
    match string_literal(field(object, key)?)? {
        (contents, "") => Some(contents),
        _ => None,
    }
}

async fn recv(
    frames: &mut Option<broadcast::Receiver<Utf8Bytes>>,
) -> Result<Utf8Bytes, broadcast::error::RecvError> {
    match frames {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Keep-alive HTTP/1.1: just enough for the load generator's requests.
async fn http(server: Arc<Server>, mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let (method, path) = (request_line.next().unwrap_or(""), request_line.next().unwrap_or(""));
        let (mut length, mut token) = (0usize, None);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "authorization" => token = value.trim().strip_prefix("Bearer ").map(str::to_owned),
                _ => {}
            }
        }
        while buf.len() < head_end + 4 + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..head_end + 4 + length);

        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (status, body) = match (method, segments.as_slice()) {
            ("GET", ["healthz"]) => (200, r#"{"status":"ok"}"#.to_owned()),
            ("POST", ["api", "auth", "register"]) => {
                let id = server.ids.fetch_add(1, Ordering::Relaxed);
                (
                    201,
                    format!(
                        r#"{{"user":{{"userId":"usr_{id:026}","displayName":"Load","role":"citizen"}},"accessToken":"-","refreshToken":"-"}}"#
                    ),
                )
            }
            ("POST", ["api", "issues"]) => {
                let id = server.ids.fetch_add(1, Ordering::Relaxed);
                (201, format!(r#"{{"issueId":"iss_{id:026}","upvotes":0}}"#))
            }
            ("POST", ["api", "issues", issue, "upvote"]) => {
                let upvotes = server.upvotes.fetch_add(1, Ordering::Relaxed) + 1;
                let by = token.as_deref().and_then(jwt_sub).unwrap_or_default();
                // Encoded once; every socket gets the same bytes.
                let frame = format!(
                    r#"42["issue:upvoted",{{"issueId":"{issue}","upvotes":{upvotes},"upvotedBy":"{by}","upvoted":true}}]"#
                );
                let _ = server.frames.send(Utf8Bytes::from(frame));
                (200, format!(r#"{{"issueId":"{issue}","upvotes":{upvotes},"upvoted":true}}"#))
            }
            _ => (404, r#"{"error":{"code":"not_found","message":"not found"}}"#.to_owned()),
        };
        let reason = match status {
            200 => "OK",
            201 => "Created",
            _ => "Not Found",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).await?;
    }
}

/// The `sub` claim of a JWT, unverified (ids need no JSON unescaping).
fn jwt_sub(token: &str) -> Option<String> {
    jwt_claim(token, "sub")
}

/// A string claim of a JWT, unverified, still JSON-escaped.
fn jwt_claim(token: &str, claim: &str) -> Option<String> {
    let payload = base64url(token.split('.').nth(1)?)?;
    let json = String::from_utf8(payload).ok()?;
    str_field(&json, claim).map(str::to_owned)
}

fn base64url(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_subject_of_a_token() {
        // {"sub":"usr_1","typ":"access"}
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c3JfMSIsInR5cCI6ImFjY2VzcyJ9.sig";
        assert_eq!(super::jwt_sub(token).as_deref(), Some("usr_1"));
        assert_eq!(super::jwt_claim(token, "typ").as_deref(), Some("access"));
        assert_eq!(super::jwt_claim(token, "name"), None);
    }

    #[test]
    fn splits_events_as_the_load_generator_sends_them() {
        assert_eq!(
            super::parse_event(r#"420["join:issue","iss_1"]"#),
            Some((Some("0"), "join:issue", r#""iss_1""#))
        );
        assert_eq!(
            super::parse_event(r#"4217["message:send",{"issueId":"iss_1","content":"lg 0 17 9"}]"#),
            Some((Some("17"), "message:send", r#"{"issueId":"iss_1","content":"lg 0 17 9"}"#))
        );
        assert_eq!(
            super::parse_event(r#"42["user:typing",{"issueId":"iss_1","isTyping":true}]"#),
            Some((None, "user:typing", r#"{"issueId":"iss_1","isTyping":true}"#))
        );
        assert_eq!(super::parse_event(r#"43["x"]"#), None);
        assert_eq!(super::parse_event(r#"42/admin,["x",1]"#), None);
    }

    #[test]
    fn string_literals_keep_their_escapes() {
        assert_eq!(super::string_literal(r#""a\"b\\" rest"#), Some((r#"a\"b\\"#, " rest")));
        assert_eq!(super::string_literal(r#""héllo","x""#), Some(("héllo", r#","x""#)));
        assert_eq!(super::string_literal(r#""open"#), None);
        assert_eq!(super::string_literal("1"), None);
    }

    #[test]
    fn finds_members_of_an_object_in_any_order() {
        let object = r#"{"content":"say \"issueId\":\"no\"","n":{"issueId":"nested"},"list":[1,{"a":"]"}],"issueId":"iss_9","isTyping":false}"#;
        assert_eq!(super::str_field(object, "issueId"), Some("iss_9"));
        assert_eq!(super::str_field(object, "content"), Some(r#"say \"issueId\":\"no\""#));
        assert_eq!(super::field(object, "isTyping"), Some("false"));
        assert_eq!(super::field(object, "n"), Some(r#"{"issueId":"nested"}"#));
        assert_eq!(super::field(object, "list"), Some(r#"[1,{"a":"]"}]"#));
        assert_eq!(super::str_field(object, "n"), None);
        assert_eq!(super::field(object, "missing"), None);
        assert_eq!(super::field(r#"{ "a" : 1 , "b" : "x" }"#, "b"), Some(r#""x""#));
        assert_eq!(super::field(r#"{ "a" : 1 , "b" : "x" }"#, "a"), Some("1"));
        assert_eq!(super::field("[1]", "a"), None);
    }
}
