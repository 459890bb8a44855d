// Bidirectional channels against the `channels_docs` example (the Pulse docs' channel `chat`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ServerError, ClosedError } from '../dist/index.js';
import { startServer, waitFor } from './server.mjs';
import { clients, recorder, stateIs, sleep } from './util.mjs';

let server;
const cs = clients();
before(async () => {
  server = await startServer('channels_docs');
});
after(async () => {
  cs.closeAll();
  await server?.stop();
});

async function openChat(options) {
  const c = cs.open(server.wsUrl, options);
  const chat = c.channel('chat');
  assert.equal(await chat.ready, chat);
  assert.equal(chat.state, 'open');
  assert.equal(chat.name, 'chat');
  return { c, chat };
}

test('emit client:send -> server:message', async () => {
  const { chat } = await openChat();
  const got = recorder();
  const off = chat.on('server:message', got);
  chat.emit('client:send', { text: 'hello' });
  assert.deepEqual(await got.next(), { user: 'User', text: 'hello' });
  off();
  chat.emit('client:send', { text: 'unheard' });
  chat.emit('client:ping', {});
  await new Promise((r) => chat.on('server:pong', r)); // frames are handled in order
  assert.equal(got.calls.length, 1, 'removed handler not called');
});

test('emit before the channel is open is held until it opens', async () => {
  const c = cs.open(server.wsUrl);
  const chat = c.channel('chat');
  const got = recorder();
  chat.on('server:message', got);
  chat.emit('client:send', { text: 'early' });
  assert.deepEqual(await got.next(), { user: 'User', text: 'early' });
});

test('client:ping -> server:pong', async () => {
  const { chat } = await openChat();
  const pong = recorder();
  chat.on('server:pong', pong);
  chat.emit('client:ping', { n: 1 });
  assert.deepEqual(await pong.next(), { ack: true });
});

test('request client:request resolves with the reply payload', async () => {
  const { chat } = await openChat();
  assert.deepEqual(await chat.request('client:request', { data: 'x' }), { status: 'ok', result: { data: 'x' } });
  const many = await Promise.all([1, 2, 3].map((n) => chat.request('client:request', n)));
  assert.deepEqual(many.map((r) => r.result), [1, 2, 3]);
});

test('server request server:ask is answered by the handler (sync and async)', async () => {
  const { chat } = await openChat();
  const answers = recorder();
  chat.on('server:answer', answers);
  const questions = recorder();
  const off = chat.on('server:ask', (q) => {
    questions(q);
    return { confirmed: true };
  });
  chat.emit('client:confirm', {});
  assert.deepEqual(await answers.next(), { confirmed: true });
  assert.deepEqual(questions.calls[0], { question: 'confirm?' });
  off();

  chat.on('server:ask', async () => {
    await new Promise((r) => setTimeout(r, 50));
    return { confirmed: 'later' };
  });
  chat.emit('client:confirm', {});
  assert.deepEqual(await answers.next((a) => a.confirmed === 'later'), { confirmed: 'later' });
});

test('server request without a handler, or whose handler throws, is answered with an error', async () => {
  // a WebSocket that records what the client sends
  const sent = [];
  class Spy extends WebSocket {
    send(data) {
      sent.push(JSON.parse(data));
      super.send(data);
    }
  }
  const { chat } = await openChat({ WebSocket: Spy });
  const events = recorder();
  for (const e of ['server:answer', 'server:timeout']) chat.on(e, (p) => events({ e, p }));
  const replies = () => sent.filter((m) => m.type === 'reply');

  chat.emit('client:confirm', {});
  await waitFor(() => replies().length === 1);
  assert.deepEqual(replies()[0], { type: 'reply', channel: 'chat', id: replies()[0].id, error: "No handler for event 'server:ask'" });

  const off = chat.on('server:ask', async () => {
    throw new Error('user said no');
  });
  chat.emit('client:confirm', {});
  await waitFor(() => replies().length === 2);
  assert.equal(replies()[1].error, 'user said no');
  off();

  // handlers that return undefined pass the request on; the first value answers
  const seen = [];
  chat.on('server:ask', (q) => void seen.push(q));
  chat.on('server:ask', () => Promise.resolve({ confirmed: 'second' }));
  chat.on('server:ask', () => ({ confirmed: 'third' }));
  chat.emit('client:confirm', {});
  assert.deepEqual((await events.next()).p, { confirmed: 'second' });
  assert.equal(seen.length, 1);

  // the server got the error replies at once: its 5 s request timeout never fired
  await sleep(5300);
  assert.deepEqual(events.calls.map((c) => c.e), ['server:answer']);
});

