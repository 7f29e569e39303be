//! Socket.IO: one text packet, and the decoder that joins a binary packet
//! with the attachments that follow it.

use actix_socketio::protocol::engine;
use actix_socketio::protocol::socket::{
    Decoded, Decoder, MAX_ATTACHMENTS, Packet, RESERVED_EVENTS, SocketError, decode,
};
use bytes::Bytes;

/// One Engine.IO message's text, decoded as a Socket.IO packet.
pub fn packet(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match crate::bounded("decode", text.len(), 256, || decode(text)) {
        Ok(Decoded::Complete(packet)) => {
            assert!(packet.attachments.is_empty());
            round_trips(&packet);
        }
        Ok(Decoded::NeedsAttachments { mut packet, expected }) => {
            assert!(packet.kind.is_binary());
            assert!((1..=MAX_ATTACHMENTS).contains(&expected), "{expected} attachments");
            packet.attachments = (0..expected).map(|i| Bytes::from(vec![i as u8; i])).collect();
            round_trips(&packet);
        }
        Err(_) => {}
    }
}

/// A packet the decoder gave out goes out as Engine.IO messages that a new
/// decoder reads back as the same packet, and its encoding is canonical:
/// encoding what was read back gives the same text.
fn round_trips(packet: &Packet) {
    let text = packet.encode();
    let mut decoder = Decoder::with_max_attachments(MAX_ATTACHMENTS.max(packet.attachments.len()));
    let mut out = None;
    for message in packet.engine_packets() {
        let decoded = match message {
            engine::Packet::Message(text) => decoder.feed_text(&text),
            engine::Packet::Binary(bytes) => decoder.feed_binary(bytes),
            other => panic!("a Socket.IO packet went out as {other:?}"),
        };
        assert!(out.is_none(), "{text:?}: a packet before its last message");
        out = decoded.unwrap_or_else(|e| panic!("{text:?} does not decode again: {e}"));
    }
    let again = out.unwrap_or_else(|| panic!("{text:?}: still waiting after its last message"));
    assert_eq!(&again, packet, "{text:?}");
    assert_eq!(again.encode(), text);

    // What the session asks of an inbound packet.
    if let Some(name) = packet.event_name() {
        assert!(!RESERVED_EVENTS.contains(&&*name), "reserved event {name:?} let through");
    }
    for arg in packet.args() {
        let _ = packet.attachment(arg);
    }
}

/// A sequence of Engine.IO messages for one connection's decoder: the
/// first byte sets its attachment limit, the rest are records separated by
/// `\x1e`, a binary message when it starts with `b`, else text.
pub fn decoder(data: &[u8]) {
    let Some((&limit, rest)) = data.split_first() else { return };
    let max = usize::from(limit) % (MAX_ATTACHMENTS + 2);
    let mut decoder = Decoder::with_max_attachments(max);
    // The attachments the pending packet declared, and those it has.
    let mut pending: Option<(usize, Vec<Bytes>)> = None;
    for record in rest.split(|&b| b == 0x1e) {
        if let Some(bytes) = record.strip_prefix(b"b") {
            let bytes = Bytes::copy_from_slice(bytes);
            let result = decoder.feed_binary(bytes.clone());
            let Some((expected, mut have)) = pending.take() else {
                assert!(matches!(result, Err(SocketError::UnexpectedBinary)), "{result:?}");
                continue;
            };
            have.push(bytes);
            match result {
                Ok(Some(packet)) => {
                    assert_eq!(have.len(), expected);
                    assert_eq!(packet.attachments, have);
                    round_trips(&packet);
                }
                Ok(None) => {
                    assert!(have.len() < expected);
                    pending = Some((expected, have));
                }
                Err(e) => panic!("attachment {} of {expected} refused: {e}", have.len()),
            }
        } else {
            let text = String::from_utf8_lossy(record);
            let result = decoder.feed_text(&text);
            if pending.take().is_some() {
                assert!(matches!(result, Err(SocketError::UnexpectedText)), "{result:?}");
            } else {
                match result {
                    Ok(Some(packet)) => round_trips(&packet),
                    Ok(None) => {
                        let expected = declared(&text);
                        assert!((1..=max).contains(&expected), "{expected} attachments, limit {max}");
                        pending = Some((expected, Vec::new()));
                    }
                    Err(_) => {}
                }
            }
        }
        assert_eq!(decoder.is_awaiting_attachments(), pending.is_some());
    }
}

/// The attachment count of a binary packet's text, `5<count>-…`.
fn declared(text: &str) -> usize {
    text.get(1..).and_then(|rest| rest.split_once('-')).and_then(|(n, _)| n.parse().ok()).unwrap_or(0)
}
