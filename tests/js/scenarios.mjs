// Scenarios run by tests/clients.rs against a live CivicPulse node, with the
// OFFICIAL Socket.IO client (socket.io-client) and, for malformed traffic, a
// raw WebSocket (`ws`).
//
//   CP_INPUT='{"url":"http://127.0.0.1:PORT","users":{…},"issueId":…}' \
//     node tests/js/scenarios.mjs <scenario>
//
// CP_INPUT (JSON):
//   url            base URL of the node (REST under /api, Socket.IO at /socket.io/)
//   users          {alice, bob, carol, dave}: {id, name, token, refresh}
//   issueId        an issue every scenario may use
//   otherIssueId   a second issue
//   absentIssueId  a well-formed issue id that names nothing
//   badTokens      {name: token} that must all be refused at the handshake
//   expiredToken   an expired access token of alice (auth-refresh)
//   official       an official {id, name, token, refresh} (global-events)
// CP_TIMEOUT_MS  overall time limit (default 20000).
//
// Exit code 0: the scenario passed; anything else: it failed, with the
// reason on stderr and the steps taken on stdout. `DEBUG=engine.io-client:*`
// shows the wire.
//
// The plumbing shared with tests/js/realtime.mjs is tests/js/harness.mjs.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { io, Manager } from 'socket.io-client';
import WebSocket from 'ws';

import {
  ISSUE_CREATED_KEYS, ISSUE_UPDATED_KEYS, ISSUE_UPVOTED_KEYS, QUIET_MS, URL_BASE, WAIT_MS, ack, assertErrorAck,
  assertMessage, connect, connected, dump, events, input, join, log, nothing, opened, received, restClient, run,
  sleep, sortedKeys, track, unique, until,
} from './harness.mjs';

const WS_URL = `${URL_BASE?.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`;

const { apiOk, postMessage } = restClient(WAIT_MS);

// ---- official client ----------------------------------------------------------

/** Asserts that `t` received exactly one `event` matching `pred`. */
function exactlyOnce(t, event, pred, what = event) {
  const n = events(t, event, pred).length;
  assert.equal(n, 1, `${t.label} received ${what} ${n} times; ${dump(t)}`);
}

/** Connects and expects connect_error; returns the error. */
async function refused(label, options, url = URL_BASE) {
  const t = track(io(url, { forceNew: true, reconnection: false, ...options }), label);
  await until(`${label}: connect_error`, () => t.errors.length > 0 || t.socket.connected);
  assert.ok(!t.socket.connected, `${label}: connected, but must be refused`);
  return t.errors[0];
}

// ---- raw WebSocket ------------------------------------------------------------

/**
 * A raw Engine.IO WebSocket. `frames` holds what the server sent (text as
 * strings, binary as Buffers); `closed` resolves with the close code.
 */
async function raw(label) {
  const ws = new WebSocket(WS_URL, { maxPayload: 16 * 1024 * 1024 });
  opened.add(ws);
  const r = { ws, label, frames: [], closedWith: null };
  ws.on('message', (data, isBinary) => {
    const frame = isBinary ? data : data.toString();
    r.frames.push(frame);
    if (frame === '2') ws.send('3'); // answer heartbeats like a client
  });
  ws.on('error', (e) => log(`${label}: ws error ${e.message}`));
  r.closed = new Promise((resolve) =>
    ws.on('close', (code) => {
      r.closedWith = code;
      resolve(code);
    }),
  );
  await until(`${label}: the Engine.IO open packet`, () => r.frames.find((f) => typeof f === 'string' && f.startsWith('0')));
  const open = JSON.parse(r.frames.find((f) => f.startsWith('0')).slice(1));
  assert.deepEqual(open.upgrades, [], `${label}: open packet ${JSON.stringify(open)}`);
  return r;
}

async function rawFrame(r, pred, what) {
  try {
    return await until(`${r.label}: ${what}`, () => r.frames.find((f) => typeof f === 'string' && pred(f)));
  } catch (e) {
    e.message += `; frames ${JSON.stringify(r.frames)}`;
    throw e;
  }
}

