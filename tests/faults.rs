//! Faults under load: the real `civicpulse` binary reaches PostgreSQL or
//! Redis through a TCP chaos proxy (`common::chaos`), while Socket.IO
//! clients chat in an issue room (`message:send` with acks) and REST
//! clients read and write. The proxy cuts or delays the service mid-load;
//! the tests check what clients see meanwhile (503 in the error shape,
//! `/readyz`, error acks, sockets that stay up), that everything recovers
//! by itself, and, against the database itself, that no message was lost
//! or stored twice: an ok ack or a 201 means stored once, an error means
//! not stored.
//!
//! Ignored by plain `cargo test` (they need PostgreSQL and redis-server);
//! CI runs them with `--ignored`.

mod common;
#[allow(dead_code)]
#[path = "cluster/harness.rs"]
mod harness;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use serde_json::{Value, json};

use common::binary::Server;
use common::chaos::{ChaosProxy, Trap};
use common::socket::{SocketClient, SocketOptions};
use common::{Body, Checks, Method, PgDatabase, Response, StatusCode, TestUser};
use harness::{Cluster, eventually};

/// How long a node of these tests waits for a database connection before
/// it answers 503: short, so a cut shows within the test's few seconds.
const DB_TIMEOUT_MS: &str = "1000";
/// The longest an ack may take. A message whose commit was cut off is
/// answered only once the database can tell whether it was stored, after
/// the restore.
const ACK_LIMIT: Duration = Duration::from_secs(30);
/// A request answered 503 must have been answered within this: it waits
/// for DB_TIMEOUT_MS, not for r2d2's 30 s default or forever.
const ANSWER_LIMIT: Duration = Duration::from_secs(10);

/// Variables of every node here: a short Engine.IO heartbeat, so that a
/// socket the node stopped serving would be closed within the test (and
/// "stayed connected" means something); the REST write limits lifted, as
/// the load writes faster than one user may (the limits are not what is
/// tested here).
const NODE_VARS: [(&str, &str); 5] = [
    ("PING_INTERVAL_MS", "1000"),
    ("PING_TIMEOUT_MS", "2000"),
    ("REST_USER_WRITE_RATE", "0"),
    ("REST_ADDRESS_WRITE_RATE", "0"),
    ("RUST_LOG", "info,civicpulse::http=warn"),
];

// ---- PostgreSQL ---------------------------------------------------------

