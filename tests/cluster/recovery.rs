//! Connection state recovery across the cluster (`CONNECTION_STATE_RECOVERY_SECS`
//! with `REDIS_URL`): a socket dropped on one node comes back through
//! another with its id, its rooms and every event it missed, whatever node
//! made them, once each and in order; live sockets get the cluster's events
//! in the log's order; after Redis lost everything the answer is an honest
//! fresh socket; and the official client recovers through round-robin
//! nginx, where its reconnection lands on whichever node nginx picks.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::socket::{Event, QUIET, SocketClient, SocketOptions, WAIT};
use crate::common::{TestUser, clients, str_of};
use crate::harness::{Cluster, Nginx, eventually};

const WINDOW: (&str, &str) = ("CONNECTION_STATE_RECOVERY_SECS", "30");

fn addr(cluster: &Cluster, i: usize) -> SocketAddr {
    cluster.node(i).url().trim_start_matches("http://").parse().expect("node address")
}

fn connect(cluster: &Cluster, i: usize, auth: Value, label: &str) -> SocketClient {
    let options = SocketOptions { label: label.to_string(), ..SocketOptions::auth(auth) };
    SocketClient::connect(addr(cluster, i), options).unwrap_or_else(|e| panic!("{label}: refused: {e}"))
}

fn post(cluster: &Cluster, i: usize, user: &TestUser, issue_id: &str, content: &str) -> String {
    let (status, v) = cluster.node(i).request(
        reqwest::Method::POST,
        &format!("/api/issues/{issue_id}/messages"),
        Some(&user.token),
        json!({ "content": content }),
    );
    assert_eq!(status, 201, "post on node {i}: {v}");
    str_of(&v["messageId"])
}

fn offset_of(event: &Event) -> u64 {
    assert_eq!(event.args.len(), 2, "{} carries its offset: {:?}", event.name, event.args);
    event.args[1]
        .as_str()
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("an offset: {:?}", event.args))
}

fn message_ids(events: &[Event]) -> Vec<String> {
    events.iter().filter(|e| e.name == "message:new").map(|e| str_of(&e.payload["messageId"])).collect()
}

/// A socket of `user` on node `i` in `issue`'s room, that has seen one
/// message (posted on node `poster.0` by `poster.1`).
struct Seen {
    socket: SocketClient,
    pid: String,
    offset: u64,
    sid: String,
}

fn seen_in_room(
    cluster: &Cluster,
    i: usize,
    user: &TestUser,
    issue: &str,
    poster: (usize, &TestUser),
) -> Seen {
    let mut socket = connect(cluster, i, json!({ "token": user.token }), &format!("{}@node{i}", user.name));
    let pid = str_of(&socket.connect_reply()["pid"]);
    assert!(!pid.is_empty(), "a pid: {}", socket.connect_reply());
    socket.join(issue);
    let first = post(cluster, poster.0, poster.1, issue, "seen");
    let offset =
        offset_of(&socket.expect_matching_at("message:new", |m| m["messageId"] == json!(first), WAIT));
    let sid = socket.sid().to_string();
    Seen { socket, pid, offset, sid }
}

/// Waits until node `i` has let the dropped socket go and Redis keeps it.
fn wait_parked(cluster: &Cluster, i: usize, sockets_left: f64) {
    eventually("the drop noticed", WAIT, || {
        cluster.metric(i, "civicpulse_connected_sockets") == sockets_left
    });
    eventually("the socket parked in Redis", WAIT, || {
        cluster.redis.command(&["KEYS", "*recovery:session:*"]).is_ok_and(|keys| !keys.is_empty())
    });
}

