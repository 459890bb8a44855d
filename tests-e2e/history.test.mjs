// The demo page's chat keeps history (the pub/sub channel `chat`, last 100 messages): a reloaded
// page or a new tab shows the recent messages, each once; after a server restart the page keeps
// what it showed and goes on with the new stream.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { launch, startServer, screenshot, freePort, waitFor } from './lib.mjs';

let browser;
const servers = [];
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
  for (const s of servers) await s.stop();
});
afterEach(async (t) => {
  if (t.passed === false) {
    for (const [i, p] of browser.context.pages().entries()) await screenshot(p, `${t.name.replace(/\W+/g, '_')}-${i}`);
  }
});

async function openPage(server, page) {
  page ??= await browser.newPage();
  await page.goto(server.url + '/');
  await page.waitForSelector('#state[data-state=open]', { timeout: 10000 });
  return page;
}

async function send(page, text) {
  await page.fill('#draft', text);
  await page.click('button:text-is("Send")');
  await page.waitForSelector(`#messages li:text-is("User: ${text}")`, { timeout: 5000 });
}

const messages = (page) => page.evaluate(() => [...document.querySelectorAll('#messages li')].map((li) => li.textContent));

test('a reloaded page and a new tab show the recent chat messages, each once and in order', async () => {
  const server = await startServer('switchboard');
  servers.push(server);
  const page = await openPage(server);
  const sent = ['first message', 'second message', 'third message'];
  for (const text of sent) await send(page, text);

  await page.reload();
  await page.waitForSelector('#state[data-state=open]', { timeout: 10000 });
  await page.waitForSelector('#messages li:text-is("User: third message")', { timeout: 5000 });
  assert.deepEqual(await messages(page), sent.map((t) => `User: ${t}`));

  const other = await openPage(server);
  await other.waitForSelector('#messages li:text-is("User: third message")', { timeout: 5000 });
  // a message from the new tab reaches the reloaded one, once
  await send(other, 'from the new tab');
  await page.waitForSelector('#messages li:text-is("User: from the new tab")', { timeout: 5000 });
  assert.deepEqual(await messages(page), [...sent, 'from the new tab'].map((t) => `User: ${t}`));
  assert.deepEqual(await messages(other), await messages(page));
  await screenshot(page, 'chat-history');
  await page.close();
  await other.close();
  assert.deepEqual(browser.errors.filter((e) => e.startsWith('pageerror')), []);
});

test('after a server restart the page keeps its messages and goes on with the new stream', async () => {
  const first = await startServer('switchboard');
  servers.push(first);
  const page = await openPage(first);
  await send(page, 'before the restart');

  await first.kill(); // like a crash: the in-memory history is gone, a new epoch begins
  await page.waitForSelector('#state:not([data-state=open])', { timeout: 5000 });
  const second = await startServer('switchboard', first.port);
  servers.push(second);
  await page.waitForSelector('#state[data-state=open]', { timeout: 15000 });
  await send(page, 'after the restart');
  const shown = await messages(page);
  assert.equal(shown[0], 'User: before the restart');
  assert.equal(shown.at(-1), 'User: after the restart');
  assert.equal(shown.filter((m) => m === 'User: after the restart').length, 1);

  // a reload shows what the restarted server keeps
  await page.reload();
  await page.waitForSelector('#messages li:text-is("User: after the restart")', { timeout: 10000 });
  assert.deepEqual(await messages(page), ['User: after the restart']);
  await page.close();
  assert.deepEqual(browser.errors.filter((e) => e.startsWith('pageerror')), []);
});

/** A redis-server on a free loopback port, without persistence; null if it is not installed. */
async function startRedis() {
  const port = await freePort();
  const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  const failed = await new Promise((resolve) => {
    proc.on('error', () => resolve(true));
    setTimeout(() => resolve(false), 200);
  });
  if (failed) return null;
  await waitFor(async () => {
    const net = await import('node:net');
    return await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.end();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
  }, 10000, 'redis-server listening');
  return { url: `redis://127.0.0.1:${port}`, stop: () => proc.kill('SIGKILL') };
}

test('with the Redis broker, a page recovers across its server restart what another node published meanwhile', async (t) => {
  const redis = await startRedis();
  if (!redis) return t.skip('redis-server is not installed');
  try {
    const broker = ['--broker', redis.url];
    const first = await startServer('switchboard', undefined, broker);
    const other = await startServer('switchboard', undefined, broker);
    servers.push(first, other);
    const page = await openPage(first);
    await send(page, 'before the restart');

    await first.kill(); // a crash of this node; the stream lives in Redis
    await page.waitForSelector('#state:not([data-state=open])', { timeout: 5000 });
    const elsewhere = await openPage(other);
    await elsewhere.waitForSelector('#messages li:text-is("User: before the restart")', { timeout: 5000 });
    await send(elsewhere, 'while it was down');

    const restarted = await startServer('switchboard', first.port, broker);
    servers.push(restarted);
    await page.waitForSelector('#state[data-state=open]', { timeout: 15000 });
    // Recovered from the shared stream: the missed message, once, in order.
    await page.waitForSelector('#messages li:text-is("User: while it was down")', { timeout: 10000 });
    assert.deepEqual(await messages(page), ['User: before the restart', 'User: while it was down']);
    await send(elsewhere, 'after the restart');
    await page.waitForSelector('#messages li:text-is("User: after the restart")', { timeout: 5000 });
    assert.deepEqual(await messages(page), ['before the restart', 'while it was down', 'after the restart'].map((m) => `User: ${m}`));
    await page.close();
    await elsewhere.close();
    assert.deepEqual(browser.errors.filter((e) => e.startsWith('pageerror')), []);
  } finally {
    redis.stop();
  }
});
