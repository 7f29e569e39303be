//! The REST API against API.md, end to end: a real node, real HTTP, a real
//! database. Every test is written once, taking a `&TestApp`, and runs on
//! both backends: `sqlite_<name>` always, `postgres_<name>` when asked for
//! with `--ignored` (CI has a PostgreSQL server).

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use civicpulse::domain::Role;
use civicpulse::domain::events::DomainEvent;
use common::*;
use serde_json::{Value, json};

/// Instantiates each test for both backends. The names are spelled out
/// (stable Rust cannot paste identifiers); a compile-time check keeps them
/// in step with the test they run.
macro_rules! on_both_backends {
    ($($test:ident => $sqlite:ident, $postgres:ident;)*) => {
        $(
            const _: () = assert!(
                same(stringify!($sqlite), concat!("sqlite_", stringify!($test)))
                    && same(stringify!($postgres), concat!("postgres_", stringify!($test))),
                "test names must be sqlite_<name> and postgres_<name>"
            );

            #[test]
            fn $sqlite() {
                $test(&TestApp::sqlite());
            }

            #[test]
            #[ignore = "needs PostgreSQL (TEST_DATABASE_URL or 127.0.0.1:5432); CI runs it"]
            fn $postgres() {
                $test(&TestApp::postgres());
            }
        )*
    };
}

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

on_both_backends! {
    register_answers_201_with_user_and_tokens => sqlite_register_answers_201_with_user_and_tokens, postgres_register_answers_201_with_user_and_tokens;
    register_email_is_lowercased_and_unique_case_insensitively => sqlite_register_email_is_lowercased_and_unique_case_insensitively, postgres_register_email_is_lowercased_and_unique_case_insensitively;
    register_validation_names_each_bad_field => sqlite_register_validation_names_each_bad_field, postgres_register_validation_names_each_bad_field;
    register_always_makes_a_citizen => sqlite_register_always_makes_a_citizen, postgres_register_always_makes_a_citizen;
    login_answers_200_and_401_for_bad_credentials => sqlite_login_answers_200_and_401_for_bad_credentials, postgres_login_answers_200_and_401_for_bad_credentials;
    users_me_returns_the_caller => sqlite_users_me_returns_the_caller, postgres_users_me_returns_the_caller;
    get_user_shows_email_only_to_self_and_admin => sqlite_get_user_shows_email_only_to_self_and_admin, postgres_get_user_shows_email_only_to_self_and_admin;
    get_user_unknown_or_malformed_is_404 => sqlite_get_user_unknown_or_malformed_is_404, postgres_get_user_unknown_or_malformed_is_404;
    set_role_is_admin_only_and_keeps_the_id_prefix => sqlite_set_role_is_admin_only_and_keeps_the_id_prefix, postgres_set_role_is_admin_only_and_keeps_the_id_prefix;
    set_role_validates_the_role => sqlite_set_role_validates_the_role, postgres_set_role_validates_the_role;
    permissions_follow_the_current_role_not_the_token => sqlite_permissions_follow_the_current_role_not_the_token, postgres_permissions_follow_the_current_role_not_the_token;
    bad_access_tokens_are_401 => sqlite_bad_access_tokens_are_401, postgres_bad_access_tokens_are_401;
    token_of_a_user_that_does_not_exist_is_401_everywhere => sqlite_token_of_a_user_that_does_not_exist_is_401_everywhere, postgres_token_of_a_user_that_does_not_exist_is_401_everywhere;
    refresh_rotates_the_pair => sqlite_refresh_rotates_the_pair, postgres_refresh_rotates_the_pair;
    refresh_reuse_revokes_every_session_of_the_user => sqlite_refresh_reuse_revokes_every_session_of_the_user, postgres_refresh_reuse_revokes_every_session_of_the_user;
    logout_revokes_the_token_and_is_idempotent => sqlite_logout_revokes_the_token_and_is_idempotent, postgres_logout_revokes_the_token_and_is_idempotent;
    create_issue_applies_defaults => sqlite_create_issue_applies_defaults, postgres_create_issue_applies_defaults;
    create_issue_takes_explicit_fields_trimmed => sqlite_create_issue_takes_explicit_fields_trimmed, postgres_create_issue_takes_explicit_fields_trimmed;
    create_issue_needs_a_city => sqlite_create_issue_needs_a_city, postgres_create_issue_needs_a_city;
    create_issue_validation_names_each_bad_field => sqlite_create_issue_validation_names_each_bad_field, postgres_create_issue_validation_names_each_bad_field;
    get_issue_needs_no_token => sqlite_get_issue_needs_no_token, postgres_get_issue_needs_no_token;
    get_issue_malformed_or_unknown_is_404 => sqlite_get_issue_malformed_or_unknown_is_404, postgres_get_issue_malformed_or_unknown_is_404;
    reporter_edits_title_and_description_while_open => sqlite_reporter_edits_title_and_description_while_open, postgres_reporter_edits_title_and_description_while_open;
    reporter_cannot_change_staff_fields => sqlite_reporter_cannot_change_staff_fields, postgres_reporter_cannot_change_staff_fields;
    other_citizens_cannot_edit => sqlite_other_citizens_cannot_edit, postgres_other_citizens_cannot_edit;
    officials_change_status_priority_and_assignment => sqlite_officials_change_status_priority_and_assignment, postgres_officials_change_status_priority_and_assignment;
    assigned_to_must_name_an_official_or_admin => sqlite_assigned_to_must_name_an_official_or_admin, postgres_assigned_to_must_name_an_official_or_admin;
    reporter_cannot_edit_an_issue_no_longer_open => sqlite_reporter_cannot_edit_an_issue_no_longer_open, postgres_reporter_cannot_edit_an_issue_no_longer_open;
    patch_issue_validation_and_missing_issues => sqlite_patch_issue_validation_and_missing_issues, postgres_patch_issue_validation_and_missing_issues;
    list_needs_a_token => sqlite_list_needs_a_token, postgres_list_needs_a_token;
    list_applies_every_filter => sqlite_list_applies_every_filter, postgres_list_applies_every_filter;
    list_rejects_bad_filter_values => sqlite_list_rejects_bad_filter_values, postgres_list_rejects_bad_filter_values;
    list_limit_bounds => sqlite_list_limit_bounds, postgres_list_limit_bounds;
    list_rejects_bad_cursors => sqlite_list_rejects_bad_cursors, postgres_list_rejects_bad_cursors;
    list_new_pages_never_repeat_or_skip_while_issues_are_inserted => sqlite_list_new_pages_never_repeat_or_skip_while_issues_are_inserted, postgres_list_new_pages_never_repeat_or_skip_while_issues_are_inserted;
    list_top_orders_by_upvotes_then_newest => sqlite_list_top_orders_by_upvotes_then_newest, postgres_list_top_orders_by_upvotes_then_newest;
    issues_created_back_to_back_list_in_creation_order => sqlite_issues_created_back_to_back_list_in_creation_order, postgres_issues_created_back_to_back_list_in_creation_order;
    upvote_and_withdraw => sqlite_upvote_and_withdraw, postgres_upvote_and_withdraw;
    upvote_unknown_or_malformed_issue_is_404 => sqlite_upvote_unknown_or_malformed_issue_is_404, postgres_upvote_unknown_or_malformed_issue_is_404;
    concurrent_upvotes_count_exactly => sqlite_concurrent_upvotes_count_exactly, postgres_concurrent_upvotes_count_exactly;
    upvote_events_only_when_the_count_changed => sqlite_upvote_events_only_when_the_count_changed, postgres_upvote_events_only_when_the_count_changed;
    post_message_answers_201 => sqlite_post_message_answers_201, postgres_post_message_answers_201;
    message_content_validation => sqlite_message_content_validation, postgres_message_content_validation;
    message_on_unknown_issue_is_404 => sqlite_message_on_unknown_issue_is_404, postgres_message_on_unknown_issue_is_404;
    concurrent_messages_each_get_their_own_outcome => sqlite_concurrent_messages_each_get_their_own_outcome, postgres_concurrent_messages_each_get_their_own_outcome;
    message_history_pages_back_without_overlap => sqlite_message_history_pages_back_without_overlap, postgres_message_history_pages_back_without_overlap;
    message_history_limit_and_before_bounds => sqlite_message_history_limit_and_before_bounds, postgres_message_history_limit_and_before_bounds;
    reactions_count_per_user_and_are_idempotent => sqlite_reactions_count_per_user_and_are_idempotent, postgres_reactions_count_per_user_and_are_idempotent;
    removing_reactions_lowers_counts_and_drops_zero => sqlite_removing_reactions_lowers_counts_and_drops_zero, postgres_removing_reactions_lowers_counts_and_drops_zero;
    reactions_reject_anything_but_one_emoji => sqlite_reactions_reject_anything_but_one_emoji, postgres_reactions_reject_anything_but_one_emoji;
    reaction_on_unknown_message_is_404 => sqlite_reaction_on_unknown_message_is_404, postgres_reaction_on_unknown_message_is_404;
    body_over_one_mib_is_413 => sqlite_body_over_one_mib_is_413, postgres_body_over_one_mib_is_413;
    malformed_json_is_400 => sqlite_malformed_json_is_400, postgres_malformed_json_is_400;
    non_object_json_bodies_are_refused_in_the_error_shape => sqlite_non_object_json_bodies_are_refused_in_the_error_shape, postgres_non_object_json_bodies_are_refused_in_the_error_shape;
    unknown_routes_are_404_in_the_error_shape => sqlite_unknown_routes_are_404_in_the_error_shape, postgres_unknown_routes_are_404_in_the_error_shape;
    wrong_method_is_405_with_allow => sqlite_wrong_method_is_405_with_allow, postgres_wrong_method_is_405_with_allow;
    hostile_inputs_never_answer_500 => sqlite_hostile_inputs_never_answer_500, postgres_hostile_inputs_never_answer_500;
    issue_created_event_carries_the_stored_issue => sqlite_issue_created_event_carries_the_stored_issue, postgres_issue_created_event_carries_the_stored_issue;
    issue_updated_event_only_for_notable_changes => sqlite_issue_updated_event_only_for_notable_changes, postgres_issue_updated_event_only_for_notable_changes;
    message_posted_event_carries_the_stored_message => sqlite_message_posted_event_carries_the_stored_message, postgres_message_posted_event_carries_the_stored_message;
    reaction_changed_event_only_when_counts_changed => sqlite_reaction_changed_event_only_when_counts_changed, postgres_reaction_changed_event_only_when_counts_changed;
    health_readiness_and_metrics => sqlite_health_readiness_and_metrics, postgres_health_readiness_and_metrics;
}

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

