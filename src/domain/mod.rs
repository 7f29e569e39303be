//! The operations of CivicPulse, one function each, shared by the REST
//! handlers and the socket events. Each validates, writes, and only after
//! the write has committed publishes a [`events::DomainEvent`] to the hub.

pub mod events;
pub mod input;
pub mod issues;
pub mod messages;
pub mod users;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::auth::{Claims, TokenKeys};
use crate::db::Db;
use events::EventHub;

/// What went wrong, in the domain's words; `http::error` maps each to a
/// status and the contract's error shape.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("validation failed")]
    Validation(BTreeMap<String, String>),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Unauthorized { code: &'static str, message: &'static str },
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{message}")]
    Conflict { code: &'static str, message: &'static str },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl DomainError {
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Self::Validation(BTreeMap::from([(field.to_string(), reason.into())]))
    }

    pub fn invalid_token() -> Self {
        Self::Unauthorized { code: "invalid_token", message: "missing, invalid or expired access token" }
    }
}

impl From<diesel::result::Error> for DomainError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::NotFound => Self::NotFound("resource"),
            // Only reachable when a valid token names a user that no longer
            // exists (e.g. the database was reset under a long-lived secret).
            Error::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => Self::invalid_token(),
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                Self::Unavailable(info.message().to_string())
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

pub type DomainResult<T> = Result<T, DomainError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Citizen,
    Official,
    Admin,
}

impl Role {
    pub const NAMES: &'static [&'static str] = &["citizen", "official", "admin"];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Citizen => "citizen",
            Role::Official => "official",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "citizen" => Some(Role::Citizen),
            "official" => Some(Role::Official),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Officials and admins run the city's side: they triage issues.
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Official | Role::Admin)
    }
}

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
    pub refresh_ttl: std::time::Duration,
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
