//! The one in-process Socket.IO client of the app tests: blocking, over a
//! WebSocket (tungstenite), speaking through the project's own codecs
//! (`actix_socketio::protocol::{engine, socket}`).
//!
//! [`SocketClient::connect`] does the Engine.IO handshake and the Socket.IO
//! CONNECT to `/`; reading answers the server's pings. Every event that
//! arrives is queued with its arrival time: [`SocketClient::expect_event`]
//! takes the oldest one of the name asked for and leaves the others queued
//! for later expects, so nothing that arrives in between is lost.
//!
//! The raw pieces (send any frame, read one frame, a tiny receive buffer,
//! not reading at all) are here too, for protocol and backpressure tests.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use actix_socketio::protocol::engine::{self, Packet as EnginePacket, WsMessage};
use actix_socketio::protocol::socket::{self, Decoder, Packet, PacketKind};
use bytes::Bytes;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// How long an expected event, ack or CONNECT reply may take by default.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long to wait to be sure that something does not arrive.
pub const QUIET: Duration = Duration::from_millis(400);

/// How a client connects.
#[derive(Debug, Clone)]
pub struct SocketOptions {
    /// The CONNECT packet's auth object; `Value::Null` sends none.
    pub auth: Value,
    /// Shrinks the kernel receive buffer (SO_RCVBUF) to 4 KiB, so that what
    /// the server queues for a client that does not read is not hidden in
    /// the kernel.
    pub small_receive_buffer: bool,
    /// A label for messages (`alice tab 2`).
    pub label: String,
}

impl SocketOptions {
    pub fn auth(auth: Value) -> Self {
        Self { auth, small_receive_buffer: false, label: "socket".into() }
    }
}

/// One WebSocket frame as [`SocketClient::next_frame`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Text(String),
    Binary(Bytes),
    /// A close frame, EOF or a reset: the connection is over.
    Closed,
    /// Nothing arrived in time.
    TimedOut,
}

/// An event as it arrived.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    /// The first argument (`Value::Null` when there is none).
    pub payload: Value,
    pub args: Vec<Value>,
    pub at: Instant,
}

pub struct SocketClient {
    ws: WebSocket<TcpStream>,
    decoder: Decoder,
    label: String,
    sid: String,
    next_ack_id: u64,
    /// Events not yet taken by an expect, oldest first.
    queue: VecDeque<Event>,
    /// Every event received, for failure messages.
    seen: Vec<Event>,
    acks: HashMap<u64, Vec<Value>>,
    ack_arrivals: Vec<u64>,
    /// Why the connection ended, once it has.
    closed: Option<String>,
    /// The CONNECT reply's object (`{"sid"}`, and `"pid"` with connection
    /// state recovery on).
    reply: Value,
    /// Events that arrived before the CONNECT reply (the first ones
    /// queued): the missed events of a recovered socket.
    before_connect: usize,
}

impl SocketClient {
    /// Connects to the node at `addr`: the Engine.IO handshake, then CONNECT
    /// to `/` with `options.auth`. `Err` carries the CONNECT_ERROR's data
    /// (`{"message": …}`) when the server refuses.
    pub fn connect(addr: SocketAddr, options: SocketOptions) -> Result<Self, Value> {
        let mut client = Self::open(addr, &options.label, options.small_receive_buffer);
        let auth = match options.auth {
            Value::Null => None,
            Value::Object(map) => Some(map),
            other => panic!("{}: auth must be an object or null, not {other}", client.label),
        };
        client.send_packet(&Packet::connect(socket::DEFAULT_NAMESPACE, auth));
        let deadline = Instant::now() + WAIT;
        loop {
            let packet = client
                .read_packet(deadline)
                .unwrap_or_else(|| panic!("{}: no CONNECT reply within {WAIT:?}", client.label));
            match packet.kind {
                PacketKind::Connect => {
                    client.reply = packet.data.clone().unwrap_or(Value::Null);
                    client.before_connect = client.queue.len();
                    client.sid =
                        packet.data.as_ref().and_then(|d| d["sid"].as_str()).unwrap_or("").to_string();
                    assert!(
                        !client.sid.is_empty(),
                        "{}: CONNECT reply without a sid: {packet:?}",
                        client.label
                    );
                    return Ok(client);
                }
                PacketKind::ConnectError => return Err(packet.data.unwrap_or(Value::Null)),
                _ => client.take_packet(packet),
            }
        }
    }

