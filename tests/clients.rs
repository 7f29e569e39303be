//! Real clients against a real node: the official JavaScript client
//! (`socket.io-client`, run by `node tests/js/scenarios.mjs <scenario>`) and
//! python-socketio (`tests/python/scenarios.py <scenario>`), each scenario
//! a child process whose exit code is the verdict.
//!
//! Each test starts its own node over a fresh SQLite file, makes users and
//! issues over HTTP, and hands them to the script as JSON in `CP_INPUT`.
//! The first test to need them installs the clients (`npm ci` in tests/js,
//! a virtualenv in tests/python), once per process and under a file lock
//! across processes.

mod common;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use civicpulse::auth::{Claims, TokenKeys};
use civicpulse::domain::Role;
use common::{ACCESS_TTL, TestApp, TestUser, absent_id};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What a scenario may take, its client's own time limit included.
const SCENARIO_LIMIT: Duration = Duration::from_secs(60);
/// The time limit each script enforces on itself.
const SCRIPT_TIMEOUT_MS: u64 = 25_000;
/// Installing the clients (downloads included).
const INSTALL_LIMIT: Duration = Duration::from_secs(600);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---- the fixture ----------------------------------------------------------

/// A node with four citizens and two issues, and the JSON that describes
/// them to a script.
struct Fixture {
    app: TestApp,
    input: Value,
}

fn user_json(user: &TestUser) -> Value {
    json!({ "id": user.id, "name": user.name, "token": user.token, "refresh": user.refresh })
}

impl Fixture {
    fn new() -> Self {
        let app = TestApp::sqlite();
        let alice = app.register("Alice");
        let bob = app.register("Bob");
        let carol = app.register("Carol");
        let dave = app.register("Dave");
        let issue_id = app.issue_id(&alice);
        let other_issue_id = app.issue_id(&alice);
        let input = json!({
            "url": app.url(""),
            "users": {
                "alice": user_json(&alice),
                "bob": user_json(&bob),
                "carol": user_json(&carol),
                "dave": user_json(&dave),
            },
            "issueId": issue_id,
            "otherIssueId": other_issue_id,
            "absentIssueId": absent_id("iss_"),
            "badTokens": bad_tokens(&app, &alice),
            "expiredToken": expired(&app, &alice),
        });
        Self { app, input }
    }

    /// Adds an official (for scenarios that change status or assignment).
    fn with_official(mut self) -> Self {
        let official = self.app.staff(Role::Official);
        self.input["official"] = user_json(&official);
        self
    }
}

fn expired(app: &TestApp, user: &TestUser) -> String {
    let mut claims = app.claims_for(user, Role::Citizen);
    claims.iat -= 3600;
    claims.exp = claims.iat + 60;
    app.mint(&claims)
}

/// Tokens of every kind the handshake must refuse, for `user`.
fn bad_tokens(app: &TestApp, user: &TestUser) -> Value {
    let claims = app.claims_for(user, Role::Citizen);
    let other_secret = TokenKeys::new(b"not-the-secret-of-this-node-not-at-all!!", ACCESS_TTL);
    let wrong_typ = Claims { typ: "refresh".into(), ..claims.clone() };
    let no_typ = {
        let mut v = serde_json::to_value(&claims).expect("claims as JSON");
        v.as_object_mut().expect("claims object").remove("typ");
        v
    };
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(common::SECRET),
    )
    .expect("HS512 token");
    let no_typ = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &no_typ,
        &jsonwebtoken::EncodingKey::from_secret(common::SECRET),
    )
    .expect("token without typ");
    json!({
        "badlySigned": other_secret.sign(&claims),
        "expired": expired(app, user),
        "wrongTyp": app.mint(&wrong_typ),
        "noTyp": no_typ,
        "algNone": unsigned(&claims),
        "hs512": hs512,
        "refreshToken": user.refresh,
    })
}

/// `alg: none`: the claims with no signature at all.
fn unsigned(claims: &Claims) -> String {
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let header = json!({ "alg": "none", "typ": "JWT" });
    let payload = serde_json::to_value(claims).expect("claims as JSON");
    format!("{}.{}.", b64(&header), b64(&payload))
}

// ---- running the clients ----------------------------------------------------

