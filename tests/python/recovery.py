"""Connection state recovery with python-socketio, run by tests/recovery.rs
against a node with CONNECTION_STATE_RECOVERY_SECS on.

    CP_INPUT='{"url": ..., "users": {alice, bob}, "issueId": ...}' \\
        tests/python/.venv/bin/python tests/python/recovery.py <scenario>

python-socketio (5.18) has no connection state recovery of its own: it
never sends a pid, so each of its reconnections is a fresh socket. With the
feature on it still works: events carry their offset as one more argument
(which its handlers receive), and a reconnection joins its rooms again.

fresh-after-reconnect  events arrive with an offset; after a dropped
                       connection the client's own reconnection is a fresh
                       socket (a new sid) that works once it joins again.
"""

import time

from harness import INPUT, QUIET_S, Tracked, api, log, run, unique, until


def fresh_after_reconnect():
    alice, bob = INPUT["users"]["alice"], INPUT["users"]["bob"]
    issue = INPUT["issueId"]
    t = Tracked("alice")
    args_seen = []
    t.sio.on("message:new", lambda *args: args_seen.append(args))
    t.connect(alice["token"], ["websocket"])
    t.join(issue)
    first = api("POST", f"/api/issues/{issue}/messages", bob["token"], {"content": unique("before")}, 201)
    until("message:new with its offset", lambda: args_seen)
    assert args_seen[0][0] == first, args_seen
    assert len(args_seen[0]) == 2 and isinstance(args_seen[0][1], str), f"payload and offset: {args_seen}"
    sid = t.sio.get_sid()

    # A fresh client instance stands for the reconnection (python-socketio
    # sends no pid): a new socket, in no room until it joins again.
    t.sio.eio.disconnect(abort=True)
    again = Tracked("alice again")
    again.connect(alice["token"], ["websocket"])
    assert again.sio.get_sid() != sid, "a fresh socket"
    api("POST", f"/api/issues/{issue}/messages", bob["token"], {"content": unique("unjoined")}, 201)
    time.sleep(QUIET_S)
    again.nothing("message:new")
    again.join(issue)
    after = api("POST", f"/api/issues/{issue}/messages", bob["token"], {"content": unique("after")}, 201)
    got = again.received("message:new", lambda p: p["messageId"] == after["messageId"])
    assert got == after, f"{got} != {after}"
    log("fresh socket works")


SCENARIOS = {"fresh-after-reconnect": fresh_after_reconnect}


if __name__ == "__main__":
    run(SCENARIOS)
