// What tests/js/scenarios.mjs and tests/js/realtime.mjs have in common: the
// test's data, sockets that record what they receive, REST calls, the
// checks of the payloads both look at, and the runner that turns one
// scenario into the exit code the Rust side takes as the verdict.
//
// CP_INPUT       the test's data as JSON (each script lists what it reads)
// CP_TIMEOUT_MS  overall time limit (default 20000)

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { io } from 'socket.io-client';
import WebSocket from 'ws';

export const input = JSON.parse(process.env.CP_INPUT ?? '{}');
export const URL_BASE = input.url;
export const TIMEOUT_MS = Number(process.env.CP_TIMEOUT_MS ?? 20000);
/** How long to wait for something that should arrive. */
export const WAIT_MS = 5000;
/** How long to wait to be sure that something does not arrive. */
export const QUIET_MS = 400;

export const ID = /^[0-9A-HJKMNP-TV-Z]{26}$/;
export const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
// The payload fields of API.md, sorted.
export const MESSAGE_KEYS = ['author', 'content', 'createdAt', 'issueId', 'messageId', 'reactions'];
export const AUTHOR_KEYS = ['avatarUrl', 'displayName', 'userId'];
export const ISSUE_CREATED_KEYS = [
  'category', 'city', 'createdAt', 'issueId', 'priority', 'reportedBy', 'status', 'title', 'upvotes',
];
export const ISSUE_UPDATED_KEYS = ['assignedTo', 'issueId', 'priority', 'status', 'title', 'updatedAt'];
export const ISSUE_UPVOTED_KEYS = ['issueId', 'upvoted', 'upvotedBy', 'upvotes'];

// ---- plumbing ---------------------------------------------------------------

const started = Date.now();
export function log(...args) {
  console.log(`[${String(Date.now() - started).padStart(5)} ms]`, ...args);
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Everything opened (Socket.IO sockets, raw WebSockets), closed at the end
 * whatever happens.
 */
export const opened = new Set();

function cleanup() {
  for (const thing of opened) {
    try {
      if (thing instanceof WebSocket) thing.terminate();
      else thing.disconnect();
    } catch {
      // best effort
    }
  }
}

/** Resolves with `value()` once it is truthy, or fails after `ms`. */
export async function until(what, value, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = value();
    if (v) return v;
    if (Date.now() > deadline) throw new assert.AssertionError({ message: `timed out after ${ms} ms waiting for ${what}` });
    await sleep(10);
  }
}

export const sortedKeys = (o) => Object.keys(o).sort();
export const unique = (label) => `${label} ${randomBytes(6).toString('hex')}`;

// ---- REST -------------------------------------------------------------------

/**
 * The REST calls, each given up after `timeoutMs`: a parameter because the
 * two scripts have always allowed different times.
 */
export function restClient(timeoutMs) {
  async function api(method, path, token, body) {
    const headers = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${URL_BASE}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = text;
    }
    return { status: res.status, body: json };
  }

  async function apiOk(method, path, token, body, status = 200) {
    const res = await api(method, path, token, body);
    assert.equal(res.status, status, `${method} ${path} answered ${res.status}: ${JSON.stringify(res.body)}`);
    return res.body;
  }

  async function apiError(method, path, token, body, status, code) {
    const res = await api(method, path, token, body);
    const shown = `${method} ${path} answered ${res.status}: ${JSON.stringify(res.body)}`;
    assert.equal(res.status, status, shown);
    assert.equal(typeof res.body?.error?.code, 'string', shown);
    if (code !== undefined) assert.equal(res.body.error.code, code, shown);
    return res.body;
  }

  const postMessage = (user, issueId, content) =>
    apiOk('POST', `/api/issues/${issueId}/messages`, user.token, { content }, 201);

  return { api, apiOk, apiError, postMessage };
}

// ---- the official client ------------------------------------------------------

/**
 * A socket that records every event it receives (`seen`, with the arrival
 * time), its disconnects and its connect errors.
 */
export function track(socket, label) {
  opened.add(socket);
  const t = { socket, label, seen: [], errors: [], disconnects: [] };
  socket.onAny((event, ...args) => t.seen.push({ event, payload: args[0], at: Date.now() }));
  socket.on('connect_error', (err) => t.errors.push(err));
  socket.on('disconnect', (reason) => t.disconnects.push(reason));
  return t;
}

export function events(t, event, pred = () => true) {
  return t.seen.filter((e) => e.event === event && pred(e.payload)).map((e) => e.payload);
}

