//! The Socket.IO Admin UI's own bundle against a three-node cluster behind
//! nginx (tests/browser/admin.mjs): it lists every node, every node's
//! sockets and their rooms, and a socket disconnected from the UI is
//! disconnected, whichever node holds it.

use std::time::Duration;

use serde_json::json;

use crate::common::binary;
use crate::common::clients::{self, user_json};
use crate::harness::{Cluster, Nginx};

#[test]
#[ignore = "needs Redis, nginx and Debian's chromium"]
fn admin_ui_bundle_shows_the_cluster_and_disconnects_a_socket() {
    clients::browser_ready();
    let ui_port = binary::free_port();
    let ui_origin = format!("http://127.0.0.1:{ui_port}");
    let cluster =
        Cluster::start_with(3, &[("ADMIN_UI_READONLY", "false"), ("CORS_ORIGINS", ui_origin.as_str())]);
    let urls = cluster.urls();
    let nginx = Nginx::start(&urls.iter().map(String::as_str).collect::<Vec<_>>());
    let admin = cluster.admin();
    let users = [cluster.register(0, "Alice"), cluster.register(1, "Bob"), cluster.register(2, "Carol")];
    let issue_id = cluster.issue_id(&users[0]);
    let input = json!({
        "url": nginx.url,
        "urls": urls,
        "uiPort": ui_port,
        "admin": { "email": admin.email, "password": admin.password },
        "users": { "alice": user_json(&users[0]), "bob": user_json(&users[1]), "carol": user_json(&users[2]) },
        "issueId": issue_id,
    });
    clients::browser("admin.mjs", "cluster", &input, Duration::from_secs(90));
}
