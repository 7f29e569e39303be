// Realtime scenarios of CivicPulse (room messages and reactions) driven
// with the OFFICIAL Socket.IO client by tests/realtime.rs against a live
// node: the compatibility tier next to the in-process Rust tests of
// tests/realtime.rs, which cover the whole realtime domain (rooms, messages,
// reactions, issue events, typing, presence, ordering) through the test
// kit's own client.
//
//   CP_INPUT='{"url":"http://127.0.0.1:PORT","users":{…},"issueId":…}' \
//     node tests/js/realtime.mjs <scenario>
//
// CP_INPUT (JSON):
//   url            base URL of the node (REST under /api, Socket.IO at /socket.io/)
//   users          {alice, bob, carol, dave, erin}: {id, name, token, refresh, city}
//                  (alice, bob and carol in one city, dave in another, erin in none)
//   official       an official {id, name, token, refresh, city}
//   issueId        an issue every scenario may use (reported by alice)
//   otherIssueId   a second issue
//   absentIssueId  a well-formed issue id that names nothing
// CP_TIMEOUT_MS  overall time limit (default 20000).
//
// Exit code 0: the scenario passed; anything else: it failed, with the
// reason on stderr and the steps taken on stdout.
//
// The plumbing shared with tests/js/scenarios.mjs is tests/js/harness.mjs.

import assert from 'node:assert/strict';

import {
  MESSAGE_KEYS, QUIET_MS, WAIT_MS, ack, assertErrorAck, assertMessage as assertMessageFields, connect, dump, events,
  input, join, nothing, received, restClient, run, sleep, sortedKeys, unique, until,
} from './harness.mjs';

// The payload fields of API.md that only these scenarios look at, sorted.
const REACTION_KEYS = ['issueId', 'messageId', 'reactions'];

// This script has always given a REST call twice the wait scenarios.mjs
// gives it; kept so that no scenario's limits change.
const { apiOk, apiError, postMessage } = restClient(WAIT_MS * 2);

// ---- the official client ------------------------------------------------------

/** Waits until `t` received `n` events `event` matching `pred`. */
async function receivedCount(t, event, n, pred = () => true, what = event, ms = WAIT_MS) {
  try {
    await until(`${t.label} to receive ${n} × ${what}`, () => events(t, event, pred).length >= n, ms);
  } catch (e) {
    e.message += ` (got ${events(t, event, pred).length}); ${dump(t)}`;
    throw e;
  }
}

function exactly(t, event, pred, want, what = event) {
  assert.deepEqual(events(t, event, pred), want, `${t.label}: ${what}; ${dump(t)}`);
}

const ws = (user) => ({ auth: { token: user.token }, transports: ['websocket'] });
const polling = (user) => ({ auth: { token: user.token }, transports: ['polling'] });

/**
 * A round trip through the socket's session: every event the server sent
 * `t` before answering is in `t.seen` once this resolves.
 */
async function roundTrip(t) {
  const reply = await ack(t, 'presence:list', {});
  assert.equal(reply.ok, true, `${t.label} presence:list: ${JSON.stringify(reply)}`);
}

/** Lets anything that should not arrive have its chance to. */
async function quiet(...clients) {
  await Promise.all(clients.map(roundTrip));
  await sleep(QUIET_MS);
}

/** The message checks both scripts make, and: none of these users has an avatar. */
function assertMessage(m, want) {
  assertMessageFields(m, want);
  assert.equal(m.author.avatarUrl, null, JSON.stringify(m));
}

// ---- scenarios ----------------------------------------------------------------

const scenarios = {};

