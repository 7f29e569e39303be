//! Cluster mode end to end: real `civicpulse` processes on the real
//! PostgreSQL and a real Redis (one per test, see `harness`), driven by
//! the official `socket.io-client` (tests/js/cluster.mjs) and
//! python-socketio. Ignored by plain `cargo test` (they need PostgreSQL,
//! Redis and, for the proxy, nginx); CI runs them with `--ignored`.

mod admin;
mod browser;
#[path = "../common/mod.rs"]
mod common;
mod harness;
mod proxy;
mod recovery;
mod rolling;

use std::time::{Duration, Instant};

use common::clients;
use harness::{Cluster, eventually};

/// The cluster scripts' data: five citizens spread over the nodes.
fn fixture(cluster: &Cluster) -> serde_json::Value {
    let names = ["Alice", "Bob", "Carol", "Dave", "Erin"];
    let users: Vec<_> =
        names.iter().enumerate().map(|(i, n)| (n.to_lowercase(), cluster.register(i, n))).collect();
    let refs: Vec<(&str, &common::TestUser)> = users.iter().map(|(k, u)| (k.as_str(), u)).collect();
    cluster.input(&refs)
}

#[test]
#[ignore = "needs PostgreSQL, redis-server and node; CI runs it"]
fn events_rooms_and_reactions_cross_nodes_exactly_once() {
    let cluster = Cluster::start_with(3, &[("TRENDING_UPVOTES", "3")]);
    let mut input = fixture(&cluster);
    input["official"] = clients::user_json(&cluster.official());
    clients::js("cluster.mjs", "events", &input);
    // Each node published what it produced and heard the others'.
    for i in 0..3 {
        assert!(cluster.metric(i, "civicpulse_cluster_published_total") > 0.0, "node {i} published");
        assert!(cluster.metric(i, "civicpulse_cluster_received_total") > 0.0, "node {i} received");
        assert_eq!(cluster.metric(i, "civicpulse_cluster_missed_total"), 0.0, "node {i} missed nothing");
    }
}

#[test]
#[ignore = "needs PostgreSQL, redis-server and node; CI runs it"]
fn typing_keeps_every_single_node_rule_across_nodes() {
    let cluster = Cluster::start(3);
    clients::js("cluster.mjs", "typing", &fixture(&cluster));
}

#[test]
#[ignore = "needs PostgreSQL, redis-server and node; CI runs it"]
fn presence_is_cluster_wide() {
    let cluster = Cluster::start(3);
    clients::js("cluster.mjs", "presence", &fixture(&cluster));
}

#[test]
#[ignore = "needs PostgreSQL, redis-server and node; CI runs it"]
fn a_killed_nodes_users_go_offline_within_15_s_and_a_restart_leaves_no_ghosts() {
    let mut cluster = Cluster::start(3);
    let mut input = fixture(&cluster);
    input["victim"] = 2.into();
    input["victimPid"] = cluster.node(2).pid().into();
    clients::js_within("cluster.mjs", "kill", &input, Duration::from_secs(40));
    let reaped: f64 = (0..2).map(|i| cluster.metric(i, "civicpulse_cluster_nodes_reaped_total")).sum();
    assert_eq!(reaped, 1.0, "exactly one survivor reaped the dead node");
    cluster.nodes[2].take();

    // A node that comes back under the same NODE_ID before it was reaped
    // clears what its previous run left (no ghosts): kill node 1 with a
    // user on it and restart it at once.
    let erin = cluster.register(1, "Erin2");
    let addr = cluster.node(1).url().trim_start_matches("http://").parse().expect("node address");
    let options = common::socket::SocketOptions::auth(serde_json::json!({ "token": erin.token }));
    let ghost = common::socket::SocketClient::connect(addr, options).expect("erin connects to node 1");
    let listed = |cluster: &Cluster| {
        let (_, v) = cluster.node(0).request(
            reqwest::Method::GET,
            "/api/presence",
            Some(&erin.token),
            serde_json::json!(null),
        );
        v["items"].as_array().is_some_and(|items| items.iter().any(|u| u["userId"] == erin.id.as_str()))
    };
    eventually("erin listed", Duration::from_secs(5), || listed(&cluster));
    let started = Instant::now();
    if let Some(mut node) = cluster.nodes[1].take() {
        node.kill();
    }
    drop(ghost);
    cluster.nodes[1] = Some(cluster.start_node(1));
    eventually("the restarted node's ghost gone", Duration::from_secs(5), || !listed(&cluster));
    assert!(started.elapsed() < Duration::from_secs(6), "cleared by the restart, not by reaping");
}

#[test]
#[ignore = "needs PostgreSQL, redis-server and node; CI runs it"]
fn redis_connections_killed_heal_without_a_restart() {
    let cluster = Cluster::start(3);
    let input = fixture(&cluster);
    clients::js("cluster.mjs", "presence", &input);
    // A connection with subscriptions is of type pubsub, even on RESP3.
    for kind in ["pubsub", "normal"] {
        let killed = cluster.redis.command(&["CLIENT", "KILL", "TYPE", kind]).expect("CLIENT KILL");
        assert!(killed.parse::<u32>().is_ok(), "CLIENT KILL TYPE {kind} answered {killed}");
    }
    eventually("every node saw the cut", Duration::from_secs(5), || {
        (0..3).all(|i| cluster.metric(i, "civicpulse_cluster_disconnects_total") >= 1.0)
    });
    let mut input = input;
    input["healWithinMs"] = 15_000.into();
    clients::js_within("cluster.mjs", "heals", &input, Duration::from_secs(40));
    for i in 0..3 {
        eventually(&format!("node {i} ready"), Duration::from_secs(10), || cluster.ready(i) == 200);
    }
    // Presence was re-announced: everyone is still listed everywhere.
    clients::js("cluster.mjs", "presence", &input);
}

