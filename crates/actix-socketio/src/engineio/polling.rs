//! The long-polling transport of a session: the one GET that may wait for
//! something to send, the one POST that may be in flight, and the outbox of
//! frames waiting for the next GET (bounded, so that a client that stops
//! polling cannot make it grow past `max_buffered_bytes`).

use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::inbound::Inflight;
use super::session::{SocketSession, Transport};
use super::{CloseReason, EngineConfig, EngineHandler, Outgoing};
use crate::protocol::engine::{self, HttpError, Packet};

/// The answer to a polling GET: a payload, or an HTTP error.
pub(crate) type PollReply = Result<String, HttpError>;

pub(super) struct Polling {
    pending_get: Option<oneshot::Sender<PollReply>>,
    post_in_flight: bool,
    outbox: Vec<Outgoing>,
    outbox_bytes: usize,
    /// The permits of the messages POSTed (see `inbound`), made on the
    /// first POST.
    inflight: Option<Arc<Inflight>>,
}

impl Polling {
    /// A new polling session; its first GET gets `open`.
    pub(super) fn new(open: Outgoing) -> Self {
        Self { pending_get: None, post_in_flight: false, outbox: vec![open], outbox_bytes: 0, inflight: None }
    }

    pub(super) fn take_outbox(&mut self) -> Vec<Outgoing> {
        self.outbox_bytes = 0;
        std::mem::take(&mut self.outbox)
    }

    /// Queues frames for the next GET, or hands them to the GET waiting.
    /// An error is the reason to close the session.
    pub(super) fn write(
        &mut self,
        frames: impl IntoIterator<Item = Outgoing>,
        config: &EngineConfig,
        sid: &str,
    ) -> Result<(), CloseReason> {
        let queued = self.outbox.len();
        for frame in frames {
            self.outbox_bytes += frame.len();
            self.outbox.push(frame);
        }
        if self.outbox.len() == queued {
            // Nothing new: a waiting GET keeps waiting.
            return Ok(());
        }
        if self.outbox_bytes > config.max_buffered_bytes {
            config.stats.slow_client_disconnected();
            log::warn!("sid={sid} is not polling ({} bytes queued); disconnecting", self.outbox_bytes);
            return Err(CloseReason::TransportError);
        }
        if let Some(get) = self.pending_get.take() {
            let body = encode_payload(self.take_outbox());
            if get.send(Ok(body)).is_err() {
                // The client abandoned its GET: the reference treats that
                // as a broken transport.
                return Err(CloseReason::TransportError);
            }
        }
        Ok(())
    }

    /// The session is closing for `reason`. Answers true when the session
    /// can stop now; false when the close packet waits for the next GET.
    pub(super) fn close(&mut self, reason: CloseReason) -> bool {
        let mut packets = self.take_outbox();
        // A client that said goodbye itself gets no close packet back.
        let goodbye = if reason == CloseReason::TransportClose { Packet::Noop } else { Packet::Close };
        packets.push(Outgoing::Packet(goodbye));
        if let Some(get) = self.pending_get.take() {
            let _ = get.send(Ok(encode_payload(packets)));
            return true;
        }
        if !matches!(reason, CloseReason::ForcedClose | CloseReason::ServerShuttingDown) {
            // Only a close the server decides on waits for the next GET. A
            // session that died (ping timeout, transport or parse error,
            // client's `1`) is forgotten at once, as the reference does:
            // the next request gets code 1 (PROTOCOL.md 2.7, 2.8).
            return true;
        }
        self.outbox = packets;
        false
    }

    /// Every message POSTed has been dealt with (see `inbound`), and no
    /// POST is being read.
    pub(super) fn is_idle(&self) -> bool {
        !self.post_in_flight && self.inflight.as_ref().is_none_or(|inflight| inflight.is_idle())
    }

    /// A GET is waiting: a close now reaches the client at once, before
    /// it can send anything more.
    pub(super) fn has_get(&self) -> bool {
        self.pending_get.is_some()
    }

    /// Answers a waiting GET with what is queued and a noop, so that the
    /// client stops polling (an upgrade is under way or done).
    pub(super) fn release_get_with_noop(&mut self) {
        if let Some(get) = self.pending_get.take() {
            let mut packets = self.take_outbox();
            packets.push(Outgoing::Packet(Packet::Noop));
            let _ = get.send(Ok(encode_payload(packets)));
        }
    }
}

/// One long-polling body from queued frames.
fn encode_payload(frames: Vec<Outgoing>) -> String {
    let mut packets = Vec::with_capacity(frames.len());
    for frame in frames {
        match frame {
            Outgoing::Packet(p) => packets.push(p),
            Outgoing::Shared(shared) => {
                // The text already carries its Engine.IO type digit.
                packets.push(Packet::Message(shared.text[1..].to_string()));
                packets.extend(shared.binaries.iter().cloned().map(Packet::Binary));
            }
        }
    }
    engine::encode_payload(&packets)
}

