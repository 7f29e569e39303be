//! CivicPulse's own inputs: the cluster bus codec, the Redis emitter's
//! msgpack broadcasts, and the JSON bodies the domain validates (REST and
//! socket payloads alike).

use std::collections::HashSet;

use actix_socketio::protocol::socket::{Decoder, PacketKind, RESERVED_EVENTS};
use civicpulse::cluster::admin::AdminMessage;
use civicpulse::cluster::emitter::{self, EmitterError};
use civicpulse::cluster::wire::{BusMessage, To};
use civicpulse::domain::input::{check_city, check_email, check_url};
use civicpulse::domain::issues::{CATEGORIES, IssueChanges, NewIssue, PRIORITIES, STATUSES};
use civicpulse::domain::messages::content_from_json;
use civicpulse::domain::users::NewUser;
use civicpulse::domain::{DomainError, Role, WireError};
use civicpulse::ids::{self, IdKind};
use serde_json::Value;

/// A message off the bus: what decodes encodes back to the same message
/// (an event's or the Admin UI's); and a message made from the input's
/// fields either is refused by the encoder or decodes back to itself.
pub fn bus_message(data: &[u8]) {
    if let Ok(message) = AdminMessage::decode(data) {
        let text =
            message.encode().unwrap_or_else(|e| panic!("{message:?} decoded but does not encode: {e}"));
        assert_eq!(AdminMessage::decode(text.as_bytes()), Ok(message));
    }
    if let Ok(message) = BusMessage::decode(data) {
        let text =
            message.encode().unwrap_or_else(|e| panic!("{message:?} decoded but does not encode: {e}"));
        assert_eq!(BusMessage::decode(text.as_bytes()), Ok(message.clone()));
        assert_eq!(&message.frame().text[1..], message.packet);
    }

    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\0');
    let mut next = || fields.next().unwrap_or_default().to_owned();
    let (node, seq, to, except, packet) = (next(), next(), next(), next(), next());
    let to = match to.split_at_checked(1) {
        Some(("r", id)) => To::Room(id.to_owned()),
        Some(("u", id)) => To::User(id.to_owned()),
        _ => To::Everyone,
    };
    let message = BusMessage {
        node,
        seq: seq.bytes().fold(0u64, |n, b| n.wrapping_mul(31).wrapping_add(u64::from(b))),
        volatile: seq.len() % 2 == 1,
        to,
        except_user: (!except.is_empty()).then_some(except),
        packet,
    };
    if let Ok(text) = message.encode() {
        assert_eq!(BusMessage::decode(text.as_bytes()), Ok(message));
    }
}

/// A payload published on a broadcast channel (retried on the channel the
/// payload says it belongs on, to get past that check) and on the request
/// channel. A broadcast that is accepted is a frame the client's parser
/// takes: a new decoder reads it as an EVENT in the broadcast's namespace.
pub fn emitter(data: &[u8]) {
    let key = emitter::DEFAULT_KEY;
    let decode =
        |channel: &str| crate::bounded("emitter", data.len(), 512, || emitter::decode(channel, data, key));
    let broadcast = match decode("socket.io#/#") {
        Err(EmitterError::ChannelMismatch { expected, .. }) => decode(&expected),
        other => other,
    };
    let _ = decode("socket.io-request#/#");
    let Ok(broadcast) = broadcast else { return };

    assert!(broadcast.namespace.starts_with('/'));
    for rooms in [&broadcast.rooms, &broadcast.except] {
        assert_eq!(rooms.iter().collect::<HashSet<_>>().len(), rooms.len(), "{rooms:?} has duplicates");
    }
    let frame = &broadcast.frame;
    let text = frame.text.strip_prefix('4').expect("an Engine.IO message");
    let mut decoder = Decoder::new();
    let mut packet = decoder.feed_text(text).unwrap_or_else(|e| panic!("{text:?} is refused: {e}"));
    for bytes in &frame.binaries {
        assert!(packet.is_none(), "{text:?} complete before its attachments");
        packet = decoder.feed_binary(bytes.clone()).expect("an attachment");
    }
    let packet = packet.unwrap_or_else(|| panic!("{text:?} still waits for attachments"));
    let kind = if frame.binaries.is_empty() { PacketKind::Event } else { PacketKind::BinaryEvent };
    assert_eq!(packet.kind, kind);
    assert_eq!(packet.namespace, broadcast.namespace);
    assert_eq!(packet.attachments, frame.binaries);
    let name = packet.event_name().expect("an event name");
    assert!(!RESERVED_EVENTS.contains(&&*name));
    assert_eq!(frame.ws_frames().len(), 1 + frame.binaries.len());
}

