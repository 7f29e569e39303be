//! Connection state recovery for the app's sockets
//! (`CONNECTION_STATE_RECOVERY_SECS`), as Socket.IO's reference server
//! does it: every socket gets a private `pid` in its CONNECT reply; one
//! that loses its connection (not one whose client said goodbye) is parked
//! for the window with its id, user and rooms; a client that comes back in
//! time with `{token, pid, offset}` gets the same socket back, its rooms,
//! and every event it missed, before the CONNECT reply. Anything less (an
//! unknown or expired `pid`, an offset the log no longer reaches) is a
//! fresh socket, never a partial replay.
//!
//! The user stays online while parked: their offline presence waits for
//! the window's end, so a recovered socket's presence does not flap.
//!
//! In cluster mode the parked sockets and the log are the cluster's, in
//! Redis (`cluster::recovery`), so a socket comes back through any node.
//! Looking it up must not hold the session's thread, so it is done in
//! `SocketApp::authenticate`, and its outcome waits here for `connect`
//! under a nonce only that lookup knows. The node a socket left keeps it
//! for its own presence until the window ends.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde_json::{Map, Value};

use crate::actors::presence::{PresenceRegistry, SocketOffline};
use crate::actors::replay::{EventLog, Offset, Target};
use crate::cluster::Cluster;
use crate::cluster::recovery::{Record, RecordWrite};
use crate::metrics::Metrics;
use actix_socketio::engineio::SharedMessage;

/// The Socket.IO disconnect reasons after which a client reconnects by
/// itself and may come back as itself.
const RECOVERABLE: [&str; 4] = ["transport close", "transport error", "ping timeout", "server shutting down"];

/// The auth key under which a cluster lookup's outcome waits for
/// `connect` (one a client sends names nothing: the nonce is random).
pub const RESUMED: &str = "\u{0}resumed";

/// How long a lookup's outcome waits for its `connect`.
const RESUMED_TTL: Duration = Duration::from_secs(60);

/// A socket that lost its connection, waiting for its client.
pub struct Parked {
    pub socket_id: Arc<str>,
    pub user_id: Arc<str>,
    pub rooms: Vec<String>,
    /// The offset its events started after (for a client that has seen
    /// none since: it sends no offset).
    pub floor: Offset,
    /// The node it was on.
    pub node: Arc<str>,
    until: Instant,
}

impl Parked {
    /// Whether an event for `target` was meant for it.
    fn wants(&self, target: &Target) -> bool {
        target.reaches(&self.user_id, |room| self.rooms.iter().any(|r| r == room))
    }

    /// Where its replay starts: after the client's offset or, with none
    /// (it has seen no event since), the socket's floor; an older offset,
    /// from an earlier socket of the same client, asks for nothing more.
    /// `None` for an offset that is not one.
    fn after(&self, auth: &Map<String, Value>) -> Option<Offset> {
        let after = match auth.get("offset") {
            None | Some(Value::Null) => Some(self.floor),
            Some(Value::String(offset)) => offset.parse::<Offset>().ok(),
            Some(_) => None,
        };
        after.map(|after| after.max(self.floor))
    }
}

/// What a CONNECT with recovery on comes to.
pub enum Outcome {
    /// The socket is back: `missed` go before the CONNECT reply, and its
    /// events resume after `head`.
    Recovered { parked: Parked, missed: Vec<Arc<SharedMessage>>, head: Offset },
    /// A fresh socket. `stale` is the parked socket the client asked for
    /// when it could not be brought back: its user goes offline with it
    /// now (after the fresh socket is online, so presence does not flap).
    Fresh { stale: Option<Parked> },
}

pub struct Recovery {
    window: Duration,
    /// The node's log (in cluster mode, what it has read of the cluster's).
    log: Arc<dyn EventLog>,
    /// By pid: this node's sockets waiting for their clients (in cluster
    /// mode for presence only: Redis has what brings them back).
    parked: Mutex<HashMap<Arc<str>, Parked>>,
    metrics: Arc<Metrics>,
    node: Arc<str>,
    cluster: Option<Arc<Cluster>>,
    /// Cluster lookups' outcomes waiting for their `connect`, by nonce.
    resumed: Mutex<HashMap<Arc<str>, (Outcome, Instant)>>,
}

