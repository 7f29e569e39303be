//! Cluster mode: nodes sharing one Redis behave as one server.
//!
//! - [`wire`]: what one node tells the others (pure);
//! - [`emitter`]: what `@socket.io/redis-emitter` publishes (pure);
//! - [`presence`]: who is online cluster-wide, node heartbeats, and the
//!   reaping of nodes that died without a goodbye (Lua scripts);
//! - [`typing`]: one typing state per user per room for the cluster;
//! - [`window`]: a sliding-window count shared by the nodes (trending);
//! - `revocations`: logouts and revoked tokens, for every node;
//! - [`admin`]: what the nodes tell each other for the Admin UI (pure);
//! - [`recovery`]: connection state recovery's log (a Redis Stream, which
//!   also carries the events it logs) and parked sockets;
//! - this file: the [`Cluster`] handle, its Redis connection, the bus
//!   (publishing and the delivery of what the others publish) and the
//!   routes other nodes use to forward requests for this node's sessions.
//!
//! Nothing on a socket's or a request's path waits for Redis but what must
//! (a presence listing, the owner of a session another node made):
//! publishing queues (bounded) for one task that pipelines, presence and
//! typing changes go to tasks of their own, what arrives is handed to the
//! actors with `do_send`, and the node keeps serving its own sockets while
//! Redis is away. One connection (RESP3) carries commands and the
//! subscriptions; `redis::aio::ConnectionManager` reconnects it, and the
//! heartbeat subscribes again and re-announces this node's users.

pub mod admin;
pub mod emitter;
pub mod presence;
pub mod recovery;
mod revocations;
pub mod typing;
pub mod window;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix_socketio::engineio::SharedMessage;
use dashmap::DashMap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use crate::auth::Revocations;
use crate::config::Config;
use crate::metrics::{ClusterStats, Metrics};
use crate::protocol::events::{ISSUE_ROOM_PREFIX, NAMESPACE};
pub use wire::To;
use wire::{BusMessage, WireError};

/// Bus messages that may wait to be published. Beyond it they are counted
/// as not published, rather than grow without bound while Redis is slow.
const OUTBOX: usize = 65_536;
/// Publishes sent to Redis in one pipeline.
const BATCH: usize = 512;
/// How long a Redis command may take before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Something another node (or an emitter) published, for this node's
/// sockets.
pub struct Inbound {
    pub to: To,
    pub except_user: Option<String>,
    /// May be dropped for a socket that is behind (typing indicators).
    pub volatile: bool,
    pub frame: Arc<SharedMessage>,
}

/// Hands what arrives to this node's sockets (the actors; see
/// `actors::Fanout::start`).
pub type Deliver = Arc<dyn Fn(Inbound) + Send + Sync>;

/// Hands the other nodes' Admin UI messages to this node's `/admin` side.
pub type AdminDeliver = Arc<dyn Fn(admin::AdminMessage) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot use REDIS_URL: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Tag(#[from] actix_socketio::engineio::InvalidTag),
}

