// The real-browser tier's plumbing: Debian's Chromium driven by
// playwright-core (nothing is downloaded at run time), a page served from an
// origin of its own (another port, so every call to CivicPulse is
// cross-origin, as it is for a real web app), the official browser build of
// socket.io-client served from the npm package, screenshots, and the runner
// that turns one scenario into the exit code the Rust side takes as the
// verdict (the same contract as tests/js/harness.mjs).
//
// CP_INPUT          the test's data as JSON (each script lists what it reads)
// CP_TIMEOUT_MS     overall time limit (default 60000)
// CHROMIUM          the browser (default /usr/bin/chromium, Debian's)
// CP_SCREENSHOTS    where screenshots go (default target/browser-screenshots)

import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
export const ROOT = join(HERE, '../..');
export const input = JSON.parse(process.env.CP_INPUT ?? '{}');
export const TIMEOUT_MS = Number(process.env.CP_TIMEOUT_MS ?? 60000);
/** How long to wait for something that should happen. */
export const WAIT_MS = 10000;
export const SCREENSHOTS = process.env.CP_SCREENSHOTS ?? join(ROOT, 'target/browser-screenshots');

/** The official client's browser build, as its docs ship it. */
export const CLIENT_BUNDLE = join(HERE, 'node_modules/socket.io-client/dist/socket.io.min.js');
/** The Socket.IO Admin UI's own bundle (its npm package's `ui/dist`). */
export const ADMIN_UI_DIR = join(HERE, 'node_modules/@socket.io/admin-ui/ui/dist');

const started = Date.now();
export function log(...args) {
  console.log(`[${String(Date.now() - started).padStart(5)} ms]`, ...args);
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with `value()` once it is truthy (it may be async), or fails after `ms`. */
export async function until(what, value, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await value();
    if (v) return v;
    if (Date.now() > deadline) throw new assert.AssertionError({ message: `timed out after ${ms} ms waiting for ${what}` });
    await sleep(50);
  }
}

/** Closed at the end whatever happens. */
const opened = [];

// ---- the browser ------------------------------------------------------------

/** Debian's Chromium, headless. */
export async function launch() {
  const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    // Root in a container: no user namespaces for the sandbox.
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  opened.push(() => browser.close());
  return browser;
}

/**
 * A new page (its own context: cookies and storage of its own, like a
 * separate browser profile) whose console and page errors go to the log.
 */
export async function newPage(browser, label) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  const page = await context.newPage();
  page.on('console', (m) => log(`${label} console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log(`${label} page error: ${e.message}`));
  return page;
}

// ---- the page's origin --------------------------------------------------------

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css', '.map': 'application/json' };

/**
 * An HTTP server on 127.0.0.1 (a free port: an origin of its own, or
 * `port`, an origin the server under test was told to allow) serving
 * `files`, a map from path to `{ body | file, type }`, and `/socket.io.min.js`
 * from the npm package. Resolves with its origin, `http://127.0.0.1:PORT`.
 * `port` 0 (the default) is a free one; a test gives its own when the
 * server must know the origin first (its CORS_ORIGINS).
 */
export async function serveOrigin(files = {}, port = 0) {
  const routes = { '/socket.io.min.js': { file: CLIENT_BUNDLE }, ...files };
  const server = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    const route = routes[path] ?? directoryRoute(routes, path);
    if (!route) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    try {
      const body = route.body ?? readFileSync(route.file);
      const ext = (route.file ?? path).match(/\.[a-z]+$/)?.[0] ?? '.html';
      res.writeHead(200, { 'content-type': route.type ?? TYPES[ext] ?? 'application/octet-stream' }).end(body);
    } catch (e) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(String(e));
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  opened.push(() => new Promise((resolve) => server.close(resolve)));
  return `http://127.0.0.1:${server.address().port}`;
}

/** A route `{ dir }` under a prefix (`'/admin/': { dir }`) serves that directory. */
function directoryRoute(routes, path) {
  for (const [prefix, route] of Object.entries(routes)) {
    if (!route.dir || !path.startsWith(prefix)) continue;
    const rest = path.slice(prefix.length) || 'index.html';
    const file = join(route.dir, rest);
    if (!file.startsWith(route.dir)) return null;
    try {
      if (statSync(file).isFile()) return { file };
    } catch {
      return null;
    }
  }
  return null;
}

/** A blank page that loads the official client, as a page without a bundler would. */
export const CLIENT_PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>browser tier</title>
<script src="/socket.io.min.js"></script></head>
<body><h1>browser tier</h1><pre id="log"></pre></body></html>`;

/**
 * Serves the CivicPulse demo client's requests for the official client
 * bundle (a CDN address) from the npm package: nothing goes to the network.
 */
export async function routeClientBundle(page) {
  await page.route(/\/socket\.io(\.min)?\.js(\?.*)?$/, (route) =>
    route.fulfill({ status: 200, contentType: 'text/javascript', body: readFileSync(CLIENT_BUNDLE) }),
  );
}

// ---- screenshots --------------------------------------------------------------

/**
 * Takes a full-page screenshot to `SCREENSHOTS/<name>.png` and checks the
 * page's own state at that moment: every `expected` text is visible in it
 * (a screenshot of the wrong state is a failure, not a picture).
 */
export async function screenshot(page, name, expected = []) {
  for (const text of expected) {
    await page.getByText(text, { exact: false }).first().waitFor({ state: 'visible', timeout: WAIT_MS });
  }
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, `${name}.png`);
  const png = await page.screenshot({ path, fullPage: true });
  // A PNG, and not an empty one.
  assert.equal(png.subarray(1, 4).toString(), 'PNG', `${path} is a PNG`);
  assert.ok(png.length > 2000, `${path} has content (${png.length} bytes)`);
  log(`screenshot ${path} (${png.length} bytes)`);
  return path;
}

// ---- the runner ---------------------------------------------------------------

async function cleanup() {
  for (const close of opened.reverse()) {
    try {
      await close();
    } catch {
      // best effort
    }
  }
}

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
  setTimeout(async () => {
    console.error(`FAIL ${name}: timed out after ${TIMEOUT_MS} ms`);
    await cleanup();
    process.exit(3);
  }, TIMEOUT_MS);
  try {
    log(`scenario ${name}`);
    await scenarios[name]();
    log(`PASS ${name}`);
    await cleanup();
    process.exit(0);
  } catch (e) {
    console.error(`FAIL ${name}: ${e?.stack ?? e}`);
    await cleanup();
    process.exit(1);
  }
}
