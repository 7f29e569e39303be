//! Delivery of one pre-encoded frame to many sessions, shared by the
//! broadcaster and the rooms.

use std::sync::Arc;

use actix::prelude::*;

use actix_socketio::engineio::{CloseReason, Push, SharedMessage};

/// Whether a frame may be dropped for a session that is falling behind.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Chat and issue events: a session that cannot take them is
    /// disconnected (its client reconnects and reloads) rather than
    /// silently missing one.
    Required,
    /// Typing indicators: stale a moment later anyway, so dropped.
    Droppable,
}

/// Offers one shared frame to one session, without waiting. Answers false
/// when the session is gone or was disconnected.
pub fn offer_frame(
    recipient: &Recipient<Push>,
    frame: &Arc<SharedMessage>,
    who: &str,
    delivery: Delivery,
) -> bool {
    match recipient.try_send(Push::Shared(frame.clone())) {
        Ok(()) => true,
        Err(SendError::Full(_)) if delivery == Delivery::Droppable => true,
        Err(SendError::Full(_)) => {
            log::warn!(target: "civicpulse::fanout", "socket={who} is not keeping up; disconnecting it");
            recipient.do_send(Push::Close(CloseReason::ForcedClose));
            false
        }
        Err(SendError::Closed(_)) => false,
    }
}
