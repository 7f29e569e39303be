//! Accounts and sessions: register, login, refresh (with rotation and reuse
//! detection), logout, and reading and re-roling users.

use std::time::Duration;

use diesel::prelude::*;
use serde::Serialize;
use serde_json::Value;

use super::input::{self, Input, Text};
use super::wire::User;
use super::{Domain, DomainError, DomainResult, Principal, Role, blocking};
use crate::auth::revocations::{Origin, Reason, Revocation, Scope};
use crate::auth::{TokenKeys, password, refresh};
use crate::db::models::{RefreshTokenRow, UserRow};
use crate::db::{AnyConnection, is_unique_violation, write_transaction};
use crate::ids::{self, IdKind};
use crate::schema::{refresh_tokens, users};
use crate::timestamp::now_ms;

pub(crate) const PASSWORD: Text = Text { min: 8, max: 128 };
pub(crate) const DISPLAY_NAME: Text = Text { min: 1, max: 64 };
pub(crate) const REFRESH_TOKEN: Text = Text { min: 1, max: 512 };

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub user: User,
    pub access_token: String,
    pub refresh_token: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
}

/// A new account, as the registration form or the command line gives it.
pub struct NewUser {
    pub email: String,
    pub password: String,
    pub display_name: String,
    pub city: Option<String>,
    pub avatar_url: Option<String>,
    pub role: Role,
}

impl NewUser {
    /// Reads a registration body; self-registration always makes a citizen.
    pub fn from_json(body: &Value) -> DomainResult<Self> {
        let mut input = Input::new(body)?;
        let email = input.text("email", Text { min: 3, max: 254 });
        if let Some(e) = &email
            && let Err(reason) = input::check_email(e)
        {
            input.reject("email", reason);
        }
        // Passwords are taken as typed: surrounding spaces are part of them.
        let password = match body.get("password") {
            Some(Value::String(p)) if (PASSWORD.min..=PASSWORD.max).contains(&p.chars().count()) => {
                Some(p.clone())
            }
            Some(Value::String(_)) => {
                input.reject("password", "must be 8 to 128 characters");
                None
            }
            None | Some(Value::Null) => {
                input.reject("password", "is required");
                None
            }
            Some(_) => {
                input.reject("password", "must be a string");
                None
            }
        };
        let display_name = input.text("displayName", DISPLAY_NAME);
        let city = input.optional_with("city", input::check_city);
        let avatar_url = input.optional_with("avatarUrl", input::check_url);
        input.finish()?;
        match (email, password, display_name) {
            (Some(email), Some(password), Some(display_name)) => {
                Ok(Self { email, password, display_name, city, avatar_url, role: Role::Citizen })
            }
            _ => Err(DomainError::Internal("validated input missing".into())),
        }
    }

    /// Checks fields given on the command line with the same rules.
    pub fn validate(&self) -> DomainResult<()> {
        let body = serde_json::json!({
            "email": self.email, "password": self.password, "displayName": self.display_name,
            "city": self.city, "avatarUrl": self.avatar_url,
        });
        Self::from_json(&body).map(|_| ())
    }
}

/// Stores a new user; the password is hashed here.
pub fn insert_user(conn: &mut AnyConnection, new: NewUser, password_hash: String) -> DomainResult<UserRow> {
    let kind = if new.role == Role::Citizen { IdKind::Citizen } else { IdKind::Official };
    let row = UserRow {
        id: ids::new_id(kind),
        email: new.email.to_lowercase(),
        password_hash,
        display_name: new.display_name,
        avatar_url: new.avatar_url,
        city: new.city,
        role: new.role.as_str().to_string(),
        created_at: now_ms(),
    };
    match diesel::insert_into(users::table).values(&row).execute(conn) {
        Ok(_) => Ok(row),
        Err(e) if is_unique_violation(&e) => Err(DomainError::Conflict {
            code: "email_taken",
            message: "an account with this email already exists",
        }),
        Err(e) => Err(e.into()),
    }
}

