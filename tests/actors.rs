//! The app's actors, in-process with the test kit: domain operations over
//! REST in, what real sockets receive out. `TrendingIssues` is the example
//! "Adding an actor" in the README walks through.

mod common;

use std::time::Duration;

use common::{StatusCode, TestApp};
use serde_json::json;

const QUIET: Duration = Duration::from_millis(500);

#[test]
fn an_issue_upvoted_past_the_threshold_trends_once_for_every_socket() {
    let app = TestApp::builder().env("TRENDING_UPVOTES", 2).env("TRENDING_WINDOW_SECS", 600).sqlite();
    let (alice, bob, carol) = (app.register("Alice"), app.register("Bob"), app.register("Carol"));
    let issue = app.issue_id(&alice);
    let mut watcher = app.socket(&carol);
    let mut reporter = app.socket(&alice);
    let upvote = |user| app.rest(user).post_empty(&format!("/api/issues/{issue}/upvote"));

    assert_eq!(upvote(&alice).0, StatusCode::OK);
    assert_eq!(watcher.expect_event("issue:upvoted")["upvotes"], 1);
    watcher.expect_no_event("issue:trending", QUIET);

    assert_eq!(upvote(&bob).0, StatusCode::OK);
    let trending = json!({ "issueId": issue, "upvotes": 2, "recentUpvotes": 2, "windowSecs": 600 });
    assert_eq!(watcher.expect_event("issue:trending"), trending);
    assert_eq!(reporter.expect_event("issue:trending"), trending);

    // Past the threshold it does not trend again, and a withdrawal and a
    // fresh upvote do not make it trend twice.
    assert_eq!(upvote(&carol).0, StatusCode::OK);
    let path = format!("/api/issues/{issue}/upvote");
    assert_eq!(app.rest(&bob).delete(&path).0, StatusCode::OK);
    assert_eq!(upvote(&bob).0, StatusCode::OK);
    watcher.expect_no_event("issue:trending", QUIET);
    reporter.expect_no_event("issue:trending", QUIET);
}

#[test]
fn only_upvotes_within_the_window_count() {
    let app = TestApp::builder().env("TRENDING_UPVOTES", 2).env("TRENDING_WINDOW_SECS", 1).sqlite();
    let (alice, bob, carol) = (app.register("Alice"), app.register("Bob"), app.register("Carol"));
    let issue = app.issue_id(&alice);
    let mut watcher = app.socket(&carol);
    let path = format!("/api/issues/{issue}/upvote");

    assert_eq!(app.rest(&alice).post_empty(&path).0, StatusCode::OK);
    // Alice's upvote leaves the window before Bob's and Carol's arrive.
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(app.rest(&bob).post_empty(&path).0, StatusCode::OK);
    assert_eq!(app.rest(&carol).post_empty(&path).0, StatusCode::OK);
    // Carol's upvote (the issue's third) is the one that trends, with the
    // two in the window: Bob's alone, with Alice's gone, did not.
    let trending = watcher.expect_event("issue:trending");
    assert_eq!(trending["upvotes"], 3, "{trending}");
    assert_eq!(trending["recentUpvotes"], 2, "{trending}");
    watcher.expect_no_event("issue:trending", QUIET);
}
