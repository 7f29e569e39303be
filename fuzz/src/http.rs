//! Query and header handling of the Engine.IO endpoint, on raw requests as
//! actix-http's HTTP/1 decoder reads them off the connection.

use actix_codec::Decoder as _;
use actix_http::h1::{Codec, Message};
use actix_http::header::SEC_WEBSOCKET_KEY;
use actix_http::{Method, RequestHead, ServiceConfig};
use actix_socketio::engineio::FORWARDED_HEADER;
use actix_socketio::engineio::fuzzing::{Endpoint, expected_route, handshake_key};
use bytes::BytesMut;

/// The tag of the routed endpoint's own node.
const LOCAL_TAG: &str = "a";

struct Fixture {
    config: ServiceConfig,
    single: Endpoint,
    routed: Endpoint,
    /// A routed endpoint that drains.
    draining: Endpoint,
    // Kept for the clock task that the HTTP config starts.
    _system: actix_rt::SystemRunner,
}

thread_local! {
    static FIXTURE: Fixture = {
        let system = actix_rt::System::new();
        let config = system.block_on(async { ServiceConfig::default() });
        Fixture {
            config,
            single: Endpoint::single(),
            routed: Endpoint::routed(LOCAL_TAG).expect("a valid tag"),
            draining: {
                let endpoint = Endpoint::routed(LOCAL_TAG).expect("a valid tag");
                endpoint.drain();
                endpoint
            },
            _system: system,
        }
    };
}

/// Up to a few pipelined requests; each is routed by an endpoint of one
/// node, by one of several and by one that drains, and checked against
/// PROTOCOL.md 2.9.
pub fn request(data: &[u8]) {
    FIXTURE.with(|fixture| {
        let mut codec = Codec::new(fixture.config.clone());
        let mut buffer = BytesMut::from(data);
        for _ in 0..4 {
            match codec.decode(&mut buffer) {
                Ok(Some(Message::Item(request))) => check(fixture, request.head()),
                Ok(Some(Message::Chunk(_))) => {}
                Ok(None) | Err(_) => return,
            }
        }
    });
}

fn check(fixture: &Fixture, head: &RequestHead) {
    // What actix-http hands to the upgrade path instead of actix-web.
    let upgrade = head.upgrade();
    let query = head.uri.query().unwrap_or("");
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let forwarded = head.headers().contains_key(FORWARDED_HEADER);
    for (endpoint, local_tag, draining) in [
        (&fixture.single, None, false),
        (&fixture.routed, Some(LOCAL_TAG), false),
        (&fixture.draining, Some(LOCAL_TAG), true),
    ] {
        assert_eq!(
            endpoint.route(head, upgrade),
            expected_route(&pairs, &head.method, upgrade, local_tag, forwarded, draining),
            "{query:?}"
        );
    }

    if let Some(accept) = handshake_key(head) {
        // Base64 of a SHA-1, for a GET that names its key.
        assert_eq!(accept.len(), 28, "{accept:?}");
        assert_eq!(head.method, Method::GET);
        assert!(head.headers().contains_key(SEC_WEBSOCKET_KEY));
    }
}