impl Recovery {
    pub fn new(
        window: Duration,
        log: Arc<dyn EventLog>,
        metrics: Arc<Metrics>,
        node: Arc<str>,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        Self { window, log, parked: Mutex::default(), metrics, node, cluster, resumed: Mutex::default() }
    }

    /// This node's id.
    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    /// A new private session id.
    pub fn new_pid() -> Arc<str> {
        actix_socketio::engineio::new_sid()
    }

    /// Where a fresh socket's events start (what it is subscribed after).
    pub fn head(&self) -> Offset {
        self.log.head()
    }

    /// The CONNECT reply's extra field.
    pub fn reply(pid: &Arc<str>) -> Map<String, Value> {
        let mut reply = Map::new();
        reply.insert("pid".into(), Value::String(pid.to_string()));
        reply
    }

    pub fn recoverable(reason: &str) -> bool {
        RECOVERABLE.contains(&reason)
    }

    /// Keeps a socket that lost its connection for the window (in cluster
    /// mode in Redis too, for any node to bring back).
    pub fn park(
        &self,
        pid: Arc<str>,
        socket_id: Arc<str>,
        user_id: Arc<str>,
        rooms: Vec<String>,
        floor: Offset,
    ) {
        if let Some(cluster) = &self.cluster {
            let record = Self::record(&socket_id, &user_id, &rooms, floor);
            cluster.write_record(RecordWrite::Parked { pid: pid.to_string(), record });
        }
        let (until, node) = (Instant::now() + self.window, self.node.clone());
        self.parked().insert(pid, Parked { socket_id, user_id, rooms, floor, node, until });
    }

    /// In cluster mode: a connected socket's record, so that it can be
    /// recovered even if this node dies without a goodbye; `connected`
    /// when it just connected, else its rooms changed.
    pub fn track(
        &self,
        pid: &str,
        socket_id: &str,
        user_id: &str,
        rooms: &[String],
        floor: Offset,
        connected: bool,
    ) {
        if let Some(cluster) = &self.cluster {
            let record = Self::record(socket_id, user_id, rooms, floor);
            cluster.write_record(RecordWrite::Live { pid: pid.to_string(), record, create: connected });
        }
    }

    /// In cluster mode: a socket that said goodbye (or was ended) is not
    /// to be recovered.
    pub fn forget(&self, pid: &str) {
        if let Some(cluster) = &self.cluster {
            cluster.write_record(RecordWrite::Gone { pid: pid.to_string() });
        }
    }

    /// The node and run are the cluster's to fill in.
    fn record(socket_id: &str, user_id: &str, rooms: &[String], floor: Offset) -> Record {
        Record {
            socket_id: socket_id.to_string(),
            user_id: user_id.to_string(),
            rooms: rooms.to_vec(),
            floor,
            node: String::new(),
            run: String::new(),
        }
    }

    /// Whether a CONNECT with `auth` needs the cluster looked up first
    /// ([`Recovery::look_up`], off the session's thread).
    pub fn needs_lookup(&self, auth: &Map<String, Value>) -> bool {
        self.cluster.is_some() && auth.get("pid").is_some_and(Value::is_string)
    }

    /// In cluster mode: brings back from Redis the socket `auth.pid` names,
    /// if it is `user_id`'s and every event after `auth.offset` is still in
    /// the cluster's log; answers the nonce its outcome waits under.
    pub async fn look_up(self: Arc<Self>, auth: Map<String, Value>, user_id: String) -> Arc<str> {
        let outcome = self.resume_shared(&auth, &user_id).await;
        let nonce = Self::new_pid();
        self.lookups().insert(nonce.clone(), (outcome, Instant::now()));
        nonce
    }

