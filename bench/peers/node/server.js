// The Node.js peer: the system as the seed document describes it, written
// the way a good Node engineer would (Express + Socket.IO 4.8 on one port,
// jsonwebtoken at the handshake, rooms per issue, better-sqlite3 storage),
// exposing the same events, payloads and the REST routes the benchmarks use.
//
// Cluster mode (bench/run.sh's cluster_* scenarios): with REDIS_URL set,
// Socket.IO's own @socket.io/redis-adapter (over the `redis` client) joins
// every process that names the same Redis and REDIS_KEY_PREFIX into one
// cluster, so an emit on one process reaches the sockets of all of them.
// Storage is shared the simplest way a Node team would: every process opens
// the same better-sqlite3 file (DB_PATH) in WAL mode with a busy timeout,
// and write transactions take the write lock up front (BEGIN IMMEDIATE), so
// a writer waits for another process's commit instead of failing.
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');
const express = require('express');
const jwt = require('jsonwebtoken');
const Database = require('better-sqlite3');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');
const { monotonicFactory } = require('ulid');

const PORT = Number(process.env.PORT || 3002);
const REDIS_URL = process.env.REDIS_URL || '';
const NODE_ID = process.env.NODE_ID || `node-${process.pid}`;
const JWT_SECRET = process.env.JWT_SECRET;
if (!JWT_SECRET) throw new Error('JWT_SECRET is required');
const ulid = monotonicFactory();

// timeout: how long a statement waits for another process's lock (SQLite's
// busy handler; better-sqlite3's default is 5 s, said explicitly here).
const db = new Database(process.env.DB_PATH || 'node-peer.db', { timeout: 10000 });
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.exec(`
  CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, email TEXT UNIQUE, password_hash TEXT,
    display_name TEXT, city TEXT, role TEXT, created_at TEXT);
  CREATE TABLE IF NOT EXISTS issues (id TEXT PRIMARY KEY, title TEXT, description TEXT, city TEXT,
    category TEXT, priority TEXT, status TEXT, upvotes INTEGER DEFAULT 0, reported_by TEXT,
    assigned_to TEXT, created_at TEXT, updated_at TEXT);
  CREATE TABLE IF NOT EXISTS upvotes (issue_id TEXT, user_id TEXT, PRIMARY KEY (issue_id, user_id));
  CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, issue_id TEXT, author_id TEXT,
    author_name TEXT, content TEXT, created_at TEXT);
`);
const stmt = {
  insertUser: db.prepare('INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?)'),
  insertIssue: db.prepare(`INSERT INTO issues (id, title, description, city, category, priority, status,
    upvotes, reported_by, assigned_to, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'open', 0, ?, NULL, ?, ?)`),
  issueExists: db.prepare('SELECT 1 FROM issues WHERE id = ?'),
  upvote: db.prepare('INSERT OR IGNORE INTO upvotes VALUES (?, ?)'),
  bump: db.prepare('UPDATE issues SET upvotes = upvotes + 1 WHERE id = ?'),
  count: db.prepare('SELECT upvotes FROM issues WHERE id = ?'),
  insertMessage: db.prepare('INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)'),
  getIssue: db.prepare('SELECT * FROM issues WHERE id = ?'),
  listIssues: db.prepare('SELECT * FROM issues ORDER BY id DESC LIMIT ?'),
};
const issueJson = (row) => ({
  issueId: row.id, title: row.title, description: row.description, city: row.city, category: row.category,
  priority: row.priority, status: row.status, upvotes: row.upvotes, reportedBy: row.reported_by,
  assignedTo: row.assigned_to, createdAt: row.created_at, updatedAt: row.updated_at,
});
const upvoteTx = db.transaction((issueId, userId) => {
  const changed = stmt.upvote.run(issueId, userId).changes === 1;
  if (changed) stmt.bump.run(issueId);
  return { changed, upvotes: stmt.count.get(issueId).upvotes };
});

