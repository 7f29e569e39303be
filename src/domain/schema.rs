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

/// Text the domain trims (`input::check_length`): at least `min` and at
/// most `max` characters, no NUL; with `min` > 0, something besides
/// white space.
pub fn text(min: usize, max: usize) -> Object {
    let pattern =
        if min > 0 { r"^[^\u0000]*[^\s\u0000][^\u0000]*$" } else { r"^[^\u0000]*$" }.to_string();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .build()
}

