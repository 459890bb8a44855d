import crypto from 'node:crypto';
import { connect } from '../dist/index.js';
import { waitFor } from './server.mjs';

if (typeof globalThis.WebSocket !== 'function') {
  throw new Error('no global WebSocket: run node >= 22, or node 20 with NODE_OPTIONS=--experimental-websocket');
}

/** Clients opened by a test; close them all in after(). */
export function clients() {
  const list = [];
  return {
    open(url, options = {}) {
      const c = connect(url, { minDelay: 50, maxDelay: 400, ...options });
      list.push(c);
      return c;
    },
    closeAll() {
      for (const c of list.splice(0)) c.close();
    },
  };
}

/** A callback that records what it is called with; `next(pred)` waits for a matching call. */
export function recorder() {
  const calls = [];
  const fn = (v) => {
    calls.push(v);
  };
  fn.calls = calls;
  /** Wait for a call from index `from` on whose argument `pred` is true; resolves with that argument. */
  fn.next = async (pred = () => true, ms = 5000, from = 0) => {
    let i = -1;
    await waitFor(() => (i = calls.findIndex((v, j) => j >= from && pred(v))) >= 0, ms, 'a matching call');
    return calls[i];
  };
  return fn;
}

/** Resolves when the client's state is `state`. */
export function stateIs(client, state, ms = 5000) {
  return waitFor(() => client.state === state, ms, `state ${state}`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Seconds since the epoch (the unit of a JWT's `exp`). */
export const nowSecs = () => Math.floor(Date.now() / 1000);

/** An HS256 JWT of `claims` signed with `secret` (base64url header.payload.signature). */
export function jwt(claims, secret, header = { alg: 'HS256', typ: 'JWT' }) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const signed = `${part(header)}.${part(claims)}`;
  return `${signed}.${crypto.createHmac('sha256', secret).update(signed).digest('base64url')}`;
}