#[test]
#[ignore = "needs PostgreSQL (TEST_DATABASE_URL or 127.0.0.1:5432); CI runs it"]
fn postgres_cut_mid_load_answers_503_keeps_sockets_up_and_recovers_without_loss_or_duplicates() {
    let db = PgDatabase::create();
    let proxy = ChaosProxy::start(authority(&db.url));
    let mut vars = NODE_VARS.to_vec();
    vars.push(("DB_TIMEOUT_MS", DB_TIMEOUT_MS));
    let server = Server::start(&through(&db.url, proxy.addr), &vars);
    let _logs = LogsOnFailure(vec![&server]);
    let mut room = Room::open(&[&server], 4);
    let http = http_client();
    let (token, issue_path) = (room.users[0].token.clone(), format!("/api/issues/{}", room.issue_id));

    let (marks, load) = room.under_load(&[&server], || {
        std::thread::sleep(Duration::from_secs(2));
        proxy.cut();
        let cut = Instant::now();

        // Liveness does not depend on the database; readiness does.
        assert_eq!(get(&http, &server, "/healthz").status, StatusCode::OK);
        eventually("/readyz 503 after the cut", ANSWER_LIMIT, || {
            get(&http, &server, "/readyz").status == StatusCode::SERVICE_UNAVAILABLE
        });
        let ready = get(&http, &server, "/readyz");
        assert_not_ready(&ready);
        assert_eq!(get(&http, &server, "/healthz").status, StatusCode::OK);
        // A request of its own: the load's REST thread may spend the whole
        // cut waiting on a write whose commit was in doubt (answered after
        // the restore, as it should be), so it need not see a 503 itself.
        let started = Instant::now();
        let read = common::send_checked(
            &http,
            server.url(),
            Method::GET,
            &issue_path,
            Some(&token),
            Body::Empty,
            Checks::AllowUnavailable,
        );
        assert_eq!(read.status, StatusCode::SERVICE_UNAVAILABLE, "a read during the cut: {}", read.text);
        assert_eq!(read.json["error"]["code"], "unavailable", "{}", read.text);
        assert!(started.elapsed() < ANSWER_LIMIT, "a read during the cut took {:?}", started.elapsed());
        std::thread::sleep(Duration::from_secs(3));
        assert!(proxy.refused() > 0, "the node never tried to reconnect during the cut");

        proxy.restore();
        let restored = Instant::now();
        eventually("/readyz 200 after the restore", Duration::from_secs(20), || {
            get(&http, &server, "/readyz").status == StatusCode::OK
        });
        let recovered = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        Marks { cut, restored, recovered }
    });

    load.print(&marks);
    for (i, sends) in load.sends.iter().enumerate() {
        let label = room.clients[i].label().to_string();
        for s in sends {
            if s.acked < marks.cut {
                assert!(s.ok(), "{label}: {s:?} before the cut");
            } else if s.sent >= marks.cut && s.acked < marks.restored {
                assert_eq!(s.ack["ok"], false, "{label}: {s:?} during the cut");
                assert_eq!(s.ack["error"]["code"], "unavailable", "{label}: {s:?} during the cut");
            } else if s.sent >= marks.recovered {
                assert!(s.ok(), "{label}: {s:?} after recovery");
            }
        }
        let after = sends.iter().filter(|s| s.sent >= marks.recovered).count();
        assert!(after > 0, "{label}: nothing sent after recovery");
    }
    // A socket whose message was in doubt at the cut waits for that answer
    // until the restore; the others are refused meanwhile.
    let refused = load.sends.iter().flatten().filter(|s| s.sent >= marks.cut && s.acked < marks.restored);
    assert!(refused.count() > 0, "no send was answered during the cut");
    for call in &load.calls {
        if call.started >= marks.cut && call.started + call.elapsed < marks.restored {
            assert_eq!(
                call.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{} during the cut: {call:?}",
                call.what
            );
            assert_eq!(call.json["error"]["code"], "unavailable", "{call:?}");
            assert!(call.elapsed < ANSWER_LIMIT, "{call:?} took {:?}", call.elapsed);
        } else if call.started >= marks.recovered {
            assert!(call.status.is_success(), "{call:?} after recovery");
        }
    }

    room.check_delivered_once(&load);
    check_stored_once(&db.url, &room.issue_id, &load);

    // Once per episode, not once per refused request.
    let log = server.stderr();
    assert_eq!(log.matches("database unavailable").count(), 1, "{log}");
    assert_eq!(log.matches("database answers again").count(), 1, "{log}");
    let metrics = get(&http, &server, "/metrics").text;
    assert!(metric(&metrics, "civicpulse_db_unavailable_total") > 0.0, "{metrics}");
    assert_eq!(metric(&metrics, "civicpulse_db_up"), 1.0, "{metrics}");
}

#[test]
#[ignore = "needs PostgreSQL (TEST_DATABASE_URL or 127.0.0.1:5432); CI runs it"]
fn a_slow_postgres_mid_load_is_slow_but_correct() {
    let db = PgDatabase::create();
    let proxy = ChaosProxy::start(authority(&db.url));
    let server = Server::start(&through(&db.url, proxy.addr), &NODE_VARS);
    let _logs = LogsOnFailure(vec![&server]);
    let mut room = Room::open(&[&server], 4);
    let http = http_client();

    let (marks, load) = room.under_load(&[&server], || {
        std::thread::sleep(Duration::from_secs(1));
        // Each way: every round trip to the database takes a second more.
        proxy.delay(Duration::from_millis(500));
        let cut = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        let ready = get(&http, &server, "/readyz");
        assert_eq!(ready.status, StatusCode::OK, "slow is not unready: {}", ready.text);
        std::thread::sleep(Duration::from_secs(4));
        proxy.restore();
        let restored = Instant::now();
        std::thread::sleep(Duration::from_secs(2));
        Marks { cut, restored, recovered: restored }
    });

    load.print(&marks);
    // The proof that the delay was there at all.
    assert!(
        load.sends.iter().flatten().any(|s| s.acked - s.sent >= Duration::from_secs(1)),
        "no ack was slowed down"
    );
    for (i, sends) in load.sends.iter().enumerate() {
        for s in sends {
            assert!(s.ok(), "{}: {s:?}", room.clients[i].label());
        }
    }
    for call in &load.calls {
        assert!(call.status.is_success(), "{call:?}");
    }
    room.check_delivered_once(&load);
    check_stored_once(&db.url, &room.issue_id, &load);
}

