// The Socket.IO Admin UI's protocol on `/admin`, driven with the OFFICIAL
// client as the UI drives it (the same events and arguments as
// @socket.io/admin-ui's ui/src), by tests/admin.rs against a live node.
//
// CP_INPUT (JSON):
//   url            base URL of the node
//   users          {alice, bob}: citizens {id, name, token, refresh, city}
//   admin          an admin {id, name, token, email, password}
//   citizenLogin   {email, password} of alice
//   issueId, otherIssueId   issues
//
// Exit code 0: the scenario passed; anything else: it failed.

import assert from 'node:assert/strict';

import { QUIET_MS, ack, connect, connected, dump, events, input, join, received, run, sleep, track, until } from './harness.mjs';
import { io } from 'socket.io-client';

const ADMIN_URL = `${input.url}/admin`;
const room = (id) => `room:issue:${id}`;

async function refusedWith(label, auth) {
  const t = track(io(ADMIN_URL, { forceNew: true, reconnection: false, auth, transports: ['websocket'] }), label);
  await until(`${label}: connect_error`, () => t.errors.length > 0 || t.socket.connected);
  assert.ok(!t.socket.connected, `${label}: connected, but must be refused`);
  return t.errors[0].message;
}

/** The UI's login form: username and password; every event's arguments kept in `t.all`. */
async function uiLogin(label = 'admin-ui') {
  const auth = { username: input.admin.email, password: input.admin.password };
  const socket = io(ADMIN_URL, { forceNew: true, reconnection: false, auth });
  const all = [];
  socket.onAny((...args) => all.push(args));
  const t = track(socket, label);
  t.all = all;
  await connected(t);
  return t;
}

/** What an admin socket knows of the sockets, as the UI's store keeps it. */
function sockets(t) {
  const all = new Map();
  for (const [event, ...args] of t.all) {
    const payload = args[0];
    if (event === 'all_sockets') {
      all.clear();
      for (const s of payload) all.set(s.id, structuredClone(s));
    } else if (event === 'socket_connected') {
      all.set(payload.id, structuredClone(payload));
    } else if (event === 'socket_disconnected') {
      all.delete(args[1]);
    } else if (event === 'room_joined') {
      all.get(args[2])?.rooms.push(args[1]);
    } else if (event === 'room_left') {
      const s = all.get(args[2]);
      if (s) s.rooms = s.rooms.filter((r) => r !== args[1]);
    }
  }
  return all;
}

const scenarios = {};

/** Only admins get in: by password (the UI's form) or by token. */
scenarios.refused = async () => {
  const { alice } = input.users;
  const cases = [
    ['no credentials', {}, 'invalid credentials'],
    ['a wrong password', { username: input.admin.email, password: 'not-the-password' }, 'invalid credentials'],
    ['an unknown email', { username: 'nobody@example.test', password: 'whatever-it-is' }, 'invalid credentials'],
    ['a citizen\'s password', { username: input.citizenLogin.email, password: input.citizenLogin.password }, 'admins only'],
    ['a citizen\'s token', { token: alice.token }, 'admins only'],
    ['a forged token', { token: 'a.b.c' }, 'invalid credentials'],
  ];
  for (const [label, auth, want] of cases) {
    const message = await refusedWith(label, auth);
    assert.equal(message, want, label);
  }
  const byToken = await connect('admin by token', { auth: { token: input.admin.token } }, ADMIN_URL);
  await received(byToken, 'config');
};

/** The watching side: config, stats, the listing, then live events; no actions. */
scenarios.readonly = async () => {
  const { alice, bob } = input.users;
  const a = await connect('alice', { auth: { token: alice.token } });
  await join(a, input.issueId);

  const ui = await uiLogin();
  const config = await received(ui, 'config');
  assert.deepEqual(config, { supportedFeatures: [] }, 'read-only: no actions offered');
  const stats = await received(ui, 'server_stats');
  assert.equal(typeof stats.serverId, 'string');
  assert.equal(stats.pid > 0 && stats.uptime >= 0, true, JSON.stringify(stats));
  assert.deepEqual(stats.namespaces.map((n) => n.name), ['/', '/admin']);
  const listed = await received(ui, 'all_sockets');
  const mine = listed.find((s) => s.id === a.socket.id);
  assert.ok(mine, `alice's socket is listed: ${JSON.stringify(listed)}`);
  assert.deepEqual(mine.rooms.sort(), [a.socket.id, room(input.issueId)].sort());
  assert.equal(mine.nsp, '/');
  assert.equal(mine.data.userId, alice.id);
  assert.equal(mine.transport, 'websocket');
  assert.equal(typeof mine.clientId, 'string');
  assert.ok(mine.handshake.issued > 0 && typeof mine.handshake.address === 'string', JSON.stringify(mine));

  // Bob polls first, then upgrades: the UI hears of the upgrade.
  const b = await connect('bob', { auth: { token: bob.token }, transports: ['polling', 'websocket'] });
  const connected = await received(ui, 'socket_connected', (s) => s.id === b.socket.id);
  assert.equal(connected.data.userId, bob.id);
  await until('bob on websocket', () => b.socket.io.engine.transport.name === 'websocket');
  if (connected.transport === 'polling') {
    await received(ui, 'socket_updated', (s) => s.id === b.socket.id && s.transport === 'websocket');
  }
  const again = await uiLogin('admin-ui again');
  const relisted = await received(again, 'all_sockets');
  assert.equal(relisted.find((s) => s.id === b.socket.id)?.transport, 'websocket', JSON.stringify(relisted));
  again.socket.close();
  await join(b, input.otherIssueId);
  await until('room_joined', () => sockets(ui).get(b.socket.id)?.rooms.includes(room(input.otherIssueId)));
  assert.deepEqual(await ack(b, 'leave:issue', input.otherIssueId), { ok: true });
  await until('room_left', () => !sockets(ui).get(b.socket.id)?.rooms.includes(room(input.otherIssueId)));

  // Read-only: every action is refused, and nothing happens.
  for (const [event, args] of [
    ['_disconnect', ['/', false, a.socket.id]],
    ['join', ['/', room(input.otherIssueId), a.socket.id]],
    ['leave', ['/', room(input.issueId), a.socket.id]],
    ['emit', ['/', a.socket.id, 'hello', 1]],
  ]) {
    const reply = await ack(ui, event, ...args);
    assert.equal(reply.ok, false, `${event}: ${JSON.stringify(reply)}`);
    assert.equal(reply.error.code, 'forbidden', `${event}: ${JSON.stringify(reply)}`);
  }
  await sleep(QUIET_MS);
  assert.ok(a.socket.connected, 'alice is still connected');
  assert.equal(events(a, 'hello').length, 0);
  assert.deepEqual(sockets(ui).get(a.socket.id).rooms.sort(), [a.socket.id, room(input.issueId)].sort());

  const bobId = b.socket.id;
  b.socket.disconnect();
  await until('socket_disconnected', () => !sockets(ui).has(bobId));
  const gone = ui.all.find(([event]) => event === 'socket_disconnected');
  assert.deepEqual(gone.slice(1, 4), ['/', bobId, 'client namespace disconnect'], dump(ui));
  // Stats keep coming, every 2 s.
  const before = events(ui, 'server_stats').length;
  await until('more server_stats', () => events(ui, 'server_stats').length > before, 4000);
};

