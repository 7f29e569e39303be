//! The sockets of this node by user, and when each one's access token runs
//! out: for the cap on sockets per user, for ending a user's sockets when
//! their sign-in is revoked, and for ending a socket whose token expired
//! without an `auth:refresh`.
//!
//! Deadlines are one ordered map swept every second rather than a timer
//! per socket: an idle socket costs an entry, not a task.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

use super::CivicApp;
use actix_socketio::socketio::SocketRef;

type Socket = SocketRef<CivicApp>;

pub enum Admission {
    Admitted,
    /// `first`: the user's first refusal since they had no socket here.
    Refused {
        first: bool,
    },
}

pub struct LiveSockets {
    by_user: DashMap<Arc<str>, Vec<Socket>>,
    /// Users refused at the cap since they last had no socket here (their
    /// refusals are logged once, not once per attempt).
    capped: DashMap<Arc<str>, ()>,
    /// (deadline in Unix seconds, socket id) → the socket.
    deadlines: Mutex<BTreeMap<(i64, Arc<str>), Socket>>,
    max_per_user: usize,
}

impl LiveSockets {
    pub fn new(max_per_user: usize) -> Self {
        Self { by_user: DashMap::new(), capped: DashMap::new(), deadlines: Mutex::default(), max_per_user }
    }

    /// Counts `socket` as one of `user`'s, unless they are at the cap.
    pub fn admit(&self, user: &Arc<str>, socket: &Socket, deadline: i64) -> Admission {
        match self.by_user.entry(user.clone()) {
            Entry::Occupied(mut sockets) => {
                if sockets.get().len() >= self.max_per_user {
                    return Admission::Refused { first: self.capped.insert(user.clone(), ()).is_none() };
                }
                sockets.get_mut().push(socket.clone());
            }
            Entry::Vacant(slot) => {
                slot.insert(vec![socket.clone()]);
            }
        }
        self.deadlines().insert((deadline, socket.id.clone()), socket.clone());
        Admission::Admitted
    }

    pub fn remove(&self, user: &Arc<str>, socket_id: &Arc<str>, deadline: i64) {
        if let Entry::Occupied(mut sockets) = self.by_user.entry(user.clone()) {
            sockets.get_mut().retain(|s| s.id != *socket_id);
            if sockets.get().is_empty() {
                sockets.remove();
                self.capped.remove(user);
            }
        }
        self.deadlines().remove(&(deadline, socket_id.clone()));
    }

    /// The socket's token was replaced by one that expires later.
    pub fn move_deadline(&self, socket: &Socket, from: i64, to: i64) {
        let mut deadlines = self.deadlines();
        deadlines.remove(&(from, socket.id.clone()));
        deadlines.insert((to, socket.id.clone()), socket.clone());
    }

    pub fn of_user(&self, user: &str) -> Vec<Socket> {
        self.by_user.get(user).map(|s| s.clone()).unwrap_or_default()
    }

    /// Up to `limit` of this node's sockets on `namespace`.
    pub fn sockets(&self, namespace: &str, limit: usize) -> Vec<Socket> {
        let mut all = Vec::new();
        for entry in self.by_user.iter() {
            all.extend(
                entry.value().iter().filter(|s| &*s.namespace == namespace).take(limit - all.len()).cloned(),
            );
            if all.len() >= limit {
                break;
            }
        }
        all
    }

    /// Takes out the sockets whose deadline is `now` or before.
    pub fn due(&self, now: i64) -> Vec<Socket> {
        let mut deadlines = self.deadlines();
        let later = deadlines.split_off(&(now + 1, Arc::from("")));
        std::mem::replace(&mut *deadlines, later).into_values().collect()
    }

    fn deadlines(&self) -> std::sync::MutexGuard<'_, BTreeMap<(i64, Arc<str>), Socket>> {
        self.deadlines.lock().unwrap_or_else(|p| p.into_inner())
    }
}
