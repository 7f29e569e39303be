//! Measurement: a process-wide microsecond clock, a latency histogram
//! (hdrhistogram, sharded per thread), and readings of another process's memory and CPU from /proc.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use serde_json::{Value, json};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Starts the clock; call once before anything is timed.
pub fn init_clock() {
    EPOCH.get_or_init(Instant::now);
}

/// Microseconds since [`init_clock`]. Every task of the load generator reads
/// the same monotonic clock, so a timestamp written into a payload by one
/// socket can be compared with the receipt time at another.
pub fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Significant figures kept by the histograms: values are counted exactly
/// up to 2047 µs and within 0.1 % above.
const SIGFIG: u8 = 3;
/// Samples are clamped to 2^42 µs (~50 days), so recording cannot fail.
const MAX_US: u64 = 1 << 42;
/// Shards of a [`Histogram`]; each thread records into one of them.
const SHARDS: usize = 16;

/// The shard of the calling thread: threads take shards in turn, so the
/// runtime's worker threads (fewer than [`SHARDS`] on the machines this
/// runs on) each have a lock of their own.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// One shard: an HdrHistogram, and the exact sum and maximum (the
/// histogram's own mean and max are rounded to their buckets).
struct Shard {
    hist: hdrhistogram::Histogram<u64>,
    sum: u64,
    max: u64,
}

impl Default for Shard {
    fn default() -> Self {
        // An auto-resizing histogram grows to the largest value recorded.
        let hist = hdrhistogram::Histogram::new(SIGFIG).expect("3 significant figures is a valid precision");
        Self { hist, sum: 0, max: 0 }
    }
}

/// A histogram of microsecond values shared by all sockets of a run
/// (hdrhistogram). Many tasks record at once: each thread records into its
/// own shard under an uncontended mutex (no allocation but the rare
/// resize), and reading merges the shards.
pub struct Histogram {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::default()).collect() }
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

impl Histogram {
    pub fn record(&self, us: u64) {
        let us = us.min(MAX_US);
        let mut shard = lock(&self.shards[shard_index()]);
        // Cannot fail: auto-resizing, and `us` is far below its limit.
        let _ = shard.hist.record(us);
        shard.sum += us;
        shard.max = shard.max.max(us);
    }

    /// Everything recorded so far, merged.
    fn merged(&self) -> Shard {
        let mut all = Shard::default();
        for shard in self.shards.iter() {
            let shard = lock(shard);
            // Cannot fail: `all` resizes to fit.
            let _ = all.hist.add(&shard.hist);
            all.sum += shard.sum;
            all.max = all.max.max(shard.max);
        }
        all
    }

    pub fn summary(&self) -> Summary {
        let Shard { hist, sum, max } = self.merged();
        let count = hist.len();
        // The upper end of the quantile's bucket (percentiles never
        // under-report), but never above the largest value recorded.
        let quantile =
            |q: f64| if count == 0 { 0.0 } else { hist.value_at_quantile(q).min(max) as f64 / 1000.0 };
        let mean = if count == 0 { 0.0 } else { sum as f64 / count as f64 };
        Summary {
            count,
            mean_ms: mean / 1000.0,
            p50_ms: quantile(0.50),
            p95_ms: quantile(0.95),
            p99_ms: quantile(0.99),
            max_ms: max as f64 / 1000.0,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    pub fn json(&self) -> Value {
        json!({
            "count": self.count,
            "mean_ms": round3(self.mean_ms),
            "p50_ms": round3(self.p50_ms),
            "p95_ms": round3(self.p95_ms),
            "p99_ms": round3(self.p99_ms),
            "max_ms": round3(self.max_ms),
        })
    }

    pub fn line(&self) -> String {
        format!(
            "p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n={})",
            self.p50_ms, self.p95_ms, self.p99_ms, self.max_ms, self.count
        )
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Resident set size of a process in bytes (`VmRSS` of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User + system CPU time of a process in seconds (/proc/PID/stat).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields resume after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14, stime 15 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) as f64 / ticks)
}

/// Resident set size of several processes together (one server's nodes);
/// `None` when there are none or one cannot be read.
pub fn rss_total(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| rss_bytes(pid)).sum()
}

/// CPU used by one or more processes (a server's nodes) over a window, as a
/// percentage of one core.
pub struct CpuWindow {
    pids: Vec<u32>,
    start_cpu: Vec<Option<f64>>,
    start: Instant,
}

impl CpuWindow {
    pub fn start(pids: &[u32]) -> Self {
        Self {
            pids: pids.to_vec(),
            start_cpu: pids.iter().map(|&p| cpu_seconds(p)).collect(),
            start: Instant::now(),
        }
    }

