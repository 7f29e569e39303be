//! Engine.IO v4 packets (PROTOCOL.md section 2).
//!
//! A text packet is `<digit><data>`. Over WebSocket each packet is one frame
//! and a binary message is a binary frame with no prefix; over long-polling
//! packets are joined with `\x1e` and a binary message is `b<base64>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::Serialize;

/// Separates the packets of a long-polling payload.
pub const RECORD_SEPARATOR: char = '\x1e';

/// Data of the ping/pong pair that probes a WebSocket during an upgrade.
const PROBE: &str = "probe";

/// Why a packet or payload could not be decoded. Every variant means the
/// session is closed with reason `parse error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("empty packet")]
    EmptyPacket,
    #[error("unknown packet type {0:?}")]
    UnknownType(char),
    #[error("invalid base64 in binary record: {0}")]
    InvalidBase64(#[from] base64::DecodeError),
}

/// One Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `0` + the handshake JSON (see [`Handshake`]).
    Open(String),
    Close,
    Ping,
    /// `2probe`, sent by the client on a WebSocket it wants to upgrade to.
    PingProbe,
    Pong,
    /// `3probe`, the server's answer to [`Packet::PingProbe`].
    PongProbe,
    /// `4` + text, usually a Socket.IO packet.
    Message(String),
    /// A binary message: a raw WebSocket binary frame, `b<base64>` in a payload.
    Binary(Bytes),
    Upgrade,
    Noop,
}

/// One WebSocket message, as the transport writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    Text(String),
    Binary(Bytes),
}

impl Packet {
    /// The text form `<digit><data>`; `None` for [`Packet::Binary`], which
    /// has no text form of its own (its polling form is `b<base64>`, see
    /// [`encode_payload`]).
    pub fn encode_text(&self) -> Option<String> {
        let text = match self {
            Packet::Open(json) => format!("0{json}"),
            Packet::Close => "1".to_owned(),
            Packet::Ping => "2".to_owned(),
            Packet::PingProbe => format!("2{PROBE}"),
            Packet::Pong => "3".to_owned(),
            Packet::PongProbe => format!("3{PROBE}"),
            Packet::Message(text) => format!("4{text}"),
            Packet::Binary(_) => return None,
            Packet::Upgrade => "5".to_owned(),
            Packet::Noop => "6".to_owned(),
        };
        Some(text)
    }

    /// The WebSocket frame carrying this packet.
    pub fn encode_ws(&self) -> WsMessage {
        match self {
            Packet::Binary(bytes) => WsMessage::Binary(bytes.clone()),
            // encode_text is None only for Binary, matched above.
            text => WsMessage::Text(text.encode_text().unwrap_or_default()),
        }
    }

    /// The record of this packet inside a long-polling payload.
    fn encode_record(&self) -> String {
        match self {
            Packet::Binary(bytes) => format!("b{}", BASE64.encode(bytes)),
            text => text.encode_text().unwrap_or_default(),
        }
    }
}

/// Decodes one WebSocket text frame (or one text record of a payload).
///
/// Like the reference parser only the type digit is checked: data after
/// `1`, `5` and `6`, or after `2`/`3` other than `probe`, is ignored.
pub fn decode_text(s: &str) -> Result<Packet, EngineError> {
    let mut chars = s.chars();
    let kind = chars.next().ok_or(EngineError::EmptyPacket)?;
    let data = chars.as_str();
    Ok(match kind {
        '0' => Packet::Open(data.to_owned()),
        '1' => Packet::Close,
        '2' if data == PROBE => Packet::PingProbe,
        '2' => Packet::Ping,
        '3' if data == PROBE => Packet::PongProbe,
        '3' => Packet::Pong,
        '4' => Packet::Message(data.to_owned()),
        '5' => Packet::Upgrade,
        '6' => Packet::Noop,
        other => return Err(EngineError::UnknownType(other)),
    })
}

/// Decodes one WebSocket frame; a binary frame is always a binary message.
pub fn decode_ws(frame: WsMessage) -> Result<Packet, EngineError> {
    match frame {
        WsMessage::Text(text) => decode_text(&text),
        WsMessage::Binary(bytes) => Ok(Packet::Binary(bytes)),
    }
}

/// Decodes a long-polling body: records separated by `\x1e`, each a text
/// packet or `b<base64>`. Any bad record rejects the whole body.
pub fn decode_payload(body: &str) -> Result<Vec<Packet>, EngineError> {
    body.split(RECORD_SEPARATOR)
        .map(|record| match record.strip_prefix('b') {
            Some(b64) => Ok(Packet::Binary(Bytes::from(BASE64.decode(b64)?))),
            None => decode_text(record),
        })
        .collect()
}

/// Encodes packets as one long-polling body. Text data must not contain
/// `\x1e`; Socket.IO JSON never does, since JSON escapes control characters.
pub fn encode_payload(packets: &[Packet]) -> String {
    let records: Vec<String> = packets.iter().map(Packet::encode_record).collect();
    records.join("\x1e")
}

