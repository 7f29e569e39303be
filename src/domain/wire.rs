//! The shapes clients see (API.md), built from stored rows.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::db::models::{IssueRow, MessageRow, UserRow};
use crate::timestamp::format_ms;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub display_name: String,
    pub avatar_url: Option<String>,
    pub city: Option<String>,
    pub role: String,
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

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Issue {
    pub issue_id: String,
    pub title: String,
    pub description: String,
    pub city: String,
    pub category: String,
    pub priority: String,
    pub status: String,
    pub upvotes: i64,
    pub reported_by: String,
    pub assigned_to: Option<String>,
    pub created_at: String,
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

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Author {
    pub user_id: String,
    pub display_name: String,
    pub avatar_url: Option<String>,
}

/// Emoji → count, in the order each emoji was first used on the message.
pub type Reactions = Map<String, Value>;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub message_id: String,
    pub issue_id: String,
    pub content: String,
    pub author: Author,
    pub reactions: Reactions,
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

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReactionCounts {
    pub message_id: String,
    pub issue_id: String,
    pub reactions: Reactions,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpvoteState {
    pub issue_id: String,
    pub upvotes: i64,
    pub upvoted: bool,
}

/// A page of a list, with the cursor of the next one (null at the end).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}