/// Redis keys and channels of one cluster. Keys share one hash tag, so the
/// scripts that touch several of them also run on a Redis Cluster.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_string() }
    }

    fn key(&self, rest: &str) -> String {
        format!("{{{}}}:{rest}", self.prefix)
    }

    /// The channel of the bus.
    pub fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }

    pub fn alive(&self, node: &str) -> String {
        self.key(&format!("alive:{node}"))
    }

    /// node id → its session tag.
    pub fn nodes(&self) -> String {
        self.key("nodes")
    }

    /// session tag → the node's URL.
    pub fn routes(&self) -> String {
        self.key("routes")
    }

    pub fn node_users(&self, node: &str) -> String {
        self.key(&format!("presence:node:{node}"))
    }

    /// user id → on how many nodes they have a socket.
    pub fn user_nodes(&self) -> String {
        self.key("presence:count")
    }

    /// user id → their presence entry (JSON).
    pub fn user_info(&self) -> String {
        self.key("presence:info")
    }

    pub fn typing(&self, issue_id: &str, user_id: &str) -> String {
        self.key(&format!("typing:{issue_id}:{user_id}"))
    }

    pub fn window(&self, name: &str) -> String {
        self.key(&format!("window:{name}"))
    }

    /// Revocations still in force, scored by when they lapse.
    pub fn revoked(&self) -> String {
        self.key("revoked")
    }

    /// The channel revocations are published on.
    pub fn revocations(&self) -> String {
        format!("{}:revocations", self.prefix)
    }

    /// Connection state recovery's log (a stream).
    pub fn recovery_log(&self) -> String {
        self.key("recovery:log")
    }

    /// A socket's record, by its private session id.
    pub fn recovery_session(&self, pid: &str) -> String {
        self.key(&format!("recovery:session:{pid}"))
    }

    /// The sockets a node has connected: pid → the node's run.
    pub fn recovery_live(&self, node: &str) -> String {
        self.key(&format!("recovery:live:{node}"))
    }
}

/// Where an outgoing message goes: the bus (PUBLISH), or connection state
/// recovery's log (XADD), which delivers it to every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Bus,
    Log,
}

/// The session tag of a node: a short, stable digest of its id, which every
/// session id it makes starts with (so a request that reaches another node
/// can be forwarded to it) and which says nothing about the node's name.
pub fn session_tag(node_id: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(node_id.as_bytes())[..4])
}

/// How the Socket.IO engine finds the node that owns a session: sids
/// carry the owner's tag, and [`Cluster::route`] knows every live node's.
pub struct Router(pub Arc<Cluster>);

impl actix_socketio::engineio::SessionRouter for Router {
    fn local_tag(&self) -> &str {
        &self.0.tag
    }

    fn resolve(&self, tag: &str) -> futures_util::future::BoxFuture<'static, Option<String>> {
        let (cluster, tag) = (self.0.clone(), tag.to_string());
        Box::pin(async move { cluster.route(&tag).await })
    }
}

/// This node's membership of the cluster.
pub struct Cluster {
    pub node: Arc<str>,
    /// Starts every session id this node makes.
    pub tag: String,
    /// Where other nodes forward requests for this node's sessions.
    pub url: String,
    pub keys: Keys,
    conn: ConnectionManager,
    outbox: mpsc::Sender<(Lane, String)>,
    /// With connection state recovery on: its settings, and the
    /// connection that waits on its log (blocking reads would hold up
    /// every other command on `conn`).
    recovery: Option<recovery::Settings>,
    reader: Option<ConnectionManager>,
    records: Option<recovery::Records>,
    /// This process's run of the node (random): its sockets' records say
    /// which run they belong to.
    pub run: Arc<str>,
    /// Queued for Redis and not yet sent (or given up on).
    unpublished: AtomicUsize,
    seq: AtomicU64,
    /// node id → the last sequence number heard from it, to count what was
    /// missed.
    heard: DashMap<String, u64>,
    /// Set when the connection dropped: subscriptions and this node's
    /// presence must be made again.
    lost: AtomicBool,
    healthy: AtomicBool,
    /// No heartbeat has answered or failed yet: the first one is logged
    /// either way.
    first_beat: AtomicBool,
    /// Events not published since the last publish that went through: an
    /// outage refuses a stream of them, logged when it starts and ends.
    failed_since_ok: AtomicU64,
    /// tag → the node's URL (or none), and when it was looked up.
    routes: DashMap<String, (Option<String>, Instant)>,
    pub stats: Arc<ClusterStats>,
    /// This node's revocations, shared with the others.
    revoked: Arc<Revocations>,
    /// Where the Admin UI's messages go (set by `realtime::admin`).
    admin: std::sync::OnceLock<AdminDeliver>,
}

