// The realtime domain of CivicPulse (rooms, messages, reactions, issue
// events, typing, presence, ordering), driven with the OFFICIAL Socket.IO
// client by tests/realtime.rs against a live node.
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
import { randomBytes } from 'node:crypto';

import {
  ISSUE_CREATED_KEYS, ISSUE_UPDATED_KEYS, ISSUE_UPVOTED_KEYS, MESSAGE_KEYS, QUIET_MS, TIMEOUT_MS, TIMESTAMP, WAIT_MS,
  ack, assertErrorAck, assertMessage as assertMessageFields, connect, dump, events, input, join, log, nothing,
  received, restClient, run, sleep, sortedKeys, unique, until,
} from './harness.mjs';

// The payload fields of API.md that only these scenarios look at, sorted.
const REACTION_KEYS = ['issueId', 'messageId', 'reactions'];
const TYPING_KEYS = ['displayName', 'isTyping', 'issueId', 'userId'];
const PRESENCE_UPDATE_KEYS = ['city', 'displayName', 'online', 'userId'];
const PRESENCE_ITEM_KEYS = ['city', 'displayName', 'userId'];

const pick = (o, keys) => Object.fromEntries(keys.map((k) => [k, o[k]]));
const byUserId = (a, b) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0);

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

/** Disconnects and waits until the client has noticed. */
async function disconnect(t) {
  t.socket.disconnect();
  await until(`${t.label} to disconnect`, () => !t.socket.connected);
}

async function leave(t, issueId) {
  assert.deepEqual(await ack(t, 'leave:issue', issueId), { ok: true }, `${t.label} leave:issue ${issueId}`);
}

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

/** join:issue and leave:issue: their acks, good and bad, and what they do. */
scenarios['join-leave'] = async () => {
  const { alice, bob, carol } = input.users;
  const issue = input.issueId;
  const a = await connect('alice', ws(alice));
  const aTab = await connect('alice (second tab, never joins)', ws(alice));
  const b = await connect('bob (polling)', polling(bob));

  // Joining answers exactly {ok: true}, also a second time, also over polling.
  assert.deepEqual(await ack(a, 'join:issue', issue), { ok: true });
  assert.deepEqual(await ack(a, 'join:issue', issue), { ok: true }, 'joining twice');
  assert.deepEqual(await ack(b, 'join:issue', issue), { ok: true });

  for (const [what, args] of [
    ['an unknown well-formed id', [input.absentIssueId]],
    ['a malformed id', ['iss_not-a-ulid']],
    ['a message id', [`msg_${issue.slice(4)}`]],
    ['an empty string', ['']],
    ['a number', [42]],
    ['null', [null]],
    ['an object', [{ issueId: issue }]],
    ['no argument', []],
  ]) {
    assertErrorAck(await ack(aTab, 'join:issue', ...args), 'not_found', `join:issue with ${what}`);
  }
  for (const [what, args] of [
    ['a malformed id', ['iss_not-a-ulid']],
    ['a number', [42]],
    ['null', [null]],
    ['no argument', []],
  ]) {
    assertErrorAck(await ack(aTab, 'leave:issue', ...args), 'not_found', `leave:issue with ${what}`);
  }
  // Leaving a room one is not in is fine.
  assert.deepEqual(await ack(aTab, 'leave:issue', input.otherIssueId), { ok: true });

  // Members receive the room's messages once each; the never-joined tab
  // (same user, other socket) and the failed joins get nothing.
  const first = await postMessage(carol, issue, unique('first'));
  const isFirst = (p) => p.messageId === first.messageId;
  assert.deepEqual(await received(a, 'message:new', isFirst), first);
  assert.deepEqual(await received(b, 'message:new', isFirst), first);

  // Leaving answers {ok: true} and ends the deliveries, for that socket only.
  assert.deepEqual(await ack(a, 'leave:issue', issue), { ok: true });
  assert.deepEqual(await ack(a, 'leave:issue', issue), { ok: true }, 'leaving twice');
  const second = await postMessage(carol, issue, unique('second'));
  const isSecond = (p) => p.messageId === second.messageId;
  assert.deepEqual(await received(b, 'message:new', isSecond), second);

  // A client that opens an issue and navigates away at once emits join and
  // leave without waiting: the leave comes last, so the socket is out.
  const c = await connect('carol (join and leave in a row)', ws(carol));
  c.socket.emit('join:issue', issue);
  const left = ack(c, 'leave:issue', issue);
  assert.deepEqual(await left, { ok: true });
  // …and the reverse order leaves it in.
  const d = await connect('carol (leave and join in a row)', ws(carol));
  d.socket.emit('leave:issue', issue);
  assert.deepEqual(await ack(d, 'join:issue', issue), { ok: true });
  const third = await postMessage(bob, issue, unique('third'));
  const isThird = (p) => p.messageId === third.messageId;
  assert.deepEqual(await received(b, 'message:new', isThird), third);
  assert.deepEqual(await received(d, 'message:new', isThird), third);

  await quiet(a, aTab, b, c, d);
  exactly(a, 'message:new', () => true, [first], 'only the message from before it left');
  exactly(b, 'message:new', () => true, [first, second, third], 'every message, once, in order');
  nothing(aTab, 'message:new', () => true, 'messages of a room this socket never joined');
  nothing(c, 'message:new', () => true, 'messages after join + leave');
  exactly(d, 'message:new', () => true, [third], 'messages after leave + join');
  for (const t of [a, aTab, b, c, d]) assert.deepEqual(t.disconnects, [], `${t.label} was disconnected`);
};

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