/// The message writer's COMMIT cut off at each moment that matters, while
/// sockets chat: its answer lost after the server committed, the COMMIT
/// dropped before the server saw it, and the COMMIT stranded in a
/// partition whose server side stays open (the backend keeps its
/// transaction, and its lock, until the writer ends it). Either way every
/// message is answered as it ended: ok if stored, an error if not.
#[test]
#[ignore = "needs PostgreSQL (TEST_DATABASE_URL or 127.0.0.1:5432); CI runs it"]
fn a_commit_cut_off_at_any_moment_is_answered_as_it_ended() {
    let db = PgDatabase::create();
    let proxy = ChaosProxy::start(authority(&db.url));
    let mut vars = NODE_VARS.to_vec();
    vars.push(("DB_TIMEOUT_MS", DB_TIMEOUT_MS));
    // In plaintext, so the proxy sees the COMMIT go by.
    let url = format!("{}?sslmode=disable", through(&db.url, proxy.addr));
    let server = Server::start(&url, &vars);
    let _logs = LogsOnFailure(vec![&server]);
    let mut room = Room::open(&[&server], 3);
    let mut loads = Vec::new();

    for (n, trap) in [Trap::LoseAnswer, Trap::Drop, Trap::Strand].into_iter().enumerate() {
        // Sockets only: the writer's are then the only COMMITs.
        let ((), load) = room.under_load(&[], || {
            std::thread::sleep(Duration::from_millis(500));
            proxy.trap(b"COMMIT", trap);
            eventually(&format!("{trap:?} sprang"), Duration::from_secs(10), || {
                proxy.sprung() == n as u64 + 1
            });
            std::thread::sleep(Duration::from_secs(3));
        });
        let errors: Vec<&Sent> = load.sends.iter().flatten().filter(|s| !s.ok()).collect();
        for s in &errors {
            assert_eq!(s.ack["error"]["code"], "unavailable", "{trap:?}: {s:?}");
        }
        match trap {
            // Stored: nobody is told otherwise.
            Trap::LoseAnswer => assert!(errors.is_empty(), "{trap:?}: {errors:?}"),
            Trap::Drop | Trap::Strand => assert!(!errors.is_empty(), "{trap:?}: nobody was told"),
        }
        room.check_delivered_once(&load);
        loads.extend(load.sends);
    }
    check_stored_once(&db.url, &room.issue_id, &Load { sends: loads, calls: Vec::new() });
    let log = server.stderr();
    assert_eq!(log.matches("message(s) in doubt, ").count(), 3, "each resolved once: {log}");
    assert!(log.contains("ended database session"), "the stranded transaction was ended: {log}");
}

// ---- Redis ----------------------------------------------------------------

