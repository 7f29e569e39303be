//! A per-address limit on the credential endpoints (register, login,
//! refresh), so one client cannot guess passwords or mint accounts at full
//! speed. Fixed one-minute windows: coarse, but cheap and lock-free across
//! workers.

use std::future::{Ready, ready};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use dashmap::DashMap;

use super::error::ApiError;

const WINDOW: Duration = Duration::from_secs(60);

pub struct AuthRateLimit {
    per_minute: u32,
    windows: DashMap<IpAddr, (Instant, u32)>,
}

impl AuthRateLimit {
    /// `per_minute` 0 turns the limit off.
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, windows: DashMap::new() }
    }

    /// Counts one request from `ip`; the seconds to wait when over the limit.
    fn hit(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        // Forget old windows now and then so the map stays small.
        if self.windows.len() > 10_000 {
            self.windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let mut entry = self.windows.entry(ip).or_insert((now, 0));
        let (start, count) = &mut *entry;
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count > self.per_minute {
            return Err((WINDOW - now.duration_since(*start)).as_secs().max(1));
        }
        Ok(())
    }
}

/// Extractor: fails with 429 and `Retry-After` when the caller's address is
/// over the limit.
pub struct WithinAuthLimit;

impl FromRequest for WithinAuthLimit {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let (Some(limit), Some(peer)) = (req.app_data::<web::Data<AuthRateLimit>>(), req.peer_addr()) else {
            return ready(Ok(WithinAuthLimit));
        };
        ready(limit.hit(peer.ip(), Instant::now()).map(|()| WithinAuthLimit).map_err(|retry_after| {
            ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many attempts; try again later",
                )
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address_per_window() {
        let limit = AuthRateLimit::new(3);
        let (a, b) = (IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2]));
        let t0 = Instant::now();
        assert!((0..3).all(|_| limit.hit(a, t0).is_ok()));
        let wait = limit.hit(a, t0).unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(limit.hit(b, t0).is_ok(), "other addresses are not affected");
        assert!(limit.hit(a, t0 + WINDOW).is_ok(), "a new window starts afresh");
        assert!(AuthRateLimit::new(0).hit(a, t0).is_ok());
    }
}
