//! Requests for a session that another node owns (see `router`), passed
//! to that node so that the client gets exactly the answer a single node
//! would give: a polling GET or POST is proxied over HTTP, a WebSocket
//! upgrade is spliced onto a TCP connection to the owner, which answers
//! the 101 and serves the socket. When the owner cannot be found or
//! reached the caller answers "Session ID unknown", as for a session that
//! is gone, and the client starts a new one.

use std::fmt::Display;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use actix_http::body::{BodyStream, BoxBody, SizedStream};
use actix_http::header::{self, HeaderMap, HeaderName};
use actix_http::{RequestHead, Uri};
use actix_web::{HttpResponse, web};
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::EngineConfig;
use super::limits::Slot;
use super::router::{FORWARDED_HEADER, SessionRouter};

/// How much longer than `ping_interval + ping_timeout` a forwarded request
/// may wait for the owner's answer. The owner holds a GET until it has
/// something to send, at the latest a ping, or the close of a session whose
/// pong is late: a shorter wait would cut off healthy long-polls.
const LONG_POLL_MARGIN: Duration = Duration::from_secs(10);

/// The nodes of one deployment are near each other: one that takes
/// longer than this to accept a connection is treated as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Idle connections to other nodes are closed before the owner's HTTP
/// keep-alive (5 s, see `server`) could close them under a new request,
/// which would fail that request.
const POOL_KEEP_ALIVE: Duration = Duration::from_secs(3);

thread_local! {
    /// One client per worker thread (awc's is not `Send`), so that
    /// connections to the other nodes are pooled per worker.
    static CLIENT: awc::Client = awc::Client::builder()
        // The owner's answer goes back as it is: no redirects followed, no
        // headers of the proxy's own, and no limit on connections but the
        // clients' requests (a long-poll holds one for its whole wait).
        .disable_redirects()
        .no_default_headers()
        .connector(awc::Connector::new().timeout(CONNECT_TIMEOUT).limit(0).conn_keep_alive(POOL_KEEP_ALIVE))
        .finish();
}

/// A request for a session of another node, as `endpoint::route` found it.
pub(crate) struct Forward {
    pub(super) router: Arc<dyn SessionRouter>,
    pub(super) local_tag: Arc<str>,
    pub(super) owner_tag: String,
    pub(super) sid: String,
    pub(super) config: Arc<EngineConfig>,
}

impl Forward {
    /// Proxies a polling request to the owner and relays its answer;
    /// `None` when the owner cannot be found or reached.
    pub(crate) async fn polling(self, head: &RequestHead, payload: web::Payload) -> Option<HttpResponse> {
        let base = self.owner().await?;
        let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = CLIENT
            .with(|client| client.request(head.method.clone(), format!("{base}{path}")))
            .no_decompress()
            .timeout(self.config.ping_interval + self.config.ping_timeout + LONG_POLL_MARGIN)
            .insert_header((FORWARDED_HEADER, &*self.local_tag));
        for (name, value) in head.headers().iter().filter(|(name, _)| end_to_end(name)) {
            request.headers_mut().append(name.clone(), value.clone());
        }
        let body = Framing::of(head.headers()).body(payload);
        let answer = match request.send_body(body).await {
            Ok(answer) => answer,
            Err(e) => {
                self.failed(format_args!("{base} did not answer: {e}"));
                return None;
            }
        };
        self.config.stats.forwarded_request();
        log::debug!("sid={} {} forwarded to {}: {}", self.sid, head.method, self.owner_tag, answer.status());
        let mut response = HttpResponse::build(answer.status());
        for (name, value) in answer.headers().iter().filter(|(name, _)| end_to_end(name)) {
            response.append_header((name.clone(), value.clone()));
        }
        let framing = Framing::of(answer.headers());
        Some(response.body(framing.body(answer)))
    }

