//! Actors: long-lived, message-driven parts of a node. The realtime ones
//! (socket sessions, issue rooms, broadcaster, presence) live here too.

pub mod notifier;
