// Spawns real Switchboard servers for the tests (no dependencies: used by tests-e2e/ too).
// Binaries: $SWITCHBOARD_BIN (the `switchboard` binary) and $SWITCHBOARD_EXAMPLES_DIR (the built
// examples), defaulting to <repo>/target/release.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const release = path.join(repo, 'target/release');

export const SWITCHBOARD_BIN = process.env.SWITCHBOARD_BIN || path.join(release, 'switchboard');
export const EXAMPLES_DIR = process.env.SWITCHBOARD_EXAMPLES_DIR || path.join(release, 'examples');

/** Path of a server binary: 'switchboard' or an example's name. */
export function binary(name) {
  const file = name === 'switchboard' ? SWITCHBOARD_BIN : path.join(EXAMPLES_DIR, name);
  if (!existsSync(file)) {
    throw new Error(`${file} not found: build it (cargo build --release --examples --bins) or set ${name === 'switchboard' ? 'SWITCHBOARD_BIN' : 'SWITCHBOARD_EXAMPLES_DIR'}`);
  }
  return file;
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Start server `name` ('switchboard' runs `switchboard serve`, anything else is an example) on
 * `port` (a free one by default) and wait until it accepts connections.
 * Returns { port, url, wsUrl, proc, stop(), kill(), output() }.
 */
export async function startServer(name, port, extraArgs = []) {
  port ??= await freePort();
  const bind = `127.0.0.1:${port}`;
  const args = [...(name === 'switchboard' ? ['serve', '--bind', bind] : ['--bind', bind]), ...extraArgs];
  const proc = spawn(binary(name), args, { stdio: ['ignore', 'pipe', 'pipe'], env: { RUST_LOG: 'warn', ...process.env } });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  let exited = null;
  const exit = new Promise((resolve) => proc.on('exit', (code, signal) => resolve((exited = { code, signal }))));
  const deadline = Date.now() + 15000;
  while (!(await canConnect(port))) {
    if (exited) throw new Error(`${name} exited (${JSON.stringify(exited)}) before listening on ${bind}:\n${out}`);
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`${name} did not listen on ${bind} within 15 s:\n${out}`);
    }
    await sleep(50);
  }
  const server = {
    name,
    port,
    proc,
    url: `http://${bind}`,
    wsUrl: name === 'switchboard' ? `ws://${bind}/ws` : `ws://${bind}/`,
    output: () => out,
    /** Kill at once (SIGKILL), like a crash; resolves when the process is gone. */
    async kill() {
      if (!exited) proc.kill('SIGKILL');
      await exit;
    },
    /** Graceful stop (SIGTERM, SIGKILL after 3 s). */
    async stop() {
      if (exited) return;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
      await exit;
      clearTimeout(t);
    },
  };
  return server;
}

/** Wait until `cond()` is truthy (polling), or fail after `ms`. */
export async function waitFor(cond, ms = 5000, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
