//! Issues: report, read, list, triage, upvote.

use base64::Engine;
use diesel::prelude::*;
use serde_json::Value;

use super::events::{DomainEvent, IssueUpvoted};
use super::input::{self, Input, Text};
use super::users::{current_role, find_user};
use super::wire::{Issue, Page, UpvoteState};
use super::{Domain, DomainError, DomainResult, Principal, Role};
use crate::db::models::{IssueRow, UpvoteRow};
use crate::db::{AnyConnection, insert_unless_duplicate, write_transaction};
use crate::ids::{self, IdKind};
use crate::schema::{issues, upvotes};
use crate::timestamp::now_ms;

pub const CATEGORIES: &[&str] = &[
    "infrastructure",
    "roads",
    "sanitation",
    "water",
    "electricity",
    "safety",
    "environment",
    "transport",
    "other",
];
pub const PRIORITIES: &[&str] = &["low", "medium", "high", "critical"];
pub const STATUSES: &[&str] = &["open", "in_progress", "resolved", "closed"];
pub(crate) const TITLE: Text = Text { min: 3, max: 200 };
pub(crate) const DESCRIPTION: Text = Text { min: 0, max: 5000 };

pub fn find(conn: &mut AnyConnection, id: &str) -> DomainResult<IssueRow> {
    if !ids::is_valid(IdKind::Issue, id) {
        return Err(DomainError::NotFound("issue"));
    }
    issues::table
        .find(id)
        .select(IssueRow::as_select())
        .first(conn)
        .optional()?
        .ok_or(DomainError::NotFound("issue"))
}

/// A report as its reporter gives it, checked.
#[derive(Debug)]
pub struct NewIssue {
    pub title: String,
    pub description: String,
    pub city: String,
    pub category: String,
    pub priority: String,
}

impl NewIssue {
    /// Reads a report body; the city defaults to the reporter's own.
    pub fn from_json(body: &Value, account_city: Option<&str>) -> DomainResult<Self> {
        let mut input = Input::new(body)?;
        let title = input.text("title", TITLE);
        let description = input.optional_text("description", DESCRIPTION).unwrap_or_default();
        let city =
            input.optional_with("city", input::check_city).or_else(|| account_city.map(str::to_string));
        let category = input.choice("category", CATEGORIES);
        let priority = input.optional_choice("priority", PRIORITIES).unwrap_or_else(|| "medium".into());
        if city.is_none() && !input.has("city") {
            input.reject("city", "is required when your account has no city");
        }
        input.finish()?;
        let (Some(title), Some(city), Some(category)) = (title, city, category) else {
            return Err(DomainError::invalid("city", "is required"));
        };
        Ok(Self { title, description, city, category, priority })
    }
}

pub async fn create(domain: &Domain, who: &Principal, body: &Value) -> DomainResult<Issue> {
    let NewIssue { title, description, city, category, priority } =
        NewIssue::from_json(body, who.city.as_deref())?;
    let now = now_ms();
    let row = IssueRow {
        id: ids::new_id(IdKind::Issue),
        title,
        description,
        city,
        category,
        priority,
        status: "open".into(),
        upvotes: 0,
        reported_by: who.user_id.clone(),
        assigned_to: None,
        created_at: now,
        updated_at: now,
    };
    let issue: Issue = domain
        .query(move |conn| {
            diesel::insert_into(issues::table).values(&row).execute(conn)?;
            Ok(row.into())
        })
        .await?;
    log::info!(target: "civicpulse::issues", "created issue={} by user={}", issue.issue_id, who.user_id);
    domain.hub.publish(DomainEvent::IssueCreated(issue.clone()));
    Ok(issue)
}

pub async fn get(domain: &Domain, id: String) -> DomainResult<Issue> {
    domain.query(move |conn| find(conn, &id).map(Issue::from)).await
}

/// The fields a PATCH may carry, each `None` when absent.
#[derive(Debug)]
pub struct IssueChanges {
    pub title: Option<String>,
    pub description: Option<String>,
    pub status: Option<String>,
    pub priority: Option<String>,
    /// `Some(None)` unassigns.
    pub assigned_to: Option<Option<String>>,
}

impl IssueChanges {
    pub fn from_json(body: &Value) -> DomainResult<Self> {
        let mut input = Input::new(body)?;
        let title = if input.has("title") { input.text("title", TITLE) } else { None };
        let description = input.optional_text("description", DESCRIPTION);
        let status = input.optional_choice("status", STATUSES);
        let priority = input.optional_choice("priority", PRIORITIES);
        let assigned_to = match body.get("assignedTo") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(Value::String(id)) => Some(Some(id.clone())),
            Some(_) => {
                input.reject("assignedTo", "must be a user id or null");
                None
            }
        };
        input.finish()?;
        Ok(Self { title, description, status, priority, assigned_to })
    }

    fn touches_staff_fields(&self) -> bool {
        self.status.is_some() || self.priority.is_some() || self.assigned_to.is_some()
    }
}

