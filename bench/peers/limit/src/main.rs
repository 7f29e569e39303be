//! The benchmark floor: the least a server can do and still look like
//! CivicPulse to the load generator.
//!
//! - `GET /socket.io/?EIO=4&transport=websocket`: Engine.IO `open`, pings
//!   every `PING_INTERVAL_MS`, and a CONNECT reply to any CONNECT — no
//!   authentication, no rooms, no polling transport.
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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

struct Server {
    frames: broadcast::Sender<Utf8Bytes>,
    ids: AtomicU64,
    upvotes: AtomicU64,
    ping_interval: Duration,
    ping_timeout: Duration,
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
        ids: AtomicU64::new(1),
        upvotes: AtomicU64::new(0),
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
                        if ws.send(Message::text(format!(r#"40{{"sid":"s{id:019}"}}"#))).await.is_err() {
                            return;
                        }
                        frames.get_or_insert_with(|| server.frames.subscribe());
                    }
                    _ => {}
                }
            }
            frame = recv(&mut frames) => match frame {
                Ok(frame) => {
                    // Coalesce: queue every frame already waiting, then one
                    // write for all of them.
                    if ws.feed(Message::Text(frame)).await.is_err() {
                        return;
                    }
                    if let Some(rx) = frames.as_mut() {
                        for _ in 0..256 {
                            match rx.try_recv() {
                                Ok(frame) => {
                                    if ws.feed(Message::Text(frame)).await.is_err() {
                                        return;
                                    }
                                }
                                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                                Err(_) => break,
                            }
                        }
                    }
                    if ws.flush().await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
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
    let payload = base64url(token.split('.').nth(1)?)?;
    let json = String::from_utf8(payload).ok()?;
    let start = json.find(r#""sub":""#)? + 7;
    let len = json[start..].find('"')?;
    Some(json[start..start + len].to_owned())
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
    }
}
