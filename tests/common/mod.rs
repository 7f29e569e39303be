//! The integration-test harness: a real CivicPulse node started in-process
//! on a free port, over a real database (a fresh SQLite file, or a fresh
//! PostgreSQL database), driven over real HTTP. In the spirit of crates.io's
//! `TestApp`: each test gets its own app and its own data, and helpers keep
//! the tests themselves short.
//!
//! Every response that passes through the request helpers is checked for
//! two things the contract promises everywhere: no status is ever a 5xx,
//! and every 4xx has the error shape `{"error": {"code", "message",
//! "details"?}}`. (Fault tests that expect a 503 ask for it with
//! [`Checks::AllowUnavailable`].)
//!
//! The kit, in one place:
//!
//! - [`TestApp::builder`]`().env(k, v).sqlite()` / `.postgres()`: a node
//!   in-process with configuration overrides ([`TestApp::sqlite`] and
//!   [`TestApp::postgres`] are the shortcuts);
//! - [`TestApp::rest`]`(&user)`: an authenticated REST client;
//! - [`TestApp::socket`]`(&user)`: an authenticated Socket.IO client
//!   ([`socket::SocketClient`]), [`TestApp::connect_with_auth`] for refusals;
//! - [`binary`]: the `civicpulse` binary as a child process, and the one
//!   `free_port`;
//! - [`clients`]: the official JS and Python clients as child processes;
//! - [`chaos`]: a TCP proxy that cuts and delays a service for fault tests.

#![allow(dead_code)]

pub mod binary;
pub mod chaos;
pub mod clients;
pub mod raw;
pub mod socket;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use civicpulse::RunningNode;
use civicpulse::auth::{Claims, TokenKeys};
use civicpulse::config::Config;
use civicpulse::db::AnyConnection;
use civicpulse::domain::Role;
use civicpulse::domain::events::DomainEvent;
use civicpulse::domain::users::{self, NewUser};
use diesel::prelude::*;
use reqwest::blocking::Client;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use socket::{SocketClient, SocketOptions};

pub use reqwest::{Method, StatusCode};

/// The fixed HS256 secret every test node uses, so tests can mint and
/// forge tokens. 40 bytes.
pub const SECRET: &[u8; 40] = b"civicpulse-integration-test-secret-0040b";

/// The access-token lifetime the nodes run with (the default).
pub const ACCESS_TTL: Duration = Duration::from_secs(15 * 60);

/// The password every helper-made user has.
pub const PASSWORD: &str = "correct horse battery";

/// The city helper-made users live in.
pub const CITY: &str = "springfield";

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A domain event as a subscriber saw it, with what the database held for
/// the same entity at the moment of publication (so tests can check that
/// events go out after the write, carrying the stored values).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub event: DomainEvent,
    pub stored: Value,
}

/// A user made by the harness, signed in.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub token: String,
    pub refresh: String,
    pub email: String,
    pub password: String,
    pub name: String,
    pub city: Option<String>,
}

impl TestUser {
    /// The user of a register or login answer (`{user, accessToken,
    /// refreshToken}`), who signed in with [`PASSWORD`].
    pub fn from_answer(v: &Value, email: String) -> Self {
        TestUser {
            id: str_of(&v["user"]["userId"]),
            token: str_of(&v["accessToken"]),
            refresh: str_of(&v["refreshToken"]),
            email,
            password: PASSWORD.to_string(),
            name: str_of(&v["user"]["displayName"]),
            city: v["user"]["city"].as_str().map(str::to_string),
        }
    }

    /// The access token in the form the request helpers take.
    pub fn auth(&self) -> Option<&str> {
        Some(&self.token)
    }
}

/// A full response, for tests that need headers or raw text.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

/// What a raw request sends.
pub enum Body {
    Empty,
    Json(Value),
    /// Bytes with a Content-Length.
    Raw(Vec<u8>),
    /// Bytes sent with chunked transfer encoding (no Content-Length).
    Chunked(Vec<u8>),
}

