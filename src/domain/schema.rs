//! The JSON Schemas of the wire's strings (IDs, timestamps, the closed sets
//! of values, slugs), for the OpenAPI document (`http::openapi`). Each is
//! built from the constant the validation itself uses, so the document
//! cannot promise other values than the server takes.

use utoipa::openapi::Object;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, SchemaType, Type};

use super::issues::{CATEGORIES, PRIORITIES, STATUSES};
use crate::auth::Role;
use crate::ids::{self, IdKind};

/// A string matching `pattern`.
fn string(pattern: String, description: &str) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern)).description(Some(description))
}

/// The same schema, also admitting `null`.
pub fn or_null(builder: impl Into<Object>) -> Object {
    let mut object = builder.into();
    object.schema_type = match object.schema_type {
        SchemaType::Type(t) => SchemaType::from_iter([t, Type::Null]),
        other => other,
    };
    if let Some(values) = object.enum_values.as_mut() {
        values.push(serde_json::Value::Null);
    }
    object
}

fn one_of(values: &[&str], description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
}

pub fn issue_id() -> Object {
    string(IdKind::Issue.pattern(), "an issue ID").build()
}

pub fn message_id() -> Object {
    string(IdKind::Message.pattern(), "a message ID").build()
}

pub fn user_id() -> Object {
    string(ids::user_id_pattern(), "a user ID (`usr_` citizens, `off_` officials and admins)").build()
}

pub fn user_id_or_null() -> Object {
    or_null(string(ids::user_id_pattern(), "a user ID, or null"))
}

/// RFC 3339 UTC with milliseconds, as `timestamp::format_ms` writes it.
pub fn timestamp() -> Object {
    string(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$".into(), "RFC 3339 UTC with milliseconds")
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
        .build()
}

const CITY_PATTERN: &str = "^[a-z0-9-]{1,64}$";
const CITY: &str = "a lowercase slug of a-z, 0-9 and -";

/// As `input::check_city` accepts it.
pub fn city() -> Object {
    string(CITY_PATTERN.into(), CITY).build()
}

pub fn city_or_null() -> Object {
    or_null(string(CITY_PATTERN.into(), CITY))
}

pub fn category() -> Object {
    one_of(CATEGORIES, "the issue's category").build()
}

pub fn priority() -> Object {
    one_of(PRIORITIES, "the issue's priority").build()
}

pub fn status() -> Object {
    one_of(STATUSES, "the issue's status").build()
}

pub fn role() -> Object {
    one_of(Role::NAMES, "the user's current role").build()
}

/// Emoji → count; an emoji whose count falls to zero is not listed.
pub fn reactions() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1))))
        .description(Some("emoji → how many users reacted with it (at least 1)"))
        .build()
}

/// What `str::trim` trims (Unicode's White_Space), as a character class's
/// body: `\s` differs between regular expression dialects.
pub const WHITE_SPACE: &str = r"\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000";

/// Text the domain trims (`input::check_length`): at least `min` and at
/// most `max` characters once trimmed, no NUL anywhere. The limits are in
/// the pattern, which matches the trimmed text between the white space it
/// may have around it: `minLength` and `maxLength` would count that too.
pub fn text(min: usize, max: usize) -> Object {
    let (ws, visible) = (format!("[{WHITE_SPACE}]*"), format!(r"[^{WHITE_SPACE}\u0000]"));
    let inner = max.saturating_sub(2);
    // One visible character, or two around what lies between.
    let trimmed = match min {
        0 => format!(r"({visible}([^\u0000]{{0,{inner}}}{visible})?)?"),
        1 => format!(r"{visible}([^\u0000]{{0,{inner}}}{visible})?"),
        _ => format!(r"{visible}[^\u0000]{{{},{inner}}}{visible}", min - 2),
    };
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!("^{ws}{trimmed}{ws}$")))
        .description(Some(format!("{min} to {max} characters once trimmed, no NUL")))
        .build()
}
