//! The Socket.IO Admin UI's protocol on `/admin` (`@socket.io/admin-ui`,
//! hosted or served from its npm package's `ui/dist`): for admins only,
//! read-only unless `ADMIN_UI_READONLY=false`.
//!
//! An admin signs in with their email and password as the UI's username
//! and password (or `auth.token`, an admin's access token). The socket is
//! sent `config` (the actions it may take), `server_stats` of every node
//! every 2 s, `all_sockets` once (every node's, gathered over the bus), then
//! `socket_connected` / `socket_updated` / `socket_disconnected` /
//! `room_joined` / `room_left` as they happen anywhere in the cluster.
//! Actions (`join`, `leave`, `_disconnect`, `emit`) go to every node, each
//! applying them to its own sockets that match the filter: a socket id, a
//! room (`room:issue:<id>`), or none for all.
//!
//! Nothing of this costs anything while no admin watches: events are built
//! only then, and a node publishes for the others only while told (within
//! `WATCHED_FOR`) that an admin watches somewhere.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_socketio::engineio::{CloseReason, Push, SharedMessage};
use actix_socketio::protocol::socket::{Packet, RESERVED_EVENTS};
use actix_socketio::socketio::{PendingAuth, SocketRef, encode_shared};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::sessions::LiveSockets;
use super::{CivicApp, CivicSocket, Membership, Reply};
use crate::cluster::Cluster;
use crate::cluster::admin::AdminMessage;
use crate::domain::{Domain, DomainError, Role, users};
use crate::limits::KeyedBucket;
use crate::metrics::Metrics;
use crate::protocol::events::{ISSUE_ROOM_PREFIX, NAMESPACE as MAIN};

pub const NAMESPACE: &str = "/admin";
const STATS_EVERY: Duration = Duration::from_secs(2);
/// How long a node keeps publishing for the others after hearing that an
/// admin watches (they say so with every stats message).
const WATCHED_FOR: Duration = Duration::from_secs(6);
/// Sockets one node lists for `all_sockets`; those of the whole listing.
const LIST_MAX: usize = 1000;
const LIST_TOTAL_MAX: usize = 10_000;
/// How long a listing waits for this node's sockets, then the others'.
const LOCAL_WAIT: Duration = Duration::from_millis(500);
const LIST_WAIT: Duration = Duration::from_millis(1500);
/// Events held for an admin socket while its listing is gathered (then
/// sent after it, so that the listing does not undo them).
const BACKLOG_MAX: usize = 1024;

/// What an admin may do to sockets, as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Action {
    Join { issue_id: String, filter: Option<String> },
    Leave { issue_id: String, filter: Option<String> },
    Disconnect { close: bool, filter: Option<String> },
    Emit { event: String, args: Vec<Value>, filter: Option<String> },
}

impl Action {
    /// Reads one of the UI's action events; `Err` is what to answer.
    pub fn from_event(name: &str, args: &[Value]) -> Result<Self, &'static str> {
        let arg = |i: usize| args.get(i).unwrap_or(&Value::Null);
        if arg(0).as_str() != Some(MAIN) {
            return Err("only the namespace \"/\" has sockets to act on");
        }
        let filter = |v: &Value| match v {
            Value::String(s) if !s.is_empty() => Ok(Some(s.clone())),
            Value::Null => Ok(None),
            _ => Err("the filter is a socket id or a room"),
        };
        let room = |v: &Value| {
            v.as_str()
                .and_then(|r| r.strip_prefix(ISSUE_ROOM_PREFIX))
                .filter(|id| crate::ids::is_valid(crate::ids::IdKind::Issue, id))
                .map(str::to_string)
                .ok_or("rooms are room:issue:<issue id>")
        };
        match name {
            "join" => Ok(Self::Join { issue_id: room(arg(1))?, filter: filter(arg(2))? }),
            "leave" => Ok(Self::Leave { issue_id: room(arg(1))?, filter: filter(arg(2))? }),
            "_disconnect" => {
                Ok(Self::Disconnect { close: arg(1).as_bool() == Some(true), filter: filter(arg(2))? })
            }
            "emit" => {
                let event = arg(2).as_str().filter(|e| !e.is_empty() && !RESERVED_EVENTS.contains(e));
                let event = event.ok_or("the event is a name of your own")?.to_string();
                Ok(Self::Emit {
                    event,
                    args: args.get(3..).unwrap_or_default().to_vec(),
                    filter: filter(arg(1))?,
                })
            }
            _ => Err("unknown event"),
        }
    }

    fn filter(&self) -> Option<&str> {
        match self {
            Self::Join { filter, .. }
            | Self::Leave { filter, .. }
            | Self::Disconnect { filter, .. }
            | Self::Emit { filter, .. } => filter.as_deref(),
        }
    }
}

