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