enum Backend {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(PgDatabase),
}

pub struct TestApp {
    // Field order matters: fields drop in declaration order, so the node
    // (and its connection pool) is stopped before the database goes away.
    pub node: RunningNode,
    client: Client,
    base: String,
    database_url: String,
    events: Arc<Mutex<Vec<Recorded>>>,
    _backend: Backend,
}

/// Configuration overrides for a [`TestApp`]; see [`TestApp::builder`].
#[derive(Debug, Clone, Default)]
pub struct TestAppBuilder {
    vars: Vec<(String, String)>,
}

impl TestAppBuilder {
    /// Sets a configuration variable (as `Config::from_vars` reads it) over
    /// the test defaults ([`TestApp::vars`]).
    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.vars.push((key.to_string(), value.to_string()));
        self
    }

    /// Lifts every limit on what clients send (for tests of what happens
    /// at volume, not of the limits: tests/limits.rs, tests/sessions.rs).
    pub fn unlimited(self) -> Self {
        self.env("SOCKET_EVENT_RATE", 1_000_000)
            .env("SOCKET_EVENT_BURST", 1_000_000)
            .env("SOCKET_USER_EVENT_RATE", 0)
            .env("SOCKET_ADDRESS_EVENT_RATE", 0)
            .env("REST_USER_WRITE_RATE", 0)
            .env("REST_ADDRESS_WRITE_RATE", 0)
    }

    /// A node over a fresh SQLite file in its own temporary directory.
    pub fn sqlite(self) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("civicpulse.db").display());
        TestApp::start(url, Backend::Sqlite(dir), self.vars)
    }

    /// A node over a freshly created PostgreSQL database, dropped again
    /// when the app is.
    pub fn postgres(self) -> TestApp {
        let db = PgDatabase::create();
        let url = db.url.clone();
        TestApp::start(url, Backend::Postgres(db), self.vars)
    }
}

impl TestApp {
    /// A node with configuration overrides:
    /// `TestApp::builder().env("AUTH_RATE_PER_MINUTE", 3).sqlite()`.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    /// A node over a fresh SQLite file in its own temporary directory.
    pub fn sqlite() -> Self {
        Self::builder().sqlite()
    }

    /// A node over a freshly created PostgreSQL database, dropped again
    /// when the app is.
    pub fn postgres() -> Self {
        Self::builder().postgres()
    }

