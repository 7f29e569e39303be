//! Upvotes: once per user, withdrawn, counted exactly under concurrency.

use std::sync::{Arc, Barrier};

use crate::common::*;
use civicpulse::domain::events::DomainEvent;
use serde_json::{Value, json};

on_both_backends!(
    upvote_and_withdraw,
    upvote_unknown_or_malformed_issue_is_404,
    concurrent_upvotes_count_exactly,
    upvote_events_only_when_the_count_changed,
);

// ---------------------------------------------------------------------------
// Upvotes
// ---------------------------------------------------------------------------

fn upvote_and_withdraw(app: &TestApp) {
    let reporter = app.register("Reporter");
    let fan = app.register("Fan");
    let other = app.register("Other");
    let id = app.issue_id(&reporter);
    let path = format!("/api/issues/{id}/upvote");
    let state = |n: i64, upvoted: bool| json!({ "issueId": id, "upvotes": n, "upvoted": upvoted });

    assert_eq!(app.post(&path, fan.auth(), None), (StatusCode::OK, state(1, true)));
    assert_eq!(app.post(&path, fan.auth(), None), (StatusCode::OK, state(1, true)), "repeat is a no-op");
    assert_eq!(app.post(&path, other.auth(), None), (StatusCode::OK, state(2, true)));
    assert_eq!(app.post(&path, reporter.auth(), None), (StatusCode::OK, state(3, true)));
    assert_eq!(app.get(&format!("/api/issues/{id}"), None).1["upvotes"], 3);

    assert_eq!(app.delete(&path, fan.auth(), None), (StatusCode::OK, state(2, false)));
    assert_eq!(app.delete(&path, fan.auth(), None), (StatusCode::OK, state(2, false)), "withdrawing twice");
    let stranger = app.register("Stranger");
    assert_eq!(app.delete(&path, stranger.auth(), None), (StatusCode::OK, state(2, false)), "never upvoted");
    assert_eq!(
        app.post(&path, fan.auth(), None),
        (StatusCode::OK, state(3, true)),
        "upvote again after withdrawing"
    );
    assert_eq!(app.get(&format!("/api/issues/{id}"), None).1["upvotes"], 3);

    assert_error(&app.post(&path, None, None), StatusCode::UNAUTHORIZED, "invalid_token");
    assert_error(&app.delete(&path, None, None), StatusCode::UNAUTHORIZED, "invalid_token");
}

fn upvote_unknown_or_malformed_issue_is_404(app: &TestApp) {
    let user = app.register("Voter");
    for id in [absent_id("iss_"), "bogus".into(), user.id.clone()] {
        let path = format!("/api/issues/{id}/upvote");
        assert_error(&app.post(&path, user.auth(), None), StatusCode::NOT_FOUND, "not_found");
        assert_error(&app.delete(&path, user.auth(), None), StatusCode::NOT_FOUND, "not_found");
    }
    assert!(app.events().is_empty());
}

fn concurrent_upvotes_count_exactly(app: &TestApp) {
    const VOTERS: usize = 50;
    let reporter = app.register("Popular");
    let id = app.issue_id(&reporter);
    let path = format!("/api/issues/{id}/upvote");

    // 50 registered users (registered two at a time: Argon2 is slow).
    let tokens: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|half| {
                s.spawn(move || {
                    (0..VOTERS / 2)
                        .map(|i| {
                            let client = app.client();
                            let body = json!({
                                "email": format!("voter-{half}-{i}@example.com"),
                                "password": PASSWORD,
                                "displayName": format!("Voter {half}-{i}"),
                            });
                            let res = send(
                                &client,
                                &app.url(""),
                                Method::POST,
                                "/api/auth/register",
                                None,
                                Body::Json(body),
                            );
                            assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
                            str_of(&res.json["accessToken"])
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(tokens.len(), VOTERS);
    app.take_events();

    let storm = |method: Method, tokens: &[String]| -> Vec<Value> {
        let barrier = Arc::new(Barrier::new(tokens.len()));
        let base = app.url("");
        let handles: Vec<_> = tokens
            .iter()
            .map(|token| {
                let (client, base, path, token, barrier, method) = (
                    app.client(),
                    base.clone(),
                    path.clone(),
                    token.clone(),
                    barrier.clone(),
                    method.clone(),
                );
                std::thread::spawn(move || {
                    barrier.wait();
                    let res = send(&client, &base, method, &path, Some(&token), Body::Empty);
                    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
                    res.json
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("upvoter thread")).collect()
    };

    let answers = storm(Method::POST, &tokens);
    let mut counts: Vec<i64> = answers.iter().map(|a| a["upvotes"].as_i64().unwrap()).collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=VOTERS as i64).collect::<Vec<_>>(), "each upvote saw its own count");
    assert!(answers.iter().all(|a| a["upvoted"] == true && a["issueId"] == id.as_str()));
    assert_eq!(app.get(&format!("/api/issues/{id}"), None).1["upvotes"], VOTERS);
    let events = app.take_events();
    assert_eq!(events.len(), VOTERS, "one event per counted upvote");

    // The same user many times at once counts once.
    let same: Vec<String> = vec![tokens[0].clone(); 10];
    let answers = storm(Method::DELETE, &same);
    assert!(answers.iter().all(|a| a["upvoted"] == false));
    assert_eq!(app.get(&format!("/api/issues/{id}"), None).1["upvotes"], VOTERS - 1);
    let answers = storm(Method::POST, &same);
    assert!(answers.iter().all(|a| a["upvotes"] == VOTERS));
    assert_eq!(app.get(&format!("/api/issues/{id}"), None).1["upvotes"], VOTERS);
    assert_eq!(app.take_events().len(), 2, "one withdrawal and one upvote changed the count");

    // And all of them withdraw at once.
    storm(Method::DELETE, &tokens);
    assert_eq!(app.get(&format!("/api/issues/{id}"), None).1["upvotes"], 0);
}

fn upvote_events_only_when_the_count_changed(app: &TestApp) {
    let reporter = app.register("Reporter");
    let fan = app.register("Fan");
    let id = app.issue_id(&reporter);
    let path = format!("/api/issues/{id}/upvote");
    app.take_events();

    app.post(&path, fan.auth(), None);
    app.post(&path, fan.auth(), None);
    app.delete(&path, fan.auth(), None);
    app.delete(&path, fan.auth(), None);
    app.delete(&path, reporter.auth(), None);
    app.post(&path, reporter.auth(), None);

    let recorded = app.take_events();
    let seen: Vec<(i64, String, bool)> = recorded
        .iter()
        .map(|r| match &r.event {
            DomainEvent::IssueUpvoted(up) => {
                assert_eq!(up.issue_id, id);
                assert_eq!(
                    r.stored,
                    json!({ "upvotes": up.upvotes, "upvoted": up.upvoted }),
                    "published after the write"
                );
                (up.upvotes, up.upvoted_by.clone(), up.upvoted)
            }
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(seen, [(1, fan.id.clone(), true), (0, fan.id.clone(), false), (1, reporter.id.clone(), true)]);
}
