// The page survives a server restart: it reconnects, re-subscribes `ticker` and re-opens `chat`.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { launch, startServer, screenshot } from './lib.mjs';

let browser;
const servers = [];
after(async () => {
  await browser?.close();
  for (const s of servers) await s.stop();
});

const tickerCount = (page) => page.evaluate(() => document.querySelectorAll('#ticker li').length);
const lastTick = (page) => page.evaluate(() => document.querySelector('#ticker li:last-child')?.textContent ?? '');

test('the page reconnects after the server is killed and started again on the same port', async () => {
  const first = await startServer('switchboard');
  servers.push(first);
  browser = await launch();
  const page = await browser.newPage();
  await page.goto(first.url + '/');
  await page.waitForSelector('#state[data-state=open]', { timeout: 10000 });
  await page.waitForFunction(() => document.querySelectorAll('#ticker li').length >= 1, null, { timeout: 5000 });

  await first.kill(); // like a crash
  await page.waitForSelector('#state:not([data-state=open])', { timeout: 5000 });
  const before = await lastTick(page);
  await new Promise((r) => setTimeout(r, 1500));
  assert.equal(await lastTick(page), before, 'no data while the server is down');

  const second = await startServer('switchboard', first.port);
  servers.push(second);
  await page.waitForSelector('#state[data-state=open]', { timeout: 15000 });
  // the subscription is back: new ticks arrive
  await page.waitForFunction((b) => (document.querySelector('#ticker li:last-child')?.textContent ?? '') !== b, before, { timeout: 5000 });
  const n = await tickerCount(page);
  await page.waitForFunction((n) => document.querySelectorAll('#ticker li').length > n, n, { timeout: 5000 });

  // and the chat channel was re-opened
  await page.fill('#draft', 'after restart');
  await page.click('button:text-is("Send")');
  await page.waitForSelector('#messages li:text-is("User: after restart")', { timeout: 5000 });
  await screenshot(page, 'after-restart');
  await page.close();
  // a failed WebSocket attempt is logged by Chromium; page errors are not expected
  assert.deepEqual(browser.errors.filter((e) => e.startsWith('pageerror')), []);
});
