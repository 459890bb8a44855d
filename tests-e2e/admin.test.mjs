// The admin page (assets/admin.html, served by `switchboard serve` at /admin when admin_password is
// configured) in headless Chromium: a wrong password is refused, the right one shows the node and,
// live (polling /api/info and /api/channels), a subscriber coming and going; the publish form
// reaches the subscriber.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, startServer, screenshot, waitFor } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const API_KEY = 'e2e-admin-test-api-key';
const PASSWORD = 'e2e admin password';

let dir;
let server;
let browser;
let admin;
before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'switchboard-admin-'));
  const config = path.join(dir, 'switchboard.toml');
  writeFileSync(
    config,
    `api_key = "${API_KEY}"
admin_password = "${PASSWORD}"

[[namespace]]
name = "chat"
client_publish = true
`,
  );
  server = await startServer('switchboard', undefined, ['--config', config]);
  browser = await launch();
  admin = await adminPage(server);
});
after(async () => {
  await browser?.close();
  await admin?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});
afterEach(async (t) => {
  if (t.passed === false) {
    const pages = browser.context.pages();
    for (const [i, p] of pages.entries()) await screenshot(p, `admin-${t.name.replace(/\W+/g, '_')}-${i}`);
  }
});

/**
 * The URL of the admin page. `switchboard serve` embeds assets/admin.html when it is compiled: a
 * binary built before this checkout's page changed serves an older one. Then a small HTTP server
 * of the test serves this checkout's at /admin and passes everything else (the /api calls) to
 * `server`, and its URL is returned, with a note.
 */
