// The demo client served at `/`, driven as a newcomer would use it: two
// tabs (separate browser profiles), one a citizen who registers, one an
// official who signs in; each sees what the other does, live.
//
// CP_INPUT: { url, official: { email, password } }

import assert from 'node:assert/strict';
import { input, launch, log, newPage, routeClientBundle, run, screenshot, until } from './harness.mjs';

/** A tab on the demo, failing the scenario on any page error or CSP violation. */
async function openDemo(browser, label, problems) {
  const page = await newPage(browser, label);
  page.on('pageerror', (e) => problems.push(`${label}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`${label}: ${m.text()}`);
  });
  await routeClientBundle(page); // the page's CDN <script>, from npm
  await page.goto(input.url);
  return page;
}

const text = (page, selector) => page.locator(selector).innerText();

async function live(page) {
  await until('the socket to connect over websocket', async () => /live \(websocket\)/.test(await text(page, '#connection')));
}

async function twoTabs() {
  const browser = await launch();
  const problems = [];
  const citizen = await openDemo(browser, 'citizen', problems);
  const official = await openDemo(browser, 'official', problems);

  // The citizen registers; the official signs in (created with the CLI).
  const register = citizen.locator('#register-form');
  await register.locator('[name=displayName]').fill('Alice Citizen');
  await register.locator('[name=email]').fill('alice@city.example');
  await register.locator('[name=password]').fill('alice-password');
  await register.locator('[name=city]').fill('springfield');
  await register.locator('button[type=submit]').click();
  await live(citizen);

  const signIn = official.locator('#sign-in-form');
  await signIn.locator('[name=email]').fill(input.official.email);
  await signIn.locator('[name=password]').fill(input.official.password);
  await signIn.locator('button[type=submit]').click();
  await live(official);
  assert.match(await text(official, '#whoami'), /\(official\)/);

  // Each sees the other online.
  await until('both online in both tabs', async () => {
    const [a, b] = [await text(citizen, '#online'), await text(official, '#online')];
    return [a, b].every((t) => t.includes('Alice Citizen') && t.includes('Chief Wiggum'));
  });

  // The citizen reports; the official's list shows it without a reload.
  await citizen.locator('#report summary').click();
  const report = citizen.locator('#report-form');
  await report.locator('[name=title]').fill('Streetlight out on Elm Street');
  await report.locator('[name=description]').fill('Dark since Monday, by number 42.');
  await report.locator('[name=category]').selectOption('electricity');
  await report.locator('button[type=submit]').click();
  const row = official.locator('#issues li', { hasText: 'Streetlight out on Elm Street' });
  await row.waitFor();
  log('issue:created reached the official');
  await row.click();
  await official.locator('#issue-description', { hasText: 'number 42' }).waitFor();

  // Typing and chat, both ways through the room.
  await until('the citizen in the issue', async () => (await text(citizen, '#issue-title')) === 'Streetlight out on Elm Street');
  await citizen.locator('#message').pressSequentially('It is very dark', { delay: 20 });
  await official.locator('#typing', { hasText: 'Alice Citizen is typing' }).waitFor();
  await citizen.locator('#message-form button').click();
  await official.locator('#messages li', { hasText: 'It is very dark' }).waitFor();
  await until('typing cleared on send', async () => (await text(official, '#typing')) === '');
  await official.locator('#message').fill('A crew is on its way');
  await official.locator('#message').press('Enter');
  await citizen.locator('#messages li', { hasText: 'A crew is on its way' }).waitFor();
  log('chat and typing crossed');

  // A reaction and an upvote from the official; the citizen sees the counts.
  await official.locator('#messages li', { hasText: 'It is very dark' }).locator('button[data-emoji="👍"]').click();
  await citizen.locator('#messages li', { hasText: 'It is very dark' }).locator('button', { hasText: '👍 1' }).waitFor();
  await official.locator('#upvote').click();
  await citizen.locator('#upvote', { hasText: '▲ 1' }).waitFor();
  await citizen.locator('#issues li .upvotes', { hasText: '▲ 1' }).waitFor();

  // Only the official may change the status; the citizen's list follows.
  assert.equal(await citizen.locator('#status-control').isVisible(), false, 'a citizen has no status control');
  await official.locator('#status').selectOption('in_progress');
  await citizen.locator('#issues li .badge', { hasText: 'in progress' }).waitFor();
  log('reaction, upvote and status change reached the citizen');

  await screenshot(citizen, 'demo-citizen', ['Streetlight out on Elm Street', 'A crew is on its way', '👍 1', 'in progress', 'Chief Wiggum']);
  await screenshot(official, 'demo-official', ['Streetlight out on Elm Street', 'It is very dark', 'Alice Citizen']);

  // Signing out ends the socket: the official goes offline for the citizen.
  await official.locator('#sign-out').click();
  await official.locator('#sign-in-form').waitFor();
  await until('the official gone from the citizen\'s list', async () => !(await text(citizen, '#online')).includes('Chief Wiggum'));

  assert.deepEqual(problems, [], 'no page errors, console errors or CSP violations');
}

/**
 * With access tokens of a few seconds (the server's ACCESS_TOKEN_TTL_SECS),
 * the page keeps its sign-in and its socket through several lifetimes: it
 * refreshes ahead of expiry, keeps each rotated refresh token and hands the
 * socket the new access token (`auth:refresh`).
 */
async function refresh() {
  const browser = await launch();
  const problems = [];
  const page = await openDemo(browser, 'citizen', problems);
  const register = page.locator('#register-form');
  await register.locator('[name=displayName]').fill('Rae Refresh');
  await register.locator('[name=email]').fill('rae@city.example');
  await register.locator('[name=password]').fill('rae-password');
  await register.locator('button[type=submit]').click();
  await live(page);
  const stored = () => page.evaluate(() => JSON.parse(sessionStorage.getItem('civicpulse.session')));
  const first = await stored();
  // A global binding of the page's script: the connection's id.
  const socketId = await page.evaluate(() => socket.id);
  const ttl = input.accessTokenTtlSecs;

  await page.locator('#report summary').click();
  await page.locator('#report-form [name=title]').fill('Pothole on Oak Avenue');
  await page.locator('#report-form button[type=submit]').click();
  await page.locator('#issue-title', { hasText: 'Pothole on Oak Avenue' }).waitFor();

  const seen = new Set([first.refreshToken]);
  await until(`three refreshes (tokens of ${ttl} s)`, async () => {
    seen.add((await stored()).refreshToken);
    return seen.size >= 4;
  }, ttl * 5000);
  // The socket was never ended: the same connection, still live, and
  // what it sends is accepted under the newest token.
  assert.equal(await page.evaluate(() => socket.id), socketId, 'the same socket throughout');
  assert.match(await text(page, '#connection'), /live \(websocket\)/);
  await page.locator('#message').fill('Still here after three refreshes');
  await page.locator('#message').press('Enter');
  await page.locator('#messages li', { hasText: 'Still here after three refreshes' }).waitFor();
  assert.equal(await page.locator('#message').inputValue(), '', 'the message was acknowledged');
  await screenshot(page, 'demo-refresh', ['Pothole on Oak Avenue', 'Still here after three refreshes', 'live (websocket)']);
  assert.deepEqual(problems, [], 'no page errors, console errors or CSP violations');
}

await run({ 'two-tabs': twoTabs, refresh });
