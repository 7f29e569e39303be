//! Connection state recovery across the cluster: the log of the events a
//! client can miss is one Redis Stream (`{prefix}:recovery:log`, capped by
//! `CONNECTION_STATE_RECOVERY_MAX_EVENTS` with `XADD … MAXLEN ~` and by
//! age), and a socket that lost its connection is a key of its own
//! (`{prefix}:recovery:session:<pid>`) that expires with the window; so a
//! client that comes back through any node is recovered there.
//!
//! The stream is also how these events travel: a node does not deliver
//! its own logged events when it makes them (nor publish them on the bus),
//! every node reads the stream and delivers them in its order, with the
//! entry's id as the offset. So each socket gets its events in offset
//! order, whichever nodes made them, which is what makes the client's last
//! offset say what it has. An event the stream did not take (Redis away)
//! is delivered by its node alone, without an offset: as when no node can
//! reach Redis, the others miss it, and no client can be told it was
//! recovered with it.
//!
//! What Redis lost cannot be replayed: an unknown pid (the key expired, or
//! Redis restarted empty), a log that is gone, or one trimmed past the
//! client's offset (Redis 7's `max-deleted-entry-id`) is a fresh socket.
//!
//! A node may die without a goodbye (SIGKILL): its sockets never get to
//! park. So every socket's record is in Redis while it is connected too
//! (without expiry, listed in its node's `recovery:live:<node>`, with the
//! node's run), updated when its rooms change; a goodbye deletes it, a
//! lost connection starts its window, and so does the reaping of a dead
//! node (or the start of a node under the same NODE_ID) for the sockets of
//! its run. A record may be taken while its socket still looks connected
//! to its node (the client knows better: it is reconnecting); that node
//! then never writes it again (`SET … XX`). The writes of one node go out
//! in order, through one queue.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Script, Value};
use serde::{Deserialize, Serialize};

use super::wire::{BusMessage, To};
use super::{Cluster, Deliver, Inbound};
use crate::protocol::events::with_offset;
use crate::protocol::offsets::{Gap, Offset, Target};
use actix_socketio::engineio::SharedMessage;

/// Entries read at once.
const READ_BATCH: usize = 512;
/// How long a read waits for new entries (below the reader's timeout).
const READ_BLOCK_MS: u64 = 1000;
/// Entries older than this are trimmed, whatever their number: past every
/// window a client could still come back in.
const MAX_AGE: Duration = Duration::from_secs(86_400);
/// How often the age cap is applied.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// Delivers an entry of the cluster's log to this node's sockets.
pub type DeliverLogged = Arc<dyn Fn(Offset, Target, Arc<SharedMessage>) + Send + Sync>;

/// Record writes that may wait; beyond, they are counted as not published.
const RECORDS_QUEUE: usize = 65_536;

/// One change to a socket's record, in the order this node makes them.
#[derive(Debug)]
pub enum RecordWrite {
    /// A socket connected (`create`) or changed rooms.
    Live { pid: String, record: Record, create: bool },
    /// It lost its connection: its window starts.
    Parked { pid: String, record: Record },
    /// It said goodbye, or was ended by the server.
    Gone { pid: String },
}

pub type Records = tokio::sync::mpsc::Sender<RecordWrite>;
pub type RecordsInbox = tokio::sync::mpsc::Receiver<RecordWrite>;

pub fn records_channel() -> (Records, RecordsInbox) {
    tokio::sync::mpsc::channel(RECORDS_QUEUE)
}

/// What the cluster keeps of connection state recovery's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub window: Duration,
    pub max_events: usize,
}

/// A socket that lost its connection, as Redis keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub socket_id: String,
    pub user_id: String,
    pub rooms: Vec<String>,
    /// The offset its events started after.
    pub floor: Offset,
    /// The node it was on, and that node's run (a node restarted under the
    /// same NODE_ID lets its previous run's sockets go).
    pub node: String,
    #[serde(default)]
    pub run: String,
}

/// Stream entry ids (`<ms>-<seq>`) as offsets: the milliseconds above 20
/// bits of sequence (a million entries in one millisecond would not fit,
/// and cannot happen). Order is kept both ways.
pub fn offset_of(id: &str) -> Option<Offset> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    (seq < 1 << 20 && ms < 1 << 44).then_some(ms << 20 | seq)
}

pub fn id_of(offset: Offset) -> String {
    format!("{}-{}", offset >> 20, offset & ((1 << 20) - 1))
}

fn target_of(to: To) -> Target {
    match to {
        To::Everyone => Target::Everyone,
        To::Room(issue_id) => Target::Room(issue_id.into()),
        To::User(user_id) => Target::User(user_id.into()),
    }
}

