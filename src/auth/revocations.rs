//! Access tokens that stop working before they expire, and the live
//! sockets that must end with them.
//!
//! A logout revokes its session's tokens (claim `sid`); a replayed refresh
//! token revokes every session of its user. Checking a token still needs
//! no database: the revocations are kept in memory, each until the last
//! token it covers has expired, and in cluster mode the nodes share them
//! (see `cluster::revocations`). A role change revokes nothing (REST reads
//! the current role every time) but ends the user's sockets, whose claims
//! are fixed for their life, so that they come back with current ones.
//!
//! Listeners hear every revocation: the realtime side ends the matching
//! sockets, the cluster tells the other nodes.

use std::sync::RwLock;

use dashmap::DashMap;

use super::Claims;

/// Why a user's tokens or sockets end; also what their sockets are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    LoggedOut,
    Revoked,
    RoleChanged,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::LoggedOut => "logged_out",
            Reason::Revoked => "revoked",
            Reason::RoleChanged => "role_changed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Reason::LoggedOut, Reason::Revoked, Reason::RoleChanged].into_iter().find(|r| r.as_str() == s)
    }
}

/// What is revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every token of one sign-in.
    Session(String),
    /// No token: only the user's sockets end.
    Sockets,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub user_id: String,
    pub scope: Scope,
    pub reason: Reason,
    /// When the last token it covers has expired (Unix seconds): the entry
    /// is forgotten then.
    pub until: i64,
}

impl Revocation {
    /// Whether it ends the socket of a user holding a token from
    /// `session`.
    pub fn covers(&self, user_id: &str, session: Option<&str>) -> bool {
        self.user_id == user_id
            && match &self.scope {
                Scope::Session(sid) => session == Some(sid.as_str()),
                Scope::Sockets => true,
            }
    }

    /// One line, for Redis (`<reason> <user> <s:sid | -> <until>`).
    pub fn encode(&self) -> String {
        let scope = match &self.scope {
            Scope::Session(sid) => format!("s:{sid}"),
            Scope::Sockets => "-".into(),
        };
        format!("{} {} {scope} {}", self.reason.as_str(), self.user_id, self.until)
    }

    pub fn decode(line: &str) -> Option<Self> {
        let mut fields = line.split(' ');
        let (Some(reason), Some(user), Some(scope), Some(until), None) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return None;
        };
        let scope = match scope.split_once(':') {
            _ if scope == "-" => Scope::Sockets,
            Some(("s", sid)) if !sid.is_empty() => Scope::Session(sid.to_string()),
            _ => return None,
        };
        if user.is_empty() {
            return None;
        }
        Some(Self {
            user_id: user.to_string(),
            scope,
            reason: Reason::parse(reason)?,
            until: until.parse().ok()?,
        })
    }
}

/// Where a revocation was made: here, or on another node (which already
/// told the cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Local,
    Remote,
}

type Listener = Box<dyn Fn(&Revocation, Origin) + Send + Sync>;

/// Beyond this many entries, expired ones are swept on the next insert.
const SWEEP_AT: usize = 4096;

#[derive(Default)]
pub struct Revocations {
    /// session id → until.
    sessions: DashMap<String, i64>,
    listeners: RwLock<Vec<Listener>>,
}

impl Revocations {
    pub fn listen(&self, listener: impl Fn(&Revocation, Origin) + Send + Sync + 'static) {
        self.listeners.write().unwrap_or_else(|p| p.into_inner()).push(Box::new(listener));
    }

    /// Records `revocation` and tells the listeners.
    pub fn revoke(&self, revocation: Revocation, origin: Origin) {
        self.record(&revocation);
        for listener in self.listeners.read().unwrap_or_else(|p| p.into_inner()).iter() {
            listener(&revocation, origin);
        }
    }

    /// Records without telling anyone (what the cluster had before this
    /// node joined).
    pub fn record(&self, revocation: &Revocation) {
        let now = now();
        if revocation.until <= now {
            return;
        }
        if let Scope::Session(sid) = &revocation.scope {
            self.sessions.insert(sid.clone(), revocation.until);
        }
        if self.sessions.len() > SWEEP_AT {
            self.sessions.retain(|_, until| *until > now);
        }
    }

    /// Whether a valid token was revoked.
    pub fn is_revoked(&self, claims: &Claims) -> bool {
        claims.sid.as_ref().and_then(|sid| self.sessions.get(sid)).is_some_and(|until| *until > now())
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn claims(user: &str, sid: Option<&str>) -> Claims {
        let iat = now();
        Claims {
            sub: user.into(),
            name: "N".into(),
            role: Role::Citizen,
            city: None,
            iat,
            exp: iat + 900,
            typ: "access".into(),
            sid: sid.map(str::to_string),
        }
    }

    #[test]
    fn sessions_are_revoked_until_their_tokens_expire() {
        let r = Revocations::default();
        let t = now();
        let logout = |user: &str, sid: &str, until| Revocation {
            user_id: user.into(),
            scope: Scope::Session(sid.into()),
            reason: Reason::LoggedOut,
            until,
        };
        r.record(&logout("u1", "s1", t + 60));
        assert!(r.is_revoked(&claims("u1", Some("s1"))));
        assert!(!r.is_revoked(&claims("u1", Some("s2"))), "another sign-in of the same user");
        assert!(!r.is_revoked(&claims("u1", None)));
        r.record(&logout("u3", "s3", t - 1));
        assert!(!r.is_revoked(&claims("u3", Some("s3"))), "nothing left to revoke");
    }

    #[test]
    fn revocations_read_back() {
        for scope in [Scope::Session("01J".into()), Scope::Sockets] {
            let r = Revocation { user_id: "usr_1".into(), scope, reason: Reason::RoleChanged, until: 99 };
            assert_eq!(Revocation::decode(&r.encode()), Some(r));
        }
        for broken in ["", "revoked usr_1 - ", "nope usr_1 - 1", "revoked usr_1 x:1 1", "revoked usr_1 s: 1"]
        {
            assert_eq!(Revocation::decode(broken), None, "{broken}");
        }
    }

    #[test]
    fn covers_the_sockets_it_ends() {
        let r =
            Revocation { user_id: "u".into(), scope: Scope::Sockets, reason: Reason::RoleChanged, until: 0 };
        assert!(r.covers("u", None) && !r.covers("v", None));
        let s = Revocation { scope: Scope::Session("s".into()), ..r };
        assert!(s.covers("u", Some("s")) && !s.covers("u", Some("t")) && !s.covers("u", None));
    }
}