#[test]
#[ignore = "needs PostgreSQL, redis-server and node; CI runs it"]
fn a_redis_restart_heals_and_nodes_serve_alone_meanwhile() {
    let mut cluster = Cluster::start(3);
    let input = fixture(&cluster);
    cluster.redis.stop();
    for i in 0..3 {
        eventually(&format!("node {i} not ready"), Duration::from_secs(10), || cluster.ready(i) == 503);
    }
    // Writes still commit; each node still serves its own sockets.
    let alice = &input["users"]["alice"];
    let (status, v) = cluster.node(1).request(
        reqwest::Method::POST,
        "/api/issues",
        alice["token"].as_str(),
        serde_json::json!({ "title": "Written while Redis is away", "category": "roads" }),
    );
    assert_eq!(status, 201, "{v}");
    eventually("the unpublished event counted", Duration::from_secs(5), || {
        cluster.metric(1, "civicpulse_cluster_publish_failures_total") >= 1.0
    });
    cluster.redis.restart();
    for i in 0..3 {
        eventually(&format!("node {i} ready again"), Duration::from_secs(15), || cluster.ready(i) == 200);
    }
    clients::js_within("cluster.mjs", "heals", &input, Duration::from_secs(40));
    clients::js("cluster.mjs", "presence", &input);
    // Logged when it joined, when Redis went, and when it came back.
    let log = cluster.node(0).stderr();
    assert!(log.contains("Redis does not answer"), "{log}");
    assert!(log.matches("Redis answers: this node is in the cluster").count() >= 2, "{log}");
}

#[test]
#[ignore = "needs PostgreSQL, redis-server and node; CI runs it"]
fn the_npm_redis_emitter_reaches_every_node() {
    let cluster = Cluster::start(3);
    clients::js("cluster.mjs", "emitter", &fixture(&cluster));
}

/// Nodes of a new cluster start together on an empty database: they take
/// turns to migrate, and all come up (none fails on a half-made schema).
#[test]
#[ignore = "needs PostgreSQL and redis-server; CI runs it"]
fn nodes_started_together_on_a_new_database_all_come_up() {
    use common::binary::{command, free_port, secret};
    let redis = harness::Redis::start();
    let db = common::PgDatabase::create();
    let url = redis.url();
    /// Killed when dropped, also when the test fails.
    struct Node(u16, std::process::Child);
    impl Drop for Node {
        fn drop(&mut self) {
            let _ = self.1.kill();
            let _ = self.1.wait();
        }
    }
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let port = free_port();
            let (port_text, id) = (port.to_string(), format!("together-{i}"));
            let vars = [
                ("HOST", "127.0.0.1"),
                ("PORT", port_text.as_str()),
                ("DATABASE_URL", db.url.as_str()),
                ("JWT_SECRET", secret()),
                ("REDIS_URL", url.as_str()),
                ("NODE_ID", id.as_str()),
            ];
            let child = command(&vars)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start civicpulse");
            Node(port, child)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for Node(port, child) in &mut nodes {
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut err);
                }
                panic!("a node exited with {status} while starting:\n{err}");
            }
            let up = reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz"));
            if up.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "node on {port} did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
#[ignore = "needs PostgreSQL and redis-server; CI runs it"]
fn a_logout_on_one_node_ends_that_sign_in_on_every_node_and_on_nodes_started_later() {
    use common::socket::{SocketClient, SocketOptions};
    let mut cluster = Cluster::start(2);
    let alice = cluster.register(0, "Alice");
    let connect = |cluster: &Cluster, i: usize, token: &str| {
        let addr = cluster.node(i).url().trim_start_matches("http://").parse().expect("node address");
        SocketClient::connect(addr, SocketOptions::auth(serde_json::json!({ "token": token })))
    };
    let mut elsewhere = connect(&cluster, 1, &alice.token).expect("alice connects to node 1");
    let me = |cluster: &Cluster, i: usize| {
        let (status, v) = cluster.node(i).request(
            reqwest::Method::GET,
            "/api/users/me",
            Some(&alice.token),
            serde_json::json!(null),
        );
        (status.as_u16(), v["error"]["code"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(me(&cluster, 1).0, 200);

    let (status, _) = cluster.node(0).request(
        reqwest::Method::POST,
        "/api/auth/logout",
        None,
        serde_json::json!({ "refreshToken": alice.refresh }),
    );
    assert_eq!(status, 204);
    let ended = elsewhere.expect_event_within("session:ended", Duration::from_secs(5));
    assert_eq!(ended["reason"], "logged_out");
    eventually("node 1 refuses the token", Duration::from_secs(5), || {
        me(&cluster, 1) == (401, "token_revoked".into())
    });
    assert!(connect(&cluster, 1, &alice.token).is_err(), "nor may it open a socket there");

    // A node that was not running at the logout learns it from Redis.
    cluster.nodes.push(Some(cluster.start_node(2)));
    assert_eq!(me(&cluster, 2), (401, "token_revoked".into()));
    assert!(connect(&cluster, 2, &alice.token).is_err());
}
