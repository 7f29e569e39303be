//! CivicPulse's socket protocol: its event names and the payloads the
//! contract (docs/API.md) gives each server → client event, built from
//! domain events. The generic codecs are in the `actix-socketio` crate.

pub mod events;
pub mod offsets;
