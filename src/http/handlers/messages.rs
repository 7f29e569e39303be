use actix_web::{HttpResponse, web};

use super::QueryMap;
use crate::domain::wire::{Message, Page, ReactionCounts};
use crate::domain::{Domain, messages};
use crate::http::bodies::{HistoryQuery, IssuePath, NewMessage, ReactionPath};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{JsonBody, Writer};

/// An issue's chat history, oldest first within a page; readable by anyone
/// who can read the issue.
#[utoipa::path(get, path = "/api/issues/{id}/messages", tag = "messages",
    params(IssuePath, HistoryQuery),
    responses((status = 200, description = "a page of messages", body = Page<Message>)))]
pub async fn history(
    domain: web::Data<Domain>,
    id: web::Path<String>,
    query: QueryMap,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(messages::history(&domain, id.into_inner(), &query).await?))
}

/// Posts to an issue's chat; emits `message:new` to its room. A 201 means
/// stored once, a 503 not stored.
#[utoipa::path(post, path = "/api/issues/{id}/messages", tag = "messages", security(("bearer" = [])),
    params(IssuePath),
    request_body = NewMessage,
    responses((status = 201, description = "the stored message", body = Message)))]
pub async fn post_message(
    domain: web::Data<Domain>,
    Writer(who): Writer,
    id: web::Path<String>,
    JsonBody(body): JsonBody,
) -> Result<HttpResponse, ApiError> {
    let content = messages::content_from_json(&body)?;
    Ok(HttpResponse::Created().json(messages::post(&domain, &who, id.into_inner(), content).await?))
}

/// Adds the caller's reaction (idempotent); emits `message:reaction` when
/// the counts changed.
#[utoipa::path(put, path = "/api/messages/{id}/reactions/{emoji}", tag = "messages", security(("bearer" = [])),
    params(ReactionPath),
    responses(
        (status = 200, description = "the message's counts", body = ReactionCounts),
        (status = 422, description = "`validation_failed`: `emoji` is not one emoji", body = ErrorBody),
    ))]
pub async fn react(
    domain: web::Data<Domain>,
    Writer(who): Writer,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (message_id, emoji) = path.into_inner();
    Ok(HttpResponse::Ok().json(messages::react(&domain, &who, message_id, emoji, true).await?))
}

/// Removes the caller's reaction (also when there was none).
#[utoipa::path(delete, path = "/api/messages/{id}/reactions/{emoji}", tag = "messages", security(("bearer" = [])),
    params(ReactionPath),
    responses(
        (status = 200, description = "the message's counts", body = ReactionCounts),
        (status = 422, description = "`validation_failed`: `emoji` is not one emoji", body = ErrorBody),
    ))]
pub async fn unreact(
    domain: web::Data<Domain>,
    Writer(who): Writer,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (message_id, emoji) = path.into_inner();
    Ok(HttpResponse::Ok().json(messages::react(&domain, &who, message_id, emoji, false).await?))
}
