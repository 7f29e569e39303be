//! One WebSocket connection, served straight on its TCP stream once the
//! upgrade is answered (see `upgrade`), and relayed to its session. It holds
//! no protocol state, so a session can change sockets (polling → WebSocket
//! upgrade) without losing anything.
//!
//! Why not a `WebsocketContext` actor inside actix-http's HTTP/1
//! dispatcher: that keeps the dispatcher's 8 KiB read and 8 KiB write
//! buffers, its timers and a second actor alive for the life of every
//! socket. Here an idle socket holds no buffer at all: reads go into a
//! buffer that is freed as soon as it has been decoded, and writes are a
//! queue of already-encoded frames (shared by every recipient of a
//! broadcast) written with one vectored write.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use actix::prelude::*;
use actix_codec::{Decoder, Encoder};
use actix_http::ws::{CloseCode, Codec, Frame, Message as WsMessage, ProtocolError};
use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::task::AtomicWaker;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::EngineConfig;
use super::inbound::{InboundPermit, Inflight};
use super::limits::Slot;

/// What the socket reports to its session. Sent with `do_send`, past the
/// session's mailbox bound: what bounds them is that each message carries
/// an [`InboundPermit`] and the socket stops reading at `max_inflight`.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum WsEvent {
    Text {
        conn_id: u64,
        text: ByteString,
        permit: InboundPermit,
    },
    Binary {
        conn_id: u64,
        bytes: Bytes,
        permit: InboundPermit,
    },
    /// The client closed the socket (or it went away).
    Closed {
        conn_id: u64,
    },
    /// The socket broke the WebSocket protocol (e.g. a frame over
    /// maxPayload) or fell too far behind.
    Failed {
        conn_id: u64,
    },
}

impl WsEvent {
    pub fn conn_id(&self) -> u64 {
        match self {
            WsEvent::Text { conn_id, .. }
            | WsEvent::Binary { conn_id, .. }
            | WsEvent::Closed { conn_id }
            | WsEvent::Failed { conn_id } => *conn_id,
        }
    }
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Reads are at most this big at a time; the buffer lives only while a
/// read is being decoded.
const READ_CHUNK: usize = 4096;
/// How long a closed socket is drained for the client's own close frame
/// before the TCP connection is dropped (dropping with unread input would
/// reset it and could destroy our close frame in flight).
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// What a closed socket's client may still send while it lingers: enough
/// for its close frame and messages it sent before it saw ours, and no
/// more. A client that keeps writing (a flooder just cut off) would
/// otherwise be read, and its frames thrown away, at full speed for the
/// whole linger: tens of megabytes of the server's time. Past this the
/// connection is dropped at once (a reset, which such a client has earned).
const LINGER_DRAIN_MAX: usize = 64 * 1024;
/// Frames handed to one vectored write.
const WRITE_BATCH: usize = 64;

/// Encodes one WebSocket text frame (header and payload) for the client.
pub fn text_frame(text: ByteString) -> Bytes {
    encode(WsMessage::Text(text))
}

pub fn binary_frame(bytes: Bytes) -> Bytes {
    encode(WsMessage::Binary(bytes))
}

fn encode(message: WsMessage) -> Bytes {
    let mut out = BytesMut::new();
    // Encoding a server frame into memory cannot fail.
    let _ = Codec::new().encode(message, &mut out);
    out.freeze()
}

/// A frame from the client, as the connection acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Text(ByteString),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    Close,
}

