//! `IssueRoom`: the members of `room:issue:<issueId>` on this node and their
//! typing state; one actor per issue with members. Rooms are found (and
//! created on first join) through the [`RoomDirectory`] and stop when their
//! last member leaves.
//!
//! In cluster mode a typist's state is the cluster's (in Redis, see
//! `cluster::typing`): a room checks that the typist is a member and hands
//! the rest to the typing link.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix::prelude::*;
use dashmap::DashMap;

use super::broadcaster::{Broadcaster, RoomMembership};
use super::fanout::{Delivery, offer_frame};
use crate::cluster::typing::{Command, Commands};
use crate::metrics::Metrics;
use crate::protocol::events::{USER_TYPING, encode, user_typing};
use actix_socketio::engineio::{Push, SharedMessage};

/// A typist who sends nothing new for this long is cleared by the server.
pub const TYPING_EXPIRY: Duration = Duration::from_secs(5);

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
    /// In cluster mode: where typing goes.
    typing: Option<Commands>,
    /// With connection state recovery on, the broadcaster fans out room
    /// events (rooms keep typing): it is told of joins and leaves.
    sequencer: Option<Addr<Broadcaster>>,
}

/// One member socket.
pub struct Member {
    pub socket_id: Arc<str>,
    pub user_id: Arc<str>,
    pub recipient: Recipient<Push>,
}

impl RoomDirectory {
    pub fn new(
        metrics: Arc<Metrics>,
        typing: Option<Commands>,
        sequencer: Option<Addr<Broadcaster>>,
    ) -> Arc<Self> {
        Arc::new(Self { rooms: DashMap::new(), metrics, typing, sequencer })
    }

    /// Adds a socket to an issue's room, starting the room if needed.
    pub fn join(self: &Arc<Self>, issue_id: &str, member: Member) {
        self.tell_sequencer(&member.socket_id, issue_id, true);
        let entry = self.rooms.entry(issue_id.to_string()).or_insert_with(|| {
            self.metrics.open_rooms.fetch_add(1, Ordering::Relaxed);
            let members = Arc::new(AtomicUsize::new(0));
            let room = IssueRoom {
                issue_id: issue_id.to_string(),
                members: HashMap::new(),
                typing: HashMap::new(),
                count: members.clone(),
                directory: Arc::downgrade(self),
            };
            Entry { addr: room.start(), members }
        });
        entry.members.fetch_add(1, Ordering::SeqCst);
        entry.addr.do_send(Join(member));
    }

    /// Whether the issue's room has members on this node. A room is only
    /// opened for an issue that was found, and issues are never deleted, so
    /// an open room stands for the issue's existence.
    pub fn is_open(&self, issue_id: &str) -> bool {
        self.rooms.contains_key(issue_id)
    }

    pub fn leave(&self, issue_id: &str, socket_id: Arc<str>) {
        self.tell_sequencer(&socket_id, issue_id, false);
        if let Some(entry) = self.rooms.get(issue_id) {
            entry.addr.do_send(Leave { socket_id });
        }
    }

    /// Sends a frame to the members of an issue's room, if it has any here.
    pub fn send_to_room(&self, issue_id: &str, frame: Arc<SharedMessage>) {
        self.send_to_members(issue_id, frame, None, Delivery::Required);
    }

    /// Sends a frame to the room's members here but those of `except_user`;
    /// `volatile` frames a member who is behind may go without.
    pub fn send_to_members(
        &self,
        issue_id: &str,
        frame: Arc<SharedMessage>,
        except_user: Option<Arc<str>>,
        delivery: Delivery,
    ) {
        if let Some(entry) = self.rooms.get(issue_id) {
            entry.addr.do_send(ToMembers { frame, except_user, delivery });
        }
    }

    pub fn typing(&self, issue_id: &str, typing: Typing) {
        if let Some(entry) = self.rooms.get(issue_id) {
            entry.addr.do_send(typing);
        }
    }

