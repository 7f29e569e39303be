// Cluster scenarios with the OFFICIAL Socket.IO client, run by
// tests/cluster/main.rs against three live nodes on one PostgreSQL and one
// Redis: each client talks to the node it is given, and what one node's
// client does must reach the others' exactly once.
//
//   CP_INPUT='{"urls":[…],"users":{…},"issueId":…,"redisUrl":…}' node tests/js/cluster.mjs <scenario>
//
// CP_INPUT (JSON):
//   urls          the nodes' base URLs (node 0, 1, 2)
//   users         {alice, bob, carol, dave, …}: {id, name, token, refresh, city}
//   official      an official (events)
//   issueId       an issue reported by alice; otherIssueId a second one
//   redisUrl      the cluster's Redis (emitter)
//   victimPid     the process id of the node to SIGKILL (kill); victim its index
//
// The plumbing is tests/js/harness.mjs.

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

import { QUIET_MS, WAIT_MS, ack, connect, events, input, join, log, nothing, received, run, sleep, until } from './harness.mjs';

const { urls, users, issueId } = input;

/** A REST call to one node. */
async function api(url, method, path, token, body, status) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${url}${path}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(WAIT_MS * 2),
  });
  const json = await res.json().catch(() => null);
  if (status !== undefined) assert.equal(res.status, status, `${method} ${url}${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

const on = (i, user, label, transports = ['websocket']) =>
  connect(label ?? `${user.name}@node${i}`, { auth: { token: user.token }, transports }, urls[i]);

/** Exactly one `event` matching `pred` on each of `ts`, after a quiet moment. */
async function exactlyOnce(ts, event, pred, what) {
  for (const t of ts) await received(t, event, pred, what);
  await sleep(QUIET_MS);
  for (const t of ts) assert.equal(events(t, event, pred).length, 1, `${t.label} must receive ${what} once`);
}

const scenarios = {};

// Issue events, room messages and reactions, whatever node each side is on.
scenarios.events = async () => {
  const a = await on(0, users.alice);
  const b = await on(1, users.bob);
  const c = await on(2, users.carol);
  const outsider = await on(1, users.dave);
  for (const t of [a, b, c]) await join(t, issueId);

  const created = await api(urls[0], 'POST', '/api/issues', users.alice.token, { title: 'Cluster pothole', category: 'roads' }, 201);
  await exactlyOnce([a, b, c, outsider], 'issue:created', (p) => p.issueId === created.issueId, 'issue:created');

  await api(urls[1], 'POST', `/api/issues/${created.issueId}/upvote`, users.bob.token, undefined, 200);
  await exactlyOnce([a, b, c, outsider], 'issue:upvoted', (p) => p.issueId === created.issueId && p.upvotes === 1, 'issue:upvoted');
  // The upvotes from here on go to three nodes; TRENDING_UPVOTES is 3.

  // Upvotes on three nodes count together: TRENDING_UPVOTES is 3 here.
  await api(urls[2], 'POST', `/api/issues/${created.issueId}/upvote`, users.carol.token, undefined, 200);
  nothing(a, 'issue:trending');
  await api(urls[0], 'POST', `/api/issues/${created.issueId}/upvote`, users.dave.token, undefined, 200);
  await exactlyOnce([a, b, c, outsider], 'issue:trending', (p) => p.issueId === created.issueId && p.recentUpvotes === 3 && p.upvotes === 3, 'issue:trending');
  // Still at the threshold: not news again.
  await api(urls[1], 'POST', `/api/issues/${created.issueId}/upvote`, users.erin.token, undefined, 200);
  await received(a, 'issue:upvoted', (p) => p.issueId === created.issueId && p.upvotes === 4, 'the fourth upvote');
  await sleep(QUIET_MS);
  assert.equal(events(a, 'issue:trending').length, 1, 'trending announced once');

  await api(urls[2], 'PATCH', `/api/issues/${created.issueId}`, input.official.token, { status: 'in_progress' }, 200);
  await exactlyOnce([a, b, c, outsider], 'issue:updated', (p) => p.issueId === created.issueId && p.status === 'in_progress', 'issue:updated');

  // A message sent on node 2's socket reaches the room on every node.
  const sent = await ack(c, 'message:send', { issueId, content: 'from node 2' });
  assert.equal(sent.ok, true, JSON.stringify(sent));
  const id = sent.message.messageId;
  await exactlyOnce([a, b, c], 'message:new', (m) => m.messageId === id, 'message:new');
  // …and a REST message posted on node 0 too.
  const posted = await api(urls[0], 'POST', `/api/issues/${issueId}/messages`, users.alice.token, { content: 'over REST' }, 201);
  await exactlyOnce([a, b, c], 'message:new', (m) => m.messageId === posted.messageId, 'REST message:new');
  nothing(outsider, 'message:new');

  // A reaction made on node 1 reaches the room on every node.
  await api(urls[1], 'PUT', `/api/messages/${id}/reactions/${encodeURIComponent('👍')}`, users.bob.token, undefined, 200);
  await exactlyOnce([a, b, c], 'message:reaction', (r) => r.messageId === id && r.reactions['👍'] === 1, 'message:reaction');
  nothing(outsider, 'message:reaction');

  // Leaving on one node stops delivery there only.
  assert.equal((await ack(b, 'leave:issue', issueId)).ok, true);
  const after = await ack(a, 'message:send', { issueId, content: 'after bob left' });
  await exactlyOnce([a, c], 'message:new', (m) => m.messageId === after.message.messageId, 'message after leave');
  nothing(b, 'message:new', (m) => m.messageId === after.message.messageId);
};

// Typing: members only, never echoed to any of the typist's tabs on any
// node, repeats not re-broadcast, cleared after 5 s, on leave and on
// disconnect.
scenarios.typing = async () => {
  const a = await on(0, users.alice);
  const c = await on(2, users.carol);
  const bob1 = await on(1, users.bob, 'bob tab 1 @node1');
  const bob2 = await on(2, users.bob, 'bob tab 2 @node2');
  const outsider = await on(0, users.dave);
  for (const t of [a, c, bob1, bob2]) await join(t, issueId);
  const bobTyping = (v) => (p) => p.userId === users.bob.id && p.issueId === issueId && p.isTyping === v;

  const notMember = await ack(outsider, 'user:typing', { issueId, isTyping: true });
  assert.equal(notMember.ok, false);
  assert.equal(notMember.error.code, 'forbidden');

  assert.equal((await ack(bob1, 'user:typing', { issueId, isTyping: true })).ok, true);
  await received(a, 'user:typing', bobTyping(true), 'bob typing');
  await received(c, 'user:typing', bobTyping(true), 'bob typing');
  // Repeats only move the expiry.
  await sleep(1500);
  assert.equal((await ack(bob1, 'user:typing', { issueId, isTyping: true })).ok, true);
  await sleep(QUIET_MS);
  for (const t of [a, c]) assert.equal(events(t, 'user:typing', bobTyping(true)).length, 1, `${t.label}: one typing:true`);
  for (const t of [bob1, bob2, outsider]) nothing(t, 'user:typing');

  // Cleared 5 s after the last isTyping: true (1.5 s + QUIET ago).
  const started = Date.now();
  await received(a, 'user:typing', bobTyping(false), 'bob cleared', 7000);
  await received(c, 'user:typing', bobTyping(false), 'bob cleared', 2000);
  const waited = Date.now() - started;
  assert.ok(waited > 2500, `cleared too early (${waited} ms after the repeat's quiet)`);
  for (const t of [bob1, bob2]) nothing(t, 'user:typing');

  // Cleared on leave…
  assert.equal((await ack(c, 'user:typing', { issueId, isTyping: true })).ok, true);
  const carolTyping = (v) => (p) => p.userId === users.carol.id && p.isTyping === v;
  await received(a, 'user:typing', carolTyping(true), 'carol typing');
  assert.equal((await ack(c, 'leave:issue', issueId)).ok, true);
  await received(a, 'user:typing', carolTyping(false), 'carol cleared on leave', 2000);
  await received(bob1, 'user:typing', carolTyping(false), 'carol cleared on leave', 2000);

  // …and on disconnect.
  assert.equal((await ack(a, 'user:typing', { issueId, isTyping: true })).ok, true);
  const aliceTyping = (v) => (p) => p.userId === users.alice.id && p.isTyping === v;
  await received(bob2, 'user:typing', aliceTyping(true), 'alice typing');
  a.socket.disconnect();
  await received(bob1, 'user:typing', aliceTyping(false), 'alice cleared on disconnect', 2000);
  await received(bob2, 'user:typing', aliceTyping(false), 'alice cleared on disconnect', 2000);
};

// Presence: online on the first socket anywhere, offline after the last
// one anywhere; the cluster's list from any node.
scenarios.presence = async () => {
  const watcher = await on(0, users.alice);
  const dave = users.dave;
  const isDave = (v) => (p) => p.userId === dave.id && p.online === v;
  const tab1 = await on(2, dave, 'dave tab 1 @node2');
  await received(watcher, 'presence:update', isDave(true), 'dave online');
  const tab2 = await on(1, dave, 'dave tab 2 @node1');
  await sleep(QUIET_MS * 2);
  assert.equal(events(watcher, 'presence:update', isDave(true)).length, 1, 'a second tab elsewhere is not news');

  for (let i = 0; i < urls.length; i++) {
    const listed = await api(urls[i], 'GET', '/api/presence', users.alice.token, undefined, 200);
    assert.ok(listed.items.some((u) => u.userId === dave.id), `node ${i} lists dave: ${JSON.stringify(listed)}`);
    assert.ok(listed.items.some((u) => u.userId === users.alice.id), `node ${i} lists alice`);
  }
  const viaSocket = await ack(watcher, 'presence:list', {});
  assert.ok(viaSocket.items.some((u) => u.userId === dave.id), JSON.stringify(viaSocket));

  tab1.socket.disconnect();
  await sleep(QUIET_MS * 2);
  nothing(watcher, 'presence:update', isDave(false), 'dave offline while a tab is open on another node');
  tab2.socket.disconnect();
  await received(watcher, 'presence:update', isDave(false), 'dave offline');
  const listed = await api(urls[2], 'GET', '/api/presence', users.alice.token, undefined, 200);
  assert.ok(!listed.items.some((u) => u.userId === dave.id), `dave is no longer listed: ${JSON.stringify(listed)}`);
};

// A node killed with SIGKILL: its users go offline, announced by the
// survivors, within 15 s.
scenarios.kill = async () => {
  const victim = input.victim;
  const survivor = urls.findIndex((_, i) => i !== victim);
  const watcher = await on(survivor, users.alice);
  await on(victim, users.erin);
  const isErin = (v) => (p) => p.userId === users.erin.id && p.online === v;
  await received(watcher, 'presence:update', isErin(true), 'erin online');
  const killed = Date.now();
  process.kill(input.victimPid, 'SIGKILL');
  log(`killed node ${victim} (pid ${input.victimPid})`);
  await received(watcher, 'presence:update', isErin(false), 'erin offline after the kill', 15000);
  const took = Date.now() - killed;
  log(`erin offline after ${took} ms`);
  assert.ok(took <= 15000, `offline after ${took} ms`);
  const listed = await api(urls[survivor], 'GET', '/api/presence', users.alice.token, undefined, 200);
  assert.ok(!listed.items.some((u) => u.userId === users.erin.id), JSON.stringify(listed));
  assert.ok(listed.items.some((u) => u.userId === users.alice.id), JSON.stringify(listed));
  console.log(`OFFLINE_AFTER_MS=${took}`);
};

// After a Redis fault: events cross nodes again (retrying until they do,
// within the time the test gives), each exactly once.
scenarios.heals = async () => {
  const a = await on(0, users.alice);
  const b = await on(1, users.bob);
  await join(a, issueId);
  await join(b, issueId);
  const deadline = Date.now() + Number(input.healWithinMs ?? 15000);
  let healed = null;
  while (!healed && Date.now() < deadline) {
    const sent = await ack(a, 'message:send', { issueId, content: `probe ${Date.now()}` });
    assert.equal(sent.ok, true, JSON.stringify(sent));
    const id = sent.message.messageId;
    try {
      await until('the probe on node 1', () => events(b, 'message:new', (m) => m.messageId === id).length > 0, 1000);
      healed = id;
    } catch {
      log('not yet across');
    }
  }
  assert.ok(healed, 'events never crossed nodes again');
  // Now steady: one more each way, exactly once.
  const back = await ack(b, 'message:send', { issueId, content: 'from node 1' });
  await exactlyOnce([a, b], 'message:new', (m) => m.messageId === back.message.messageId, 'message after healing');
  const created = await api(urls[2], 'POST', '/api/issues', users.alice.token, { title: 'After the fault', category: 'roads' }, 201);
  await exactlyOnce([a, b], 'issue:created', (p) => p.issueId === created.issueId, 'issue:created after healing');
};

// `@socket.io/redis-emitter` from another service reaches the matching
// sockets on every node.
scenarios.emitter = async () => {
  const require = createRequire(import.meta.url);
  const { Emitter } = require('@socket.io/redis-emitter');
  const { createClient } = require('redis');
  const redis = createClient({ url: input.redisUrl });
  await redis.connect();
  try {
    const emitter = new Emitter(redis);
    const members = [await on(0, users.alice), await on(1, users.bob), await on(2, users.carol)];
    const outsider = await on(2, users.dave);
    for (const t of members) await join(t, issueId);

    emitter.emit('city:announcement', { text: 'road works on Main St', n: 1 });
    await exactlyOnce([...members, outsider], 'city:announcement', (p) => p.text === 'road works on Main St' && p.n === 1, 'emit() to everyone');

    emitter.to(`room:issue:${issueId}`).emit('issue:note', { issueId, note: 'crew on its way' }, 2);
    await exactlyOnce(members, 'issue:note', (p) => p.note === 'crew on its way', 'to(room).emit()');
    const args = members[0].seen.find((e) => e.event === 'issue:note');
    assert.ok(args, 'the room event arrived');
    nothing(outsider, 'issue:note');
  } finally {
    await redis.quit();
  }
};

run(scenarios);
