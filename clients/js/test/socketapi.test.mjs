// The pub/sub side of the client against the `socketapi_docs` example (the SocketAPI docs' channels).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ServerError } from '../dist/index.js';
import { startServer } from './server.mjs';
import { clients, recorder, stateIs, sleep } from './util.mjs';

let server;
const cs = clients();
before(async () => {
  server = await startServer('socketapi_docs');
});
after(async () => {
  cs.closeAll();
  await server?.stop();
});

test('connects and reports its state', async () => {
  const c = cs.open(server.wsUrl);
  const states = recorder();
  c.onState(states);
  assert.equal(states.calls[0], 'connecting');
  await stateIs(c, 'open');
  assert.deepEqual(states.calls, ['connecting', 'open']);
  c.close();
  assert.equal(c.state, 'closed');
  assert.deepEqual(states.calls, ['connecting', 'open', 'closed']);
});

test('action add(a, b) resolves with a + b', async () => {
  const c = cs.open(server.wsUrl);
  // sent before the socket is open: queued, then sent
  assert.equal(await c.action('add', { a: 2, b: 3 }), 5);
  const results = await Promise.all([1, 2, 3, 4, 5].map((i) => c.action('add', { a: i, b: 100 })));
  assert.deepEqual(results, [101, 102, 103, 104, 105]);
});

test('unknown action and bad arguments reject with ServerError', async () => {
  const c = cs.open(server.wsUrl);
  await assert.rejects(c.action('no_such_action', {}), (e) => e instanceof ServerError && e.name === 'ServerError' && /no_such_action/.test(e.message));
  await assert.rejects(c.action('add', { a: 'x' }), ServerError);
});

test('news sends its data right after subscribing', async () => {
  const c = cs.open(server.wsUrl);
  const got = recorder();
  const subscribed = recorder();
  c.subscribe('news', {}, got, { onSubscribed: subscribed });
  assert.deepEqual(await got.next(), { headline: 'Breaking News!' });
  await subscribed.next();
});

test('chat: send_message is broadcast to every subscriber, until unsubscribed', async () => {
  const a = cs.open(server.wsUrl);
  const b = cs.open(server.wsUrl);
  const gotA = recorder();
  const gotA2 = recorder();
  const gotB = recorder();
  const subA = recorder();
  const subB = recorder();
  const offA = a.subscribe('chat', {}, gotA, { onSubscribed: subA });
  a.subscribe('chat', {}, gotA2); // a second local subscriber shares the server subscription
  b.subscribe('chat', { message: 'Hi' }, gotB, { onSubscribed: subB });
  await subA.next();
  await subB.next();
  await b.action('send_message', { text: 'hello everyone' });
  const isHello = (d) => JSON.stringify(d).includes('hello everyone');
  await gotA.next(isHello);
  await gotA2.next(isHello);
  await gotB.next(isHello);

  offA();
  const n = gotA.calls.length;
  await a.action('send_message', { text: 'second' });
  await gotA2.next((d) => JSON.stringify(d).includes('second'));
  await gotB.next((d) => JSON.stringify(d).includes('second'));
  assert.equal(gotA.calls.length, n, 'no data after unsubscribe');
});

test('private_chat: a refused subscription calls onError with the server message', async () => {
  const c = cs.open(server.wsUrl);
  const err = recorder();
  const data = recorder();
  c.subscribe('private_chat', { token: 'wrong' }, data, { onError: err });
  const e = await err.next();
  assert.ok(e instanceof ServerError);
  assert.equal(e.message, 'Invalid token');

  const ok = recorder();
  c.subscribe('private_chat', { token: 'secret_token' }, data, { onSubscribed: ok, onError: err });
  await ok.next();
  assert.equal(err.calls.length, 1);
});

test('notifications: user_id is required on subscribe; send_notification reaches the subscriber', async () => {
  const c = cs.open(server.wsUrl);
  const err = recorder();
  c.subscribe('notifications', {}, () => {}, { onError: err });
  assert.ok((await err.next()) instanceof ServerError);

  const got = recorder();
  const ok = recorder();
  c.subscribe('notifications', { user_id: 42 }, got, { onSubscribed: ok });
  await ok.next();
  await c.action('send_notification', { user_id: 42, message: 'you have mail' });
  // the channel function's output for the broadcast parameters
  assert.deepEqual(await got.next(), { user_id: 42, type: 'alert', notifications: [] });
});

test('an unknown channel is refused', async () => {
  const c = cs.open(server.wsUrl);
  const err = recorder();
  c.subscribe('no_such_channel', {}, () => {}, { onError: err });
  assert.match((await err.next()).message, /no_such_channel/);
});

test('after a server restart the client reconnects and re-subscribes', async () => {
  const own = await startServer('socketapi_docs');
  try {
    const c = cs.open(own.wsUrl);
    const states = recorder();
    c.onState(states);
    const got = recorder();
    const subscribed = recorder();
    c.subscribe('chat', {}, got, { onSubscribed: subscribed });
    await subscribed.next();
    // either answered before the kill, or rejected with ClosedError: never left hanging
    const pending = c.action('add', { a: 1, b: 2 }, { timeout: 60000 }).then(
      (v) => assert.equal(v, 3),
      (e) => assert.equal(e.name, 'ClosedError'),
    );
    await own.kill();
    await pending;
    await stateIs(c, 'closed');
    const restarted = await startServer('socketapi_docs', own.port);
    try {
      await subscribed.next(() => true, 10000, 1); // confirmed again
      await stateIs(c, 'open');
      const other = cs.open(restarted.wsUrl);
      await other.action('send_message', { text: 'after restart' });
      await got.next((d) => JSON.stringify(d).includes('after restart'));
      // closed while the server is down, connecting on every attempt, open again
      assert.match(states.calls.join(','), /^connecting,open,closed,connecting(,closed,connecting)*,open$/);
    } finally {
      await restarted.stop();
    }
  } finally {
    await own.stop();
  }
});

test('subscriptions of one channel with different parameters; unsubscribing the last leaves them all', async () => {
  const c = cs.open(server.wsUrl);
  const one = recorder();
  const two = recorder();
  const ok = recorder();
  const off1 = c.subscribe('notifications', { user_id: 1 }, one, { onSubscribed: ok });
  const off2 = c.subscribe('notifications', { user_id: 2 }, two, { onSubscribed: ok });
  await ok.next(() => true, 5000, 1);
  await c.action('send_notification', { user_id: 2, message: 'for two' });
  // publications carry only the channel name: every local subscriber of the channel gets them
  await two.next();
  await one.next();
  off1();
  await c.action('send_notification', { user_id: 2, message: 'still two' });
  await two.next(() => true, 5000, 1);
  off2();
  const probe = cs.open(server.wsUrl);
  const seen = recorder();
  const probeOk = recorder();
  probe.subscribe('notifications', { user_id: 2 }, seen, { onSubscribed: probeOk });
  await probeOk.next();
  await c.action('send_notification', { user_id: 2, message: 'gone' });
  await seen.next();
  assert.equal(two.calls.length, 2, 'nothing after the last unsubscribe');
});