/// Takes the next whole frame the client sent off the front of `read`;
/// `Ok(None)` while it has not all arrived. An error is the close code the
/// connection ends with: a broken or oversized frame (the codec's
/// `max_size`), text that is not UTF-8, or a fragment, which Engine.IO
/// clients never send. Kept apart from the connection so that it can be
/// fuzzed without a socket.
pub fn read_frame(codec: &mut Codec, read: &mut BytesMut) -> Result<Option<Inbound>, CloseCode> {
    let frame = match codec.decode(read) {
        Ok(Some(frame)) => frame,
        Ok(None) => return Ok(None),
        Err(e) => {
            log::debug!("websocket protocol error: {e}");
            return Err(match e {
                ProtocolError::Overflow => CloseCode::Size,
                _ => CloseCode::Protocol,
            });
        }
    };
    Ok(Some(match frame {
        Frame::Text(bytes) => Inbound::Text(ByteString::try_from(bytes).map_err(|_| CloseCode::Invalid)?),
        Frame::Binary(bytes) => Inbound::Binary(bytes),
        Frame::Ping(payload) => Inbound::Ping(payload),
        Frame::Pong(_) => Inbound::Pong,
        Frame::Close(_) => Inbound::Close,
        Frame::Continuation(_) => return Err(CloseCode::Unsupported),
    }))
}

/// The write side of a connection, shared with its session (which may run
/// on another worker thread, after an upgrade).
#[derive(Clone)]
pub struct WsOutlet(Arc<Outlet>);

struct Outlet {
    id: u64,
    /// The engine's settings (the bound on what may queue) and counters.
    config: Arc<EngineConfig>,
    queue: Mutex<Queue>,
    /// The connection's task, woken when something is queued.
    wake: AtomicWaker,
    /// The client's messages the session has not finished with; at the
    /// bound the task stops reading (see `inbound`).
    inflight: Arc<Inflight>,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    /// Bytes queued and not yet written to the socket, here or in the
    /// connection's write list: what a client that stops reading costs us.
    bytes: usize,
    /// Set when the connection is to end: after the queued frames, a
    /// close frame with this code.
    close: Option<CloseCode>,
    /// The connection has ended; nothing more is taken.
    ended: bool,
}

impl WsOutlet {
    /// The outlet of a new connection.
    pub fn new(config: Arc<EngineConfig>) -> Self {
        Self(Arc::new(Outlet {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            inflight: Inflight::new(config.max_inflight),
            config,
            queue: Mutex::new(Queue::default()),
            wake: AtomicWaker::new(),
        }))
    }

