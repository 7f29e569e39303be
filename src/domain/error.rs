//! The domain's failures, and their one translation to what a client is
//! told ([`WireError`]): the REST error body and the socket error ack are
//! both built from it, so the two surfaces cannot drift apart.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::auth::password::HashError;
use crate::db::DbError;

/// What went wrong, in the domain's words.
#[derive(Debug, Clone, thiserror::Error)]
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

impl From<DbError> for DomainError {
    fn from(e: DbError) -> Self {
        match e {
            // The client may retry: the database is down or every
            // connection is busy.
            DbError::Connect(_) | DbError::Unavailable(_) => Self::Unavailable(e.to_string()),
            DbError::Query(e) => e.into(),
            DbError::Migrate(_) | DbError::Checkpointer(_) | DbError::Blocking(_) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

impl From<HashError> for DomainError {
    fn from(e: HashError) -> Self {
        Self::Internal(e.to_string())
    }
}

pub type DomainResult<T> = Result<T, DomainError>;

/// A failure as the contract shows it to a client, over HTTP or a socket.
#[derive(Debug, Clone, PartialEq)]
pub struct WireError {
    /// The HTTP status; sockets have none, but REST and sockets share the
    /// mapping, so it is decided here.
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl WireError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: None }
    }
}

impl From<DomainError> for WireError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Validation(fields) => Self {
                details: Some(json!({ "fields": fields })),
                ..Self::new(422, "validation_failed", "request validation failed")
            },
            DomainError::NotFound(what) => Self::new(404, "not_found", format!("{what} not found")),
            DomainError::Unauthorized { code, message } => Self::new(401, code, message),
            DomainError::Forbidden(message) => Self::new(403, "forbidden", message),
            DomainError::Conflict { code, message } => Self::new(409, code, message),
            // Causes never go to the client. An outage refuses a flood of
            // requests; it is logged once, where the pool notices it
            // (`db::Health`), so each refusal is only a debug line.
            DomainError::Unavailable(cause) => {
                log::debug!(target: "civicpulse::errors", "unavailable: {cause}");
                Self::new(503, "unavailable", "the service is temporarily unavailable")
            }
            // Logged once, here, whichever surface the request came in by.
            DomainError::Internal(cause) => {
                log::error!(target: "civicpulse::errors", "internal error: {cause}");
                Self::new(500, "internal", "internal server error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(e: DomainError) -> WireError {
        WireError::from(e)
    }

    #[test]
    fn each_domain_error_has_its_status_code_and_message() {
        let cases = [
            (DomainError::NotFound("issue"), 404, "not_found", "issue not found"),
            (DomainError::invalid_token(), 401, "invalid_token", "missing, invalid or expired access token"),
            (DomainError::Forbidden("staff only"), 403, "forbidden", "staff only"),
            (DomainError::Conflict { code: "email_taken", message: "taken" }, 409, "email_taken", "taken"),
            (
                DomainError::Unavailable("pool timed out".into()),
                503,
                "unavailable",
                "the service is temporarily unavailable",
            ),
            (DomainError::Internal("secret cause".into()), 500, "internal", "internal server error"),
        ];
        for (error, status, code, message) in cases {
            let w = wire(error);
            assert_eq!((w.status, w.code, w.message.as_str(), w.details), (status, code, message, None));
        }
    }

    #[test]
    fn validation_lists_its_fields_in_details() {
        let w = wire(DomainError::invalid("city", "must be a city slug"));
        assert_eq!(
            (w.status, w.code, w.message.as_str()),
            (422, "validation_failed", "request validation failed")
        );
        assert_eq!(w.details, Some(json!({ "fields": { "city": "must be a city slug" } })));
    }

    #[test]
    fn storage_failures_map_to_unavailable_or_internal() {
        assert!(matches!(DomainError::from(DbError::Blocking("gone".into())), DomainError::Internal(_)));
        assert!(matches!(
            DomainError::from(DbError::Query(diesel::result::Error::NotFound)),
            DomainError::NotFound("resource")
        ));
        let pool = r2d2::Pool::builder()
            .connection_timeout(std::time::Duration::from_millis(1))
            .build_unchecked(Unreachable);
        let timeout = pool.get().map(|_| ()).unwrap_err();
        assert!(matches!(DomainError::from(DbError::Unavailable(timeout)), DomainError::Unavailable(_)));
    }

    /// A connection manager whose database is never there.
    struct Unreachable;

    impl r2d2::ManageConnection for Unreachable {
        type Connection = ();
        type Error = std::io::Error;

        fn connect(&self) -> Result<(), Self::Error> {
            Err(std::io::Error::other("unreachable"))
        }

        fn is_valid(&self, _: &mut ()) -> Result<(), Self::Error> {
            Ok(())
        }

        fn has_broken(&self, _: &mut ()) -> bool {
            false
        }
    }
}
