// Identity against the `auth` example (`--hmac-secret`): channels `news` (open), `inbox` (keyed by
// the authenticated user), `room` (needs a subscription token); actions `whoami` and `send_inbox`.
// The client sends `connect` first and nothing else until `connected`, refreshes before the expiry,
// reconnects with a fresh token from `getToken` after a 4005, and stops for good on a 4500.
// A second server authenticates through a connect proxy (a node HTTP server of the test).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { ServerError, ClosedError, TokenError } from '../dist/index.js';
import { startServer, waitFor } from './server.mjs';
import { clients, recorder, stateIs, sleep, jwt, nowSecs } from './util.mjs';

const SECRET = 'test-secret-of-the-auth-example';
/** A connection token for `user`, valid `secs` seconds. */
const token = (user, secs = 3600, extra = {}) => jwt({ sub: user, exp: nowSecs() + secs, ...extra }, SECRET);
/** A subscription token for `room`. */
const roomToken = (user, secs = 60) => jwt({ sub: user, channel: 'room', exp: nowSecs() + secs }, SECRET);

let server;
const cs = clients();
before(async () => {
  server = await startServer('auth', undefined, ['--hmac-secret', SECRET]);
});
after(async () => {
  cs.closeAll();
  await server?.stop();
});

/** Publish on a channel through `POST /_broadcast`. */
async function broadcast(srv, channel, data) {
  const res = await fetch(srv.url + '/_broadcast', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ channel, data }),
  });
  assert.equal(res.status, 200, await res.text());
}

/** Waits for the next identity (not undefined) reported from index `from` on. */
const nextIdentity = (ids, from = 0, ms = 5000) => ids.next((i) => i !== undefined, ms, from);

test('a token: connect first, then connected with the user; calls made before it wait for it', async () => {
  const c = cs.open(server.wsUrl, { token: token('42', 3600, { info: { name: 'Ann' } }) });
  const ids = recorder();
  c.onIdentity(ids);
  assert.equal(ids.calls[0], undefined, 'not connected yet');
  // made while connecting: a server requiring authentication would refuse them before `connected`
  const who = c.action('whoami');
  const subscribed = recorder();
  c.subscribe('news', {}, () => {}, { onSubscribed: subscribed, onError: (e) => subscribed({ error: e.message }) });

  const identity = await nextIdentity(ids);
  assert.equal(identity.user, '42');
  assert.equal(typeof identity.client, 'string');
  assert.ok(identity.client.length > 0);
  assert.ok(identity.expiresIn > 3590 && identity.expiresIn <= 3600, `expiresIn ${identity.expiresIn}`);
  assert.ok(Math.abs(identity.expiresAt - (Date.now() + identity.expiresIn * 1000)) < 2000);
  assert.equal(c.user, '42');
  assert.equal(c.clientId, identity.client);
  assert.ok(c.expiresIn > 3590 && c.expiresIn <= 3600);
  assert.equal(c.state, 'open');

  const me = await who;
  assert.equal(me.user, '42');
  assert.deepEqual(me.info, { name: 'Ann' });
  assert.deepEqual(await subscribed.next(), { resubscribed: false });
  c.close();
  assert.equal(c.identity, undefined);
  assert.equal(ids.calls.at(-1), undefined, 'the identity ends with the connection');
});

test('without authentication the server refuses messages before connect', async () => {
  const c = cs.open(server.wsUrl);
  await assert.rejects(c.action('whoami'), (e) => e instanceof ServerError && /Not connected/.test(e.message));
  assert.equal(c.identity, undefined);
  c.close();
});

test('inbox is keyed by the authenticated user: user 1 does not see what is sent to user 2', async () => {
  const one = cs.open(server.wsUrl, { token: token('1') });
  const two = cs.open(server.wsUrl, { token: token('2') });
  const got1 = recorder();
  const got2 = recorder();
  const sub1 = recorder();
  const sub2 = recorder();
  // subscribers send no parameters: the server fills in the connection's user
  one.subscribe('inbox', {}, got1, { onSubscribed: sub1 });
  two.subscribe('inbox', {}, got2, { onSubscribed: sub2 });
  await sub1.next();
  await sub2.next();

  await one.action('send_inbox', { user: '2', text: 'for two' });
  assert.deepEqual(await got2.next(), { user: '2', text: 'for two' });
  await two.action('send_inbox', { user: '1', text: 'for one' });
  assert.deepEqual(await got1.next(), { user: '1', text: 'for one' });
  await sleep(200);
  assert.deepEqual(got1.calls, [{ user: '1', text: 'for one' }], 'user 1 got only its own');
  assert.deepEqual(got2.calls, [{ user: '2', text: 'for two' }], 'user 2 got only its own');
  one.close();
  two.close();
});

