//! An in-process server for the tests that need an application of their
//! own (the conformance suite runs the `protocol_echo` example instead).

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use actix_web::App;

use actix_socketio::engineio::upgrade::WsRoutes;
use actix_socketio::engineio::{Engine, EngineConfig, HandlerFactory, endpoint, server};
use actix_socketio::socketio::{SocketApp, SocketIoFactory};

/// Serves `app` at `/socket.io/` on a free port, on a thread of its own
/// that lives as long as the test process.
#[allow(dead_code)] // Not every test file serves a Socket.IO app.
pub fn serve<A: SocketApp>(config: EngineConfig, app: A) -> std::net::SocketAddr {
    let factory = SocketIoFactory {
        app: Arc::new(app),
        connect_timeout: Duration::from_secs(5),
        binary: Default::default(),
    };
    serve_engine(Engine::new(config, factory), "/socket.io/")
}

/// Serves `engine` at `path` on a free port, as `serve` does.
pub fn serve_engine<F: HandlerFactory>(engine: Arc<Engine<F>>, path: &'static str) -> std::net::SocketAddr {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let system = actix_rt::System::new();
        system.block_on(async move {
            let listener = server::bind("127.0.0.1:0").expect("bind");
            tx.send(listener.local_addr().expect("address")).expect("report address");
            let ws = WsRoutes::default().engine(path, engine.clone());
            let server = server::start(listener, 1, ws, move || {
                let engine = engine.clone();
                App::new().configure(move |cfg| endpoint::mount(cfg, path, engine))
            })
            .expect("server");
            server.await.expect("server");
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("server started")
}