    fn tell_sequencer(&self, socket_id: &Arc<str>, issue_id: &str, joined: bool) {
        if let Some(sequencer) = &self.sequencer {
            sequencer.do_send(RoomMembership {
                socket_id: socket_id.clone(),
                issue_id: issue_id.into(),
                joined,
            });
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

/// Someone typing: per user per room, set by whichever of their sockets
/// spoke last.
struct Typist {
    socket_id: Arc<str>,
    display_name: String,
    expiry: SpawnHandle,
}

pub struct IssueRoom {
    issue_id: String,
    members: HashMap<Arc<str>, Member>,
    typing: HashMap<Arc<str>, Typist>,
    count: Arc<AtomicUsize>,
    directory: std::sync::Weak<RoomDirectory>,
}

/// The mailbox has no bound of its own (every sender uses `do_send`): its
/// producers are bounded. Joins, leaves and typing come from member sockets,
/// each handling one inbound event at a time in its turn; room events come
/// one per committed write.
impl Actor for IssueRoom {
    type Context = Context<Self>;
}

impl IssueRoom {
    /// The cluster's typing link, in cluster mode.
    fn typing_link(&self) -> Option<Commands> {
        self.directory.upgrade().and_then(|d| d.typing.clone())
    }

    fn forget(&mut self, socket_id: &str, ctx: &mut Context<Self>) {
        if let Some(member) = self.members.remove(socket_id) {
            self.count.fetch_sub(1, Ordering::SeqCst);
            if let Some(link) = self.typing_link() {
                link.send(Command::Left { issue_id: self.issue_id.clone(), socket_id: member.socket_id });
            }
        }
        // The socket that last set a typing state took it with it.
        let stale: Vec<Arc<str>> = self
            .typing
            .iter()
            .filter(|(_, t)| &*t.socket_id == socket_id)
            .map(|(user, _)| user.clone())
            .collect();
        for user in stale {
            self.stop_typing(&user, ctx);
        }
        if self.members.is_empty()
            && self.directory.upgrade().is_none_or(|d| d.remove_if_empty(&self.issue_id))
        {
            ctx.stop();
        }
    }

    fn broadcast(
        &mut self,
        frame: &Arc<SharedMessage>,
        except_user: Option<&str>,
        delivery: Delivery,
        ctx: &mut Context<Self>,
    ) {
        let gone: Vec<Arc<str>> = self
            .members
            .values()
            .filter(|m| except_user != Some(&*m.user_id))
            .filter(|m| !offer_frame(&m.recipient, frame, &m.socket_id, delivery))
            .map(|m| m.socket_id.clone())
            .collect();
        for id in gone {
            self.forget(&id, ctx);
        }
    }

    fn announce_typing(
        &mut self,
        user_id: &str,
        display_name: &str,
        is_typing: bool,
        ctx: &mut Context<Self>,
    ) {
        let frame = encode(USER_TYPING, user_typing(&self.issue_id, user_id, display_name, is_typing));
        // Not echoed to any of the typist's own sockets.
        self.broadcast(&frame, Some(user_id), Delivery::Droppable, ctx);
    }

    fn stop_typing(&mut self, user_id: &str, ctx: &mut Context<Self>) {
        if let Some(typist) = self.typing.remove(user_id) {
            ctx.cancel_future(typist.expiry);
            self.announce_typing(user_id, &typist.display_name, false, ctx);
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Join(Member);

#[derive(Message)]
#[rtype(result = "()")]
struct Leave {
    socket_id: Arc<str>,
}

/// A room event for the members (but one user's), already encoded.
#[derive(Message)]
#[rtype(result = "()")]
struct ToMembers {
    frame: Arc<SharedMessage>,
    except_user: Option<Arc<str>>,
    delivery: Delivery,
}

/// A `user:typing` from a member socket.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Typing {
    pub socket_id: Arc<str>,
    pub user_id: Arc<str>,
    pub display_name: String,
    pub is_typing: bool,
}

impl Handler<Join> for IssueRoom {
    type Result = ();

    fn handle(&mut self, Join(member): Join, _: &mut Context<Self>) {
        // Joining twice counts once.
        if self.members.insert(member.socket_id.clone(), member).is_some() {
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

impl Handler<ToMembers> for IssueRoom {
    type Result = ();

    fn handle(&mut self, msg: ToMembers, ctx: &mut Context<Self>) {
        self.broadcast(&msg.frame, msg.except_user.as_deref(), msg.delivery, ctx);
    }
}

impl Handler<Typing> for IssueRoom {
    type Result = ();

    fn handle(&mut self, msg: Typing, ctx: &mut Context<Self>) {
        // Only members may type here.
        if !self.members.contains_key(&msg.socket_id) {
            return;
        }
        if let Some(link) = self.typing_link() {
            return link.send(Command::Typing {
                issue_id: self.issue_id.clone(),
                user_id: msg.user_id.to_string(),
                display_name: msg.display_name,
                socket_id: msg.socket_id,
                is_typing: msg.is_typing,
            });
        }
        if !msg.is_typing {
            return self.stop_typing(&msg.user_id, ctx);
        }
        let user = msg.user_id.clone();
        let expiry = ctx.run_later(TYPING_EXPIRY, move |room, ctx| {
            // The timer has fired: forget its handle before clearing.
            if let Some(typist) = room.typing.remove(&user) {
                room.announce_typing(&user, &typist.display_name, false, ctx);
            }
        });
        let previous = self.typing.insert(
            msg.user_id.clone(),
            Typist { socket_id: msg.socket_id, display_name: msg.display_name.clone(), expiry },
        );
        match previous {
            // Already typing: only the expiry moves; no repeat broadcast.
            Some(previous) => {
                ctx.cancel_future(previous.expiry);
            }
            None => self.announce_typing(&msg.user_id, &msg.display_name, true, ctx),
        }
    }
}