pub async fn register(domain: &Domain, new: NewUser) -> DomainResult<Session> {
    let plain = new.password.clone();
    let hash = blocking(move || password::hash(&plain)).await??;
    let d = domain.clone();
    domain
        .query(move |conn| {
            let user = insert_user(conn, new, hash)?;
            log::info!(target: "civicpulse::auth", "registered user={}", user.id);
            start_session(&d, conn, user)
        })
        .await
}

pub async fn login(domain: &Domain, body: &Value) -> DomainResult<Session> {
    let user = check_credentials(domain, body).await?;
    let d = domain.clone();
    domain.query(move |conn| start_session(&d, conn, user)).await
}

/// An access token for an admin who gives their email and password (the
/// Socket.IO Admin UI's login form), with no sign-in behind it: nothing to
/// refresh, and no refresh token left in the database.
pub async fn admin_token(domain: &Domain, email: &str, password: &str) -> DomainResult<String> {
    let user =
        check_credentials(domain, &serde_json::json!({ "email": email, "password": password })).await?;
    if Role::parse(&user.role) != Some(Role::Admin) {
        return Err(DomainError::Forbidden("admins only"));
    }
    Ok(domain.tokens.issue(&user.id, &user.display_name, Role::Admin, user.city.as_deref(), None))
}

/// The user whose email and password `body` gives, as a login checks them.
async fn check_credentials(domain: &Domain, body: &Value) -> DomainResult<UserRow> {
    let email = body.get("email").and_then(Value::as_str).map(|e| e.trim().to_lowercase());
    let pass = body.get("password").and_then(Value::as_str).map(str::to_string);
    let (Some(email), Some(pass)) = (email, pass) else {
        let mut input = Input::new(body)?;
        input.text("email", Text { min: 1, max: 254 });
        input.text("password", Text { min: 1, max: PASSWORD.max });
        input.finish()?;
        return Err(DomainError::invalid("password", "must be a string"));
    };
    // NUL never matches a stored email, and PostgreSQL refuses it in a query.
    if email.len() > 254 || email.contains('\0') || pass.chars().count() > PASSWORD.max {
        return Err(invalid_credentials());
    }
    let found = domain
        .query(move |conn| {
            Ok(users::table
                .filter(users::email.eq(email))
                .select(UserRow::as_select())
                .first(conn)
                .optional()?)
        })
        .await?;
    // Hash even for an unknown email so timing does not reveal accounts.
    let stored =
        found.as_ref().map(|u| u.password_hash.clone()).unwrap_or_else(|| password::decoy_hash().into());
    let ok = blocking(move || password::verify(&pass, &stored)).await?;
    match found {
        Some(user) if ok => Ok(user),
        _ => Err(invalid_credentials()),
    }
}

fn invalid_credentials() -> DomainError {
    DomainError::Unauthorized { code: "invalid_credentials", message: "email or password is wrong" }
}

fn start_session(domain: &Domain, conn: &mut AnyConnection, user: UserRow) -> DomainResult<Session> {
    let pair = issue_pair(domain, conn, &user, &uuid::Uuid::now_v7().simple().to_string())?;
    Ok(Session {
        user: User::from_row(user, true),
        access_token: pair.access_token,
        refresh_token: pair.refresh_token,
    })
}

/// A new pair for the sign-in `session` (kept by every rotation).
fn issue_pair(
    domain: &Domain,
    conn: &mut AnyConnection,
    user: &UserRow,
    session: &str,
) -> DomainResult<TokenPair> {
    let role = Role::parse(&user.role).unwrap_or(Role::Citizen);
    let access_token =
        domain.tokens.issue(&user.id, &user.display_name, role, user.city.as_deref(), Some(session));
    let refresh_token = refresh::generate();
    let now = now_ms();
    let row = RefreshTokenRow {
        token_hash: refresh::hash(&refresh_token),
        user_id: user.id.clone(),
        created_at: now,
        expires_at: now + domain.refresh_ttl.as_millis() as i64,
        rotated_at: None,
        revoked_at: None,
        session_id: Some(session.to_string()),
    };
    diesel::insert_into(refresh_tokens::table).values(&row).execute(conn)?;
    Ok(TokenPair { access_token, refresh_token })
}

