//! Who is online, cluster-wide, and which nodes are alive.
//!
//! Each node keeps in Redis the set of users with a socket on it; a count
//! per user of the nodes they are on says when they come online (first
//! node) and go offline (last node). Every change is one Lua script, so two
//! nodes can never both announce (or both miss) one transition.
//!
//! The [`Link`] task does it all in order for this node: the transitions
//! the presence actor hands it, and every [`HEARTBEAT`] a beat (an `alive`
//! key with a TTL), a resync when the connection was lost (the node's set is
//! replaced by what it knows now, announcing only the difference), and the
//! reaping of nodes whose `alive` key has expired: their users go offline,
//! announced by whichever survivor's script got there first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::Script;
use tokio::sync::mpsc;

use super::Cluster;
use crate::domain::presence::OnlineUser;

/// How often a node says it is alive, resyncs if needed and reaps.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node that has not beaten for this long is dead. With the heartbeat,
/// its users are offline at most `NODE_TTL + HEARTBEAT` after it died.
pub const NODE_TTL: Duration = Duration::from_secs(6);

/// A user's first socket on this node, or their last one gone; or the
/// node leaving the cluster (it is stopping), answered with whether Redis
/// took it.
pub enum Transition {
    Online(OnlineUser),
    Offline(String),
    Leave(tokio::sync::oneshot::Sender<bool>),
}

/// Tells the sockets (of the whole cluster) that a user came or went.
pub type Announce = Arc<dyn Fn(&OnlineUser, bool) + Send + Sync>;

/// The presence actor's side of the link.
#[derive(Clone)]
pub struct Transitions(mpsc::UnboundedSender<Transition>);

impl Transitions {
    /// Never waits; the link task is its only consumer. Unbounded, but one
    /// message per socket arriving or leaving, which the handshakes pace.
    pub fn send(&self, transition: Transition) {
        let _ = self.0.send(transition);
    }
}

/// The task that keeps this node's presence in Redis.
pub struct Link {
    transitions: mpsc::UnboundedReceiver<Transition>,
    announce: Announce,
}

