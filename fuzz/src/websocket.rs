//! The WebSocket frame reader (`ws::read_frame`) on what a client sends.

use actix_codec::Encoder;
use actix_http::ws::{CloseCode, Codec, Message};
use actix_socketio::engineio::ws::{Inbound, read_frame};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

/// What reading a stream gave: the frames, then the close code if it
/// ended in a refusal.
type Read = (Vec<Inbound>, Option<CloseCode>);

/// The input is read twice as raw client bytes (the first byte picks the
/// size limit, the second how the stream is cut into reads), and once as
/// a script of messages that a real client encodes.
pub fn frames(data: &[u8]) {
    let [limit, cut, stream @ ..] = data else { return };
    let max_size = usize::from(*limit) * 64;
    let (whole, ending) = read(stream, max_size, stream.len().max(1));
    // However the bytes arrive, they are read the same.
    assert_eq!(read(stream, max_size, 1 + usize::from(*cut) % 32), (whole.clone(), ending));
    for frame in &whole {
        if let Inbound::Text(text) = frame {
            assert!(text.len() <= max_size);
        }
        if let Inbound::Binary(bytes) | Inbound::Ping(bytes) = frame {
            assert!(bytes.len() <= max_size);
        }
    }

    let (sent, expected) = script(data);
    assert_eq!(read(&sent, usize::MAX, 1 + usize::from(*cut) % 32), expected);
}

/// Reads `stream` in pieces of `cut` bytes, as the connection does.
fn read(stream: &[u8], max_size: usize, cut: usize) -> Read {
    let mut codec = Codec::new().max_size(max_size);
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    for piece in stream.chunks(cut) {
        buffer.extend_from_slice(piece);
        loop {
            match crate::bounded("read_frame", buffer.len(), 2, || read_frame(&mut codec, &mut buffer)) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(code) => return (frames, Some(code)),
            }
        }
    }
    (frames, None)
}

/// Client frames made from the input, two bytes of header each (kind,
/// length) and then the payload, and what the reader must make of them.
fn script(data: &[u8]) -> (BytesMut, Read) {
    let mut codec = Codec::new().client_mode();
    let mut sent = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = data;
    while let [kind, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        let bytes = Bytes::copy_from_slice(payload);
        let (message, frame) = match kind % 5 {
            0 => match ByteString::try_from(bytes.clone()) {
                Ok(text) => (Message::Text(text.clone()), Inbound::Text(text)),
                Err(_) => {
                    // The codec only sends valid text, so this frame is
                    // made by hand: FIN + text, masked with a zero key.
                    match u8::try_from(len) {
                        Ok(short @ 0..=125) => sent.extend_from_slice(&[0x81, 0x80 | short]),
                        _ => sent.extend_from_slice(&[0x81, 0x80 | 126, (len >> 8) as u8, len as u8]),
                    }
                    sent.extend_from_slice(&[0; 4]);
                    sent.extend_from_slice(payload);
                    return (sent, (frames, Some(CloseCode::Invalid)));
                }
            },
            1 => (Message::Binary(bytes.clone()), Inbound::Binary(bytes)),
            // Control frames carry at most 125 bytes.
            2 => {
                let bytes = bytes.slice(..bytes.len().min(125));
                (Message::Ping(bytes.clone()), Inbound::Ping(bytes))
            }
            3 => (Message::Pong(bytes.slice(..bytes.len().min(125))), Inbound::Pong),
            _ => (Message::Close(None), Inbound::Close),
        };
        codec.encode(message, &mut sent).expect("a client frame encodes");
        frames.push(frame);
    }
    (sent, (frames, None))
}
