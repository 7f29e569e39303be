//! Registration, sign-in, access tokens, refresh and logout.

use std::collections::BTreeSet;

use crate::common::*;
use civicpulse::domain::Role;
use serde_json::{Value, json};

on_both_backends!(
    register_answers_201_with_user_and_tokens,
    register_email_is_lowercased_and_unique_case_insensitively,
    register_validation_names_each_bad_field,
    register_always_makes_a_citizen,
    login_answers_200_and_401_for_bad_credentials,
    bad_access_tokens_are_401,
    token_of_a_user_that_does_not_exist_is_401_everywhere,
    refresh_rotates_the_pair,
    refresh_reuse_revokes_every_session_of_the_user,
    logout_revokes_the_token_and_is_idempotent,
);

// ---------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------

fn register_answers_201_with_user_and_tokens(app: &TestApp) {
    let body = json!({
        "email": "priya@example.com",
        "password": "s3cret-passw0rd",
        "displayName": "  Priya  ",
        "city": "bangalore",
        "avatarUrl": "https://example.com/p.png",
    });
    let (status, v) = app.post("/api/auth/register", None, Some(body));
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["user", "accessToken", "refreshToken"]));

    let user = &v["user"];
    let keys: BTreeSet<&str> = user.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["userId", "email", "displayName", "avatarUrl", "city", "role", "createdAt"])
    );
    assert!(is_id(&user["userId"], "usr_"), "{user}");
    assert_eq!(user["email"], "priya@example.com");
    assert_eq!(user["displayName"], "Priya", "stored trimmed");
    assert_eq!(user["avatarUrl"], "https://example.com/p.png");
    assert_eq!(user["city"], "bangalore");
    assert_eq!(user["role"], "citizen");
    assert!(is_timestamp(&user["createdAt"]), "{user}");

    let claims = app.verify(v["accessToken"].as_str().unwrap());
    assert_eq!(claims.sub, user["userId"].as_str().unwrap());
    assert_eq!(claims.name, "Priya");
    assert_eq!(claims.role, Role::Citizen);
    assert_eq!(claims.city.as_deref(), Some("bangalore"));
    assert_eq!(claims.typ, "access");
    assert_eq!(claims.exp - claims.iat, 15 * 60, "default access lifetime");

    let refresh = v["refreshToken"].as_str().unwrap();
    assert!(refresh.len() >= 43, "at least 256 bits: {refresh}");
    assert_ne!(refresh, v["accessToken"].as_str().unwrap());

    // Optional fields may be left out: city and avatar are then null.
    let (status, v) = app.post(
        "/api/auth/register",
        None,
        Some(json!({ "email": "bare@example.com", "password": "12345678", "displayName": "B" })),
    );
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["user"]["city"], Value::Null);
    assert_eq!(v["user"]["avatarUrl"], Value::Null);
    assert_eq!(app.verify(v["accessToken"].as_str().unwrap()).city, None);
}

fn register_email_is_lowercased_and_unique_case_insensitively(app: &TestApp) {
    let body = |email: &str| json!({ "email": email, "password": PASSWORD, "displayName": "Mixed" });
    let (status, v) = app.post("/api/auth/register", None, Some(body("  Mixed.Case@Example.COM ")));
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["user"]["email"], "mixed.case@example.com");

    for again in ["mixed.case@example.com", "MIXED.CASE@EXAMPLE.COM", "Mixed.Case@example.com"] {
        let res = app.post("/api/auth/register", None, Some(body(again)));
        assert_error(&res, StatusCode::CONFLICT, "email_taken");
    }
    // Login is case-insensitive too.
    let user = app.login("MIXED.case@example.COM", PASSWORD);
    assert_eq!(user.id, v["user"]["userId"].as_str().unwrap());

    // Racing registrations of one address: exactly one wins, the rest are 409.
    let statuses = concurrently(4, |i| {
        let email = if i % 2 == 0 { "race@example.com" } else { "RACE@example.com" };
        app.post("/api/auth/register", None, Some(body(email))).0
    });
    let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    let conflicts = statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count();
    assert_eq!((created, conflicts), (1, 3), "{statuses:?}");
}

