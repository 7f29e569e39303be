"""Scenarios run by tests/clients.rs against a live CivicPulse node with
python-socketio's ``socketio.Client``.

    CP_INPUT='{"url": "http://127.0.0.1:PORT", "users": {...}, ...}' \\
        tests/python/.venv/bin/python tests/python/scenarios.py <scenario>

CP_INPUT is the same JSON as for tests/js/scenarios.mjs (url, users
{alice, bob, carol, dave: {id, name, token, refresh}}, issueId, otherIssueId,
absentIssueId, badTokens). CP_TIMEOUT_MS bounds the whole run (default
20000). Exit code 0 means the scenario passed; otherwise the reason is on
stderr and the steps taken on stdout.
The plumbing shared with tests/python/realtime.py is tests/python/harness.py.
"""

import time

import socketio

from harness import INPUT, QUIET_S, Tracked, api, assert_error_ack, connect, log, run, unique

MESSAGE_KEYS = ["author", "content", "createdAt", "issueId", "messageId", "reactions"]
ISSUE_CREATED_KEYS = sorted(
    ["issueId", "title", "city", "category", "priority", "status", "upvotes", "reportedBy", "createdAt"]
)
ISSUE_UPDATED_KEYS = sorted(["issueId", "title", "status", "priority", "assignedTo", "updatedAt"])
ISSUE_UPVOTED_KEYS = sorted(["issueId", "upvotes", "upvotedBy", "upvoted"])


# ---- scenarios ----------------------------------------------------------------


def connect_websocket():
    alice, bob = INPUT["users"]["alice"], INPUT["users"]["bob"]
    t = connect("alice", alice, ["websocket"])
    assert t.sio.transport() == "websocket", t.sio.transport()
    assert t.sio.get_sid() is not None
    t.join(INPUT["issueId"])
    rest = api("POST", f"/api/issues/{INPUT['issueId']}/messages", bob["token"], {"content": unique("hi")}, 201)
    got = t.received("message:new", lambda p: p["messageId"] == rest["messageId"])
    assert got == rest, f"{got} != {rest}"
    time.sleep(QUIET_S)
    assert t.sio.connected and not t.disconnects, t.disconnects


def connect_polling():
    alice, bob = INPUT["users"]["alice"], INPUT["users"]["bob"]
    t = connect("alice", alice, ["polling"])
    assert t.sio.transport() == "polling", t.sio.transport()
    t.join(INPUT["issueId"])
    reply = t.call("message:send", {"issueId": INPUT["issueId"], "content": "over polling"})
    assert reply["ok"] is True, reply
    t.received("message:new", lambda p: p["messageId"] == reply["message"]["messageId"])
    issue = api("POST", "/api/issues", bob["token"], {"title": unique("Polling issue"), "category": "water"}, 201)
    t.received("issue:created", lambda p: p["issueId"] == issue["issueId"])
    time.sleep(QUIET_S)
    assert t.sio.transport() == "polling"
    assert t.sio.connected and not t.disconnects, t.disconnects


def auth_failures():
    alice = INPUT["users"]["alice"]
    bad = INPUT["badTokens"]
    cases = [
        ("no auth", None, ["websocket"]),
        ("not a JWT", "not-a-jwt", ["websocket"]),
        ("badly signed", bad["badlySigned"], ["websocket"]),
        ("expired", bad["expired"], ["websocket"]),
        ("wrong typ", bad["wrongTyp"], ["websocket"]),
        ("a refresh token", bad["refreshToken"], ["websocket"]),
        ("expired, over polling", bad["expired"], ["polling"]),
    ]
    for name, token, transports in cases:
        t = Tracked(name)
        try:
            t.connect(token, transports)
        except socketio.exceptions.ConnectionError as e:
            log(f"{name}: refused ({e}); connect_error {t.errors}")
        else:
            raise AssertionError(f"{name}: connected, but must be refused")
        assert t.errors == [{"message": "Authentication failed"}], f"{name}: connect_error {t.errors}"
        assert not t.sio.connected
    good = connect("alice", alice)
    good.join(INPUT["issueId"])


