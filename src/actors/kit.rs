//! The actor kit: what an actor of the app is given, so that adding one is
//! one new file and one line in [`super::start_all`].
//!
//! - [`Kit::subscribe`] hands the actor the domain events it filters for,
//!   as [`Published`] messages;
//! - [`Kit::push`] is a [`Pusher`]: sends a server event to the members of an
//!   issue's room, to every socket of one user (all their tabs), or to
//!   every socket, encoded once whatever the audience, on every node of the
//!   cluster;
//! - [`Kit::config`] is the node's validated configuration;
//! - [`Kit::cluster`] is the cluster this node is in, if any: state that
//!   must be shared by the nodes (a count across all of them) lives in
//!   Redis through it.
//!
//! ```ignore
//! pub struct Shouter { push: Pusher }
//!
//! impl Actor for Shouter { type Context = Context<Self>; }
//!
//! impl Shouter {
//!     pub fn start(kit: &Kit) -> Addr<Self> {
//!         let addr = Shouter { push: kit.push() }.start();
//!         kit.subscribe(&addr, |event| matches!(event, DomainEvent::IssueCreated(_)));
//!         addr
//!     }
//! }
//!
//! impl Handler<Published> for Shouter {
//!     type Result = ();
//!     fn handle(&mut self, Published(event): Published, _: &mut Context<Self>) {
//!         if let DomainEvent::IssueCreated(issue) = &*event {
//!             self.push.to_user(&issue.reported_by, "issue:thanks", json!({ "issueId": issue.issue_id }));
//!         }
//!     }
//! }
//! ```

use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use serde_json::Value;

use super::broadcaster::{Broadcast, Broadcaster, Logged, ToUser};
use super::issue_room::RoomDirectory;
use super::replay::Target;
use crate::cluster::{Cluster, To};
use crate::config::Config;
use crate::domain::events::{DomainEvent, EventHub};
use crate::protocol::events::encode;
use actix_socketio::engineio::SharedMessage;

/// A domain event handed to an actor that subscribed to it.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Published(pub Arc<DomainEvent>);

/// What every actor is started with; cheap to clone.
#[derive(Clone)]
pub struct Kit {
    hub: Arc<EventHub>,
    push: Pusher,
    config: Arc<Config>,
}

impl Kit {
    pub fn new(hub: Arc<EventHub>, push: Pusher, config: Arc<Config>) -> Self {
        Self { hub, push, config }
    }

    /// Sends `actor` every domain event for which `filter` is true, from
    /// now on, as a [`Published`].
    ///
    /// Publishers are the request handlers and must never wait, so events
    /// are offered with `try_send`: an actor that falls behind by more than
    /// its mailbox capacity (actix's default is 16; raise it with
    /// `ctx.set_mailbox_capacity` in `started`) misses events, and a
    /// warning says so.
    pub fn subscribe<A>(&self, actor: &Addr<A>, filter: impl Fn(&DomainEvent) -> bool + Send + Sync + 'static)
    where
        A: Actor + Handler<Published>,
        A::Context: ToEnvelope<A, Published>,
    {
        let recipient = actor.clone().recipient::<Published>();
        let name = std::any::type_name::<A>();
        self.hub.subscribe(move |event| {
            if filter(event) && recipient.try_send(Published(event.clone())).is_err() {
                log::warn!(target: "civicpulse::actors", "{name} is not keeping up; dropped one {}", event.name());
            }
        });
    }

    pub fn push(&self) -> Pusher {
        self.push.clone()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        self.push.cluster.clone()
    }
}

/// Sends server events to sockets: this node's, and in cluster mode the
/// other nodes' (over the bus). Each call encodes the event once; every
/// recipient shares the bytes. A recipient that cannot keep up is
/// disconnected (its client reconnects and reloads) rather than silently
/// missing an event.
#[derive(Clone)]
pub struct Pusher {
    broadcaster: Addr<Broadcaster>,
    rooms: Arc<RoomDirectory>,
    cluster: Option<Arc<Cluster>>,
    /// Connection state recovery is on: every event goes to the
    /// broadcaster to be logged, encoded with its offset and fanned out
    /// (see `replay`).
    logged: bool,
}

impl Pusher {
    pub fn new(
        broadcaster: Addr<Broadcaster>,
        rooms: Arc<RoomDirectory>,
        cluster: Option<Arc<Cluster>>,
        logged: bool,
    ) -> Self {
        Self { broadcaster, rooms, cluster, logged }
    }

    /// To every connected socket.
    pub fn to_everyone(&self, event: &str, payload: Value) {
        if self.logged {
            return self.log(Target::Everyone, event, payload);
        }
        let frame = self.publish(|| To::Everyone, event, payload);
        self.broadcaster.do_send(Broadcast(frame));
    }

    /// To the members of `room:issue:<issue_id>`.
    pub fn to_room(&self, issue_id: &str, event: &str, payload: Value) {
        if self.logged {
            return self.log(Target::Room(issue_id.into()), event, payload);
        }
        let frame = self.publish(|| To::Room(issue_id.to_string()), event, payload);
        self.rooms.send_to_room(issue_id, frame);
    }

    /// To every socket of one user (all their tabs).
    pub fn to_user(&self, user_id: &str, event: &str, payload: Value) {
        if self.logged {
            return self.log(Target::User(user_id.into()), event, payload);
        }
        let frame = self.publish(|| To::User(user_id.to_string()), event, payload);
        self.broadcaster.do_send(ToUser { user_id: user_id.into(), frame });
    }

    /// On one node the broadcaster gives the event its offset and encodes
    /// it; in a cluster the cluster's log does, and every node (this one
    /// too) delivers it from there (`cluster::recovery`).
    fn log(&self, target: Target, event: &str, payload: Value) {
        let Some(cluster) = &self.cluster else {
            return self.broadcaster.do_send(Logged { target, name: event.to_string(), payload });
        };
        let to = match target {
            Target::Everyone => To::Everyone,
            Target::Room(issue_id) => To::Room(issue_id.to_string()),
            Target::User(user_id) => To::User(user_id.to_string()),
        };
        cluster.log_event(to, &encode(event, payload));
    }

    /// Encodes the event once, for the other nodes (in cluster mode) and
    /// for this node's recipients, which the caller hands it to (`to` is
    /// made only in cluster mode).
    fn publish(&self, to: impl FnOnce() -> To, event: &str, payload: Value) -> Arc<SharedMessage> {
        let frame = encode(event, payload);
        if let Some(cluster) = &self.cluster {
            cluster.publish(to(), None, false, &frame);
        }
        frame
    }
}
