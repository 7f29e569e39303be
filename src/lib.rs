//! CivicPulse: a realtime backend for civic issue reporting.
//!
//! This file builds and starts the app, and is the one place where the
//! pieces are wired together: configuration → storage → domain → the
//! actors and the socket app (subscribers of domain events) → HTTP.
//!
//! Modules depend only on those below them: ids, timestamp, origins, config,
//! descriptors, metrics, limits → auth → db → domain → protocol → cluster →
//! actors → realtime → http → shutdown → this file (and main.rs).

pub mod actors;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod db;
pub mod descriptors;
pub mod domain;
pub mod http;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod origins;
pub mod protocol;
pub mod realtime;
pub mod schema;
pub mod shutdown;
pub mod timestamp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix::Addr;
use actix_socketio::engineio::server::{Stopper, start_stoppable_with};
use actix_web::{App, dev::ServerHandle, web};

use config::Config;
use db::Db;
use domain::Domain;
use domain::events::EventHub;
use metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The long-lived parts of a running node.
#[derive(Clone)]
pub struct Services {
    pub config: Arc<Config>,
    pub domain: Domain,
    pub metrics: Arc<Metrics>,
    pub write_limits: web::Data<http::rate_limit::WriteLimits>,
    /// Sign-in attempts per address (AUTH_RATE_PER_MINUTE): REST's and the
    /// Admin UI's on `/admin` draw on the same bucket.
    pub auth_attempts: Option<Arc<limits::KeyedBucket<std::net::IpAddr>>>,
}

impl Services {
    /// Opens the database (running migrations) and counts domain events
    /// in the metrics. The actors subscribe later, in `start_actors`: they
    /// need the actix system, which the command line does not run.
    pub fn build(config: Config) -> Result<Self, StartError> {
        if config.jwt_secret_generated {
            log::warn!(
                "JWT_SECRET is not set: generated a random one for this run. \
                 Access tokens will NOT survive a restart and nodes will not accept each other's tokens. \
                 Set JWT_SECRET (at least 32 bytes) in production."
            );
        }
        log::info!("opening database {}", config.database_url.redacted());
        let metrics = Arc::new(Metrics::default());
        let pool = db::PoolOptions {
            size: config.db_pool_size,
            timeout: config.db_timeout,
            stats: metrics.db.clone(),
        };
        let db = Db::open(&config.database_url, pool)?;
        let hub = Arc::new(EventHub::default());
        let messages = domain::messages::start_writer(db.clone(), hub.clone())?;
        let domain = Domain {
            db,
            messages,
            tokens: auth::TokenKeys::new(&config.jwt_secret, config.access_token_ttl),
            hub,
            presence: Default::default(),
            refresh_ttl: config.refresh_token_ttl,
            revocations: Default::default(),
        };
        let metrics_sub = metrics.clone();
        domain.hub.subscribe(move |event| metrics_sub.record_event(event.name()));
        let write_limits =
            web::Data::new(http::rate_limit::WriteLimits::from_config(&config, metrics.clone()));
        let auth_attempts = limits::KeyedBucket::per_minute(config.auth_rate_per_minute).map(Arc::new);
        Ok(Self { config: Arc::new(config), domain, metrics, write_limits, auth_attempts })
    }

