//! Which web origins may use this server from a browser: `CORS_ORIGINS`
//! read strictly, and the one rule both the CORS middleware and the
//! WebSocket upgrade check apply.
//!
//! A browser compares origins as strings: `http://127.0.0.1:8790/` (a
//! trailing slash) or `HTTPS://App.example` never equals what it sends, so
//! such an entry would match nothing, silently. Every entry must therefore
//! be an origin exactly as a browser serializes it, or the start fails.

/// The origins allowed to call from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `CORS_ORIGINS` unset: no cross-origin page at all.
    #[default]
    None,
    /// `CORS_ORIGINS=*`.
    Any,
    /// These origins, each as a browser sends it.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Parses `CORS_ORIGINS`: comma-separated origins, or `*` alone.
    /// The error names the first bad entry and why.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let entries: Vec<&str> = raw.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
        if entries.is_empty() {
            return Ok(Self::None);
        }
        if entries.contains(&"*") {
            if entries.len() > 1 {
                return Err("`*` (any origin) must be the only entry".into());
            }
            return Ok(Self::Any);
        }
        for entry in &entries {
            check_origin(entry).map_err(|why| {
                format!(
                    "{entry:?} is not an origin: {why}; an entry is scheme://host[:port] exactly as \
                     the browser sends it in its Origin header (e.g. https://app.example.com or \
                     http://127.0.0.1:8790), or * alone"
                )
            })?;
        }
        Ok(Self::List(entries.into_iter().map(str::to_string).collect()))
    }

    pub fn is_set(&self) -> bool {
        *self != Self::None
    }

    /// Whether a request carrying `origin` (its `Origin` header) to a
    /// server addressed as `host` (its `Host` header) comes from a page
    /// allowed to use the server: a listed origin, or the server's own
    /// (a page it serves itself is never cross-origin).
    pub fn allows(&self, origin: &str, host: Option<&str>) -> bool {
        let listed = match self {
            Self::Any => true,
            Self::None => false,
            Self::List(list) => list.iter().any(|o| o == origin),
        };
        listed || host.is_some_and(|host| same_origin(origin, host))
    }
}

/// `origin`'s authority is `host`: the page was served by this server
/// under the name the browser used for it.
fn same_origin(origin: &str, host: &str) -> bool {
    let authority = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// Why `entry` is not an origin as a browser serializes it, if it is not.
fn check_origin(entry: &str) -> Result<(), String> {
    let (scheme, rest) = entry.split_once("://").ok_or("no scheme (http:// or https://)")?;
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") => {
            return Err("the scheme must be lowercase".into());
        }
        _ => return Err(format!("the scheme must be http or https, not {scheme:?}")),
    };
    if let Some(at) = rest.find(['/', '?', '#']) {
        let what = match &rest[at..] {
            "/" => "a trailing slash",
            p if p.starts_with('/') => "a path",
            p if p.starts_with('?') => "a query",
            _ => "a fragment",
        };
        return Err(format!("it has {what}; an origin ends after the host or port"));
    }
    if rest.contains('@') {
        return Err("it has a user name or password".into());
    }
    let (host, port) = split_port(rest)?;
    check_host(host)?;
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 && !port.starts_with('0') => {}
            _ => return Err(format!("{port:?} is not a port from 1 to 65535")),
        }
        if port == default_port {
            return Err(format!("browsers leave out the default port :{port} of {scheme}"));
        }
    }
    Ok(())
}