def acks():
    alice = INPUT["users"]["alice"]
    issue = INPUT["issueId"]
    t = connect("alice", alice)
    assert t.call("join:issue", issue) == {"ok": True}
    for what, arg in [
        ("an unknown well-formed id", INPUT["absentIssueId"]),
        ("a malformed id", "iss_nope"),
        ("a number", 42),
        ("an object", {"issueId": issue}),
    ]:
        assert_error_ack(t.call("join:issue", arg), "not_found", f"join:issue with {what}")
    assert t.call("leave:issue", issue) == {"ok": True}

    reply = t.call("message:send", {"issueId": issue, "content": "  Reported it.  "})
    assert reply["ok"] is True, reply
    message = reply["message"]
    assert sorted(message) == MESSAGE_KEYS, message
    assert message["content"] == "Reported it.", message
    assert message["issueId"] == issue and message["author"]["userId"] == alice["id"], message
    assert message["messageId"].startswith("msg_") and message["reactions"] == {}, message
    for what, payload in [
        ("empty content", {"issueId": issue, "content": ""}),
        ("2001 characters", {"issueId": issue, "content": "x" * 2001}),
        ("content a number", {"issueId": issue, "content": 7}),
        ("no issueId", {"content": "hello"}),
    ]:
        assert_error_ack(t.call("message:send", payload), "validation_failed", f"message:send with {what}")
    assert_error_ack(
        t.call("message:send", {"issueId": INPUT["absentIssueId"], "content": "hello"}),
        "not_found",
        "message:send to an unknown issue",
    )
    assert t.sio.connected and not t.disconnects


def rooms():
    users = INPUT["users"]
    issue = INPUT["issueId"]
    a = connect("alice (member, websocket)", users["alice"], ["websocket"])
    b = connect("bob (member, polling)", users["bob"], ["polling"])
    c = connect("carol (not a member)", users["carol"], ["websocket"])
    d = connect("dave (left)", users["dave"], ["websocket"])
    a.join(issue)
    b.join(issue)
    d.join(issue)
    assert d.call("leave:issue", issue) == {"ok": True}

    reply = a.call("message:send", {"issueId": issue, "content": unique("socket message")})
    assert reply["ok"] is True, reply
    rest = api("POST", f"/api/issues/{issue}/messages", users["carol"]["token"], {"content": unique("REST")}, 201)
    for m in (reply["message"], rest):
        for t in (a, b):
            got = t.received("message:new", lambda p, m=m: p["messageId"] == m["messageId"])
            assert got == m, f"{t.label}: {got} != {m}"
    time.sleep(QUIET_S)
    for m in (reply["message"], rest):
        for t in (a, b):
            n = len(t.events("message:new", lambda p, m=m: p["messageId"] == m["messageId"]))
            assert n == 1, f"{t.label} received {m['messageId']} {n} times"
    c.nothing("message:new", what="messages of a room it is not in")
    d.nothing("message:new", what="messages after leaving")


def global_events():
    users = INPUT["users"]
    clients = [
        connect("alice (websocket)", users["alice"], ["websocket"]),
        connect("bob (polling)", users["bob"], ["polling"]),
        connect("carol (default)", users["carol"], ["polling", "websocket"]),
    ]
    carol, bob = users["carol"], users["bob"]
    issue = api("POST", "/api/issues", carol["token"], {"title": unique("Pothole"), "category": "roads"}, 201)
    mine = lambda p: p["issueId"] == issue["issueId"]  # noqa: E731
    for t in clients:
        created = t.received("issue:created", mine)
        assert sorted(created) == ISSUE_CREATED_KEYS, created
        assert all(created[k] == issue[k] for k in ISSUE_CREATED_KEYS), f"{created} vs {issue}"

    patched = api("PATCH", f"/api/issues/{issue['issueId']}", carol["token"], {"title": unique("Deep pothole")}, 200)
    for t in clients:
        updated = t.received("issue:updated", mine)
        assert sorted(updated) == ISSUE_UPDATED_KEYS, updated
        assert all(updated[k] == patched[k] for k in ISSUE_UPDATED_KEYS), f"{updated} vs {patched}"

    api("POST", f"/api/issues/{issue['issueId']}/upvote", bob["token"], None, 200)
    for t in clients:
        upvoted = t.received("issue:upvoted", mine)
        assert sorted(upvoted) == ISSUE_UPVOTED_KEYS, upvoted
        assert upvoted == {"issueId": issue["issueId"], "upvotes": 1, "upvotedBy": bob["id"], "upvoted": True}, upvoted
    time.sleep(QUIET_S)
    for t in clients:
        for event in ("issue:created", "issue:updated", "issue:upvoted"):
            n = len(t.events(event, mine))
            assert n == 1, f"{t.label} received {event} {n} times; {t.dump()}"


SCENARIOS = {
    "connect-websocket": connect_websocket,
    "connect-polling": connect_polling,
    "auth-failures": auth_failures,
    "acks": acks,
    "rooms": rooms,
    "global-events": global_events,
}


if __name__ == "__main__":
    run(SCENARIOS)