#[test]
#[ignore = "needs PostgreSQL, redis-server and node; CI runs it"]
fn a_socket_dropped_on_one_node_comes_back_on_another_with_every_event_once_in_order() {
    let cluster = Cluster::start_with(3, &[WINDOW]);
    let (alice, bob, carol) =
        (cluster.register(0, "Alice"), cluster.register(1, "Bob"), cluster.register(2, "Carol"));
    let (issue, elsewhere) = (cluster.issue_id(&bob), cluster.issue_id(&bob));
    let mut socket = connect(&cluster, 0, json!({ "token": alice.token }), "alice@node0");
    let pid = str_of(&socket.connect_reply()["pid"]);
    assert!(!pid.is_empty(), "a pid: {}", socket.connect_reply());
    socket.join(&issue);
    let mut watcher = connect(&cluster, 2, json!({ "token": carol.token }), "carol@node2");
    watcher.join(&issue);

    let first = post(&cluster, 1, &bob, &issue, "before");
    let seen = socket.expect_matching_at("message:new", |m| m["messageId"] == json!(first), WAIT);
    let offset = offset_of(&seen);
    let sid = socket.sid().to_string();
    socket.drop_transport();
    wait_parked(&cluster, 0, 0.0);

    // Made on every node while alice is away.
    let m1 = post(&cluster, 1, &bob, &issue, "missed on node 1");
    post(&cluster, 0, &bob, &elsewhere, "not for alice");
    let (status, created) = cluster.node(2).request(
        reqwest::Method::POST,
        "/api/issues",
        Some(&carol.token),
        json!({ "title": "Made on node 2 meanwhile", "category": "roads" }),
    );
    assert_eq!(status, 201, "{created}");
    let m2 = post(&cluster, 0, &bob, &issue, "missed on node 0");

    let auth = json!({ "token": alice.token, "pid": pid, "offset": offset.to_string() });
    let mut back = connect(&cluster, 1, auth, "alice@node1");
    assert_eq!(back.sid(), sid, "the same socket, on another node");
    assert_eq!(back.connect_reply()["pid"], json!(pid));
    let missed = back.received().to_vec();
    assert_eq!(back.events_before_connect(), missed.len(), "missed events come before the CONNECT reply");
    let names: Vec<&str> = missed.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["message:new", "issue:created", "message:new"], "{}", back.dump());
    assert_eq!(message_ids(&missed), [m1.clone(), m2.clone()]);
    assert_eq!(missed[1].payload["issueId"], created["issueId"]);
    let offsets: Vec<u64> = missed.iter().map(offset_of).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]) && offsets[0] > offset, "{offsets:?} after {offset}");

    // Its room is back on its new node; nothing twice.
    let m3 = post(&cluster, 2, &bob, &issue, "after");
    back.expect_matching("message:new", |m| m["messageId"] == json!(m3));
    back.read_for(QUIET);
    assert_eq!(message_ids(back.received()), [m1.clone(), m2.clone(), m3.clone()]);
    assert_eq!(cluster.metric(1, "civicpulse_recoveries_total"), 1.0);

    // A live socket gets the cluster's events in the log's order, whatever
    // node made them: its offsets only grow.
    watcher.expect_matching("message:new", |m| m["messageId"] == json!(m3));
    let live: Vec<u64> = watcher.received().iter().filter(|e| e.args.len() == 2).map(offset_of).collect();
    assert!(live.windows(2).all(|w| w[0] < w[1]), "in offset order: {live:?}");
    assert_eq!(message_ids(watcher.received()), [first, m1, m2, m3]);
}

#[test]
#[ignore = "needs PostgreSQL, redis-server and node; CI runs it"]
fn after_redis_lost_everything_a_socket_is_honestly_not_recovered() {
    let mut cluster = Cluster::start_with(3, &[WINDOW]);
    let (alice, bob) = (cluster.register(0, "Alice"), cluster.register(1, "Bob"));
    let issue = cluster.issue_id(&bob);
    let Seen { socket, pid, offset, sid } = seen_in_room(&cluster, 0, &alice, &issue, (1, &bob));
    socket.drop_transport();
    wait_parked(&cluster, 0, 0.0);

    cluster.redis.restart();
    for i in 0..3 {
        eventually(&format!("node {i} ready again"), Duration::from_secs(15), || cluster.ready(i) == 200);
    }
    let auth = json!({ "token": alice.token, "pid": pid, "offset": offset.to_string() });
    let mut fresh = connect(&cluster, 1, auth, "alice@node1");
    assert_ne!(fresh.sid(), sid, "a fresh socket");
    assert_ne!(fresh.connect_reply()["pid"], json!(pid), "so the client's `recovered` is false");
    assert_eq!(fresh.events_before_connect(), 0, "nothing replayed: {}", fresh.dump());
    assert_eq!(cluster.metric(1, "civicpulse_recoveries_failed_total"), 1.0);

    // The log works again: a new event reaches it, with an offset.
    fresh.join(&issue);
    let after = post(&cluster, 2, &bob, &issue, "after the restart");
    eventually("an event after the restart", Duration::from_secs(10), || {
        fresh.read_for(Duration::from_millis(100));
        message_ids(fresh.received()).contains(&after)
    });
    let event = fresh.received().iter().find(|e| e.name == "message:new").cloned().expect("the event");
    assert!(offset_of(&event) > offset);
}

