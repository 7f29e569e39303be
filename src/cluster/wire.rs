//! What one node tells the others on the bus: an event already encoded as
//! its Socket.IO packet, and who must receive it. Pure: no I/O.
//!
//! One message is one line of routing and the packet, untouched:
//!
//! ```text
//! cp1 <node> <seq> <to> <except-user or -> <flags> \n <packet>
//! ```
//!
//! `seq` numbers a node's messages from 1, so a receiver can count what it
//! missed; `flags` is `v` for a volatile event (one a socket that is behind
//! may go without, as typing indicators) or `-`. `to` is `*` (every socket), `r:<issueId>` (the issue's room) or
//! `u:<userId>` (every socket of one user). The packet is the Socket.IO
//! text (`2["issue:created",{…}]`), so a receiving node wraps it as the
//! frame its sockets share without parsing the payload again: each event is
//! encoded once in the whole cluster.

use std::sync::Arc;

use actix_socketio::engineio::SharedMessage;

const VERSION: &str = "cp1";

/// Who receives an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum To {
    Everyone,
    Room(String),
    User(String),
}

/// An event travelling between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    /// The node that published it (which skips it when it comes back).
    pub node: String,
    pub seq: u64,
    pub to: To,
    /// Sockets of this user do not receive it (no echo of typing).
    pub except_user: Option<String>,
    pub volatile: bool,
    /// The Socket.IO packet text, without the Engine.IO `4`.
    pub packet: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("not a CivicPulse bus message")]
    NotOurs,
    #[error("malformed bus message: {0}")]
    Malformed(&'static str),
}

/// Node and user ids never contain the separators; an id that did would
/// make a message that cannot be read back, so it is refused here.
fn is_word(s: &str) -> bool {
    !s.is_empty() && !s.contains([' ', '\n', '\t'])
}

impl BusMessage {
    pub fn encode(&self) -> Result<String, WireError> {
        let to = match &self.to {
            To::Everyone => "*".to_string(),
            To::Room(id) if is_word(id) => format!("r:{id}"),
            To::User(id) if is_word(id) => format!("u:{id}"),
            _ => return Err(WireError::Malformed("audience id")),
        };
        let except = match &self.except_user {
            None => "-",
            Some(user) if is_word(user) && user != "-" => user,
            Some(_) => return Err(WireError::Malformed("except user")),
        };
        if !is_word(&self.node) {
            return Err(WireError::Malformed("node"));
        }
        if self.packet.is_empty() {
            return Err(WireError::Malformed("empty packet"));
        }
        let flags = if self.volatile { "v" } else { "-" };
        Ok(format!("{VERSION} {} {} {to} {except} {flags}\n{}", self.node, self.seq, self.packet))
    }