/// What `Cluster::new` leaves for `Cluster::run`.
pub struct Pending {
    outbox: mpsc::Receiver<(Lane, String)>,
    records: Option<recovery::RecordsInbox>,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

impl Cluster {
    /// Connects lazily: a node starts (and serves its own sockets) while
    /// Redis is away, and joins the cluster when it comes. Runs nothing yet
    /// ([`Cluster::run`] does, inside the actix system).
    pub fn new(
        config: &Config,
        url: &str,
        metrics: &Metrics,
        revoked: Arc<Revocations>,
    ) -> Result<(Arc<Self>, Pending), ClusterError> {
        let info = redis::IntoConnectionInfo::into_connection_info(url)?;
        let settings = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let (push_tx, pushes) = mpsc::unbounded_channel();
        let manager_config = ConnectionManagerConfig::new()
            .set_push_sender(push_tx)
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let recovery = config
            .recovery_window
            .map(|window| recovery::Settings { window, max_events: config.recovery_max_events });
        let reader = match recovery {
            Some(_) => {
                let reader_config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(COMMAND_TIMEOUT * 3))
                    .set_connection_timeout(Some(COMMAND_TIMEOUT))
                    .set_max_delay(Duration::from_millis(500));
                Some(ConnectionManager::new_lazy_with_config(client.clone(), reader_config)?)
            }
            None => None,
        };
        let (records, records_inbox) = recovery.map(|_| recovery::records_channel()).unzip();
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
        let cluster = Arc::new(Self {
            node: config.node_id.as_str().into(),
            tag: session_tag(&config.node_id),
            url: config.node_url.clone(),
            keys: Keys::new(&config.redis_key_prefix),
            conn,
            outbox,
            recovery,
            reader,
            records,
            run: actix_socketio::engineio::new_sid(),
            unpublished: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            heard: DashMap::new(),
            lost: AtomicBool::new(true),
            healthy: AtomicBool::new(false),
            first_beat: AtomicBool::new(true),
            failed_since_ok: AtomicU64::new(0),
            routes: DashMap::new(),
            stats: metrics.cluster.clone(),
            revoked,
            admin: std::sync::OnceLock::new(),
        });
        Ok((cluster, Pending { outbox: outbox_rx, records: records_inbox, pushes }))
    }

