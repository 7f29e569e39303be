//! CivicPulse on Socket.IO: the handshake's JWT check, the client events
//! (join:issue, leave:issue, message:send, …) and the forwarding of domain
//! events to their audience (everyone, or an issue's room).

pub mod admin;
mod limits;
mod recovery;
mod sessions;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::prelude::*;
use serde_json::{Map, Value, json};

use crate::actors::Fanout;
use crate::actors::broadcaster::{Broadcaster, Resume, Subscribe, Unsubscribe};
use crate::actors::issue_room::{Member, RoomDirectory, Typing};
use crate::actors::presence::{PresenceRegistry, SocketOffline, SocketOnline};
use crate::actors::replay::Offset;
use crate::auth::revocations::Revocation;
use crate::cluster::{ClusterError, Router};
use crate::domain::presence::{self, OnlineUser};
use crate::domain::{Domain, DomainError, Principal, WireError, issues, messages};
use crate::ids::{self, IdKind};
use crate::metrics::Metrics;
use crate::protocol::events::{self as names, Audience, error_ack, server_event, wire_error_ack};
use actix_socketio::engineio::{Engine, EngineConfig, InboundPermit};
use actix_socketio::socketio::{
    Accepted, BinaryLimits, Event, PendingAuth, Refusal, SocketApp, SocketIoFactory, SocketRef,
};
use recovery::{Outcome, Recovery};

/// The Socket.IO engine serving CivicPulse.
pub type CivicEngine = Engine<SocketIoFactory<CivicApp>>;

pub struct CivicApp {
    domain: Domain,
    rooms: Arc<RoomDirectory>,
    broadcaster: Addr<Broadcaster>,
    presence: Addr<PresenceRegistry>,
    metrics: Arc<Metrics>,
    limits: limits::EventLimits,
    shared_limits: limits::SharedBuckets,
    live: Arc<sessions::LiveSockets>,
    /// How long a socket outlives its token (seconds).
    token_grace: i64,
    membership: Membership,
    /// The Admin UI on `/admin` (`None` with `ADMIN_UI=false`).
    admin: Option<Arc<admin::Admin>>,
    auth_attempts: Option<Arc<crate::limits::KeyedBucket<std::net::IpAddr>>>,
    /// Connection state recovery (`None` with it off).
    recovery: Option<Arc<Recovery>>,
}

/// Joining and leaving issue rooms, for a socket's own events and an
/// admin's actions alike.
#[derive(Clone)]
pub struct Membership {
    domain: Domain,
    rooms: Arc<RoomDirectory>,
    max_rooms: usize,
    metrics: Arc<Metrics>,
    admin: Option<Arc<admin::Admin>>,
    /// Told of room changes (in cluster mode the socket's record has them).
    recovery: Option<Arc<Recovery>>,
}

