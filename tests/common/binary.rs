//! The `civicpulse` binary as a child process: for the command line, and
//! for tests that must see what the real process writes to stderr. A node
//! in-process is [`super::TestApp::builder`]; this is the one other way to
//! start a server.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Body, Method, Response, SECRET, StatusCode, send};

/// The binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_civicpulse");

/// How long a command may run before it is killed.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// The test secret as the `JWT_SECRET` value.
pub fn secret() -> &'static str {
    std::str::from_utf8(SECRET).expect("ascii secret")
}

/// The binary with exactly `vars` in its environment (plus PATH), so that
/// nothing of the test process's environment changes how it runs.
pub fn command(vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).stdin(Stdio::null());
    for (k, v) in vars {
        command.env(k, v);
    }
    command
}

/// Runs `civicpulse args…` with exactly `vars` in `dir`; kills it if it has
/// not exited within 60 seconds.
pub fn run(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = command(vars);
    cmd.args(args).current_dir(dir).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start civicpulse");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > COMMAND_LIMIT {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("civicpulse {args:?} did not exit; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `civicpulse serve` as a child process on a free port; killed when
/// dropped. Its stderr is collected as it comes.
pub struct Server {
    child: Child,
    stderr: Arc<Mutex<String>>,
    base: String,
    http: reqwest::blocking::Client,
}

impl Server {
    /// Starts the binary over `database_url` with the test secret, two
    /// workers and `vars`; waits for `/healthz`.
    pub fn start(database_url: &str, vars: &[(&str, &str)]) -> Self {
        Self::start_configured(database_url, vars, &|_| {})
    }

    /// [`Self::start`] with at most `descriptors` open files (RLIMIT_NOFILE,
    /// soft and hard), as a process started under `ulimit -n` has.
    pub fn start_with_descriptor_limit(database_url: &str, vars: &[(&str, &str)], descriptors: u64) -> Self {
        use std::os::unix::process::CommandExt;
        Self::start_configured(database_url, vars, &move |command| {
            let limit = libc::rlimit { rlim_cur: descriptors, rlim_max: descriptors };
            // SAFETY: setrlimit is async-signal-safe, and the closure
            // touches nothing else between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        })
    }

    fn start_configured(database_url: &str, vars: &[(&str, &str)], configure: &dyn Fn(&mut Command)) -> Self {
        let mut last_failure = String::new();
        // A port found free can be taken before the child binds it: retry.
        for _ in 0..3 {
            match Self::try_start(free_port(), database_url, vars, configure) {
                Ok(server) => return server,
                Err(e) => last_failure = e,
            }
        }
        panic!("the civicpulse binary did not come up: {last_failure}");
    }

    /// [`Server::start`] on `port`, where a restarted node is expected.
    pub fn start_on(port: u16, database_url: &str, vars: &[(&str, &str)]) -> Self {
        Self::try_start(port, database_url, vars, &|_| {})
            .unwrap_or_else(|e| panic!("the civicpulse binary did not come up on port {port}: {e}"))
    }

    fn try_start(
        port: u16,
        database_url: &str,
        vars: &[(&str, &str)],
        configure: &dyn Fn(&mut Command),
    ) -> Result<Self, String> {
        let port = port.to_string();
        let mut all = vec![
            ("HOST", "127.0.0.1"),
            ("PORT", port.as_str()),
            ("WORKERS", "2"),
            ("DATABASE_URL", database_url),
            ("JWT_SECRET", secret()),
        ];
        all.extend_from_slice(vars);
        let mut command = command(&all);
        configure(&mut command);
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the civicpulse binary");
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
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let mut server = Server { child, stderr, base: format!("http://127.0.0.1:{port}"), http };
        match server.wait_healthy(Duration::from_secs(60)) {
            Ok(()) => Ok(server),
            Err(e) => Err(format!("{e}\n--- stderr ---\n{}", server.stderr())),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port in the base URL")
    }

    fn wait_healthy(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("it exited with {status}"));
            }
            let probe =
                self.http.get(format!("{}/healthz", self.base)).timeout(Duration::from_secs(5)).send();
            if probe.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("no answer on {}/healthz within {limit:?}", self.base));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// The child's process id (for a script that kills it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the node dies without a goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the node drains and exits by itself.
    pub fn terminate(&self) {
        // SAFETY: kill(2) on our own child's pid; it is not reaped before
        // `wait_exit` or drop, so the pid cannot have been reused.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to {}", self.child.id());
    }

    /// Waits for the process to exit, `limit` at most; its status then.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for civicpulse") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for a stderr line containing `needle`; returns it.
    #[track_caller]
    pub fn wait_for_line(&self, needle: &str, limit: Duration) -> String {
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

    /// Registers a citizen of [`super::CITY`] over HTTP.
    pub fn register(&self, name: &str) -> super::TestUser {
        let email = super::unique_email(name);
        let body = serde_json::json!({
            "email": email, "password": super::PASSWORD, "displayName": name, "city": super::CITY,
        });
        let (status, v) = self.request(Method::POST, "/api/auth/register", None, body);
        assert_eq!(status, StatusCode::CREATED, "register {name}: {v}");
        super::TestUser::from_answer(&v, email)
    }

    /// A JSON request with the harness's checks (no 5xx, the error shape).
    pub fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let r: Response = send(&self.http, &self.base, method, path, token, Body::Json(body));
        (r.status, r.json)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
