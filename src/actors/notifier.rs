//! `Notifier`: tells officials about critical issues. Today it writes a
//! log line whenever an issue is reported as, or changed while, critical; it
//! is also the smallest example of an actor that subscribes to domain
//! events through the [`Kit`].

use actix::prelude::*;

use super::kit::{Kit, Published};
use crate::domain::events::DomainEvent;

pub struct Notifier;

impl Actor for Notifier {
    type Context = Context<Self>;
}

impl Notifier {
    /// Starts the actor on the current arbiter, subscribed to critical
    /// issues.
    pub fn start(kit: &Kit) -> Addr<Self> {
        let addr = Actor::start(Notifier);
        kit.subscribe(&addr, is_critical);
        addr
    }
}

fn is_critical(event: &DomainEvent) -> bool {
    match event {
        DomainEvent::IssueCreated(issue) | DomainEvent::IssueUpdated(issue) => issue.priority == "critical",
        _ => false,
    }
}

impl Handler<Published> for Notifier {
    type Result = ();

    fn handle(&mut self, Published(event): Published, _: &mut Context<Self>) {
        if let DomainEvent::IssueCreated(issue) | DomainEvent::IssueUpdated(issue) = event.as_ref() {
            log::warn!(
                target: "civicpulse::notifier",
                "CRITICAL issue={} city={} status={} title={:?}: officials notified",
                issue.issue_id, issue.city, issue.status, issue.title
            );
        }
    }
}
