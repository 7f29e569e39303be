//! A sliding-window count shared by the cluster: [`record`] is
//! `actors::trending::UpvoteWindow::record` done atomically in Redis, so
//! that upvotes made on different nodes count together and the threshold
//! is announced by exactly one of them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Script;

use super::Cluster;

/// KEYS: the window's times (a sorted set), its "announced" flag. ARGV:
/// window (ms), threshold, a member unique to this event. The clock is
/// Redis's own, the same for every node. Answers the count when this event
/// takes it to the threshold, else 0: when it crosses the threshold (the
/// count was below it), or, while it stays there, if it was not announced
/// (the flag outlives every run at the threshold, so only a lost flag does
/// that). As on one node, at most `threshold` times are kept. Five or six
/// commands inside one script: this runs once per upvote.
const RECORD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, threshold = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local before = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
if before + 1 < threshold then return 0 end
if before < threshold then
    redis.call('SET', KEYS[2], '1', 'PX', window)
    return threshold
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(threshold + 1))
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', window) then return threshold end
redis.call('PEXPIRE', KEYS[2], window)
return 0";

/// Counts one event for `name` (e.g. `trending:<issueId>`); answers the
/// count when it reaches `threshold` within `window` for the first time.
pub async fn record(
    cluster: &Cluster,
    name: &str,
    threshold: u32,
    window: Duration,
) -> redis::RedisResult<Option<usize>> {
    static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    static EVENTS: AtomicU64 = AtomicU64::new(0);
    let script = SCRIPT.get_or_init(|| Script::new(RECORD));
    let member = format!("{}:{}", cluster.node, EVENTS.fetch_add(1, Ordering::Relaxed));
    let n: usize = script
        .key(cluster.keys.window(name))
        .key(cluster.keys.window(&format!("{name}:announced")))
        .arg(window.as_millis() as u64)
        .arg(threshold.max(1))
        .arg(member)
        .invoke_async(&mut cluster.connection())
        .await?;
    Ok((n > 0).then_some(n))
}
