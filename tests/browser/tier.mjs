// The real-browser tier: Debian's Chromium, driven by playwright-core, runs
// pages on an origin of their own that use CivicPulse the way a browser
// developer's page does, through the official socket.io-client browser
// build. Run by tests/browser.rs (one node) and tests/cluster/browser.rs
// (three nodes behind round-robin nginx):
//
//   CP_INPUT='{…}' node tests/browser/tier.mjs <scenario>
//
// CP_INPUT (JSON):
//   url            the server (or nginx in front of the cluster)
//   pagePort       the port of the page origin the server allows
//                  (CORS_ORIGINS=http://127.0.0.1:<pagePort>)
//   users          {alice, bob}: {id, name, token, refresh, city}
//   issueId        an issue in alice's and bob's city
//   expiredToken   an access token of alice's that expired (auth)
//   pids           the server processes to stop (reconnect); the test
//                  starts them again on the same ports
//   wsCheck        whether WS_ORIGIN_CHECK is on (cors; default true)
//   maxPerAddress  the server's MAX_CONNECTIONS_PER_ADDRESS (refusals)
//   label          prefixed to the screenshots' names (e.g. cluster)
//
// Every scenario ends with screenshots whose page state is checked (see
// harness.mjs `screenshot`).

import assert from 'node:assert/strict';
import { connect as connectTcp } from 'node:net';
import { join } from 'node:path';

import { ROOT, input, launch, log, newPage, run, screenshot, serveOrigin, sleep, until } from './harness.mjs';

const { url, users, issueId } = input;