fn refresh_token_field(body: &Value) -> DomainResult<String> {
    let mut input = Input::new(body)?;
    let token = input.text("refreshToken", REFRESH_TOKEN);
    input.finish()?;
    token.ok_or_else(|| DomainError::invalid("refreshToken", "is required"))
}

fn invalid_refresh() -> DomainError {
    DomainError::Unauthorized {
        code: "invalid_refresh_token",
        message: "refresh token is invalid or expired",
    }
}

/// Exchanges a refresh token for a new pair. A token that was already
/// rotated is being replayed, so every session of its user is revoked.
pub async fn refresh(domain: &Domain, body: &Value) -> DomainResult<TokenPair> {
    let hash = refresh::hash(&refresh_token_field(body)?);
    let d = domain.clone();
    type Revoked = Option<(String, Vec<String>)>;
    let outcome: Result<TokenPair, (DomainError, Revoked)> = domain
        .query(move |conn| {
            write_transaction(conn, |conn| {
                let now = now_ms();
                // Claim the token atomically: of two concurrent uses, one wins
                // and the other sees it rotated.
                let claimed = diesel::update(
                    refresh_tokens::table
                        .filter(refresh_tokens::token_hash.eq(&hash))
                        .filter(refresh_tokens::rotated_at.is_null())
                        .filter(refresh_tokens::revoked_at.is_null())
                        .filter(refresh_tokens::expires_at.gt(now)),
                )
                .set(refresh_tokens::rotated_at.eq(now))
                .execute(conn)?;
                let row: Option<RefreshTokenRow> = refresh_tokens::table
                    .find(&hash)
                    .select(RefreshTokenRow::as_select())
                    .first(conn)
                    .optional()?;
                let Some(row) = row else { return Ok(Err((invalid_refresh(), None))) };
                if claimed == 1 {
                    let user: UserRow = users::table.find(&row.user_id).select(UserRow::as_select()).first(conn)?;
                    // Tokens from before sessions had ids start one now.
                    let session = row.session_id.unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
                    return issue_pair(&d, conn, &user, &session).map(Ok);
                }
                if row.rotated_at.is_some() {
                    diesel::update(
                        refresh_tokens::table
                            .filter(refresh_tokens::user_id.eq(&row.user_id))
                            .filter(refresh_tokens::revoked_at.is_null()),
                    )
                    .set(refresh_tokens::revoked_at.eq(now))
                    .execute(conn)?;
                    log::warn!(target: "civicpulse::auth", "refresh token reuse: revoked all sessions of user={}", row.user_id);
                    // The sessions whose access tokens may still be live:
                    // those that issued a pair within a token's lifetime.
                    let lifetime = d.tokens.ttl() + Duration::from_secs(TokenKeys::LEEWAY_SECS);
                    let sessions: Vec<Option<String>> = refresh_tokens::table
                        .filter(refresh_tokens::user_id.eq(&row.user_id))
                        .filter(refresh_tokens::created_at.gt(now - lifetime.as_millis() as i64))
                        .select(refresh_tokens::session_id)
                        .distinct()
                        .load(conn)?;
                    let sessions = sessions.into_iter().flatten().collect();
                    return Ok(Err((reused(), Some((row.user_id, sessions)))));
                }
                Ok(Err((invalid_refresh(), None)))
            })
        })
        .await?;
    // The revocation must commit even though the caller gets an error, hence
    // the nested result. Then the access tokens the thief (or the user) got
    // go too, and their sockets.
    outcome.map_err(|(error, revoked)| {
        let Some((user_id, sessions)) = revoked else { return error };
        for session in sessions {
            domain.revocations.revoke(
                Revocation {
                    user_id: user_id.clone(),
                    scope: Scope::Session(session),
                    reason: Reason::Revoked,
                    until: domain.tokens_live_until(),
                },
                Origin::Local,
            );
        }
        error
    })
}

fn reused() -> DomainError {
    DomainError::Unauthorized {
        code: "refresh_token_reused",
        message: "refresh token was already used; all sessions were revoked",
    }
}