/// A JSON body, as the REST extractor parses it, given to every reader of
/// the domain: what they accept meets their rules, and what they refuse is
/// a validation error (422) that names the fields, never an internal one.
pub fn json(data: &[u8]) {
    let Ok(body) = crate::bounded("JSON", data.len(), 256, || serde_json::from_slice::<Value>(data)) else {
        return;
    };
    // What a socket echoes: the JSON reads back as it was.
    let text = body.to_string();
    assert_eq!(serde_json::from_str::<Value>(&text).ok().as_ref(), Some(&body), "{text}");

    if let Ok(user) = refused_as_invalid(NewUser::from_json(&body)) {
        assert!(check_email(&user.email).is_ok(), "{:?}", user.email);
        assert_eq!(user.email.trim(), user.email);
        assert!((8..=128).contains(&user.password.chars().count()));
        trimmed(&user.display_name, 1, 64);
        assert!(user.city.as_deref().is_none_or(|c| check_city(c).is_ok()));
        assert!(user.avatar_url.as_deref().is_none_or(|u| check_url(u).is_ok()));
        assert_eq!(user.role, Role::Citizen);
        // The command line's check agrees.
        assert!(user.validate().is_ok());
    }
    for account_city in [None, Some("springfield")] {
        if let Ok(issue) = refused_as_invalid(NewIssue::from_json(&body, account_city)) {
            trimmed(&issue.title, 3, 200);
            trimmed(&issue.description, 0, 5000);
            assert!(check_city(&issue.city).is_ok(), "{:?}", issue.city);
            assert!(CATEGORIES.contains(&issue.category.as_str()));
            assert!(PRIORITIES.contains(&issue.priority.as_str()));
        }
    }
    if let Ok(changes) = refused_as_invalid(IssueChanges::from_json(&body)) {
        if let Some(title) = &changes.title {
            trimmed(title, 3, 200);
        }
        if let Some(description) = &changes.description {
            trimmed(description, 0, 5000);
        }
        assert!(changes.status.as_deref().is_none_or(|s| STATUSES.contains(&s)));
        assert!(changes.priority.as_deref().is_none_or(|p| PRIORITIES.contains(&p)));
    }
    if let Ok(content) = refused_as_invalid(content_from_json(&body)) {
        trimmed(&content, 1, 2000);
    }
    // The ids a socket payload names are checked before any query.
    for id in [&body["issueId"], &body["messageId"], &body["assignedTo"]] {
        if let Some(id) = id.as_str()
            && ids::is_valid(IdKind::Issue, id)
        {
            assert_eq!(id.len(), 30);
        }
    }
}

/// Checks that an error is a validation failure, and that its answer to
/// the client is a 422 naming fields.
fn refused_as_invalid<T>(result: Result<T, DomainError>) -> Result<T, ()> {
    result.map_err(|e| {
        assert!(matches!(e, DomainError::Validation(_)), "{e:?}");
        let wire = WireError::from(e);
        assert_eq!(wire.status, 422);
        let details = wire.details.expect("the fields");
        assert!(details["fields"].as_object().is_some_and(|f| !f.is_empty()), "{details}");
    })
}

/// A text field as stored: trimmed, no NUL, `min..=max` characters.
fn trimmed(s: &str, min: usize, max: usize) {
    assert_eq!(s.trim(), s);
    assert!(!s.contains('\0'));
    assert!((min..=max).contains(&s.chars().count()), "{} characters", s.chars().count());
}
