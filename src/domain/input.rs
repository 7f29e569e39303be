//! Reading client JSON into checked values. Every problem is collected per
//! field, so one 422 names all of them, and REST bodies and socket payloads
//! go through the same rules.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{DomainError, DomainResult};

pub struct Input<'a> {
    fields: &'a Map<String, Value>,
    errors: BTreeMap<String, String>,
}

/// A string field's rules: its length in characters after trimming.
#[derive(Clone, Copy)]
pub struct Text {
    pub min: usize,
    pub max: usize,
}

impl<'a> Input<'a> {
    pub fn new(body: &'a Value) -> DomainResult<Self> {
        match body {
            Value::Object(fields) => Ok(Self { fields, errors: BTreeMap::new() }),
            _ => Err(DomainError::invalid("body", "must be a JSON object")),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }

    fn fail(&mut self, name: &str, reason: impl Into<String>) {
        self.errors.entry(name.to_string()).or_insert_with(|| reason.into());
    }

    /// A required string, trimmed.
    pub fn text(&mut self, name: &str, rule: Text) -> Option<String> {
        match self.fields.get(name) {
            None | Some(Value::Null) => {
                self.fail(name, "is required");
                None
            }
            Some(_) => self.optional_text(name, rule),
        }
    }

    /// A string that may be absent or null.
    pub fn optional_text(&mut self, name: &str, rule: Text) -> Option<String> {
        match self.fields.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match check_length(s, rule) {
                Ok(trimmed) => Some(trimmed),
                Err(reason) => {
                    self.fail(name, reason);
                    None
                }
            },
            Some(_) => {
                self.fail(name, "must be a string");
                None
            }
        }
    }

    /// A required string that must be one of `choices`.
    pub fn choice(&mut self, name: &str, choices: &[&str]) -> Option<String> {
        match self.fields.get(name) {
            None | Some(Value::Null) => {
                self.fail(name, "is required");
                None
            }
            Some(_) => self.optional_choice(name, choices),
        }
    }

    pub fn optional_choice(&mut self, name: &str, choices: &[&str]) -> Option<String> {
        match self.fields.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if choices.contains(&s.as_str()) => Some(s.clone()),
            Some(_) => {
                self.fail(name, format!("must be one of {}", choices.join(", ")));
                None
            }
        }
    }

    /// A string checked by `check`, which explains a rejection.
    pub fn optional_with(
        &mut self,
        name: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        let value = self.optional_text(name, Text { min: 0, max: usize::MAX })?;
        match check(&value) {
            Ok(()) => Some(value),
            Err(reason) => {
                self.fail(name, reason);
                None
            }
        }
    }

    /// Adds a rule that is not about one field alone.
    pub fn reject(&mut self, name: &str, reason: impl Into<String>) {
        self.fail(name, reason);
    }

    /// The collected problems as one error, if any.
    pub fn finish(self) -> DomainResult<()> {
        if self.errors.is_empty() { Ok(()) } else { Err(DomainError::Validation(self.errors)) }
    }
}

pub fn check_length(raw: &str, rule: Text) -> Result<String, String> {
    // PostgreSQL cannot store NUL in TEXT; refuse it on every backend alike.
    if raw.contains('\0') {
        return Err("must not contain NUL characters".into());
    }
    let trimmed = raw.trim();
    let len = trimmed.chars().count();
    if len < rule.min || len > rule.max {
        return Err(if rule.max == usize::MAX {
            format!("must be at least {} characters", rule.min)
        } else {
            format!("must be {} to {} characters", rule.min, rule.max)
        });
    }
    Ok(trimmed.to_string())
}

/// City: a lowercase slug `[a-z0-9-]{1,64}`.
pub fn check_city(city: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&city.len())
        && city.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok { Ok(()) } else { Err("must be a lowercase slug of a-z, 0-9 and -, 1 to 64 characters".into()) }
}

/// Email: one `@` with something on each side, no spaces, at most 254 bytes.
pub fn check_email(email: &str) -> Result<(), String> {
    let ok = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@') && domain.contains('.')
        });
    if ok { Ok(()) } else { Err("must be an email address".into()) }
}

/// Avatar: an http(s) URL of at most 2048 bytes.
pub fn check_url(url: &str) -> Result<(), String> {
    let ok =
        url.len() <= 2048 && (url.starts_with("https://") || url.starts_with("http://")) && url.len() > 8;
    if ok { Ok(()) } else { Err("must be an http(s) URL of at most 2048 characters".into()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collects_every_field_error() {
        let body = json!({"title": "  a ", "category": "nope", "count": 3});
        let mut input = Input::new(&body).unwrap();
        assert_eq!(input.text("title", Text { min: 3, max: 200 }), None);
        assert_eq!(input.choice("category", &["roads"]), None);
        assert_eq!(input.text("missing", Text { min: 1, max: 2 }), None);
        let Err(DomainError::Validation(errors)) = input.finish() else {
            panic!("expected a validation error")
        };
        assert_eq!(errors.keys().collect::<Vec<_>>(), ["category", "missing", "title"]);
    }

    #[test]
    fn trims_and_counts_characters() {
        assert_eq!(check_length("  héllo  ", Text { min: 5, max: 5 }).unwrap(), "héllo");
        assert!(check_length("🎉🎉", Text { min: 1, max: 2 }).is_ok());
        assert!(check_length("   ", Text { min: 1, max: 2 }).is_err());
    }

    #[test]
    fn slugs_and_emails() {
        assert!(check_city("new-york-2").is_ok());
        assert!(check_city("New York").is_err());
        assert!(check_city("").is_err());
        assert!(check_email("a@b.co").is_ok());
        assert!(check_email("a b@c.d").is_err());
        assert!(check_email("ab.cd").is_err());
        assert!(Input::new(&json!([1])).is_err());
    }
}