    /// Starts publishing, delivering what arrives through `deliver` (and,
    /// with connection state recovery on, what its log carries through
    /// `logged`), and the heartbeat (with presence). Must run inside the
    /// actix system.
    pub fn run(
        self: &Arc<Self>,
        pending: Pending,
        deliver: Deliver,
        logged: Option<recovery::DeliverLogged>,
        presence: presence::Link,
        typing: typing::Link,
    ) {
        actix_rt::spawn(self.clone().publish_loop(pending.outbox, deliver.clone()));
        if let (Some(reader), Some(logged)) = (self.reader.clone(), logged) {
            actix_rt::spawn(self.clone().read_log(reader, logged));
        }
        if let Some(records) = pending.records {
            actix_rt::spawn(self.clone().write_records(records));
        }
        actix_rt::spawn(self.clone().dispatch_loop(pending.pushes, deliver));
        actix_rt::spawn(presence.run(self.clone()));
        actix_rt::spawn(typing.run(self.clone()));
        actix_rt::spawn(revocations::publish_loop(self.clone(), self.revoked.clone()));
    }

    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Redis answered the last heartbeat.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        let first = self.first_beat.swap(false, Ordering::Relaxed);
        if self.healthy.swap(healthy, Ordering::Relaxed) != healthy || first {
            self.stats.redis_up.store(i64::from(healthy), Ordering::Relaxed);
            if healthy {
                log::info!(target: "civicpulse::cluster", "node={} Redis answers: this node is in the cluster", self.node);
            } else {
                log::warn!(target: "civicpulse::cluster", "node={} Redis does not answer; serving this node's sockets alone until it does", self.node);
            }
        }
    }

    /// True once after the connection was lost (and at start): the caller
    /// subscribes and re-announces.
    pub(crate) fn take_lost(&self) -> bool {
        self.lost.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn mark_lost(&self) {
        self.lost.store(true, Ordering::Release);
    }

    /// Queues an event for the other nodes. Never waits: if the queue is
    /// full the event is counted and logged as not published.
    pub fn publish(&self, to: To, except_user: Option<&str>, volatile: bool, frame: &SharedMessage) {
        self.queue(to, except_user, volatile, frame, Lane::Bus);
    }

    fn queue(&self, to: To, except_user: Option<&str>, volatile: bool, frame: &SharedMessage, lane: Lane) {
        let message = BusMessage {
            node: self.node.to_string(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            to,
            except_user: except_user.map(str::to_string),
            volatile,
            packet: frame.text.get(1..).unwrap_or_default().to_string(),
        };
        let encoded = match message.encode() {
            Ok(encoded) => encoded,
            Err(e) => return self.not_published(1, &e.to_string()),
        };
        // Counted first, so that the publishing task never counts it down
        // before it is counted.
        self.unpublished.fetch_add(1, Ordering::AcqRel);
        if self.outbox.try_send((lane, encoded)).is_err() {
            self.unpublished.fetch_sub(1, Ordering::AcqRel);
            self.not_published(1, "the outbox is full");
        }
    }

    /// Where the other nodes' Admin UI messages go; the first call wins.
    pub fn on_admin(&self, deliver: AdminDeliver) {
        let _ = self.admin.set(deliver);
    }

    /// Queues an Admin UI message for the other nodes, in the same bounded
    /// outbox as the events (and counted with them if it cannot be).
    pub fn publish_admin(&self, message: &admin::AdminMessage) {
        match message.encode() {
            Ok(encoded) => {
                self.unpublished.fetch_add(1, Ordering::AcqRel);
                if self.outbox.try_send((Lane::Bus, encoded)).is_err() {
                    self.unpublished.fetch_sub(1, Ordering::AcqRel);
                    self.not_published(1, "the outbox is full");
                }
            }
            Err(e) => self.not_published(1, &e.to_string()),
        }
    }

    /// How many nodes are in the cluster, as their registrations say.
    pub async fn node_count(&self) -> Option<usize> {
        let mut conn = self.conn.clone();
        redis::cmd("HLEN").arg(self.keys.nodes()).query_async(&mut conn).await.ok()
    }

    /// Everything published so far has gone to Redis, or failed to: a
    /// stopping node waits for it before it exits.
    pub fn is_flushed(&self) -> bool {
        self.unpublished.load(Ordering::Acquire) == 0
    }

    fn not_published(&self, n: u64, why: &str) {
        self.stats.publish_failures.fetch_add(n, Ordering::Relaxed);
        if self.failed_since_ok.fetch_add(n, Ordering::Relaxed) == 0 {
            log::warn!(target: "civicpulse::cluster", "node={} events are not published to the cluster ({why}); counted until they are again", self.node);
        }
    }

    fn published(&self, n: u64) {
        self.stats.published.fetch_add(n, Ordering::Relaxed);
        let missed = self.failed_since_ok.swap(0, Ordering::Relaxed);
        if missed > 0 {
            log::info!(target: "civicpulse::cluster", "node={} events are published again; {missed} were not", self.node);
        }
    }

    async fn publish_loop(self: Arc<Self>, mut outbox: mpsc::Receiver<(Lane, String)>, deliver: Deliver) {
        let (channel, log) = (self.keys.events(), self.keys.recovery_log());
        let max_events = self.recovery.map_or(1, |s| s.max_events);
        let mut conn = self.conn.clone();
        let mut batch = Vec::with_capacity(BATCH);
        while outbox.recv_many(&mut batch, BATCH).await > 0 {
            let mut pipe = redis::pipe();
            for (lane, message) in &batch {
                match lane {
                    Lane::Bus => pipe.cmd("PUBLISH").arg(&channel).arg(message).ignore(),
                    Lane::Log => pipe
                        .cmd("XADD")
                        .arg(&log)
                        .arg("MAXLEN")
                        .arg("~")
                        .arg(max_events)
                        .arg("*")
                        .arg("m")
                        .arg(message)
                        .ignore(),
                };
            }
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => self.published(batch.len() as u64),
                Err(e) => {
                    self.not_published(batch.len() as u64, &e.to_string());
                    self.mark_lost();
                    // Logged events reach sockets only through the log:
                    // this node's still get what it could not log.
                    for (_, message) in batch.iter().filter(|(lane, _)| *lane == Lane::Log) {
                        recovery::deliver_unlogged(message, &deliver);
                    }
                }
            }
            self.unpublished.fetch_sub(batch.len(), Ordering::AcqRel);
            batch.clear();
        }
    }

    async fn dispatch_loop(self: Arc<Self>, mut pushes: mpsc::UnboundedReceiver<PushInfo>, deliver: Deliver) {
        let (events, revocations) = (self.keys.events(), self.keys.revocations());
        while let Some(push) = pushes.recv().await {
            match push.kind {
                PushKind::Message => {
                    let [Value::BulkString(channel), Value::BulkString(payload)] = push.data.as_slice()
                    else {
                        continue;
                    };
                    if channel.as_slice() == events.as_bytes() {
                        self.on_bus_message(payload, &deliver);
                    } else if channel.as_slice() == revocations.as_bytes() {
                        revocations::on_message(&self, &self.revoked, payload);
                    }
                }
                PushKind::PMessage => {
                    let [_, Value::BulkString(channel), Value::BulkString(payload)] = push.data.as_slice()
                    else {
                        continue;
                    };
                    self.on_emitter_message(channel, payload, &deliver);
                }
                PushKind::Disconnection => {
                    self.stats.disconnects.fetch_add(1, Ordering::Relaxed);
                    log::warn!(target: "civicpulse::cluster", "node={} lost its Redis connection; events the other nodes publish until it is back are missed", self.node);
                    self.mark_lost();
                    self.set_healthy(false);
                }
                _ => {}
            }
        }
    }

    fn on_bus_message(&self, payload: &[u8], deliver: &Deliver) {
        if admin::is_admin(payload) {
            return self.on_admin_message(payload);
        }
        let message = match BusMessage::decode(payload) {
            Ok(message) => message,
            Err(WireError::NotOurs) => return,
            Err(e) => {
                self.stats.decode_failures.fetch_add(1, Ordering::Relaxed);
                log::warn!(target: "civicpulse::cluster", "node={} dropped a bus message: {e}", self.node);
                return;
            }
        };
        // Our own events were delivered here when they were published.
        if *message.node == *self.node {
            return;
        }
        self.count_gap(&message.node, message.seq);
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        deliver(Inbound {
            frame: message.frame(),
            to: message.to,
            except_user: message.except_user,
            volatile: message.volatile,
        });
    }

    fn on_admin_message(&self, payload: &[u8]) {
        let Some(deliver) = self.admin.get() else { return };
        match admin::AdminMessage::decode(payload) {
            Ok(message) if *message.node() == *self.node => {}
            Ok(message) => deliver(message),
            Err(e) => {
                self.stats.decode_failures.fetch_add(1, Ordering::Relaxed);
                log::warn!(target: "civicpulse::cluster", "node={} dropped an admin message: {e}", self.node);
            }
        }
    }

    /// Counts the events of `node` that never arrived here: each node
    /// numbers what it publishes. A number lower than the last one heard
    /// is the node restarting, not a loss.
    fn count_gap(&self, node: &str, seq: u64) {
        let last = self.heard.insert(node.to_string(), seq).unwrap_or(0);
        if last > 0 && seq > last + 1 {
            let missed = seq - last - 1;
            self.stats.missed.fetch_add(missed, Ordering::Relaxed);
            log::warn!(target: "civicpulse::cluster", "node={} missed {missed} event(s) from node={node}", self.node);
        }
    }

    /// A broadcast of `@socket.io/redis-emitter` (or a Node server on
    /// `@socket.io/redis-adapter`): every node hears it and delivers it to
    /// its own matching sockets. CivicPulse's rooms are `room:issue:<id>`;
    /// several rooms or `except` (which need a socket's rooms across
    /// issues) are refused, counted and logged.
    fn on_emitter_message(&self, channel: &[u8], payload: &[u8], deliver: &Deliver) {
        let Ok(channel) = std::str::from_utf8(channel) else {
            return self.emitter_refused("the channel is not UTF-8");
        };
        let broadcast = match emitter::decode(channel, payload, emitter::DEFAULT_KEY) {
            Ok(broadcast) => broadcast,
            Err(e) => return self.emitter_refused(&e.to_string()),
        };
        let to = match (broadcast.rooms.as_slice(), broadcast.except.is_empty()) {
            ([], true) => To::Everyone,
            ([room], true) => match room.strip_prefix(ISSUE_ROOM_PREFIX) {
                Some(issue_id) if !issue_id.is_empty() => To::Room(issue_id.to_string()),
                _ => {
                    return self
                        .emitter_refused(&format!("no room {room:?} here (rooms are room:issue:<id>)"));
                }
            },
            _ => return self.emitter_refused("several rooms or except are not supported"),
        };
        self.stats.emitter_received.fetch_add(1, Ordering::Relaxed);
        deliver(Inbound { to, except_user: None, volatile: broadcast.volatile, frame: broadcast.frame });
    }

    fn emitter_refused(&self, why: &str) {
        self.stats.emitter_refused.fetch_add(1, Ordering::Relaxed);
        log::warn!(target: "civicpulse::cluster", "node={} ignored an emitter message: {why}", self.node);
    }

    /// Subscribes to the bus, the revocations and the emitters' channels
    /// (again, after a reconnect: subscribing twice is harmless), then reads
    /// the revocations made while this node was not listening.
    pub(crate) async fn subscribe(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        conn.subscribe(self.keys.events()).await?;
        conn.subscribe(self.keys.revocations()).await?;
        conn.psubscribe(emitter::broadcast_pattern(emitter::DEFAULT_KEY, NAMESPACE)).await?;
        revocations::catch_up(self, &self.revoked).await
    }

    /// The URL of the live node whose sessions carry `tag`, looked up in
    /// Redis and kept for a moment (a polling client asks many times).
    pub async fn route(&self, tag: &str) -> Option<String> {
        // A node that just started may not have registered yet: an unknown
        // tag is asked again sooner.
        const FRESH: Duration = Duration::from_secs(2);
        const FRESH_UNKNOWN: Duration = Duration::from_millis(250);
        if let Some(entry) = self.routes.get(tag)
            && entry.1.elapsed() < if entry.0.is_some() { FRESH } else { FRESH_UNKNOWN }
        {
            return entry.0.clone();
        }
        let mut conn = self.conn.clone();
        let url: Option<String> = match redis::cmd("HGET")
            .arg(self.keys.routes())
            .arg(tag)
            .query_async(&mut conn)
            .await
        {
            Ok(url) => url,
            Err(e) => {
                log::warn!(target: "civicpulse::cluster", "node={} cannot look up session tag {tag}: {e}", self.node);
                None
            }
        };
        // Bounded: tags come from clients' sids.
        if self.routes.len() > 1024 {
            self.routes.clear();
        }
        self.routes.insert(tag.to_string(), (url.clone(), Instant::now()));
        url
    }
}
