use actix_web::{HttpResponse, web};
use serde_json::json;

use super::QueryMap;
use crate::domain::{Domain, presence, users};
use crate::http::error::ApiError;
use crate::http::extract::{Auth, JsonBody, Writer};

pub async fn me(domain: web::Data<Domain>, Auth(who): Auth) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(users::me(&domain, &who).await?))
}

pub async fn get(
    domain: web::Data<Domain>,
    Auth(who): Auth,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(users::get(&domain, &who, id.into_inner()).await?))
}

pub async fn set_role(
    domain: web::Data<Domain>,
    Writer(who): Writer,
    id: web::Path<String>,
    JsonBody(body): JsonBody,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(users::set_role(&domain, &who, id.into_inner(), &body).await?))
}

/// Users online now, as the realtime side knows them.
pub async fn presence(
    domain: web::Data<Domain>,
    _who: Auth,
    query: QueryMap,
) -> Result<HttpResponse, ApiError> {
    let items = presence::list(&domain, query.get("city").cloned()).await?;
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}
