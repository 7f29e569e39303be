//! Credentials: access tokens (JWT), refresh tokens, password hashes.
//! Pure functions; the domain decides when to call them.

pub mod password;
pub mod refresh;
mod role;
pub mod tokens;

pub use role::Role;
pub use tokens::{Claims, TokenKeys};
