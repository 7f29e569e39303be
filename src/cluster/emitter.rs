//! Placeholder until the emitter decoder lands (branch wt-emitter).
use std::sync::Arc;

use actix_socketio::engineio::SharedMessage;

use super::To;

pub const DEFAULT_KEY: &str = "socket.io";

pub fn pattern(key: &str) -> String {
    format!("{key}#/#*")
}

pub struct EmitterBroadcast {
    pub frame: Arc<SharedMessage>,
}

impl EmitterBroadcast {
    pub fn audience(&self) -> Result<(To, bool), String> {
        Ok((To::Everyone, false))
    }
}

pub fn decode(_channel: &[u8], _payload: &[u8], _key: &str) -> Result<EmitterBroadcast, String> {
    Err("not yet supported".into())
}