/// Applies a PATCH. Reporters may edit title and description while the
/// issue is open; officials and admins may change everything.
pub async fn update(domain: &Domain, who: &Principal, id: String, body: &Value) -> DomainResult<Issue> {
    let changes = IssueChanges::from_json(body)?;
    let caller = who.user_id.clone();
    let outcome = domain
        .query(move |conn| {
            write_transaction(conn, |conn| {
                let before = find(conn, &id)?;
                let role = current_role(conn, &caller)?;
                if !role.is_staff() {
                    if before.reported_by != caller {
                        return Err(DomainError::Forbidden(
                            "only the reporter or an official can edit this issue",
                        ));
                    }
                    if changes.touches_staff_fields() {
                        return Err(DomainError::Forbidden(
                            "only officials can change status, priority or assignment",
                        ));
                    }
                    if before.status != "open" {
                        return Err(DomainError::Forbidden("the issue is no longer open"));
                    }
                }
                if let Some(Some(assignee)) = &changes.assigned_to {
                    let staff = find_user(conn, assignee)?
                        .and_then(|u| Role::parse(&u.role))
                        .is_some_and(Role::is_staff);
                    if !staff {
                        return Err(DomainError::invalid("assignedTo", "must name an official or admin"));
                    }
                }
                let mut after = before.clone();
                if let Some(v) = changes.title {
                    after.title = v;
                }
                if let Some(v) = changes.description {
                    after.description = v;
                }
                if let Some(v) = changes.status {
                    after.status = v;
                }
                if let Some(v) = changes.priority {
                    after.priority = v;
                }
                if let Some(v) = changes.assigned_to {
                    after.assigned_to = v;
                }
                let changed =
                    (&after.title, &after.description, &after.status, &after.priority, &after.assigned_to)
                        != (
                            &before.title,
                            &before.description,
                            &before.status,
                            &before.priority,
                            &before.assigned_to,
                        );
                if !changed {
                    return Ok((after, false));
                }
                after.updated_at = now_ms().max(before.updated_at);
                diesel::update(issues::table.find(&after.id))
                    .set((
                        issues::title.eq(&after.title),
                        issues::description.eq(&after.description),
                        issues::status.eq(&after.status),
                        issues::priority.eq(&after.priority),
                        issues::assigned_to.eq(&after.assigned_to),
                        issues::updated_at.eq(after.updated_at),
                    ))
                    .execute(conn)?;
                // Only these changes matter to someone watching the list.
                let notable = (&after.title, &after.status, &after.priority, &after.assigned_to)
                    != (&before.title, &before.status, &before.priority, &before.assigned_to);
                Ok((after, notable))
            })
        })
        .await?;
    let (row, notable) = outcome;
    let issue = Issue::from(row);
    if notable {
        log::info!(target: "civicpulse::issues", "updated issue={} status={} by user={}", issue.issue_id, issue.status, who.user_id);
        domain.hub.publish(DomainEvent::IssueUpdated(issue.clone()));
    }
    Ok(issue)
}

/// Adds (`on`) or withdraws the caller's upvote. Counts stay exact under
/// concurrency: the (issue, user) primary key admits one row per user, and
/// the counter moves only in the same transaction as that row.
pub async fn upvote(domain: &Domain, who: &Principal, id: String, on: bool) -> DomainResult<UpvoteState> {
    let user = who.user_id.clone();
    let issue_id = id.clone();
    let (upvotes, changed) = domain
        .query(move |conn| {
            find(conn, &id)?;
            write_transaction(conn, |conn| {
                let moved = if on {
                    let row = UpvoteRow { issue_id: &id, user_id: &user, created_at: now_ms() };
                    insert_unless_duplicate(conn, |c| {
                        diesel::insert_into(upvotes::table).values(&row).execute(c)
                    })?
                } else {
                    diesel::delete(upvotes::table.find((&id, &user))).execute(conn)?
                };
                if moved == 1 {
                    let delta = if on { 1 } else { -1 };
                    diesel::update(issues::table.find(&id))
                        .set(issues::upvotes.eq(issues::upvotes + delta))
                        .execute(conn)?;
                }
                let count = issues::table.find(&id).select(issues::upvotes).first::<i64>(conn)?;
                Ok((count, moved == 1))
            })
        })
        .await?;
    if changed {
        domain.hub.publish(DomainEvent::IssueUpvoted(IssueUpvoted {
            issue_id: issue_id.clone(),
            upvotes,
            upvoted_by: who.user_id.clone(),
            upvoted: on,
        }));
    }
    Ok(UpvoteState { issue_id, upvotes, upvoted: on })
}