    pub fn decode(raw: &[u8]) -> Result<Self, WireError> {
        let raw = std::str::from_utf8(raw).map_err(|_| WireError::Malformed("not UTF-8"))?;
        let (head, packet) = raw.split_once('\n').ok_or(WireError::NotOurs)?;
        let mut fields = head.split(' ');
        if fields.next() != Some(VERSION) {
            return Err(WireError::NotOurs);
        }
        let (Some(node), Some(seq), Some(to), Some(except), Some(flags), None) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(WireError::Malformed("routing line"));
        };
        let seq = seq.parse().map_err(|_| WireError::Malformed("sequence number"))?;
        let volatile = match flags {
            "v" => true,
            "-" => false,
            _ => return Err(WireError::Malformed("flags")),
        };
        let to = match to {
            "*" => To::Everyone,
            _ => match to.split_once(':') {
                Some(("r", id)) if is_word(id) => To::Room(id.to_string()),
                Some(("u", id)) if is_word(id) => To::User(id.to_string()),
                _ => return Err(WireError::Malformed("audience")),
            },
        };
        // What `encode` refuses is refused here too, so that every message
        // read can be written back (an empty except user, a tab in an id).
        if !is_word(node) || !is_word(except) || packet.is_empty() {
            return Err(WireError::Malformed("empty node, except user or packet"));
        }
        Ok(Self {
            node: node.to_string(),
            seq,
            to,
            except_user: (except != "-").then(|| except.to_string()),
            volatile,
            packet: packet.to_string(),
        })
    }

    /// The frame the receiving node's sockets share.
    pub fn frame(&self) -> Arc<SharedMessage> {
        SharedMessage::message(&self.packet, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(to: To, except_user: Option<&str>) -> BusMessage {
        BusMessage {
            node: "web-1".into(),
            seq: 7,
            to,
            except_user: except_user.map(str::to_string),
            volatile: except_user.is_some(),
            packet: r#"2["user:typing",{"text":"a b\nc"}]"#.into(),
        }
    }

    #[test]
    fn every_audience_round_trips() {
        for m in [
            message(To::Everyone, None),
            message(To::Room("01HX".into()), Some("usr_1")),
            message(To::User("usr_2".into()), None),
        ] {
            let text = m.encode().unwrap();
            assert_eq!(BusMessage::decode(text.as_bytes()).unwrap(), m, "{text}");
        }
        let text = message(To::Room("01HX".into()), Some("usr_1")).encode().unwrap();
        assert_eq!(text, "cp1 web-1 7 r:01HX usr_1 v\n2[\"user:typing\",{\"text\":\"a b\\nc\"}]");
        assert_eq!(&*message(To::Everyone, None).frame().text, r#"42["user:typing",{"text":"a b\nc"}]"#);
    }

    #[test]
    fn ids_that_would_not_read_back_are_refused() {
        assert!(message(To::Room("a b".into()), None).encode().is_err());
        assert!(message(To::User(String::new()), None).encode().is_err());
        assert!(message(To::Everyone, Some("-")).encode().is_err());
        let empty = BusMessage { packet: String::new(), ..message(To::Everyone, None) };
        assert!(empty.encode().is_err());
    }

    #[test]
    fn foreign_and_broken_messages_are_told_apart() {
        assert_eq!(BusMessage::decode(b"hello"), Err(WireError::NotOurs));
        assert_eq!(BusMessage::decode(b"cp2 n 1 * - -\n2[]"), Err(WireError::NotOurs));
        for broken in [
            "cp1 n 1 *\n2[]",
            "cp1 n 1 x:1 - -\n2[]",
            "cp1 n 1 r: - -\n2[]",
            "cp1 n 1 * - - extra\n2[]",
            "cp1 n 1 * - -\n",
            "cp1 n one * - -\n2[]",
            "cp1 n 1 * - x\n2[]",
            // Found by the bus_message fuzz target: these decoded, but
            // could not be encoded again.
            "cp1 n 7 r:01HX  v\n2[]",
            "cp1 n 7 u:\t5 - v\n2[]",
            "cp1 n\t1 7 * - v\n2[]",
        ] {
            assert!(
                matches!(BusMessage::decode(broken.as_bytes()), Err(WireError::Malformed(_))),
                "{broken}"
            );
        }
        assert!(matches!(BusMessage::decode(b"cp1 n 1 * - -\n\xff"), Err(WireError::Malformed(_))));
    }

    fn word() -> impl Strategy<Value = String> {
        // Mostly valid ids, sometimes with a separator in them.
        "[a-z0-9_-]{1,6}|[ -~\t]{0,4}"
    }

    proptest! {
        #[test]
        fn what_encodes_decodes_to_itself(
            node in word(),
            seq in any::<u64>(),
            to in prop_oneof![
                Just(To::Everyone),
                word().prop_map(To::Room),
                word().prop_map(To::User),
            ],
            except_user in proptest::option::of(word()),
            volatile in any::<bool>(),
            packet in "\\PC{0,12}",
        ) {
            let m = BusMessage { node, seq, to, except_user, volatile, packet };
            if let Ok(text) = m.encode() {
                prop_assert_eq!(BusMessage::decode(text.as_bytes()), Ok(m));
            }
        }

        #[test]
        fn what_decodes_encodes_back(raw in "cp1 [ -~\t]{0,24}\n\\PC{0,8}|\\PC{0,16}") {
            if let Ok(m) = BusMessage::decode(raw.as_bytes()) {
                let text = m.encode().unwrap();
                prop_assert_eq!(BusMessage::decode(text.as_bytes()), Ok(m));
            }
        }
    }
}
