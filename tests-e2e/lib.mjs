// Shared by the end-to-end tests: headless system Chromium through playwright-core, and the
// server spawner of clients/js/test (which honours SWITCHBOARD_BIN / SWITCHBOARD_EXAMPLES_DIR).
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export { startServer, freePort, waitFor } from '../clients/js/test/server.mjs';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const ARTIFACTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'artifacts');

/**
 * A fresh headless Chromium with its own profile dir; `close()` removes the profile. `args`: more
 * command-line switches (e.g. `--host-resolver-rules=MAP page.test 127.0.0.1`).
 */
export async function launch({ args = [] } = {}) {
  const profile = mkdtempSync(path.join(tmpdir(), 'switchboard-e2e-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      ...args,
    ],
  });
  const errors = [];
  context.on('page', (page) => watch(page, errors));
  for (const page of context.pages()) watch(page, errors);
  return {
    context,
    /** Uncaught page errors and console errors seen so far. */
    errors,
    async newPage() {
      const page = await context.newPage();
      return page;
    },
    async close() {
      await context.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

function watch(page, errors) {
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
}

/** Save a screenshot under artifacts/ (for a failing test, or to look at the page). */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true }).catch(() => {});
  return file;
}

/**
 * The URL to load the demo page from. `switchboard serve` embeds assets/ when it is compiled, so a
 * binary built before this checkout's page (assets/index.html) or bundle (assets/switchboard.js)
 * changed serves older ones: then a small HTTP server of the test on 127.0.0.1 serves this
 * checkout's and passes the WebSocket (any upgrade) through to `server`, and its URL is returned,
 * with a note. (Playwright's `route.fulfill` would not do: Chromium's local network access checks
 * then refuse the page's WebSocket to 127.0.0.1.) `close()` stops it.
 */
export async function demoPage(server) {
  const asset = (name) => readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '../assets', name), 'utf8');
  const page = asset('index.html');
  const bundle = asset('switchboard.js');
  const served = await (await fetch(server.url + '/')).text();
  const servedJs = await (await fetch(server.url + '/switchboard.js')).text();
  if (served === page && servedJs === bundle) return { url: server.url, close: async () => {} };
  const sockets = new Set();
  const proxy = http.createServer((req, res) => {
    const body = req.url === '/' ? page : req.url === '/switchboard.js' ? bundle : null;
    res.writeHead(body == null ? 404 : 200, { 'content-type': req.url === '/' ? 'text/html' : 'text/javascript' });
    res.end(body ?? 'not found');
  });
  proxy.on('connection', (s) => (sockets.add(s), s.on('close', () => sockets.delete(s))));
  proxy.on('upgrade', (req, socket, head) => {
    const up = net.connect(server.port, '127.0.0.1', () => {
      let raw = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) raw += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(raw + '\r\n');
      up.write(head);
      socket.pipe(up).pipe(socket);
    });
    sockets.add(up);
    up.on('close', () => (sockets.delete(up), socket.destroy()));
    up.on('error', () => socket.destroy());
    socket.on('error', () => up.destroy());
    socket.on('close', () => up.destroy());
  });
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${proxy.address().port}`;
  console.warn(`note: ${server.url} serves another assets/index.html or switchboard.js (binary built before they changed?): this checkout's are served at ${url}`);
  return {
    url,
    close: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      proxy.close(resolve);
    }),
  };
}
