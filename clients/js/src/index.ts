/**
 * switchboard-client: the browser (and Node >= 22) client of Switchboard.
 *
 * One WebSocket carries
 *  - SocketAPI-style pub/sub: `subscribe(channel, params, onData)` and `action(name, data)`;
 *  - Pulse-style bidirectional channels: `channel(name, params)` returns a bridge with
 *    `on` / `emit` / `request` / `close`.
 * The socket reconnects with jittered exponential backoff; every subscription is re-subscribed and
 * every channel re-opened after a reconnect. On a channel with history a subscription remembers the
 * offset and epoch of the last publication and recovers what it missed (each publication once, in
 * order), or says that it could not (`onRecovery(false)`). A server close with a code in 4500–4999 means "do not
 * reconnect": the client then stops as after `close()` (4000–4499 and every other close reconnect).
 * Zero runtime dependencies.
 */

/** Connection state reported by {@link Client.onState}. */
export type ConnectionState = 'connecting' | 'open' | 'closed';

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** Handler of a channel event. For a server request its return value (or resolved value) is the reply. */
export type EventHandler = (payload: any) => unknown;

export interface RequestOptions {
  /** Milliseconds before the promise rejects with a {@link TimeoutError}; 0 or Infinity: never. */
  timeout?: number;
}