/** A raw socket connected to `/` (and joined to `issueId` when given). */
async function rawConnected(label, token, issueId) {
  const r = await raw(label);
  r.ws.send(`40${JSON.stringify({ token })}`);
  await rawFrame(r, (f) => f.startsWith('40{'), 'CONNECT answer');
  if (issueId) {
    r.ws.send(`421${JSON.stringify(['join:issue', issueId])}`);
    const reply = await rawFrame(r, (f) => f.startsWith('431'), 'join ack');
    assert.equal(reply, '431[{"ok":true}]');
  }
  return r;
}

async function closedByServer(r, what, ms = 3000) {
  const code = await Promise.race([r.closed, sleep(ms).then(() => null)]);
  assert.notEqual(code, null, `${r.label}: the server did not close the connection within ${ms} ms after ${what}; frames ${JSON.stringify(r.frames)}`);
  return code;
}

// ---- scenarios ----------------------------------------------------------------

const scenarios = {};

/** The seed's exact client options: WebSocket only. */
scenarios['connect-websocket'] = async () => {
  const { alice, bob } = input.users;
  // Exactly the seed's snippet (the first io() of the process, so no cached manager).
  const socket = io(URL_BASE, {
    auth: {
      token: alice.token,
    },
    transports: ['websocket'], // skip long-polling
    reconnectionAttempts: 5,
    reconnectionDelay: 2000,
  });
  const t = track(socket, 'alice');
  let firstTransport = null;
  socket.io.on('open', () => {
    firstTransport = socket.io.engine.transport.name;
  });
  await connected(t);
  log('connected', socket.id);
  assert.equal(firstTransport, 'websocket');
  assert.equal(socket.io.engine.transport.name, 'websocket');
  assert.match(socket.id, /^[A-Za-z0-9_-]+$/);
  await join(t, input.issueId);
  const rest = await postMessage(bob, input.issueId, unique('over websocket'));
  const m = await received(t, 'message:new', (p) => p.messageId === rest.messageId);
  assert.deepEqual(m, rest);
  await sleep(QUIET_MS);
  assert.ok(socket.connected);
  assert.deepEqual(t.disconnects, []);
};

/** `io(url)` with default options: long-polling first, then the upgrade. */
scenarios['connect-default'] = async () => {
  const { alice, bob } = input.users;
  const t = track(io(URL_BASE, { forceNew: true, auth: { token: alice.token } }), 'alice');
  let firstTransport = null;
  t.socket.io.on('open', () => {
    firstTransport = t.socket.io.engine.transport.name;
  });
  await connected(t);
  log('connected on', firstTransport, 'now', t.socket.io.engine.transport.name);
  assert.equal(firstTransport, 'polling', 'the default client opens with long-polling');
  await join(t, input.issueId);
  // Messages around the upgrade arrive once each, in order.
  const sent = [];
  for (let i = 0; i < 8; i++) {
    sent.push((await postMessage(bob, input.issueId, unique(`during upgrade ${i}`))).messageId);
  }
  await until('the upgrade to websocket', () => t.socket.io.engine.transport.name === 'websocket');
  log('upgraded to websocket');
  sent.push((await postMessage(bob, input.issueId, unique('after upgrade'))).messageId);
  await until(`all ${sent.length} messages`, () => events(t, 'message:new').length >= sent.length);
  await sleep(QUIET_MS);
  assert.deepEqual(events(t, 'message:new').map((m) => m.messageId), sent, dump(t));
  const reply = await ack(t, 'message:send', { issueId: input.issueId, content: 'over the upgraded transport' });
  assert.equal(reply.ok, true, JSON.stringify(reply));
  assert.equal(t.socket.io.engine.transport.name, 'websocket');
  assert.deepEqual(t.disconnects, []);
};

/** Long-polling only: events both ways, acks, room and global events. */
scenarios['connect-polling'] = async () => {
  const { alice, bob } = input.users;
  const t = await connect('alice', { auth: { token: alice.token }, transports: ['polling'] });
  assert.equal(t.socket.io.engine.transport.name, 'polling');
  await join(t, input.issueId);
  const rest = await postMessage(bob, input.issueId, unique('over polling'));
  assert.deepEqual(await received(t, 'message:new', (p) => p.messageId === rest.messageId), rest);
  const reply = await ack(t, 'message:send', { issueId: input.issueId, content: 'sent over polling' });
  assert.equal(reply.ok, true, JSON.stringify(reply));
  await received(t, 'message:new', (p) => p.messageId === reply.message.messageId);
  const issue = await apiOk('POST', '/api/issues', bob.token, { title: unique('Polling issue'), category: 'water' }, 201);
  await received(t, 'issue:created', (p) => p.issueId === issue.issueId);
  // Longer than a polling round trip, to see the session live on.
  await sleep(QUIET_MS);
  assert.equal(t.socket.io.engine.transport.name, 'polling');
  assert.ok(t.socket.connected);
  assert.deepEqual(t.disconnects, []);
};