fn register_validation_names_each_bad_field(app: &TestApp) {
    let ok = json!({ "email": "v@example.com", "password": "12345678", "displayName": "V", "city": "x" });
    let with = |field: &str, value: Value| {
        let mut body = ok.clone();
        body[field] = value;
        app.post("/api/auth/register", None, Some(body))
    };
    assert_invalid(&with("password", json!("1234567")), &["password"]);
    assert_invalid(&with("password", json!("x".repeat(129))), &["password"]);
    assert_invalid(&with("password", json!(12345678)), &["password"]);
    assert_invalid(&with("displayName", json!("")), &["displayName"]);
    assert_invalid(&with("displayName", json!("   ")), &["displayName"]);
    assert_invalid(&with("displayName", json!("n".repeat(65))), &["displayName"]);
    assert_invalid(&with("city", json!("New York")), &["city"]);
    assert_invalid(&with("city", json!("new_york")), &["city"]);
    assert_invalid(&with("city", json!("c".repeat(65))), &["city"]);
    assert_invalid(&with("email", json!("not-an-email")), &["email"]);
    assert_invalid(&with("email", json!("a b@example.com")), &["email"]);
    assert_invalid(&with("email", json!("a@b")), &["email"]);
    assert_invalid(&with("avatarUrl", json!("javascript:alert(1)")), &["avatarUrl"]);

    // Every problem at once, and every missing field.
    let res = app.post(
        "/api/auth/register",
        None,
        Some(json!({ "email": "nope", "password": "short", "displayName": " ", "city": "Bad City" })),
    );
    assert_invalid(&res, &["email", "password", "displayName", "city"]);
    assert_invalid(
        &app.post("/api/auth/register", None, Some(json!({}))),
        &["email", "password", "displayName"],
    );

    // Boundaries count characters, not bytes: 64 two-byte characters are fine.
    let (status, v) = with("displayName", json!("é".repeat(64)));
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = app.post(
        "/api/auth/register",
        None,
        Some(json!({ "email": "p@example.com", "password": "ü".repeat(128), "displayName": "P" })),
    );
    assert_eq!(status, StatusCode::CREATED, "128-character password: {v}");
}

fn register_always_makes_a_citizen(app: &TestApp) {
    let (status, v) = app.post(
        "/api/auth/register",
        None,
        Some(json!({ "email": "sneaky@example.com", "password": PASSWORD, "displayName": "S", "role": "admin" })),
    );
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["user"]["role"], "citizen");
    assert!(is_id(&v["user"]["userId"], "usr_"));
    assert_eq!(app.verify(v["accessToken"].as_str().unwrap()).role, Role::Citizen);
}

fn login_answers_200_and_401_for_bad_credentials(app: &TestApp) {
    let user = app.register("Lena");
    let (status, v) =
        app.post("/api/auth/login", None, Some(json!({ "email": user.email, "password": PASSWORD })));
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["user"]["userId"], user.id.as_str());
    assert_eq!(v["user"]["email"], user.email.as_str());
    assert_eq!(v["user"]["role"], "citizen");
    assert_eq!(app.verify(v["accessToken"].as_str().unwrap()).sub, user.id);
    assert_ne!(v["refreshToken"], user.refresh.as_str(), "each login has its own session");
    let (status, _) = app.get("/api/users/me", v["accessToken"].as_str());
    assert_eq!(status, StatusCode::OK);

    for (email, password) in [
        (user.email.as_str(), "wrong password"),
        (user.email.as_str(), "Correct Horse Battery"),
        (user.email.as_str(), " correct horse battery"),
        ("nobody@example.com", PASSWORD),
    ] {
        let res = app.post("/api/auth/login", None, Some(json!({ "email": email, "password": password })));
        let details = assert_error(&res, StatusCode::UNAUTHORIZED, "invalid_credentials");
        assert_eq!(details, Value::Null);
    }
    // The two failures must be indistinguishable.
    let wrong =
        app.post("/api/auth/login", None, Some(json!({ "email": user.email, "password": "nope-nope" })));
    let unknown =
        app.post("/api/auth/login", None, Some(json!({ "email": "x@example.com", "password": "nope-nope" })));
    assert_eq!(wrong, unknown);

    assert_invalid(&app.post("/api/auth/login", None, Some(json!({}))), &["email", "password"]);
    assert_invalid(
        &app.post("/api/auth/login", None, Some(json!({ "email": user.email, "password": 5 }))),
        &["password"],
    );
}