#[test]
#[ignore = "needs PostgreSQL, redis-server, nginx and node; CI runs it"]
fn the_official_client_recovers_through_round_robin_nginx() {
    clients::js_ready();
    let cluster = Cluster::start_with(3, &[WINDOW]);
    let urls = cluster.urls();
    let nginx = Nginx::start(&urls.iter().map(String::as_str).collect::<Vec<_>>());
    let (alice, bob) = (cluster.register(0, "Alice"), cluster.register(1, "Bob"));
    let mut input = cluster.input(&[("alice", &alice), ("bob", &bob)]);
    input["url"] = json!(nginx.url);
    clients::js("recovery.mjs", "recovered", &input);
    let recovered: f64 = (0..3).map(|i| cluster.metric(i, "civicpulse_recoveries_total")).sum();
    assert_eq!(recovered, 2.0, "both reconnections were recovered, on whichever node");
}

#[test]
#[ignore = "needs PostgreSQL, redis-server and node; CI runs it"]
fn a_socket_of_a_node_killed_without_a_goodbye_recovers_on_a_survivor() {
    let mut cluster = Cluster::start_with(3, &[WINDOW]);
    let (alice, bob) = (cluster.register(0, "Alice"), cluster.register(1, "Bob"));
    let issue = cluster.issue_id(&bob);
    let Seen { socket, pid, offset, sid } = seen_in_room(&cluster, 2, &alice, &issue, (0, &bob));
    // Its record is in Redis while it is connected, rooms included.
    eventually("the live record with its room", WAIT, || {
        cluster
            .redis
            .command(&["GET", &format!("{{civicpulse}}:recovery:session:{pid}")])
            .is_ok_and(|record| record.contains(&issue))
    });
    if let Some(mut node) = cluster.nodes[2].take() {
        node.kill();
    }
    drop(socket);
    let missed = post(&cluster, 0, &bob, &issue, "while its node was dead");
    let auth = json!({ "token": alice.token, "pid": pid, "offset": offset.to_string() });
    let mut back = connect(&cluster, 1, auth, "alice@node1");
    assert_eq!(back.sid(), sid, "recovered on a survivor");
    assert_eq!(message_ids(back.received()), std::slice::from_ref(&missed));
    let after = post(&cluster, 0, &bob, &issue, "after");
    back.expect_matching("message:new", |m| m["messageId"] == json!(after));
    back.read_for(QUIET);
    assert_eq!(message_ids(back.received()), [missed, after]);
}

#[test]
#[ignore = "needs PostgreSQL, redis-server and node; CI runs it"]
fn a_goodbye_leaves_nothing_to_recover_in_redis() {
    let cluster = Cluster::start_with(2, &[WINDOW]);
    let alice = cluster.register(0, "Alice");
    let mut socket = connect(&cluster, 0, json!({ "token": alice.token }), "alice@node0");
    let pid = str_of(&socket.connect_reply()["pid"]);
    let key = format!("{{civicpulse}}:recovery:session:{pid}");
    eventually("the live record", WAIT, || cluster.redis.command(&["EXISTS", &key]).is_ok_and(|n| n == "1"));
    socket.close();
    eventually("the record gone", WAIT, || cluster.redis.command(&["EXISTS", &key]).is_ok_and(|n| n == "0"));
    let again = connect(&cluster, 1, json!({ "token": alice.token, "pid": pid }), "alice@node1");
    assert_ne!(again.connect_reply()["pid"], json!(pid), "not recovered");
}