fn users_me_returns_the_caller(app: &TestApp) {
    let user = app.register("Meera");
    let (status, v) = app.get("/api/users/me", user.auth());
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["userId"], user.id.as_str());
    assert_eq!(v["email"], user.email.as_str());
    assert_eq!(v["displayName"], "Meera");
    assert_eq!(v["city"], CITY);
    assert_eq!(v["role"], "citizen");
    assert_eq!(v["avatarUrl"], Value::Null);
    assert!(is_timestamp(&v["createdAt"]));

    let official = app.staff(Role::Official);
    let (status, v) = app.get("/api/users/me", official.auth());
    assert_eq!(status, StatusCode::OK);
    assert!(is_id(&v["userId"], "off_"), "{v}");
    assert_eq!(v["role"], "official");

    assert_error(&app.get("/api/users/me", None), StatusCode::UNAUTHORIZED, "invalid_token");
}

fn get_user_shows_email_only_to_self_and_admin(app: &TestApp) {
    let alice = app.register("Alice");
    let bob = app.register("Bob");
    let official = app.staff(Role::Official);
    let admin = app.staff(Role::Admin);
    let path = format!("/api/users/{}", alice.id);

    let (status, own) = app.get(&path, alice.auth());
    assert_eq!(status, StatusCode::OK);
    assert_eq!(own["email"], alice.email.as_str());

    let (status, by_admin) = app.get(&path, admin.auth());
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_admin, own);

    for other in [&bob, &official] {
        let (status, public) = app.get(&path, other.auth());
        assert_eq!(status, StatusCode::OK);
        assert!(public.get("email").is_none(), "email leaked to {}: {public}", other.name);
        let mut expected = own.clone();
        expected.as_object_mut().unwrap().remove("email");
        assert_eq!(public, expected);
    }
    assert_error(&app.get(&path, None), StatusCode::UNAUTHORIZED, "invalid_token");
}

fn get_user_unknown_or_malformed_is_404(app: &TestApp) {
    let user = app.register("Finder");
    for id in [
        absent_id("usr_"),
        absent_id("off_"),
        "usr_123".into(),
        "iss_01HN5K7ZQ4X9J8W2V3B6C1D0EF".into(),
        user.id.to_lowercase(),
        "%20".into(),
        "x".repeat(300),
    ] {
        assert_error(&app.get(&format!("/api/users/{id}"), user.auth()), StatusCode::NOT_FOUND, "not_found");
    }
}