/** Every kind of bad credential is refused with 'Authentication failed'. */
scenarios['auth-failures'] = async () => {
  const { alice } = input.users;
  const ws = { transports: ['websocket'] };
  const cases = [
    ['no auth at all', { ...ws }],
    ['auth without token', { ...ws, auth: {} }],
    ['token null', { ...ws, auth: { token: null } }],
    ['token a number', { ...ws, auth: { token: 42 } }],
    ['token an object', { ...ws, auth: { token: { sub: alice.id } } }],
    ['empty token', { ...ws, auth: { token: '' } }],
    ['not a JWT', { ...ws, auth: { token: 'not-a-jwt' } }],
    ['three garbage segments', { ...ws, auth: { token: 'a.b.c' } }],
    ['truncated signature', { ...ws, auth: { token: alice.token.slice(0, -6) } }],
    ['Bearer prefix', { ...ws, auth: { token: `Bearer ${alice.token}` } }],
    ['token in the query, not in auth', { ...ws, query: { token: alice.token } }],
    ...Object.entries(input.badTokens).map(([name, token]) => [name, { ...ws, auth: { token } }]),
    ['expired token over long-polling', { transports: ['polling'], auth: { token: input.badTokens.expired } }],
  ];
  for (const [name, options] of cases) {
    const err = await refused(name, options);
    log(`${name}: connect_error ${JSON.stringify(err.message)}`);
    assert.equal(err.message, 'Authentication failed', `${name}: connect_error ${JSON.stringify(err.message)}`);
  }

  // On the wire: CONNECT_ERROR, nothing processed after it, and the server
  // closes the connection. The event is pipelined right behind the CONNECT.
  const r = await raw('raw refused');
  r.ws.send(`40${JSON.stringify({ token: input.badTokens.badlySigned })}`);
  r.ws.send(`421${JSON.stringify(['join:issue', input.issueId])}`);
  r.ws.send(`422${JSON.stringify(['message:send', { issueId: input.issueId, content: 'from a refused socket' }])}`);
  await closedByServer(r, 'CONNECT_ERROR');
  const socketFrames = r.frames.filter((f) => typeof f === 'string' && f.startsWith('4'));
  assert.deepEqual(socketFrames, ['44{"message":"Authentication failed"}'], `frames ${JSON.stringify(r.frames)}`);
  const history = await apiOk('GET', `/api/issues/${input.issueId}/messages`, alice.token, undefined, 200);
  assert.ok(!history.items.some((m) => m.content === 'from a refused socket'), 'an event after a refused CONNECT was processed');

  // The refusals did not hurt anyone: a good token still connects.
  const good = await connect('alice', { auth: { token: alice.token }, transports: ['websocket'] });
  await join(good, input.issueId);
};

/** The seed's connect_error handler: refresh the token, set it, connect again. */
scenarios['auth-refresh'] = async () => {
  const { alice } = input.users;
  const socket = io(URL_BASE, {
    forceNew: true,
    auth: { token: input.expiredToken },
    transports: ['websocket'],
    reconnectionAttempts: 5,
    reconnectionDelay: 2000,
  });
  const t = track(socket, 'alice');
  let refreshes = 0;
  const refreshAccessToken = async () => {
    refreshes += 1;
    const body = await apiOk('POST', '/api/auth/refresh', undefined, { refreshToken: alice.refresh }, 200);
    return body.accessToken;
  };
  socket.on('connect_error', (err) => {
    log('connect_error', err.message);
    if (err.message === 'Authentication failed') {
      // access token may be expired — try refreshing
      refreshAccessToken().then((newToken) => {
        socket.auth.token = newToken;
        socket.connect();
      });
    }
  });
  await until('the connection with the refreshed token', () => socket.connected);
  log('connected after', refreshes, 'refresh(es)');
  assert.equal(refreshes, 1);
  assert.equal(t.errors.length, 1);
  assert.equal(t.errors[0].message, 'Authentication failed');
  await join(t, input.issueId);
};

