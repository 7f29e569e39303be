// A node told to stop (SIGTERM) while the OFFICIAL Socket.IO client keeps
// sending acknowledged messages: run by tests/drain.rs (one node) and
// tests/cluster/main.rs (a rolling restart behind nginx).
//
//   CP_INPUT='{…}' node tests/js/drain.mjs <scenario>
//
// CP_INPUT (JSON):
//   url           where the clients connect (the node, or nginx)
//   users         [{id, name, token}, …]: socket i signs in as users[i % n]
//   issueId       the issue the messages go to
//   sockets       {websocket: n, polling: n, default: n}: how many of each
//   resultsFile   where the scenario writes what it saw (JSON), for the test
//   single:  pid (the node's process id, signalled here), delayMs (its
//            DRAIN_DELAY_MS), timeoutMs (its DRAIN_TIMEOUT_SECS, in ms)
//   rolling: controlDir (the test writes `stop` there when every node has
//            been restarted; the clients then stop sending and report)
//
// Every socket sends `message:send` every SEND_EVERY_MS with a unique
// content and records which were acknowledged. The plumbing is
// tests/js/harness.mjs.

import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { get } from 'node:http';
import { join as joinPath } from 'node:path';

import { connect, input, log, run, sleep, until } from './harness.mjs';

const SEND_EVERY_MS = 100;
const ACK_WAIT_MS = 5000;

/** The sockets of CP_INPUT's mix, connected, each with its own tally. */
async function clients() {
  const { users, sockets } = input;
  const kinds = [
    ...Array(sockets.websocket ?? 0).fill('websocket'),
    ...Array(sockets.polling ?? 0).fill('polling'),
    ...Array(sockets.default ?? 0).fill('default'),
  ];
  const transports = { websocket: ['websocket'], polling: ['polling'], default: ['polling', 'websocket'] };
  return Promise.all(kinds.map(async (kind, i) => {
    const user = users[i % users.length];
    const t = await connect(`${kind} ${i}`, {
      auth: { token: user.token },
      transports: transports[kind],
      reconnection: true,
      reconnectionAttempts: Infinity,
    });
    t.kind = kind;
    t.acked = [];
    t.failed = 0;
    t.inFlight = 0;
    t.timeline = [];
    const mark = (what, extra = {}) => t.timeline.push({ what, at: Date.now(), ...extra });
    t.socket.on('disconnect', (reason, details) => mark('disconnect', {
      reason,
      active: t.socket.active,
      // A WebSocket's close code, or a polling request's HTTP status.
      details: details && { message: details.message ?? details.description, code: details.context?.code, status: details.context?.status },
    }));
    t.socket.io.on('reconnect_attempt', (attempt) => mark('attempt', { attempt }));
    t.socket.io.on('reconnect_error', () => mark('error'));
    t.socket.on('connect', () => mark('connect'));
    return t;
  }));
}

/** Sends acknowledged messages from `t` until `stopped()`; only while connected. */
async function sender(t, stopped) {
  let n = 0;
  while (!stopped()) {
    await sleep(SEND_EVERY_MS * (0.5 + Math.random()));
    // A message emitted while disconnected would wait in the client's
    // buffer; these go out only on a live connection.
    if (!t.socket.connected) continue;
    const content = `${t.label} #${n++} ${Date.now()}`;
    t.inFlight++;
    t.socket.timeout(ACK_WAIT_MS).emitWithAck('message:send', { issueId: input.issueId, content })
      .then((reply) => {
        if (reply?.ok) t.acked.push({ content, messageId: reply.message.messageId, at: Date.now() });
        else t.failed++;
      })
      .catch(() => { t.failed++; })
      .finally(() => { t.inFlight--; });
  }
}