/// What a connected socket carries: who it is and the rooms it is in.
pub struct CivicSocket {
    user: Principal,
    user_id: Arc<str>,
    /// The sign-in of the socket's token and when it expires (Unix
    /// seconds); replaced by `auth:refresh`.
    session: Option<Arc<str>>,
    expires_at: i64,
    /// When the socket is ended unless its token is refreshed.
    deadline: i64,
    rooms: HashSet<String>,
    /// What this socket may still send (see `limits`).
    buckets: limits::Buckets,
    /// An Admin UI socket (on `/admin`): it watches, it is not in rooms.
    admin: bool,
    websocket: bool,
    /// When it connected (Unix milliseconds).
    connected_at: i64,
    /// With connection state recovery on: the socket's private session id,
    /// and the log's offset its events started after.
    pid: Option<Arc<str>>,
    floor: Offset,
    /// Held while one of this socket's events that depend on each other
    /// (join, leave, message:send, typing) is handled, to its end. The lock
    /// is FIFO, so they take effect in the order the client sent them: a
    /// client that fires many `message:send`s without waiting sees them
    /// stored and delivered in that order, and a `leave:issue` right behind
    /// a `join:issue` that is still looking the issue up leaves the socket
    /// out of the room.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// The Socket.IO engine, to be mounted at `/socket.io/`, serving sockets
/// through `fanout` and forwarding domain events to them. Runs inside the
/// actix system.
pub fn start(
    domain: &Domain,
    fanout: &Fanout,
    metrics: &Arc<Metrics>,
    config: &crate::config::Config,
    auth_attempts: Option<Arc<crate::limits::KeyedBucket<std::net::IpAddr>>>,
) -> Result<Arc<CivicEngine>, ClusterError> {
    let push = fanout.push();
    domain.hub.subscribe(move |event| {
        let (audience, name, payload) = server_event(event);
        match audience {
            Audience::Everyone => push.to_everyone(name, payload),
            Audience::Room(issue_id) => push.to_room(issue_id, name, payload),
        }
    });
    let live = Arc::new(sessions::LiveSockets::new(config.max_sockets_per_user));
    end_revoked_sockets(domain, &live, metrics);
    actix::spawn(end_expired_sockets(live.clone(), metrics.clone()));
    let admin = config
        .admin_ui
        .then(|| Arc::new(admin::Admin::new(config, fanout.cluster(), live.clone(), metrics.clone())));
    let recovery = config.recovery_window.zip(fanout.log()).map(|(window, log)| {
        let node = Arc::from(config.node_id.as_str());
        let recovery = Arc::new(Recovery::new(window, log, metrics.clone(), node, fanout.cluster()));
        actix::spawn(recovery::expire_parked(recovery.clone(), fanout.presence.clone()));
        recovery
    });
    let membership = Membership {
        domain: domain.clone(),
        rooms: fanout.rooms.clone(),
        max_rooms: config.max_rooms_per_socket,
        metrics: metrics.clone(),
        admin: admin.clone(),
        recovery: recovery.clone(),
    };
    if let Some(admin) = &admin {
        admin.start(membership.clone());
    }
    let app = CivicApp {
        domain: domain.clone(),
        rooms: fanout.rooms.clone(),
        broadcaster: fanout.broadcaster.clone(),
        presence: fanout.presence.clone(),
        metrics: metrics.clone(),
        limits: limits::EventLimits::from_config(config),
        shared_limits: limits::SharedBuckets::from_config(config),
        live,
        token_grace: config.socket_token_grace.as_secs() as i64,
        membership,
        admin,
        auth_attempts,
        recovery,
    };
    let engine_config = EngineConfig {
        ping_interval: config.ping_interval,
        ping_timeout: config.ping_timeout,
        max_payload: config.max_payload_bytes,
        max_buffered_bytes: config.max_buffered_bytes,
        stats: metrics.engine.clone(),
        ..EngineConfig::default()
    };
    let binary = Arc::new(BinaryLimits {
        max_attachments: config.max_binary_attachments,
        max_packet_bytes: config.max_packet_binary_bytes,
        max_pending_bytes: config.max_pending_binary_bytes,
        stats: metrics.engine.clone(),
    });
    let factory = SocketIoFactory { app: Arc::new(app), connect_timeout: config.connect_timeout, binary };
    match fanout.cluster() {
        // No sticky sessions: a request for another node's session is
        // forwarded to it.
        Some(cluster) => {
            Engine::routed(engine_config, factory, Arc::new(Router(cluster))).map_err(ClusterError::from)
        }
        None => Ok(Engine::new(engine_config, factory)),
    }
}

impl SocketApp for CivicApp {
    type Socket = CivicSocket;