/**
 * The README's "Keeping a socket signed in": a fresh token handed to the live
 * socket in-band, then a logout of that sign-in ends the socket with
 * `session:ended` and a server disconnect the client does not retry.
 */
scenarios['session-lifecycle'] = async () => {
  const { alice } = input.users;
  const t = track(io(URL_BASE, { forceNew: true, auth: { token: alice.token } }), 'alice');
  let attempts = 0;
  t.socket.io.on('reconnect_attempt', () => { attempts += 1; });
  await connected(t);
  await until('the upgrade to websocket', () => t.socket.io.engine.transport.name === 'websocket');
  const { accessToken, refreshToken } =
    await apiOk('POST', '/api/auth/refresh', undefined, { refreshToken: alice.refresh }, 200);
  t.socket.auth.token = accessToken;
  const refreshed = await ack(t, 'auth:refresh', { token: accessToken });
  assert.equal(refreshed.ok, true, JSON.stringify(refreshed));
  assert.match(refreshed.expiresAt, /Z$/);
  const foreign = await ack(t, 'auth:refresh', { token: input.users.bob.token });
  assert.equal(foreign.error.code, 'forbidden');
  await join(t, input.issueId);

  await apiOk('POST', '/api/auth/logout', undefined, { refreshToken }, 204);
  const ended = await received(t, 'session:ended');
  assert.deepEqual(ended, { reason: 'logged_out' });
  await until('the disconnect', () => t.disconnects.length > 0);
  assert.deepEqual(t.disconnects, ['io server disconnect']);
  await sleep(QUIET_MS);
  assert.ok(!t.socket.connected && attempts === 0, `reconnected by itself: ${attempts} attempt(s)`);
  const err = await refused('alice again', { auth: { token: accessToken } });
  assert.equal(err.message, 'Authentication failed');
};

/** Only `/` and `/admin` exist; another namespace is refused, the engine connection lives on. */
scenarios['invalid-namespace'] = async () => {
  const { alice } = input.users;
  for (const [name, options] of [
    ['/ops over websocket', { auth: { token: alice.token }, transports: ['websocket'] }],
    ['/ops over polling', { auth: { token: alice.token }, transports: ['polling'] }],
    ['/ops without a token', { transports: ['websocket'] }],
  ]) {
    const err = await refused(name, options, `${URL_BASE}/ops`);
    log(`${name}: connect_error ${JSON.stringify(err.message)}`);
    assert.equal(err.message, 'Invalid namespace', name);
  }

  // One manager (one engine connection) for `/` and `/ops`: only `/ops`
  // is refused and `/` keeps working.
  const manager = new Manager(URL_BASE, { transports: ['websocket'], reconnection: false });
  const main = track(manager.socket('/', { auth: { token: alice.token } }), 'main');
  await connected(main);
  const admin = track(manager.socket('/ops', { auth: { token: alice.token } }), 'ops');
  await until('connect_error on /ops', () => admin.errors.length > 0 || admin.socket.connected);
  assert.ok(!admin.socket.connected);
  assert.equal(admin.errors[0].message, 'Invalid namespace');
  await sleep(QUIET_MS);
  assert.ok(main.socket.connected, `/ lost its connection: ${JSON.stringify(main.disconnects)}`);
  await join(main, input.issueId);
};

