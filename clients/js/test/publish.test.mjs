// Client publish against `switchboard serve --config switchboard.toml` (the shipped example): the
// `chat` namespace keeps history and lets clients publish; the default namespace ("") does not
// keep history; `inbox` does not let clients publish.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ServerError } from '../dist/index.js';
import { startServer, waitFor } from './server.mjs';
import { clients } from './util.mjs';

const config = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'switchboard.toml');
let server;
const cs = clients();
before(async () => {
  server = await startServer('switchboard', undefined, ['--config', config]);
});
after(async () => {
  cs.closeAll();
  await server?.stop();
});

test('publish reaches subscribers and resolves with the offset; refusals reject with the server text', async () => {
  const reader = cs.open(server.wsUrl);
  const got = [];
  let subscribed = false;
  reader.subscribe('chat:lobby', {}, (data) => got.push(data), { onSubscribed: () => (subscribed = true) });
  await waitFor(() => subscribed, 5000, 'subscribed');
  const writer = cs.open(server.wsUrl);
  assert.deepEqual(await writer.publish('chat:lobby', { text: 'hi' }), { offset: 1 });
  assert.deepEqual(await writer.publish('chat:lobby', [2]), { offset: 2 });
  await waitFor(() => got.length === 2, 5000, 'two publications');
  assert.deepEqual(got, [{ text: 'hi' }, [2]]);
  await assert.rejects(writer.publish('inbox:mail#1', 'x'), (e) => e instanceof ServerError && e.message === "Publishing to channel 'inbox:mail#1' is not allowed for clients.");
  await assert.rejects(writer.publish('nowhere:x', 'x'), (e) => e instanceof ServerError && e.message === "Channel 'nowhere:x' not found.");
});

test("the server API's unsubscribe ends the subscription: onUnsubscribed, and no more data", async () => {
  const { jwt, nowSecs } = await import('./util.mjs');
  const token = jwt({ sub: 'u-unsub', exp: nowSecs() + 3600 }, 'change-me-as-well');
  const c = cs.open(server.wsUrl, { token });
  const got = [];
  let subscribed = false;
  let ended = 0;
  c.subscribe('chat:news', {}, (data) => got.push(data), { onSubscribed: () => (subscribed = true), onUnsubscribed: () => ended++ });
  await waitFor(() => subscribed, 5000, 'subscribed');
  const api = (method, body) =>
    fetch(`${server.url}/api/${method}`, { method: 'POST', headers: { Authorization: 'apikey change-me' }, body: JSON.stringify(body) }).then((r) => r.json());
  assert.deepEqual(await api('unsubscribe', { user: 'u-unsub', channel: 'chat:news' }), { result: {} });
  await waitFor(() => ended === 1, 5000, 'onUnsubscribed');
  // A barrier: the writer's own subscription sees the publication; the ended one does not.
  const writer = cs.open(server.wsUrl);
  const seen = [];
  let ok = false;
  writer.subscribe('chat:news', {}, (d) => seen.push(d), { onSubscribed: () => (ok = true) });
  await waitFor(() => ok, 5000, 'writer subscribed');
  assert.equal((await api('publish', { channel: 'chat:news', data: 'after' })).result.offset > 0, true);
  await waitFor(() => seen.length === 1, 5000, 'the writer got it');
  assert.deepEqual(got, []);
  assert.equal(ended, 1);
});
