//! The protocol layer on its own, with no authentication and none of
//! CivicPulse's events: a template for building another service on the
//! Engine.IO / Socket.IO layers, and a target for protocol test suites.
//!
//! ```text
//! cargo run --example protocol_echo -- --port 3000 --ping-interval 300 --ping-timeout 200 --connect-timeout 1000
//! ```
//! - `/engine.io/`: Engine.IO alone; every message is echoed (text as
//!   text, binary as binary).
//! - `/socket.io/`: namespaces `/` and `/custom`. On connect the server emits
//!   `auth` with the handshake's auth object; `message` is answered with
//!   `message-back` and the same arguments; `message-with-ack` has its ack
//!   called with the same arguments. Binary arguments included.

use std::sync::Arc;
use std::time::Duration;

use actix::Context;
use actix_web::{App, web};
use clap::Parser;
use serde_json::{Map, Value};

use actix_socketio::engineio::{
    Engine, EngineConfig, EngineHandler, HandlerFactory, InboundPermit, Incoming, Output, SessionHandle,
    SocketSession, endpoint, server, upgrade::WsRoutes,
};
use actix_socketio::protocol::engine::Packet as EnginePacket;
use actix_socketio::protocol::socket::Packet;
use actix_socketio::socketio::{Accepted, Event, Refusal, SocketApp, SocketIoFactory, SocketRef};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// Milliseconds between server pings.
    #[arg(long, default_value_t = 25_000)]
    ping_interval: u64,
    /// Milliseconds to wait for a pong.
    #[arg(long, default_value_t = 20_000)]
    ping_timeout: u64,
    /// Milliseconds a client has to join a namespace.
    #[arg(long, default_value_t = 45_000)]
    connect_timeout: u64,
    #[arg(long, default_value_t = 1_000_000)]
    max_payload: usize,
}

/// Engine.IO alone: echoes every message.
struct Echo;

impl EngineHandler for Echo {
    fn message(
        &mut self,
        message: Incoming,
        _: InboundPermit,
        out: &mut Output,
        _: &mut Context<SocketSession<Self>>,
    ) {
        out.send(match message {
            Incoming::Text(text) => EnginePacket::Message(text),
            Incoming::Binary(bytes) => EnginePacket::Binary(bytes),
        });
    }

    fn closed(&mut self, _: actix_socketio::engineio::CloseReason) {}
}

struct EchoFactory;

impl HandlerFactory for EchoFactory {
    type Handler = Echo;

    fn create(&self, _: SessionHandle<Echo>, _: &actix_http::RequestHead) -> Echo {
        Echo
    }
}

/// Socket.IO: echoes events and acks on `/` and `/custom`.
struct EchoApp;

impl SocketApp for EchoApp {
    type Socket = ();

    fn connect(&self, socket: &SocketRef<Self>, auth: &Map<String, Value>) -> Result<Accepted<()>, Refusal> {
        if !matches!(&*socket.namespace, "/" | "/custom") {
            return Err(Refusal::InvalidNamespace);
        }
        socket.emit("auth", vec![Value::Object(auth.clone())]);
        Ok(Accepted::new(()))
    }

    fn event(&self, _: &mut (), socket: &SocketRef<Self>, event: Event) {
        match (event.name.as_str(), event.ack) {
            ("message", _) => socket.send(if event.attachments.is_empty() {
                Packet::event(&socket.namespace, "message-back", event.args)
            } else {
                Packet::binary_event(&socket.namespace, "message-back", event.args, event.attachments)
            }),
            ("message-with-ack", Some(id)) => socket.ack(id, event.args, event.attachments),
            _ => {}
        }
    }

    fn disconnect(&self, _: (), _: &SocketRef<Self>, _: &str) {}
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let config = EngineConfig {
        ping_interval: Duration::from_millis(args.ping_interval),
        ping_timeout: Duration::from_millis(args.ping_timeout),
        max_payload: args.max_payload,
        ..EngineConfig::default()
    };
    let engine_only = Engine::new(config.clone(), EchoFactory);
    let socket_io = Engine::new(
        config,
        SocketIoFactory {
            app: Arc::new(EchoApp),
            connect_timeout: Duration::from_millis(args.connect_timeout),
            binary: Default::default(),
        },
    );
    log::info!("protocol_echo listening on 127.0.0.1:{}", args.port);
    let ws = WsRoutes::default()
        .engine("/engine.io/", engine_only.clone())
        .engine("/socket.io/", socket_io.clone());
    actix_web::rt::System::new().block_on(async move {
        let listener = server::bind(&format!("127.0.0.1:{}", args.port))?;
        server::start(listener, 2, ws, move || {
            App::new().configure(|cfg: &mut web::ServiceConfig| {
                endpoint::mount(cfg, "/engine.io/", engine_only.clone());
                endpoint::mount(cfg, "/socket.io/", socket_io.clone());
            })
        })?
        .await
    })
}
