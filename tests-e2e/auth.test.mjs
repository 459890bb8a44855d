// Identity in headless Chromium: a page served by a node HTTP server of the test loads the client
// bundle (assets/switchboard.js), connects with a `getToken` callback that fetches tokens from that
// server, and after the token expires (4005) asks again and reconnects. Also `useIdentity` (React).
//
// The page is another site than the `auth` example: it is served as http://page.test:PORT (Chromium
// resolves page.test to 127.0.0.1), the example listens on 127.0.0.1. (A 127.0.0.1 page on another
// port would not do: the default origin check compares host names, not ports, and takes the
// loopback names for one host.) The example allows the page's origin with `--allowed-origin`;
// without it the browser's handshake is refused with 403.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { launch, startServer, screenshot, waitFor } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const SECRET = 'e2e-secret-of-the-auth-example';
/** The page's host name: Chromium resolves it to 127.0.0.1, so the page is another site than the server's. */
const PAGE_HOST = 'page.test';
const nowSecs = () => Math.floor(Date.now() / 1000);

/** An HS256 JWT of `claims`. */
function jwt(claims, secret = SECRET) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const signed = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${signed}.${crypto.createHmac('sha256', secret).update(signed).digest('base64url')}`;
}

const PAGE = `<!doctype html><link rel="icon" href="data:,"><p>auth test page</p>
<script type="module">
import { connect } from '/switchboard.js';
const ws = new URLSearchParams(location.search).get('ws');
const log = (window.log = []);
const client = (window.client = connect(ws, {
  minDelay: 100,
  maxDelay: 500,
  getToken: async () => {
    const res = await fetch('/token');
    if (!res.ok) throw new Error('token service: HTTP ' + res.status);
    return res.text();
  },
}));
client.onIdentity((i) => log.push(i ? { kind: 'identity', client: i.client, user: i.user, expiresIn: i.expiresIn } : { kind: 'gone', closeCode: client.closeCode }));
client.onError((e) => log.push({ kind: 'error', name: e.name, message: e.message }));
client.subscribe('news', {}, (d) => log.push({ kind: 'news', text: d.text }), {
  onSubscribed: (i) => log.push({ kind: 'subscribed', resubscribed: i.resubscribed }),
});
</script>`;

const REACT_APP = `
import React from 'react';
import { createRoot } from 'react-dom/client';
import { connect } from 'switchboard-client';
import { useIdentity, useConnectionState } from 'switchboard-client/react';
const h = React.createElement;
const client = (window.client = connect(window.WS_URL, { getToken: () => fetch('/token').then((r) => r.text()) }));
function App() {
  const identity = useIdentity(client);
  const state = useConnectionState(client);
  return h('p', null, h('span', { id: 'state' }, state), ' ', h('span', { id: 'who' }, identity ? identity.user + '|' + identity.client : 'none'));
}
createRoot(document.getElementById('root')).render(h(App));
`;

/** What `/token` answers, by call number (1-based): a token, or an HTTP status to fail with. */
let tokenPlan = () => jwt({ sub: 'browser', exp: nowSecs() + 3600 });
let tokenCalls = 0;
let reactBundle;
const bundle = readFileSync(path.resolve(here, '../assets/switchboard.js'));

let page;
let open; // the auth example allowing the page's origin
let strict; // the auth example with the default origin check
let browser;

/** Serves the page, the client bundle and tokens from 127.0.0.1 on a port of its own. */
async function servePage() {
  const srv = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/switchboard.js' || url.pathname === '/react.js') {
      res.setHeader('content-type', 'text/javascript');
      return res.end(url.pathname === '/react.js' ? reactBundle : bundle);
    }
    if (url.pathname === '/token') {
      const answer = tokenPlan(++tokenCalls);
      if (typeof answer === 'number') return res.writeHead(answer).end('unavailable');
      res.setHeader('content-type', 'text/plain');
      return res.end(answer);
    }
    res.setHeader('content-type', 'text/html');
    if (url.pathname === '/react.html') {
      const ws = url.searchParams.get('ws');
      return res.end(`<!doctype html><link rel="icon" href="data:,"><div id="root"></div><script>window.WS_URL = ${JSON.stringify(ws)}</script><script src="/react.js"></script>`);
    }
    res.end(PAGE);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const port = srv.address().port;
  return { port, origin: `http://${PAGE_HOST}:${port}`, close: () => new Promise((r) => srv.close(r)) };
}

before(async () => {
  const dist = path.resolve(here, '../clients/js/dist');
  const r = await build({
    stdin: { contents: REACT_APP, resolveDir: here, loader: 'js' },
    bundle: true,
    write: false,
    format: 'iife',
    define: { 'process.env.NODE_ENV': '"development"' },
    alias: { 'switchboard-client/react': path.join(dist, 'react.js'), 'switchboard-client': path.join(dist, 'index.js') },
    nodePaths: [path.join(here, 'node_modules')],
    logLevel: 'warning',
  });
  reactBundle = r.outputFiles[0].text;
  page = await servePage();
  open = await startServer('auth', undefined, ['--hmac-secret', SECRET, '--allowed-origin', page.origin]);
  strict = await startServer('auth', undefined, ['--hmac-secret', SECRET]);
  browser = await launch({ args: [`--host-resolver-rules=MAP ${PAGE_HOST} 127.0.0.1`] });
});
after(async () => {
  await browser?.close();
  await page?.close();
  await open?.stop();
  await strict?.stop();
});
afterEach(async (t) => {
  if (t.passed === false) {
    for (const [i, p] of browser.context.pages().entries()) await screenshot(p, `${t.name.replace(/\W+/g, '_')}-${i}`);
  }
});