/** issue:created, issue:updated, issue:upvoted: to everyone, exact fields, no event for no-ops. */
scenarios['issue-events'] = async () => {
  const { alice, bob, carol, dave, erin } = input.users;
  const official = input.official;
  const clients = [
    await connect('alice (websocket)', ws(alice)),
    await connect('bob (polling)', polling(bob)),
    await connect('erin (default transports)', { auth: { token: erin.token } }),
    await connect('dave (in a room)', ws(dave)),
  ];
  await join(clients[3], input.issueId);
  const wantUpdated = [];
  const wantUpvoted = [];

  const issue = await apiOk(
    'POST', '/api/issues', carol.token,
    { title: unique('Broken streetlight'), description: 'Dark since Monday', category: 'electricity', priority: 'high' },
    201,
  );
  assert.equal(issue.city, carol.city, 'the city defaults to the reporter\'s');
  const mine = (p) => p.issueId === issue.issueId;
  for (const t of clients) {
    const created = await received(t, 'issue:created', mine);
    assert.deepEqual(sortedKeys(created), ISSUE_CREATED_KEYS, JSON.stringify(created));
    assert.deepEqual(created, pick(issue, ISSUE_CREATED_KEYS));
    assert.match(created.createdAt, TIMESTAMP);
    assert.equal(created.upvotes, 0);
    assert.equal(created.status, 'open');
    assert.equal(created.reportedBy, carol.id);
  }

  const patch = async (user, body, notable) => {
    const after = await apiOk('PATCH', `/api/issues/${issue.issueId}`, user.token, body);
    if (!notable) return after;
    const want = pick(after, ISSUE_UPDATED_KEYS);
    wantUpdated.push(want);
    for (const t of clients) {
      await receivedCount(t, 'issue:updated', wantUpdated.length, mine, `issue:updated after ${JSON.stringify(body)}`);
      const got = events(t, 'issue:updated', mine).at(-1);
      assert.deepEqual(sortedKeys(got), ISSUE_UPDATED_KEYS, JSON.stringify(got));
      assert.deepEqual(got, want, `issue:updated after ${JSON.stringify(body)}`);
      assert.match(got.updatedAt, TIMESTAMP);
    }
    return after;
  };

  const title = unique('Streetlight out');
  await patch(carol, { title }, true);
  await patch(carol, { title }, false); // the same title again
  await patch(carol, { description: 'Still dark' }, false); // the description is not worth an event
  await patch(official, { priority: 'critical' }, true);
  await patch(official, { assignedTo: official.id }, true);
  await patch(official, { status: 'in_progress' }, true);
  await patch(official, { status: 'in_progress', priority: 'critical' }, false); // nothing changes
  const unassigned = await patch(official, { assignedTo: null }, true);
  assert.equal(unassigned.assignedTo, null);
  await patch(official, { title: `${title} (confirmed)`, status: 'resolved', priority: 'low' }, true);
  // Refused changes emit nothing.
  await apiError('PATCH', `/api/issues/${issue.issueId}`, official.token, { status: 'bogus' }, 422, 'validation_failed');
  await apiError('PATCH', `/api/issues/${issue.issueId}`, carol.token, { title: 'Reporter after resolution' }, 403, 'forbidden');
  await apiError('PATCH', `/api/issues/${issue.issueId}`, bob.token, { status: 'closed' }, 403, 'forbidden');

  const upvote = async (method, user, upvotes, upvoted, changed) => {
    const body = await apiOk(method, `/api/issues/${issue.issueId}/upvote`, user.token);
    assert.deepEqual(body, { issueId: issue.issueId, upvotes, upvoted }, `${method} upvote by ${user.name}`);
    if (!changed) return;
    const want = { issueId: issue.issueId, upvotes, upvotedBy: user.id, upvoted };
    wantUpvoted.push(want);
    for (const t of clients) {
      await receivedCount(t, 'issue:upvoted', wantUpvoted.length, mine, `issue:upvoted ${JSON.stringify(want)}`);
      const got = events(t, 'issue:upvoted', mine).at(-1);
      assert.deepEqual(sortedKeys(got), ISSUE_UPVOTED_KEYS, JSON.stringify(got));
      assert.deepEqual(got, want);
    }
  };
  await upvote('POST', bob, 1, true, true);
  await upvote('POST', bob, 1, true, false); // once per user
  await upvote('POST', alice, 2, true, true);
  await upvote('DELETE', bob, 1, false, true); // withdrawn: upvoted false
  await upvote('DELETE', bob, 1, false, false); // nothing to withdraw
  await upvote('DELETE', dave, 1, false, false); // never upvoted
  await upvote('POST', bob, 2, true, true); // again after withdrawing
  await apiError('POST', `/api/issues/${input.absentIssueId}/upvote`, bob.token, undefined, 404, 'not_found');
  await apiError('POST', `/api/issues/${issue.issueId}/upvote`, undefined, undefined, 401);

  // A refused report emits nothing either.
  await apiError('POST', '/api/issues', bob.token, { title: 'no', category: 'roads' }, 422, 'validation_failed');

  await quiet(...clients);
  for (const t of clients) {
    exactly(t, 'issue:created', () => true, [pick(issue, ISSUE_CREATED_KEYS)], 'one issue:created');
    exactly(t, 'issue:updated', () => true, wantUpdated, 'issue:updated for each notable change only');
    exactly(t, 'issue:upvoted', () => true, wantUpvoted, 'issue:upvoted for each count change only');
    assert.deepEqual(t.disconnects, [], `${t.label} was disconnected`);
  }
};