/** Acknowledgements of every event, good and bad payloads. */
scenarios.acks = async () => {
  const { alice } = input.users;
  const t = await connect('alice', { auth: { token: alice.token }, transports: ['websocket'] });

  assert.deepEqual(await ack(t, 'join:issue', input.issueId), { ok: true });
  assert.deepEqual(await ack(t, 'join:issue', input.issueId), { ok: true }, 'joining twice');
  for (const [what, args] of [
    ['an unknown well-formed id', [input.absentIssueId]],
    ['a malformed id', ['iss_not-a-ulid']],
    ['a message id', [`msg_${input.issueId.slice(4)}`]],
    ['a lowercase id', [input.issueId.toLowerCase()]],
    ['an empty string', ['']],
    ['a path traversal', ['../../etc/passwd']],
    ['a number', [42]],
    ['null', [null]],
    ['an object', [{ issueId: input.issueId }]],
    ['an array', [[input.issueId]]],
    ['no argument', []],
  ]) {
    assertErrorAck(await ack(t, 'join:issue', ...args), 'not_found', `join:issue with ${what}`);
  }

  assert.deepEqual(await ack(t, 'leave:issue', input.issueId), { ok: true });

  // message:send answers the stored message.
  const stored = await ack(t, 'message:send', { issueId: input.issueId, content: '  Reported to the council.  ' });
  assert.deepEqual(sortedKeys(stored), ['message', 'ok'], JSON.stringify(stored));
  assert.equal(stored.ok, true);
  assertMessage(stored.message, { issueId: input.issueId, content: 'Reported to the council.', author: alice });
  const history = await apiOk('GET', `/api/issues/${input.issueId}/messages`, alice.token, undefined, 200);
  assert.deepEqual(history.items.find((m) => m.messageId === stored.message.messageId), stored.message, 'the ack is the stored message');

  // Lengths count characters, not UTF-16 units.
  const longest = await ack(t, 'message:send', { issueId: input.issueId, content: '😀'.repeat(2000) });
  assert.equal(longest.ok, true, `2000 emoji: ${JSON.stringify(longest).slice(0, 200)}`);
  assert.equal(longest.message.content, '😀'.repeat(2000));

  for (const [what, payload] of [
    ['empty content', { issueId: input.issueId, content: '' }],
    ['blank content', { issueId: input.issueId, content: ' \n\t ' }],
    ['content of 2001 characters', { issueId: input.issueId, content: 'x'.repeat(2001) }],
    ['2001 emoji', { issueId: input.issueId, content: '😀'.repeat(2001) }],
    ['content a number', { issueId: input.issueId, content: 42 }],
    ['content an array', { issueId: input.issueId, content: ['hello'] }],
    ['no content', { issueId: input.issueId }],
    ['no issueId', { content: 'hello' }],
    ['a string payload', 'hello'],
    ['a null payload', null],
  ]) {
    assertErrorAck(await ack(t, 'message:send', payload), 'validation_failed', `message:send with ${what}`);
  }
  for (const [what, issueId] of [
    ['an unknown issue', input.absentIssueId],
    ['a malformed issue id', 'iss_nope'],
  ]) {
    assertErrorAck(await ack(t, 'message:send', { issueId, content: 'hello' }), 'not_found', `message:send to ${what}`);
  }
  const after = await apiOk('GET', `/api/issues/${input.issueId}/messages?limit=100`, alice.token, undefined, 200);
  assert.equal(after.items.length, 2, `only the two valid messages are stored: ${JSON.stringify(after.items.map((m) => m.content.slice(0, 20)))}`);

  // Bad payloads without an ack are dropped; the socket lives on.
  t.socket.emit('join:issue', 42);
  t.socket.emit('message:send', { content: '' });
  t.socket.emit('no:such:event', { x: 1 });
  assert.deepEqual(await ack(t, 'join:issue', input.issueId), { ok: true });
  assert.ok(t.socket.connected);
  assert.deepEqual(t.disconnects, []);
};

/** Room events reach the members of the room and no one else. */
scenarios.rooms = async () => {
  const { alice, bob, carol, dave } = input.users;
  const opts = (user) => ({ auth: { token: user.token }, transports: ['websocket'] });
  const a = await connect('alice (member)', opts(alice));
  const b = await connect('bob (member, polling)', { ...opts(bob), transports: ['polling'] });
  const c = await connect('carol (other room)', opts(carol));
  const d = await connect('dave (left)', opts(dave));
  const issue = input.issueId;
  await join(a, issue);
  await join(a, issue); // twice: still one delivery
  await join(b, issue);
  await join(c, input.otherIssueId);
  await join(d, issue);
  assert.deepEqual(await ack(d, 'leave:issue', issue), { ok: true });

  // Sent over the socket: the sender is a member and receives it too.
  const reply = await ack(a, 'message:send', { issueId: issue, content: unique('socket message') });
  assert.equal(reply.ok, true, JSON.stringify(reply));
  const fromSocket = (p) => p.messageId === reply.message.messageId;
  assert.deepEqual(await received(a, 'message:new', fromSocket), reply.message);
  assert.deepEqual(await received(b, 'message:new', fromSocket), reply.message);

  // Posted over REST.
  const rest = await postMessage(bob, issue, unique('REST message'));
  const fromRest = (p) => p.messageId === rest.messageId;
  assert.deepEqual(await received(a, 'message:new', fromRest), rest);
  assert.deepEqual(await received(b, 'message:new', fromRest), rest);

  // A message in the other room reaches only carol.
  const other = await postMessage(carol, input.otherIssueId, unique('other room'));
  const fromOther = (p) => p.messageId === other.messageId;
  assert.deepEqual(await received(c, 'message:new', fromOther), other);

  await sleep(QUIET_MS);
  for (const t of [a, b]) {
    exactlyOnce(t, 'message:new', fromSocket, 'the socket message');
    exactlyOnce(t, 'message:new', fromRest, 'the REST message');
    nothing(t, 'message:new', fromOther, 'the other room\'s message');
  }
  nothing(c, 'message:new', (p) => p.issueId === issue, 'messages of a room it is not in');
  nothing(d, 'message:new', () => true, 'messages after leaving');
  exactlyOnce(c, 'message:new', fromOther, 'its room\'s message');
};

