// History and recovery against the `history` example (channels `feed`, history 1000, and
// `user_feed`, `user_id` required, history 100; actions `post` and `post_user`): a subscription
// remembers its offset and epoch and, after its socket drops, recovers what was published
// meanwhile — each publication once, in order — or says it could not (`onRecovery(false)`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ServerError } from '../dist/index.js';
import { startServer, freePort, waitFor } from './server.mjs';
import { clients, stateIs } from './util.mjs';

let server;
let deadUrl;
const cs = clients();
before(async () => {
  server = await startServer('history');
  deadUrl = `ws://127.0.0.1:${await freePort()}/`; // nobody listens there
});
after(async () => {
  cs.closeAll();
  await server?.stop();
});

/**
 * A WebSocket constructor whose sockets the test can cut (as a network drop would) and whose
 * reconnects it can hold back (they go to a port nobody listens on), so that publications are
 * made while the client is away. `last` is the newest socket, to feed it frames.
 */
function gate() {
  let held = false;
  const g = {
    last: null,
    WebSocket: class extends WebSocket {
      constructor(url) {
        super(held ? deadUrl : url);
        g.last = this;
      }
    },
    cut() {
      held = true;
      g.last?.close();
    },
    release() {
      held = false;
    },
  };
  return g;
}

/** Subscribes `c` and records, in one log, each publication and each confirmation. */
async function subscribe(c, channel, params) {
  const log = [];
  const data = () => log.filter((e) => e.kind === 'data');
  const unsubscribe = c.subscribe(channel, params, (d, info) => log.push({ kind: 'data', text: d.text, offset: info.offset, epoch: info.epoch }), {
    onSubscribed: (info) => log.push({ kind: 'subscribed', ...info }),
    onRecovery: (recovered, info) => log.push({ kind: 'recovery', recovered, ...info }),
  });
  await waitFor(() => log.some((e) => e.kind === 'subscribed'), 5000, 'subscribed');
  return { log, data, unsubscribe, waitData: (n) => waitFor(() => data().length >= n, 5000, `${n} publications`) };
}

const texts = (entries) => entries.map((e) => e.text);
const range = (prefix, from, to) => Array.from({ length: to - from + 1 }, (_, i) => `${prefix}${from + i}`);

test('a subscription recovers what was published while its socket was down, each once and in order', async () => {
  const g = gate();
  const c = cs.open(server.wsUrl, { WebSocket: g.WebSocket });
  const poster = cs.open(server.wsUrl);
  const tag = `r${Date.now()}-`;
  const feed = await subscribe(c, 'feed', {});
  const start = feed.log[0];
  assert.equal(start.resubscribed, false);
  assert.equal(typeof start.offset, 'number');
  assert.equal(typeof start.epoch, 'string');

  for (const t of range(tag, 1, 3)) await poster.action('post', { text: t });
  await feed.waitData(3);
  assert.deepEqual(
    feed.data().map((e) => e.offset),
    [start.offset + 1, start.offset + 2, start.offset + 3],
  );
  assert.ok(feed.data().every((e) => e.epoch === start.epoch));

  g.cut();
  await stateIs(c, 'closed');
  for (const t of range(tag, 4, 20)) await poster.action('post', { text: t });
  g.release();

  await feed.waitData(20);
  const kinds = feed.log.map((e) => e.kind);
  // the re-subscribe is confirmed (recovered) before the recovered publications arrive
  assert.deepEqual(kinds, ['subscribed', 'data', 'data', 'data', 'subscribed', 'recovery', ...Array(17).fill('data')]);
  const recovery = feed.log.find((e) => e.kind === 'recovery');
  assert.equal(recovery.recovered, true);
  assert.equal(recovery.resubscribed, true);
  assert.equal(recovery.epoch, start.epoch);
  assert.deepEqual(texts(feed.data()), range(tag, 1, 20));
  assert.deepEqual(
    feed.data().map((e) => e.offset),
    Array.from({ length: 20 }, (_, i) => start.offset + 1 + i),
  );

  // then live ones, and nothing twice
  for (const t of range(tag, 21, 22)) await poster.action('post', { text: t });
  await feed.waitData(22);
  assert.deepEqual(texts(feed.data()), range(tag, 1, 22));
  feed.unsubscribe();
});

test('a keyed channel recovers each user stream', async () => {
  const g = gate();
  const c = cs.open(server.wsUrl, { WebSocket: g.WebSocket });
  const poster = cs.open(server.wsUrl);
  const user_id = 1000 + Math.floor(Math.random() * 1e6);
  const feed = await subscribe(c, 'user_feed', { user_id });
  assert.equal(feed.log[0].offset, 0, 'a fresh user stream');
  await poster.action('post_user', { user_id, text: 'u1' });
  await feed.waitData(1);
  g.cut();
  await stateIs(c, 'closed');
  await poster.action('post_user', { user_id, text: 'u2' });
  await poster.action('post_user', { user_id: user_id + 1, text: 'someone else' });
  await poster.action('post_user', { user_id, text: 'u3' });
  g.release();
  await feed.waitData(3);
  assert.deepEqual(texts(feed.data()), ['u1', 'u2', 'u3']);
  assert.deepEqual(feed.data().map((e) => e.offset), [1, 2, 3]);
  assert.equal(feed.log.find((e) => e.kind === 'recovery')?.recovered, true);
  feed.unsubscribe();
});

