//! Typing indicators in cluster mode: one state per user per room for the
//! whole cluster, as on one node, wherever the user's tabs are.
//!
//! The state is a Redis key naming the socket that set it last
//! (`<node>|<socket>`). Setting it when it was unset announces
//! `isTyping: true`; setting it again (from any tab, on any node) only
//! changes its owner. Clearing it — `isTyping: false` from any tab, or, for
//! its owner only, 5 s without a repeat, a leave or a disconnect —
//! announces `isTyping: false`. Every step is one Lua script, so exactly one
//! node announces each change. The owner's node keeps the 5 s timer; the
//! key's own TTL is only a backstop for a node that died holding one.
//!
//! The [`Link`] task does this in order for the node's rooms, which hand it
//! the typing of their member sockets (membership is checked there). While
//! Redis is away it falls back to what this node knows, so the node's own
//! sockets still see each other type.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Cluster;

/// A typist who sends nothing new for this long is cleared.
pub const EXPIRY: Duration = Duration::from_secs(5);
/// The key outlives the timer by this much, for a node that dies.
const BACKSTOP: Duration = Duration::from_secs(10);

/// What a room hands the link.
pub enum Command {
    /// A member socket's `user:typing`.
    Typing { issue_id: String, user_id: String, display_name: String, socket_id: Arc<str>, is_typing: bool },
    /// A member socket left the room (or disconnected): the states it set
    /// go with it.
    Left { issue_id: String, socket_id: Arc<str> },
}

/// The rooms' side of the link.
#[derive(Clone)]
pub struct Commands(mpsc::UnboundedSender<Command>);

impl Commands {
    /// Never waits. Unbounded, but each command is one inbound event of a
    /// member socket (bounded per socket) or one leave.
    pub fn send(&self, command: Command) {
        let _ = self.0.send(command);
    }
}

/// Announces a typing state to the room (here and on the other nodes), but
/// not to the typist's own sockets: (issue, user, display name, typing).
pub type Announce = Arc<dyn Fn(&str, &str, &str, bool) + Send + Sync>;

/// A state set by a socket on this node, with its timer.
struct Owned {
    socket_id: Arc<str>,
    display_name: String,
    expires: Instant,
}

/// What the link reads its commands from.
pub struct Inbox(mpsc::UnboundedReceiver<Command>);

/// The rooms are made with the [`Commands`] before the link's
/// announcements (which go through the rooms) can be.
pub fn channel() -> (Commands, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Commands(tx), Inbox(rx))
}

pub struct Link {
    commands: mpsc::UnboundedReceiver<Command>,
    announce: Announce,
}

impl Link {
    pub fn new(Inbox(commands): Inbox, announce: Announce) -> Self {
        Self { commands, announce }
    }

    pub(crate) async fn run(mut self, cluster: Arc<Cluster>) {
        let scripts = Scripts::default();
        // (issue, user) → the state one of this node's sockets set.
        let mut owned: HashMap<(String, String), Owned> = HashMap::new();
        loop {
            let next = owned.values().map(|o| o.expires).min();
            let expiry = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = self.commands.recv() => {
                    let Some(command) = command else { return };
                    self.handle(&cluster, &scripts, &mut owned, command).await;
                }
                () = expiry => {
                    let now = Instant::now();
                    let due: Vec<_> = owned.iter().filter(|(_, o)| o.expires <= now).map(|(k, _)| k.clone()).collect();
                    for key in due {
                        if let Some(state) = owned.remove(&key) {
                            self.clear_if_owner(&cluster, &scripts, &key, &state).await;
                        }
                    }
                }
            }
        }
    }

    async fn handle(
        &self,
        cluster: &Cluster,
        scripts: &Scripts,
        owned: &mut HashMap<(String, String), Owned>,
        command: Command,
    ) {
        match command {
            Command::Typing { issue_id, user_id, display_name, socket_id, is_typing: true } => {
                let owner = owner(cluster, &socket_id);
                let started: redis::RedisResult<i64> = scripts
                    .set
                    .key(cluster.keys.typing(&issue_id, &user_id))
                    .arg(owner)
                    .arg(BACKSTOP.as_millis() as u64)
                    .invoke_async(&mut cluster.connection())
                    .await;
                let key = (issue_id, user_id);
                // Without Redis, as on one node: news unless this node
                // already holds the state.
                let started = started.unwrap_or_else(|e| {
                    failed(cluster, "typing", &e);
                    i64::from(!owned.contains_key(&key))
                });
                if started == 1 {
                    (self.announce)(&key.0, &key.1, &display_name, true);
                }
                owned.insert(key, Owned { socket_id, display_name, expires: Instant::now() + EXPIRY });
            }
            Command::Typing { issue_id, user_id, display_name, is_typing: false, .. } => {
                let key = (issue_id, user_id);
                let held = owned.remove(&key).is_some();
                let cleared: redis::RedisResult<i64> = redis::cmd("DEL")
                    .arg(cluster.keys.typing(&key.0, &key.1))
                    .query_async(&mut cluster.connection())
                    .await;
                let cleared = cleared.unwrap_or_else(|e| {
                    failed(cluster, "typing", &e);
                    i64::from(held)
                });
                if cleared == 1 {
                    (self.announce)(&key.0, &key.1, &display_name, false);
                }
            }
            Command::Left { issue_id, socket_id } => {
                let gone: Vec<_> = owned
                    .iter()
                    .filter(|((issue, _), o)| *issue == issue_id && o.socket_id == socket_id)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in gone {
                    if let Some(state) = owned.remove(&key) {
                        self.clear_if_owner(cluster, scripts, &key, &state).await;
                    }
                }
            }
        }
    }

    /// Clears a state this node's socket set, unless a tab has set it
    /// since (anywhere): then that tab's node clears it in its turn.
    async fn clear_if_owner(
        &self,
        cluster: &Cluster,
        scripts: &Scripts,
        key: &(String, String),
        state: &Owned,
    ) {
        let cleared: redis::RedisResult<i64> = scripts
            .clear_if_owner
            .key(cluster.keys.typing(&key.0, &key.1))
            .arg(owner(cluster, &state.socket_id))
            .invoke_async(&mut cluster.connection())
            .await;
        let cleared = cleared.unwrap_or_else(|e| {
            failed(cluster, "typing", &e);
            1
        });
        if cleared == 1 {
            (self.announce)(&key.0, &key.1, &state.display_name, false);
        }
    }
}

fn owner(cluster: &Cluster, socket_id: &str) -> String {
    format!("{}|{socket_id}", cluster.node)
}

fn failed(cluster: &Cluster, what: &str, e: &redis::RedisError) {
    log::warn!(target: "civicpulse::cluster", "node={} {what} not shared: Redis: {e}", cluster.node);
}

struct Scripts {
    /// KEYS: the state; ARGV: owner, TTL (ms). 1 if it was unset.
    set: Script,
    /// KEYS: the state; ARGV: owner. 1 if it was this owner's (and is
    /// now cleared).
    clear_if_owner: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            set: Script::new(
                r"
                local was = redis.call('GET', KEYS[1])
                redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
                if was then return 0 end
                return 1",
            ),
            clear_if_owner: Script::new(
                r"
                if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
                redis.call('DEL', KEYS[1])
                return 1",
            ),
        }
    }
}