/// The data of the `open` packet. Serializes to exactly the five keys the
/// clients and the conformance suites expect, in this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Handshake {
    pub sid: String,
    /// `["websocket"]` for a polling session, empty for a WebSocket one.
    pub upgrades: Vec<String>,
    #[serde(rename = "pingInterval")]
    pub ping_interval_ms: u64,
    #[serde(rename = "pingTimeout")]
    pub ping_timeout_ms: u64,
    /// The server's maximum HTTP body / WebSocket message size in bytes.
    #[serde(rename = "maxPayload")]
    pub max_payload: u64,
}

impl Handshake {
    /// The handshake JSON, e.g. `{"sid":"…","upgrades":["websocket"],…}`.
    pub fn to_json(&self) -> String {
        // Serializing plain strings and integers cannot fail; the fallback
        // only keeps this function free of panics.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The `open` packet carrying this handshake.
    pub fn open_packet(&self) -> Packet {
        Packet::Open(self.to_json())
    }
}

/// Refusals of bad HTTP requests to the Engine.IO endpoint (PROTOCOL.md 2.9),
/// answered with `Content-Type: application/json` and [`HttpError::body`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    TransportUnknown,
    SessionIdUnknown,
    BadHandshakeMethod,
    BadRequest,
    UnsupportedProtocolVersion,
}