/** issue:* events reach every connected client, with exactly the contract's fields. */
scenarios['global-events'] = async () => {
  const { alice, bob, carol } = input.users;
  const official = input.official;
  const clients = [
    await connect('alice (websocket)', { auth: { token: alice.token }, transports: ['websocket'] }),
    await connect('bob (polling)', { auth: { token: bob.token }, transports: ['polling'] }),
    await connect('carol (default)', { auth: { token: carol.token } }),
  ];
  const all = async (event, pred, what) => Promise.all(clients.map((t) => received(t, event, pred, what)));

  const issue = await apiOk(
    'POST', '/api/issues', carol.token,
    { title: unique('Broken streetlight'), description: 'Dark since Monday', category: 'infrastructure', priority: 'high' },
    201,
  );
  const isNew = (p) => p.issueId === issue.issueId;
  for (const created of await all('issue:created', isNew, 'issue:created')) {
    assert.deepEqual(sortedKeys(created), ISSUE_CREATED_KEYS, JSON.stringify(created));
    for (const key of ISSUE_CREATED_KEYS) assert.deepEqual(created[key], issue[key], `issue:created ${key}`);
  }

  // The reporter changes the title: issue:updated.
  const retitled = await apiOk('PATCH', `/api/issues/${issue.issueId}`, carol.token, { title: unique('Streetlight out') }, 200);
  const titled = (p) => p.issueId === issue.issueId && p.title === retitled.title;
  for (const updated of await all('issue:updated', titled, 'issue:updated (title)')) {
    assert.deepEqual(sortedKeys(updated), ISSUE_UPDATED_KEYS, JSON.stringify(updated));
    for (const key of ISSUE_UPDATED_KEYS) assert.deepEqual(updated[key], retitled[key], `issue:updated ${key}`);
  }
  // The description alone is no reason for issue:updated.
  await apiOk('PATCH', `/api/issues/${issue.issueId}`, carol.token, { description: 'Still dark' }, 200);

  // An official changes status and assignment.
  const assigned = await apiOk(
    'PATCH', `/api/issues/${issue.issueId}`, official.token,
    { status: 'in_progress', assignedTo: official.id },
    200,
  );
  const inProgress = (p) => p.issueId === issue.issueId && p.status === 'in_progress';
  for (const updated of await all('issue:updated', inProgress, 'issue:updated (status)')) {
    assert.deepEqual(sortedKeys(updated), ISSUE_UPDATED_KEYS, JSON.stringify(updated));
    assert.equal(updated.assignedTo, official.id);
    for (const key of ISSUE_UPDATED_KEYS) assert.deepEqual(updated[key], assigned[key], `issue:updated ${key}`);
  }

  // Upvote, upvote again (no change), withdraw, withdraw again (no change).
  const path = `/api/issues/${issue.issueId}/upvote`;
  assert.deepEqual(await apiOk('POST', path, bob.token, undefined, 200), { issueId: issue.issueId, upvotes: 1, upvoted: true });
  const up = (p) => p.issueId === issue.issueId && p.upvoted === true;
  for (const upvoted of await all('issue:upvoted', up, 'issue:upvoted (upvoted)')) {
    assert.deepEqual(sortedKeys(upvoted), ISSUE_UPVOTED_KEYS, JSON.stringify(upvoted));
    assert.deepEqual(upvoted, { issueId: issue.issueId, upvotes: 1, upvotedBy: bob.id, upvoted: true });
  }
  await apiOk('POST', path, bob.token, undefined, 200);
  assert.deepEqual(await apiOk('DELETE', path, bob.token, undefined, 200), { issueId: issue.issueId, upvotes: 0, upvoted: false });
  const down = (p) => p.issueId === issue.issueId && p.upvoted === false;
  for (const withdrawn of await all('issue:upvoted', down, 'issue:upvoted (withdrawn)')) {
    assert.deepEqual(sortedKeys(withdrawn), ISSUE_UPVOTED_KEYS, JSON.stringify(withdrawn));
    assert.deepEqual(withdrawn, { issueId: issue.issueId, upvotes: 0, upvotedBy: bob.id, upvoted: false });
  }
  await apiOk('DELETE', path, bob.token, undefined, 200);

  await sleep(QUIET_MS);
  const mine = (p) => p.issueId === issue.issueId;
  for (const t of clients) {
    assert.equal(events(t, 'issue:created', mine).length, 1, dump(t));
    assert.equal(events(t, 'issue:updated', mine).length, 2, `two changes worth an issue:updated; ${dump(t)}`);
    assert.equal(events(t, 'issue:upvoted', mine).length, 2, `two count changes; ${dump(t)}`);
  }
};

