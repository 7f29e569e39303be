//! Configuration: read once from the environment (and flags) at start, then
//! validated, so that a bad value stops the process with one clear line
//! instead of surfacing later as a confusing runtime failure.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::origins::AllowedOrigins;

/// Where data lives. Chosen by the scheme of `DATABASE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if let Some(rest) = raw.strip_prefix("sqlite://") {
            if rest.is_empty() {
                return Err("sqlite:// needs a file path, e.g. sqlite://civicpulse.db".into());
            }
            return Ok(Self::Sqlite(PathBuf::from(rest)));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(Self::Postgres(raw.to_string()));
        }
        Err("expected sqlite://PATH, postgres://… or postgresql://…".into())
    }

    /// The URL with any password blanked, for logs.
    pub fn redacted(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}", path.display()),
            Self::Postgres(url) => match (url.find("://"), url.rfind('@')) {
                (Some(scheme_end), Some(at)) if at > scheme_end => {
                    let creds = &url[scheme_end + 3..at];
                    let user = creds.split(':').next().unwrap_or("");
                    format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
                }
                _ => url.clone(),
            },
        }
    }
}

#[derive(Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub database_url: DatabaseUrl,
    /// HS256 key for access tokens.
    pub jwt_secret: Vec<u8>,
    /// True when no JWT_SECRET was given and one was generated for this run.
    pub jwt_secret_generated: bool,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// The Socket.IO Admin UI's protocol on `/admin`, for admins only.
    pub admin_ui: bool,
    /// Whether the Admin UI only watches (no join, leave, disconnect, emit).
    pub admin_ui_readonly: bool,
    /// Cluster mode is on when set (see `cluster`).
    pub redis_url: Option<String>,
    /// This node's name in the cluster: in Redis keys, logs and metrics.
    pub node_id: String,
    /// Prefix of every Redis key and channel the cluster uses, so several
    /// clusters (or test runs) can share one Redis.
    pub redis_key_prefix: String,
    /// Where the other nodes reach this one to forward requests for its
    /// sessions (`http://host:port`).
    pub node_url: String,
    /// Whether `/` serves the demo client (src/http/demo).
    pub demo_client: bool,
    /// Pages that may call from another origin (`CORS_ORIGINS`).
    pub cors_origins: AllowedOrigins,
    /// Whether WebSocket upgrades from a browser page must come from an
    /// allowed origin (`WS_ORIGIN_CHECK`; on by default when
    /// `CORS_ORIGINS` is set).
    pub ws_origin_check: bool,
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_payload_bytes: usize,
    /// Bytes that may queue for a client that is not reading before it is
    /// disconnected.
    pub max_buffered_bytes: usize,
    pub workers: usize,
    pub db_pool_size: u32,
    /// How long a request (or a batch of messages) waits for a database
    /// connection before it is answered 503.
    pub db_timeout: Duration,
    /// Register/login/refresh requests per client address per minute (0: off).
    pub auth_rate_per_minute: u32,
    /// Upvotes within `trending_window` that make an issue trend.
    pub trending_upvotes: u32,
    pub trending_window: Duration,
    /// Client events per second a socket may send, sustained, and at once.
    pub socket_event_rate: u32,
    pub socket_event_burst: u32,
    /// Refusals a socket may collect (one more each second) before it is
    /// disconnected as a flooder.
    pub socket_flood_strikes: u32,
    /// Issue rooms one socket may be in at once.
    pub max_rooms_per_socket: usize,
    /// Client events per second all of one user's sockets on a node may
    /// send, and at once (rate 0: no such limit).
    pub socket_user_event_rate: u32,
    pub socket_user_event_burst: u32,
    /// The same for the sockets from one address.
    pub socket_address_event_rate: u32,
    pub socket_address_event_burst: u32,
    /// Sockets one user may hold on a node at once.
    pub max_sockets_per_user: usize,
    /// How long a socket outlives its access token without `auth:refresh`.
    pub socket_token_grace: Duration,
    /// REST writes per second (and at once) per user and per address
    /// (rate 0: no such limit).
    pub rest_user_write_rate: u32,
    pub rest_user_write_burst: u32,
    pub rest_address_write_rate: u32,
    pub rest_address_write_burst: u32,
    /// From SIGTERM (or SIGINT) to exit, at most (see `shutdown`); zero
    /// closes every socket at once and waits for nothing.
    pub drain_timeout: Duration,
    /// How long a stopping node still accepts connections, answering
    /// `/readyz` with 503, before it closes its listener.
    pub drain_delay: Duration,
    /// Sockets closed a second while draining, unless more are needed to
    /// finish within `drain_timeout`.
    pub drain_rate: u32,
    /// Connections one client address may have open (0: no cap).
    pub max_connections_per_address: usize,
    /// Connections served in full; 0: the descriptor limit less what is
    /// open at start and `fd_reserve` (see `descriptors`).
    pub max_connections: usize,
    /// Descriptors kept from client connections: half for connections
    /// past the limit that only reach /healthz, /readyz and /metrics, half
    /// for the process's own files and links.
    pub fd_reserve: usize,
    /// How long a request body may take to arrive once its head has.
    pub body_read_timeout: Duration,
    /// Binary attachments one Socket.IO packet may declare.
    pub max_binary_attachments: usize,
    /// Bytes the attachments of one packet may come to.
    pub max_packet_binary_bytes: usize,
    /// Bytes of attachments all sockets may hold for incomplete packets.
    pub max_pending_binary_bytes: usize,
    /// Connection state recovery (`CONNECTION_STATE_RECOVERY_SECS`): how
    /// long a socket that lost its connection can come back as itself;
    /// `None` (0, the default) turns the feature off.
    pub recovery_window: Option<Duration>,
    /// Events the recovery log keeps (`CONNECTION_STATE_RECOVERY_MAX_EVENTS`).
    pub recovery_max_events: usize,
}

