//! The HTTP checks of an endpoint, reachable from outside the crate for
//! the fuzz targets (`fuzz/` at the repository's root, which builds this
//! crate with the `fuzzing` feature): how `endpoint::route` routes a
//! request and what `upgrade` answers a WebSocket handshake. Neither is
//! public API. The engine here has no sessions, so every sid is unknown to
//! it: a request for one is refused or, on a routed engine, forwarded.

use std::sync::Arc;

use actix::Context;
use actix_http::{Method, RequestHead};
use futures_util::future::BoxFuture;

use super::endpoint::{self, Route};
use super::{
    CloseReason, Engine, EngineConfig, EngineHandler, HandlerFactory, InboundPermit, Incoming, Output,
    SessionHandle, SessionRouter, SocketSession,
};
use crate::protocol::engine::HttpError;

/// Where [`Endpoint::route`] sends a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// A handshake: a new session on polling or on a WebSocket.
    New { websocket: bool },
    /// To the node whose tag the sid starts with.
    Forward { owner_tag: String, sid: String },
    /// A handshake refused because the endpoint drains.
    Draining,
}

/// An endpoint with no sessions.
pub struct Endpoint {
    engine: Arc<Engine<Unused>>,
}

impl Endpoint {
    /// An endpoint served by one node.
    pub fn single() -> Self {
        Self { engine: Engine::new(EngineConfig::default(), Unused) }
    }

    /// One of several nodes, with this tag; `None` if the tag does not fit
    /// the sid format.
    pub fn routed(tag: &str) -> Option<Self> {
        let router = Arc::new(Tagged(tag.to_owned()));
        Engine::routed(EngineConfig::default(), Unused, router).ok().map(|engine| Self { engine })
    }

    /// Starts no new session from now on, as in a drain.
    pub fn drain(&self) {
        self.engine.draining.store(true, std::sync::atomic::Ordering::Release);
    }

    /// The reference server's checks of a request, in its order; `upgrade`
    /// says whether it asks for a WebSocket.
    pub fn route(&self, head: &RequestHead, upgrade: bool) -> Result<Routed, HttpError> {
        Ok(match endpoint::route(&self.engine, head, upgrade)? {
            Route::Polling(None) => Routed::New { websocket: false },
            Route::WebSocket(None) => Routed::New { websocket: true },
            Route::Forward(forward) => Routed::Forward { owner_tag: forward.owner_tag, sid: forward.sid },
            Route::Draining => Routed::Draining,
            // This engine has no sessions to find.
            Route::Polling(Some(_)) | Route::WebSocket(Some(_)) => unreachable!("a session was found"),
        })
    }
}

/// The `Sec-WebSocket-Accept` the upgrade answers, `None` if it refuses
/// the handshake.
pub fn handshake_key(head: &RequestHead) -> Option<String> {
    super::upgrade::handshake_key(head)
}