    fn authenticate(&self, socket: &SocketRef<Self>, auth: &Map<String, Value>) -> Option<PendingAuth> {
        if &*socket.namespace == admin::NAMESPACE && self.admin.is_some() {
            return Some(admin::authenticate(&self.domain, self.auth_attempts.clone(), socket.peer, auth));
        }
        // In cluster mode a socket asked back is looked up in Redis first.
        let recovery = self
            .recovery
            .as_ref()
            .filter(|r| &*socket.namespace == names::NAMESPACE && r.needs_lookup(auth))?;
        let user_id =
            auth.get("token").and_then(Value::as_str).and_then(|t| self.domain.verify_access(t).ok())?.sub;
        let (recovery, mut auth) = (recovery.clone(), auth.clone());
        Some(Box::pin(async move {
            let nonce = recovery.look_up(auth.clone(), user_id.to_string()).await;
            auth.insert(recovery::RESUMED.into(), Value::String(nonce.to_string()));
            auth
        }))
    }

    fn connect(
        &self,
        socket: &SocketRef<Self>,
        auth: &Map<String, Value>,
    ) -> Result<Accepted<CivicSocket>, Refusal> {
        if &*socket.namespace == admin::NAMESPACE
            && let Some(admin) = &self.admin
        {
            return self.connect_admin(admin, socket, auth).map(Accepted::new);
        }
        if &*socket.namespace != names::NAMESPACE {
            return Err(Refusal::InvalidNamespace);
        }
        // Checked again on recovery: an expired or revoked token is refused
        // whatever the socket it asks back.
        let claims =
            auth.get("token").and_then(Value::as_str).and_then(|t| self.domain.verify_access(t).ok());
        let Some(claims) = claims else {
            self.metrics.handshake_failures.fetch_add(1, Ordering::Relaxed);
            log::info!(target: "civicpulse::socket", "sid={} handshake refused: authentication failed", socket.engine_sid());
            return Err(Refusal::Refused { message: "Authentication failed".into(), close: true });
        };
        let user_id: Arc<str> = claims.sub.as_str().into();
        let start = self.start_socket(socket, auth, &user_id);
        let socket = &start.socket;
        let deadline = claims.exp + self.token_grace;
        if let sessions::Admission::Refused { first } = self.live.admit(&user_id, socket, deadline) {
            self.metrics.socket_cap_refusals.fetch_add(1, Ordering::Relaxed);
            if first {
                log::warn!(target: "civicpulse::limits", "user={user_id} is at MAX_SOCKETS_PER_USER; refusing more of their sockets");
            }
            // A socket that was to come back goes for good.
            for gone in start.stale.iter().chain(start.online_here.then_some(&start.socket.id)) {
                self.presence
                    .do_send(SocketOffline { user_id: user_id.to_string(), socket_id: gone.clone() });
            }
            return Err(Refusal::Refused {
                message: "limit_reached: too many sockets for this user".into(),
                close: true,
            });
        }
        let (session, expires_at) = (claims.sid.as_deref().map(Arc::from), claims.exp);
        let user = Principal::from(claims);
        log::info!(target: "civicpulse::socket", "sid={} socket={} connected user={} recovered={}", socket.engine_sid(), socket.id, user.user_id, start.recovered);
        self.metrics.connected_sockets.fetch_add(1, Ordering::Relaxed);
        let resume = self.recovery.as_ref().map(|_| Resume {
            after: start.floor,
            rooms: start.rooms.iter().map(|r| Arc::from(r.as_str())).collect(),
        });
        self.broadcaster.do_send(Subscribe {
            socket_id: socket.id.clone(),
            user_id: user.user_id.as_str().into(),
            recipient: socket.recipient(),
            resume,
        });
        for issue_id in &start.rooms {
            let member = Member {
                socket_id: socket.id.clone(),
                user_id: user_id.clone(),
                recipient: socket.recipient(),
            };
            self.rooms.join(issue_id, member);
        }
        // Back on the node it left, it is still online here: its offline
        // was put off while it was away.
        if !start.online_here {
            // After Subscribe, so this socket hears its own user come online.
            let online = OnlineUser {
                user_id: user.user_id.clone(),
                display_name: user.display_name.clone(),
                city: user.city.clone(),
            };
            self.presence.do_send(SocketOnline { user: online, socket_id: socket.id.clone() });
        }
        // After the fresh socket is online: the user does not flap.
        if let Some(stale) = &start.stale {
            self.presence.do_send(SocketOffline { user_id: user_id.to_string(), socket_id: stale.clone() });
        }
        let state = CivicSocket {
            user_id,
            user,
            session,
            expires_at,
            deadline,
            rooms: start.rooms.iter().cloned().collect(),
            buckets: limits::Buckets::new(&self.limits),
            admin: false,
            websocket: socket.websocket,
            connected_at: crate::timestamp::now_ms(),
            pid: start.pid.clone(),
            floor: start.floor,
            turn: Arc::default(),
        };
        if let Some(admin) = &self.admin {
            admin.socket_connected(&state, socket);
        }
        if let (Some(recovery), Some(pid)) = (&self.recovery, &state.pid) {
            recovery.track(pid, &socket.id, &state.user_id, &start.rooms, state.floor, true);
        }
        Ok(Accepted {
            state,
            id: start.recovered.then(|| socket.id.clone()),
            reply: start.pid.as_ref().map(Recovery::reply).unwrap_or_default(),
            before: start.missed,
            after: Vec::new(),
        })
    }

