//! Messages on an issue: posting and the history.

use std::collections::BTreeSet;

use crate::common::*;
use civicpulse::domain::Role;
use civicpulse::domain::events::DomainEvent;
use serde_json::{Value, json};

on_both_backends!(
    post_message_answers_201,
    message_content_validation,
    message_on_unknown_issue_is_404,
    concurrent_messages_each_get_their_own_outcome,
    message_history_pages_back_without_overlap,
    message_history_limit_and_before_bounds,
);

// ---------------------------------------------------------------------------
// Messages and reactions
// ---------------------------------------------------------------------------

fn post_message_answers_201(app: &TestApp) {
    let reporter = app.register("Reporter");
    let (status, v) = app.post(
        "/api/auth/register",
        None,
        Some(json!({ "email": "chatty@example.com", "password": PASSWORD, "displayName": "Chatty", "avatarUrl": "https://example.com/c.png" })),
    );
    assert_eq!(status, StatusCode::CREATED);
    let chatty_id = str_of(&v["user"]["userId"]);
    let chatty_token = str_of(&v["accessToken"]);
    let issue = app.issue_id(&reporter);

    let (status, m) = app.post(
        &format!("/api/issues/{issue}/messages"),
        Some(&chatty_token),
        Some(json!({ "content": "  Same here, since Monday.  " })),
    );
    assert_eq!(status, StatusCode::CREATED, "{m}");
    let keys: BTreeSet<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["messageId", "issueId", "content", "author", "reactions", "createdAt"]));
    assert!(is_id(&m["messageId"], "msg_"), "{m}");
    assert_eq!(m["issueId"], issue.as_str());
    assert_eq!(m["content"], "Same here, since Monday.");
    assert_eq!(
        m["author"],
        json!({ "userId": chatty_id, "displayName": "Chatty", "avatarUrl": "https://example.com/c.png" })
    );
    assert_eq!(m["reactions"], json!({}));
    assert!(is_timestamp(&m["createdAt"]));

    let (status, page) = app.get(&format!("/api/issues/{issue}/messages"), reporter.auth());
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page, json!({ "items": [m], "nextCursor": null }));

    assert_error(
        &app.post(&format!("/api/issues/{issue}/messages"), None, Some(json!({ "content": "anon" }))),
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
}

fn message_content_validation(app: &TestApp) {
    let user = app.register("Writer");
    let issue = app.issue_id(&user);
    let path = format!("/api/issues/{issue}/messages");
    for content in
        [json!(""), json!("   \n\t "), json!("x".repeat(2001)), json!(5), json!(null), json!(["hi"])]
    {
        assert_invalid(&app.post(&path, user.auth(), Some(json!({ "content": content }))), &["content"]);
    }
    assert_invalid(&app.post(&path, user.auth(), Some(json!({}))), &["content"]);
    // 2000 characters (emoji are one each) fit, padding is trimmed first.
    let long = format!("  {}  ", "🎉".repeat(2000));
    let m = app.post_message(&user, &issue, &long);
    assert_eq!(m["content"].as_str().unwrap().chars().count(), 2000);
    let (_, page) = app.get(&path, user.auth());
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "only the valid message was stored");
}

fn message_on_unknown_issue_is_404(app: &TestApp) {
    let user = app.register("Lost");
    for id in [absent_id("iss_"), "nope".into()] {
        let path = format!("/api/issues/{id}/messages");
        assert_error(
            &app.post(&path, user.auth(), Some(json!({ "content": "hello?" }))),
            StatusCode::NOT_FOUND,
            "not_found",
        );
        assert_error(&app.get(&path, user.auth()), StatusCode::NOT_FOUND, "not_found");
    }
}

