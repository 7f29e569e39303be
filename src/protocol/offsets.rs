//! Where an event stands in the recovery log and whom it was for: the
//! vocabulary that the node's log (`actors::replay`) and the cluster's
//! (`cluster::recovery`) share, kept here, below both.

use std::sync::Arc;

/// An event's place in the log. Offsets only grow. A node's own log gives
/// them one by one from the process's start time in microseconds, so that
/// an offset of an earlier run is never taken for one of this run's; the
/// cluster's are its stream's entry ids (see `cluster::recovery`).
pub type Offset = u64;

/// Who an event was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Everyone,
    /// The members of `room:issue:<issueId>`.
    Room(Arc<str>),
    /// Every socket of one user.
    User(Arc<str>),
}

impl Target {
    /// Whether a socket of `user_id`, in the rooms `in_room` says it is in,
    /// was meant to get it.
    pub fn reaches(&self, user_id: &str, in_room: impl Fn(&str) -> bool) -> bool {
        match self {
            Target::Everyone => true,
            Target::Room(issue_id) => in_room(issue_id),
            Target::User(user) => &**user == user_id,
        }
    }
}

/// Some event after the offset asked for is no longer in the log (or the
/// offset was never one of its): the events missed cannot all be told.
#[derive(Debug, PartialEq, Eq)]
pub struct Gap;
