use actix_web::{HttpResponse, web};

use super::QueryMap;
use crate::domain::wire::{OnlineUsers, User};
use crate::domain::{Domain, presence, users};
use crate::http::bodies::{PresenceQuery, RoleChange, UserPath};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{Auth, JsonBody, Writer};

/// The signed-in user, email included.
#[utoipa::path(get, path = "/api/users/me", tag = "users", security(("bearer" = [])),
    responses((status = 200, description = "the caller", body = User)))]
pub async fn me(domain: web::Data<Domain>, Auth(who): Auth) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(users::me(&domain, &who).await?))
}

/// A user; the email only to themself and to admins.
#[utoipa::path(get, path = "/api/users/{id}", tag = "users", security(("bearer" = [])),
    params(UserPath),
    responses((status = 200, description = "the user", body = User)))]
pub async fn get_user(
    domain: web::Data<Domain>,
    Auth(who): Auth,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(users::get(&domain, &who, id.into_inner()).await?))
}

/// Changes a user's role (admins only); the ID keeps its prefix.
#[utoipa::path(patch, path = "/api/users/{id}", tag = "users", security(("bearer" = [])),
    params(UserPath),
    request_body = RoleChange,
    responses(
        (status = 200, description = "the user, with the new role", body = User),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorBody),
    ))]
pub async fn set_role(
    domain: web::Data<Domain>,
    Writer(who): Writer,
    id: web::Path<String>,
    JsonBody(body): JsonBody,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(users::set_role(&domain, &who, id.into_inner(), &body).await?))
}

/// Users online now, on every node, as the realtime side knows them.
#[utoipa::path(get, path = "/api/presence", tag = "users", security(("bearer" = [])),
    params(PresenceQuery),
    responses((status = 200, description = "who is online", body = OnlineUsers)))]
pub async fn presence(
    domain: web::Data<Domain>,
    _who: Auth,
    query: QueryMap,
) -> Result<HttpResponse, ApiError> {
    let items = presence::list(&domain, query.get("city").cloned()).await?;
    Ok(HttpResponse::Ok().json(OnlineUsers { items }))
}
