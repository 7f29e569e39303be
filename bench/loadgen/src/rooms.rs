//! `rooms` and `typing`: R rooms (issues) × M members, member j of every
//! room being user j.
//!
//! - rooms: member 0 of each room sends `message:send` at a set rate with
//!   content `lg <room> <seq> <send time µs>`; every member (the sender
//!   included) must receive every acknowledged message of its room exactly
//!   once and in order, and latency is read from the payload.
//! - typing: every member toggles `user:typing` at a set rate; every other
//!   member of the room must receive each toggle (the k-th event from a
//!   typist matches its k-th send, whose time is shared in memory).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};

use actix_socketio::protocol::socket::{self, Decoded, PacketKind};
use civicpulse::protocol::events;

use crate::fleet::{self, Fleet, Phase, Window};
use crate::net::{self, Conn, Incoming, Target, bool_field, event_name, str_field};
use crate::setup::Fixture;
use crate::stats::{Histogram, now_us, round3};
use crate::{Args, Report};

/// Counters of one run, shared by all members.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    ack_errors: AtomicU64,
    delivered: AtomicU64,
    /// Senders whose ticker runs; the drain waits for them to stop.
    active_senders: AtomicI64,
    first_send_us: AtomicU64,
    last_ack_us: AtomicU64,
    last_receipt_us: AtomicU64,
    latency: Histogram,
    ack_latency: Histogram,
}

impl Counters {
    fn new() -> Self {
        let c = Self::default();
        c.first_send_us.store(u64::MAX, Ordering::Relaxed);
        c
    }
}

/// A growable bitset of sequence numbers.
#[derive(Default, Clone)]
struct Bits(Vec<u64>);

impl Bits {
    /// Sets bit `i`; false if it was set already.
    fn insert(&mut self, i: usize) -> bool {
        let word = i / 64;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        let bit = 1u64 << (i % 64);
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }
    fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.0.len() * 64).filter(|&i| self.contains(i))
    }
}

/// What one member saw.
#[derive(Default)]
struct Member {
    room: usize,
    seen: Bits,
    duplicates: u64,
    reordered: u64,
    misrouted: u64,
    /// Only for the sender: acknowledged sequence numbers.
    acked: Option<Bits>,
}

