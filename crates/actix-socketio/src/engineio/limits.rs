//! Caps on what clients can hold of the server, applied where `server`
//! takes connections and requests:
//!
//! - connections per peer address (`max_per_address`): beyond, a new
//!   connection is answered 429 and closed;
//! - connections in all (`max_connections`, set below the descriptor
//!   limit): beyond, a connection is still accepted, up to `reserve` more,
//!   but only `ops_paths` (health checks, metrics) are served on it, once;
//!   anything else is answered 503. Beyond the reserve a new connection is
//!   closed at once, so that the process keeps descriptors for its own
//!   files and links (database, Redis) and `accept` never fails;
//! - request bodies must arrive within `body_read_timeout` of their head
//!   (the HTTP layer's own timeout covers heads only): 408 otherwise.
//!
//! Every refusal is counted in [`ServerStats`] and logged once per episode
//! or per offending address, not once per connection. When `accept` fails
//! all the same (the descriptors went elsewhere), actix-server backs off
//! for 500 ms and retries, logging each failure: [`AcceptErrorLog`] turns
//! that into one line per episode and a count.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::error::PayloadError;
use actix_http::header::{self, HeaderValue};
use actix_http::{ConnectionType, Payload, Request, Response, StatusCode};
use bytes::Bytes;
use dashmap::DashMap;
use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::origin::{self, OriginPolicy};

/// The caps of one server. The default caps nothing.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Connections served in full.
    pub max_connections: usize,
    /// Connections past `max_connections` still accepted for `ops_paths`.
    pub reserve: usize,
    /// Connections one peer address may have open; 0 for no cap. Behind a
    /// proxy every client has the proxy's address.
    pub max_per_address: usize,
    /// How long a request's body may take to arrive once its head has.
    pub body_read_timeout: Option<Duration>,
    /// Paths still served past `max_connections` (exact match).
    pub ops_paths: Vec<String>,
    pub stats: Arc<ServerStats>,
    /// The pages that may read the refusals (429, 503): they are answered
    /// before the App, so its CORS middleware never adds its headers.
    pub cors: Option<OriginPolicy>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: usize::MAX,
            reserve: 0,
            max_per_address: 0,
            body_read_timeout: None,
            ops_paths: Vec::new(),
            stats: Arc::default(),
            cors: None,
        }
    }
}

/// What the caps count, read by the application's metrics.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Client connections open now (any kind), and links to other nodes
    /// that forwarded WebSockets hold.
    pub open_connections: AtomicUsize,
    /// Of those, the ones past `max_connections` (ops paths only).
    pub overflow_connections: AtomicUsize,
    /// Connections refused for their address having too many.
    pub address_refusals: AtomicU64,
    /// Requests answered 503 past `max_connections`.
    pub capacity_refusals: AtomicU64,
    /// Connections closed unanswered at accept: even the reserve was taken.
    pub reserve_drops: AtomicU64,
    /// Request bodies that did not arrive in time (answered 408).
    pub body_timeouts: AtomicU64,
}

/// `accept` failures of the process (the descriptor table is the
/// process's, and the log they are seen in is too).
static ACCEPT_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Set from an `accept` failure until connections are accepted again.
static ACCEPT_FAILING: AtomicBool = AtomicBool::new(false);
/// When `accept` last failed, in ms of [`clock`].
static ACCEPT_FAILED_AT: AtomicU64 = AtomicU64::new(0);
/// An episode ends with a connection accepted this long after the last
/// failure: connections accepted just before a failure reach the workers
/// after it, and the first retry comes 500 ms after it.
const ACCEPT_EPISODE_QUIET: Duration = Duration::from_millis(250);

/// Milliseconds since the first call: a clock that fits an atomic.
fn clock() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}

/// Called for every connection accepted: ends an episode of failures.
fn accepted() {
    if !ACCEPT_FAILING.load(Ordering::Relaxed) {
        return;
    }
    let quiet = clock().saturating_sub(ACCEPT_FAILED_AT.load(Ordering::Relaxed));
    if quiet >= ACCEPT_EPISODE_QUIET.as_millis() as u64 && ACCEPT_FAILING.swap(false, Ordering::Relaxed) {
        log::info!(
            target: "actix_socketio::limits",
            "accepting connections again ({} failed accepts counted since the start)",
            accept_errors()
        );
    }
}

