//! What Redis did during a run: `INFO stats commandstats cpu` read when
//! sending starts and again after the drain, over a plain RESP connection
//! (no client crate: one inline command, one bulk reply). The deltas,
//! divided by the events the run triggered, are the Redis cost per event of
//! a cluster (commands by name, bytes in and out, Redis CPU).
//!
//! The load generator's own first `INFO` is taken out of the deltas: its
//! request (input bytes), its reply (output bytes) and the command itself.
//! Everything else Redis did in the window counts, background work of the
//! nodes (heartbeats, liveness keys) included.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::net::loopback_addr;
use crate::stats::round3;

const REQUEST: &[u8] = b"INFO stats commandstats cpu\r\n";
const TIMEOUT: Duration = Duration::from_secs(5);
const SETTLE: Duration = Duration::from_millis(250);
const IDLE: Duration = Duration::from_secs(1);

/// One reading of INFO.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Info {
    /// `key:value` lines of the plain sections (stats, cpu).
    pub fields: BTreeMap<String, String>,
    /// Per command (`cmdstat_<name>`): calls and microseconds.
    pub commands: BTreeMap<String, (u64, u64)>,
    /// Bytes of the whole reply as sent on the wire.
    pub reply_bytes: u64,
}

impl Info {
    fn num(&self, key: &str) -> Option<f64> {
        self.fields.get(key)?.parse().ok()
    }

    /// Parses the text of an INFO reply.
    pub fn parse(text: &str, reply_bytes: u64) -> Self {
        let mut info = Self { reply_bytes, ..Self::default() };
        for line in text.lines() {
            let Some((key, value)) = line.trim_end().split_once(':') else { continue };
            if let Some(name) = key.strip_prefix("cmdstat_") {
                // calls=12,usec=34,usec_per_call=…,rejected_calls=0,failed_calls=0
                let field = |k: &str| {
                    value.split(',').find_map(|kv| kv.strip_prefix(k)?.strip_prefix('=')?.parse::<u64>().ok())
                };
                info.commands
                    .insert(name.to_owned(), (field("calls").unwrap_or(0), field("usec").unwrap_or(0)));
            } else {
                info.fields.insert(key.to_owned(), value.to_owned());
            }
        }
        info
    }
}

/// A Redis to read INFO from.
pub struct Redis {
    addr: SocketAddr,
}

impl Redis {
    /// `redis://127.0.0.1:PORT` (loopback only; no password, no database).
    pub fn parse(url: &str) -> Result<Self, String> {
        Ok(Self { addr: loopback_addr(url, "redis://").map_err(|e| format!("--redis: {e}"))? })
    }

    /// One INFO reading, on a connection of its own.
    pub async fn info(&self) -> Result<Info, String> {
        tokio::time::timeout(TIMEOUT, self.info_inner())
            .await
            .unwrap_or_else(|_| Err("INFO: timed out".into()))
            .map_err(|e| format!("redis {}: {e}", self.addr))
    }

