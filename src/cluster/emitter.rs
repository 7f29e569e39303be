//! Decodes the broadcasts that `@socket.io/redis-emitter` (5.x) and
//! `@socket.io/redis-adapter` (8.x) servers publish on Redis, into a frame
//! ready to push to this node's sockets. Pure: no Redis I/O here.
//!
//! # The format (read from both packages' sources, checked by the fixtures)
//!
//! Channels, with `key` defaulting to [`DEFAULT_KEY`] (`socket.io`):
//! - `<key>#<nsp>#` for a broadcast to everyone or to several rooms;
//! - `<key>#<nsp>#<room>#` for a broadcast to exactly one room;
//! - `<key>-request#<nsp>#` for requests (socketsJoin, socketsLeave,
//!   disconnectSockets, serverSideEmit, and the adapter's fetchSockets,
//!   broadcasts with acks, …). The emitter sends these as JSON, the adapter
//!   some as msgpack. [`decode`] names them in
//!   [`EmitterError::UnsupportedRequest`] and does nothing else with them.
//!
//! A broadcast's payload is msgpack (notepack.io) of
//! `[uid, {type, data, nsp}, {rooms, except, flags}]`: `uid` is `"emitter"`
//! for the emitter and a random id per adapter; `type` is 2 (EVENT; 5,
//! BINARY_EVENT, is taken too); `data` is `[event name, ...args]`; `nsp`
//! starts with `/` (missing means `/`, as in the adapter); `rooms` and
//! `except` are lists of room names; `flags` may hold `volatile` and
//! `compress`. Buffers travel as msgpack `bin` and Dates as the msgpack
//! timestamp extension (-1).
//!
//! # What is honoured
//! - `nsp`, `rooms`, `except` and `flags.volatile` are returned; the caller
//!   delivers to sockets in any of `rooms` (every socket if empty) and in
//!   none of `except`. The adapter's `except` may hold socket ids (each
//!   socket's own room), e.g. from `socket.broadcast.emit`.
//! - `uid` is returned so the caller can skip its own messages, as the
//!   adapter does. A namespace other than `/` is not an error either: the
//!   adapter ignores packets for namespaces it does not serve, and so
//!   should the caller.
//! - The args become JSON as a Node Socket.IO server would write them:
//!   `bin` → a binary attachment (the frame is then a BINARY_EVENT), a
//!   timestamp → its ISO 8601 text (`Date.toJSON`), NaN and ±Infinity →
//!   `null`, integral floats → integers, integer map keys → their decimal
//!   text. Other extension types and other map keys are refused.
//!
//! # What is ignored, and why
//! - `flags.compress`: this server never compresses (no permessage-deflate).
//! - Other flags (`local`, `broadcast`, `timeout`): `local` broadcasts are
//!   never published, and acks go through the request channel.
//! - A packet `id`: acks are not forwarded across nodes.
//!
//! # Bounds
//! A payload over the caller's limit ([`MAX_PAYLOAD`] by default) is refused
//! before it is read; containers nested deeper than [`MAX_DEPTH`] (counted
//! from the payload's root, the envelope itself takes 3) are refused; more
//! than [`MAX_ATTACHMENTS`] buffers are refused (the client's parser would
//! drop the connection). Declared lengths are never preallocated, so what is
//! built stays proportional to the payload. The channel must be exactly the
//! one the publisher would have chosen for the payload's namespace and rooms.
//! (The msgpack reader, rmpv, reads the never-used marker 0xc1 as nil.)

use std::collections::HashSet;
use std::sync::Arc;

use actix_socketio::engineio::SharedMessage;
use actix_socketio::protocol::socket::{MAX_ATTACHMENTS, Packet, PacketKind, RESERVED_EVENTS, placeholder};
use actix_socketio::socketio::encode_shared;
use bytes::Bytes;
use chrono::{DateTime, Datelike};
use rmpv::ValueRef;
use serde_json::{Map, Number, Value};

/// The emitter's and the adapter's default channel prefix.
pub const DEFAULT_KEY: &str = "socket.io";
/// The default bound on a payload's size, in bytes.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// The deepest nesting of msgpack arrays and maps accepted.
pub const MAX_DEPTH: usize = 32;

/// rmpv spends about two units of its depth budget per container and three
/// on a leaf; this lets it read one level past [`MAX_DEPTH`], so that the
/// conversion below is what refuses, and still bounds its recursion.
const RMPV_DEPTH: usize = 2 * (MAX_DEPTH + 1) + 3;
/// Containers around an argument: the envelope, the packet, `data`.
const ARGS_DEPTH: usize = 3;

/// One broadcast, ready to deliver.
#[derive(Debug, Clone)]
pub struct EmitterBroadcast {
    /// The publisher: `"emitter"` for the emitter, the adapter's random id.
    pub uid: String,
    /// Starts with `/`.
    pub namespace: String,
    /// Deliver to sockets in any of these rooms; to every socket if empty.
    /// Without duplicates, in the publisher's order.
    pub rooms: Vec<String>,
    /// Deliver to no socket in any of these rooms.
    pub except: Vec<String>,
    /// The event may be dropped for a socket that cannot take it now.
    pub volatile: bool,
    /// The EVENT (BINARY_EVENT with attachments) in `namespace`, encoded once.
    pub frame: Arc<SharedMessage>,
}

/// What a request on `<key>-request#<nsp>#` asks for: the adapter's
/// `RequestType`, named after the API that sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// 0: `allSockets()` (adapter).
    Sockets,
    /// 1: `allRooms()` (adapter).
    AllRooms,
    /// 2: `socketsJoin(rooms)`.
    SocketsJoin,
    /// 3: `socketsLeave(rooms)`.
    SocketsLeave,
    /// 4: `disconnectSockets(close)`.
    DisconnectSockets,
    /// 5: `fetchSockets()` (adapter).
    FetchSockets,
    /// 6: `serverSideEmit(...args)`.
    ServerSideEmit,
    /// 7: a broadcast that expects acks (adapter, `timeout(…).emit`).
    BroadcastWithAck,
    /// 8 and 9: the answers to a broadcast with acks.
    BroadcastClientCount,
    BroadcastAck,
    /// Any other type number.
    Other(i64),
}