fn set_role_is_admin_only_and_keeps_the_id_prefix(app: &TestApp) {
    let citizen = app.register("Promotee");
    let other = app.register("Bystander");
    let official = app.staff(Role::Official);
    let admin = app.staff(Role::Admin);
    let path = format!("/api/users/{}", citizen.id);

    for caller in [&citizen, &other, &official] {
        let res = app.patch(&path, caller.auth(), Some(json!({ "role": "admin" })));
        assert_error(&res, StatusCode::FORBIDDEN, "forbidden");
    }
    assert_error(
        &app.patch(&path, None, Some(json!({ "role": "official" }))),
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    let (_, me) = app.get("/api/users/me", citizen.auth());
    assert_eq!(me["role"], "citizen", "refused changes change nothing");

    let (status, v) = app.patch(&path, admin.auth(), Some(json!({ "role": "official" })));
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["userId"], citizen.id.as_str(), "the id keeps its usr_ prefix");
    assert_eq!(v["role"], "official");
    assert_eq!(v["email"], citizen.email.as_str(), "admins see emails");
    let (_, me) = app.get("/api/users/me", citizen.auth());
    assert_eq!(me["role"], "official");
    assert_eq!(me["userId"], citizen.id.as_str());
    // The next access token carries the new role.
    let (status, pair) =
        app.post("/api/auth/refresh", None, Some(json!({ "refreshToken": citizen.refresh })));
    assert_eq!(status, StatusCode::OK, "{pair}");
    assert_eq!(app.verify(pair["accessToken"].as_str().unwrap()).role, Role::Official);

    // And the other way: an off_ user demoted keeps off_.
    let (status, v) =
        app.patch(&format!("/api/users/{}", official.id), admin.auth(), Some(json!({ "role": "citizen" })));
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["userId"], official.id.as_str());
    assert_eq!(v["role"], "citizen");

    assert_error(
        &app.patch(
            &format!("/api/users/{}", absent_id("usr_")),
            admin.auth(),
            Some(json!({ "role": "admin" })),
        ),
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &app.patch("/api/users/garbage", admin.auth(), Some(json!({ "role": "admin" }))),
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

fn set_role_validates_the_role(app: &TestApp) {
    let citizen = app.register("Target");
    let admin = app.staff(Role::Admin);
    let path = format!("/api/users/{}", citizen.id);
    for role in [json!("superuser"), json!("Admin"), json!(""), json!(1), json!(null)] {
        assert_invalid(&app.patch(&path, admin.auth(), Some(json!({ "role": role }))), &["role"]);
    }
    assert_invalid(&app.patch(&path, admin.auth(), Some(json!({}))), &["role"]);
    let (_, v) = app.get(&path, admin.auth());
    assert_eq!(v["role"], "citizen");
}

fn permissions_follow_the_current_role_not_the_token(app: &TestApp) {
    let reporter = app.register("Reporter");
    let riser = app.register("Riser");
    let faller = app.staff(Role::Official);
    let admin = app.staff(Role::Admin);
    let second_admin = app.staff(Role::Admin);
    let issue = app.issue_id(&reporter);
    let issue_path = format!("/api/issues/{issue}");

    // Promote the citizen; their old token still says citizen.
    assert_eq!(app.verify(&riser.token).role, Role::Citizen);
    let (status, _) =
        app.patch(&format!("/api/users/{}", riser.id), admin.auth(), Some(json!({ "role": "official" })));
    assert_eq!(status, StatusCode::OK);
    let (status, v) = app.patch(&issue_path, riser.auth(), Some(json!({ "status": "in_progress" })));
    assert_eq!(status, StatusCode::OK, "promoted with an old token: {v}");
    assert_eq!(v["status"], "in_progress");
    // A usr_ id whose current role is official is a valid assignee.
    let v = app.update_issue(&admin, &issue, json!({ "assignedTo": riser.id }));
    assert_eq!(v["assignedTo"], riser.id.as_str());

    // Demote the official; their old token still says official.
    let (status, _) =
        app.patch(&format!("/api/users/{}", faller.id), admin.auth(), Some(json!({ "role": "citizen" })));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.verify(&faller.token).role, Role::Official);
    assert_error(
        &app.patch(&issue_path, faller.auth(), Some(json!({ "status": "closed" }))),
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // An off_ id whose current role is citizen is not a valid assignee.
    assert_invalid(
        &app.patch(&issue_path, admin.auth(), Some(json!({ "assignedTo": faller.id }))),
        &["assignedTo"],
    );

    // A demoted admin loses admin powers at once.
    let (status, _) = app.patch(
        &format!("/api/users/{}", second_admin.id),
        admin.auth(),
        Some(json!({ "role": "citizen" })),
    );
    assert_eq!(status, StatusCode::OK);
    assert_error(
        &app.patch(
            &format!("/api/users/{}", reporter.id),
            second_admin.auth(),
            Some(json!({ "role": "admin" })),
        ),
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let (_, v) = app.get(&format!("/api/users/{}", reporter.id), second_admin.auth());
    assert!(v.get("email").is_none(), "a demoted admin no longer sees emails: {v}");

    // A correctly signed token that claims more than the user has.
    let boastful = app.mint(&app.claims_for(&reporter, Role::Admin));
    assert_error(
        &app.patch(&format!("/api/users/{}", reporter.id), Some(&boastful), Some(json!({ "role": "admin" }))),
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &app.patch(&issue_path, Some(&boastful), Some(json!({ "status": "closed" }))),
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let (_, v) = app.get(&issue_path, None);
    assert_eq!(v["status"], "in_progress");
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

// ---------------------------------------------------------------------------
// Issues
// ---------------------------------------------------------------------------

const ISSUE_KEYS: [&str; 12] = [
    "issueId",
    "title",
    "description",
    "city",
    "category",
    "priority",
    "status",
    "upvotes",
    "reportedBy",
    "assignedTo",
    "createdAt",
    "updatedAt",
];

fn create_issue_applies_defaults(app: &TestApp) {
    let user = app.register("Reporter");
    let (status, v) = app.post(
        "/api/issues",
        user.auth(),
        Some(json!({ "title": "Pothole on Main St", "category": "roads" })),
    );
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(ISSUE_KEYS));
    assert!(is_id(&v["issueId"], "iss_"), "{v}");
    assert_eq!(v["title"], "Pothole on Main St");
    assert_eq!(v["description"], "");
    assert_eq!(v["city"], CITY, "the reporter's city");
    assert_eq!(v["category"], "roads");
    assert_eq!(v["priority"], "medium");
    assert_eq!(v["status"], "open");
    assert_eq!(v["upvotes"], 0);
    assert_eq!(v["reportedBy"], user.id.as_str());
    assert_eq!(v["assignedTo"], Value::Null);
    assert!(is_timestamp(&v["createdAt"]));
    assert_eq!(v["createdAt"], v["updatedAt"]);

    assert_error(
        &app.post("/api/issues", None, Some(json!({ "title": "No token", "category": "roads" }))),
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
}

fn create_issue_takes_explicit_fields_trimmed(app: &TestApp) {
    let user = app.register("Explicit");
    let v = app.create_issue(
        &user,
        json!({
            "title": "   Streetlight out   ",
            "description": "  dark since Monday \n",
            "city": "shelbyville",
            "category": "electricity",
            "priority": "critical",
        }),
    );
    assert_eq!(v["title"], "Streetlight out");
    assert_eq!(v["description"], "dark since Monday");
    assert_eq!(v["city"], "shelbyville");
    assert_eq!(v["category"], "electricity");
    assert_eq!(v["priority"], "critical");
    assert_eq!(v["status"], "open");

    // Every category and priority of the contract is accepted.
    for category in [
        "infrastructure",
        "roads",
        "sanitation",
        "water",
        "electricity",
        "safety",
        "environment",
        "transport",
        "other",
    ] {
        assert_eq!(app.create_issue(&user, json!({ "category": category }))["category"], category);
    }
    for priority in ["low", "medium", "high", "critical"] {
        assert_eq!(app.create_issue(&user, json!({ "priority": priority }))["priority"], priority);
    }
    // Boundaries count characters: 200 and 5000 two-byte characters fit.
    let v = app.create_issue(&user, json!({ "title": "é".repeat(200), "description": "ü".repeat(5000) }));
    assert_eq!(v["title"].as_str().unwrap().chars().count(), 200);
    assert_eq!(v["description"].as_str().unwrap().chars().count(), 5000);
    // Status cannot be chosen at creation.
    assert_eq!(app.create_issue(&user, json!({ "status": "closed" }))["status"], "open");
}

fn create_issue_needs_a_city(app: &TestApp) {
    let nomad = app.register_in("Nomad", None);
    let res = app.post("/api/issues", nomad.auth(), Some(json!({ "title": "Where?", "category": "other" })));
    assert_invalid(&res, &["city"]);
    let res = app.post(
        "/api/issues",
        nomad.auth(),
        Some(json!({ "title": "Where?", "category": "other", "city": null })),
    );
    assert_invalid(&res, &["city"]);
    let v = app.create_issue(&nomad, json!({ "city": "ogdenville" }));
    assert_eq!(v["city"], "ogdenville");
    // A bad city is not replaced by the reporter's.
    let citizen = app.register("Settled");
    let res = app.post(
        "/api/issues",
        citizen.auth(),
        Some(json!({ "title": "Bad", "category": "other", "city": "Not A Slug" })),
    );
    assert_invalid(&res, &["city"]);
}

fn create_issue_validation_names_each_bad_field(app: &TestApp) {
    let user = app.register("Validator");
    let res = app.post(
        "/api/issues",
        user.auth(),
        Some(json!({ "title": "ab", "category": "potholes", "priority": "urgent" })),
    );
    assert_invalid(&res, &["title", "category", "priority"]);
    let post = |body: Value| app.post("/api/issues", user.auth(), Some(body));
    assert_invalid(&post(json!({ "category": "roads" })), &["title"]);
    assert_invalid(
        &post(json!({ "title": "   abc   ", "category": "roads", "priority": "HIGH" })),
        &["priority"],
    );
    assert_invalid(&post(json!({ "title": "  a  ", "category": "roads" })), &["title"]);
    assert_invalid(&post(json!({ "title": "x".repeat(201), "category": "roads" })), &["title"]);
    assert_invalid(&post(json!({ "title": 12345, "category": "roads" })), &["title"]);
    assert_invalid(&post(json!({ "title": "Fine", "category": "Roads" })), &["category"]);
    assert_invalid(&post(json!({ "title": "Fine" })), &["category"]);
    assert_invalid(
        &post(json!({ "title": "Fine", "category": "roads", "description": "d".repeat(5001) })),
        &["description"],
    );
    assert_invalid(
        &post(json!({ "title": "Fine", "category": "roads", "description": ["x"] })),
        &["description"],
    );
    let (_, list) = app.get("/api/issues", user.auth());
    assert_eq!(list["items"], json!([]), "nothing was stored");
}

fn get_issue_needs_no_token(app: &TestApp) {
    let user = app.register("Public");
    let created = app.create_issue(&user, json!({ "description": "visible to all" }));
    let path = format!("/api/issues/{}", created["issueId"].as_str().unwrap());
    let (status, v) = app.get(&path, None);
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v, created);
    let (status, v) = app.get(&path, user.auth());
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, created);
}

fn get_issue_malformed_or_unknown_is_404(app: &TestApp) {
    let user = app.register("Seeker");
    let real = app.issue_id(&user);
    for id in [
        absent_id("iss_"),
        "123".into(),
        "iss_".into(),
        real.to_lowercase(),
        real.replacen("iss_", "msg_", 1),
        user.id.clone(),
        "iss_81HN5K7ZQ4X9J8W2V3B6C1D0EF".into(),
        "%F0%9F%91%8D".into(),
        "'%20OR%201=1--".into(),
    ] {
        for token in [None, user.auth()] {
            assert_error(&app.get(&format!("/api/issues/{id}"), token), StatusCode::NOT_FOUND, "not_found");
        }
    }
}

fn reporter_edits_title_and_description_while_open(app: &TestApp) {
    let reporter = app.register("Editor");
    let created = app.create_issue(&reporter, json!({ "title": "Original", "description": "first" }));
    let id = str_of(&created["issueId"]);
    let v = app.update_issue(
        &reporter,
        &id,
        json!({ "title": "  Corrected title ", "description": " more detail " }),
    );
    assert_eq!(v["title"], "Corrected title");
    assert_eq!(v["description"], "more detail");
    assert_eq!(v["status"], "open");
    assert_eq!(v["createdAt"], created["createdAt"]);
    assert!(v["updatedAt"].as_str().unwrap() >= created["updatedAt"].as_str().unwrap());
    let (_, stored) = app.get(&format!("/api/issues/{id}"), None);
    assert_eq!(stored, v);

    let v = app.update_issue(&reporter, &id, json!({ "description": "" }));
    assert_eq!(v["description"], "", "a description may be cleared");
    assert_eq!(v["title"], "Corrected title");
}

fn reporter_cannot_change_staff_fields(app: &TestApp) {
    let reporter = app.register("Eager");
    let official = app.staff(Role::Official);
    let id = app.issue_id(&reporter);
    let path = format!("/api/issues/{id}");
    for body in [
        json!({ "status": "resolved" }),
        json!({ "priority": "critical" }),
        json!({ "assignedTo": official.id }),
        json!({ "title": "Sneaky", "status": "closed" }),
    ] {
        assert_error(&app.patch(&path, reporter.auth(), Some(body)), StatusCode::FORBIDDEN, "forbidden");
    }
    let (_, v) = app.get(&path, None);
    assert_eq!((v["status"].as_str(), v["priority"].as_str()), (Some("open"), Some("medium")));
    assert_ne!(v["title"], "Sneaky", "a refused PATCH changes nothing");
}

fn other_citizens_cannot_edit(app: &TestApp) {
    let reporter = app.register("Owner");
    let stranger = app.register("Stranger");
    let id = app.issue_id(&reporter);
    let path = format!("/api/issues/{id}");
    for body in
        [json!({ "title": "Hijacked" }), json!({ "description": "mine now" }), json!({ "status": "closed" })]
    {
        assert_error(&app.patch(&path, stranger.auth(), Some(body)), StatusCode::FORBIDDEN, "forbidden");
    }
    assert_error(
        &app.patch(&path, None, Some(json!({ "title": "Anonymous" }))),
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
    let (_, v) = app.get(&path, None);
    assert_ne!(v["title"], "Hijacked");
}

fn officials_change_status_priority_and_assignment(app: &TestApp) {
    let reporter = app.register("Citizen");
    let official = app.staff(Role::Official);
    let colleague = app.staff(Role::Official);
    let admin = app.staff(Role::Admin);
    let id = app.issue_id(&reporter);

    let v = app.update_issue(
        &official,
        &id,
        json!({ "status": "in_progress", "priority": "high", "assignedTo": official.id }),
    );
    assert_eq!(v["status"], "in_progress");
    assert_eq!(v["priority"], "high");
    assert_eq!(v["assignedTo"], official.id.as_str());
    assert_eq!(v["reportedBy"], reporter.id.as_str());

    let v = app.update_issue(&official, &id, json!({ "assignedTo": colleague.id }));
    assert_eq!(v["assignedTo"], colleague.id.as_str());
    let v = app.update_issue(&admin, &id, json!({ "assignedTo": admin.id, "status": "resolved" }));
    assert_eq!((v["assignedTo"].as_str(), v["status"].as_str()), (Some(admin.id.as_str()), Some("resolved")));
    // Officials may also edit the text, whatever the status.
    let v =
        app.update_issue(&colleague, &id, json!({ "title": "Retitled by staff", "description": "triaged" }));
    assert_eq!(v["title"], "Retitled by staff");
    // null unassigns.
    let v = app.update_issue(&official, &id, json!({ "assignedTo": null }));
    assert_eq!(v["assignedTo"], Value::Null);
    for status in ["open", "in_progress", "resolved", "closed"] {
        assert_eq!(app.update_issue(&official, &id, json!({ "status": status }))["status"], status);
    }
    let (_, stored) = app.get(&format!("/api/issues/{id}"), None);
    assert_eq!(stored["status"], "closed");
    assert_eq!(stored["assignedTo"], Value::Null);
    assert_eq!(stored["title"], "Retitled by staff");
}

fn assigned_to_must_name_an_official_or_admin(app: &TestApp) {
    let reporter = app.register("Reporter");
    let citizen = app.register("Helper");
    let official = app.staff(Role::Official);
    let id = app.issue_id(&reporter);
    let path = format!("/api/issues/{id}");
    let before = app.update_issue(&official, &id, json!({ "assignedTo": official.id }));
    for value in [
        json!(citizen.id),
        json!(reporter.id),
        json!("garbage"),
        json!(""),
        json!(absent_id("off_")),
        json!(absent_id("usr_")),
        json!(id),
        json!(42),
        json!({ "userId": official.id }),
    ] {
        let res = app.patch(&path, official.auth(), Some(json!({ "assignedTo": value })));
        assert_invalid(&res, &["assignedTo"]);
    }
    let (_, after) = app.get(&path, None);
    assert_eq!(after, before);
}

fn reporter_cannot_edit_an_issue_no_longer_open(app: &TestApp) {
    let reporter = app.register("Late");
    let official = app.staff(Role::Official);
    let id = app.issue_id(&reporter);
    app.update_issue(&official, &id, json!({ "status": "in_progress" }));
    let path = format!("/api/issues/{id}");
    assert_error(
        &app.patch(&path, reporter.auth(), Some(json!({ "title": "Too late" }))),
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &app.patch(&path, reporter.auth(), Some(json!({ "description": "x" }))),
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // Reopened, the reporter may edit again.
    app.update_issue(&official, &id, json!({ "status": "open" }));
    assert_eq!(app.update_issue(&reporter, &id, json!({ "title": "In time" }))["title"], "In time");
}

fn patch_issue_validation_and_missing_issues(app: &TestApp) {
    let reporter = app.register("Patcher");
    let official = app.staff(Role::Official);
    let id = app.issue_id(&reporter);
    let path = format!("/api/issues/{id}");
    assert_invalid(&app.patch(&path, official.auth(), Some(json!({ "status": "done" }))), &["status"]);
    assert_invalid(&app.patch(&path, official.auth(), Some(json!({ "priority": "urgent" }))), &["priority"]);
    assert_invalid(&app.patch(&path, reporter.auth(), Some(json!({ "title": "x" }))), &["title"]);
    assert_invalid(&app.patch(&path, reporter.auth(), Some(json!({ "title": null }))), &["title"]);
    assert_invalid(
        &app.patch(&path, reporter.auth(), Some(json!({ "description": "d".repeat(5001) }))),
        &["description"],
    );
    assert_invalid(
        &app.patch(&path, official.auth(), Some(json!({ "status": "x", "priority": "y", "title": "" }))),
        &["status", "priority", "title"],
    );
    for missing in [absent_id("iss_"), "nope".into()] {
        assert_error(
            &app.patch(
                &format!("/api/issues/{missing}"),
                official.auth(),
                Some(json!({ "status": "closed" })),
            ),
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
}

// ---------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------

fn list(app: &TestApp, user: &TestUser, query: &str) -> Value {
    let (status, v) = app.get(&format!("/api/issues?{query}"), user.auth());
    assert_eq!(status, StatusCode::OK, "?{query}: {v}");
    let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["items", "nextCursor"]), "{v}");
    v
}

fn list_ids(app: &TestApp, user: &TestUser, query: &str) -> Vec<String> {
    ids_of(&list(app, user, query), "issueId")
}

fn list_needs_a_token(app: &TestApp) {
    assert_error(&app.get("/api/issues", None), StatusCode::UNAUTHORIZED, "invalid_token");
    let user = app.register("Lister");
    let v = list(app, &user, "");
    assert_eq!(v, json!({ "items": [], "nextCursor": null }));
}

fn list_applies_every_filter(app: &TestApp) {
    let a = app.register_in("Ann", Some("springfield"));
    let b = app.register_in("Ben", Some("shelbyville"));
    let official = app.staff(Role::Official);
    let admin = app.staff(Role::Admin);
    let i1 = str_of(&app.create_issue(&a, json!({ "category": "roads", "priority": "low" }))["issueId"]);
    let i2 = str_of(&app.create_issue(&a, json!({ "category": "water", "priority": "high" }))["issueId"]);
    let i3 = str_of(&app.create_issue(&b, json!({ "category": "roads", "priority": "critical" }))["issueId"]);
    let i4 = str_of(&app.create_issue(&b, json!({ "category": "sanitation" }))["issueId"]);
    app.update_issue(&official, &i2, json!({ "status": "in_progress", "assignedTo": official.id }));
    app.update_issue(&admin, &i4, json!({ "status": "resolved", "assignedTo": admin.id }));

    let cases: Vec<(String, Vec<&String>)> = vec![
        (String::new(), vec![&i4, &i3, &i2, &i1]),
        ("city=springfield".into(), vec![&i2, &i1]),
        ("city=shelbyville".into(), vec![&i4, &i3]),
        ("city=ogdenville".into(), vec![]),
        ("category=roads".into(), vec![&i3, &i1]),
        ("category=sanitation".into(), vec![&i4]),
        ("category=other".into(), vec![]),
        ("status=open".into(), vec![&i3, &i1]),
        ("status=in_progress".into(), vec![&i2]),
        ("status=resolved".into(), vec![&i4]),
        ("status=closed".into(), vec![]),
        ("priority=low".into(), vec![&i1]),
        ("priority=medium".into(), vec![&i4]),
        ("priority=high".into(), vec![&i2]),
        ("priority=critical".into(), vec![&i3]),
        (format!("reportedBy={}", a.id), vec![&i2, &i1]),
        (format!("reportedBy={}", b.id), vec![&i4, &i3]),
        (format!("reportedBy={}", official.id), vec![]),
        (format!("assignedTo={}", official.id), vec![&i2]),
        (format!("assignedTo={}", admin.id), vec![&i4]),
        (format!("assignedTo={}", a.id), vec![]),
        ("city=shelbyville&category=roads".into(), vec![&i3]),
        (format!("city=springfield&status=open&reportedBy={}", a.id), vec![&i1]),
        ("sort=top&category=roads".into(), vec![&i3, &i1]),
    ];
    for (query, expected) in cases {
        let got = list_ids(app, &a, &query);
        let expected: Vec<String> = expected.into_iter().cloned().collect();
        assert_eq!(got, expected, "?{query}");
    }
    // Items are full issues.
    let v = list(app, &b, &format!("assignedTo={}", official.id));
    let (_, one) = app.get(&format!("/api/issues/{i2}"), None);
    assert_eq!(v["items"][0], one);
}

fn list_rejects_bad_filter_values(app: &TestApp) {
    let user = app.register("Filterer");
    app.issue_id(&user);
    for (query, field) in [
        ("city=New%20York", "city"),
        ("city=", "city"),
        ("category=potholes", "category"),
        ("status=done", "status"),
        ("priority=urgent", "priority"),
        ("reportedBy=bob", "reportedBy"),
        ("reportedBy=iss_01HN5K7ZQ4X9J8W2V3B6C1D0EF", "reportedBy"),
        ("assignedTo=someone", "assignedTo"),
        ("sort=old", "sort"),
    ] {
        assert_invalid(&app.get(&format!("/api/issues?{query}"), user.auth()), &[field]);
    }
    assert_invalid(
        &app.get("/api/issues?status=x&priority=y&limit=0", user.auth()),
        &["status", "priority", "limit"],
    );
}

fn list_limit_bounds(app: &TestApp) {
    let user = app.register("Limiter");
    for _ in 0..3 {
        app.issue_id(&user);
    }
    for bad in ["0", "101", "x", "-1", "1.5", "", "99999999999999999999"] {
        assert_invalid(&app.get(&format!("/api/issues?limit={bad}"), user.auth()), &["limit"]);
    }
    let v = list(app, &user, "limit=1");
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert!(v["nextCursor"].is_string());
    let v = list(app, &user, "limit=100");
    assert_eq!(v["items"].as_array().unwrap().len(), 3);
    assert_eq!(v["nextCursor"], Value::Null);
    let v = list(app, &user, "limit=3");
    assert_eq!(v["nextCursor"], Value::Null, "an exact fit has no next page");

    // The default page is 20.
    let mut created: Vec<String> = (0..18).map(|_| app.issue_id(&user)).collect();
    created.reverse();
    let v = list(app, &user, "");
    assert_eq!(v["items"].as_array().unwrap().len(), 20);
    assert_eq!(ids_of(&v, "issueId")[..18], created[..]);
    let rest = list(app, &user, &format!("cursor={}", str_of(&v["nextCursor"])));
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["nextCursor"], Value::Null);
}

fn list_rejects_bad_cursors(app: &TestApp) {
    use base64::Engine;
    let user = app.register("Cursed");
    for _ in 0..3 {
        app.issue_id(&user);
    }
    let new_cursor = str_of(&list(app, &user, "limit=1")["nextCursor"]);
    let top_cursor = str_of(&list(app, &user, "sort=top&limit=1")["nextCursor"]);
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    for (query, why) in [
        ("cursor=garbage".to_string(), "garbage"),
        ("cursor=%FF%FE".to_string(), "not base64"),
        (format!("cursor={}", b64("n:nope")), "bad id"),
        (format!("cursor={}", b64("t:x:iss_01HN5K7ZQ4X9J8W2V3B6C1D0EF")), "bad count"),
        (
            format!("cursor={}", b64("t:99999999999999999999:iss_01HN5K7ZQ4X9J8W2V3B6C1D0EF")),
            "count overflow",
        ),
        (format!("cursor={top_cursor}"), "a top cursor for sort=new"),
        (format!("sort=top&cursor={new_cursor}"), "a new cursor for sort=top"),
    ] {
        let res = app.get(&format!("/api/issues?{query}"), user.auth());
        assert_eq!(res.0, StatusCode::UNPROCESSABLE_ENTITY, "{why}: {}", res.1);
        assert_invalid(&res, &["cursor"]);
    }
    // The real cursors work.
    assert_eq!(
        list(app, &user, &format!("limit=1&cursor={new_cursor}"))["items"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        list(app, &user, &format!("sort=top&limit=1&cursor={top_cursor}"))["items"].as_array().unwrap().len(),
        1
    );
}

fn list_new_pages_never_repeat_or_skip_while_issues_are_inserted(app: &TestApp) {
    let user = app.register("Pager");
    let created: Vec<String> = (0..7).map(|_| app.issue_id(&user)).collect();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(c) => format!("sort=new&limit=3&cursor={c}"),
            None => "sort=new&limit=3".to_string(),
        };
        let page = list(app, &user, &query);
        seen.extend(ids_of(&page, "issueId"));
        pages += 1;
        // Someone reports a new issue between every two page reads.
        app.issue_id(&user);
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = created.iter().rev().cloned().collect();
    assert_eq!(seen, expected, "newest first, each issue exactly once");
}

fn list_top_orders_by_upvotes_then_newest(app: &TestApp) {
    let reporter = app.register("Topper");
    let voters: Vec<TestUser> = (0..2).map(|i| app.register(&format!("Voter{i}"))).collect();
    let t: Vec<String> = (0..5).map(|_| app.issue_id(&reporter)).collect();
    let votes = [2, 0, 2, 1, 0];
    for (issue, n) in t.iter().zip(votes) {
        for voter in &voters[..n] {
            let (status, _) = app.post(&format!("/api/issues/{issue}/upvote"), voter.auth(), None);
            assert_eq!(status, StatusCode::OK);
        }
    }
    let expected = vec![t[2].clone(), t[0].clone(), t[3].clone(), t[4].clone(), t[1].clone()];
    let page = list(app, &reporter, "sort=top");
    assert_eq!(ids_of(&page, "issueId"), expected);
    let counts: Vec<i64> =
        page["items"].as_array().unwrap().iter().map(|i| i["upvotes"].as_i64().unwrap()).collect();
    assert_eq!(counts, [2, 2, 1, 0, 0]);

    // The same order across pages.
    let mut seen = Vec::new();
    let mut query = "sort=top&limit=2".to_string();
    loop {
        let page = list(app, &reporter, &query);
        seen.extend(ids_of(&page, "issueId"));
        match page["nextCursor"].as_str() {
            Some(c) => query = format!("sort=top&limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    // Default sort is new.
    assert_eq!(list_ids(app, &reporter, ""), t.iter().rev().cloned().collect::<Vec<_>>());
}

fn issues_created_back_to_back_list_in_creation_order(app: &TestApp) {
    let user = app.register("Rapid");
    let token = user.token.clone();
    let client = app.client();
    let base = app.url("");
    // As fast as one client can go: several land within one millisecond.
    let created: Vec<String> = (0..15)
        .map(|i| {
            let res = send(
                &client,
                &base,
                Method::POST,
                "/api/issues",
                Some(&token),
                Body::Json(json!({ "title": format!("Rapid {i}"), "category": "other" })),
            );
            assert_eq!(res.status, StatusCode::CREATED);
            str_of(&res.json["issueId"])
        })
        .collect();
    let listed = list_ids(app, &user, "limit=100");
    assert_eq!(listed, created.iter().rev().cloned().collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------
// Upvotes
// ---------------------------------------------------------------------------

fn upvote_and_withdraw(app: &TestApp) {
    let reporter = app.register("Reporter");
    let fan = app.register("Fan");
    let other = app.register("Other");
    let id = app.issue_id(&reporter);
    let path = format!("/api/issues/{id}/upvote");
    let state = |n: i64, upvoted: bool| json!({ "issueId": id, "upvotes": n, "upvoted": upvoted });

    assert_eq!(app.post(&path, fan.auth(), None), (StatusCode::OK, state(1, true)));
    assert_eq!(app.post(&path, fan.auth(), None), (StatusCode::OK, state(1, true)), "repeat is a no-op");
    assert_eq!(app.post(&path, other.auth(), None), (StatusCode::OK, state(2, true)));
    assert_eq!(app.post(&path, reporter.auth(), None), (StatusCode::OK, state(3, true)));
    assert_eq!(app.get(&format!("/api/issues/{id}"), None).1["upvotes"], 3);

    assert_eq!(app.delete(&path, fan.auth(), None), (StatusCode::OK, state(2, false)));
    assert_eq!(app.delete(&path, fan.auth(), None), (StatusCode::OK, state(2, false)), "withdrawing twice");
    let stranger = app.register("Stranger");
    assert_eq!(app.delete(&path, stranger.auth(), None), (StatusCode::OK, state(2, false)), "never upvoted");
    assert_eq!(
        app.post(&path, fan.auth(), None),
        (StatusCode::OK, state(3, true)),
        "upvote again after withdrawing"
    );
    assert_eq!(app.get(&format!("/api/issues/{id}"), None).1["upvotes"], 3);

    assert_error(&app.post(&path, None, None), StatusCode::UNAUTHORIZED, "invalid_token");
    assert_error(&app.delete(&path, None, None), StatusCode::UNAUTHORIZED, "invalid_token");
}

fn upvote_unknown_or_malformed_issue_is_404(app: &TestApp) {
    let user = app.register("Voter");
    for id in [absent_id("iss_"), "bogus".into(), user.id.clone()] {
        let path = format!("/api/issues/{id}/upvote");
        assert_error(&app.post(&path, user.auth(), None), StatusCode::NOT_FOUND, "not_found");
        assert_error(&app.delete(&path, user.auth(), None), StatusCode::NOT_FOUND, "not_found");
    }
    assert!(app.events().is_empty());
}

fn concurrent_upvotes_count_exactly(app: &TestApp) {
    const VOTERS: usize = 50;
    let reporter = app.register("Popular");
    let id = app.issue_id(&reporter);
    let path = format!("/api/issues/{id}/upvote");

    // 50 registered users (registered two at a time: Argon2 is slow).
    let tokens: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|half| {
                s.spawn(move || {
                    (0..VOTERS / 2)
                        .map(|i| {
                            let client = app.client();
                            let body = json!({
                                "email": format!("voter-{half}-{i}@example.com"),
                                "password": PASSWORD,
                                "displayName": format!("Voter {half}-{i}"),
                            });
                            let res = send(
                                &client,
                                &app.url(""),
                                Method::POST,
                                "/api/auth/register",
                                None,
                                Body::Json(body),
                            );
                            assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
                            str_of(&res.json["accessToken"])
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(tokens.len(), VOTERS);
    app.take_events();

    let storm = |method: Method, tokens: &[String]| -> Vec<Value> {
        let barrier = Arc::new(Barrier::new(tokens.len()));
        let base = app.url("");
        let handles: Vec<_> = tokens
            .iter()
            .map(|token| {
                let (client, base, path, token, barrier, method) = (
                    app.client(),
                    base.clone(),
                    path.clone(),
                    token.clone(),
                    barrier.clone(),
                    method.clone(),
                );
                std::thread::spawn(move || {
                    barrier.wait();
                    let res = send(&client, &base, method, &path, Some(&token), Body::Empty);
                    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
                    res.json
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("upvoter thread")).collect()
    };

    let answers = storm(Method::POST, &tokens);
    let mut counts: Vec<i64> = answers.iter().map(|a| a["upvotes"].as_i64().unwrap()).collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=VOTERS as i64).collect::<Vec<_>>(), "each upvote saw its own count");
    assert!(answers.iter().all(|a| a["upvoted"] == true && a["issueId"] == id.as_str()));
    assert_eq!(app.get(&format!("/api/issues/{id}"), None).1["upvotes"], VOTERS);
    let events = app.take_events();
    assert_eq!(events.len(), VOTERS, "one event per counted upvote");

    // The same user many times at once counts once.
    let same: Vec<String> = vec![tokens[0].clone(); 10];
    let answers = storm(Method::DELETE, &same);
    assert!(answers.iter().all(|a| a["upvoted"] == false));
    assert_eq!(app.get(&format!("/api/issues/{id}"), None).1["upvotes"], VOTERS - 1);
    let answers = storm(Method::POST, &same);
    assert!(answers.iter().all(|a| a["upvotes"] == VOTERS));
    assert_eq!(app.get(&format!("/api/issues/{id}"), None).1["upvotes"], VOTERS);
    assert_eq!(app.take_events().len(), 2, "one withdrawal and one upvote changed the count");

    // And all of them withdraw at once.
    storm(Method::DELETE, &tokens);
    assert_eq!(app.get(&format!("/api/issues/{id}"), None).1["upvotes"], 0);
}

fn upvote_events_only_when_the_count_changed(app: &TestApp) {
    let reporter = app.register("Reporter");
    let fan = app.register("Fan");
    let id = app.issue_id(&reporter);
    let path = format!("/api/issues/{id}/upvote");
    app.take_events();

    app.post(&path, fan.auth(), None);
    app.post(&path, fan.auth(), None);
    app.delete(&path, fan.auth(), None);
    app.delete(&path, fan.auth(), None);
    app.delete(&path, reporter.auth(), None);
    app.post(&path, reporter.auth(), None);

    let recorded = app.take_events();
    let seen: Vec<(i64, String, bool)> = recorded
        .iter()
        .map(|r| match &r.event {
            DomainEvent::IssueUpvoted(up) => {
                assert_eq!(up.issue_id, id);
                assert_eq!(
                    r.stored,
                    json!({ "upvotes": up.upvotes, "upvoted": up.upvoted }),
                    "published after the write"
                );
                (up.upvotes, up.upvoted_by.clone(), up.upvoted)
            }
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(seen, [(1, fan.id.clone(), true), (0, fan.id.clone(), false), (1, reporter.id.clone(), true)]);
}

// ---------------------------------------------------------------------------
// Messages and reactions
// ---------------------------------------------------------------------------

fn post_message_answers_201(app: &TestApp) {
    let reporter = app.register("Reporter");
    let (status, v) = app.post(
        "/api/auth/register",
        None,
        Some(json!({ "email": "chatty@example.com", "password": PASSWORD, "displayName": "Chatty", "avatarUrl": "https://example.com/c.png" })),
    );
    assert_eq!(status, StatusCode::CREATED);
    let chatty_id = str_of(&v["user"]["userId"]);
    let chatty_token = str_of(&v["accessToken"]);
    let issue = app.issue_id(&reporter);

    let (status, m) = app.post(
        &format!("/api/issues/{issue}/messages"),
        Some(&chatty_token),
        Some(json!({ "content": "  Same here, since Monday.  " })),
    );
    assert_eq!(status, StatusCode::CREATED, "{m}");
    let keys: BTreeSet<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["messageId", "issueId", "content", "author", "reactions", "createdAt"]));
    assert!(is_id(&m["messageId"], "msg_"), "{m}");
    assert_eq!(m["issueId"], issue.as_str());
    assert_eq!(m["content"], "Same here, since Monday.");
    assert_eq!(
        m["author"],
        json!({ "userId": chatty_id, "displayName": "Chatty", "avatarUrl": "https://example.com/c.png" })
    );
    assert_eq!(m["reactions"], json!({}));
    assert!(is_timestamp(&m["createdAt"]));

    let (status, page) = app.get(&format!("/api/issues/{issue}/messages"), reporter.auth());
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page, json!({ "items": [m], "nextCursor": null }));

    assert_error(
        &app.post(&format!("/api/issues/{issue}/messages"), None, Some(json!({ "content": "anon" }))),
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    );
}

fn message_content_validation(app: &TestApp) {
    let user = app.register("Writer");
    let issue = app.issue_id(&user);
    let path = format!("/api/issues/{issue}/messages");
    for content in
        [json!(""), json!("   \n\t "), json!("x".repeat(2001)), json!(5), json!(null), json!(["hi"])]
    {
        assert_invalid(&app.post(&path, user.auth(), Some(json!({ "content": content }))), &["content"]);
    }
    assert_invalid(&app.post(&path, user.auth(), Some(json!({}))), &["content"]);
    // 2000 characters (emoji are one each) fit, padding is trimmed first.
    let long = format!("  {}  ", "🎉".repeat(2000));
    let m = app.post_message(&user, &issue, &long);
    assert_eq!(m["content"].as_str().unwrap().chars().count(), 2000);
    let (_, page) = app.get(&path, user.auth());
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "only the valid message was stored");
}

fn message_on_unknown_issue_is_404(app: &TestApp) {
    let user = app.register("Lost");
    for id in [absent_id("iss_"), "nope".into()] {
        let path = format!("/api/issues/{id}/messages");
        assert_error(
            &app.post(&path, user.auth(), Some(json!({ "content": "hello?" }))),
            StatusCode::NOT_FOUND,
            "not_found",
        );
        assert_error(&app.get(&path, user.auth()), StatusCode::NOT_FOUND, "not_found");
    }
}

/// Messages are stored in batches by one writer: a batch that mixes good
/// messages with refused ones must store exactly the good ones, answer each
/// request with its own outcome and publish only what was stored.
fn concurrent_messages_each_get_their_own_outcome(app: &TestApp) {
    let user = app.register("Busy");
    let issue = app.issue_id(&user);
    // A valid token for a user that does not exist (a database reset under
    // a long-lived secret).
    let ghost = TestUser { id: absent_id("usr_"), ..user.clone() };
    let ghost_token = app.mint(&app.claims_for(&ghost, Role::Citizen));
    let missing_issue = absent_id("iss_");
    app.take_events();
    let outcomes = concurrently(30, |i| {
        let (token, target) = match i % 3 {
            0 => (user.token.as_str(), issue.as_str()),
            1 => (user.token.as_str(), missing_issue.as_str()),
            _ => (ghost_token.as_str(), issue.as_str()),
        };
        let path = format!("/api/issues/{target}/messages");
        (i, app.post(&path, Some(token), Some(json!({ "content": format!("m{i}") }))))
    });
    let mut stored = Vec::new();
    for (i, res) in &outcomes {
        match i % 3 {
            0 => {
                assert_eq!(res.0, StatusCode::CREATED, "{}", res.1);
                assert_eq!(res.1["content"], format!("m{i}"));
                assert_eq!(res.1["author"]["userId"], user.id);
                stored.push(str_of(&res.1["messageId"]));
            }
            1 => drop(assert_error(res, StatusCode::NOT_FOUND, "not_found")),
            _ => drop(assert_error(res, StatusCode::UNAUTHORIZED, "invalid_token")),
        }
    }
    stored.sort();
    let (status, page) = app.get(&format!("/api/issues/{issue}/messages?limit=100"), user.auth());
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        ids_of(&page, "messageId"),
        stored,
        "history holds exactly the accepted messages, in id order"
    );
    let mut published: Vec<String> = app
        .events()
        .into_iter()
        .map(|e| match e {
            DomainEvent::MessagePosted(m) => m.message_id,
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    published.sort();
    assert_eq!(published, stored);
}

fn message_history_pages_back_without_overlap(app: &TestApp) {
    let a = app.register("Alpha");
    let b = app.register("Beta");
    let issue = app.issue_id(&a);
    let other_issue = app.issue_id(&a);
    app.post_message(&a, &other_issue, "elsewhere");
    let posted: Vec<String> = (0..7)
        .map(|i| {
            let author = if i % 2 == 0 { &a } else { &b };
            str_of(&app.post_message(author, &issue, &format!("message {i}"))["messageId"])
        })
        .collect();
    let path = format!("/api/issues/{issue}/messages");

    let (status, all) = app.get(&path, a.auth());
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids_of(&all, "messageId"), posted, "oldest first, this issue only");
    assert_eq!(all["nextCursor"], Value::Null);
    let contents: Vec<&str> =
        all["items"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, (0..7).map(|i| format!("message {i}")).collect::<Vec<_>>());
    assert_eq!(all["items"][1]["author"]["userId"], b.id.as_str());

    let mut pages = Vec::new();
    let mut query = "limit=3".to_string();
    loop {
        let (status, page) = app.get(&format!("{path}?{query}"), a.auth());
        assert_eq!(status, StatusCode::OK, "{page}");
        let ids = ids_of(&page, "messageId");
        pages.push(ids.clone());
        match page["nextCursor"].as_str() {
            Some(cursor) => {
                assert_eq!(cursor, ids[0], "the cursor is the oldest message of the page");
                query = format!("limit=3&before={cursor}");
            }
            None => break,
        }
        // New messages arriving meanwhile do not disturb paging back.
        app.post_message(&b, &issue, "late");
        assert!(pages.len() < 10);
    }
    assert_eq!(pages, [posted[4..7].to_vec(), posted[1..4].to_vec(), posted[0..1].to_vec()]);
}

fn message_history_limit_and_before_bounds(app: &TestApp) {
    let user = app.register("Bounded");
    let issue = app.issue_id(&user);
    for i in 0..3 {
        app.post_message(&user, &issue, &format!("m{i}"));
    }
    let path = format!("/api/issues/{issue}/messages");
    for bad in ["0", "101", "x", "-5", ""] {
        assert_invalid(&app.get(&format!("{path}?limit={bad}"), user.auth()), &["limit"]);
    }
    for bad in ["nope", "iss_01HN5K7ZQ4X9J8W2V3B6C1D0EF"] {
        assert_invalid(&app.get(&format!("{path}?before={bad}"), user.auth()), &["before"]);
    }
    let (_, v) = app.get(&format!("{path}?limit=1"), user.auth());
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["content"], "m2");
    let (_, v) = app.get(&format!("{path}?limit=100"), user.auth());
    assert_eq!(v["items"].as_array().unwrap().len(), 3);
    assert_eq!(v["nextCursor"], Value::Null);
    // A well-formed cursor older than everything gives an empty last page.
    let (status, v) = app.get(&format!("{path}?before={}", absent_id("msg_")), user.auth());
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({ "items": [], "nextCursor": null }));

    // The default page is 50: the newest 50, oldest first.
    let mut contents: Vec<String> = (0..3).map(|i| format!("m{i}")).collect();
    for i in 3..52 {
        contents.push(app.post_message(&user, &issue, &format!("m{i}"))["content"].as_str().unwrap().into());
    }
    let (_, v) = app.get(&path, user.auth());
    let got: Vec<&str> =
        v["items"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(got, contents[2..]);
    assert_eq!(v["nextCursor"], v["items"][0]["messageId"]);
}

fn reaction_path(message: &str, emoji: &str) -> String {
    format!("/api/messages/{message}/reactions/{}", pct(emoji))
}

fn reactions_count_per_user_and_are_idempotent(app: &TestApp) {
    let a = app.register("Ann");
    let b = app.register("Bo");
    let issue = app.issue_id(&a);
    let message = str_of(&app.post_message(&a, &issue, "react to me")["messageId"]);
    let answer = |reactions: Value| json!({ "messageId": message, "issueId": issue, "reactions": reactions });

    let thumbs = reaction_path(&message, "👍");
    assert_eq!(app.put(&thumbs, a.auth(), None), (StatusCode::OK, answer(json!({ "👍": 1 }))));
    assert_eq!(app.put(&thumbs, a.auth(), None), (StatusCode::OK, answer(json!({ "👍": 1 }))), "idempotent");
    assert_eq!(app.put(&thumbs, b.auth(), None), (StatusCode::OK, answer(json!({ "👍": 2 }))));
    let toned = app.put(&reaction_path(&message, "👍🏽"), b.auth(), None);
    assert_eq!(toned, (StatusCode::OK, answer(json!({ "👍": 2, "👍🏽": 1 }))));
    let heart = app.put(&reaction_path(&message, "❤️"), a.auth(), None);
    assert_eq!(heart, (StatusCode::OK, answer(json!({ "👍": 2, "👍🏽": 1, "❤️": 1 }))));
    // Unencoded UTF-8 in the path means the same.
    let raw = app.put(&format!("/api/messages/{message}/reactions/🎉"), a.auth(), None);
    assert_eq!(raw.0, StatusCode::OK, "{}", raw.1);
    assert_eq!(raw.1["reactions"]["🎉"], 1);

    let (_, page) = app.get(&format!("/api/issues/{issue}/messages"), a.auth());
    assert_eq!(page["items"][0]["reactions"], raw.1["reactions"], "history carries the counts");
    assert_eq!(page["items"][0]["reactions"]["👍"], 2);

    // Racing reactions: each user still counts once per emoji.
    let party = reaction_path(&message, "🥳");
    let answers = concurrently(8, |i| {
        let user = if i % 2 == 0 { &a } else { &b };
        app.put(&party, user.auth(), None)
    });
    assert!(answers.iter().all(|(status, _)| *status == StatusCode::OK), "{answers:?}");
    let (_, page) = app.get(&format!("/api/issues/{issue}/messages"), a.auth());
    assert_eq!(page["items"][0]["reactions"]["🥳"], 2);
    assert_error(&app.put(&thumbs, None, None), StatusCode::UNAUTHORIZED, "invalid_token");
}

fn removing_reactions_lowers_counts_and_drops_zero(app: &TestApp) {
    let a = app.register("Ann");
    let b = app.register("Bo");
    let issue = app.issue_id(&a);
    let message = str_of(&app.post_message(&a, &issue, "hello")["messageId"]);
    let thumbs = reaction_path(&message, "👍");
    let heart = reaction_path(&message, "❤️");
    app.put(&thumbs, a.auth(), None);
    app.put(&thumbs, b.auth(), None);
    app.put(&heart, b.auth(), None);

    let (status, v) = app.delete(&thumbs, a.auth(), None);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({ "messageId": message, "issueId": issue, "reactions": { "👍": 1, "❤️": 1 } }));
    let (_, v) = app.delete(&thumbs, a.auth(), None);
    assert_eq!(v["reactions"], json!({ "👍": 1, "❤️": 1 }), "removing twice changes nothing");
    let (_, v) = app.delete(&thumbs, b.auth(), None);
    assert_eq!(v["reactions"], json!({ "❤️": 1 }), "zero disappears");
    assert!(v["reactions"].get("👍").is_none());
    let (_, v) = app.delete(&heart, b.auth(), None);
    assert_eq!(v["reactions"], json!({}));
    let (status, v) = app.delete(&heart, a.auth(), None);
    assert_eq!((status, v["reactions"].clone()), (StatusCode::OK, json!({})), "never reacted");
    let (_, page) = app.get(&format!("/api/issues/{issue}/messages"), a.auth());
    assert_eq!(page["items"][0]["reactions"], json!({}));
}

fn reactions_reject_anything_but_one_emoji(app: &TestApp) {
    let user = app.register("Picky");
    let issue = app.issue_id(&user);
    let message = str_of(&app.post_message(&user, &issue, "hi")["messageId"]);
    for bad in ["a", "ok", "1", "42", "©", "❤", "👍👍", "👍 ", " ", "%", "<script>", "👍a"] {
        let path = reaction_path(&message, bad);
        assert_invalid(&app.put(&path, user.auth(), None), &["emoji"]);
        assert_invalid(&app.delete(&path, user.auth(), None), &["emoji"]);
    }
    let (_, page) = app.get(&format!("/api/issues/{issue}/messages"), user.auth());
    assert_eq!(page["items"][0]["reactions"], json!({}));
    assert!(!app.events().iter().any(|e| matches!(e, DomainEvent::ReactionChanged(_))));
}

fn reaction_on_unknown_message_is_404(app: &TestApp) {
    let user = app.register("Nobody");
    for message in [absent_id("msg_"), "nope".into(), absent_id("iss_")] {
        let path = reaction_path(&message, "👍");
        assert_error(&app.put(&path, user.auth(), None), StatusCode::NOT_FOUND, "not_found");
        assert_error(&app.delete(&path, user.auth(), None), StatusCode::NOT_FOUND, "not_found");
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

const MIB: usize = 1024 * 1024;

fn body_over_one_mib_is_413(app: &TestApp) {
    let user = app.register("Bulky");
    let issue = app.issue_id(&user);
    let path = format!("/api/issues/{issue}/messages");
    // Valid JSON, just too big.
    let big = format!("{{\"content\": \"{}\"}}", "x".repeat(MIB));
    for body in [Body::Raw(big.clone().into_bytes()), Body::Chunked(big.clone().into_bytes())] {
        let res = app.send(Method::POST, &path, user.auth(), body);
        assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", res.text);
        assert_error(&(res.status, res.json), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    }
    let res = app.send(Method::POST, "/api/auth/register", None, Body::Raw(big.into_bytes()));
    assert_error(&(res.status, res.json), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // Exactly 1 MiB is within the limit: it is parsed and validated.
    let head = "{\"content\": \"hi\"}";
    let exact = format!("{head}{}", " ".repeat(MIB - head.len()));
    assert_eq!(exact.len(), MIB);
    let res = app.send(Method::POST, &path, user.auth(), Body::Raw(exact.into_bytes()));
    assert_eq!(res.status, StatusCode::CREATED, "{}", res.text);
    // The server still answers normally afterwards.
    assert_eq!(app.get("/healthz", None).0, StatusCode::OK);
}

fn malformed_json_is_400(app: &TestApp) {
    let user = app.register("Sloppy");
    let issue = app.issue_id(&user);
    let routes = [
        (Method::POST, "/api/auth/register".to_string(), None),
        (Method::POST, "/api/auth/login".to_string(), None),
        (Method::POST, "/api/auth/refresh".to_string(), None),
        (Method::POST, "/api/auth/logout".to_string(), None),
        (Method::POST, "/api/issues".to_string(), user.auth()),
        (Method::PATCH, format!("/api/issues/{issue}"), user.auth()),
        (Method::POST, format!("/api/issues/{issue}/messages"), user.auth()),
    ];
    for (method, path, token) in routes {
        for bad in [
            "{\"email\":",
            "{'single': 'quotes'}",
            "{\"a\": 1,}",
            "nul",
            "\u{feff}{}",
            "{\"a\":\"\\x\"}",
            "\u{1}",
        ] {
            let res = app.raw(method.clone(), &path, token, bad);
            assert_eq!(res.status, StatusCode::BAD_REQUEST, "{method} {path} {bad:?}: {}", res.text);
            assert_eq!(res.json["error"]["code"], "malformed_json", "{}", res.text);
        }
        let res = app.raw(method.clone(), &path, token, vec![0xff, 0xfe, b'{', b'}']);
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "invalid UTF-8: {}", res.text);
        // No body at all.
        let res = app.send(method.clone(), &path, token, Body::Empty);
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{method} {path} without a body: {}", res.text);
    }
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let res = app.raw(Method::POST, "/api/auth/login", None, deep);
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.text);
}

fn non_object_json_bodies_are_refused_in_the_error_shape(app: &TestApp) {
    let user = app.register("Listy");
    let issue = app.issue_id(&user);
    let before = app.get(&format!("/api/issues/{issue}"), None).1;
    let routes = [
        (Method::POST, "/api/auth/register".to_string(), None),
        (Method::POST, "/api/auth/login".to_string(), None),
        (Method::POST, "/api/auth/refresh".to_string(), None),
        (Method::POST, "/api/auth/logout".to_string(), None),
        (Method::POST, "/api/issues".to_string(), user.auth()),
        (Method::PATCH, format!("/api/issues/{issue}"), user.auth()),
        (Method::PATCH, format!("/api/users/{}", user.id), user.auth()),
        (Method::POST, format!("/api/issues/{issue}/messages"), user.auth()),
    ];
    for (method, path, token) in routes {
        for body in
            [json!([1, 2]), json!("text"), json!(42), json!(null), json!(true), json!([{ "content": "x" }])]
        {
            let res = app.send(method.clone(), &path, token, Body::Json(body.clone()));
            assert!(res.status.is_client_error(), "{method} {path} {body}: {}", res.text);
            assert!(
                [StatusCode::BAD_REQUEST, StatusCode::UNPROCESSABLE_ENTITY].contains(&res.status),
                "{method} {path} {body}: {}",
                res.status
            );
        }
    }
    let (_, v) = app.get(&format!("/api/issues/{issue}"), None);
    assert_eq!(v, before, "the issue is untouched");
    let (_, me) = app.get("/api/users/me", user.auth());
    assert_eq!(me["role"], "citizen");
}

fn unknown_routes_are_404_in_the_error_shape(app: &TestApp) {
    let user = app.register("Wanderer");
    for (method, path) in [
        (Method::GET, "/"),
        (Method::GET, "/api"),
        (Method::GET, "/api/nope"),
        (Method::POST, "/api/nope"),
        (Method::GET, "/api/issues/x/y/z"),
        (Method::DELETE, "/api/users"),
        (Method::GET, "/api/messages"),
        (Method::GET, "/nope.php"),
        (Method::GET, "/api/issues//messages"),
    ] {
        let res = app.send(method.clone(), path, user.auth(), Body::Empty);
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{method} {path}: {}", res.text);
        assert_eq!(res.json["error"]["code"], "not_found");
    }
}

fn wrong_method_is_405_with_allow(app: &TestApp) {
    let user = app.register("Confused");
    let issue = app.issue_id(&user);
    let message = str_of(&app.post_message(&user, &issue, "hi")["messageId"]);
    let cases = [
        (Method::DELETE, "/api/issues".to_string(), vec!["GET", "POST"]),
        (Method::GET, "/api/auth/login".to_string(), vec!["POST"]),
        (Method::PUT, "/api/auth/register".to_string(), vec!["POST"]),
        (Method::POST, "/api/users/me".to_string(), vec!["GET"]),
        (Method::DELETE, format!("/api/users/{}", user.id), vec!["GET", "PATCH"]),
        (Method::PUT, format!("/api/issues/{issue}"), vec!["GET", "PATCH"]),
        (Method::GET, format!("/api/issues/{issue}/upvote"), vec!["POST", "DELETE"]),
        (Method::DELETE, format!("/api/issues/{issue}/messages"), vec!["GET", "POST"]),
        (Method::POST, reaction_path(&message, "👍"), vec!["PUT", "DELETE"]),
        (Method::POST, "/healthz".to_string(), vec!["GET"]),
        (Method::DELETE, "/metrics".to_string(), vec!["GET"]),
    ];
    for (method, path, allowed) in cases {
        let res = app.send(method.clone(), &path, user.auth(), Body::Empty);
        assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {}", res.text);
        assert_eq!(res.json["error"]["code"], "method_not_allowed");
        let allow = res.headers.get("allow").unwrap_or_else(|| panic!("{method} {path}: no Allow header"));
        let listed: BTreeSet<&str> = allow.to_str().unwrap().split(',').map(str::trim).collect();
        assert_eq!(listed, allowed.into_iter().collect(), "{method} {path}");
    }
}

fn hostile_inputs_never_answer_500(app: &TestApp) {
    // `send` fails the test on any 5xx; here the inputs are simply thrown at
    // the API, and each answer must also be a sensible 2xx/4xx.
    let user = app.register("Mallory");
    let official = app.staff(Role::Official);
    let issue = app.issue_id(&user);
    let message = str_of(&app.post_message(&user, &issue, "hi")["messageId"]);
    let nul = "bad\u{0}value";
    let expect_4xx = |res: (StatusCode, Value), what: &str| {
        assert!(res.0.is_client_error(), "{what}: {} {}", res.0, res.1);
    };

    // NUL characters in every text field (PostgreSQL cannot store them).
    expect_4xx(
        app.post(
            "/api/auth/register",
            None,
            Some(json!({ "email": "nul\u{0}@example.com", "password": PASSWORD, "displayName": "N" })),
        ),
        "NUL in email",
    );
    expect_4xx(
        app.post(
            "/api/auth/register",
            None,
            Some(json!({ "email": "nul2@example.com", "password": PASSWORD, "displayName": nul })),
        ),
        "NUL in displayName",
    );
    expect_4xx(
        app.post(
            "/api/auth/login",
            None,
            Some(json!({ "email": "a\u{0}@example.com", "password": PASSWORD })),
        ),
        "NUL in login email",
    );
    expect_4xx(
        app.post("/api/issues", user.auth(), Some(json!({ "title": nul, "category": "roads" }))),
        "NUL in title",
    );
    expect_4xx(
        app.post(
            "/api/issues",
            user.auth(),
            Some(json!({ "title": "Fine", "description": nul, "category": "roads" })),
        ),
        "NUL in description",
    );
    expect_4xx(
        app.patch(&format!("/api/issues/{issue}"), user.auth(), Some(json!({ "title": nul }))),
        "NUL in PATCH title",
    );
    expect_4xx(
        app.post(&format!("/api/issues/{issue}/messages"), user.auth(), Some(json!({ "content": nul }))),
        "NUL in content",
    );
    expect_4xx(app.get("/api/issues?city=a%00b", user.auth()), "NUL in a filter");
    expect_4xx(app.get(&format!("/api/issues/{issue}%00"), None), "NUL in an id");
    expect_4xx(
        app.put(&format!("/api/messages/{message}/reactions/%F0%9F%91%8D%00"), user.auth(), None),
        "NUL after an emoji",
    );
    // A password may contain anything: it is only hashed.
    let (status, _) = app.post(
        "/api/auth/register",
        None,
        Some(json!({ "email": "nulpw@example.com", "password": "pass\u{0}word", "displayName": "P" })),
    );
    assert_eq!(status, StatusCode::CREATED);
    expect_4xx(
        app.post("/api/auth/refresh", None, Some(json!({ "refreshToken": nul }))),
        "NUL refresh token",
    );
    expect_4xx(app.post("/api/auth/logout", None, Some(json!({ "refreshToken": nul }))), "NUL logout token");

    // Broken percent-encoding and odd bytes in paths and queries.
    for path in [
        "/api/issues/%FF%FE".to_string(),
        "/api/users/%FF".to_string(),
        format!("/api/messages/{message}/reactions/%FF"),
        format!("/api/messages/{message}/reactions/%F0%9F"),
        format!("/api/messages/{message}/reactions/%ZZ"),
        "/api/issues?limit=%FF".to_string(),
        "/api/issues?cursor=%00".to_string(),
        "/api/issues?sort=%E2%80%AE".to_string(),
        format!("/api/issues?reportedBy={}", "u".repeat(5000)),
        format!("/api/issues/{issue}/messages?before=%FF&limit=%00"),
    ] {
        for method in [Method::GET, Method::PUT] {
            let res = app.send(method.clone(), &path, user.auth(), Body::Empty);
            assert!(
                res.status.is_client_error() || res.status.is_success(),
                "{method} {path}: {}",
                res.status
            );
        }
    }
    // Numbers, types and sizes nobody expects.
    for body in [
        json!({ "title": "Big", "category": "roads", "priority": 1e308 }),
        json!({ "title": { "nested": true }, "category": "roads" }),
        json!({ "title": "Huge", "category": "roads", "description": "d".repeat(900_000) }),
        json!({ "title": "Big", "category": "roads", "city": "a".repeat(10_000) }),
    ] {
        expect_4xx(app.post("/api/issues", user.auth(), Some(body)), "odd issue body");
    }
    for body in [
        json!({ "status": ["open"] }),
        json!({ "priority": 18446744073709551615u64 }),
        json!({ "assignedTo": "\u{0}" }),
        json!({ "assignedTo": format!("off_{}", "Z".repeat(10_000)) }),
    ] {
        expect_4xx(app.patch(&format!("/api/issues/{issue}"), official.auth(), Some(body)), "odd PATCH body");
    }
    expect_4xx(
        app.post("/api/auth/login", None, Some(json!({ "email": "e".repeat(100_000), "password": "p" }))),
        "huge email",
    );
    expect_4xx(
        app.post(
            "/api/auth/login",
            None,
            Some(json!({ "email": "a@b.co", "password": "p".repeat(100_000) })),
        ),
        "huge password",
    );
    // Odd headers.
    let res = app
        .client()
        .get(app.url("/api/users/me"))
        .header("Authorization", reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap())
        .send()
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app.get("/api/users/me", Some(&"a".repeat(10_000)));
    assert_eq!(res.0, StatusCode::UNAUTHORIZED);

    // Nothing odd was stored.
    let (_, list) = app.get("/api/issues?limit=100", user.auth());
    assert_eq!(ids_of(&list, "issueId"), std::slice::from_ref(&issue));
    let (_, v) = app.get(&format!("/api/issues/{issue}/messages"), user.auth());
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

fn issue_created_event_carries_the_stored_issue(app: &TestApp) {
    let user = app.register("Announcer");
    app.take_events();
    let created = app.create_issue(&user, json!({ "title": " Flooded underpass ", "priority": "critical" }));
    let recorded = app.take_events();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let DomainEvent::IssueCreated(issue) = &recorded[0].event else { panic!("{:?}", recorded[0].event) };
    let as_json = serde_json::to_value(issue).unwrap();
    assert_eq!(as_json, created, "the event carries what the client got");
    assert_eq!(recorded[0].stored, created, "and it was stored before it was published");
    assert_eq!(issue.title, "Flooded underpass");

    // A refused create publishes nothing.
    app.post("/api/issues", user.auth(), Some(json!({ "title": "x", "category": "roads" })));
    assert!(app.events().is_empty());
}

fn issue_updated_event_only_for_notable_changes(app: &TestApp) {
    let reporter = app.register("Reporter");
    let official = app.staff(Role::Official);
    let id = app.issue_id(&reporter);
    app.take_events();

    let notable = |who: &TestUser, body: Value| {
        let answered = app.update_issue(who, &id, body.clone());
        let recorded = app.take_events();
        assert_eq!(recorded.len(), 1, "{body} should publish once: {recorded:?}");
        let DomainEvent::IssueUpdated(issue) = &recorded[0].event else { panic!("{:?}", recorded[0].event) };
        assert_eq!(serde_json::to_value(issue).unwrap(), answered, "{body}");
        assert_eq!(recorded[0].stored, answered, "{body}: published after the write");
        answered
    };
    let quiet = |who: &TestUser, body: Value| {
        let before = app.get(&format!("/api/issues/{id}"), None).1;
        let answered = app.update_issue(who, &id, body.clone());
        assert!(app.take_events().is_empty(), "{body} should not publish");
        (before, answered)
    };

    notable(&reporter, json!({ "title": "New title" }));
    let (before, after) = quiet(&reporter, json!({ "description": "only the description" }));
    assert_eq!(after["description"], "only the description");
    assert_ne!(before["description"], after["description"]);
    let (before, after) = quiet(&reporter, json!({ "title": "New title" }));
    assert_eq!(before, after, "a no-op changes nothing, not even updatedAt");
    let (before, after) = quiet(&reporter, json!({}));
    assert_eq!(before, after);
    let (before, after) =
        quiet(&official, json!({ "status": "open", "priority": "medium", "assignedTo": null }));
    assert_eq!(before, after);

    assert_eq!(notable(&official, json!({ "status": "in_progress" }))["status"], "in_progress");
    assert_eq!(notable(&official, json!({ "priority": "high" }))["priority"], "high");
    assert_eq!(notable(&official, json!({ "assignedTo": official.id }))["assignedTo"], official.id.as_str());
    assert_eq!(notable(&official, json!({ "assignedTo": null }))["assignedTo"], Value::Null);
    notable(&official, json!({ "title": "Staff title", "description": "and text" }));
    let (_, after) = quiet(&official, json!({ "description": "staff text only" }));
    assert_eq!(after["description"], "staff text only");

    // A refused PATCH publishes nothing.
    app.patch(&format!("/api/issues/{id}"), reporter.auth(), Some(json!({ "status": "closed" })));
    assert!(app.events().is_empty());
}

fn message_posted_event_carries_the_stored_message(app: &TestApp) {
    let user = app.register("Poster");
    let issue = app.issue_id(&user);
    app.take_events();
    let m = app.post_message(&user, &issue, "  first!  ");
    let recorded = app.take_events();
    assert_eq!(recorded.len(), 1);
    let DomainEvent::MessagePosted(message) = &recorded[0].event else { panic!("{:?}", recorded[0].event) };
    assert_eq!(serde_json::to_value(message).unwrap(), m);
    assert_eq!(
        recorded[0].stored,
        json!({
            "messageId": m["messageId"], "issueId": issue, "authorId": user.id,
            "content": "first!", "createdAt": m["createdAt"],
        })
    );
    app.post(&format!("/api/issues/{issue}/messages"), user.auth(), Some(json!({ "content": " " })));
    app.post(
        &format!("/api/issues/{}/messages", absent_id("iss_")),
        user.auth(),
        Some(json!({ "content": "x" })),
    );
    assert!(app.events().is_empty());
}

fn reaction_changed_event_only_when_counts_changed(app: &TestApp) {
    let a = app.register("Ann");
    let b = app.register("Bo");
    let issue = app.issue_id(&a);
    let message = str_of(&app.post_message(&a, &issue, "hello")["messageId"]);
    let thumbs = reaction_path(&message, "👍");
    app.take_events();

    let step = |res: (StatusCode, Value), publishes: bool| {
        assert_eq!(res.0, StatusCode::OK, "{}", res.1);
        let recorded = app.take_events();
        if !publishes {
            assert!(recorded.is_empty(), "{recorded:?}");
            return;
        }
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        let DomainEvent::ReactionChanged(counts) = &recorded[0].event else {
            panic!("{:?}", recorded[0].event)
        };
        assert_eq!(serde_json::to_value(counts).unwrap(), res.1);
        assert_eq!(Value::Object(counts.reactions.clone()), recorded[0].stored, "published after the write");
    };
    step(app.put(&thumbs, a.auth(), None), true);
    step(app.put(&thumbs, a.auth(), None), false);
    step(app.put(&thumbs, b.auth(), None), true);
    step(app.put(&reaction_path(&message, "❤️"), b.auth(), None), true);
    step(app.delete(&thumbs, a.auth(), None), true);
    step(app.delete(&thumbs, a.auth(), None), false);
    step(app.delete(&reaction_path(&message, "🎉"), a.auth(), None), false);
}

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

fn health_readiness_and_metrics(app: &TestApp) {
    assert_eq!(app.get("/healthz", None), (StatusCode::OK, json!({ "status": "ok" })));
    let (status, _) = app.get("/readyz", None);
    assert_eq!(status, StatusCode::OK);

    let user = app.register("Measured");
    app.issue_id(&user);
    app.get("/api/nope", None);
    let res = app.send(Method::GET, "/metrics", None, Body::Empty);
    assert_eq!(res.status, StatusCode::OK);
    let content_type = res.headers.get("content-type").unwrap().to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    for line in [
        "# TYPE civicpulse_http_requests_total counter",
        "civicpulse_http_requests_total{route=\"/healthz\",status=\"200\"} 1",
        "civicpulse_http_requests_total{route=\"/api/auth/register\",status=\"201\"} 1",
        "civicpulse_http_requests_total{route=\"/api/issues\",status=\"201\"} 1",
        "civicpulse_events_emitted_total{event=\"issue:created\"} 1",
    ] {
        assert!(res.text.lines().any(|l| l == line), "missing {line:?} in:\n{}", res.text);
    }
    assert!(res.text.contains("civicpulse_http_requests_total{route=\""), "{}", res.text);
    assert!(res.text.contains("status=\"404\"}"), "unmatched routes are counted too:\n{}", res.text);
}