    async fn info_inner(&self) -> Result<Info, String> {
        let mut stream = TcpStream::connect(self.addr).await.map_err(|e| e.to_string())?;
        stream.write_all(REQUEST).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(16 * 1024);
        let mut chunk = [0u8; 8192];
        loop {
            // A bulk reply: `$<len>\r\n<len bytes>\r\n`.
            if let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") {
                let head = std::str::from_utf8(&buf[..eol]).map_err(|e| e.to_string())?;
                let Some(len) = head.strip_prefix('$') else {
                    return Err(format!("INFO: unexpected reply {head:?}"));
                };
                let len: usize = len.parse().map_err(|_| format!("INFO: bad length {head:?}"))?;
                let total = eol + 2 + len + 2;
                if buf.len() >= total {
                    let text = String::from_utf8_lossy(&buf[eol + 2..eol + 2 + len]);
                    return Ok(Info::parse(&text, total as u64));
                }
            }
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("INFO: connection closed".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// INFO at the start of a window; [`RedisWindow::finish`] reads it again.
/// Before the window, [`IDLE`] with no events shows what the nodes do in
/// Redis anyway (heartbeats, presence): the background rate, which is also
/// taken out of the per-event figures as `*_net`.
pub struct RedisWindow {
    redis: Redis,
    background: Result<Value, String>,
    before: Result<Info, String>,
    start: Instant,
}

impl RedisWindow {
    pub async fn start(url: Option<&str>) -> Option<Self> {
        let redis = match Redis::parse(url?) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("loadgen: {e}");
                return None;
            }
        };
        let idle = redis.info().await;
        let idle_start = Instant::now();
        tokio::time::sleep(IDLE).await;
        let before = redis.info().await;
        let background = match (&idle, &before) {
            (Ok(idle), Ok(before)) => Ok(delta(idle, before, idle_start.elapsed().as_secs_f64(), 0)),
            (Err(e), _) | (_, Err(e)) => Err(e.clone()),
        };
        Some(Self { redis, background, before, start: Instant::now() })
    }

    /// The deltas since [`RedisWindow::start`] and per event, as JSON.
    /// Read [`SETTLE`] after the call: a server may deliver to its own
    /// sockets before it publishes (the Node adapter does), so the last
    /// event's PUBLISH can trail its last receipt.
    pub async fn finish(self, events: u64) -> Value {
        tokio::time::sleep(SETTLE).await;
        let wall = self.start.elapsed().as_secs_f64();
        let after = self.redis.info().await;
        let (mut v, background) = match (self.before, after, self.background) {
            (Ok(before), Ok(after), Ok(background)) => (delta(&before, &after, wall, events), background),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return json!({ "error": e }),
        };
        // Per event, less what the same time would have cost with no events.
        let window = v["window_s"].as_f64().unwrap_or(wall);
        let idle_s = background["window_s"].as_f64().unwrap_or(0.0);
        for (key, total) in [
            ("commands_per_event_net", "commands"),
            ("input_bytes_per_event_net", "net_input_bytes"),
            ("output_bytes_per_event_net", "net_output_bytes"),
        ] {
            let (Some(t), Some(b)) = (v[total].as_f64(), background[total].as_f64()) else { continue };
            if events > 0 && idle_s > 0.0 {
                let net = (t - b / idle_s * window).max(0.0) / events as f64;
                v[key] = json!(round3(net));
            }
        }
        // Redis's CPU per event, less its CPU when idle (its timers run
        // whether or not events come).
        if let (Some(cpu), Some(idle_cpu)) =
            (v["redis_cpu_pct"].as_f64(), background["redis_cpu_pct"].as_f64())
            && events > 0
        {
            let us = (cpu - idle_cpu).max(0.0) / 100.0 * window * 1e6 / events as f64;
            v["redis_cpu_us_per_event_net"] = json!(round3(us));
        }
        let per_s = |k: &str| background[k].as_f64().filter(|_| idle_s > 0.0).map(|x| round3(x / idle_s));
        v["background"] = json!({
            "window_s": idle_s,
            "commands_per_s": per_s("commands"),
            "input_bytes_per_s": per_s("net_input_bytes"),
            "output_bytes_per_s": per_s("net_output_bytes"),
            "redis_cpu_pct": background["redis_cpu_pct"],
            "by_command": background["by_command"],
        });
        v
    }
}

/// What Redis did between two readings, without the first reading's own
/// request, reply and command.
pub fn delta(before: &Info, after: &Info, wall_s: f64, events: u64) -> Value {
    let d = |key: &str| match (after.num(key), before.num(key)) {
        (Some(a), Some(b)) => Some(a - b),
        _ => None,
    };
    let per = |x: f64| if events > 0 { Some(round3(x / events as f64)) } else { None };
    let commands = d("total_commands_processed").map(|c| (c - 1.0).max(0.0));
    let net_in = d("total_net_input_bytes").map(|b| (b - REQUEST.len() as f64).max(0.0));
    let net_out = d("total_net_output_bytes").map(|b| (b - before.reply_bytes as f64).max(0.0));
    let cpu = match (d("used_cpu_user"), d("used_cpu_sys")) {
        (Some(u), Some(s)) if wall_s > 0.0 => Some(round3(100.0 * (u + s) / wall_s)),
        _ => None,
    };
    let mut by_command = Map::new();
    for (name, &(calls, usec)) in &after.commands {
        let (calls0, usec0) = before.commands.get(name).copied().unwrap_or((0, 0));
        let mut calls = calls.saturating_sub(calls0);
        if name == "info" {
            calls = calls.saturating_sub(1);
        }
        if calls == 0 {
            continue;
        }
        let usec = usec.saturating_sub(usec0);
        by_command
            .insert(name.clone(), json!({ "calls": calls, "usec": usec, "per_event": per(calls as f64) }));
    }
    json!({
        "events": events,
        "window_s": round3(wall_s),
        "commands": commands,
        "commands_per_event": commands.and_then(per),
        "net_input_bytes": net_in,
        "net_output_bytes": net_out,
        "input_bytes_per_event": net_in.and_then(per),
        "output_bytes_per_event": net_out.and_then(per),
        "publishes_per_event": per(calls_of(&by_command, &["publish", "spublish"])),
        "redis_cpu_pct": cpu,
        "by_command": by_command,
    })
}

/// One line for the human table: commands, bytes and CPU per event.
pub fn line(v: &Value) -> String {
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return format!("not measured ({e})");
    }
    let f = |k: &str| v.get(k).and_then(Value::as_f64).map_or("–".to_owned(), |x| format!("{x:.1}"));
    let bg = v.get("background").and_then(|b| b.get("commands_per_s")).and_then(Value::as_f64);
    format!(
        "{} commands ({} net of background), {} B in, {} B out per event; Redis CPU {} % of a core; \
         background {} commands/s",
        f("commands_per_event"),
        f("commands_per_event_net"),
        f("input_bytes_per_event"),
        f("output_bytes_per_event"),
        f("redis_cpu_pct"),
        bg.map_or("–".to_owned(), |x| format!("{x:.1}"))
    )
}