test('opening an unknown channel rejects ready with ServerError', async () => {
  const c = cs.open(server.wsUrl);
  const b = c.channel('no_such_route');
  await assert.rejects(b.ready, ServerError);
  assert.equal(b.state, 'closed');
});

test('two bridges on one channel share it; the channel closes with the last one', async () => {
  const c = cs.open(server.wsUrl);
  const one = c.channel('chat');
  const two = c.channel('chat');
  await Promise.all([one.ready, two.ready]);
  const gotOne = recorder();
  const gotTwo = recorder();
  one.on('server:message', gotOne);
  two.on('server:message', gotTwo);
  one.emit('client:send', { text: 'both' });
  await gotOne.next();
  await gotTwo.next();
  const closed = recorder();
  one.onClose(closed);
  one.close();
  assert.equal(one.state, 'closed');
  assert.deepEqual(closed.calls, ['closed by client']);
  assert.throws(() => one.emit('client:send', {}), ClosedError);
  await assert.rejects(one.request('client:request', {}), ClosedError);
  two.emit('client:send', { text: 'still here' });
  await gotTwo.next((m) => m.text === 'still here');
  two.close();
  // re-open after close
  const three = c.channel('chat');
  await three.ready;
  assert.deepEqual(await three.request('client:request', 1), { status: 'ok', result: 1 });
});

test('a bridge taken in the same tick as the last close reuses the channel (React StrictMode)', async () => {
  const sent = [];
  class Spy extends WebSocket {
    send(data) {
      sent.push(JSON.parse(data));
      super.send(data);
    }
  }
  const c = cs.open(server.wsUrl, { WebSocket: Spy });
  const frames = (type) => sent.filter((m) => m.type === type && m.channel === 'chat').length;
  const first = c.channel('chat');
  await first.ready;
  first.close();
  const second = c.channel('chat'); // same tick: no close, no new open
  assert.equal(second.state, 'open');
  await sleep(50);
  assert.equal(frames('close'), 0);
  assert.equal(frames('open'), 1);
  assert.deepEqual(await second.request('client:request', 2), { status: 'ok', result: 2 });

  second.close();
  await sleep(0); // a tick later the channel is closed on the server
  assert.equal(frames('close'), 1);
  const third = c.channel('chat');
  await third.ready;
  assert.equal(frames('open'), 2);
  const got = recorder();
  third.on('server:message', got);
  third.emit('client:send', { text: 'reopened' });
  assert.deepEqual(await got.next(), { user: 'User', text: 'reopened' });
});

test('a pending request rejects with ClosedError when its bridge closes', async () => {
  const { chat } = await openChat();
  const p = chat.request('client:request', 'x');
  chat.close();
  await assert.rejects(p, ClosedError);
});

test('after a server restart the channel is re-opened on the same bridge', async () => {
  const own = await startServer('channels_docs');
  try {
    const c = cs.open(own.wsUrl);
    const chat = c.channel('chat');
    await chat.ready;
    const got = recorder();
    chat.on('server:message', got);
    chat.on('server:ask', () => ({ confirmed: true }));
    await own.kill();
    await stateIs(c, 'closed');
    assert.equal(chat.state, 'connecting');
    await assert.rejects(chat.request('client:request', 1, { timeout: 100 }));
    const restarted = await startServer('channels_docs', own.port);
    try {
      await stateIs(c, 'open', 10000);
      chat.emit('client:send', { text: 'back' });
      assert.deepEqual(await got.next(), { user: 'User', text: 'back' });
      assert.equal(chat.state, 'open');
      const answers = recorder();
      chat.on('server:answer', answers);
      chat.emit('client:confirm', {});
      assert.deepEqual(await answers.next(), { confirmed: true });
    } finally {
      await restarted.stop();
    }
  } finally {
    await own.stop();
  }
});
