//! `PresenceRegistry`: who is online on this node. A user is online while
//! any of their sockets is connected (several tabs count once);
//! `presence:update` goes out on their first socket and after their last.
//! It is the domain's presence [`Directory`]: `domain::presence::list`
//! (REST and the socket's `presence:list`) asks it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::prelude::*;
use futures_util::future::BoxFuture;

use super::broadcaster::{Broadcast, Broadcaster};
use crate::domain::presence::{Directory, OnlineUser};
use crate::domain::{DomainError, DomainResult};
use crate::metrics::Metrics;
use crate::protocol::events::{PRESENCE_UPDATE, encode};

pub struct PresenceRegistry {
    /// Ordered by user id so listings are stable.
    users: BTreeMap<String, (OnlineUser, HashSet<Arc<str>>)>,
    broadcaster: Addr<Broadcaster>,
    metrics: Arc<Metrics>,
}

impl PresenceRegistry {
    pub fn new(broadcaster: Addr<Broadcaster>, metrics: Arc<Metrics>) -> Self {
        Self { users: BTreeMap::new(), broadcaster, metrics }
    }

    fn announce(&self, user: &OnlineUser, online: bool) {
        let payload = serde_json::json!({
            "userId": user.user_id, "displayName": user.display_name, "online": online, "city": user.city,
        });
        self.broadcaster.do_send(Broadcast(encode(PRESENCE_UPDATE, payload)));
    }
}

/// The mailbox has no bound of its own (every sender uses `do_send` or
/// `send`): its producers are bounded: one message per socket handshake and
/// goodbye, and listings that each wait for their answer.
impl Actor for PresenceRegistry {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct SocketOnline {
    pub user: OnlineUser,
    pub socket_id: Arc<str>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct SocketOffline {
    pub user_id: String,
    pub socket_id: Arc<str>,
}

/// Users online now, optionally in one city.
#[derive(Message)]
#[rtype(result = "Vec<OnlineUser>")]
pub struct ListOnline {
    pub city: Option<String>,
}

impl Handler<SocketOnline> for PresenceRegistry {
    type Result = ();

    fn handle(&mut self, msg: SocketOnline, _: &mut Context<Self>) {
        let entry =
            self.users.entry(msg.user.user_id.clone()).or_insert_with(|| (msg.user.clone(), HashSet::new()));
        let first = entry.1.is_empty();
        entry.1.insert(msg.socket_id);
        if first {
            self.metrics.online_users.fetch_add(1, Ordering::Relaxed);
            self.announce(&msg.user, true);
        }
    }
}

impl Handler<SocketOffline> for PresenceRegistry {
    type Result = ();

    fn handle(&mut self, msg: SocketOffline, _: &mut Context<Self>) {
        let Some((_, sockets)) = self.users.get_mut(&msg.user_id) else { return };
        sockets.remove(&msg.socket_id);
        if sockets.is_empty()
            && let Some((user, _)) = self.users.remove(&msg.user_id)
        {
            self.metrics.online_users.fetch_sub(1, Ordering::Relaxed);
            self.announce(&user, false);
        }
    }
}

impl Handler<ListOnline> for PresenceRegistry {
    type Result = MessageResult<ListOnline>;

    fn handle(&mut self, msg: ListOnline, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.users
                .values()
                .map(|(user, _)| user)
                .filter(|user| msg.city.is_none() || user.city == msg.city)
                .cloned()
                .collect(),
        )
    }
}

impl Directory for Addr<PresenceRegistry> {
    fn online(&self, city: Option<String>) -> BoxFuture<'static, DomainResult<Vec<OnlineUser>>> {
        let listing = self.send(ListOnline { city });
        Box::pin(async move {
            listing.await.map_err(|_| DomainError::Unavailable("presence registry stopped".into()))
        })
    }
}