test('refresh: a fresh token from getToken before the expiry keeps the connection', async () => {
  let calls = 0;
  const c = cs.open(server.wsUrl, {
    token: token('7', 2),
    getToken: async () => {
      calls++;
      return token('7', 3600);
    },
  });
  const ids = recorder();
  c.onIdentity(ids);
  const first = await nextIdentity(ids);
  assert.ok(first.expiresIn <= 2, `expiresIn ${first.expiresIn}`);
  // refreshed at three quarters of the 2 s: the same connection, a new expiry
  const refreshed = await ids.next((i) => i?.expiresIn > 3000, 5000);
  assert.equal(refreshed.client, first.client, 'the same connection');
  assert.equal(refreshed.user, '7');
  assert.equal(calls, 1);
  await sleep(2500); // past the first token's expiry
  assert.equal(c.state, 'open');
  assert.equal(c.closeCode, undefined, 'no close: the refresh kept it');
  assert.equal(c.clientId, first.client);
  assert.equal((await c.action('whoami')).user, '7');
  c.close();
});

test('4005 on expiry: getToken is called, the client reconnects and restores its subscriptions', async () => {
  let calls = 0;
  const asked = [];
  const c = cs.open(server.wsUrl, {
    token: token('5', 2),
    getToken: async () => {
      calls++;
      // the first call is the refresh before the expiry: it fails, so the server's 4005 follows
      if (calls === 1) throw new Error('token service down');
      return token('5', 3600);
    },
    getSubscriptionToken: async (channel) => {
      asked.push(channel);
      return channel === 'room' ? roomToken('5') : undefined;
    },
  });
  const errors = recorder();
  c.onError(errors);
  const ids = recorder();
  c.onIdentity(ids);
  const news = recorder();
  const room = recorder();
  const newsSubscribed = recorder();
  const roomSubscribed = recorder();
  c.subscribe('news', {}, news, { onSubscribed: newsSubscribed });
  c.subscribe('room', {}, room, { onSubscribed: roomSubscribed });
  const first = await nextIdentity(ids);
  await newsSubscribed.next();
  await roomSubscribed.next();
  assert.deepEqual(asked.sort(), ['news', 'room'], 'asked for every subscription');

  // the failed refresh is reported; the server then closes with 4005 at the expiry
  const err = await errors.next((e) => e instanceof TokenError, 4000);
  assert.match(err.message, /token service down/);
  await waitFor(() => c.closeCode === 4005, 5000, 'close 4005');
  assert.equal(c.closeReason, 'token expired');

  // a fresh token, a new connection, the subscriptions back (room with a fresh subscription token)
  const second = await ids.next((i) => i !== undefined && i.client !== first.client, 5000);
  assert.equal(second.user, '5');
  assert.equal(calls, 2);
  assert.ok(second.expiresIn > 3000);
  assert.deepEqual((await newsSubscribed.next((i) => i.resubscribed)).resubscribed, true);
  await roomSubscribed.next((i) => i.resubscribed);
  assert.equal(asked.filter((t) => t === 'room').length, 2, 'room re-subscribed with a fresh subscription token');
  assert.equal(c.state, 'open');

  await broadcast(server, 'news', { text: 'after the reconnect' });
  await broadcast(server, 'room', { text: 'room after the reconnect' });
  assert.deepEqual(await news.next(), { text: 'after the reconnect' });
  assert.deepEqual(await room.next(), { text: 'room after the reconnect' });
  assert.equal((await c.action('whoami')).user, '5');
  c.close();
});

test('4005 without getToken: the same token would only expire again, so the client stops', async () => {
  const c = cs.open(server.wsUrl, { token: token('9', 1) });
  await waitFor(() => c.closeCode === 4005, 5000, 'close 4005');
  await stateIs(c, 'closed');
  await assert.rejects(c.action('whoami'), (e) => e instanceof ClosedError && /4005/.test(e.message));
});

test('an invalid token: close 4500, the client stops for good and does not loop on getToken', async () => {
  let calls = 0;
  const c = cs.open(server.wsUrl, {
    getToken: async () => {
      calls++;
      return jwt({ sub: '1', exp: nowSecs() + 60 }, 'another secret');
    },
  });
  const states = recorder();
  c.onState(states);
  await waitFor(() => c.closeCode === 4500, 5000, 'close 4500');
  assert.match(c.closeReason, /^invalid token/);
  await stateIs(c, 'closed');
  await sleep(500); // a reconnect would come within 25-50 ms
  assert.equal(calls, 1, 'getToken called once');
  assert.deepEqual(states.calls, ['connecting', 'closed']);
  assert.equal(c.identity, undefined);
  await assert.rejects(c.action('whoami'), (e) => e instanceof ClosedError && /code 4500/.test(e.message));
});