    /// Percent of one core per process since [`CpuWindow::start`].
    pub fn percent_each(&self) -> Vec<Option<f64>> {
        let wall = self.start.elapsed().as_secs_f64();
        self.pids
            .iter()
            .zip(&self.start_cpu)
            .map(|(&pid, start)| {
                let (now, start) = (cpu_seconds(pid)?, (*start)?);
                (wall > 0.0).then(|| round3(100.0 * (now - start) / wall))
            })
            .collect()
    }

    /// Percent of one core since [`CpuWindow::start`], all processes
    /// together; `None` without a pid (or when one cannot be read).
    pub fn percent(&self) -> Option<f64> {
        let each = self.percent_each();
        if each.is_empty() {
            return None;
        }
        each.into_iter().sum::<Option<f64>>().map(round3)
    }

    pub fn self_process() -> Self {
        Self::start(&[std::process::id()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_summary_is_zero() {
        let s = Histogram::default().summary();
        assert_eq!(s.count, 0);
        assert_eq!(
            s.json(),
            json!({"count": 0, "mean_ms": 0.0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0})
        );
    }

    #[test]
    fn quantiles_in_the_json_summary() {
        let h = Histogram::default();
        for v in 0..=1000 {
            h.record(v);
        }
        // Exact below 2048 µs; the rank is ceil(q × count); reported in ms.
        assert_eq!(
            h.summary().json(),
            json!({"count": 1001, "mean_ms": 0.5, "p50_ms": 0.5, "p95_ms": 0.95, "p99_ms": 0.99, "max_ms": 1.0})
        );
        let h = Histogram::default();
        for v in [100, 200, 300, 400] {
            h.record(v);
        }
        assert_eq!(
            h.summary().json(),
            json!({"count": 4, "mean_ms": 0.25, "p50_ms": 0.2, "p95_ms": 0.4, "p99_ms": 0.4, "max_ms": 0.4})
        );
    }

    #[test]
    fn large_values_within_a_tenth_of_a_percent_and_never_above_the_max() {
        let h = Histogram::default();
        for v in [123_456u64, 9_999_999, 1 << 40] {
            h.record(v);
        }
        h.record(u64::MAX); // clamped
        let s = h.summary();
        assert_eq!(s.count, 4);
        assert_eq!(s.max_ms, MAX_US as f64 / 1000.0);
        let h = Histogram::default();
        for _ in 0..99 {
            h.record(123_456);
        }
        h.record(9_999_999);
        let s = h.summary();
        assert!(s.p50_ms >= 123.456 && s.p50_ms <= 123.456 * 1.001, "{s:?}");
        assert!(s.p99_ms >= 123.456 && s.p99_ms <= 123.456 * 1.001, "{s:?}");
        assert_eq!(s.max_ms, 9999.999);
        // The mean is exact, not a bucket midpoint.
        assert_eq!(s.mean_ms, (99.0 * 123_456.0 + 9_999_999.0) / 100.0 / 1000.0);
        // The top quantile is the maximum itself, not its bucket's end.
        let h = Histogram::default();
        h.record(9_999_999);
        assert_eq!(h.summary().p99_ms, 9999.999);
    }

    #[test]
    fn concurrent_recorders_are_merged() {
        let h = Histogram::default();
        std::thread::scope(|scope| {
            for t in 0..8u64 {
                let h = &h;
                scope.spawn(move || {
                    for v in 1..=1000 {
                        h.record(t * 1000 + v);
                    }
                });
            }
        });
        let s = h.summary();
        assert_eq!(s.count, 8000);
        assert_eq!(s.max_ms, 8.0);
        assert_eq!(s.mean_ms, 4.0005);
        // 4000 µs lies in a bucket 2 µs wide (its upper end is reported),
        // 7920 µs in one 4 µs wide.
        assert_eq!(s.p50_ms, 4.001);
        assert!((7.92..=7.924).contains(&s.p99_ms), "{s:?}");
    }
}
