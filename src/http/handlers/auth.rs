use actix_web::{HttpResponse, web};

use crate::domain::users::{Session, TokenPair};
use crate::domain::{Domain, users};
use crate::http::bodies::{Credentials, RefreshRequest, Registration};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::JsonBody;
use crate::http::rate_limit::WithinAuthLimit;

/// Creates a citizen's account and signs them in.
#[utoipa::path(post, path = "/api/auth/register", tag = "auth",
    request_body = Registration,
    responses(
        (status = 201, description = "the new account, signed in", body = Session),
        (status = 409, description = "`email_taken`", body = ErrorBody),
    ))]
pub async fn register(
    _: WithinAuthLimit,
    domain: web::Data<Domain>,
    JsonBody(body): JsonBody,
) -> Result<HttpResponse, ApiError> {
    let new = users::NewUser::from_json(&body)?;
    Ok(HttpResponse::Created().json(users::register(&domain, new).await?))
}

/// Signs in with email and password.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth",
    request_body = Credentials,
    responses(
        (status = 200, description = "signed in", body = Session),
        (status = 401, description = "`invalid_credentials`", body = ErrorBody),
    ))]
pub async fn login(
    _: WithinAuthLimit,
    domain: web::Data<Domain>,
    JsonBody(body): JsonBody,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(users::login(&domain, &body).await?))
}

/// Exchanges a refresh token for a new pair; the old one is used up. A
/// token that was already used revokes every sign-in of its user.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "a new pair", body = TokenPair),
        (status = 401, description = "`invalid_refresh_token`, `refresh_token_reused`", body = ErrorBody),
    ))]
pub async fn refresh(
    _: WithinAuthLimit,
    domain: web::Data<Domain>,
    JsonBody(body): JsonBody,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(users::refresh(&domain, &body).await?))
}

/// Ends the sign-in of a refresh token (an unknown or dead one too).
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    request_body = RefreshRequest,
    responses((status = 204, description = "signed out")))]
pub async fn logout(domain: web::Data<Domain>, JsonBody(body): JsonBody) -> Result<HttpResponse, ApiError> {
    users::logout(&domain, &body).await?;
    Ok(HttpResponse::NoContent().finish())
}
