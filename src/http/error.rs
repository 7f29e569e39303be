//! The one error type of the HTTP layer, rendered in the contract's shape:
//! `{"error": {"code", "message", "details"?}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Value, json};

use crate::domain::DomainError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Box<Value>>,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: None, retry_after: None }
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_request", message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    pub fn body(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(details) = &self.details {
            error["details"] = (**details).clone();
        }
        json!({ "error": error })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        let retry_after = self.retry_after.or((self.status == StatusCode::SERVICE_UNAVAILABLE).then_some(1));
        if let Some(seconds) = retry_after {
            response.insert_header(("Retry-After", seconds.to_string()));
        }
        response.json(self.body())
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Validation(fields) => Self {
                details: Some(Box::new(json!({ "fields": fields }))),
                ..Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    "request validation failed",
                )
            },
            DomainError::NotFound(what) => {
                Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
            }
            DomainError::Unauthorized { code, message } => Self::new(StatusCode::UNAUTHORIZED, code, message),
            DomainError::Forbidden(message) => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
            DomainError::Conflict { code, message } => Self::new(StatusCode::CONFLICT, code, message),
            DomainError::Unavailable(cause) => {
                log::warn!(target: "civicpulse::http", "database unavailable: {cause}");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the service is temporarily unavailable",
                )
            }
            DomainError::Internal(cause) => {
                // The cause goes to the log, never to the client.
                log::error!(target: "civicpulse::http", "internal error: {cause}");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error")
            }
        }
    }
}
