//! The real-browser tier (tests/browser/tier.mjs) through three nodes
//! behind nginx in plain round-robin: each request and socket of the pages
//! lands on whichever node nginx picks, polling requests and upgrades for
//! another node's session are forwarded, and every node applies the same
//! CORS and WebSocket origin rules.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::binary::free_port;
use crate::common::clients;
use crate::harness::{Cluster, Nginx, eventually};

const SCENARIO_LIMIT: Duration = Duration::from_secs(120);

struct Proxied {
    cluster: Cluster,
    nginx: Nginx,
    page_port: u16,
}

/// Three nodes allowing the page origin `http://127.0.0.1:<page_port>`
/// behind nginx.
fn proxied(vars: &[(&str, &str)]) -> Proxied {
    let page_port = free_port();
    let origins = format!("http://127.0.0.1:{page_port}");
    let mut all = vec![("CORS_ORIGINS", origins.as_str())];
    all.extend_from_slice(vars);
    let cluster = Cluster::start_with(3, &all);
    let urls = cluster.urls();
    let nginx = Nginx::start(&urls.iter().map(String::as_str).collect::<Vec<_>>());
    Proxied { cluster, nginx, page_port }
}

impl Proxied {
    /// What tier.mjs reads: alice and bob registered on different nodes,
    /// the proxy's URL, every node's process.
    fn input(&self) -> Value {
        let alice = self.cluster.register(0, "Alice");
        let bob = self.cluster.register(1, "Bob");
        let pids: Vec<u32> = self.cluster.nodes.iter().flatten().map(|n| n.pid()).collect();
        json!({
            "url": self.nginx.url,
            "pagePort": self.page_port,
            "users": { "alice": clients::user_json(&alice), "bob": clients::user_json(&bob) },
            "issueId": self.cluster.issue_id(&alice),
            "expiredToken": clients::expired_token(&alice),
            "pids": pids,
            "label": "cluster",
        })
    }
}

#[test]
#[ignore = "needs PostgreSQL, redis-server, nginx and Debian's chromium; CI runs it"]
fn browser_pages_through_round_robin_nginx_transports_auth_rooms_and_cors() {
    let proxied = proxied(&[("REST_USER_WRITE_RATE", "1"), ("REST_USER_WRITE_BURST", "3")]);
    let input = proxied.input();
    for scenario in ["transports", "auth", "rooms", "cors"] {
        clients::browser("tier.mjs", scenario, &input, SCENARIO_LIMIT);
    }
    let refused: f64 = (0..3).map(|i| proxied.cluster.metric(i, "civicpulse_ws_origin_refusals_total")).sum();
    assert_eq!(refused, 1.0, "the refused page's one WebSocket was refused by the node nginx chose");
    let forwarded: f64 =
        (0..3).map(|i| proxied.cluster.metric(i, "civicpulse_forwarded_requests_total")).sum();
    assert!(forwarded > 0.0, "polling went to nodes that do not own the session, and was forwarded");
}

#[test]
#[ignore = "needs PostgreSQL, redis-server, nginx and Debian's chromium; CI runs it"]
fn a_page_behind_nginx_reconnects_and_rejoins_across_a_restart_of_every_node() {
    let mut proxied = proxied(&[("DRAIN_TIMEOUT_SECS", "2")]);
    let input = proxied.input();
    let script =
        std::thread::spawn(move || clients::browser("tier.mjs", "reconnect", &input, SCENARIO_LIMIT));
    // The page stops every node (SIGTERM) once its socket is in the room;
    // each comes back on its port, where nginx expects it.
    for i in 0..3 {
        let mut node = proxied.cluster.nodes[i].take().expect("node is running");
        let port = node.port();
        eventually("the page stopped the node", Duration::from_secs(60), || {
            node.wait_exit(Duration::ZERO).is_some() || script.is_finished()
        });
        if script.is_finished() && node.wait_exit(Duration::ZERO).is_none() {
            // It failed before stopping the nodes: its own verdict says why.
            if let Err(panic) = script.join() {
                std::panic::resume_unwind(panic);
            }
            panic!("the scenario ended without stopping node {i}");
        }
        drop(node);
        proxied.cluster.nodes[i] = Some(proxied.cluster.start_node_on(i, Some(port)));
    }
    if let Err(panic) = script.join() {
        std::panic::resume_unwind(panic);
    }
}
