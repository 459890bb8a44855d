// permessage-deflate in Chromium: `switchboard serve --compression on` and the demo page. Chromium
// offers the extension on every WebSocket; the handshake's response (seen through the DevTools
// protocol) must agree to it, and chat messages, long ones (compressed by the server, above its
// 256-byte threshold) and short ones, must go from tab to tab.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { launch, startServer, screenshot, demoPage } from './lib.mjs';

let server;
let browser;
let demo;
before(async () => {
  server = await startServer('switchboard', undefined, ['--compression', 'on']);
  browser = await launch();
  demo = await demoPage(server);
});
after(async () => {
  await browser?.close();
  await demo?.close();
  await server?.stop();
});
afterEach(async (t) => {
  if (t.passed === false) {
    const pages = browser.context.pages();
    for (const [i, p] of pages.entries()) await screenshot(p, `${t.name.replace(/\W+/g, '_')}-${i}`);
  }
});

/** Opens the demo page, recording the WebSocket handshake's request and response headers. */
async function openPage() {
  const page = await browser.newPage();
  const cdp = await browser.context.newCDPSession(page);
  await cdp.send('Network.enable');
  const handshakes = [];
  cdp.on('Network.webSocketWillSendHandshakeRequest', (e) => handshakes.push({ request: lower(e.request.headers) }));
  cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
    const last = handshakes.at(-1) ?? {};
    last.response = lower(e.response.headers);
    last.status = e.response.status;
    if (!handshakes.length) handshakes.push(last);
  });
  await page.goto(demo.url + '/');
  await page.waitForSelector('#state[data-state=open]', { timeout: 10000 });
  return { page, handshakes };
}

function lower(headers) {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}

test('Chromium and the server agree on permessage-deflate; long and short chat messages flow', async () => {
  const one = await openPage();
  const two = await openPage();
  for (const { handshakes } of [one, two]) {
    const ws = handshakes.find((h) => h.status === 101);
    assert.ok(ws, `no WebSocket handshake seen: ${JSON.stringify(handshakes)}`);
    assert.match(ws.request['sec-websocket-extensions'] ?? '', /permessage-deflate/, 'Chromium offers it');
    assert.equal(
      ws.response['sec-websocket-extensions'],
      'permessage-deflate; server_no_context_takeover; client_no_context_takeover',
    );
  }
  const long = `compressed ${'lorem ipsum dolor sit amet, '.repeat(30)}${Date.now()}`;
  const short = `short ${Date.now()}`;
  for (const text of [long, short]) {
    await one.page.fill('#draft', text);
    await one.page.press('#draft', 'Enter');
    for (const { page } of [one, two]) {
      await page.waitForFunction(
        (t) => [...document.querySelectorAll('#messages li')].some((li) => li.textContent.endsWith(t)),
        text,
        { timeout: 5000 },
      );
    }
  }
  await one.page.close();
  await two.page.close();
  assert.deepEqual(browser.errors, []);
});