/** The subset of the standard `WebSocket` that the client uses. */
export interface WebSocketLike {
  readyState: number;
  onopen: ((ev: any) => any) | null;
  onclose: ((ev: any) => any) | null;
  onerror: ((ev: any) => any) | null;
  onmessage: ((ev: { data: any }) => any) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface ConnectOptions {
  /** WebSocket constructor; defaults to `globalThis.WebSocket`. */
  WebSocket?: new (url: string) => WebSocketLike;
  /** Reconnect after the socket drops (default true). */
  reconnect?: boolean;
  /** First reconnect delay in ms (default 500); it doubles on each failed attempt. */
  minDelay?: number;
  /** Largest reconnect delay in ms (default 10000). */
  maxDelay?: number;
  /** Default timeout of `action` and `request`, in ms (default 10000). */
  timeout?: number;
}

/** A place in a history channel's stream: a publication's offset (or the newest one's) and the stream's epoch. */
export interface Position {
  offset: number;
  /** Changes whenever the stream's past was lost (say an in-memory server restarted): offsets of two epochs do not compare. */
  epoch: string;
}

/** The second argument of `onData`: on a channel with history, the publication's offset and the stream's epoch. */
export interface DataInfo {
  offset?: number;
  epoch?: string;
}

/** What `onSubscribed` and `onRecovery` are told when the server confirms a subscription. */
export interface SubscribedInfo {
  /** false the first time; true when this confirms the re-subscribe after a reconnect. */
  resubscribed: boolean;
  /**
   * After a reconnect only: true when every publication missed while disconnected follows (in order,
   * each once, before the live ones); false when they are lost — the channel keeps no history, they
   * are no longer kept, or the stream's past is gone (a new epoch). Then refetch (e.g. `history()`).
   */
  recovered?: boolean;
  /** On a channel with history: the stream's position when the subscription became live (live publications follow it). */
  offset?: number;
  epoch?: string;
}

export interface SubscribeOptions {
  /** Called with a {@link ServerError} when the server refuses the subscription (it is then dropped). */
  onError?: (error: ServerError) => void;
  /** Called each time the server confirms the subscription (again after every reconnect), before any publication that follows. */
  onSubscribed?: (info: SubscribedInfo) => void;
  /**
   * Called after every re-subscribe that follows a reconnect, before the publications that follow
   * it: `recovered` true when what was missed follows, false when it is lost (see {@link SubscribedInfo.recovered}).
   */
  onRecovery?: (recovered: boolean, info: SubscribedInfo) => void;
}

export interface HistoryOptions extends RequestOptions {
  /** At most this many publications (the latest ones, or the first after `since`); default: the channel's recovery limit. */
  limit?: number;
  /** Only publications after this position (from a `history()` answer or a `DataInfo`). */
  since?: Position;
}

/** The answer to `history()`: publications oldest first, and the stream's position when it was read. */
export interface HistoryResult<T = any> extends Position {
  publications: { offset: number; data: T }[];
}

/** Base class of the client's errors. */
export class SwitchboardError extends Error {
  constructor(message: string, name: string) {
    super(message);
    this.name = name;
  }
}
/** A request or action got no answer in time. */
export class TimeoutError extends SwitchboardError {
  constructor(message = 'Request timed out') {
    super(message, 'TimeoutError');
  }
}
/** The connection or the channel closed before the answer came (or was already closed). */
export class ClosedError extends SwitchboardError {
  constructor(message = 'Connection closed') {
    super(message, 'ClosedError');
  }
}
/** The server answered with an error; `message` is the server's text. */
export class ServerError extends SwitchboardError {
  constructor(message: string) {
    super(message, 'ServerError');
  }
}

/** A client-side handle on a bidirectional channel. */
export interface Bridge {
  /** The channel's name. */
  readonly name: string;
  /** 'connecting' until the server confirmed it (and again while reconnecting), then 'open', finally 'closed'. */
  readonly state: ConnectionState;
  /** Resolves with the bridge once the server opened the channel; rejects with a ServerError or ClosedError. */
  readonly ready: Promise<Bridge>;
  /**
   * Listen for an event from the server; returns a function removing the handler. For a server
   * request, handlers run in order until one returns a value other than `undefined` (or a promise
   * of one): that is the reply; a throw or a rejection replies with its message as the error.
   */
  on(event: string, handler: EventHandler): () => void;
  /** Fire-and-forget event to the server. Throws ClosedError on a closed bridge. */
  emit(event: string, payload?: unknown): void;
  /** Request to the server; resolves with the reply's payload. */
  request<T = any>(event: string, payload?: unknown, options?: RequestOptions): Promise<T>;
  /** Called once when the channel closes (by `close()`, by the server, or when the client closes). */
  onClose(handler: (reason: string) => void): () => void;
  /** Release this bridge; the channel closes on the server when its last bridge is released. */
  close(reason?: string): void;
}

export interface Client {
  readonly state: ConnectionState;
  /**
   * The code of the last close frame the server sent (undefined until the server closes a
   * connection; a socket that dropped without a close frame, 1006, leaves it as it was). A code in
   * 4500–4999 stopped the client for good: state 'closed', no reconnect, calls reject with ClosedError.
   */
  readonly closeCode?: number;
  /** The reason text of that close frame ('' when it had none). */
  readonly closeReason?: string;
  /**
   * Subscribe to a pub/sub channel; returns the unsubscribe function. `onData` gets each publication's
   * data, and on a channel with history its offset and epoch; after a reconnect, what was missed is
   * recovered when the channel keeps it (see {@link SubscribeOptions.onRecovery}).
   */
  subscribe(channel: string, params: Record<string, unknown> | undefined, onData: (data: any, info: DataInfo) => void, options?: SubscribeOptions): () => void;
  /**
   * Read the stream of a history channel (with its subscribe-time `params`): the latest `limit`
   * publications, or those after `since`, oldest first, and the stream's position. A `since` of
   * another epoch (or older than what is kept) is answered with what is kept: compare the epochs.
   * Rejects with a ServerError for a channel without history.
   */
  history<T = any>(channel: string, params?: Record<string, unknown>, options?: HistoryOptions): Promise<HistoryResult<T>>;
  /** Call a server action; resolves with its result. */
  action<T = any>(name: string, data?: Record<string, unknown>, options?: RequestOptions): Promise<T>;
  /** Open (or join) a bidirectional channel. */
  channel(name: string, params?: Record<string, unknown>): Bridge;
  /** Connection state: the handler is called at once with the current state, then on every change; returns a remover. */
  onState(handler: (state: ConnectionState) => void): () => void;
  /** Channels that the server opened on its own (`{"type":"opened"}` without a request). */
  onChannel(handler: (bridge: Bridge) => void): () => void;
  /** Server errors that answer no request of ours. */
  onError(handler: (error: ServerError) => void): () => void;
  /** Close the socket for good: no reconnect; pending requests reject with ClosedError. */
  close(): void;
}

/** A close code from the server in 4500–4999: do not reconnect (4000–4499: reconnect with backoff). */
const isFinal = (code: number) => code >= 4500 && code <= 4999;

interface Pending {
  ok: (value: any) => void;
  fail: (error: Error) => void;
  timer?: ReturnType<typeof setTimeout>;
  /** For channel requests: the bridge, so closing it rejects only its own requests. */
  b?: BridgeImpl;
}

interface Sub {
  channel: string;
  params: Record<string, unknown>;
  key: string;
  onData: (data: any, info: DataInfo) => void;
  opts: SubscribeOptions;
}

/** Where a server subscription (channel + params) is, across reconnects. */
interface Track {
  /** The offset of the last publication delivered and the epoch (history channels; unset when unknown). */
  offset?: number;
  epoch?: string;
  /** Confirmed on an earlier socket and not yet on this one: its next confirmation is a re-subscribe. */
  resumed?: boolean;
}

interface Chan {
  name: string;
  params: Record<string, unknown>;
  state: ConnectionState;
  /** Bridges sharing this channel. */
  bridges: Set<BridgeImpl>;
  /** Frames waiting for the channel to (re)open. */
  queue: Record<string, unknown>[];
  /** Opened by the server rather than by us: not re-opened after a reconnect. */
  remote?: boolean;
}

type Msg = { [key: string]: any };

interface Live {
  channel: string;
  params: Record<string, unknown>;
  /** id of the subscribe request */
  id: string;
  /** confirmed by the server */
  ok?: boolean;
}

const OPEN = 1;

/** Add `fn` to `set`, return its remover. */
function listen<T>(set: Set<T>, fn: T): () => void {
  set.add(fn);
  return () => void set.delete(fn);
}

function call(fn: Function, ...args: unknown[]): void {
  try {
    fn(...args);
  } catch (err) {
    console.error(err);
  }
}

class BridgeImpl implements Bridge {
  readonly ready: Promise<Bridge>;
  handlers = new Map<string, Set<EventHandler>>();
  closers = new Set<(reason: string) => void>();
  done = false;
  resolve!: (b: Bridge) => void;
  reject!: (e: Error) => void;

