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
 * With a `token`, `getToken` or `connectData` the client authenticates: `connect` first on every
 * connection and nothing else until the server's `connected`; a `refresh` a little before the
 * identity expires; after a 4005 ("token expired") a fresh token from `getToken` and a reconnect.
 * On a channel with presence, `presence` lists the members of a topic and `watchPresence` keeps a
 * live member list (a snapshot, then the server's joins and leaves; again after every reconnect).
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
  /**
   * A connection token (JWT), sent in `connect` on every connection until a fresh one replaces it
   * (from `getToken`, after a 4005 or by a `refresh`).
   */
  token?: string;
  /**
   * Where fresh connection tokens come from: called for the first connection when no `token` is
   * given, after the server closed with 4005 ("token expired") and when the known expiry passed,
   * and a little before the identity expires (for a `refresh`). A rejection is reported to
   * `onError` as a {@link TokenError}: a connection attempt then counts as failed and is retried
   * with backoff (call `client.close()` from it to stop, say when the user logged out).
   */
  getToken?: () => string | Promise<string>;
  /** The `data` of `connect` (for the server's connect proxy). */
  connectData?: unknown;
  /**
   * Send `connect` even without a token or data: the connect proxy authenticates the connection
   * with the browser's cookies. Implied by `token`, `getToken` and `connectData`.
   */
  connect?: boolean;
  /**
   * A subscription token for a channel that needs one (`{"type":"subscribe","token":…}`): called
   * on every subscribe, re-subscribe after a reconnect and `history()` whose options carry no
   * `token`; return undefined for a channel that needs none.
   */
  getSubscriptionToken?: (channel: string, params: Record<string, unknown>) => string | undefined | Promise<string | undefined>;
}

/** Who the server says the connection is: its `connected` (and `refreshed`). */
export interface Identity {
  /** The connection's client id on the server. */
  client: string;
  /** The user id ('' for an anonymous connection). */
  user: string;
  /** Seconds the identity had left when the server last said so (`connected`, `refreshed`); undefined: it does not expire. */
  expiresIn?: number;
  /** When the identity expires: ms since the epoch (the `Date.now()` clock); undefined: it does not expire. */
  expiresAt?: number;
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
  /**
   * The subscription token of a channel that needs one; a function is called again for every
   * re-subscribe after a reconnect (a fixed token would have expired by then). Overrides the
   * client's `getSubscriptionToken`.
   */
  token?: string | (() => string | Promise<string>);
  /**
   * Called with a {@link ServerError} when the server refuses the subscription (say `Permission
   * denied`), or a {@link TokenError} when its token could not be had; it is then dropped.
   */
  onError?: (error: ServerError | TokenError) => void;
  /** Called each time the server confirms the subscription (again after every reconnect), before any publication that follows. */
  onSubscribed?: (info: SubscribedInfo) => void;
  /**
   * Called after every re-subscribe that follows a reconnect, before the publications that follow
   * it: `recovered` true when what was missed follows, false when it is lost (see {@link SubscribedInfo.recovered}).
   */
  onRecovery?: (recovered: boolean, info: SubscribedInfo) => void;
  /**
   * Called when the server ends the subscription (the server API's `unsubscribe`): it is then
   * dropped, and not renewed after a reconnect; subscribe again to come back.
   */
  onUnsubscribed?: () => void;
}

export interface HistoryOptions extends RequestOptions {
  /** At most this many publications (the latest ones, or the first after `since`); default: the channel's recovery limit. */
  limit?: number;
  /** Only publications after this position (from a `history()` answer or a `DataInfo`). */
  since?: Position;
  /** The subscription token of a channel that needs one (default: the client's `getSubscriptionToken`). */
  token?: string;
}

/** The answer to `history()`: publications oldest first, and the stream's position when it was read. */
export interface HistoryResult<T = any> extends Position {
  publications: { offset: number; data: T }[];
}

/** A member of a channel with presence: a subscriber of the topic (the channel plus its subscribe-time parameters). */
export interface PresenceMember {
  /** The member's client id (one per connection). */
  client: string;
  /** Its user id ('' for an anonymous connection). */
  user: string;
  /** Its identity's `info` (only when it has one). */
  info?: Record<string, any>;
}

