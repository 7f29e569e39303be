//! Domain events and the hub that hands them to subscribers.
//!
//! An operation publishes after its write has committed, and only when
//! something changed. Subscribers (the forwarding of events to sockets in
//! `realtime`, the actors through `actors::kit::Kit::subscribe`, metrics,
//! tests) register once, at start, from `lib.rs`.

use std::sync::{Arc, RwLock};

use serde::Serialize;

use super::wire::{Issue, Message, ReactionCounts};

#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    IssueCreated(Issue),
    /// The issue after the change; `issue:updated` carries a subset.
    IssueUpdated(Issue),
    IssueUpvoted(IssueUpvoted),
    MessagePosted(Message),
    ReactionChanged(ReactionCounts),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IssueUpvoted {
    pub issue_id: String,
    pub upvotes: i64,
    pub upvoted_by: String,
    pub upvoted: bool,
}

impl DomainEvent {
    /// The socket event name the contract gives this event.
    pub fn name(&self) -> &'static str {
        match self {
            DomainEvent::IssueCreated(_) => "issue:created",
            DomainEvent::IssueUpdated(_) => "issue:updated",
            DomainEvent::IssueUpvoted(_) => "issue:upvoted",
            DomainEvent::MessagePosted(_) => "message:new",
            DomainEvent::ReactionChanged(_) => "message:reaction",
        }
    }
}

type Subscriber = Box<dyn Fn(&Arc<DomainEvent>) + Send + Sync>;

/// Fan-out of domain events to in-process subscribers. Subscribers run on
/// the publishing request's thread and must not block: an actor is
/// subscribed (by the actor kit) with a closure that `try_send`s to it.
#[derive(Default)]
pub struct EventHub {
    subscribers: RwLock<Vec<Subscriber>>,
}

impl EventHub {
    pub fn subscribe(&self, subscriber: impl Fn(&Arc<DomainEvent>) + Send + Sync + 'static) {
        self.subscribers.write().unwrap_or_else(|p| p.into_inner()).push(Box::new(subscriber));
    }

    pub fn publish(&self, event: DomainEvent) {
        let event = Arc::new(event);
        log::debug!(target: "civicpulse::events", "publish {}", event.name());
        for subscriber in self.subscribers.read().unwrap_or_else(|p| p.into_inner()).iter() {
            subscriber(&event);
        }
    }
}