export function dump(t) {
  return `${t.label} saw ${JSON.stringify(t.seen.map((e) => [e.event, e.payload]))}`;
}

/** Waits for one `event` matching `pred` on `t`; returns its payload. */
export async function received(t, event, pred = () => true, what = event, ms = WAIT_MS) {
  try {
    return await until(`${t.label} to receive ${what}`, () => events(t, event, pred)[0], ms);
  } catch (e) {
    e.message += `; ${dump(t)}`;
    throw e;
  }
}

export function nothing(t, event, pred = () => true, what = event) {
  const got = events(t, event, pred);
  assert.equal(got.length, 0, `${t.label} must not receive ${what}, got ${JSON.stringify(got)}`);
}

/** Connects an official client; resolves once connected. */
export async function connect(label, options, url = URL_BASE) {
  const t = track(io(url, { forceNew: true, reconnection: false, ...options }), label);
  await connected(t);
  return t;
}

export async function connected(t) {
  try {
    await until(`${t.label} to connect`, () => t.socket.connected || t.errors.length > 0);
  } catch (e) {
    e.message += ` (disconnects: ${JSON.stringify(t.disconnects)})`;
    throw e;
  }
  if (!t.socket.connected) {
    const err = t.errors[0];
    throw new assert.AssertionError({
      message: `${t.label} could not connect: connect_error ${JSON.stringify(err.message)} ${JSON.stringify(err.data ?? null)}`,
    });
  }
}

export const ack = (t, event, ...args) => t.socket.timeout(WAIT_MS).emitWithAck(event, ...args);

export async function join(t, issueId) {
  assert.deepEqual(await ack(t, 'join:issue', issueId), { ok: true }, `${t.label} join:issue ${issueId}`);
}

/** An error ack: `{ok: false, error: {code, message, details?}}`, with `code` unless it is undefined. */
export function assertErrorAck(reply, code, what) {
  const shown = `${what}: ${JSON.stringify(reply)}`;
  assert.equal(typeof reply, 'object', shown);
  assert.notEqual(reply, null, shown);
  assert.deepEqual(sortedKeys(reply), ['error', 'ok'], shown);
  assert.equal(reply.ok, false, shown);
  assert.equal(typeof reply.error.code, 'string', shown);
  assert.match(reply.error.code, /^[a-z_]+$/, shown);
  if (code !== undefined) assert.equal(reply.error.code, code, shown);
  assert.equal(typeof reply.error.message, 'string', shown);
  assert.ok(reply.error.message.length > 0, shown);
  for (const key of Object.keys(reply.error)) assert.ok(['code', 'message', 'details'].includes(key), shown);
}

/** A new message (no reactions yet) of `author` in `issueId`. */
export function assertMessage(m, { issueId, content, author }) {
  const shown = JSON.stringify(m);
  assert.deepEqual(sortedKeys(m), MESSAGE_KEYS, shown);
  assert.deepEqual(sortedKeys(m.author), AUTHOR_KEYS, shown);
  assert.match(m.messageId, /^msg_/, shown);
  assert.match(m.messageId.slice(4), ID, shown);
  assert.equal(m.issueId, issueId, shown);
  assert.equal(m.content, content, shown);
  assert.equal(m.author.userId, author.id, shown);
  assert.equal(m.author.displayName, author.name, shown);
  assert.deepEqual(m.reactions, {}, shown);
  assert.match(m.createdAt, TIMESTAMP, shown);
}

// ---- main -----------------------------------------------------------------------

/**
 * Runs the scenario named by the first argument and exits: 0 if it passed,
 * 1 if it failed, 3 if it ran out of time, 64 if it cannot run at all.
 */
export async function run(scenarios) {
  const name = process.argv[2];
  if (!Object.hasOwn(scenarios, name)) {
    console.error(`unknown scenario ${JSON.stringify(name)}; known: ${Object.keys(scenarios).join(', ')}`);
    process.exit(64);
  }
  if (!URL_BASE) {
    console.error('CP_INPUT must be JSON with at least {"url": …}');
    process.exit(64);
  }
  setTimeout(() => {
    console.error(`FAIL ${name}: timed out after ${TIMEOUT_MS} ms`);
    cleanup();
    process.exit(3);
  }, TIMEOUT_MS);

  try {
    log(`scenario ${name} against ${URL_BASE}`);
    await scenarios[name]();
    log(`PASS ${name}`);
    cleanup();
    process.exit(0);
  } catch (e) {
    console.error(`FAIL ${name}: ${e?.stack ?? e}`);
    cleanup();
    process.exit(1);
  }
}
