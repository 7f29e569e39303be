//! Faults: a node whose database goes away while it runs answers 503 (in
//! the error shape, with `Retry-After`) where it needs the database, says
//! so on `/readyz`, stays alive on `/healthz`, and recovers on its own once
//! the database is back. PostgreSQL only: the database is made unreachable
//! from an admin connection.

use std::time::{Duration, Instant};

use crate::common::*;

#[test]
#[ignore = "needs PostgreSQL (TEST_DATABASE_URL or 127.0.0.1:5432); CI runs it"]
fn an_unreachable_database_answers_503_and_readyz_until_it_is_back() {
    let app = TestApp::postgres();
    let alice = app.register("Alice");
    let issue_id = app.issue_id(&alice);
    let issue_path = format!("/api/issues/{issue_id}");
    let db = app.pg_database().expect("a PostgreSQL app");
    let name = db.name().to_string();
    let api = app.rest(&alice).allowing_unavailable();
    let anonymous = app.anonymous().allowing_unavailable();
    assert_eq!(api.get("/readyz"), (StatusCode::OK, serde_json::json!({ "status": "ready" })));

    // No new connections, and the node's pooled ones are cut.
    db.admin_execute(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"));
    db.admin_execute(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    ));

    // Each of these waits for the pool's connection timeout (10 s), so they
    // run side by side.
    let started = Instant::now();
    let (ready, issue, me) = std::thread::scope(|s| {
        let ready = s.spawn(|| anonymous.get("/readyz"));
        let issue = s.spawn(|| anonymous.get(&issue_path));
        let me = s.spawn(|| api.get("/api/users/me"));
        (ready.join().expect("readyz"), issue.join().expect("issue"), me.join().expect("me"))
    });
    println!("answered within {:?} of the database going away", started.elapsed());
    assert_error(&ready, StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    // The checks of `allowing_unavailable` looked at the shape and at
    // Retry-After; the codes are the contract's.
    assert_error(&issue, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_error(&me, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    // Liveness does not depend on the database.
    assert_eq!(anonymous.get("/healthz").0, StatusCode::OK);

    // The database comes back: so does the node, without a restart.
    db.admin_execute(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = anonymous.get("/readyz");
        if status == StatusCode::OK {
            assert_eq!(body["status"], "ready", "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {status} 30 s after the database came back: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, issue) = anonymous.get(&issue_path);
    assert_eq!(status, StatusCode::OK, "{issue}");
    assert_eq!(issue["issueId"], issue_id.as_str());
    let (status, me) = api.get("/api/users/me");
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["userId"], alice.id.as_str());
}