#[test]
#[ignore = "needs PostgreSQL and redis-server; CI runs it"]
fn a_redis_cut_mid_load_keeps_sockets_and_writes_and_the_bus_heals_without_duplicates() {
    let mut proxy = None;
    let cluster = Cluster::start_via(2, &NODE_VARS, |redis| {
        let p = ChaosProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port)));
        let url = format!("redis://{}", p.addr);
        proxy = Some(p);
        url
    });
    let proxy = proxy.expect("the proxy in front of Redis");
    let nodes = [cluster.node(0), cluster.node(1)];
    let _logs = LogsOnFailure(nodes.to_vec());
    let mut room = Room::open(&nodes, 4);
    let http = http_client();

    let (recovered, load) = room.under_load(&nodes, || {
        std::thread::sleep(Duration::from_secs(2));
        proxy.cut();
        for node in nodes {
            eventually("/readyz 503 after the cut", ANSWER_LIMIT, || {
                get(&http, node, "/readyz").status == StatusCode::SERVICE_UNAVAILABLE
            });
            let ready = get(&http, node, "/readyz");
            assert_not_ready(&ready);
            assert_eq!(get(&http, node, "/healthz").status, StatusCode::OK);
        }
        std::thread::sleep(Duration::from_secs(3));
        proxy.restore();
        for node in nodes {
            eventually("/readyz 200 after the restore", Duration::from_secs(20), || {
                get(&http, node, "/readyz").status == StatusCode::OK
            });
        }
        let recovered = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        recovered
    });

    // The database was never away: every send and every write committed.
    for (i, sends) in load.sends.iter().enumerate() {
        for s in sends {
            assert!(s.ok(), "{}: {s:?}", room.clients[i].label());
        }
    }
    for call in &load.calls {
        assert!(call.status.is_success(), "{call:?}");
    }
    check_stored_once(&cluster.db.url, &room.issue_id, &load);
    // Nothing twice, ever; what was sent after the bus came back reached
    // every member on both nodes.
    room.check_delivered_at_most_once();
    let settle = recovered + Duration::from_secs(1);
    room.check_delivered_to_all(&load, |sent| sent >= settle);
    // Some of what was sent during the cut did not cross, and that was
    // counted.
    let missed: f64 = (0..2)
        .map(|i| {
            cluster.metric(i, "civicpulse_cluster_publish_failures_total")
                + cluster.metric(i, "civicpulse_cluster_missed_total")
        })
        .sum();
    assert!(missed > 0.0, "the cut lost nothing?");
    // Once per episode, not once per event or per failed publish.
    for node in nodes {
        let log = node.stderr();
        for line in ["Redis does not answer", "events are not published", "events are published again"] {
            assert_eq!(log.matches(line).count(), 1, "{line:?}: {log}");
        }
    }
}

#[test]
#[ignore = "needs PostgreSQL and redis-server; CI runs it"]
fn a_redis_black_hole_then_a_slow_redis_heal_and_deliver_exactly_once() {
    let mut proxy = None;
    let cluster = Cluster::start_via(2, &NODE_VARS, |redis| {
        let p = ChaosProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port)));
        let url = format!("redis://{}", p.addr);
        proxy = Some(p);
        url
    });
    let proxy = proxy.expect("the proxy in front of Redis");
    let nodes = [cluster.node(0), cluster.node(1)];
    let _logs = LogsOnFailure(nodes.to_vec());
    let mut room = Room::open(&nodes, 4);
    let http = http_client();

    let (recovered, load) = room.under_load(&nodes, || {
        std::thread::sleep(Duration::from_secs(2));
        // A partition: connections go, new ones hang.
        proxy.blackhole();
        for node in nodes {
            eventually("/readyz 503 in the black hole", ANSWER_LIMIT, || {
                get(&http, node, "/readyz").status == StatusCode::SERVICE_UNAVAILABLE
            });
        }
        std::thread::sleep(Duration::from_secs(2));
        proxy.restore();
        for node in nodes {
            eventually("/readyz 200 after the black hole", Duration::from_secs(20), || {
                get(&http, node, "/readyz").status == StatusCode::OK
            });
        }
        // Then slow, within the nodes' command timeout: late, not lost.
        proxy.delay(Duration::from_millis(300));
        let recovered = Instant::now();
        std::thread::sleep(Duration::from_secs(4));
        proxy.restore();
        std::thread::sleep(Duration::from_secs(2));
        recovered
    });

    for (i, sends) in load.sends.iter().enumerate() {
        for s in sends {
            assert!(s.ok(), "{}: {s:?}", room.clients[i].label());
        }
    }
    for call in &load.calls {
        assert!(call.status.is_success(), "{call:?}");
    }
    check_stored_once(&cluster.db.url, &room.issue_id, &load);
    room.check_delivered_at_most_once();
    let settle = recovered + Duration::from_secs(1);
    room.check_delivered_to_all(&load, |sent| sent >= settle);
}

// ---- the load ---------------------------------------------------------------

/// When the test broke and mended the service.
struct Marks {
    cut: Instant,
    restored: Instant,
    /// `/readyz` answered 200 again.
    recovered: Instant,
}

/// One `message:send` and its ack.
#[derive(Debug)]
struct Sent {
    content: String,
    sent: Instant,
    acked: Instant,
    ack: Value,
}

impl Sent {
    fn ok(&self) -> bool {
        self.ack["ok"] == true
    }

