//! Actors: the long-lived, message-driven parts of a node.
//!
//! - [`broadcaster::Broadcaster`]: global events to every local socket.
//! - [`issue_room::IssueRoom`]: one per issue with members; room events.
//! - [`presence::PresenceRegistry`]: who is online; presence:update.
//! - [`notifier::Notifier`]: an example subscriber of domain events.
//!
//! Socket sessions are actors too; they live with their protocol in
//! `engineio` (transport) and `realtime` (CivicPulse's events).

pub mod broadcaster;
mod fanout;
pub mod issue_room;
pub mod notifier;
pub mod presence;
