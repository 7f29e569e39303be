//! Revocations shared by the cluster: a logout or a stolen refresh token
//! on one node revokes the tokens on every node and ends their sockets
//! wherever they are.
//!
//! Each revocation of tokens is kept in a sorted set scored by when the
//! last token it covers expires (a node that starts, or comes back after
//! Redis was away, reads what it missed from there), and published on a
//! channel of its own so the nodes act on it at once. A role change
//! revokes no token: it is only published (kept, it would end the user's
//! sockets again each time a node read the set).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Cluster;
use crate::auth::Revocations;
use crate::auth::revocations::{Origin, Revocation, Scope};

/// Revocations that may wait for Redis; beyond, the oldest are dropped
/// (and logged): they still hold on this node.
const PENDING: usize = 10_000;
const RETRY: Duration = Duration::from_secs(1);

/// Sends this node's revocations to the others, retrying until Redis takes
/// them.
pub(crate) async fn publish_loop(cluster: Arc<Cluster>, revocations: Arc<Revocations>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Revocation>();
    revocations.listen(move |revocation, origin| {
        if origin == Origin::Local {
            let _ = tx.send(revocation.clone());
        }
    });
    let mut pending: Vec<Revocation> = Vec::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(revocation) => pending.push(revocation),
                None => return,
            }
        }
        while let Ok(revocation) = rx.try_recv() {
            pending.push(revocation);
        }
        if pending.len() > PENDING {
            let dropped = pending.len() - PENDING;
            pending.drain(..dropped);
            log::warn!(target: "civicpulse::cluster", "node={} dropped {dropped} revocation(s) Redis never took; they hold on this node only", cluster.node);
        }
        match publish(&cluster, &pending).await {
            Ok(()) => pending.clear(),
            Err(e) => {
                cluster.stats.publish_failures.fetch_add(pending.len() as u64, Ordering::Relaxed);
                log::warn!(target: "civicpulse::cluster", "node={} cannot share {} revocation(s) yet: {e}", cluster.node, pending.len());
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

async fn publish(cluster: &Cluster, revocations: &[Revocation]) -> redis::RedisResult<()> {
    let (set, channel) = (cluster.keys.revoked(), cluster.keys.revocations());
    let now = chrono::Utc::now().timestamp();
    let mut pipe = redis::pipe();
    pipe.cmd("ZREMRANGEBYSCORE").arg(&set).arg("-inf").arg(now).ignore();
    for revocation in revocations {
        let line = revocation.encode();
        if revocation.scope != Scope::Sockets {
            pipe.cmd("ZADD").arg(&set).arg(revocation.until).arg(&line).ignore();
        }
        // Named, so that the node skips its own when it comes back.
        pipe.cmd("PUBLISH").arg(&channel).arg(format!("{} {line}", cluster.node)).ignore();
    }
    pipe.query_async::<()>(&mut cluster.connection()).await
}

/// Another node's revocation, from the channel.
pub(crate) fn on_message(cluster: &Cluster, revocations: &Revocations, payload: &[u8]) {
    let message = std::str::from_utf8(payload).ok().and_then(|m| m.split_once(' '));
    if message.is_some_and(|(node, _)| *node == *cluster.node) {
        return;
    }
    match message.and_then(|(_, line)| Revocation::decode(line)) {
        Some(revocation) => revocations.revoke(revocation, Origin::Remote),
        None => {
            cluster.stats.decode_failures.fetch_add(1, Ordering::Relaxed);
            log::warn!(target: "civicpulse::cluster", "node={} dropped a malformed revocation", cluster.node);
        }
    }
}

/// Everything revoked that may still matter, read after (re)subscribing:
/// what was published while this node was not listening. Acting on one
/// twice is harmless (the sockets it covers are gone).
pub(crate) async fn catch_up(cluster: &Cluster, revocations: &Revocations) -> redis::RedisResult<()> {
    let now = chrono::Utc::now().timestamp();
    let lines: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(cluster.keys.revoked())
        .arg(format!("({now}"))
        .arg("+inf")
        .query_async(&mut cluster.connection())
        .await?;
    for revocation in lines.iter().filter_map(|line| Revocation::decode(line)) {
        revocations.revoke(revocation, Origin::Remote);
    }
    Ok(())
}
