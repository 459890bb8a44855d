/**
 * React hooks for switchboard-client (entry `switchboard-client/react`; React is a peer dependency).
 */
import { useEffect, useState } from 'react';
import type { Bridge, Client, ConnectionState } from './index.js';

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

/**
 * Subscribe to the pub/sub channel `channel` for the life of the component; returns the latest data
 * (undefined until the first publication).
 */
export function useSubscription<T = any>(client: Client | null | undefined, channel: string, params?: Record<string, unknown>): T | undefined {
  const [data, setData] = useState<T | undefined>(undefined);
  const key = JSON.stringify(params ?? {});
  useEffect(() => {
    if (!client) return;
    setData(undefined);
    return client.subscribe(channel, params, (d: T) => setData(() => d));
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [client, channel, key]);
  return data;
}

/** The client's connection state, re-rendering on every change. */
export function useConnectionState(client: Client | null | undefined): ConnectionState {
  const [state, setState] = useState<ConnectionState>(client ? client.state : 'closed');
  useEffect(() => (client ? client.onState(setState) : undefined), [client]);
  return state;
}
