//! Issue chat: post a message, page back through history, react.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::events::{DomainEvent, EventHub};
use super::input::{Input, Text};
use super::wire::{Author, Message, Page, ReactionCounts, Reactions};
use super::{Domain, DomainError, DomainResult, Principal, issues as issue};
use crate::db::batch::Batcher;
use crate::db::models::{MessageRow, ReactionRow};
use crate::db::{AnyConnection, Db, Fence, FencedError, insert_unless_duplicate, write_transaction};
use crate::ids::{self, IdKind};
use crate::schema::{issues, messages, reactions, users};
use crate::timestamp::now_ms;

pub(crate) const CONTENT: Text = Text { min: 1, max: 2000 };

/// Reads `{content}` (REST) or `{issueId, content}` (socket) bodies.
pub fn content_from_json(body: &Value) -> DomainResult<String> {
    let mut input = Input::new(body)?;
    let content = input.text("content", CONTENT);
    input.finish()?;
    content.ok_or_else(|| DomainError::invalid("content", "is required"))
}

/// Stores a message and publishes it; messages are stored in the order
/// they are posted.
pub async fn post(
    domain: &Domain,
    who: &Principal,
    issue_id: String,
    content: String,
) -> DomainResult<Message> {
    let (reply, answer) = oneshot::channel();
    submit(domain, who, issue_id, content, move |outcome| {
        // The poster may have gone; the message stands.
        let _ = reply.send(outcome);
    })
    .await;
    answer.await.unwrap_or_else(|_| Err(stopped()))
}

/// Queues a message for the writer. Once it is stored (after every message
/// submitted before it), or refused, `reply` is called with the outcome, on
/// the writer's thread and in submission order: a socket that submits under
/// its turn lock has its messages stored and acknowledged in the order it
/// sent them, without waiting for each one's commit before the next.
pub async fn submit(
    domain: &Domain,
    who: &Principal,
    issue_id: String,
    content: String,
    reply: impl FnOnce(DomainResult<Message>) + Send + 'static,
) {
    if !ids::is_valid(IdKind::Issue, &issue_id) {
        return reply(Err(DomainError::NotFound("issue")));
    }
    let row = MessageRow {
        id: ids::new_id(IdKind::Message),
        issue_id,
        author_id: who.user_id.clone(),
        content,
        created_at: now_ms(),
    };
    if let Err(Post { reply, .. }) = domain.messages.submit(Post { row, reply: Box::new(reply) }).await {
        reply(Err(stopped()));
    }
}

fn stopped() -> DomainError {
    DomainError::Unavailable("message writer stopped".into())
}

/// One message waiting for the writer, and who hears the outcome.
pub struct Post {
    row: MessageRow,
    reply: Box<dyn FnOnce(DomainResult<Message>) + Send>,
}

/// The message writer: one thread that stores posted messages in batches.
pub type Writer = Batcher<Post>;

/// How soon the writer tries again to learn the outcome of messages in
/// doubt when nothing else arrives.
const RESOLVE_RETRY: Duration = Duration::from_millis(500);

/// Starts the writer. It publishes `message:new` after each batch commits,
/// in the order the messages were submitted.
pub fn start_writer(db: Db, hub: Arc<EventHub>) -> std::io::Result<Writer> {
    let mut store = Store { db, hub, fence: Fence::default(), in_doubt: Vec::new() };
    Batcher::start("civicpulse-messages", 10_000, move |batch| store.batch(batch))
}

/// The writer's state between batches.
struct Store {
    db: Db,
    hub: Arc<EventHub>,
    fence: Fence,
    /// Messages of a batch whose COMMIT lost its answer (the connection
    /// was cut): stored or not, nobody knows yet. They are answered once
    /// the database can tell, before anything newer is stored, so that
    /// every ok is a stored message and every error one that is not.
    in_doubt: Vec<(Post, Author)>,
}

impl Store {
    /// Stores a batch (empty: only a retry of what is in doubt); answers
    /// when to be called again if nothing new comes.
    fn batch(&mut self, batch: Vec<Post>) -> Option<Duration> {
        let mut conn = match self.db.get() {
            Ok(conn) => conn,
            Err(e) => {
                fail(batch, &DomainError::from(e));
                return self.retry();
            }
        };
        if !self.in_doubt.is_empty()
            && let Err(e) = self.resolve(&mut conn)
        {
            fail(batch, &e);
            return self.retry();
        }
        self.write(&mut conn, batch);
        self.retry()
    }

    fn retry(&self) -> Option<Duration> {
        (!self.in_doubt.is_empty()).then_some(RESOLVE_RETRY)
    }

