//! Engine.IO: one packet (a WebSocket frame) and a long-polling body.

use actix_socketio::protocol::engine::{
    EngineError, Packet, RECORD_SEPARATOR, WsMessage, decode_payload, decode_text, decode_ws, encode_payload,
};
use bytes::Bytes;

/// A WebSocket frame's bytes, as a text frame (when UTF-8) and as a
/// binary one; and a packet made from them, through its frame and back.
pub fn packet(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    assert_eq!(decode_ws(WsMessage::Binary(bytes.clone())), Ok(Packet::Binary(bytes)));

    if let Ok(text) = std::str::from_utf8(data) {
        match decode_text(text) {
            Ok(packet) => {
                // What it means survives re-encoding (the data of packets
                // that carry none is dropped, which only shortens it).
                let again = packet.encode_text().expect("a text frame decodes to a text packet");
                assert!(again.len() <= text.len(), "{text:?} re-encoded longer: {again:?}");
                assert_eq!(decode_text(&again), Ok(packet.clone()));
                if let Packet::Open(data) | Packet::Message(data) = &packet {
                    // The type is one ASCII digit.
                    assert_eq!(data, &text[1..]);
                }
            }
            Err(EngineError::EmptyPacket) => assert!(text.is_empty()),
            Err(EngineError::UnknownType(c)) => assert_eq!(text.chars().next(), Some(c)),
            Err(e @ EngineError::InvalidBase64(_)) => panic!("a text frame is never base64: {e}"),
        }
    }

    let packet = made_from(data);
    assert_eq!(decode_ws(packet.encode_ws()), Ok(packet));
}

/// Any packet: the first byte picks the type, the rest is its data.
fn made_from(data: &[u8]) -> Packet {
    let text = || String::from_utf8_lossy(data.get(1..).unwrap_or_default()).into_owned();
    match data.first().map_or(0, |b| b % 10) {
        0 => Packet::Open(text()),
        1 => Packet::Close,
        2 => Packet::Ping,
        3 => Packet::PingProbe,
        4 => Packet::Pong,
        5 => Packet::PongProbe,
        6 => Packet::Message(text()),
        7 => Packet::Binary(Bytes::copy_from_slice(data.get(1..).unwrap_or_default())),
        8 => Packet::Upgrade,
        _ => Packet::Noop,
    }
}

/// A long-polling POST body, as the session decodes it once it is UTF-8.
pub fn payload(data: &[u8]) {
    let Ok(body) = std::str::from_utf8(data) else { return };
    let Ok(packets) = crate::bounded("decode_payload", body.len(), 64, || decode_payload(body)) else {
        return;
    };
    assert_eq!(packets.len(), body.split(RECORD_SEPARATOR).count());
    let binary: usize =
        packets.iter().map(|p| if let Packet::Binary(bytes) = p { bytes.len() } else { 0 }).sum();
    assert!(binary <= body.len(), "{binary} bytes of binary from a body of {}", body.len());
    // Re-encoded, the body reads back as the same packets.
    assert_eq!(decode_payload(&encode_payload(&packets)), Ok(packets));
}