/** user:typing: members only, never echoed to the typist, no repeats, cleared on leave and disconnect. */
scenarios.typing = async () => {
  const { alice, bob, carol, dave } = input.users;
  const issue = input.issueId;
  const typing = (t, isTyping) => ack(t, 'user:typing', { issueId: issue, isTyping });
  const state = (user, isTyping) => ({ issueId: issue, userId: user.id, displayName: user.name, isTyping });

  const b = await connect('bob (member)', ws(bob));
  const a1 = await connect('alice tab 1 (member)', ws(alice));
  const a2 = await connect('alice tab 2 (member, polling)', polling(alice));
  const a3 = await connect('alice tab 3 (not a member)', ws(alice));
  const c = await connect('carol (not a member)', ws(carol));
  const d = await connect('dave (member of the other room)', ws(dave));
  for (const t of [b, a1, a2]) await join(t, issue);
  await join(d, input.otherIssueId);
  const everyone = () => [b, a1, a2, a3, c, d].filter((t) => t.socket.connected);
  const wantAtBob = [];

  // Only a member socket may type: a non-member gets an error ack, and so
  // does another tab of a member user; nobody receives anything.
  assertErrorAck(await typing(c, true), undefined, 'user:typing from a non-member');
  assertErrorAck(await typing(a3, true), undefined, 'user:typing from a socket of a member user that did not join');
  assertErrorAck(await ack(c, 'user:typing', { issueId: input.absentIssueId, isTyping: true }), undefined, 'user:typing in an unknown issue');
  for (const [what, payload] of [
    ['isTyping a string', { issueId: issue, isTyping: 'yes' }],
    ['no isTyping', { issueId: issue }],
    ['no issueId', { isTyping: true }],
    ['a string payload', issue],
    ['null', null],
  ]) {
    assertErrorAck(await ack(a1, 'user:typing', payload), 'validation_failed', `user:typing with ${what}`);
  }
  c.socket.emit('user:typing', { issueId: issue, isTyping: true }); // and without an ack
  await quiet(...everyone());
  for (const t of everyone()) nothing(t, 'user:typing', () => true, 'typing from non-members or bad payloads');

  // A member types: the other user's socket hears it; none of the typist's
  // own sockets do, whether in the room or not; nor anyone outside.
  assert.deepEqual(await typing(a1, true), { ok: true });
  wantAtBob.push(state(alice, true));
  const got = await received(b, 'user:typing');
  assert.deepEqual(sortedKeys(got), TYPING_KEYS, JSON.stringify(got));
  assert.deepEqual(got, state(alice, true));

  // Identical states are not re-broadcast, from any of the user's tabs;
  // tab 2 now holds the state.
  assert.deepEqual(await typing(a1, true), { ok: true });
  assert.deepEqual(await typing(a2, true), { ok: true });
  // Tab 1 (not the last to set it) disconnecting does not clear it.
  await disconnect(a1);
  await quiet(...everyone());
  exactly(b, 'user:typing', () => true, wantAtBob, 'no repeat, no clearing by another tab');

  // The user stops: false, once.
  assert.deepEqual(await typing(a2, false), { ok: true });
  wantAtBob.push(state(alice, false));
  await receivedCount(b, 'user:typing', wantAtBob.length);
  assert.deepEqual(await typing(a2, false), { ok: true });

  // From here on another tab of alice's stays in the room: the state
  // belongs to the socket that set it, not to the user.
  const a6 = await connect('alice tab 6 (member, stays)', ws(alice));
  await join(a6, issue);
  /**
   * isTyping false, from something other than the expiry: before 5 s have
   * passed since `refreshed`, the last isTyping: true.
   */
  const clearedBeforeExpiry = async (refreshed, what) => {
    wantAtBob.push(state(alice, false));
    const ms = Math.max(0, refreshed + 4500 - Date.now());
    await receivedCount(b, 'user:typing', wantAtBob.length, () => true, `isTyping false on ${what}`, ms);
  };

  // Leaving the room clears it, with isTyping false to the others.
  assert.deepEqual(await typing(a2, true), { ok: true });
  wantAtBob.push(state(alice, true));
  await receivedCount(b, 'user:typing', wantAtBob.length);
  let refreshed = Date.now();
  assert.deepEqual(await typing(a2, true), { ok: true });
  await leave(a2, issue);
  await clearedBeforeExpiry(refreshed, 'leave:issue of the socket that set it');

  // Disconnecting the socket that set it clears it; another tab of the same
  // user leaving first does not.
  const a4 = await connect('alice tab 4 (member)', ws(alice));
  const a5 = await connect('alice tab 5 (member)', ws(alice));
  await join(a4, issue);
  await join(a5, issue);
  assert.deepEqual(await typing(a4, true), { ok: true });
  wantAtBob.push(state(alice, true));
  await receivedCount(b, 'user:typing', wantAtBob.length);
  await leave(a5, issue);
  await quiet(b, a4);
  exactly(b, 'user:typing', () => true, wantAtBob, 'another tab leaving does not clear the state');
  refreshed = Date.now();
  assert.deepEqual(await typing(a4, true), { ok: true });
  await disconnect(a4);
  await clearedBeforeExpiry(refreshed, 'disconnect of the socket that set it');

  // The other way round: bob types, alice's member tab hears it, bob does not.
  assert.deepEqual(await typing(b, true), { ok: true });
  assert.deepEqual(await received(a6, 'user:typing'), state(bob, true));
  assert.deepEqual(await typing(b, false), { ok: true });
  await receivedCount(a6, 'user:typing', 2);

  await quiet(...everyone());
  exactly(b, 'user:typing', () => true, wantAtBob, 'alice\'s typing states, each once, in order');
  exactly(a6, 'user:typing', () => true, [state(bob, true), state(bob, false)], 'bob\'s typing');
  for (const t of [a1, a2, a3, a4, a5]) nothing(t, 'user:typing', (p) => p.userId === alice.id, 'its own user\'s typing');
  for (const t of [c, d]) nothing(t, 'user:typing', () => true, 'typing in a room it is not in');
  for (const t of everyone()) assert.deepEqual(t.disconnects, [], `${t.label} was disconnected`);
};