    fn write(&mut self, conn: &mut AnyConnection, batch: Vec<Post>) {
        if batch.is_empty() {
            return;
        }
        match self.fence.transaction(conn, |conn| insert_all(conn, &batch)) {
            Ok(outcomes) => {
                for (post, outcome) in batch.into_iter().zip(outcomes) {
                    self.answer(post, outcome);
                }
            }
            // The database went away: the whole batch is refused, at once
            // (trying each message on its own would wait for a connection
            // once per message).
            Err(FencedError::Failed(e @ DomainError::Unavailable(_))) => fail(batch, &e),
            // Any other error fails the whole transaction: store each
            // message on its own, so that only the one at fault hears of it.
            Err(FencedError::Failed(_)) if batch.len() > 1 => {
                for post in batch {
                    self.write(conn, vec![post]);
                }
            }
            Err(FencedError::Failed(e)) => fail(batch, &e),
            Err(FencedError::InDoubt(outcomes, e)) => {
                let mut doubtful = 0;
                for (post, outcome) in batch.into_iter().zip(outcomes) {
                    match outcome {
                        Ok(author) => {
                            doubtful += 1;
                            self.in_doubt.push((post, author));
                        }
                        Err(e) => (post.reply)(Err(e)),
                    }
                }
                log::warn!(target: "civicpulse::messages", "the answer to storing {doubtful} message(s) was lost ({e}); they are answered once the database tells whether they were stored");
            }
        }
    }

    /// Learns which messages in doubt were stored; answers (and publishes)
    /// each accordingly, in the order they were submitted.
    fn resolve(&mut self, conn: &mut AnyConnection) -> DomainResult<()> {
        if !self.fence.settle(conn)? {
            return Err(DomainError::Unavailable("an earlier write has not ended yet".into()));
        }
        let ids: Vec<&String> = self.in_doubt.iter().map(|(post, _)| &post.row.id).collect();
        let stored: std::collections::HashSet<String> = messages::table
            .filter(messages::id.eq_any(ids))
            .select(messages::id)
            .load(conn)?
            .into_iter()
            .collect();
        log::info!(target: "civicpulse::messages", "of {} message(s) in doubt, {} were stored", self.in_doubt.len(), stored.len());
        for (post, author) in std::mem::take(&mut self.in_doubt) {
            let outcome = if stored.contains(&post.row.id) {
                Ok(author)
            } else {
                Err(DomainError::Unavailable("the database went away while it was being stored".into()))
            };
            self.answer(post, outcome);
        }
        Ok(())
    }

    fn answer(&self, post: Post, author: DomainResult<Author>) {
        let message = author.map(|author| Message::from_row(post.row, author, Map::new()));
        if let Ok(message) = &message {
            log::debug!(target: "civicpulse::messages", "message={} issue={} by user={}", message.message_id, message.issue_id, message.author.user_id);
            self.hub.publish(DomainEvent::MessagePosted(message.clone()));
        }
        (post.reply)(message);
    }
}

/// Refuses every message of `batch` with `e`.
fn fail(batch: Vec<Post>, e: &DomainError) {
    for post in batch {
        (post.reply)(Err(e.clone()));
    }
}

/// Inserts the batch's messages whose issue and author exist, with one
/// statement (one round trip however many there are); answers each one's
/// author or why it was refused. The batch's issues and authors are looked
/// up with one query each.
fn insert_all(conn: &mut AnyConnection, batch: &[Post]) -> DomainResult<Vec<DomainResult<Author>>> {
    let distinct = |field: fn(&MessageRow) -> &String| -> Vec<String> {
        let set: std::collections::BTreeSet<&String> = batch.iter().map(|p| field(&p.row)).collect();
        set.into_iter().cloned().collect()
    };
    let existing: std::collections::HashSet<String> = issues::table
        .filter(issues::id.eq_any(distinct(|r| &r.issue_id)))
        .select(issues::id)
        .load(conn)?
        .into_iter()
        .collect();
    let authors: HashMap<String, Author> =
        authors(conn, &distinct(|r| &r.author_id))?.into_iter().map(|a| (a.user_id.clone(), a)).collect();
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut rows = Vec::with_capacity(batch.len());
    for Post { row, .. } in batch {
        if !existing.contains(&row.issue_id) {
            outcomes.push(Err(DomainError::NotFound("issue")));
            continue;
        }
        // Only when a valid token names a user that no longer exists.
        let Some(author) = authors.get(&row.author_id) else {
            outcomes.push(Err(DomainError::invalid_token()));
            continue;
        };
        rows.push(row);
        outcomes.push(Ok(author.clone()));
    }
    match conn {
        // One statement for all: one round trip to the server.
        AnyConnection::Postgres(pg) if !rows.is_empty() => {
            diesel::insert_into(messages::table).values(rows).execute(pg)?;
        }
        AnyConnection::Postgres(_) => {}
        // A local file: no round trips to save.
        AnyConnection::Sqlite(sqlite) => {
            for row in rows {
                diesel::insert_into(messages::table).values(row).execute(sqlite)?;
            }
        }
    }
    Ok(outcomes)
}