    fn event(&self, state: &mut CivicSocket, socket: &SocketRef<Self>, event: Event) {
        let reply = Reply { socket: socket.clone(), ack: event.ack, _permit: Some(event.permit) };
        let shared = &self.shared_limits;
        let (verdict, first_refusal) = state.buckets.check(|| shared.allow(&state.user_id, socket.peer));
        if first_refusal {
            log::warn!(target: "civicpulse::limits", "socket={} user={} is over its event rate; its events are refused", socket.id, state.user.user_id);
        }
        match verdict {
            limits::Verdict::Pass => {}
            limits::Verdict::Refuse => {
                self.metrics.socket_events_refused.fetch_add(1, Ordering::Relaxed);
                return reply.error("rate_limited", "too many events: slow down");
            }
            limits::Verdict::Disconnect => {
                self.metrics.flood_disconnects.fetch_add(1, Ordering::Relaxed);
                log::warn!(target: "civicpulse::limits", "socket={} user={} kept flooding; disconnected", socket.id, state.user.user_id);
                return socket.close(actix_socketio::engineio::CloseReason::ForcedClose);
            }
            limits::Verdict::Gone => return,
        }
        if state.admin {
            if let Some(admin) = &self.admin {
                admin.event(&self.membership, socket, reply, &event.name, &event.args);
            }
            return;
        }
        let first = event.args.first().cloned().unwrap_or(Value::Null);
        if event.name == names::AUTH_REFRESH {
            return self.refresh_token(state, socket, reply, first);
        }
        if chrono::Utc::now().timestamp() >= state.expires_at {
            return reply
                .error("token_expired", "the access token expired: send auth:refresh with a new one");
        }
        match event.name.as_str() {
            names::JOIN_ISSUE | names::LEAVE_ISSUE => {
                let Some(issue_id) =
                    first.as_str().filter(|id| ids::is_valid(IdKind::Issue, id)).map(str::to_string)
                else {
                    return reply.error("not_found", "issue not found");
                };
                if event.name == names::JOIN_ISSUE {
                    self.membership.join(state, socket, reply, issue_id);
                } else {
                    self.membership.leave(state, socket, reply, issue_id);
                }
            }
            names::MESSAGE_SEND => self.send_message(state, reply, first),
            names::USER_TYPING => self.typing(state, socket, reply, first),
            names::PRESENCE_LIST => self.list_presence(reply, first),
            other => {
                log::debug!(target: "civicpulse::socket", "socket={} unknown event {other:?}", socket.id);
                reply.error("unknown_event", "unknown event");
            }
        }
    }

    fn upgraded(&self, state: &mut CivicSocket, socket: &SocketRef<Self>) {
        state.websocket = true;
        if !state.admin
            && let Some(admin) = &self.admin
        {
            admin.socket_upgraded(socket);
        }
    }

