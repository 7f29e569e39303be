//! The realtime domain, driven by real clients against a real node: rooms
//! (join:issue, leave:issue), messages over the socket and over REST,
//! reactions, the issue:* events, typing, presence, ordering under load —
//! with the official `socket.io-client` (tests/js/realtime.mjs) and
//! python-socketio (tests/python/realtime.py); and the Notifier example actor,
//! through the `civicpulse` binary itself.
//!
//! Each test starts its own node over a fresh SQLite file, makes users and
//! issues over HTTP, and hands them to the script as JSON in `CP_INPUT`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use civicpulse::domain::Role;
use common::clients::{self, user_json};
use common::{Body, Method, StatusCode, TestApp, str_of};
use serde_json::{Value, json};

/// A node with five users and two issues, and the JSON that describes them
/// to a script: alice, bob and carol live in [`common::CITY`], dave in
/// another city, erin in none; an official; two issues reported by alice.
struct Fixture {
    app: TestApp,
    input: Value,
}

impl Fixture {
    fn new() -> Self {
        let app = TestApp::sqlite();
        let alice = app.register("Alice");
        let bob = app.register("Bob");
        let carol = app.register("Carol");
        let dave = app.register_in("Dave", Some("shelbyville"));
        let erin = app.register_in("Erin", None);
        let official = app.staff(Role::Official);
        let users = [("alice", &alice), ("bob", &bob), ("carol", &carol), ("dave", &dave), ("erin", &erin)];
        let mut input = clients::input(&app, &users);
        input["official"] = user_json(&official);
        Self { app, input }
    }

    fn js(&self, scenario: &str) {
        clients::js("realtime.mjs", scenario, &self.input);
    }

    fn py(&self, scenario: &str) {
        clients::py("realtime.py", scenario, &self.input);
    }
}

// ---- the official JavaScript client ---------------------------------------------

#[test]
fn js_join_and_leave_answer_acks_and_decide_who_hears_the_room() {
    Fixture::new().js("join-leave");
}

#[test]
fn js_message_send_acks_the_message_and_the_room_gets_the_same_as_from_rest() {
    let fixture = Fixture::new();
    fixture.js("messages");
    // Every message the script saw went through the domain once.
    let posted = fixture.app.events().iter().filter(|e| e.name() == "message:new").count();
    assert_eq!(posted, 5, "four messages in the room, one in the other room");
}

#[test]
fn js_reactions_reach_room_members_when_the_counts_change() {
    Fixture::new().js("reactions");
}

#[test]
fn js_issue_events_reach_everyone_with_exactly_the_contract_fields() {
    Fixture::new().js("issue-events");
}

#[test]
fn js_typing_goes_to_the_other_members_only_and_is_cleared_on_leave_and_disconnect() {
    Fixture::new().js("typing");
}

#[test]
fn js_typing_is_cleared_five_seconds_after_the_last_keystroke() {
    Fixture::new().js("typing-expiry");
}

#[test]
fn js_presence_updates_on_first_and_last_socket_and_lists_agree_with_rest() {
    Fixture::new().js("presence");
}

#[test]
fn js_a_thousand_messages_from_one_socket_arrive_in_order() {
    let fixture = Fixture::new();
    clients::js_within("realtime.mjs", "ordering", &fixture.input, Duration::from_secs(90));
}

// ---- python-socketio ----------------------------------------------------------

#[test]
fn py_typing_and_presence_between_python_clients() {
    Fixture::new().py("typing-presence");
}

#[test]
fn py_messages_and_reactions_reach_python_room_members() {
    Fixture::new().py("messages");
}

// ---- the Notifier example actor, in the real binary ---------------------------------

/// A `civicpulse` process started by a test; killed when dropped. Its stderr
/// is collected as it comes.
struct Server {
    child: Child,
    stderr: Arc<Mutex<String>>,
    base: String,
}