  constructor(public chan: Chan, private client: ClientImpl) {
    this.ready = new Promise<Bridge>((ok, fail) => {
      this.resolve = ok;
      this.reject = fail;
    });
    this.ready.catch(() => {}); // no unhandled rejection when nobody awaits it
    if (chan.state === 'open') this.resolve(this);
  }

  get name(): string {
    return this.chan.name;
  }

  get state(): ConnectionState {
    return this.done ? 'closed' : this.chan.state;
  }

  on(event: string, handler: EventHandler): () => void {
    if (this.done) throw new ClosedError('Channel closed');
    let set = this.handlers.get(event);
    if (!set) this.handlers.set(event, (set = new Set()));
    return listen(set, handler);
  }

  emit(event: string, payload: unknown = null): void {
    if (this.done) throw new ClosedError('Channel closed');
    this.client.chanSend(this.chan, { type: 'emit', event, payload });
  }

  request<T = any>(event: string, payload: unknown = null, options?: RequestOptions): Promise<T> {
    if (this.done) return Promise.reject(new ClosedError('Channel closed'));
    return this.client.ask({ type: 'request', channel: this.chan.name, event, payload }, options, this);
  }

  onClose(handler: (reason: string) => void): () => void {
    return listen(this.closers, handler);
  }

  close(reason = 'closed by client'): void {
    if (this.done) return;
    this.client.release(this, reason);
  }

  /** Mark closed and tell the listeners. */
  end(reason: string): void {
    if (this.done) return;
    this.done = true;
    this.reject(new ClosedError(reason));
    for (const fn of this.closers) call(fn, reason);
    this.handlers.clear();
    this.closers.clear();
  }
}

class ClientImpl implements Client {
  state: ConnectionState = 'closed';
  closeCode?: number;
  closeReason?: string;
  /** Why the client stopped, when the server told it not to reconnect: the ClosedError text. */
  private why?: string;
  private ws: WebSocketLike | null = null;
  private seq = 0;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;
  /** Our requests (actions, channel requests) by id. Server request ids live in another space. */
  private pending = new Map<string, Pending>();
  /** Outstanding subscribe / open requests by id: what their answer (or error) is about. */
  private asks = new Map<string, { sub?: string; chan?: Chan }>();
  private subs = new Set<Sub>();
  /** Subscriptions the server has (or is being asked for) on this socket, by key. */
  private live = new Map<string, Live>();
  /** Positions of the subscriptions, by key: they outlive a socket, to recover from. */
  private tracks = new Map<string, Track>();
  private chans = new Map<string, Chan>();
  /** Frames waiting for the socket to open. */
  private outbox: Msg[] = [];
  private stateFns = new Set<(s: ConnectionState) => void>();
  private chanFns = new Set<(b: Bridge) => void>();
  private errorFns = new Set<(e: ServerError) => void>();
  private o: Required<Omit<ConnectOptions, 'WebSocket'>> & { WebSocket: new (url: string) => WebSocketLike };

