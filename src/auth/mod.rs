//! Credentials: access tokens (JWT), refresh tokens, password hashes.
//! Pure functions; the domain decides when to call them.

pub mod password;
pub mod refresh;
pub mod revocations;
mod role;
pub mod tokens;

pub use revocations::Revocations;
pub use role::Role;
pub use tokens::{Claims, TokenKeys};