impl Server {
    /// Starts `civicpulse` (serve) on a free port over the SQLite file
    /// `database_url` with `RUST_LOG` as given; waits for `/healthz`.
    fn start(database_url: &str, rust_log: &str) -> Self {
        let mut last_failure = String::new();
        // A port found free can be taken before the child binds it: retry.
        for _ in 0..3 {
            let port = free_port();
            let mut command = civicpulse_command(database_url);
            command
                .env("HOST", "127.0.0.1")
                .env("PORT", port.to_string())
                .env("WORKERS", "2")
                .env("RUST_LOG", rust_log)
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = command.spawn().expect("start the civicpulse binary");
            let stderr = Arc::new(Mutex::new(String::new()));
            let sink = stderr.clone();
            let pipe = child.stderr.take().expect("piped stderr");
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut all = sink.lock().unwrap_or_else(|p| p.into_inner());
                    all.push_str(&line);
                    all.push('\n');
                }
            });
            let mut server = Server { child, stderr, base: format!("http://127.0.0.1:{port}") };
            match server.wait_healthy(Duration::from_secs(60)) {
                Ok(()) => return server,
                Err(e) => last_failure = format!("{e}\n--- stderr ---\n{}", server.stderr()),
            }
        }
        panic!("the civicpulse binary did not come up: {last_failure}");
    }

    fn wait_healthy(&mut self, limit: Duration) -> Result<(), String> {
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("it exited with {status}"));
            }
            if http.get(format!("{}/healthz", self.base)).send().is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("no answer on {}/healthz within {limit:?}", self.base));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for a stderr line containing `needle`; returns it.
    fn wait_for_line(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.stderr().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?} on stderr within {limit:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn request(&self, method: Method, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let r = common::send(&http, &self.base, method, path, token, Body::Json(body));
        (r.status, r.json)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary with the environment of the test process minus anything that
/// would change how it runs (a cluster, another database, other limits).
fn civicpulse_command(database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_civicpulse"));
    for var in [
        "HOST",
        "PORT",
        "REDIS_URL",
        "NODE_ID",
        "CORS_ORIGINS",
        "PING_INTERVAL_MS",
        "PING_TIMEOUT_MS",
        "CONNECT_TIMEOUT_MS",
        "MAX_PAYLOAD_BYTES",
        "MAX_BUFFERED_BYTES",
        "AUTH_RATE_PER_MINUTE",
        "ACCESS_TOKEN_TTL_SECS",
        "REFRESH_TOKEN_TTL_SECS",
        "DB_POOL_SIZE",
        "WORKERS",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command
        .env("DATABASE_URL", database_url)
        .env("JWT_SECRET", std::str::from_utf8(common::SECRET).expect("ascii secret"))
        .stdin(Stdio::null());
    command
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// `civicpulse user create …` on the database; answers the new user's id.
fn create_user_with_cli(database_url: &str, role: &str, email: &str, name: &str) -> String {
    let out = civicpulse_command(database_url)
        .args(["user", "create", "--role", role, "--email", email, "--password", common::PASSWORD])
        .args(["--name", name, "--city", common::CITY])
        .output()
        .expect("run civicpulse user create");
    assert!(out.status.success(), "user create: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn notifier_logs_critical_issues_and_nothing_for_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = format!("sqlite://{}", dir.path().join("civicpulse.db").display());
    let official_email = "official@example.com";
    let official_id = create_user_with_cli(&database_url, "official", official_email, "Olive Official");
    let server = Server::start(&database_url, "civicpulse::notifier=warn");

    let (status, registered) = server.request(
        Method::POST,
        "/api/auth/register",
        None,
        json!({ "email": "reporter@example.com", "password": common::PASSWORD, "displayName": "Rita", "city": common::CITY }),
    );
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    let reporter = str_of(&registered["accessToken"]);
    let (status, signed_in) = server.request(
        Method::POST,
        "/api/auth/login",
        None,
        json!({ "email": official_email, "password": common::PASSWORD }),
    );
    assert_eq!(status, StatusCode::OK, "{signed_in}");
    assert_eq!(signed_in["user"]["userId"], official_id.as_str());
    let official = str_of(&signed_in["accessToken"]);

    let report = |priority: &str| {
        let body =
            json!({ "title": format!("A {priority} issue"), "category": "water", "priority": priority });
        let (status, issue) = server.request(Method::POST, "/api/issues", Some(&reporter), body);
        assert_eq!(status, StatusCode::CREATED, "{issue}");
        str_of(&issue["issueId"])
    };
    // The low one first: once the critical one's line is out, a line for the
    // low one would have been written before it.
    let low = report("low");
    let high = report("high");
    let critical = report("critical");
    let line = server.wait_for_line(&format!("CRITICAL issue={critical}"), Duration::from_secs(20));
    assert!(line.contains(&format!("city={}", common::CITY)), "{line}");
    assert!(line.contains("status=open"), "{line}");
    assert!(line.contains(" WARN "), "logged as a warning: {line}");

    let logged = server.stderr();
    assert!(!logged.contains(&low), "a line for the low issue:\n{logged}");
    assert!(!logged.contains(&high), "a line for the high issue:\n{logged}");
    assert_eq!(logged.matches("CRITICAL issue=").count(), 1, "one line for one critical issue:\n{logged}");
    // RUST_LOG=civicpulse::notifier=warn lets nothing else through.
    assert!(logged.lines().all(|l| l.contains("civicpulse::notifier")), "other log lines:\n{logged}");

    // An issue that becomes critical later is worth a line too (the
    // Notifier's documented behaviour), the low one still none of its own.
    let (status, patched) = server.request(
        Method::PATCH,
        &format!("/api/issues/{high}"),
        Some(&official),
        json!({ "priority": "critical" }),
    );
    assert_eq!(status, StatusCode::OK, "{patched}");
    server.wait_for_line(&format!("CRITICAL issue={high}"), Duration::from_secs(20));
    let logged = server.stderr();
    assert!(!logged.contains(&low), "a line for the low issue:\n{logged}");
    assert_eq!(logged.matches("CRITICAL issue=").count(), 2, "{logged}");
}
