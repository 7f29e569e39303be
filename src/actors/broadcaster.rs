//! `Broadcaster`: the one sender of events to every local socket (issue:*,
//! presence:update, issue:trending) and to all the sockets of one user.
//! Each event arrives encoded once; every socket gets the same shared bytes.
//!
//! Its mailbox has no bound of its own (every sender uses `do_send`):
//! its producers are what bound it. Subscriptions come one per socket
//! handshake and goodbye; events come one per committed write (or a few
//! per write, from actors reacting to it) and per user coming online or
//! going offline, and writes and handshakes are paced by the database and
//! by each socket's bounded inbound queue.
//!
//! With connection state recovery on it is also the sequencer (see
//! `replay`): every event a client can miss reaches it as [`Logged`], gets
//! its offset in the log here and is fanned out from here, room events
//! included, so that every socket receives its events in offset order (in
//! cluster mode the cluster's log gives the offsets, and the events come
//! from it in its order, as [`Sequenced`]). A socket subscribes with the
//! offset it has seen up to, and is handed what the log got for it since,
//! before anything newer.

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use serde_json::Value;

use super::fanout::{Delivery, offer_frame};
use super::replay::{EventLog, Offset, RoomIndex, Target};
use crate::protocol::events::encode_logged;
use actix_socketio::engineio::{CloseReason, Push, SharedMessage};

struct Subscriber {
    user_id: Arc<str>,
    recipient: Recipient<Push>,
}

#[derive(Default)]
pub struct Broadcaster {
    sockets: HashMap<Arc<str>, Subscriber>,
    /// user id → their sockets here (several tabs), for pushes to one user:
    /// a list, not a set, since a user has a few tabs and every idle
    /// session pays for its entry.
    by_user: HashMap<Arc<str>, Vec<Arc<str>>>,
    /// With connection state recovery on.
    sequencer: Option<Sequencer>,
}

/// The log the broadcaster writes, and the rooms it fans out to.
struct Sequencer {
    log: Arc<dyn EventLog>,
    rooms: RoomIndex,
    /// Sockets that subscribed after an offset this node has not read yet
    /// from the cluster's log (their replay came from Redis, a moment ahead
    /// of this node): events up to it are not theirs to get again.
    ahead: HashMap<Arc<str>, Offset>,
}

impl Actor for Broadcaster {
    type Context = Context<Self>;
}

impl Broadcaster {
    /// With `log`, the sequencer of connection state recovery.
    pub fn new(log: Option<Arc<dyn EventLog>>) -> Self {
        let sequencer = log.map(|log| Sequencer { log, rooms: RoomIndex::default(), ahead: HashMap::new() });
        Self { sequencer, ..Self::default() }
    }

    fn forget(&mut self, socket_id: &str) {
        if let Some(gone) = self.sockets.remove(socket_id) {
            self.unindex(&gone.user_id, socket_id);
        }
        if let Some(sequencer) = &mut self.sequencer {
            sequencer.rooms.forget(socket_id);
            sequencer.ahead.remove(socket_id);
        }
    }

    fn forget_all(&mut self, gone: Vec<Arc<str>>) {
        for id in gone {
            self.forget(&id);
        }
    }

    /// Hands a socket that subscribes with `resume` what the log got for
    /// it after `resume.after` (it was not subscribed yet to get it live).
    fn catch_up(&mut self, socket_id: &Arc<str>, user_id: &str, resume: &Resume) {
        let Some(sequencer) = &mut self.sequencer else { return };
        if resume.after > sequencer.log.head() {
            sequencer.ahead.insert(socket_id.clone(), resume.after);
            return;
        }
        let wants =
            |target: &Target| target.reaches(user_id, |room| resume.rooms.iter().any(|r| &**r == room));
        match sequencer.log.since(resume.after, &wants) {
            Ok((missed, _)) => {
                for frame in missed {
                    let gone = offer_each(&self.sockets, std::iter::once(socket_id), &frame);
                    if !gone.is_empty() {
                        return self.forget_all(gone);
                    }
                }
            }
            Err(_) => {
                // Only if the log turned over between the socket's CONNECT
                // and now: closed, so that its client reconnects and is
                // told it was not recovered, rather than miss events.
                log::warn!(target: "civicpulse::recovery", "socket={socket_id} fell out of the recovery log while subscribing; closing it");
                if let Some(gone) = self.sockets.get(socket_id) {
                    gone.recipient.do_send(Push::Close(CloseReason::ForcedClose));
                }
                self.forget(socket_id);
            }
        }
    }

