//! Process metrics in the Prometheus text format. Counters are atomics in
//! concurrent maps, so recording never takes a lock shared across workers.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use actix_socketio::engineio::EngineStats;
use actix_socketio::engineio::limits::{self, ServerStats};
use dashmap::DashMap;

#[derive(Default)]
pub struct Metrics {
    http_requests: DashMap<(String, u16), AtomicU64>,
    events_emitted: DashMap<&'static str, AtomicU64>,
    pub connected_sockets: AtomicI64,
    pub online_users: AtomicI64,
    pub open_rooms: AtomicI64,
    pub handshake_failures: AtomicU64,
    /// Client events answered `rate_limited`.
    pub socket_events_refused: AtomicU64,
    /// Sockets disconnected for flooding past their refusals.
    pub flood_disconnects: AtomicU64,
    /// `join:issue`s refused at MAX_ROOMS_PER_SOCKET.
    pub room_cap_refusals: AtomicU64,
    /// Socket handshakes refused at MAX_SOCKETS_PER_USER.
    pub socket_cap_refusals: AtomicU64,
    /// REST writes answered 429 (per user or per address).
    pub rest_writes_refused: AtomicU64,
    /// WebSocket upgrades refused by `WS_ORIGIN_CHECK`.
    pub ws_origin_refusals: AtomicU64,
    /// Sockets ended because their token expired / their sign-in was
    /// revoked or their role changed.
    pub sockets_expired: AtomicU64,
    pub sockets_revoked: AtomicU64,
    /// Connection state recovery: sockets brought back, and CONNECTs that
    /// asked for one (a `pid`) and got a fresh socket instead.
    pub recoveries: AtomicU64,
    pub recoveries_failed: AtomicU64,
    /// Handed to the Socket.IO engine, which counts into it.
    pub engine: Arc<EngineStats>,
    /// Handed to the HTTP server, whose connection caps count into it.
    pub server: Arc<ServerStats>,
    /// MAX_CONNECTIONS as the server runs with it.
    pub connection_limit: AtomicU64,
    /// Cluster mode's counters (all zero on a single node).
    pub cluster: Arc<ClusterStats>,
    /// The database pool's health (`db::Db` counts into it).
    pub db: Arc<DbStats>,
}

/// What the database pool counts.
#[derive(Default)]
pub struct DbStats {
    /// 1 while the database answers (the last connection or checkout
    /// succeeded).
    pub up: AtomicI64,
    /// Callers (requests, message batches) that got no connection within
    /// DB_TIMEOUT_MS and were told the database is unavailable.
    pub unavailable: AtomicU64,
}

/// What the cluster link counts: an operator's view of the bus and of
/// Redis faults.
#[derive(Default)]
pub struct ClusterStats {
    /// 1 while Redis answers the heartbeat.
    pub redis_up: AtomicI64,
    pub published: AtomicU64,
    /// Events that never reached Redis (it was away, or the queue full).
    pub publish_failures: AtomicU64,
    /// Events from other nodes delivered here.
    pub received: AtomicU64,
    /// Events of other nodes that never arrived (gaps in their numbering).
    pub missed: AtomicU64,
    /// Times the Redis connection was lost (events published meanwhile
    /// are missed).
    pub disconnects: AtomicU64,
    pub decode_failures: AtomicU64,
    pub emitter_received: AtomicU64,
    pub emitter_refused: AtomicU64,
    pub presence_failures: AtomicU64,
    pub presence_resyncs: AtomicU64,
    pub nodes_reaped: AtomicU64,
}

