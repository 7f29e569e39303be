//! One module per resource.

pub mod auth;
pub mod issues;
pub mod messages;
pub mod ops;
pub mod users;

use std::collections::HashMap;

/// Query strings arrive as a flat map; the domain validates the values.
pub type QueryMap = actix_web::web::Query<HashMap<String, String>>;
