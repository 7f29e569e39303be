//! `Notifier`: tells officials about critical issues. Today it writes a
//! log line whenever an issue is reported as, or changed while, critical; it is also the
//! smallest example of an actor that subscribes to domain events.

use std::sync::Arc;

use actix::prelude::*;

use crate::domain::events::{DomainEvent, EventHub};

/// A domain event delivered to an actor.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Published(pub Arc<DomainEvent>);

#[derive(Default)]
pub struct Notifier {
    /// Critical issues seen, for the log line and for tests.
    pub notified: u64,
}

impl Actor for Notifier {
    type Context = Context<Self>;
}

impl Notifier {
    /// Starts the actor on the current arbiter and subscribes it to `hub`.
    /// Without a running actix system (e.g. a command-line tool) it does
    /// nothing.
    pub fn subscribe(hub: &EventHub) -> Option<Addr<Self>> {
        actix_rt::System::try_current()?;
        let addr = Notifier::default().start();
        let recipient = addr.clone().recipient::<Published>();
        hub.subscribe(move |event| {
            if is_critical(event) {
                // Bounded: if the notifier falls behind, say so rather than queue forever.
                if recipient.try_send(Published(event.clone())).is_err() {
                    log::warn!(target: "civicpulse::notifier", "notifier mailbox full; dropped one notification");
                }
            }
        });
        Some(addr)
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
            self.notified += 1;
            log::warn!(
                target: "civicpulse::notifier",
                "CRITICAL issue={} city={} status={} title={:?}: officials notified",
                issue.issue_id, issue.city, issue.status, issue.title
            );
        }
    }
}