/// Runs `program args…` with `CP_INPUT`, within [`SCENARIO_LIMIT`]; panics
/// with the child's output unless it exits 0.
fn run_scenario(what: &str, program: &Path, args: &[&str], input: &Value) {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(root())
        .env("CP_INPUT", input.to_string())
        .env("CP_TIMEOUT_MS", SCRIPT_TIMEOUT_MS.to_string())
        // The node is local: never go through a proxy.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {}: {e}", program.display()));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + SCENARIO_LIMIT;
    let status = loop {
        match child.try_wait().expect("waiting for the scenario") {
            Some(status) => break Some(status),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(25)),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let verdict = match status {
        Some(status) if status.success() => {
            // Shown with --nocapture.
            println!("{what}: passed\n{stdout}");
            return;
        }
        Some(status) => format!("{what} failed ({status})"),
        None => format!("{what} did not finish within {SCENARIO_LIMIT:?} and was killed"),
    };
    panic!("{verdict}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs a scenario of tests/js/scenarios.mjs with the official client.
fn js(scenario: &str, fixture: &Fixture) {
    js_ready();
    let script = root().join("tests/js/scenarios.mjs");
    run_scenario(
        &format!("socket.io-client scenario {scenario:?}"),
        Path::new("node"),
        &[script.to_str().expect("utf-8 path"), scenario],
        &fixture.input,
    );
}

/// Runs a scenario of tests/python/scenarios.py with python-socketio.
fn py(scenario: &str, fixture: &Fixture) {
    let python = py_ready();
    let script = root().join("tests/python/scenarios.py");
    run_scenario(
        &format!("python-socketio scenario {scenario:?}"),
        &python,
        &[script.to_str().expect("utf-8 path"), scenario],
        &fixture.input,
    );
}

// ---- installing the clients -------------------------------------------------

/// `npm ci` in tests/js, unless node_modules matches package-lock.json.
fn js_ready() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        with_file_lock("js-clients", || {
            let dir = root().join("tests/js");
            let stamp = digest(&[&dir.join("package-lock.json")])?;
            let marker = dir.join("node_modules/.civicpulse-installed");
            if std::fs::read_to_string(&marker).is_ok_and(|s| s == stamp) {
                return Ok(());
            }
            run_setup(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir))?;
            std::fs::write(&marker, stamp).map_err(|e| format!("writing {}: {e}", marker.display()))
        })
    });
    if let Err(e) = ready {
        panic!("cannot install the JavaScript clients (needs node and npm): {e}");
    }
}

/// A virtualenv in tests/python/.venv with requirements.txt installed;
/// returns its python.
fn py_ready() -> PathBuf {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        with_file_lock("py-clients", || {
            let dir = root().join("tests/python");
            let venv = dir.join(".venv");
            let python = venv.join("bin/python");
            let stamp = digest(&[&dir.join("requirements.txt")])?;
            let marker = venv.join(".civicpulse-installed");
            if python.exists() && std::fs::read_to_string(&marker).is_ok_and(|s| s == stamp) {
                return Ok(python);
            }
            run_setup(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv))?;
            run_setup(
                Command::new(&python)
                    .args(["-m", "pip", "install", "--disable-pip-version-check", "-q", "-r"])
                    .arg(dir.join("requirements.txt")),
            )?;
            std::fs::write(&marker, stamp).map_err(|e| format!("writing {}: {e}", marker.display()))?;
            Ok(python)
        })
    });
    match ready {
        Ok(python) => python.clone(),
        Err(e) => panic!("cannot set up the Python clients (needs python3 with venv): {e}"),
    }
}

/// Runs `f` holding an exclusive lock on a file under the target directory,
/// so that concurrent `cargo test` runs do not install at the same time.
fn with_file_lock<T>(name: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("civicpulse-{name}.lock"));
    let file = File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    file.lock().map_err(|e| format!("locking {}: {e}", path.display()))?;
    let result = f();
    let _ = file.unlock();
    result
}

