// CivicPulse's demo client: plain JavaScript over the REST API and the
// official socket.io-client (window.io, from index.html). It is also a
// worked example of what a browser client must do: keep the rotated refresh
// token, hand the socket a fresh access token, re-join its room and reload
// what it may have missed after a reconnect. User content is only ever set
// with textContent, never as HTML.
'use strict';

const REACTIONS = ['👍', '❤️', '🎉'];
const TYPING_IDLE_MS = 3000;
const STORE = 'civicpulse.session';

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

// ---- state --------------------------------------------------------------------

/** `{user, accessToken, refreshToken}` of this tab, or null. */
let session = JSON.parse(sessionStorage.getItem(STORE) ?? 'null');
let socket = null;
let refreshTimer = null;
let city = null;
/** issueId → issue, for the city shown. */
const issues = new Map();
/** Issues this tab has upvoted (the API does not say, so only what we did). */
const upvoted = new Set();
/** `${messageId} ${emoji}` this tab reacted with. */
const reacted = new Set();
let current = null; // the issueId whose chat is open
const typists = new Map(); // userId → displayName, in the open issue
const online = new Map(); // userId → {displayName, city}
let typingSent = 0; // when we last said isTyping: true
let typingTimer = null;
/** Handshakes refused since the last good one: a token the server keeps refusing ends the session. */
let refusals = 0;

function save(next) {
  session = next;
  if (next) sessionStorage.setItem(STORE, JSON.stringify(next));
  else sessionStorage.removeItem(STORE);
}

function notice(text) {
  $('notice').textContent = text;
  $('notice').hidden = !text;
}

// ---- REST -----------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code ?? 'http_error';
  }
}