/// What [`Endpoint::route`] must answer, written out from PROTOCOL.md 2.9
/// rather than from the code: `pairs` is the decoded query (the last value
/// of a key counts), `forwarded` whether the request carries
/// [`super::FORWARDED_HEADER`], `local_tag` the routed endpoint's tag,
/// `draining` whether it drains.
pub fn expected_route(
    pairs: &[(String, String)],
    method: &Method,
    upgrade: bool,
    local_tag: Option<&str>,
    forwarded: bool,
    draining: bool,
) -> Result<Routed, HttpError> {
    let get = |key: &str| pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let websocket = match get("transport") {
        Some("polling") => false,
        Some("websocket") => true,
        _ => return Err(HttpError::TransportUnknown),
    };
    if let Some(sid) = get("sid") {
        let owner = sid.split_once('.').map(|(tag, _)| tag).filter(|tag| {
            (1..=16).contains(&tag.len())
                && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        return match (local_tag, owner) {
            (Some(local), Some(owner)) if owner != local && !forwarded => {
                Ok(Routed::Forward { owner_tag: owner.to_owned(), sid: sid.to_owned() })
            }
            _ => Err(HttpError::SessionIdUnknown),
        };
    }
    if method != Method::GET {
        return Err(HttpError::BadHandshakeMethod);
    }
    if websocket != upgrade {
        return Err(HttpError::BadRequest);
    }
    if get("EIO") != Some("4") {
        return Err(HttpError::UnsupportedProtocolVersion);
    }
    if draining {
        return Ok(Routed::Draining);
    }
    Ok(Routed::New { websocket })
}

/// A factory that is never asked for a handler: no session starts here.
struct Unused;

impl HandlerFactory for Unused {
    type Handler = Unused;

    fn create(&self, _: SessionHandle<Unused>, _: &RequestHead) -> Unused {
        Unused
    }
}

impl EngineHandler for Unused {
    fn message(
        &mut self,
        _: Incoming,
        _: InboundPermit,
        _: &mut Output,
        _: &mut Context<SocketSession<Self>>,
    ) {
    }

    fn closed(&mut self, _: CloseReason) {}
}

struct Tagged(String);

impl SessionRouter for Tagged {
    fn local_tag(&self) -> &str {
        &self.0
    }

    fn resolve(&self, _: &str) -> BoxFuture<'static, Option<String>> {
        Box::pin(async { None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::Uri;
    use actix_http::header::{HeaderName, HeaderValue};
    use proptest::prelude::*;

    use crate::engineio::FORWARDED_HEADER;

    fn head(method: Method, query: &str, forwarded: bool) -> RequestHead {
        let mut head = RequestHead::default();
        head.method = method;
        head.uri = Uri::try_from(format!("/socket.io/?{query}")).unwrap();
        if forwarded {
            head.headers_mut()
                .insert(HeaderName::from_static(FORWARDED_HEADER), HeaderValue::from_static("b"));
        }
        head
    }

    /// Percent-encodes every byte but letters and digits.
    fn escape(s: &str) -> String {
        s.bytes()
            .map(|b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
            .collect()
    }

    fn pair() -> impl Strategy<Value = (String, String)> {
        let key = prop_oneof![Just("transport"), Just("sid"), Just("EIO"), Just("t"), Just("b64")];
        let value = prop_oneof![
            Just("polling".to_owned()),
            Just("websocket".to_owned()),
            Just("4".to_owned()),
            Just("3".to_owned()),
            Just("a.AAAAAAAAAAAAAAAAAAAA".to_owned()),
            Just("b.AAAAAAAAAAAAAAAAAAAA".to_owned()),
            Just("b c.x".to_owned()),
            "\\PC{0,8}",
        ];
        (key, value).prop_map(|(k, v)| (k.to_owned(), v))
    }

    proptest! {
        #[test]
        fn requests_are_checked_in_the_reference_order(
            pairs in proptest::collection::vec(pair(), 0..5),
            method in prop_oneof![Just(Method::GET), Just(Method::POST), Just(Method::PUT)],
            upgrade in any::<bool>(),
            routed in any::<bool>(),
            forwarded in any::<bool>(),
            draining in any::<bool>(),
        ) {
            let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", escape(k), escape(v))).collect();
            let head = head(method.clone(), &query.join("&"), forwarded);
            let (endpoint, local_tag) =
                if routed { (Endpoint::routed("a").unwrap(), Some("a")) } else { (Endpoint::single(), None) };
            if draining {
                endpoint.drain();
            }
            prop_assert_eq!(
                endpoint.route(&head, upgrade),
                expected_route(&pairs, &method, upgrade, local_tag, forwarded, draining)
            );
        }

        #[test]
        fn any_query_is_answered(query in "[ -~]{0,40}", upgrade in any::<bool>()) {
            // Not every string is a URI; those that are get an answer, never a panic.
            if let Ok(uri) = Uri::try_from(format!("/socket.io/?{query}")) {
                let mut head = RequestHead::default();
                head.uri = uri;
                let _ = Endpoint::routed("a").unwrap().route(&head, upgrade);
                let _ = handshake_key(&head);
            }
        }
    }

    #[test]
    fn the_handshake_answers_the_example_of_rfc_6455() {
        let mut head = head(Method::GET, "EIO=4&transport=websocket", false);
        for (name, value) in [
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ] {
            head.headers_mut().insert(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        assert_eq!(handshake_key(&head).as_deref(), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        head.headers_mut().remove("sec-websocket-version");
        assert_eq!(handshake_key(&head), None);
    }
}
