//! An in-process server for the tests that need an application of their
//! own (the conformance suite runs the `protocol_echo` example instead).

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use actix_web::App;

use actix_socketio::engineio::upgrade::WsRoutes;
use actix_socketio::engineio::{Engine, EngineConfig, endpoint, server};
use actix_socketio::socketio::{SocketApp, SocketIoFactory};

/// Serves `app` at `/socket.io/` on a free port, on a thread of its own
/// that lives as long as the test process.
pub fn serve<A: SocketApp>(config: EngineConfig, app: A) -> std::net::SocketAddr {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let system = actix_rt::System::new();
        system.block_on(async move {
            let engine = Engine::new(
                config,
                SocketIoFactory { app: Arc::new(app), connect_timeout: Duration::from_secs(5) },
            );
            let listener = server::bind("127.0.0.1:0").expect("bind");
            tx.send(listener.local_addr().expect("address")).expect("report address");
            let ws = WsRoutes::default().engine("/socket.io/", engine.clone());
            let server = server::start(listener, 1, ws, move || {
                let engine = engine.clone();
                App::new().configure(move |cfg| endpoint::mount(cfg, "/socket.io/", engine))
            })
            .expect("server");
            server.await.expect("server");
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("server started")
}