    pub fn id(&self) -> u64 {
        self.0.id
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock leaves a queue that is still valid.
        self.0.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues one encoded frame. A client that has fallen more than
    /// `max_buffered_bytes` behind is disconnected instead.
    pub fn send(&self, frame: Bytes) {
        let mut queue = self.lock();
        if queue.ended || queue.close.is_some() {
            return;
        }
        queue.bytes += frame.len();
        queue.frames.push_back(frame);
        if queue.bytes > self.0.config.max_buffered_bytes {
            self.0.config.stats.slow_client_disconnected();
            log::warn!(
                "websocket conn={} is not reading ({} bytes queued); disconnecting",
                self.0.id,
                queue.bytes
            );
            queue.frames.clear();
            queue.bytes = 0;
            queue.close = Some(CloseCode::Policy);
        }
        drop(queue);
        self.0.wake.wake();
    }

    /// Closes the connection once what is queued has been written.
    pub fn close(&self) {
        self.close_with(CloseCode::Normal);
    }

    /// `close` with 1001 (Going Away), the code RFC 6455 gives a server
    /// that is going down; clients reconnect on any close code alike.
    pub(super) fn close_going_away(&self) {
        self.close_with(CloseCode::Away);
    }

    fn close_with(&self, code: CloseCode) {
        self.lock().close.get_or_insert(code);
        self.0.wake.wake();
    }

    /// The session has finished with every message this connection handed
    /// it (see `inbound`).
    pub(super) fn is_idle(&self) -> bool {
        self.0.inflight.is_idle()
    }
}

/// Serves one upgraded connection on a task of its own until it ends.
/// `early` holds whatever the client sent right behind its upgrade request;
/// `slot` is the connection's place in the server's count, given back when
/// the socket is closed.
pub fn spawn(
    io: TcpStream,
    early: BytesMut,
    outlet: WsOutlet,
    session: Recipient<WsEvent>,
    max_payload: usize,
    slot: Slot,
) {
    let mut conn = Connection {
        io,
        codec: Codec::new().max_size(max_payload),
        read: early,
        writing: VecDeque::new(),
        outlet,
        session,
        reported: false,
        _slot: slot,
    };
    // Every idle socket is this task, so it is kept small: it is polled by
    // hand (no select! of readiness and notification futures), and the close
    // handshake, needed once, is boxed rather than part of it.
    actix_rt::spawn(async move {
        // Frames the client sent right behind its upgrade request first.
        let code = match conn.decode() {
            Some(ending) => ending,
            None => std::future::poll_fn(|cx| conn.poll_run(cx)).await,
        };
        log::debug!("websocket conn={} closing code={code:?}", conn.outlet.id());
        Box::pin(conn.finish(code)).await;
    });
}

struct Connection {
    io: TcpStream,
    codec: Codec,
    /// Bytes read but not yet decoded: empty (no allocation) between reads
    /// unless a frame arrived in pieces.
    read: BytesMut,
    /// Frames taken from the outlet, being written.
    writing: VecDeque<Bytes>,
    outlet: WsOutlet,
    session: Recipient<WsEvent>,
    reported: bool,
    _slot: Slot,
}

/// How `run` ended: the close code to send, or none if the peer is gone.
type Ending = Option<CloseCode>;

impl Connection {
    /// Serves the connection until it is to end: writes what the session
    /// queues, hands what the client sends to the session.
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Ending> {
        // Before looking at the queue, so that a frame queued from now on
        // wakes this task.
        self.outlet.0.wake.register(cx.waker());
        loop {
            if let Some(ending) = self.take_queued() {
                // What was queued before the close still goes out (`finish`).
                return Poll::Ready(ending);
            }
            if self.write_some().is_err() {
                self.report(true);
                return Poll::Ready(None);
            }
            // At the inbound bound nothing is read (the kernel's buffers
            // fill and TCP holds the client back) until the session is done
            // with enough of what it has, which wakes this task.
            if self.outlet.0.inflight.poll_room(cx).is_ready() {
                // Frames read before the bound was reached come first.
                if !self.read.is_empty()
                    && let Some(ending) = self.decode()
                {
                    return Poll::Ready(ending);
                }
                if self.outlet.0.inflight.is_full() {
                    // Full again: go round to wait for room.
                    continue;
                }
                match self.io.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        // Reads until the socket would block (which re-arms
                        // it) or the bound is reached.
                        if let Some(ending) = self.read_some() {
                            return Poll::Ready(ending);
                        }
                        continue;
                    }
                    Poll::Ready(Err(_)) => {
                        self.report(true);
                        return Poll::Ready(None);
                    }
                    Poll::Pending => {}
                }
            }
            if !self.writing.is_empty() {
                match self.io.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => continue,
                    Poll::Ready(Err(_)) => {
                        self.report(true);
                        return Poll::Ready(None);
                    }
                    Poll::Pending => {}
                }
            }
            return Poll::Pending;
        }
    }

    /// Moves queued frames into the write list; Some when the session (or
    /// the slow-client bound) asked to close.
    fn take_queued(&mut self) -> Option<Ending> {
        let mut queue = self.outlet.lock();
        if self.writing.is_empty() {
            // Hand the queue's storage over rather than copying it.
            self.writing = std::mem::take(&mut queue.frames);
        } else {
            self.writing.extend(queue.frames.drain(..));
        }
        let close = queue.close;
        drop(queue);
        match close {
            Some(CloseCode::Policy) => {
                // Too far behind: what was queued is gone already.
                self.writing.clear();
                self.report(true);
                Some(Some(CloseCode::Policy))
            }
            Some(code) => {
                // The session closed it; it needs no report.
                self.reported = true;
                Some(Some(code))
            }
            None => None,
        }
    }

    /// Writes what the socket takes now without waiting.
    fn write_some(&mut self) -> std::io::Result<()> {
        while !self.writing.is_empty() {
            let mut slices = [IoSlice::new(&[]); WRITE_BATCH];
            let mut n = 0;
            for (slice, frame) in slices.iter_mut().zip(&self.writing) {
                *slice = IoSlice::new(frame);
                n += 1;
            }
            match self.io.try_write_vectored(&slices[..n]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(mut written) => {
                    let mut queue = self.outlet.lock();
                    queue.bytes = queue.bytes.saturating_sub(written);
                    drop(queue);
                    while written > 0 {
                        let Some(front) = self.writing.front_mut() else { break };
                        if written >= front.len() {
                            written -= front.len();
                            self.writing.pop_front();
                        } else {
                            front.advance(written);
                            written = 0;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        // All written: an idle socket keeps no queue storage.
        self.writing = VecDeque::new();
        Ok(())
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        loop {
            self.write_some()?;
            if self.writing.is_empty() {
                return Ok(());
            }
            self.io.writable().await?;
        }
    }

    /// Reads what has arrived and hands complete messages to the session.
    fn read_some(&mut self) -> Option<Ending> {
        loop {
            self.read.reserve(READ_CHUNK);
            match self.io.try_read_buf(&mut self.read) {
                Ok(0) => {
                    self.report(false);
                    return Some(None);
                }
                Ok(_) => {
                    if let Some(ending) = self.decode() {
                        return Some(ending);
                    }
                    if self.outlet.0.inflight.is_full() {
                        // The rest waits in the kernel (and in `read`).
                        return None;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.report(true);
                    return Some(None);
                }
            }
        }
        if self.read.is_empty() {
            // Give the buffer back: an idle socket keeps none.
            self.read = BytesMut::new();
        }
        None
    }

    fn decode(&mut self) -> Option<Ending> {
        let conn_id = self.outlet.id();
        loop {
            if self.outlet.0.inflight.is_full() {
                return None;
            }
            let frame = match read_frame(&mut self.codec, &mut self.read) {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(code) => {
                    self.report(true);
                    return Some(Some(code));
                }
            };
            match frame {
                Inbound::Text(text) => {
                    let permit = self.outlet.0.inflight.permit();
                    self.session.do_send(WsEvent::Text { conn_id, text, permit })
                }
                Inbound::Binary(bytes) => {
                    let permit = self.outlet.0.inflight.permit();
                    self.session.do_send(WsEvent::Binary { conn_id, bytes, permit })
                }
                Inbound::Ping(payload) => self.writing.push_back(encode(WsMessage::Pong(payload))),
                Inbound::Pong => {}
                Inbound::Close => {
                    self.report(false);
                    return Some(Some(CloseCode::Normal));
                }
            }
        }
    }

    fn report(&mut self, failed: bool) {
        if !self.reported {
            self.reported = true;
            let conn_id = self.outlet.id();
            self.session.do_send(if failed {
                WsEvent::Failed { conn_id }
            } else {
                WsEvent::Closed { conn_id }
            });
        }
    }

    /// Sends the close frame (if the peer is still there), then waits a
    /// moment for the client to hang up before dropping the connection.
    /// All of it is bounded: a client that reads nothing holds nothing.
    async fn finish(mut self, code: Ending) {
        let queued = {
            let mut queue = self.outlet.lock();
            queue.ended = true;
            std::mem::take(&mut queue.frames)
        };
        self.report(false);
        let Some(code) = code else { return };
        let slow = code == CloseCode::Policy;
        if slow {
            // It stopped reading: its backlog is dropped, not waited on.
            self.writing.clear();
        } else {
            self.writing.extend(queued);
        }
        self.writing.push_back(encode(WsMessage::Close(Some(code.into()))));
        let close = async {
            if slow {
                // The close frame goes out only if there is room for it now.
                self.write_some()?;
            } else {
                self.flush().await?;
            }
            self.io.shutdown().await?;
            let mut sink = [0u8; 512];
            let mut drained = 0;
            loop {
                self.io.readable().await?;
                match self.io.try_read(&mut sink) {
                    Ok(0) => return Ok(()),
                    Ok(n) => {
                        drained += n;
                        if drained > LINGER_DRAIN_MAX {
                            log::debug!(
                                "websocket conn={} still sending after the close; dropped",
                                self.outlet.id()
                            );
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        };
        let _: Result<std::io::Result<()>, _> = tokio::time::timeout(CLOSE_LINGER, close).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads every frame of `stream`, arriving `cut` bytes at a time.
    fn read_all(stream: &[u8], max_size: usize, cut: usize) -> (Vec<Inbound>, Option<CloseCode>) {
        let mut codec = Codec::new().max_size(max_size);
        let mut read = BytesMut::new();
        let mut frames = Vec::new();
        for piece in stream.chunks(cut) {
            read.extend_from_slice(piece);
            loop {
                match read_frame(&mut codec, &mut read) {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(code) => return (frames, Some(code)),
                }
            }
        }
        (frames, None)
    }

    fn client_frames(messages: Vec<WsMessage>) -> BytesMut {
        let mut codec = Codec::new().client_mode();
        let mut out = BytesMut::new();
        for message in messages {
            codec.encode(message, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn what_the_connection_refuses() {
        let text = |payload: &str| client_frames(vec![WsMessage::Text(payload.into())]);
        assert_eq!(read_all(&text("4hello"), 5, 64), (vec![], Some(CloseCode::Size)));
        // Unmasked: only a server may send that.
        assert_eq!(read_all(b"\x81\x014", 64, 64), (vec![], Some(CloseCode::Protocol)));
        // Text that is not UTF-8, masked with a zero key.
        assert_eq!(read_all(b"\x81\x81\0\0\0\0\xff", 64, 64), (vec![], Some(CloseCode::Invalid)));
        let fragment =
            client_frames(vec![WsMessage::Continuation(actix_http::ws::Item::FirstText("4".into()))]);
        assert_eq!(read_all(&fragment, 64, 64), (vec![], Some(CloseCode::Unsupported)));
    }

    /// A client message, and what the reader makes of it.
    #[derive(Debug, Clone)]
    enum Sent {
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close,
    }

    impl Sent {
        fn frames(self) -> (WsMessage, Inbound) {
            match self {
                Sent::Text(s) => (WsMessage::Text(s.as_str().into()), Inbound::Text(s.into())),
                Sent::Binary(b) => (WsMessage::Binary(b.clone().into()), Inbound::Binary(b.into())),
                Sent::Ping(b) => (WsMessage::Ping(b.clone().into()), Inbound::Ping(b.into())),
                Sent::Pong(b) => (WsMessage::Pong(b.into()), Inbound::Pong),
                Sent::Close => (WsMessage::Close(None), Inbound::Close),
            }
        }
    }

    fn sent() -> impl Strategy<Value = Sent> {
        let bytes = proptest::collection::vec(any::<u8>(), 0..300);
        // Control frames carry at most 125 bytes.
        let control = proptest::collection::vec(any::<u8>(), 0..=125);
        prop_oneof![
            any::<String>().prop_map(Sent::Text),
            bytes.prop_map(Sent::Binary),
            control.clone().prop_map(Sent::Ping),
            control.prop_map(Sent::Pong),
            Just(Sent::Close),
        ]
    }

    proptest! {
        #[test]
        fn client_frames_are_read_back(messages in proptest::collection::vec(sent(), 0..6), cut in 1usize..40) {
            let (sent, expected): (Vec<_>, Vec<_>) = messages.into_iter().map(Sent::frames).unzip();
            prop_assert_eq!(read_all(&client_frames(sent), 1 << 16, cut), (expected, None));
        }

        #[test]
        fn any_bytes_are_read_the_same_however_they_arrive(
            stream in proptest::collection::vec(any::<u8>(), 0..200),
            max_size in 0usize..300,
            cut in 1usize..40,
        ) {
            let whole = read_all(&stream, max_size, stream.len().max(1));
            for frame in &whole.0 {
                if let Inbound::Text(text) = frame {
                    prop_assert!(text.len() <= max_size);
                }
                if let Inbound::Binary(bytes) | Inbound::Ping(bytes) = frame {
                    prop_assert!(bytes.len() <= max_size);
                }
            }
            prop_assert_eq!(read_all(&stream, max_size, cut), whole);
        }
    }
}
