// Close codes, against a minimal WebSocket server that closes with a chosen code (no Switchboard
// needed): 4500–4999 stop the client for good, 4000–4499 reconnect with backoff.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import { ClosedError } from '../dist/index.js';
import { clients, recorder, stateIs, sleep } from './util.mjs';
import { waitFor } from './server.mjs';

/** An unmasked server frame. */
function frame(opcode, payload) {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, n]) : Buffer.from([0x80 | opcode, 126, n >> 8, n & 255]);
  return Buffer.concat([head, payload]);
}

/** Complete client frames (masked, unfragmented, shorter than 64 KiB) at the start of `buf`. */
function* frames(state) {
  for (;;) {
    const buf = state.buf;
    if (buf.length < 2) return;
    let len = buf[1] & 127;
    let at = 2;
    if (len === 126) {
      if (buf.length < 4) return;
      len = buf.readUInt16BE(2);
      at = 4;
    }
    if (buf.length < at + 4 + len) return;
    const mask = buf.subarray(at, at + 4);
    const payload = Buffer.from(buf.subarray(at + 4, at + 4 + len).map((b, i) => b ^ mask[i % 4]));
    state.buf = buf.subarray(at + 4 + len);
    yield { opcode: buf[0] & 15, payload };
  }
}

/**
 * A WebSocket server that closes every connection with `code` and `reason`: at once (`when` 'open'),
 * or on the first `action` (`when` 'action'; `subscribe` and `open` are answered before that).
 * `connections` counts the connections it accepted.
 */
async function closingServer(code, reason, when) {
  const sockets = new Set();
  const srv = http.createServer((_req, res) => res.writeHead(426).end());
  const server = { connections: 0 };
  srv.on('upgrade', (req, socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    const accept = crypto
      .createHash('sha1')
      .update(req.headers['sec-websocket-key'] + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11')
      .digest('base64');
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
    server.connections++;
    const closeFrame = () => {
      const payload = Buffer.concat([Buffer.from([code >> 8, code & 255]), Buffer.from(reason)]);
      socket.write(frame(8, payload));
    };
    if (when === 'open') closeFrame();
    const state = { buf: Buffer.alloc(0) };
    socket.on('data', (data) => {
      state.buf = Buffer.concat([state.buf, data]);
      for (const { opcode, payload } of frames(state)) {
        if (opcode === 8) return void socket.end(); // the client's answer to our close
        if (opcode !== 1) continue;
        const msg = JSON.parse(payload.toString());
        const answer = { subscribe: 'subscribed', open: 'opened' }[msg.type];
        if (answer) socket.write(frame(1, Buffer.from(JSON.stringify({ type: answer, channel: msg.channel, id: msg.id }))));
        else if (msg.type === 'action') closeFrame();
      }
    });
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  server.url = `ws://127.0.0.1:${srv.address().port}/`;
  server.close = () =>
    new Promise((r) => {
      sockets.forEach((s) => s.destroy());
      srv.close(r);
    });
  return server;
}

const servers = [];
const cs = clients();
after(async () => {
  cs.closeAll();
  for (const s of servers) await s.close();
});

async function start(code, reason, when) {
  const srv = await closingServer(code, reason, when);
  servers.push(srv);
  return srv;
}

test('a close code in 4500-4999 stops the client for good and keeps the code and reason', async () => {
  const srv = await start(4501, 'banned', 'action');
  const c = cs.open(srv.url, { minDelay: 10, maxDelay: 50 });
  const states = recorder();
  c.onState(states);
  assert.equal(c.closeCode, undefined);
  const subscribed = recorder();
  c.subscribe('ticker', {}, () => {}, { onSubscribed: subscribed });
  await subscribed.next();
  const chat = c.channel('chat');
  await chat.ready;
  const closed = recorder();
  chat.onClose(closed);

  // the server answers this action by closing the connection with 4501
  await assert.rejects(c.action('bye', {}, { timeout: 5000 }), (e) => e instanceof ClosedError && /code 4501: banned/.test(e.message));
  await stateIs(c, 'closed');
  assert.equal(c.closeCode, 4501);
  assert.equal(c.closeReason, 'banned');
  assert.equal(chat.state, 'closed');
  assert.match(await closed.next(), /4501/);

  // like after close(): everything rejects, nothing reconnects
  await assert.rejects(c.action('x'), (e) => e instanceof ClosedError && /for good/.test(e.message));
  const late = c.channel('late');
  assert.equal(late.state, 'closed');
  await assert.rejects(late.ready, ClosedError);
  // a reconnect would come within 5-10 ms here: give it far longer
  await sleep(300);
  assert.equal(srv.connections, 1, 'no reconnect');
  assert.deepEqual(states.calls, ['connecting', 'open', 'closed']);
  c.close();
});

test('a close code in 4500-4999 at open: one connection, state closed', async () => {
  const srv = await start(4999, '', 'open');
  const c = cs.open(srv.url, { minDelay: 10, maxDelay: 50 });
  await waitFor(() => c.closeCode === 4999, 5000, 'the close code');
  await stateIs(c, 'closed');
  assert.equal(c.closeReason, '');
  await assert.rejects(c.action('x'), (e) => e instanceof ClosedError && /code 4999\)/.test(e.message));
  await sleep(300);
  assert.equal(srv.connections, 1, 'no reconnect');
});

test('a close code in 4000-4499 reconnects with backoff', async () => {
  const srv = await start(4001, 'try again later', 'open');
  const c = cs.open(srv.url, { minDelay: 10, maxDelay: 50 });
  await waitFor(() => srv.connections >= 2, 5000, 'a second connection');
  assert.equal(c.closeCode, 4001);
  assert.equal(c.closeReason, 'try again later');
  c.close();
  assert.equal(c.state, 'closed');
});