/// A polling GET. The reply comes through the channel, now or later.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct PollGet(pub oneshot::Sender<PollReply>);

impl<H: EngineHandler> Handler<PollGet> for SocketSession<H> {
    type Result = ();

    fn handle(&mut self, PollGet(reply): PollGet, ctx: &mut Context<Self>) {
        let probed = self.upgrade.as_ref().is_some_and(|u| u.probed);
        let Transport::Polling(polling) = &mut self.transport else {
            let _ = reply.send(Err(HttpError::BadRequest));
            return;
        };
        if self.closing.is_some() {
            // The deferred close: whatever was left, then `1`.
            let _ = reply.send(Ok(encode_payload(polling.take_outbox())));
            ctx.stop();
            return;
        }
        if polling.pending_get.is_some() {
            // Two GETs at once break the protocol: refuse this one, and the
            // first one receives the close.
            let _ = reply.send(Err(HttpError::BadRequest));
            self.close(CloseReason::TransportError, ctx);
            return;
        }
        if probed {
            let _ = reply.send(Ok(encode_payload(vec![Outgoing::Packet(Packet::Noop)])));
            return;
        }
        if polling.outbox.is_empty() {
            polling.pending_get = Some(reply);
        } else {
            let _ = reply.send(Ok(encode_payload(polling.take_outbox())));
        }
    }
}

/// A polling POST starts: only one may be in flight.
#[derive(Message)]
#[rtype(result = "Result<(), HttpError>")]
pub(crate) struct PostStart;

impl<H: EngineHandler> Handler<PostStart> for SocketSession<H> {
    type Result = Result<(), HttpError>;

    fn handle(&mut self, _: PostStart, ctx: &mut Context<Self>) -> Self::Result {
        let Transport::Polling(polling) = &mut self.transport else {
            return Err(HttpError::BadRequest);
        };
        match self.closing {
            // Its content is not handled, but a stopping server answers it
            // as usual: an error would reach the client before the close
            // packet on its GET, and it would take it for a broken transport.
            Some(CloseReason::ServerShuttingDown) => {}
            Some(_) => return Err(HttpError::SessionIdUnknown),
            None => {}
        }
        if polling.post_in_flight {
            self.close(CloseReason::TransportError, ctx);
            return Err(HttpError::BadRequest);
        }
        polling.post_in_flight = true;
        Ok(())
    }
}

/// How the POST begun with `PostStart` ended. Answered with the session's
/// count of messages in hand, which the POST waits on before it answers the
/// client: a client that floods POSTs is held back by its own requests.
#[derive(Message)]
#[rtype(result = "Result<Arc<Inflight>, HttpError>")]
pub(crate) enum PostBody {
    Received(Bytes),
    /// Over maxPayload: refused with 413, the session goes on.
    TooLarge,
    /// Not a text payload (e.g. `application/octet-stream`): the session is closed.
    NotText,
    /// Not all there within the server's body timeout: what arrived is
    /// lost, so the session is closed.
    TimedOut(std::time::Duration),
}

impl<H: EngineHandler> Handler<PostBody> for SocketSession<H> {
    type Result = Result<Arc<Inflight>, HttpError>;

    fn handle(&mut self, body: PostBody, ctx: &mut Context<Self>) -> Self::Result {
        let inflight = match &mut self.transport {
            Transport::Polling(polling) => {
                polling.post_in_flight = false;
                polling.inflight.get_or_insert_with(|| Inflight::new(self.engine_config.max_inflight)).clone()
            }
            // Upgraded while the body was read: what it carried still counts.
            Transport::WebSocket(_) => Inflight::new(self.engine_config.max_inflight),
        };
        let packets = match body {
            PostBody::TooLarge => return Ok(inflight),
            PostBody::NotText => Err(()),
            PostBody::TimedOut(_) => {
                self.close(CloseReason::TransportError, ctx);
                return Err(HttpError::BadRequest);
            }
            PostBody::Received(bytes) => std::str::from_utf8(&bytes)
                .map_err(|_| ())
                .and_then(|text| engine::decode_payload(text).map_err(|_| ())),
        };
        match packets {
            Ok(packets) => {
                for packet in packets {
                    self.receive(packet, inflight.permit(), ctx);
                }
                Ok(inflight)
            }
            Err(()) => {
                self.close(CloseReason::ParseError, ctx);
                Err(HttpError::BadRequest)
            }
        }
    }
}
