//! The operations of CivicPulse, one function each, shared by the REST
//! handlers and the socket events. Each validates, writes, and only after
//! the write has committed publishes a [`events::DomainEvent`] to the hub.

mod error;
pub mod events;
pub mod input;
pub mod issues;
pub mod messages;
pub mod presence;
pub mod schema;
pub mod users;
pub mod wire;

use std::sync::Arc;

pub use crate::auth::Role;
use crate::auth::{Claims, Revocations, TokenKeys};
use crate::db::{AnyConnection, Db};
pub use error::{DomainError, DomainResult, WireError};
use events::EventHub;

/// The signed-in user a request or socket acts for, as the access token
/// says. Permission checks re-read the current role from the database.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub display_name: String,
    pub role: Role,
    pub city: Option<String>,
}

impl From<Claims> for Principal {
    fn from(c: Claims) -> Self {
        Self { user_id: c.sub, display_name: c.name, role: c.role, city: c.city }
    }
}

/// Everything the operations need, cloned cheaply into each handler.
#[derive(Clone)]
pub struct Domain {
    pub db: Db,
    /// Stores chat messages in batches (see `messages::submit`).
    pub messages: messages::Writer,
    pub tokens: TokenKeys,
    pub hub: Arc<EventHub>,
    /// Who is online, as the realtime side knows it.
    pub presence: presence::Presence,
    pub refresh_ttl: std::time::Duration,
    /// Access tokens revoked before their expiry (logout, stolen refresh
    /// tokens), and who ends the sockets they carried.
    pub revocations: Arc<Revocations>,
}

impl Domain {
    /// Checks an access token as every request and socket must: signed,
    /// unexpired, and not revoked.
    pub fn verify_access(&self, token: &str) -> DomainResult<Claims> {
        let claims = self.tokens.verify(token).map_err(|_| DomainError::invalid_token())?;
        if self.revocations.is_revoked(&claims) {
            return Err(DomainError::Unauthorized {
                code: "token_revoked",
                message: "this sign-in has ended",
            });
        }
        Ok(claims)
    }

    /// Until when a token issued now may be accepted (a revocation must
    /// be kept that long).
    pub fn tokens_live_until(&self) -> i64 {
        chrono::Utc::now().timestamp() + self.tokens.ttl().as_secs() as i64 + TokenKeys::LEEWAY_SECS as i64
    }

    /// Runs query code on the blocking pool ([`Db::run`]), failing as the
    /// domain does; its closures need no annotation of their error type.
    pub(crate) async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut AnyConnection) -> DomainResult<T> + Send + 'static,
    ) -> DomainResult<T> {
        self.db.run(f).await
    }
}

/// Runs CPU-heavy work (Argon2) off the async workers, at most one job per
/// core at a time: each hash takes 19 MiB, so a burst of sign-ins must queue
/// here rather than take a blocking thread and 19 MiB apiece.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> DomainResult<T> {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    let permits = PERMITS.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    });
    let _permit =
        permits.acquire().await.map_err(|_| DomainError::Internal("hashing semaphore closed".into()))?;
    actix_web::web::block(f).await.map_err(|e| DomainError::Internal(format!("blocking task failed: {e}")))
}
