//! Credentials: access tokens (JWT), refresh tokens, password hashes.
//! Pure functions; the domain decides when to call them.

pub mod password;
pub mod refresh;
pub mod tokens;

pub use tokens::{Claims, TokenKeys};
