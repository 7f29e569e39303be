use actix_web::{HttpResponse, web};

use super::QueryMap;
use crate::domain::wire::{Issue, Page, UpvoteState};
use crate::domain::{Domain, issues};
use crate::http::bodies::{IssueChanges, IssuePath, IssueQuery, NewIssue};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{Auth, JsonBody, Writer};

/// Lists issues, newest or most upvoted first, a page at a time.
#[utoipa::path(get, path = "/api/issues", tag = "issues", security(("bearer" = [])),
    params(IssueQuery),
    responses((status = 200, description = "a page of issues", body = Page<Issue>)))]
pub async fn list_issues(
    domain: web::Data<Domain>,
    _who: Auth,
    query: QueryMap,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(issues::list(&domain, &query).await?))
}

/// Reports an issue; broadcasts `issue:created`.
#[utoipa::path(post, path = "/api/issues", tag = "issues", security(("bearer" = [])),
    request_body = NewIssue,
    responses((status = 201, description = "the new issue", body = Issue)))]
pub async fn create_issue(
    domain: web::Data<Domain>,
    Writer(who): Writer,
    JsonBody(body): JsonBody,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(issues::create(&domain, &who, &body).await?))
}

/// An issue; open to everyone, signed in or not.
#[utoipa::path(get, path = "/api/issues/{id}", tag = "issues",
    params(IssuePath),
    responses((status = 200, description = "the issue", body = Issue)))]
pub async fn get_issue(domain: web::Data<Domain>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(issues::get(&domain, id.into_inner()).await?))
}

/// Edits or triages an issue; broadcasts `issue:updated` when its title,
/// status, priority or assignment changed.
#[utoipa::path(patch, path = "/api/issues/{id}", tag = "issues", security(("bearer" = [])),
    params(IssuePath),
    request_body = IssueChanges,
    responses(
        (status = 200, description = "the issue as it is now", body = Issue),
        (status = 403, description = "`forbidden`: not the reporter nor staff, a reporter changing \
            status, priority or assignment, or an issue no longer open", body = ErrorBody),
    ))]
pub async fn update_issue(
    domain: web::Data<Domain>,
    Writer(who): Writer,
    id: web::Path<String>,
    JsonBody(body): JsonBody,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(issues::update(&domain, &who, id.into_inner(), &body).await?))
}

/// Upvotes an issue, once per user; broadcasts `issue:upvoted` when the
/// count changed.
#[utoipa::path(post, path = "/api/issues/{id}/upvote", tag = "issues", security(("bearer" = [])),
    params(IssuePath),
    responses((status = 200, description = "the count, upvoted", body = UpvoteState)))]
pub async fn upvote(
    domain: web::Data<Domain>,
    Writer(who): Writer,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(issues::upvote(&domain, &who, id.into_inner(), true).await?))
}

/// Withdraws the caller's upvote (also when there was none).
#[utoipa::path(delete, path = "/api/issues/{id}/upvote", tag = "issues", security(("bearer" = [])),
    params(IssuePath),
    responses((status = 200, description = "the count, not upvoted", body = UpvoteState)))]
pub async fn withdraw_upvote(
    domain: web::Data<Domain>,
    Writer(who): Writer,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(issues::upvote(&domain, &who, id.into_inner(), false).await?))
}
