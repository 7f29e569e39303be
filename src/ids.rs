//! Public identifiers: a kind prefix plus a 26-character ULID (Crockford
//! base32) built from a UUIDv7, so IDs sort by creation time. Anything a
//! client hands us is checked with [`is_valid`] before it reaches a query.

use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Citizen,
    Official,
    Issue,
    Message,
}

impl IdKind {
    pub fn prefix(self) -> &'static str {
        match self {
            IdKind::Citizen => "usr_",
            IdKind::Official => "off_",
            IdKind::Issue => "iss_",
            IdKind::Message => "msg_",
        }
    }

    /// The regular expression (ECMA-262, for the OpenAPI document) that
    /// [`is_valid`] accepts for this kind.
    pub fn pattern(self) -> String {
        format!("^{}{ULID_PATTERN}$", self.prefix())
    }
}

/// A ULID as [`is_ulid`] accepts it.
const ULID_PATTERN: &str = "[0-7][0-9A-HJKMNP-TV-Z]{25}";

/// Either user prefix, as [`is_user_id`] accepts it.
pub fn user_id_pattern() -> String {
    format!("^(usr|off)_{ULID_PATTERN}$")
}

/// The last ULID handed out, so that two IDs made within one millisecond
/// still sort in creation order (uuid's own counter is per-timestamp, but a
/// clock that steps backwards would otherwise break ordering).
static LAST: Mutex<u128> = Mutex::new(0);

pub fn new_id(kind: IdKind) -> String {
    let fresh = uuid::Uuid::now_v7().as_u128();
    let value = {
        let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = if fresh > *last { fresh } else { *last + 1 };
        *last = next;
        next
    };
    format!("{}{}", kind.prefix(), ulid::Ulid(value))
}

/// True when `id` is `prefix` followed by a well-formed ULID.
pub fn is_valid(kind: IdKind, id: &str) -> bool {
    id.strip_prefix(kind.prefix()).is_some_and(is_ulid)
}

/// A user ID is either prefix (the prefix records the role at creation).
pub fn is_user_id(id: &str) -> bool {
    is_valid(IdKind::Citizen, id) || is_valid(IdKind::Official, id)
}

fn is_ulid(s: &str) -> bool {
    // The first character carries only 3 bits, hence 0-7.
    s.len() == 26
        && s.as_bytes()[0].is_ascii_digit()
        && s.as_bytes()[0] <= b'7'
        && s.bytes().all(|b| {
            b.is_ascii_digit() || (b.is_ascii_uppercase() && !matches!(b, b'I' | b'L' | b'O' | b'U'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_valid_and_ordered() {
        let ids: Vec<String> = (0..1000).map(|_| new_id(IdKind::Issue)).collect();
        for id in &ids {
            assert!(is_valid(IdKind::Issue, id), "{id}");
            assert_eq!(id.len(), 30);
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "IDs sort in creation order");
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "iss_",
            "iss_123",
            "usr_01HN5K7ZQ4X9J8W2V3B6C1D0EF",
            "iss_01HN5K7ZQ4X9J8W2V3B6C1D0E!",
            "iss_81HN5K7ZQ4X9J8W2V3B6C1D0EF",
            "iss_01hn5k7zq4x9j8w2v3b6c1d0ef",
        ] {
            assert!(!is_valid(IdKind::Issue, bad), "{bad}");
        }
        assert!(is_valid(IdKind::Issue, "iss_01HN5K7ZQ4X9J8W2V3B6C1D0EF"));
        assert!(is_user_id("off_01HN5K7ZQ4X9J8W2V3B6C1D0EF"));
    }
}
