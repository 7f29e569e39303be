// The Socket.IO Admin UI's own bundle (@socket.io/admin-ui's ui/dist, from
// npm) in Debian's Chromium against a running CivicPulse cluster, driven by
// tests/cluster (admin_ui_*): the UI's login form with an admin's email and
// password, then its servers, sockets and rooms pages, and sockets of
// other nodes disconnected from its sockets page.
//
// CP_INPUT (JSON):
//   url       where the UI connects (nginx in front of the nodes)
//   urls      the nodes, one client connects straight to each
//   uiPort    the port the UI is served on (the nodes' CORS_ORIGINS)
//   admin     {email, password}
//   users     {alice, bob, carol}: {id, name, token}
//   issueId   an issue alice and bob join

import assert from 'node:assert/strict';
import { io } from 'socket.io-client';

import { ADMIN_UI_DIR, WAIT_MS, input, launch, log, newPage, run, screenshot, serveOrigin, until } from './harness.mjs';

const ROOM = `room:issue:${input.issueId}`;

/** A citizen's socket straight to one node; resolves once it is connected. */
async function citizen(user, url) {
  const socket = io(url, { forceNew: true, reconnection: false, transports: ['websocket'], auth: { token: user.token } });
  const t = { socket, label: user.name, disconnects: [] };
  socket.on('disconnect', (reason) => t.disconnects.push(reason));
  await until(`${user.name} to connect to ${url}`, () => socket.connected);
  t.id = socket.id;
  return t;
}

async function join(t, issueId) {
  const reply = await t.socket.timeout(WAIT_MS).emitWithAck('join:issue', issueId);
  assert.deepEqual(reply, { ok: true }, `${t.label} join:issue`);
}

const scenarios = {};

scenarios.cluster = async () => {
  const { alice, bob, carol } = input.users;
  // One socket on each node; alice's and bob's in the issue's room.
  const [a, b, c] = await Promise.all([
    citizen(alice, input.urls[0]),
    citizen(bob, input.urls[1]),
    citizen(carol, input.urls[2]),
  ]);
  await join(a, input.issueId);
  await join(b, input.issueId);
  const sockets = [a, b, c];
  for (const t of sockets) t.socket.on('disconnect', () => {});

  const origin = await serveOrigin({ '/ui/': { dir: ADMIN_UI_DIR } }, input.uiPort);
  const browser = await launch();
  const page = await newPage(browser, 'admin-ui');
  // Its fonts and icons come from CDNs: nothing goes to the network.
  await page.route(/fonts\.googleapis\.com|cdn\.jsdelivr\.net/, (route) =>
    route.fulfill({ status: 200, contentType: 'text/css', body: '' }),
  );
  await page.goto(`${origin}/ui/index.html`);

  // The UI's own login form.
  await page.getByLabel('Server URL').fill(input.url);
  await page.getByLabel('Username').fill(input.admin.email);
  await page.getByLabel('Password').fill(input.admin.password);
  await screenshot(page, 'admin-ui-login', ['Connection']);
  await page.getByRole('button', { name: 'Connect' }).click();
  await page.getByLabel('Server URL').waitFor({ state: 'hidden', timeout: WAIT_MS });
  log('signed in');

  // Every node, as its own server_stats says.
  await page.goto(`${origin}/ui/index.html#/servers/`);
  await screenshot(page, 'admin-ui-servers', ['node-0', 'node-1', 'node-2']);

  // Every node's sockets.
  await page.goto(`${origin}/ui/index.html#/sockets/`);
  await screenshot(page, 'admin-ui-sockets', sockets.map((t) => t.id));

  // The issue's room, with its two sockets.
  await page.goto(`${origin}/ui/index.html#/rooms/`);
  const roomRow = page.locator('tr', { hasText: ROOM });
  await roomRow.waitFor({ timeout: WAIT_MS });
  assert.match(await roomRow.innerText(), /\b2\b/, `the room has two sockets: ${await roomRow.innerText()}`);
  await screenshot(page, 'admin-ui-rooms', [ROOM]);

  // A socket's details: its rooms.
  await page.goto(`${origin}/ui/index.html#/n/${encodeURIComponent('/')}/sockets/${b.id}`);
  await screenshot(page, 'admin-ui-socket', [b.id, ROOM, 'node-1']);

  // Disconnecting bob's socket (node-1) and carol's (node-2) from the
  // sockets page: the UI's own socket is on one node (nginx chose it), so
  // at least one of them is another node's.
  const row = (t) => page.getByRole('row', { name: new RegExp(`^${t.id.replace(/[^\w]/g, '\\$&')} \\d`) });
  for (const t of [b, c]) {
    await page.goto(`${origin}/ui/index.html#/sockets/`);
    // The sockets table's row (id, then address), not the details page's on its way out.
    await row(t).waitFor({ timeout: WAIT_MS });
    await row(t).locator('button').click();
    await until(`${t.label} to be disconnected`, () => t.disconnects.length > 0);
    assert.deepEqual(t.disconnects, ['io server disconnect'], t.label);
  }
  assert.ok(a.socket.connected, 'alice was not disconnected');
  // (A click on the button also reaches its row, which opens the socket's page.)
  await page.goto(`${origin}/ui/index.html#/sockets/`);
  await row(a).waitFor({ timeout: WAIT_MS });
  await row(b).waitFor({ state: 'detached', timeout: WAIT_MS });
  await row(c).waitFor({ state: 'detached', timeout: WAIT_MS });
  await screenshot(page, 'admin-ui-disconnected', [a.id]);
  for (const t of sockets) t.socket.close();
};

run(scenarios);
