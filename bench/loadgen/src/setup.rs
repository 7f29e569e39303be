//! Test data made over the public REST API (both servers implement the same
//! routes), and access tokens minted locally with the shared secret.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use civicpulse::auth::TokenKeys;
use civicpulse::domain::Role;

use crate::net::{Http, Target};

pub const CITY: &str = "loadtown";
const PASSWORD: &str = "loadgen-password-1";
/// Parallel HTTP connections used while setting up.
const SETUP_CONNECTIONS: usize = 4;

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub name: String,
}

pub struct Fixture {
    pub users: Vec<User>,
    pub issues: Vec<String>,
    keys: TokenKeys,
}

impl Fixture {
    /// Registers `users` users and creates `issues` issues (reported by the
    /// first user). Tokens are signed with `secret` and live two hours.
    pub async fn build(target: &Target, secret: &str, users: usize, issues: usize) -> Result<Self, String> {
        let keys = TokenKeys::new(secret.as_bytes(), Duration::from_secs(2 * 3600));
        let run = format!("{:x}", rand_u64());
        let register = |i: usize| {
            json!({
                "email": format!("lg-{run}-{i}@loadgen.test"),
                "password": PASSWORD,
                "displayName": format!("Load {i}"),
                "city": CITY,
            })
        };
        let users = post_many(target, users, "/api/auth/register", None, register, 201, |json| {
            let id = json["user"]["userId"].as_str()?.to_owned();
            let name = json["user"]["displayName"].as_str().unwrap_or("Load").to_owned();
            Some(User { id, name })
        })
        .await?;
        let mut fixture = Self { users, issues: Vec::new(), keys };
        if issues > 0 {
            let reporter = fixture.token(0);
            let issue = |i: usize| {
                json!({
                    "title": format!("Load test issue {i}"),
                    "description": "made by civicpulse-loadgen",
                    "category": "roads",
                    "city": CITY,
                })
            };
            fixture.issues = post_many(target, issues, "/api/issues", Some(&reporter), issue, 201, |json| {
                Some(json["issueId"].as_str()?.to_owned())
            })
            .await?;
        }
        Ok(fixture)
    }

    /// `users` users that exist only in their tokens: enough for sockets
    /// that never write (idle, handshake), since a handshake only verifies
    /// the token. Registering would hash passwords (Argon2 holds 19 MiB
    /// per hash) and inflate the server's RSS before the measurement.
    pub fn synthetic(secret: &str, users: usize) -> Self {
        let keys = TokenKeys::new(secret.as_bytes(), Duration::from_secs(2 * 3600));
        let users = (0..users.max(1))
            .map(|i| User {
                id: civicpulse::ids::new_id(civicpulse::ids::IdKind::Citizen),
                name: format!("Load {i}"),
            })
            .collect();
        Self { users, issues: Vec::new(), keys }
    }

    /// A fresh access token for user `i` (modulo the number of users).
    pub fn token(&self, i: usize) -> String {
        let user = &self.users[i % self.users.len()];
        self.keys.issue(&user.id, &user.name, Role::Citizen, Some(CITY), None)
    }
}

/// POSTs `n` JSON bodies to `path` over [`SETUP_CONNECTIONS`] keep-alive
/// connections, keeping the parsed answers in order.
async fn post_many<T>(
    target: &Target,
    n: usize,
    path: &str,
    token: Option<&str>,
    body: impl Fn(usize) -> Value + Sync,
    status: u16,
    parse: impl Fn(&Value) -> Option<T> + Sync,
) -> Result<Vec<T>, String> {
    let next = AtomicUsize::new(0);
    let workers = (0..SETUP_CONNECTIONS.min(n.max(1))).map(|_| async {
        let http = Http::new(target).map_err(|e| format!("HTTP client: {e}"))?;
        let mut out = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return Ok::<_, String>(out);
            }
            let res =
                http.post(path, token, Some(&body(i))).await.map_err(|e| format!("POST {path}: {e}"))?;
            let json = res.json();
            if res.status != status {
                return Err(format!("POST {path}: HTTP {} {json}", res.status));
            }
            out.push((i, parse(&json).ok_or_else(|| format!("POST {path}: unexpected answer {json}"))?));
        }
    });
    let mut all: Vec<(usize, T)> = Vec::with_capacity(n);
    for part in futures_util::future::join_all(workers).await {
        all.extend(part?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// A random number for unique e-mail addresses (no RNG crate needed).
pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    h.finish()
}