/** With ADMIN_UI_READONLY=false: emit, join, leave and _disconnect act. */
scenarios.actions = async () => {
  const { alice, bob } = input.users;
  const a = await connect('alice', { auth: { token: alice.token } });
  const b = await connect('bob', { auth: { token: bob.token } });
  await join(b, input.issueId);
  const ui = await uiLogin();
  const config = await received(ui, 'config');
  for (const f of ['EMIT', 'JOIN', 'LEAVE', 'DISCONNECT', 'MDISCONNECT']) assert.ok(config.supportedFeatures.includes(f), f);
  await received(ui, 'all_sockets');

  // emit to one socket, then to a room
  assert.deepEqual(await ack(ui, 'emit', '/', a.socket.id, 'notice', { n: 1 }), { ok: true });
  assert.deepEqual(await received(a, 'notice'), { n: 1 });
  assert.deepEqual(await ack(ui, 'emit', '/', room(input.issueId), 'notice', { n: 2 }), { ok: true });
  assert.deepEqual(await received(b, 'notice'), { n: 2 });
  await sleep(QUIET_MS);
  assert.deepEqual(events(a, 'notice'), [{ n: 1 }], 'the room emit reached its members only');

  // join: alice now gets the room's messages; leave: she does not
  assert.deepEqual(await ack(ui, 'join', '/', room(input.issueId), a.socket.id), { ok: true });
  await until('alice in the room', () => sockets(ui).get(a.socket.id)?.rooms.includes(room(input.issueId)));
  const reply = await ack(b, 'message:send', { issueId: input.issueId, content: 'hello room' });
  assert.equal(reply.ok, true, JSON.stringify(reply));
  await received(a, 'message:new', (m) => m.content === 'hello room');
  assert.deepEqual(await ack(ui, 'leave', '/', room(input.issueId), a.socket.id), { ok: true });
  await until('alice out of the room', () => !sockets(ui).get(a.socket.id)?.rooms.includes(room(input.issueId)));
  assert.equal((await ack(ui, 'join', '/', 'lobby', a.socket.id)).error.code, 'invalid_input');

  // _disconnect, as the UI's sockets page sends it
  const aliceId = a.socket.id;
  ui.socket.emit('_disconnect', '/', false, aliceId);
  await until('alice disconnected', () => a.disconnects.length > 0);
  assert.deepEqual(a.disconnects, ['io server disconnect']);
  await until('socket_disconnected', () => !sockets(ui).has(aliceId));
  assert.ok(ui.all.some(([event, , id]) => event === 'socket_disconnected' && id === aliceId), dump(ui));
  await sleep(QUIET_MS);
  assert.ok(b.socket.connected, 'bob was not the one disconnected');
};

/** The UI's sign-in draws on AUTH_RATE_PER_MINUTE like REST's login. */
scenarios['rate-limited'] = async () => {
  const wrong = { username: input.admin.email, password: 'not-the-password' };
  const seen = [];
  for (let i = 0; i < input.authRate + 1; i++) seen.push(await refusedWith(`attempt ${i + 1}`, wrong));
  assert.deepEqual(seen.slice(0, input.authRate), Array(input.authRate).fill('invalid credentials'));
  assert.match(seen.at(-1), /^rate_limited/);
  const right = await refusedWith('the right password, too soon', { username: input.admin.email, password: input.admin.password });
  assert.match(right, /^rate_limited/);
};

/** With ADMIN_UI=false there is no `/admin`. */
scenarios.off = async () => {
  const message = await refusedWith('admin', { username: input.admin.email, password: input.admin.password });
  assert.equal(message, 'Invalid namespace');
};

run(scenarios);
