use actix_web::{HttpResponse, web};

use crate::domain::{Domain, users};
use crate::http::error::ApiError;
use crate::http::extract::JsonBody;
use crate::http::rate_limit::WithinAuthLimit;

pub async fn register(
    _: WithinAuthLimit,
    domain: web::Data<Domain>,
    JsonBody(body): JsonBody,
) -> Result<HttpResponse, ApiError> {
    let new = users::NewUser::from_json(&body)?;
    Ok(HttpResponse::Created().json(users::register(&domain, new).await?))
}

pub async fn login(
    _: WithinAuthLimit,
    domain: web::Data<Domain>,
    JsonBody(body): JsonBody,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(users::login(&domain, &body).await?))
}

pub async fn refresh(
    _: WithinAuthLimit,
    domain: web::Data<Domain>,
    JsonBody(body): JsonBody,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(users::refresh(&domain, &body).await?))
}

pub async fn logout(domain: web::Data<Domain>, JsonBody(body): JsonBody) -> Result<HttpResponse, ApiError> {
    users::logout(&domain, &body).await?;
    Ok(HttpResponse::NoContent().finish())
}