fn calls_of(by: &Map<String, Value>, names: &[&str]) -> f64 {
    names.iter().filter_map(|n| by.get(*n)?.get("calls")?.as_u64()).sum::<u64>() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# Stats\r\ntotal_commands_processed:10\r\ntotal_net_input_bytes:1000\r\ntotal_net_output_bytes:5000\r\n\r\n# CPU\r\nused_cpu_sys:1.000000\r\nused_cpu_user:2.000000\r\n\r\n# Commandstats\r\ncmdstat_publish:calls=4,usec=40,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\ncmdstat_info:calls=2,usec=100,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\n";
    const AFTER: &str = "# Stats\r\ntotal_commands_processed:211\r\ntotal_net_input_bytes:21029\r\ntotal_net_output_bytes:10400\r\n\r\n# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.500000\r\n\r\n# Commandstats\r\ncmdstat_publish:calls=204,usec=2040,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\ncmdstat_info:calls=3,usec=150,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn deltas_per_event_without_the_first_reading() {
        let before = Info::parse(BEFORE, 400);
        let after = Info::parse(AFTER, 400);
        assert_eq!(before.commands["publish"], (4, 40));
        let v = delta(&before, &after, 2.0, 100);
        assert_eq!(v["commands"], 200.0);
        assert_eq!(v["commands_per_event"], 2.0);
        assert_eq!(v["net_input_bytes"], (20029 - REQUEST.len()) as f64);
        assert_eq!(v["net_output_bytes"], 5000.0);
        assert_eq!(v["output_bytes_per_event"], 50.0);
        assert_eq!(v["redis_cpu_pct"], 50.0);
        assert_eq!(v["by_command"]["publish"]["calls"], 200);
        assert_eq!(v["publishes_per_event"], 2.0);
        assert!(v["by_command"].get("info").is_none(), "{v}");
    }

    #[test]
    fn only_loopback_redis() {
        assert!(Redis::parse("redis://127.0.0.1:6390").is_ok());
        assert!(Redis::parse("redis://10.0.0.1:6379").is_err());
        assert!(Redis::parse("http://127.0.0.1:6379").is_err());
    }
}
