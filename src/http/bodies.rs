//! What requests carry, as the OpenAPI document shows it: bodies, path and
//! query parameters. The handlers read bodies as JSON values and query
//! strings as maps, and the domain checks them field by field (so that one
//! 422 names every bad field, and socket payloads go through the same
//! rules); these types are never built, they describe that checking. Their
//! limits are the domain's own constants.

#![allow(dead_code, reason = "read by the OpenAPI derives only")]

use utoipa::openapi::Object;
use utoipa::{IntoParams, ToSchema};

use crate::domain::input::Text;
use crate::domain::schema::{self, WHITE_SPACE, or_null as nullable, text};
use crate::domain::{issues, messages, users};

fn limited(rule: Text) -> Object {
    text(rule.min, rule.max)
}

fn title() -> Object {
    limited(issues::TITLE)
}

fn description() -> Object {
    limited(issues::DESCRIPTION)
}

fn content() -> Object {
    limited(messages::CONTENT)
}

fn display_name() -> Object {
    limited(users::DISPLAY_NAME)
}

fn refresh_token() -> Object {
    limited(users::REFRESH_TOKEN)
}

/// Taken as typed (not trimmed), any characters.
fn password() -> Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .min_length(Some(users::PASSWORD.min))
        .max_length(Some(users::PASSWORD.max))
        .build()
}

/// As `input::check_email` accepts it (after trimming, as `text`).
fn email() -> Object {
    let other = format!(r"[^{WHITE_SPACE}@\u0000]");
    let ws = format!("[{WHITE_SPACE}]*");
    // Only this, not the `email` format: `a@.` is taken.
    string(format!(r"^{ws}{other}+@{other}*\.{other}*{ws}$"), "an email address, at most 254 bytes")
}

/// As `input::check_url` accepts it: http(s), at most 2048 bytes (after
/// trimming, as `text`).
fn avatar_url() -> Object {
    let visible = format!(r"[^{WHITE_SPACE}\u0000]");
    let ws = format!("[{WHITE_SPACE}]*");
    // The scheme and at least one more character.
    nullable(string(
        format!(r"^{ws}(https://|http://[^\u0000])[^\u0000]{{0,2039}}{visible}{ws}$"),
        "an http(s) URL of at most 2048 bytes, or null",
    ))
}

fn string(pattern: String, description: &str) -> Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .build()
}

fn description_or_null() -> Object {
    nullable(description())
}

fn priority_or_null() -> Object {
    nullable(schema::priority())
}

fn status_or_null() -> Object {
    nullable(schema::status())
}

/// `POST /api/auth/register`. Self-registration always makes a citizen.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    #[schema(schema_with = email)]
    email: String,
    #[schema(schema_with = password)]
    password: String,
    #[schema(schema_with = display_name)]
    display_name: String,
    #[schema(schema_with = schema::city_or_null)]
    city: Option<String>,
    #[schema(schema_with = avatar_url)]
    avatar_url: Option<String>,
}

/// `POST /api/auth/login`. A wrong email or password is 401, whatever
/// the strings are.
#[derive(ToSchema)]
pub struct Credentials {
    email: String,
    password: String,
}

/// `POST /api/auth/refresh` and `/api/auth/logout`.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRequest {
    #[schema(schema_with = refresh_token)]
    refresh_token: String,
}

/// `PATCH /api/users/{id}` (admins only).
#[derive(ToSchema)]
pub struct RoleChange {
    #[schema(schema_with = schema::role)]
    role: String,
}

/// `POST /api/issues`. The city defaults to the reporter's (422 if they
/// have none); the priority to `medium`.
#[derive(ToSchema)]
pub struct NewIssue {
    #[schema(schema_with = title)]
    title: String,
    #[schema(schema_with = description_or_null)]
    description: Option<String>,
    #[schema(schema_with = schema::city_or_null)]
    city: Option<String>,
    #[schema(schema_with = schema::category)]
    category: String,
    #[schema(schema_with = priority_or_null)]
    priority: Option<String>,
}

/// `PATCH /api/issues/{id}`: absent (or, but for `title` and
/// `assignedTo`, null) fields stay as they are. Reporters may change
/// `title` and `description` while the issue is open; officials and
/// admins everything. `assignedTo` names an official or admin (422
/// otherwise), or is null to unassign.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssueChanges {
    #[schema(schema_with = title)]
    title: Option<String>,
    #[schema(schema_with = description_or_null)]
    description: Option<String>,
    #[schema(schema_with = status_or_null)]
    status: Option<String>,
    #[schema(schema_with = priority_or_null)]
    priority: Option<String>,
    #[schema(schema_with = schema::user_id_or_null)]
    assigned_to: Option<String>,
}

/// `POST /api/issues/{id}/messages`.
#[derive(ToSchema)]
pub struct NewMessage {
    #[schema(schema_with = content)]
    content: String,
}

/// A user, by ID. A malformed ID is a 404, like an unknown one.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    #[param(schema_with = schema::user_id)]
    id: String,
}

/// An issue, by ID. A malformed ID is a 404, like an unknown one.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IssuePath {
    #[param(schema_with = schema::issue_id)]
    id: String,
}

/// A message and an emoji: one fully-qualified emoji of the Unicode emoji
/// data (👍, ❤️, 👍🏽 …), percent-encoded; anything else is 422.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ReactionPath {
    #[param(schema_with = schema::message_id)]
    id: String,
    #[param(example = "👍")]
    emoji: String,
}

/// Filters and paging of `GET /api/issues`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct IssueQuery {
    #[param(schema_with = schema::city)]
    city: Option<String>,
    #[param(schema_with = schema::category)]
    category: Option<String>,
    #[param(schema_with = schema::status)]
    status: Option<String>,
    #[param(schema_with = schema::priority)]
    priority: Option<String>,
    #[param(schema_with = schema::user_id)]
    reported_by: Option<String>,
    #[param(schema_with = schema::user_id)]
    assigned_to: Option<String>,
    /// `new` (the default): newest first; `top`: most upvoted first.
    #[param(schema_with = sort)]
    sort: Option<String>,
    /// 1 to 100, 20 by default.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// The `nextCursor` of the page before, of the same `sort` (422 for
    /// anything else). Empty is the same as absent.
    cursor: Option<String>,
}

fn sort() -> Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["new", "top"]))
        .build()
}

fn message_id_or_empty() -> Object {
    let mut object = schema::message_id();
    object.pattern = object.pattern.map(|p| format!("^$|{p}"));
    object
}

/// Paging of an issue's chat history, back in time.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// The `nextCursor` of the page after (a message ID): older messages.
    /// Empty is the same as absent.
    #[param(schema_with = message_id_or_empty)]
    before: Option<String>,
    /// 1 to 100, 50 by default.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PresenceQuery {
    /// Only the users of this city.
    #[param(schema_with = schema::city)]
    city: Option<String>,
}
