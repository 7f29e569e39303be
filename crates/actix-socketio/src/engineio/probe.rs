//! A WebSocket taking over a polling session (the upgrade): it attaches,
//! is probed (`2probe` → `3probe`), and takes over on `5`; anything else
//! ends the attempt and the session stays on polling (PROTOCOL.md 2.6).

use actix::prelude::*;

use super::session::{SocketSession, Transport, send_ws};
use super::ws::{WsEvent, WsOutlet};
use super::{EngineHandler, Outgoing};
use crate::protocol::engine::{self, Packet};

/// The WebSocket asking to take over, until it does or gives up.
pub(super) struct Upgrade {
    pub(super) conn: WsOutlet,
    pub(super) probed: bool,
    timeout: SpawnHandle,
}

/// A WebSocket asks to take over a polling session.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WsAttach(pub WsOutlet);

impl<H: EngineHandler> Handler<WsAttach> for SocketSession<H> {
    type Result = ();

    fn handle(&mut self, WsAttach(conn): WsAttach, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            conn.close();
            return;
        }
        match &self.transport {
            Transport::Polling(_) if self.upgrade.is_none() => {
                let timeout = ctx.run_later(self.engine_config.upgrade_timeout, |act, _| {
                    if let Some(upgrade) = act.upgrade.take() {
                        upgrade.conn.close();
                    }
                });
                self.upgrade = Some(Upgrade { conn, probed: false, timeout });
            }
            // Already upgraded or upgrading: one WebSocket per session.
            _ => conn.close(),
        }
    }
}

impl<H: EngineHandler> SocketSession<H> {
    /// What the probing WebSocket said or did.
    pub(super) fn probe_event(&mut self, event: WsEvent, ctx: &mut Context<Self>) {
        match event {
            WsEvent::Closed { .. } | WsEvent::Failed { .. } => {
                if let Some(upgrade) = self.upgrade.take() {
                    ctx.cancel_future(upgrade.timeout);
                }
            }
            // Anything that is not a probe packet ends the attempt.
            WsEvent::Text { text, .. } => {
                self.probe_packet(engine::decode_text(&text).unwrap_or(Packet::Noop), ctx)
            }
            WsEvent::Binary { .. } => self.probe_packet(Packet::Noop, ctx),
        }
    }

    fn probe_packet(&mut self, packet: Packet, ctx: &mut Context<Self>) {
        let Some(upgrade) = &mut self.upgrade else { return };
        match packet {
            // A repeated probe is answered again, and `5` completes the
            // upgrade even without a probe: the reference closes the
            // upgrading socket only for other packets.
            Packet::PingProbe => {
                upgrade.probed = true;
                send_ws(&upgrade.conn, Outgoing::Packet(Packet::PongProbe));
                // Release the client's waiting GET so it can stop polling.
                self.release_get_with_noop();
            }
            Packet::Upgrade => {
                let Some(upgrade) = self.upgrade.take() else { return };
                ctx.cancel_future(upgrade.timeout);
                self.release_get_with_noop();
                log::debug!("sid={} upgraded to websocket", self.sid);
                let pending = match &mut self.transport {
                    Transport::Polling(polling) => polling.take_outbox(),
                    Transport::WebSocket(_) => Vec::new(),
                };
                self.transport = Transport::WebSocket(upgrade.conn);
                self.write(pending, ctx);
                self.dispatch(ctx, |handler, out, _| handler.upgraded(out));
            }
            _ => {
                if let Some(upgrade) = self.upgrade.take() {
                    ctx.cancel_future(upgrade.timeout);
                    upgrade.conn.close();
                }
            }
        }
    }

    fn release_get_with_noop(&mut self) {
        if let Transport::Polling(polling) = &mut self.transport {
            polling.release_get_with_noop();
        }
    }
}
