//! What sockets may send: a token bucket of events per socket (every
//! client event counts, whatever its name), one per user and one per
//! address shared by their sockets on this node, and a bucket of refusals
//! per socket, so that a client that goes on sending after being told to
//! slow down is disconnected instead of costing the server work for every
//! frame.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::limits::KeyedBucket;

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

/// The buckets the sockets of one user, and those from one address,
/// share.
pub struct SharedBuckets {
    users: Option<KeyedBucket<Arc<str>>>,
    addresses: Option<KeyedBucket<IpAddr>>,
}

impl SharedBuckets {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            users: KeyedBucket::new(config.socket_user_event_rate, config.socket_user_event_burst),
            addresses: KeyedBucket::new(config.socket_address_event_rate, config.socket_address_event_burst),
        }
    }

    /// Takes a token from the user's bucket and the address's.
    pub fn allow(&self, user: &Arc<str>, peer: Option<IpAddr>) -> bool {
        let user_ok = self.users.as_ref().is_none_or(|b| b.check(user).is_ok());
        user_ok
            && match (&self.addresses, peer) {
                (Some(bucket), Some(ip)) => bucket.check(&ip).is_ok(),
                _ => true,
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

    /// Counts one event, also against the buckets it shares (`shared`,
    /// asked only when this socket's own bucket lets it pass); the `bool` is
    /// true at the socket's first refusal (logged once per offender, not per
    /// frame).
    pub fn check(&mut self, shared: impl FnOnce() -> bool) -> (Verdict, bool) {
        if self.cut_off {
            return (Verdict::Gone, false);
        }
        if self.events.check().is_ok() && shared() {
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
            assert_eq!(b.check(|| true), (Verdict::Pass, false));
        }
        assert_eq!(b.check(|| true), (Verdict::Refuse, true));
        assert_eq!(b.check(|| true), (Verdict::Refuse, false));
        assert_eq!(b.check(|| true), (Verdict::Refuse, false));
        assert_eq!(b.check(|| true), (Verdict::Disconnect, false));
        assert_eq!(b.check(|| true), (Verdict::Gone, false));
    }

    #[test]
    fn a_shared_refusal_is_a_refusal() {
        let mut b = Buckets::new(&limits(100, 100, 1));
        assert_eq!(b.check(|| false), (Verdict::Refuse, true));
        assert_eq!(b.check(|| true), (Verdict::Pass, false));
        assert_eq!(b.check(|| false), (Verdict::Disconnect, false));
    }

    #[test]
    fn users_and_addresses_share_buckets() {
        let shared = SharedBuckets { users: KeyedBucket::new(1, 2), addresses: KeyedBucket::new(1, 2) };
        let (ann, bob): (Arc<str>, Arc<str>) = ("ann".into(), "bob".into());
        let (here, there) = (Some(IpAddr::from([10, 0, 0, 1])), Some(IpAddr::from([10, 0, 0, 2])));
        assert!(shared.allow(&ann, here) && shared.allow(&ann, there));
        assert!(!shared.allow(&ann, there), "ann's two tokens are spent, from any address");
        assert!(shared.allow(&bob, here));
        assert!(!shared.allow(&bob, here), "this address's two are spent, by any user");
    }
}
