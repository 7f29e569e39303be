//! A token's life on live sockets: expiry (unless `auth:refresh`), logout
//! and revocation end the sockets that carried it and stop the token on
//! REST; a role change ends the user's sockets; and the caps on what one
//! user may hold or send.

mod common;

use std::time::Duration;

use common::{TestApp, TestUser};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn metric(app: &TestApp, name: &str) -> u64 {
    let text = app.client().get(app.url("/metrics")).send().and_then(|r| r.text()).expect("metrics");
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

/// A valid token for `user` that expires in `secs` (the harness's secret).
fn token_expiring_in(user: &TestUser, secs: i64) -> String {
    let mut claims = common::claims_for(user, civicpulse::auth::Role::Citizen);
    claims.exp = chrono::Utc::now().timestamp() + secs;
    common::mint(&claims)
}

#[track_caller]
fn expect_ended(socket: &mut common::socket::SocketClient, reason: &str) {
    let ended = socket.expect_event_within("session:ended", Duration::from_secs(10));
    assert_eq!(ended, json!({ "reason": reason }));
    socket.read_for(Duration::from_millis(300));
    assert!(!socket.is_connected(), "the server disconnects it after telling it: {}", socket.dump());
}

#[test]
fn an_expired_token_ends_its_socket_unless_refreshed_in_band() {
    let app = TestApp::builder().env("SOCKET_TOKEN_GRACE_SECS", 3).sqlite();
    let alice = app.register("Alice");
    let issue = app.issue_id(&alice);
    let short = TestUser { token: token_expiring_in(&alice, 2), ..alice.clone() };
    let mut lapsing = app.socket(&short);
    let mut refreshed = app.socket(&short);
    lapsing.join(&issue);
    refreshed.join(&issue);

    // A token of another user is refused, and so is no token.
    let bob = app.register("Bob");
    let other = refreshed.emit("auth:refresh", json!({ "token": bob.token }));
    assert_eq!(other["error"]["code"], "forbidden", "{other}");
    let missing = refreshed.emit("auth:refresh", json!({}));
    assert_eq!(missing["error"]["code"], "validation_failed", "{missing}");
    let ack = refreshed.emit("auth:refresh", json!({ "token": token_expiring_in(&alice, 600) }));
    assert_eq!(ack["ok"], true, "{ack}");
    assert!(ack["expiresAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{ack}");

    // Past its expiry the lapsing socket's events are refused: nothing it
    // sends is stored…
    std::thread::sleep(Duration::from_millis(2300));
    let late = lapsing.emit("message:send", json!({ "issueId": issue, "content": "too late" }));
    assert_eq!(late["error"]["code"], "token_expired", "{late}");
    // …and after the grace it is told and disconnected.
    expect_ended(&mut lapsing, "token_expired");
    // The refreshed one goes on.
    let sent = refreshed.emit("message:send", json!({ "issueId": issue, "content": "still here" }));
    assert_eq!(sent["ok"], true, "{sent}");
    refreshed.assert_connected();
    let (_, history) = app.get(&format!("/api/issues/{issue}/messages"), alice.auth());
    let contents: Vec<&str> =
        history["items"].as_array().unwrap().iter().filter_map(|m| m["content"].as_str()).collect();
    assert_eq!(contents, ["still here"]);
    assert_eq!(metric(&app, "civicpulse_sockets_expired_total"), 1);
}

#[test]
fn logout_ends_that_sign_ins_sockets_and_access_tokens_only() {
    let app = TestApp::sqlite();
    let alice = app.register("Alice");
    let phone = app.login(&alice.email, &alice.password);
    let (mut tab1, mut tab2, mut on_phone) = (app.socket(&alice), app.socket(&alice), app.socket(&phone));

    let (status, _) = app.post("/api/auth/logout", None, Some(json!({ "refreshToken": alice.refresh })));
    assert_eq!(status, StatusCode::NO_CONTENT);
    expect_ended(&mut tab1, "logged_out");
    expect_ended(&mut tab2, "logged_out");
    on_phone.expect_no_event("session:ended", Duration::from_millis(300));
    on_phone.assert_connected();

    // The signed-out access token is refused everywhere; the other sign-in's is not.
    let (status, body) = app.get("/api/users/me", alice.auth());
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "token_revoked", "{body}");
    assert_eq!(app.get("/api/users/me", phone.auth()).0, StatusCode::OK);
    let refused = app.connect_with_auth(json!({ "token": alice.token })).map(|_| ()).unwrap_err();
    assert_eq!(refused["message"], "Authentication failed");
    let in_band = on_phone.emit("auth:refresh", json!({ "token": alice.token }));
    assert_eq!(in_band["error"]["code"], "token_revoked", "{in_band}");
    on_phone.assert_connected();
    assert_eq!(metric(&app, "civicpulse_sockets_revoked_total"), 2);
}

#[test]
fn a_replayed_refresh_token_revokes_every_token_of_its_user() {
    let app = TestApp::sqlite();
    let alice = app.register("Alice");
    let phone = app.login(&alice.email, &alice.password);
    let mut socket = app.socket(&phone);
    let (status, _) = app.post("/api/auth/refresh", None, Some(json!({ "refreshToken": alice.refresh })));
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.post("/api/auth/refresh", None, Some(json!({ "refreshToken": alice.refresh })));
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("refresh_token_reused"))
    );
    expect_ended(&mut socket, "revoked");
    for token in [&alice.token, &phone.token] {
        assert_eq!(app.get("/api/users/me", Some(token)).1["error"]["code"], "token_revoked");
    }
    // Signing in again works.
    let again = app.login(&alice.email, &alice.password);
    assert_eq!(app.get("/api/users/me", again.auth()).0, StatusCode::OK);
    app.socket(&again).assert_connected();
}

