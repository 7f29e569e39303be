//! Smoke run of the load generator (`civicpulse-loadgen`), so the benchmark
//! tool keeps working: a small `rooms` scenario against a real node must
//! deliver every stored message to every member of its room exactly once
//! and in order. Correctness only: benchmarks are never timed assertions.

use std::collections::HashMap;
use std::process::Command;

use civicpulse::RunningNode;
use civicpulse::config::Config;
use serde_json::Value;

const SECRET: &str = "civicpulse-loadgen-smoke-test-secret-0040";

/// A node on a free port over a fresh SQLite file.
fn node() -> (RunningNode, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("civicpulse.db").display());
    let vars: HashMap<String, String> =
        [("HOST", "127.0.0.1"), ("PORT", "0"), ("DATABASE_URL", url.as_str()), ("JWT_SECRET", SECRET)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    (RunningNode::start(Config::from_vars(&vars).expect("config")).expect("node starts"), dir)
}

#[test]
fn rooms_scenario_delivers_every_message_once_and_in_order() {
    let (node, _dir) = node();
    let output = Command::new(env!("CARGO_BIN_EXE_civicpulse-loadgen"))
        .args(["rooms", "--url", &node.url(), "--label", "smoke"])
        .args(["--rooms", "3", "--members", "4", "--users", "4"])
        .args(["--rate", "5", "--duration", "1", "--drain", "5", "--threads", "1"])
        .env("JWT_SECRET", SECRET)
        .output()
        .expect("the load generator runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let results: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("RESULT ")).collect();
    assert_eq!(results.len(), 1, "exactly one RESULT line\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let result: Value = serde_json::from_str(results[0]).expect("RESULT is JSON");
    let context = format!("{result:#}\nstderr:\n{stderr}");

    assert_eq!(result["scenario"], "rooms", "{context}");
    assert_eq!(result["ready"], 12, "every member connected and joined: {context}");
    assert_eq!(result["dropped"], 0, "{context}");
    let acked = result["acked"].as_u64().expect("acked");
    assert!(acked >= 3, "messages were stored and acknowledged: {context}");
    assert_eq!(result["sent"].as_u64(), Some(acked), "every message:send was acknowledged: {context}");
    assert_eq!(
        result["delivered"].as_u64(),
        Some(acked * 4),
        "each message reached its 4 members: {context}"
    );
    for field in ["lost", "duplicated", "reordered", "misrouted", "unacked_deliveries"] {
        assert_eq!(result[field], 0, "{field}: {context}");
    }
    assert_eq!(result["ok"], true, "{context}");
    assert!(output.status.success(), "exit status {:?}: {context}", output.status);
}

/// The flood probe against a node with its default limits: the flooder is
/// cut off by the server, the victim stays connected, and the flooder's
/// stored messages are counted (when the sqlite3 shell is there to count
/// them). Which figures it measures is for BENCHMARKS.md, not for here.
#[test]
fn flood_scenario_sees_the_flooder_cut_off() {
    let (node, dir) = node();
    let db = dir.path().join("civicpulse.db");
    let frames = 20_000;
    let output = Command::new(env!("CARGO_BIN_EXE_civicpulse-loadgen"))
        .args(["flood", "--url", &node.url(), "--label", "smoke"])
        .args(["--pid", &std::process::id().to_string(), "--db", &db.display().to_string()])
        .args(["--flood-kind", "send-unjoined", "--frames", &frames.to_string()])
        .args(["--baseline", "0.5", "--flood-min", "0.5", "--cooldown", "0.5", "--flood-timeout", "60"])
        .env("JWT_SECRET", SECRET)
        .output()
        .expect("the load generator runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let results: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("RESULT ")).collect();
    assert_eq!(results.len(), 1, "exactly one RESULT line\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let result: Value = serde_json::from_str(results[0]).expect("RESULT is JSON");
    let context = format!("{result:#}\nstderr:\n{stderr}");

    assert_eq!(result["scenario"], "flood", "{context}");
    assert_eq!(result["victim_dropped"], false, "{context}");
    assert_eq!(result["server_counters"]["flood_disconnects"], 1, "{context}");
    assert!(result["flooder"]["disconnected_at_s"].is_number(), "the disconnect was seen: {context}");
    for phase in ["baseline", "flood", "cooldown"] {
        assert!(result["phases"][phase]["victim_sent"].as_u64() > Some(0), "{phase}: {context}");
        assert!(result["phases"][phase]["rss_peak_bytes"].is_number(), "{phase}: {context}");
    }
    let has_sqlite3 = Command::new("sqlite3").arg("-version").output().is_ok_and(|o| o.status.success());
    if has_sqlite3 {
        let stored = result["stored"]["total"].as_u64().expect("stored count");
        assert!(stored > 0 && stored < frames / 2, "{stored} of {frames} stored: {context}");
    }
    assert_eq!(result["ok"], true, "{context}");
    assert!(output.status.success(), "exit status {:?}: {context}", output.status);
}