impl RequestKind {
    fn from_type(n: i64) -> Self {
        match n {
            0 => RequestKind::Sockets,
            1 => RequestKind::AllRooms,
            2 => RequestKind::SocketsJoin,
            3 => RequestKind::SocketsLeave,
            4 => RequestKind::DisconnectSockets,
            5 => RequestKind::FetchSockets,
            6 => RequestKind::ServerSideEmit,
            7 => RequestKind::BroadcastWithAck,
            8 => RequestKind::BroadcastClientCount,
            9 => RequestKind::BroadcastAck,
            n => RequestKind::Other(n),
        }
    }
}

impl std::fmt::Display for RequestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            RequestKind::Sockets => "allSockets",
            RequestKind::AllRooms => "allRooms",
            RequestKind::SocketsJoin => "socketsJoin",
            RequestKind::SocketsLeave => "socketsLeave",
            RequestKind::DisconnectSockets => "disconnectSockets",
            RequestKind::FetchSockets => "fetchSockets",
            RequestKind::ServerSideEmit => "serverSideEmit",
            RequestKind::BroadcastWithAck => "broadcast with acks",
            RequestKind::BroadcastClientCount => "broadcast client count",
            RequestKind::BroadcastAck => "broadcast ack",
            RequestKind::Other(n) => return write!(f, "request type {n}"),
        };
        f.write_str(name)
    }
}

