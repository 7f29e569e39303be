//! `IssueRoom`: the members of `room:issue:<issueId>` on this node, one actor
//! per issue with members. Rooms are found (and created on first join)
//! through the [`RoomDirectory`] and stop when their last member leaves.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix::prelude::*;
use dashmap::DashMap;

use super::fanout::deliver;
use crate::engineio::{EncodedFrame, Push};
use crate::metrics::Metrics;

struct Entry {
    addr: Addr<IssueRoom>,
    /// Members, counting joins still in the room's mailbox. Changed only
    /// under the directory's lock for this issue, so a room never stops
    /// while a join is on its way to it.
    members: Arc<AtomicUsize>,
}

/// issueId → its room.
pub struct RoomDirectory {
    rooms: DashMap<String, Entry>,
    metrics: Arc<Metrics>,
}

impl RoomDirectory {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self { rooms: DashMap::new(), metrics })
    }

    /// Adds a socket to an issue's room, starting the room if needed.
    pub fn join(self: &Arc<Self>, issue_id: &str, socket_id: Arc<str>, recipient: Recipient<Push>) {
        let entry = self.rooms.entry(issue_id.to_string()).or_insert_with(|| {
            self.metrics.open_rooms.fetch_add(1, Ordering::Relaxed);
            let members = Arc::new(AtomicUsize::new(0));
            let room = IssueRoom {
                issue_id: issue_id.to_string(),
                members: HashMap::new(),
                count: members.clone(),
                directory: Arc::downgrade(self),
            };
            Entry { addr: room.start(), members }
        });
        entry.members.fetch_add(1, Ordering::SeqCst);
        entry.addr.do_send(Join { socket_id, recipient });
        drop(entry);
    }

    pub fn leave(&self, issue_id: &str, socket_id: Arc<str>) {
        if let Some(entry) = self.rooms.get(issue_id) {
            entry.addr.do_send(Leave { socket_id });
        }
    }

    /// Sends a frame to the members of an issue's room, if it has any here.
    pub fn deliver(&self, issue_id: &str, frame: Arc<EncodedFrame>) {
        if let Some(entry) = self.rooms.get(issue_id) {
            entry.addr.do_send(Deliver(frame));
        }
    }

    /// Removes a room whose count is zero; true if it was removed.
    fn remove_if_empty(&self, issue_id: &str) -> bool {
        let removed =
            self.rooms.remove_if(issue_id, |_, entry| entry.members.load(Ordering::SeqCst) == 0).is_some();
        if removed {
            self.metrics.open_rooms.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }
}

pub struct IssueRoom {
    issue_id: String,
    members: HashMap<Arc<str>, Recipient<Push>>,
    count: Arc<AtomicUsize>,
    directory: std::sync::Weak<RoomDirectory>,
}

impl Actor for IssueRoom {
    type Context = Context<Self>;
}

impl IssueRoom {
    fn forget(&mut self, socket_id: &str, ctx: &mut Context<Self>) {
        if self.members.remove(socket_id).is_some() {
            self.count.fetch_sub(1, Ordering::SeqCst);
        }
        if self.members.is_empty()
            && self.directory.upgrade().is_none_or(|d| d.remove_if_empty(&self.issue_id))
        {
            ctx.stop();
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Join {
    socket_id: Arc<str>,
    recipient: Recipient<Push>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Leave {
    socket_id: Arc<str>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Deliver(Arc<EncodedFrame>);

impl Handler<Join> for IssueRoom {
    type Result = ();

    fn handle(&mut self, msg: Join, _: &mut Context<Self>) {
        // Joining twice counts once.
        if self.members.insert(msg.socket_id, msg.recipient).is_some() {
            self.count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Handler<Leave> for IssueRoom {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Context<Self>) {
        self.forget(&msg.socket_id, ctx);
    }
}

impl Handler<Deliver> for IssueRoom {
    type Result = ();

    fn handle(&mut self, Deliver(frame): Deliver, ctx: &mut Context<Self>) {
        let gone: Vec<Arc<str>> =
            self.members.iter().filter(|(id, r)| !deliver(r, &frame, id)).map(|(id, _)| id.clone()).collect();
        for id in gone {
            self.forget(&id, ctx);
        }
    }
}
