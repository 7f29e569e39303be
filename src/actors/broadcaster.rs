//! `Broadcaster`: the one sender of events to every local socket (issue:*,
//! presence:update, issue:trending) and to all the sockets of one user.
//! Each event arrives encoded once; every socket gets the same shared bytes.
//!
//! Its mailbox has no bound of its own (every sender uses `do_send`):
//! what bounds it is its producers. Subscriptions come one per socket
//! handshake and goodbye, and broadcasts one per committed write, which the
//! database's pace and the per-socket inbound limits already bound.

use std::collections::{HashMap, HashSet};
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
    /// user id → their sockets here (several tabs), for pushes to one user.
    by_user: HashMap<Arc<str>, HashSet<Arc<str>>>,
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
            sockets.remove(socket_id);
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
        self.by_user.entry(msg.user_id.clone()).or_default().insert(msg.socket_id.clone());
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
