//! Users: the caller, other users, roles and permissions.

use crate::common::*;
use civicpulse::domain::Role;
use serde_json::{Value, json};

on_both_backends!(
    users_me_returns_the_caller,
    get_user_shows_email_only_to_self_and_admin,
    get_user_unknown_or_malformed_is_404,
    set_role_is_admin_only_and_keeps_the_id_prefix,
    set_role_validates_the_role,
    permissions_follow_the_current_role_not_the_token,
);

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
