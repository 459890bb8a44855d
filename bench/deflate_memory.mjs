// Memory per connection with permessage-deflate (issue 17): opens N connections to an echo server
// (`--compression off|on|context-takeover`), has each send one compressible ~2 KiB JSON text and
// waits for its echo (so that, with context takeover, both the server's compressor and its
// inflater exist), then reads the server's RSS from /proc and prints one JSON line.
//
//   node bench/deflate_memory.mjs URL SERVER_PID N LABEL
// (ws from tests/peers/node_modules: `cd tests/peers && npm ci` first)
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
const require = createRequire(new URL('../tests/peers/package.json', import.meta.url));
const WebSocket = require('ws');

const [url, pid, n, label] = [process.argv[2], process.argv[3], Number(process.argv[4] || 1000), process.argv[5] || ''];
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
const text = JSON.stringify({
  channel: 'orders',
  data: Array.from({ length: 20 }, (_, i) => ({ id: i, sku: `SKU-${1000 + i}`, qty: i % 7, price_cents: 199 + i * 13, status: 'paid' })),
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const before = rss();
const sockets = [];
let agreed = 0;
for (let i = 0; i < n; i += 100) {
  const batch = [];
  for (let j = i; j < Math.min(n, i + 100); j++) {
    batch.push(new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: { threshold: 0 } });
      ws.once('error', reject);
      ws.once('open', () => {
        if (ws.extensions.includes('permessage-deflate')) agreed++;
        ws.send(text);
      });
      ws.once('message', () => resolve(ws));
    }));
  }
  sockets.push(...(await Promise.all(batch)));
}
await sleep(2000);
const after = rss();
console.log(JSON.stringify({ label, conns: n, agreed, text_bytes: text.length, rss_before_kib: before, rss_after_kib: after, kib_per_conn: Math.round(((after - before) / n) * 100) / 100 }));
for (const ws of sockets) ws.terminate();
process.exit(0);
