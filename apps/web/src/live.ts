// Live updates: one Server-Sent Events stream of /v1/events/stream for the whole page, shared by
// every view that wants to hear of changes. It reconnects from the last id it saw.
import type { Event } from '@planetlite/api/browser';
import { api, ApiError, call } from './api.js';

type Listener = (e: Event) => void;
const listeners = new Set<Listener>();
let lastId: number | undefined;
let stop: AbortController | null = null;

/** Calls fn for every event from now on; returns the unsubscribe function. */
export function subscribe(fn: Listener): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** Starts the stream (after login); since: the newest event id the page already shows. */
export function startLive(since?: number): void {
  if (stop) return;
  if (since !== undefined) lastId = Math.max(lastId ?? 0, since);
  stop = new AbortController();
  void run(stop.signal);
}

export function stopLive(): void {
  stop?.abort();
  stop = null;
}

/** The newest id seen, so a list loaded now can start the stream where it ends. */
export function noteEventId(id: number): void {
  lastId = Math.max(lastId ?? 0, id);
}

async function run(signal: AbortSignal): Promise<void> {
  let backoff = 500;
  if (lastId === undefined) {
    // Start from now: the newest event the caller may see.
    const newest = await call(() => api.listEvents({ newest: true, limit: 1 })).catch(() => []);
    lastId = newest[0]?.id ?? 0;
  }
  while (!signal.aborted) {
    try {
      await api.streamEvents({ after: lastId }, (e) => {
        backoff = 500;
        if (e.id <= (lastId ?? 0)) return;
        lastId = e.id;
        for (const l of listeners) l(e);
      }, signal);
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && err.status === 401) return void call(() => Promise.reject(err)).catch(() => undefined);
    }
    if (signal.aborted) return;
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 15_000);
  }
}