fn bad_access_tokens_are_401(app: &TestApp) {
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    let user = app.register("Tokened");
    let now = chrono::Utc::now().timestamp();
    let valid = app.claims_for(&user, Role::Citizen);
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());

    let other_secret = civicpulse::auth::TokenKeys::new(&[b'z'; 40], ACCESS_TTL).sign(&valid);
    let expired = app.mint(&civicpulse::auth::Claims { iat: now - 3600, exp: now - 60, ..valid.clone() });
    let wrong_typ = app.mint(&civicpulse::auth::Claims { typ: "refresh".into(), ..valid.clone() });
    let hs512 =
        jsonwebtoken::encode(&Header::new(Algorithm::HS512), &valid, &EncodingKey::from_secret(SECRET))
            .unwrap();
    let alg_none = format!(
        "{}.{}.",
        b64(json!({ "alg": "none", "typ": "JWT" })),
        b64(serde_json::to_value(&valid).unwrap())
    );
    let hs256 = |claims: Value| {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET))
            .unwrap()
    };
    let mut without_typ = serde_json::to_value(&valid).unwrap();
    without_typ.as_object_mut().unwrap().remove("typ");
    let mut without_exp = serde_json::to_value(&valid).unwrap();
    without_exp.as_object_mut().unwrap().remove("exp");
    let good = app.mint(&valid);
    let mut tampered = good.clone();
    // Flip one character of the payload.
    let dot = tampered.find('.').unwrap() + 5;
    let flipped = if &tampered[dot..=dot] == "A" { "B" } else { "A" };
    tampered.replace_range(dot..=dot, flipped);

    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("empty", Some(String::new())),
        ("malformed", Some("not-a-jwt".into())),
        ("three junk parts", Some("a.b.c".into())),
        ("forged with another secret", Some(other_secret)),
        ("expired", Some(expired)),
        ("typ refresh", Some(wrong_typ)),
        ("HS512", Some(hs512)),
        ("no typ", Some(hs256(without_typ))),
        ("no exp", Some(hs256(without_exp))),
        ("alg none", Some(alg_none)),
        ("tampered payload", Some(tampered)),
        ("a refresh token", Some(user.refresh.clone())),
    ];
    for (what, token) in &cases {
        for path in ["/api/users/me", "/api/issues"] {
            let res = app.get(path, token.as_deref());
            assert_eq!(res.0, StatusCode::UNAUTHORIZED, "{what} on {path}: {}", res.1);
            assert_error(&res, StatusCode::UNAUTHORIZED, "invalid_token");
        }
    }
    // Not a Bearer token at all.
    for header in [format!("Basic {}", user.token), user.token.clone(), format!("Bearer  {}x", user.token)] {
        let res = app
            .client()
            .get(app.url("/api/users/me"))
            .header("Authorization", header.clone())
            .send()
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{header}");
    }
    // The controls: a freshly minted token and the issued one both work.
    assert_eq!(app.get("/api/users/me", Some(&good)).0, StatusCode::OK);
    assert_eq!(app.get("/api/users/me", user.auth()).0, StatusCode::OK);
}