    fn disconnect(&self, mut state: CivicSocket, socket: &SocketRef<Self>, reason: &str) {
        if state.admin {
            log::info!(target: "civicpulse::admin", "socket={} admin={} left the Admin UI ({reason})", socket.id, state.user_id);
            self.live.remove(&state.user_id, &socket.id, state.deadline);
            if let Some(admin) = &self.admin {
                admin.unwatch(&socket.id);
            }
            return;
        }
        if let Some(admin) = &self.admin {
            admin.socket_disconnected(&state, socket, reason);
        }
        log::info!(target: "civicpulse::socket", "sid={} socket={} disconnected user={} reason={reason}", socket.engine_sid(), socket.id, state.user.user_id);
        self.metrics.connected_sockets.fetch_sub(1, Ordering::Relaxed);
        self.live.remove(&state.user_id, &socket.id, state.deadline);
        self.broadcaster.do_send(Unsubscribe { socket_id: socket.id.clone() });
        let rooms: Vec<String> = state.rooms.drain().collect();
        for issue_id in &rooms {
            self.rooms.leave(issue_id, socket.id.clone());
        }
        // A connection lost (not a goodbye) may come back within the
        // window: the user stays online meanwhile.
        if let (Some(recovery), Some(pid)) = (&self.recovery, state.pid.take()) {
            if Recovery::recoverable(reason) {
                return recovery.park(pid, socket.id.clone(), state.user_id, rooms, state.floor);
            }
            recovery.forget(&pid);
        }
        self.presence.do_send(SocketOffline { user_id: state.user.user_id, socket_id: socket.id.clone() });
    }
}

impl CivicApp {
    /// An admin, signed in by `admin::authenticate`: watches, and is ended
    /// by a role change or a revocation, not by its token's expiry (the UI
    /// has no way to refresh it).
    fn connect_admin(
        &self,
        admin: &Arc<admin::Admin>,
        socket: &SocketRef<Self>,
        auth: &Map<String, Value>,
    ) -> Result<CivicSocket, Refusal> {
        let refuse = |message: &str| {
            log::info!(target: "civicpulse::admin", "sid={} Admin UI refused: {message}", socket.engine_sid());
            Err(Refusal::Refused { message: message.into(), close: true })
        };
        if let Some(message) = auth.get("refused").and_then(Value::as_str) {
            return refuse(message);
        }
        let claims =
            auth.get("token").and_then(Value::as_str).and_then(|t| self.domain.verify_access(t).ok());
        let Some(claims) = claims.filter(|c| c.role == crate::domain::Role::Admin) else {
            return refuse("invalid credentials");
        };
        let user_id: Arc<str> = claims.sub.as_str().into();
        if let sessions::Admission::Refused { .. } = self.live.admit(&user_id, socket, i64::MAX) {
            return refuse("limit_reached: too many sockets for this user");
        }
        log::info!(target: "civicpulse::admin", "sid={} socket={} admin={} opened the Admin UI", socket.engine_sid(), socket.id, user_id);
        admin.watch(socket);
        Ok(CivicSocket {
            user_id,
            session: claims.sid.as_deref().map(Arc::from),
            user: Principal::from(claims),
            expires_at: i64::MAX,
            deadline: i64::MAX,
            rooms: HashSet::new(),
            buckets: limits::Buckets::new(&self.limits),
            admin: true,
            websocket: socket.websocket,
            connected_at: crate::timestamp::now_ms(),
            pid: None,
            floor: 0,
            turn: Arc::default(),
        })
    }

