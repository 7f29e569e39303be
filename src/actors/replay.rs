//! The recovery log of connection state recovery
//! (`CONNECTION_STATE_RECOVERY_SECS`): the recent events a client can miss,
//! each with its offset and its audience, so that a socket coming back
//! within the window is handed the ones meant for it, or told honestly
//! that it cannot be ([`Gap`]).
//!
//! The log is a bounded cache (`CONNECTION_STATE_RECOVERY_MAX_EVENTS`), not
//! history: chat history stays in the database. It sits behind
//! [`EventLog`]: alone, a node's log is its own ([`EventLog::append`] gives
//! each event the next offset); in cluster mode the log is the cluster's (a
//! Redis Stream, `cluster::recovery`), which gives the offsets, and the
//! node's [`MemoryLog`] is the recent part of it this node has read
//! ([`EventLog::record`]), for the sockets that subscribe meanwhile.
//!
//! With recovery on, the broadcaster is the log's one writer and fans out
//! every logged event itself, room events included ([`RoomIndex`]): one
//! actor assigning offsets and delivering in that order is what makes each
//! socket receive its events in offset order, so that the last offset a
//! client saw tells exactly which of its events it has.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use actix_socketio::engineio::SharedMessage;

pub use crate::protocol::offsets::{Gap, Offset, Target};

/// The recent events, by offset.
pub trait EventLog: Send + Sync {
    /// Stores an event for `target` and answers its frame, made by
    /// `encode` with the offset it gets.
    fn append(&self, target: Target, encode: &dyn Fn(Offset) -> Arc<SharedMessage>) -> Arc<SharedMessage>;

    /// Stores an event that already has its offset (from the cluster's
    /// log); false, storing nothing, unless it is newer than the head.
    fn record(&self, offset: Offset, target: Target, frame: Arc<SharedMessage>) -> bool;

    /// The newest event's offset (before any: the one the first will
    /// follow).
    fn head(&self) -> Offset;

    /// Every event after `after` that `wants`, oldest first, and the
    /// offset they run to (the head when they were read); [`Gap`] unless
    /// every event after `after` is still kept.
    fn since(
        &self,
        after: Offset,
        wants: &dyn Fn(&Target) -> bool,
    ) -> Result<(Vec<Arc<SharedMessage>>, Offset), Gap>;
}

struct Entry {
    offset: Offset,
    target: Target,
    frame: Arc<SharedMessage>,
}

struct Ring {
    entries: VecDeque<Entry>,
    head: Offset,
    /// The newest offset no longer kept (where the log began, before it
    /// let any go): a reader from before it has a gap.
    gone: Offset,
}

/// This node's log: the last `capacity` events, in memory.
pub struct MemoryLog {
    ring: Mutex<Ring>,
    capacity: usize,
}

impl MemoryLog {
    pub fn new(capacity: usize) -> Self {
        let started_us = chrono::Utc::now().timestamp_micros().max(0) as Offset;
        Self::starting_at(started_us, capacity)
    }

    fn starting_at(head: Offset, capacity: usize) -> Self {
        Self {
            ring: Mutex::new(Ring { entries: VecDeque::new(), head, gone: head }),
            capacity: capacity.max(1),
        }
    }