  constructor(private url: string, options: ConnectOptions) {
    this.o = {
      reconnect: true,
      minDelay: 500,
      maxDelay: 10000,
      timeout: 10000,
      WebSocket: (globalThis as any).WebSocket,
      ...options,
    };
    this.open();
  }

  // ---- connection ----

  private setState(state: ConnectionState): void {
    if (state === this.state) return;
    this.state = state;
    for (const fn of this.stateFns) call(fn, state);
  }

  private open(): void {
    this.timer = undefined;
    this.setState('connecting');
    let ws: WebSocketLike;
    try {
      ws = new this.o.WebSocket(this.url);
    } catch (err) {
      // a bad URL never gets better
      console.error(err);
      this.stopped = true;
      this.dropped();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.setState('open');
      for (const sub of this.subs) this.sendSubscribe(sub);
      for (const chan of this.chans.values()) this.sendOpen(chan);
      const out = this.outbox;
      this.outbox = [];
      for (const msg of out) this.send(msg);
    };
    ws.onmessage = (ev) => {
      let msg: Msg;
      try {
        msg = JSON.parse(typeof ev.data === 'string' ? ev.data : String(ev.data));
      } catch {
        return;
      }
      if (msg && typeof msg === 'object') this.receive(msg);
    };
    // an error always ends the socket (some implementations report no close after a failed handshake)
    ws.onerror = ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      // a close frame from the server (an error event has no code; 1006: dropped without a frame)
      const code = ev?.code;
      if (typeof code === 'number' && code !== 1006) {
        const reason = (this.closeReason = String(ev.reason ?? ''));
        this.closeCode = code;
        if (isFinal(code)) {
          this.stopped = true;
          this.why = `Connection closed by the server for good (code ${code}${reason && ': ' + reason}): not reconnecting; connect a new client once the cause is removed`;
        }
      }
      this.dropped();
      try {
        ws.close();
      } catch {}
    };
  }

  /** The socket is gone: fail what waits on it, then maybe schedule a reconnect. */
  private dropped(): void {
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    this.outbox = [];
    this.asks.clear();
    for (const [key, l] of this.live) {
      const t = this.tracks.get(key);
      if (t && l.ok) t.resumed = true;
    }
    this.live.clear();
    this.failPending(() => 1, this.why ?? 'Connection closed');
    for (const chan of [...this.chans.values()]) {
      chan.queue = [];
      if (chan.remote || this.stopped || !this.o.reconnect) this.endChan(chan, this.why ?? 'connection closed');
      else chan.state = 'connecting';
    }
    this.setState('closed');
    if (this.stopped || !this.o.reconnect) {
      this.stopped = true;
      return;
    }
    const max = Math.min(this.o.maxDelay, this.o.minDelay * 2 ** this.attempt++);
    // "equal jitter": between half and all of the exponential delay
    this.timer = setTimeout(() => this.open(), max / 2 + (Math.random() * max) / 2);
  }

  close(): void {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    const ws = this.ws;
    this.dropped();
    if (ws) {
      try {
        ws.close(1000);
      } catch {}
    }
  }

  private send(msg: Msg): void {
    if (this.ws && this.ws.readyState === OPEN) this.ws.send(JSON.stringify(msg));
    else if (!this.stopped) this.outbox.push(msg);
  }

  private nextId(): number {
    return ++this.seq;
  }

  /** Send `msg` with a fresh id and wait for its answer. */
  ask<T>(msg: Msg, options: RequestOptions | undefined, b?: BridgeImpl): Promise<T> {
    if (this.stopped) return Promise.reject(new ClosedError(this.why));
    return new Promise<T>((ok, fail) => {
      const id = this.nextId();
      const key = String(id);
      const p: Pending = { ok, fail, b };
      const ms = options?.timeout ?? this.o.timeout;
      if (ms > 0 && ms < Infinity) {
        p.timer = setTimeout(() => {
          this.pending.delete(key);
          fail(new TimeoutError(`${msg.type} '${msg.event ?? msg.channel}' timed out after ${ms} ms`));
        }, ms);
      }
      this.pending.set(key, p);
      msg.id = id;
      if (b) this.chanSend(b.chan, msg);
      else this.send(msg);
    });
  }

