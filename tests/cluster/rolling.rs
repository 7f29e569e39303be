//! A rolling restart of three nodes behind round-robin nginx while the
//! official clients (WebSocket, polling, and polling upgraded to WebSocket)
//! keep sending acknowledged messages (tests/js/drain.mjs "rolling"): each
//! node in turn gets SIGTERM, drains, exits and is started again on its
//! port under its NODE_ID. No acknowledged message is lost, and no client
//! needs more than two reconnection attempts per restart.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::common::clients;
use crate::harness::{Cluster, Nginx, eventually};

const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// What the exit may take beyond the bound: the process winding down.
const EXIT_MARGIN: Duration = Duration::from_millis(750);
/// After a node is back: time for every client to have reconnected (a
/// second attempt starts 1 to 3 s after a failed first one).
const SETTLE: Duration = Duration::from_secs(5);

fn epoch_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64
}

/// How many times each content of `issue` is stored.
fn stored(cluster: &Cluster, token: &str, issue: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut before = String::new();
    loop {
        let path = format!("/api/issues/{issue}/messages?limit=100&before={before}");
        let (status, page) = cluster.node(0).request(reqwest::Method::GET, &path, Some(token), Value::Null);
        assert_eq!(status, 200, "history: {page}");
        for m in page["items"].as_array().expect("items") {
            *counts.entry(m["content"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
        match page["nextCursor"].as_str() {
            Some(cursor) => before = cursor.to_string(),
            None => return counts,
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
#[ignore = "needs PostgreSQL, redis-server, node and nginx; CI runs it"]
fn a_rolling_restart_behind_nginx_loses_no_acknowledged_message_and_clients_reconnect_within_two_attempts() {
    let timeout = DRAIN_TIMEOUT.as_secs().to_string();
    let mut cluster = Cluster::start_with(3, &[("DRAIN_TIMEOUT_SECS", &timeout), ("DRAIN_RATE", "20")]);
    let urls = cluster.urls();
    let nginx = Nginx::start(&urls.iter().map(String::as_str).collect::<Vec<_>>());
    let users: Vec<_> = (0..6).map(|i| cluster.register(i, &format!("Roller{i}"))).collect();
    let token = users[0].token.clone();
    let issue_id = cluster.issue_id(&users[0]);
    let control = tempfile::tempdir().expect("temp dir");
    let results = control.path().join("results.json");
    let input = json!({
        "url": nginx.url,
        "users": users.iter().map(clients::user_json).collect::<Vec<_>>(),
        "issueId": issue_id,
        "sockets": { "websocket": 12, "polling": 6, "default": 12 },
        "controlDir": control.path(),
        "resultsFile": results,
    });
    let script = std::thread::spawn(move || {
        clients::js_within("drain.mjs", "rolling", &input, Duration::from_secs(150))
    });
    let ready = control.path().join("ready");
    eventually("the clients connected", Duration::from_secs(30), || ready.exists() || script.is_finished());
    std::thread::sleep(Duration::from_secs(2));

    let mut terms = Vec::new();
    let mut exits = Vec::new();
    for i in 0..3 {
        let mut node = cluster.nodes[i].take().expect("node is running");
        let port = node.port();
        terms.push(epoch_ms());
        let signalled = Instant::now();
        node.terminate();
        let status = node.wait_exit(DRAIN_TIMEOUT + Duration::from_secs(10));
        let took = signalled.elapsed();
        let log = node.stderr();
        assert!(status.is_some_and(|s| s.success()), "node {i} exited with {status:?}; stderr:\n{log}");
        assert!(
            took <= DRAIN_TIMEOUT + EXIT_MARGIN,
            "node {i} exited {took:?} after SIGTERM; stderr:\n{log}"
        );
        assert!(log.contains("left the cluster"), "node {i} left Redis presence; stderr:\n{log}");
        exits.push(took);
        // Left, not waiting to be reaped: its heartbeat and entry are gone.
        let id = format!("node-{i}");
        assert_eq!(
            cluster.redis.command(&["EXISTS", &format!("{{civicpulse}}:alive:{id}")]).ok().as_deref(),
            Some("0")
        );
        assert_eq!(cluster.redis.command(&["HEXISTS", "{civicpulse}:nodes", &id]).ok().as_deref(), Some("0"));
        drop(node);
        cluster.nodes[i] = Some(cluster.start_node_on(i, Some(port)));
        std::thread::sleep(SETTLE);
    }
    let end = epoch_ms();
    std::fs::write(control.path().join("stop"), "").expect("stop file");
    if let Err(panic) = script.join() {
        std::panic::resume_unwind(panic);
    }

    let seen: Value =
        serde_json::from_slice(&std::fs::read(&results).expect("results")).expect("results JSON");
    let clients = seen["clients"].as_array().expect("clients");
    let events = |c: &Value, what: &str| -> Vec<u64> {
        c["timeline"].as_array().map_or(Vec::new(), |t| {
            t.iter().filter(|e| e["what"] == what).filter_map(|e| e["at"].as_u64()).collect()
        })
    };
    // Reconnection attempts of each client within each restart's window.
    let mut most_attempts = 0;
    let mut disconnected = [0usize; 3];
    for c in clients {
        let attempts = events(c, "attempt");
        let gone = events(c, "disconnect");
        for r in 0..3 {
            let window = terms[r]..terms.get(r + 1).copied().unwrap_or(end);
            let n = attempts.iter().filter(|at| window.contains(at)).count();
            assert!(
                n <= 2,
                "{} needed {n} reconnection attempts in restart {r}: {}",
                c["label"],
                c["timeline"]
            );
            most_attempts = most_attempts.max(n);
            disconnected[r] += usize::from(gone.iter().any(|at| window.contains(at)));
        }
    }
    // From each disconnect to the connect that follows it.
    let mut reconnects: Vec<u64> = clients
        .iter()
        .flat_map(|c| {
            let connects = events(c, "connect");
            events(c, "disconnect")
                .into_iter()
                .map(move |at| connects.iter().find(|c| **c >= at).map_or(u64::MAX, |c| c - at))
        })
        .collect();
    reconnects.sort_unstable();
    assert!(!reconnects.is_empty(), "the restarts disconnected clients");
    assert!(reconnects.last() != Some(&u64::MAX), "every disconnected client reconnected");

    let acked: Vec<&str> = clients
        .iter()
        .flat_map(|c| c["acked"].as_array().expect("acked").iter())
        .map(|m| m["content"].as_str().expect("content"))
        .collect();
    let unacked: u64 = clients.iter().map(|c| c["failed"].as_u64().unwrap_or(0)).sum();
    let counts = stored(&cluster, &token, &issue_id);
    for content in &acked {
        assert_eq!(counts.get(*content), Some(&1), "acknowledged {content:?} is stored once");
    }
    println!(
        "rolling restart: exits after SIGTERM {exits:?}; clients disconnected per restart {disconnected:?} of {}; \
         most reconnection attempts in one restart {most_attempts}; reconnect time p50 {} ms, max {} ms ({} reconnects); \
         {} message(s) acknowledged and stored once, {unacked} not acknowledged",
        clients.len(),
        percentile(&reconnects, 0.5),
        reconnects[reconnects.len() - 1],
        reconnects.len(),
        acked.len(),
    );
}
