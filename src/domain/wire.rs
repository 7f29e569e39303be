//! The shapes clients see (API.md), built from stored rows.

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::presence::OnlineUser;
use super::schema;

use crate::db::models::{IssueRow, MessageRow, UserRow};
use crate::timestamp::format_ms;

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[schema(schema_with = schema::user_id)]
    pub user_id: String,
    /// Only shown to the user themself and to admins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub display_name: String,
    #[schema(required)]
    pub avatar_url: Option<String>,
    #[schema(schema_with = schema::city_or_null, required)]
    pub city: Option<String>,
    #[schema(schema_with = schema::role)]
    pub role: String,
    #[schema(schema_with = schema::timestamp)]
    pub created_at: String,
}

impl User {
    /// `with_email` is true for the user themself and for admins.
    pub fn from_row(row: UserRow, with_email: bool) -> Self {
        Self {
            user_id: row.id,
            email: with_email.then_some(row.email),
            display_name: row.display_name,
            avatar_url: row.avatar_url,
            city: row.city,
            role: row.role,
            created_at: format_ms(row.created_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Issue {
    #[schema(schema_with = schema::issue_id)]
    pub issue_id: String,
    pub title: String,
    pub description: String,
    #[schema(schema_with = schema::city)]
    pub city: String,
    #[schema(schema_with = schema::category)]
    pub category: String,
    #[schema(schema_with = schema::priority)]
    pub priority: String,
    #[schema(schema_with = schema::status)]
    pub status: String,
    #[schema(minimum = 0)]
    pub upvotes: i64,
    #[schema(schema_with = schema::user_id)]
    pub reported_by: String,
    #[schema(schema_with = schema::user_id_or_null, required)]
    pub assigned_to: Option<String>,
    #[schema(schema_with = schema::timestamp)]
    pub created_at: String,
    #[schema(schema_with = schema::timestamp)]
    pub updated_at: String,
}

impl From<IssueRow> for Issue {
    fn from(row: IssueRow) -> Self {
        Self {
            issue_id: row.id,
            title: row.title,
            description: row.description,
            city: row.city,
            category: row.category,
            priority: row.priority,
            status: row.status,
            upvotes: row.upvotes,
            reported_by: row.reported_by,
            assigned_to: row.assigned_to,
            created_at: format_ms(row.created_at),
            updated_at: format_ms(row.updated_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Author {
    #[schema(schema_with = schema::user_id)]
    pub user_id: String,
    pub display_name: String,
    #[schema(required)]
    pub avatar_url: Option<String>,
}

/// Emoji → count, in the order each emoji was first used on the message.
pub type Reactions = Map<String, Value>;

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    #[schema(schema_with = schema::message_id)]
    pub message_id: String,
    #[schema(schema_with = schema::issue_id)]
    pub issue_id: String,
    pub content: String,
    pub author: Author,
    #[schema(schema_with = schema::reactions)]
    pub reactions: Reactions,
    #[schema(schema_with = schema::timestamp)]
    pub created_at: String,
}

impl Message {
    pub fn from_row(row: MessageRow, author: Author, reactions: Reactions) -> Self {
        Self {
            message_id: row.id,
            issue_id: row.issue_id,
            content: row.content,
            author,
            reactions,
            created_at: format_ms(row.created_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReactionCounts {
    #[schema(schema_with = schema::message_id)]
    pub message_id: String,
    #[schema(schema_with = schema::issue_id)]
    pub issue_id: String,
    #[schema(schema_with = schema::reactions)]
    pub reactions: Reactions,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpvoteState {
    #[schema(schema_with = schema::issue_id)]
    pub issue_id: String,
    #[schema(minimum = 0)]
    pub upvotes: i64,
    pub upvoted: bool,
}

/// A page of a list, with the cursor of the next one (null at the end).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Null on the last page.
    #[schema(required)]
    pub next_cursor: Option<String>,
}

/// The users online now (`GET /api/presence`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OnlineUsers {
    pub items: Vec<OnlineUser>,
}