  // ---- incoming ----

  private receive(msg: Msg): void {
    const key = msg.id == null ? '' : String(msg.id);
    const name: string = msg.channel;
    switch (msg.type) {
      case 'data': {
        const info: DataInfo = {};
        if (typeof msg.offset === 'number') {
          info.offset = msg.offset;
          // Publications name only the channel: with one server subscription of it, a publication at
          // or before the last one delivered arrived already; with several, offsets cannot be told
          // apart, so everything is delivered and their positions are forgotten (no recovery).
          const keys = [...this.live.keys()].filter((k) => this.live.get(k)!.channel === name);
          for (const k of keys) {
            const t = this.tracks.get(k);
            if (!t) continue;
            if (keys.length > 1) t.offset = t.epoch = undefined;
            else if (t.offset !== undefined) {
              if (msg.offset <= t.offset) return;
              t.offset = msg.offset;
              info.epoch = t.epoch;
            }
          }
        }
        for (const sub of [...this.subs]) if (sub.channel === name) call(sub.onData, msg.data, info);
        return;
      }
      case 'subscribed': {
        const ask = this.asks.get(key);
        this.asks.delete(key);
        const live = ask?.sub ? this.live.get(ask.sub) : undefined;
        if (live?.id !== key) return; // unsubscribed meanwhile
        live.ok = true;
        const t = this.tracks.get(ask!.sub!) ?? {};
        const recovered = msg.recovered === true;
        const at = typeof msg.offset === 'number' && typeof msg.epoch === 'string';
        // recovered: the missed publications follow and move the position on from the last one seen
        if (recovered && t.offset !== undefined) t.epoch = msg.epoch;
        else {
          t.offset = at ? msg.offset : undefined;
          t.epoch = at ? msg.epoch : undefined;
        }
        const info: SubscribedInfo = { resubscribed: !!t.resumed };
        if (t.resumed) info.recovered = recovered;
        t.resumed = false;
        if (at) {
          info.offset = msg.offset;
          info.epoch = msg.epoch;
        }
        for (const sub of [...this.subs]) {
          if (sub.key !== ask!.sub) continue;
          if (sub.opts.onSubscribed) call(sub.opts.onSubscribed, { ...info });
          if (info.resubscribed && sub.opts.onRecovery) call(sub.opts.onRecovery, recovered, { ...info });
        }
        return;
      }
      case 'history':
      case 'action':
      case 'reply': {
        // an action answer, or the answer to one of our channel requests
        const p = this.pending.get(key);
        if (!p) return;
        this.pending.delete(key);
        clearTimeout(p.timer);
        if (msg.type === 'reply' && msg.error != null) p.fail(new ServerError(String(msg.error)));
        else p.ok(msg.type === 'history' ? msg : msg.type === 'reply' ? msg.payload : msg.data);
        return;
      }
      case 'opened': {
        const ask = this.asks.get(key);
        this.asks.delete(key);
        let chan = ask?.chan ?? this.chans.get(name);
        if (chan && this.chans.get(chan.name) !== chan) return; // closed meanwhile
        if (!chan) {
          // the server opened a channel of its own
          chan = { name, params: {}, state: 'connecting', bridges: new Set(), queue: [], remote: true };
          this.chans.set(name, chan);
          const bridge = new BridgeImpl(chan, this);
          chan.bridges.add(bridge);
          for (const fn of this.chanFns) call(fn, bridge);
        }
        if (chan.state === 'open') return;
        chan.state = 'open';
        for (const b of chan.bridges) b.resolve(b);
        const queue = chan.queue;
        chan.queue = [];
        for (const m of queue) this.send(m);
        return;
      }
      case 'emit':
      case 'request':
        this.dispatch(msg);
        return;
      case 'close': {
        const chan = this.chans.get(name);
        if (chan) this.endChan(chan, msg.reason ?? 'closed by server');
        return;
      }
      case 'error': {
        const err = new ServerError(String(msg.message ?? 'Unknown error'));
        const p = this.pending.get(key);
        if (p) {
          this.pending.delete(key);
          clearTimeout(p.timer);
          p.fail(err);
          return;
        }
        const ask = this.asks.get(key);
        if (ask) {
          this.asks.delete(key);
          // a refused subscription is dropped, so it is not retried after a reconnect
          if (ask.sub && this.live.get(ask.sub)?.id === key) this.live.delete(ask.sub);
          else ask.sub = undefined; // about a subscription given up meanwhile
          if (ask.sub) this.tracks.delete(ask.sub);
          for (const sub of [...this.subs]) {
            if (sub.key !== ask.sub) continue;
            this.subs.delete(sub);
            if (sub.opts.onError) call(sub.opts.onError, err);
            else this.reportError(err);
          }
          if (ask.chan && this.chans.get(ask.chan.name) === ask.chan) {
            for (const b of ask.chan.bridges) b.reject(err);
            this.endChan(ask.chan, err.message);
          }
          return;
        }
        this.reportError(err);
        return;
      }
    }
  }

