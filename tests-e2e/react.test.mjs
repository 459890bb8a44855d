// The React hooks (clients/js/dist/react.js) in a real React 19 DOM app in headless Chromium,
// under StrictMode (effects mount, unmount and mount again).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { build } from 'esbuild';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, startServer, screenshot } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

const APP = `
import React, { StrictMode, useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { connect } from 'switchboard-client';
import { useChannel, useSubscription, useSubscriptionState, useConnectionState, usePresence } from 'switchboard-client/react';
const h = React.createElement;

const client = connect(window.WS_URL, { minDelay: 100, maxDelay: 1000 });
window.client = client;
window.bridges = [];

function Chat() {
  const chat = useChannel(client, 'chat');
  const [messages, setMessages] = useState([]);
  useEffect(() => {
    if (!chat) return;
    window.bridges.push(chat);
    const offs = [
      chat.on('server:message', (m) => setMessages((prev) => [...prev, m.text])),
      chat.on('server:ask', () => ({ confirmed: 'react' })),
      chat.on('server:answer', (a) => setMessages((prev) => [...prev, 'answer:' + JSON.stringify(a)])),
    ];
    return () => offs.forEach((off) => off());
  }, [chat]);
  return h('div', { id: 'chat' },
    h('span', { id: 'bridge' }, chat ? 'open' : 'null'),
    h('button', { id: 'send', disabled: !chat, onClick: () => chat.emit('client:send', { text: 'from react' }) }, 'Send'),
    h('button', { id: 'confirm', disabled: !chat, onClick: () => chat.emit('client:confirm', {}) }, 'Confirm'),
    h('ul', null, messages.map((m, i) => h('li', { key: i }, m))));
}

function Ticker() {
  const tick = useSubscription(client, 'ticker');
  return h('span', { id: 'tick' }, tick ? String(tick.seq) : 'none');
}

// the pub/sub chat keeps history: offset, data, and the last re-subscribe's outcome
function Feed() {
  const s = useSubscriptionState(client, 'chat');
  return h('span', { id: 'feed' }, [s.offset ?? '-', s.data?.text ?? '', String(s.recovered), s.resubscribes].join('|'));
}

// who has the demo open (the serve demo's 'members' channel: presence with joins and leaves)
function Who() {
  const members = usePresence(client, 'members');
  return h('span', { id: 'who' }, String(members.length));
}

function App() {
  const state = useConnectionState(client);
  const [showChat, setShowChat] = useState(true);
  return h('div', null,
    h('span', { id: 'state' }, state),
    h('button', { id: 'toggle', onClick: () => setShowChat((s) => !s) }, 'toggle'),
    showChat ? h(Chat) : null,
    h(Ticker),
    h(Feed),
    h(Who));
}

createRoot(document.getElementById('root')).render(h(StrictMode, null, h(App)));
`;

let server;
let browser;
let bundle;
let appServer;

/** Serves the test app from 127.0.0.1 (a page served by page.route counts as a public origin, which
 * Chromium's local network access checks forbid to open a WebSocket to 127.0.0.1). */
