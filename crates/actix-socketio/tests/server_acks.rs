//! Acknowledgements from the server's side: an app emits with a callback,
//! the client answers with an ACK, and the callback gets its arguments.
//! (Client → server acks are covered by the protocol and client suites.)

mod common;

use std::time::Duration;

use serde_json::{Map, Value, json};
use tungstenite::Message;

use actix_socketio::engineio::EngineConfig;
use actix_socketio::socketio::{Accepted, Event, Refusal, SocketApp, SocketRef};

/// Asks every client a question on connect and reports the answer back.
struct Asker;

impl SocketApp for Asker {
    type Socket = ();

    fn connect(&self, socket: &SocketRef<Self>, _: &Map<String, Value>) -> Result<Accepted<()>, Refusal> {
        let reply_to = socket.clone();
        socket.emit_with_ack("question", vec![json!(42)], move |answer| {
            reply_to.emit("answer-received", answer);
        });
        Ok(Accepted::new(()))
    }

    fn event(&self, _: &mut (), _: &SocketRef<Self>, _: Event) {}

    fn disconnect(&self, _: (), _: &SocketRef<Self>, _: &str) {}
}

fn next_text(
    ws: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
) -> String {
    loop {
        if let Message::Text(text) = ws.read().expect("read") {
            return text.to_string();
        }
    }
}

#[test]
fn a_server_emit_with_ack_receives_the_clients_answer() {
    let addr = common::serve(EngineConfig::default(), Asker);
    let (mut ws, _) =
        tungstenite::connect(format!("ws://{addr}/socket.io/?EIO=4&transport=websocket")).expect("connect");
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = ws.get_ref() {
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    }
    assert!(next_text(&mut ws).starts_with("0{"));
    ws.send(Message::text("40")).expect("send");
    assert!(next_text(&mut ws).starts_with("40{\"sid\":"));
    // The server's first ack id is 0.
    assert_eq!(next_text(&mut ws), r#"420["question",42]"#);
    ws.send(Message::text(r#"430["yes",{"sure":true}]"#)).expect("send");
    assert_eq!(next_text(&mut ws), r#"42["answer-received","yes",{"sure":true}]"#);
    // A second answer to the same id is ignored, as is an unknown id.
    ws.send(Message::text(r#"430["again"]"#)).expect("send");
    ws.send(Message::text(r#"4399["unknown"]"#)).expect("send");
    ws.send(Message::text("3")).expect("send");
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = ws.get_ref() {
        stream.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
    }
    assert!(ws.read().is_err(), "nothing more arrives");
}