/// A ticker starting at a random-ish phase so members do not send in step.
fn ticker(rate: f64, slot: usize) -> Interval {
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let offset = period.mul_f64((slot as f64 * 0.618_033_988_7).fract());
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Connects member `j` of `room` (socket `i`, on node i mod N) and joins
/// the room.
async fn connect_member(
    target: &Target,
    fixture: &Fixture,
    i: usize,
    room: usize,
    j: usize,
) -> Result<Conn, String> {
    let mut conn =
        net::connect_to(target, target.node(i), &fixture.token(j)).await.map_err(|e| e.to_string())?;
    fleet::join_issue(&mut conn, &fixture.issues[room], target.connect_timeout).await?;
    Ok(conn)
}

fn parse_content(payload: &str) -> Option<(usize, usize, u64)> {
    let content = str_field(payload, "content")?;
    let mut parts = content.strip_prefix("lg ")?.split(' ');
    let room = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let sent = parts.next()?.parse().ok()?;
    Some((room, seq, sent))
}

pub async fn rooms(args: &Args, target: Arc<Target>) -> Result<Report, String> {
    let (rooms, members) = (args.rooms.max(1), args.members.max(1));
    let n = rooms * members;
    eprintln!("loadgen: registering {} users and creating {rooms} issues", args.users.max(members));
    let fixture = Arc::new(Fixture::build(&target, &args.secret, args.users.max(members), rooms).await?);
    let counters = Arc::new(Counters::new());
    let fleet = Arc::new(Fleet::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Connect);
    let rate = args.rate;

    let handles = fleet::launch(n, args.concurrency, |i, permit| {
        let (target, fixture, fleet, counters) = (target.clone(), fixture.clone(), fleet.clone(), counters.clone());
        let mut phase = phase_rx.clone();
        let (room, j) = (i / members, i % members);
        async move {
            let mut member = Member { room, ..Member::default() };
            let started = now_us();
            let mut conn = match connect_member(&target, &fixture, i, room, j).await {
                Ok(conn) => conn,
                Err(e) => {
                    fleet.fail(e);
                    return member;
                }
            };
            fleet.ready(started);
            drop(permit);
            let sender = j == 0;
            let issue = fixture.issues[room].clone();
            let mut interval = None;
            let mut seq = 0usize;
            let mut sent_at: Vec<u64> = Vec::new();
            let mut acked = Bits::default();
            let mut max_seen = 0usize;
            loop {
                tokio::select! {
                    biased;
                    changed = phase.changed() => {
                        let now = *phase.borrow();
                        if changed.is_err() || now == Phase::Stop {
                            break;
                        }
                        // The sender starts when the run does (it keeps
                        // receiving meanwhile, like every member).
                        if now == Phase::Run && sender && seq == 0 && interval.is_none() {
                            interval = Some(ticker(rate, room));
                            counters.active_senders.fetch_add(1, Ordering::Relaxed);
                        }
                        if now >= Phase::Drain && interval.take().is_some() {
                            counters.active_senders.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    _ = tick(&mut interval) => {
                        seq += 1;
                        let t = now_us();
                        let content = format!("lg {room} {seq} {t}");
                        let packet = socket::Packet::event(
                            "/",
                            events::MESSAGE_SEND,
                            vec![json!({ "issueId": issue, "content": content })],
                        )
                        .with_ack_id(seq as u64);
                        sent_at.push(t);
                        counters.sent.fetch_add(1, Ordering::Relaxed);
                        counters.first_send_us.fetch_min(t, Ordering::Relaxed);
                        if !conn.send(&packet).await {
                            fleet.dropped.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                    incoming = conn.recv() => {
                        let Incoming::Message(text) = incoming else {
                            fleet.dropped.fetch_add(1, Ordering::Relaxed);
                            break;
                        };
                        if let Some(("message:new", payload)) = event_name(&text) {
                            let now = now_us();
                            let Some((msg_room, msg_seq, sent)) = parse_content(payload) else { continue };
                            if msg_room != room {
                                member.misrouted += 1;
                                continue;
                            }
                            if !member.seen.insert(msg_seq) {
                                member.duplicates += 1;
                                continue;
                            }
                            if msg_seq < max_seen {
                                member.reordered += 1;
                            }
                            max_seen = max_seen.max(msg_seq);
                            counters.latency.record(now.saturating_sub(sent));
                            counters.delivered.fetch_add(1, Ordering::Relaxed);
                            counters.last_receipt_us.fetch_max(now, Ordering::Relaxed);
                        } else if sender && text.starts_with('3') {
                            let Ok(Decoded::Complete(p)) = socket::decode(&text) else { continue };
                            let (PacketKind::Ack, Some(id)) = (p.kind, p.ack_id) else { continue };
                            let ok = p.args().first().and_then(|a| a.get("ok")).and_then(Value::as_bool) == Some(true);
                            if ok && id >= 1 && acked.insert(id as usize) {
                                counters.acked.fetch_add(1, Ordering::Relaxed);
                                let now = now_us();
                                counters.last_ack_us.fetch_max(now, Ordering::Relaxed);
                                if let Some(t) = sent_at.get(id as usize - 1) {
                                    counters.ack_latency.record(now.saturating_sub(*t));
                                }
                            } else if !ok && counters.ack_errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("loadgen: message:send refused: {text}");
                            }
                        }
                    }
                }
            }
            if interval.is_some() {
                counters.active_senders.fetch_sub(1, Ordering::Relaxed);
            }
            if sender {
                member.acked = Some(acked);
            }
            member
        }
    })
    .await;
    fleet.wait(n, args.ramp_timeout(n)).await;
    let ready = fleet.ready.load(Ordering::Relaxed);
    eprintln!("loadgen: {ready} members ready; sending for {} s", args.duration);

    // Drain: every sender has seen the drain begin (a tick that raced it
    // may still send one more), all acks are in, and every acknowledged
    // message is at every member.
    let drained = || {
        if counters.active_senders.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let (sent, acked, errors) = (
            counters.sent.load(Ordering::Relaxed),
            counters.acked.load(Ordering::Relaxed),
            counters.ack_errors.load(Ordering::Relaxed),
        );
        acked + errors >= sent && counters.delivered.load(Ordering::Relaxed) >= acked * members as u64
    };
    let events = || counters.acked.load(Ordering::Relaxed);
    let Window { send_secs, server_cpu, server_cpu_each, loadgen_cpu, rss, redis } =
        fleet::send_and_drain(args, &phase_tx, drained, events).await;
    let results = fleet::collect(handles, Duration::from_secs(20)).await;

    // Per room: what the sender had acknowledged; then what each member lacks.
    let mut acked_by_room: HashMap<usize, Bits> = HashMap::new();
    for m in &results {
        if let Some(acked) = &m.acked {
            acked_by_room.insert(m.room, acked.clone());
        }
    }
    let (mut lost, mut duplicates, mut reordered, mut misrouted, mut unacked_deliveries) =
        (0u64, 0, 0, 0, 0u64);
    for m in &results {
        duplicates += m.duplicates;
        reordered += m.reordered;
        misrouted += m.misrouted;
        let empty = Bits::default();
        let acked = acked_by_room.get(&m.room).unwrap_or(&empty);
        lost += acked.iter().filter(|&s| !m.seen.contains(s)).count() as u64;
        unacked_deliveries += m.seen.iter().filter(|&s| !acked.contains(s)).count() as u64;
    }
    let sent = counters.sent.load(Ordering::Relaxed);
    let acked = counters.acked.load(Ordering::Relaxed);
    let delivered = counters.delivered.load(Ordering::Relaxed);
    let first = counters.first_send_us.load(Ordering::Relaxed);
    let last = counters.last_receipt_us.load(Ordering::Relaxed);
    let span = if last > first && first != u64::MAX { (last - first) as f64 / 1e6 } else { send_secs };
    // Stored messages per second: from the first send to the last ack, so a
    // server that falls behind is measured at the rate it really stores.
    let last_ack = counters.last_ack_us.load(Ordering::Relaxed);
    let store_span =
        if last_ack > first && first != u64::MAX { (last_ack - first) as f64 / 1e6 } else { send_secs };
    let stored_per_s = acked as f64 / store_span.max(send_secs).max(1e-6);
    let summary = counters.latency.summary();

    let mut r = Report::new("rooms");
    r.row(
        "rooms × members",
        format!(
            "{rooms} × {members} = {n} sockets ({ready} ready, {} failed, {} dropped)",
            fleet.failed.load(Ordering::Relaxed),
            fleet.dropped.load(Ordering::Relaxed)
        ),
    );
    r.row(
        "messages",
        format!(
            "{sent} sent, {acked} stored+acked, {} refused, in {send_secs:.1} s",
            counters.ack_errors.load(Ordering::Relaxed)
        ),
    );
    r.row(
        "message rate",
        format!("{:.1} messages/s stored (asked {:.1})", acked as f64 / send_secs, rate * rooms as f64),
    );
    r.row("deliveries", format!("{delivered} ({:.0}/s)", delivered as f64 / span.max(1e-6)));
    r.row(
        "lost / duplicated / reordered",
        format!("{lost} / {duplicates} / {reordered} (misrouted {misrouted})"),
    );
    r.row("delivery latency", summary.line());
    r.row("ack latency (stored)", counters.ack_latency.summary().line());
    if let Some(cpu) = server_cpu {
        r.row("server CPU", format!("{cpu:.1} % of a core"));
    }
    if let Some(redis) = &redis {
        r.row("redis per event", crate::redis::line(redis));
    }
    r.set("rooms", rooms);
    r.set("members", members);
    r.set("rate_per_room", rate);
    r.set("duration_s", args.duration);
    r.set("ready", ready);
    r.set("failed", fleet.failed.load(Ordering::Relaxed));
    r.set("dropped", fleet.dropped.load(Ordering::Relaxed));
    r.set("sent", sent);
    r.set("acked", acked);
    r.set("refused", counters.ack_errors.load(Ordering::Relaxed));
    r.set("messages_per_s", round3(stored_per_s));
    r.set("delivered", delivered);
    r.set("deliveries_per_s", round3(delivered as f64 / span.max(1e-6)));
    r.set("lost", lost);
    r.set("duplicated", duplicates);
    r.set("reordered", reordered);
    r.set("misrouted", misrouted);
    r.set("unacked_deliveries", unacked_deliveries);
    r.set("latency", summary.json());
    r.set("ack_latency", counters.ack_latency.summary().json());
    r.set("server_cpu_pct", server_cpu);
    r.set("server_cpu_pct_per_node", server_cpu_each);
    r.set("redis", redis);
    r.set("loadgen_cpu_pct", loadgen_cpu);
    r.set("rss_end_bytes", rss);
    r.set("errors", fleet.errors());
    r.ok = ready == n && lost == 0 && duplicates == 0 && reordered == 0 && misrouted == 0 && acked == sent;
    Ok(r)
}

/// Send times of every typist, indexed by socket (room × members + j).
type SendLog = Vec<Mutex<Vec<u64>>>;

/// Sends one `user:typing` toggle and logs its send time.
async fn send_typing(
    conn: &mut Conn,
    issue: &str,
    typing: bool,
    log: &Mutex<Vec<u64>>,
    counters: &Counters,
) -> bool {
    let packet = socket::Packet::event(
        "/",
        events::USER_TYPING,
        vec![json!({ "issueId": issue, "isTyping": typing })],
    );
    let t = now_us();
    log.lock().unwrap_or_else(|p| p.into_inner()).push(t);
    counters.sent.fetch_add(1, Ordering::Relaxed);
    counters.first_send_us.fetch_min(t, Ordering::Relaxed);
    conn.send(&packet).await
}

pub async fn typing(args: &Args, target: Arc<Target>) -> Result<Report, String> {
    let (rooms, members) = (args.rooms.max(1), args.members.max(2));
    let n = rooms * members;
    eprintln!("loadgen: registering {members} users and creating {rooms} issues");
    let fixture = Arc::new(Fixture::build(&target, &args.secret, members, rooms).await?);
    let user_index: Arc<HashMap<String, usize>> =
        Arc::new(fixture.users.iter().enumerate().map(|(j, u)| (u.id.clone(), j)).collect());
    let sends: Arc<SendLog> = Arc::new((0..n).map(|_| Mutex::new(Vec::new())).collect());
    let counters = Arc::new(Counters::new());
    let mismatched = Arc::new(AtomicU64::new(0));
    let fleet = Arc::new(Fleet::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Connect);
    let rate = args.rate;

    let handles = fleet::launch(n, args.concurrency, |i, permit| {
        let (target, fixture, fleet, counters) = (target.clone(), fixture.clone(), fleet.clone(), counters.clone());
        let (user_index, sends, mismatched) = (user_index.clone(), sends.clone(), mismatched.clone());
        let mut phase = phase_rx.clone();
        let (room, j) = (i / members, i % members);
        async move {
            let started = now_us();
            let mut conn = match connect_member(&target, &fixture, i, room, j).await {
                Ok(conn) => conn,
                Err(e) => {
                    fleet.fail(e);
                    return;
                }
            };
            fleet.ready(started);
            drop(permit);
            let issue = fixture.issues[room].clone();
            // How many events arrived from each typist of the room.
            let mut from = vec![0usize; members];
            let mut interval = None;
            let mut started = false;
            let mut typing = false;
            loop {
                tokio::select! {
                    biased;
                    changed = phase.changed() => {
                        let now = *phase.borrow();
                        if changed.is_err() || now == Phase::Stop {
                            break;
                        }
                        // Typing starts with the run; until then (and
                        // after) the member keeps receiving, so no toggle
                        // from a quicker typist is missed.
                        if now == Phase::Run && !started {
                            started = true;
                            interval = Some(ticker(rate, i));
                            counters.active_senders.fetch_add(1, Ordering::Relaxed);
                        }
                        if now >= Phase::Drain && interval.take().is_some() {
                            // End on `false`, so the server's 5 s expiry
                            // has nothing to clear during the drain.
                            if typing {
                                typing = false;
                                if !send_typing(&mut conn, &issue, typing, &sends[i], &counters).await {
                                    fleet.dropped.fetch_add(1, Ordering::Relaxed);
                                    counters.active_senders.fetch_sub(1, Ordering::Relaxed);
                                    break;
                                }
                            }
                            counters.active_senders.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    _ = tick(&mut interval) => {
                        typing = !typing;
                        if !send_typing(&mut conn, &issue, typing, &sends[i], &counters).await {
                            fleet.dropped.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                    incoming = conn.recv() => {
                        let Incoming::Message(text) = incoming else {
                            fleet.dropped.fetch_add(1, Ordering::Relaxed);
                            break;
                        };
                        let Some(("user:typing", payload)) = event_name(&text) else { continue };
                        let now = now_us();
                        let (Some(user), Some(state)) = (str_field(payload, "userId"), bool_field(payload, "isTyping")) else { continue };
                        let Some(&typist) = user_index.get(user) else { continue };
                        if str_field(payload, "issueId") != Some(issue.as_str()) {
                            mismatched.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        // The k-th toggle of a typist sets isTyping to (k is
                        // even); a state out of turn means one toggle never
                        // arrived (it counts as lost), not a cascade of errors.
                        let mut k = from[typist];
                        if state != (k % 2 == 0) {
                            k += 1;
                        }
                        from[typist] = k + 1;
                        let sent = sends[room * members + typist].lock().unwrap_or_else(|p| p.into_inner()).get(k).copied();
                        match sent {
                            Some(sent) => {
                                counters.latency.record(now.saturating_sub(sent));
                                counters.delivered.fetch_add(1, Ordering::Relaxed);
                                counters.last_receipt_us.fetch_max(now, Ordering::Relaxed);
                            }
                            _ => {
                                mismatched.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
            if interval.is_some() {
                counters.active_senders.fetch_sub(1, Ordering::Relaxed);
            }
        }
    })
    .await;
    fleet.wait(n, args.ramp_timeout(n)).await;
    let ready = fleet.ready.load(Ordering::Relaxed);
    eprintln!("loadgen: {ready} members ready; typing for {} s", args.duration);

    // Drain: every toggle at every other member, once the senders stopped.
    let drained = || {
        let senders_done = counters.active_senders.load(Ordering::Relaxed) <= 0;
        let expected = counters.sent.load(Ordering::Relaxed) * (members as u64 - 1);
        senders_done && counters.delivered.load(Ordering::Relaxed) >= expected
    };
    let events = || counters.sent.load(Ordering::Relaxed);
    let Window { send_secs, server_cpu, server_cpu_each, loadgen_cpu, rss, redis } =
        fleet::send_and_drain(args, &phase_tx, drained, events).await;
    fleet::collect(handles, Duration::from_secs(20)).await;

    let sent = counters.sent.load(Ordering::Relaxed);
    let expected = sent * (members as u64 - 1);
    let delivered = counters.delivered.load(Ordering::Relaxed);
    let lost = expected.saturating_sub(delivered);
    let first = counters.first_send_us.load(Ordering::Relaxed);
    let last = counters.last_receipt_us.load(Ordering::Relaxed);
    let span = if last > first && first != u64::MAX { (last - first) as f64 / 1e6 } else { send_secs };
    let summary = counters.latency.summary();
    let mismatched = mismatched.load(Ordering::Relaxed);

    let mut r = Report::new("typing");
    r.row(
        "rooms × members",
        format!(
            "{rooms} × {members} = {n} sockets ({ready} ready, {} failed, {} dropped)",
            fleet.failed.load(Ordering::Relaxed),
            fleet.dropped.load(Ordering::Relaxed)
        ),
    );
    r.row("typing events sent", format!("{sent} in {send_secs:.1} s ({:.0}/s)", sent as f64 / send_secs));
    r.row(
        "deliveries",
        format!(
            "{delivered} of {expected} ({lost} lost, {mismatched} unexpected), {:.0}/s",
            delivered as f64 / span.max(1e-6)
        ),
    );
    r.row("latency", summary.line());
    if let Some(cpu) = server_cpu {
        r.row("server CPU", format!("{cpu:.1} % of a core"));
    }
    if let Some(redis) = &redis {
        r.row("redis per event", crate::redis::line(redis));
    }
    r.set("rooms", rooms);
    r.set("members", members);
    r.set("rate_per_member", rate);
    r.set("duration_s", args.duration);
    r.set("ready", ready);
    r.set("failed", fleet.failed.load(Ordering::Relaxed));
    r.set("dropped", fleet.dropped.load(Ordering::Relaxed));
    r.set("sent", sent);
    r.set("sent_per_s", round3(sent as f64 / send_secs));
    r.set("expected", expected);
    r.set("delivered", delivered);
    r.set("deliveries_per_s", round3(delivered as f64 / span.max(1e-6)));
    r.set("lost", lost);
    r.set("unexpected", mismatched);
    r.set("latency", summary.json());
    r.set("server_cpu_pct", server_cpu);
    r.set("server_cpu_pct_per_node", server_cpu_each);
    r.set("redis", redis);
    r.set("loadgen_cpu_pct", loadgen_cpu);
    r.set("rss_end_bytes", rss);
    r.set("errors", fleet.errors());
    r.ok = ready == n && lost == 0 && mismatched == 0;
    Ok(r)
}
