//! Wire protocol: pure codecs, no actix, no IO.
//!
//! Everything in here turns bytes and strings into typed values and back and
//! is tested on its own (see PROTOCOL.md in the shared docs, sections 2 and 3).
//! Sessions, timers and transports live elsewhere and only call into this.
//!
//! - [`engine`]: Engine.IO v4 packets, polling payloads, the handshake and
//!   the JSON error bodies of bad HTTP requests.
//! - [`socket`]: Socket.IO v5 packets, including binary attachments.
//! - [`events`]: CivicPulse event names and server event payloads.

pub mod engine;
pub mod events;
pub mod socket;
