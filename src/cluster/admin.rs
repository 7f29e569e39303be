//! What the nodes tell each other for the Socket.IO Admin UI, on the bus's
//! channel next to its events. Pure: no I/O.
//!
//! One message is one line of routing and a body the realtime side wrote
//! (JSON, or an `/admin` packet), untouched here:
//!
//! ```text
//! cpa1 stats <node> <w or -> \n <server_stats JSON>      every 2 s while watched
//! cpa1 event <node> - \n <the /admin packet>             socket_connected, room_joined, …
//! cpa1 list <node> <req> \n -                            "send me your sockets"
//! cpa1 sockets <node> <to-node>:<req> \n <JSON array>    the answer, for one node
//! cpa1 act <node> - \n <action JSON>                     join, leave, _disconnect, emit
//! ```
//!
//! `w` says the node has Admin UI sockets of its own: the others then
//! publish their stats and socket events for it. A node sends nothing of
//! this while no admin watches anywhere.

const VERSION: &str = "cpa1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminMessage {
    Stats { node: String, watching: bool, stats: String },
    Event { node: String, packet: String },
    List { node: String, req: u64 },
    Sockets { node: String, to: String, req: u64, sockets: String },
    Act { node: String, action: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminWireError {
    #[error("malformed admin message: {0}")]
    Malformed(&'static str),
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && !s.contains([' ', '\n', '\t', ':'])
}

/// Whether a bus payload is an admin message (and not a `cp1` event).
pub fn is_admin(raw: &[u8]) -> bool {
    raw.starts_with(VERSION.as_bytes()) && raw.get(VERSION.len()) == Some(&b' ')
}

impl AdminMessage {
    pub fn node(&self) -> &str {
        match self {
            Self::Stats { node, .. }
            | Self::Event { node, .. }
            | Self::List { node, .. }
            | Self::Sockets { node, .. }
            | Self::Act { node, .. } => node,
        }
    }

    pub fn encode(&self) -> Result<String, AdminWireError> {
        let (kind, arg, body) = match self {
            Self::Stats { watching, stats, .. } => {
                ("stats", if *watching { "w" } else { "-" }.into(), stats.as_str())
            }
            Self::Event { packet, .. } => ("event", "-".into(), packet.as_str()),
            Self::List { req, .. } => ("list", req.to_string(), "-"),
            Self::Sockets { to, req, sockets, .. } => {
                if !is_word(to) {
                    return Err(AdminWireError::Malformed("addressee"));
                }
                ("sockets", format!("{to}:{req}"), sockets.as_str())
            }
            Self::Act { action, .. } => ("act", "-".into(), action.as_str()),
        };
        if !is_word(self.node()) {
            return Err(AdminWireError::Malformed("node"));
        }
        if body.is_empty() {
            return Err(AdminWireError::Malformed("empty body"));
        }
        Ok(format!("{VERSION} {kind} {} {arg}\n{body}", self.node()))
    }

    pub fn decode(raw: &[u8]) -> Result<Self, AdminWireError> {
        let raw = std::str::from_utf8(raw).map_err(|_| AdminWireError::Malformed("not UTF-8"))?;
        let (head, body) = raw.split_once('\n').ok_or(AdminWireError::Malformed("no body"))?;
        let mut fields = head.split(' ');
        let (Some(VERSION), Some(kind), Some(node), Some(arg), None) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(AdminWireError::Malformed("routing line"));
        };
        if !is_word(node) || body.is_empty() {
            return Err(AdminWireError::Malformed("empty node or body"));
        }
        let (node, body_owned) = (node.to_string(), body.to_string());
        let dash = |m: Self| if arg == "-" { Ok(m) } else { Err(AdminWireError::Malformed("argument")) };
        match kind {
            "stats" => match arg {
                "w" | "-" => Ok(Self::Stats { node, watching: arg == "w", stats: body_owned }),
                _ => Err(AdminWireError::Malformed("watching flag")),
            },
            "event" => dash(Self::Event { node, packet: body_owned }),
            "act" => dash(Self::Act { node, action: body_owned }),
            "list" if body == "-" => {
                let req = arg.parse().map_err(|_| AdminWireError::Malformed("request number"))?;
                Ok(Self::List { node, req })
            }
            "sockets" => {
                let (to, req) = arg.split_once(':').ok_or(AdminWireError::Malformed("addressee"))?;
                let req = req.parse().map_err(|_| AdminWireError::Malformed("request number"))?;
                if !is_word(to) {
                    return Err(AdminWireError::Malformed("addressee"));
                }
                Ok(Self::Sockets { node, to: to.to_string(), req, sockets: body_owned })
            }
            _ => Err(AdminWireError::Malformed("kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn every_kind() -> Vec<AdminMessage> {
        let node = || "web-1".to_string();
        vec![
            AdminMessage::Stats { node: node(), watching: true, stats: r#"{"serverId":"web-1"}"#.into() },
            AdminMessage::Stats { node: node(), watching: false, stats: "{}".into() },
            AdminMessage::Event {
                node: node(),
                packet: "2/admin,[\"room_joined\",\"/\",\"a b\\nc\"]".into(),
            },
            AdminMessage::List { node: node(), req: 42 },
            AdminMessage::Sockets { node: node(), to: "web-2".into(), req: 42, sockets: "[]".into() },
            AdminMessage::Act { node: node(), action: r#"{"op":"disconnect"}"#.into() },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for m in every_kind() {
            let text = m.encode().unwrap();
            assert!(is_admin(text.as_bytes()), "{text}");
            assert_eq!(AdminMessage::decode(text.as_bytes()).unwrap(), m, "{text}");
        }
        let text = AdminMessage::Sockets { node: "a".into(), to: "b".into(), req: 7, sockets: "[1]".into() }
            .encode()
            .unwrap();
        assert_eq!(text, "cpa1 sockets a b:7\n[1]");
        assert!(!is_admin(b"cp1 n 1 * - -\n2[]") && !is_admin(b"cpa1x"));
    }

    #[test]
    fn what_would_not_read_back_is_refused() {
        assert!(AdminMessage::List { node: "a b".into(), req: 1 }.encode().is_err());
        assert!(AdminMessage::Act { node: "a".into(), action: String::new() }.encode().is_err());
        assert!(
            AdminMessage::Sockets { node: "a".into(), to: "b:c".into(), req: 1, sockets: "[]".into() }
                .encode()
                .is_err()
        );
        for broken in [
            "cpa1 stats n x\n{}",
            "cpa1 stats n w\n",
            "cpa1 list n one\n-",
            "cpa1 list n 1\n[]",
            "cpa1 sockets n b\n[]",
            "cpa1 sockets n :1\n[]",
            "cpa1 act n 1\n{}",
            "cpa1 nope n -\n{}",
            "cpa1 act n - extra\n{}",
            "cpa1 act  -\n{}",
            "cpa1 act n -",
        ] {
            assert!(AdminMessage::decode(broken.as_bytes()).is_err(), "{broken}");
        }
    }

    proptest! {
        #[test]
        fn what_decodes_encodes_back(raw in "cpa1 [ -~\t]{0,24}\n\\PC{0,8}") {
            if let Ok(m) = AdminMessage::decode(raw.as_bytes()) {
                let text = m.encode().unwrap();
                prop_assert_eq!(AdminMessage::decode(text.as_bytes()), Ok(m));
            }
        }
    }
}