/** GET /readyz on a connection of its own: `{status, retryAfter}`, or the error code. */
function readyz() {
  return new Promise((resolve) => {
    const req = get(`${input.url}/readyz`, { agent: false, timeout: 2000 }, (res) => {
      res.resume();
      resolve({ status: res.statusCode, retryAfter: res.headers['retry-after'] ?? null });
    });
    req.on('error', (e) => resolve({ error: e.code ?? String(e) }));
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

function report(ts, extra) {
  const results = {
    ...extra,
    clients: ts.map((t) => ({ label: t.label, kind: t.kind, acked: t.acked, failed: t.failed, timeline: t.timeline })),
  };
  writeFileSync(input.resultsFile, JSON.stringify(results));
  const acked = ts.reduce((n, t) => n + t.acked.length, 0);
  const failed = ts.reduce((n, t) => n + t.failed, 0);
  log(`${acked} message(s) acknowledged, ${failed} not`);
}

const scenarios = {};

// One node, SIGTERM sent from here: /readyz answers 503 at once, the
// listener is closed after the delay, and every socket is disconnected
// with a reason the client reconnects on by itself.
scenarios.single = async () => {
  const ts = await clients();
  let stopped = false;
  const senders = ts.map((t) => sender(t, () => stopped));
  await sleep(1000);

  const termAt = Date.now();
  process.kill(input.pid, 'SIGTERM');
  log(`SIGTERM to ${input.pid}`);
  // Its first answer after the signal (the node takes it within a moment).
  let ready;
  for (;;) {
    ready = { ...(await readyz()), at: Date.now() - termAt };
    if (ready.status !== 200) break;
    assert.ok(ready.at < 250, 'still ready 250 ms after SIGTERM');
  }
  log(`readyz after SIGTERM: ${JSON.stringify(ready)}`);

  // Still answering until the delay is over; then, once the polling
  // sessions are closed (a second at most), connection attempts are refused.
  await sleep(Math.max(0, termAt + input.delayMs - 50 - Date.now()));
  const during = await readyz();
  let refused;
  for (;;) {
    refused = { ...(await readyz()), at: Date.now() - termAt };
    // A connection made in the instant the listener is being shut down is
    // reset rather than refused: look again.
    if ((refused.status !== 503 && refused.error !== 'ECONNRESET') || refused.at > input.delayMs + 2000) break;
    await sleep(10);
  }
  log(`readyz just before the delay ends: ${JSON.stringify(during)}; then ${JSON.stringify(refused)}`);

  await until('every socket to be disconnected', () => ts.every((t) => t.timeline.some((e) => e.what === 'disconnect')), input.timeoutMs + 3000);
  stopped = true;
  await Promise.all(senders);
  await until('every ack to be settled', () => ts.every((t) => t.inFlight === 0), ACK_WAIT_MS + 1000);
  report(ts, { termAt, readyz: ready, during, refused });
  for (const t of ts) t.socket.disconnect();

  assert.equal(ready.status, 503, JSON.stringify(ready));
  assert.ok(ready.retryAfter, 'a 503 from /readyz says when to retry');
  assert.equal(during.status, 503, `still accepting during the delay: ${JSON.stringify(during)}`);
  assert.equal(refused.error, 'ECONNREFUSED', `the listener is closed after the delay: ${JSON.stringify(refused)}`);
  assert.ok(refused.at >= input.delayMs && refused.at <= input.delayMs + 1300, `closed ${refused.at} ms after SIGTERM`);
  for (const t of ts) {
    const gone = t.timeline.find((e) => e.what === 'disconnect');
    // "io server disconnect" would leave the client disconnected for good.
    assert.equal(gone.reason, 'transport close', `${t.label}: ${JSON.stringify(gone)}`);
    assert.equal(gone.active, true, `${t.label} reconnects by itself`);
    if (t.kind === 'websocket') assert.equal(gone.details?.code, 1001, `${t.label}: Going Away: ${JSON.stringify(gone)}`);
  }
};

// A rolling restart behind nginx, driven by the test: the clients send
// throughout and reconnect through the proxy by themselves.
scenarios.rolling = async () => {
  const ts = await clients();
  writeFileSync(joinPath(input.controlDir, 'ready'), '');
  let stopped = false;
  const senders = ts.map((t) => sender(t, () => stopped));
  await until('the test to finish the restarts', () => existsSync(joinPath(input.controlDir, 'stop')), 10 * 60 * 1000);
  stopped = true;
  await Promise.all(senders);
  await until('every ack to be settled', () => ts.every((t) => t.inFlight === 0), ACK_WAIT_MS + 1000);
  report(ts, {});
  for (const t of ts) {
    const last = t.timeline.filter((e) => e.what === 'connect' || e.what === 'disconnect').pop();
    assert.ok(t.socket.connected, `${t.label} is connected at the end: ${JSON.stringify(last)}`);
    for (const e of t.timeline.filter((e) => e.what === 'disconnect')) {
      assert.notEqual(e.reason, 'io server disconnect', `${t.label}: ${JSON.stringify(e)}`);
      assert.equal(e.active, true, `${t.label} reconnects by itself after ${e.reason}`);
    }
  }
  for (const t of ts) t.socket.disconnect();
};

run(scenarios);
