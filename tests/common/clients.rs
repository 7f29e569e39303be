//! Real Socket.IO clients as child processes: the official JavaScript client
//! (`socket.io-client`, scripts under tests/js run by `node`) and
//! python-socketio (scripts under tests/python run by the virtualenv's
//! python). A scenario is one run of a script, `script <scenario>`, with the
//! test's data as JSON in `CP_INPUT` and the script's own time limit in
//! `CP_TIMEOUT_MS`; its exit code is the verdict.
//!
//! The first test to need a client installs it (`npm ci` in tests/js, a
//! virtualenv in tests/python), once per process and under a file lock
//! across processes.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use civicpulse::auth::{Claims, TokenKeys};
use civicpulse::domain::Role;

use super::{ACCESS_TTL, SECRET, TestApp, TestUser, absent_id, claims_for, mint};

/// The time limit a script enforces on itself unless told otherwise.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(25);
/// What the harness adds to a script's own limit before it kills the child
/// (node or python starting on a busy machine, the script's own cleanup).
const KILL_MARGIN: Duration = Duration::from_secs(35);
/// Installing the clients (downloads included).
const INSTALL_LIMIT: Duration = Duration::from_secs(600);

/// The crate's root directory.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A user as the scripts take them: `{id, name, token, refresh}`.
pub fn user_json(user: &TestUser) -> Value {
    json!({ "id": user.id, "name": user.name, "token": user.token, "refresh": user.refresh, "city": user.city })
}

/// The part of `CP_INPUT` every script reads: the node's `url`, `users` under
/// the keys the scripts name them by, two issues reported by the first of
/// them (`issueId`, `otherIssueId`) and an `absentIssueId` that names
/// nothing. A test adds what only its own script reads.
pub fn input(app: &TestApp, users: &[(&str, &TestUser)]) -> Value {
    let (_, reporter) = users.first().expect("a user to report the issues");
    let issue_id = app.issue_id(reporter);
    let other_issue_id = app.issue_id(reporter);
    input_with_issues(app, users, &issue_id, &other_issue_id)
}

/// [`input`] with issues the test already has.
pub fn input_with_issues(
    app: &TestApp,
    users: &[(&str, &TestUser)],
    issue_id: &str,
    other_issue_id: &str,
) -> Value {
    let users: serde_json::Map<String, Value> =
        users.iter().map(|(key, user)| (key.to_string(), user_json(user))).collect();
    json!({
        "url": app.url(""),
        "users": users,
        "issueId": issue_id,
        "otherIssueId": other_issue_id,
        "absentIssueId": absent_id("iss_"),
    })
}

/// An access token for `user` that expired an hour ago.
pub fn expired_token(user: &TestUser) -> String {
    let mut claims = claims_for(user, Role::Citizen);
    claims.iat -= 3600;
    claims.exp = claims.iat + 60;
    mint(&claims)
}

/// Tokens of every kind the handshake must refuse, for `user` (the
/// scripts' `badTokens`).
pub fn bad_tokens(user: &TestUser) -> Value {
    let claims = claims_for(user, Role::Citizen);
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
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("HS512 token");
    let no_typ = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &no_typ,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("token without typ");
    json!({
        "badlySigned": other_secret.sign(&claims),
        "expired": expired_token(user),
        "wrongTyp": mint(&wrong_typ),
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

/// Runs `node tests/js/<script> <scenario>` with the official client.
pub fn js(script: &str, scenario: &str, input: &Value) {
    js_within(script, scenario, input, SCRIPT_TIMEOUT);
}

/// [`js`] with another time limit for the script.
pub fn js_within(script: &str, scenario: &str, input: &Value, timeout: Duration) {
    js_ready();
    let path = root().join("tests/js").join(script);
    run_scenario(
        &format!("socket.io-client {script} {scenario:?}"),
        Path::new("node"),
        &[path.to_str().expect("utf-8 path"), scenario],
        input,
        timeout,
    );
}

/// Runs `tests/python/<script> <scenario>` with python-socketio.
pub fn py(script: &str, scenario: &str, input: &Value) {
    py_within(script, scenario, input, SCRIPT_TIMEOUT);
}

/// [`py`] with another time limit for the script.
pub fn py_within(script: &str, scenario: &str, input: &Value, timeout: Duration) {
    let python = py_ready();
    let path = root().join("tests/python").join(script);
    run_scenario(
        &format!("python-socketio {script} {scenario:?}"),
        &python,
        &[path.to_str().expect("utf-8 path"), scenario],
        input,
        timeout,
    );
}

/// Runs `program args…` with `CP_INPUT` and `CP_TIMEOUT_MS`; kills it if it
/// outlives its own limit by [`KILL_MARGIN`]; panics with the child's output
/// unless it exits 0.
pub fn run_scenario(what: &str, program: &Path, args: &[&str], input: &Value, timeout: Duration) {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(root())
        .env("CP_INPUT", input.to_string())
        .env("CP_TIMEOUT_MS", timeout.as_millis().to_string())
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
    let limit = timeout + KILL_MARGIN;
    let deadline = Instant::now() + limit;
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
        None => format!("{what} did not finish within {limit:?} and was killed"),
    };
    panic!("{verdict}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
}

/// Reads a child's pipe to the end on a thread of its own.
pub fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

// ---- installing the clients -------------------------------------------------

/// `npm ci` in tests/js, unless node_modules matches package-lock.json.
pub fn js_ready() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = READY.get_or_init(|| npm_ready("tests/js")) {
        panic!("cannot install the JavaScript clients (needs node and npm): {e}");
    }
}

/// `npm ci` in tests/browser (playwright-core, the client's browser build,
/// the Admin UI's bundle), and Debian's Chromium present.
pub fn browser_ready() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        if !Path::new(&chromium).exists() {
            return Err(format!("no browser at {chromium}: `apt-get install -y chromium` (or set CHROMIUM)"));
        }
        npm_ready("tests/browser")
    });
    if let Err(e) = ready {
        panic!("cannot run the browser tier: {e}");
    }
}

/// `npm ci` in `dir` (relative to the crate), once per change of its
/// package-lock.json, under a file lock across test processes.
fn npm_ready(dir: &str) -> Result<(), String> {
    with_file_lock(&dir.replace('/', "-"), || {
        let dir = root().join(dir);
        let stamp = digest(&[&dir.join("package-lock.json")])?;
        let marker = dir.join("node_modules/.civicpulse-installed");
        if std::fs::read_to_string(&marker).is_ok_and(|s| s == stamp) {
            return Ok(());
        }
        run_setup(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir))?;
        std::fs::write(&marker, stamp).map_err(|e| format!("writing {}: {e}", marker.display()))
    })
}

/// Runs `node tests/browser/<script> <scenario>`: Debian's Chromium driven
/// by playwright-core. Screenshots go to the target directory's
/// `browser-screenshots`.
pub fn browser(script: &str, scenario: &str, input: &Value, timeout: Duration) {
    browser_ready();
    let path = root().join("tests/browser").join(script);
    run_scenario(
        &format!("chromium {script} {scenario:?}"),
        Path::new("node"),
        &[path.to_str().expect("utf-8 path"), scenario],
        input,
        timeout,
    );
}

/// A virtualenv in tests/python/.venv with requirements.txt installed;
/// returns its python.
pub fn py_ready() -> PathBuf {
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