    fn start(database_url: String, backend: Backend, overrides: Vec<(String, String)>) -> Self {
        let mut vars = Self::vars(&database_url);
        vars.extend(overrides);
        let config = Config::from_vars(&vars).expect("test config");
        let node = RunningNode::start(config).expect("node starts");
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let db = node.services.domain.db.clone();
        node.services.domain.hub.subscribe(move |event: &Arc<DomainEvent>| {
            let stored = match db.get() {
                Ok(mut conn) => snapshot(&mut conn, event),
                Err(e) => json!({ "snapshotError": e.to_string() }),
            };
            sink.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Recorded { event: (**event).clone(), stored });
        });
        let client =
            Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().expect("http client");
        let base = node.url();
        Self { node, client, base, database_url, events, _backend: backend }
    }

    /// The variables a test node is configured with.
    pub fn vars(database_url: &str) -> HashMap<String, String> {
        [
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("WORKERS", "2"),
            ("DATABASE_URL", database_url),
            ("JWT_SECRET", std::str::from_utf8(SECRET).expect("ascii secret")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The PostgreSQL database of a `.postgres()` app (`None` on SQLite).
    pub fn pg_database(&self) -> Option<&PgDatabase> {
        match &self._backend {
            Backend::Postgres(db) => Some(db),
            Backend::Sqlite(_) => None,
        }
    }

    // ---- clients -------------------------------------------------------

    /// A REST client that sends `user`'s access token.
    pub fn rest(&self, user: &TestUser) -> Rest<'_> {
        self.rest_with_token(&user.token)
    }

    /// A REST client that sends `token` as the bearer token.
    pub fn rest_with_token(&self, token: &str) -> Rest<'_> {
        Rest { app: self, token: Some(token.to_string()), checks: Checks::Contract }
    }

    /// A REST client that sends no token.
    pub fn anonymous(&self) -> Rest<'_> {
        Rest { app: self, token: None, checks: Checks::Contract }
    }

    /// A Socket.IO client connected as `user` (WebSocket, namespace `/`).
    #[track_caller]
    pub fn socket(&self, user: &TestUser) -> SocketClient {
        self.socket_labelled(user, &user.name)
    }

    /// [`Self::socket`] with a label for failure messages (`alice tab 2`).
    #[track_caller]
    pub fn socket_labelled(&self, user: &TestUser, label: &str) -> SocketClient {
        let options =
            SocketOptions { label: label.to_string(), ..SocketOptions::auth(json!({ "token": user.token })) };
        self.socket_with(options).unwrap_or_else(|e| panic!("{label}: CONNECT refused: {e}"))
    }

    /// Connects with any options; `Err` is the CONNECT_ERROR's data.
    pub fn socket_with(&self, options: SocketOptions) -> Result<SocketClient, Value> {
        SocketClient::connect(self.node.addr, options)
    }

    /// Connects with `auth` as the CONNECT's auth object (`Value::Null`:
    /// none); `Err` is the CONNECT_ERROR's data, for refusal tests.
    pub fn connect_with_auth(&self, auth: Value) -> Result<SocketClient, Value> {
        self.socket_with(SocketOptions::auth(auth))
    }

    /// A WebSocket with the Engine.IO handshake done and nothing else, for
    /// raw frames.
    pub fn raw_socket(&self, label: &str) -> SocketClient {
        SocketClient::open(self.node.addr, label, false)
    }

    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    // ---- requests ------------------------------------------------------

    /// Sends any request; checks that no 5xx comes back and that every
    /// error has the contract's shape.
    pub fn send(&self, method: Method, path: &str, token: Option<&str>, body: Body) -> Response {
        send(&self.client, &self.base, method, path, token, body)
    }

    /// [`Self::send`] with other checks (a fault test allows a 503).
    pub fn send_checked(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Body,
        checks: Checks,
    ) -> Response {
        send_checked(&self.client, &self.base, method, path, token, body, checks)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.json(Method::GET, path, token, None)
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        self.json(Method::POST, path, token, body)
    }

    pub fn patch(&self, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        self.json(Method::PATCH, path, token, body)
    }

    pub fn put(&self, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        self.json(Method::PUT, path, token, body)
    }

    pub fn delete(&self, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        self.json(Method::DELETE, path, token, body)
    }

    /// A request with a raw body (malformed JSON, oversized bodies, …).
    pub fn raw(&self, method: Method, path: &str, token: Option<&str>, body: impl Into<Vec<u8>>) -> Response {
        self.send(method, path, token, Body::Raw(body.into()))
    }

    fn json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body.map_or(Body::Empty, Body::Json);
        let r = self.send(method, path, token, body);
        (r.status, r.json)
    }

    // ---- users ---------------------------------------------------------

    /// Registers a citizen named `name` in [`CITY`] over HTTP.
    pub fn register(&self, name: &str) -> TestUser {
        self.register_in(name, Some(CITY))
    }

    /// Registers a citizen with the given city (or none).
    pub fn register_in(&self, name: &str, city: Option<&str>) -> TestUser {
        let email = unique_email(name);
        let mut body = json!({ "email": email, "password": PASSWORD, "displayName": name });
        if let Some(city) = city {
            body["city"] = json!(city);
        }
        let (status, v) = self.post("/api/auth/register", None, Some(body));
        assert_eq!(status, StatusCode::CREATED, "register {name}: {v}");
        TestUser::from_answer(&v, email)
    }

    /// Creates an official or admin the way `civicpulse user create` does,
    /// then signs them in over HTTP.
    pub fn staff(&self, role: Role) -> TestUser {
        let name = format!("{} {}", role.as_str(), unique());
        let email = unique_email(role.as_str());
        let mut conn = self.node.services.domain.db.get().expect("db connection");
        let new = NewUser {
            email: email.clone(),
            password: PASSWORD.to_string(),
            display_name: name.clone(),
            city: Some(CITY.to_string()),
            avatar_url: None,
            role,
        };
        let row = users::create_blocking(&mut conn, new).expect("create staff user");
        drop(conn);
        let user = self.login(&email, PASSWORD);
        assert_eq!(user.id, row.id);
        TestUser { name, city: Some(CITY.to_string()), ..user }
    }

    /// Signs in over HTTP, expecting success.
    pub fn login(&self, email: &str, password: &str) -> TestUser {
        let (status, v) =
            self.post("/api/auth/login", None, Some(json!({ "email": email, "password": password })));
        assert_eq!(status, StatusCode::OK, "login {email}: {v}");
        TestUser {
            id: str_of(&v["user"]["userId"]),
            token: str_of(&v["accessToken"]),
            refresh: str_of(&v["refreshToken"]),
            email: email.to_string(),
            password: password.to_string(),
            name: str_of(&v["user"]["displayName"]),
            city: v["user"]["city"].as_str().map(str::to_string),
        }
    }

    // ---- tokens --------------------------------------------------------

    /// Signs `claims` with the node's secret.
    pub fn mint(&self, claims: &Claims) -> String {
        mint(claims)
    }

    /// Valid access claims for `user`, to be tampered with.
    pub fn claims_for(&self, user: &TestUser, role: Role) -> Claims {
        claims_for(user, role)
    }

    /// Verifies an access token with the node's secret.
    pub fn verify(&self, token: &str) -> Claims {
        TokenKeys::new(SECRET, ACCESS_TTL).verify(token).expect("a valid access token")
    }

    // ---- issues and messages ---------------------------------------------

    /// Reports an issue: `extra` fields are merged over a valid default
    /// body. Expects 201.
    pub fn create_issue(&self, user: &TestUser, extra: Value) -> Value {
        let mut body = json!({ "title": format!("Issue {}", unique()), "category": "roads" });
        merge(&mut body, extra);
        let (status, v) = self.post("/api/issues", user.auth(), Some(body));
        assert_eq!(status, StatusCode::CREATED, "create issue: {v}");
        v
    }

    pub fn issue_id(&self, user: &TestUser) -> String {
        str_of(&self.create_issue(user, json!({}))["issueId"])
    }

    /// Applies a PATCH, expecting 200.
    pub fn update_issue(&self, user: &TestUser, issue_id: &str, body: Value) -> Value {
        let (status, v) = self.patch(&format!("/api/issues/{issue_id}"), user.auth(), Some(body));
        assert_eq!(status, StatusCode::OK, "patch issue: {v}");
        v
    }

    /// Posts a message, expecting 201.
    pub fn post_message(&self, user: &TestUser, issue_id: &str, content: &str) -> Value {
        let (status, v) = self.post(
            &format!("/api/issues/{issue_id}/messages"),
            user.auth(),
            Some(json!({ "content": content })),
        );
        assert_eq!(status, StatusCode::CREATED, "post message: {v}");
        v
    }

    // ---- events --------------------------------------------------------

    /// Every domain event published so far, oldest first.
    pub fn events(&self) -> Vec<DomainEvent> {
        self.recorded().into_iter().map(|r| r.event).collect()
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes and forgets the events published so far.
    pub fn take_events(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn with_conn<T>(&self, f: impl FnOnce(&mut AnyConnection) -> T) -> T {
        let mut conn = self.node.services.domain.db.get().expect("db connection");
        f(&mut conn)
    }
}

/// What [`send`] asserts about every response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checks {
    /// The contract everywhere: never a 5xx; every 4xx in the error shape.
    Contract,
    /// As [`Checks::Contract`], but a 503 is allowed, in the error shape
    /// and with a `Retry-After` header unless it is `/readyz`'s.
    AllowUnavailable,
}

