//! Browser origins, for what the server answers outside the App: WebSocket
//! upgrades (browsers apply no CORS to them, so the server itself must say
//! which pages may open one) and the refusals of `limits` (a page can read
//! a 429 or 503, its `Retry-After` included, only if it carries CORS
//! headers). The application's CORS middleware sees neither; the rule is
//! the application's, passed in as an [`OriginPolicy`].

use std::sync::Arc;

use actix_http::header::{self, HeaderMap};

/// `(origin, host) -> allowed`.
type Allows = dyn Fn(&str, Option<&str>) -> bool + Send + Sync;

/// Whether a page of `origin` (a request's `Origin` header) may use the
/// server addressed as `host` (its `Host` header).
#[derive(Clone)]
pub struct OriginPolicy(Arc<Allows>);

impl OriginPolicy {
    pub fn new(allows: impl Fn(&str, Option<&str>) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(allows))
    }

    /// A request without `Origin` does not come from a browser page and
    /// passes; one with an `Origin` that is not text does not.
    pub(crate) fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else { return true };
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        origin.to_str().is_ok_and(|origin| (self.0)(origin, host))
    }

    /// The origin to name in `Access-Control-Allow-Origin` for a request
    /// from an allowed page; `None` for any other request.
    pub(crate) fn readable_by(&self, origin: Option<&str>, host: Option<&str>) -> Option<String> {
        origin.filter(|origin| (self.0)(origin, host)).map(str::to_string)
    }
}

impl std::fmt::Debug for OriginPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginPolicy")
    }
}

/// The CORS headers that let a page of `origin` read an answer and its
/// `Retry-After`, as raw header lines.
pub(crate) fn raw_cors_lines(origin: &str) -> String {
    format!(
        "access-control-allow-origin: {origin}\r\naccess-control-expose-headers: retry-after\r\nvary: Origin\r\n"
    )
}

/// The `Origin` and `Host` of a raw request head (what a connection
/// refused before the HTTP layer sent).
pub(crate) fn origin_and_host(head: &[u8]) -> (Option<&str>, Option<&str>) {
    let (mut origin, mut host) = (None, None);
    let text = std::str::from_utf8(head).unwrap_or_else(|e| {
        // What came before the bad byte is still a head to read.
        std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
    });
    for line in text.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        // Forbidding CR, LF and NUL keeps the value fit to be echoed back.
        if value.is_empty() || value.bytes().any(|b| b.is_ascii_control()) {
            continue;
        }
        if name.eq_ignore_ascii_case("origin") {
            origin = Some(value);
        } else if name.eq_ignore_ascii_case("host") {
            host = Some(value);
        }
    }
    (origin, host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_origin_and_host_of_a_raw_head() {
        let head = b"GET /api/issues HTTP/1.1\r\nHost: api.example:3001\r\norigin:  https://app.example \r\n\r\nbody";
        assert_eq!(origin_and_host(head), (Some("https://app.example"), Some("api.example:3001")));
        assert_eq!(origin_and_host(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nOrigin: x\r\n"), (None, Some("h")));
        assert_eq!(origin_and_host(b"GET / HTTP/1.1\r\nOrigin: a\tb\r\n\r\n"), (None, None));
        assert_eq!(origin_and_host(b"\xff\xfe"), (None, None));
    }

    #[test]
    fn only_allowed_pages_may_read_and_non_browsers_pass() {
        let policy = OriginPolicy::new(|origin, host| origin == "https://app.example" || host == Some("own"));
        assert_eq!(
            policy.readable_by(Some("https://app.example"), None).as_deref(),
            Some("https://app.example")
        );
        assert_eq!(policy.readable_by(Some("https://evil.example"), None), None);
        assert_eq!(
            policy.readable_by(Some("https://evil.example"), Some("own")).as_deref(),
            Some("https://evil.example")
        );
        assert_eq!(policy.readable_by(None, None), None);
        let mut headers = HeaderMap::new();
        assert!(policy.allows(&headers), "no Origin: not a browser");
        headers.insert(header::ORIGIN, header::HeaderValue::from_static("https://evil.example"));
        assert!(!policy.allows(&headers));
        headers.insert(header::ORIGIN, header::HeaderValue::from_static("https://app.example"));
        assert!(policy.allows(&headers));
    }
}