/// Whether a socket is one the filter names: its id, a room it is in, or
/// every socket when there is none.
fn matches(filter: Option<&str>, state: &CivicSocket, socket_id: &str) -> bool {
    match filter {
        None => true,
        Some(f) if f == socket_id => true,
        Some(f) => f.strip_prefix(ISSUE_ROOM_PREFIX).is_some_and(|id| state.rooms.contains(id)),
    }
}

/// The socket as the UI shows it (its `SerializedSocket`).
pub fn serialize(node: &str, state: &CivicSocket, socket: &SocketRef<CivicApp>) -> Value {
    let mut rooms: Vec<String> = vec![socket.id.to_string()];
    let mut issues: Vec<&String> = state.rooms.iter().collect();
    issues.sort();
    rooms.extend(issues.into_iter().map(|id| format!("{ISSUE_ROOM_PREFIX}{id}")));
    let sid = socket.engine_sid();
    json!({
        "id": &*socket.id,
        // The sid is a polling client's credential: the reference shows
        // only its start.
        "clientId": sid.get(..12).unwrap_or(sid),
        "transport": if state.websocket { "websocket" } else { "polling" },
        "nsp": MAIN,
        "data": {
            "userId": state.user.user_id,
            "displayName": state.user.display_name,
            "role": state.user.role,
            "node": node,
        },
        "handshake": {
            "address": socket.peer.map(|ip| ip.to_string()).unwrap_or_default(),
            "headers": {},
            "query": {},
            "issued": state.connected_at,
            "time": crate::timestamp::format_ms(state.connected_at),
            "secure": false,
            "xdomain": false,
            "url": "/socket.io/",
        },
        "rooms": rooms,
    })
}

struct Watcher {
    socket: SocketRef<CivicApp>,
    /// Events held while the socket's listing is gathered.
    backlog: Option<Vec<Arc<SharedMessage>>>,
}

pub struct Admin {
    pub readonly: bool,
    node: Arc<str>,
    hostname: String,
    started: Instant,
    cluster: Option<Arc<Cluster>>,
    live: Arc<LiveSockets>,
    metrics: Arc<Metrics>,
    watchers: Mutex<Vec<Watcher>>,
    /// Until when (ms since `started`) another node's admin watches.
    watched_until: AtomicU64,
    /// Listings waiting for the other nodes' sockets, by request number.
    listings: Mutex<HashMap<u64, mpsc::UnboundedSender<Vec<Value>>>>,
    next_request: AtomicU64,
    polling: AtomicI64,
}

