use actix_web::{HttpResponse, web};
use serde_json::json;

use super::QueryMap;
use crate::actors::presence::{ListOnline, PresenceRegistry};
use crate::domain::input::check_city;
use crate::domain::{Domain, DomainError, users};
use crate::http::error::ApiError;
use crate::http::extract::{Auth, JsonBody};

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
    Auth(who): Auth,
    id: web::Path<String>,
    JsonBody(body): JsonBody,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(users::set_role(&domain, &who, id.into_inner(), &body).await?))
}

/// Users online now, as the realtime side's presence registry knows them.
pub async fn presence(
    _who: Auth,
    query: QueryMap,
    registry: web::Data<actix::Addr<PresenceRegistry>>,
) -> Result<HttpResponse, ApiError> {
    let city = match query.get("city") {
        Some(city) => {
            check_city(city).map_err(|reason| DomainError::invalid("city", reason))?;
            Some(city.clone())
        }
        None => None,
    };
    let items = registry
        .send(ListOnline { city })
        .await
        .map_err(|_| DomainError::Unavailable("presence registry stopped".into()))?;
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}