  private reportError(err: ServerError): void {
    if (this.errorFns.size) for (const fn of this.errorFns) call(fn, err);
    else console.warn('switchboard:', err.message);
  }

  /** An `emit` or a `request` from the server on a channel. */
  private dispatch(msg: Msg): void {
    const chan = this.chans.get(msg.channel);
    const fns: EventHandler[] = [];
    if (chan) for (const b of chan.bridges) b.handlers.get(msg.event)?.forEach((fn) => fns.push(fn));
    if (msg.type === 'emit') {
      for (const fn of fns) call(fn, msg.payload);
      return;
    }
    const reply = (out: Msg) => {
      if (this.chans.get(msg.channel) === chan) this.send({ type: 'reply', channel: msg.channel, id: msg.id, ...out });
    };
    if (!fns.length) {
      reply({ error: chan ? `No handler for event '${msg.event}'` : `Channel '${msg.channel}' is not open` });
      return;
    }
    // Handlers run in order until one returns (or resolves to) a value other than undefined: that
    // value is the reply. A throw or a rejection is the reply's error; no value at all replies null.
    (async () => {
      for (const fn of fns) {
        const payload = await fn(msg.payload);
        if (payload !== undefined) return payload;
      }
      return null;
    })().then(
      (payload) => reply({ payload }),
      (err) => reply({ error: err instanceof Error ? err.message : String(err) }),
    );
  }

  // ---- pub/sub ----

  subscribe(channel: string, params: Record<string, unknown> | undefined, onData: (data: any, info: DataInfo) => void, opts: SubscribeOptions = {}): () => void {
    params = params ?? {};
    const sub: Sub = { channel, params, key: channel + '\0' + JSON.stringify(params), onData, opts };
    if (this.stopped) return () => {};
    this.subs.add(sub);
    if (!this.tracks.has(sub.key)) this.tracks.set(sub.key, {});
    // one server subscription per (channel, params): local subscribers share it (and its position)
    const live = this.live.get(sub.key);
    if (!live) this.sendSubscribe(sub);
    else if (live.ok && opts.onSubscribed) {
      const t = this.tracks.get(sub.key)!;
      const info: SubscribedInfo = { resubscribed: false, offset: t.offset, epoch: t.epoch };
      Promise.resolve().then(() => this.subs.has(sub) && call(opts.onSubscribed!, info));
    }
    return () => {
      if (!this.subs.delete(sub)) return;
      if (![...this.subs].some((s) => s.key === sub.key)) this.tracks.delete(sub.key);
      // Publications name only the channel, so every local subscriber of a channel gets all of its
      // data anyway: the server subscriptions of a channel are left together, with its last subscriber
      // (for a channel without subscribe-time parameters the server leaves them all at once).
      for (const s of this.subs) if (s.channel === channel) return;
      for (const [key, l] of this.live) {
        if (l.channel !== channel) continue;
        this.live.delete(key);
        this.send({ type: 'unsubscribe', channel, data: l.params });
      }
    };
  }

  private sendSubscribe(sub: Sub): void {
    if (this.state !== 'open' || this.live.has(sub.key)) return; // (re)sent on open; or shared
    const id = String(this.nextId());
    this.live.set(sub.key, { channel: sub.channel, params: sub.params, id });
    this.asks.set(id, { sub: sub.key });
    const msg: Msg = { type: 'subscribe', channel: sub.channel, data: sub.params, id: +id };
    // recover from the last publication delivered (history channels)
    const t = this.tracks.get(sub.key);
    if (t?.offset !== undefined && t.epoch !== undefined) msg.recover = { offset: t.offset, epoch: t.epoch };
    this.send(msg);
  }