const app = express();
app.use(express.json({ limit: '1mb' }));
const server = http.createServer(app);
const io = new Server(server, {
  cors: { origin: '*' },
  // Same knobs as civicpulse (PING_INTERVAL_MS, PING_TIMEOUT_MS); Socket.IO's defaults otherwise.
  pingInterval: Number(process.env.PING_INTERVAL_MS || 25000),
  pingTimeout: Number(process.env.PING_TIMEOUT_MS || 20000),
});

function sign(user) {
  return jwt.sign({ sub: user.id, name: user.displayName, role: user.role, city: user.city, typ: 'access' },
    JWT_SECRET, { expiresIn: 900 });
}

function auth(req, res, next) {
  const token = (req.headers.authorization || '').replace(/^Bearer /, '');
  try {
    req.user = jwt.verify(token, JWT_SECRET);
    next();
  } catch {
    res.status(401).json({ error: { code: 'invalid_token', message: 'invalid token' } });
  }
}

app.get('/healthz', (req, res) => res.json({ status: 'ok' }));

app.post('/api/auth/register', (req, res) => {
  const { email, password, displayName, city } = req.body || {};
  const salt = crypto.randomBytes(16);
  crypto.scrypt(password, salt, 32, (err, key) => {
    if (err) return res.status(500).end();
    const user = { id: 'usr_' + ulid(), displayName, city: city || null, role: 'citizen' };
    try {
      stmt.insertUser.run(user.id, email.toLowerCase(), salt.toString('hex') + ':' + key.toString('hex'),
        displayName, user.city, 'citizen', new Date().toISOString());
    } catch (e) {
      // Inside scrypt's callback: a throw would end the process, so a
      // failure that is not a taken e-mail (a lock held past the timeout)
      // is a 500.
      if (e.code !== 'SQLITE_CONSTRAINT_UNIQUE') {
        console.error(`register: ${e.message}`);
        return res.status(500).json({ error: { code: 'internal', message: e.code || 'storage' } });
      }
      return res.status(409).json({ error: { code: 'email_taken', message: 'email taken' } });
    }
    res.status(201).json({ user: { userId: user.id, displayName, city: user.city, role: 'citizen' },
      accessToken: sign(user), refreshToken: crypto.randomBytes(32).toString('base64url') });
  });
});

app.post('/api/issues', auth, (req, res) => {
  const { title, description = '', category, priority = 'medium' } = req.body || {};
  const city = req.body.city || req.user.city;
  const now = new Date().toISOString();
  const id = 'iss_' + ulid();
  stmt.insertIssue.run(id, title, description, city, category, priority, req.user.sub, now, now);
  const issue = { issueId: id, title, description, city, category, priority, status: 'open', upvotes: 0,
    reportedBy: req.user.sub, assignedTo: null, createdAt: now, updatedAt: now };
  io.emit('issue:created', { issueId: id, title, city, category, priority, status: 'open', upvotes: 0,
    reportedBy: req.user.sub, createdAt: now });
  res.status(201).json(issue);
});

app.get('/api/issues/:id', auth, (req, res) => {
  const row = stmt.getIssue.get(req.params.id);
  if (!row) return res.status(404).json({ error: { code: 'not_found', message: 'issue not found' } });
  res.json(issueJson(row));
});

// Newest first, one page (the REST benchmark's list route).
app.get('/api/issues', auth, (req, res) => {
  const limit = Math.min(Math.max(Number.parseInt(req.query.limit, 10) || 20, 1), 100);
  const rows = stmt.listIssues.all(limit + 1);
  const items = rows.slice(0, limit).map(issueJson);
  res.json({ items, nextCursor: rows.length > limit ? items[items.length - 1].issueId : null });
});

