//! Wire protocol: pure codecs, no actix, no IO.
//!
//! Everything in here turns bytes and strings into typed values and back and
//! is tested on its own (the crate's `docs/PROTOCOL.md`, sections 2 and 3).
//! Sessions, timers and transports live in `engineio` and only call into this.
//!
//! - [`engine`]: Engine.IO v4 packets, polling payloads, the handshake and
//!   the JSON error bodies of bad HTTP requests.
//! - [`socket`]: Socket.IO v5 packets, including binary attachments.

pub mod engine;
pub mod socket;
