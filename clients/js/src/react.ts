/**
 * React hooks for switchboard-client (entry `switchboard-client/react`; React is a peer dependency).
 */
import { useEffect, useRef, useState } from 'react';
import type { Bridge, Client, ConnectionState, Identity, PresenceMember, SubscribedInfo, WatchPresenceOptions } from './index.js';

/**
 * Open the bidirectional channel `name` for the life of the component (like Pulse's `usePulseChannel`).
 * Returns the bridge once the server has opened the channel, `null` before that and after it closed.
 * The bridge stays the same object across reconnects, so `useEffect(() => bridge?.on(...), [bridge])`
 * registers its handlers once. The channel is released on unmount or when `client`, `name` or `params` change.
 */
export function useChannel(client: Client | null | undefined, name: string, params?: Record<string, unknown>): Bridge | null {
  const [bridge, setBridge] = useState<Bridge | null>(null);
  const key = JSON.stringify(params ?? {});
  useEffect(() => {
    if (!client) return;
    const b = client.channel(name, params);
    let live = true;
    b.ready.then(
      () => live && setBridge(b),
      () => {},
    );
    const off = b.onClose(() => live && setBridge(null));
    return () => {
      live = false;
      off();
      b.close();
      setBridge(null);
    };
    // params are compared by value
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [client, name, key]);
  return bridge;
}

export interface UseSubscriptionOptions {
  /**
   * Called after every re-subscribe that follows a reconnect: `recovered` false means publications
   * were missed for good (refetch, e.g. with `client.history()`); true, that they follow.
   */
  onRecovery?: (recovered: boolean, info: SubscribedInfo) => void;
}

/**
 * Subscribe to the pub/sub channel `channel` for the life of the component; returns the latest data
 * (undefined until the first publication). `options.onRecovery` reports each re-subscribe after a
 * reconnect (the latest callback is used; changing it does not re-subscribe).
 */
export function useSubscription<T = any>(
  client: Client | null | undefined,
  channel: string,
  params?: Record<string, unknown>,
  options?: UseSubscriptionOptions,
): T | undefined {
  return useSubscriptionState<T>(client, channel, params, options).data;
}

/** What {@link useSubscriptionState} returns. */
export interface SubscriptionState<T> {
  /** The latest publication's data (undefined until the first). */
  data: T | undefined;
  /** On a channel with history: the latest publication's offset and the stream's epoch. */
  offset?: number;
  epoch?: string;
  /**
   * undefined until the first reconnect; then whether the last re-subscribe recovered what was
   * missed (false: publications were lost, refetch).
   */
  recovered?: boolean;
  /** How many re-subscribes (after reconnects) there were: an effect keyed on it runs after each. */
  resubscribes: number;
}

/**
 * Like {@link useSubscription}, with the subscription's state: the latest data, its offset and epoch,
 * and whether the last re-subscribe after a reconnect recovered what was missed.
 */
export function useSubscriptionState<T = any>(
  client: Client | null | undefined,
  channel: string,
  params?: Record<string, unknown>,
  options?: UseSubscriptionOptions,
): SubscriptionState<T> {
  const [state, setState] = useState<SubscriptionState<T>>({ data: undefined, resubscribes: 0 });
  const latest = useRef(options);
  latest.current = options;
  const key = JSON.stringify(params ?? {});
  useEffect(() => {
    if (!client) return;
    setState({ data: undefined, resubscribes: 0 });
    return client.subscribe(
      channel,
      params,
      (data: T, info) => setState((s) => ({ ...s, data, offset: info.offset, epoch: info.epoch })),
      {
        onRecovery: (recovered, info) => {
          setState((s) => ({ ...s, recovered, resubscribes: s.resubscribes + 1 }));
          latest.current?.onRecovery?.(recovered, info);
        },
      },
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [client, channel, key]);
  return state;
}

/** The client's connection state, re-rendering on every change. */
export function useConnectionState(client: Client | null | undefined): ConnectionState {
  const [state, setState] = useState<ConnectionState>(client ? client.state : 'closed');
  useEffect(() => (client ? client.onState(setState) : undefined), [client]);
  return state;
}

/**
 * Who the server says the client's connection is (`{ client, user, expiresIn?, expiresAt? }`),
 * re-rendering on every `connected`, `refreshed` and drop; undefined while not connected.
 */
export function useIdentity(client: Client | null | undefined): Identity | undefined {
  const [identity, setIdentity] = useState<Identity | undefined>(client?.identity);
  useEffect(() => {
    if (!client) return void setIdentity(undefined);
    return client.onIdentity(setIdentity);
  }, [client]);
  return identity;
}

const NOBODY: PresenceMember[] = [];

/**
 * The live member list of a topic of a channel with presence and join_leave (`client.watchPresence`),
 * oldest first: `[]` until the members are known, then a new array only when the list changes (the
 * same array otherwise, so it can key memos and effects). Kept for the life of the component; asked
 * again when `client`, `channel` or `params` change (`params` compared by value), and after every
 * reconnect. `options.onError` reports a refusal (the latest callback is used).
 */
export function usePresence(
  client: Client | null | undefined,
  channel: string,
  params?: Record<string, unknown>,
  options?: Pick<WatchPresenceOptions, 'onError' | 'limit'>,
): PresenceMember[] {
  const [members, setMembers] = useState<PresenceMember[]>(NOBODY);
  const latest = useRef(options);
  latest.current = options;
  const key = JSON.stringify(params ?? {});
  useEffect(() => {
    setMembers(NOBODY);
    if (!client) return;
    const onError = latest.current?.onError;
    return client.watchPresence(channel, params, setMembers, {
      limit: latest.current?.limit,
      onError: onError && ((err) => latest.current?.onError?.(err)),
    });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [client, channel, key]);
  return members;
}
