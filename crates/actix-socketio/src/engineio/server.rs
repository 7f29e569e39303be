//! The HTTP server: actix-web for every request, except WebSocket upgrades,
//! which actix-http hands to [`WsRoutes`] with their connection. This is
//! `actix_web::HttpServer` with that one hook added (it has no way to set
//! an upgrade handler), a way to stop it in steps ([`Stopper`]), and the
//! caps of `limits` applied to every connection as it is accepted and to
//! every request before the app.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::time::{Duration, Instant};

use actix_http::body::{EitherBody, MessageBody};
use actix_http::{ConnectionType, HttpService, Request, Response};
use actix_service::{
    IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt, apply_fn_factory, fn_service, map_config,
};
use actix_web::dev::{AppConfig, Server, ServerHandle};
use futures_util::future::{FutureExt, LocalBoxFuture};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::limits::{self, Admission, Conn, ConnInfo, ServerLimits, Table};
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
/// to `ws`. The caller runs the returned server. actix stops it on SIGTERM
/// (gracefully) and SIGINT. Nothing is capped.
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
    build(listener, workers, ws, ServerLimits::default(), app, None)
}

/// [`start`] for an application that stops the server itself, in the
/// steps of the [`Stopper`], and closes its sessions in between (see
/// `Engine::drain`), with `limits` on connections and request bodies.
/// actix handles no signal.
pub fn start_stoppable_with<F, I, S, B>(
    listener: TcpListener,
    workers: usize,
    ws: WsRoutes,
    limits: ServerLimits,
    app: F,
) -> std::io::Result<(Server, Stopper)>
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
    let listening = listener.try_clone()?;
    let (keep_alive_off, notified) = watch::channel(false);
    let server = build(listener, workers, ws, limits, app, Some(notified))?;
    let stopper = Stopper { handle: server.handle(), listener: listening, keep_alive_off };
    Ok((server, stopper))
}

fn build<F, I, S, B>(
    listener: TcpListener,
    workers: usize,
    ws: WsRoutes,
    limits: ServerLimits,
    app: F,
    keep_alive_off: Option<watch::Receiver<bool>>,
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
    let table = Table::new(limits);
    let mut server = actix_server::Server::build().workers(workers).shutdown_timeout(10);
    if keep_alive_off.is_some() {
        server = server.disable_signals();
    }
    Ok(server
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
            let app = apply_fn_factory(map_config(app, |_| AppConfig::default()), guard_request);
            let mut http = HttpService::build()
                .keep_alive(Duration::from_secs(5))
                // A client that goes away mid-request (an aborted long-poll)
                // must drop the handler, so the session learns its transport
                // broke.
                .h1_allow_half_closed(false)
                .on_connect_ext(|io: &Conn, data| {
                    data.insert(io.info());
                });
            if let Some(notified) = keep_alive_off.clone() {
                // actix-web's own hook for its graceful stop: once it
                // fires, each connection closes after its current response.
                http = http.graceful_shutdown_signal(move || {
                    let mut notified = notified.clone();
                    async move {
                        // A Stopper dropped unused stops nothing.
                        if notified.wait_for(|off| *off).await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                });
            }
            let http = http.upgrade(upgrade).h1(app);
            let table = table.clone();
            apply_fn_factory(http, move |io: TcpStream, http| admit(&table, io, http))
        })?
        .run())
}

/// Stops a server made by [`start_stoppable_with`] in steps.
pub struct Stopper {
    handle: ServerHandle,
    /// The listening socket, shared with the acceptor thread.
    listener: TcpListener,
    keep_alive_off: watch::Sender<bool>,
}

impl Stopper {
    /// From now on connection attempts are refused (a load balancer that
    /// retries a refused connection, as nginx does, tries the next node),
    /// while the connections made are served on, WebSockets included.
    /// Fails where a listening socket cannot be shut down (only Linux is
    /// known to allow it); it then closes when the server stops.
    pub async fn stop_accepting(&self) -> std::io::Result<()> {
        // Taken off the acceptor first: a dead listener would make it log
        // an error and retry every 500 ms. The acceptor thread takes the
        // pause a moment after the server does; what connects meanwhile
        // waits in the backlog, which the shutdown resets.
        self.handle.pause().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        // shutdown(2) takes a socket out of LISTEN at once: connection
        // attempts are refused and those not yet accepted are reset, yet
        // the socket stays the acceptor's to drop when the server stops.
        // (Closing this copy would not do: the acceptor's keeps it open.)
        socket2::SockRef::from(&self.listener).shutdown(std::net::Shutdown::Read)
    }

    /// Every HTTP connection closes after its current response (answered
    /// with `Connection: close`), an idle keep-alive one at once, so that a
    /// client's next request opens a connection to another node.
    pub fn close_keep_alive(&self) {
        self.keep_alive_off.send_replace(true);
    }

    /// Stops the server: its workers wait for their connections until
    /// `deadline` at most. False if some were still open then.
    pub async fn stop(&self, deadline: Instant) -> bool {
        tokio::time::timeout_at(deadline.into(), self.handle.stop(true)).await.is_ok()
    }
}

/// Serves, refuses or drops a connection just accepted.
fn admit<S>(
    table: &std::sync::Arc<Table>,
    io: TcpStream,
    http: &S,
) -> LocalBoxFuture<'static, Result<(), S::Error>>
where
    S: Service<(Conn, Option<SocketAddr>), Response = ()>,
    S::Future: 'static,
    S::Error: 'static,
{
    // A connection reset before it was looked at has no peer to answer.
    let Ok(peer) = io.peer_addr() else { return std::future::ready(Ok(())).boxed_local() };
    match table.admit(peer.ip()) {
        Admission::Serve(slot) => http.call((Conn::new(io, slot), Some(peer))).boxed_local(),
        Admission::Refuse(slot, refusal) => limits::refuse(io, slot, refusal).map(Ok).boxed_local(),
        Admission::Drop(refusal) => {
            limits::drop_refused(io, refusal);
            std::future::ready(Ok(())).boxed_local()
        }
    }
}

/// What a request is answered with, the app's response or a refusal.
type Answer<B, E> = LocalBoxFuture<'static, Result<Response<EitherBody<B>>, E>>;

/// Every request before the app: refused on a connection past the limit
/// (but for the ops paths), its body put on a deadline, and its connection
/// closed after it when keeping it would let a client hold it.
fn guard_request<S, B>(mut req: Request, app: &S) -> Answer<B, S::Error>
where
    S: Service<Request>,
    S::Response: Into<Response<B>> + 'static,
    S::Future: 'static,
    S::Error: 'static,
    B: MessageBody + 'static,
{
    let Some(conn) = req.conn_data::<ConnInfo>().cloned() else {
        let call = app.call(req);
        return Box::pin(async move { Ok(call.await?.into().map_body(|_, body| EitherBody::left(body))) });
    };
    if let Some(refusal) = conn.refusal(&req) {
        let response = refusal.response(&req, conn.cors()).map_body(|_, body| EitherBody::right(body));
        return Box::pin(std::future::ready(Ok(response)));
    }
    let body = conn.time_body(&mut req);
    let call = app.call(req);
    Box::pin(async move {
        let mut response: Response<B> = call.await?.into();
        if conn.must_close(body.as_deref()) {
            response.head_mut().set_connection_type(ConnectionType::Close);
        }
        Ok(response.map_body(|_, body| EitherBody::left(body)))
    })
}