/// An authenticated (or anonymous) REST client over a [`TestApp`]: the
/// same requests and checks as the app's own helpers, with the token given
/// once.
#[derive(Clone)]
pub struct Rest<'a> {
    app: &'a TestApp,
    token: Option<String>,
    checks: Checks,
}

impl Rest<'_> {
    /// The same client, allowing a 503 (for fault tests).
    pub fn allowing_unavailable(mut self) -> Self {
        self.checks = Checks::AllowUnavailable;
        self
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn get(&self, path: &str) -> (StatusCode, Value) {
        self.json(Method::GET, path, None)
    }

    pub fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.json(Method::POST, path, Some(body))
    }

    /// POST without a body.
    pub fn post_empty(&self, path: &str) -> (StatusCode, Value) {
        self.json(Method::POST, path, None)
    }

    pub fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.json(Method::PATCH, path, Some(body))
    }

    /// PUT without a body (reactions).
    pub fn put(&self, path: &str) -> (StatusCode, Value) {
        self.json(Method::PUT, path, None)
    }

    /// DELETE without a body.
    pub fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.json(Method::DELETE, path, None)
    }

    /// Any request; the full response.
    pub fn send(&self, method: Method, path: &str, body: Body) -> Response {
        self.app.send_checked(method, path, self.token.as_deref(), body, self.checks)
    }

    /// Any JSON request.
    pub fn json(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let r = self.send(method, path, body.map_or(Body::Empty, Body::Json));
        (r.status, r.json)
    }
}

