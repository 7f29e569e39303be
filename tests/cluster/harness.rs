//! A cluster as a user runs one: `civicpulse` processes on one fresh
//! PostgreSQL database and a Redis of the test's own (a `redis-server`
//! child on a free port, so a test may kill its clients or restart it
//! without disturbing anything else), and optionally nginx in front in
//! plain round-robin.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::binary::{self, Server};
use crate::common::clients::user_json;
use crate::common::{PASSWORD, PgDatabase, TestUser};

/// A `redis-server` of the test's own; stopped when dropped.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Self {
        let mut redis = Self { port: binary::free_port(), child: None };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port: a restart loses every key, as
    /// a Redis without persistence does).
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) on PATH");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.command(&["PING"]).is_ok_and(|r| r == "PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One command with `redis-cli`; its reply, trimmed.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let out = Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output()?;
        if !out.status.success() {
            return Err(std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// nginx in plain round-robin over the nodes: no sticky sessions, no
/// upstream keep-alive. Stopped when dropped.
pub struct Nginx {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(upstreams: &[&str]) -> Self {
        let binary = nginx_binary();
        let dir = tempfile::tempdir().expect("temp dir");
        let port = binary::free_port();
        let servers: String =
            upstreams.iter().map(|u| format!("    server {};\n", u.trim_start_matches("http://"))).collect();
        let template =
            std::fs::read_to_string(crate::common::clients::root().join("deploy/nginx-round-robin.conf"))
                .expect("deploy/nginx-round-robin.conf");
        let conf = template
            .replace("@ROOT@", &dir.path().display().to_string())
            .replace("@PORT@", &port.to_string())
            .replace("@SERVERS@", &servers);
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new(&binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let url = format!("http://127.0.0.1:{port}");
        let mut nginx = Self { url, child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let mut err = String::new();
                if let Some(mut pipe) = nginx.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut err);
                }
                panic!("nginx exited with {status}: {err}");
            }
            assert!(Instant::now() < deadline, "nginx did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    panic!("nginx is not installed (Debian package nginx; .ci/run installs it)");
}

/// Three (or `n`) nodes on one database and one Redis.
pub struct Cluster {
    pub nodes: Vec<Option<Server>>,
    pub redis: Redis,
    pub db: PgDatabase,
    vars: Vec<(String, String)>,
}

impl Cluster {
    pub fn start(n: usize) -> Self {
        Self::start_with(n, &[])
    }

    /// `vars` go to every node (e.g. a short ping interval).
    pub fn start_with(n: usize, vars: &[(&str, &str)]) -> Self {
        Self::start_via(n, vars, Redis::url)
    }

    /// [`Self::start_with`], the nodes reaching Redis at `url(&redis)`
    /// (a fault test's proxy in front of it).
    pub fn start_via(n: usize, vars: &[(&str, &str)], url: impl FnOnce(&Redis) -> String) -> Self {
        let redis = Redis::start();
        let db = PgDatabase::create();
        let mut vars: Vec<(String, String)> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        vars.push(("REDIS_URL".into(), url(&redis)));
        vars.push(("RUST_LOG".into(), "info,civicpulse::http=warn".into()));
        let mut cluster = Self { nodes: Vec::new(), redis, db, vars };
        for i in 0..n {
            let node = cluster.start_node(i);
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    /// Starts node `i` (`NODE_ID=node-<i>`), as a restart would.
    pub fn start_node(&self, i: usize) -> Server {
        self.start_node_on(i, None)
    }

    /// [`Cluster::start_node`] on `port` if given: where a proxy in front
    /// expects the node back.
    pub fn start_node_on(&self, i: usize, port: Option<u16>) -> Server {
        let id = format!("node-{i}");
        let mut vars: Vec<(&str, &str)> = self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        vars.push(("NODE_ID", &id));
        let node = match port {
            Some(port) => Server::start_on(port, &self.db.url, &vars),
            None => Server::start(&self.db.url, &vars),
        };
        node.wait_for_line("presence in Redis", Duration::from_secs(10));
        node
    }

    pub fn node(&self, i: usize) -> &Server {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().flatten().map(|n| n.url().to_string()).collect()
    }

    /// Registers a citizen of springfield on node `i % n`.
    pub fn register(&self, i: usize, name: &str) -> TestUser {
        self.register_in(i, name, Some("springfield"))
    }

    /// Registers a citizen of `city` (or none) on node `i % n`.
    pub fn register_in(&self, i: usize, name: &str, city: Option<&str>) -> TestUser {
        let node = self.node(i % self.nodes.len());
        let email = format!("{}-{}@example.test", name.to_lowercase(), rand::random::<u32>());
        let mut body = json!({ "email": email, "password": PASSWORD, "displayName": name });
        if let Some(city) = city {
            body["city"] = city.into();
        }
        let (status, v) = node.request(reqwest::Method::POST, "/api/auth/register", None, body);
        assert_eq!(status, 201, "register {name}: {v}");
        TestUser::from_answer(&v, email)
    }

    /// An official, made the way an operator does (`civicpulse user create`).
    pub fn official(&self) -> TestUser {
        self.staff("official", "Olive Official")
    }

    /// An admin, made the same way.
    pub fn admin(&self) -> TestUser {
        self.staff("admin", "Ada Admin")
    }

    fn staff(&self, role: &str, name: &str) -> TestUser {
        let email = format!("{role}-{}@example.test", rand::random::<u32>());
        let dir = tempfile::tempdir().expect("temp dir");
        let out = binary::run(
            dir.path(),
            &[
                "user",
                "create",
                "--role",
                role,
                "--email",
                &email,
                "--password",
                PASSWORD,
                "--name",
                name,
                "--city",
                "springfield",
            ],
            &[("DATABASE_URL", &self.db.url)],
        );
        assert!(out.status.success(), "user create: {}", String::from_utf8_lossy(&out.stderr));
        let (status, v) = self.node(0).request(
            reqwest::Method::POST,
            "/api/auth/login",
            None,
            json!({ "email": email, "password": PASSWORD }),
        );
        assert_eq!(status, 200, "login {role}: {v}");
        TestUser::from_answer(&v, email)
    }

    pub fn issue_id(&self, user: &TestUser) -> String {
        let (status, v) = self.node(0).request(
            reqwest::Method::POST,
            "/api/issues",
            Some(&user.token),
            json!({ "title": format!("Issue {}", rand::random::<u32>()), "category": "roads" }),
        );
        assert_eq!(status, 201, "create issue: {v}");
        v["issueId"].as_str().unwrap_or_default().to_string()
    }

    /// What every cluster script reads: the nodes' URLs, Redis, users
    /// under their keys and an issue reported by the first.
    pub fn input(&self, users: &[(&str, &TestUser)]) -> Value {
        let reporter = users.first().expect("a user").1;
        let map: serde_json::Map<String, Value> =
            users.iter().map(|(k, u)| (k.to_string(), user_json(u))).collect();
        json!({
            "url": self.node(0).url(),
            "urls": self.urls(),
            "redisUrl": self.redis.url(),
            "users": map,
            "issueId": self.issue_id(reporter),
            "otherIssueId": self.issue_id(reporter),
        })
    }

    /// A counter of node `i`'s /metrics.
    pub fn metric(&self, i: usize, name: &str) -> f64 {
        let text = reqwest::blocking::get(format!("{}/metrics", self.node(i).url()))
            .and_then(|r| r.text())
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(f64::NAN)
    }

    /// Node `i`'s /readyz status.
    pub fn ready(&self, i: usize) -> u16 {
        reqwest::blocking::get(format!("{}/readyz", self.node(i).url())).map_or(0, |r| r.status().as_u16())
    }
}

/// Waits until `f` holds.
#[track_caller]
pub fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
