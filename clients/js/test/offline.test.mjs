// Timeouts and drops, against TCP servers that misbehave on purpose (no Switchboard needed).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { connect, TimeoutError, ClosedError } from '../dist/index.js';
import { recorder, stateIs } from './util.mjs';

/** A TCP server that accepts connections and never answers the WebSocket handshake. */
async function silentServer() {
  const sockets = new Set();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `ws://127.0.0.1:${srv.address().port}/`,
    sockets,
    dropAll: () => sockets.forEach((s) => s.destroy()),
    close: () => new Promise((r) => { sockets.forEach((s) => s.destroy()); srv.close(r); }),
  };
}

const servers = [];
after(async () => {
  for (const s of servers) await s.close();
});

test('an action that gets no answer rejects with TimeoutError', async () => {
  const srv = await silentServer();
  servers.push(srv);
  const c = connect(srv.url, { reconnect: false });
  const t0 = Date.now();
  await assert.rejects(c.action('add', { a: 1, b: 2 }, { timeout: 200 }), (e) => e instanceof TimeoutError && e.name === 'TimeoutError');
  assert.ok(Date.now() - t0 >= 190);
  c.close();
});

test('a channel request that gets no answer rejects with TimeoutError', async () => {
  const srv = await silentServer();
  servers.push(srv);
  const c = connect(srv.url, { reconnect: false, timeout: 150 });
  const bridge = c.channel('chat');
  assert.equal(bridge.state, 'connecting');
  await assert.rejects(bridge.request('client:request', {}), TimeoutError);
  c.close();
  assert.equal(bridge.state, 'closed');
  await assert.rejects(bridge.ready, ClosedError);
});

test('pending actions and requests reject with ClosedError when the socket drops', async () => {
  const srv = await silentServer();
  servers.push(srv);
  const c = connect(srv.url, { minDelay: 10000 });
  await new Promise((r) => setTimeout(r, 100)); // TCP connected, handshake pending
  const bridge = c.channel('chat');
  const a = c.action('add', {}, { timeout: 60000 });
  const r = bridge.request('x', {}, { timeout: 60000 });
  srv.dropAll();
  await assert.rejects(a, ClosedError);
  await assert.rejects(r, ClosedError);
  await stateIs(c, 'closed');
  assert.equal(bridge.state, 'connecting', 'the bridge waits to be re-opened');
  c.close();
  assert.equal(bridge.state, 'closed');
});

test('after close(), everything rejects with ClosedError and there is no reconnect', async () => {
  const srv = await silentServer();
  servers.push(srv);
  const c = connect(srv.url, { minDelay: 10 });
  const states = recorder();
  c.onState(states);
  c.close();
  await assert.rejects(c.action('add', {}), ClosedError);
  const b = c.channel('chat');
  assert.equal(b.state, 'closed');
  assert.throws(() => b.emit('x', 1), ClosedError);
  await assert.rejects(b.request('x'), ClosedError);
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(states.calls, ['connecting', 'closed']);
  assert.equal(srv.sockets.size, 0);
});

test('reconnects with growing, jittered delays', async () => {
  // nothing listens on this port: every attempt fails at once
  const probe = net.createServer();
  await new Promise((r) => probe.listen(0, '127.0.0.1', r));
  const port = probe.address().port;
  await new Promise((r) => probe.close(r));
  const c = connect(`ws://127.0.0.1:${port}/`, { minDelay: 40, maxDelay: 320 });
  const times = [];
  c.onState((s) => s === 'connecting' && times.push(Date.now()));
  await new Promise((r) => setTimeout(r, 1500));
  c.close();
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  assert.ok(gaps.length >= 4, `attempts: ${gaps.length}`);
  // delay n lies in [d/2, d] with d = min(320, 40 * 2^n), plus the time a failed attempt takes
  gaps.forEach((g, n) => {
    const d = Math.min(320, 40 * 2 ** n);
    assert.ok(g >= d / 2 - 5, `gap ${n} = ${g} ms < ${d / 2}`);
  });
  assert.ok(gaps.at(-1) <= 320 + 1000, `capped: ${gaps.at(-1)}`);
});