/// Sends one request; usable from threads that only hold a client.
pub fn send(
    client: &Client,
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Body,
) -> Response {
    send_checked(client, base, method, path, token, body, Checks::Contract)
}

/// [`send`] with the given [`Checks`].
pub fn send_checked(
    client: &Client,
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Body,
    checks: Checks,
) -> Response {
    let described = format!("{method} {path}");
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(token) = token {
        req = req.header(reqwest::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    req = match body {
        Body::Empty => req,
        Body::Json(v) => req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&v).expect("json")),
        Body::Raw(bytes) => req.header(reqwest::header::CONTENT_TYPE, "application/json").body(bytes),
        Body::Chunked(bytes) => req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(reqwest::blocking::Body::new(std::io::Cursor::new(bytes))),
    };
    let res = req.send().unwrap_or_else(|e| panic!("{described}: request failed: {e}"));
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().unwrap_or_else(|e| panic!("{described}: reading the body failed: {e}"));
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()))
    };
    let unavailable_allowed = checks == Checks::AllowUnavailable && status == StatusCode::SERVICE_UNAVAILABLE;
    assert!(!status.is_server_error() || unavailable_allowed, "{described} answered {status}: {text}");
    if unavailable_allowed {
        check_error_shape(&described, status, &headers, &json);
        if path != "/readyz" {
            let retry_after = headers.get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok());
            assert!(
                retry_after.and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s > 0),
                "{described} {status}: Retry-After {retry_after:?}"
            );
        }
    } else if status.is_client_error() {
        check_error_shape(&described, status, &headers, &json);
    } else if path.starts_with("/api/") && !text.is_empty() {
        let content_type =
            headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(content_type.starts_with("application/json"), "{described} {status}: {content_type:?}");
        assert!(json.is_object(), "{described} {status}: not a JSON object: {text}");
    }
    Response { status, headers, text, json }
}