impl ClusterStats {
    fn render(&self, out: &mut String) {
        let c = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP civicpulse_cluster_redis_up 1 while Redis answers this node.\n# TYPE civicpulse_cluster_redis_up gauge\ncivicpulse_cluster_redis_up {}",
            self.redis_up.load(Ordering::Relaxed)
        );
        for (name, help, value) in [
            ("published", "Events published to the other nodes.", c(&self.published)),
            (
                "publish_failures",
                "Events that could not be published (Redis away or the queue full).",
                c(&self.publish_failures),
            ),
            ("received", "Events from other nodes delivered here.", c(&self.received)),
            ("missed", "Events of other nodes that never arrived here.", c(&self.missed)),
            ("disconnects", "Times the Redis connection was lost.", c(&self.disconnects)),
            ("decode_failures", "Bus messages that could not be read.", c(&self.decode_failures)),
            ("emitter_received", "Emitter broadcasts delivered here.", c(&self.emitter_received)),
            (
                "emitter_refused",
                "Emitter messages ignored (unsupported or malformed).",
                c(&self.emitter_refused),
            ),
            (
                "presence_failures",
                "Presence changes Redis did not take (resynced later).",
                c(&self.presence_failures),
            ),
            ("presence_resyncs", "Times this node rewrote its presence in Redis.", c(&self.presence_resyncs)),
            ("nodes_reaped", "Dead nodes whose users this node took offline.", c(&self.nodes_reaped)),
        ] {
            let _ = writeln!(
                out,
                "# HELP civicpulse_cluster_{name}_total {help}\n# TYPE civicpulse_cluster_{name}_total counter\ncivicpulse_cluster_{name}_total {value}"
            );
        }
    }
}

