//! `Broadcaster`: the one sender of events to every local socket (issue:*,
//! presence:update, issue:trending) and to all the sockets of one user.
//! Each event arrives encoded once; every socket gets the same shared bytes.
//!
//! Its mailbox has no bound of its own (every sender uses `do_send`):
//! its producers are what bound it. Subscriptions come one per socket
//! handshake and goodbye; events come one per committed write (or a few
//! per write, from actors reacting to it) and per user coming online or
//! going offline, and writes and handshakes are paced by the database and
//! by each socket's bounded inbound queue.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use super::fanout::{Delivery, offer_frame};
use actix_socketio::engineio::{Push, SharedMessage};

struct Subscriber {
    user_id: Arc<str>,
    recipient: Recipient<Push>,
}

#[derive(Default)]
pub struct Broadcaster {
    sockets: HashMap<Arc<str>, Subscriber>,
    /// user id → their sockets here (several tabs), for pushes to one user:
    /// a list, not a set, since a user has a few tabs and every idle
    /// session pays for its entry.
    by_user: HashMap<Arc<str>, Vec<Arc<str>>>,
}

impl Actor for Broadcaster {
    type Context = Context<Self>;
}

impl Broadcaster {
    fn forget(&mut self, socket_id: &str) {
        if let Some(gone) = self.sockets.remove(socket_id) {
            self.unindex(&gone.user_id, socket_id);
        }
    }

    fn unindex(&mut self, user_id: &str, socket_id: &str) {
        if let Some(sockets) = self.by_user.get_mut(user_id) {
            sockets.retain(|s| &**s != socket_id);
            if sockets.is_empty() {
                self.by_user.remove(user_id);
            }
        }
    }
}

/// A socket that receives global events, and its user's, from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub socket_id: Arc<str>,
    pub user_id: Arc<str>,
    pub recipient: Recipient<Push>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub socket_id: Arc<str>,
}

/// An event for every socket, already encoded.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Broadcast(pub Arc<SharedMessage>);

/// An event for every socket of one user on this node, already encoded.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ToUser {
    pub user_id: Arc<str>,
    pub frame: Arc<SharedMessage>,
}

impl Handler<Subscribe> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        // Subscribing again replaces the old entry, index included.
        self.forget(&msg.socket_id);
        self.by_user.entry(msg.user_id.clone()).or_default().push(msg.socket_id.clone());
        self.sockets.insert(msg.socket_id, Subscriber { user_id: msg.user_id, recipient: msg.recipient });
    }
}

impl Handler<Unsubscribe> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        self.forget(&msg.socket_id);
    }
}

impl Handler<Broadcast> for Broadcaster {
    type Result = ();

    fn handle(&mut self, Broadcast(frame): Broadcast, _: &mut Context<Self>) {
        let gone: Vec<Arc<str>> = self
            .sockets
            .iter()
            .filter(|(id, s)| !offer_frame(&s.recipient, &frame, id, Delivery::Required))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.forget(&id);
        }
    }
}

impl Handler<ToUser> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: ToUser, _: &mut Context<Self>) {
        let Some(sockets) = self.by_user.get(&msg.user_id) else { return };
        let gone: Vec<Arc<str>> = sockets
            .iter()
            .filter(|id| {
                self.sockets
                    .get(*id)
                    .is_none_or(|s| !offer_frame(&s.recipient, &msg.frame, id, Delivery::Required))
            })
            .cloned()
            .collect();
        for id in gone {
            self.forget(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::protocol::events::encode;

    /// A stand-in session that records the text of what it is pushed.
    #[derive(Default)]
    struct Session(Arc<Mutex<Vec<String>>>);

    impl Actor for Session {
        type Context = Context<Self>;
    }

    impl Handler<Push> for Session {
        type Result = ();

        fn handle(&mut self, push: Push, _: &mut Context<Self>) {
            if let Push::Shared(frame) = push {
                self.0.lock().unwrap_or_else(|p| p.into_inner()).push(frame.text.to_string());
            }
        }
    }

    /// Answered once everything pushed to a session before it is handled.
    struct Flush;

    impl Message for Flush {
        type Result = ();
    }

    impl Handler<Flush> for Session {
        type Result = ();

        fn handle(&mut self, _: Flush, _: &mut Context<Self>) {}
    }

    #[test]
    fn a_push_to_a_user_reaches_all_their_sockets_and_no_one_else() {
        actix_rt::System::new().block_on(async {
            let broadcaster = Broadcaster::default().start();
            let mut seen = Vec::new();
            let mut sessions = Vec::new();
            for (socket, user) in [("s1", "usr_a"), ("s2", "usr_a"), ("s3", "usr_b")] {
                let log = Arc::new(Mutex::new(Vec::new()));
                let session = Session(log.clone()).start();
                broadcaster
                    .send(Subscribe {
                        socket_id: socket.into(),
                        user_id: user.into(),
                        recipient: session.clone().recipient(),
                    })
                    .await
                    .expect("broadcaster runs");
                seen.push(log);
                sessions.push(session);
            }
            let to_a = ToUser { user_id: "usr_a".into(), frame: encode("hello", serde_json::json!(1)) };
            broadcaster.send(to_a).await.expect("broadcaster runs");
            broadcaster.send(Unsubscribe { socket_id: "s2".into() }).await.expect("broadcaster runs");
            broadcaster.send(Broadcast(encode("all", serde_json::json!(2)))).await.expect("broadcaster runs");
            let to_a = ToUser { user_id: "usr_a".into(), frame: encode("again", serde_json::json!(3)) };
            broadcaster.send(to_a).await.expect("broadcaster runs");
            for session in &sessions {
                session.send(Flush).await.expect("session runs");
            }
            let texts: Vec<Vec<String>> =
                seen.iter().map(|log| log.lock().unwrap_or_else(|p| p.into_inner()).clone()).collect();
            assert_eq!(texts[0], [r#"42["hello",1]"#, r#"42["all",2]"#, r#"42["again",3]"#]);
            assert_eq!(texts[1], [r#"42["hello",1]"#]);
            assert_eq!(texts[2], [r#"42["all",2]"#]);
        });
    }
}