/** A dropped transport: the client reconnects and re-joins (the seed's handler). */
scenarios.reconnect = async () => {
  const { alice, bob, dave } = input.users;
  // The seed's reconnection options.
  const seedOptions = (token) => ({
    forceNew: true,
    auth: { token },
    reconnection: true,
    reconnectionAttempts: 5, // give up after 5 attempts
    reconnectionDelay: 1000, // start at 1s
    reconnectionDelayMax: 10000, // cap at 10s
    randomizationFactor: 0.5, // add jitter to avoid thundering herd
  });
  const a = track(io(URL_BASE, seedOptions(alice.token)), 'alice (re-joins)');
  const d = track(io(URL_BASE, seedOptions(dave.token)), 'dave (does not re-join)');
  const observer = await connect('bob', { auth: { token: bob.token }, transports: ['websocket'] });
  await connected(a);
  await connected(d);

  let currentIssueId = input.issueId;
  const rejoined = [];
  let reconnectFailed = false;
  a.socket.io.on('reconnect', (attemptNumber) => {
    log(`Reconnected after ${attemptNumber} attempts`);
    // Re-join any rooms the user was in before disconnect
    if (currentIssueId) {
      a.socket.emit('join:issue', currentIssueId, (reply) => rejoined.push(reply));
    }
  });
  a.socket.io.on('reconnect_failed', () => {
    reconnectFailed = true;
  });
  let daveReconnected = false;
  d.socket.io.on('reconnect', () => {
    daveReconnected = true;
  });

  await join(a, currentIssueId);
  await join(d, currentIssueId);
  await join(observer, currentIssueId);
  await until('alice and dave on websocket', () =>
    [a, d].every((t) => t.socket.io.engine.transport.name === 'websocket'));
  const before = await ack(observer, 'message:send', { issueId: currentIssueId, content: unique('before the drop') });
  await received(a, 'message:new', (p) => p.messageId === before.message.messageId);
  await received(d, 'message:new', (p) => p.messageId === before.message.messageId);

  const oldIds = [a.socket.id, d.socket.id];
  log('dropping the transports');
  a.socket.io.engine.close();
  d.socket.io.engine.close();
  await until('the disconnects', () => a.disconnects.length > 0 && d.disconnects.length > 0);
  log('disconnected:', a.disconnects, d.disconnects);

  await until('alice to reconnect and re-join', () => rejoined.length > 0, 8000);
  await until('dave to reconnect', () => daveReconnected && d.socket.connected, 8000);
  assert.ok(!reconnectFailed);
  assert.deepEqual(rejoined, [{ ok: true }]);
  assert.ok(a.socket.connected);
  assert.notEqual(a.socket.id, oldIds[0], 'a new Socket.IO session after reconnecting');
  assert.notEqual(d.socket.id, oldIds[1], 'a new Socket.IO session after reconnecting');

  const viaSocket = await ack(observer, 'message:send', { issueId: currentIssueId, content: unique('after the drop') });
  const viaRest = await postMessage(bob, currentIssueId, unique('after the drop, REST'));
  for (const id of [viaSocket.message.messageId, viaRest.messageId]) {
    await received(a, 'message:new', (p) => p.messageId === id, `message ${id} after re-joining`);
    await received(observer, 'message:new', (p) => p.messageId === id);
  }
  await sleep(QUIET_MS);
  for (const id of [viaSocket.message.messageId, viaRest.messageId]) {
    exactlyOnce(a, 'message:new', (p) => p.messageId === id, `message ${id}`);
    // Membership is not kept across a disconnect.
    nothing(d, 'message:new', (p) => p.messageId === id, `message ${id} (it did not re-join)`);
  }
  assert.deepEqual(observer.disconnects, []);
  currentIssueId = null;
};

