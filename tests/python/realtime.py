"""Realtime scenarios run by tests/realtime.rs with python-socketio: typing,
presence, room messages and reactions, as a second, independent client next
to the official JavaScript one (tests/js/realtime.mjs).

    CP_INPUT='{"url": "http://127.0.0.1:PORT", "users": {...}, ...}' \\
        tests/python/.venv/bin/python tests/python/realtime.py <scenario>

CP_INPUT is the JSON tests/js/realtime.mjs takes (url, users {alice, bob,
carol, dave, erin: {id, name, token, refresh, city}}, official, issueId,
otherIssueId, absentIssueId). The plumbing (clients that record what they
receive, REST calls, the time limit) is tests/python/harness.py's.
"""

import time
import urllib.parse

from harness import INPUT, QUIET_S, api, assert_error_ack, connect, run, unique

TYPING_KEYS = ["displayName", "isTyping", "issueId", "userId"]
PRESENCE_UPDATE_KEYS = ["city", "displayName", "online", "userId"]
PRESENCE_ITEM_KEYS = ["city", "displayName", "userId"]
REACTION_KEYS = ["issueId", "messageId", "reactions"]


def round_trip(*clients):
    """Everything the server sent these clients before answering has arrived."""
    for t in clients:
        reply = t.call("presence:list", {})
        assert reply["ok"] is True, f"{t.label} presence:list: {reply}"
    time.sleep(QUIET_S)


def exactly(t, event, pred, want, what):
    got = t.events(event, pred)
    assert got == want, f"{t.label}: {what}: got {got}, want {want}; {t.dump()}"


def typing_presence():
    users = INPUT["users"]
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    issue = INPUT["issueId"]

    def typing_state(user, is_typing):
        return {"issueId": issue, "userId": user["id"], "displayName": user["name"], "isTyping": is_typing}

    def presence(user, online):
        return {"userId": user["id"], "displayName": user["name"], "online": online, "city": user["city"]}

    def about(user):
        return lambda p: p["userId"] == user["id"]

    b = connect("bob (member)", bob, ["websocket"])
    own = b.received("presence:update", about(bob))
    assert sorted(own) == PRESENCE_UPDATE_KEYS, own
    assert own == presence(bob, True), own
    a1 = connect("alice tab 1 (member)", alice, ["websocket"])
    a2 = connect("alice tab 2 (member, polling)", alice, ["polling"])
    c = connect("carol (not a member)", carol, ["websocket"])
    for t in (b, a1, a2):
        t.join(issue)
    assert a1.received("presence:update", about(alice)) == presence(alice, True)

    # presence:list and GET /api/presence agree.
    def listed(reply):
        assert sorted(reply) == ["items", "ok"] and reply["ok"] is True, reply
        for item in reply["items"]:
            assert sorted(item) == PRESENCE_ITEM_KEYS, item
        return sorted(reply["items"], key=lambda i: i["userId"])

    def item(user):
        return {"userId": user["id"], "displayName": user["name"], "city": user["city"]}

    online = sorted([item(alice), item(bob), item(carol)], key=lambda i: i["userId"])
    assert listed(b.call("presence:list", {})) == online
    assert listed(b.call("presence:list", {"city": alice["city"]})) == online
    assert listed(b.call("presence:list", {"city": "elsewhere"})) == []
    rest = api("GET", f"/api/presence?city={urllib.parse.quote(alice['city'])}", bob["token"], status=200)
    assert sorted(rest["items"], key=lambda i: i["userId"]) == online, rest
    assert_error_ack(b.call("presence:list", {"city": "Not A City"}), "validation_failed", "presence:list bad city")

    # Typing: a non-member is refused; a member's state reaches the others,
    # once, never the typist's own tabs.
    reply = c.call("user:typing", {"issueId": issue, "isTyping": True})
    assert isinstance(reply, dict) and reply.get("ok") is False and reply["error"]["message"], reply
    assert a1.call("user:typing", {"issueId": issue, "isTyping": True}) == {"ok": True}
    got = b.received("user:typing")
    assert sorted(got) == TYPING_KEYS, got
    assert got == typing_state(alice, True), got
    assert a2.call("user:typing", {"issueId": issue, "isTyping": True}) == {"ok": True}
    assert a2.call("user:typing", {"issueId": issue, "isTyping": False}) == {"ok": True}
    b.received("user:typing", lambda p: p["isTyping"] is False)
    assert a2.call("user:typing", {"issueId": issue, "isTyping": False}) == {"ok": True}

    # alice's second tab goes: still online, and not typing news either.
    assert a1.call("user:typing", {"issueId": issue, "isTyping": True}) == {"ok": True}
    a2.sio.disconnect()
    round_trip(b, a1)
    b.nothing("presence:update", lambda p: p["online"] is False, "an offline update while a tab is left")
    exactly(
        b,
        "user:typing",
        lambda p: True,
        [typing_state(alice, True), typing_state(alice, False), typing_state(alice, True)],
        "typing states so far",
    )
    # Her last tab goes: her typing is cleared and she is offline.
    a1.sio.disconnect()
    b.received("presence:update", lambda p: p["userId"] == alice["id"] and p["online"] is False)
    round_trip(b)
    exactly(
        b,
        "user:typing",
        lambda p: True,
        [typing_state(alice, True), typing_state(alice, False), typing_state(alice, True), typing_state(alice, False)],
        "typing cleared by the disconnect",
    )
    exactly(b, "presence:update", about(alice), [presence(alice, True), presence(alice, False)], "alice's presence")
    assert listed(b.call("presence:list", {})) == sorted([item(bob), item(carol)], key=lambda i: i["userId"])
    for t in (a1, a2, c):
        t.nothing("user:typing", about(alice), "its own user's typing")
    c.nothing("user:typing", what="typing in a room it is not in")