/// How many times `accept` failed (EMFILE, ENFILE, ENOBUFS…) so far.
pub fn accept_errors() -> u64 {
    ACCEPT_ERRORS.load(Ordering::Relaxed)
}

/// Wraps the application's logger: actix-server logs every failed
/// `accept` (every 500 ms while descriptors are out); this counts each
/// and logs the first of an episode, which ends when a connection is
/// accepted again.
pub struct AcceptErrorLog<L>(pub L);

impl<L: log::Log> log::Log for AcceptErrorLog<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        // Taken whatever the filter says of actix-server, to be counted.
        is_accept_error(metadata) || self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if is_accept_error(record.metadata()) {
            let mut text = String::new();
            let _ = write!(text, "{}", record.args());
            if let Some(error) = text.strip_prefix("Error accepting connection: ") {
                ACCEPT_ERRORS.fetch_add(1, Ordering::Relaxed);
                ACCEPT_FAILED_AT.store(clock(), Ordering::Relaxed);
                if !ACCEPT_FAILING.swap(true, Ordering::Relaxed) {
                    let args = format_args!(
                        "cannot accept connections: {error}; retrying every 500 ms, \
                         further failures are counted, not logged, until one is accepted"
                    );
                    self.0.log(
                        &log::Record::builder()
                            .level(log::Level::Error)
                            .target("actix_socketio::limits")
                            .args(args)
                            .build(),
                    );
                }
                return;
            }
        }
        if self.0.enabled(record.metadata()) {
            self.0.log(record)
        }
    }

    fn flush(&self) {
        self.0.flush()
    }
}

fn is_accept_error(metadata: &log::Metadata<'_>) -> bool {
    metadata.level() == log::Level::Error && metadata.target().starts_with("actix_server::accept")
}

/// Why a connection or request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address has `max_per_address` connections open.
    Address,
    /// Past `max_connections`, for anything but the ops paths.
    Capacity,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::Address => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Capacity => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn body(self) -> &'static str {
        match self {
            Refusal::Address => {
                r#"{"error":{"code":"too_many_connections","message":"too many connections from your address"}}"#
            }
            Refusal::Capacity => {
                r#"{"error":{"code":"over_capacity","message":"the server is at its connection limit; try again shortly"}}"#
            }
        }
    }

    /// Seconds for `Retry-After`.
    fn retry_after(self) -> u32 {
        match self {
            Refusal::Address => 5,
            Refusal::Capacity => 1,
        }
    }

    /// The whole answer, for a connection the HTTP layer never sees;
    /// readable by a page of `allow_origin`, if given.
    pub(crate) fn raw_response(self, allow_origin: Option<&str>) -> String {
        let cors = allow_origin.map(origin::raw_cors_lines).unwrap_or_default();
        raw_response_with(self.status(), self.body(), Some(self.retry_after()), &cors)
    }

    /// The answer to `req`, readable by its page if `cors` allows it.
    pub(crate) fn response(
        self,
        req: &Request,
        cors: Option<&OriginPolicy>,
    ) -> Response<actix_http::body::BoxBody> {
        let mut response = Response::with_body(self.status(), self.body()).map_into_boxed_body();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after()));
        let origin = req.head().headers().get(header::ORIGIN).and_then(|o| o.to_str().ok());
        let host = req.head().headers().get(header::HOST).and_then(|h| h.to_str().ok());
        let readable_by = cors.and_then(|cors| cors.readable_by(origin, host));
        if let Some(Ok(origin)) = readable_by.map(|origin| HeaderValue::from_str(&origin)) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("retry-after"));
            headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        response.head_mut().set_connection_type(ConnectionType::Close);
        response
    }
}

/// An HTTP/1.1 answer with a JSON body that closes the connection.
pub(crate) fn raw_response(status: StatusCode, body: &str, retry_after: Option<u32>) -> String {
    raw_response_with(status, body, retry_after, "")
}

/// [`raw_response`] with `extra` header lines (each ending in CRLF).
fn raw_response_with(status: StatusCode, body: &str, retry_after: Option<u32>, extra: &str) -> String {
    let retry = retry_after.map(|s| format!("retry-after: {s}\r\n")).unwrap_or_default();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}{extra}connection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
}