    /// A WebSocket with the Engine.IO handshake done (the OPEN packet read)
    /// and no Socket.IO CONNECT sent: for tests that speak raw frames.
    pub fn open(addr: SocketAddr, label: &str, small_receive_buffer: bool) -> Self {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)
            .expect("a TCP socket");
        if small_receive_buffer {
            socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        }
        socket.connect(&addr.into()).unwrap_or_else(|e| panic!("{label}: connect to {addr}: {e}"));
        let stream: TcpStream = socket.into();
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) =
            tungstenite::client(url, stream).unwrap_or_else(|e| panic!("{label}: WebSocket handshake: {e}"));
        let mut client = Self {
            ws,
            decoder: Decoder::new(),
            label: label.to_string(),
            sid: String::new(),
            next_ack_id: 0,
            queue: VecDeque::new(),
            seen: Vec::new(),
            acks: HashMap::new(),
            ack_arrivals: Vec::new(),
            closed: None,
            reply: Value::Null,
            before_connect: 0,
        };
        match client.next_frame(WAIT) {
            Frame::Text(open) => match engine::decode_text(&open) {
                Ok(EnginePacket::Open(json)) => {
                    let handshake: Value = serde_json::from_str(&json).expect("OPEN handshake JSON");
                    assert!(handshake["sid"].is_string(), "{label}: OPEN without sid: {open}");
                }
                other => panic!("{label}: expected OPEN, got {other:?}"),
            },
            other => panic!("{label}: expected OPEN, got {other:?}"),
        }
        client
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The Socket.IO socket id from the CONNECT reply.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// The CONNECT reply's object.
    pub fn connect_reply(&self) -> &Value {
        &self.reply
    }

    /// How many events arrived before the CONNECT reply.
    pub fn events_before_connect(&self) -> usize {
        self.before_connect
    }

    /// Every event received so far, expected or not, with its arguments,
    /// oldest first.
    pub fn received(&self) -> &[Event] {
        &self.seen
    }

    /// Ends the connection as a network would: the TCP stream shut, no
    /// DISCONNECT, no close frame (the server's reason is "transport
    /// close", after which a client may come back).
    pub fn drop_transport(mut self) {
        let _ = self.ws.get_mut().shutdown(std::net::Shutdown::Both);
    }

    /// Renames the client in failure messages.
    pub fn labelled(mut self, label: &str) -> Self {
        self.label = label.to_string();
        self
    }

    // ---- the domain's room events -------------------------------------------

    /// `join:issue`; asserts the ack is exactly `{ok: true}`.
    #[track_caller]
    pub fn join(&mut self, issue_id: &str) {
        let ack = self.emit("join:issue", json!(issue_id));
        assert_eq!(ack, json!({ "ok": true }), "{} join:issue {issue_id}", self.label);
    }

    /// `leave:issue`; asserts the ack is exactly `{ok: true}`.
    #[track_caller]
    pub fn leave(&mut self, issue_id: &str) {
        let ack = self.emit("leave:issue", json!(issue_id));
        assert_eq!(ack, json!({ "ok": true }), "{} leave:issue {issue_id}", self.label);
    }

    // ---- emitting -------------------------------------------------------------

    /// Emits `event` with one argument and an ack; answers the ack's first
    /// argument.
    #[track_caller]
    pub fn emit(&mut self, event: &str, payload: Value) -> Value {
        self.emit_args(event, vec![payload])
    }

    /// Emits `event` with any arguments (none, several) and an ack; answers
    /// the ack's first argument (null if it has none).
    #[track_caller]
    pub fn emit_args(&mut self, event: &str, args: Vec<Value>) -> Value {
        let id = self.emit_args_later(event, args);
        self.ack(id, WAIT)
    }

    /// Emits with an ack without waiting for it; see [`Self::ack`].
    pub fn emit_later(&mut self, event: &str, payload: Value) -> u64 {
        self.emit_args_later(event, vec![payload])
    }

    fn emit_args_later(&mut self, event: &str, args: Vec<Value>) -> u64 {
        let id = self.next_ack_id;
        self.next_ack_id += 1;
        self.send_packet(&Packet::event(socket::DEFAULT_NAMESPACE, event, args).with_ack_id(id));
        id
    }

    /// Waits for the ack of an [`Self::emit_later`]; answers its first argument.
    #[track_caller]
    pub fn ack(&mut self, id: u64, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some(args) = self.acks.remove(&id) {
                return args.into_iter().next().unwrap_or(Value::Null);
            }
            if !self.pump(deadline) {
                panic!(
                    "{}: no ack {id} within {within:?}{}; {}",
                    self.label,
                    self.closed.as_deref().map(|c| format!(" (closed: {c})")).unwrap_or_default(),
                    self.dump()
                );
            }
        }
    }

    /// Emits `event` with one argument and no ack.
    pub fn emit_no_ack(&mut self, event: &str, payload: Value) {
        self.send_packet(&Packet::event(socket::DEFAULT_NAMESPACE, event, vec![payload]));
    }

    // ---- receiving ------------------------------------------------------------

    /// The oldest not yet expected `name` event's payload, waiting up to
    /// [`WAIT`] for one; panics with everything that did arrive.
    #[track_caller]
    pub fn expect_event(&mut self, name: &str) -> Value {
        self.expect_event_within(name, WAIT)
    }

    #[track_caller]
    pub fn expect_event_within(&mut self, name: &str, within: Duration) -> Value {
        self.expect_event_at(name, within).payload
    }

    /// [`Self::expect_event_within`], with the arrival time and all arguments.
    #[track_caller]
    pub fn expect_event_at(&mut self, name: &str, within: Duration) -> Event {
        self.expect_matching_at(name, |_| true, within)
    }

    /// The oldest not yet expected `name` event whose payload satisfies
    /// `pred` (others stay queued), waiting up to [`WAIT`].
    #[track_caller]
    pub fn expect_matching(&mut self, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.expect_matching_at(name, pred, WAIT).payload
    }

    #[track_caller]
    pub fn expect_matching_at(
        &mut self,
        name: &str,
        pred: impl Fn(&Value) -> bool,
        within: Duration,
    ) -> Event {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.queue.iter().position(|e| e.name == name && pred(&e.payload)) {
                return self.queue.remove(i).expect("a queued event");
            }
            if !self.pump(deadline) {
                panic!(
                    "{}: no matching {name} within {within:?}{}; {}",
                    self.label,
                    self.closed.as_deref().map(|c| format!(" (closed: {c})")).unwrap_or_default(),
                    self.dump()
                );
            }
        }
    }

    /// The ids of the acks received so far, in arrival order.
    pub fn ack_arrivals(&self) -> &[u64] {
        &self.ack_arrivals
    }

    /// Reads for `within`, then asserts that no `name` event is queued
    /// (arrived before or during the wait and not taken by an expect).
    /// `Duration::ZERO` only takes in what has already arrived.
    #[track_caller]
    pub fn expect_no_event(&mut self, name: &str, within: Duration) {
        self.read_for(within);
        let got: Vec<&Value> = self.queue.iter().filter(|e| e.name == name).map(|e| &e.payload).collect();
        assert!(got.is_empty(), "{} must not receive {name}, got {got:?}", self.label);
    }

    /// Reads whatever arrives for `within` into the queue (at least what has
    /// already arrived).
    pub fn read_for(&mut self, within: Duration) {
        let deadline = Instant::now() + within.max(Duration::from_millis(1));
        while self.pump(deadline) {}
    }

    /// The queued (not yet expected) events named `name`, oldest first,
    /// without taking them.
    pub fn queued(&self, name: &str) -> Vec<Value> {
        self.queue.iter().filter(|e| e.name == name).map(|e| e.payload.clone()).collect()
    }

    /// True until the server closed the connection or sent DISCONNECT.
    pub fn is_connected(&self) -> bool {
        self.closed.is_none()
    }

    #[track_caller]
    pub fn assert_connected(&self) {
        assert!(self.closed.is_none(), "{} was disconnected: {:?}", self.label, self.closed);
    }

    /// DISCONNECT, then a close frame; waits for the server's close. What
    /// arrived before stays queued, for expects after the close.
    pub fn close(&mut self) {
        if self.closed.is_none() {
            self.send_packet(&Packet::disconnect(socket::DEFAULT_NAMESPACE));
            let _ = self.ws.close(None);
            let deadline = Instant::now() + WAIT;
            loop {
                match self.next_frame(deadline.saturating_duration_since(Instant::now())) {
                    Frame::Closed => break,
                    Frame::TimedOut if Instant::now() >= deadline => break,
                    Frame::Text(text) => {
                        // An event that was on its way: keep it.
                        if let Ok(EnginePacket::Message(text)) = engine::decode_text(&text)
                            && let Ok(Some(packet)) = self.decoder.feed_text(&text)
                            && packet.kind != PacketKind::Disconnect
                        {
                            self.take_packet(packet);
                        }
                    }
                    _ => {}
                }
            }
            self.closed.get_or_insert_with(|| "closed by the client".into());
        }
    }

    /// Everything received so far, for failure messages.
    pub fn dump(&self) -> String {
        let seen: Vec<(&str, &Value)> = self.seen.iter().map(|e| (e.name.as_str(), &e.payload)).collect();
        format!("{} received {seen:?}", self.label)
    }

    // ---- raw frames ----------------------------------------------------------

    /// Sends one WebSocket frame as it is.
    pub fn send_frame(&mut self, message: Message) {
        if let Err(e) = self.ws.send(message) {
            self.closed.get_or_insert_with(|| format!("send failed: {e}"));
        }
    }

    /// Sends a text frame as it is (`"42[\"x\"]"`, garbage, …).
    pub fn send_text(&mut self, text: &str) {
        self.send_frame(Message::text(text));
    }

    /// Writes the text frame `text` up to `max` times without reading
    /// anything, straight onto the TCP stream; answers how many went out
    /// before a write stalled for `stall` (the server stopped reading, and
    /// the kernel's buffers on both sides are full), or `max`.
    pub fn flood(&mut self, text: &str, max: usize, stall: Duration) -> usize {
        let mut frame = tungstenite::protocol::frame::Frame::message(
            text.as_bytes().to_vec(),
            tungstenite::protocol::frame::coding::OpCode::Data(
                tungstenite::protocol::frame::coding::Data::Text,
            ),
            true,
        );
        // Clients mask their frames (RFC 6455 5.3).
        frame.header_mut().mask = Some(rand_mask());
        let mut bytes = Vec::new();
        frame.format(&mut bytes).expect("encode a frame into memory");
        let stream = self.ws.get_mut();
        stream.set_write_timeout(Some(stall)).expect("write timeout");
        let mut written = 0;
        while written < max {
            match stream.write_all(&bytes) {
                Ok(()) => written += 1,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("{}: write failed after {written} frames: {e}", self.label),
            }
        }
        stream.set_write_timeout(None).expect("write timeout");
        written
    }

    /// Reads one frame, waiting up to `within`. Engine.IO pings are not
    /// answered here (WebSocket-level ones are, by tungstenite).
    pub fn next_frame(&mut self, within: Duration) -> Frame {
        let deadline = Instant::now() + within.max(Duration::from_millis(1));
        loop {
            if self.closed.is_some() {
                return Frame::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Frame::TimedOut;
            }
            self.ws.get_ref().set_read_timeout(Some(deadline - now)).expect("read timeout");
            match self.ws.read() {
                Ok(Message::Text(text)) => return Frame::Text(text.to_string()),
                Ok(Message::Binary(bytes)) => return Frame::Binary(bytes),
                Ok(Message::Close(frame)) => self.closed = Some(format!("close frame {frame:?}")),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return Frame::TimedOut;
                }
                Err(e) => self.closed = Some(e.to_string()),
            }
        }
    }

    /// Sends a Socket.IO packet (and its attachments).
    pub fn send_packet(&mut self, packet: &Packet) {
        for engine_packet in packet.engine_packets() {
            self.send_engine(&engine_packet);
        }
    }

    fn send_engine(&mut self, packet: &EnginePacket) {
        let message = match packet.encode_ws() {
            WsMessage::Text(text) => Message::text(text),
            WsMessage::Binary(bytes) => Message::binary(bytes),
        };
        self.send_frame(message);
    }

    /// Reads until one Socket.IO packet is complete; answers pings. `None`
    /// when the deadline passes or the connection ends.
    fn read_packet(&mut self, deadline: Instant) -> Option<Packet> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let decoded = match self.next_frame(deadline - now) {
                Frame::TimedOut => continue,
                Frame::Closed => return None,
                Frame::Text(text) => match engine::decode_text(&text) {
                    Ok(EnginePacket::Ping) => {
                        self.send_engine(&EnginePacket::Pong);
                        continue;
                    }
                    Ok(EnginePacket::Message(text)) => self.decoder.feed_text(&text),
                    Ok(EnginePacket::Close) => {
                        self.closed = Some("Engine.IO CLOSE".into());
                        return None;
                    }
                    Ok(EnginePacket::Noop) => continue,
                    other => panic!("{}: unexpected Engine.IO packet {other:?}", self.label),
                },
                Frame::Binary(bytes) => self.decoder.feed_binary(bytes),
            };
            match decoded {
                Ok(Some(packet)) => return Some(packet),
                Ok(None) => {}
                Err(e) => panic!("{}: the server sent an undecodable packet: {e}", self.label),
            }
        }
    }

    /// Reads one packet into the queue or the acks; false once the deadline
    /// has passed or the connection is over.
    fn pump(&mut self, deadline: Instant) -> bool {
        match self.read_packet(deadline) {
            Some(packet) => {
                self.take_packet(packet);
                true
            }
            None => false,
        }
    }

    fn take_packet(&mut self, packet: Packet) {
        match packet.kind {
            PacketKind::Event | PacketKind::BinaryEvent => {
                let name = packet.event_name().unwrap_or_default().into_owned();
                let args = packet.args().to_vec();
                let payload = args.first().cloned().unwrap_or(Value::Null);
                let event = Event { name, payload, args, at: Instant::now() };
                self.seen.push(event.clone());
                self.queue.push_back(event);
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                let id = packet.ack_id.unwrap_or_else(|| panic!("{}: an ack without id", self.label));
                self.ack_arrivals.push(id);
                self.acks.insert(id, packet.args().to_vec());
            }
            PacketKind::Disconnect => {
                self.closed = Some("DISCONNECT from the server".into());
            }
            PacketKind::Connect | PacketKind::ConnectError => {
                panic!("{}: unexpected {:?} after CONNECT", self.label, packet.kind)
            }
        }
    }
}

/// Any four bytes will do as a mask; these vary with the clock.
fn rand_mask() -> [u8; 4] {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    nanos.subsec_nanos().to_le_bytes()
}

/// Waits [`QUIET`] once, then takes in what every client has received, so
/// that several clients can be checked for silence without waiting for each.
pub fn settle(clients: &mut [&mut SocketClient]) {
    std::thread::sleep(QUIET);
    for client in clients.iter_mut() {
        client.read_for(Duration::ZERO);
    }
}