    async fn resume_shared(&self, auth: &Map<String, Value>, user_id: &str) -> Outcome {
        let (Some(cluster), Some(pid)) = (&self.cluster, auth.get("pid").and_then(Value::as_str)) else {
            return Outcome::Fresh { stale: None };
        };
        let record = match cluster.take_parked(pid, user_id).await {
            Ok(Some(record)) => record,
            Ok(None) => return self.failed(pid, "unknown or expired pid", None),
            Err(e) => return self.failed(pid, &format!("Redis: {e}"), None),
        };
        // Back on the node it left: that node's presence entry goes with it.
        if *record.node == *self.node {
            self.parked().remove(pid);
        }
        let parked = Parked {
            socket_id: record.socket_id.into(),
            user_id: record.user_id.into(),
            rooms: record.rooms,
            floor: record.floor,
            node: record.node.into(),
            until: Instant::now(),
        };
        let Some(after) = parked.after(auth) else {
            return self.failed(pid, "malformed offset", Some(parked));
        };
        match cluster.logged_since(after, |target| parked.wants(target)).await {
            Ok(Ok((missed, head))) => self.recovered(parked, missed, head),
            Ok(Err(_)) => self.failed(pid, "its offset is no longer in the cluster's log", Some(parked)),
            Err(e) => self.failed(pid, &format!("Redis: {e}"), Some(parked)),
        }
    }

    /// Brings back the socket `auth.pid` names, if it is `user_id`'s, still
    /// parked, and every event after `auth.offset` is still in the log (in
    /// cluster mode: what the lookup found).
    pub fn resume(&self, auth: &Map<String, Value>, user_id: &str) -> Outcome {
        if self.cluster.is_some() {
            let nonce = auth.get(RESUMED).and_then(Value::as_str).unwrap_or_default();
            return self
                .lookups()
                .remove(nonce)
                .map_or(Outcome::Fresh { stale: None }, |(outcome, _)| outcome);
        }
        let Some(pid) = auth.get("pid").and_then(Value::as_str) else {
            return Outcome::Fresh { stale: None };
        };
        let parked = {
            let mut all = self.parked();
            // Another user's pid is as good as unknown (and stays parked).
            let theirs = all.get(pid).is_some_and(|p| &*p.user_id == user_id && p.until > Instant::now());
            if theirs { all.remove(pid) } else { None }
        };
        let Some(parked) = parked else {
            return self.failed(pid, "unknown or expired pid", None);
        };
        let Some(after) = parked.after(auth) else {
            return self.failed(pid, "malformed offset", Some(parked));
        };
        match self.log.since(after, &|target| parked.wants(target)) {
            Ok((missed, head)) => self.recovered(parked, missed, head),
            Err(_) => self.failed(pid, "its offset is no longer in the log", Some(parked)),
        }
    }

    fn recovered(&self, parked: Parked, missed: Vec<Arc<SharedMessage>>, head: Offset) -> Outcome {
        self.metrics.recoveries.fetch_add(1, Ordering::Relaxed);
        log::info!(target: "civicpulse::recovery", "socket={} user={} recovered (it was on node={}) with {} missed events", parked.socket_id, parked.user_id, parked.node, missed.len());
        Outcome::Recovered { parked, missed, head }
    }

    fn failed(&self, pid: &str, why: &str, stale: Option<Parked>) -> Outcome {
        self.metrics.recoveries_failed.fetch_add(1, Ordering::Relaxed);
        log::info!(target: "civicpulse::recovery", "pid={pid} not recovered ({why}): a fresh socket");
        Outcome::Fresh { stale }
    }