impl Link {
    pub fn new(announce: Announce) -> (Self, Transitions) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { transitions: rx, announce }, Transitions(tx))
    }

    pub(crate) async fn run(mut self, cluster: Arc<Cluster>) {
        let scripts = Scripts::default();
        // Users with a socket here, as the transitions say: what a resync
        // writes.
        let mut local: BTreeMap<String, OnlineUser> = BTreeMap::new();
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Until the first resync the node's set in Redis may hold a previous
        // run's users (a restart under the same NODE_ID): transitions wait
        // for it rather than be applied on top of ghosts.
        let mut synced = false;
        loop {
            tokio::select! {
                transition = self.transitions.recv() => {
                    let Some(transition) = transition else { return };
                    let applied = match transition {
                        Transition::Online(user) => {
                            local.insert(user.user_id.clone(), user.clone());
                            !synced || self.online(&cluster, &scripts, &user).await
                        }
                        Transition::Offline(user_id) => {
                            local.remove(&user_id);
                            !synced || self.offline(&cluster, &scripts, &user_id).await
                        }
                        Transition::Leave(done) => {
                            // The last thing this task does: a heartbeat
                            // after it would announce the node again.
                            let _ = done.send(self.leave(&cluster, &scripts).await);
                            return;
                        }
                    };
                    if !applied {
                        synced = false;
                        cluster.mark_lost();
                    }
                }
                _ = beat.tick() => {
                    synced = self.beat(&cluster, &scripts, &local, synced).await;
                }
            }
        }
    }

    /// True if Redis took it.
    async fn online(&self, cluster: &Cluster, scripts: &Scripts, user: &OnlineUser) -> bool {
        let keys = &cluster.keys;
        let info = serde_json::to_string(user).unwrap_or_default();
        let result: redis::RedisResult<i64> = scripts
            .online
            .key(keys.node_users(&cluster.node))
            .key(keys.user_nodes())
            .key(keys.user_info())
            .arg(&user.user_id)
            .arg(info)
            .invoke_async(&mut cluster.connection())
            .await;
        match result {
            Ok(first) => {
                if first == 1 {
                    (self.announce)(user, true);
                }
                true
            }
            Err(e) => self.failed(cluster, "online", &e),
        }
    }

    async fn offline(&self, cluster: &Cluster, scripts: &Scripts, user_id: &str) -> bool {
        let keys = &cluster.keys;
        let result: redis::RedisResult<Option<String>> = scripts
            .offline
            .key(keys.node_users(&cluster.node))
            .key(keys.user_nodes())
            .key(keys.user_info())
            .arg(user_id)
            .invoke_async(&mut cluster.connection())
            .await;
        match result {
            Ok(last) => {
                if let Some(user) = last.as_deref().and_then(parse_user) {
                    (self.announce)(&user, false);
                }
                true
            }
            Err(e) => self.failed(cluster, "offline", &e),
        }
    }

    fn failed(&self, cluster: &Cluster, what: &str, e: &redis::RedisError) -> bool {
        cluster.stats.presence_failures.fetch_add(1, Ordering::Relaxed);
        log::warn!(target: "civicpulse::cluster", "node={} presence {what} not recorded ({e}); resyncing when Redis answers", cluster.node);
        false
    }

    /// One heartbeat; answers whether this node's presence is in Redis.
    async fn beat(
        &self,
        cluster: &Cluster,
        scripts: &Scripts,
        local: &BTreeMap<String, OnlineUser>,
        synced: bool,
    ) -> bool {
        let keys = &cluster.keys;
        let mut conn = cluster.connection();
        let alive: redis::RedisResult<()> = redis::pipe()
            .cmd("SET")
            .arg(keys.alive(&cluster.node))
            .arg(&cluster.tag)
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .ignore()
            .cmd("HSET")
            .arg(keys.nodes())
            .arg(&*cluster.node)
            .arg(&cluster.tag)
            .ignore()
            .cmd("HSET")
            .arg(keys.routes())
            .arg(&cluster.tag)
            .arg(&cluster.url)
            .ignore()
            .query_async(&mut conn)
            .await;
        if let Err(e) = alive {
            log::debug!(target: "civicpulse::cluster", "node={} heartbeat failed: {e}", cluster.node);
            cluster.set_healthy(false);
            cluster.mark_lost();
            return false;
        }
        let mut synced = synced;
        if cluster.take_lost() || !synced {
            synced = match cluster.subscribe().await {
                Ok(()) => self.resync(cluster, scripts, local).await,
                Err(e) => {
                    log::warn!(target: "civicpulse::cluster", "node={} cannot subscribe: {e}", cluster.node);
                    false
                }
            };
            if !synced {
                cluster.mark_lost();
                return false;
            }
        }
        cluster.set_healthy(true);
        self.reap(cluster, scripts).await;
        synced
    }

    /// Replaces this node's set in Redis with `local`, announcing the users
    /// that came or went cluster-wide meanwhile.
    async fn resync(
        &self,
        cluster: &Cluster,
        scripts: &Scripts,
        local: &BTreeMap<String, OnlineUser>,
    ) -> bool {
        let keys = &cluster.keys;
        let mut invocation = scripts.sync.prepare_invoke();
        invocation.key(keys.node_users(&cluster.node)).key(keys.user_nodes()).key(keys.user_info());
        for (user_id, user) in local {
            invocation.arg(user_id).arg(serde_json::to_string(user).unwrap_or_default());
        }
        let result: redis::RedisResult<(Vec<String>, Vec<String>)> =
            invocation.invoke_async(&mut cluster.connection()).await;
        match result {
            Ok((came, went)) => {
                cluster.stats.presence_resyncs.fetch_add(1, Ordering::Relaxed);
                log::info!(target: "civicpulse::cluster", "node={} presence in Redis: {} user(s) here; {} came online and {} went offline meanwhile", cluster.node, local.len(), came.len(), went.len());
                for user in went.iter().filter_map(|u| parse_user(u)) {
                    (self.announce)(&user, false);
                }
                for user in came.iter().filter_map(|u| parse_user(u)) {
                    (self.announce)(&user, true);
                }
                true
            }
            Err(e) => self.failed(cluster, "resync", &e),
        }
    }

    /// Takes the users of every node that stopped beating offline.
    async fn reap(&self, cluster: &Cluster, scripts: &Scripts) {
        let keys = &cluster.keys;
        let mut conn = cluster.connection();
        let nodes: Vec<String> = match redis::cmd("HKEYS").arg(keys.nodes()).query_async(&mut conn).await {
            Ok(nodes) => nodes,
            Err(_) => return,
        };
        for node in nodes.iter().filter(|n| **n != *cluster.node) {
            if let Ok(Some(gone)) = reap_node(cluster, scripts, node).await {
                cluster.stats.nodes_reaped.fetch_add(1, Ordering::Relaxed);
                log::warn!(target: "civicpulse::cluster", "node={} reaped dead node={node}: {} user(s) offline", cluster.node, gone.len());
                // Its sockets never parked: their window starts now.
                cluster.release_sockets(node, "").await;
                for user in gone.iter().filter_map(|u| parse_user(u)) {
                    (self.announce)(&user, false);
                }
            }
        }
    }

    /// Takes this node out of the cluster as a survivor would once its
    /// heartbeat expired, without the wait: its users offline (announced),
    /// its route and entry gone.
    async fn leave(&self, cluster: &Cluster, scripts: &Scripts) -> bool {
        let dead: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(cluster.keys.alive(&cluster.node))
            .query_async(&mut cluster.connection())
            .await;
        if let Err(e) = dead {
            return self.failed(cluster, "leave", &e);
        }
        match reap_node(cluster, scripts, &cluster.node).await {
            Ok(gone) => {
                let gone = gone.unwrap_or_default();
                log::info!(target: "civicpulse::cluster", "node={} left the cluster: {} user(s) offline", cluster.node, gone.len());
                // Any socket that did not get to park gets its window.
                cluster.release_sockets(&cluster.node, "").await;
                for user in gone.iter().filter_map(|u| parse_user(u)) {
                    (self.announce)(&user, false);
                }
                true
            }
            Err(e) => self.failed(cluster, "leave", &e),
        }
    }
}