impl Admin {
    pub fn new(
        config: &crate::config::Config,
        cluster: Option<Arc<Cluster>>,
        live: Arc<LiveSockets>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| config.node_id.clone());
        Self {
            readonly: config.admin_ui_readonly,
            node: config.node_id.as_str().into(),
            hostname,
            started: Instant::now(),
            cluster,
            live,
            metrics,
            watchers: Mutex::default(),
            watched_until: AtomicU64::new(0),
            listings: Mutex::default(),
            next_request: AtomicU64::new(1),
            polling: AtomicI64::new(0),
        }
    }

    /// Starts the stats every 2 s and takes the other nodes' messages.
    /// Runs inside the actix system.
    pub fn start(self: &Arc<Self>, membership: Membership) {
        if let Some(cluster) = &self.cluster {
            let admin = self.clone();
            cluster.on_admin(Arc::new(move |message| admin.on_message(message, &membership)));
        }
        let admin = self.clone();
        actix::spawn(async move {
            let mut tick = tokio::time::interval(STATS_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                admin.publish_stats();
            }
        });
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn has_watchers(&self) -> bool {
        !self.watchers().is_empty()
    }

    fn watched_remotely(&self) -> bool {
        self.cluster.is_some() && self.watched_until.load(Ordering::Relaxed) > self.now_ms()
    }

    fn watched(&self) -> bool {
        self.watched_remotely() || self.has_watchers()
    }

    fn watchers(&self) -> std::sync::MutexGuard<'_, Vec<Watcher>> {
        self.watchers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn features(&self) -> Vec<&'static str> {
        if self.readonly {
            // Neither AGGREGATED_EVENTS nor ALL_EVENTS: the UI then shows its
            // sockets, rooms and clients pages.
            Vec::new()
        } else {
            vec!["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT"]
        }
    }

    fn stats(&self) -> Value {
        let sockets = self.metrics.connected_sockets.load(Ordering::Relaxed).max(0);
        let admins = self.watchers().len();
        json!({
            "serverId": &*self.node,
            "hostname": self.hostname,
            "pid": std::process::id(),
            "uptime": self.started.elapsed().as_secs_f64(),
            "clientsCount": sockets + admins as i64,
            "pollingClientsCount": self.polling.load(Ordering::Relaxed).max(0),
            "namespaces": [
                { "name": MAIN, "socketsCount": sockets },
                { "name": NAMESPACE, "socketsCount": admins },
            ],
        })
    }

    fn publish_stats(&self) {
        let (local, remote) = (self.has_watchers(), self.watched_remotely());
        if !local && !remote {
            return;
        }
        let stats = self.stats();
        if local {
            self.deliver(encode_shared(&Packet::event(NAMESPACE, "server_stats", vec![stats.clone()])));
        }
        if let Some(cluster) = &self.cluster {
            cluster.publish_admin(&AdminMessage::Stats {
                node: self.node.to_string(),
                watching: local,
                stats: stats.to_string(),
            });
        }
    }

    /// Sends an event to every admin socket of the cluster.
    fn broadcast(&self, name: &str, args: Vec<Value>) {
        let packet = Packet::event(NAMESPACE, name, args);
        if self.has_watchers() {
            self.deliver(encode_shared(&packet));
        }
        if self.watched_remotely()
            && let Some(cluster) = &self.cluster
        {
            cluster
                .publish_admin(&AdminMessage::Event { node: self.node.to_string(), packet: packet.encode() });
        }
    }

    /// To this node's admin sockets; one that cannot take it now goes
    /// without (the UI's next listing puts it right).
    fn deliver(&self, frame: Arc<SharedMessage>) {
        for watcher in self.watchers().iter_mut() {
            match &mut watcher.backlog {
                Some(backlog) if backlog.len() < BACKLOG_MAX => backlog.push(frame.clone()),
                Some(_) => {}
                None => {
                    if watcher.socket.recipient().try_send(Push::Shared(frame.clone())).is_err() {
                        log::debug!(target: "civicpulse::admin", "socket={} missed an admin event", watcher.socket.id);
                    }
                }
            }
        }
    }

    // ---- the app's sockets, as they come and go ------------------------------

    pub fn socket_connected(&self, state: &CivicSocket, socket: &SocketRef<CivicApp>) {
        if !state.websocket {
            self.polling.fetch_add(1, Ordering::Relaxed);
        }
        if self.watched() {
            let now = crate::timestamp::format_ms(state.connected_at);
            self.broadcast("socket_connected", vec![serialize(&self.node, state, socket), json!(now)]);
        }
    }

    pub fn socket_upgraded(&self, socket: &SocketRef<CivicApp>) {
        self.polling.fetch_sub(1, Ordering::Relaxed);
        if self.watched() {
            self.broadcast(
                "socket_updated",
                vec![json!({ "id": &*socket.id, "nsp": MAIN, "transport": "websocket" })],
            );
        }
    }

    pub fn socket_disconnected(&self, state: &CivicSocket, socket: &SocketRef<CivicApp>, reason: &str) {
        if !state.websocket {
            self.polling.fetch_sub(1, Ordering::Relaxed);
        }
        if self.watched() {
            for issue_id in &state.rooms {
                self.room_left(&socket.id, issue_id);
            }
            self.room_left_named(&socket.id, &socket.id);
            self.broadcast(
                "socket_disconnected",
                vec![json!(MAIN), json!(&*socket.id), json!(reason), now()],
            );
        }
    }

    pub fn room_joined(&self, socket_id: &str, issue_id: &str) {
        if self.watched() {
            let room = format!("{ISSUE_ROOM_PREFIX}{issue_id}");
            self.broadcast("room_joined", vec![json!(MAIN), json!(room), json!(socket_id), now()]);
        }
    }

    pub fn room_left(&self, socket_id: &str, issue_id: &str) {
        if self.watched() {
            self.room_left_named(socket_id, &format!("{ISSUE_ROOM_PREFIX}{issue_id}"));
        }
    }

    fn room_left_named(&self, socket_id: &str, room: &str) {
        self.broadcast("room_left", vec![json!(MAIN), json!(room), json!(socket_id), now()]);
    }

    // ---- admin sockets -------------------------------------------------------

    /// A new admin socket: its config, this node's stats at once, then
    /// the listing of every node's sockets (events meanwhile held back).
    pub fn watch(self: &Arc<Self>, socket: &SocketRef<CivicApp>) {
        socket.emit("config", vec![json!({ "supportedFeatures": self.features() })]);
        socket.emit("server_stats", vec![self.stats()]);
        self.watchers().push(Watcher { socket: socket.clone(), backlog: Some(Vec::new()) });
        let (admin, socket) = (self.clone(), socket.clone());
        actix::spawn(async move {
            let sockets = admin.list().await;
            let mut watchers = admin.watchers();
            if let Some(watcher) = watchers.iter_mut().find(|w| w.socket.id == socket.id) {
                socket.emit("all_sockets", vec![Value::Array(sockets)]);
                for frame in watcher.backlog.take().unwrap_or_default() {
                    let _ = socket.recipient().try_send(Push::Shared(frame));
                }
            }
        });
    }

    pub fn unwatch(&self, socket_id: &str) {
        self.watchers().retain(|w| &*w.socket.id != socket_id);
    }

    /// Every node's sockets (up to `LIST_MAX` each).
    async fn list(&self) -> Vec<Value> {
        let mut sockets = self.local_sockets().await;
        let Some(cluster) = &self.cluster else { return sockets };
        let req = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.listings().insert(req, tx);
        cluster.publish_admin(&AdminMessage::List { node: self.node.to_string(), req });
        let others = cluster.node_count().await.map(|n| n.saturating_sub(1));
        let deadline = tokio::time::Instant::now() + LIST_WAIT;
        let mut answered = 0;
        while others.is_none_or(|n| answered < n) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(theirs)) => {
                    answered += 1;
                    let room = LIST_TOTAL_MAX.saturating_sub(sockets.len());
                    sockets.extend(theirs.into_iter().take(room));
                }
                Ok(None) | Err(_) => break,
            }
        }
        self.listings().remove(&req);
        sockets
    }

    fn listings(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<Vec<Value>>>> {
        self.listings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node's sockets, each asked in its own session (those that end
    /// meanwhile do not answer).
    async fn local_sockets(&self) -> Vec<Value> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for socket in self.live.sockets(MAIN, LIST_MAX) {
            let (tx, node) = (tx.clone(), self.node.clone());
            socket.update(move |state, socket| {
                let _ = tx.send(serialize(&node, state, socket));
            });
        }
        drop(tx);
        let mut sockets = Vec::new();
        let deadline = tokio::time::Instant::now() + LOCAL_WAIT;
        while let Ok(Some(socket)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            sockets.push(socket);
        }
        sockets
    }

    // ---- actions ---------------------------------------------------------------

    /// An admin socket's event: an action, unless read-only.
    pub fn event(
        &self,
        membership: &Membership,
        socket: &SocketRef<CivicApp>,
        reply: Reply,
        name: &str,
        args: &[Value],
    ) {
        if self.readonly {
            log::info!(target: "civicpulse::admin", "socket={} {name} refused: read-only", socket.id);
            return reply.error("forbidden", "the Admin UI is read-only here (ADMIN_UI_READONLY)");
        }
        let action = match Action::from_event(name, args) {
            Ok(action) => action,
            Err(why) => return reply.error("invalid_input", why),
        };
        log::info!(target: "civicpulse::admin", "socket={} {action:?}", socket.id);
        if let Some(cluster) = &self.cluster
            && let Ok(action) = serde_json::to_string(&action)
        {
            cluster.publish_admin(&AdminMessage::Act { node: self.node.to_string(), action });
        }
        self.apply(membership, action);
        reply.ok(json!({ "ok": true }));
    }

    /// Applies an action to this node's matching sockets. An emit is
    /// encoded once, for all of them.
    fn apply(&self, membership: &Membership, action: Action) {
        let frame = match &action {
            Action::Emit { event, args, .. } => {
                Some(encode_shared(&Packet::event(MAIN, event, args.clone())))
            }
            _ => None,
        };
        let action = Arc::new(action);
        for socket in self.live.sockets(MAIN, usize::MAX) {
            if let Some(f) = action.filter()
                && !f.starts_with(ISSUE_ROOM_PREFIX)
                && f != &*socket.id
            {
                continue;
            }
            let (action, membership, frame) = (action.clone(), membership.clone(), frame.clone());
            socket.update(move |state, socket| {
                if !matches(action.filter(), state, &socket.id) {
                    return;
                }
                match (&*action, frame) {
                    (Action::Join { issue_id, .. }, _) => {
                        membership.join(state, socket, Reply::none(socket), issue_id.clone())
                    }
                    (Action::Leave { issue_id, .. }, _) => {
                        membership.leave(state, socket, Reply::none(socket), issue_id.clone())
                    }
                    (Action::Disconnect { close: true, .. }, _) => socket.close(CloseReason::ForcedClose),
                    (Action::Disconnect { close: false, .. }, _) => socket.disconnect(),
                    (Action::Emit { .. }, Some(frame)) => {
                        let _ = socket.recipient().try_send(Push::Shared(frame));
                    }
                    (Action::Emit { .. }, None) => {}
                }
            });
        }
    }

    fn on_message(self: &Arc<Self>, message: AdminMessage, membership: &Membership) {
        match message {
            AdminMessage::Stats { watching, stats, .. } => {
                if watching {
                    self.watched_by_others();
                }
                if self.has_watchers()
                    && let Ok(stats) = serde_json::from_str::<Value>(&stats)
                {
                    self.deliver(encode_shared(&Packet::event(NAMESPACE, "server_stats", vec![stats])));
                }
            }
            AdminMessage::Event { packet, .. } => {
                if self.has_watchers() && packet.starts_with("2/admin,") {
                    self.deliver(SharedMessage::message(&packet, Vec::new()));
                }
            }
            AdminMessage::List { node, req } => {
                self.watched_by_others();
                let Some(cluster) = self.cluster.clone() else { return };
                let admin = self.clone();
                // Answered from a task: each session is asked in turn.
                actix::spawn(async move {
                    let sockets = Value::Array(admin.local_sockets().await).to_string();
                    let me = admin.node.to_string();
                    cluster.publish_admin(&AdminMessage::Sockets { node: me, to: node, req, sockets });
                });
            }
            AdminMessage::Sockets { to, req, sockets, .. } => {
                if *to != *self.node {
                    return;
                }
                let Some(tx) = self.listings().get(&req).cloned() else { return };
                if let Ok(Value::Array(sockets)) = serde_json::from_str(&sockets) {
                    let _ = tx.send(sockets.into_iter().take(LIST_MAX).collect());
                }
            }
            AdminMessage::Act { action, .. } => match serde_json::from_str::<Action>(&action) {
                Ok(action) => self.apply(membership, action),
                Err(e) => {
                    log::warn!(target: "civicpulse::admin", "ignored an admin action from the bus: {e}")
                }
            },
        }
    }

    fn watched_by_others(&self) {
        self.watched_until.fetch_max(self.now_ms() + WATCHED_FOR.as_millis() as u64, Ordering::Relaxed);
    }
}

