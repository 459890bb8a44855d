// permessage-deflate with the TS client (Node's WebSocket offers it, as browsers do): against
// `switchboard serve --compression on` it is agreed and publications large enough to be compressed
// (over the server's 256-byte threshold) and small ones arrive; against a server with compression
// off, nothing is agreed and the same works.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, waitFor } from './server.mjs';
import { clients, recorder } from './util.mjs';

let on;
let off;
const cs = clients();
before(async () => {
  [on, off] = await Promise.all([startServer('switchboard', undefined, ['--compression', 'on']), startServer('switchboard')]);
});
after(async () => {
  cs.closeAll();
  await Promise.all([on?.stop(), off?.stop()]);
});

/** A WebSocket constructor for the client that keeps every socket it makes. */
function recordingWebSocket() {
  const made = [];
  class Recording extends globalThis.WebSocket {
    constructor(url) {
      super(url);
      made.push(this);
    }
  }
  return { Recording, made };
}

async function broadcast(srv, channel, data) {
  const res = await fetch(srv.url + '/_broadcast', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ channel, data }),
  });
  assert.equal(res.status, 200, await res.text());
}

for (const [name, server, agreed] of [
  ['compression on', () => on, true],
  ['compression off', () => off, false],
]) {
  test(`TS client, ${name}: ${agreed ? 'deflate agreed' : 'nothing agreed'}, large and small publications arrive`, async () => {
    const { Recording, made } = recordingWebSocket();
    const c = cs.open(server().wsUrl, { WebSocket: Recording });
    const got = recorder();
    c.subscribe('chat', {}, got);
    await waitFor(() => made.length > 0 && made[0].readyState === 1, 5000, 'the socket to open');
    const extensions = made[0].extensions;
    if (agreed) assert.equal(extensions, 'permessage-deflate; server_no_context_takeover; client_no_context_takeover');
    else assert.equal(extensions, '');
    // Published until one arrives (the subscription may not be in place for the first).
    const long = `${'{"sku":"SKU-00042","qty":2,"price_cents":1999},'.repeat(40)} ${Date.now()}`;
    await waitFor(
      async () => {
        await broadcast(server(), 'chat', { user: 'bench', text: long });
        return got.calls.some((d) => d?.text === long);
      },
      5000,
      'the long publication',
    );
    await broadcast(server(), 'chat', { user: 'bench', text: 'short' });
    await got.next((d) => d?.text === 'short');
  });
}