/** message:send and POST …/messages: the ack and message:new, to members only. */
scenarios.messages = async () => {
  const { alice, bob, carol, dave } = input.users;
  const issue = input.issueId;
  const a = await connect('alice (member)', ws(alice));
  const b = await connect('bob (member, polling)', polling(bob));
  const c = await connect('carol (not a member)', ws(carol));
  const d = await connect('dave (not a member, sends)', ws(dave));
  const o = await connect('carol (member of the other room)', ws(carol));
  await join(a, issue);
  await join(b, issue);
  await join(o, input.otherIssueId);
  const members = [a, b];
  const outsiders = [c, d, o];
  const want = [];

  // Over the socket: the ack is {ok: true, message}; every member, the
  // sender included, receives message:new with the very same payload.
  const sent = await ack(a, 'message:send', { issueId: issue, content: `  ${unique('Reported to the council')}  ` });
  assert.deepEqual(sortedKeys(sent), ['message', 'ok'], JSON.stringify(sent));
  assert.equal(sent.ok, true);
  assertMessage(sent.message, { issueId: issue, content: sent.message.content.trim(), author: alice });
  assert.ok(sent.message.content.startsWith('Reported to the council'), 'content is stored trimmed');
  for (const t of members) {
    assert.deepEqual(await received(t, 'message:new', (p) => p.messageId === sent.message.messageId), sent.message);
  }
  want.push(sent.message);

  // Over REST: the 201 body and message:new are the same, at the same members.
  const rest = await postMessage(bob, issue, unique('Posted over REST'));
  assertMessage(rest, { issueId: issue, content: rest.content, author: bob });
  for (const t of members) {
    const got = await received(t, 'message:new', (p) => p.messageId === rest.messageId);
    assert.deepEqual(sortedKeys(got), MESSAGE_KEYS);
    assert.deepEqual(got, rest);
  }
  want.push(rest);

  // A socket that is not in the room may post to it; it does not hear it.
  const fromOutside = await ack(d, 'message:send', { issueId: issue, content: unique('from outside the room') });
  assert.equal(fromOutside.ok, true, JSON.stringify(fromOutside));
  assertMessage(fromOutside.message, { issueId: issue, content: fromOutside.message.content, author: dave });
  for (const t of members) {
    assert.deepEqual(await received(t, 'message:new', (p) => p.messageId === fromOutside.message.messageId), fromOutside.message);
  }
  want.push(fromOutside.message);

  // Without an ack the message is stored and delivered all the same.
  const silent = unique('no ack asked');
  a.socket.emit('message:send', { issueId: issue, content: silent });
  const silentMessage = await received(b, 'message:new', (p) => p.content === silent);
  assertMessage(silentMessage, { issueId: issue, content: silent, author: alice });
  want.push(silentMessage);

  // Bad payloads: an error ack, nothing stored, nothing emitted.
  for (const [what, payload, code] of [
    ['empty content', { issueId: issue, content: '' }, 'validation_failed'],
    ['blank content', { issueId: issue, content: ' \n ' }, 'validation_failed'],
    ['2001 characters', { issueId: issue, content: 'x'.repeat(2001) }, 'validation_failed'],
    ['content a number', { issueId: issue, content: 7 }, 'validation_failed'],
    ['no issueId', { content: 'hello' }, 'validation_failed'],
    ['a string payload', 'hello', 'validation_failed'],
    ['an unknown issue', { issueId: input.absentIssueId, content: 'hello' }, 'not_found'],
    ['a malformed issue id', { issueId: 'iss_nope', content: 'hello' }, 'not_found'],
  ]) {
    assertErrorAck(await ack(a, 'message:send', payload), code, `message:send with ${what}`);
  }
  // Bad payloads without an ack are dropped quietly.
  a.socket.emit('message:send', { issueId: issue, content: '' });
  a.socket.emit('message:send', { issueId: input.absentIssueId, content: 'lost' });

  // The other room's message stays there.
  const other = await postMessage(carol, input.otherIssueId, unique('other room'));
  assert.deepEqual(await received(o, 'message:new', (p) => p.messageId === other.messageId), other);

  await quiet(...members, ...outsiders);
  for (const t of members) exactly(t, 'message:new', () => true, want, 'the room\'s messages, once each, in order');
  nothing(c, 'message:new', () => true, 'messages of a room it is not in');
  nothing(d, 'message:new', () => true, 'messages of a room it is not in (even its own)');
  exactly(o, 'message:new', () => true, [other], 'only its own room\'s message');

  // History holds exactly what was acknowledged or delivered.
  const history = await apiOk('GET', `/api/issues/${issue}/messages?limit=100`, alice.token);
  assert.deepEqual(history.items, want, 'the stored history equals the messages delivered');
  for (const t of [...members, ...outsiders]) assert.deepEqual(t.disconnects, [], `${t.label} was disconnected`);
};