  history<T = any>(channel: string, params: Record<string, unknown> = {}, options: HistoryOptions = {}): Promise<HistoryResult<T>> {
    const msg: Msg = { type: 'history', channel, data: params };
    if (options.limit != null) msg.limit = options.limit;
    if (options.since) msg.since = { offset: options.since.offset, epoch: options.since.epoch };
    return this.ask<Msg>(msg, options).then((m) => ({ publications: m.publications ?? [], offset: m.offset, epoch: m.epoch }));
  }

  action<T = any>(name: string, data: Record<string, unknown> = {}, options?: RequestOptions): Promise<T> {
    return this.ask({ type: 'action', channel: name, data }, options);
  }

  // ---- channels ----

  channel(name: string, params: Record<string, unknown> = {}): Bridge {
    let chan = this.chans.get(name);
    if (!chan) {
      chan = { name, params, state: 'connecting', bridges: new Set(), queue: [] };
      if (this.stopped) chan.state = 'closed';
      else {
        this.chans.set(name, chan);
        this.sendOpen(chan);
      }
    }
    const bridge = new BridgeImpl(chan, this);
    if (chan.state === 'closed') bridge.end(this.why ?? 'Connection closed');
    else chan.bridges.add(bridge);
    return bridge;
  }

  private sendOpen(chan: Chan): void {
    if (this.state !== 'open' || chan.remote) return;
    const id = this.nextId();
    this.asks.set(String(id), { chan });
    this.send({ type: 'open', channel: chan.name, data: chan.params, id });
  }

  /** Send a frame on a channel, holding it until the channel is open. */
  chanSend(chan: Chan, msg: Msg): void {
    msg.channel = chan.name;
    if (chan.state === 'open') this.send(msg);
    else chan.queue.push(msg);
  }

  release(bridge: BridgeImpl, reason: string): void {
    const chan = bridge.chan;
    chan.bridges.delete(bridge);
    this.failPending((p) => p.b === bridge, `Channel '${chan.name}' closed: ${reason}`);
    bridge.end(reason);
    // Close on the server once no bridge is left at the end of this tick: a bridge taken right
    // after (React StrictMode's unmount + mount) reuses the open channel instead.
    Promise.resolve().then(() => {
      if (chan.bridges.size || this.chans.get(chan.name) !== chan) return;
      // open, or its open request is on the wire (the server handles frames in order)
      if (this.state === 'open') this.send({ type: 'close', channel: chan.name, reason });
      this.endChan(chan, reason);
    });
  }

  private failPending(which: (p: Pending) => unknown, reason: string): void {
    for (const [key, p] of this.pending) {
      if (which(p)) {
        this.pending.delete(key);
        clearTimeout(p.timer);
        p.fail(new ClosedError(reason));
      }
    }
  }

  private endChan(chan: Chan, reason: string): void {
    if (this.chans.get(chan.name) === chan) this.chans.delete(chan.name);
    chan.state = 'closed';
    chan.queue = [];
    this.failPending((p) => p.b?.chan === chan, `Channel '${chan.name}' closed: ${reason}`);
    for (const b of [...chan.bridges]) b.end(reason);
    chan.bridges.clear();
  }

  // ---- listeners ----

  onState(handler: (state: ConnectionState) => void): () => void {
    call(handler, this.state);
    return listen(this.stateFns, handler);
  }
  onChannel(handler: (bridge: Bridge) => void): () => void {
    return listen(this.chanFns, handler);
  }
  onError(handler: (error: ServerError) => void): () => void {
    return listen(this.errorFns, handler);
  }
}

/**
 * Connect to a Switchboard server. `url` is a ws:// or wss:// URL; a path such as `/ws` is taken
 * relative to the page's location.
 */
export function connect(url: string, options: ConnectOptions = {}): Client {
  const loc = (globalThis as any).location;
  if (url.startsWith('/') && loc) url = (loc.protocol === 'https:' ? 'wss://' : 'ws://') + loc.host + url;
  return new ClientImpl(url, options);
}