impl std::fmt::Debug for Config {
    // Hand-written so the secret can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database_url", &self.database_url.redacted())
            .field("jwt_secret", &"***")
            .field("access_token_ttl", &self.access_token_ttl)
            .field("refresh_token_ttl", &self.refresh_token_ttl)
            .field("redis_url", &self.redis_url.is_some())
            .field("node_id", &self.node_id)
            .field("redis_key_prefix", &self.redis_key_prefix)
            .field("node_url", &self.node_url)
            .field("cors_origins", &self.cors_origins)
            .field("ws_origin_check", &self.ws_origin_check)
            .field("workers", &self.workers)
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

/// A configuration value that cannot be used; names the variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

const MIN_SECRET_BYTES: usize = 32;

impl Config {
    /// Builds a configuration from a map of variables: the process
    /// environment with the command line's flags over it (main.rs), or a
    /// test's own.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());

        let port = parse_num(get("PORT"), "PORT", 3001u16, 0..=u16::MAX)?;
        let database_url = DatabaseUrl::parse(get("DATABASE_URL").unwrap_or("sqlite://civicpulse.db"))
            .map_err(|reason| ConfigError { var: "DATABASE_URL", reason })?;
        let (jwt_secret, jwt_secret_generated) = match get("JWT_SECRET") {
            Some(s) if s.len() < MIN_SECRET_BYTES => {
                return Err(ConfigError {
                    var: "JWT_SECRET",
                    reason: format!("must be at least {MIN_SECRET_BYTES} bytes, got {}", s.len()),
                });
            }
            Some(s) => (s.as_bytes().to_vec(), false),
            None => (rand::random::<[u8; 48]>().to_vec(), true),
        };
        let secs = |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
            parse_num(get(name), name, default, 1..=u64::MAX / 1000).map(Duration::from_secs)
        };
        let millis = |name: &'static str, default: u64| -> Result<Duration, ConfigError> {
            parse_num(get(name), name, default, 1..=86_400_000).map(Duration::from_millis)
        };
        let redis_url = match get("REDIS_URL") {
            Some(url) if !(url.starts_with("redis://") || url.starts_with("rediss://")) => {
                return Err(ConfigError {
                    var: "REDIS_URL",
                    reason: "expected redis://… or rediss://…".into(),
                });
            }
            Some(url) if redis::Client::open(url).is_err() => {
                return Err(ConfigError { var: "REDIS_URL", reason: "not a valid Redis URL".into() });
            }
            other => other.map(str::to_string),
        };
        let node_id = match get("NODE_ID") {
            Some(id) => checked_name("NODE_ID", id)?,
            // Unique per process, so two nodes started without one never
            // take each other's presence for their own.
            None => format!("node-{}-{}", std::process::id(), hex::encode(rand::random::<[u8; 4]>())),
        };
        let redis_key_prefix =
            checked_name("REDIS_KEY_PREFIX", get("REDIS_KEY_PREFIX").unwrap_or("civicpulse"))?;
        let host = get("HOST").unwrap_or("0.0.0.0").to_string();
        let node_url = match get("NODE_URL").map(|url| url.trim_end_matches('/')) {
            Some(url)
                if url.starts_with("http://")
                    && url.len() > 7
                    && !url[7..].contains(['/', '?', '#', ' ']) =>
            {
                url.to_string()
            }
            Some(_) => {
                return Err(ConfigError { var: "NODE_URL", reason: "expected http://host:port".into() });
            }
            None => {
                let reachable = if host == "0.0.0.0" || host == "::" { "127.0.0.1" } else { host.as_str() };
                format!("http://{reachable}:{port}")
            }
        };
        let cors_origins = AllowedOrigins::parse(get("CORS_ORIGINS").unwrap_or(""))
            .map_err(|reason| ConfigError { var: "CORS_ORIGINS", reason })?;
        let ws_origin_check = parse_bool(get("WS_ORIGIN_CHECK"), "WS_ORIGIN_CHECK", cors_origins.is_set())?;
        let default_workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let drain_timeout =
            Duration::from_secs(parse_num(get("DRAIN_TIMEOUT_SECS"), "DRAIN_TIMEOUT_SECS", 10u64, 0..=3600)?);
        let drain_delay =
            Duration::from_millis(parse_num(get("DRAIN_DELAY_MS"), "DRAIN_DELAY_MS", 0u64, 0..=3_600_000)?);
        let recovery_window = match parse_num(
            get("CONNECTION_STATE_RECOVERY_SECS"),
            "CONNECTION_STATE_RECOVERY_SECS",
            0u64,
            0..=86_400,
        )? {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        };
        if !drain_delay.is_zero() && drain_delay >= drain_timeout {
            return Err(ConfigError {
                var: "DRAIN_DELAY_MS",
                reason: format!(
                    "must be shorter than DRAIN_TIMEOUT_SECS ({} s), which it is part of",
                    drain_timeout.as_secs()
                ),
            });
        }

        Ok(Self {
            host,
            port,
            database_url,
            jwt_secret,
            jwt_secret_generated,
            access_token_ttl: secs("ACCESS_TOKEN_TTL_SECS", 15 * 60)?,
            refresh_token_ttl: secs("REFRESH_TOKEN_TTL_SECS", 30 * 24 * 3600)?,
            admin_ui: parse_bool(get("ADMIN_UI"), "ADMIN_UI", true)?,
            admin_ui_readonly: parse_bool(get("ADMIN_UI_READONLY"), "ADMIN_UI_READONLY", true)?,
            redis_url,
            node_id,
            redis_key_prefix,
            node_url,
            cors_origins,
            demo_client: parse_bool(get("DEMO_CLIENT"), "DEMO_CLIENT", true)?,
            ws_origin_check,
            ping_interval: millis("PING_INTERVAL_MS", 25_000)?,
            ping_timeout: millis("PING_TIMEOUT_MS", 20_000)?,
            connect_timeout: millis("CONNECT_TIMEOUT_MS", 45_000)?,
            max_payload_bytes: parse_num(
                get("MAX_PAYLOAD_BYTES"),
                "MAX_PAYLOAD_BYTES",
                1_000_000usize,
                1..=100_000_000,
            )?,
            max_buffered_bytes: parse_num(
                get("MAX_BUFFERED_BYTES"),
                "MAX_BUFFERED_BYTES",
                4 * 1024 * 1024usize,
                4096..=1_000_000_000,
            )?,
            workers: parse_num(get("WORKERS"), "WORKERS", default_workers, 1..=256)?,
            auth_rate_per_minute: parse_num(
                get("AUTH_RATE_PER_MINUTE"),
                "AUTH_RATE_PER_MINUTE",
                300u32,
                0..=1_000_000,
            )?,
            db_pool_size: parse_num(get("DB_POOL_SIZE"), "DB_POOL_SIZE", 10u32, 1..=200)?,
            db_timeout: parse_num(get("DB_TIMEOUT_MS"), "DB_TIMEOUT_MS", 10_000u64, 100..=600_000)
                .map(Duration::from_millis)?,
            trending_upvotes: parse_num(get("TRENDING_UPVOTES"), "TRENDING_UPVOTES", 10u32, 1..=1_000_000)?,
            trending_window: parse_num(
                get("TRENDING_WINDOW_SECS"),
                "TRENDING_WINDOW_SECS",
                600u64,
                1..=86_400,
            )
            .map(Duration::from_secs)?,
            socket_event_rate: parse_num(
                get("SOCKET_EVENT_RATE"),
                "SOCKET_EVENT_RATE",
                50u32,
                1..=1_000_000,
            )?,
            socket_event_burst: parse_num(
                get("SOCKET_EVENT_BURST"),
                "SOCKET_EVENT_BURST",
                200u32,
                1..=1_000_000,
            )?,
            socket_flood_strikes: parse_num(
                get("SOCKET_FLOOD_STRIKES"),
                "SOCKET_FLOOD_STRIKES",
                100u32,
                1..=1_000_000,
            )?,
            max_rooms_per_socket: parse_num(
                get("MAX_ROOMS_PER_SOCKET"),
                "MAX_ROOMS_PER_SOCKET",
                100usize,
                1..=100_000,
            )?,
            socket_user_event_rate: rate(get("SOCKET_USER_EVENT_RATE"), "SOCKET_USER_EVENT_RATE", 100)?,
            socket_user_event_burst: burst(get("SOCKET_USER_EVENT_BURST"), "SOCKET_USER_EVENT_BURST", 400)?,
            socket_address_event_rate: rate(
                get("SOCKET_ADDRESS_EVENT_RATE"),
                "SOCKET_ADDRESS_EVENT_RATE",
                1000,
            )?,
            socket_address_event_burst: burst(
                get("SOCKET_ADDRESS_EVENT_BURST"),
                "SOCKET_ADDRESS_EVENT_BURST",
                4000,
            )?,
            max_sockets_per_user: parse_num(
                get("MAX_SOCKETS_PER_USER"),
                "MAX_SOCKETS_PER_USER",
                20usize,
                1..=1_000_000,
            )?,
            socket_token_grace: parse_num(
                get("SOCKET_TOKEN_GRACE_SECS"),
                "SOCKET_TOKEN_GRACE_SECS",
                10u64,
                0..=3600,
            )
            .map(Duration::from_secs)?,
            rest_user_write_rate: rate(get("REST_USER_WRITE_RATE"), "REST_USER_WRITE_RATE", 10)?,
            rest_user_write_burst: burst(get("REST_USER_WRITE_BURST"), "REST_USER_WRITE_BURST", 60)?,
            rest_address_write_rate: rate(get("REST_ADDRESS_WRITE_RATE"), "REST_ADDRESS_WRITE_RATE", 50)?,
            rest_address_write_burst: burst(
                get("REST_ADDRESS_WRITE_BURST"),
                "REST_ADDRESS_WRITE_BURST",
                300,
            )?,
            drain_timeout,
            drain_delay,
            drain_rate: parse_num(get("DRAIN_RATE"), "DRAIN_RATE", 1000u32, 1..=1_000_000)?,
            max_connections_per_address: parse_num(
                get("MAX_CONNECTIONS_PER_ADDRESS"),
                "MAX_CONNECTIONS_PER_ADDRESS",
                1000usize,
                0..=10_000_000,
            )?,
            max_connections: parse_num(get("MAX_CONNECTIONS"), "MAX_CONNECTIONS", 0usize, 0..=100_000_000)?,
            fd_reserve: parse_num(get("FD_RESERVE"), "FD_RESERVE", 128usize, 8..=1_000_000)?,
            body_read_timeout: millis("BODY_READ_TIMEOUT_MS", 15_000)?,
            max_binary_attachments: parse_num(
                get("MAX_BINARY_ATTACHMENTS"),
                "MAX_BINARY_ATTACHMENTS",
                10usize,
                0..=1000,
            )?,
            max_packet_binary_bytes: parse_num(
                get("MAX_PACKET_BINARY_BYTES"),
                "MAX_PACKET_BINARY_BYTES",
                1_000_000usize,
                1..=1_000_000_000,
            )?,
            max_pending_binary_bytes: parse_num(
                get("MAX_PENDING_BINARY_BYTES"),
                "MAX_PENDING_BINARY_BYTES",
                32usize << 20,
                1..=100_000_000_000,
            )?,
            recovery_window,
            recovery_max_events: parse_num(
                get("CONNECTION_STATE_RECOVERY_MAX_EVENTS"),
                "CONNECTION_STATE_RECOVERY_MAX_EVENTS",
                10_000usize,
                1..=1_000_000,
            )?,
        })
    }
}

