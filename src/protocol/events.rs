//! CivicPulse's socket events: their names, in one place, and the payloads
//! the contract gives each server → client event, built from domain events.

use serde_json::{Value, json};

use crate::domain::events::DomainEvent;

pub const JOIN_ISSUE: &str = "join:issue";
pub const LEAVE_ISSUE: &str = "leave:issue";
pub const MESSAGE_SEND: &str = "message:send";
pub const USER_TYPING: &str = "user:typing";
pub const PRESENCE_LIST: &str = "presence:list";
pub const PRESENCE_UPDATE: &str = "presence:update";

/// Who receives a server event.
#[derive(Debug, PartialEq, Eq)]
pub enum Audience<'a> {
    /// Every connected socket.
    Everyone,
    /// Members of `room:issue:<id>`.
    Room(&'a str),
}

/// The socket event for a domain event: its audience, name and payload.
pub fn server_event(event: &DomainEvent) -> (Audience<'_>, &'static str, Value) {
    let payload = match event {
        DomainEvent::IssueCreated(i) => json!({
            "issueId": i.issue_id, "title": i.title, "city": i.city, "category": i.category,
            "priority": i.priority, "status": i.status, "upvotes": i.upvotes,
            "reportedBy": i.reported_by, "createdAt": i.created_at,
        }),
        DomainEvent::IssueUpdated(i) => json!({
            "issueId": i.issue_id, "title": i.title, "status": i.status, "priority": i.priority,
            "assignedTo": i.assigned_to, "updatedAt": i.updated_at,
        }),
        DomainEvent::IssueUpvoted(u) => serde_json::to_value(u).unwrap_or_default(),
        DomainEvent::MessagePosted(m) => serde_json::to_value(m).unwrap_or_default(),
        DomainEvent::ReactionChanged(r) => serde_json::to_value(r).unwrap_or_default(),
    };
    let audience = match event {
        DomainEvent::MessagePosted(m) => Audience::Room(&m.issue_id),
        DomainEvent::ReactionChanged(r) => Audience::Room(&r.issue_id),
        _ => Audience::Everyone,
    };
    (audience, event.name(), payload)
}

/// The `{ok: false, error: {code, message}}` acknowledgement.
pub fn error_ack(code: &str, message: &str) -> Value {
    json!({ "ok": false, "error": { "code": code, "message": message } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::IssueUpvoted;

    #[test]
    fn upvote_event_has_exactly_the_contract_fields() {
        let event = DomainEvent::IssueUpvoted(IssueUpvoted {
            issue_id: "iss_1".into(),
            upvotes: 3,
            upvoted_by: "usr_1".into(),
            upvoted: false,
        });
        let (audience, name, payload) = server_event(&event);
        assert_eq!(audience, Audience::Everyone);
        assert_eq!(name, "issue:upvoted");
        assert_eq!(
            payload.to_string(),
            r#"{"issueId":"iss_1","upvotes":3,"upvotedBy":"usr_1","upvoted":false}"#
        );
    }
}