    /// Joins the cluster (with `REDIS_URL`), starts the actors and
    /// subscribes them to domain events; answers the Socket.IO engine.
    /// Must run inside the actix system.
    fn start_actors(&self) -> Result<Realtime, StartError> {
        let cluster = match &self.config.redis_url {
            Some(url) => {
                let (cluster, pending) =
                    cluster::Cluster::new(&self.config, url, &self.metrics, self.domain.revocations.clone())?;
                log::info!(
                    target: "civicpulse::cluster",
                    "cluster mode: node={} tag={} url={} prefix={}",
                    cluster.node, cluster.tag, cluster.url, self.config.redis_key_prefix
                );
                Some((cluster, pending))
            }
            None => None,
        };
        // Alone, the node's log is its own; in a cluster, the part of the
        // cluster's log this node has read since it started.
        let log = self.config.recovery_window.map(|_| {
            let capacity = self.config.recovery_max_events;
            Arc::new(match cluster {
                Some(_) => actors::replay::MemoryLog::mirror(0, capacity),
                None => actors::replay::MemoryLog::new(capacity),
            }) as Arc<dyn actors::replay::EventLog>
        });
        let fanout = actors::Fanout::start(&self.metrics, cluster, log);
        if self.domain.presence.attach(fanout.presence.clone()).is_err() {
            log::error!("presence directory attached twice; keeping the first");
        }
        // Forwarding subscribes before the app's actors, so that a socket
        // hears a domain event before anything an actor says about it
        // (e.g. issue:upvoted before the issue:trending it caused).
        let engine =
            realtime::start(&self.domain, &fanout, &self.metrics, &self.config, self.auth_attempts.clone())?;
        actors::start_all(&actors::kit::Kit::new(
            self.domain.hub.clone(),
            fanout.push(),
            self.config.clone(),
        ));
        Ok(Realtime { engine, cluster: fanout.cluster(), presence: fanout.presence.clone() })
    }
}

/// What the HTTP server serves and the drain stops, started by
/// `Services::start_actors`.
struct Realtime {
    engine: Arc<realtime::CivicEngine>,
    cluster: Option<Arc<cluster::Cluster>>,
    presence: Addr<actors::presence::PresenceRegistry>,
}

/// Binds `addr` (`host:port`). Done before anything starts, so that a port
/// in use stops the start with one clear line and nothing to wind down.
fn listen(addr: &str) -> Result<std::net::TcpListener, StartError> {
    actix_socketio::engineio::server::bind(addr)
        .map_err(|source| StartError::Bind { addr: addr.to_string(), source })
}

/// Builds the HTTP server on `listener`; the caller runs it, and stops it
/// with the `Stopper`. `/readyz` answers 503 once `draining` is set.
fn http_server(
    services: &Services,
    realtime: &Realtime,
    listener: std::net::TcpListener,
    draining: &Arc<AtomicBool>,
) -> Result<(actix_web::dev::Server, SocketAddr, Stopper), StartError> {
    let s = services.clone();
    let socket_io = realtime.engine.clone();
    let readiness = web::Data::new(http::handlers::ops::Readiness {
        cluster: realtime.cluster.clone(),
        draining: draining.clone(),
    });
    let auth_limit = web::Data::new(http::rate_limit::AuthRateLimit::shared(services.auth_attempts.clone()));
    let write_limits = services.write_limits.clone();
    let bound = listener.local_addr()?;
    let mut ws =
        actix_socketio::engineio::upgrade::WsRoutes::default().engine("/socket.io/", socket_io.clone());
    if services.config.ws_origin_check {
        ws = ws
            .check_origin(http::cors::upgrade_check(&services.config.cors_origins, services.metrics.clone()));
    }
    let (workers, limits) = (services.config.workers, server_limits(services));
    let (server, stopper) = start_stoppable_with(listener, workers, ws, limits, move || {
        App::new()
            .app_data(web::Data::new(s.domain.clone()))
            .app_data(auth_limit.clone())
            .app_data(write_limits.clone())
            .app_data(readiness.clone())
            .app_data(web::Data::from(s.metrics.clone()))
            .wrap(http::cors::middleware(&s.config.cors_origins))
            .wrap_fn(http::cors::error_shape)
            // Logger renders each request's line as the request arrives,
            // logged or not (7 % of the CPU of `GET /healthz` in a
            // profile); env_logger's level is fixed at start, so only a
            // server that logs requests has it.
            .wrap(actix_web::middleware::Condition::new(
                log::log_enabled!(target: "civicpulse::http", log::Level::Info),
                actix_web::middleware::Logger::new("%a \"%r\" %s %b %Dms").log_target("civicpulse::http"),
            ))
            .wrap_fn({
                let metrics = s.metrics.clone();
                move |req, srv| {
                    use actix_web::dev::Service;
                    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
                    let metrics = metrics.clone();
                    let fut = srv.call(req);
                    async move {
                        let res = fut.await?;
                        metrics.record_http(&route, res.status().as_u16());
                        Ok(res)
                    }
                }
            })
            .configure(|cfg| actix_socketio::engineio::endpoint::mount(cfg, "/socket.io/", socket_io.clone()))
            .configure(|cfg| {
                if s.config.demo_client {
                    http::demo::routes(cfg);
                }
                http::routes(cfg);
            })
    })?;
    Ok((server, bound, stopper))
}