/// `{"error": {"code": snake_case, "message": non-empty, "details"?: object}}`
/// and nothing else, served as JSON.
fn check_error_shape(described: &str, status: StatusCode, headers: &HeaderMap, json: &Value) {
    let content_type = headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(
        content_type.starts_with("application/json"),
        "{described} {status}: content-type {content_type:?}"
    );
    let top = json.as_object().unwrap_or_else(|| panic!("{described} {status}: not an object: {json}"));
    assert_eq!(top.keys().collect::<Vec<_>>(), ["error"], "{described} {status}: {json}");
    let error = top["error"].as_object().unwrap_or_else(|| panic!("{described} {status}: {json}"));
    let code = error.get("code").and_then(Value::as_str).unwrap_or("");
    assert!(
        !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "{described} {status}: code {code:?} is not snake_case: {json}"
    );
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    assert!(!message.is_empty(), "{described} {status}: no message: {json}");
    for key in error.keys() {
        assert!(
            ["code", "message", "details"].contains(&key.as_str()),
            "{described}: extra key {key}: {json}"
        );
    }
    if let Some(details) = error.get("details") {
        assert!(details.is_object(), "{described}: details not an object: {json}");
    }
}

/// Runs `f(0..n)` on `n` threads released at the same moment; answers the
/// results in index order.
pub fn concurrently<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (f, barrier) = (&f, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("worker thread panicked")).collect()
    })
}

/// Asserts an error answer; returns its details (null when absent).
#[track_caller]
pub fn assert_error(res: &(StatusCode, Value), status: StatusCode, code: &str) -> Value {
    assert_eq!(res.0, status, "{}", res.1);
    assert_eq!(res.1["error"]["code"], code, "{}", res.1);
    res.1["error"].get("details").cloned().unwrap_or(Value::Null)
}

/// Asserts a 422 whose details name exactly `fields`.
#[track_caller]
pub fn assert_invalid(res: &(StatusCode, Value), fields: &[&str]) {
    let details = assert_error(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let named: Vec<&str> = details["fields"]
        .as_object()
        .unwrap_or_else(|| panic!("no details.fields: {}", res.1))
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = fields.to_vec();
    want.sort_unstable();
    let mut got = named.clone();
    got.sort_unstable();
    assert_eq!(got, want, "{}", res.1);
    for field in fields {
        assert!(
            details["fields"][field].as_str().is_some_and(|m| !m.is_empty()),
            "{field} has no reason: {}",
            res.1
        );
    }
}

#[track_caller]
pub fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("expected a string, got {v}")).to_string()
}

/// The `id` fields of a page's items, in order.
#[track_caller]
pub fn ids_of(page: &Value, field: &str) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {page}"))
        .iter()
        .map(|item| str_of(&item[field]))
        .collect()
}

/// True for `2025-01-15T10:30:00.000Z`-shaped timestamps.
pub fn is_timestamp(v: &Value) -> bool {
    let Some(s) = v.as_str() else { return false };
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() == 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
        && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

/// True for a prefix plus a 26-character Crockford base32 ULID.
pub fn is_id(v: &Value, prefix: &str) -> bool {
    v.as_str().and_then(|s| s.strip_prefix(prefix)).is_some_and(|ulid| {
        ulid.len() == 26
            && ulid.bytes().all(|b| {
                b.is_ascii_digit() || (b.is_ascii_uppercase() && !matches!(b, b'I' | b'L' | b'O' | b'U'))
            })
    })
}

/// A well-formed ID that names nothing.
pub fn absent_id(prefix: &str) -> String {
    format!("{prefix}01HN5K7ZQ4X9J8W2V3B6C1D0EF")
}

/// Percent-encodes every byte of `s` (for emoji in paths).
pub fn pct(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn merge(base: &mut Value, extra: Value) {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        for (k, v) in extra {
            base.insert(k, v);
        }
    }
}

pub fn unique_email(name: &str) -> String {
    let slug: String =
        name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).take(20).collect();
    format!("{slug}-{}-{}@example.com", std::process::id(), unique())
}

