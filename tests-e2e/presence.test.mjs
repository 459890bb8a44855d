// The demo page's "who is here" (the members of `members`, kept live by `client.watchPresence`) in
// headless Chromium, against `switchboard serve`: two pages list two members; a page that closes
// leaves the other's list.
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
  if (t.passed === false) {
    for (const [i, p] of browser.context.pages().entries()) await screenshot(p, `${t.name.replace(/\W+/g, '_')}-${i}`);
  }
});

async function openPage() {
  const page = await browser.newPage();
  await page.goto(demo.url + '/');
  await page.waitForSelector('#state[data-state=open]', { timeout: 10000 });
  return page;
}

const count = (page, n) => page.waitForSelector(`#here-count[data-count="${n}"]`, { timeout: 5000 });
const members = (page) => page.$$eval('#members li', (lis) => lis.map((li) => ({ text: li.textContent, client: li.dataset.client })));

test('two pages show two members; when one closes the other shows one', async () => {
  const one = await openPage();
  const two = await openPage();
  for (const page of [one, two]) await count(page, 2);
  const listed = await members(one);
  assert.equal(listed.length, 2);
  assert.deepEqual(listed.map((m) => m.text), ['anonymous', 'anonymous'], 'anonymous members');
  assert.deepEqual(listed.map((m) => m.client).sort(), (await members(two)).map((m) => m.client).sort(), 'the same members in both');
  assert.equal(new Set(listed.map((m) => m.client)).size, 2);
  assert.equal(await one.textContent('#here-count'), '2');
  await screenshot(one, 'presence-two');

  await two.close();
  await count(one, 1);
  assert.equal((await members(one)).length, 1);
  assert.equal(await one.textContent('#here-count'), '1');

  // the page keeps working: chat still goes through
  await one.fill('#draft', 'still here');
  await one.press('#draft', 'Enter');
  await one.waitForSelector('#messages li:text-is("User: still here")', { timeout: 5000 });
  await one.close();
  assert.deepEqual(browser.errors, []);
});

test('a reload: the list is the new page and the others, without the old page', async () => {
  const stays = await openPage();
  const reloads = await openPage();
  await count(stays, 2);
  await count(reloads, 2);
  const before = (await members(stays)).map((m) => m.client);
  await reloads.reload();
  await reloads.waitForSelector('#state[data-state=open]', { timeout: 10000 });
  await count(reloads, 2);
  // the old connection of the reloaded page leaves, its new one joins
  await stays.waitForFunction(
    (old) => {
      const ids = [...document.querySelectorAll('#members li')].map((li) => li.dataset.client);
      return ids.length === 2 && ids.filter((id) => old.includes(id)).length === 1;
    },
    before,
    { timeout: 5000 },
  );
  assert.deepEqual(
    (await members(stays)).map((m) => m.client).sort(),
    (await members(reloads)).map((m) => m.client).sort(),
  );
  for (const p of [stays, reloads]) await p.close();
  assert.deepEqual(browser.errors, []);
});