const pageLog = (tab) => tab.evaluate(() => window.log);
const waitLog = (tab, pred, what, ms = 8000) => waitFor(async () => (await pageLog(tab)).find(pred), ms, what);

test('the token expires (4005): the page asks getToken again, reconnects and gets publications', async () => {
  tokenCalls = 0;
  // 1: a token for 2 s; 2 (the refresh before the expiry): the token service fails; 3+: an hour
  tokenPlan = (n) => (n === 1 ? jwt({ sub: 'browser', exp: nowSecs() + 2 }) : n === 2 ? 503 : jwt({ sub: 'browser', exp: nowSecs() + 3600 }));
  const tab = await browser.newPage();
  await tab.goto(`${page.origin}/?ws=${encodeURIComponent(open.wsUrl)}`);
  const first = await waitLog(tab, (e) => e.kind === 'identity', 'connected');
  assert.equal(first.user, 'browser');
  assert.ok(first.expiresIn <= 2);
  await waitLog(tab, (e) => e.kind === 'subscribed', 'subscribed');

  // the failed refresh is reported; then the server closes with 4005 at the expiry
  const err = await waitLog(tab, (e) => e.kind === 'error', 'the refresh error');
  assert.deepEqual(err, { kind: 'error', name: 'TokenError', message: 'getToken failed (refresh): token service: HTTP 503' });
  await tab.waitForFunction(() => window.client.closeCode === 4005, null, { timeout: 6000 });
  assert.equal(await tab.evaluate(() => window.client.closeReason), 'token expired');

  // getToken again, a new connection: a new client id, the same user, the subscription back
  const second = await waitLog(tab, (e) => e.kind === 'identity' && e.client !== first.client, 'connected again');
  assert.equal(second.user, 'browser');
  assert.ok(second.expiresIn > 3000);
  assert.equal(tokenCalls, 3);
  await waitLog(tab, (e) => e.kind === 'subscribed' && e.resubscribed, 're-subscribed');
  assert.equal(await tab.evaluate(() => window.client.state), 'open');

  const res = await fetch(`${open.url}/_broadcast`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ channel: 'news', data: { text: 'after 4005' } }),
  });
  assert.equal(res.status, 200);
  await waitLog(tab, (e) => e.kind === 'news' && e.text === 'after 4005', 'the publication');
  assert.equal((await tab.evaluate(() => window.client.action('whoami'))).user, 'browser');
  await tab.close();
  assert.deepEqual(browser.errors.filter((e) => e.startsWith('pageerror')), []);
});

test('without --allowed-origin the handshake of a page of another site is refused with 403', async () => {
  tokenPlan = () => jwt({ sub: 'browser', exp: nowSecs() + 3600 });
  const before = browser.errors.length;
  const tab = await browser.newPage();
  await tab.goto(`${page.origin}/?ws=${encodeURIComponent(strict.wsUrl)}`);
  // Chromium reports the refused handshake on the console
  await waitFor(() => browser.errors.slice(before).some((e) => /WebSocket/.test(e) && /403/.test(e)), 8000, 'a 403 on the console').catch((e) => {
    throw new Error(`${e.message}; console: ${JSON.stringify(browser.errors.slice(before))}`);
  });
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(await tab.evaluate(() => window.client.identity), undefined);
  assert.notEqual(await tab.evaluate(() => window.client.state), 'open');
  assert.deepEqual(
    (await pageLog(tab)).filter((e) => e.kind === 'identity'),
    [],
  );
  await tab.close();

  // the same handshake (the page's Origin) from node: 403, naming the setting
  const handshake = (srv) =>
    new Promise((resolve, reject) => {
      const req = http.request(`${srv.url}/`, {
        headers: {
          Origin: page.origin,
          Connection: 'Upgrade',
          Upgrade: 'websocket',
          'Sec-WebSocket-Version': '13',
          'Sec-WebSocket-Key': crypto.randomBytes(16).toString('base64'),
        },
      });
      req.on('upgrade', (res, socket) => {
        socket.destroy();
        resolve({ status: res.statusCode, body: '' });
      });
      req.on('response', (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode, body }));
      });
      req.on('error', reject);
      req.end();
    });
  const refused = await handshake(strict);
  assert.equal(refused.status, 403);
  assert.match(refused.body, /allowed.origin/i);
  assert.equal((await handshake(open)).status, 101, 'allowed with --allowed-origin');
});

test('useIdentity shows who the connection is', async () => {
  tokenPlan = () => jwt({ sub: 'react-user', exp: nowSecs() + 3600 });
  const tab = await browser.newPage();
  await tab.goto(`${page.origin}/react.html?ws=${encodeURIComponent(open.wsUrl)}`);
  await tab.waitForSelector('#state:text-is("open")', { timeout: 10000 });
  const who = await tab.textContent('#who');
  assert.match(who, /^react-user\|.+/);
  assert.equal(who.split('|')[1], await tab.evaluate(() => window.client.clientId));
  await tab.evaluate(() => window.client.close());
  await tab.waitForSelector('#who:text-is("none")', { timeout: 5000 });
  await tab.close();
  assert.deepEqual(browser.errors.filter((e) => e.startsWith('pageerror')), []);
});