/// Which way a list is ordered; a cursor is only valid for its own order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sort {
    New,
    Top,
}

/// Position after the last item of a page: (upvotes for `top`, id).
struct Cursor {
    upvotes: Option<i64>,
    id: String,
}

impl Cursor {
    fn encode(&self) -> String {
        let raw = match self.upvotes {
            Some(n) => format!("t:{n}:{}", self.id),
            None => format!("n:{}", self.id),
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    fn decode(s: &str, sort: Sort) -> Option<Self> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let cursor = match (sort, raw.split(':').collect::<Vec<_>>().as_slice()) {
            (Sort::New, ["n", id]) => Cursor { upvotes: None, id: id.to_string() },
            (Sort::Top, ["t", n, id]) => Cursor { upvotes: Some(n.parse().ok()?), id: id.to_string() },
            _ => return None,
        };
        ids::is_valid(IdKind::Issue, &cursor.id).then_some(cursor)
    }
}

/// Lists issues. `query` is the raw query string map.
pub async fn list(
    domain: &Domain,
    query: &std::collections::HashMap<String, String>,
) -> DomainResult<Page<Issue>> {
    let body = Value::Object(query.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect());
    let mut input = Input::new(&body)?;
    let city = input.optional_with("city", input::check_city);
    let category = input.optional_choice("category", CATEGORIES);
    let status = input.optional_choice("status", STATUSES);
    let priority = input.optional_choice("priority", PRIORITIES);
    let user_id = |id: &str| if ids::is_user_id(id) { Ok(()) } else { Err("must be a user id".to_string()) };
    let reported_by = input.optional_with("reportedBy", user_id);
    let assigned_to = input.optional_with("assignedTo", user_id);
    let sort = match input.optional_choice("sort", &["new", "top"]).as_deref() {
        Some("top") => Sort::Top,
        _ => Sort::New,
    };
    let limit = match query.get("limit") {
        None => 20,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                input.reject("limit", "must be a whole number from 1 to 100");
                20
            }
        },
    };
    let cursor = match query.get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(raw) => {
            let c = Cursor::decode(raw, sort);
            if c.is_none() {
                input.reject("cursor", "is not a cursor from this listing");
            }
            c
        }
    };
    input.finish()?;

    let rows = domain
        .query(move |conn| {
            let mut q = issues::table.select(IssueRow::as_select()).into_boxed();
            if let Some(v) = city {
                q = q.filter(issues::city.eq(v));
            }
            if let Some(v) = category {
                q = q.filter(issues::category.eq(v));
            }
            if let Some(v) = status {
                q = q.filter(issues::status.eq(v));
            }
            if let Some(v) = priority {
                q = q.filter(issues::priority.eq(v));
            }
            if let Some(v) = reported_by {
                q = q.filter(issues::reported_by.eq(v));
            }
            if let Some(v) = assigned_to {
                q = q.filter(issues::assigned_to.eq(v));
            }
            q = match sort {
                // IDs are time-ordered and unique, so "older than the last
                // one seen" never repeats or skips, whatever is inserted.
                Sort::New => {
                    if let Some(c) = cursor {
                        q = q.filter(issues::id.lt(c.id));
                    }
                    q.order(issues::id.desc())
                }
                Sort::Top => {
                    if let Some(Cursor { upvotes: Some(n), id }) = cursor {
                        q = q.filter(issues::upvotes.lt(n).or(issues::upvotes.eq(n).and(issues::id.lt(id))));
                    }
                    q.order((issues::upvotes.desc(), issues::id.desc()))
                }
            };
            Ok(q.limit(limit + 1).load::<IssueRow>(conn)?)
        })
        .await?;
    Ok(page(rows, limit as usize, |last| Cursor {
        upvotes: (sort == Sort::Top).then_some(last.upvotes),
        id: last.id.clone(),
    }))
}

/// Cuts a page from `limit + 1` rows: the extra row only says "there is more".
fn page(mut rows: Vec<IssueRow>, limit: usize, cursor: impl Fn(&IssueRow) -> Cursor) -> Page<Issue> {
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if more { rows.last().map(|r| cursor(r).encode()) } else { None };
    Page { items: rows.into_iter().map(Issue::from).collect(), next_cursor }
}
