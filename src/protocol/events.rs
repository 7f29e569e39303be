//! CivicPulse's socket events: their names, in one place, the payloads the
//! contract gives each server → client event, built from domain events,
//! and [`encode`], the one place that knows which namespace they go in.

use std::sync::Arc;

use actix_socketio::engineio::SharedMessage;
use actix_socketio::protocol::socket::Packet;
use actix_socketio::socketio::encode_shared;
use serde_json::{Value, json};

use crate::domain::WireError;
use crate::domain::events::DomainEvent;
use crate::domain::presence::OnlineUser;

/// CivicPulse serves one Socket.IO namespace.
pub const NAMESPACE: &str = "/";
/// An issue's room is `room:issue:<issueId>` (as the emitter names it).
pub const ISSUE_ROOM_PREFIX: &str = "room:issue:";

pub const JOIN_ISSUE: &str = "join:issue";
pub const LEAVE_ISSUE: &str = "leave:issue";
pub const MESSAGE_SEND: &str = "message:send";
pub const USER_TYPING: &str = "user:typing";
pub const PRESENCE_LIST: &str = "presence:list";
/// A fresh access token for a live socket, `{token}`.
pub const AUTH_REFRESH: &str = "auth:refresh";
/// Told to a socket the server is about to disconnect, `{reason}`.
pub const SESSION_ENDED: &str = "session:ended";
pub const PRESENCE_UPDATE: &str = "presence:update";
/// Sent by the `TrendingIssues` actor, not built from one domain event.
pub const ISSUE_TRENDING: &str = "issue:trending";

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

/// `issue:trending`: an issue got `recent_upvotes` upvotes within the last
/// `window_secs` seconds; `upvotes` is its total.
pub fn issue_trending(issue_id: &str, upvotes: i64, recent_upvotes: usize, window_secs: u64) -> Value {
    json!({ "issueId": issue_id, "upvotes": upvotes, "recentUpvotes": recent_upvotes, "windowSecs": window_secs })
}

/// `user:typing`: a member of an issue's room started or stopped typing.
pub fn user_typing(issue_id: &str, user_id: &str, display_name: &str, is_typing: bool) -> Value {
    json!({ "issueId": issue_id, "userId": user_id, "displayName": display_name, "isTyping": is_typing })
}

/// `presence:update`: a user came online (first socket) or went offline
/// (last socket gone).
pub fn presence_update(user: &OnlineUser, online: bool) -> Value {
    json!({ "userId": user.user_id, "displayName": user.display_name, "online": online, "city": user.city })
}

/// A server event as the frame every recipient shares: encoded once, here.
pub fn encode(name: &str, payload: Value) -> Arc<SharedMessage> {
    encode_shared(&Packet::event(NAMESPACE, name, vec![payload]))
}

/// A server event that connection state recovery logs: its offset goes
/// last, as a string, where the official client takes it from.
pub fn encode_logged(name: &str, payload: Value, offset: u64) -> Arc<SharedMessage> {
    encode_shared(&Packet::event(NAMESPACE, name, vec![payload, Value::String(offset.to_string())]))
}

/// An encoded event packet (`2["name",…]`, as the cluster's log keeps
/// it) with its offset added last; `None` for anything but an event
/// without an ack id.
pub fn with_offset(packet: &str, offset: u64) -> Option<String> {
    let body = packet.strip_prefix('2')?.strip_suffix(']')?;
    // The namespace is `/` (written as nothing), so the array comes next.
    if !body.starts_with('[') || body.len() < 2 {
        return None;
    }
    Some(format!(r#"2{body},"{offset}"]"#))
}

/// The `{ok: false, error: {code, message}}` acknowledgement.
pub fn error_ack(code: &str, message: &str) -> Value {
    json!({ "ok": false, "error": { "code": code, "message": message } })
}

/// The acknowledgement for a failed operation: the REST error's code,
/// message and details, as `{ok: false, error: {code, message, details?}}`.
pub fn wire_error_ack(error: WireError) -> Value {
    let mut ack = error_ack(error.code, &error.message);
    if let Some(details) = error.details {
        ack["error"]["details"] = details;
    }
    ack
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

    #[test]
    fn trending_payload_is_camel_case() {
        assert_eq!(
            issue_trending("iss_1", 12, 10, 600).to_string(),
            r#"{"issueId":"iss_1","upvotes":12,"recentUpvotes":10,"windowSecs":600}"#
        );
    }

    #[test]
    fn events_are_encoded_as_socket_io_events_in_the_one_namespace() {
        assert_eq!(&*encode(ISSUE_TRENDING, json!({"a": 1})).text, r#"42["issue:trending",{"a":1}]"#);
        assert_eq!(
            &*encode_logged("message:new", json!({"a": 1}), 17).text,
            r#"42["message:new",{"a":1},"17"]"#
        );
        let packet = &encode("message:new", json!({"a": 1})).text[1..];
        let logged = encode_logged("message:new", json!({"a": 1}), 17);
        assert_eq!(with_offset(packet, 17).as_deref(), Some(&logged.text[1..]));
        for not_an_event in ["3[1]", "21[\"x\"]", "2/admin,[\"x\"]", "2", "2]", "", "2[]"] {
            assert_eq!(with_offset(not_an_event, 1), None, "{not_an_event}");
        }
    }

    #[test]
    fn error_acks_carry_details_only_when_there_are_some() {
        let e = WireError::from(crate::domain::DomainError::invalid("city", "bad"));
        assert_eq!(
            wire_error_ack(e).to_string(),
            r#"{"ok":false,"error":{"code":"validation_failed","message":"request validation failed","details":{"fields":{"city":"bad"}}}}"#
        );
        let e = WireError::from(crate::domain::DomainError::NotFound("issue"));
        assert_eq!(
            wire_error_ack(e).to_string(),
            r#"{"ok":false,"error":{"code":"not_found","message":"issue not found"}}"#
        );
    }
}