    fn message_id(&self) -> Option<&str> {
        self.ack["message"]["messageId"].as_str().filter(|_| self.ok())
    }
}

/// One REST request of the load.
#[derive(Debug)]
struct Call {
    what: String,
    started: Instant,
    elapsed: Duration,
    status: StatusCode,
    json: Value,
    /// What a message post sent.
    content: Option<String>,
}

/// What the load did: each socket's sends, in order, and the REST calls.
struct Load {
    sends: Vec<Vec<Sent>>,
    calls: Vec<Call>,
}

impl Load {
    /// A line per socket and one for REST, each answer as `+t(latency)` in
    /// seconds from the cut, `!code` for errors: what a failure message
    /// needs to be read.
    fn print(&self, marks: &Marks) {
        let at = |t: Instant| {
            if t >= marks.cut { (t - marks.cut).as_secs_f64() } else { -(marks.cut - t).as_secs_f64() }
        };
        eprintln!(
            "timeline (s from the cut): restored {:.1}, recovered {:.1}",
            at(marks.restored),
            at(marks.recovered)
        );
        for (i, sends) in self.sends.iter().enumerate() {
            let line: Vec<String> = sends
                .iter()
                .filter(|s| s.acked >= marks.cut - Duration::from_secs(1))
                .map(|s| {
                    let code = s.ack["error"]["code"].as_str().map(|c| format!("!{c}")).unwrap_or_default();
                    format!("{:.1}({:.1}){code}", at(s.sent), (s.acked - s.sent).as_secs_f64())
                })
                .collect();
            eprintln!("socket {i}: {}", line.join(" "));
        }
        let line: Vec<String> = self
            .calls
            .iter()
            .filter(|c| c.started + c.elapsed >= marks.cut - Duration::from_secs(1))
            .map(|c| format!("{:.1}({:.1}){}", at(c.started), c.elapsed.as_secs_f64(), c.status.as_u16()))
            .collect();
        eprintln!("rest: {}", line.join(" "));
    }
}

/// Users on the given nodes (round robin), one socket each, all in one
/// issue's room.
struct Room {
    users: Vec<TestUser>,
    clients: Vec<SocketClient>,
    issue_id: String,
}

impl Room {
    fn open(nodes: &[&Server], n: usize) -> Self {
        let users: Vec<TestUser> =
            (0..n).map(|i| nodes[i % nodes.len()].register(&format!("Chatter{i}"))).collect();
        let (status, issue) = nodes[0].request(
            Method::POST,
            "/api/issues",
            Some(&users[0].token),
            json!({ "title": "Chat under faults", "category": "roads" }),
        );
        assert_eq!(status, StatusCode::CREATED, "{issue}");
        let issue_id = issue["issueId"].as_str().expect("issueId").to_string();
        let clients: Vec<SocketClient> = users
            .iter()
            .enumerate()
            .map(|(i, user)| {
                let node = nodes[i % nodes.len()];
                let addr: SocketAddr =
                    node.url().trim_start_matches("http://").parse().expect("node address");
                let options = SocketOptions {
                    label: format!("chatter{i}@node{}", i % nodes.len()),
                    ..SocketOptions::auth(json!({ "token": user.token }))
                };
                let mut client = SocketClient::connect(addr, options).expect("CONNECT");
                client.join(&issue_id);
                client
            })
            .collect();
        Self { users, clients, issue_id }
    }