/** The page every scenario opens: the client's build, then the tier's page code. */
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>CivicPulse browser tier</title>
<script src="/socket.io.min.js"></script><script src="/page.js"></script>
<style>body{font:14px sans-serif;margin:2em} #state div{font-weight:bold;margin:.2em 0} pre{font-size:11px;white-space:pre-wrap;word-break:break-all}</style>
</head><body><h1 id="title">browser tier</h1><div id="state"></div><pre id="log"></pre></body></html>`;
const FILES = { '/': { body: PAGE }, '/favicon.ico': { body: '', type: 'image/x-icon' }, '/page.js': { file: join(ROOT, 'tests/browser/page.js') } };

/** A screenshot named for the scenario, under the run's `label` if any. */
const shot = (page, name, expected) => screenshot(page, input.label ? `${input.label}-${name}` : name, expected);

/** The page origin CivicPulse allows, and one it does not. */
const allowedOrigin = () => serveOrigin(FILES, input.pagePort);
const otherOrigin = () => serveOrigin(FILES);

async function openPage(browser, origin, label) {
  const page = await newPage(browser, label);
  await page.goto(`${origin}/`);
  await page.waitForFunction(() => window.io && window.tier);
  await page.evaluate((label) => {
    document.getElementById('title').textContent = label;
  }, label);
  return page;
}

/** `tier.connect` in the page; resolves once it is connected. */
async function connect(page, token, options = {}) {
  await page.evaluate(([url, token, options]) => void tier.connect(url, token, options), [url, token, options]);
  await until('the socket to connect', () => page.evaluate(() => window.socket.connected));
}

const emit = (page, event, payload) => page.evaluate(([e, p]) => tier.emit(e, p), [event, payload]);
const api = (page, method, path, options = {}) =>
  page.evaluate(([url, m, p, o]) => tier.api(url, m, p, o), [url, method, path, options]);
const events = (page, name) => page.evaluate((name) => tier.events.filter((e) => e.name === name), name);

/** Waits for an event `name` whose payload passes `pred`; returns it. */
async function seen(page, name, pred = () => true, what = name, ms) {
  return until(`${what}`, async () => (await events(page, name)).find((e) => pred(e.payload))?.payload, ms);
}

async function ok(page, event, payload) {
  const reply = await emit(page, event, payload);
  assert.equal(reply.ok, true, `${event} ${JSON.stringify(payload)}: ${JSON.stringify(reply)}`);
  return reply;
}

async function disconnect(page) {
  await page.evaluate(() => window.socket.disconnect());
}

/** A message sent over the socket reaches the room, this page included. */
async function roundTrip(page, label) {
  const content = `${label} ${Math.random().toString(36).slice(2)}`;
  await ok(page, 'join:issue', issueId);
  await ok(page, 'message:send', { issueId, content });
  await seen(page, 'message:new', (m) => m.content === content, `message:new ${content}`);
}

// ---- scenarios ------------------------------------------------------------------

const scenarios = {};

/** Default transports (polling, then the upgrade), websocket only, polling only. */
scenarios.transports = async () => {
  const browser = await launch();
  const origin = await allowedOrigin();
  const page = await openPage(browser, origin, 'alice: transports');
  const websockets = [];
  const polls = [];
  page.on('websocket', (ws) => websockets.push(ws.url()));
  page.on('request', (r) => r.url().includes('transport=polling') && polls.push(r.url()));

  await connect(page, users.alice.token);
  await until('the upgrade to websocket', () =>
    page.evaluate(() => window.socket.io.engine.transport.name === 'websocket' && tier.counts.upgrades === 1),
  );
  assert.deepEqual(await page.evaluate(() => tier.transports), ['polling', 'websocket'], 'polling, then upgraded');
  assert.ok(polls.length >= 1 && websockets.length === 1, `polls ${polls.length}, websockets ${websockets}`);
  await roundTrip(page, 'after the upgrade');
  await shot(page, 'transports-default', ['socket: connected', 'transport: websocket (upgraded)', 'upgrades: 1']);
  await disconnect(page);

  polls.length = 0;
  await page.evaluate(() => (tier.transports.length = 0));
  await connect(page, users.alice.token, { transports: ['websocket'] });
  assert.deepEqual(await page.evaluate(() => tier.transports), ['websocket']);
  await roundTrip(page, 'websocket only');
  assert.equal(polls.length, 0, 'websocket only: no polling request');
  assert.equal(websockets.length, 2);
  await shot(page, 'transports-websocket', ['socket: connected', 'transport: websocket']);
  await disconnect(page);

  await page.evaluate(() => (tier.transports.length = 0));
  await connect(page, users.alice.token, { transports: ['polling'] });
  await roundTrip(page, 'polling only');
  // Time for an upgrade that must not come.
  await sleep(1500);
  assert.deepEqual(await page.evaluate(() => tier.transports), ['polling']);
  assert.equal(await page.evaluate(() => window.socket.io.engine.transport.name), 'polling');
  assert.equal(websockets.length, 2, 'polling only: no websocket opened');
  assert.ok(polls.length >= 2, `polling only: ${polls.length} polls`);
  await shot(page, 'transports-polling', ['socket: connected', 'transport: polling']);
};

/**
 * A refused handshake, then the seed's refresh path as the README writes
 * it: on `Authentication failed`, POST /api/auth/refresh `{refreshToken}`,
 * keep the rotated refresh token, `socket.auth.token = accessToken`,
 * `socket.connect()`; and the in-band `auth:refresh` of a live socket.
 */
scenarios.auth = async () => {
  const browser = await launch();
  const origin = await allowedOrigin();
  const page = await openPage(browser, origin, 'alice: auth');
  await page.evaluate(
    ([url, expired, refreshToken]) => {
      window.refreshToken = refreshToken;
      window.refreshTokens = async () => {
        const r = await tier.api(url, 'POST', '/api/auth/refresh', { body: { refreshToken: window.refreshToken } });
        if (r.status !== 200) throw new Error(`refresh answered ${r.status} ${JSON.stringify(r.json)}`);
        // Rotated on every use: the old one is spent, keep the new one.
        window.refreshToken = r.json.refreshToken;
        tier.count('refreshed');
        return r.json.accessToken;
      };
      const socket = tier.connect(url, expired);
      socket.on('connect_error', async (err) => {
        if (err.message !== 'Authentication failed') return;
        tier.count('auth failures');
        socket.auth.token = await window.refreshTokens();
        socket.connect();
      });
    },
    [url, input.expiredToken, users.alice.refresh],
  );
  const refused = await seen(page, 'connect_error', () => true, 'the refused handshake');
  assert.equal(refused.message, 'Authentication failed');
  await until('connected after the refresh', () => page.evaluate(() => window.socket.connected));
  assert.equal(await page.evaluate(() => tier.counts['auth failures']), 1);
  const rotated = await page.evaluate(() => window.refreshToken);
  assert.notEqual(rotated, users.alice.refresh, 'the refresh token rotated');
  await roundTrip(page, 'after the refresh');

  // The live socket takes a fresh token in-band, without a reconnect.
  const inBand = await page.evaluate(async () => {
    const token = await window.refreshTokens();
    window.socket.auth.token = token;
    return tier.emit('auth:refresh', { token });
  });
  assert.equal(inBand.ok, true, JSON.stringify(inBand));
  assert.ok(Date.parse(inBand.expiresAt) > Date.now(), JSON.stringify(inBand));
  const bad = await emit(page, 'auth:refresh', { token: 'not-a-token' });
  assert.equal(bad.ok, false);
  assert.equal(bad.error.code, 'invalid_token', JSON.stringify(bad));
  assert.equal((await events(page, 'disconnect')).length, 0, 'never disconnected once connected');
  await roundTrip(page, 'after auth:refresh');
  await page.evaluate(() => tier.show('auth:refresh', 'ok'));
  await shot(page, 'auth-refresh', ['socket: connected', 'auth failures: 1', 'refreshed: 2', 'auth:refresh: ok']);
};

/** Two users' pages (browser profiles of their own): rooms, typing, presence. */
scenarios.rooms = async () => {
  const browser = await launch();
  const origin = await allowedOrigin();
  const alice = await openPage(browser, origin, 'alice: rooms');
  const bob = await openPage(browser, origin, 'bob: rooms');
  await connect(alice, users.alice.token);
  await connect(bob, users.bob.token);
  await seen(alice, 'presence:update', (p) => p.userId === users.bob.id && p.online, 'alice: bob online');
  const list = await ok(alice, 'presence:list', {});
  for (const user of [users.alice, users.bob]) {
    assert.ok(list.items.some((i) => i.userId === user.id), `${user.name} listed: ${JSON.stringify(list)}`);
  }
  await ok(alice, 'join:issue', issueId);
  await ok(bob, 'join:issue', issueId);

  await ok(bob, 'user:typing', { issueId, isTyping: true });
  const typing = await seen(alice, 'user:typing', (p) => p.userId === users.bob.id && p.isTyping, 'alice: bob typing');
  assert.equal(typing.displayName, users.bob.name);
  await ok(bob, 'message:send', { issueId, content: 'Still broken today' });
  await seen(alice, 'message:new', (m) => m.content === 'Still broken today', 'alice: bob\'s message');
  await seen(alice, 'user:typing', (p) => p.userId === users.bob.id && !p.isTyping, 'alice: bob stopped typing', 8000);
  assert.equal((await events(bob, 'user:typing')).length, 0, 'bob does not hear his own typing');
  await alice.evaluate(() => tier.show('room', 'bob typed and wrote'));
  await shot(alice, 'rooms-alice', ['socket: connected', 'room: bob typed and wrote', 'Still broken today']);

  await ok(alice, 'leave:issue', issueId);
  await ok(bob, 'message:send', { issueId, content: 'After alice left' });
  await seen(bob, 'message:new', (m) => m.content === 'After alice left', 'bob: his own message');
  await ok(alice, 'presence:list', {});
  await sleep(500);
  const late = (await events(alice, 'message:new')).filter((e) => e.payload.content === 'After alice left');
  assert.equal(late.length, 0, 'alice left the room: nothing more from it');
  await shot(bob, 'rooms-bob', ['socket: connected', 'After alice left']);

  await disconnect(bob);
  await seen(alice, 'presence:update', (p) => p.userId === users.bob.id && !p.online, 'alice: bob offline');
  await alice.evaluate(() => tier.show('presence', 'bob went offline'));
  await shot(alice, 'rooms-presence', ['presence: bob went offline']);
};

/**
 * The server stops (SIGTERM to every process in `pids`; the test starts
 * them again): the client reconnects by itself, and the page re-joins its
 * room on `socket.io.on('reconnect')`. The seed's `socket.on('reconnect')`
 * never fires with a v4 client.
 */
scenarios.reconnect = async () => {
  const browser = await launch();
  const origin = await allowedOrigin();
  const page = await openPage(browser, origin, 'alice: reconnect');
  await connect(page, users.alice.token);
  await until('the upgrade', () => page.evaluate(() => window.socket.io.engine.transport.name === 'websocket'));
  await page.evaluate((issueId) => {
    const socket = window.socket;
    socket.on('reconnect', () => tier.count('socket reconnect (never in v4)'));
    socket.io.on('reconnect', async (attempts) => {
      tier.count('manager reconnects');
      tier.note(`reconnected after ${attempts} attempts`);
      const ack = await tier.emit('join:issue', issueId);
      tier.show('re-joined', ack.ok ? 'yes' : JSON.stringify(ack));
    });
  }, issueId);
  await ok(page, 'join:issue', issueId);

  for (const pid of input.pids) process.kill(pid, 'SIGTERM');
  log(`SIGTERM to ${input.pids}`);
  const reason = await seen(page, 'disconnect', () => true, 'the disconnect', 20000);
  log(`disconnected: ${reason}`);
  assert.notEqual(reason, 'io server disconnect', 'a stopping server never says "do not reconnect"');
  await until('re-joined after the restart', () =>
    page.evaluate(() => document.getElementById('state-re-joined')?.textContent === 're-joined: yes'), 45000);

  // The room is the page's again: a message posted over REST reaches it.
  const content = `after the restart ${Date.now()}`;
  const posted = await api(page, 'POST', `/api/issues/${issueId}/messages`, { token: users.alice.token, body: { content } });
  assert.equal(posted.status, 201, JSON.stringify(posted));
  await seen(page, 'message:new', (m) => m.content === content, 'the message after the restart');
  assert.equal(await page.evaluate(() => tier.counts['manager reconnects']), 1);
  assert.equal(await page.evaluate(() => tier.counts['socket reconnect (never in v4)'] ?? 0), 0);
  await page.evaluate(() => tier.show('socket reconnect (never in v4)', 0));
  await shot(page, 'reconnect', [
    'socket: connected',
    'manager reconnects: 1',
    're-joined: yes',
    'socket reconnect (never in v4): 0',
    content,
  ]);
};

/**
 * Connection state recovery (the server runs with it on): the page's
 * transport drops without a goodbye, a message is posted while it is away,
 * and the official client comes back as the same socket, `recovered`, with
 * the missed message delivered once, before anything newer, and without
 * re-joining its room.
 */
scenarios.recovery = async () => {
  const browser = await launch();
  const origin = await allowedOrigin();
  const page = await openPage(browser, origin, 'alice: recovery');
  await connect(page, users.alice.token);
  await until('the upgrade', () => page.evaluate(() => window.socket.io.engine.transport.name === 'websocket'));
  await ok(page, 'join:issue', issueId);
  const before = `before the drop ${Date.now()}`;
  await ok(page, 'message:send', { issueId, content: before });
  await seen(page, 'message:new', (m) => m.content === before, 'the message before the drop');
  const firstId = await page.evaluate(() => window.socket.id);

  // A slow reconnect leaves time to post while the page is away; closing
  // the engine drops the transport as a network would (no disconnect).
  await page.evaluate(() => {
    window.socket.io.reconnectionDelay(3000);
    window.socket.io.reconnectionDelayMax(3000);
    window.socket.on('connect', () => tier.show('recovered', String(window.socket.recovered)));
    window.socket.io.engine.close();
  });
  const reason = await seen(page, 'disconnect', () => true, 'the disconnect');
  log(`disconnected: ${reason}`);
  const missed = `while away ${Date.now()}`;
  const posted = await api(page, 'POST', `/api/issues/${issueId}/messages`, { token: users.bob.token, body: { content: missed } });
  assert.equal(posted.status, 201, JSON.stringify(posted));

  await until('the recovery', () => page.evaluate(() => window.socket.connected && window.socket.recovered), 20000);
  assert.equal(await page.evaluate(() => window.socket.id), firstId, 'a recovered socket keeps its id');
  // Still in the room without a join:issue: a message posted now arrives too.
  const after = `after the recovery ${Date.now()}`;
  await ok(page, 'message:send', { issueId, content: after });
  await seen(page, 'message:new', (m) => m.content === after, 'the message after the recovery');
  const contents = (await events(page, 'message:new')).map((e) => e.payload.content);
  assert.deepEqual(contents, [before, missed, after], 'each message once, in order');
  await shot(page, 'recovery', ['socket: connected', 'recovered: true', missed, after]);
};

/**
 * CORS from the allowed origin (a preflighted call, a 429 whose
 * Retry-After the page reads) and from one that is not allowed: REST and
 * polling fail in the browser with a CORS error; a WebSocket is refused by
 * the server's origin check (or, with `wsCheck: false`, opens: the
 * browser itself never stops one).
 */
scenarios.cors = async () => {
  const wsCheck = input.wsCheck ?? true;
  const browser = await launch();
  const allowed = await openPage(browser, await allowedOrigin(), 'allowed origin');
  const issues = await api(allowed, 'GET', '/api/issues', { token: users.alice.token });
  assert.equal(issues.status, 200, JSON.stringify(issues));
  let limited;
  for (let i = 0; i < 30 && !limited; i++) {
    const r = await api(allowed, 'POST', '/api/issues', {
      token: users.alice.token,
      body: { title: `Pothole ${i}`, category: 'roads' },
    });
    if (r.status === 429) limited = r;
    else assert.equal(r.status, 201, JSON.stringify(r));
  }
  assert.ok(limited, 'a 429 within 30 writes');
  assert.equal(limited.json.error.code, 'rate_limited', JSON.stringify(limited));
  assert.match(String(limited.retryAfter), /^[1-9][0-9]*$/, `Retry-After readable by the page: ${limited.retryAfter}`);
  await allowed.evaluate((s) => tier.show('429 retry-after', s), limited.retryAfter);
  await shot(allowed, 'cors-allowed', [`429 retry-after: ${limited.retryAfter}`]);

  const refused = await openPage(browser, await otherOrigin(), 'refused origin');
  const consoleLines = [];
  refused.on('console', (m) => consoleLines.push(m.text()));
  const websockets = [];
  refused.on('websocket', (ws) => {
    const entry = { url: ws.url(), received: 0, error: null, closed: false };
    websockets.push(entry);
    ws.on('framereceived', () => entry.received++);
    ws.on('socketerror', (e) => (entry.error = e));
    ws.on('close', () => (entry.closed = true));
  });
  for (const [what, options] of [['simple', {}], ['preflighted', { token: users.alice.token }]]) {
    const r = await api(refused, 'GET', '/api/issues', options);
    assert.match(String(r.error), /TypeError/, `${what} GET from a refused origin fails in the page: ${JSON.stringify(r)}`);
  }
  await until('the CORS errors in the console', () => consoleLines.filter((t) => t.includes('CORS policy')).length >= 2);

  await refused.evaluate((url) => void tier.connect(url, 'unused', { transports: ['polling'], reconnection: false }), url);
  const polling = await seen(refused, 'connect_error', () => true, 'polling refused');
  assert.equal(polling.message, 'xhr poll error');
  await until('the CORS error of the poll', () => consoleLines.some((t) => t.includes('CORS policy') && t.includes('socket.io')));
  await disconnect(refused);
  await refused.evaluate(() => (tier.events.length = 0));

  await refused.evaluate(
    ([url, token]) => void tier.connect(url, token, { transports: ['websocket'], reconnection: false }),
    [url, users.alice.token],
  );
  if (wsCheck) {
    const ws = await seen(refused, 'connect_error', () => true, 'websocket refused');
    assert.equal(ws.message, 'websocket error');
    await until('the websocket closed', () => websockets.length === 1 && websockets[0].closed);
    assert.equal(websockets[0].received, 0, 'not one frame from a refused upgrade');
    await until('the 403 in the console', () => consoleLines.some((t) => t.includes('403')));
    await shot(refused, 'cors-refused', ['socket: connect_error: websocket error']);
  } else {
    await until('the websocket connected', () => refused.evaluate(() => window.socket.connected));
    await roundTrip(refused, 'unchecked websocket');
    await shot(refused, 'cors-refused-ws-unchecked', ['socket: connected', 'transport: websocket']);
  }
};

/**
 * The connection cap's 429 (answered before the App, where the CORS
 * middleware is not) is readable by an allowed page, Retry-After included:
 * `maxPerAddress` idle connections of this script fill the address's
 * quota, so the page's next connection is refused.
 */
scenarios.refusals = async () => {
  const browser = await launch();
  const page = await openPage(browser, await allowedOrigin(), 'allowed origin: connection cap');
  const { port, hostname } = new URL(url);
  const held = [];
  for (let i = 0; i < input.maxPerAddress; i++) {
    const socket = connectTcp({ port: Number(port), host: hostname });
    await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    held.push(socket);
    // An answer on it proves the server accepted (and counted) it: a
    // connection only in the kernel's backlog would let the page's in.
    socket.write(`GET /healthz HTTP/1.1\r\nHost: ${hostname}\r\n\r\n`);
    await new Promise((resolve, reject) => socket.once('data', resolve).once('error', reject));
  }
  try {
    // A simple request (no preflight), on a connection of its own.
    const r = await api(page, 'GET', `/api/issues?capped=${Date.now()}`);
    assert.equal(r.status, 429, JSON.stringify(r));
    assert.equal(r.json.error.code, 'too_many_connections', JSON.stringify(r));
    assert.equal(r.retryAfter, '5', 'Retry-After readable by the page');
    await page.evaluate((s) => tier.show('connection cap', `429, retry-after ${s}`), r.retryAfter);
    await shot(page, 'refusal-readable', ['connection cap: 429, retry-after 5']);
  } finally {
    for (const socket of held) socket.destroy();
  }
};

await run(scenarios);
