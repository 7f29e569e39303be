// Writes tests/fixtures/emitter/*.json: what the real @socket.io/redis-emitter
// (and a Socket.IO server with @socket.io/redis-adapter) hands to Redis, for
// src/cluster/emitter.rs's tests. Each file is {channel, payloadHex,
// description}; payloadHex is the PUBLISH message, byte for byte.
//
// Run after `npm ci` here:   node tests/js/emitter_fixtures.mjs
// The output is deterministic; commit it. No Redis is involved: both take a
// client object and only ever call its publish(channel, message) (the
// adapter also subscribes and listens for errors, which the fake ignores).

import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Emitter } from '@socket.io/redis-emitter';
import { createAdapter } from '@socket.io/redis-adapter';
import { Server } from 'socket.io';

const OUT = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'emitter');

/** A Redis client that records what is published. */
function recordingClient() {
  const published = [];
  return {
    published,
    publish(channel, message) {
      published.push({ channel, message });
      return Promise.resolve(1);
    },
    // The adapter's subscriber side and error hook.
    psubscribe() {},
    subscribe() {},
    on() {},
  };
}

const fixtures = [];

/** Runs `emit` against a fresh recorder; it must publish exactly once. */
function record(name, description, emit) {
  const client = recordingClient();
  emit(client);
  if (client.published.length !== 1) {
    throw new Error(`${name}: published ${client.published.length} messages`);
  }
  const { channel, message } = client.published[0];
  const bytes = Buffer.isBuffer(message) ? message : Buffer.from(message, 'utf8');
  fixtures.push({ name, channel, payloadHex: bytes.toString('hex'), description });
}

const emitter = (client, opts) => new Emitter(client, opts);

// --- Broadcasts from the emitter ---

record('plain_object', "emitter.emit('issue:alert', {a: 1})", (c) =>
  emitter(c).emit('issue:alert', { a: 1 }));

record('one_room', "emitter.to('room:issue:iss_1').emit('issue:alert', {issueId: 'iss_1', level: 'high'})", (c) =>
  emitter(c).to('room:issue:iss_1').emit('issue:alert', { issueId: 'iss_1', level: 'high' }));

record('two_rooms', "emitter.to(['room:issue:a', 'room:issue:b']).emit('issue:alert', 1)", (c) =>
  emitter(c).to(['room:issue:a', 'room:issue:b']).emit('issue:alert', 1));

record('to_and_except', "emitter.to('room:city:x').except(['room:issue:a', 'room:issue:b']).emit('issue:alert')", (c) =>
  emitter(c).to('room:city:x').except(['room:issue:a', 'room:issue:b']).emit('issue:alert'));

record('except_only', "emitter.except('room:issue:a').emit('issue:alert', 'x')", (c) =>
  emitter(c).except('room:issue:a').emit('issue:alert', 'x'));

record('volatile', "emitter.volatile.emit('user:typing', {userId: 'usr_1'})", (c) =>
  emitter(c).volatile.emit('user:typing', { userId: 'usr_1' }));

record('compress_false', "emitter.compress(false).emit('issue:alert', true)", (c) =>
  emitter(c).compress(false).emit('issue:alert', true));

record('admin_namespace', "emitter.of('/admin').to('ops').emit('audit', {n: 1})", (c) =>
  emitter(c).of('/admin').to('ops').emit('audit', { n: 1 }));

record('namespace_without_slash', "emitter.of('admin').emit('audit')", (c) =>
  emitter(c).of('admin').emit('audit'));

record('custom_key', "new Emitter(client, {key: 'civicpulse'}).emit('issue:alert', null)", (c) =>
  emitter(c, { key: 'civicpulse' }).emit('issue:alert', null));

record('buffer_arg', "emitter.emit('file', Buffer.from([0, 1, 2, 255]))", (c) =>
  emitter(c).emit('file', Buffer.from([0, 1, 2, 255])));

record(
  'nested_binary',
  "emitter.emit('files', {name: 'a.png', data: Buffer.from('png')}, [Uint8Array.of(7), Buffer.alloc(0)], 'tail')",
  (c) => emitter(c).emit('files', { name: 'a.png', data: Buffer.from('png') }, [Uint8Array.of(7), Buffer.alloc(0)], 'tail'),
);

record(
  'several_args',
  "emitter.emit('multi', 1, 'two', [3], {four: 4, gone: undefined}, null, true, false, 1.5, -7, -200, 2 ** 40, -(2 ** 40), undefined, NaN, Infinity)",
  (c) => emitter(c).emit('multi', 1, 'two', [3], { four: 4, gone: undefined }, null, true, false, 1.5, -7, -200,
    2 ** 40, -(2 ** 40), undefined, NaN, Infinity),
);

record(
  'unicode',
  "emitter.to('room:issue:ü').emit('ünïcødé', {text: 'Straße 🚧 日本語', 'ключ': '\"quoted\"\\n\\u0001'})",
  (c) => emitter(c).to('room:issue:ü').emit('ünïcødé', { text: 'Straße 🚧 日本語', 'ключ': '"quoted"\n\u0001' }),
);

record(
  'date',
  "emitter.emit('dated', {at: new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678))}, new Date(0))",
  (c) => emitter(c).emit('dated', { at: new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 678)) }, new Date(0)),
);

record(
  'large_containers',
  "emitter.emit('big', [0..19], {k0: 0, …, k19: 19}, 'x'.repeat(300), Buffer.alloc(300, 0xab))",
  (c) => emitter(c).emit(
    'big',
    Array.from({ length: 20 }, (_, i) => i),
    Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i])),
    'x'.repeat(300),
    Buffer.alloc(300, 0xab),
  ),
);

// --- Broadcasts from a Socket.IO server with the Redis adapter ---

function adapterServer(client) {
  const io = new Server();
  io.adapter(createAdapter(client, recordingClient()));
  // The uid is random per adapter; fix it so the fixtures are stable.
  io.of('/').adapter.uid = 'srv001';
  return io;
}

record('adapter_rooms_except', "io.to(['a', 'b']).except('c').emit('srv', {b: 2})  (redis-adapter)", (c) =>
  adapterServer(c).to(['a', 'b']).except('c').emit('srv', { b: 2 }));

record('adapter_volatile_room_binary', "io.to('room:issue:1').volatile.emit('srv', Buffer.from('hi'))  (redis-adapter)", (c) =>
  adapterServer(c).to('room:issue:1').volatile.emit('srv', Buffer.from('hi')));

// --- Requests (not broadcasts) ---

record('request_sockets_join', "emitter.to('a').socketsJoin('b')", (c) => emitter(c).to('a').socketsJoin('b'));
record('request_sockets_leave', "emitter.socketsLeave(['b'])", (c) => emitter(c).socketsLeave(['b']));
record('request_disconnect_sockets', 'emitter.disconnectSockets(true)', (c) => emitter(c).disconnectSockets(true));
record('request_server_side_emit', "emitter.serverSideEmit('hello', 1)", (c) => emitter(c).serverSideEmit('hello', 1));

mkdirSync(OUT, { recursive: true });
for (const file of readdirSync(OUT)) {
  if (file.endsWith('.json')) rmSync(join(OUT, file));
}
for (const { name, ...fixture } of fixtures) {
  writeFileSync(join(OUT, `${name}.json`), `${JSON.stringify(fixture, null, 2)}\n`);
}
console.log(`wrote ${fixtures.length} fixtures to ${OUT}`);
// The adapters' Servers hold no handles, but say so explicitly.
process.exit(0);
