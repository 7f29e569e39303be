//! The Socket.IO side, written the way socketioxide's docs show it: a
//! connect middleware checks the JWT from `auth.token` and keeps the claims
//! in the socket's extensions; handlers take `SocketRef`, `TryData`,
//! `AckSender`, `State` and `Extension` extractors; rooms with
//! `socket.join`, emits with `io.to(room).emit`. Generic over the adapter,
//! so the same handlers run on the local adapter and on socketioxide-redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Extension, MaybeExtension, SocketRef, State, TryData};

use crate::auth::{Claims, Keys};
use crate::payload;
use crate::store::{self, Db, NewMessage};

pub fn issue_room(issue_id: &str) -> String {
    format!("room:issue:{issue_id}")
}

fn user_room(user_id: &str) -> String {
    format!("user:{user_id}")
}

#[derive(Deserialize)]
pub struct Auth {
    token: Option<String>,
}

#[derive(Debug)]
pub struct AuthFailed;

impl std::fmt::Display for AuthFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authentication failed")
    }
}

/// Refuses the namespace connection (a `connect_error` with the message)
/// without a valid access token.
pub async fn authenticate<A: Adapter>(
    s: SocketRef<A>,
    TryData(auth): TryData<Auth>,
    State(keys): State<Arc<Keys>>,
    State(online): State<Online>,
) -> Result<(), AuthFailed> {
    let token = auth.ok().and_then(|a| a.token).ok_or(AuthFailed)?;
    let claims = keys.verify(&token).ok_or(AuthFailed)?;
    s.join(user_room(&claims.sub));
    // Counted before the disconnect handler exists, so it always pairs.
    if online.add(&claims.sub) {
        s.extensions.insert(FirstSocket);
    }
    s.extensions.insert(Arc::new(claims));
    // Here, not in the connect handler: socketioxide sends CONNECT and then
    // spawns the connect handler, so an event a client sends as soon as it
    // is connected can arrive before handlers registered there exist, and
    // is dropped (`join:issue` unanswered). Middlewares run before CONNECT.
    s.on("join:issue", join_issue);
    s.on("leave:issue", leave_issue);
    s.on("message:send", send_message);
    s.on("user:typing", typing);
    s.on_disconnect(on_disconnect);
    Ok(())
}

/// Sockets per user on this node, for `presence:update` on a user's first
/// socket and after the last (per process, as the Node peer's map).
#[derive(Clone, Default)]
pub struct Online(Arc<Mutex<HashMap<String, usize>>>);

impl Online {
    /// True for the user's first socket.
    fn add(&self, user: &str) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(user.to_owned()).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// True after the user's last socket.
    fn remove(&self, user: &str) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                map.remove(user);
                true
            }
            None => false,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Presence<'a> {
    user_id: &'a str,
    display_name: &'a str,
    online: bool,
    city: Option<&'a str>,
}

impl<'a> Presence<'a> {
    fn of(user: &'a Claims, online: bool) -> Self {
        Self { user_id: &user.sub, display_name: &user.name, online, city: user.city.as_deref() }
    }
}

/// The default namespace's handler, behind [`authenticate`] (which
/// registers the event handlers).
pub async fn on_connect<A: Adapter>(
    io: SocketIo<A>,
    Extension(user): Extension<Arc<Claims>>,
    MaybeExtension(first): MaybeExtension<FirstSocket>,
) {
    if first.is_some() {
        io.emit("presence:update", &Presence::of(&user, true)).await.ok();
    }
}

/// The socket is its user's first on this node.
#[derive(Clone)]
pub struct FirstSocket;

fn not_found() -> Value {
    json!({ "ok": false, "error": { "code": "not_found", "message": "issue not found" } })
}

fn storage_failed(what: &str, e: &sqlx::Error) -> Value {
    log::error!("{what}: {e}");
    json!({ "ok": false, "error": { "code": "internal", "message": "storage" } })
}

async fn join_issue<A: Adapter>(
    s: SocketRef<A>,
    ack: AckSender<A>,
    State(db): State<Arc<Db>>,
    TryData(issue_id): TryData<String>,
) {
    let Ok(issue_id) = issue_id else {
        ack.send(&not_found()).ok();
        return;
    };
    match db.issue_exists(&issue_id).await {
        Ok(true) => {
            s.join(issue_room(&issue_id));
            ack.send(&json!({ "ok": true })).ok();
        }
        Ok(false) => {
            ack.send(&not_found()).ok();
        }
        Err(e) => {
            ack.send(&storage_failed("join:issue", &e)).ok();
        }
    }
}

