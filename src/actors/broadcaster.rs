//! `Broadcaster`: the one sender of global events (issue:*, presence:update)
//! to every local socket. Each event arrives encoded once; every socket gets
//! the same shared bytes.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use super::fanout::{Delivery, deliver};
use actix_socketio::engineio::{Push, SharedMessage};

#[derive(Default)]
pub struct Broadcaster {
    sockets: HashMap<Arc<str>, Recipient<Push>>,
}

impl Actor for Broadcaster {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(100_000);
    }
}

/// A socket that receives global events from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub socket_id: Arc<str>,
    pub recipient: Recipient<Push>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub socket_id: Arc<str>,
}

/// A global event, already encoded.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Broadcast(pub Arc<SharedMessage>);

impl Handler<Subscribe> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        self.sockets.insert(msg.socket_id, msg.recipient);
    }
}

impl Handler<Unsubscribe> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        self.sockets.remove(&msg.socket_id);
    }
}

impl Handler<Broadcast> for Broadcaster {
    type Result = ();

    fn handle(&mut self, Broadcast(frame): Broadcast, _: &mut Context<Self>) {
        self.sockets.retain(|id, recipient| deliver(recipient, &frame, id, Delivery::Required));
    }
}
