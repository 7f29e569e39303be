//! The realtime domain against a real node, in-process: rooms (join:issue,
//! leave:issue), messages over the socket and over REST, reactions, the
//! issue:* events, typing, presence, ordering under load — through the kit's
//! own Socket.IO client (`common::socket`). The official clients keep a
//! scenario each here (tests/js/realtime.mjs, tests/python/realtime.py), so
//! that real clients still exercise the domain; the Notifier example actor
//! is checked through the `civicpulse` binary itself.
//!
//! Each test starts its own node over a fresh SQLite file and makes its
//! users and issues over HTTP.

mod common;

use std::cell::OnceCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use civicpulse::domain::Role;
use common::binary::{self, Server};
use common::clients::{self, user_json};
use common::socket::{SocketClient, settle};
use common::{
    Method, StatusCode, TestApp, TestUser, absent_id, assert_error, is_id, is_timestamp, pct, str_of,
};
use serde_json::{Value, json};

// The payload fields of API.md, sorted.
const MESSAGE_KEYS: [&str; 6] = ["author", "content", "createdAt", "issueId", "messageId", "reactions"];
const AUTHOR_KEYS: [&str; 3] = ["avatarUrl", "displayName", "userId"];
const ISSUE_CREATED_KEYS: [&str; 9] =
    ["category", "city", "createdAt", "issueId", "priority", "reportedBy", "status", "title", "upvotes"];
const ISSUE_UPDATED_KEYS: [&str; 6] = ["assignedTo", "issueId", "priority", "status", "title", "updatedAt"];
const ISSUE_UPVOTED_KEYS: [&str; 4] = ["issueId", "upvoted", "upvotedBy", "upvotes"];
const REACTION_KEYS: [&str; 3] = ["issueId", "messageId", "reactions"];
const TYPING_KEYS: [&str; 4] = ["displayName", "isTyping", "issueId", "userId"];
const PRESENCE_UPDATE_KEYS: [&str; 4] = ["city", "displayName", "online", "userId"];
const PRESENCE_ITEM_KEYS: [&str; 3] = ["city", "displayName", "userId"];

/// A node with two issues reported by alice, and users made when first
/// asked for (each costs a password hash): alice, bob and carol live in
/// [`common::CITY`], dave in another city, erin in none; an official.
struct Fixture {
    app: TestApp,
    alice: TestUser,
    bob: TestUser,
    carol: OnceCell<TestUser>,
    dave: OnceCell<TestUser>,
    erin: OnceCell<TestUser>,
    official: OnceCell<TestUser>,
    issue: String,
    other_issue: String,
}

impl Fixture {
    fn new() -> Self {
        Self::on(TestApp::sqlite())
    }

    /// A fixture whose sockets may send as fast as they like (for tests of
    /// what happens at volume, not of the rate limits: tests/limits.rs).
    fn unlimited() -> Self {
        Self::on(TestApp::builder().unlimited().sqlite())
    }

    fn on(app: TestApp) -> Self {
        let alice = app.register("Alice");
        let bob = app.register("Bob");
        let issue = app.issue_id(&alice);
        let other_issue = app.issue_id(&alice);
        Self {
            app,
            alice,
            bob,
            carol: OnceCell::new(),
            dave: OnceCell::new(),
            erin: OnceCell::new(),
            official: OnceCell::new(),
            issue,
            other_issue,
        }
    }

    fn carol(&self) -> &TestUser {
        self.carol.get_or_init(|| self.app.register("Carol"))
    }

    fn dave(&self) -> &TestUser {
        self.dave.get_or_init(|| self.app.register_in("Dave", Some("shelbyville")))
    }

    fn erin(&self) -> &TestUser {
        self.erin.get_or_init(|| self.app.register_in("Erin", None))
    }

    fn official(&self) -> &TestUser {
        self.official.get_or_init(|| self.app.staff(Role::Official))
    }

    /// The JSON the realtime scripts take as `CP_INPUT`.
    fn input(&self) -> Value {
        let users = [
            ("alice", &self.alice),
            ("bob", &self.bob),
            ("carol", self.carol()),
            ("dave", self.dave()),
            ("erin", self.erin()),
        ];
        let mut input = clients::input_with_issues(&self.app, &users, &self.issue, &self.other_issue);
        input["official"] = user_json(self.official());
        input
    }

    fn socket(&self, user: &TestUser, label: &str) -> SocketClient {
        self.app.socket_labelled(user, label)
    }
}

fn unique(label: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{label} {:x}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn sorted_keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> =
        v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect();
    keys.sort();
    keys
}

fn pick(v: &Value, keys: &[&str]) -> Value {
    Value::Object(keys.iter().map(|k| (k.to_string(), v[*k].clone())).collect())
}