fn now() -> Value {
    json!(crate::timestamp::format_ms(crate::timestamp::now_ms()))
}

/// The sign-in of an admin socket, off the session's thread: a password is
/// checked as a login checks it (and draws on the same attempts per
/// address), a token must be an admin's, by their role now. Yields the
/// auth `connect` decides on: `{token}` or `{refused: <message>}`.
pub fn authenticate(
    domain: &Domain,
    attempts: Option<Arc<KeyedBucket<std::net::IpAddr>>>,
    peer: Option<std::net::IpAddr>,
    auth: &Map<String, Value>,
) -> PendingAuth {
    let text =
        |key: &str| auth.get(key).and_then(Value::as_str).filter(|s| s.len() <= 4096).map(str::to_string);
    let (token, username, password) = (text("token"), text("username"), text("password"));
    let domain = domain.clone();
    Box::pin(async move {
        let refused = |message: &str| {
            let mut auth = Map::new();
            auth.insert("refused".into(), message.into());
            auth
        };
        let token = match (token, username, password) {
            (Some(token), _, _) => {
                let Ok(claims) = domain.verify_access(&token) else { return refused("invalid credentials") };
                let id = claims.sub.clone();
                match domain.query(move |conn| users::current_role(conn, &id)).await {
                    Ok(Role::Admin) => token,
                    Ok(_) => return refused("admins only"),
                    Err(e) => return refused(&unavailable(e)),
                }
            }
            (None, Some(username), Some(password)) => {
                if let (Some(bucket), Some(ip)) = (&attempts, peer)
                    && bucket.check(&ip).is_err()
                {
                    return refused("rate_limited: too many sign-in attempts; try again later");
                }
                match users::admin_token(&domain, &username, &password).await {
                    Ok(token) => token,
                    Err(DomainError::Forbidden(_)) => return refused("admins only"),
                    Err(DomainError::Unauthorized { .. } | DomainError::Validation(_)) => {
                        return refused("invalid credentials");
                    }
                    Err(e) => return refused(&unavailable(e)),
                }
            }
            _ => return refused("invalid credentials"),
        };
        let mut auth = Map::new();
        auth.insert("token".into(), token.into());
        auth
    })
}