/** One API call; an expired access token is refreshed once and the call repeated. */
async function api(method, path, body, retried = false) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (session) headers.authorization = `Bearer ${session.accessToken}`;
  const res = await fetch(`/api${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (res.status === 401 && session && !retried && !path.startsWith('/auth/')) {
    await refresh();
    return api(method, path, body, true);
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** Seconds since the epoch at which an access token expires (its `exp` claim). */
function expiry(token) {
  const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
  return JSON.parse(atob(payload)).exp;
}

let refreshing = null;
/**
 * Trades the refresh token for a new pair. The old refresh token is spent:
 * presenting it again would revoke every sign-in of this user, so the new
 * one replaces it at once. One refresh at a time for the whole tab.
 */
function refresh() {
  if (!session) return Promise.reject(new Error('signed out'));
  refreshing ??= (async () => {
    try {
      const res = await fetch('/api/auth/refresh', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ refreshToken: session.refreshToken }),
      });
      if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
      const tokens = await res.json();
      save({ ...session, ...tokens });
      scheduleRefresh();
      // A connected socket takes the new token without reconnecting.
      if (socket?.connected) socket.emit('auth:refresh', { token: tokens.accessToken });
    } catch (e) {
      signOut('Your session has ended; please sign in again.');
      throw e;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/** Refreshes a minute before the access token expires (or at 80% of a short one). */
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  const left = expiry(session.accessToken) * 1000 - Date.now();
  const lead = Math.min(60_000, left * 0.2);
  refreshTimer = setTimeout(() => refresh().catch(() => {}), Math.max(1000, left - lead));
}

// ---- signing in and out -----------------------------------------------------

function formData(form) {
  return Object.fromEntries(new FormData(form).entries());
}

async function signIn(path, body) {
  try {
    save(await api('POST', path, body));
    notice('');
    start();
  } catch (e) {
    notice(e.message);
  }
}

async function signOut(why = '') {
  const ending = session;
  save(null);
  clearTimeout(refreshTimer);
  socket?.disconnect();
  socket = null;
  if (ending && !why) {
    await fetch('/api/auth/logout', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ refreshToken: ending.refreshToken }),
    }).catch(() => {});
  }
  issues.clear();
  online.clear();
  current = null;
  notice(why);
  render();
}

// ---- the socket -----------------------------------------------------------------

function connect() {
  // `auth` as a function: every reconnect presents the newest access token.
  socket = io({ auth: (cb) => cb({ token: session.accessToken }) });
  showConnection('connecting…', false);

  let connectedBefore = false;
  socket.on('connect', async () => {
    refusals = 0;
    const transport = () => socket.io.engine.transport.name;
    showConnection(`live (${transport()})`, true);
    socket.io.engine.once('upgrade', () => showConnection(`live (${transport()})`, true));
    // Rooms are not kept across a disconnect and what was emitted meanwhile
    // is gone: join again and reload.
    try {
      if (current) await join(current);
      const reload = connectedBefore ? [loadIssues(), current && loadMessages(current)] : [];
      connectedBefore = true;
      await Promise.all([loadOnline(), ...reload]);
    } catch (e) {
      notice(e.message);
    }
  });
  socket.on('disconnect', (reason) => showConnection(`offline (${reason})`, false));
  socket.on('connect_error', async (err) => {
    showConnection(`offline (${err.message})`, false);
    if (err.message !== 'Authentication failed') return; // the client retries by itself
    // The server refused the token (expired while away): refresh, then try again.
    if (++refusals > 2) return signOut('The server keeps refusing this sign-in; please sign in again.');
    await refresh().then(() => socket?.connect(), () => {});
  });
  socket.on('session:ended', async ({ reason }) => {
    if (reason === 'token_expired' || reason === 'role_changed') {
      await refresh().then(() => socket?.connect(), () => {});
    } else {
      signOut(`Signed out (${reason}).`);
    }
  });

  socket.on('issue:created', (issue) => {
    if (issue.city !== city) return;
    issues.set(issue.issueId, { ...issues.get(issue.issueId), ...issue });
    renderIssues();
  });
  socket.on('issue:updated', (change) => patchIssue(change.issueId, change));
  socket.on('issue:upvoted', ({ issueId, upvotes, upvotedBy, upvoted: on }) => {
    if (upvotedBy === session?.user.userId) (on ? upvoted.add(issueId) : upvoted.delete(issueId));
    patchIssue(issueId, { upvotes });
  });
  socket.on('issue:trending', ({ issueId }) => patchIssue(issueId, { trending: true }));

  socket.on('message:new', (message) => {
    if (message.issueId === current) addMessage(message);
  });
  socket.on('message:reaction', ({ messageId, reactions }) => {
    const row = document.querySelector(`[data-message-id="${CSS.escape(messageId)}"]`);
    if (row) renderReactions(row, messageId, reactions);
  });
  socket.on('user:typing', ({ issueId, userId, displayName, isTyping }) => {
    if (issueId !== current) return;
    if (isTyping) typists.set(userId, displayName);
    else typists.delete(userId);
    renderTyping();
  });
  socket.on('presence:update', ({ userId, displayName, online: on, city: home }) => {
    if (on) online.set(userId, { displayName, city: home });
    else online.delete(userId);
    renderOnline();
  });
}

function showConnection(text, live) {
  $('connection').textContent = text;
  $('connection').classList.toggle('live', live);
}

/** Emits with an ack; resolves with the ack's payload, rejects on `ok: false`. */
function request(event, payload) {
  return new Promise((resolve, reject) => {
    socket.timeout(10_000).emit(event, payload, (err, ack) => {
      if (err) reject(new Error(`${event}: no answer`));
      else if (!ack?.ok) reject(new Error(ack?.error?.message ?? `${event} failed`));
      else resolve(ack);
    });
  });
}

async function join(issueId) {
  try {
    await request('join:issue', issueId);
  } catch (e) {
    notice(e.message);
  }
}

// ---- issues -----------------------------------------------------------------------

async function loadIssues() {
  const { items } = await api('GET', `/issues?city=${encodeURIComponent(city)}&limit=100`);
  issues.clear();
  for (const issue of items) issues.set(issue.issueId, issue);
  renderIssues();
  if (current && issues.has(current)) renderIssue();
}

function patchIssue(issueId, change) {
  const issue = issues.get(issueId);
  if (!issue) return;
  Object.assign(issue, change);
  renderIssues();
  if (issueId === current) renderIssue();
}

async function openIssue(issueId) {
  if (issueId === current) return;
  if (current) request('leave:issue', current).catch(() => {});
  current = issueId;
  typists.clear();
  renderIssues();
  renderIssue();
  $('messages').replaceChildren();
  try {
    // The list's entries from issue:created lack the description.
    const [issue] = await Promise.all([api('GET', `/issues/${issueId}`), join(issueId)]);
    patchIssue(issueId, issue);
    await loadMessages(issueId);
  } catch (e) {
    notice(e.message);
  }
}

async function toggleUpvote() {
  const issueId = current;
  try {
    const res = await api(upvoted.has(issueId) ? 'DELETE' : 'POST', `/issues/${issueId}/upvote`);
    if (res.upvoted) upvoted.add(issueId);
    else upvoted.delete(issueId);
    patchIssue(issueId, { upvotes: res.upvotes });
  } catch (e) {
    notice(e.message);
  }
}

async function setStatus(status) {
  try {
    patchIssue(current, await api('PATCH', `/issues/${current}`, { status }));
  } catch (e) {
    notice(e.message);
    renderIssue();
  }
}

async function report(form) {
  const body = formData(form);
  try {
    const issue = await api('POST', '/issues', { ...body, city });
    form.reset();
    $('report').open = false;
    issues.set(issue.issueId, issue);
    renderIssues();
    await openIssue(issue.issueId);
  } catch (e) {
    notice(e.message);
  }
}

// ---- chat -------------------------------------------------------------------------

async function loadMessages(issueId) {
  const { items } = await api('GET', `/issues/${issueId}/messages?limit=50`);
  if (issueId !== current) return;
  $('messages').replaceChildren();
  items.forEach(addMessage);
}

function addMessage(message) {
  const list = $('messages');
  if (list.querySelector(`[data-message-id="${CSS.escape(message.messageId)}"]`)) return;
  const row = el('li', {}, el('span', { className: 'author', textContent: message.author.displayName }), el('span', { className: 'content', textContent: message.content }));
  row.dataset.messageId = message.messageId;
  row.title = new Date(message.createdAt).toLocaleString();
  row.append(el('span', { className: 'reactions' }));
  renderReactions(row, message.messageId, message.reactions);
  list.append(row);
  list.scrollTop = list.scrollHeight;
}

function renderReactions(row, messageId, counts) {
  const buttons = REACTIONS.map((emoji) => {
    const key = `${messageId} ${emoji}`;
    const count = counts[emoji] ?? 0;
    const button = el('button', { type: 'button', textContent: count ? `${emoji} ${count}` : emoji });
    button.classList.toggle('mine', reacted.has(key));
    button.dataset.emoji = emoji;
    button.addEventListener('click', () => react(messageId, emoji));
    return button;
  });
  row.querySelector('.reactions').replaceChildren(...buttons);
}

async function react(messageId, emoji) {
  const key = `${messageId} ${emoji}`;
  const mine = reacted.has(key);
  try {
    const res = await api(mine ? 'DELETE' : 'PUT', `/messages/${messageId}/reactions/${encodeURIComponent(emoji)}`);
    if (mine) reacted.delete(key);
    else reacted.add(key);
    const row = document.querySelector(`[data-message-id="${CSS.escape(messageId)}"]`);
    if (row) renderReactions(row, messageId, res.reactions);
  } catch (e) {
    notice(e.message);
  }
}

async function send(form) {
  const input = $('message');
  const content = input.value.trim();
  if (!content) return;
  stopTyping();
  try {
    const { message } = await request('message:send', { issueId: current, content });
    input.value = '';
    addMessage(message);
  } catch (e) {
    notice(e.message); // the text stays in the box, to send again
  }
}

/** At most one `isTyping: true` a second, and `false` after a pause. */
function typing() {
  if (!current || !socket?.connected) return;
  if (Date.now() - typingSent > 1000) {
    socket.emit('user:typing', { issueId: current, isTyping: true });
    typingSent = Date.now();
  }
  clearTimeout(typingTimer);
  typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  clearTimeout(typingTimer);
  if (!typingSent) return;
  typingSent = 0;
  socket?.emit('user:typing', { issueId: current, isTyping: false });
}

// ---- presence -----------------------------------------------------------------------

async function loadOnline() {
  const { items } = await request('presence:list', {});
  online.clear();
  for (const { userId, displayName, city: home } of items) online.set(userId, { displayName, city: home });
  renderOnline();
}

// ---- rendering ------------------------------------------------------------------------

function render() {
  const signedIn = Boolean(session);
  $('signed-out').hidden = signedIn;
  $('signed-in').hidden = !signedIn;
  $('sign-out').hidden = !signedIn;
  $('whoami').textContent = signedIn ? `${session.user.displayName} (${session.user.role})` : '';
  if (!signedIn) showConnection('signed out', false);
  $('city').value = city ?? '';
  $('city-name').textContent = city ?? '';
  renderIssues();
  renderIssue();
  renderOnline();
}

function renderIssues() {
  const sorted = [...issues.values()].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
  $('issues').replaceChildren(...sorted.map((issue) => {
    const row = el('li', {},
      el('span', { className: 'title', textContent: issue.title }),
      el('span', { className: `badge status-${issue.status}`, textContent: issue.status.replace('_', ' ') }),
      el('span', { className: 'badge upvotes', textContent: `▲ ${issue.upvotes}` }),
      issue.trending ? el('span', { className: 'badge', textContent: 'trending' }) : '',
      el('div', { className: 'muted', textContent: `${issue.category} · ${issue.priority}` }));
    row.dataset.issueId = issue.issueId;
    row.classList.toggle('selected', issue.issueId === current);
    row.addEventListener('click', () => openIssue(issue.issueId));
    return row;
  }));
  $('issues-empty').hidden = issues.size > 0;
}

function renderIssue() {
  const issue = current && issues.get(current);
  $('issue').hidden = !issue;
  $('no-issue').hidden = Boolean(issue);
  if (!issue) return;
  $('issue-title').textContent = issue.title;
  $('issue-meta').textContent = `${issue.category} · ${issue.priority} priority · ${issue.status.replace('_', ' ')}`;
  $('issue-description').textContent = issue.description ?? '';
  $('upvote').textContent = `${upvoted.has(current) ? 'Upvoted' : 'Upvote'} ▲ ${issue.upvotes}`;
  const official = ['official', 'admin'].includes(session?.user.role);
  $('status-control').hidden = !official;
  $('status').value = issue.status;
  renderTyping();
}

function renderTyping() {
  const names = [...typists.values()];
  $('typing').textContent = names.length ? `${names.join(', ')} ${names.length > 1 ? 'are' : 'is'} typing…` : '';
}

function renderOnline() {
  const people = [...online.values()].sort((a, b) => a.displayName.localeCompare(b.displayName));
  $('online').replaceChildren(...people.map((p) => el('li', { textContent: p.city ? `${p.displayName} · ${p.city}` : p.displayName })));
}

// ---- wiring -------------------------------------------------------------------------

function start() {
  city = session.user.city ?? 'springfield';
  render();
  scheduleRefresh();
  loadIssues().catch((e) => notice(e.message));
  if (typeof io === 'function') connect();
  else notice('The Socket.IO client (cdn.socket.io) could not be loaded: live updates are off.');
}

function on(id, event, handler) {
  $(id).addEventListener(event, (e) => {
    if (event === 'submit') e.preventDefault();
    handler(e);
  });
}

on('sign-in-form', 'submit', (e) => signIn('/auth/login', formData(e.target)));
on('register-form', 'submit', (e) => signIn('/auth/register', formData(e.target)));
on('sign-out', 'click', () => signOut());
on('city-form', 'submit', (e) => {
  city = formData(e.target).city;
  current = null;
  render();
  loadIssues().catch((err) => notice(err.message));
});
on('report-form', 'submit', (e) => report(e.target));
on('upvote', 'click', toggleUpvote);
on('status', 'change', (e) => setStatus(e.target.value));
on('message-form', 'submit', (e) => send(e.target));
on('message', 'input', typing);

if (session) start();
else render();