/// Takes the record `KEYS[1]` if it is the user `ARGV[1]`'s (another
/// user's pid is as good as unknown, and stays), and takes its pid
/// (`ARGV[3]`) out of its node's live hash (`ARGV[2]` .. node).
const TAKE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
local ok, r = pcall(cjson.decode, v)
if not ok or r.userId ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1])
redis.call('HDEL', ARGV[2] .. r.node, ARGV[3])
return v";

/// Starts the window (`ARGV[2]` ms) of the sockets listed in the live hash
/// `KEYS[1]` (pid → run) whose run is not `ARGV[3]`, if their record
/// (`ARGV[1]` .. pid) is still that node's (`ARGV[4]`) and run's; answers
/// how many.
const RELEASE: &str = r"
local released = 0
local live = redis.call('HGETALL', KEYS[1])
for i = 1, #live, 2 do
    local pid, run = live[i], live[i + 1]
    if run ~= ARGV[3] then
        local key = ARGV[1] .. pid
        local v = redis.call('GET', key)
        if v then
            local ok, r = pcall(cjson.decode, v)
            if ok and r.node == ARGV[4] and r.run == run then
                redis.call('PEXPIRE', key, ARGV[2])
                released = released + 1
            end
        end
        redis.call('HDEL', KEYS[1], pid)
    end
end
return released";

/// The log `KEYS[1]` after `ARGV[1]` (an entry id), at most `ARGV[2]`
/// entries, with its last id and the newest id it let go, in one step:
/// `{last, deleted, entries}`, or false when there is no log.
const READ_AFTER: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, deleted = '0-0', '0-0'
for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
    if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
end
return {last, deleted, redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])}";

impl Cluster {
    /// Queues an event a client can miss for the cluster's log, which
    /// every node (this one too) delivers from (see the module's doc).
    pub fn log_event(&self, to: To, frame: &SharedMessage) {
        self.queue(to, None, false, frame, super::Lane::Log);
    }

    /// Queues a change to a socket's record (this node's and run's).
    /// Never waits; one that cannot be queued is counted and logged (that
    /// socket may then not be recovered elsewhere).
    pub fn write_record(&self, mut write: RecordWrite) {
        let Some(records) = &self.records else { return };
        if let RecordWrite::Live { record, .. } | RecordWrite::Parked { record, .. } = &mut write {
            record.node = self.node.to_string();
            record.run = self.run.to_string();
        }
        // Counted with what is to publish, so that a stopping node writes
        // its sockets' windows before it exits.
        self.unpublished.fetch_add(1, Ordering::AcqRel);
        if records.try_send(write).is_err() {
            self.unpublished.fetch_sub(1, Ordering::AcqRel);
            self.not_published(1, "the recovery records' queue is full");
        }
    }