async function serveApp() {
  const srv = http.createServer((req, res) => {
    if (req.url === '/app.js') {
      res.setHeader('content-type', 'text/javascript');
      return res.end(bundle);
    }
    res.setHeader('content-type', 'text/html');
    res.end(`<!doctype html><link rel="icon" href="data:,"><div id="root"></div><script>window.WS_URL = ${JSON.stringify(server.wsUrl)}</script><script src="/app.js"></script>`);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${srv.address().port}/`, close: () => new Promise((r) => srv.close(r)) };
}
before(async () => {
  const dist = path.resolve(here, '../clients/js/dist');
  const r = await build({
    stdin: { contents: APP, resolveDir: here, loader: 'js' },
    bundle: true,
    write: false,
    format: 'iife',
    define: { 'process.env.NODE_ENV': '"development"' },
    alias: {
      'switchboard-client/react': path.join(dist, 'react.js'),
      'switchboard-client': path.join(dist, 'index.js'),
    },
    // dist/react.js imports 'react' and './index.js': resolve react from here, the core from dist
    nodePaths: [path.join(here, 'node_modules')],
    logLevel: 'warning',
  });
  bundle = r.outputFiles[0].text;
  server = await startServer('switchboard');
  appServer = await serveApp();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await appServer?.close();
  await server?.stop();
});

test('useChannel, useSubscription and useConnectionState', async () => {
  const page = await browser.newPage();
  await page.goto(appServer.url);
  await page.waitForSelector('#state:text-is("open")', { timeout: 10000 });
  await page.waitForSelector('#bridge:text-is("open")', { timeout: 5000 });
  // StrictMode mounted, unmounted and mounted again: one live channel, and it works
  await page.click('#send');
  await page.waitForSelector('#chat li:text-is("from react")', { timeout: 5000 });
  assert.equal(await page.locator('#chat li').count(), 1, 'one message: a single channel is open');

  // a server request answered by a handler registered in an effect
  await page.click('#confirm');
  await page.waitForSelector('#chat li:text-is(\'answer:{"confirmed":"react"}\')', { timeout: 6000 });

  // useSubscription: the latest ticker data
  await page.waitForFunction(() => /^\d+$/.test(document.getElementById('tick').textContent), null, { timeout: 5000 });
  const seq = Number(await page.textContent('#tick'));
  await page.waitForFunction((s) => Number(document.getElementById('tick').textContent) > s, seq, { timeout: 5000 });

  // unmount closes the channel
  await page.click('#toggle');
  await page.waitForFunction(() => window.bridges.length > 0 && window.bridges.every((b) => b.state === 'closed'), null, { timeout: 5000 });
  // mount again: a new bridge opens
  await page.click('#toggle');
  await page.waitForSelector('#bridge:text-is("open")', { timeout: 5000 });
  await page.click('#send');
  await page.waitForSelector('#chat li:text-is("from react")', { timeout: 5000 });
  await screenshot(page, 'react');
  assert.deepEqual(browser.errors, []);
  await page.close();
});

test('useSubscriptionState: offsets, and a failed recovery after a server restart', async () => {
  const page = await browser.newPage();
  await page.goto(appServer.url);
  await page.waitForSelector('#bridge:text-is("open")', { timeout: 10000 });
  await page.waitForSelector('#feed:text-is("-||undefined|0")', { timeout: 5000 });
  // client:send on the bidirectional chat is also published on the pub/sub chat
  await page.click('#send');
  await page.waitForFunction(() => /^\d+\|from react\|undefined\|0$/.test(document.getElementById('feed').textContent), null, { timeout: 5000 });

  const port = server.port;
  await server.kill(); // its memory is lost: the re-subscribe cannot recover
  server = await startServer('switchboard', port);
  await page.waitForFunction(() => document.getElementById('feed').textContent.endsWith('|false|1'), null, { timeout: 15000 });
  await page.waitForSelector('#bridge:text-is("open")', { timeout: 5000 });
  await page.click('#send');
  await page.waitForSelector('#feed:text-is("1|from react|false|1")', { timeout: 5000 });
  await page.close();
  assert.deepEqual(browser.errors.filter((e) => e.startsWith('pageerror')), []);
});

test('usePresence: two pages are two members, a closed one leaves', async () => {
  const first = await browser.newPage();
  await first.goto(appServer.url);
  const second = await browser.newPage();
  await second.goto(appServer.url);
  // StrictMode mounted the hook twice: still one member per page
  await first.waitForSelector('#who:text-is("2")', { timeout: 10000 });
  await second.waitForSelector('#who:text-is("2")', { timeout: 10000 });
  await second.close();
  await first.waitForSelector('#who:text-is("1")', { timeout: 10000 });
  await first.close();
  assert.deepEqual(browser.errors.filter((e) => e.startsWith('pageerror')), []);
});