#[test]
#[ignore = "needs PostgreSQL, redis-server and node; CI runs it"]
fn a_socket_of_a_node_that_was_stopped_recovers_on_another() {
    let mut cluster = Cluster::start_with(2, &[WINDOW]);
    let (alice, bob) = (cluster.register(0, "Alice"), cluster.register(1, "Bob"));
    let issue = cluster.issue_id(&bob);
    let Seen { mut socket, pid, offset, sid } = seen_in_room(&cluster, 0, &alice, &issue, (1, &bob));
    let mut node = cluster.nodes[0].take().expect("node 0 runs");
    node.terminate();
    // The drain closes it as a network would ("server shutting down" on
    // the server's side), and the node writes its window before it exits.
    socket.read_for(Duration::from_secs(3));
    assert!(!socket.is_connected(), "closed by the drain");
    assert!(node.wait_exit(Duration::from_secs(15)).is_some_and(|s| s.success()), "drained and exited");
    let missed = post(&cluster, 1, &bob, &issue, "after its node stopped");
    let auth = json!({ "token": alice.token, "pid": pid, "offset": offset.to_string() });
    let back = connect(&cluster, 1, auth, "alice@node1");
    assert_eq!(back.sid(), sid, "recovered on the other node");
    assert_eq!(message_ids(back.received()), [missed]);
}

#[test]
#[ignore = "needs PostgreSQL, redis-server and node; CI runs it"]
fn many_sockets_of_a_killed_node_recover_at_once() {
    const USERS: usize = 5;
    const TABS: usize = 20;
    let mut cluster = Cluster::start_with(3, &[WINDOW]);
    let bob = cluster.register(1, "Bob");
    let issue = cluster.issue_id(&bob);
    let users: Vec<TestUser> = (0..USERS).map(|i| cluster.register(i % 3, &format!("User{i}"))).collect();
    let mut seen = Vec::new();
    for (u, user) in users.iter().enumerate() {
        for tab in 0..TABS {
            let mut socket =
                connect(&cluster, 2, json!({ "token": user.token }), &format!("user{u} tab{tab}"));
            socket.join(&issue);
            let pid = str_of(&socket.connect_reply()["pid"]);
            seen.push((user.clone(), socket, pid));
        }
    }
    let first = post(&cluster, 0, &bob, &issue, "before");
    let mut before = Vec::new();
    for (user, mut socket, pid) in seen {
        let offset =
            offset_of(&socket.expect_matching_at("message:new", |m| m["messageId"] == json!(first), WAIT));
        before.push((user, socket.sid().to_string(), pid, offset, socket));
    }
    eventually("every record in Redis", WAIT, || {
        cluster
            .redis
            .command(&["HLEN", "{civicpulse}:recovery:live:node-2"])
            .is_ok_and(|n| n == (USERS * TABS).to_string())
    });
    if let Some(mut node) = cluster.nodes[2].take() {
        node.kill();
    }
    let missed = post(&cluster, 0, &bob, &issue, "while node 2 was dead");
    let addrs = [addr(&cluster, 0), addr(&cluster, 1)];
    std::thread::scope(|scope| {
        let handles: Vec<_> = before
            .into_iter()
            .enumerate()
            .map(|(n, (user, sid, pid, offset, socket))| {
                let (addr, missed) = (addrs[n % 2], missed.clone());
                scope.spawn(move || {
                    drop(socket);
                    let auth = json!({ "token": user.token, "pid": pid, "offset": offset.to_string() });
                    let options = SocketOptions { label: format!("{sid} back"), ..SocketOptions::auth(auth) };
                    let back = SocketClient::connect(addr, options).expect("reconnects");
                    assert_eq!(back.sid(), sid, "recovered");
                    assert_eq!(message_ids(back.received()), [missed]);
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("a reconnection");
        }
    });
    let recovered: f64 = (0..2).map(|i| cluster.metric(i, "civicpulse_recoveries_total")).sum();
    assert_eq!(recovered, (USERS * TABS) as f64);
}