    /// Hands an upgrade request and its connection to the owner, which
    /// answers it; the connection back when the owner cannot be found or
    /// reached, to be refused. `slot` (the connection's place in the
    /// server's count) goes with the relay, and the link to the owner is
    /// counted too: it is a descriptor per socket as well.
    pub(crate) async fn upgrade(
        self,
        head: &RequestHead,
        mut io: TcpStream,
        early: BytesMut,
        slot: Slot,
    ) -> Result<(), TcpStream> {
        let Some(base) = self.owner().await else { return Err(io) };
        let mut owner = match connect(&base).await {
            Ok(owner) => owner,
            Err(e) => {
                self.failed(format_args!("{base} is unreachable: {e}"));
                return Err(io);
            }
        };
        if let Err(e) = owner.write_all(&upgrade_request(head, &self.local_tag, &early)).await {
            self.failed(format_args!("{base} did not take the upgrade: {e}"));
            return Err(io);
        }
        self.config.stats.forwarded_upgrade();
        log::debug!("sid={} websocket upgrade forwarded to {}", self.sid, self.owner_tag);
        // As on a local socket: frames are small and latency matters more.
        let _ = io.set_nodelay(true);
        let _ = owner.set_nodelay(true);
        // The socket outlives the request, as a local one does (`ws::spawn`).
        let sid = self.sid;
        let upstream = slot.upstream();
        actix_rt::spawn(async move {
            let _counted = (slot, upstream);
            if let Err(e) = tokio::io::copy_bidirectional(&mut io, &mut owner).await {
                log::debug!("sid={sid} forwarded websocket ended: {e}");
            }
        });
        Ok(())
    }

    /// The owner's base address, without a trailing slash.
    async fn owner(&self) -> Option<String> {
        match self.router.resolve(&self.owner_tag).await {
            Some(base) => Some(base.trim_end_matches('/').to_owned()),
            None => {
                self.failed(format_args!("no live node has tag {}", self.owner_tag));
                None
            }
        }
    }

    /// Counts and logs a request that could not be forwarded.
    fn failed(&self, why: impl Display) {
        self.config.stats.forward_failed();
        log::debug!("sid={} not forwarded: {why}", self.sid);
    }
}

/// Opens a connection to `base` (`http://host[:port]`).
async fn connect(base: &str) -> std::io::Result<TcpStream> {
    let uri: Uri = base.parse().map_err(std::io::Error::other)?;
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(authority)) => authority,
        _ => return Err(std::io::Error::other("not an http:// address")),
    };
    let addr = match authority.port_u16() {
        Some(_) => authority.as_str().to_owned(),
        None => format!("{}:80", authority.host()),
    };
    tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await.map_err(std::io::Error::other)?
}

/// The upgrade request as the client sent it, marked as forwarded, then
/// whatever the client sent behind it.
fn upgrade_request(head: &RequestHead, local_tag: &str, early: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024 + early.len());
    // Writes to a Vec cannot fail.
    let _ = write!(out, "{} {} HTTP/1.1\r\n", head.method, head.uri);
    for (name, value) in head.headers().iter() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let _ = write!(out, "{FORWARDED_HEADER}: {local_tag}\r\n\r\n");
    out.extend_from_slice(early);
    out
}

/// Whether a header belongs to the message rather than to the connection
/// it came on (RFC 9110 7.6.1), or to the body's framing, which the
/// relayed body sets again (`Framing`).
fn end_to_end(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            // Answered by this node's HTTP layer already.
            | "expect"
    )
}

/// How a message's body is delimited, so that it goes on delimited the same
/// way (the owner sees the client's Content-Length, the client the owner's).
enum Framing {
    Length(u64),
    Chunked,
    /// Neither: a request without a body (a GET). The owner, being this
    /// crate, never answers with a body delimited by closing.
    Empty,
}

impl Framing {
    fn of(headers: &HeaderMap) -> Self {
        let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse().ok());
        match length {
            Some(length) => Framing::Length(length),
            None if headers.contains_key(header::TRANSFER_ENCODING) => Framing::Chunked,
            None => Framing::Empty,
        }
    }

    fn body<S, E>(self, stream: S) -> BoxBody
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + 'static,
        E: Into<Box<dyn std::error::Error>> + 'static,
    {
        match self {
            Framing::Length(length) => BoxBody::new(SizedStream::new(length, stream)),
            Framing::Chunked => BoxBody::new(BodyStream::new(stream)),
            Framing::Empty => BoxBody::new(()),
        }
    }
}