test('a publication at or before the last one delivered is dropped', async () => {
  const g = gate();
  const c = cs.open(server.wsUrl, { WebSocket: g.WebSocket });
  const poster = cs.open(server.wsUrl);
  const feed = await subscribe(c, 'feed', {});
  await poster.action('post', { text: 'first' });
  await feed.waitData(1);
  const { offset } = feed.data()[0];
  // frames as a buggy server or a replay overlapping the live stream would send them
  for (const o of [offset, offset - 1]) g.last.onmessage({ data: JSON.stringify({ type: 'data', channel: 'feed', data: { text: 'again' }, offset: o }) });
  await poster.action('post', { text: 'second' });
  await feed.waitData(2);
  assert.deepEqual(texts(feed.data()), ['first', 'second']);
  assert.deepEqual(feed.data().map((e) => e.offset), [offset, offset + 1]);
  feed.unsubscribe();
});

test('recovery fails when more was missed than the channel keeps: onRecovery(false), then live publications', async () => {
  const g = gate();
  const c = cs.open(server.wsUrl, { WebSocket: g.WebSocket });
  const poster = cs.open(server.wsUrl);
  const user_id = 2000000 + Math.floor(Math.random() * 1e6);
  const feed = await subscribe(c, 'user_feed', { user_id });
  await poster.action('post_user', { user_id, text: 'seen' });
  await feed.waitData(1);
  g.cut();
  await stateIs(c, 'closed');
  // 120 missed, 100 kept
  await Promise.all(range('m', 1, 120).map((text) => poster.action('post_user', { user_id, text })));
  g.release();
  await waitFor(() => feed.log.some((e) => e.kind === 'recovery'), 5000, 'the re-subscribe');
  const recovery = feed.log.find((e) => e.kind === 'recovery');
  assert.equal(recovery.recovered, false);
  assert.equal(recovery.offset, 121, 'live from the stream position');
  await poster.action('post_user', { user_id, text: 'live' });
  await feed.waitData(2);
  assert.deepEqual(feed.data().map((e) => [e.text, e.offset]), [['seen', 1], ['live', 122]], 'no replay');

  // the application refetches what is kept
  const h = await c.history('user_feed', { user_id });
  assert.equal(h.publications.length, 100);
  assert.equal(h.offset, 122);
  assert.equal(h.epoch, recovery.epoch);
  assert.deepEqual(h.publications.at(-1), { offset: 122, data: { user_id, text: 'live' } });
  feed.unsubscribe();
});

test('history(): the latest publications, those after a position, and refusals', async () => {
  const c = cs.open(server.wsUrl);
  const user_id = 3000000 + Math.floor(Math.random() * 1e6);
  for (const text of ['a', 'b', 'c', 'd']) await c.action('post_user', { user_id, text });
  const latest = await c.history('user_feed', { user_id }, { limit: 2 });
  assert.deepEqual(latest.publications.map((p) => [p.offset, p.data.text]), [[3, 'c'], [4, 'd']]);
  assert.equal(latest.offset, 4);
  const after = await c.history('user_feed', { user_id }, { since: { offset: 1, epoch: latest.epoch } });
  assert.deepEqual(after.publications.map((p) => p.data.text), ['b', 'c', 'd']);
  const none = await c.history('user_feed', { user_id: user_id + 1 });
  assert.deepEqual([none.publications, none.offset], [[], 0]);
  await assert.rejects(c.history('nope'), (e) => e instanceof ServerError && /not found/.test(e.message));
  await assert.rejects(c.history('user_feed', {}), ServerError);
});

test('after a server restart (a new epoch) recovery fails and the new stream is delivered', async () => {
  const own = await startServer('history');
  let current = own;
  try {
    const c = cs.open(own.wsUrl);
    const feed = await subscribe(c, 'feed', {});
    for (const text of ['x1', 'x2', 'x3']) await c.action('post', { text });
    await feed.waitData(3);
    const before = feed.data().at(-1);
    assert.equal(before.offset, 3);

    await own.kill(); // like a crash: the in-memory streams are gone
    await stateIs(c, 'closed');
    current = await startServer('history', own.port);
    await waitFor(() => feed.log.some((e) => e.kind === 'recovery'), 10000, 'the re-subscribe');
    const recovery = feed.log.find((e) => e.kind === 'recovery');
    assert.equal(recovery.recovered, false);
    assert.notEqual(recovery.epoch, before.epoch);
    assert.equal(recovery.offset, 0);

    // offsets start again at 1 in the new epoch: delivered, not taken for duplicates
    await c.action('post', { text: 'y1' });
    await feed.waitData(4);
    assert.deepEqual(feed.data().at(-1), { kind: 'data', text: 'y1', offset: 1, epoch: recovery.epoch });
    feed.unsubscribe();
  } finally {
    await current.stop();
  }
});
