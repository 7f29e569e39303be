//! Domain events: published after the write, with the stored values, only for real changes.

use crate::common::*;
use crate::reactions::reaction_path;
use civicpulse::domain::Role;
use civicpulse::domain::events::DomainEvent;
use serde_json::{Value, json};

on_both_backends!(
    issue_created_event_carries_the_stored_issue,
    issue_updated_event_only_for_notable_changes,
    message_posted_event_carries_the_stored_message,
    reaction_changed_event_only_when_counts_changed,
);

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

fn issue_created_event_carries_the_stored_issue(app: &TestApp) {
    let user = app.register("Announcer");
    app.take_events();
    let created = app.create_issue(&user, json!({ "title": " Flooded underpass ", "priority": "critical" }));
    let recorded = app.take_events();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let DomainEvent::IssueCreated(issue) = &recorded[0].event else { panic!("{:?}", recorded[0].event) };
    let as_json = serde_json::to_value(issue).unwrap();
    assert_eq!(as_json, created, "the event carries what the client got");
    assert_eq!(recorded[0].stored, created, "and it was stored before it was published");
    assert_eq!(issue.title, "Flooded underpass");

    // A refused create publishes nothing.
    app.post("/api/issues", user.auth(), Some(json!({ "title": "x", "category": "roads" })));
    assert!(app.events().is_empty());
}

fn issue_updated_event_only_for_notable_changes(app: &TestApp) {
    let reporter = app.register("Reporter");
    let official = app.staff(Role::Official);
    let id = app.issue_id(&reporter);
    app.take_events();

    let notable = |who: &TestUser, body: Value| {
        let answered = app.update_issue(who, &id, body.clone());
        let recorded = app.take_events();
        assert_eq!(recorded.len(), 1, "{body} should publish once: {recorded:?}");
        let DomainEvent::IssueUpdated(issue) = &recorded[0].event else { panic!("{:?}", recorded[0].event) };
        assert_eq!(serde_json::to_value(issue).unwrap(), answered, "{body}");
        assert_eq!(recorded[0].stored, answered, "{body}: published after the write");
        answered
    };
    let quiet = |who: &TestUser, body: Value| {
        let before = app.get(&format!("/api/issues/{id}"), None).1;
        let answered = app.update_issue(who, &id, body.clone());
        assert!(app.take_events().is_empty(), "{body} should not publish");
        (before, answered)
    };

    notable(&reporter, json!({ "title": "New title" }));
    let (before, after) = quiet(&reporter, json!({ "description": "only the description" }));
    assert_eq!(after["description"], "only the description");
    assert_ne!(before["description"], after["description"]);
    let (before, after) = quiet(&reporter, json!({ "title": "New title" }));
    assert_eq!(before, after, "a no-op changes nothing, not even updatedAt");
    let (before, after) = quiet(&reporter, json!({}));
    assert_eq!(before, after);
    let (before, after) =
        quiet(&official, json!({ "status": "open", "priority": "medium", "assignedTo": null }));
    assert_eq!(before, after);

    assert_eq!(notable(&official, json!({ "status": "in_progress" }))["status"], "in_progress");
    assert_eq!(notable(&official, json!({ "priority": "high" }))["priority"], "high");
    assert_eq!(notable(&official, json!({ "assignedTo": official.id }))["assignedTo"], official.id.as_str());
    assert_eq!(notable(&official, json!({ "assignedTo": null }))["assignedTo"], Value::Null);
    notable(&official, json!({ "title": "Staff title", "description": "and text" }));
    let (_, after) = quiet(&official, json!({ "description": "staff text only" }));
    assert_eq!(after["description"], "staff text only");

    // A refused PATCH publishes nothing.
    app.patch(&format!("/api/issues/{id}"), reporter.auth(), Some(json!({ "status": "closed" })));
    assert!(app.events().is_empty());
}

fn message_posted_event_carries_the_stored_message(app: &TestApp) {
    let user = app.register("Poster");
    let issue = app.issue_id(&user);
    app.take_events();
    let m = app.post_message(&user, &issue, "  first!  ");
    let recorded = app.take_events();
    assert_eq!(recorded.len(), 1);
    let DomainEvent::MessagePosted(message) = &recorded[0].event else { panic!("{:?}", recorded[0].event) };
    assert_eq!(serde_json::to_value(message).unwrap(), m);
    assert_eq!(
        recorded[0].stored,
        json!({
            "messageId": m["messageId"], "issueId": issue, "authorId": user.id,
            "content": "first!", "createdAt": m["createdAt"],
        })
    );
    app.post(&format!("/api/issues/{issue}/messages"), user.auth(), Some(json!({ "content": " " })));
    app.post(
        &format!("/api/issues/{}/messages", absent_id("iss_")),
        user.auth(),
        Some(json!({ "content": "x" })),
    );
    assert!(app.events().is_empty());
}

fn reaction_changed_event_only_when_counts_changed(app: &TestApp) {
    let a = app.register("Ann");
    let b = app.register("Bo");
    let issue = app.issue_id(&a);
    let message = str_of(&app.post_message(&a, &issue, "hello")["messageId"]);
    let thumbs = reaction_path(&message, "👍");
    app.take_events();

    let step = |res: (StatusCode, Value), publishes: bool| {
        assert_eq!(res.0, StatusCode::OK, "{}", res.1);
        let recorded = app.take_events();
        if !publishes {
            assert!(recorded.is_empty(), "{recorded:?}");
            return;
        }
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        let DomainEvent::ReactionChanged(counts) = &recorded[0].event else {
            panic!("{:?}", recorded[0].event)
        };
        assert_eq!(serde_json::to_value(counts).unwrap(), res.1);
        assert_eq!(Value::Object(counts.reactions.clone()), recorded[0].stored, "published after the write");
    };
    step(app.put(&thumbs, a.auth(), None), true);
    step(app.put(&thumbs, a.auth(), None), false);
    step(app.put(&thumbs, b.auth(), None), true);
    step(app.put(&reaction_path(&message, "❤️"), b.auth(), None), true);
    step(app.delete(&thumbs, a.auth(), None), true);
    step(app.delete(&thumbs, a.auth(), None), false);
    step(app.delete(&reaction_path(&message, "🎉"), a.auth(), None), false);
}