/** The server clears a typing state 5 s after the last isTyping: true. */
scenarios['typing-expiry'] = async () => {
  const { alice, bob } = input.users;
  const issue = input.issueId;
  const typing = (t, isTyping) => ack(t, 'user:typing', { issueId: issue, isTyping });
  const state = (isTyping) => ({ issueId: issue, userId: alice.id, displayName: alice.name, isTyping });
  const a = await connect('alice (typist)', ws(alice));
  const b = await connect('bob (member)', polling(bob));
  await join(a, issue);
  await join(b, issue);

  const firstTrue = Date.now();
  assert.deepEqual(await typing(a, true), { ok: true });
  assert.deepEqual(await received(b, 'user:typing'), state(true));
  // A new isTyping: true 1.5 s later is not re-broadcast but restarts the clock.
  await sleep(1500);
  const lastTrue = Date.now();
  assert.deepEqual(await typing(a, true), { ok: true });
  await receivedCount(b, 'user:typing', 2, () => true, 'the expiry', 12_000);
  const expiry = b.seen.filter((e) => e.event === 'user:typing')[1];
  assert.deepEqual(expiry.payload, state(false));
  const sinceLast = expiry.at - lastTrue;
  log(`isTyping false ${sinceLast} ms after the last isTyping true, ${expiry.at - firstTrue} ms after the first`);
  assert.ok(sinceLast >= 4500, `cleared ${sinceLast} ms after the last isTyping: true, before 5 s`);
  assert.ok(sinceLast <= 8000, `cleared ${sinceLast} ms after the last isTyping: true, long after 5 s`);

  // Cleared means cleared: typing again is news again.
  assert.deepEqual(await typing(a, true), { ok: true });
  await receivedCount(b, 'user:typing', 3);
  assert.deepEqual(await typing(a, false), { ok: true });
  await receivedCount(b, 'user:typing', 4);
  await quiet(a, b);
  exactly(b, 'user:typing', () => true, [state(true), state(false), state(true), state(false)]);
  nothing(a, 'user:typing');
};