app.post('/api/issues/:id/upvote', auth, (req, res) => {
  if (!stmt.issueExists.get(req.params.id)) {
    return res.status(404).json({ error: { code: 'not_found', message: 'issue not found' } });
  }
  const { changed, upvotes } = upvoteTx.immediate(req.params.id, req.user.sub);
  if (changed) io.emit('issue:upvoted', { issueId: req.params.id, upvotes, upvotedBy: req.user.sub, upvoted: true });
  res.json({ issueId: req.params.id, upvotes, upvoted: true });
});

// Handshake authentication, exactly as the seed shows it.
io.use((socket, next) => {
  const token = socket.handshake.auth?.token;
  if (!token) return next(new Error('Authentication failed'));
  try {
    socket.user = jwt.verify(token, JWT_SECRET);
    next();
  } catch {
    next(new Error('Authentication failed'));
  }
});

const online = new Map(); // userId -> { user, sockets }

io.on('connection', (socket) => {
  const user = socket.user;
  socket.join(`user:${user.sub}`);
  let entry = online.get(user.sub);
  if (!entry) {
    entry = { sockets: 0 };
    online.set(user.sub, entry);
    io.emit('presence:update', { userId: user.sub, displayName: user.name, online: true, city: user.city });
  }
  entry.sockets += 1;

  const reply = (ack, payload) => typeof ack === 'function' && ack(payload);
  const notFound = { ok: false, error: { code: 'not_found', message: 'issue not found' } };

  socket.on('join:issue', (issueId, ack) => {
    if (typeof issueId !== 'string' || !stmt.issueExists.get(issueId)) return reply(ack, notFound);
    socket.join(`room:issue:${issueId}`);
    reply(ack, { ok: true });
  });

  socket.on('leave:issue', (issueId, ack) => {
    socket.leave(`room:issue:${issueId}`);
    reply(ack, { ok: true });
  });

  socket.on('message:send', (body, ack) => {
    const content = typeof body?.content === 'string' ? body.content.trim() : '';
    if (!content || content.length > 2000) {
      return reply(ack, { ok: false, error: { code: 'validation_failed', message: 'content' } });
    }
    if (!stmt.issueExists.get(body.issueId)) return reply(ack, notFound);
    const message = {
      messageId: 'msg_' + ulid(), issueId: body.issueId, content,
      author: { userId: user.sub, displayName: user.name, avatarUrl: null },
      reactions: {}, createdAt: new Date().toISOString(),
    };
    stmt.insertMessage.run(message.messageId, message.issueId, user.sub, user.name, content, message.createdAt);
    io.to(`room:issue:${body.issueId}`).emit('message:new', message);
    reply(ack, { ok: true, message });
  });

  socket.on('user:typing', (body) => {
    const room = `room:issue:${body?.issueId}`;
    if (!socket.rooms.has(room)) return;
    socket.to(room).except(`user:${user.sub}`).emit('user:typing',
      { issueId: body.issueId, userId: user.sub, displayName: user.name, isTyping: !!body.isTyping });
  });

  socket.on('disconnect', () => {
    entry.sockets -= 1;
    if (entry.sockets === 0) {
      online.delete(user.sub);
      io.emit('presence:update', { userId: user.sub, displayName: user.name, online: false, city: user.city });
    }
  });
});

async function main() {
  if (REDIS_URL) {
    const prefix = process.env.REDIS_KEY_PREFIX || 'socket.io';
    const pubClient = createClient({ url: REDIS_URL });
    const subClient = pubClient.duplicate();
    for (const c of [pubClient, subClient]) c.on('error', (e) => console.error(`redis: ${e.message}`));
    await Promise.all([pubClient.connect(), subClient.connect()]);
    io.adapter(createAdapter(pubClient, subClient, { key: prefix }));
    console.log(`node peer ${NODE_ID}: redis adapter on ${REDIS_URL.replace(/\/\/[^@]*@/, '//***@')} (key ${prefix})`);
  }
  server.listen(PORT, '127.0.0.1', () => console.log(`node peer ${NODE_ID} listening on 127.0.0.1:${PORT}`));
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