    /// A log that begins at `head`: the cluster's log's, as it was when
    /// this node began reading it.
    pub fn mirror(head: Offset, capacity: usize) -> Self {
        Self::starting_at(head, capacity)
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl EventLog for MemoryLog {
    fn append(&self, target: Target, encode: &dyn Fn(Offset) -> Arc<SharedMessage>) -> Arc<SharedMessage> {
        let mut ring = self.ring();
        let offset = ring.head + 1;
        let frame = encode(offset);
        ring.push(Entry { offset, target, frame: frame.clone() }, self.capacity);
        frame
    }

    fn record(&self, offset: Offset, target: Target, frame: Arc<SharedMessage>) -> bool {
        let mut ring = self.ring();
        if offset <= ring.head {
            return false;
        }
        ring.push(Entry { offset, target, frame }, self.capacity);
        true
    }

    fn head(&self) -> Offset {
        self.ring().head
    }

    fn since(
        &self,
        after: Offset,
        wants: &dyn Fn(&Target) -> bool,
    ) -> Result<(Vec<Arc<SharedMessage>>, Offset), Gap> {
        let ring = self.ring();
        // A reader needs every event after `after`: none of them may be
        // gone, and `after` must be an offset this log has reached.
        if after < ring.gone || after > ring.head {
            return Err(Gap);
        }
        let first = ring.entries.partition_point(|entry| entry.offset <= after);
        let missed = ring
            .entries
            .range(first..)
            .filter(|entry| wants(&entry.target))
            .map(|entry| entry.frame.clone())
            .collect();
        Ok((missed, ring.head))
    }
}

impl Ring {
    fn push(&mut self, entry: Entry, capacity: usize) {
        if self.entries.len() == capacity
            && let Some(old) = self.entries.pop_front()
        {
            self.gone = old.offset;
        }
        self.head = entry.offset;
        self.entries.push_back(entry);
    }
}

/// Who is in which room, for the broadcaster's fan-out of room events
/// while recovery is on. Lists rather than sets: a room has a few
/// members per node, a socket a few rooms.
#[derive(Default)]
pub struct RoomIndex {
    members: HashMap<Arc<str>, Vec<Arc<str>>>,
    rooms_of: HashMap<Arc<str>, Vec<Arc<str>>>,
}

impl RoomIndex {
    pub fn join(&mut self, socket_id: &Arc<str>, issue_id: &Arc<str>) {
        let rooms = self.rooms_of.entry(socket_id.clone()).or_default();
        if rooms.contains(issue_id) {
            return;
        }
        rooms.push(issue_id.clone());
        self.members.entry(issue_id.clone()).or_default().push(socket_id.clone());
    }

    pub fn leave(&mut self, socket_id: &str, issue_id: &str) {
        if let Some(rooms) = self.rooms_of.get_mut(socket_id) {
            rooms.retain(|r| &**r != issue_id);
            if rooms.is_empty() {
                self.rooms_of.remove(socket_id);
            }
        }
        if let Some(members) = self.members.get_mut(issue_id) {
            members.retain(|s| &**s != socket_id);
            if members.is_empty() {
                self.members.remove(issue_id);
            }
        }
    }

    /// Takes a socket out of every room.
    pub fn forget(&mut self, socket_id: &str) {
        for issue_id in self.rooms_of.remove(socket_id).unwrap_or_default() {
            if let Some(members) = self.members.get_mut(&issue_id) {
                members.retain(|s| &**s != socket_id);
                if members.is_empty() {
                    self.members.remove(&issue_id);
                }
            }
        }
    }

    pub fn members(&self, issue_id: &str) -> &[Arc<str>] {
        self.members.get(issue_id).map(Vec::as_slice).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::events::encode;

    fn log_of(capacity: usize) -> MemoryLog {
        MemoryLog::starting_at(1000, capacity)
    }

    fn append(log: &MemoryLog, target: Target, n: i64) -> Offset {
        let frame = log.append(target, &|offset| encode("e", serde_json::json!([n, offset])));
        let text = frame.text.to_string();
        serde_json::from_str::<serde_json::Value>(&text[2..]).unwrap()[1][1].as_u64().unwrap()
    }

    fn texts(frames: &[Arc<SharedMessage>]) -> Vec<String> {
        frames.iter().map(|f| f.text.to_string()).collect()
    }

    #[test]
    fn offsets_follow_the_start_and_each_event_gets_the_next() {
        let log = log_of(10);
        assert_eq!(log.head(), 1000);
        assert_eq!(append(&log, Target::Everyone, 1), 1001);
        assert_eq!(append(&log, Target::Everyone, 2), 1002);
        assert_eq!(log.head(), 1002);
    }

    #[test]
    fn since_answers_what_the_reader_was_meant_to_get_in_order() {
        let log = log_of(10);
        append(&log, Target::Everyone, 1);
        append(&log, Target::Room("iss_a".into()), 2);
        append(&log, Target::Room("iss_b".into()), 3);
        append(&log, Target::User("usr_x".into()), 4);
        append(&log, Target::User("usr_y".into()), 5);
        let wants = |t: &Target| t.reaches("usr_x", |room| room == "iss_a");
        let (missed, head) = log.since(1000, &wants).unwrap();
        assert_eq!(head, 1005);
        assert_eq!(texts(&missed), [r#"42["e",[1,1001]]"#, r#"42["e",[2,1002]]"#, r#"42["e",[4,1004]]"#]);
        let (missed, _) = log.since(1002, &wants).unwrap();
        assert_eq!(texts(&missed), [r#"42["e",[4,1004]]"#]);
        let (missed, head) = log.since(1005, &wants).unwrap();
        assert_eq!((missed.len(), head), (0, 1005));
    }

    #[test]
    fn an_offset_no_longer_kept_or_never_given_is_a_gap() {
        let log = log_of(3);
        for n in 1..=5 {
            append(&log, Target::Everyone, n);
        }
        // Kept: 1003..=1005.
        let all = |_: &Target| true;
        let counted =
            |log: &MemoryLog, after| log.since(after, &all).map(|(missed, head)| (missed.len(), head));
        assert_eq!(counted(&log, 1001), Err(Gap), "1002 is gone");
        assert_eq!(counted(&log, 1002), Ok((3, 1005)), "everything after 1002 is kept");
        assert_eq!(counted(&log, 1006), Err(Gap), "not an offset of this log");
        assert_eq!(counted(&log, 999), Err(Gap), "before this run");
        assert_eq!(counted(&log, Offset::MAX), Err(Gap));
        // An empty log answers only its own start.
        let empty = log_of(3);
        assert_eq!(counted(&empty, 1000), Ok((0, 1000)));
        assert_eq!(counted(&empty, 999), Err(Gap));
    }

    #[test]
    fn a_mirror_keeps_the_offsets_it_is_given_and_knows_what_it_let_go() {
        let log = MemoryLog::mirror(100, 2);
        let frame = |n: i64| encode("e", serde_json::json!(n));
        assert!(log.record(150, Target::Everyone, frame(1)));
        assert!(!log.record(150, Target::Everyone, frame(1)), "not twice");
        assert!(!log.record(120, Target::Everyone, frame(0)), "not older than the head");
        assert!(log.record(300, Target::Everyone, frame(2)));
        let all = |_: &Target| true;
        assert_eq!(log.since(100, &all).map(|(m, head)| (m.len(), head)), Ok((2, 300)));
        assert_eq!(log.since(200, &all).map(|(m, head)| (m.len(), head)), Ok((1, 300)));
        assert!(log.record(400, Target::Everyone, frame(3)));
        assert_eq!(log.since(100, &all).map(|(m, _)| m.len()), Err(Gap), "150 is gone");
        assert_eq!(log.since(150, &all).map(|(m, _)| m.len()), Ok(2));
    }

    #[test]
    fn the_room_index_follows_joins_leaves_and_goodbyes() {
        let mut index = RoomIndex::default();
        let (s1, s2, a, b): (Arc<str>, Arc<str>, Arc<str>, Arc<str>) =
            ("s1".into(), "s2".into(), "iss_a".into(), "iss_b".into());
        index.join(&s1, &a);
        index.join(&s1, &a);
        index.join(&s1, &b);
        index.join(&s2, &a);
        assert_eq!(index.members("iss_a"), [s1.clone(), s2.clone()]);
        assert_eq!(index.members("iss_b"), std::slice::from_ref(&s1));
        index.leave("s1", "iss_a");
        assert_eq!(index.members("iss_a"), std::slice::from_ref(&s2));
        index.forget("s1");
        assert!(index.members("iss_b").is_empty() && !index.rooms_of.contains_key("s1"));
        index.forget("s2");
        assert!(index.members.is_empty() && index.rooms_of.is_empty());
    }
}