    /// How a socket of `user_id` starts: fresh, or (with recovery on) as
    /// the parked socket its client asks back.
    fn start_socket(&self, socket: &SocketRef<Self>, auth: &Map<String, Value>, user_id: &str) -> Start {
        let fresh = |stale: Option<Arc<str>>, pid, floor| Start {
            socket: socket.clone(),
            recovered: false,
            online_here: false,
            pid,
            floor,
            rooms: Vec::new(),
            missed: Vec::new(),
            stale,
        };
        let Some(recovery) = &self.recovery else { return fresh(None, None, 0) };
        match recovery.resume(auth, user_id) {
            Outcome::Recovered { parked, missed, head } => Start {
                online_here: parked.node == *recovery.node(),
                socket: socket.with_id(parked.socket_id),
                recovered: true,
                pid: auth.get("pid").and_then(Value::as_str).map(Arc::from),
                floor: head,
                rooms: parked.rooms,
                missed,
                stale: None,
            },
            Outcome::Fresh { stale } => {
                // Another node's parked socket is that node's to let go.
                let stale = stale.filter(|p| p.node == *recovery.node()).map(|p| p.socket_id);
                fresh(stale, Some(Recovery::new_pid()), recovery.head())
            }
        }
    }
}

/// How a socket starts (see `CivicApp::start_socket`).
struct Start {
    /// Its handle: with the parked socket's id when it is recovered.
    socket: SocketRef<CivicApp>,
    recovered: bool,
    /// This node's presence still counts it (it was parked here).
    online_here: bool,
    pid: Option<Arc<str>>,
    /// The log's offset its events start after.
    floor: Offset,
    /// The rooms it is back in.
    rooms: Vec<String>,
    /// What it missed, for before the CONNECT reply.
    missed: Vec<Arc<actix_socketio::engineio::SharedMessage>>,
    /// The parked socket its client asked for in vain.
    stale: Option<Arc<str>>,
}

impl Membership {
    fn rooms_changed(&self, state: &CivicSocket, socket: &SocketRef<CivicApp>) {
        if let (Some(recovery), Some(pid)) = (&self.recovery, &state.pid) {
            let rooms: Vec<String> = state.rooms.iter().cloned().collect();
            recovery.track(pid, &socket.id, &state.user_id, &rooms, state.floor, false);
        }
    }

    fn join(&self, state: &CivicSocket, socket: &SocketRef<CivicApp>, reply: Reply, issue_id: String) {
        let domain = self.domain.clone();
        let rooms = self.rooms.clone();
        let socket = socket.clone();
        let turn = state.turn.clone();
        let (max_rooms, metrics, admin) = (self.max_rooms, self.metrics.clone(), self.admin.clone());
        let membership = self.clone();
        actix::spawn(async move {
            let _turn = turn.lock().await;
            // A room already open here needs no lookup: at a popular issue's
            // peak, thousands of joins would otherwise each take a database
            // connection and a blocking thread to learn what the room says.
            let found = if rooms.is_open(&issue_id) {
                Ok(())
            } else {
                issues::get(&domain, issue_id.clone()).await.map(drop)
            };
            match found {
                Ok(()) => socket.update(move |state, socket| {
                    if !state.rooms.contains(&issue_id) && state.rooms.len() >= max_rooms {
                        metrics.room_cap_refusals.fetch_add(1, Ordering::Relaxed);
                        return reply.error("limit_reached", "in too many rooms: leave one first");
                    }
                    if state.rooms.insert(issue_id.clone()) {
                        let member = Member {
                            socket_id: socket.id.clone(),
                            user_id: state.user_id.clone(),
                            recipient: socket.recipient(),
                        };
                        rooms.join(&issue_id, member);
                        if let Some(admin) = &admin {
                            admin.room_joined(&socket.id, &issue_id);
                        }
                        membership.rooms_changed(state, socket);
                    }
                    reply.ok(json!({ "ok": true }));
                }),
                Err(e) => reply.domain_error(e),
            }
        });
    }

