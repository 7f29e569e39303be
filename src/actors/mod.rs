//! Actors: the long-lived, message-driven parts of a node.
//!
//! The fan-out every socket depends on, started by [`Fanout::start`]:
//! - [`broadcaster::Broadcaster`]: events to every local socket, or to all
//!   of one user's;
//! - [`issue_room::IssueRoom`]: one per issue with members; room events;
//! - [`presence::PresenceRegistry`]: who is online; presence:update.
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
mod fanout;
pub mod issue_room;
pub mod kit;
pub mod notifier;
pub mod presence;
pub mod trending;

use std::sync::Arc;

use actix::prelude::*;

use crate::metrics::Metrics;

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
}

impl Fanout {
    pub fn start(metrics: &Arc<Metrics>) -> Self {
        let broadcaster = broadcaster::Broadcaster::default().start();
        let presence = presence::PresenceRegistry::new(broadcaster.clone(), metrics.clone()).start();
        let rooms = issue_room::RoomDirectory::new(metrics.clone());
        Self { broadcaster, rooms, presence }
    }

    /// The handle through which actors (and the forwarding of domain
    /// events) send to sockets.
    pub fn push(&self) -> kit::Pusher {
        kit::Pusher::new(self.broadcaster.clone(), self.rooms.clone())
    }
}