fn token_of_a_user_that_does_not_exist_is_401_everywhere(app: &TestApp) {
    let real = app.register("Real");
    let issue = app.issue_id(&real);
    let message = str_of(&app.post_message(&real, &issue, "hello")["messageId"]);
    let before = app.get(&format!("/api/issues/{issue}"), None).1;
    let ghost_user =
        TestUser { id: absent_id("usr_"), token: String::new(), refresh: String::new(), ..real.clone() };
    let ghost = app.mint(&app.claims_for(&ghost_user, Role::Citizen));
    let g = Some(ghost.as_str());

    assert_error(&app.get("/api/users/me", g), StatusCode::UNAUTHORIZED, "invalid_token");
    assert_error(
        &app.post("/api/issues", g, Some(json!({ "title": "Ghost", "category": "roads" }))),
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert_error(
        &app.patch(&format!("/api/issues/{issue}"), g, Some(json!({ "title": "Haunted" }))),
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert_error(
        &app.post(&format!("/api/issues/{issue}/upvote"), g, None),
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert_error(
        &app.post(&format!("/api/issues/{issue}/messages"), g, Some(json!({ "content": "boo" }))),
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    assert_error(
        &app.put(&format!("/api/messages/{message}/reactions/{}", pct("👍")), g, None),
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    // Nothing was written.
    let (_, v) = app.get(&format!("/api/issues/{issue}"), None);
    assert_eq!(v, before, "the issue is untouched");
    let (_, page) = app.get(&format!("/api/issues/{issue}/messages"), real.auth());
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["reactions"], json!({}));
    let (_, list) = app.get("/api/issues", real.auth());
    assert_eq!(ids_of(&list, "issueId"), [issue]);
}

fn refresh_rotates_the_pair(app: &TestApp) {
    let user = app.register("Rotator");
    let (status, v) = app.post("/api/auth/refresh", None, Some(json!({ "refreshToken": user.refresh })));
    assert_eq!(status, StatusCode::OK, "{v}");
    let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["accessToken", "refreshToken"]));
    let access = str_of(&v["accessToken"]);
    let refresh = str_of(&v["refreshToken"]);
    assert_ne!(refresh, user.refresh);
    assert_eq!(app.verify(&access).sub, user.id);
    let (status, me) = app.get("/api/users/me", Some(&access));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["userId"], user.id.as_str());

    // The new refresh token works in turn.
    let (status, v) = app.post("/api/auth/refresh", None, Some(json!({ "refreshToken": refresh })));
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_ne!(v["refreshToken"], refresh.as_str());

    // Unknown tokens are 401, missing ones 422.
    assert_error(
        &app.post("/api/auth/refresh", None, Some(json!({ "refreshToken": "never-issued" }))),
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    );
    assert_invalid(&app.post("/api/auth/refresh", None, Some(json!({}))), &["refreshToken"]);
    assert_invalid(
        &app.post("/api/auth/refresh", None, Some(json!({ "refreshToken": 7 }))),
        &["refreshToken"],
    );
    // An access token is not a refresh token.
    let res = app.post("/api/auth/refresh", None, Some(json!({ "refreshToken": user.token })));
    assert_eq!(res.0, StatusCode::UNAUTHORIZED, "{}", res.1);
}

fn refresh_reuse_revokes_every_session_of_the_user(app: &TestApp) {
    let victim = app.register("Victim");
    let bystander = app.register("Bystander");
    let other_session = app.login(&victim.email, PASSWORD);
    let refresh = |token: &str| app.post("/api/auth/refresh", None, Some(json!({ "refreshToken": token })));

    let (status, v) = refresh(&victim.refresh);
    assert_eq!(status, StatusCode::OK);
    let r1 = str_of(&v["refreshToken"]);
    let (status, v) = refresh(&r1);
    assert_eq!(status, StatusCode::OK);
    let r2 = str_of(&v["refreshToken"]);

    // The first token was rotated already: presenting it again is theft.
    let res = refresh(&victim.refresh);
    assert_eq!(res.0, StatusCode::UNAUTHORIZED, "{}", res.1);
    assert_eq!(res.1["error"]["code"], "refresh_token_reused");
    // Every refresh token of the user is dead now, the newest included.
    for token in [&r2, &other_session.refresh, &r1, &victim.refresh] {
        let res = refresh(token);
        assert_eq!(res.0, StatusCode::UNAUTHORIZED, "{}", res.1);
    }
    // A fresh login still works, and other users are untouched.
    let again = app.login(&victim.email, PASSWORD);
    assert_eq!(refresh(&again.refresh).0, StatusCode::OK);
    assert_eq!(refresh(&bystander.refresh).0, StatusCode::OK);
}

fn logout_revokes_the_token_and_is_idempotent(app: &TestApp) {
    let user = app.register("Leaver");
    let other_session = app.login(&user.email, PASSWORD);
    let res =
        app.send(Method::POST, "/api/auth/logout", None, Body::Json(json!({ "refreshToken": user.refresh })));
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text);
    assert_eq!(res.text, "");

    let again = app.post("/api/auth/refresh", None, Some(json!({ "refreshToken": user.refresh })));
    assert_error(&again, StatusCode::UNAUTHORIZED, "invalid_refresh_token");

    // Twice is fine, and so is a token that never existed.
    assert_eq!(
        app.post("/api/auth/logout", None, Some(json!({ "refreshToken": user.refresh }))).0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.post("/api/auth/logout", None, Some(json!({ "refreshToken": "unknown" }))).0,
        StatusCode::NO_CONTENT
    );
    assert_invalid(&app.post("/api/auth/logout", None, Some(json!({}))), &["refreshToken"]);

    // Logging out one session leaves the others alone.
    let (status, _) =
        app.post("/api/auth/refresh", None, Some(json!({ "refreshToken": other_session.refresh })));
    assert_eq!(status, StatusCode::OK);
}
