// The demo page (assets/index.html, served by `switchboard serve`) in headless Chromium.
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { launch, startServer, screenshot, demoPage } from './lib.mjs';

let server;
let browser;
let demo;
before(async () => {
  server = await startServer('switchboard');
  browser = await launch();
  demo = await demoPage(server);
});
after(async () => {
  await browser?.close();
  await demo?.close();
  await server?.stop();
});
afterEach(async (t) => {
  // keep a picture of every page of a failed test
  if (t.passed === false) {
    const pages = browser.context.pages();
    for (const [i, p] of pages.entries()) await screenshot(p, `${t.name.replace(/\W+/g, '_')}-${i}`);
  }
});

async function openPage() {
  const page = await browser.newPage();
  await page.goto(demo.url + '/');
  await page.waitForSelector('#state[data-state=open]', { timeout: 10000 });
  return page;
}

test('a chat message sent in one tab appears in every open tab', async () => {
  const [one, two, three] = [await openPage(), await openPage(), await openPage()];
  const text = `hello from tab one ${Date.now()}`;
  await one.fill('input[placeholder="Type message..."]', text);
  await one.click('button:text-is("Send")');
  for (const page of [one, two, three]) {
    await page.waitForSelector(`#messages li:text-is("User: ${text}")`, { timeout: 5000 });
  }
  assert.equal(await one.inputValue('#draft'), '', 'the input is cleared after sending');

  // and back, from another tab, with Enter
  await three.fill('#draft', 'reply from tab three');
  await three.press('#draft', 'Enter');
  await one.waitForSelector('#messages li:text-is("User: reply from tab three")', { timeout: 5000 });
  await screenshot(one, 'chat');
  for (const p of [one, two, three]) await p.close();
  assert.deepEqual(browser.errors, []);
});

test('the live feed shows ticker data', async () => {
  const page = await openPage();
  await page.waitForFunction(() => document.querySelectorAll('#ticker li').length >= 2, null, { timeout: 5000 });
  const first = await page.textContent('#ticker li');
  assert.match(first, /^#\d+/);
  await page.close();
});

test('the page answers the server request server:ask', async () => {
  const page = await openPage();
  await page.click('#confirm');
  await page.waitForFunction(() => document.querySelector('#answer').textContent.includes('{"confirmed":true}'), null, { timeout: 6000 });
  assert.match(await page.textContent('#answer'), /server asked "confirm\?", answered yes - server got \{"confirmed":true\}/);
  await page.close();
});