/// Revokes one refresh token, and its session's access tokens on every
/// node (their sockets end). Unknown or already dead tokens are fine:
/// logging out twice is not an error.
pub async fn logout(domain: &Domain, body: &Value) -> DomainResult<()> {
    let hash = refresh::hash(&refresh_token_field(body)?);
    let session = domain
        .query(move |conn| {
            let row: Option<RefreshTokenRow> = refresh_tokens::table
                .find(&hash)
                .select(RefreshTokenRow::as_select())
                .first(conn)
                .optional()?;
            diesel::update(
                refresh_tokens::table
                    .filter(refresh_tokens::token_hash.eq(hash))
                    .filter(refresh_tokens::revoked_at.is_null()),
            )
            .set(refresh_tokens::revoked_at.eq(now_ms()))
            .execute(conn)?;
            Ok(row.and_then(|row| Some((row.user_id, row.session_id?))))
        })
        .await?;
    if let Some((user_id, session)) = session {
        log::info!(target: "civicpulse::auth", "logout user={user_id} session={session}");
        domain.revocations.revoke(
            Revocation {
                user_id,
                scope: Scope::Session(session),
                reason: Reason::LoggedOut,
                until: domain.tokens_live_until(),
            },
            Origin::Local,
        );
    }
    Ok(())
}

pub fn find_user(conn: &mut AnyConnection, id: &str) -> DomainResult<Option<UserRow>> {
    if !ids::is_user_id(id) {
        return Ok(None);
    }
    Ok(users::table.find(id).select(UserRow::as_select()).first(conn).optional()?)
}

/// The caller's current role, which may differ from the one in their token.
pub fn current_role(conn: &mut AnyConnection, user_id: &str) -> DomainResult<Role> {
    let user = find_user(conn, user_id)?.ok_or_else(DomainError::invalid_token)?;
    Ok(Role::parse(&user.role).unwrap_or(Role::Citizen))
}

pub async fn me(domain: &Domain, who: &Principal) -> DomainResult<User> {
    let id = who.user_id.clone();
    domain
        .query(move |conn| {
            find_user(conn, &id)?.map(|u| User::from_row(u, true)).ok_or_else(DomainError::invalid_token)
        })
        .await
}

pub async fn get(domain: &Domain, who: &Principal, id: String) -> DomainResult<User> {
    let caller = who.user_id.clone();
    domain
        .query(move |conn| {
            let user = find_user(conn, &id)?.ok_or(DomainError::NotFound("user"))?;
            let with_email = user.id == caller || current_role(conn, &caller)? == Role::Admin;
            Ok(User::from_row(user, with_email))
        })
        .await
}

/// Changes a user's role (admins only). The ID keeps its prefix.
pub async fn set_role(domain: &Domain, who: &Principal, id: String, body: &Value) -> DomainResult<User> {
    let caller = who.user_id.clone();
    let mut input = Input::new(body)?;
    let role = input.choice("role", Role::NAMES);
    input.finish()?;
    let role = role.ok_or_else(|| DomainError::invalid("role", "is required"))?;
    let user = domain
        .query(move |conn| {
            if current_role(conn, &caller)? != Role::Admin {
                return Err(DomainError::Forbidden("only admins can change roles"));
            }
            let before = find_user(conn, &id)?.ok_or(DomainError::NotFound("user"))?;
            diesel::update(users::table.find(&id)).set(users::role.eq(&role)).execute(conn)?;
            log::info!(target: "civicpulse::auth", "user={id} role={role} by admin={caller}");
            let user = find_user(conn, &id)?.ok_or(DomainError::NotFound("user"))?;
            Ok((before.role != user.role, User::from_row(user, true)))
        })
        .await?;
    let (changed, user) = user;
    if !changed {
        return Ok(user);
    }
    // Sockets keep the claims they connected with: end them, so that they
    // come back with a token that says the new role.
    domain.revocations.revoke(
        Revocation {
            user_id: user.user_id.clone(),
            scope: Scope::Sockets,
            reason: Reason::RoleChanged,
            until: domain.tokens_live_until(),
        },
        Origin::Local,
    );
    Ok(user)
}

/// Creates an account of any role (for the command line): hashes, then
/// stores, on the current thread.
pub fn create_blocking(conn: &mut AnyConnection, new: NewUser) -> DomainResult<UserRow> {
    new.validate()?;
    let hash = password::hash(&new.password)?;
    insert_user(conn, new, hash)
}