impl HttpError {
    pub fn code(self) -> u8 {
        match self {
            HttpError::TransportUnknown => 0,
            HttpError::SessionIdUnknown => 1,
            HttpError::BadHandshakeMethod => 2,
            HttpError::BadRequest => 3,
            HttpError::UnsupportedProtocolVersion => 5,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            HttpError::TransportUnknown => "Transport unknown",
            HttpError::SessionIdUnknown => "Session ID unknown",
            HttpError::BadHandshakeMethod => "Bad handshake method",
            HttpError::BadRequest => "Bad request",
            HttpError::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    /// Every refusal here is a 400; the reference's 403 (code 4) answers
    /// only an application's `allowRequest` veto, which is not offered.
    pub fn status(self) -> u16 {
        400
    }

    /// `{"code":N,"message":"…"}`; the messages need no JSON escaping.
    pub fn body(self) -> String {
        format!(r#"{{"code":{},"message":"{}"}}"#, self.code(), self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn handshake(upgrades: &[&str]) -> Handshake {
        Handshake {
            sid: "lv_VI97HAXpY6yYWAAAC".to_owned(),
            upgrades: upgrades.iter().map(|u| (*u).to_owned()).collect(),
            ping_interval_ms: 25000,
            ping_timeout_ms: 20000,
            max_payload: 1_000_000,
        }
    }

    #[test]
    fn open_packet_matches_the_reference_byte_for_byte() {
        let open = handshake(&["websocket"]).open_packet();
        assert_eq!(
            open.encode_text().as_deref(),
            Some(
                r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
            )
        );
    }

    #[test]
    fn websocket_handshake_offers_no_upgrades() {
        let json = handshake(&[]).to_json();
        assert!(json.contains(r#""upgrades":[]"#), "{json}");
    }

    #[test]
    fn handshake_has_exactly_the_five_keys_in_order() {
        let value: serde_json::Value = serde_json::from_str(&handshake(&[]).to_json()).unwrap();
        let keys: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"]);
    }

    #[test]
    fn text_packets_of_the_type_table_decode() {
        let cases = [
            ("0{}", Packet::Open("{}".to_owned())),
            ("1", Packet::Close),
            ("2", Packet::Ping),
            ("2probe", Packet::PingProbe),
            ("3", Packet::Pong),
            ("3probe", Packet::PongProbe),
            ("4hello", Packet::Message("hello".to_owned())),
            ("4", Packet::Message(String::new())),
            ("5", Packet::Upgrade),
            ("6", Packet::Noop),
        ];
        for (text, packet) in cases {
            assert_eq!(decode_text(text), Ok(packet.clone()), "{text}");
            assert_eq!(packet.encode_text().as_deref(), Some(text));
            assert_eq!(packet.encode_ws(), WsMessage::Text(text.to_owned()));
        }
    }

    #[test]
    fn socket_io_message_from_the_layering_picture() {
        assert_eq!(
            decode_text(r#"42/admin,7["ev",1]"#),
            Ok(Packet::Message(r#"2/admin,7["ev",1]"#.to_owned()))
        );
    }

    #[test]
    fn data_on_packets_without_data_is_ignored() {
        assert_eq!(decode_text("1bye"), Ok(Packet::Close));
        assert_eq!(decode_text("3x"), Ok(Packet::Pong));
        assert_eq!(decode_text("2probes"), Ok(Packet::Ping));
    }

    #[test]
    fn bad_text_packets_are_parse_errors() {
        assert_eq!(decode_text(""), Err(EngineError::EmptyPacket));
        assert_eq!(decode_text("7"), Err(EngineError::UnknownType('7')));
        assert_eq!(decode_text("x4"), Err(EngineError::UnknownType('x')));
        // `b` is only meaningful inside a polling payload.
        assert_eq!(decode_text("bAQID"), Err(EngineError::UnknownType('b')));
        assert_eq!(decode_text("é"), Err(EngineError::UnknownType('é')));
    }

    #[test]
    fn websocket_binary_frame_is_a_binary_message() {
        let bytes = Bytes::from_static(&[1, 2, 3]);
        let packet = Packet::Binary(bytes.clone());
        assert_eq!(packet.encode_text(), None);
        assert_eq!(packet.encode_ws(), WsMessage::Binary(bytes.clone()));
        assert_eq!(decode_ws(WsMessage::Binary(bytes)), Ok(packet));
        assert_eq!(decode_ws(WsMessage::Text("6".to_owned())), Ok(Packet::Noop));
    }

    #[test]
    fn payload_examples_of_section_2_4() {
        let three =
            vec![Packet::Message("hello".to_owned()), Packet::Ping, Packet::Message("world".to_owned())];
        assert_eq!(decode_payload("4hello\x1e2\x1e4world"), Ok(three.clone()));
        assert_eq!(encode_payload(&three), "4hello\x1e2\x1e4world");

        let with_binary =
            vec![Packet::Message("hello".to_owned()), Packet::Binary(Bytes::from_static(&[1, 2, 3, 4]))];
        assert_eq!(decode_payload("4hello\x1ebAQIDBA=="), Ok(with_binary.clone()));
        assert_eq!(encode_payload(&with_binary), "4hello\x1ebAQIDBA==");
    }

    #[test]
    fn single_packet_payloads() {
        assert_eq!(decode_payload("1"), Ok(vec![Packet::Close]));
        assert_eq!(decode_payload("b"), Ok(vec![Packet::Binary(Bytes::new())]));
        assert_eq!(encode_payload(&[Packet::Noop]), "6");
    }

    #[test]
    fn bad_payloads_are_rejected() {
        assert_eq!(decode_payload(""), Err(EngineError::EmptyPacket));
        assert_eq!(decode_payload("4a\x1e"), Err(EngineError::EmptyPacket));
        assert_eq!(decode_payload("\x1e4a"), Err(EngineError::EmptyPacket));
        assert_eq!(decode_payload("4a\x1e\x1e2"), Err(EngineError::EmptyPacket));
        assert_eq!(decode_payload("4a\x1e9"), Err(EngineError::UnknownType('9')));
        assert!(matches!(decode_payload("b!!!"), Err(EngineError::InvalidBase64(_))));
        // Padding is part of the wire format.
        assert!(matches!(decode_payload("bAQIDBA"), Err(EngineError::InvalidBase64(_))));
    }

    #[test]
    fn http_error_bodies_of_section_2_9() {
        let table = [
            (HttpError::TransportUnknown, 400, r#"{"code":0,"message":"Transport unknown"}"#),
            (HttpError::SessionIdUnknown, 400, r#"{"code":1,"message":"Session ID unknown"}"#),
            (HttpError::BadHandshakeMethod, 400, r#"{"code":2,"message":"Bad handshake method"}"#),
            (HttpError::BadRequest, 400, r#"{"code":3,"message":"Bad request"}"#),
            (
                HttpError::UnsupportedProtocolVersion,
                400,
                r#"{"code":5,"message":"Unsupported protocol version"}"#,
            ),
        ];
        for (error, status, body) in table {
            assert_eq!(error.status(), status);
            assert_eq!(error.body(), body);
            let parsed: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(parsed["code"], u64::from(error.code()));
            assert_eq!(parsed["message"], error.message());
        }
    }

    /// Any packet; text data may hold anything but the record separator.
    fn any_packet() -> impl Strategy<Value = Packet> {
        let text = "[^\x1e]*";
        prop_oneof![
            text.prop_map(Packet::Open),
            Just(Packet::Close),
            Just(Packet::Ping),
            Just(Packet::PingProbe),
            Just(Packet::Pong),
            Just(Packet::PongProbe),
            text.prop_map(Packet::Message),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| Packet::Binary(Bytes::from(b))),
            Just(Packet::Upgrade),
            Just(Packet::Noop),
        ]
    }

    proptest! {
        #[test]
        fn ws_frames_round_trip(packet in any_packet()) {
            prop_assert_eq!(decode_ws(packet.encode_ws()), Ok(packet));
        }

        #[test]
        fn payloads_round_trip(packets in proptest::collection::vec(any_packet(), 1..8)) {
            prop_assert_eq!(decode_payload(&encode_payload(&packets)), Ok(packets));
        }

        #[test]
        fn text_decoding_never_panics(s in "\\PC*") {
            let _ = decode_text(&s);
            let _ = decode_payload(&s);
        }
    }
}