    fn leave(&self, state: &CivicSocket, socket: &SocketRef<CivicApp>, reply: Reply, issue_id: String) {
        let (rooms, admin, membership) = (self.rooms.clone(), self.admin.clone(), self.clone());
        in_turn(state, socket, move |state, socket| {
            if state.rooms.remove(&issue_id) {
                rooms.leave(&issue_id, socket.id.clone());
                if let Some(admin) = &admin {
                    admin.room_left(&socket.id, &issue_id);
                }
                membership.rooms_changed(state, socket);
            }
            reply.ok(json!({ "ok": true }));
        });
    }
}

impl CivicApp {
    fn send_message(&self, state: &CivicSocket, reply: Reply, body: Value) {
        let issue_id = body.get("issueId").and_then(Value::as_str).map(str::to_string);
        let content = messages::content_from_json(&body);
        let (issue_id, content) = match (issue_id, content) {
            (Some(id), Ok(content)) => (id, content),
            (None, _) => return reply.domain_error(DomainError::invalid("issueId", "is required")),
            (_, Err(e)) => return reply.domain_error(e),
        };
        let domain = self.domain.clone();
        let user = state.user.clone();
        let turn = state.turn.clone();
        actix::spawn(async move {
            // In turn until it is queued: the writer keeps the order from
            // there, acknowledgements included.
            let _turn = turn.lock().await;
            messages::submit(&domain, &user, issue_id, content, move |outcome| match outcome {
                Ok(message) => reply.ok(json!({ "ok": true, "message": message })),
                Err(e) => reply.domain_error(e),
            })
            .await;
        });
    }
}

impl CivicApp {
    fn typing(&self, state: &CivicSocket, socket: &SocketRef<Self>, reply: Reply, body: Value) {
        let issue_id = body.get("issueId").and_then(Value::as_str);
        let is_typing = body.get("isTyping").and_then(Value::as_bool);
        let (Some(issue_id), Some(is_typing)) = (issue_id.map(str::to_string), is_typing) else {
            return reply
                .domain_error(DomainError::invalid("body", "expected {issueId: string, isTyping: boolean}"));
        };
        let rooms = self.rooms.clone();
        // After any join or leave still under way.
        in_turn(state, socket, move |state, socket| {
            if !state.rooms.contains(&issue_id) {
                return reply.error("forbidden", "join the issue's room first");
            }
            rooms.typing(
                &issue_id,
                Typing {
                    socket_id: socket.id.clone(),
                    user_id: state.user_id.clone(),
                    display_name: state.user.display_name.clone(),
                    is_typing,
                },
            );
            reply.ok(json!({ "ok": true }));
        });
    }

    fn list_presence(&self, reply: Reply, body: Value) {
        // The payload is optional, but when there is one it is `{city?}`.
        if !(body.is_null() || body.is_object()) {
            return reply.domain_error(DomainError::invalid("body", "expected {city?: string}"));
        }
        let city = match body.get("city") {
            None | Some(Value::Null) => None,
            Some(Value::String(city)) => Some(city.clone()),
            Some(_) => return reply.domain_error(DomainError::invalid("city", "must be a city slug")),
        };
        let domain = self.domain.clone();
        actix::spawn(async move {
            match presence::list(&domain, city).await {
                Ok(items) => reply.ok(json!({ "ok": true, "items": items })),
                Err(e) => reply.domain_error(e),
            }
        });
    }
}

impl CivicApp {
    /// `auth:refresh {token}`: a fresh access token of the same user keeps
    /// the socket past the old one's expiry, with the new token's claims.
    fn refresh_token(&self, state: &mut CivicSocket, socket: &SocketRef<Self>, reply: Reply, body: Value) {
        let Some(token) =
            body.get("token").and_then(Value::as_str).filter(|t| !t.is_empty() && t.len() <= 4096)
        else {
            return reply.domain_error(DomainError::invalid("token", "is required"));
        };
        let claims = match self.domain.verify_access(token) {
            Ok(claims) if *claims.sub == *state.user_id => claims,
            Ok(_) => return reply.error("forbidden", "the token is another user's"),
            Err(e) => return reply.domain_error(e),
        };
        let deadline = claims.exp + self.token_grace;
        if deadline != state.deadline {
            self.live.move_deadline(socket, state.deadline, deadline);
            state.deadline = deadline;
        }
        state.session = claims.sid.as_deref().map(Arc::from);
        state.expires_at = claims.exp;
        state.user = Principal::from(claims);
        log::debug!(target: "civicpulse::socket", "socket={} user={} token refreshed", socket.id, state.user_id);
        reply.ok(json!({ "ok": true, "expiresAt": crate::timestamp::format_ms(state.expires_at * 1000) }));
    }
}

/// Tells a socket why, then disconnects it from the server's side: its
/// client does not reconnect by itself, but can once it has a new token.
fn end_socket(socket: &SocketRef<CivicApp>, reason: &str) {
    socket.emit(names::SESSION_ENDED, vec![json!({ "reason": reason })]);
    socket.disconnect();
}

/// Ends, every second, the sockets whose token expired more than the grace
/// ago without an `auth:refresh`.
async fn end_expired_sockets(live: Arc<sessions::LiveSockets>, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = chrono::Utc::now().timestamp();
        for socket in live.due(now) {
            let metrics = metrics.clone();
            socket.clone().update(move |state, socket| {
                // A refresh may have moved the deadline since.
                if state.deadline <= now {
                    metrics.sockets_expired.fetch_add(1, Ordering::Relaxed);
                    log::info!(target: "civicpulse::socket", "socket={} user={} token expired; disconnecting", socket.id, state.user_id);
                    end_socket(socket, "token_expired");
                }
            });
        }
    }
}

