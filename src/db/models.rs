//! Rows as stored. The wire shapes (camelCase, formatted times) are built
//! from these in `domain`.

use diesel::prelude::*;

use crate::schema::{issues, messages, reactions, refresh_tokens, upvotes, users};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub display_name: String,
    pub avatar_url: Option<String>,
    pub city: Option<String>,
    pub role: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_tokens)]
pub struct RefreshTokenRow {
    pub token_hash: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub rotated_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = issues)]
pub struct IssueRow {
    pub id: String,
    pub title: String,
    pub description: String,
    pub city: String,
    pub category: String,
    pub priority: String,
    pub status: String,
    pub upvotes: i64,
    pub reported_by: String,
    pub assigned_to: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = upvotes)]
pub struct UpvoteRow<'a> {
    pub issue_id: &'a str,
    pub user_id: &'a str,
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = messages)]
pub struct MessageRow {
    pub id: String,
    pub issue_id: String,
    pub author_id: String,
    pub content: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = reactions)]
pub struct ReactionRow<'a> {
    pub message_id: &'a str,
    pub user_id: &'a str,
    pub emoji: &'a str,
    pub created_at: i64,
}
