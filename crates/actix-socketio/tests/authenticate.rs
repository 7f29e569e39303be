//! A CONNECT decided after asynchronous work (`SocketApp::authenticate`):
//! the client hears nothing until the work is done, `connect` decides on
//! the auth it yields, and a packet for the namespace meanwhile closes the
//! connection.

mod common;

use std::time::Duration;

use serde_json::{Map, Value, json};
use tungstenite::Message;

use actix_socketio::engineio::EngineConfig;
use actix_socketio::socketio::{Accepted, Event, PendingAuth, Refusal, SocketApp, SocketRef};

/// Checks a "password" after 300 ms; lets in whoever the check names.
struct Slow;

impl SocketApp for Slow {
    type Socket = ();

    fn authenticate(&self, _: &SocketRef<Self>, auth: &Map<String, Value>) -> Option<PendingAuth> {
        let right = auth.get("password") == Some(&json!("open sesame"));
        Some(Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut decided = Map::new();
            decided.insert("checked".into(), json!(right));
            decided
        }))
    }

    fn connect(&self, socket: &SocketRef<Self>, auth: &Map<String, Value>) -> Result<Accepted<()>, Refusal> {
        if auth.get("checked") != Some(&json!(true)) {
            return Err(Refusal::Refused { message: "invalid credentials".into(), close: true });
        }
        socket.emit("welcome", vec![Value::Object(auth.clone())]);
        Ok(Accepted::new(()))
    }

    fn event(&self, _: &mut (), _: &SocketRef<Self>, _: Event) {}

    fn disconnect(&self, _: (), _: &SocketRef<Self>, _: &str) {}
}

type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

fn open(addr: std::net::SocketAddr) -> Ws {
    let (mut ws, _) =
        tungstenite::connect(format!("ws://{addr}/socket.io/?EIO=4&transport=websocket")).expect("connect");
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = ws.get_ref() {
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    }
    assert!(next_text(&mut ws).starts_with("0{"));
    ws
}

fn next_text(ws: &mut Ws) -> String {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => return text.to_string(),
            Ok(_) => {}
            Err(e) => return format!("closed: {e}"),
        }
    }
}

#[test]
fn connect_decides_on_what_authenticate_yields() {
    let addr = common::serve(EngineConfig::default(), Slow);
    let mut ws = open(addr);
    let sent = std::time::Instant::now();
    ws.send(Message::text(r#"40{"password":"open sesame"}"#)).expect("send");
    assert!(next_text(&mut ws).starts_with("40{\"sid\":"));
    assert!(sent.elapsed() >= Duration::from_millis(300), "answered before the check was done");
    // `connect` saw the auth the check yielded, not the client's.
    assert_eq!(next_text(&mut ws), r#"42["welcome",{"checked":true}]"#);

    let mut ws = open(addr);
    ws.send(Message::text(r#"40{"password":"guess"}"#)).expect("send");
    assert_eq!(next_text(&mut ws), r#"44{"message":"invalid credentials"}"#);
}

#[test]
fn a_packet_while_authenticating_closes_the_connection() {
    let addr = common::serve(EngineConfig::default(), Slow);
    for early in [r#"42["too soon"]"#, r#"40{"password":"open sesame"}"#] {
        let mut ws = open(addr);
        ws.send(Message::text(r#"40{"password":"open sesame"}"#)).expect("send");
        ws.send(Message::text(early)).expect("send");
        let next = next_text(&mut ws);
        assert!(next == "1" || next.starts_with("closed"), "{early}: {next}");
    }
}