    /// Writes the records' changes in order, pipelined.
    pub(super) async fn write_records(self: Arc<Self>, mut inbox: RecordsInbox) {
        let Some(settings) = self.recovery else { return };
        let window_ms = settings.window.as_millis().max(1) as u64;
        let live = self.keys.recovery_live(&self.node);
        let mut conn = self.connection();
        let mut batch = Vec::with_capacity(super::BATCH);
        while inbox.recv_many(&mut batch, super::BATCH).await > 0 {
            let n = batch.len();
            let mut pipe = redis::pipe();
            for write in batch.drain(..) {
                match write {
                    RecordWrite::Live { pid, record, create } => {
                        let Ok(json) = serde_json::to_string(&record) else { continue };
                        let key = self.keys.recovery_session(&pid);
                        if create {
                            pipe.cmd("SET").arg(key).arg(json).ignore();
                            pipe.cmd("HSET").arg(&live).arg(&pid).arg(&record.run).ignore();
                        } else {
                            pipe.cmd("SET").arg(key).arg(json).arg("XX").ignore();
                        }
                    }
                    RecordWrite::Parked { pid, record } => {
                        let Ok(json) = serde_json::to_string(&record) else { continue };
                        let key = self.keys.recovery_session(&pid);
                        pipe.cmd("SET").arg(key).arg(json).arg("PX").arg(window_ms).arg("XX").ignore();
                        pipe.cmd("HDEL").arg(&live).arg(&pid).ignore();
                    }
                    RecordWrite::Gone { pid } => {
                        pipe.cmd("DEL").arg(self.keys.recovery_session(&pid)).ignore();
                        pipe.cmd("HDEL").arg(&live).arg(&pid).ignore();
                    }
                }
            }
            if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                log::warn!(target: "civicpulse::recovery", "node={} cannot write recovery records ({e}): those sockets may not be recovered elsewhere", self.node);
            }
            self.unpublished.fetch_sub(n, Ordering::AcqRel);
        }
    }

    /// Starts the window of the sockets `node` had connected, except those
    /// of its run `keep`: it died (or this is its next run).
    pub async fn release_sockets(&self, node: &str, keep: &str) {
        let Some(settings) = self.recovery else { return };
        static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
        let script = SCRIPT.get_or_init(|| Script::new(RELEASE));
        let released: redis::RedisResult<u64> = script
            .key(self.keys.recovery_live(node))
            .arg(self.keys.recovery_session(""))
            .arg(settings.window.as_millis().max(1) as u64)
            .arg(keep)
            .arg(node)
            .invoke_async(&mut self.connection())
            .await;
        match released {
            Ok(0) => {}
            Ok(n) => {
                log::info!(target: "civicpulse::recovery", "node={} the {n} socket(s) node={node} had connected can be recovered for the window", self.node)
            }
            Err(e) => {
                log::warn!(target: "civicpulse::recovery", "node={} cannot release node={node}'s sockets: {e}", self.node)
            }
        }
    }

    /// Takes the parked socket `pid` if it is `user_id`'s.
    pub async fn take_parked(&self, pid: &str, user_id: &str) -> redis::RedisResult<Option<Record>> {
        static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
        let script = SCRIPT.get_or_init(|| Script::new(TAKE));
        let json: Option<String> = script
            .key(self.keys.recovery_session(pid))
            .arg(user_id)
            .arg(self.keys.recovery_live(""))
            .arg(pid)
            .invoke_async(&mut self.connection())
            .await?;
        Ok(json.and_then(|json| serde_json::from_str(&json).ok()))
    }

    /// Every entry of the log after `after` that `wants`, encoded with its
    /// offset, and the log's last offset; [`Gap`] unless every entry after
    /// `after` is still there (and `after` is one of the log's).
    pub async fn logged_since(
        &self,
        after: Offset,
        wants: impl Fn(&Target) -> bool,
    ) -> redis::RedisResult<Result<(Vec<Arc<SharedMessage>>, Offset), Gap>> {
        static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
        let script = SCRIPT.get_or_init(|| Script::new(READ_AFTER));
        let max = self.recovery.map_or(1, |s| s.max_events) * 2 + 1;
        let reply: Value = script
            .key(self.keys.recovery_log())
            .arg(id_of(after))
            .arg(max)
            .invoke_async(&mut self.connection())
            .await?;
        let Value::Array(parts) = reply else { return Ok(Err(Gap)) };
        let [last, deleted, Value::Array(entries)] = parts.as_slice() else { return Ok(Err(Gap)) };
        let (Some(last), Some(deleted)) = (offset_in(last), offset_in(deleted)) else { return Ok(Err(Gap)) };
        if after > last || deleted > after || entries.len() >= max {
            return Ok(Err(Gap));
        }
        let mut missed = Vec::new();
        for entry in entries {
            let Some((offset, target, frame)) = decode_entry(entry) else {
                // Not ours to read: it cannot be told, so nothing is.
                return Ok(Err(Gap));
            };
            debug_assert!(offset > after);
            if wants(&target) {
                missed.push(frame);
            }
        }
        Ok(Ok((missed, last)))
    }

    /// Reads the log for good, from its end as it is now, handing each
    /// entry to `deliver` in order. Reconnects by itself.
    pub(super) async fn read_log(self: Arc<Self>, mut conn: ConnectionManager, deliver: DeliverLogged) {
        let key = self.keys.recovery_log();
        let mut last = loop {
            match last_id(&mut conn, &key).await {
                Ok(last) => {
                    // A previous run under this NODE_ID left its sockets.
                    self.release_sockets(&self.node, &self.run).await;
                    break last;
                }
                Err(e) => {
                    log::debug!(target: "civicpulse::recovery", "node={} cannot read the recovery log yet: {e}", self.node);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let mut trimmed = std::time::Instant::now();
        loop {
            let reply: redis::RedisResult<Value> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_BATCH)
                .arg("BLOCK")
                .arg(READ_BLOCK_MS)
                .arg("STREAMS")
                .arg(&key)
                .arg(&last)
                .query_async(&mut conn)
                .await;
            match reply {
                Ok(reply) => {
                    for entry in stream_entries(reply) {
                        let Some((offset, target, frame)) = decode_entry(&entry) else {
                            self.stats.decode_failures.fetch_add(1, Ordering::Relaxed);
                            continue;
                        };
                        last = id_of(offset);
                        deliver(offset, target, frame);
                    }
                }
                Err(e) => {
                    log::warn!(target: "civicpulse::recovery", "node={} cannot read the recovery log ({e}); again in a moment", self.node);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            if trimmed.elapsed() >= TRIM_EVERY {
                trimmed = std::time::Instant::now();
                self.trim_by_age(&mut conn, &key).await;
            }
        }
    }

    async fn trim_by_age(&self, conn: &mut ConnectionManager, key: &str) {
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let oldest = now_ms.saturating_sub(MAX_AGE.as_millis() as u64);
        let trim: redis::RedisResult<()> = redis::cmd("XTRIM")
            .arg(key)
            .arg("MINID")
            .arg("~")
            .arg(format!("{oldest}-0"))
            .query_async(conn)
            .await;
        if let Err(e) = trim {
            log::debug!(target: "civicpulse::recovery", "node={} cannot trim the recovery log: {e}", self.node);
        }
    }
}

/// Where the log ends now ("0-0" before it exists).
async fn last_id(conn: &mut ConnectionManager, key: &str) -> redis::RedisResult<String> {
    let newest: Value =
        redis::cmd("XREVRANGE").arg(key).arg("+").arg("-").arg("COUNT").arg(1).query_async(conn).await?;
    let id = match newest {
        Value::Array(entries) => entries.first().and_then(|e| match e {
            Value::Array(parts) => parts.first().and_then(string_of),
            _ => None,
        }),
        _ => None,
    };
    Ok(id.unwrap_or_else(|| "0-0".into()))
}

fn string_of(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn offset_in(value: &Value) -> Option<Offset> {
    string_of(value).as_deref().and_then(offset_of)
}

/// The entries of an XREAD reply for one stream (RESP3: a map of stream →
/// entries; RESP2: an array of [stream, entries]).
fn stream_entries(reply: Value) -> Vec<Value> {
    let streams = match reply {
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    streams
        .into_iter()
        .flat_map(|entries| match entries {
            Value::Array(entries) => entries,
            _ => Vec::new(),
        })
        .collect()
}

/// One stream entry `[id, [field, value, …]]`: its offset, audience and
/// frame (the packet with its offset added).
fn decode_entry(entry: &Value) -> Option<(Offset, Target, Arc<SharedMessage>)> {
    let Value::Array(parts) = entry else { return None };
    let [id, Value::Array(fields)] = parts.as_slice() else { return None };
    let offset = offset_in(id)?;
    let message = fields.chunks(2).find_map(|pair| match pair {
        [name, value] if string_of(name).as_deref() == Some("m") => string_of(value),
        _ => None,
    })?;
    let message = BusMessage::decode(message.as_bytes()).ok()?;
    let text = with_offset(&message.packet, offset)?;
    Some((offset, target_of(message.to), SharedMessage::message(&text, Vec::new())))
}

/// What a logged event the stream did not take comes to here: delivered
/// by this node alone, as it was made (no offset).
pub(super) fn deliver_unlogged(message: &str, deliver: &Deliver) {
    if let Ok(message) = BusMessage::decode(message.as_bytes()) {
        deliver(Inbound { frame: message.frame(), to: message.to, except_user: None, volatile: false });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_and_offsets_map_both_ways_in_order() {
        let ids = ["0-0", "1700000000000-0", "1700000000000-1", "1700000000001-0", "17592186044415-1048575"];
        let offsets: Vec<Offset> = ids.iter().map(|id| offset_of(id).expect(id)).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
        for (id, offset) in ids.iter().zip(&offsets) {
            assert_eq!(&id_of(*offset), id);
        }
        for bad in ["", "1", "a-1", "1-a", "1-1048576", "17592186044416-0", "-1"] {
            assert_eq!(offset_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_stream_entry_is_decoded_with_its_offset_last() {
        let message = BusMessage {
            node: "n1".into(),
            seq: 1,
            to: To::Room("iss_1".into()),
            except_user: None,
            volatile: false,
            packet: r#"2["message:new",{"a":1}]"#.into(),
        };
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let entry = Value::Array(vec![
            bulk("1700000000000-3"),
            Value::Array(vec![bulk("m"), bulk(&message.encode().expect("encodes"))]),
        ]);
        let (offset, target, frame) = decode_entry(&entry).expect("decodes");
        assert_eq!(offset, offset_of("1700000000000-3").expect("an id"));
        assert_eq!(target, Target::Room("iss_1".into()));
        assert_eq!(&*frame.text, format!(r#"42["message:new",{{"a":1}},"{offset}"]"#));
        assert!(decode_entry(&Value::Array(vec![bulk("1-0")])).is_none());
    }

    #[test]
    fn records_are_camel_case_json() {
        let record = Record {
            socket_id: "s".into(),
            user_id: "usr_1".into(),
            rooms: vec!["iss_1".into()],
            floor: 7,
            node: "n1".into(),
            run: "r1".into(),
        };
        let json = serde_json::to_string(&record).expect("encodes");
        assert_eq!(
            json,
            r#"{"socketId":"s","userId":"usr_1","rooms":["iss_1"],"floor":7,"node":"n1","run":"r1"}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&json).expect("decodes"), record);
    }
}
