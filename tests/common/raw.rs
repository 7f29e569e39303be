//! HTTP over a bare TCP connection, for what a client library hides: the
//! answers given before any route (the connection caps, refused upgrades),
//! whether the server closed the connection, and clients from several
//! addresses (any 127.x.y.z is this host).

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a read waits for the server.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A response read off a raw connection.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub head: String,
    /// JSON, or the text as a string when it is not JSON.
    pub body: Value,
    /// The server closed the connection after it.
    pub closed: bool,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// `status` with the contract's error shape and `code`.
    #[track_caller]
    pub fn assert_error_shape(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.body["error"]["code"], code, "{self:?}");
        assert!(self.body["error"]["message"].is_string(), "{self:?}");
    }
}

/// A TCP connection to `addr` from `source`, so that a test can be several
/// client addresses at once.
pub fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let source: IpAddr = source.parse().expect("a source address");
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.bind(&SocketAddr::new(source, 0).into()).expect("bind the source address");
    socket.connect(&addr.into()).expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    stream
}

/// Reads one response from `stream`: to the end of the connection, or of
/// the body when the connection stays open, or of the head of a 101.
pub fn read_response(stream: &mut TcpStream) -> Raw {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut closed = false;
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        // A response that keeps its connection: stop at its body's end.
        let text = String::from_utf8_lossy(&bytes);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
            });
            let keeps = !head.to_ascii_lowercase().contains("connection: close");
            if head.starts_with("HTTP/1.1 101") || (keeps && length.is_some_and(|n| body.len() >= n)) {
                break;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                closed = true;
                break;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                break;
            }
            Err(e) => panic!("reading a response: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    Raw { status, head: head.to_string(), body, closed }
}
