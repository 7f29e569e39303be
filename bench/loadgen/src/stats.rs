//! Measurement: a process-wide microsecond clock, a lock-free latency
//! histogram, and readings of another process's memory and CPU from /proc.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Values below this are counted exactly (1 µs resolution up to ~1 ms).
const LINEAR: u64 = 1024;
/// Sub-buckets per power of two above [`LINEAR`]: relative error < 0.2 %.
const SUB_BITS: u32 = 9;
const SUB: u64 = 1 << SUB_BITS;
/// Up to 2^42 µs (~50 days).
const OCTAVES: u64 = 32;
const BUCKETS: usize = (LINEAR + OCTAVES * SUB) as usize;

/// A log-linear histogram of microsecond values, shared by all sockets of
/// a run (one relaxed atomic add per sample, no lock, no allocation).
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = 63 - u64::from(v.leading_zeros()); // >= 10
    let sub = (v >> (exp - u64::from(SUB_BITS))) & (SUB - 1);
    let octave = (exp - 10).min(OCTAVES - 1);
    (LINEAR + octave * SUB + sub) as usize
}

/// The upper bound of a bucket, so percentiles never under-report.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let octave = (i - LINEAR) / SUB;
    let sub = (i - LINEAR) % SUB;
    let exp = octave + 10;
    let step = 1u64 << (exp - u64::from(SUB_BITS));
    (1u64 << exp) + sub * step + step - 1
}

impl Histogram {
    pub fn record(&self, us: u64) {
        self.buckets[index(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(us, Ordering::Relaxed);
        self.max.fetch_max(us, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The value below which `q` (0..=1) of the samples lie, in µs.
    pub fn quantile(&self, q: f64) -> u64 {
        let count = self.count();
        if count == 0 {
            return 0;
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return upper(i).min(self.max.load(Ordering::Relaxed));
            }
        }
        self.max.load(Ordering::Relaxed)
    }

    pub fn summary(&self) -> Summary {
        let count = self.count();
        let mean = if count == 0 { 0.0 } else { self.sum.load(Ordering::Relaxed) as f64 / count as f64 };
        Summary {
            count,
            mean_ms: mean / 1000.0,
            p50_ms: self.quantile(0.50) as f64 / 1000.0,
            p95_ms: self.quantile(0.95) as f64 / 1000.0,
            p99_ms: self.quantile(0.99) as f64 / 1000.0,
            max_ms: self.max.load(Ordering::Relaxed) as f64 / 1000.0,
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

/// CPU used by a process over a window, as a percentage of one core.
pub struct CpuWindow {
    pid: Option<u32>,
    start_cpu: Option<f64>,
    start: Instant,
}

impl CpuWindow {
    pub fn start(pid: Option<u32>) -> Self {
        Self { pid, start_cpu: pid.and_then(cpu_seconds), start: Instant::now() }
    }

    /// Percent of one core since [`CpuWindow::start`]; `None` without a pid.
    pub fn percent(&self) -> Option<f64> {
        let now = cpu_seconds(self.pid?)?;
        let start = self.start_cpu?;
        let wall = self.start.elapsed().as_secs_f64();
        (wall > 0.0).then(|| round3(100.0 * (now - start) / wall))
    }

    pub fn self_process() -> Self {
        Self::start(Some(std::process::id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_values_tightly() {
        for v in [0u64, 1, 999, 1023, 1024, 1025, 5000, 123_456, 9_999_999, 1 << 40] {
            let u = upper(index(v));
            assert!(u >= v, "{v} -> {u}");
            assert!((u - v) as f64 <= v as f64 * 0.002 + 1.0, "{v} -> {u}");
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 500);
        assert_eq!(h.quantile(0.99), 990);
        assert_eq!(h.quantile(1.0), 1000);
    }
}