/// Messages are stored in batches by one writer: a batch that mixes good
/// messages with refused ones must store exactly the good ones, answer each
/// request with its own outcome and publish only what was stored.
fn concurrent_messages_each_get_their_own_outcome(app: &TestApp) {
    let user = app.register("Busy");
    let issue = app.issue_id(&user);
    // A valid token for a user that does not exist (a database reset under
    // a long-lived secret).
    let ghost = TestUser { id: absent_id("usr_"), ..user.clone() };
    let ghost_token = app.mint(&app.claims_for(&ghost, Role::Citizen));
    let missing_issue = absent_id("iss_");
    app.take_events();
    let outcomes = concurrently(30, |i| {
        let (token, target) = match i % 3 {
            0 => (user.token.as_str(), issue.as_str()),
            1 => (user.token.as_str(), missing_issue.as_str()),
            _ => (ghost_token.as_str(), issue.as_str()),
        };
        let path = format!("/api/issues/{target}/messages");
        (i, app.post(&path, Some(token), Some(json!({ "content": format!("m{i}") }))))
    });
    let mut stored = Vec::new();
    for (i, res) in &outcomes {
        match i % 3 {
            0 => {
                assert_eq!(res.0, StatusCode::CREATED, "{}", res.1);
                assert_eq!(res.1["content"], format!("m{i}"));
                assert_eq!(res.1["author"]["userId"], user.id);
                stored.push(str_of(&res.1["messageId"]));
            }
            1 => drop(assert_error(res, StatusCode::NOT_FOUND, "not_found")),
            _ => drop(assert_error(res, StatusCode::UNAUTHORIZED, "invalid_token")),
        }
    }
    stored.sort();
    let (status, page) = app.get(&format!("/api/issues/{issue}/messages?limit=100"), user.auth());
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        ids_of(&page, "messageId"),
        stored,
        "history holds exactly the accepted messages, in id order"
    );
    let mut published: Vec<String> = app
        .events()
        .into_iter()
        .map(|e| match e {
            DomainEvent::MessagePosted(m) => m.message_id,
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    published.sort();
    assert_eq!(published, stored);
}

fn message_history_pages_back_without_overlap(app: &TestApp) {
    let a = app.register("Alpha");
    let b = app.register("Beta");
    let issue = app.issue_id(&a);
    let other_issue = app.issue_id(&a);
    app.post_message(&a, &other_issue, "elsewhere");
    let posted: Vec<String> = (0..7)
        .map(|i| {
            let author = if i % 2 == 0 { &a } else { &b };
            str_of(&app.post_message(author, &issue, &format!("message {i}"))["messageId"])
        })
        .collect();
    let path = format!("/api/issues/{issue}/messages");

    let (status, all) = app.get(&path, a.auth());
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids_of(&all, "messageId"), posted, "oldest first, this issue only");
    assert_eq!(all["nextCursor"], Value::Null);
    let contents: Vec<&str> =
        all["items"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, (0..7).map(|i| format!("message {i}")).collect::<Vec<_>>());
    assert_eq!(all["items"][1]["author"]["userId"], b.id.as_str());

    let mut pages = Vec::new();
    let mut query = "limit=3".to_string();
    loop {
        let (status, page) = app.get(&format!("{path}?{query}"), a.auth());
        assert_eq!(status, StatusCode::OK, "{page}");
        let ids = ids_of(&page, "messageId");
        pages.push(ids.clone());
        match page["nextCursor"].as_str() {
            Some(cursor) => {
                assert_eq!(cursor, ids[0], "the cursor is the oldest message of the page");
                query = format!("limit=3&before={cursor}");
            }
            None => break,
        }
        // New messages arriving meanwhile do not disturb paging back.
        app.post_message(&b, &issue, "late");
        assert!(pages.len() < 10);
    }
    assert_eq!(pages, [posted[4..7].to_vec(), posted[1..4].to_vec(), posted[0..1].to_vec()]);
}

fn message_history_limit_and_before_bounds(app: &TestApp) {
    let user = app.register("Bounded");
    let issue = app.issue_id(&user);
    for i in 0..3 {
        app.post_message(&user, &issue, &format!("m{i}"));
    }
    let path = format!("/api/issues/{issue}/messages");
    for bad in ["0", "101", "x", "-5", ""] {
        assert_invalid(&app.get(&format!("{path}?limit={bad}"), user.auth()), &["limit"]);
    }
    for bad in ["nope", "iss_01HN5K7ZQ4X9J8W2V3B6C1D0EF"] {
        assert_invalid(&app.get(&format!("{path}?before={bad}"), user.auth()), &["before"]);
    }
    let (_, v) = app.get(&format!("{path}?limit=1"), user.auth());
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["content"], "m2");
    let (_, v) = app.get(&format!("{path}?limit=100"), user.auth());
    assert_eq!(v["items"].as_array().unwrap().len(), 3);
    assert_eq!(v["nextCursor"], Value::Null);
    // A well-formed cursor older than everything gives an empty last page.
    let (status, v) = app.get(&format!("{path}?before={}", absent_id("msg_")), user.auth());
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({ "items": [], "nextCursor": null }));

    // The default page is 50: the newest 50, oldest first.
    let mut contents: Vec<String> = (0..3).map(|i| format!("m{i}")).collect();
    for i in 3..52 {
        contents.push(app.post_message(&user, &issue, &format!("m{i}"))["content"].as_str().unwrap().into());
    }
    let (_, v) = app.get(&path, user.auth());
    let got: Vec<&str> =
        v["items"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(got, contents[2..]);
    assert_eq!(v["nextCursor"], v["items"][0]["messageId"]);
}