/// One page of history, oldest first; `nextCursor` pages further back.
pub async fn history(
    domain: &Domain,
    issue_id: String,
    query: &std::collections::HashMap<String, String>,
) -> DomainResult<Page<Message>> {
    let limit = match query.get("limit") {
        None => 50,
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => return Err(DomainError::invalid("limit", "must be a whole number from 1 to 100")),
        },
    };
    let before = match query.get("before").filter(|b| !b.is_empty()) {
        Some(b) if ids::is_valid(IdKind::Message, b) => Some(b.clone()),
        Some(_) => return Err(DomainError::invalid("before", "must be a message id")),
        None => None,
    };
    domain
        .query(move |conn| {
            issue::find(conn, &issue_id)?;
            let mut q = messages::table
                .filter(messages::issue_id.eq(&issue_id))
                .select(MessageRow::as_select())
                .order(messages::id.desc())
                .limit(limit + 1)
                .into_boxed();
            if let Some(before) = before {
                q = q.filter(messages::id.lt(before));
            }
            let mut rows: Vec<MessageRow> = q.load(conn)?;
            let more = rows.len() as i64 > limit;
            rows.truncate(limit as usize);
            rows.reverse();
            let next_cursor = if more { rows.first().map(|r| r.id.clone()) } else { None };
            Ok(Page { items: hydrate(conn, rows)?, next_cursor })
        })
        .await
}

/// Attaches authors and reaction counts to stored messages.
fn hydrate(conn: &mut AnyConnection, rows: Vec<MessageRow>) -> DomainResult<Vec<Message>> {
    let author_ids: Vec<String> = rows.iter().map(|r| r.author_id.clone()).collect();
    let authors = authors(conn, &author_ids)?;
    let message_ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut counts = reaction_counts(conn, &message_ids)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let author = authors.iter().find(|a| a.user_id == row.author_id).cloned().unwrap_or(Author {
                user_id: row.author_id.clone(),
                display_name: String::new(),
                avatar_url: None,
            });
            let reactions = counts.remove(&row.id).unwrap_or_default();
            Message::from_row(row, author, reactions)
        })
        .collect())
}

fn authors(conn: &mut AnyConnection, ids: &[String]) -> DomainResult<Vec<Author>> {
    let rows: Vec<(String, String, Option<String>)> = users::table
        .filter(users::id.eq_any(ids))
        .select((users::id, users::display_name, users::avatar_url))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(user_id, display_name, avatar_url)| Author { user_id, display_name, avatar_url })
        .collect())
}

/// Counts per emoji for each message, emoji in order of first use.
fn reaction_counts(
    conn: &mut AnyConnection,
    message_ids: &[String],
) -> DomainResult<std::collections::HashMap<String, Reactions>> {
    let rows: Vec<(String, String)> = reactions::table
        .filter(reactions::message_id.eq_any(message_ids))
        .order((reactions::created_at.asc(), reactions::emoji.asc()))
        .select((reactions::message_id, reactions::emoji))
        .load(conn)?;
    let mut out: std::collections::HashMap<String, Reactions> = Default::default();
    for (message_id, emoji) in rows {
        let counts = out.entry(message_id).or_default();
        let n = counts.get(&emoji).and_then(Value::as_i64).unwrap_or(0);
        counts.insert(emoji, Value::from(n + 1));
    }
    Ok(out)
}

/// One fully-qualified emoji of the Unicode emoji data, skin tones included.
/// Text-style or unqualified forms (`©`, `❤`) are refused.
pub fn is_emoji(s: &str) -> bool {
    emojis::get(s)
        .is_some_and(|e| e.as_str() == s || e.skin_tones().into_iter().flatten().any(|t| t.as_str() == s))
}

/// Adds (`on`) or removes the caller's reaction.
pub async fn react(
    domain: &Domain,
    who: &Principal,
    message_id: String,
    emoji: String,
    on: bool,
) -> DomainResult<ReactionCounts> {
    if !ids::is_valid(IdKind::Message, &message_id) {
        return Err(DomainError::NotFound("message"));
    }
    if !is_emoji(&emoji) {
        return Err(DomainError::invalid("emoji", "must be one fully-qualified emoji"));
    }
    let user = who.user_id.clone();
    let (counts, changed) = domain
        .query(move |conn| {
            let issue_id: String = messages::table
                .find(&message_id)
                .select(messages::issue_id)
                .first(conn)
                .optional()?
                .ok_or(DomainError::NotFound("message"))?;
            write_transaction(conn, |conn| {
                let moved = if on {
                    let row = ReactionRow {
                        message_id: &message_id,
                        user_id: &user,
                        emoji: &emoji,
                        created_at: now_ms(),
                    };
                    insert_unless_duplicate(conn, |c| {
                        diesel::insert_into(reactions::table).values(&row).execute(c)
                    })?
                } else {
                    diesel::delete(reactions::table.find((&message_id, &user, &emoji))).execute(conn)?
                };
                let reactions = reaction_counts(conn, std::slice::from_ref(&message_id))?
                    .remove(&message_id)
                    .unwrap_or_default();
                Ok((ReactionCounts { message_id: message_id.clone(), issue_id, reactions }, moved == 1))
            })
        })
        .await?;
    if changed {
        domain.hub.publish(DomainEvent::ReactionChanged(counts.clone()));
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    #[test]
    fn emoji_rules() {
        for ok in ["👍", "❤️", "🎉", "👍🏽", "👨‍👩‍👧"] {
            assert!(super::is_emoji(ok), "{ok}");
        }
        for bad in ["a", "1", "👍👍", "©", "❤", "", "👍 "] {
            assert!(!super::is_emoji(bad), "{bad:?}");
        }
    }
}