/// What the database holds, right now, for the entity an event is about.
fn snapshot(conn: &mut AnyConnection, event: &DomainEvent) -> Value {
    use civicpulse::db::models::MessageRow;
    use civicpulse::domain::{issues, wire};
    use civicpulse::schema::{messages, reactions, upvotes};

    match event {
        DomainEvent::IssueCreated(issue) | DomainEvent::IssueUpdated(issue) => {
            match issues::find(conn, &issue.issue_id) {
                Ok(row) => serde_json::to_value(wire::Issue::from(row)).unwrap_or_default(),
                Err(e) => json!({ "missing": e.to_string() }),
            }
        }
        DomainEvent::IssueUpvoted(up) => {
            let count = issues::find(conn, &up.issue_id).map(|r| r.upvotes).ok();
            let has_row: i64 = upvotes::table
                .filter(upvotes::issue_id.eq(&up.issue_id))
                .filter(upvotes::user_id.eq(&up.upvoted_by))
                .count()
                .get_result(conn)
                .unwrap_or(-1);
            json!({ "upvotes": count, "upvoted": has_row == 1 })
        }
        DomainEvent::MessagePosted(message) => {
            let row: Option<MessageRow> = messages::table
                .find(&message.message_id)
                .select(MessageRow::as_select())
                .first(conn)
                .optional()
                .unwrap_or(None);
            match row {
                Some(row) => json!({
                    "messageId": row.id,
                    "issueId": row.issue_id,
                    "authorId": row.author_id,
                    "content": row.content,
                    "createdAt": civicpulse::timestamp::format_ms(row.created_at),
                }),
                None => json!({ "missing": message.message_id }),
            }
        }
        DomainEvent::ReactionChanged(counts) => {
            let rows: Vec<String> = reactions::table
                .filter(reactions::message_id.eq(&counts.message_id))
                .select(reactions::emoji)
                .load(conn)
                .unwrap_or_default();
            let mut map = serde_json::Map::new();
            for emoji in rows {
                let n = map.get(&emoji).and_then(Value::as_i64).unwrap_or(0);
                map.insert(emoji, json!(n + 1));
            }
            Value::Object(map)
        }
    }
}

/// Signs `claims` with the test secret (every test node's).
pub fn mint(claims: &Claims) -> String {
    TokenKeys::new(SECRET, ACCESS_TTL).sign(claims)
}

/// Valid access claims for `user`, to be tampered with.
pub fn claims_for(user: &TestUser, role: Role) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        sub: user.id.clone(),
        name: user.name.clone(),
        role,
        city: user.city.clone(),
        iat: now,
        exp: now + ACCESS_TTL.as_secs() as i64,
        typ: "access".into(),
        sid: None,
    }
}

/// A PostgreSQL database made for one test and dropped after it.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub fn create() -> Self {
        let admin_url = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_PG_URL.to_string());
        let name = format!("civicpulse_test_{}_{}_{:08x}", std::process::id(), unique(), rand_suffix());
        let mut conn = diesel::PgConnection::establish(&admin_url).unwrap_or_else(|e| {
            panic!("cannot connect to PostgreSQL at {admin_url} (set TEST_DATABASE_URL): {e}")
        });
        diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let url = with_database(&admin_url, &name);
        Self { url, admin_url, name }
    }
}

impl PgDatabase {
    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `sql` on a fresh connection to the admin database (not this
    /// one), for fault tests: `ALTER DATABASE … ALLOW_CONNECTIONS false`.
    pub fn admin_execute(&self, sql: &str) {
        let mut conn = diesel::PgConnection::establish(&self.admin_url)
            .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {}: {e}", self.admin_url));
        diesel::sql_query(sql).execute(&mut conn).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let dropped = diesel::PgConnection::establish(&self.admin_url).map_err(|e| e.to_string()).and_then(
            |mut conn| {
                diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
                    .execute(&mut conn)
                    .map_err(|e| e.to_string())
            },
        );
        if let Err(e) = dropped {
            // Never panic in drop: it would abort a test that is unwinding.
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    nanos.subsec_nanos() ^ (nanos.as_secs() as u32).rotate_left(16)
}

/// `postgres://u@h:5432/db?x=y` with `db` replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    format!("{server}/{name}{query}")
}