/// A logout, a revocation or a role change (here or, in cluster mode, on
/// another node) ends the sockets it covers on this node.
fn end_revoked_sockets(domain: &Domain, live: &Arc<sessions::LiveSockets>, metrics: &Arc<Metrics>) {
    let (live, metrics) = (live.clone(), metrics.clone());
    domain.revocations.listen(move |revocation, _| {
        for socket in live.of_user(&revocation.user_id) {
            let (revocation, metrics): (Revocation, _) = (revocation.clone(), metrics.clone());
            socket.clone().update(move |state, socket| {
                if revocation.covers(&state.user_id, state.session.as_deref()) {
                    metrics.sockets_revoked.fetch_add(1, Ordering::Relaxed);
                    log::info!(target: "civicpulse::socket", "socket={} user={} {}; disconnecting", socket.id, state.user_id, revocation.reason.as_str());
                    end_socket(socket, revocation.reason.as_str());
                }
            });
        }
    });
}

/// Runs `f` on the socket's state in its turn: after the socket's events
/// before it are done (their updates are queued in the session's mailbox
/// ahead of this one).
fn in_turn(
    state: &CivicSocket,
    socket: &SocketRef<CivicApp>,
    f: impl FnOnce(&mut CivicSocket, &SocketRef<CivicApp>) + Send + 'static,
) {
    let turn = state.turn.clone();
    let socket = socket.clone();
    actix::spawn(async move {
        let _turn = turn.lock().await;
        socket.update(f);
    });
}

/// The acknowledgement a client may have asked for. Every path of an event
/// ends by answering it, so it also carries the event's inbound permit: the
/// event counts against the socket's bound on events in hand (the server
/// stops reading from a client that floods) until its reply is dropped,
/// after the work — a lookup, a stored message — is done.
pub struct Reply {
    socket: SocketRef<CivicApp>,
    ack: Option<u64>,
    _permit: Option<InboundPermit>,
}

impl Reply {
    /// For work nobody waits on (an admin's action on another socket).
    fn none(socket: &SocketRef<CivicApp>) -> Self {
        Self { socket: socket.clone(), ack: None, _permit: None }
    }

    fn ok(&self, payload: Value) {
        if let Some(id) = self.ack {
            self.socket.ack(id, vec![payload], Vec::new());
        }
    }

    fn error(&self, code: &str, message: &str) {
        self.ok(error_ack(code, message));
    }

    /// Same codes, messages and details as the REST API gives for the
    /// same failure: both are made from the domain's `WireError`.
    fn domain_error(&self, e: DomainError) {
        self.ok(wire_error_ack(WireError::from(e)));
    }
}
