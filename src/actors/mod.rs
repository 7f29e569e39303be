//! Actors: the long-lived, message-driven parts of a node.
//!
//! The fan-out every socket depends on, started by [`Fanout::start`]:
//! - [`broadcaster::Broadcaster`]: events to every local socket, or to all
//!   of one user's;
//! - [`issue_room::IssueRoom`]: one per issue with members; room events;
//! - [`presence::PresenceRegistry`]: who is online; presence:update;
//! - [`replay`]: the recovery log of connection state recovery, which the
//!   broadcaster writes and fans out from when the feature is on.
//!
//! The app's own actors, each given the [`kit::Kit`] and all started in
//! [`start_all`]:
//! - [`notifier::Notifier`]: logs critical issues for officials;
//! - [`trending::TrendingIssues`]: `issue:trending` when an issue is
//!   upvoted fast.
//!
//! Socket sessions are actors too; they live with their protocol in
//! `actix-socketio` (transport) and `realtime` (CivicPulse's events).

pub mod broadcaster;
pub mod fanout;
pub mod issue_room;
pub mod kit;
pub mod notifier;
pub mod presence;
pub mod replay;
pub mod trending;

use std::sync::Arc;

use actix::prelude::*;

use crate::cluster::{Cluster, Inbound, Pending, To, presence as cluster_presence, typing};
use crate::metrics::Metrics;
use crate::protocol::events::{USER_TYPING, encode, user_typing};

/// Starts every actor of the app. To add one: a new file in this
/// directory (a `start(kit)` that starts it and subscribes it), its `mod`
/// line above and its line here.
pub fn start_all(kit: &kit::Kit) {
    notifier::Notifier::start(kit);
    trending::TrendingIssues::start(kit);
}

/// The actors that carry events to sockets. Must start inside the actix
/// system.
pub struct Fanout {
    pub broadcaster: Addr<broadcaster::Broadcaster>,
    pub rooms: Arc<issue_room::RoomDirectory>,
    pub presence: Addr<presence::PresenceRegistry>,
    cluster: Option<Arc<Cluster>>,
    /// With connection state recovery on.
    log: Option<Arc<dyn replay::EventLog>>,
}

impl Fanout {
    /// In cluster mode (`cluster` given) what is pushed also goes to the
    /// other nodes, and presence is the cluster's. With `log` (connection
    /// state recovery on) every event a client can miss is logged and
    /// fanned out by the broadcaster.
    pub fn start(
        metrics: &Arc<Metrics>,
        cluster: Option<(Arc<Cluster>, Pending)>,
        log: Option<Arc<dyn replay::EventLog>>,
    ) -> Self {
        let (cluster, pending) = cluster.unzip();
        let broadcaster = broadcaster::Broadcaster::new(log.clone()).start();
        let (typing, typing_inbox) = cluster.as_ref().map(|_| typing::channel()).unzip();
        let sequencer = log.as_ref().map(|_| broadcaster.clone());
        let rooms = issue_room::RoomDirectory::new(metrics.clone(), typing, sequencer);
        let push = kit::Pusher::new(broadcaster.clone(), rooms.clone(), cluster.clone(), log.is_some());
        let presence_link = cluster.as_ref().map(|cluster| {
            let push = push.clone();
            let (link, transitions) = cluster_presence::Link::new(Arc::new(move |user, online| {
                presence::announce(&push, user, online)
            }));
            (link, (cluster.clone(), transitions))
        });
        let (presence_link, transitions) = presence_link.unzip();
        let presence = presence::PresenceRegistry::new(push.clone(), metrics.clone(), transitions).start();
        if let (Some(cluster), Some(pending), Some(presence_link), Some(typing_inbox)) =
            (&cluster, pending, presence_link, typing_inbox)
        {
            let typing_link =
                typing::Link::new(typing_inbox, typing_announcer(cluster.clone(), rooms.clone()));
            let (broadcaster, rooms) = (broadcaster.clone(), rooms.clone());
            let logged = log.as_ref().map(|_| {
                let broadcaster = broadcaster.clone();
                Arc::new(move |offset, target, frame| {
                    broadcaster.do_send(broadcaster::Sequenced { offset, target, frame })
                }) as crate::cluster::recovery::DeliverLogged
            });
            let deliver = Arc::new(move |inbound| deliver(&broadcaster, &rooms, inbound));
            cluster.run(pending, deliver, logged, presence_link, typing_link);
        }
        Self { broadcaster, rooms, presence, cluster, log }
    }

    /// The recovery log, with connection state recovery on.
    pub fn log(&self) -> Option<Arc<dyn replay::EventLog>> {
        self.log.clone()
    }

    /// The cluster this node is in, in cluster mode.
    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        self.cluster.clone()
    }

    /// The handle through which actors (and the forwarding of domain
    /// events) send to sockets.
    pub fn push(&self) -> kit::Pusher {
        kit::Pusher::new(
            self.broadcaster.clone(),
            self.rooms.clone(),
            self.cluster.clone(),
            self.log.is_some(),
        )
    }
}

/// How the cluster's typing link announces a state: to the room's members
/// here and on every other node, but not to the typist's own sockets.
fn typing_announcer(cluster: Arc<Cluster>, rooms: Arc<issue_room::RoomDirectory>) -> typing::Announce {
    Arc::new(move |issue_id, user_id, display_name, is_typing| {
        let frame = encode(USER_TYPING, user_typing(issue_id, user_id, display_name, is_typing));
        cluster.publish(To::Room(issue_id.to_string()), Some(user_id), true, &frame);
        rooms.send_to_members(issue_id, frame, Some(user_id.into()), fanout::Delivery::Droppable);
    })
}

/// Hands what another node published to this node's sockets.
fn deliver(
    broadcaster: &Addr<broadcaster::Broadcaster>,
    rooms: &issue_room::RoomDirectory,
    inbound: Inbound,
) {
    let Inbound { to, except_user, volatile, frame } = inbound;
    match to {
        To::Everyone => broadcaster.do_send(broadcaster::Broadcast(frame)),
        To::Room(issue_id) => {
            let delivery = if volatile { fanout::Delivery::Droppable } else { fanout::Delivery::Required };
            rooms.send_to_members(&issue_id, frame, except_user.map(Into::into), delivery);
        }
        To::User(user_id) => broadcaster.do_send(broadcaster::ToUser { user_id: user_id.into(), frame }),
    }
}