/// The error a request body that did not arrive in time reads as.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// The timeout, when `error` is a body that did not arrive in time (the
/// request is to be answered 408; its connection is closed).
pub fn body_timeout(error: &PayloadError) -> Option<Duration> {
    match error {
        PayloadError::Io(e) => e.get_ref()?.downcast_ref::<BodyTimeout>().map(|t| t.0),
        _ => None,
    }
}

/// The 408 for a body that did not arrive in time, in the error shape.
pub fn body_timeout_body(timeout: Duration) -> String {
    format!(
        r#"{{"error":{{"code":"request_timeout","message":"the request body did not arrive within {} ms"}}}}"#,
        timeout.as_millis()
    )
}

/// The connections of one server, shared by its workers.
#[derive(Debug)]
pub(crate) struct Table {
    limits: ServerLimits,
    addresses: DashMap<IpAddr, Address>,
    /// Set while past `max_connections`, so that it is logged once.
    at_capacity: AtomicBool,
    /// Set while the reserve is taken too.
    reserve_full: AtomicBool,
    /// Refused connections being answered now.
    refusing: AtomicUsize,
}

/// Refused connections answered at once, each holding its descriptor for
/// a moment; past them a refusal is answered only if the kernel takes it
/// at once (a flood of refused connections must not take the descriptors
/// their refusal protects).
const MAX_REFUSING: usize = 256;

/// One peer address's connections.
#[derive(Debug, Default)]
struct Address {
    open: usize,
    /// Logged already, while the address has connections open.
    refusal_logged: bool,
    timeout_logged: bool,
}

/// What to do with a new connection.
pub(crate) enum Admission {
    Serve(Slot),
    /// Answer it (after its request) and close it; the slot holds its
    /// place while it is answered.
    Refuse(Slot, Refusal),
    /// Descriptors are short: answer only if the kernel takes it at once.
    Drop(Refusal),
}