async function adminPage(server) {
  const page = readFileSync(path.join(here, '../assets/admin.html'), 'utf8');
  const served = await fetch(server.url + '/admin');
  assert.equal(served.status, 200, 'GET /admin with admin_password configured');
  assert.match(served.headers.get('content-type') ?? '', /text\/html/);
  if ((await served.text()) === page) return { url: server.url, close: async () => {} };
  const proxy = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/admin') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      return res.end(page);
    }
    const up = http.request({ host: '127.0.0.1', port: server.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${proxy.address().port}`;
  console.warn(`note: ${server.url}/admin is another assets/admin.html (binary built before it changed?): this checkout's is served at ${url}/admin`);
  return { url, close: () => new Promise((resolve) => (proxy.closeAllConnections(), proxy.close(resolve))) };
}

const text = (page, selector) => page.$eval(selector, (e) => e.textContent.trim());

/** The subscriber count the page shows for `channel`, or null when it lists no such row. */
const shownCount = (page, channel) =>
  page.evaluate((c) => {
    const row = [...document.querySelectorAll('#channels tbody tr')].find((r) => r.dataset.channel === c);
    return row ? Number(row.querySelector('.count').textContent) : null;
  }, channel);

async function login(page, secret) {
  await page.fill('#password', secret);
  await page.click('#login-send');
}

test('the admin page: login, live node and channels, publish', async () => {
  const page = await browser.newPage();
  await page.goto(admin.url + '/admin');
  await page.waitForSelector('#password', { state: 'visible' });
  assert.equal(await page.isHidden('#dashboard'), true, 'nothing shown before the login');

  // A wrong password: "Wrong password", and the login again.
  await login(page, 'not the password');
  await page.waitForFunction(() => document.querySelector('#login-error').textContent === 'Wrong password', null, { timeout: 5000 });
  assert.equal(await page.isVisible('#password'), true);
  assert.equal(await page.isHidden('#dashboard'), true);

  // The right one: the node, 0 connections.
  await login(page, PASSWORD);
  await page.waitForSelector('#dashboard', { state: 'visible', timeout: 5000 });
  await page.waitForFunction(() => document.querySelectorAll('#nodes tbody tr').length === 1, null, { timeout: 5000 });
  assert.equal(await text(page, '#connections'), '0');
  assert.equal(await text(page, '#nodes tbody tr td.connections'), '0');
  assert.ok((await text(page, '#nodes tbody tr td')).length > 0, 'the node has a name');
  assert.match(await text(page, '#nodes tbody tr td.uptime'), /^(\d+[dhm] )*\d+s$/);
  assert.equal(await page.evaluate(() => sessionStorage.length), 1, 'the secret is kept for the tab');
  // Marks this document: a reload would lose it (the counts below must come live).
  await page.evaluate(() => (window.notReloaded = true));

  // A subscriber to chat:lobby, in a tab of its own on the server's origin (a text page: it opens
  // no WebSocket of its own).
  const tab = await browser.newPage();
  await tab.goto(server.url + '/metrics');
  await tab.evaluate(async (url) => {
    window.got = [];
    const ws = (window.ws = new WebSocket(url));
    ws.onmessage = (e) => window.got.push(JSON.parse(e.data));
    await new Promise((resolve, reject) => ((ws.onopen = resolve), (ws.onerror = reject)));
    ws.send(JSON.stringify({ type: 'subscribe', channel: 'chat:lobby', id: 1 }));
  }, server.wsUrl);
  await tab.waitForFunction(() => window.got.some((m) => m.type === 'subscribed' && m.id === 1), null, { timeout: 5000 });

  await waitFor(async () => (await shownCount(page, 'chat:lobby')) === 1, 5000, 'chat:lobby with 1 subscriber on the page');
  await waitFor(async () => (await text(page, '#connections')) === '1', 5000, '1 connection on the page');
  assert.equal(await text(page, '#nodes tbody tr td.connections'), '1');
  assert.equal(await page.evaluate(() => window.notReloaded), true, 'updated without a reload');

  // Publish through the form: the subscriber receives exactly that data.
  await page.fill('#publish-channel', 'chat:lobby');
  await page.fill('#publish-data', '{"text": "from admin"}');
  await page.click('#publish-send');
  await page.waitForFunction(() => /^Published to chat:lobby/.test(document.querySelector('#publish-result').textContent), null, { timeout: 5000 });
  await tab.waitForFunction(() => window.got.some((m) => m.type === 'data'), null, { timeout: 5000 });
  await new Promise((r) => setTimeout(r, 300)); // anything more would have come by now
  const data = await tab.evaluate(() => window.got.filter((m) => m.type === 'data'));
  assert.equal(data.length, 1, JSON.stringify(data));
  assert.equal(data[0].channel, 'chat:lobby');
  assert.deepEqual(data[0].data, { text: 'from admin' });

  // Errors are shown: JSON that does not parse (not sent), and the server's refusal.
  await page.fill('#publish-data', '{"text": ');
  await page.click('#publish-send');
  await page.waitForFunction(() => document.querySelector('#publish-result').textContent.startsWith('Invalid JSON'), null, { timeout: 2000 });
  assert.equal(await page.getAttribute('#publish-result', 'class'), 'error');
  await page.fill('#publish-channel', 'nowhere');
  await page.fill('#publish-data', '{}');
  await page.click('#publish-send');
  await page.waitForFunction(() => /^Error 4\d\d: ./.test(document.querySelector('#publish-result').textContent), null, { timeout: 5000 });

  // The subscriber leaves: back to 0.
  await tab.evaluate(() => window.ws.close());
  await waitFor(async () => (await text(page, '#connections')) === '0', 5000, '0 connections on the page');
  await waitFor(async () => [null, 0].includes(await shownCount(page, 'chat:lobby')), 5000, 'chat:lobby without subscribers');
  assert.equal(await page.evaluate(() => window.notReloaded), true);

  // A reload keeps the login (sessionStorage); logging out forgets it.
  await page.reload();
  await page.waitForFunction(() => document.querySelectorAll('#nodes tbody tr').length === 1, null, { timeout: 5000 });
  await page.click('#logout');
  await page.waitForSelector('#password', { state: 'visible' });
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);

  // The API key is accepted as the admin secret too.
  await login(page, API_KEY);
  await page.waitForFunction(() => document.querySelectorAll('#nodes tbody tr').length === 1, null, { timeout: 5000 });

  await tab.close();
  await page.close();
  // The refused login's 401 and the refused publish are on the console (Chromium logs failed
  // requests); nothing else.
  assert.deepEqual(browser.errors.filter((e) => !/responded with a status of 4\d\d/.test(e)), []);
});

test('without admin_password there is no admin page', async () => {
  const plain = await startServer('switchboard');
  try {
    const res = await fetch(plain.url + '/admin');
    assert.equal(res.status, 404);
  } finally {
    await plain.stop();
  }
});