async fn leave_issue<A: Adapter>(s: SocketRef<A>, ack: AckSender<A>, TryData(issue_id): TryData<String>) {
    if let Ok(issue_id) = issue_id {
        s.leave(issue_room(&issue_id));
    }
    ack.send(&json!({ "ok": true })).ok();
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SendBody {
    issue_id: Option<String>,
    content: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Author<'a> {
    user_id: &'a str,
    display_name: &'a str,
    avatar_url: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Message<'a> {
    message_id: &'a str,
    issue_id: &'a str,
    content: &'a str,
    author: Author<'a>,
    reactions: Value,
    created_at: &'a str,
}

/// Stored, sent to the whole room (the sender's sockets too), then
/// acknowledged with the message.
async fn send_message<A: Adapter>(
    io: SocketIo<A>,
    ack: AckSender<A>,
    Extension(user): Extension<Arc<Claims>>,
    State(db): State<Arc<Db>>,
    TryData(body): TryData<SendBody>,
) {
    let body = body.ok();
    let Some(content) = payload::message_content(body.as_ref().and_then(|b| b.content.as_ref())) else {
        ack.send(&json!({ "ok": false, "error": { "code": "validation_failed", "message": "content" } }))
            .ok();
        return;
    };
    let issue_id = body.as_ref().and_then(|b| b.issue_id.as_deref()).unwrap_or_default();
    match db.issue_exists(issue_id).await {
        Ok(true) => {}
        Ok(false) => {
            ack.send(&not_found()).ok();
            return;
        }
        Err(e) => {
            ack.send(&storage_failed("message:send", &e)).ok();
            return;
        }
    }
    let id = db.new_id("msg_");
    let created_at = store::now();
    let stored = db
        .insert_message(&NewMessage {
            id: &id,
            issue_id,
            author_id: &user.sub,
            author_name: &user.name,
            content,
            created_at: &created_at,
        })
        .await;
    if let Err(e) = stored {
        ack.send(&storage_failed("message:send", &e)).ok();
        return;
    }
    let message = Message {
        message_id: &id,
        issue_id,
        content,
        author: Author { user_id: &user.sub, display_name: &user.name, avatar_url: None },
        reactions: json!({}),
        created_at: &created_at,
    };
    if let Err(e) = io.to(issue_room(issue_id)).emit("message:new", &message).await {
        log::warn!("message:new to {issue_id}: {e}");
    }
    ack.send(&json!({ "ok": true, "message": message })).ok();
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypingBody {
    issue_id: Option<String>,
    is_typing: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Typing<'a> {
    issue_id: &'a str,
    user_id: &'a str,
    display_name: &'a str,
    is_typing: bool,
}

/// To the room's other members (not the typist's own sockets), only from
/// a member of the room.
async fn typing<A: Adapter>(
    s: SocketRef<A>,
    Extension(user): Extension<Arc<Claims>>,
    TryData(body): TryData<TypingBody>,
) {
    let Ok(TypingBody { issue_id: Some(issue_id), is_typing }) = body else { return };
    let room = issue_room(&issue_id);
    if !s.rooms().iter().any(|r| *r == room) {
        return;
    }
    let event = Typing {
        issue_id: &issue_id,
        user_id: &user.sub,
        display_name: &user.name,
        is_typing: payload::truthy(is_typing.as_ref()),
    };
    s.to(room).except(user_room(&user.sub)).emit("user:typing", &event).await.ok();
}

async fn on_disconnect<A: Adapter>(
    io: SocketIo<A>,
    Extension(user): Extension<Arc<Claims>>,
    State(online): State<Online>,
) {
    if online.remove(&user.sub) {
        io.emit("presence:update", &Presence::of(&user, false)).await.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::Online;

    #[test]
    fn presence_changes_on_the_first_and_after_the_last_socket() {
        let online = Online::default();
        assert!(online.add("usr_1"));
        assert!(!online.add("usr_1"));
        assert!(!online.remove("usr_1"));
        assert!(online.remove("usr_1"));
        assert!(!online.remove("usr_1"), "an unknown user is no change");
        assert!(online.add("usr_1"));
    }
}