/// A token-bucket rate per second; 0 turns that limit off.
fn rate(raw: Option<&str>, var: &'static str, default: u32) -> Result<u32, ConfigError> {
    parse_num(raw, var, default, 0..=1_000_000)
}

/// A token bucket's size.
fn burst(raw: Option<&str>, var: &'static str, default: u32) -> Result<u32, ConfigError> {
    parse_num(raw, var, default, 1..=1_000_000)
}

/// A name that goes into Redis keys and channels: 1 to 64 of
/// `[A-Za-z0-9_.:-]`.
fn checked_name(var: &'static str, raw: &str) -> Result<String, ConfigError> {
    let ok = (1..=64).contains(&raw.len())
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(raw.to_string())
    } else {
        Err(ConfigError { var, reason: format!("{raw:?} must be 1 to 64 of A-Z a-z 0-9 _ - . :") })
    }
}

/// `true`/`false`, also as `1`/`0`, `yes`/`no`, `on`/`off`, in any case.
fn parse_bool(raw: Option<&str>, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    let Some(raw) = raw else { return Ok(default) };
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError { var, reason: format!("{raw:?} is not on or off (true/false, 1/0, yes/no)") }),
    }
}

fn parse_num<T>(
    raw: Option<&str>,
    var: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = raw else { return Ok(default) };
    match raw.parse::<T>() {
        Ok(v) if range.contains(&v) => Ok(v),
        _ => Err(ConfigError {
            var,
            reason: format!("{raw:?} is not a whole number from {} to {}", range.start(), range.end()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_use_sqlite_and_port_3001() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!(c.port, 3001);
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.database_url, DatabaseUrl::Sqlite("civicpulse.db".into()));
        assert!(c.jwt_secret_generated);
        assert_eq!(c.access_token_ttl, Duration::from_secs(900));
        assert_eq!(c.db_timeout, Duration::from_secs(10));
        assert!(c.demo_client);
        assert!(!Config::from_vars(&vars(&[("DEMO_CLIENT", "off")])).unwrap().demo_client);
        assert!(c.admin_ui && c.admin_ui_readonly, "the Admin UI is served, read-only");
        let c = Config::from_vars(&vars(&[("ADMIN_UI", "false"), ("ADMIN_UI_READONLY", "0")])).unwrap();
        assert!(!c.admin_ui && !c.admin_ui_readonly);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("PORT", "abc"),
            ("PORT", "70000"),
            ("DATABASE_URL", "mysql://x"),
            ("JWT_SECRET", "short"),
            ("PING_INTERVAL_MS", "-1"),
            ("REDIS_URL", "http://x"),
            ("REDIS_URL", "redis://host:notaport"),
            ("NODE_ID", "has space"),
            ("DEMO_CLIENT", "maybe"),
            ("NODE_ID", "n".repeat(65).as_str()),
            ("REDIS_KEY_PREFIX", "a{b}"),
            ("NODE_URL", "ftp://x"),
            ("NODE_URL", "http://x/path"),
            ("TRENDING_UPVOTES", "0"),
            ("TRENDING_UPVOTES", "1000001"),
            ("TRENDING_UPVOTES", "ten"),
            ("TRENDING_WINDOW_SECS", "0"),
            ("TRENDING_WINDOW_SECS", "86401"),
            ("TRENDING_WINDOW_SECS", "1.5"),
            ("SOCKET_EVENT_RATE", "0"),
            ("ADMIN_UI", "sure"),
            ("ADMIN_UI_READONLY", "2"),
            ("SOCKET_EVENT_BURST", "x"),
            ("SOCKET_FLOOD_STRIKES", "0"),
            ("MAX_ROOMS_PER_SOCKET", "0"),
            ("DRAIN_TIMEOUT_SECS", "-1"),
            ("DRAIN_TIMEOUT_SECS", "3601"),
            ("DRAIN_DELAY_MS", "10000"),
            ("DRAIN_RATE", "0"),
            ("DB_TIMEOUT_MS", "99"),
            ("DB_TIMEOUT_MS", "600001"),
            ("MAX_CONNECTIONS_PER_ADDRESS", "-1"),
            ("MAX_CONNECTIONS", "many"),
            ("FD_RESERVE", "4"),
            ("BODY_READ_TIMEOUT_MS", "0"),
            ("MAX_BINARY_ATTACHMENTS", "1001"),
            ("MAX_PACKET_BINARY_BYTES", "0"),
            ("MAX_PENDING_BINARY_BYTES", "0"),
            ("CORS_ORIGINS", "http://127.0.0.1:8790/"),
            ("CORS_ORIGINS", "https://a.example,app.example"),
            ("CORS_ORIGINS", "*,https://a.example"),
            ("WS_ORIGIN_CHECK", "sometimes"),
        ] {
            let err = Config::from_vars(&vars(&[(var, value)])).unwrap_err();
            assert_eq!(err.var, var, "{var}={value}");
        }
    }

    #[test]
    fn a_malformed_origin_stops_the_start_naming_the_variable_and_the_entry() {
        let err = Config::from_vars(&vars(&[("CORS_ORIGINS", "https://a.example, http://127.0.0.1:8790/")]))
            .unwrap_err();
        assert_eq!(err.var, "CORS_ORIGINS");
        let line = err.to_string();
        assert!(line.starts_with("invalid CORS_ORIGINS: \"http://127.0.0.1:8790/\""), "{line}");
        assert!(line.contains("trailing slash"), "{line}");
    }

    #[test]
    fn the_websocket_origin_check_is_on_when_origins_are_configured() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!((&c.cors_origins, c.ws_origin_check), (&AllowedOrigins::None, false));
        let c = Config::from_vars(&vars(&[("CORS_ORIGINS", "https://app.example")])).unwrap();
        assert_eq!(c.cors_origins, AllowedOrigins::List(vec!["https://app.example".into()]));
        assert!(c.ws_origin_check);
        let c =
            Config::from_vars(&vars(&[("CORS_ORIGINS", "https://app.example"), ("WS_ORIGIN_CHECK", "off")]))
                .unwrap();
        assert!(!c.ws_origin_check);
        let c = Config::from_vars(&vars(&[("WS_ORIGIN_CHECK", "on")])).unwrap();
        assert!(c.ws_origin_check, "only the server's own pages (and non-browser clients)");
        let c = Config::from_vars(&vars(&[("CORS_ORIGINS", "*")])).unwrap();
        assert_eq!((c.cors_origins, c.ws_origin_check), (AllowedOrigins::Any, true));
    }

    #[test]
    fn cluster_settings() {
        let a = Config::from_vars(&vars(&[])).unwrap();
        let b = Config::from_vars(&vars(&[])).unwrap();
        assert_ne!(a.node_id, b.node_id, "generated node ids are unique");
        assert_eq!(a.redis_key_prefix, "civicpulse");
        assert_eq!(a.node_url, "http://127.0.0.1:3001");
        let c = Config::from_vars(&vars(&[
            ("REDIS_URL", "rediss://h:6380/0"),
            ("NODE_ID", "web-1"),
            ("NODE_URL", "http://10.0.0.5:3001/"),
            ("HOST", "10.0.0.5"),
        ]))
        .unwrap();
        assert_eq!((c.node_id.as_str(), c.node_url.as_str()), ("web-1", "http://10.0.0.5:3001"));
        assert_eq!(c.redis_url.as_deref(), Some("rediss://h:6380/0"));
    }

    #[test]
    fn trending_defaults_and_bounds() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!((c.trending_upvotes, c.trending_window), (10, Duration::from_secs(600)));
        let c = Config::from_vars(&vars(&[("TRENDING_UPVOTES", "1"), ("TRENDING_WINDOW_SECS", "86400")]))
            .unwrap();
        assert_eq!((c.trending_upvotes, c.trending_window), (1, Duration::from_secs(86_400)));
        let c = Config::from_vars(&vars(&[("TRENDING_UPVOTES", "1000000"), ("TRENDING_WINDOW_SECS", "1")]))
            .unwrap();
        assert_eq!((c.trending_upvotes, c.trending_window), (1_000_000, Duration::from_secs(1)));
    }

    #[test]
    fn drain_defaults_and_bounds() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!(
            (c.drain_timeout, c.drain_delay, c.drain_rate),
            (Duration::from_secs(10), Duration::ZERO, 1000)
        );
        let c = Config::from_vars(&vars(&[("DRAIN_TIMEOUT_SECS", "0")])).unwrap();
        assert_eq!(c.drain_timeout, Duration::ZERO);
        let c =
            Config::from_vars(&vars(&[("DRAIN_TIMEOUT_SECS", "30"), ("DRAIN_DELAY_MS", "5000")])).unwrap();
        assert_eq!(c.drain_delay, Duration::from_secs(5));
        // The delay is part of the bound: it cannot fill it.
        for (timeout, delay) in [("5", "5000"), ("0", "1")] {
            let err = Config::from_vars(&vars(&[("DRAIN_TIMEOUT_SECS", timeout), ("DRAIN_DELAY_MS", delay)]))
                .unwrap_err();
            assert_eq!(err.var, "DRAIN_DELAY_MS", "{timeout} s, {delay} ms");
        }
    }

    #[test]
    fn connection_state_recovery_is_off_by_default_and_bounded() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!((c.recovery_window, c.recovery_max_events), (None, 10_000));
        let c = Config::from_vars(&vars(&[
            ("CONNECTION_STATE_RECOVERY_SECS", "120"),
            ("CONNECTION_STATE_RECOVERY_MAX_EVENTS", "50"),
        ]))
        .unwrap();
        assert_eq!((c.recovery_window, c.recovery_max_events), (Some(Duration::from_secs(120)), 50));
        for (var, value) in [
            ("CONNECTION_STATE_RECOVERY_SECS", "86401"),
            ("CONNECTION_STATE_RECOVERY_SECS", "-1"),
            ("CONNECTION_STATE_RECOVERY_MAX_EVENTS", "0"),
            ("CONNECTION_STATE_RECOVERY_MAX_EVENTS", "1000001"),
        ] {
            assert_eq!(Config::from_vars(&vars(&[(var, value)])).unwrap_err().var, var, "{value}");
        }
        let c = Config::from_vars(&vars(&[
            ("CONNECTION_STATE_RECOVERY_SECS", "60"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
        ]))
        .unwrap();
        assert_eq!(c.recovery_window, Some(Duration::from_secs(60)), "cluster-wide");
    }

    #[test]
    fn database_url_schemes() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/c.db").unwrap(),
            DatabaseUrl::Sqlite("/var/lib/c.db".into())
        );
        assert!(matches!(DatabaseUrl::parse("postgresql://u@h/db"), Ok(DatabaseUrl::Postgres(_))));
        assert_eq!(DatabaseUrl::parse("postgres://u:pw@h/db").unwrap().redacted(), "postgres://u:***@h/db");
    }
}
