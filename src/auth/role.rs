//! What a user may do. Carried in access tokens, so it lives with them;
//! `domain::Role` re-exports it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Citizen,
    Official,
    Admin,
}

impl Role {
    pub const NAMES: &'static [&'static str] = &["citizen", "official", "admin"];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Citizen => "citizen",
            Role::Official => "official",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "citizen" => Some(Role::Citizen),
            "official" => Some(Role::Official),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Officials and admins run the city's side: they triage issues.
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Official | Role::Admin)
    }
}