    /// Every socket chats and one REST client per node of `rest_on` reads
    /// and writes, each on its own thread, while `script` runs on this
    /// one; then the sockets are checked to be still connected.
    fn under_load<R>(&mut self, rest_on: &[&Server], script: impl FnOnce() -> R) -> (R, Load) {
        let stop = AtomicBool::new(false);
        let issue_id = self.issue_id.as_str();
        let (result, sends, calls) = std::thread::scope(|s| {
            let stop = &stop;
            let chats: Vec<_> =
                self.clients.iter_mut().map(|c| s.spawn(move || chat(c, issue_id, stop))).collect();
            let rest: Vec<_> = rest_on
                .iter()
                .zip(&self.users)
                .map(|(node, user)| {
                    let (base, token) = (node.url().to_string(), user.token.clone());
                    s.spawn(move || rest(&base, &token, issue_id, stop))
                })
                .collect();
            // Stops the load also when the script fails, so the failure
            // is reported instead of waited on.
            struct Stop<'a>(&'a AtomicBool);
            impl Drop for Stop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let stopping = Stop(stop);
            let result = script();
            drop(stopping);
            let sends: Vec<Vec<Sent>> = chats.into_iter().map(|h| h.join().expect("a chat thread")).collect();
            let calls: Vec<Call> = rest.into_iter().flat_map(|h| h.join().expect("a REST thread")).collect();
            (result, sends, calls)
        });
        for client in &self.clients {
            client.assert_connected();
        }
        (result, Load { sends, calls })
    }

    /// The `message:new`s each socket received, by id, with how often.
    fn received(&mut self) -> Vec<HashMap<String, usize>> {
        // What is still on its way, taken in by every client in turn, so
        // that none misses the short heartbeat meanwhile.
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            for client in &mut self.clients {
                client.read_for(Duration::from_millis(20));
            }
        }
        self.clients
            .iter_mut()
            .map(|client| {
                let mut seen = HashMap::new();
                for message in client.queued("message:new") {
                    let id = message["messageId"].as_str().expect("messageId").to_string();
                    *seen.entry(id).or_insert(0) += 1;
                }
                seen
            })
            .collect()
    }

    /// No socket received any message twice.
    fn check_delivered_at_most_once(&mut self) {
        let labels: Vec<String> = self.clients.iter().map(|c| c.label().to_string()).collect();
        for (label, seen) in labels.iter().zip(self.received()) {
            let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
            assert!(twice.is_empty(), "{label} received these more than once: {twice:?}");
        }
    }

    /// Every stored message (socket or REST) sent when `when` holds reached
    /// every socket exactly once.
    fn check_delivered_to_all(&mut self, load: &Load, when: impl Fn(Instant) -> bool) {
        let mut wanted: Vec<&str> =
            load.sends.iter().flatten().filter(|s| when(s.sent)).filter_map(Sent::message_id).collect();
        wanted.extend(
            load.calls
                .iter()
                .filter(|c| c.content.is_some() && c.status == StatusCode::CREATED && when(c.started))
                .filter_map(|c| c.json["messageId"].as_str()),
        );
        assert!(!wanted.is_empty(), "nothing was sent in the window checked");
        let labels: Vec<String> = self.clients.iter().map(|c| c.label().to_string()).collect();
        for (label, seen) in labels.iter().zip(self.received()) {
            for id in &wanted {
                assert_eq!(seen.get(*id), Some(&1), "{label}: message:new {id}");
            }
        }
    }

    /// Every message acked ok or answered 201 reached every socket exactly
    /// once (they are all on one node here).
    fn check_delivered_once(&mut self, load: &Load) {
        self.check_delivered_at_most_once();
        self.check_delivered_to_all(load, |_| true);
    }
}

/// Numbers every message the load sends.
static SENT: AtomicU64 = AtomicU64::new(0);

/// Sends messages one after the other, each waiting for its ack, until
/// `stop`.
fn chat(client: &mut SocketClient, issue_id: &str, stop: &AtomicBool) -> Vec<Sent> {
    let mut sends = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        // Unique across loads: the database is searched by content.
        let n = SENT.fetch_add(1, Ordering::Relaxed);
        let content = format!("{} says #{n}", client.label());
        let sent = Instant::now();
        let id = client.emit_later("message:send", json!({ "issueId": issue_id, "content": content }));
        let ack = client.ack(id, ACK_LIMIT);
        sends.push(Sent { content, sent, acked: Instant::now(), ack });
        // Reading meanwhile answers the heartbeat.
        client.read_for(Duration::from_millis(40));
    }
    sends
}