/// An error ack: exactly `{ok: false, error: {code, message, details?}}`,
/// with `code` when given.
#[track_caller]
fn assert_error_ack(reply: &Value, code: Option<&str>, what: &str) {
    assert_eq!(sorted_keys(reply), ["error", "ok"], "{what}: {reply}");
    assert_eq!(reply["ok"], false, "{what}: {reply}");
    let got = reply["error"]["code"].as_str().unwrap_or_else(|| panic!("{what}: no code: {reply}"));
    assert!(!got.is_empty() && got.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{what}: {reply}");
    if let Some(code) = code {
        assert_eq!(got, code, "{what}: {reply}");
    }
    assert!(reply["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {reply}");
    for key in sorted_keys(&reply["error"]) {
        assert!(["code", "details", "message"].contains(&key.as_str()), "{what}: {reply}");
    }
}

/// A new message (no reactions yet, no avatar) of `author` in `issue_id`.
#[track_caller]
fn assert_message(m: &Value, issue_id: &str, content: &str, author: &TestUser) {
    assert_eq!(sorted_keys(m), MESSAGE_KEYS, "{m}");
    assert_eq!(sorted_keys(&m["author"]), AUTHOR_KEYS, "{m}");
    assert!(is_id(&m["messageId"], "msg_"), "{m}");
    assert_eq!(m["issueId"], issue_id, "{m}");
    assert_eq!(m["content"], content, "{m}");
    assert_eq!(m["author"]["userId"], author.id.as_str(), "{m}");
    assert_eq!(m["author"]["displayName"], author.name.as_str(), "{m}");
    assert_eq!(m["author"]["avatarUrl"], Value::Null, "{m}");
    assert_eq!(m["reactions"], json!({}), "{m}");
    assert!(is_timestamp(&m["createdAt"]), "{m}");
}

/// Each client's queue holds no `name` event: the clients have had
/// [`QUIET`] for anything more to arrive.
#[track_caller]
fn none_left(name: &str, clients: &mut [&mut SocketClient]) {
    settle(clients);
    for client in clients.iter_mut() {
        client.expect_no_event(name, Duration::ZERO);
    }
}

// ---- connecting -------------------------------------------------------------------

/// Every bad credential gets CONNECT_ERROR `{message: "Authentication
/// failed"}`; the good token still connects.
#[test]
fn bad_credentials_are_refused_at_connect() {
    let f = Fixture::new();
    let mut expired = f.app.claims_for(&f.alice, Role::Citizen);
    expired.iat -= 3600;
    expired.exp = expired.iat + 60;
    let token = f.alice.token.as_str();
    for (what, auth) in [
        ("no auth at all", Value::Null),
        ("auth without token", json!({})),
        ("token null", json!({ "token": null })),
        ("token a number", json!({ "token": 42 })),
        ("empty token", json!({ "token": "" })),
        ("not a JWT", json!({ "token": "not-a-jwt" })),
        ("truncated signature", json!({ "token": &token[..token.len() - 6] })),
        ("Bearer prefix", json!({ "token": format!("Bearer {token}") })),
        ("expired", json!({ "token": f.app.mint(&expired) })),
        ("a refresh token", json!({ "token": f.alice.refresh })),
    ] {
        match f.app.connect_with_auth(auth) {
            Ok(_) => panic!("{what}: connected, but must be refused"),
            Err(refused) => assert_eq!(refused, json!({ "message": "Authentication failed" }), "{what}"),
        }
    }
    let mut alice = f.socket(&f.alice, "alice");
    alice.join(&f.issue);
    alice.assert_connected();
}

// ---- rooms --------------------------------------------------------------------

/// join:issue and leave:issue: their acks, good and bad, and what they do.
#[test]
fn join_and_leave_answer_acks_and_decide_who_hears_the_room() {
    let f = Fixture::new();
    let issue = f.issue.as_str();
    let mut a = f.socket(&f.alice, "alice");
    let mut a_tab = f.socket(&f.alice, "alice (second tab, never joins)");
    let mut b = f.socket(&f.bob, "bob");

    // Joining answers exactly {ok: true}, also a second time.
    a.join(issue);
    a.join(issue);
    b.join(issue);

    let absent = absent_id("iss_");
    let message_id = format!("msg_{}", &issue[4..]);
    let bad_joins: [(&str, Vec<Value>); 8] = [
        ("an unknown well-formed id", vec![json!(absent)]),
        ("a malformed id", vec![json!("iss_not-a-ulid")]),
        ("a message id", vec![json!(message_id)]),
        ("an empty string", vec![json!("")]),
        ("a number", vec![json!(42)]),
        ("null", vec![Value::Null]),
        ("an object", vec![json!({ "issueId": issue })]),
        ("no argument", vec![]),
    ];
    for (what, args) in bad_joins {
        let reply = a_tab.emit_args("join:issue", args);
        assert_error_ack(&reply, Some("not_found"), &format!("join:issue with {what}"));
    }
    let bad_leaves: [(&str, Vec<Value>); 4] = [
        ("a malformed id", vec![json!("iss_not-a-ulid")]),
        ("a number", vec![json!(42)]),
        ("null", vec![Value::Null]),
        ("no argument", vec![]),
    ];
    for (what, args) in bad_leaves {
        let reply = a_tab.emit_args("leave:issue", args);
        assert_error_ack(&reply, Some("not_found"), &format!("leave:issue with {what}"));
    }
    // Leaving a room one is not in is fine.
    a_tab.leave(&f.other_issue);

    // Members receive the room's messages once each; the never-joined tab
    // (same user, other socket) and the failed joins get nothing.
    let first = f.app.post_message(f.carol(), issue, &unique("first"));
    assert_eq!(a.expect_event("message:new"), first);
    assert_eq!(b.expect_event("message:new"), first);

    // Leaving answers {ok: true} and ends the deliveries, for that socket only.
    a.leave(issue);
    a.leave(issue);
    let second = f.app.post_message(f.carol(), issue, &unique("second"));
    assert_eq!(b.expect_event("message:new"), second);

    // A client that opens an issue and navigates away at once emits join and
    // leave without waiting: the leave comes last, so the socket is out.
    let mut c = f.socket(f.carol(), "carol (join and leave in a row)");
    c.emit_no_ack("join:issue", json!(issue));
    c.leave(issue);
    // …and the reverse order leaves it in.
    let mut d = f.socket(f.carol(), "carol (leave and join in a row)");
    d.emit_no_ack("leave:issue", json!(issue));
    d.join(issue);
    let third = f.app.post_message(&f.bob, issue, &unique("third"));
    assert_eq!(b.expect_event("message:new"), third);
    assert_eq!(d.expect_event("message:new"), third);

    // Only the message from before it left (a), every message once in order
    // (b), nothing for the never-joined tab and join + leave, only the one
    // after leave + join (d).
    none_left("message:new", &mut [&mut a, &mut a_tab, &mut b, &mut c, &mut d]);
    for t in [&a, &a_tab, &b, &c, &d] {
        t.assert_connected();
    }
}

// ---- messages and reactions -------------------------------------------------------

/// message:send and POST …/messages: the ack and message:new, to members only.
#[test]
fn message_send_acks_the_message_and_the_room_gets_the_same_as_from_rest() {
    let f = Fixture::new();
    let issue = f.issue.as_str();
    let mut a = f.socket(&f.alice, "alice (member)");
    let mut b = f.socket(&f.bob, "bob (member)");
    let mut c = f.socket(f.carol(), "carol (not a member)");
    let mut d = f.socket(f.dave(), "dave (not a member, sends)");
    let mut o = f.socket(f.carol(), "carol (member of the other room)");
    a.join(issue);
    b.join(issue);
    o.join(&f.other_issue);
    let mut want = Vec::new();

    // Over the socket: the ack is {ok: true, message}; every member, the
    // sender included, receives message:new with the very same payload.
    let content = unique("Reported to the council");
    let sent = a.emit("message:send", json!({ "issueId": issue, "content": format!("  {content}  ") }));
    assert_eq!(sorted_keys(&sent), ["message", "ok"], "{sent}");
    assert_eq!(sent["ok"], true);
    assert_message(&sent["message"], issue, &content, &f.alice);
    for t in [&mut a, &mut b] {
        assert_eq!(t.expect_event("message:new"), sent["message"], "{}", t.label());
    }
    want.push(sent["message"].clone());

    // Over REST: the 201 body and message:new are the same, at the same members.
    let rest_content = unique("Posted over REST");
    let rest = f.app.post_message(&f.bob, issue, &rest_content);
    assert_message(&rest, issue, &rest_content, &f.bob);
    for t in [&mut a, &mut b] {
        let got = t.expect_event("message:new");
        assert_eq!(sorted_keys(&got), MESSAGE_KEYS);
        assert_eq!(got, rest, "{}", t.label());
    }
    want.push(rest);

    // A socket that is not in the room may post to it; it does not hear it.
    let outside_content = unique("from outside the room");
    let from_outside = d.emit("message:send", json!({ "issueId": issue, "content": outside_content }));
    assert_eq!(from_outside["ok"], true, "{from_outside}");
    assert_message(&from_outside["message"], issue, &outside_content, f.dave());
    for t in [&mut a, &mut b] {
        assert_eq!(t.expect_event("message:new"), from_outside["message"], "{}", t.label());
    }
    want.push(from_outside["message"].clone());

    // Without an ack the message is stored and delivered all the same.
    let silent = unique("no ack asked");
    a.emit_no_ack("message:send", json!({ "issueId": issue, "content": silent }));
    let silent_message = b.expect_event("message:new");
    assert_message(&silent_message, issue, &silent, &f.alice);
    assert_eq!(a.expect_event("message:new"), silent_message);
    want.push(silent_message);

    // Bad payloads: an error ack, nothing stored, nothing emitted.
    let absent = absent_id("iss_");
    for (what, payload, code) in [
        ("empty content", json!({ "issueId": issue, "content": "" }), "validation_failed"),
        ("blank content", json!({ "issueId": issue, "content": " \n " }), "validation_failed"),
        ("2001 characters", json!({ "issueId": issue, "content": "x".repeat(2001) }), "validation_failed"),
        ("content a number", json!({ "issueId": issue, "content": 7 }), "validation_failed"),
        ("no issueId", json!({ "content": "hello" }), "validation_failed"),
        ("a string payload", json!("hello"), "validation_failed"),
        ("an unknown issue", json!({ "issueId": absent, "content": "hello" }), "not_found"),
        ("a malformed issue id", json!({ "issueId": "iss_nope", "content": "hello" }), "not_found"),
    ] {
        assert_error_ack(&a.emit("message:send", payload), Some(code), &format!("message:send with {what}"));
    }
    // Bad payloads without an ack are dropped quietly.
    a.emit_no_ack("message:send", json!({ "issueId": issue, "content": "" }));
    a.emit_no_ack("message:send", json!({ "issueId": absent, "content": "lost" }));

    // The other room's message stays there.
    let other = f.app.post_message(f.carol(), &f.other_issue, &unique("other room"));
    assert_eq!(o.expect_event("message:new"), other);

    // The room's messages, once each, in order (taken above); nothing for
    // the outsiders, even their own; the other room only its own.
    none_left("message:new", &mut [&mut a, &mut b, &mut c, &mut d, &mut o]);

    // History holds exactly what was acknowledged or delivered.
    let (status, history) = f.app.rest(&f.alice).get(&format!("/api/issues/{issue}/messages?limit=100"));
    assert_eq!(status, StatusCode::OK, "{history}");
    assert_eq!(history["items"], Value::Array(want), "the stored history equals the messages delivered");
    for t in [&a, &b, &c, &d, &o] {
        t.assert_connected();
    }
    // Every message went through the domain once.
    let posted = f.app.events().iter().filter(|e| e.name() == "message:new").count();
    assert_eq!(posted, 5, "four messages in the room, one in the other room");
}

/// message:reaction goes to the room when the counts change, and only then.
#[test]
fn reactions_reach_room_members_when_the_counts_change() {
    let f = Fixture::new();
    let issue = f.issue.as_str();
    let mut a = f.socket(&f.alice, "alice (member)");
    let mut b = f.socket(&f.bob, "bob (member)");
    let mut c = f.socket(f.carol(), "carol (not a member)");
    a.join(issue);
    b.join(issue);
    let m = f.app.post_message(&f.alice, issue, &unique("React to me"));
    let message_id = str_of(&m["messageId"]);
    for t in [&mut a, &mut b] {
        assert_eq!(t.expect_event("message:new"), m);
    }

    let path = |emoji: &str| format!("/api/messages/{message_id}/reactions/{}", pct(emoji));
    let request = |method: &Method, user: &TestUser, emoji: &str| {
        let api = f.app.rest(user);
        let (status, body) = api.json(method.clone(), &path(emoji), None);
        assert_eq!(status, StatusCode::OK, "{method} {emoji}: {body}");
        body
    };
    // A change: the answer, and the same payload at every member, once.
    let mut change = |method: Method, user: &TestUser, emoji: &str, reactions: Value| {
        let body = request(&method, user, emoji);
        assert_eq!(
            body,
            json!({ "messageId": message_id, "issueId": issue, "reactions": reactions }),
            "{method} {emoji}"
        );
        for t in [&mut a, &mut b] {
            let got = t.expect_event("message:reaction");
            assert_eq!(sorted_keys(&got), REACTION_KEYS, "{got}");
            assert_eq!(got, body, "{}", t.label());
        }
    };
    // No change: the same answer (and no event: checked at the end).
    let same = |method: Method, user: &TestUser, emoji: &str, reactions: Value| {
        let body = request(&method, user, emoji);
        assert_eq!(
            body,
            json!({ "messageId": message_id, "issueId": issue, "reactions": reactions }),
            "{method} {emoji} (no change)"
        );
    };

    change(Method::PUT, &f.bob, "👍", json!({ "👍": 1 }));
    same(Method::PUT, &f.bob, "👍", json!({ "👍": 1 }));
    change(Method::PUT, &f.alice, "❤️", json!({ "👍": 1, "❤️": 1 }));
    // A non-member may react over REST; the room hears it, the reactor does not.
    change(Method::PUT, f.carol(), "👍", json!({ "👍": 2, "❤️": 1 }));
    change(Method::DELETE, &f.bob, "👍", json!({ "👍": 1, "❤️": 1 }));
    same(Method::DELETE, &f.bob, "👍", json!({ "👍": 1, "❤️": 1 }));
    same(Method::DELETE, &f.bob, "🎉", json!({ "👍": 1, "❤️": 1 }));
    change(Method::DELETE, &f.alice, "❤️", json!({ "👍": 1 }));
    change(Method::DELETE, f.carol(), "👍", json!({}));
    same(Method::DELETE, f.carol(), "👍", json!({}));
    // Refused requests emit nothing.
    let bob = f.app.rest(&f.bob);
    assert_error(&bob.put(&path("abc")), StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let unknown = format!("/api/messages/{}/reactions/{}", absent_id("msg_"), pct("👍"));
    assert_error(&bob.put(&unknown), StatusCode::NOT_FOUND, "not_found");
    assert_eq!(f.app.anonymous().put(&path("👍")).0, StatusCode::UNAUTHORIZED);

    // One message:reaction per change, in order (taken above), none for the
    // outsider.
    none_left("message:reaction", &mut [&mut a, &mut b, &mut c]);
}

// ---- issue events ---------------------------------------------------------------

/// issue:created, issue:updated, issue:upvoted: to everyone, exact fields,
/// no event for no-ops.
#[test]
fn issue_events_reach_everyone_with_exactly_the_contract_fields() {
    let f = Fixture::new();
    let mut clients = vec![
        f.socket(&f.alice, "alice"),
        f.socket(&f.bob, "bob"),
        f.socket(f.erin(), "erin"),
        f.socket(f.dave(), "dave (in a room)"),
    ];
    clients[3].join(&f.issue);

    let (status, issue) = f.app.rest(f.carol()).post(
        "/api/issues",
        json!({ "title": unique("Broken streetlight"), "description": "Dark since Monday", "category": "electricity", "priority": "high" }),
    );
    assert_eq!(status, StatusCode::CREATED, "{issue}");
    assert_eq!(issue["city"], json!(f.carol().city), "the city defaults to the reporter's");
    let issue_id = str_of(&issue["issueId"]);
    for t in &mut clients {
        let created = t.expect_event("issue:created");
        assert_eq!(sorted_keys(&created), ISSUE_CREATED_KEYS, "{created}");
        assert_eq!(created, pick(&issue, &ISSUE_CREATED_KEYS));
        assert!(is_timestamp(&created["createdAt"]), "{created}");
        assert_eq!(created["upvotes"], 0);
        assert_eq!(created["status"], "open");
        assert_eq!(created["reportedBy"], f.carol().id.as_str());
    }

    let issue_path = format!("/api/issues/{issue_id}");
    let patch = |clients: &mut Vec<SocketClient>, user: &TestUser, body: Value, notable: bool| {
        let (status, after) = f.app.rest(user).patch(&issue_path, body.clone());
        assert_eq!(status, StatusCode::OK, "PATCH {body}: {after}");
        if notable {
            let want = pick(&after, &ISSUE_UPDATED_KEYS);
            for t in clients.iter_mut() {
                let got = t.expect_event("issue:updated");
                assert_eq!(sorted_keys(&got), ISSUE_UPDATED_KEYS, "{got}");
                assert_eq!(got, want, "issue:updated after {body}");
                assert!(is_timestamp(&got["updatedAt"]), "{got}");
            }
        }
        after
    };

    let title = unique("Streetlight out");
    let official = f.official().clone();
    let carol = f.carol().clone();
    patch(&mut clients, &carol, json!({ "title": title }), true);
    patch(&mut clients, &carol, json!({ "title": title }), false); // the same title again
    patch(&mut clients, &carol, json!({ "description": "Still dark" }), false); // not worth an event
    patch(&mut clients, &official, json!({ "priority": "critical" }), true);
    patch(&mut clients, &official, json!({ "assignedTo": official.id }), true);
    patch(&mut clients, &official, json!({ "status": "in_progress" }), true);
    patch(&mut clients, &official, json!({ "status": "in_progress", "priority": "critical" }), false);
    let unassigned = patch(&mut clients, &official, json!({ "assignedTo": null }), true);
    assert_eq!(unassigned["assignedTo"], Value::Null);
    patch(
        &mut clients,
        &official,
        json!({ "title": format!("{title} (confirmed)"), "status": "resolved", "priority": "low" }),
        true,
    );
    // Refused changes emit nothing.
    let refused = f.app.rest(f.official()).patch(&issue_path, json!({ "status": "bogus" }));
    assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let refused = f.app.rest(f.carol()).patch(&issue_path, json!({ "title": "Reporter after resolution" }));
    assert_error(&refused, StatusCode::FORBIDDEN, "forbidden");
    let refused = f.app.rest(&f.bob).patch(&issue_path, json!({ "status": "closed" }));
    assert_error(&refused, StatusCode::FORBIDDEN, "forbidden");

    let upvote_path = format!("/api/issues/{issue_id}/upvote");
    let upvote = |clients: &mut Vec<SocketClient>,
                  method: Method,
                  user: &TestUser,
                  upvotes: i64,
                  upvoted: bool,
                  changed: bool| {
        let (status, body) = f.app.rest(user).json(method.clone(), &upvote_path, None);
        assert_eq!(status, StatusCode::OK, "{method} upvote by {}: {body}", user.name);
        assert_eq!(
            body,
            json!({ "issueId": issue_id, "upvotes": upvotes, "upvoted": upvoted }),
            "{method} upvote by {}",
            user.name
        );
        if changed {
            let want =
                json!({ "issueId": issue_id, "upvotes": upvotes, "upvotedBy": user.id, "upvoted": upvoted });
            for t in clients.iter_mut() {
                let got = t.expect_event("issue:upvoted");
                assert_eq!(sorted_keys(&got), ISSUE_UPVOTED_KEYS, "{got}");
                assert_eq!(got, want);
            }
        }
    };
    upvote(&mut clients, Method::POST, &f.bob, 1, true, true);
    upvote(&mut clients, Method::POST, &f.bob, 1, true, false); // once per user
    upvote(&mut clients, Method::POST, &f.alice, 2, true, true);
    upvote(&mut clients, Method::DELETE, &f.bob, 1, false, true); // withdrawn: upvoted false
    upvote(&mut clients, Method::DELETE, &f.bob, 1, false, false); // nothing to withdraw
    upvote(&mut clients, Method::DELETE, f.dave(), 1, false, false); // never upvoted
    upvote(&mut clients, Method::POST, &f.bob, 2, true, true); // again after withdrawing
    let absent = f.app.rest(&f.bob).post_empty(&format!("/api/issues/{}/upvote", absent_id("iss_")));
    assert_error(&absent, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(f.app.anonymous().post_empty(&upvote_path).0, StatusCode::UNAUTHORIZED);

    // A refused report emits nothing either.
    let refused = f.app.rest(&f.bob).post("/api/issues", json!({ "title": "no", "category": "roads" }));
    assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");

    // One issue:created; issue:updated for each notable change and
    // issue:upvoted for each count change only (each taken above, in order).
    let mut all: Vec<&mut SocketClient> = clients.iter_mut().collect();
    settle(&mut all);
    for t in all {
        for name in ["issue:created", "issue:updated", "issue:upvoted"] {
            t.expect_no_event(name, Duration::ZERO);
        }
        t.assert_connected();
    }
}

// ---- typing ---------------------------------------------------------------------

fn typing_state(issue: &str, user: &TestUser, is_typing: bool) -> Value {
    json!({ "issueId": issue, "userId": user.id, "displayName": user.name, "isTyping": is_typing })
}

fn typing(t: &mut SocketClient, issue: &str, is_typing: bool) -> Value {
    t.emit("user:typing", json!({ "issueId": issue, "isTyping": is_typing }))
}

/// user:typing: members only, never echoed to the typist, no repeats,
/// cleared on leave and disconnect.
#[test]
fn typing_goes_to_the_other_members_only_and_is_cleared_on_leave_and_disconnect() {
    let f = Fixture::new();
    let issue = f.issue.as_str();
    let ok = json!({ "ok": true });
    let state = |user: &TestUser, is_typing: bool| typing_state(issue, user, is_typing);

    let mut b = f.socket(&f.bob, "bob (member)");
    let mut a1 = f.socket(&f.alice, "alice tab 1 (member)");
    let mut a2 = f.socket(&f.alice, "alice tab 2 (member)");
    let mut a3 = f.socket(&f.alice, "alice tab 3 (not a member)");
    let mut c = f.socket(f.carol(), "carol (not a member)");
    let mut d = f.socket(f.dave(), "dave (member of the other room)");
    for t in [&mut b, &mut a1, &mut a2] {
        t.join(issue);
    }
    d.join(&f.other_issue);

    // Only a member socket may type: a non-member gets an error ack, and so
    // does another tab of a member user; nobody receives anything.
    assert_error_ack(&typing(&mut c, issue, true), None, "user:typing from a non-member");
    assert_error_ack(
        &typing(&mut a3, issue, true),
        None,
        "user:typing from a socket of a member user that did not join",
    );
    let absent = absent_id("iss_");
    assert_error_ack(&typing(&mut c, &absent, true), None, "user:typing in an unknown issue");
    for (what, payload) in [
        ("isTyping a string", json!({ "issueId": issue, "isTyping": "yes" })),
        ("no isTyping", json!({ "issueId": issue })),
        ("no issueId", json!({ "isTyping": true })),
        ("a string payload", json!(issue)),
        ("null", Value::Null),
    ] {
        let reply = a1.emit("user:typing", payload);
        assert_error_ack(&reply, Some("validation_failed"), &format!("user:typing with {what}"));
    }
    c.emit_no_ack("user:typing", json!({ "issueId": issue, "isTyping": true })); // and without an ack
    none_left("user:typing", &mut [&mut b, &mut a1, &mut a2, &mut a3, &mut c, &mut d]);

    // A member types: the other user's socket hears it; none of the typist's
    // own sockets do, whether in the room or not; nor anyone outside.
    assert_eq!(typing(&mut a1, issue, true), ok);
    let got = b.expect_event("user:typing");
    assert_eq!(sorted_keys(&got), TYPING_KEYS, "{got}");
    assert_eq!(got, state(&f.alice, true));

    // Identical states are not re-broadcast, from any of the user's tabs;
    // tab 2 now holds the state.
    assert_eq!(typing(&mut a1, issue, true), ok);
    assert_eq!(typing(&mut a2, issue, true), ok);
    // Tab 1 (not the last to set it) disconnecting does not clear it.
    a1.close();
    none_left("user:typing", &mut [&mut b, &mut a1, &mut a2, &mut a3, &mut c, &mut d]);

    // The user stops: false, once.
    assert_eq!(typing(&mut a2, issue, false), ok);
    assert_eq!(b.expect_event("user:typing"), state(&f.alice, false));
    assert_eq!(typing(&mut a2, issue, false), ok);

    // From here on another tab of alice's stays in the room: the state
    // belongs to the socket that set it, not to the user.
    let mut a6 = f.socket(&f.alice, "alice tab 6 (member, stays)");
    a6.join(issue);
    // isTyping false from something other than the expiry: before 4.5 s
    // have passed since `refreshed`, the last isTyping: true.
    let cleared_before_expiry = |b: &mut SocketClient, refreshed: Instant, what: &str| {
        let left = (refreshed + Duration::from_millis(4500)).saturating_duration_since(Instant::now());
        let got = b.expect_event_within("user:typing", left);
        assert_eq!(got, state(&f.alice, false), "isTyping false on {what}");
    };

    // Leaving the room clears it, with isTyping false to the others.
    assert_eq!(typing(&mut a2, issue, true), ok);
    assert_eq!(b.expect_event("user:typing"), state(&f.alice, true));
    let refreshed = Instant::now();
    assert_eq!(typing(&mut a2, issue, true), ok);
    a2.leave(issue);
    cleared_before_expiry(&mut b, refreshed, "leave:issue of the socket that set it");

    // Disconnecting the socket that set it clears it; another tab of the same
    // user leaving first does not.
    let mut a4 = f.socket(&f.alice, "alice tab 4 (member)");
    let mut a5 = f.socket(&f.alice, "alice tab 5 (member)");
    a4.join(issue);
    a5.join(issue);
    assert_eq!(typing(&mut a4, issue, true), ok);
    assert_eq!(b.expect_event("user:typing"), state(&f.alice, true));
    a5.leave(issue);
    none_left("user:typing", &mut [&mut b, &mut a4]);
    let refreshed = Instant::now();
    assert_eq!(typing(&mut a4, issue, true), ok);
    a4.close();
    cleared_before_expiry(&mut b, refreshed, "disconnect of the socket that set it");

    // The other way round: bob types, alice's member tab hears it, bob does not.
    assert_eq!(typing(&mut b, issue, true), ok);
    assert_eq!(a6.expect_event("user:typing"), state(&f.bob, true));
    assert_eq!(typing(&mut b, issue, false), ok);
    assert_eq!(a6.expect_event("user:typing"), state(&f.bob, false));

    // Alice's typing states, each once, in order, at bob (taken above);
    // nothing more anywhere: not to the typist's own tabs, not outside the room.
    none_left(
        "user:typing",
        &mut [&mut b, &mut a6, &mut a1, &mut a2, &mut a3, &mut a4, &mut a5, &mut c, &mut d],
    );
    for t in [&b, &a2, &a3, &a5, &a6, &c, &d] {
        t.assert_connected();
    }
}

/// The server clears a typing state 5 s after the last isTyping: true. (Named
/// to sort early: libtest starts tests in name order, and this one waits.)
#[test]
fn after_five_seconds_without_a_keystroke_typing_is_cleared() {
    let f = Fixture::new();
    let issue = f.issue.as_str();
    let ok = json!({ "ok": true });
    let state = |is_typing: bool| typing_state(issue, &f.alice, is_typing);
    let mut a = f.socket(&f.alice, "alice (typist)");
    let mut b = f.socket(&f.bob, "bob (member)");
    a.join(issue);
    b.join(issue);

    let first_true = Instant::now();
    assert_eq!(typing(&mut a, issue, true), ok);
    assert_eq!(b.expect_event("user:typing"), state(true));
    // A new isTyping: true 1.5 s later is not re-broadcast but restarts the clock.
    std::thread::sleep(Duration::from_millis(1500));
    let last_true = Instant::now();
    assert_eq!(typing(&mut a, issue, true), ok);
    let expiry = b.expect_event_at("user:typing", Duration::from_secs(12));
    assert_eq!(expiry.payload, state(false), "the only event after the first is the expiry");
    let since_last = expiry.at - last_true;
    println!(
        "isTyping false {since_last:?} after the last isTyping true, {:?} after the first",
        expiry.at - first_true
    );
    assert!(
        since_last >= Duration::from_millis(4500),
        "cleared {since_last:?} after the last isTyping: true, before 5 s"
    );
    assert!(
        since_last <= Duration::from_secs(8),
        "cleared {since_last:?} after the last isTyping: true, long after 5 s"
    );

    // Cleared means cleared: typing again is news again.
    assert_eq!(typing(&mut a, issue, true), ok);
    assert_eq!(b.expect_event("user:typing"), state(true));
    assert_eq!(typing(&mut a, issue, false), ok);
    assert_eq!(b.expect_event("user:typing"), state(false));
    none_left("user:typing", &mut [&mut a, &mut b]);
}

// ---- presence -------------------------------------------------------------------

/// presence:update on the first socket and after the last; presence:list
/// and GET /api/presence agree.
#[test]
fn presence_updates_on_first_and_last_socket_and_lists_agree_with_rest() {
    let f = Fixture::new();
    let (alice, bob, dave, erin) = (&f.alice, &f.bob, f.dave(), f.erin());
    let update = |user: &TestUser, online: bool| json!({ "userId": user.id, "displayName": user.name, "online": online, "city": user.city });
    let item = |user: &TestUser| json!({ "userId": user.id, "displayName": user.name, "city": user.city });
    let about = |user: &TestUser| {
        let id = user.id.clone();
        move |p: &Value| p["userId"] == id.as_str()
    };

    // The very first socket hears its own user come online.
    let mut b = f.socket(bob, "bob");
    let bob_online = b.expect_matching("presence:update", about(bob));
    assert_eq!(sorted_keys(&bob_online), PRESENCE_UPDATE_KEYS, "{bob_online}");
    assert_eq!(bob_online, update(bob, true));

    // alice's first tab: every socket, the new one included.
    let mut a1 = f.socket(alice, "alice tab 1");
    for t in [&mut b, &mut a1] {
        assert_eq!(t.expect_matching("presence:update", about(alice)), update(alice, true), "{}", t.label());
    }

    // Her second tab: no news.
    let mut a2 = f.socket(alice, "alice tab 2");
    // A user in another city, and one in none (city null).
    let mut d = f.socket(dave, "dave");
    let mut e = f.socket(erin, "erin (no city)");
    for t in [&mut b, &mut a1, &mut a2, &mut d, &mut e] {
        assert_eq!(t.expect_matching("presence:update", about(erin)), update(erin, true), "{}", t.label());
    }
    for t in [&mut b, &mut a1, &mut a2, &mut d] {
        assert_eq!(t.expect_matching("presence:update", about(dave)), update(dave, true), "{}", t.label());
    }
    // alice online once for two tabs (b and a1 took it above); nothing about
    // users online before it connected (a2, d); erin only her own arrival.
    none_left("presence:update", &mut [&mut b, &mut a1, &mut a2, &mut d, &mut e]);

    // presence:list: the ack and GET /api/presence agree, with and without a city.
    let by_user = |mut items: Vec<Value>| {
        items.sort_by(|x, y| x["userId"].as_str().cmp(&y["userId"].as_str()));
        items
    };
    let list = |t: &mut SocketClient, args: Vec<Value>| {
        let reply = t.emit_args("presence:list", args);
        assert_eq!(sorted_keys(&reply), ["items", "ok"], "{reply}");
        assert_eq!(reply["ok"], true);
        let items = reply["items"].as_array().expect("items").clone();
        for i in &items {
            assert_eq!(sorted_keys(i), PRESENCE_ITEM_KEYS, "{i}");
        }
        by_user(items)
    };
    let rest = |query: &str| {
        let (status, body) = f.app.rest(alice).get(&format!("/api/presence{query}"));
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(sorted_keys(&body), ["items"], "{body}");
        let items = body["items"].as_array().expect("items").clone();
        for i in &items {
            assert_eq!(sorted_keys(i), PRESENCE_ITEM_KEYS, "{i}");
        }
        by_user(items)
    };
    let everyone = by_user(vec![item(alice), item(bob), item(dave), item(erin)]);
    let springfield = by_user(vec![item(alice), item(bob)]);
    let city = alice.city.clone().expect("alice's city");
    let dave_city = dave.city.clone().expect("dave's city");
    assert_eq!(alice.city, bob.city);
    assert_ne!(dave.city, alice.city);
    assert_eq!(erin.city, None);
    assert_eq!(list(&mut b, vec![json!({})]), everyone, "presence:list {{}}");
    assert_eq!(list(&mut a2, vec![]), everyone, "presence:list without a payload");
    assert_eq!(list(&mut d, vec![json!({ "city": null })]), everyone, "presence:list {{city: null}}");
    assert_eq!(rest(""), everyone, "GET /api/presence");
    assert_eq!(list(&mut b, vec![json!({ "city": city })]), springfield, "presence:list {{city}}");
    assert_eq!(rest(&format!("?city={city}")), springfield, "GET /api/presence?city=");
    assert_eq!(list(&mut e, vec![json!({ "city": dave_city })]), vec![item(dave)], "the other city");
    assert_eq!(rest(&format!("?city={dave_city}")), vec![item(dave)]);
    assert_eq!(list(&mut e, vec![json!({ "city": "nowhere-at-all" })]), Vec::<Value>::new(), "nobody online");
    assert_eq!(rest("?city=nowhere-at-all"), Vec::<Value>::new());
    for (what, payload) in [
        ("a city that is not a slug", json!({ "city": "Not A City" })),
        ("a city number", json!({ "city": 42 })),
        ("a string payload", json!(city)),
        ("an array payload", json!([{ "city": city }])),
    ] {
        let reply = b.emit("presence:list", payload);
        assert_error_ack(&reply, Some("validation_failed"), &format!("presence:list with {what}"));
    }
    let refused = f.app.rest(alice).get("/api/presence?city=Not%20A%20City");
    assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(f.app.anonymous().get("/api/presence").0, StatusCode::UNAUTHORIZED);

    // alice's second tab goes away: she is still online, nobody hears a thing.
    a2.close();
    none_left("presence:update", &mut [&mut b, &mut a1, &mut d, &mut e]);
    assert_eq!(list(&mut b, vec![json!({})]), everyone, "alice is online with one tab left");
    assert_eq!(rest(""), everyone);

    // Her last tab goes: online false, to everyone left.
    a1.close();
    for t in [&mut b, &mut d, &mut e] {
        let gone = t.expect_matching("presence:update", about(alice));
        assert_eq!(sorted_keys(&gone), PRESENCE_UPDATE_KEYS);
        assert_eq!(gone, update(alice, false), "{}", t.label());
    }
    let without_alice: Vec<Value> =
        everyone.iter().filter(|i| i["userId"] != alice.id.as_str()).cloned().collect();
    assert_eq!(list(&mut b, vec![json!({})]), without_alice, "alice is gone from presence:list");
    assert_eq!(rest(""), without_alice, "alice is gone from GET /api/presence");
    assert_eq!(rest(&format!("?city={city}")), vec![item(bob)]);

    // A user without a city goes: city null in the update.
    e.close();
    for t in [&mut b, &mut d] {
        assert_eq!(t.expect_matching("presence:update", about(erin)), update(erin, false), "{}", t.label());
    }

    // Coming back is a first socket again.
    let mut a3 = f.socket(alice, "alice tab 3 (back)");
    for t in [&mut b, &mut d, &mut a3] {
        assert_eq!(t.expect_matching("presence:update", about(alice)), update(alice, true), "{}", t.label());
    }
    // Each presence once, in order (taken above), nothing more.
    none_left("presence:update", &mut [&mut b, &mut d, &mut a3]);
    for t in [&b, &d, &a3] {
        t.assert_connected();
    }
}

// ---- ordering -------------------------------------------------------------------

/// 1,000 message:send from one socket arrive, and are acknowledged, in order.
#[test]
fn a_thousand_messages_from_one_socket_arrive_in_order() {
    const N: usize = 1000;
    let f = Fixture::unlimited();
    let issue = f.issue.clone();
    let mut a = f.socket(&f.alice, "alice (sender, member)");
    let mut b = f.socket(&f.bob, "bob (member)");
    let mut c = f.socket(f.carol(), "carol (member)");
    for t in [&mut a, &mut b, &mut c] {
        t.join(&issue);
    }

    let tag = unique("order");
    let contents: Vec<String> = (0..N).map(|i| format!("{tag} #{i}")).collect();
    // The other members read on threads of their own while alice sends.
    let readers: Vec<_> = [b, c]
        .into_iter()
        .map(|mut t| {
            std::thread::spawn(move || {
                let got: Vec<Value> =
                    (0..N).map(|_| t.expect_event_within("message:new", Duration::from_secs(30))).collect();
                (t, got)
            })
        })
        .collect();

    let started = Instant::now();
    let ids: Vec<u64> = contents
        .iter()
        .enumerate()
        .map(|(i, content)| {
            if i % 50 == 49 {
                // Take in what has arrived, so neither side's buffers fill.
                a.read_for(Duration::ZERO);
            }
            a.emit_later("message:send", json!({ "issueId": issue, "content": content }))
        })
        .collect();
    let replies: Vec<Value> = ids.iter().map(|&id| a.ack(id, Duration::from_secs(30))).collect();
    println!("{N} acks in {:?}", started.elapsed());
    let bad: Vec<&Value> = replies.iter().filter(|r| r["ok"] != true).take(3).collect();
    assert!(bad.is_empty(), "refused sends: {bad:?}");
    let acked: Vec<&str> = replies.iter().map(|r| r["message"]["content"].as_str().unwrap_or("")).collect();
    assert_eq!(acked, contents, "each ack answers its own message");
    let arrivals = a.ack_arrivals();
    assert_eq!(&arrivals[arrivals.len() - N..], ids.as_slice(), "acks arrive in the order sent");
    let message_ids: Vec<Value> = replies.iter().map(|r| r["message"]["messageId"].clone()).collect();
    let distinct: std::collections::HashSet<String> = message_ids.iter().map(|v| v.to_string()).collect();
    assert_eq!(distinct.len(), N, "distinct message ids");

    let own: Vec<Value> =
        (0..N).map(|_| a.expect_event_within("message:new", Duration::from_secs(30))).collect();
    let mut members = vec![(a, own)];
    members.extend(readers.into_iter().map(|r| r.join().expect("reader thread")));
    println!("{N} message:new at every member in {:?}", started.elapsed());
    let mut sockets: Vec<&mut SocketClient> = Vec::new();
    for (t, got) in &mut members {
        let order: Vec<&str> = got.iter().map(|m| m["content"].as_str().unwrap_or("")).collect();
        if let Some(first_wrong) = order.iter().zip(&contents).position(|(got, want)| got != want) {
            let from = first_wrong.saturating_sub(2);
            panic!(
                "{}: out of order from #{first_wrong}: {:?}",
                t.label(),
                &order[from..(first_wrong + 3).min(N)]
            );
        }
        let got_ids: Vec<Value> = got.iter().map(|m| m["messageId"].clone()).collect();
        assert_eq!(got_ids, message_ids, "{}: the acknowledged messages", t.label());
        sockets.push(t);
    }
    // None lost (all N taken above) or duplicated (nothing more arrives).
    none_left("message:new", &mut sockets);
    for t in sockets {
        t.assert_connected();
    }

    // And the history lists them in the same order.
    let (status, page) = f.app.rest(&f.alice).get(&format!("/api/issues/{issue}/messages?limit=100"));
    assert_eq!(status, StatusCode::OK, "{page}");
    let history: Vec<Value> =
        page["items"].as_array().expect("items").iter().map(|m| m["messageId"].clone()).collect();
    assert_eq!(history, &message_ids[N - 100..], "the newest page of history");
}

// ---- the real clients -------------------------------------------------------------

#[test]
fn js_message_send_acks_the_message_and_the_room_gets_the_same_as_from_rest() {
    let f = Fixture::new();
    clients::js("realtime.mjs", "messages", &f.input());
    // Every message the script saw went through the domain once.
    let posted = f.app.events().iter().filter(|e| e.name() == "message:new").count();
    assert_eq!(posted, 5, "four messages in the room, one in the other room");
}

#[test]
fn js_reactions_reach_room_members_when_the_counts_change() {
    clients::js("realtime.mjs", "reactions", &Fixture::new().input());
}

#[test]
fn py_typing_and_presence_between_python_clients() {
    clients::py("realtime.py", "typing-presence", &Fixture::new().input());
}

#[test]
fn py_messages_and_reactions_reach_python_room_members() {
    clients::py("realtime.py", "messages", &Fixture::new().input());
}

// ---- the Notifier example actor, in the real binary ---------------------------------

/// `civicpulse user create …` on the database; answers the new user's id.
fn create_user_with_cli(database_url: &str, role: &str, email: &str, name: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let vars = [("DATABASE_URL", database_url), ("JWT_SECRET", binary::secret())];
    let out = binary::run(
        dir.path(),
        &[
            "user",
            "create",
            "--role",
            role,
            "--email",
            email,
            "--password",
            common::PASSWORD,
            "--name",
            name,
            "--city",
            common::CITY,
        ],
        &vars,
    );
    assert!(out.status.success(), "user create: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn notifier_logs_critical_issues_and_nothing_for_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = format!("sqlite://{}", dir.path().join("civicpulse.db").display());
    let official_email = "official@example.com";
    let official_id = create_user_with_cli(&database_url, "official", official_email, "Olive Official");
    let server = Server::start(&database_url, &[("RUST_LOG", "civicpulse::notifier=warn")]);

    let (status, registered) = server.request(
        Method::POST,
        "/api/auth/register",
        None,
        json!({ "email": "reporter@example.com", "password": common::PASSWORD, "displayName": "Rita", "city": common::CITY }),
    );
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    let reporter = str_of(&registered["accessToken"]);
    let (status, signed_in) = server.request(
        Method::POST,
        "/api/auth/login",
        None,
        json!({ "email": official_email, "password": common::PASSWORD }),
    );
    assert_eq!(status, StatusCode::OK, "{signed_in}");
    assert_eq!(signed_in["user"]["userId"], official_id.as_str());
    let official = str_of(&signed_in["accessToken"]);

    let report = |priority: &str| {
        let body =
            json!({ "title": format!("A {priority} issue"), "category": "water", "priority": priority });
        let (status, issue) = server.request(Method::POST, "/api/issues", Some(&reporter), body);
        assert_eq!(status, StatusCode::CREATED, "{issue}");
        str_of(&issue["issueId"])
    };
    // The low one first: once the critical one's line is out, a line for the
    // low one would have been written before it.
    let low = report("low");
    let high = report("high");
    let critical = report("critical");
    let line = server.wait_for_line(&format!("CRITICAL issue={critical}"), Duration::from_secs(20));
    assert!(line.contains(&format!("city={}", common::CITY)), "{line}");
    assert!(line.contains("status=open"), "{line}");
    assert!(line.contains(" WARN "), "logged as a warning: {line}");

    let logged = server.stderr();
    assert!(!logged.contains(&low), "a line for the low issue:\n{logged}");
    assert!(!logged.contains(&high), "a line for the high issue:\n{logged}");
    assert_eq!(logged.matches("CRITICAL issue=").count(), 1, "one line for one critical issue:\n{logged}");
    // RUST_LOG=civicpulse::notifier=warn lets nothing else through.
    assert!(logged.lines().all(|l| l.contains("civicpulse::notifier")), "other log lines:\n{logged}");

    // An issue that becomes critical later is worth a line too (the
    // Notifier's documented behaviour), the low one still none of its own.
    let (status, patched) = server.request(
        Method::PATCH,
        &format!("/api/issues/{high}"),
        Some(&official),
        json!({ "priority": "critical" }),
    );
    assert_eq!(status, StatusCode::OK, "{patched}");
    server.wait_for_line(&format!("CRITICAL issue={high}"), Duration::from_secs(20));
    let logged = server.stderr();
    assert!(!logged.contains(&low), "a line for the low issue:\n{logged}");
    assert_eq!(logged.matches("CRITICAL issue=").count(), 2, "{logged}");
}
