//! A drain (`Engine::drain`, `server::Stopper`) as clients see it: a
//! WebSocket session gets the ack of the event it had in flight, then a
//! 1001 close frame; a polling session gets the close packet on its next
//! GET (and a POST it sent late still gets "ok"); a new handshake meanwhile
//! is refused with 503; the listener refuses connections once the polling
//! sessions are closed. The application hears "server shutting down".

use std::net::TcpStream;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use actix_web::App;
use serde_json::{Map, Value, json};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

use actix_socketio::engineio::limits::ServerLimits;
use actix_socketio::engineio::upgrade::WsRoutes;
use actix_socketio::engineio::{DrainPlan, Drained, Engine, EngineConfig, endpoint, server};
use actix_socketio::socketio::{Accepted, Event, Refusal, SocketApp, SocketIoFactory, SocketRef};

/// How long the application takes over a "slow" event before its ack.
const SLOW: Duration = Duration::from_millis(300);

/// Acks "slow" events after a while; records why sockets went.
#[derive(Clone, Default)]
struct Slow {
    received: Arc<Mutex<usize>>,
    reasons: Arc<Mutex<Vec<String>>>,
}

impl SocketApp for Slow {
    type Socket = ();

    fn connect(&self, _: &SocketRef<Self>, _: &Map<String, Value>) -> Result<Accepted<()>, Refusal> {
        Ok(Accepted::new(()))
    }

    fn event(&self, _: &mut (), socket: &SocketRef<Self>, event: Event) {
        *self.received.lock().expect("lock") += 1;
        let socket = socket.clone();
        actix_rt::spawn(async move {
            let _permit = event.permit;
            tokio::time::sleep(SLOW).await;
            if let Some(id) = event.ack {
                socket.ack(id, vec![json!("done")], Vec::new());
            }
        });
    }

    fn disconnect(&self, _: (), _: &SocketRef<Self>, reason: &str) {
        self.reasons.lock().expect("lock").push(reason.to_string());
    }
}

/// Serves `app`; the drain starts when `go` is sent, and its outcome comes
/// back on the receiver.
fn serve(app: Slow) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>, mpsc::Receiver<Drained>) {
    let (ready, address) = mpsc::channel();
    let (go, start) = tokio::sync::oneshot::channel::<()>();
    let (report, outcome) = mpsc::channel();
    std::thread::spawn(move || {
        let system = actix_rt::System::new();
        system.block_on(async move {
            let factory = SocketIoFactory {
                app: Arc::new(app),
                connect_timeout: Duration::from_secs(5),
                binary: Default::default(),
            };
            let engine = Engine::new(EngineConfig::default(), factory);
            let listener = server::bind("127.0.0.1:0").expect("bind");
            ready.send(listener.local_addr().expect("address")).expect("report address");
            let ws = WsRoutes::default().engine("/socket.io/", engine.clone());
            let app_engine = engine.clone();
            let (running, stopper) =
                server::start_stoppable_with(listener, 1, ws, ServerLimits::default(), move || {
                    let engine = app_engine.clone();
                    App::new().configure(move |cfg| endpoint::mount(cfg, "/socket.io/", engine))
                })
                .expect("server");
            actix_rt::spawn(running);
            let _ = start.await;
            let now = Instant::now();
            let plan = DrainPlan {
                rate: 1000,
                polling_by: now + Duration::from_secs(2),
                close_by: now + Duration::from_millis(500),
                give_up: now + Duration::from_secs(3),
            };
            let (polling_closed, closed) = tokio::sync::oneshot::channel();
            let drain = engine.drain(plan, move || {
                let _ = polling_closed.send(());
            });
            let http = async {
                let _ = closed.await;
                stopper.stop_accepting().await.expect("shut the listener");
                stopper.close_keep_alive();
            };
            let (drained, ()) = tokio::join!(drain, http);
            report.send(drained).expect("report");
            std::future::pending::<()>().await;
        });
    });
    (address.recv_timeout(Duration::from_secs(10)).expect("server started"), go, outcome)
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().expect("client")
}

#[test]
fn a_drain_answers_what_is_in_flight_then_closes_so_that_clients_reconnect() {
    let app = Slow::default();
    let (addr, go, outcome) = serve(app.clone());
    let base = format!("http://{addr}/socket.io/?EIO=4&transport=polling");
    let http = http();

    // A polling session, connected to the namespace, with no GET waiting.
    let open = http.get(&base).send().and_then(|r| r.text()).expect("handshake");
    let sid = serde_json::from_str::<Value>(&open[1..]).expect("open packet")["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    let session = format!("{base}&sid={sid}");
    assert_eq!(http.post(&session).body("40").send().and_then(|r| r.text()).expect("CONNECT"), "ok");
    let connected = http.get(&session).send().and_then(|r| r.text()).expect("CONNECT reply");
    assert!(connected.starts_with("40"), "{connected}");

    // A WebSocket session with an event in hand.
    let (mut ws, _) =
        tungstenite::connect(format!("ws://{addr}/socket.io/?EIO=4&transport=websocket")).expect("connect");
    ws.send(Message::text("40")).expect("CONNECT");
    while !matches!(ws.read().expect("CONNECT reply"), Message::Text(t) if t.starts_with("40")) {}
    ws.send(Message::text(r#"421["slow"]"#)).expect("event");
    let deadline = Instant::now() + Duration::from_secs(5);
    while *app.received.lock().expect("lock") < 1 {
        assert!(Instant::now() < deadline, "the event never arrived");
        std::thread::sleep(Duration::from_millis(5));
    }

    go.send(()).expect("start the drain");
    std::thread::sleep(Duration::from_millis(100));
    // The listener stays open while the polling session waits for a GET,
    // but no new session starts.
    let refused = http.get(&base).send().expect("a handshake while draining");
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(refused.text().expect("body"), r#"{"message":"Server is shutting down"}"#);

    // The WebSocket: the ack first, then Going Away.
    assert_eq!(ws.read().expect("the ack"), Message::text(r#"431["done"]"#));
    match ws.read().expect("the close") {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a close frame, got {other:?}"),
    }

    // The polling session: the close packet on its GET; a POST its client
    // sent before it read it still gets its "ok".
    assert_eq!(http.get(&session).send().and_then(|r| r.text()).expect("GET"), "1");
    assert_eq!(http.post(&session).body(r#"42["late"]"#).send().and_then(|r| r.text()).expect("POST"), "ok");

    let drained = outcome.recv_timeout(Duration::from_secs(5)).expect("the drain ends");
    assert_eq!(drained, Drained { sessions: 2, cut_off: 0, open: 0 });
    let refused = TcpStream::connect(addr).expect_err("the listener is closed");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(*app.reasons.lock().expect("lock"), ["server shutting down", "server shutting down"]);
    assert_eq!(*app.received.lock().expect("lock"), 1, "nothing sent after the close was handled");
}