/// Why a message was not turned into a broadcast.
#[derive(Debug, thiserror::Error)]
pub enum EmitterError {
    /// Another key, a response channel, or not an emitter channel at all.
    #[error("{channel:?} is not a broadcast channel for key {key:?}")]
    NotBroadcastChannel { channel: String, key: String },
    /// A request (e.g. socketsJoin) rather than a broadcast.
    #[error("{0} requests are not supported")]
    UnsupportedRequest(RequestKind),
    #[error("payload of {size} bytes is over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    /// Not msgpack (or, for a request, not JSON): truncated, trailing bytes,
    /// a string that is not UTF-8.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// Well-formed msgpack, but not `[uid, packet, opts]` as described above.
    #[error("not an emitter broadcast: {0}")]
    InvalidBroadcast(&'static str),
    /// A packet type other than EVENT or BINARY_EVENT.
    #[error("packet type {0} is not an EVENT")]
    NotAnEvent(i64),
    #[error("reserved event name {0:?}")]
    ReservedEventName(String),
    #[error("unsupported msgpack extension type {0}")]
    UnsupportedExtension(i8),
    #[error("more than {MAX_ATTACHMENTS} binary arguments")]
    TooManyAttachments,
    /// The channel is not the one the publisher uses for this payload.
    #[error("channel {channel:?} does not match the payload, which belongs on {expected:?}")]
    ChannelMismatch { channel: String, expected: String },
}

/// [`decode_with_limit`] with [`MAX_PAYLOAD`].
pub fn decode(channel: &str, payload: &[u8], key: &str) -> Result<EmitterBroadcast, EmitterError> {
    decode_with_limit(channel, payload, key, MAX_PAYLOAD)
}

/// Decodes one message published on `channel` for `key`.
pub fn decode_with_limit(
    channel: &str,
    payload: &[u8],
    key: &str,
    max_payload: usize,
) -> Result<EmitterBroadcast, EmitterError> {
    let after_key = channel.strip_prefix(key).filter(|_| channel.ends_with('#'));
    let is_broadcast = after_key.is_some_and(|rest| rest.starts_with('#'));
    let is_request = after_key.is_some_and(|rest| rest.starts_with("-request#"));
    if !is_broadcast && !is_request {
        return Err(EmitterError::NotBroadcastChannel { channel: channel.to_owned(), key: key.to_owned() });
    }
    if payload.len() > max_payload {
        return Err(EmitterError::TooLarge { size: payload.len(), limit: max_payload });
    }
    if is_request {
        return Err(EmitterError::UnsupportedRequest(request_kind(payload)?));
    }

    let broadcast = broadcast(&read_msgpack(payload)?)?;
    let expected = broadcast_channel(key, &broadcast.namespace, &broadcast.rooms);
    if channel != expected {
        return Err(EmitterError::ChannelMismatch { channel: channel.to_owned(), expected });
    }
    Ok(broadcast)
}

/// The channel a broadcast to `rooms` in `namespace` is published on.
pub fn broadcast_channel(key: &str, namespace: &str, rooms: &[String]) -> String {
    match rooms {
        [room] => format!("{key}#{namespace}#{room}#"),
        _ => format!("{key}#{namespace}#"),
    }
}

/// The PSUBSCRIBE pattern for every broadcast in `namespace`, as the
/// adapter subscribes (`<key>#<nsp>#*`), with Redis glob characters in
/// `key` and `namespace` escaped.
pub fn broadcast_pattern(key: &str, namespace: &str) -> String {
    let mut pattern = String::with_capacity(key.len() + namespace.len() + 3);
    for c in key.chars().chain(std::iter::once('#')).chain(namespace.chars()) {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push_str("#*");
    pattern
}

fn read_msgpack(payload: &[u8]) -> Result<ValueRef<'_>, EmitterError> {
    let mut rest = payload;
    let value = rmpv::decode::read_value_ref_with_max_depth(&mut rest, RMPV_DEPTH).map_err(|e| match e {
        rmpv::decode::Error::DepthLimitExceeded => EmitterError::TooDeep,
        e => EmitterError::Malformed(e.to_string()),
    })?;
    if !rest.is_empty() {
        return Err(EmitterError::Malformed(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}

/// The `type` of a request: JSON when it starts with `{` (as the adapter
/// decides), msgpack otherwise.
fn request_kind(payload: &[u8]) -> Result<RequestKind, EmitterError> {
    #[derive(serde::Deserialize)]
    struct Request {
        #[serde(rename = "type")]
        kind: Option<i64>,
    }
    let kind = if payload.first() == Some(&b'{') {
        serde_json::from_slice::<Request>(payload)
            .map_err(|e| EmitterError::Malformed(format!("request is not JSON: {e}")))?
            .kind
    } else {
        match read_msgpack(payload)? {
            ValueRef::Map(entries) => field(&entries, "type").and_then(as_i64),
            _ => None,
        }
    };
    kind.map(RequestKind::from_type).ok_or(EmitterError::InvalidBroadcast("request without a numeric type"))
}

fn broadcast(root: &ValueRef<'_>) -> Result<EmitterBroadcast, EmitterError> {
    let invalid = EmitterError::InvalidBroadcast;
    let ValueRef::Array(envelope) = root else { return Err(invalid("not an array [uid, packet, opts]")) };
    let [uid, packet, opts, ..] = envelope.as_slice() else {
        return Err(invalid("not an array [uid, packet, opts]"));
    };
    let uid = as_str(uid)?.ok_or(invalid("uid is not a string"))?;
    let ValueRef::Map(packet) = packet else { return Err(invalid("packet is not a map")) };
    let ValueRef::Map(opts) = opts else { return Err(invalid("opts is not a map")) };

    let kind = field(packet, "type").and_then(as_i64).ok_or(invalid("packet.type is not an integer"))?;
    if !matches!(kind, 2 | 5) {
        return Err(EmitterError::NotAnEvent(kind));
    }
    let namespace = match field(packet, "nsp") {
        None => "/",
        Some(nsp) => as_str(nsp)?.ok_or(invalid("packet.nsp is not a string"))?,
    };
    if !namespace.starts_with('/') || namespace.contains(',') {
        return Err(invalid("packet.nsp does not start with '/' or contains ','"));
    }
    let Some(ValueRef::Array(data)) = field(packet, "data") else {
        return Err(invalid("packet.data is not an array"));
    };

    let mut items = Vec::with_capacity(data.len());
    let mut attachments = Vec::new();
    match data.first() {
        Some(name @ ValueRef::String(_)) => {
            let name = as_str(name)?.unwrap_or_default();
            if RESERVED_EVENTS.contains(&name) {
                return Err(EmitterError::ReservedEventName(name.to_owned()));
            }
            items.push(Value::String(name.to_owned()));
        }
        // Numeric names are valid Socket.IO; the codec accepts them too.
        Some(name @ ValueRef::Integer(_)) => items.push(json(name, ARGS_DEPTH, &mut attachments)?),
        _ => return Err(invalid("packet.data does not start with an event name")),
    }
    for arg in &data[1..] {
        items.push(json(arg, ARGS_DEPTH, &mut attachments)?);
    }

    let packet = Packet {
        kind: if attachments.is_empty() { PacketKind::Event } else { PacketKind::BinaryEvent },
        namespace: namespace.to_owned(),
        ack_id: None,
        data: Some(Value::Array(items)),
        attachments,
    };
    let flags = match field(opts, "flags") {
        Some(ValueRef::Map(flags)) => flags.as_slice(),
        None | Some(ValueRef::Nil) => &[],
        Some(_) => return Err(invalid("opts.flags is not a map")),
    };
    Ok(EmitterBroadcast {
        uid: uid.to_owned(),
        namespace: packet.namespace.clone(),
        rooms: rooms(field(opts, "rooms"))?,
        except: rooms(field(opts, "except"))?,
        volatile: matches!(field(flags, "volatile"), Some(ValueRef::Boolean(true))),
        frame: encode_shared(&packet),
    })
}

/// The value of the last entry named `name` (JavaScript objects keep the
/// last of duplicate keys).
fn field<'v, 'a>(entries: &'v [(ValueRef<'a>, ValueRef<'a>)], name: &str) -> Option<&'v ValueRef<'a>> {
    entries
        .iter()
        .rev()
        .find(|(key, _)| matches!(key, ValueRef::String(s) if s.as_str() == Some(name)))
        .map(|(_, v)| v)
}

fn as_i64(value: &ValueRef<'_>) -> Option<i64> {
    match value {
        ValueRef::Integer(n) => n.as_i64(),
        _ => None,
    }
}

/// `Ok(None)` if not a string; an error if a string that is not UTF-8.
fn as_str<'v>(value: &'v ValueRef<'_>) -> Result<Option<&'v str>, EmitterError> {
    match value {
        ValueRef::String(s) => {
            s.as_str().map(Some).ok_or_else(|| EmitterError::Malformed("a string is not UTF-8".to_owned()))
        }
        _ => Ok(None),
    }
}

/// A room list: strings, or integers (rooms are object keys in JavaScript).
/// Missing means none.
fn rooms(value: Option<&ValueRef<'_>>) -> Result<Vec<String>, EmitterError> {
    let items = match value {
        None | Some(ValueRef::Nil) => return Ok(Vec::new()),
        Some(ValueRef::Array(items)) => items,
        Some(_) => return Err(EmitterError::InvalidBroadcast("opts.rooms or opts.except is not an array")),
    };
    let mut rooms = Vec::with_capacity(items.len());
    let mut seen = HashSet::with_capacity(items.len());
    for item in items {
        let room = key_text(item)?.ok_or(EmitterError::InvalidBroadcast("a room is not a string"))?;
        if seen.insert(room.clone()) {
            rooms.push(room);
        }
    }
    Ok(rooms)
}

/// A map key or room as JavaScript would name it: strings as they are,
/// integers in decimal.
fn key_text(value: &ValueRef<'_>) -> Result<Option<String>, EmitterError> {
    Ok(match value {
        ValueRef::Integer(n) => Some(n.to_string()),
        other => as_str(other)?.map(str::to_owned),
    })
}

/// One argument as JSON; `depth` counts the containers around `value`.
/// Buffers become placeholders numbered in depth-first order, as
/// socket.io-parser numbers them.
fn json(value: &ValueRef<'_>, depth: usize, attachments: &mut Vec<Bytes>) -> Result<Value, EmitterError> {
    let depth = match value {
        ValueRef::Array(_) | ValueRef::Map(_) if depth >= MAX_DEPTH => return Err(EmitterError::TooDeep),
        _ => depth + 1,
    };
    Ok(match value {
        ValueRef::Nil => Value::Null,
        ValueRef::Boolean(b) => Value::Bool(*b),
        ValueRef::Integer(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::from(u),
            (None, Some(i)) => Value::from(i),
            (None, None) => Value::Null, // rmpv integers are always one of the two
        },
        ValueRef::F32(f) => number(f64::from(*f)),
        ValueRef::F64(f) => number(*f),
        ValueRef::String(_) => Value::String(as_str(value)?.unwrap_or_default().to_owned()),
        ValueRef::Binary(bytes) => {
            if attachments.len() == MAX_ATTACHMENTS {
                return Err(EmitterError::TooManyAttachments);
            }
            attachments.push(Bytes::copy_from_slice(bytes));
            placeholder(attachments.len() - 1)
        }
        ValueRef::Ext(-1, data) => timestamp(data)?,
        ValueRef::Ext(kind, _) => return Err(EmitterError::UnsupportedExtension(*kind)),
        ValueRef::Array(items) => {
            Value::Array(items.iter().map(|item| json(item, depth, attachments)).collect::<Result<_, _>>()?)
        }
        ValueRef::Map(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let key =
                    key_text(key)?.ok_or(EmitterError::InvalidBroadcast("a map key is not a string"))?;
                map.insert(key, json(value, depth, attachments)?);
            }
            Value::Object(map)
        }
    })
}

/// A JavaScript number as `JSON.stringify` writes it: integral values
/// without a fraction, NaN and the infinities as `null`.
fn number(f: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if f.fract() == 0.0 && f.abs() < EXACT {
        // In range and integral, so the cast is exact (-0 becomes 0, as in JSON.stringify).
        return Value::from(f as i64);
    }
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// The msgpack timestamp extension as notepack.io decodes it (a `Date`,
/// whole milliseconds) and `Date.toJSON` writes it.
fn timestamp(data: &[u8]) -> Result<Value, EmitterError> {
    let (secs, nanos) = match *data {
        [a, b, c, d] => (i64::from(u32::from_be_bytes([a, b, c, d])), 0),
        [a, b, c, d, e, f, g, h] => {
            let v = u64::from_be_bytes([a, b, c, d, e, f, g, h]);
            // 30 bits of nanoseconds, 34 of seconds: both fit.
            ((v & 0x3_ffff_ffff) as i64, (v >> 34) as u32)
        }
        [a, b, c, d, e, f, g, h, i, j, k, l] => {
            (i64::from_be_bytes([e, f, g, h, i, j, k, l]), u32::from_be_bytes([a, b, c, d]))
        }
        _ => return Err(EmitterError::Malformed(format!("timestamp of {} bytes", data.len()))),
    };
    // JavaScript's arithmetic: `new Date(s * 1e3 + ns / 1e6)` truncates.
    let millis = (secs as f64 * 1e3 + f64::from(nanos) / 1e6).trunc();
    if millis.abs() > 8.64e15 {
        return Ok(Value::Null); // an invalid Date, which toJSON writes as null
    }
    let time = DateTime::from_timestamp_millis(millis as i64)
        .ok_or(EmitterError::InvalidBroadcast("timestamp out of range"))?;
    let year = match time.year() {
        y @ 0..=9999 => format!("{y:04}"),
        y if y < 0 => format!("-{:06}", -y),
        y => format!("+{y:06}"),
    };
    Ok(Value::String(format!("{year}-{}", time.format("%m-%dT%H:%M:%S%.3fZ"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rmpv::Value as Mp;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/emitter");

    /// A fixture's channel and payload, as tests/js/emitter_fixtures.mjs
    /// recorded them from the real emitter.
    fn fixture(name: &str) -> (String, Vec<u8>) {
        let text = std::fs::read_to_string(format!("{FIXTURES}/{name}.json")).expect(name);
        let json: Value = serde_json::from_str(&text).expect(name);
        let channel = json["channel"].as_str().expect(name).to_owned();
        (channel, hex::decode(json["payloadHex"].as_str().expect(name)).expect(name))
    }

    fn decode_fixture(name: &str) -> Result<EmitterBroadcast, EmitterError> {
        let (channel, payload) = fixture(name);
        decode(&channel, &payload, DEFAULT_KEY)
    }

    struct Expected {
        name: &'static str,
        uid: &'static str,
        namespace: &'static str,
        rooms: &'static [&'static str],
        except: &'static [&'static str],
        volatile: bool,
        /// The Engine.IO text, as a Node Socket.IO server sends it.
        text: &'static str,
        binaries: &'static [&'static [u8]],
    }

    const BASE: Expected = Expected {
        name: "",
        uid: "emitter",
        namespace: "/",
        rooms: &[],
        except: &[],
        volatile: false,
        text: "",
        binaries: &[],
    };

    // The texts are what socket.io-parser 4.2 encodes for the packet that
    // notepack.io decodes from each fixture (checked once by hand with
    // node), i.e. what a Node Socket.IO node would push.
    const BROADCASTS: &[Expected] = &[
        Expected { name: "plain_object", text: r#"42["issue:alert",{"a":1}]"#, ..BASE },
        Expected {
            name: "one_room",
            rooms: &["room:issue:iss_1"],
            text: r#"42["issue:alert",{"issueId":"iss_1","level":"high"}]"#,
            ..BASE
        },
        Expected {
            name: "two_rooms",
            rooms: &["room:issue:a", "room:issue:b"],
            text: r#"42["issue:alert",1]"#,
            ..BASE
        },
        Expected {
            name: "to_and_except",
            rooms: &["room:city:x"],
            except: &["room:issue:a", "room:issue:b"],
            text: r#"42["issue:alert"]"#,
            ..BASE
        },
        Expected { name: "except_only", except: &["room:issue:a"], text: r#"42["issue:alert","x"]"#, ..BASE },
        Expected {
            name: "volatile",
            volatile: true,
            text: r#"42["user:typing",{"userId":"usr_1"}]"#,
            ..BASE
        },
        Expected { name: "compress_false", text: r#"42["issue:alert",true]"#, ..BASE },
        Expected {
            name: "admin_namespace",
            namespace: "/admin",
            rooms: &["ops"],
            text: r#"42/admin,["audit",{"n":1}]"#,
            ..BASE
        },
        Expected {
            name: "namespace_without_slash",
            namespace: "/admin",
            text: r#"42/admin,["audit"]"#,
            ..BASE
        },
        Expected {
            name: "buffer_arg",
            text: r#"451-["file",{"_placeholder":true,"num":0}]"#,
            binaries: &[&[0, 1, 2, 255]],
            ..BASE
        },
        Expected {
            name: "nested_binary",
            text: r#"453-["files",{"name":"a.png","data":{"_placeholder":true,"num":0}},[{"_placeholder":true,"num":1},{"_placeholder":true,"num":2}],"tail"]"#,
            binaries: &[b"png", &[7], &[]],
            ..BASE
        },
        Expected {
            name: "several_args",
            text: r#"42["multi",1,"two",[3],{"four":4},null,true,false,1.5,-7,-200,1099511627776,-1099511627776,null,null,null]"#,
            ..BASE
        },
        Expected {
            name: "unicode",
            rooms: &["room:issue:ü"],
            text: r#"42["ünïcødé",{"text":"Straße 🚧 日本語","ключ":"\"quoted\"\n\u0001"}]"#,
            ..BASE
        },
        Expected {
            name: "date",
            text: r#"42["dated",{"at":"2024-01-02T03:04:05.678Z"},"1970-01-01T00:00:00.000Z"]"#,
            ..BASE
        },
        Expected {
            name: "adapter_rooms_except",
            uid: "srv001",
            rooms: &["a", "b"],
            except: &["c"],
            text: r#"42["srv",{"b":2}]"#,
            ..BASE
        },
        Expected {
            name: "adapter_volatile_room_binary",
            uid: "srv001",
            rooms: &["room:issue:1"],
            volatile: true,
            text: r#"451-["srv",{"_placeholder":true,"num":0}]"#,
            binaries: &[b"hi"],
            ..BASE
        },
    ];

    const REQUESTS: &[(&str, RequestKind)] = &[
        ("request_sockets_join", RequestKind::SocketsJoin),
        ("request_sockets_leave", RequestKind::SocketsLeave),
        ("request_disconnect_sockets", RequestKind::DisconnectSockets),
        ("request_server_side_emit", RequestKind::ServerSideEmit),
    ];

    /// Checked on their own below.
    const OTHERS: &[&str] = &["custom_key", "large_containers"];

    fn binaries(broadcast: &EmitterBroadcast) -> Vec<&[u8]> {
        broadcast.frame.binaries.iter().map(|b| &b[..]).collect()
    }

    #[test]
    fn every_broadcast_fixture_decodes_to_what_a_node_server_would_send() {
        for e in BROADCASTS {
            let b = decode_fixture(e.name).unwrap_or_else(|err| panic!("{}: {err}", e.name));
            assert_eq!(b.uid, e.uid, "{}", e.name);
            assert_eq!(b.namespace, e.namespace, "{}", e.name);
            assert_eq!(b.rooms, e.rooms, "{}", e.name);
            assert_eq!(b.except, e.except, "{}", e.name);
            assert_eq!(b.volatile, e.volatile, "{}", e.name);
            assert_eq!(&*b.frame.text, e.text, "{}", e.name);
            assert_eq!(binaries(&b), e.binaries, "{}", e.name);
        }
    }

    #[test]
    fn requests_are_refused_by_name() {
        for &(name, kind) in REQUESTS {
            match decode_fixture(name) {
                Err(EmitterError::UnsupportedRequest(k)) => assert_eq!(k, kind, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        let e = decode_fixture("request_sockets_join").unwrap_err();
        assert_eq!(e.to_string(), "socketsJoin requests are not supported");
    }

    #[test]
    fn every_fixture_is_checked() {
        let mut names: Vec<String> = std::fs::read_dir(FIXTURES)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter_map(|file| file.strip_suffix(".json").map(str::to_owned))
            .collect();
        names.sort();
        let mut checked: Vec<&str> = BROADCASTS.iter().map(|e| e.name).collect();
        checked.extend(REQUESTS.iter().map(|(name, _)| *name));
        checked.extend(OTHERS);
        checked.sort();
        assert_eq!(names, checked);
    }

    #[test]
    fn a_custom_key_is_matched_exactly() {
        let (channel, payload) = fixture("custom_key");
        assert_eq!(channel, "civicpulse#/#");
        let b = decode(&channel, &payload, "civicpulse").unwrap();
        assert_eq!(&*b.frame.text, r#"42["issue:alert",null]"#);
        assert!(matches!(
            decode(&channel, &payload, DEFAULT_KEY),
            Err(EmitterError::NotBroadcastChannel { .. })
        ));
        let (channel, payload) = fixture("plain_object");
        assert!(matches!(
            decode(&channel, &payload, "civicpulse"),
            Err(EmitterError::NotBroadcastChannel { .. })
        ));
        assert!(matches!(
            decode(&channel, &payload, "socket"),
            Err(EmitterError::NotBroadcastChannel { .. })
        ));
    }

    #[test]
    fn large_containers_use_the_wide_msgpack_forms() {
        let b = decode_fixture("large_containers").unwrap();
        let numbers: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        let keys: Vec<String> = (0..20).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let text = format!(
            r#"451-["big",[{}],{{{}}},"{}",{{"_placeholder":true,"num":0}}]"#,
            numbers.join(","),
            keys.join(","),
            "x".repeat(300)
        );
        assert_eq!(&*b.frame.text, text);
        assert_eq!(binaries(&b), [&[0xab; 300][..]]);
    }

    #[test]
    fn other_channels_are_not_broadcasts() {
        let (_, payload) = fixture("plain_object");
        for channel in
            ["socket.io-response#/#", "socket.io#/", "socket.io", "other#/#", "", "#/#", "socket.io/#"]
        {
            assert!(
                matches!(
                    decode(channel, &payload, DEFAULT_KEY),
                    Err(EmitterError::NotBroadcastChannel { .. })
                ),
                "{channel}"
            );
        }
    }

    #[test]
    fn the_channel_must_be_the_one_the_publisher_uses() {
        for (name, channel) in [
            ("one_room", "socket.io#/#"),
            ("one_room", "socket.io#/#room:issue:other#"),
            ("plain_object", "socket.io#/#room:issue:1#"),
            ("two_rooms", "socket.io#/#room:issue:a#"),
            ("admin_namespace", "socket.io#/#ops#"),
            ("admin_namespace", "socket.io#/admin#"),
        ] {
            let (_, payload) = fixture(name);
            match decode(channel, &payload, DEFAULT_KEY) {
                Err(EmitterError::ChannelMismatch { channel: c, .. }) => assert_eq!(c, channel),
                other => panic!("{name} on {channel}: {other:?}"),
            }
        }
    }

    // --- Hostile and odd inputs, built with rmpv ---

    fn pack(value: &Mp) -> Vec<u8> {
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, value).unwrap();
        buf
    }

    fn map(entries: Vec<(&str, Mp)>) -> Mp {
        Mp::Map(entries.into_iter().map(|(k, v)| (Mp::from(k), v)).collect())
    }

    fn envelope(packet: Mp, opts: Mp) -> Vec<u8> {
        pack(&Mp::Array(vec![Mp::from("emitter"), packet, opts]))
    }

    fn no_opts() -> Mp {
        map(vec![("rooms", Mp::Array(vec![])), ("except", Mp::Array(vec![])), ("flags", map(vec![]))])
    }

    /// An EVENT in `/` with `data` as given.
    fn with_data(data: Vec<Mp>) -> Vec<u8> {
        envelope(
            map(vec![("type", Mp::from(2)), ("data", Mp::Array(data)), ("nsp", Mp::from("/"))]),
            no_opts(),
        )
    }

    fn event(args: Vec<Mp>) -> Vec<u8> {
        let mut data = vec![Mp::from("ev")];
        data.extend(args);
        with_data(data)
    }

    fn on_root(payload: &[u8]) -> Result<EmitterBroadcast, EmitterError> {
        decode("socket.io#/#", payload, DEFAULT_KEY)
    }

    fn text(payload: &[u8]) -> String {
        match on_root(payload) {
            Ok(b) => b.frame.text.to_string(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn truncated_payloads_are_malformed() {
        for e in BROADCASTS {
            let (channel, payload) = fixture(e.name);
            for len in 0..payload.len() {
                match decode(&channel, &payload[..len], DEFAULT_KEY) {
                    Err(EmitterError::Malformed(_)) => {}
                    other => panic!("{} cut at {len}: {other:?}", e.name),
                }
            }
        }
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut payload = event(vec![]);
        payload.push(0xc0);
        assert!(matches!(on_root(&payload), Err(EmitterError::Malformed(m)) if m == "1 trailing bytes"));
    }

    #[test]
    fn declared_lengths_beyond_the_payload_are_malformed_without_allocating() {
        let huge = [0xff, 0xff, 0xff, 0xff];
        for marker in [0xdd, 0xdf, 0xc6, 0xdb, 0xc9] {
            let mut payload = vec![0x93, 0xa7];
            payload.extend(b"emitter");
            payload.push(marker);
            payload.extend(huge);
            assert!(matches!(on_root(&payload), Err(EmitterError::Malformed(_))), "{marker:x}");
        }
    }

    #[test]
    fn payloads_over_the_limit_are_refused_before_reading() {
        let payload = event(vec![Mp::from("x".repeat(100))]);
        assert!(decode_with_limit("socket.io#/#", &payload, DEFAULT_KEY, payload.len()).is_ok());
        match decode_with_limit("socket.io#/#", &payload, DEFAULT_KEY, payload.len() - 1) {
            Err(EmitterError::TooLarge { size, limit }) => {
                assert_eq!((size, limit), (payload.len(), payload.len() - 1))
            }
            other => panic!("{other:?}"),
        }
        // Not msgpack at all, but too large is said first.
        let junk = vec![0xc1; MAX_PAYLOAD + 1];
        assert!(matches!(on_root(&junk), Err(EmitterError::TooLarge { .. })));
        assert!(matches!(
            decode("socket.io-request#/#", &junk, DEFAULT_KEY),
            Err(EmitterError::TooLarge { .. })
        ));
    }

    fn nested(levels: usize, leaf: Mp) -> Mp {
        (0..levels).fold(leaf, |inner, _| Mp::Array(vec![inner]))
    }

    #[test]
    fn nesting_is_bounded() {
        // The envelope, the packet and `data` take three levels.
        let limit = MAX_DEPTH - 3;
        assert_eq!(
            text(&event(vec![nested(limit, Mp::from(1))])),
            format!(r#"42["ev",{}1{}]"#, "[".repeat(limit), "]".repeat(limit))
        );
        assert!(matches!(on_root(&event(vec![nested(limit + 1, Mp::from(1))])), Err(EmitterError::TooDeep)));
        let maps = (0..=limit).fold(Mp::from("leaf"), |inner, _| map(vec![("k", inner)]));
        assert!(matches!(on_root(&event(vec![maps])), Err(EmitterError::TooDeep)));
        // Far deeper than rmpv is allowed to go: refused by the reader.
        let mut deep = vec![0x93, 0xa7];
        deep.extend(b"emitter");
        deep.extend(std::iter::repeat_n(0x91, 100_000));
        deep.push(0xc0);
        assert!(matches!(on_root(&deep), Err(EmitterError::TooDeep)));
    }

    #[test]
    fn at_most_ten_buffers() {
        let ten: Vec<Mp> = (0..10u8).map(|i| Mp::Binary(vec![i])).collect();
        let b = on_root(&event(ten.clone())).unwrap();
        assert!(b.frame.text.starts_with("4510-[\"ev\","));
        assert_eq!(b.frame.binaries.len(), 10);
        let mut eleven = ten;
        eleven.push(Mp::Binary(vec![]));
        assert!(matches!(on_root(&event(eleven)), Err(EmitterError::TooManyAttachments)));
    }

    #[test]
    fn wrong_shapes_are_invalid_broadcasts() {
        let packet = |entries: Vec<(&str, Mp)>| envelope(map(entries), no_opts());
        let data = || Mp::Array(vec![Mp::from("ev")]);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("root is a map", pack(&map(vec![]))),
            ("root too short", pack(&Mp::Array(vec![Mp::from("emitter"), map(vec![])]))),
            ("uid is a number", pack(&Mp::Array(vec![Mp::from(1), map(vec![]), no_opts()]))),
            ("packet is an array", envelope(Mp::Array(vec![]), no_opts())),
            ("opts is nil", envelope(map(vec![("type", Mp::from(2)), ("data", data())]), Mp::Nil)),
            ("no type", packet(vec![("data", data())])),
            ("type is a string", packet(vec![("type", Mp::from("2")), ("data", data())])),
            ("no data", packet(vec![("type", Mp::from(2))])),
            ("data is a map", packet(vec![("type", Mp::from(2)), ("data", map(vec![]))])),
            ("data is empty", with_data(vec![])),
            ("name is nil", with_data(vec![Mp::Nil])),
            ("name is binary", with_data(vec![Mp::Binary(b"ev".to_vec())])),
            ("nsp is a number", packet(vec![("type", Mp::from(2)), ("data", data()), ("nsp", Mp::from(1))])),
            (
                "nsp without slash",
                packet(vec![("type", Mp::from(2)), ("data", data()), ("nsp", Mp::from("admin"))]),
            ),
            (
                "nsp with comma",
                packet(vec![("type", Mp::from(2)), ("data", data()), ("nsp", Mp::from("/a,b"))]),
            ),
            (
                "rooms is a string",
                envelope(
                    map(vec![("type", Mp::from(2)), ("data", data())]),
                    map(vec![("rooms", Mp::from("a"))]),
                ),
            ),
            (
                "a room is a bool",
                envelope(
                    map(vec![("type", Mp::from(2)), ("data", data())]),
                    map(vec![("except", Mp::Array(vec![Mp::Boolean(true)]))]),
                ),
            ),
            (
                "flags is an array",
                envelope(
                    map(vec![("type", Mp::from(2)), ("data", data())]),
                    map(vec![("flags", Mp::Array(vec![]))]),
                ),
            ),
            ("map key is a bool", event(vec![Mp::Map(vec![(Mp::Boolean(true), Mp::Nil)])])),
        ];
        for (what, payload) in cases {
            assert!(
                matches!(on_root(&payload), Err(EmitterError::InvalidBroadcast(_))),
                "{what}: {:?}",
                on_root(&payload)
            );
        }
    }

    #[test]
    fn only_events_are_broadcast() {
        for kind in [0, 1, 3, 4, 6, -1, 99] {
            let payload =
                envelope(map(vec![("type", Mp::from(kind)), ("data", Mp::Array(vec![]))]), no_opts());
            assert!(matches!(on_root(&payload), Err(EmitterError::NotAnEvent(k)) if k == kind), "{kind}");
        }
        // BINARY_EVENT (Socket.IO 2 servers) is taken; the kind follows the args.
        let payload = envelope(
            map(vec![("type", Mp::from(5)), ("data", Mp::Array(vec![Mp::from("ev"), Mp::from(1)]))]),
            no_opts(),
        );
        assert_eq!(text(&payload), r#"42["ev",1]"#);
    }

    #[test]
    fn reserved_and_numeric_event_names() {
        for name in RESERVED_EVENTS {
            match on_root(&with_data(vec![Mp::from(name)])) {
                Err(EmitterError::ReservedEventName(n)) => assert_eq!(n, name),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert_eq!(text(&with_data(vec![Mp::from(7), Mp::from("x")])), r#"42[7,"x"]"#);
    }

    #[test]
    fn lenient_where_the_adapter_is() {
        // No nsp means "/", no rooms/except/flags means none, extra envelope
        // items and packet fields (an ack id) are ignored.
        let packet =
            map(vec![("type", Mp::from(2)), ("data", Mp::Array(vec![Mp::from("ev")])), ("id", Mp::from(4))]);
        let payload = pack(&Mp::Array(vec![Mp::from("x"), packet, map(vec![]), Mp::Nil]));
        let b = on_root(&payload).unwrap();
        assert_eq!((b.namespace.as_str(), &*b.frame.text), ("/", r#"42["ev"]"#));
        assert!(b.rooms.is_empty() && b.except.is_empty() && !b.volatile);
        // Integer rooms are named in decimal (and so is their channel);
        // duplicates collapse; a truthy but non-boolean volatile is not taken.
        let opts = map(vec![
            ("rooms", Mp::Array(vec![Mp::from(7), Mp::from("7")])),
            ("flags", map(vec![("volatile", Mp::from(1))])),
        ]);
        let payload =
            envelope(map(vec![("type", Mp::from(2)), ("data", Mp::Array(vec![Mp::from("ev")]))]), opts);
        let b = decode("socket.io#/#7#", &payload, DEFAULT_KEY).unwrap();
        assert_eq!(b.rooms, ["7"]);
        assert!(!b.volatile);
    }

    #[test]
    fn values_are_written_as_json_stringify_would() {
        let args = vec![
            Mp::F64(-0.0),
            Mp::F64(2.0),
            Mp::F32(0.5),
            Mp::F64(f64::NAN),
            Mp::F64(f64::NEG_INFINITY),
            Mp::from(u64::MAX),
            Mp::from(i64::MIN),
            Mp::Map(vec![
                (Mp::from(1), Mp::from("one")),
                (Mp::from("b"), Mp::Nil),
                (Mp::from("1"), Mp::from("uno")),
            ]),
        ];
        assert_eq!(
            text(&event(args)),
            r#"42["ev",0,2,0.5,null,null,18446744073709551615,-9223372036854775808,{"1":"uno","b":null}]"#
        );
    }

    fn timestamp96(secs: i64, nanos: u32) -> Mp {
        let mut data = nanos.to_be_bytes().to_vec();
        data.extend(secs.to_be_bytes());
        Mp::Ext(-1, data)
    }

    #[test]
    fn timestamps_are_iso_strings_like_date_to_json() {
        let ts64 = |secs: u64, nanos: u64| Mp::Ext(-1, ((nanos << 34) | secs).to_be_bytes().to_vec());
        let args = vec![
            Mp::Ext(-1, 1_700_000_000u32.to_be_bytes().to_vec()),
            ts64(0, 1_900_000),
            timestamp96(-2, 500_000_000),
            timestamp96(253_402_300_800, 0),
            timestamp96(-62_198_755_200, 0),
            timestamp96(8_640_000_000_001, 0),
        ];
        // The same as node's JSON.stringify of the Dates notepack.io decodes.
        assert_eq!(
            text(&event(args)),
            concat!(
                r#"42["ev","2023-11-14T22:13:20.000Z","1970-01-01T00:00:00.001Z","1969-12-31T23:59:58.500Z","#,
                r#""+010000-01-01T00:00:00.000Z","-000001-01-01T00:00:00.000Z",null]"#
            )
        );
        // Beyond what chrono can represent, though JavaScript can.
        assert!(matches!(
            on_root(&event(vec![timestamp96(8_500_000_000_000, 0)])),
            Err(EmitterError::InvalidBroadcast(_))
        ));
        assert!(matches!(on_root(&event(vec![Mp::Ext(-1, vec![0; 5])])), Err(EmitterError::Malformed(_))));
    }

    #[test]
    fn other_extensions_and_bad_utf8_are_refused() {
        for kind in [0, 1, 5, 127, -2] {
            let payload = event(vec![Mp::Ext(kind, vec![1])]);
            assert!(
                matches!(on_root(&payload), Err(EmitterError::UnsupportedExtension(k)) if k == kind),
                "{kind}"
            );
        }
        // An argument whose bytes are not UTF-8.
        let mut payload = event(vec![Mp::from("abc")]);
        let at = payload.windows(4).position(|w| w == b"\xa3abc").unwrap() + 1;
        payload[at] = 0xff;
        assert!(matches!(on_root(&payload), Err(EmitterError::Malformed(_))));
    }

    #[test]
    fn requests_in_msgpack_or_without_a_type() {
        let request = pack(&map(vec![("uid", Mp::from("srv")), ("type", Mp::from(7))]));
        assert!(matches!(
            decode("socket.io-request#/#", &request, DEFAULT_KEY),
            Err(EmitterError::UnsupportedRequest(RequestKind::BroadcastWithAck))
        ));
        assert!(matches!(
            decode("socket.io-request#/admin#", br#"{"type":42}"#, DEFAULT_KEY),
            Err(EmitterError::UnsupportedRequest(RequestKind::Other(42)))
        ));
        assert!(matches!(
            decode("socket.io-request#/#", br#"{"type":"x"}"#, DEFAULT_KEY),
            Err(EmitterError::Malformed(_))
        ));
        assert!(matches!(
            decode("socket.io-request#/#", br#"{"uid":"x"}"#, DEFAULT_KEY),
            Err(EmitterError::InvalidBroadcast(_))
        ));
        assert!(matches!(decode("socket.io-request#/#", b"{", DEFAULT_KEY), Err(EmitterError::Malformed(_))));
    }

    #[test]
    fn channels_and_patterns() {
        assert_eq!(broadcast_channel(DEFAULT_KEY, "/", &[]), "socket.io#/#");
        assert_eq!(broadcast_channel(DEFAULT_KEY, "/", &["r".into()]), "socket.io#/#r#");
        assert_eq!(broadcast_channel(DEFAULT_KEY, "/a", &["r".into(), "s".into()]), "socket.io#/a#");
        assert_eq!(broadcast_pattern(DEFAULT_KEY, "/"), "socket.io#/#*");
        assert_eq!(broadcast_pattern("k*[x]?\\", "/"), r"k\*\[x\]\?\\#/#*");
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = on_root(&bytes);
            let _ = decode("socket.io-request#/#", &bytes, DEFAULT_KEY);
        }

        #[test]
        fn corrupted_fixtures_never_panic(index in 0..BROADCASTS.len(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let (channel, mut payload) = fixture(BROADCASTS[index].name);
            let at = at.index(payload.len());
            payload[at] = byte;
            let _ = decode(&channel, &payload, DEFAULT_KEY);
        }
    }
}
