// `switchboard serve`: the demo page, the bundle, pub/sub `ticker` and the shared `chat` route.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startServer } from './server.mjs';
import { clients, recorder } from './util.mjs';

let server;
const cs = clients();
before(async () => {
  server = await startServer('switchboard');
});
after(async () => {
  cs.closeAll();
  await server?.stop();
});

test('serves the page and the bundle', async () => {
  const page = await fetch(server.url + '/');
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type') ?? '', /text\/html/);
  const html = await page.text();
  assert.match(html, /Type message\.\.\./);
  assert.match(html, /switchboard\.js/);
  const js = await fetch(server.url + '/switchboard.js');
  assert.equal(js.status, 200);
  assert.match(js.headers.get('content-type') ?? '', /javascript/);
  const body = await js.text();
  assert.match(body, /export\s*\{/);
  // the binary embeds assets/switchboard.js as committed
  const committed = readFileSync(new URL('../../../assets/switchboard.js', import.meta.url), 'utf8');
  assert.equal(body.length > 1000, true);
  if (body !== committed) console.warn('note: the served bundle differs from assets/switchboard.js (binary built before the last bundle build?)');
});

test('ticker publishes every second', async () => {
  const c = cs.open(server.wsUrl);
  const got = recorder();
  c.subscribe('ticker', {}, got);
  const first = await got.next((d) => typeof d?.seq === 'number', 3000);
  const later = await got.next((d) => d.seq > first.seq, 3000);
  assert.ok('time' in later);
});

test('chat: client:send reaches every open chat channel of every connection', async () => {
  const a = cs.open(server.wsUrl);
  const b = cs.open(server.wsUrl);
  const chatA = a.channel('chat');
  const chatB = b.channel('chat');
  await Promise.all([chatA.ready, chatB.ready]);
  const gotA = recorder();
  const gotB = recorder();
  chatA.on('server:message', gotA);
  chatB.on('server:message', gotB);
  chatA.emit('client:send', { text: 'to everyone' });
  assert.equal((await gotA.next()).text, 'to everyone');
  assert.equal((await gotB.next()).text, 'to everyone');
});

test('server:ask is answered through the serve binary too', async () => {
  const c = cs.open(server.wsUrl);
  const chat = c.channel('chat');
  chat.on('server:ask', () => ({ confirmed: true }));
  await chat.ready;
  const answers = recorder();
  chat.on('server:answer', answers);
  chat.emit('client:confirm', {});
  assert.deepEqual(await answers.next(), { confirmed: true });
});
