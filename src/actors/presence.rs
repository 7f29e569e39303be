//! `PresenceRegistry`: who is online on this node. A user is online while
//! any of their sockets is connected (several tabs count once);
//! `presence:update` goes out on their first socket and after their last.
//! It is the domain's presence [`Directory`]: `domain::presence::list`
//! (REST and the socket's `presence:list`) asks it.
//!
//! In cluster mode it hands this node's transitions to the cluster's
//! presence link, which announces the cluster's (first socket anywhere,
//! last socket anywhere), and lists the cluster's users; while Redis is
//! away it lists this node's.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::prelude::*;
use futures_util::future::BoxFuture;

use super::kit::Pusher;
use crate::cluster::Cluster;
use crate::cluster::presence::{Transition, Transitions};
use crate::domain::presence::{Directory, OnlineUser};
use crate::domain::{DomainError, DomainResult};
use crate::metrics::Metrics;
use crate::protocol::events::{PRESENCE_UPDATE, presence_update};

pub struct PresenceRegistry {
    /// Ordered by user id so listings are stable.
    users: BTreeMap<String, (OnlineUser, HashSet<Arc<str>>)>,
    push: Pusher,
    metrics: Arc<Metrics>,
    cluster: Option<(Arc<Cluster>, Transitions)>,
}

impl PresenceRegistry {
    pub fn new(push: Pusher, metrics: Arc<Metrics>, cluster: Option<(Arc<Cluster>, Transitions)>) -> Self {
        Self { users: BTreeMap::new(), push, metrics, cluster }
    }

    /// This node's first socket of a user, or its last one gone.
    fn changed(&self, user: &OnlineUser, online: bool) {
        match &self.cluster {
            Some((_, link)) if online => link.send(Transition::Online(user.clone())),
            Some((_, link)) => link.send(Transition::Offline(user.user_id.clone())),
            None => announce(&self.push, user, online),
        }
    }

    fn local(&self, city: Option<&str>) -> Vec<OnlineUser> {
        self.users
            .values()
            .map(|(user, _)| user)
            .filter(|user| city.is_none() || user.city.as_deref() == city)
            .cloned()
            .collect()
    }
}

/// `presence:update` to every socket (of the cluster, in cluster mode).
pub fn announce(push: &Pusher, user: &OnlineUser, online: bool) {
    push.to_everyone(PRESENCE_UPDATE, presence_update(user, online));
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

/// This node leaves the cluster (it is stopping), after every socket
/// change it was told of before; answers whether Redis took it (false
/// outside cluster mode).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct LeaveCluster;

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
            self.changed(&msg.user, true);
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
            self.changed(&user, false);
        }
    }
}

impl Handler<LeaveCluster> for PresenceRegistry {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, _: LeaveCluster, _: &mut Context<Self>) -> Self::Result {
        let Some((_, link)) = &self.cluster else { return Box::pin(async { false }) };
        let (done, left) = tokio::sync::oneshot::channel();
        link.send(Transition::Leave(done));
        Box::pin(async move { left.await.unwrap_or(false) })
    }
}

impl Handler<ListOnline> for PresenceRegistry {
    type Result = ResponseFuture<Vec<OnlineUser>>;

    fn handle(&mut self, msg: ListOnline, _: &mut Context<Self>) -> Self::Result {
        // Taken now, in case Redis does not answer.
        let local = self.local(msg.city.as_deref());
        let Some((cluster, _)) = self.cluster.clone() else { return Box::pin(async move { local }) };
        Box::pin(async move {
            match crate::cluster::presence::list(&cluster, msg.city.as_deref()).await {
                Ok(users) => users,
                Err(e) => {
                    log::warn!(target: "civicpulse::cluster", "node={} cannot list the cluster's presence ({e}); answering with this node's", cluster.node);
                    local
                }
            }
        })
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