/// Runs the reap script on `node`: the infos of the users it took offline,
/// or none if the node is alive (or reaped already).
async fn reap_node(
    cluster: &Cluster,
    scripts: &Scripts,
    node: &str,
) -> redis::RedisResult<Option<Vec<String>>> {
    let keys = &cluster.keys;
    scripts
        .reap
        .key(keys.node_users(node))
        .key(keys.user_nodes())
        .key(keys.user_info())
        .key(keys.alive(node))
        .key(keys.nodes())
        .key(keys.routes())
        .arg(node)
        .invoke_async(&mut cluster.connection())
        .await
}

fn parse_user(json: &str) -> Option<OnlineUser> {
    serde_json::from_str(json).ok()
}

/// Users online anywhere in the cluster, in one city if given, by user id.
pub async fn list(cluster: &Cluster, city: Option<&str>) -> redis::RedisResult<Vec<OnlineUser>> {
    let mut conn = cluster.connection();
    let entries: BTreeMap<String, String> =
        redis::cmd("HGETALL").arg(cluster.keys.user_info()).query_async(&mut conn).await?;
    Ok(entries
        .values()
        .filter_map(|u| parse_user(u))
        .filter(|u| city.is_none() || u.city.as_deref() == city)
        .collect())
}

/// KEYS: this node's users, user → node count, user → info.
struct Scripts {
    /// ARGV: user, info. 1 if the user was on no node before.
    online: Script,
    /// ARGV: user. Their info if they are now on no node.
    offline: Script,
    /// ARGV: user, info, user, info… Sets this node's users to exactly
    /// those; answers {came online, went offline} (infos).
    sync: Script,
    /// Extra KEYS: the dead node's alive key, node → tag, tag → URL; ARGV:
    /// the node. Nil if it is alive (or already reaped), else the infos of
    /// the users it took offline.
    reap: Script,
}

/// The two steps every script is made of, on KEYS[1] (a node's users),
/// KEYS[2] (user → node count) and KEYS[3] (user → info): a user arrives on
/// the node (true if they were on no node before), or leaves it (their info
/// if they are now on no node).
const STEPS: &str = r"
local function arrive(user, info)
    if redis.call('SADD', KEYS[1], user) == 0 then return false end
    redis.call('HSET', KEYS[3], user, info)
    return redis.call('HINCRBY', KEYS[2], user, 1) == 1
end
local function leave(user)
    if redis.call('SREM', KEYS[1], user) == 0 then return nil end
    if redis.call('HINCRBY', KEYS[2], user, -1) > 0 then return nil end
    redis.call('HDEL', KEYS[2], user)
    local info = redis.call('HGET', KEYS[3], user)
    redis.call('HDEL', KEYS[3], user)
    return info
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{STEPS}{body}"))
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            online: script("if arrive(ARGV[1], ARGV[2]) then return 1 end return 0"),
            offline: script("return leave(ARGV[1]) or false"),
            sync: script(
                r"
                local want = {}
                for i = 1, #ARGV, 2 do want[ARGV[i]] = ARGV[i + 1] end
                local came, went = {}, {}
                for _, user in ipairs(redis.call('SMEMBERS', KEYS[1])) do
                    if want[user] == nil then
                        local info = leave(user)
                        if info then table.insert(went, info) end
                    end
                end
                for user, info in pairs(want) do
                    if arrive(user, info) then table.insert(came, info) end
                end
                return {came, went}",
            ),
            reap: script(
                r"
                if redis.call('EXISTS', KEYS[4]) == 1 then return false end
                if redis.call('HEXISTS', KEYS[5], ARGV[1]) == 0 then return false end
                local gone = {}
                for _, user in ipairs(redis.call('SMEMBERS', KEYS[1])) do
                    local info = leave(user)
                    if info then table.insert(gone, info) end
                end
                local tag = redis.call('HGET', KEYS[5], ARGV[1])
                if tag then redis.call('HDEL', KEYS[6], tag) end
                redis.call('DEL', KEYS[1])
                redis.call('HDEL', KEYS[5], ARGV[1])
                return gone",
            ),
        }
    }
}