/// The caps on connections and request bodies (see
/// `actix_socketio::engineio::limits`).
fn server_limits(services: &Services) -> actix_socketio::engineio::limits::ServerLimits {
    let config = &services.config;
    let connections = descriptors::connection_limits(config);
    services.metrics.connection_limit.store(connections.max_connections as u64, Ordering::Relaxed);
    actix_socketio::engineio::limits::ServerLimits {
        max_connections: connections.max_connections,
        reserve: connections.reserve,
        max_per_address: config.max_connections_per_address,
        body_read_timeout: Some(config.body_read_timeout),
        ops_paths: ["/healthz", "/readyz", "/metrics"].map(String::from).to_vec(),
        stats: services.metrics.server.clone(),
        cors: Some(http::cors::refusals_readable_by(&config.cors_origins)),
    }
}

/// Runs a node until it is stopped (SIGTERM or SIGINT), then drains it
/// (see `shutdown`).
pub async fn serve(config: Config) -> Result<(), StartError> {
    // Taken over first: a signal during the start drains what there is.
    let mut signals = shutdown::Signals::new()?;
    let addr = format!("{}:{}", config.host, config.port);
    let services = Services::build(config)?;
    let listener = listen(&addr)?;
    let realtime = services.start_actors()?;
    let draining = Arc::new(AtomicBool::new(false));
    let (server, _, stopper) = http_server(&services, &realtime, listener, &draining)?;
    log::info!("civicpulse listening on http://{addr} (node {})", services.config.node_id);
    // Its own task: the server takes the drain's commands while it runs.
    let mut running = actix_rt::spawn(server);
    let signal = tokio::select! {
        ended = &mut running => return ended.map_err(std::io::Error::other)?.map_err(StartError::from),
        signal = signals.next() => signal,
    };
    let drain = shutdown::Drain {
        config: &services.config,
        draining: &draining,
        http: &stopper,
        engine: &realtime.engine,
        writer: &services.domain.messages,
        presence: &realtime.presence,
        cluster: realtime.cluster.as_ref(),
    };
    drain.run(signal, &mut signals).await;
    Ok(())
}

/// A node running on its own thread, for tests and tools. Dropping it stops
/// the node.
pub struct RunningNode {
    pub addr: SocketAddr,
    pub services: Services,
    handle: ServerHandle,
    system: actix_rt::System,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningNode {
    /// Starts a node; `config.port` 0 picks a free port.
    pub fn start(config: Config) -> Result<Self, StartError> {
        let services = Services::build(config)?;
        let addr = format!("{}:{}", services.config.host, services.config.port);
        let (tx, rx) = std::sync::mpsc::channel();
        let s = services.clone();
        let thread = std::thread::spawn(move || {
            let system = actix_rt::System::new();
            let started = system.block_on(async {
                let listener = listen(&addr)?;
                http_server(&s, &s.start_actors()?, listener, &Arc::default())
            });
            match started {
                // Stopped by dropping the node, not in steps.
                Ok((server, bound, _)) => {
                    let handle = server.handle();
                    system.runtime().spawn(server);
                    let _ = tx.send(Ok((handle, bound, actix_rt::System::current())));
                    let _ = system.run();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        let (handle, addr, system) =
            rx.recv().map_err(|_| StartError::Io(std::io::Error::other("server thread died")))??;
        Ok(Self { addr, services, handle, system, thread: Some(thread) })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningNode {
    fn drop(&mut self) {
        // The returned future only reports completion; the stop is sent now.
        drop(self.handle.stop(false));
        self.system.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