/** presence:update on the first socket and after the last; presence:list and GET /api/presence. */
scenarios.presence = async () => {
  const { alice, bob, dave, erin } = input.users;
  const update = (user, online) => ({ userId: user.id, displayName: user.name, online, city: user.city });
  const item = (user) => ({ userId: user.id, displayName: user.name, city: user.city });
  const about = (user) => (p) => p.userId === user.id;

  // The very first socket hears its own user come online.
  const b = await connect('bob', ws(bob));
  const bobOnline = await received(b, 'presence:update', about(bob));
  assert.deepEqual(sortedKeys(bobOnline), PRESENCE_UPDATE_KEYS, JSON.stringify(bobOnline));
  assert.deepEqual(bobOnline, update(bob, true));

  // alice's first tab: every socket, the new one included.
  const a1 = await connect('alice tab 1', ws(alice));
  for (const t of [b, a1]) assert.deepEqual(await received(t, 'presence:update', about(alice)), update(alice, true));

  // Her second tab: no news.
  const a2 = await connect('alice tab 2 (polling)', polling(alice));
  // A user in another city, and one in none (city null).
  const d = await connect('dave', ws(dave));
  const e = await connect('erin (no city)', ws(erin));
  for (const t of [b, a1, a2, d, e]) {
    assert.deepEqual(await received(t, 'presence:update', about(erin)), update(erin, true));
  }
  for (const t of [b, a1, a2, d]) assert.deepEqual(await received(t, 'presence:update', about(dave)), update(dave, true));
  await quiet(b, a1, a2, d, e);
  exactly(b, 'presence:update', about(alice), [update(alice, true)], 'alice online once for two tabs');
  exactly(a1, 'presence:update', about(alice), [update(alice, true)], 'alice online once for two tabs');
  nothing(a2, 'presence:update', about(alice), 'alice online again for her second tab');
  nothing(d, 'presence:update', about(alice), 'presence of users online before it connected');
  exactly(e, 'presence:update', () => true, [update(erin, true)], 'only its own arrival');

  // presence:list: the ack and GET /api/presence agree, with and without a city.
  const list = async (t, ...args) => {
    const reply = await ack(t, 'presence:list', ...args);
    assert.deepEqual(sortedKeys(reply), ['items', 'ok'], JSON.stringify(reply));
    assert.equal(reply.ok, true);
    for (const i of reply.items) assert.deepEqual(sortedKeys(i), PRESENCE_ITEM_KEYS, JSON.stringify(i));
    return [...reply.items].sort(byUserId);
  };
  const rest = async (query = '') => {
    const body = await apiOk('GET', `/api/presence${query}`, alice.token);
    assert.deepEqual(sortedKeys(body), ['items'], JSON.stringify(body));
    for (const i of body.items) assert.deepEqual(sortedKeys(i), PRESENCE_ITEM_KEYS, JSON.stringify(i));
    return [...body.items].sort(byUserId);
  };
  const everyone = [item(alice), item(bob), item(dave), item(erin)].sort(byUserId);
  const springfield = [item(alice), item(bob)].sort(byUserId);
  assert.equal(alice.city, bob.city);
  assert.notEqual(dave.city, alice.city);
  assert.equal(erin.city, null);
  assert.deepEqual(await list(b, {}), everyone, 'presence:list {}');
  assert.deepEqual(await list(a2), everyone, 'presence:list without a payload');
  assert.deepEqual(await list(d, { city: null }), everyone, 'presence:list {city: null}');
  assert.deepEqual(await rest(), everyone, 'GET /api/presence');
  assert.deepEqual(await list(b, { city: alice.city }), springfield, 'presence:list {city}');
  assert.deepEqual(await rest(`?city=${alice.city}`), springfield, 'GET /api/presence?city=');
  assert.deepEqual(await list(e, { city: dave.city }), [item(dave)], 'presence:list {city} of the other city');
  assert.deepEqual(await rest(`?city=${dave.city}`), [item(dave)]);
  assert.deepEqual(await list(e, { city: 'nowhere-at-all' }), [], 'presence:list {city} with nobody online');
  assert.deepEqual(await rest('?city=nowhere-at-all'), []);
  for (const [what, payload] of [
    ['a city that is not a slug', { city: 'Not A City' }],
    ['a city number', { city: 42 }],
    ['a string payload', alice.city],
    ['an array payload', [{ city: alice.city }]],
  ]) {
    assertErrorAck(await ack(b, 'presence:list', payload), 'validation_failed', `presence:list with ${what}`);
  }
  await apiError('GET', '/api/presence?city=Not%20A%20City', alice.token, undefined, 422, 'validation_failed');
  await apiError('GET', '/api/presence', undefined, undefined, 401);

  // alice's second tab goes away: she is still online, nobody hears a thing.
  await disconnect(a2);
  await quiet(b, a1, d, e);
  for (const t of [b, a1, d, e]) nothing(t, 'presence:update', (p) => p.online === false, 'an offline update while a tab is left');
  assert.deepEqual(await list(b, {}), everyone, 'alice is online with one tab left');
  assert.deepEqual(await rest(), everyone);

  // Her last tab goes: online false, to everyone left.
  await disconnect(a1);
  for (const t of [b, d, e]) {
    const gone = await received(t, 'presence:update', (p) => p.userId === alice.id && p.online === false);
    assert.deepEqual(sortedKeys(gone), PRESENCE_UPDATE_KEYS);
    assert.deepEqual(gone, update(alice, false));
  }
  const withoutAlice = everyone.filter((i) => i.userId !== alice.id);
  assert.deepEqual(await list(b, {}), withoutAlice, 'alice is gone from presence:list');
  assert.deepEqual(await rest(), withoutAlice, 'alice is gone from GET /api/presence');
  assert.deepEqual(await rest(`?city=${alice.city}`), [item(bob)]);

  // A user without a city goes: city null in the update.
  await disconnect(e);
  for (const t of [b, d]) assert.deepEqual(await received(t, 'presence:update', (p) => p.userId === erin.id && !p.online), update(erin, false));

  // Coming back is a first socket again.
  const a3 = await connect('alice tab 3 (back)', ws(alice));
  for (const t of [b, d, a3]) {
    await receivedCount(t, 'presence:update', t === a3 ? 1 : 2, about(alice), 'alice online again');
    assert.deepEqual(events(t, 'presence:update', about(alice)).at(-1), update(alice, true));
  }
  await quiet(b, d, a3);
  exactly(b, 'presence:update', about(alice), [update(alice, true), update(alice, false), update(alice, true)], 'alice\'s presence');
  exactly(b, 'presence:update', about(erin), [update(erin, true), update(erin, false)], 'erin\'s presence');
  exactly(d, 'presence:update', about(dave), [update(dave, true)], 'its own presence');
  for (const t of [b, d, a3]) assert.deepEqual(t.disconnects, [], `${t.label} was disconnected`);
};

