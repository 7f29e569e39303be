//! What one socket may send: a token bucket of events (every client event
//! counts, whatever its name), and a second bucket of refusals, so that a
//! client that goes on sending after being told to slow down is
//! disconnected instead of costing the server work for every frame.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// The limits of every socket, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    /// Events per second, sustained.
    pub rate: NonZeroU32,
    /// Events a socket may send at once.
    pub burst: NonZeroU32,
    /// Refusals a socket may collect (replenished at one a second) before
    /// it is disconnected as a flooder.
    pub strikes: NonZeroU32,
}

impl EventLimits {
    pub fn from_config(config: &crate::config::Config) -> Self {
        let n = |v: u32| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN);
        Self {
            rate: n(config.socket_event_rate),
            burst: n(config.socket_event_burst),
            strikes: n(config.socket_flood_strikes),
        }
    }
}

/// One socket's buckets.
pub struct Buckets {
    events: DefaultDirectRateLimiter,
    strikes: DefaultDirectRateLimiter,
    /// Whether this socket's first refusal was logged (once per offender,
    /// not per frame).
    logged: bool,
    cut_off: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// Answer `rate_limited`.
    Refuse,
    /// Disconnect the socket (said once).
    Disconnect,
    /// The socket is being disconnected: drop what it still sent.
    Gone,
}

impl Buckets {
    pub fn new(limits: &EventLimits) -> Self {
        Self {
            events: RateLimiter::direct(Quota::per_second(limits.rate).allow_burst(limits.burst)),
            strikes: RateLimiter::direct(Quota::per_second(NonZeroU32::MIN).allow_burst(limits.strikes)),
            logged: false,
            cut_off: false,
        }
    }

    /// Counts one event; the `bool` is true at the socket's first refusal
    /// (logged once per offender, not per frame).
    pub fn check(&mut self) -> (Verdict, bool) {
        if self.cut_off {
            return (Verdict::Gone, false);
        }
        if self.events.check().is_ok() {
            return (Verdict::Pass, false);
        }
        let first = !std::mem::replace(&mut self.logged, true);
        match self.strikes.check() {
            Ok(()) => (Verdict::Refuse, first),
            Err(_) => {
                self.cut_off = true;
                (Verdict::Disconnect, first)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32, burst: u32, strikes: u32) -> EventLimits {
        let n = |v| NonZeroU32::new(v).expect("non-zero");
        EventLimits { rate: n(rate), burst: n(burst), strikes: n(strikes) }
    }

    #[test]
    fn a_burst_passes_then_refusals_then_the_flooder_is_cut_off() {
        let mut b = Buckets::new(&limits(1, 5, 3));
        for _ in 0..5 {
            assert_eq!(b.check(), (Verdict::Pass, false));
        }
        assert_eq!(b.check(), (Verdict::Refuse, true));
        assert_eq!(b.check(), (Verdict::Refuse, false));
        assert_eq!(b.check(), (Verdict::Refuse, false));
        assert_eq!(b.check(), (Verdict::Disconnect, false));
        assert_eq!(b.check(), (Verdict::Gone, false));
    }
}