/** Malformed traffic closes the offender only; a room neighbour is not disturbed. */
scenarios.garbage = async () => {
  const { alice, bob } = input.users;
  const issue = input.issueId;
  const observer = await connect('bob (observer)', { auth: { token: bob.token }, transports: ['websocket'] });
  await join(observer, issue);

  const stillServed = async (after) => {
    const reply = await ack(observer, 'message:send', { issueId: issue, content: unique(`after ${after}`) });
    assert.equal(reply.ok, true, `observer's message:send after ${after}: ${JSON.stringify(reply)}`);
    await received(observer, 'message:new', (p) => p.messageId === reply.message.messageId, `its message after ${after}`);
  };

  const junk = randomBytes(64);
  const oversized = `42${JSON.stringify(['message:send', { issueId: issue, content: 'x'.repeat(1_000_001) }])}`;
  const cases = [
    // [name, connect and join first?, frames to send]
    ['an event before CONNECT', false, [`42${JSON.stringify(['join:issue', issue])}`]],
    ['an event whose data is an object', true, ['42{}']],
    ['an unknown Socket.IO packet type', true, ['4abc']],
    ['an unknown Engine.IO packet type', true, ['9']],
    ['an empty frame', true, ['']],
    ['truncated JSON', true, ['42["message:send",']],
    ['an event for a namespace not joined', true, [`42/admin,${JSON.stringify(['join:issue', issue])}`]],
    ['a second CONNECT', true, [`40${JSON.stringify({ token: alice.token })}`]],
    ['a ping from the client', true, ['2']],
    ['random binary', true, [junk]],
    ['text where an attachment was announced', true, [
      `451-${JSON.stringify(['message:send', { _placeholder: true, num: 0 }])}`, '42["join:issue"]',
    ]],
    ['a frame over maxPayload', true, [oversized]],
  ];
  for (const [name, connectFirst, frames] of cases) {
    const r = connectFirst ? await rawConnected(`raw: ${name}`, alice.token, issue) : await raw(`raw: ${name}`);
    for (const frame of frames) r.ws.send(frame);
    const code = await closedByServer(r, name);
    log(`${name}: closed by the server (code ${code})`);
    assert.ok(observer.socket.connected, `the observer was disconnected after ${name}: ${JSON.stringify(observer.disconnects)}`);
    await stillServed(name);
  }

  // A refused CONNECT followed by events: nothing is processed.
  const r = await raw('raw: bad token then events');
  const rejected = unique('from a refused socket');
  r.ws.send(`40${JSON.stringify({ token: 'garbage' })}`);
  r.ws.send(`421${JSON.stringify(['join:issue', issue])}`);
  r.ws.send(`42${JSON.stringify(['message:send', { issueId: issue, content: rejected }])}`);
  await closedByServer(r, 'a refused CONNECT');
  assert.deepEqual(
    r.frames.filter((f) => typeof f === 'string' && f.startsWith('4')),
    ['44{"message":"Authentication failed"}'],
  );
  await stillServed('a refused CONNECT');
  await sleep(QUIET_MS);
  nothing(observer, 'message:new', (p) => p.content === rejected, 'the refused socket\'s message');

  // The server is fine: new clients connect, old ones still talk.
  const fresh = await connect('alice (fresh)', { auth: { token: alice.token }, transports: ['websocket'] });
  await join(fresh, issue);
  const rest = await postMessage(alice, issue, unique('after the garbage'));
  await received(fresh, 'message:new', (p) => p.messageId === rest.messageId);
  await received(observer, 'message:new', (p) => p.messageId === rest.messageId);
  assert.deepEqual(observer.disconnects, []);
};

// ---- main -----------------------------------------------------------------------

await run(scenarios);