impl Table {
    pub(crate) fn new(limits: ServerLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            addresses: DashMap::new(),
            at_capacity: AtomicBool::new(false),
            reserve_full: AtomicBool::new(false),
            refusing: AtomicUsize::new(0),
        })
    }

    /// Decides on a connection just accepted from `ip`.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Admission {
        accepted();
        let stats = &self.limits.stats;
        let over_address = {
            let mut address = self.addresses.entry(ip).or_default();
            let cap = self.limits.max_per_address;
            if cap > 0 && address.open >= cap {
                stats.address_refusals.fetch_add(1, Ordering::Relaxed);
                if !std::mem::replace(&mut address.refusal_logged, true) {
                    log::warn!(
                        target: "actix_socketio::limits",
                        "address {ip} has {} connections open, its limit: refusing more from it (429) \
                         until some close; logged once while it stays connected",
                        address.open
                    );
                }
                true
            } else {
                address.open += 1;
                false
            }
        };
        let open = stats.open_connections.fetch_add(1, Ordering::AcqRel);
        let max = self.limits.max_connections;
        if over_address {
            if open < max && self.refusing.fetch_add(1, Ordering::AcqRel) < MAX_REFUSING {
                return Admission::Refuse(self.slot(ip, Kind::Refusing), Refusal::Address);
            }
            if open < max {
                self.refusing.fetch_sub(1, Ordering::AcqRel);
            }
            stats.open_connections.fetch_sub(1, Ordering::AcqRel);
            return Admission::Drop(Refusal::Address);
        }
        if open < max {
            return Admission::Serve(self.slot(ip, Kind::Served));
        }
        let overflow = stats.overflow_connections.fetch_add(1, Ordering::AcqRel);
        if overflow < self.limits.reserve {
            if !self.at_capacity.swap(true, Ordering::Relaxed) {
                log::warn!(
                    target: "actix_socketio::limits",
                    "{open} connections open, the connection limit ({max}): new ones are served only {:?}, \
                     anything else is answered 503; logged once until the count is back below",
                    self.limits.ops_paths
                );
            }
            return Admission::Serve(self.slot(ip, Kind::Overflow));
        }
        stats.overflow_connections.fetch_sub(1, Ordering::AcqRel);
        stats.open_connections.fetch_sub(1, Ordering::AcqRel);
        self.release_address(ip);
        stats.reserve_drops.fetch_add(1, Ordering::Relaxed);
        if !self.reserve_full.swap(true, Ordering::Relaxed) {
            log::error!(
                target: "actix_socketio::limits",
                "{} connections past the connection limit ({max}), its reserve: closing new connections \
                 unanswered; logged once until some close",
                self.limits.reserve
            );
        }
        Admission::Drop(Refusal::Capacity)
    }

    fn slot(self: &Arc<Self>, ip: IpAddr, kind: Kind) -> Slot {
        Slot { table: self.clone(), ip, kind }
    }

    fn release_address(&self, ip: IpAddr) {
        // Forgets the address with its last connection, so that the map
        // holds only addresses that are connected (and their next episode
        // is logged again).
        self.addresses.remove_if_mut(&ip, |_, address| {
            address.open = address.open.saturating_sub(1);
            address.open == 0
        });
    }

    fn body_timed_out(&self, ip: IpAddr, timeout: Duration) {
        self.limits.stats.body_timeouts.fetch_add(1, Ordering::Relaxed);
        let first = self
            .addresses
            .get_mut(&ip)
            .is_some_and(|mut address| !std::mem::replace(&mut address.timeout_logged, true));
        if first {
            log::warn!(
                target: "actix_socketio::limits",
                "a request body from {ip} did not arrive within {} ms: answered 408 and closed; \
                 logged once while the address stays connected",
                timeout.as_millis()
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Served,
    Overflow,
    /// Being answered a refusal; not one of its address's connections.
    Refusing,
    /// A second descriptor of a connection (a forwarded WebSocket's link
    /// to the node that owns it).
    Upstream,
}

/// A connection's place in the count, given back when it is dropped:
/// it goes wherever the connection's socket goes (a WebSocket's task).
#[derive(Debug)]
pub struct Slot {
    table: Arc<Table>,
    ip: IpAddr,
    kind: Kind,
}

impl Slot {
    /// Served past `max_connections`: ops paths only.
    pub(crate) fn overflow(&self) -> bool {
        self.kind == Kind::Overflow
    }

    /// Counts one more descriptor held for this connection.
    pub(crate) fn upstream(&self) -> Slot {
        self.table.limits.stats.open_connections.fetch_add(1, Ordering::AcqRel);
        Slot { table: self.table.clone(), ip: self.ip, kind: Kind::Upstream }
    }

    pub(crate) fn info(&self) -> ConnInfo {
        ConnInfo { table: self.table.clone(), ip: self.ip, overflow: self.overflow(), unread: Rc::default() }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let table = &self.table;
        let stats = &table.limits.stats;
        let open = stats.open_connections.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        if self.kind == Kind::Overflow {
            let overflow = stats.overflow_connections.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
            if overflow < table.limits.reserve / 2 {
                table.reserve_full.store(false, Ordering::Relaxed);
            }
        }
        match self.kind {
            Kind::Served | Kind::Overflow => table.release_address(self.ip),
            Kind::Refusing => {
                table.refusing.fetch_sub(1, Ordering::AcqRel);
            }
            Kind::Upstream => {}
        }
        // A tenth below the limit before "at capacity" may be logged
        // again, so that a count that hovers at the limit is one line.
        let max = table.limits.max_connections;
        if open < max - max / 10 && table.at_capacity.swap(false, Ordering::Relaxed) {
            log::info!(
                target: "actix_socketio::limits",
                "{open} connections open, below the connection limit ({max}) again: serving every request"
            );
        }
    }
}

/// What a request knows of its connection (actix-http's connection data).
#[derive(Clone)]
pub(crate) struct ConnInfo {
    table: Arc<Table>,
    ip: IpAddr,
    overflow: bool,
    /// A chunked body the handler dropped before its end, kept for as long
    /// as the connection: while its reader lives, actix-http closes the
    /// connection after the response; dropped, it would go on reading and
    /// discarding the body for as long as the client sends it.
    unread: Rc<RefCell<Option<Payload>>>,
}

impl ConnInfo {
    /// The pages that may read this server's refusals.
    pub(crate) fn cors(&self) -> Option<&OriginPolicy> {
        self.table.limits.cors.as_ref()
    }

    /// The refusal for a request that may not be served on this connection.
    pub(crate) fn refusal(&self, req: &Request) -> Option<Refusal> {
        let ops = self.table.limits.ops_paths.iter().any(|p| p == req.path());
        if self.overflow && !ops {
            self.table.limits.stats.capacity_refusals.fetch_add(1, Ordering::Relaxed);
            return Some(Refusal::Capacity);
        }
        None
    }

    /// Puts a deadline on the request's body, if it has one.
    pub(crate) fn time_body(&self, req: &mut Request) -> Option<Rc<BodyState>> {
        let timeout = self.table.limits.body_read_timeout?;
        if matches!(req.payload(), Payload::None) {
            return None;
        }
        let chunked = req
            .head()
            .headers
            .get(header::TRANSFER_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let state = Rc::new(BodyState::default());
        let timed = TimedBody {
            inner: req.take_payload(),
            deadline: Instant::now() + timeout,
            timeout,
            sleep: None,
            state: state.clone(),
            conn: self.clone(),
            finished: false,
            chunked,
        };
        *req.payload() = Payload::from(Box::pin(timed) as actix_http::BoxedPayloadStream);
        Some(state)
    }

    /// Whether the response must close the connection: a connection past
    /// the limit serves one request; a body that timed out, or one the
    /// handler left unread, would otherwise hold the connection for as long
    /// as the client goes on sending it.
    pub(crate) fn must_close(&self, body: Option<&BodyState>) -> bool {
        self.overflow || body.is_some_and(|b| b.timed_out.get()) || self.unread.borrow().is_some()
    }
}

/// How a request's body went.
#[derive(Debug, Default)]
pub(crate) struct BodyState {
    timed_out: Cell<bool>,
}

/// A request body that fails with [`BodyTimeout`] when it has not all
/// arrived by its deadline. What arrived in time is handed over even if
/// the handler reads it late.
struct TimedBody {
    inner: Payload,
    deadline: Instant,
    timeout: Duration,
    /// Made only for a body that is not all there when first read.
    sleep: Option<Pin<Box<Sleep>>>,
    state: Rc<BodyState>,
    conn: ConnInfo,
    finished: bool,
    /// A chunked body left unread is read out by actix-http, however long
    /// it goes on; one of a known length is not (it closes the connection).
    chunked: bool,
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        if !self.chunked {
            return;
        }
        // What has arrived already is not a reason to close: only a body
        // that has not all arrived is kept (see `ConnInfo::unread`).
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        while !self.finished {
            match Pin::new(&mut self.inner).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(None) => self.finished = true,
                Poll::Ready(Some(Err(_))) | Poll::Pending => break,
            }
        }
        if !self.finished {
            *self.conn.unread.borrow_mut() = Some(std::mem::replace(&mut self.inner, Payload::None));
        }
    }
}

impl Stream for TimedBody {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.state.timed_out.get() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Pending => {
                let deadline = this.deadline;
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.state.timed_out.set(true);
                this.conn.table.body_timed_out(this.conn.ip, this.timeout);
                let error = io::Error::new(io::ErrorKind::TimedOut, BodyTimeout(this.timeout));
                Poll::Ready(Some(Err(PayloadError::Io(error))))
            }
        }
    }
}