    fn unindex(&mut self, user_id: &str, socket_id: &str) {
        if let Some(sockets) = self.by_user.get_mut(user_id) {
            sockets.retain(|s| &**s != socket_id);
            if sockets.is_empty() {
                self.by_user.remove(user_id);
            }
        }
    }
}

/// Offers `frame` to each of `ids` without waiting; answers those that are
/// gone (or were disconnected for not keeping up).
fn offer_each<'a>(
    sockets: &HashMap<Arc<str>, Subscriber>,
    ids: impl Iterator<Item = &'a Arc<str>>,
    frame: &Arc<SharedMessage>,
) -> Vec<Arc<str>> {
    ids.filter(|id| {
        sockets.get(*id).is_none_or(|s| !offer_frame(&s.recipient, frame, id, Delivery::Required))
    })
    .cloned()
    .collect()
}

/// [`offer_each`] for every socket, without looking each one up.
fn offer_everyone(sockets: &HashMap<Arc<str>, Subscriber>, frame: &Arc<SharedMessage>) -> Vec<Arc<str>> {
    sockets
        .iter()
        .filter(|(id, s)| !offer_frame(&s.recipient, frame, id, Delivery::Required))
        .map(|(id, _)| id.clone())
        .collect()
}

/// A socket that receives global events, and its user's, from now on.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub socket_id: Arc<str>,
    pub user_id: Arc<str>,
    pub recipient: Recipient<Push>,
    /// With connection state recovery on: where the socket's events
    /// resume.
    pub resume: Option<Resume>,
}

/// A socket that has had every event meant for it up to `after`, and is in
/// `rooms`.
pub struct Resume {
    pub after: Offset,
    pub rooms: Vec<Arc<str>>,
}

/// With connection state recovery on: an event a client can miss, to be
/// logged, encoded with its offset, and fanned out.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Logged {
    pub target: Target,
    pub name: String,
    pub payload: Value,
}

/// In cluster mode with connection state recovery on: an event of the
/// cluster's log, with its offset, encoded, in the log's order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Sequenced {
    pub offset: Offset,
    pub target: Target,
    pub frame: Arc<SharedMessage>,
}

/// With connection state recovery on: a socket joined or left an issue's
/// room (whose events the broadcaster then fans out).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoomMembership {
    pub socket_id: Arc<str>,
    pub issue_id: Arc<str>,
    pub joined: bool,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub socket_id: Arc<str>,
}

/// An event for every socket, already encoded.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Broadcast(pub Arc<SharedMessage>);

/// An event for every socket of one user on this node, already encoded.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ToUser {
    pub user_id: Arc<str>,
    pub frame: Arc<SharedMessage>,
}

impl Handler<Subscribe> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        // Subscribing again replaces the old entry, index included.
        self.forget(&msg.socket_id);
        self.by_user.entry(msg.user_id.clone()).or_default().push(msg.socket_id.clone());
        let (socket_id, user_id) = (msg.socket_id.clone(), msg.user_id.clone());
        self.sockets.insert(msg.socket_id, Subscriber { user_id: msg.user_id, recipient: msg.recipient });
        if let Some(resume) = msg.resume {
            if let Some(sequencer) = &mut self.sequencer {
                for issue_id in &resume.rooms {
                    sequencer.rooms.join(&socket_id, issue_id);
                }
            }
            self.catch_up(&socket_id, &user_id, &resume);
        }
    }
}

impl Handler<Logged> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: Logged, _: &mut Context<Self>) {
        let Some(sequencer) = &self.sequencer else {
            log::error!(target: "civicpulse::recovery", "{} sent for logging with recovery off; dropped", msg.name);
            return;
        };
        let Logged { target, name, payload } = msg;
        let frame =
            sequencer.log.append(target.clone(), &|offset| encode_logged(&name, payload.clone(), offset));
        self.fan_out(&target, &frame, &[]);
    }
}

impl Handler<Sequenced> for Broadcaster {
    type Result = ();

    fn handle(&mut self, Sequenced { offset, target, frame }: Sequenced, _: &mut Context<Self>) {
        let Some(sequencer) = &mut self.sequencer else { return };
        if !sequencer.log.record(offset, target.clone(), frame.clone()) {
            return;
        }
        // The sockets still ahead of this event; the others have caught up.
        sequencer.ahead.retain(|_, after| *after >= offset);
        let skip: Vec<Arc<str>> = sequencer.ahead.keys().cloned().collect();
        self.fan_out(&target, &frame, &skip);
    }
}

