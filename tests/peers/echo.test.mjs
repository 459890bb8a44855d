// The echo example against the Node `ws` client. run.sh starts three echo servers and passes their
// URLs: ECHO_URL (default limits; it accepts permessage-deflate, which ws offers by default),
// ECHO_SMALL_URL (started with --max-message-size 1024) and ECHO_PLAIN_URL (--compression off).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';

const URL = process.env.ECHO_URL;
const SMALL_URL = process.env.ECHO_SMALL_URL;
const PLAIN_URL = process.env.ECHO_PLAIN_URL;
const SMALL_LIMIT = 1024;
const skip = !URL || !SMALL_URL ? 'run through tests/peers/run.sh' : false;

/** Opens a connection and queues everything it receives. */
function open(url = `${URL}/node`, options = {}) {
  const ws = new WebSocket(url, { maxPayload: 0, ...options });
  const inbox = [];
  let waiting = null;
  const push = (item) => {
    inbox.push(item);
    if (waiting) {
      const w = waiting;
      waiting = null;
      w();
    }
  };
  ws.on('message', (data, isBinary) => push({ kind: 'message', data, isBinary }));
  ws.on('pong', (data) => push({ kind: 'pong', data }));
  ws.on('close', (code, reason) => push({ kind: 'close', code, reason: reason.toString() }));
  ws.on('error', () => {});
  /** The next event, within 5 s. */
  ws.next = async () => {
    const deadline = Date.now() + 5000;
    while (inbox.length === 0) {
      if (Date.now() > deadline) throw new Error('timed out waiting for an event');
      await new Promise((resolve) => {
        waiting = resolve;
        setTimeout(resolve, 100);
      });
    }
    return inbox.shift();
  };
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

/** A masked client frame (payload < 126 bytes) for writing on the raw socket. */
function maskedFrame(b0, payload) {
  const mask = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const body = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
  return Buffer.concat([Buffer.from([b0, 0x80 | payload.length]), mask, body]);
}

test('text echo', { skip }, async () => {
  const ws = await open();
  for (const msg of ['hello', '', 'héllo wörld ✓ 🚀', 'y'.repeat(70000)]) {
    ws.send(msg);
    const ev = await ws.next();
    assert.equal(ev.kind, 'message');
    assert.equal(ev.isBinary, false);
    assert.equal(ev.data.toString('utf8'), msg);
  }
  ws.close();
});

test('binary echo', { skip }, async () => {
  const ws = await open();
  for (const msg of [Buffer.from([0, 1, 2, 255]), Buffer.alloc(0), randomBytes(300)]) {
    ws.send(msg);
    const ev = await ws.next();
    assert.equal(ev.kind, 'message');
    assert.equal(ev.isBinary, true);
    assert.deepEqual(ev.data, msg);
  }
  ws.close();
});

test('1 MiB messages', { skip }, async () => {
  const ws = await open();
  const data = randomBytes(1 << 20);
  ws.send(data);
  let ev = await ws.next();
  assert.equal(ev.isBinary, true);
  assert.ok(ev.data.equals(data), '1 MiB binary differs');
  const text = 'κ✓abc'.repeat(1 << 17);
  ws.send(text);
  ev = await ws.next();
  assert.equal(ev.isBinary, false);
  assert.equal(ev.data.toString('utf8'), text);
  // Sent as 16 fragments.
  for (let i = 0; i < 16; i++) {
    ws.send(data.subarray(i << 16, (i + 1) << 16), { binary: true, fin: i === 15 });
  }
  ev = await ws.next();
  assert.ok(ev.data.equals(data), 'fragmented 1 MiB differs');
  ws.close();
});

test('ping gets a pong with the same payload', { skip }, async () => {
  const ws = await open();
  ws.ping(Buffer.from('node ping'));
  const ev = await ws.next();
  assert.deepEqual(ev, { kind: 'pong', data: Buffer.from('node ping') });
  ws.send('after ping');
  assert.equal((await ws.next()).data.toString(), 'after ping');
  ws.close();
});

test('client close with a code and reason is echoed', { skip }, async () => {
  const ws = await open();
  ws.close(4000, 'node done');
  const ev = await ws.next();
  // The server answers with the same code and reason.
  assert.deepEqual(ev, { kind: 'close', code: 4000, reason: 'node done' });
});

test('too big message is closed with 1009', { skip }, async () => {
  const ws = await open(`${SMALL_URL}/node`);
  ws.send(Buffer.alloc(SMALL_LIMIT, 1));
  assert.equal((await ws.next()).data.length, SMALL_LIMIT);
  ws.send(Buffer.alloc(SMALL_LIMIT + 1, 1));
  const ev = await ws.next();
  assert.deepEqual(ev, { kind: 'close', code: 1009, reason: `max length: ${SMALL_LIMIT}` });
});

test('too big fragmented message is closed with 1009', { skip }, async () => {
  const ws = await open(`${SMALL_URL}/node`);
  ws.send('a'.repeat(600), { fin: false });
  ws.send('b'.repeat(600), { fin: true });
  const ev = await ws.next();
  assert.deepEqual(ev, { kind: 'close', code: 1009, reason: `max length: ${SMALL_LIMIT}` });
});

for (const [name, b0, reason] of [
  ['reserved bit', 0xc1, 'invalid extension'],
  ['reserved opcode', 0x83, 'invalid opcode'],
]) {
  test(`protocol error (${name}) is closed with 1002`, { skip }, async () => {
    // Without permessage-deflate, which would make RSV1 legal.
    const ws = await open(`${URL}/node`, { perMessageDeflate: false });
    // ws never sends a bad frame: write one on its socket.
    ws._socket.write(maskedFrame(b0, [...Buffer.from('bad')]));
    const ev = await ws.next();
    assert.deepEqual(ev, { kind: 'close', code: 1002, reason });
  });
}

test('many messages arrive in order', { skip }, async () => {
  const ws = await open();
  for (let i = 0; i < 500; i++) ws.send(`n${i}`);
  for (let i = 0; i < 500; i++) assert.equal((await ws.next()).data.toString(), `n${i}`);
  ws.close();
});

/** A JSON text of about `n` bytes, as applications publish. */
function jsonText(n) {
  const rows = [];
  for (let i = 0; JSON.stringify(rows).length < n; i++) {
    rows.push({ id: i, symbol: 'BTC-USD', price: `${64000 + (i % 97)}.${i % 100}`, size: `0.0${i % 9}1`, side: i % 3 ? 'buy' : 'sell' });
  }
  return JSON.stringify({ channel: 'trades', data: rows });
}

test('permessage-deflate is agreed with ws by default: compressed both ways', { skip }, async () => {
  // The response header as the server sent it (ws.extensions names the extension only).
  const header = new Promise((resolve) => {
    const probe = new WebSocket(`${URL}/node`);
    probe.once('upgrade', (res) => resolve(res.headers['sec-websocket-extensions']));
    probe.once('open', () => probe.close());
    probe.on('error', () => {});
  });
  assert.equal(await header, 'permessage-deflate; server_no_context_takeover; client_no_context_takeover');
  const ws = await open();
  assert.match(ws.extensions, /^permessage-deflate/);
  const text = jsonText(20000);
  const before = ws._socket.bytesRead;
  for (let i = 0; i < 3; i++) {
    ws.send(text);
    const ev = await ws.next();
    assert.equal(ev.data.toString('utf8'), text);
  }
  const read = ws._socket.bytesRead - before;
  assert.ok(read < text.length, `three ${text.length}-byte echoes came in ${read} bytes: not compressed`);
  // Small messages (under the server's 256-byte threshold) too.
  ws.send('small');
  assert.equal((await ws.next()).data.toString(), 'small');
  ws.close();
});

test('ws without permessage-deflate: nothing agreed, plain echo', { skip }, async () => {
  const ws = await open(`${URL}/node`, { perMessageDeflate: false });
  assert.equal(ws.extensions, '');
  const text = jsonText(5000);
  ws.send(text);
  assert.equal((await ws.next()).data.toString(), text);
  ws.close();
});

test('a server with compression off declines the offer', { skip: skip || !PLAIN_URL }, async () => {
  const ws = await open(`${PLAIN_URL}/node`);
  assert.equal(ws.extensions, '');
  const text = jsonText(5000);
  const before = ws._socket.bytesRead;
  ws.send(text);
  assert.equal((await ws.next()).data.toString(), text);
  assert.ok(ws._socket.bytesRead - before > text.length);
  ws.close();
});

test('a compressed message that inflates past the limit is closed with 1009', { skip }, async () => {
  const ws = await open(`${SMALL_URL}/node`);
  assert.match(ws.extensions, /^permessage-deflate/);
  // 100 KB of zeros compresses to about 100 bytes.
  ws.send(Buffer.alloc(100000));
  const ev = await ws.next();
  assert.deepEqual(ev, { kind: 'close', code: 1009, reason: `max length: ${SMALL_LIMIT}` });
});