fn unavailable(e: DomainError) -> String {
    log::warn!(target: "civicpulse::admin", "admin sign-in failed: {e}");
    "unavailable: try again later".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> Vec<Value> {
        v.as_array().unwrap().clone()
    }

    #[test]
    fn the_uis_actions_read() {
        let id = crate::ids::new_id(crate::ids::IdKind::Issue);
        let room = format!("room:issue:{id}");
        assert_eq!(
            Action::from_event("_disconnect", &args(json!(["/", false, "sock1"]))),
            Ok(Action::Disconnect { close: false, filter: Some("sock1".into()) })
        );
        assert_eq!(
            Action::from_event("join", &args(json!(["/", room, "sock1"]))),
            Ok(Action::Join { issue_id: id.clone(), filter: Some("sock1".into()) })
        );
        assert_eq!(
            Action::from_event("leave", &args(json!(["/", room]))),
            Ok(Action::Leave { issue_id: id.clone(), filter: None })
        );
        assert_eq!(
            Action::from_event("emit", &args(json!(["/", null, "hello", 1, {"a": 2}]))),
            Ok(Action::Emit { event: "hello".into(), args: args(json!([1, {"a": 2}])), filter: None })
        );
        for (name, bad) in [
            ("_disconnect", json!(["/admin", false])),
            ("join", json!(["/", "lobby"])),
            ("join", json!(["/", "room:issue:nope"])),
            ("emit", json!(["/", null, "disconnect"])),
            ("emit", json!(["/", 5, "hello"])),
            ("nope", json!(["/"])),
        ] {
            assert!(Action::from_event(name, &args(bad.clone())).is_err(), "{name} {bad}");
        }
    }

    #[test]
    fn actions_travel() {
        let action = Action::Emit { event: "e".into(), args: vec![json!("x")], filter: Some("r".into()) };
        let text = serde_json::to_string(&action).unwrap();
        assert_eq!(serde_json::from_str::<Action>(&text).unwrap(), action);
    }
}
