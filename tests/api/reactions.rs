//! Reactions on messages.

use crate::common::*;
use civicpulse::domain::events::DomainEvent;
use serde_json::{Value, json};

on_both_backends!(
    reactions_count_per_user_and_are_idempotent,
    removing_reactions_lowers_counts_and_drops_zero,
    reactions_reject_anything_but_one_emoji,
    reaction_on_unknown_message_is_404,
);

pub(crate) fn reaction_path(message: &str, emoji: &str) -> String {
    format!("/api/messages/{message}/reactions/{}", pct(emoji))
}

fn reactions_count_per_user_and_are_idempotent(app: &TestApp) {
    let a = app.register("Ann");
    let b = app.register("Bo");
    let issue = app.issue_id(&a);
    let message = str_of(&app.post_message(&a, &issue, "react to me")["messageId"]);
    let answer = |reactions: Value| json!({ "messageId": message, "issueId": issue, "reactions": reactions });

    let thumbs = reaction_path(&message, "👍");
    assert_eq!(app.put(&thumbs, a.auth(), None), (StatusCode::OK, answer(json!({ "👍": 1 }))));
    assert_eq!(app.put(&thumbs, a.auth(), None), (StatusCode::OK, answer(json!({ "👍": 1 }))), "idempotent");
    assert_eq!(app.put(&thumbs, b.auth(), None), (StatusCode::OK, answer(json!({ "👍": 2 }))));
    let toned = app.put(&reaction_path(&message, "👍🏽"), b.auth(), None);
    assert_eq!(toned, (StatusCode::OK, answer(json!({ "👍": 2, "👍🏽": 1 }))));
    let heart = app.put(&reaction_path(&message, "❤️"), a.auth(), None);
    assert_eq!(heart, (StatusCode::OK, answer(json!({ "👍": 2, "👍🏽": 1, "❤️": 1 }))));
    // Unencoded UTF-8 in the path means the same.
    let raw = app.put(&format!("/api/messages/{message}/reactions/🎉"), a.auth(), None);
    assert_eq!(raw.0, StatusCode::OK, "{}", raw.1);
    assert_eq!(raw.1["reactions"]["🎉"], 1);

    let (_, page) = app.get(&format!("/api/issues/{issue}/messages"), a.auth());
    assert_eq!(page["items"][0]["reactions"], raw.1["reactions"], "history carries the counts");
    assert_eq!(page["items"][0]["reactions"]["👍"], 2);

    // Racing reactions: each user still counts once per emoji.
    let party = reaction_path(&message, "🥳");
    let answers = concurrently(8, |i| {
        let user = if i % 2 == 0 { &a } else { &b };
        app.put(&party, user.auth(), None)
    });
    assert!(answers.iter().all(|(status, _)| *status == StatusCode::OK), "{answers:?}");
    let (_, page) = app.get(&format!("/api/issues/{issue}/messages"), a.auth());
    assert_eq!(page["items"][0]["reactions"]["🥳"], 2);
    assert_error(&app.put(&thumbs, None, None), StatusCode::UNAUTHORIZED, "invalid_token");
}

fn removing_reactions_lowers_counts_and_drops_zero(app: &TestApp) {
    let a = app.register("Ann");
    let b = app.register("Bo");
    let issue = app.issue_id(&a);
    let message = str_of(&app.post_message(&a, &issue, "hello")["messageId"]);
    let thumbs = reaction_path(&message, "👍");
    let heart = reaction_path(&message, "❤️");
    app.put(&thumbs, a.auth(), None);
    app.put(&thumbs, b.auth(), None);
    app.put(&heart, b.auth(), None);

    let (status, v) = app.delete(&thumbs, a.auth(), None);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({ "messageId": message, "issueId": issue, "reactions": { "👍": 1, "❤️": 1 } }));
    let (_, v) = app.delete(&thumbs, a.auth(), None);
    assert_eq!(v["reactions"], json!({ "👍": 1, "❤️": 1 }), "removing twice changes nothing");
    let (_, v) = app.delete(&thumbs, b.auth(), None);
    assert_eq!(v["reactions"], json!({ "❤️": 1 }), "zero disappears");
    assert!(v["reactions"].get("👍").is_none());
    let (_, v) = app.delete(&heart, b.auth(), None);
    assert_eq!(v["reactions"], json!({}));
    let (status, v) = app.delete(&heart, a.auth(), None);
    assert_eq!((status, v["reactions"].clone()), (StatusCode::OK, json!({})), "never reacted");
    let (_, page) = app.get(&format!("/api/issues/{issue}/messages"), a.auth());
    assert_eq!(page["items"][0]["reactions"], json!({}));
}

fn reactions_reject_anything_but_one_emoji(app: &TestApp) {
    let user = app.register("Picky");
    let issue = app.issue_id(&user);
    let message = str_of(&app.post_message(&user, &issue, "hi")["messageId"]);
    for bad in ["a", "ok", "1", "42", "©", "❤", "👍👍", "👍 ", " ", "%", "<script>", "👍a"] {
        let path = reaction_path(&message, bad);
        assert_invalid(&app.put(&path, user.auth(), None), &["emoji"]);
        assert_invalid(&app.delete(&path, user.auth(), None), &["emoji"]);
    }
    let (_, page) = app.get(&format!("/api/issues/{issue}/messages"), user.auth());
    assert_eq!(page["items"][0]["reactions"], json!({}));
    assert!(!app.events().iter().any(|e| matches!(e, DomainEvent::ReactionChanged(_))));
}

fn reaction_on_unknown_message_is_404(app: &TestApp) {
    let user = app.register("Nobody");
    for message in [absent_id("msg_"), "nope".into(), absent_id("iss_")] {
        let path = reaction_path(&message, "👍");
        assert_error(&app.put(&path, user.auth(), None), StatusCode::NOT_FOUND, "not_found");
        assert_error(&app.delete(&path, user.auth(), None), StatusCode::NOT_FOUND, "not_found");
    }
}
