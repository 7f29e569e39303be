//! Who is online: one operation, `list`, shared by `GET /api/presence` and
//! the socket's `presence:list`. Who is online is known by the realtime
//! side (an actor, above this layer), so the domain only defines the
//! [`Directory`] it asks, and `lib.rs` attaches the actor's at start.

use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::input::check_city;
use super::{Domain, DomainError, DomainResult};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnlineUser {
    #[schema(schema_with = super::schema::user_id)]
    pub user_id: String,
    pub display_name: String,
    #[schema(schema_with = super::schema::city_or_null, required)]
    pub city: Option<String>,
}

/// Whatever knows who is online (the realtime side's presence registry).
pub trait Directory: Send + Sync + 'static {
    /// Users online now, in one city if `city` is given, in a stable order.
    fn online(&self, city: Option<String>) -> BoxFuture<'static, DomainResult<Vec<OnlineUser>>>;
}

/// The domain's handle on the [`Directory`]. The domain exists before the
/// actors do (the command line has a domain and no actors at all), so the
/// directory is attached once, when they start.
#[derive(Clone, Default)]
pub struct Presence {
    directory: Arc<OnceLock<Box<dyn Directory>>>,
}

impl Presence {
    /// Attaches the directory; a second one is refused (and handed back),
    /// since every clone of the domain must see the same one.
    pub fn attach(&self, directory: impl Directory) -> Result<(), Box<dyn Directory>> {
        self.directory.set(Box::new(directory))
    }
}

/// Users online now, optionally in one city.
pub async fn list(domain: &Domain, city: Option<String>) -> DomainResult<Vec<OnlineUser>> {
    if let Some(city) = &city {
        check_city(city).map_err(|reason| DomainError::invalid("city", reason))?;
    }
    let Some(directory) = domain.presence.directory.get() else {
        return Err(DomainError::Unavailable("presence directory not started".into()));
    };
    directory.online(city).await
}