impl Metrics {
    /// The caps on connections, request bodies and binary attachments:
    /// what is held now, and one counter per kind of refusal.
    fn render_caps(&self, out: &mut String) {
        let (server, engine) = (&self.server, &self.engine);
        let load = |v: &std::sync::atomic::AtomicUsize| v.load(Ordering::Relaxed) as u64;
        for (name, help, value) in [
            (
                "open_connections",
                "Client connections open (and links forwarded sockets hold).",
                load(&server.open_connections),
            ),
            (
                "overflow_connections",
                "Connections past MAX_CONNECTIONS, served /healthz, /readyz and /metrics only.",
                load(&server.overflow_connections),
            ),
            ("max_connections", "MAX_CONNECTIONS in force.", self.connection_limit.load(Ordering::Relaxed)),
            (
                "pending_binary_bytes",
                "Bytes of binary attachments held for incomplete packets.",
                load(&engine.pending_binary_bytes),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP civicpulse_{name} {help}\n# TYPE civicpulse_{name} gauge\ncivicpulse_{name} {value}"
            );
        }
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "address_connection_refusals",
                "Connections answered 429: their address had MAX_CONNECTIONS_PER_ADDRESS open.",
                load(&server.address_refusals),
            ),
            (
                "capacity_refusals",
                "Requests answered 503 past MAX_CONNECTIONS (all but /healthz, /readyz, /metrics).",
                load(&server.capacity_refusals),
            ),
            (
                "reserve_drops",
                "Connections closed at accept: past MAX_CONNECTIONS and the reserve too.",
                load(&server.reserve_drops),
            ),
            ("accept_errors", "Times accept() failed (out of descriptors).", limits::accept_errors()),
            (
                "body_timeouts",
                "Request bodies not received within BODY_READ_TIMEOUT_MS (answered 408).",
                load(&server.body_timeouts),
            ),
            (
                "binary_packet_refusals",
                "Sockets closed for a packet past MAX_BINARY_ATTACHMENTS or MAX_PACKET_BINARY_BYTES.",
                load(&engine.binary_packet_refusals),
            ),
            (
                "binary_budget_refusals",
                "Sockets closed because incomplete binary packets would pass MAX_PENDING_BINARY_BYTES.",
                load(&engine.binary_budget_refusals),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP civicpulse_{name}_total {help}\n# TYPE civicpulse_{name}_total counter\ncivicpulse_{name}_total {value}"
            );
        }
    }

    pub fn record_http(&self, route: &str, status: u16) {
        if let Some(counter) = self.http_requests.get(&(route.to_string(), status)) {
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.http_requests.entry((route.to_string(), status)).or_default().fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_event(&self, name: &'static str) {
        self.events_emitted.entry(name).or_default().fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, value: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        };
        gauge(
            &mut out,
            "civicpulse_connected_sockets",
            "Socket.IO connections on this node.",
            self.connected_sockets.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "civicpulse_online_users",
            "Users with at least one socket.",
            self.online_users.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "civicpulse_open_rooms",
            "Issue rooms with members on this node.",
            self.open_rooms.load(Ordering::Relaxed),
        );
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        counter(
            &mut out,
            "civicpulse_handshake_failures_total",
            "Socket handshakes refused.",
            self.handshake_failures.load(Ordering::Relaxed),
        );
        for (name, help, value) in [
            (
                "socket_events_rate_limited",
                "Client events answered rate_limited.",
                &self.socket_events_refused,
            ),
            ("socket_flood_disconnects", "Sockets disconnected for flooding.", &self.flood_disconnects),
            ("room_cap_refusals", "join:issue refused at MAX_ROOMS_PER_SOCKET.", &self.room_cap_refusals),
            (
                "socket_cap_refusals",
                "Socket handshakes refused at MAX_SOCKETS_PER_USER.",
                &self.socket_cap_refusals,
            ),
            ("rest_writes_rate_limited", "REST writes answered 429.", &self.rest_writes_refused),
            (
                "ws_origin_refusals",
                "WebSocket upgrades refused 403: their Origin is not allowed (WS_ORIGIN_CHECK).",
                &self.ws_origin_refusals,
            ),
            ("sockets_expired", "Sockets ended when their access token expired.", &self.sockets_expired),
            (
                "sockets_revoked",
                "Sockets ended by a logout, a revocation or a role change.",
                &self.sockets_revoked,
            ),
            (
                "recoveries",
                "Sockets brought back by connection state recovery, with every event they missed.",
                &self.recoveries,
            ),
            (
                "recoveries_failed",
                "Reconnections that asked for their socket back (a pid) and got a fresh one.",
                &self.recoveries_failed,
            ),
        ] {
            counter(&mut out, &format!("civicpulse_{name}_total"), help, value.load(Ordering::Relaxed));
        }
        counter(
            &mut out,
            "civicpulse_slow_client_disconnects_total",
            "Sockets closed because their client stopped reading.",
            self.engine.slow_client_disconnects.load(Ordering::Relaxed),
        );
        let engine = &self.engine;
        for (name, help, value) in [
            (
                "forwarded_requests",
                "Polling requests for another node's session, forwarded to it.",
                &engine.forwarded_requests,
            ),
            (
                "forwarded_upgrades",
                "WebSocket upgrades for another node's session, forwarded to it.",
                &engine.forwarded_upgrades,
            ),
            (
                "forward_failures",
                "Requests for another node's session that could not be forwarded.",
                &engine.forward_failures,
            ),
        ] {
            counter(&mut out, &format!("civicpulse_{name}_total"), help, value.load(Ordering::Relaxed));
        }
        gauge(
            &mut out,
            "civicpulse_db_up",
            "1 while the database answers this node.",
            self.db.up.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "civicpulse_db_unavailable_total",
            "Requests and message batches that got no database connection within DB_TIMEOUT_MS.",
            self.db.unavailable.load(Ordering::Relaxed),
        );
        self.render_caps(&mut out);
        self.cluster.render(&mut out);
        let _ = writeln!(
            out,
            "# HELP civicpulse_events_emitted_total Events emitted, by name.\n# TYPE civicpulse_events_emitted_total counter"
        );
        let mut events: Vec<_> =
            self.events_emitted.iter().map(|e| (*e.key(), e.value().load(Ordering::Relaxed))).collect();
        events.sort();
        for (name, n) in events {
            let _ = writeln!(out, "civicpulse_events_emitted_total{{event=\"{name}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP civicpulse_http_requests_total HTTP requests, by route and status.\n# TYPE civicpulse_http_requests_total counter"
        );
        let mut requests: Vec<_> =
            self.http_requests.iter().map(|e| (e.key().clone(), e.value().load(Ordering::Relaxed))).collect();
        requests.sort();
        for ((route, status), n) in requests {
            let _ =
                writeln!(out, "civicpulse_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_counters() {
        let m = super::Metrics::default();
        m.record_http("/api/issues", 200);
        m.record_http("/api/issues", 200);
        m.record_event("issue:created");
        let text = m.render();
        assert!(
            text.contains("civicpulse_http_requests_total{route=\"/api/issues\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("civicpulse_events_emitted_total{event=\"issue:created\"} 1"));
    }
}
