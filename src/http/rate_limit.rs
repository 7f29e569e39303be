//! Request limits: per address on the credential endpoints (register,
//! login, refresh), so one client cannot guess passwords or mint accounts
//! at full speed; and per user and per address on every other write.
//! Refusals are 429 with `Retry-After`.

use std::future::{Ready, ready};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};

use super::error::ApiError;
use crate::limits::KeyedBucket;
use crate::metrics::Metrics;

pub struct AuthRateLimit {
    /// `None`: no limit. Shared with the Admin UI's sign-in on `/admin`.
    bucket: Option<Arc<KeyedBucket<IpAddr>>>,
}

impl AuthRateLimit {
    /// `per_minute` 0 turns the limit off; a client may spend the whole
    /// minute's allowance at once.
    pub fn new(per_minute: u32) -> Self {
        Self::shared(KeyedBucket::per_minute(per_minute).map(Arc::new))
    }

    pub fn shared(bucket: Option<Arc<KeyedBucket<IpAddr>>>) -> Self {
        Self { bucket }
    }
}

/// Extractor: fails with 429 and `Retry-After` when the caller's address is
/// over the limit.
pub struct WithinAuthLimit;

impl FromRequest for WithinAuthLimit {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let limit = req.app_data::<web::Data<AuthRateLimit>>().and_then(|l| l.bucket.as_ref());
        let (Some(bucket), Some(peer)) = (limit, req.peer_addr()) else {
            return ready(Ok(WithinAuthLimit));
        };
        ready(
            bucket
                .check(&peer.ip())
                .map(|()| WithinAuthLimit)
                .map_err(|wait| too_many(wait, "too many attempts; try again later")),
        )
    }
}

/// Limits on REST writes (creating, changing, upvoting, posting, reacting),
/// checked by the `Writer` extractor.
pub struct WriteLimits {
    users: Option<KeyedBucket<String>>,
    addresses: Option<KeyedBucket<IpAddr>>,
    metrics: Arc<Metrics>,
}

impl WriteLimits {
    pub fn from_config(config: &crate::config::Config, metrics: Arc<Metrics>) -> Self {
        Self {
            users: KeyedBucket::new(config.rest_user_write_rate, config.rest_user_write_burst),
            addresses: KeyedBucket::new(config.rest_address_write_rate, config.rest_address_write_burst),
            metrics,
        }
    }

    /// One write by `user` from `peer`, or the 429 to answer.
    pub fn check(&self, user: &str, peer: Option<IpAddr>) -> Result<(), ApiError> {
        // The address's bucket is only spent by writes the user may make.
        let by_user = self.users.as_ref().map_or(Ok(()), |b| b.check(&user.to_string()));
        let checked = by_user.and_then(|()| match (&self.addresses, peer) {
            (Some(bucket), Some(ip)) => bucket.check(&ip),
            _ => Ok(()),
        });
        checked.map_err(|wait| {
            // Logged by the access log; counting is enough here.
            self.metrics.rest_writes_refused.fetch_add(1, Ordering::Relaxed);
            too_many(wait, "too many writes; slow down")
        })
    }
}

fn too_many(wait: Duration, message: &'static str) -> ApiError {
    ApiError {
        // Whole seconds, rounded up: a client that waits this long gets in.
        retry_after: Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
        ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address() {
        let limit = AuthRateLimit::new(3);
        let bucket = limit.bucket.as_ref().unwrap();
        let (a, b) = (IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2]));
        assert!((0..3).all(|_| bucket.check(&a).is_ok()));
        let wait = bucket.check(&a).unwrap_err();
        assert!(wait <= Duration::from_secs(20), "one attempt back every 20 s: {wait:?}");
        assert!(bucket.check(&b).is_ok(), "other addresses are not affected");
        assert!(AuthRateLimit::new(0).bucket.is_none());
        assert_eq!(too_many(Duration::from_millis(1500), "x").retry_after, Some(2));
    }
}
