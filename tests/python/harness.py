"""What tests/python/scenarios.py and tests/python/realtime.py have in
common: the test's data, clients that record what they receive, REST calls,
and the runner that turns one scenario into the exit code the Rust side
takes as the verdict.

CP_INPUT is the test's data as JSON (each script lists what it reads);
CP_TIMEOUT_MS bounds the whole run (default 20000). The scripts import this
module by name: Python puts a script's own directory first on sys.path,
whatever the working directory.
"""

import json
import os
import secrets
import sys
import threading
import time
import traceback

import requests
import socketio

INPUT = json.loads(os.environ.get("CP_INPUT", "{}"))
URL = INPUT.get("url")
TIMEOUT_S = int(os.environ.get("CP_TIMEOUT_MS", "20000")) / 1000
WAIT_S = 5.0  # for something that should arrive
QUIET_S = 0.4  # to be sure that something does not arrive

STARTED = time.monotonic()
CLIENTS = []


def log(*args):
    print(f"[{int((time.monotonic() - STARTED) * 1000):5d} ms]", *args, flush=True)


def unique(label):
    return f"{label} {secrets.token_hex(6)}"


def until(what, value, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while True:
        v = value()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


# ---- REST ---------------------------------------------------------------------


def api(method, path, token=None, body=None, status=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    res = requests.request(method, URL + path, headers=headers, json=body, timeout=WAIT_S)
    payload = res.json() if res.text else None
    if status is not None:
        assert res.status_code == status, f"{method} {path} answered {res.status_code}: {res.text}"
    return payload


# ---- the client ---------------------------------------------------------------


class Tracked:
    """A socketio.Client that records every event it receives."""

    def __init__(self, label):
        self.label = label
        self.sio = socketio.Client(reconnection=False, logger=False, engineio_logger=False)
        self.seen = []
        self.errors = []
        self.disconnects = []
        self.lock = threading.Lock()
        self.sio.on("*", self._any)
        self.sio.on("connect_error", lambda data: self.errors.append(data))
        self.sio.on("disconnect", lambda *reason: self.disconnects.append(reason))
        CLIENTS.append(self)

    def _any(self, event, *args):
        with self.lock:
            self.seen.append((event, args[0] if args else None))

    def connect(self, token, transports, **kwargs):
        auth = {"token": token} if token is not None else None
        self.sio.connect(URL, auth=auth, transports=transports, wait_timeout=WAIT_S, **kwargs)
        log(f"{self.label} connected over {self.sio.transport()}")
        return self

    def events(self, event, pred=lambda p: True):
        with self.lock:
            return [p for (e, p) in self.seen if e == event and pred(p)]

    def dump(self):
        with self.lock:
            return f"{self.label} saw {json.dumps(self.seen)}"

    def received(self, event, pred=lambda p: True, what=None):
        try:
            return until(f"{self.label} to receive {what or event}", lambda: (self.events(event, pred) or [None])[0])
        except AssertionError as e:
            raise AssertionError(f"{e}; {self.dump()}") from None

    def nothing(self, event, pred=lambda p: True, what=None):
        got = self.events(event, pred)
        assert not got, f"{self.label} must not receive {what or event}, got {got}"

    def call(self, event, *args):
        data = args[0] if len(args) == 1 else (tuple(args) if args else None)
        return self.sio.call(event, data, timeout=WAIT_S)

    def join(self, issue_id):
        reply = self.call("join:issue", issue_id)
        assert reply == {"ok": True}, f"{self.label} join:issue {issue_id}: {reply}"


def connect(label, user, transports=("websocket",)):
    return Tracked(label).connect(user["token"], list(transports))


def assert_error_ack(reply, code, what):
    shown = f"{what}: {reply!r}"
    assert isinstance(reply, dict), shown
    assert sorted(reply) == ["error", "ok"], shown
    assert reply["ok"] is False, shown
    assert reply["error"]["code"] == code, shown
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"], shown


# ---- main ---------------------------------------------------------------------


def finish(code):
    for t in CLIENTS:
        try:
            t.sio.disconnect()
        except Exception:  # noqa: BLE001 - best effort
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    # Background threads of the clients must not keep the process alive.
    os._exit(code)


def run(scenarios):
    """Runs the scenario named by the first argument and exits: 0 if it
    passed, 1 if it failed, 3 if it ran out of time, 64 if it cannot run at
    all."""
    name = sys.argv[1] if len(sys.argv) > 1 else None
    if name not in scenarios:
        print(f"unknown scenario {name!r}; known: {', '.join(scenarios)}", file=sys.stderr)
        finish(64)
    if not URL:
        print('CP_INPUT must be JSON with at least {"url": ...}', file=sys.stderr)
        finish(64)

    def timed_out():
        print(f"FAIL {name}: timed out after {TIMEOUT_S} s", file=sys.stderr, flush=True)
        os._exit(3)

    watchdog = threading.Timer(TIMEOUT_S, timed_out)
    watchdog.daemon = True
    watchdog.start()
    log(f"scenario {name} against {URL}")
    try:
        scenarios[name]()
    except BaseException:  # noqa: BLE001 - the verdict is the exit code
        print(f"FAIL {name}:", file=sys.stderr)
        traceback.print_exc()
        finish(1)
    log(f"PASS {name}")
    finish(0)