export interface PresenceOptions extends RequestOptions {
  /** At most this many members (a page); the answer's `cursor` asks for the next. */
  limit?: number;
  /** The `cursor` of the previous page. */
  cursor?: string;
  /** The subscription token of a channel that needs one, or a function giving it (default: the client's `getSubscriptionToken`). */
  token?: string | (() => string | Promise<string>);
}

/** The answer to `presence()`: members, oldest first; `cursor` only when more pages follow. */
export interface PresencePage {
  clients: PresenceMember[];
  cursor?: string;
}

/** The answer to `presenceStats()`: the number of members, and of distinct non-anonymous users. */
export interface PresenceStats {
  clients: number;
  users: number;
}

export interface WatchPresenceOptions {
  /**
   * Called with the error when the member list cannot be had: the subscription is refused, or
   * `presence` is (say `Channel 'x' has no presence.`). Default: the client's `onError`.
   */
  onError?: (error: ServerError | TokenError | TimeoutError) => void;
  /** Ask for the members this many at a time (pages are followed to the end); default: the server's. */
  limit?: number;
  /** The subscription token of a channel that needs one (see {@link SubscribeOptions.token}). */
  token?: string | (() => string | Promise<string>);
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

/** The application's `getToken` (or a subscription token function) failed; `message` is its error's. */
export class TokenError extends SwitchboardError {
  constructor(message: string) {
    super(message, 'TokenError');
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
  /** Who the server says this connection is, while connected (undefined before `connected` and after a drop). */
  readonly identity?: Identity;
  /** The connection's user id (`identity.user`; '' anonymous; undefined while not connected). */
  readonly user?: string;
  /** The connection's client id on the server (`identity.client`). */
  readonly clientId?: string;
  /** Seconds left before the identity expires, now (undefined: not connected, or it does not expire). */
  readonly expiresIn?: number;
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
  /**
   * The members of a channel with presence (with its subscribe-time `params`), oldest first: all of
   * them, or a page of `limit` with a `cursor` for the next when more follow. Rejects with a
   * ServerError for a channel without presence, or when the client may not subscribe.
   */
  presence(channel: string, params?: Record<string, unknown>, options?: PresenceOptions): Promise<PresencePage>;
  /** How many members (`clients`) and distinct non-anonymous users (`users`) a topic of a channel with presence has. */
  presenceStats(channel: string, params?: Record<string, unknown>, options?: Omit<PresenceOptions, 'limit' | 'cursor'>): Promise<PresenceStats>;
  /**
   * Keep a live member list of a channel with presence and join_leave: subscribes (or shares the
   * subscription), asks `presence` (every page), then applies the server's joins and leaves of this
   * topic; after every reconnect it asks again and replaces the list. `onChange` gets a new array,
   * oldest first, each time the list changes (the first time once the members are known, even when
   * none). Returns the function that stops it (and unsubscribes).
   */
  watchPresence(channel: string, params: Record<string, unknown> | undefined, onChange: (members: PresenceMember[]) => void, options?: WatchPresenceOptions): () => void;
  /** Call a server action; resolves with its result. */
  action<T = any>(name: string, data?: Record<string, unknown>, options?: RequestOptions): Promise<T>;
  /**
   * Publish `data` on a channel of a namespace that lets clients publish (PROTOCOL.md, "publish");
   * resolves with the publication's `offset` on a history channel; a refusal rejects with a ServerError.
   */
  publish(channel: string, data: unknown, options?: RequestOptions): Promise<{ offset?: number }>;
  /** Open (or join) a bidirectional channel. */
  channel(name: string, params?: Record<string, unknown>): Bridge;
  /** Connection state: the handler is called at once with the current state, then on every change; returns a remover. */
  onState(handler: (state: ConnectionState) => void): () => void;
  /** Channels that the server opened on its own (`{"type":"opened"}` without a request). */
  onChannel(handler: (bridge: Bridge) => void): () => void;
  /**
   * Identity: the handler is called at once with the current identity (undefined when not
   * connected), then on every `connected` (each (re)connection), on every `refreshed` (a new
   * expiry) and with undefined when the connection drops; returns a remover.
   */
  onIdentity(handler: (identity: Identity | undefined) => void): () => void;
  /**
   * Server errors that answer no request of ours (among them a refused `connect` or `refresh`),
   * and {@link TokenError}s of `getToken`.
   */
  onError(handler: (error: ServerError | TokenError) => void): () => void;
  /** Close the socket for good: no reconnect; pending requests reject with ClosedError. */
  close(): void;
}

/** A close code from the server in 4500–4999: do not reconnect (4000–4499: reconnect with backoff). */
const isFinal = (code: number) => code >= 4500 && code <= 4999;
/** The server's "token expired": reconnect with a fresh token from `getToken` (without one: stop). */
const TOKEN_EXPIRED = 4005;
/** The ids of our `connect` and `refresh` (our other requests have numeric ids). */
const CONNECT_ID = 'connect';
const REFRESH_ID = 'refresh';

/** When to refresh an identity that expires in `secs`: 10 s before, or at three quarters of a shorter life. */
const refreshDelay = (secs: number) => (secs > 40 ? secs - 10 : secs * 0.75) * 1000;

const text = (err: unknown) => (err instanceof Error ? err.message : String(err));

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

/** JSON with sorted keys: parameters compared by value. */
function canon(v: any): string {
  if (Array.isArray(v)) return '[' + v.map(canon).join(',') + ']';
  if (v && typeof v === 'object') {
    const keys = Object.keys(v).filter((k) => v[k] !== undefined).sort();
    return '{' + keys.map((k) => JSON.stringify(k) + ':' + canon(v[k])).join(',') + '}';
  }
  return JSON.stringify(v);
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
  private errorFns = new Set<(e: ServerError | TokenError) => void>();
  private identityFns = new Set<(i: Identity | undefined) => void>();
  /** The live member lists' handlers of `presence_diff`. */
  private diffFns = new Set<(msg: Msg) => void>();
  identity?: Identity;
  /** Authenticate (`connect` first) on every connection. */
  private auth: boolean;
  /** The connection token to present next; undefined asks `getToken` (if any) for one. */
  private token?: string;
  /** When `token` expires, when known (ms, `Date.now()` clock). */
  private tokenExpiry?: number;
  /** The token of the `refresh` on the wire: the current one once `refreshed`. */
  private refreshing?: string;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private o: ConnectOptions & { reconnect: boolean; minDelay: number; maxDelay: number; timeout: number; WebSocket: new (url: string) => WebSocketLike };

  constructor(private url: string, options: ConnectOptions) {
    this.o = {
      reconnect: true,
      minDelay: 500,
      maxDelay: 10000,
      timeout: 10000,
      WebSocket: (globalThis as any).WebSocket,
      ...options,
    };
    this.token = options.token;
    this.auth = options.token != null || !!options.getToken || options.connectData !== undefined || !!options.connect;
    this.open();
  }

  get user(): string | undefined {
    return this.identity?.user;
  }
  get clientId(): string | undefined {
    return this.identity?.client;
  }
  get expiresIn(): number | undefined {
    const at = this.identity?.expiresAt;
    return at === undefined ? undefined : Math.max(0, Math.round((at - Date.now()) / 1000));
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
    const getToken = this.o.getToken;
    // a token known to have expired would only be answered 4005
    if (getToken && this.tokenExpiry !== undefined && Date.now() >= this.tokenExpiry) this.token = undefined;
    if (getToken && this.token == null) {
      // a fresh token first (before the socket: the server gives `connect` a deadline)
      this.fetchToken().then(
        (token) => {
          if (this.stopped || this.ws || this.state !== 'connecting') return;
          this.token = token;
          this.tokenExpiry = undefined;
          this.dial();
        },
        (err) => {
          if (this.stopped || this.ws || this.state !== 'connecting') return;
          this.reportError(new TokenError(`getToken failed: ${text(err)}`));
          this.dropped();
        },
      );
      return;
    }
    this.dial();
  }

  private fetchToken(): Promise<string> {
    return Promise.resolve()
      .then(() => this.o.getToken!())
      .then((token) => {
        if (typeof token !== 'string' || !token) throw new Error('no token');
        return token;
      });
  }

  /** Open the socket. */
  private dial(): void {
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
      if (!this.auth) return this.ready();
      // `connect` first, nothing else until `connected` (the server refuses everything else before)
      const msg: Msg = { type: 'connect', id: CONNECT_ID };
      if (this.token != null) msg.token = this.token;
      if (this.o.connectData !== undefined) msg.data = this.o.connectData;
      ws.send(JSON.stringify(msg));
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
        // token expired: a fresh one from getToken on the next connection; without getToken the
        // same token would only expire again
        if (code === TOKEN_EXPIRED && this.o.getToken) this.token = undefined;
        else if (isFinal(code) || code === TOKEN_EXPIRED) {
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

  /** The socket is open, and connected when authenticating: subscribe, open and send what waited. */
  private ready(): void {
    this.attempt = 0;
    this.setState('open');
    for (const sub of this.subs) this.sendSubscribe(sub);
    for (const chan of this.chans.values()) this.sendOpen(chan);
    const out = this.outbox;
    this.outbox = [];
    for (const msg of out) this.send(msg);
  }

  /** `connected` or `refreshed`: keep the identity, and refresh it a little before it expires. */
  private identify(identity: Identity): void {
    const secs = identity.expiresIn;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    if (typeof secs === 'number') {
      identity.expiresAt = this.tokenExpiry = Date.now() + secs * 1000;
      const ws = this.ws;
      // (a timer longer than 2^31 - 1 ms would fire at once: refresh after 24 days at the latest)
      if (this.o.getToken) this.refreshTimer = setTimeout(() => this.refresh(ws), Math.min(refreshDelay(secs), 2 ** 31 - 1));
    } else this.tokenExpiry = undefined;
    this.setIdentity(identity);
  }

  private refresh(ws: WebSocketLike | null): void {
    this.refreshTimer = undefined;
    this.fetchToken().then(
      (token) => {
        if (this.ws !== ws || this.state !== 'open') return;
        this.refreshing = token;
        this.send({ type: 'refresh', token, id: REFRESH_ID });
      },
      // the server's 4005 at the expiry then starts a new connection, which asks again
      (err) => this.ws === ws && this.reportError(new TokenError(`getToken failed (refresh): ${text(err)}`)),
    );
  }

  private setIdentity(identity: Identity | undefined): void {
    if (!identity && !this.identity) return;
    this.identity = identity;
    for (const fn of this.identityFns) call(fn, identity && { ...identity });
  }

  /** The socket is gone: fail what waits on it, then maybe schedule a reconnect. */
  private dropped(): void {
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    this.setIdentity(undefined);
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
    // 'open' only once connected when authenticating: until then frames wait
    if (this.ws && this.state === 'open' && this.ws.readyState === OPEN) this.ws.send(JSON.stringify(msg));
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
      case 'connected': {
        // the answer to our `connect`, or sent on its own for a `?token=` on the URL
        const identity: Identity = { client: String(msg.client ?? ''), user: String(msg.user ?? '') };
        if (typeof msg.expires_in === 'number') identity.expiresIn = msg.expires_in;
        this.identify(identity);
        if (this.state === 'connecting' && this.ws) this.ready();
        return;
      }
      case 'refreshed': {
        if (!this.identity) return;
        if (this.refreshing) this.token = this.refreshing;
        this.refreshing = undefined;
        const identity: Identity = { client: this.identity.client, user: this.identity.user };
        if (typeof msg.expires_in === 'number') identity.expiresIn = msg.expires_in;
        this.identify(identity);
        return;
      }
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
      case 'presence':
      case 'presence_stats':
      case 'published':
      case 'action':
      case 'reply': {
        // an action answer, or the answer to one of our channel requests
        const p = this.pending.get(key);
        if (!p) return;
        this.pending.delete(key);
        clearTimeout(p.timer);
        if (msg.type === 'reply' && msg.error != null) p.fail(new ServerError(String(msg.error)));
        else p.ok(msg.type === 'action' ? msg.data : msg.type === 'reply' ? msg.payload : msg);
        return;
      }
      case 'presence_diff':
        for (const fn of [...this.diffFns]) call(fn, msg);
        return;
      case 'unsubscribed': {
        // Without a reason: the answer to our own unsubscribe. With one: the server ended the
        // channel's subscriptions; they are dropped, not renewed after a reconnect.
        if (msg.reason == null) return;
        for (const [k, l] of [...this.live]) if (l.channel === name) this.live.delete(k);
        for (const sub of [...this.subs]) {
          if (sub.channel !== name) continue;
          this.subs.delete(sub);
          this.tracks.delete(sub.key);
          if (sub.opts.onUnsubscribed) call(sub.opts.onUnsubscribed);
        }
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
        if (key === CONNECT_ID) {
          // refused (the connect proxy's error, or it is unavailable): tell the application, and
          // try again with backoff on a new connection
          if (this.state === 'open') return; // "Already connected": a ?token= on the URL did it
          this.reportError(err);
          const ws = this.ws;
          this.dropped();
          try {
            ws?.close(1000);
          } catch {}
          return;
        }
        if (key === REFRESH_ID) {
          // refused: the identity keeps its expiry, whose 4005 then reconnects with a fresh token
          this.refreshing = undefined;
          this.reportError(err);
          return;
        }
        const p = this.pending.get(key);
        if (p) {
          this.pending.delete(key);
          clearTimeout(p.timer);
          p.fail(err);
          return;
        }
        if (!this.refused(key, err)) this.reportError(err);
        return;
      }
    }
  }

  /** The subscribe or open request `key` failed with `err`; false when there is no such request. */
  private refused(key: string, err: ServerError | TokenError): boolean {
    const ask = this.asks.get(key);
    if (!ask) return false;
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
    return true;
  }

  private reportError(err: ServerError | TokenError): void {
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
    // a subscription token: the subscription's own (of any local subscriber sharing it), or the client's
    const own = [...this.subs].find((s) => s.key === sub.key && s.opts.token != null)?.opts.token;
    const get = this.o.getSubscriptionToken;
    if (typeof own === 'string' || (own == null && !get)) {
      if (own != null) msg.token = own;
      return this.send(msg);
    }
    const ws = this.ws;
    const current = () => this.ws === ws && this.live.get(sub.key)?.id === id;
    Promise.resolve()
      .then(() => (own ? own() : get!(sub.channel, sub.params)))
      .then(
        (token) => {
          if (!current()) return;
          if (token != null) msg.token = token;
          this.send(msg);
        },
        (err) => current() && this.refused(id, new TokenError(`Subscription token for '${sub.channel}': ${text(err)}`)),
      );
  }

  history<T = any>(channel: string, params: Record<string, unknown> = {}, options: HistoryOptions = {}): Promise<HistoryResult<T>> {
    const msg: Msg = { type: 'history', channel, data: params };
    if (options.limit != null) msg.limit = options.limit;
    if (options.since) msg.since = { offset: options.since.offset, epoch: options.since.epoch };
    return this.askTopic(msg, options.token, options).then((m) => ({ publications: m.publications ?? [], offset: m.offset, epoch: m.epoch }));
  }

  /** Ask about a topic (`msg.channel`, `msg.data`) with its subscription token: `token`, or the client's `getSubscriptionToken`. */
  private askTopic(msg: Msg, token: SubscribeOptions['token'], options: RequestOptions): Promise<Msg> {
    const get = this.o.getSubscriptionToken;
    return Promise.resolve()
      .then(() => (typeof token === 'function' ? token() : token ?? (get ? get(msg.channel, msg.data) : undefined)))
      .then((t) => {
        if (t != null) msg.token = t;
        return this.ask<Msg>(msg, options);
      });
  }

  // ---- presence ----

  presence(channel: string, params: Record<string, unknown> = {}, options: PresenceOptions = {}): Promise<PresencePage> {
    const msg: Msg = { type: 'presence', channel, data: params };
    if (options.limit != null) msg.limit = options.limit;
    if (options.cursor != null) msg.cursor = options.cursor;
    return this.askTopic(msg, options.token, options).then((m) => {
      const page: PresencePage = { clients: m.clients ?? [] };
      if (m.cursor != null) page.cursor = m.cursor;
      return page;
    });
  }

  presenceStats(channel: string, params: Record<string, unknown> = {}, options: PresenceOptions = {}): Promise<PresenceStats> {
    return this.askTopic({ type: 'presence_stats', channel, data: params }, options.token, options).then((m) => ({ clients: m.clients, users: m.users }));
  }

  watchPresence(channel: string, params: Record<string, unknown> = {}, onChange: (members: PresenceMember[]) => void, options: WatchPresenceOptions = {}): () => void {
    const topic = canon(params);
    let members = new Map<string, PresenceMember>();
    /** While a snapshot is asked for: the joins, and the clients that left, seen meanwhile (applied on top of it). */
    let asking: { joins: Map<string, PresenceMember>; gone: Set<string> } | undefined;
    let round = 0;
    let shown: string | undefined;
    let stopped = false;
    const fail = (err: ServerError | TokenError | TimeoutError) => {
      if (stopped) return;
      if (options.onError) call(options.onError, err);
      else this.reportError(err);
    };
    const show = () => {
      const list = [...members.values()];
      const sig = JSON.stringify(list);
      if (!stopped && sig !== shown) {
        shown = sig;
        call(onChange, list);
      }
    };
    // the members now: every page of `presence`; asked again after each (re-)subscribe
    const load = async () => {
      const r = ++round;
      const seen = (asking = { joins: new Map(), gone: new Set() });
      const all: PresenceMember[] = [];
      let cursor: string | undefined;
      try {
        do {
          const page = await this.presence(channel, params, { limit: options.limit, cursor, token: options.token });
          if (r !== round) return;
          all.push(...page.clients);
          cursor = page.cursor;
        } while (cursor);
      } catch (err) {
        if (r !== round) return;
        asking = undefined;
        // a dropped connection asks again after its re-subscribe
        if (!(err instanceof ClosedError)) fail(err as ServerError);
        return;
      }
      asking = undefined;
      // A diff seen meanwhile may be older or newer than the snapshot: joins are added (a member that
      // left since is removed by a leave, seen already or to come), members seen leaving are not.
      members = new Map();
      for (const m of [...all, ...seen.joins.values()]) if (!seen.gone.has(m.client)) members.set(m.client, m);
      show();
    };
    const off = listen(this.diffFns, (msg: Msg) => {
      if (msg.channel !== channel || canon(msg.params ?? {}) !== topic) return;
      // leaves first: a client that left and subscribed again within the window is back
      for (const m of msg.leaves ?? []) {
        members.delete(m.client);
        asking?.joins.delete(m.client);
        asking?.gone.add(m.client);
      }
      for (const m of msg.joins ?? []) {
        members.set(m.client, m);
        asking?.joins.set(m.client, m);
        asking?.gone.delete(m.client);
      }
      // before the snapshot, the list would be partial
      if (!asking) show();
    });
    const unsubscribe = this.subscribe(channel, params, () => {}, { token: options.token, onSubscribed: load, onError: fail });
    return () => {
      stopped = true;
      round++;
      off();
      unsubscribe();
    };
  }

  action<T = any>(name: string, data: Record<string, unknown> = {}, options?: RequestOptions): Promise<T> {
    return this.ask({ type: 'action', channel: name, data }, options);
  }

  async publish(channel: string, data: unknown, options?: RequestOptions): Promise<{ offset?: number }> {
    const reply: any = await this.ask({ type: 'publish', channel, data }, options);
    return reply.offset == null ? {} : { offset: reply.offset };
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
  onIdentity(handler: (identity: Identity | undefined) => void): () => void {
    call(handler, this.identity && { ...this.identity });
    return listen(this.identityFns, handler);
  }
  onError(handler: (error: ServerError | TokenError) => void): () => void {
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
