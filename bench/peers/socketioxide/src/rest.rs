//! The REST routes the benchmarks use, with axum, answering as the Node
//! peer does (the contract's error shape `{"error":{"code","message"}}`).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;

use crate::auth::{self, Claims, Keys};
use crate::payload;
use crate::store::{self, Db, Issue, NewUser};

/// Access-token lifetime of the tokens `register` hands out (as the Node peer).
const ACCESS_TTL_SECS: u64 = 900;

pub fn access_ttl() -> std::time::Duration {
    std::time::Duration::from_secs(ACCESS_TTL_SECS)
}

pub struct App<A: Adapter> {
    pub db: Arc<Db>,
    pub keys: Arc<Keys>,
    pub io: SocketIo<A>,
}

impl<A: Adapter> Clone for App<A> {
    fn clone(&self) -> Self {
        Self { db: self.db.clone(), keys: self.keys.clone(), io: self.io.clone() }
    }
}

pub fn router<A: Adapter>(app: App<A>) -> Router {
    Router::new()
        .route("/healthz", get(async || Json(json!({ "status": "ok" }))))
        .route("/api/auth/register", post(register::<A>))
        .route("/api/issues", post(create_issue::<A>).get(list_issues::<A>))
        .route("/api/issues/{id}", get(get_issue::<A>))
        .route("/api/issues/{id}/upvote", post(upvote::<A>))
        .with_state(app)
}

pub struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": { "code": self.1, "message": self.2 } }))).into_response()
    }
}

impl ApiError {
    fn not_found() -> Self {
        Self(StatusCode::NOT_FOUND, "not_found", "issue not found".into())
    }
    fn invalid(message: &str) -> Self {
        Self(StatusCode::BAD_REQUEST, "validation_failed", message.into())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        log::error!("storage: {e}");
        Self(StatusCode::INTERNAL_SERVER_ERROR, "internal", "storage".into())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        Self(StatusCode::BAD_REQUEST, "validation_failed", e.body_text())
    }
}

/// The caller's access token (`Authorization: Bearer …`), verified.
pub struct User(Claims);

impl<S: Send + Sync> FromRequestParts<S> for User
where
    Arc<Keys>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let keys = Arc::<Keys>::from_ref(state);
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        keys.verify(token)
            .map(User)
            .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "invalid_token", "invalid token".into()))
    }
}

impl<A: Adapter> FromRef<App<A>> for Arc<Keys> {
    fn from_ref(app: &App<A>) -> Self {
        app.keys.clone()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Register {
    email: String,
    password: String,
    display_name: String,
    city: Option<String>,
}

async fn register<A: Adapter>(
    State(app): State<App<A>>,
    body: Result<Json<Register>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    if body.password.is_empty() || body.display_name.trim().is_empty() || !body.email.contains('@') {
        return Err(ApiError::invalid("email, password and displayName are required"));
    }
    let password = body.password.clone();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|e| e.to_string())
        .and_then(|h| h)
        .map_err(|e| {
            log::error!("register: {e}");
            ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", "cannot hash".into())
        })?;
    let id = app.db.new_id("usr_");
    let email = body.email.to_lowercase();
    let created = app
        .db
        .insert_user(&NewUser {
            id: &id,
            email: &email,
            password_hash: &hash,
            display_name: &body.display_name,
            city: body.city.as_deref(),
            role: "citizen",
            created_at: &store::now(),
        })
        .await?;
    if !created {
        return Err(ApiError(StatusCode::CONFLICT, "email_taken", "email taken".into()));
    }
    let token = app.keys.issue(&id, &body.display_name, "citizen", body.city.as_deref());
    let refresh: [u8; 32] = rand::random();
    let refresh: String = refresh.iter().map(|b| format!("{b:02x}")).collect();
    let user =
        json!({ "userId": id, "displayName": body.display_name, "city": body.city, "role": "citizen" });
    Ok((StatusCode::CREATED, Json(json!({ "user": user, "accessToken": token, "refreshToken": refresh })))
        .into_response())
}

#[derive(Deserialize)]
struct NewIssue {
    title: String,
    #[serde(default)]
    description: String,
    category: String,
    priority: Option<String>,
    city: Option<String>,
}

async fn create_issue<A: Adapter>(
    State(app): State<App<A>>,
    User(user): User,
    body: Result<Json<NewIssue>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    if body.title.trim().is_empty() || body.category.trim().is_empty() {
        return Err(ApiError::invalid("title and category are required"));
    }
    let now = store::now();
    let issue = Issue {
        issue_id: app.db.new_id("iss_"),
        title: Some(body.title),
        description: Some(body.description),
        city: body.city.or(user.city),
        category: Some(body.category),
        priority: Some(body.priority.unwrap_or_else(|| "medium".into())),
        status: Some("open".into()),
        upvotes: 0,
        reported_by: Some(user.sub),
        assigned_to: None,
        created_at: Some(now.clone()),
        updated_at: Some(now),
    };
    app.db.insert_issue(&issue).await?;
    let created = json!({
        "issueId": issue.issue_id, "title": issue.title, "city": issue.city, "category": issue.category,
        "priority": issue.priority, "status": "open", "upvotes": 0, "reportedBy": issue.reported_by,
        "createdAt": issue.created_at,
    });
    app.io.emit("issue:created", &created).await.ok();
    Ok((StatusCode::CREATED, Json(issue)).into_response())
}

async fn get_issue<A: Adapter>(
    State(app): State<App<A>>,
    _: User,
    Path(id): Path<String>,
) -> Result<Json<Issue>, ApiError> {
    app.db.issue(&id).await?.map(Json).ok_or_else(ApiError::not_found)
}

#[derive(Deserialize)]
struct Page {
    limit: Option<String>,
}

async fn list_issues<A: Adapter>(
    State(app): State<App<A>>,
    _: User,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let limit = payload::page_limit(page.limit.as_deref());
    let mut items = app.db.issues(limit).await?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next = if more { items.last().map(|i| i.issue_id.clone()) } else { None };
    Ok(Json(json!({ "items": items, "nextCursor": next })))
}

/// Everyone gets `issue:upvoted` when the count changed.
async fn upvote<A: Adapter>(
    State(app): State<App<A>>,
    User(user): User,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !app.db.issue_exists(&id).await? {
        return Err(ApiError::not_found());
    }
    let (changed, upvotes) = app.db.upvote(&id, &user.sub).await?;
    if changed {
        let event = json!({ "issueId": id, "upvotes": upvotes, "upvotedBy": user.sub, "upvoted": true });
        app.io.emit("issue:upvoted", &event).await.ok();
    }
    Ok(Json(json!({ "issueId": id, "upvotes": upvotes, "upvoted": true })))
}
