//! The `civicpulse` command line, run as the real binary.

mod common;

use common::binary::{run, secret};
use common::*;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn user_create_and_token_work_with_a_node_on_the_same_database() {
    let app = TestApp::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let vars = [("DATABASE_URL", app.database_url()), ("JWT_SECRET", secret()), ("RUST_LOG", "warn")];

    let out = run(
        dir.path(),
        &[
            "user",
            "create",
            "--role",
            "official",
            "--email",
            "Chief@City.example",
            "--password",
            "official-password",
            "--name",
            "Chief Wiggum",
            "--city",
            "springfield",
        ],
        &vars,
    );
    assert!(out.status.success(), "user create failed: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let id = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "prints just the id: {stdout:?}");
    assert!(is_id(&serde_json::json!(id), "off_"), "{id:?}");

    let out = run(dir.path(), &["token", "--user", id], &vars);
    assert!(out.status.success(), "token failed: {}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_string();
    let claims = app.verify(&token);
    assert_eq!(claims.sub, id);
    assert_eq!(claims.role, civicpulse::domain::Role::Official);

    let (status, me) = app.get("/api/users/me", Some(&token));
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["userId"], id);
    assert_eq!(me["email"], "chief@city.example");
    assert_eq!(me["displayName"], "Chief Wiggum");
    assert_eq!(me["role"], "official");
    assert_eq!(me["city"], "springfield");
    // The password given on the command line signs in over HTTP.
    let user = app.login("chief@city.example", "official-password");
    assert_eq!(user.id, id);

    // Citizens get usr_, admins off_; duplicates and bad input fail.
    let create = |role: &str, email: &str| {
        run(
            dir.path(),
            &["user", "create", "--role", role, "--email", email, "--password", "pw-12345678", "--name", "N"],
            &vars,
        )
    };
    let out = create("citizen", "c@city.example");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).trim().starts_with("usr_"));
    let out = create("admin", "a@city.example");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).trim().starts_with("off_"));
    let out = create("admin", "CHIEF@city.example");
    assert!(!out.status.success(), "duplicate email accepted");
    let out = create("admin", "not-an-email");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("email"), "{}", text(&out.stderr));
    let out = create("mayor", "m@city.example");
    assert!(!out.status.success(), "unknown role accepted");

    let out = run(dir.path(), &["token", "--user", &absent_id("usr_")], &vars);
    assert!(!out.status.success(), "a token for nobody");
    assert!(out.stdout.is_empty());
}

/// Starts the binary (the default `serve` command) with one bad variable:
/// it must exit with code 2 before opening anything, saying which variable
/// is wrong. Returns the non-empty lines of stderr.
fn assert_rejects(var: &str, value: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("never.db").display());
    let mut vars =
        vec![("HOST", "127.0.0.1"), ("PORT", "0"), ("DATABASE_URL", db.as_str()), ("JWT_SECRET", secret())];
    vars.retain(|(k, _)| *k != var);
    vars.push((var, value));
    let out = run(dir.path(), &[], &vars);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
    assert!(out.stdout.is_empty(), "{var}={value}: {}", text(&out.stdout));
    let lines: Vec<String> = stderr.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
    assert!(
        lines.iter().any(|l| l.starts_with("civicpulse: ") && l.contains(var)),
        "{var}={value}: no line names {var}:\n{stderr}"
    );
    assert!(lines.iter().all(|l| l.contains(var)), "{var}={value}: unrelated output:\n{stderr}");
    assert!(!dir.path().join("never.db").exists(), "{var}={value}: a database was opened");
    lines
}

#[test]
fn bad_port_exits_2_naming_port() {
    assert_rejects("PORT", "abc");
    assert_rejects("PORT", "70000");
    assert_rejects("PORT", "-1");
}

#[test]
fn short_jwt_secret_exits_2_naming_jwt_secret() {
    assert_rejects("JWT_SECRET", &"s".repeat(31));
    assert_rejects("JWT_SECRET", "short");
}

#[test]
fn unsupported_database_url_exits_2_naming_database_url() {
    assert_rejects("DATABASE_URL", "mysql://x");
    assert_rejects("DATABASE_URL", "sqlite://");
}

/// "A bad value stops the process with one clear line" (src/config.rs):
/// with the default log settings the error must be printed once, not once
/// by the logger and again by `main`.
#[test]
fn bad_configuration_is_reported_in_exactly_one_line() {
    for (var, value) in [("PORT", "abc"), ("JWT_SECRET", "short"), ("DATABASE_URL", "mysql://x")] {
        let lines = assert_rejects(var, value);
        assert_eq!(lines.len(), 1, "{var}={value}: expected one line, got {lines:#?}");
    }
}

/// A port in use stops the start with one line naming the address, and
/// nothing else: no actor was started to wind down without a runtime.
#[test]
fn a_port_in_use_is_one_clear_line_and_no_panic() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let vars =
        [("HOST", "127.0.0.1"), ("PORT", port.as_str()), ("JWT_SECRET", secret()), ("RUST_LOG", "warn")];
    let out = run(dir.path(), &[], &vars);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