test('room: a subscription token lets the subscription in, without one it is refused', async () => {
  const c = cs.open(server.wsUrl, { token: token('3') });
  const refused = recorder();
  c.subscribe('room', {}, () => {}, { onError: refused });
  const err = await refused.next();
  assert.ok(err instanceof ServerError);
  assert.equal(err.message, 'Permission denied');

  // a token of another user is refused too
  const other = recorder();
  c.subscribe('room', { x: 1 }, () => {}, { token: roomToken('4'), onError: other });
  assert.equal((await other.next()).message, 'Permission denied');

  const ok = recorder();
  const got = recorder();
  c.subscribe('room', {}, got, { token: roomToken('3'), onSubscribed: ok, onError: (e) => ok({ error: e.message }) });
  assert.deepEqual(await ok.next(), { resubscribed: false });
  await broadcast(server, 'room', { text: 'in the room' });
  assert.deepEqual(await got.next(), { text: 'in the room' });

  // a token function is asked on every subscribe; its failure refuses the subscription
  const failed = recorder();
  c.subscribe('room', { y: 1 }, () => {}, {
    token: async () => {
      throw new Error('no room for you');
    },
    onError: failed,
  });
  const e = await failed.next();
  assert.ok(e instanceof TokenError);
  assert.match(e.message, /no room for you/);
  c.close();
});

// ---- the connect proxy ----

/** A connect proxy: `answer(body)` returns the JSON to answer with; `calls` are the requests' bodies. */
async function connectProxy(answer) {
  const calls = [];
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      const msg = JSON.parse(body);
      calls.push(msg);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer(msg, calls.length)));
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { calls, url: `http://127.0.0.1:${srv.address().port}/connect`, close: () => new Promise((r) => srv.close(r)) };
}

test('connect proxy: a refusal is reported and retried with backoff; connectData reaches the backend', async () => {
  const proxy = await connectProxy((msg, n) =>
    n < 3 ? { error: { code: 1000, message: `not yet (${n})` } } : { result: { user: `u-${msg.data.session}`, info: { via: 'proxy' } } },
  );
  const srv = await startServer('auth', undefined, ['--connect-proxy', proxy.url, '--hmac-secret', SECRET]);
  try {
    const c = cs.open(srv.wsUrl, { connectData: { session: 'abc' }, minDelay: 50, maxDelay: 200 });
    const errors = recorder();
    c.onError(errors);
    const ids = recorder();
    c.onIdentity(ids);
    const identity = await nextIdentity(ids, 0, 10000);
    assert.equal(identity.user, 'u-abc');
    assert.equal(identity.expiresIn, undefined, 'no expiry');
    assert.equal(c.expiresIn, undefined);
    assert.deepEqual(
      errors.calls.map((e) => [e.name, e.message]),
      [
        ['ServerError', 'not yet (1)'],
        ['ServerError', 'not yet (2)'],
      ],
    );
    assert.equal(proxy.calls.length, 3);
    assert.deepEqual(proxy.calls[0].data, { session: 'abc' });
    assert.equal(proxy.calls[0].token, undefined);
    assert.deepEqual(await c.action('whoami'), { user: 'u-abc', info: { via: 'proxy' } });
    c.close();
  } finally {
    await srv.stop();
    await proxy.close();
  }
});

test('connect proxy: `connect: true` authenticates with nothing but the handshake; a disconnect 4501 stops', async () => {
  const proxy = await connectProxy((msg, n) => (n === 1 ? { result: { user: 'cookie-user' } } : { disconnect: { code: 4501, reason: 'banned' } }));
  const srv = await startServer('auth', undefined, ['--connect-proxy', proxy.url]);
  try {
    const c = cs.open(srv.wsUrl, { connect: true });
    const ids = recorder();
    c.onIdentity(ids);
    assert.equal((await nextIdentity(ids)).user, 'cookie-user');
    assert.equal(proxy.calls[0].data ?? null, null, 'no data');

    const d = cs.open(srv.wsUrl, { connect: true });
    await waitFor(() => d.closeCode === 4501, 5000, 'close 4501');
    assert.equal(d.closeReason, 'banned');
    await stateIs(d, 'closed');
    await sleep(300);
    assert.equal(proxy.calls.length, 2, 'no reconnect after 4501');
    c.close();
  } finally {
    await srv.stop();
    await proxy.close();
  }
});