    /// Takes out the sockets whose window has ended, and forgets lookups
    /// whose `connect` never came (their session ended meanwhile).
    fn expired(&self, now: Instant) -> Vec<Parked> {
        self.lookups().retain(|_, (_, at)| now.duration_since(*at) < RESUMED_TTL);
        let mut parked = self.parked();
        let gone: Vec<Arc<str>> =
            parked.iter().filter(|(_, p)| p.until <= now).map(|(pid, _)| pid.clone()).collect();
        gone.iter().filter_map(|pid| parked.remove(pid)).collect()
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Parked>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lookups(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, (Outcome, Instant)>> {
        self.resumed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every second, the parked sockets whose window ended go, and their
/// users' presence with them (the offline their disconnect put off).
pub async fn expire_parked(recovery: Arc<Recovery>, presence: Addr<PresenceRegistry>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for parked in recovery.expired(Instant::now()) {
            log::debug!(target: "civicpulse::recovery", "socket={} user={} not back in time", parked.socket_id, parked.user_id);
            presence
                .do_send(SocketOffline { user_id: parked.user_id.to_string(), socket_id: parked.socket_id });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::replay::MemoryLog;
    use crate::protocol::events::encode_logged;
    use serde_json::json;

    fn recovery(capacity: usize) -> (Recovery, Arc<MemoryLog>) {
        let log = Arc::new(MemoryLog::new(capacity));
        (Recovery::new(Duration::from_secs(60), log.clone(), Arc::default(), "n1".into(), None), log)
    }

    fn append(log: &MemoryLog, target: Target) -> Offset {
        let head = log.head();
        log.append(target, &|offset| encode_logged("e", json!(null), offset));
        head + 1
    }

    fn auth(pid: &str, offset: Option<Offset>) -> Map<String, Value> {
        let mut auth = Map::new();
        auth.insert("pid".into(), json!(pid));
        if let Some(offset) = offset {
            auth.insert("offset".into(), json!(offset.to_string()));
        }
        auth
    }

    #[test]
    fn a_parked_socket_comes_back_once_with_what_it_missed() {
        let (recovery, log) = recovery(100);
        let floor = log.head();
        let seen = append(&log, Target::Everyone);
        recovery.park("p1".into(), "s1".into(), "usr_a".into(), vec!["iss_1".into()], floor);
        append(&log, Target::Room("iss_1".into()));
        append(&log, Target::Room("iss_2".into()));
        append(&log, Target::User("usr_a".into()));
        let Outcome::Recovered { parked, missed, head } = recovery.resume(&auth("p1", Some(seen)), "usr_a")
        else {
            panic!("not recovered");
        };
        assert_eq!((&*parked.socket_id, missed.len(), head), ("s1", 2, log.head()));
        assert!(matches!(recovery.resume(&auth("p1", Some(seen)), "usr_a"), Outcome::Fresh { stale: None }));
        assert_eq!(recovery.metrics.recoveries.load(Ordering::Relaxed), 1);
        assert_eq!(recovery.metrics.recoveries_failed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn no_offset_means_nothing_seen_since_the_socket_began() {
        let (recovery, log) = recovery(100);
        append(&log, Target::Everyone);
        let floor = log.head();
        recovery.park("p1".into(), "s1".into(), "usr_a".into(), Vec::new(), floor);
        append(&log, Target::Everyone);
        let Outcome::Recovered { missed, .. } = recovery.resume(&auth("p1", None), "usr_a") else {
            panic!("not recovered");
        };
        assert_eq!(missed.len(), 1);
    }

    #[test]
    fn another_users_pid_a_gap_or_a_bad_offset_is_a_fresh_socket() {
        let (recovery, log) = recovery(2);
        let floor = log.head();
        recovery.park("p1".into(), "s1".into(), "usr_a".into(), Vec::new(), floor);
        assert!(matches!(recovery.resume(&auth("p1", None), "usr_b"), Outcome::Fresh { stale: None }));
        let mut bad = auth("p1", None);
        bad.insert("offset".into(), json!(12));
        let Outcome::Fresh { stale: Some(stale) } = recovery.resume(&bad, "usr_a") else {
            panic!("a number is not an offset");
        };
        assert_eq!(&*stale.socket_id, "s1");
        recovery.park("p2".into(), "s2".into(), "usr_a".into(), Vec::new(), floor);
        for _ in 0..3 {
            append(&log, Target::Everyone);
        }
        assert!(
            matches!(recovery.resume(&auth("p2", None), "usr_a"), Outcome::Fresh { stale: Some(_) }),
            "the first event after the floor is gone"
        );
    }

    #[test]
    fn the_window_ends() {
        let log = Arc::new(MemoryLog::new(10));
        let recovery = Recovery::new(Duration::ZERO, log.clone(), Arc::default(), "n1".into(), None);
        recovery.park("p1".into(), "s1".into(), "usr_a".into(), Vec::new(), log.head());
        assert!(matches!(recovery.resume(&auth("p1", None), "usr_a"), Outcome::Fresh { stale: None }));
        assert_eq!(recovery.expired(Instant::now()).len(), 1);
        assert!(recovery.expired(Instant::now()).is_empty());
    }

    #[test]
    fn only_lost_connections_are_recoverable() {
        for reason in RECOVERABLE {
            assert!(Recovery::recoverable(reason));
        }
        for reason in
            ["client namespace disconnect", "server namespace disconnect", "forced close", "parse error"]
        {
            assert!(!Recovery::recoverable(reason), "{reason}");
        }
    }
}
