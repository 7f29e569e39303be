//! Delivery of one pre-encoded frame to many sessions, shared by the
//! broadcaster and the rooms.

use std::sync::Arc;

use actix::prelude::*;

use crate::engineio::{CloseReason, EncodedFrame, Push};

/// Sends `frame` to `recipient` without waiting. A session whose mailbox is
/// full has fallen behind on events it must not miss: it is disconnected
/// (the client reconnects and reloads) rather than silently losing events.
/// Answers false when the session is gone or was disconnected.
pub fn deliver(recipient: &Recipient<Push>, frame: &Arc<EncodedFrame>, who: &str) -> bool {
    match recipient.try_send(Push::Frame(frame.clone())) {
        Ok(()) => true,
        Err(SendError::Full(_)) => {
            log::warn!(target: "civicpulse::fanout", "socket={who} is not keeping up; disconnecting it");
            recipient.do_send(Push::Close(CloseReason::ForcedClose));
            false
        }
        Err(SendError::Closed(_)) => false,
    }
}