#[test]
fn a_role_change_ends_the_users_sockets_so_they_return_with_current_claims() {
    let app = TestApp::sqlite();
    let admin = app.staff(civicpulse::auth::Role::Admin);
    let alice = app.register("Alice");
    let bob = app.register("Bob");
    let (mut socket, mut other) = (app.socket(&alice), app.socket(&bob));
    let (status, _) =
        app.patch(&format!("/api/users/{}", alice.id), admin.auth(), Some(json!({ "role": "official" })));
    assert_eq!(status, StatusCode::OK);
    expect_ended(&mut socket, "role_changed");
    other.expect_no_event("session:ended", Duration::from_millis(200));
    // The same role again changes nothing and ends nothing.
    let mut back = app.socket(&app.login(&alice.email, &alice.password));
    let (status, _) =
        app.patch(&format!("/api/users/{}", alice.id), admin.auth(), Some(json!({ "role": "official" })));
    assert_eq!(status, StatusCode::OK);
    back.expect_no_event("session:ended", Duration::from_millis(300));
    back.assert_connected();
}

#[test]
fn a_user_may_hold_so_many_sockets_and_send_so_much_across_them() {
    let app = TestApp::builder()
        .env("MAX_SOCKETS_PER_USER", 3)
        .env("SOCKET_USER_EVENT_RATE", 1)
        .env("SOCKET_USER_EVENT_BURST", 6)
        .sqlite();
    let (alice, bob) = (app.register("Alice"), app.register("Bob"));
    let mut sockets: Vec<_> = (0..3).map(|_| app.socket(&alice)).collect();
    for _ in 0..2 {
        let refused = app.connect_with_auth(json!({ "token": alice.token })).map(|_| ()).unwrap_err();
        assert!(refused["message"].as_str().is_some_and(|m| m.starts_with("limit_reached")), "{refused}");
    }
    let mut neighbour = app.socket(&bob);
    // The user's sockets share one bucket of events: six pass in all…
    for i in 0..6 {
        assert_eq!(sockets[i % 3].emit("presence:list", json!({}))["ok"], true, "event {i}");
    }
    // …then any of them is refused, while another user is not.
    assert_eq!(sockets[1].emit("presence:list", json!({}))["error"]["code"], "rate_limited");
    assert_eq!(neighbour.emit("presence:list", json!({}))["ok"], true);
    // Closing one makes room for another.
    sockets.pop().unwrap().close();
    std::thread::sleep(Duration::from_millis(200));
    app.socket(&alice).assert_connected();
    assert_eq!(metric(&app, "civicpulse_socket_cap_refusals_total"), 2);
}

#[test]
fn rest_writes_are_limited_per_user_and_per_address_with_retry_after() {
    let app = TestApp::builder()
        .env("REST_USER_WRITE_RATE", 1)
        .env("REST_USER_WRITE_BURST", 3)
        .env("REST_ADDRESS_WRITE_RATE", 1)
        .env("REST_ADDRESS_WRITE_BURST", 5)
        .env("CORS_ORIGINS", "http://app.example")
        .sqlite();
    let (alice, bob) = (app.register("Alice"), app.register("Bob"));
    let issues: Vec<String> = (0..3).map(|_| app.issue_id(&alice)).collect();
    let upvote = |user: &TestUser, issue: &str| {
        app.client()
            .post(app.url(&format!("/api/issues/{issue}/upvote")))
            .bearer_auth(&user.token)
            .header("Origin", "http://app.example")
            .send()
            .expect("upvote")
    };
    // Alice's three issues spent her burst: her next write is refused…
    let refused = upvote(&alice, &issues[0]);
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=1).contains(&wait), "one write back every second: {wait}");
    let exposed = refused.headers()["access-control-expose-headers"].to_str().unwrap().to_lowercase();
    assert!(exposed.contains("retry-after"), "a page can read it: {exposed}");
    let body: Value = refused.json().unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // …reads are not…
    assert_eq!(app.get(&format!("/api/issues/{}", issues[0]), alice.auth()).0, StatusCode::OK);
    // …and Bob, from the same address, has what is left of the address's
    // five (a refused write spends none of them).
    assert_eq!(upvote(&bob, &issues[0]).status(), StatusCode::OK);
    assert_eq!(upvote(&bob, &issues[1]).status(), StatusCode::OK);
    assert_eq!(
        upvote(&bob, &issues[2]).status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the address's five are spent"
    );
    assert!(metric(&app, "civicpulse_rest_writes_rate_limited_total") >= 2);
}
