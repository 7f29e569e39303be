use actix_web::{HttpResponse, web};

use super::QueryMap;
use crate::domain::{Domain, messages};
use crate::http::error::ApiError;
use crate::http::extract::{JsonBody, Writer};

/// Chat history is readable by anyone who can read the issue.
pub async fn history(
    domain: web::Data<Domain>,
    id: web::Path<String>,
    query: QueryMap,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(messages::history(&domain, id.into_inner(), &query).await?))
}

pub async fn post(
    domain: web::Data<Domain>,
    Writer(who): Writer,
    id: web::Path<String>,
    JsonBody(body): JsonBody,
) -> Result<HttpResponse, ApiError> {
    let content = messages::content_from_json(&body)?;
    Ok(HttpResponse::Created().json(messages::post(&domain, &who, id.into_inner(), content).await?))
}

pub async fn react(
    domain: web::Data<Domain>,
    Writer(who): Writer,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (message_id, emoji) = path.into_inner();
    Ok(HttpResponse::Ok().json(messages::react(&domain, &who, message_id, emoji, true).await?))
}

pub async fn unreact(
    domain: web::Data<Domain>,
    Writer(who): Writer,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (message_id, emoji) = path.into_inner();
    Ok(HttpResponse::Ok().json(messages::react(&domain, &who, message_id, emoji, false).await?))
}