/// `host[:port]`, the host possibly a bracketed IPv6 address.
fn split_port(authority: &str) -> Result<(&str, Option<&str>), String> {
    if authority.starts_with('[') {
        let end = authority.find(']').ok_or("an unclosed [ in the host")?;
        let (host, rest) = authority.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err(format!("{rest:?} after the host")),
        };
    }
    Ok(match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("no host".into());
    }
    if let Some(ip) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return match ip.parse::<std::net::Ipv6Addr>() {
            // Browsers write IPv6 addresses in their shortest lowercase form.
            Ok(addr) if addr.to_string() == ip => Ok(()),
            Ok(addr) => Err(format!("browsers write this address [{addr}]")),
            Err(_) => Err(format!("{ip:?} is not an IPv6 address")),
        };
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("the host must be lowercase (browsers send it so)".into());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(format!("{host:?} is not a host name or IPv4 address"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_as_browsers_send_them_are_accepted() {
        for raw in [
            "https://app.example.com",
            "http://127.0.0.1:8790",
            "http://localhost:3000",
            "https://a-b.example:8443",
            "http://[::1]:8080",
            "http://xn--bcher-kva.example",
        ] {
            assert_eq!(AllowedOrigins::parse(raw), Ok(AllowedOrigins::List(vec![raw.into()])), "{raw}");
        }
        assert_eq!(
            AllowedOrigins::parse(" https://a.example , http://b.example:81 ,"),
            Ok(AllowedOrigins::List(vec!["https://a.example".into(), "http://b.example:81".into()]))
        );
        assert_eq!(AllowedOrigins::parse("*"), Ok(AllowedOrigins::Any));
        assert_eq!(AllowedOrigins::parse(" , "), Ok(AllowedOrigins::None));
    }

    #[test]
    fn anything_a_browser_would_never_send_is_refused_with_why() {
        for (raw, why) in [
            ("http://127.0.0.1:8790/", "trailing slash"),
            ("https://app.example.com/app", "a path"),
            ("https://app.example.com?x=1", "a query"),
            ("https://app.example.com#top", "a fragment"),
            ("https://user:pw@app.example.com", "user name"),
            ("app.example.com", "no scheme"),
            ("ftp://app.example.com", "http or https"),
            ("HTTPS://app.example.com", "lowercase"),
            ("https://App.Example.com", "lowercase"),
            ("https://", "no host"),
            ("http://:8080", "no host"),
            ("http://app.example.com:0", "port"),
            ("http://app.example.com:65536", "port"),
            ("http://app.example.com:08080", "port"),
            ("http://app.example.com:http", "port"),
            ("http://app.example.com:80", "default port"),
            ("https://app.example.com:443", "default port"),
            ("http://app_example.com", "host name"),
            ("http://-a.example", "host name"),
            ("http://a..example", "host name"),
            ("http://[::1", "unclosed"),
            ("http://[0:0::1]:8080", "[::1]"),
            ("http://[zz]", "IPv6"),
            ("*, https://a.example", "only entry"),
            ("https://a.example,*", "only entry"),
            ("https://a.example, https://b.example/", "trailing slash"),
        ] {
            let err = AllowedOrigins::parse(raw).expect_err(raw);
            assert!(err.contains(why), "{raw}: {err}");
        }
        let err = AllowedOrigins::parse("https://a.example, http://127.0.0.1:8790/").unwrap_err();
        assert!(err.starts_with("\"http://127.0.0.1:8790/\" is not an origin"), "names the entry: {err}");
    }

    #[test]
    fn allows_listed_origins_exactly_and_the_servers_own() {
        let list = AllowedOrigins::parse("https://app.example,http://127.0.0.1:8790").unwrap();
        assert!(list.allows("https://app.example", Some("api.example")));
        assert!(list.allows("http://127.0.0.1:8790", None));
        for other in ["https://app.example/", "http://app.example", "https://evil.example", "null", ""] {
            assert!(!list.allows(other, Some("api.example")), "{other}");
        }
        // Its own pages: the origin is the address the browser used.
        assert!(list.allows("http://api.example:3001", Some("api.example:3001")));
        assert!(list.allows("https://api.example", Some("API.example")));
        assert!(!list.allows("http://api.example:3002", Some("api.example:3001")));
        assert!(!AllowedOrigins::None.allows("https://app.example", Some("api.example")));
        assert!(AllowedOrigins::None.allows("http://api.example", Some("api.example")));
        assert!(AllowedOrigins::Any.allows("https://anything.example", None));
    }
}