impl Broadcaster {
    /// A logged event to its audience, but the sockets in `skip`.
    fn fan_out(&mut self, target: &Target, frame: &Arc<SharedMessage>, skip: &[Arc<str>]) {
        let Some(sequencer) = &self.sequencer else { return };
        let wanted = |id: &&Arc<str>| !skip.contains(id);
        let gone = match target {
            Target::Everyone if skip.is_empty() => offer_everyone(&self.sockets, frame),
            Target::Everyone => offer_each(&self.sockets, self.sockets.keys().filter(wanted), frame),
            Target::Room(issue_id) => {
                offer_each(&self.sockets, sequencer.rooms.members(issue_id).iter().filter(wanted), frame)
            }
            Target::User(user_id) => offer_each(
                &self.sockets,
                self.by_user.get(user_id).into_iter().flatten().filter(wanted),
                frame,
            ),
        };
        self.forget_all(gone);
    }
}

impl Handler<RoomMembership> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: RoomMembership, _: &mut Context<Self>) {
        let Some(sequencer) = &mut self.sequencer else { return };
        // A socket gone (or not subscribed yet: its Subscribe brings its
        // rooms) is not indexed.
        if !msg.joined {
            sequencer.rooms.leave(&msg.socket_id, &msg.issue_id);
        } else if self.sockets.contains_key(&msg.socket_id) {
            sequencer.rooms.join(&msg.socket_id, &msg.issue_id);
        }
    }
}

impl Handler<Unsubscribe> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        self.forget(&msg.socket_id);
    }
}

impl Handler<Broadcast> for Broadcaster {
    type Result = ();

    fn handle(&mut self, Broadcast(frame): Broadcast, _: &mut Context<Self>) {
        let gone = offer_everyone(&self.sockets, &frame);
        self.forget_all(gone);
    }
}

impl Handler<ToUser> for Broadcaster {
    type Result = ();

    fn handle(&mut self, msg: ToUser, _: &mut Context<Self>) {
        let gone =
            offer_each(&self.sockets, self.by_user.get(&msg.user_id).into_iter().flatten(), &msg.frame);
        self.forget_all(gone);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::protocol::events::encode;

    /// A stand-in session that records the text of what it is pushed.
    #[derive(Default)]
    struct Session(Arc<Mutex<Vec<String>>>);

    impl Actor for Session {
        type Context = Context<Self>;
    }

    impl Handler<Push> for Session {
        type Result = ();

        fn handle(&mut self, push: Push, _: &mut Context<Self>) {
            if let Push::Shared(frame) = push {
                self.0.lock().unwrap_or_else(|p| p.into_inner()).push(frame.text.to_string());
            }
        }
    }

    /// Answered once everything pushed to a session before it is handled.
    struct Flush;

    impl Message for Flush {
        type Result = ();
    }

    impl Handler<Flush> for Session {
        type Result = ();

        fn handle(&mut self, _: Flush, _: &mut Context<Self>) {}
    }

    #[test]
    fn a_push_to_a_user_reaches_all_their_sockets_and_no_one_else() {
        actix_rt::System::new().block_on(async {
            let broadcaster = Broadcaster::default().start();
            let mut seen = Vec::new();
            let mut sessions = Vec::new();
            for (socket, user) in [("s1", "usr_a"), ("s2", "usr_a"), ("s3", "usr_b")] {
                let log = Arc::new(Mutex::new(Vec::new()));
                let session = Session(log.clone()).start();
                broadcaster
                    .send(Subscribe {
                        socket_id: socket.into(),
                        user_id: user.into(),
                        recipient: session.clone().recipient(),
                        resume: None,
                    })
                    .await
                    .expect("broadcaster runs");
                seen.push(log);
                sessions.push(session);
            }
            let to_a = ToUser { user_id: "usr_a".into(), frame: encode("hello", serde_json::json!(1)) };
            broadcaster.send(to_a).await.expect("broadcaster runs");
            broadcaster.send(Unsubscribe { socket_id: "s2".into() }).await.expect("broadcaster runs");
            broadcaster.send(Broadcast(encode("all", serde_json::json!(2)))).await.expect("broadcaster runs");
            let to_a = ToUser { user_id: "usr_a".into(), frame: encode("again", serde_json::json!(3)) };
            broadcaster.send(to_a).await.expect("broadcaster runs");
            for session in &sessions {
                session.send(Flush).await.expect("session runs");
            }
            let texts: Vec<Vec<String>> =
                seen.iter().map(|log| log.lock().unwrap_or_else(|p| p.into_inner()).clone()).collect();
            assert_eq!(texts[0], [r#"42["hello",1]"#, r#"42["all",2]"#, r#"42["again",3]"#]);
            assert_eq!(texts[1], [r#"42["hello",1]"#]);
            assert_eq!(texts[2], [r#"42["all",2]"#]);
        });
    }
}
