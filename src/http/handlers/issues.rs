use actix_web::{HttpResponse, web};

use super::QueryMap;
use crate::domain::{Domain, issues};
use crate::http::error::ApiError;
use crate::http::extract::{Auth, JsonBody, Writer};

pub async fn list(domain: web::Data<Domain>, _who: Auth, query: QueryMap) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(issues::list(&domain, &query).await?))
}

pub async fn create(
    domain: web::Data<Domain>,
    Writer(who): Writer,
    JsonBody(body): JsonBody,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(issues::create(&domain, &who, &body).await?))
}

/// Open to everyone, signed in or not.
pub async fn get(domain: web::Data<Domain>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(issues::get(&domain, id.into_inner()).await?))
}

pub async fn update(
    domain: web::Data<Domain>,
    Writer(who): Writer,
    id: web::Path<String>,
    JsonBody(body): JsonBody,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(issues::update(&domain, &who, id.into_inner(), &body).await?))
}

pub async fn upvote(
    domain: web::Data<Domain>,
    Writer(who): Writer,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(issues::upvote(&domain, &who, id.into_inner(), true).await?))
}

pub async fn withdraw_upvote(
    domain: web::Data<Domain>,
    Writer(who): Writer,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(issues::upvote(&domain, &who, id.into_inner(), false).await?))
}
