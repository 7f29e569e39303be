//! The Socket.IO Admin UI's protocol on `/admin`, on one node, driven by
//! the official client as the UI drives it (tests/js/admin.mjs): only
//! admins get in, read-only refuses every action, and with
//! `ADMIN_UI_READONLY=false` the actions act. The UI's own bundle against a
//! cluster is tests/cluster (`admin_ui_*`).

mod common;

use civicpulse::domain::Role;
use common::TestApp;
use common::clients::{self, user_json};
use serde_json::{Value, json};

/// A node with two citizens, an admin and two issues, and their JSON.
fn fixture(app: &TestApp) -> Value {
    let alice = app.register("Alice");
    let bob = app.register("Bob");
    let admin = app.staff(Role::Admin);
    let mut input = clients::input(app, &[("alice", &alice), ("bob", &bob)]);
    input["admin"] = user_json(&admin);
    input["admin"]["email"] = json!(admin.email);
    input["admin"]["password"] = json!(admin.password);
    input["citizenLogin"] = json!({ "email": alice.email, "password": alice.password });
    input
}

#[test]
fn admin_ui_refuses_all_but_admins() {
    let app = TestApp::sqlite();
    clients::js("admin.mjs", "refused", &fixture(&app));
}

#[test]
fn admin_ui_watches_and_refuses_actions_by_default() {
    let app = TestApp::sqlite();
    clients::js("admin.mjs", "readonly", &fixture(&app));
}

#[test]
fn admin_ui_actions_act_when_allowed() {
    let app = TestApp::builder().env("ADMIN_UI_READONLY", "false").sqlite();
    clients::js("admin.mjs", "actions", &fixture(&app));
}

#[test]
fn admin_ui_sign_in_is_rate_limited_per_address() {
    let app = TestApp::builder().env("AUTH_RATE_PER_MINUTE", 5).sqlite();
    let mut input = fixture(&app);
    // The fixture's two registrations and one login spent three of them.
    input["authRate"] = json!(2);
    clients::js("admin.mjs", "rate-limited", &input);
}

#[test]
fn admin_ui_off_is_an_unknown_namespace() {
    let app = TestApp::builder().env("ADMIN_UI", "false").sqlite();
    let input = fixture(&app);
    clients::js("admin.mjs", "off", &input);
}