/// A connection as the HTTP layer sees it: its socket and its place in
/// the count, which an upgrade takes along with the socket.
pub struct Conn {
    io: TcpStream,
    slot: Slot,
}

impl Conn {
    pub(crate) fn new(io: TcpStream, slot: Slot) -> Self {
        Self { io, slot }
    }

    pub(crate) fn info(&self) -> ConnInfo {
        self.slot.info()
    }

    pub(crate) fn into_parts(self) -> (TcpStream, Slot) {
        (self.io, self.slot)
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// How long a refused connection is given to send its request, and then
/// to take the answer, before it is closed.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);

/// Answers a refused connection and closes it. The request is read first
/// (briefly): an answer sent before it would leave the request arriving
/// on a closed socket, whose reset can destroy the answer before the
/// client reads it.
pub(crate) async fn refuse(mut io: TcpStream, slot: Slot, refusal: Refusal) {
    let mut head = Vec::with_capacity(1024);
    let _ = tokio::time::timeout(REFUSAL_WAIT, read_head(&mut io, &mut head)).await;
    let (origin, host) = origin::origin_and_host(&head);
    let readable_by = slot.table.limits.cors.as_ref().and_then(|cors| cors.readable_by(origin, host));
    if io.write_all(refusal.raw_response(readable_by.as_deref()).as_bytes()).await.is_ok() {
        let _ = io.shutdown().await;
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(REFUSAL_WAIT, async {
            while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
    drop(slot);
}

/// Answers a connection that cannot be given a descriptor's worth of time:
/// only if the kernel takes the answer at once.
pub(crate) fn drop_refused(io: TcpStream, refusal: Refusal) {
    let _ = io.try_write(refusal.raw_response(None).as_bytes());
}

/// Reads into `head` until the end of a request head (or 8 KiB of one).
async fn read_head(io: &mut TcpStream, head: &mut Vec<u8>) {
    let mut chunk = [0u8; 1024];
    while head.len() < 8192 {
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize, reserve: usize, per_address: usize) -> Arc<Table> {
        Table::new(ServerLimits {
            max_connections: max,
            reserve,
            max_per_address: per_address,
            ..ServerLimits::default()
        })
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn refusals_are_readable_by_the_pages_the_policy_allows_only() {
        let policy = OriginPolicy::new(|origin, _| origin == "https://app.example");
        let request = |origin: &'static str| {
            let mut req = Request::new();
            req.head_mut().headers.insert(header::ORIGIN, HeaderValue::from_static(origin));
            req
        };
        let allowed = Refusal::Capacity.response(&request("https://app.example"), Some(&policy));
        let headers = allowed.headers();
        assert_eq!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "https://app.example");
        assert_eq!(headers.get(header::ACCESS_CONTROL_EXPOSE_HEADERS).unwrap(), "retry-after");
        assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "1");
        for (req, cors) in
            [(request("https://evil.example"), Some(&policy)), (request("https://app.example"), None)]
        {
            let refused = Refusal::Capacity.response(&req, cors);
            assert!(refused.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        }
        let raw = Refusal::Address.raw_response(Some("https://app.example"));
        assert!(raw.contains("\r\naccess-control-allow-origin: https://app.example\r\n"), "{raw}");
        assert!(raw.contains("\r\nretry-after: 5\r\n"), "{raw}");
        assert!(!Refusal::Address.raw_response(None).contains("access-control"));
    }

    #[test]
    fn an_address_at_its_cap_is_refused_and_others_are_not() {
        let t = table(100, 10, 2);
        let a: Vec<Slot> = (0..2)
            .map(|_| match t.admit(ip(1)) {
                Admission::Serve(slot) => slot,
                _ => panic!("under the cap"),
            })
            .collect();
        assert!(matches!(t.admit(ip(1)), Admission::Refuse(_, Refusal::Address)));
        assert!(matches!(t.admit(ip(2)), Admission::Serve(_)));
        assert_eq!(t.limits.stats.address_refusals.load(Ordering::Relaxed), 1);
        drop(a);
        assert!(matches!(t.admit(ip(1)), Admission::Serve(_)));
        assert!(t.addresses.is_empty(), "every slot given back, no address is left");
        assert_eq!(t.limits.stats.open_connections.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_flood_of_refused_connections_is_not_held() {
        let t = table(100_000, 10, 1);
        let _own = t.admit(ip(1));
        let answered: Vec<Admission> = (0..MAX_REFUSING).map(|_| t.admit(ip(1))).collect();
        assert!(answered.iter().all(|a| matches!(a, Admission::Refuse(_, Refusal::Address))));
        assert!(matches!(t.admit(ip(1)), Admission::Drop(Refusal::Address)));
        drop(answered);
        assert!(matches!(t.admit(ip(1)), Admission::Refuse(_, Refusal::Address)));
        assert_eq!(t.limits.stats.open_connections.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn past_the_limit_the_reserve_then_nothing() {
        let t = table(2, 1, 0);
        let served: Vec<Admission> = (0..2).map(|n| t.admit(ip(n))).collect();
        let overflow = match t.admit(ip(3)) {
            Admission::Serve(slot) => slot,
            _ => panic!("within the reserve"),
        };
        assert!(overflow.overflow());
        assert!(matches!(t.admit(ip(4)), Admission::Drop(Refusal::Capacity)));
        assert_eq!(t.limits.stats.reserve_drops.load(Ordering::Relaxed), 1);
        drop(overflow);
        drop(served);
        assert_eq!(t.limits.stats.open_connections.load(Ordering::Relaxed), 0);
        assert_eq!(t.limits.stats.overflow_connections.load(Ordering::Relaxed), 0);
        assert!(matches!(t.admit(ip(5)), Admission::Serve(ref s) if !s.overflow()));
    }
}