/** message:reaction goes to the room when the counts change, and only then. */
scenarios.reactions = async () => {
  const { alice, bob, carol } = input.users;
  const issue = input.issueId;
  const a = await connect('alice (member)', ws(alice));
  const b = await connect('bob (member, polling)', polling(bob));
  const c = await connect('carol (not a member)', ws(carol));
  await join(a, issue);
  await join(b, issue);
  const m = await postMessage(alice, issue, unique('React to me'));
  for (const t of [a, b]) await received(t, 'message:new', (p) => p.messageId === m.messageId);

  const thumbs = encodeURIComponent('👍');
  const heart = encodeURIComponent('❤️');
  const party = encodeURIComponent('🎉');
  const path = (emoji) => `/api/messages/${m.messageId}/reactions/${emoji}`;
  const expected = [];
  const isMine = (p) => p.messageId === m.messageId;

  /** A change: the answer, and the same payload at every member. */
  const change = async (method, user, emoji, reactions) => {
    const body = await apiOk(method, path(emoji), user.token);
    assert.deepEqual(body, { messageId: m.messageId, issueId: issue, reactions }, `${method} ${decodeURIComponent(emoji)}`);
    expected.push(body);
    for (const t of [a, b]) {
      await receivedCount(t, 'message:reaction', expected.length, isMine, 'message:reaction');
      const got = events(t, 'message:reaction', isMine).at(-1);
      assert.deepEqual(sortedKeys(got), REACTION_KEYS, JSON.stringify(got));
      assert.deepEqual(got, body);
    }
  };
  /** No change: the same answer, no event. */
  const same = async (method, user, emoji, reactions) => {
    const body = await apiOk(method, path(emoji), user.token);
    assert.deepEqual(body, { messageId: m.messageId, issueId: issue, reactions }, `${method} ${decodeURIComponent(emoji)} (no change)`);
  };

  await change('PUT', bob, thumbs, { '👍': 1 });
  await same('PUT', bob, thumbs, { '👍': 1 });
  await change('PUT', alice, heart, { '👍': 1, '❤️': 1 });
  // A non-member may react over REST; the room hears it, the reactor does not.
  await change('PUT', carol, thumbs, { '👍': 2, '❤️': 1 });
  await change('DELETE', bob, thumbs, { '👍': 1, '❤️': 1 });
  await same('DELETE', bob, thumbs, { '👍': 1, '❤️': 1 });
  await same('DELETE', bob, party, { '👍': 1, '❤️': 1 });
  await change('DELETE', alice, heart, { '👍': 1 });
  await change('DELETE', carol, thumbs, {});
  await same('DELETE', carol, thumbs, {});
  // Refused requests emit nothing.
  await apiError('PUT', path('abc'), bob.token, undefined, 422, 'validation_failed');
  await apiError('PUT', `/api/messages/msg_01HN5K7ZQ4X9J8W2V3B6C1D0EF/reactions/${thumbs}`, bob.token, undefined, 404, 'not_found');
  await apiError('PUT', path(thumbs), undefined, undefined, 401);

  await quiet(a, b, c);
  for (const t of [a, b]) exactly(t, 'message:reaction', () => true, expected, 'one message:reaction per change, in order');
  nothing(c, 'message:reaction', () => true, 'reactions in a room it is not in');
};

// ---- main -----------------------------------------------------------------------

await run(scenarios);