def messages():
    users = INPUT["users"]
    alice, bob, carol = users["alice"], users["bob"], users["carol"]
    issue = INPUT["issueId"]
    a = connect("alice (member)", alice, ["websocket"])
    b = connect("bob (member, polling)", bob, ["polling"])
    c = connect("carol (not a member)", carol, ["websocket"])
    a.join(issue)
    b.join(issue)

    sent = a.call("message:send", {"issueId": issue, "content": unique("from python")})
    assert sorted(sent) == ["message", "ok"] and sent["ok"] is True, sent
    rest = api("POST", f"/api/issues/{issue}/messages", carol["token"], {"content": unique("over REST")}, 201)
    assert sorted(rest) == sorted(sent["message"]), (rest, sent)
    for m in (sent["message"], rest):
        for t in (a, b):
            got = t.received("message:new", lambda p, m=m: p["messageId"] == m["messageId"])
            assert got == m, f"{t.label}: {got} != {m}"

    path = f"/api/messages/{rest['messageId']}/reactions/{urllib.parse.quote('🎉')}"
    body = api("PUT", path, bob["token"], None, 200)
    assert body == {"messageId": rest["messageId"], "issueId": issue, "reactions": {"🎉": 1}}, body
    for t in (a, b):
        got = t.received("message:reaction")
        assert sorted(got) == REACTION_KEYS and got == body, f"{t.label}: {got}"
    assert api("PUT", path, bob["token"], None, 200) == body  # no change, no event
    removed = api("DELETE", path, bob["token"], None, 200)
    assert removed["reactions"] == {}, removed
    round_trip(a, b, c)
    for t in (a, b):
        exactly(t, "message:new", lambda p: True, [sent["message"], rest], "the room's messages")
        exactly(t, "message:reaction", lambda p: True, [body, removed], "one event per change")
    c.nothing("message:new", what="messages of a room it is not in")
    c.nothing("message:reaction", what="reactions in a room it is not in")


SCENARIOS = {
    "typing-presence": typing_presence,
    "messages": messages,
}


if __name__ == "__main__":
    run(SCENARIOS)