/// Reads the issue, posts a message, reads the history, until `stop`.
fn rest(base: &str, token: &str, issue_id: &str, stop: &AtomicBool) -> Vec<Call> {
    let http = http_client();
    let mut calls = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let n = SENT.fetch_add(1, Ordering::Relaxed);
        let content = format!("REST via {base} #{n}");
        let steps = [
            (Method::GET, format!("/api/issues/{issue_id}"), None),
            (Method::POST, format!("/api/issues/{issue_id}/messages"), Some(content)),
            (Method::GET, format!("/api/issues/{issue_id}/messages?limit=5"), None),
            (Method::POST, "/api/issues".to_string(), None),
        ];
        for (method, path, content) in steps {
            let body = match (&content, path.as_str()) {
                (Some(content), _) => Body::Json(json!({ "content": content })),
                (None, "/api/issues") => {
                    Body::Json(json!({ "title": format!("Written under faults {n}"), "category": "roads" }))
                }
                _ => Body::Empty,
            };
            let what = format!("{method} {path} on {base}");
            let started = Instant::now();
            let r =
                common::send_checked(&http, base, method, &path, Some(token), body, Checks::AllowUnavailable);
            calls.push(Call {
                what,
                started,
                elapsed: started.elapsed(),
                status: r.status,
                json: r.json,
                content,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    calls
}

/// Against the database itself: every message acked ok or answered 201 is
/// stored exactly once, under its id; none answered with an error is; and
/// nothing else is there.
fn check_stored_once(db_url: &str, issue_id: &str, load: &Load) {
    use civicpulse::schema::messages;
    let mut conn = diesel::PgConnection::establish(db_url).expect("a direct connection to the test database");
    let rows: Vec<(String, String)> = messages::table
        .filter(messages::issue_id.eq(issue_id))
        .select((messages::id, messages::content))
        .load(&mut conn)
        .expect("the issue's messages");
    let mut stored: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, content) in &rows {
        stored.entry(content.as_str()).or_default().push(id.as_str());
    }
    let mut expected = HashSet::new();
    let mut check = |what: &dyn std::fmt::Debug, content: &str, id: Option<&str>| match id {
        Some(id) => {
            assert_eq!(stored.get(content).map(Vec::as_slice), Some(&[id][..]), "stored once: {what:?}");
            expected.insert(id.to_string());
        }
        None => assert!(!stored.contains_key(content), "answered with an error, yet stored: {what:?}"),
    };
    for s in load.sends.iter().flatten() {
        check(s, &s.content, s.message_id());
    }
    for call in &load.calls {
        if let Some(content) = &call.content {
            let id = call.json["messageId"].as_str().filter(|_| call.status == StatusCode::CREATED);
            check(call, content, id);
        }
    }
    let unexpected: Vec<_> = rows.iter().filter(|(id, _)| !expected.contains(id)).collect();
    assert!(unexpected.is_empty(), "stored but never answered ok: {unexpected:?}");
}

// ---- helpers -----------------------------------------------------------------

/// Prints the nodes' logs if the test fails: what a fault test's failure
/// is read with.
struct LogsOnFailure<'a>(Vec<&'a Server>);

impl Drop for LogsOnFailure<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, node) in self.0.iter().enumerate() {
                eprintln!("--- node {i} stderr ---\n{}", node.stderr());
            }
        }
    }
}

fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

/// A GET with the contract's checks, a 503 allowed.
fn get(http: &reqwest::blocking::Client, node: &Server, path: &str) -> Response {
    common::send_checked(http, node.url(), Method::GET, path, None, Body::Empty, Checks::AllowUnavailable)
}

/// `/readyz`'s 503: `not_ready`, with a `Retry-After`.
#[track_caller]
fn assert_not_ready(ready: &Response) {
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{}", ready.text);
    assert_eq!(ready.json["error"]["code"], "not_ready", "{}", ready.text);
    let retry_after = ready.headers.get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok());
    assert!(
        retry_after.and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s > 0),
        "Retry-After {retry_after:?}"
    );
}

/// A value of the Prometheus text `metrics`.
fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or(f64::NAN)
}

/// The host and port of a `postgres://user@host:port/db` URL.
fn authority(url: &str) -> SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_port = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = host_port.rsplit_once('@').map_or(host_port, |(_, hp)| hp);
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "5432"));
    let host = if host.is_empty() || host == "localhost" { "127.0.0.1" } else { host };
    format!("{host}:{port}").parse().unwrap_or_else(|e| panic!("{url}: not host:port ({e})"))
}

/// `url` with its host and port replaced by the proxy's.
fn through(url: &str, proxy: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user = authority.rsplit_once('@').map(|(user, _)| format!("{user}@")).unwrap_or_default();
    format!("{scheme}://{user}{proxy}{tail}")
}
