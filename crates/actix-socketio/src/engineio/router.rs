//! Which node owns a session, for an engine that runs on several nodes
//! behind a load balancer without sticky sessions.
//!
//! A routed engine's sids name their node: `<tag>.<20 url-safe chars>`,
//! where the tag is 1 to 16 characters of `[A-Za-z0-9_-]`, so that neither
//! part can hold the `.` and clients can put the sid in a query string
//! unescaped. A request for a sid that
//! another node made is forwarded to that node (see `forward`) with
//! [`FORWARDED_HEADER`] set, which a node never forwards again: a forwarded
//! request that misses is answered "Session ID unknown", as a sid nobody
//! knows is, instead of going round the nodes.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::EngineConfig;
use super::forward::Forward;

/// Set on every request a node forwards (the value is the forwarding
/// node's tag); a node does not forward a request that carries it.
pub const FORWARDED_HEADER: &str = "x-engineio-forwarded";

/// Where the sessions of the other nodes live; the application implements
/// it over whatever registry its nodes share.
pub trait SessionRouter: Send + Sync + 'static {
    /// This node's tag; every sid this node makes starts with it.
    fn local_tag(&self) -> &str;

    /// Base address (`http://host:port`) of the live node with this tag,
    /// if any. Asked once per forwarded request or upgrade.
    fn resolve(&self, tag: &str) -> BoxFuture<'static, Option<String>>;
}

/// A tag that does not fit the sid format.
#[derive(Debug, thiserror::Error)]
#[error("node tag {0:?} is not 1 to 16 characters of [A-Za-z0-9_-]")]
pub struct InvalidTag(pub String);

/// An engine's router and its tag, read once so that every sid the engine
/// makes carries the same one.
pub(crate) struct Routing {
    router: Arc<dyn SessionRouter>,
    tag: Arc<str>,
}

impl Routing {
    pub(crate) fn new(router: Arc<dyn SessionRouter>) -> Result<Self, InvalidTag> {
        let tag = router.local_tag();
        if !is_tag(tag) {
            return Err(InvalidTag(tag.to_owned()));
        }
        let tag = tag.into();
        Ok(Self { router, tag })
    }

    pub(crate) fn new_sid(&self) -> Arc<str> {
        format!("{}.{}", self.tag, super::new_sid()).into()
    }

    /// How to reach the owner of `sid`, when it is another node's.
    pub(crate) fn forward(&self, sid: &str, config: &Arc<EngineConfig>) -> Option<Forward> {
        let (tag, _) = sid.split_once('.')?;
        (is_tag(tag) && tag != &*self.tag).then(|| Forward {
            router: self.router.clone(),
            local_tag: self.tag.clone(),
            owner_tag: tag.to_owned(),
            sid: sid.to_owned(),
            config: config.clone(),
        })
    }
}

fn is_tag(tag: &str) -> bool {
    (1..=16).contains(&tag.len()) && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str);

    impl SessionRouter for Fixed {
        fn local_tag(&self) -> &str {
            self.0
        }

        fn resolve(&self, _: &str) -> BoxFuture<'static, Option<String>> {
            Box::pin(async { None })
        }
    }

    fn routing(tag: &'static str) -> Result<Routing, InvalidTag> {
        Routing::new(Arc::new(Fixed(tag)))
    }

    #[test]
    fn tags_are_1_to_16_url_safe_characters() {
        for good in ["a", "node-1", "N_2", "abcdefghijklmnop"] {
            assert!(routing(good).is_ok(), "{good}");
        }
        for bad in ["", "abcdefghijklmnopq", "a.b", "a b", "é", "a/b"] {
            assert!(routing(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sids_carry_the_tag_and_20_random_characters() {
        let sid = routing("node-1").unwrap().new_sid();
        let (tag, random) = sid.split_once('.').unwrap();
        assert_eq!(tag, "node-1");
        assert_eq!(random.len(), 20);
        assert!(random.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "{sid}");
    }

    #[test]
    fn only_another_valid_tag_is_forwarded() {
        let routing = routing("a").unwrap();
        let config = Arc::new(EngineConfig::default());
        let owner = routing.forward("b.xxxxxxxxxxxxxxxxxxxx", &config).map(|f| f.owner_tag);
        assert_eq!(owner.as_deref(), Some("b"));
        for sid in ["a.xxxxxxxxxxxxxxxxxxxx", "xxxxxxxxxxxxxxxxxxxx", ".x", "b c.x", "abcdefghijklmnopq.x"] {
            assert!(routing.forward(sid, &config).is_none(), "{sid}");
        }
    }
}