/** 1,000 message:send from one socket arrive, and are acknowledged, in order. */
scenarios.ordering = async () => {
  const { alice, bob, carol } = input.users;
  const issue = input.issueId;
  const n = Number(input.count ?? 1000);
  const a = await connect('alice (sender, member)', ws(alice));
  const b = await connect('bob (member)', ws(bob));
  const c = await connect('carol (member, polling)', polling(carol));
  for (const t of [a, b, c]) await join(t, issue);

  const tag = randomBytes(4).toString('hex');
  const contents = Array.from({ length: n }, (_, i) => `${tag} #${i}`);
  const ackOrder = [];
  const t0 = Date.now();
  const replies = await Promise.all(
    contents.map((content, i) =>
      a.socket
        .timeout(TIMEOUT_MS)
        .emitWithAck('message:send', { issueId: issue, content })
        .then((reply) => {
          ackOrder.push(i);
          return reply;
        }),
    ),
  );
  log(`${n} acks in ${Date.now() - t0} ms`);
  const bad = replies.filter((r) => r?.ok !== true);
  assert.equal(bad.length, 0, `refused sends: ${JSON.stringify(bad.slice(0, 3))}`);
  assert.deepEqual(replies.map((r) => r.message.content), contents, 'each ack answers its own message');
  assert.deepEqual(ackOrder, contents.map((_, i) => i), 'acks arrive in the order sent');
  const ids = replies.map((r) => r.message.messageId);
  assert.equal(new Set(ids).size, n, 'distinct message ids');

  const ours = (p) => p.content.startsWith(`${tag} #`);
  for (const t of [a, b, c]) await receivedCount(t, 'message:new', n, ours, 'our messages', TIMEOUT_MS);
  log(`${n} message:new at every member in ${Date.now() - t0} ms`);
  await quiet(a, b, c);
  for (const t of [a, b, c]) {
    const got = events(t, 'message:new', ours);
    assert.equal(got.length, n, `${t.label}: ${got.length} messages, none lost or duplicated`);
    const order = got.map((m) => m.content);
    const firstWrong = order.findIndex((content, i) => content !== contents[i]);
    assert.equal(firstWrong, -1, `${t.label}: out of order from #${firstWrong}: ${JSON.stringify(order.slice(Math.max(0, firstWrong - 2), firstWrong + 3))}`);
    assert.deepEqual(got.map((m) => m.messageId), ids, `${t.label}: the acknowledged messages`);
    assert.deepEqual(t.disconnects, [], `${t.label} was disconnected`);
  }

  // And the history lists them in the same order.
  const page = await apiOk('GET', `/api/issues/${issue}/messages?limit=100`, alice.token);
  assert.deepEqual(page.items.map((m) => m.messageId), ids.slice(-100), 'the newest page of history');
};

// ---- main -----------------------------------------------------------------------

await run(scenarios);