fn digest(files: &[&Path]) -> Result<String, String> {
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update(std::fs::read(file).map_err(|e| format!("reading {}: {e}", file.display()))?);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn run_setup(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + INSTALL_LIMIT;
    let status = loop {
        match child.try_wait().map_err(|e| format!("{shown}: {e}"))? {
            Some(status) => break Some(status),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    match status {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!("{shown} failed ({status})\n{out}\n{err}")),
        None => Err(format!("{shown} took longer than {INSTALL_LIMIT:?}\n{out}\n{err}")),
    }
}

// ---- the official JavaScript client ---------------------------------------------

#[test]
fn js_connects_over_websocket_with_the_seed_options() {
    js("connect-websocket", &Fixture::new());
}

#[test]
fn js_default_options_poll_then_upgrade_to_websocket() {
    js("connect-default", &Fixture::new());
}

#[test]
fn js_connects_over_long_polling_only() {
    js("connect-polling", &Fixture::new());
}

#[test]
fn js_every_bad_credential_gets_authentication_failed() {
    js("auth-failures", &Fixture::new());
}

#[test]
fn js_seed_refresh_path_reconnects_with_a_new_token() {
    js("auth-refresh", &Fixture::new());
}

#[test]
fn js_other_namespaces_get_invalid_namespace() {
    js("invalid-namespace", &Fixture::new());
}

#[test]
fn js_acks_answer_good_and_bad_payloads() {
    js("acks", &Fixture::new());
}

#[test]
fn js_room_messages_reach_members_only() {
    js("rooms", &Fixture::new());
}

#[test]
fn js_issue_events_reach_every_client_with_the_contract_fields() {
    js("global-events", &Fixture::new().with_official());
}

#[test]
fn js_a_dropped_client_reconnects_and_rejoins() {
    js("reconnect", &Fixture::new());
}

#[test]
fn js_garbage_closes_the_offender_and_spares_its_neighbours() {
    js("garbage", &Fixture::new());
}

// ---- python-socketio ----------------------------------------------------------

#[test]
fn py_connects_over_websocket() {
    py("connect-websocket", &Fixture::new());
}

#[test]
fn py_connects_over_long_polling() {
    py("connect-polling", &Fixture::new());
}

#[test]
fn py_bad_credentials_get_authentication_failed() {
    py("auth-failures", &Fixture::new());
}

#[test]
fn py_acks_answer_good_and_bad_payloads() {
    py("acks", &Fixture::new());
}

#[test]
fn py_room_messages_reach_members_only() {
    py("rooms", &Fixture::new());
}

#[test]
fn py_issue_events_reach_every_client() {
    py("global-events", &Fixture::new());
}

// ---- the node itself ------------------------------------------------------------

/// Panics on the node's actix threads (recorded, then printed as usual).
fn server_panics() -> &'static Mutex<Vec<String>> {
    static PANICS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    PANICS.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("");
            if name.starts_with("actix-rt|")
                && let Some(panics) = PANICS.get()
            {
                let mut panics = panics.lock().unwrap_or_else(|p| p.into_inner());
                panics.push(format!("thread {name:?}: {info}"));
            }
            previous(info);
        }));
        Mutex::new(Vec::new())
    })
}

/// Stopping a node while a long-polling client is connected (and has no GET
/// waiting) must not panic: the session's close path schedules a timer from
/// `stopped()` while the runtime is being torn down.
#[test]
fn stopping_the_node_with_a_polling_client_connected_does_not_panic() {
    let panics = server_panics();
    let app = TestApp::sqlite();
    let alice = app.register("Alice");
    let http = app.client();
    let open = http.get(app.url("/socket.io/?EIO=4&transport=polling")).send().and_then(|r| r.text());
    let open = open.expect("polling handshake");
    let sid = open
        .strip_prefix('0')
        .and_then(|json| serde_json::from_str::<Value>(json).ok())
        .and_then(|v| v["sid"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("not an open packet: {open:?}"));
    let session = app.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    let connect = format!("40{}", json!({ "token": alice.token }));
    let posted = http.post(&session).body(connect).send().expect("POST CONNECT");
    assert!(posted.status().is_success(), "POST CONNECT: {}", posted.status());
    let answer = http.get(&session).send().and_then(|r| r.text()).expect("GET the CONNECT answer");
    assert!(answer.starts_with("40{"), "CONNECT answer {answer:?}");

    drop(app);
    // The worker threads wind down after the drop returns.
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline && panics.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = panics.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(
        seen.is_empty(),
        "the node panicked while stopping with a polling client connected:\n{}",
        seen.join("\n")
    );
}
