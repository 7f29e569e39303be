// Connection state recovery with the OFFICIAL client (socket.io-client), run
// by tests/recovery.rs against a node with CONNECTION_STATE_RECOVERY_SECS on.
//
//   CP_INPUT='{"url":…,"users":{alice,bob},"issueId":…}' node tests/js/recovery.mjs <scenario>
//
// recovered      the transport drops (as a network would: the engine is
//                closed under the socket), messages are posted meanwhile; the
//                client reconnects by itself with its pid and offset, and
//                gets `socket.recovered === true`, the same id, its room and
//                every missed message once, in order, before new ones.
// not-recovered  the same with more missed events than the node's log keeps
//                (CONNECTION_STATE_RECOVERY_MAX_EVENTS 2): `recovered` false,
//                a new id, nothing replayed.
//
// Exit code 0: passed. The plumbing is tests/js/harness.mjs.

import assert from 'node:assert/strict';
import { io } from 'socket.io-client';

import { QUIET_MS, connected, dump, events, input, join, log, received, restClient, run, sleep, track, unique, until, URL_BASE } from './harness.mjs';

const { postMessage } = restClient(5000);

/**
 * A client that reconnects by itself after a fixed delay, long enough for
 * the test to post while it is away.
 */
async function reconnecting(user) {
  const t = track(
    io(URL_BASE, {
      forceNew: true,
      auth: { token: user.token },
      transports: ['websocket'],
      reconnectionDelay: 1500,
      reconnectionDelayMax: 1500,
      randomizationFactor: 0,
    }),
    'alice',
  );
  await connected(t);
  return t;
}

/** Drops the connection under the socket, then posts `n` messages while it is away. */
async function dropAndMiss(t, bob, n) {
  const away = new Promise((resolve) => t.socket.once('disconnect', resolve));
  t.socket.io.engine.close();
  // The client names a drop it caused itself 'forced close'; the server sees
  // the connection end ('transport close') and the client reconnects.
  assert.ok(['forced close', 'transport close'].includes(await away));
  const missed = [];
  for (let i = 0; i < n; i++) missed.push((await postMessage(bob, input.issueId, unique(`missed ${i}`))).messageId);
  log('posted', missed.length, 'while away');
  await until('the client to reconnect by itself', () => t.socket.connected, 10000);
  return missed;
}

const scenarios = {};

scenarios.recovered = async () => {
  const { alice, bob } = input.users;
  const t = await reconnecting(alice);
  assert.equal(t.socket.recovered, false, 'a first connection is not a recovery');
  await join(t, input.issueId);
  const first = await postMessage(bob, input.issueId, unique('before'));
  await received(t, 'message:new', (m) => m.messageId === first.messageId);
  const id = t.socket.id;

  const missed = await dropAndMiss(t, bob, 3);
  assert.equal(t.socket.recovered, true, `recovered; ${dump(t)}`);
  assert.equal(t.socket.id, id, 'the same socket id');
  const after = await postMessage(bob, input.issueId, unique('after'));
  await received(t, 'message:new', (m) => m.messageId === after.messageId, 'a message after the recovery (its room is back)');
  await sleep(QUIET_MS);
  assert.deepEqual(
    events(t, 'message:new').map((m) => m.messageId),
    [first.messageId, ...missed, after.messageId],
    `each once, in order; ${dump(t)}`,
  );
  // Handlers see the offset as one more (string) argument, as with the reference server.
  const args = [];
  t.socket.once('message:new', (...a) => args.push(a));
  await postMessage(bob, input.issueId, unique('one more'));
  await until('one more message', () => args.length === 1);
  assert.equal(args[0].length, 2, JSON.stringify(args));
  assert.equal(typeof args[0][1], 'string', JSON.stringify(args));

  // And a second time.
  const again = await dropAndMiss(t, bob, 1);
  assert.equal(t.socket.recovered, true, `recovered twice; ${dump(t)}`);
  assert.equal(t.socket.id, id);
  await received(t, 'message:new', (m) => m.messageId === again[0]);
};

scenarios['not-recovered'] = async () => {
  const { alice, bob } = input.users;
  const t = await reconnecting(alice);
  await join(t, input.issueId);
  const first = await postMessage(bob, input.issueId, unique('before'));
  await received(t, 'message:new', (m) => m.messageId === first.messageId);
  const id = t.socket.id;
  await dropAndMiss(t, bob, 3);
  assert.equal(t.socket.recovered, false, `the log lost one of them: not recovered; ${dump(t)}`);
  assert.notEqual(t.socket.id, id, 'a fresh socket');
  await sleep(QUIET_MS);
  assert.deepEqual(events(t, 'message:new').map((m) => m.messageId), [first.messageId], `no partial replay; ${dump(t)}`);
  // Fresh: not in the room until it joins again.
  await join(t, input.issueId);
  const after = await postMessage(bob, input.issueId, unique('after'));
  await received(t, 'message:new', (m) => m.messageId === after.messageId);
};

run(scenarios);
