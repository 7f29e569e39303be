//! Issues: reporting, reading, editing, and listing them.

use std::collections::BTreeSet;

use crate::common::*;
use civicpulse::domain::Role;
use serde_json::{Value, json};

on_both_backends!(
    create_issue_applies_defaults,
    create_issue_takes_explicit_fields_trimmed,
    create_issue_needs_a_city,
    create_issue_validation_names_each_bad_field,
    get_issue_needs_no_token,
    get_issue_malformed_or_unknown_is_404,
    reporter_edits_title_and_description_while_open,
    reporter_cannot_change_staff_fields,
    other_citizens_cannot_edit,
    officials_change_status_priority_and_assignment,
    assigned_to_must_name_an_official_or_admin,
    reporter_cannot_edit_an_issue_no_longer_open,
    patch_issue_validation_and_missing_issues,
    list_needs_a_token,
    list_applies_every_filter,
    list_rejects_bad_filter_values,
    list_limit_bounds,
    list_rejects_bad_cursors,
    list_new_pages_never_repeat_or_skip_while_issues_are_inserted,
    list_top_orders_by_upvotes_then_newest,
    issues_created_back_to_back_list_in_creation_order,
);

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
