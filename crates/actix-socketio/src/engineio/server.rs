//! The HTTP server: actix-web for every request, except WebSocket upgrades,
//! which actix-http hands to [`WsRoutes`] with their connection. This is
//! `actix_web::HttpServer` with that one hook added (it has no way to set
//! an upgrade handler).

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::time::Duration;

use actix_http::body::MessageBody;
use actix_http::{HttpService, Request, Response};
use actix_service::{IntoServiceFactory, ServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_web::dev::{AppConfig, Server};

use super::upgrade::WsRoutes;

/// Connections the kernel may queue before they are accepted.
const BACKLOG: i32 = 2048;

/// Binds `addr` (`host:port`; port 0 picks one) as HttpServer would.
pub fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let addr: SocketAddr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr} resolves to no address")))?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Serves `app` on `listener` with `workers` threads; upgrade requests go
/// to `ws`. The caller runs the returned server.
pub fn start<F, I, S, B>(
    listener: TcpListener,
    workers: usize,
    ws: WsRoutes,
    app: F,
) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as actix_service::Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    Ok(actix_server::Server::build()
        .workers(workers)
        .shutdown_timeout(10)
        .listen("http", listener, move || {
            let ws = ws.clone();
            let upgrade = fn_service(move |(req, framed)| {
                let ws = ws.clone();
                async move {
                    ws.serve(req, framed).await;
                    Ok::<_, Infallible>(())
                }
            });
            let app = app().into_factory().map_err(|err| err.into().error_response());
            HttpService::build()
                .keep_alive(Duration::from_secs(5))
                // A client that goes away mid-request (an aborted long-poll)
                // must drop the handler, so the session learns its transport
                // broke.
                .h1_allow_half_closed(false)
                .upgrade(upgrade)
                .finish(map_config(app, |_| AppConfig::default()))
                .tcp()
        })?
        .run())
}
