/**
 * The browser transport: RPC over `POST /api/rpc` with a bearer token, live events over `EventSource`.
 *
 * The token arrives once in the dashboard URL (`?token=`); we move it to sessionStorage and drop it from the
 * address bar so it does not end up in history, bookmarks or screenshots. EventSource cannot send headers,
 * so the event stream carries the token in its query string (same origin, loopback only).
 */
import {
  type Bridge,
  LIVE_EVENT_TYPES,
  type LiveEvent,
  RpcError,
  type RpcMethod,
  type RpcMethods,
} from '../shared/api.ts';

export const TOKEN_STORAGE_KEY = 'meshrun.token';
/** An RPC that takes longer than this is reported as failed instead of leaving the UI hanging. */
export const RPC_TIMEOUT_MS = 15_000;
/**
 * EventSource retries by itself after a dropped connection, but gives up for good after an error response
 * (e.g. the node restarted on another port, or a proxy answered 502). Then we reopen it ourselves, with
 * exponential backoff up to RECONNECT_MAX_DELAY_MS, at most RECONNECT_MAX_ATTEMPTS times in a row.
 */
export const RECONNECT_BASE_DELAY_MS = 1_000;
export const RECONNECT_MAX_DELAY_MS = 30_000;
export const RECONNECT_MAX_ATTEMPTS = 40;

export function reconnectDelay(attempt: number): number {
  return Math.min(RECONNECT_MAX_DELAY_MS, RECONNECT_BASE_DELAY_MS * 2 ** attempt);
}

/** Take the token from the URL (then remove it from the address bar) or from this tab's session storage. */
export function takeToken(win: Window = window): string | null {
  const url = new URL(win.location.href);
  const fromUrl = url.searchParams.get('token');
  if (fromUrl) {
    win.sessionStorage.setItem(TOKEN_STORAGE_KEY, fromUrl);
    url.searchParams.delete('token');
    win.history.replaceState(win.history.state, '', url.pathname + url.search + url.hash);
    return fromUrl;
  }
  return win.sessionStorage.getItem(TOKEN_STORAGE_KEY);
}

export class WebBridge implements Bridge {
  readonly host = 'web' as const;
  readonly #token: string;
  readonly #base: string;
  #source: EventSource | null = null;
  #reconnectAttempts = 0;
  #reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  readonly #handlers = new Set<(event: LiveEvent) => void>();

  constructor(token: string, base = '') {
    this.#token = token;
    this.#base = base;
  }

  async call<M extends RpcMethod>(method: M, params?: RpcMethods[M][0]): Promise<RpcMethods[M][1]> {
    let response: Response;
    try {
      response = await fetch(`${this.#base}/api/rpc`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${this.#token}` },
        body: JSON.stringify({ method, params: params ?? {} }),
        signal: AbortSignal.timeout(RPC_TIMEOUT_MS),
      });
    } catch (err) {
      throw new RpcError('UNREACHABLE', `node not reachable: ${(err as Error).message}`);
    }
    if (response.status === 401) throw new RpcError('UNAUTHORIZED', 'the dashboard token was not accepted');
    let body: unknown;
    try {
      body = await response.json();
    } catch {
      throw new RpcError('BAD_RESPONSE', `node answered HTTP ${response.status} without JSON`);
    }
    const reply = body as { ok?: boolean; result?: unknown; error?: { code?: string; message?: string } };
    if (reply.ok === true) return reply.result as RpcMethods[M][1];
    throw new RpcError(
      String(reply.error?.code ?? `HTTP_${response.status}`),
      String(reply.error?.message ?? 'request failed'),
    );
  }

  subscribe(handler: (event: LiveEvent) => void): () => void {
    this.#handlers.add(handler);
    this.#open();
    return () => {
      this.#handlers.delete(handler);
      if (this.#handlers.size === 0) {
        this.#source?.close();
        this.#source = null;
        if (this.#reconnectTimer) clearTimeout(this.#reconnectTimer);
        this.#reconnectTimer = null;
      }
    };
  }

  #emit(event: LiveEvent): void {
    for (const handler of this.#handlers) handler(event);
  }

  #open(): void {
    if (this.#source) return;
    // EventSource reconnects by itself (browser backoff, server `retry:`); we only surface the state.
    const source = new EventSource(`${this.#base}/api/events?token=${encodeURIComponent(this.#token)}`);
    this.#source = source;
    source.onopen = () => {
      this.#reconnectAttempts = 0;
      this.#emit({ type: 'connection', data: { connected: true } });
    };
    source.onerror = () => {
      this.#emit({ type: 'connection', data: { connected: false } });
      if (source.readyState !== EventSource.CLOSED || this.#source !== source) return;
      this.#source = null;
      if (this.#reconnectAttempts >= RECONNECT_MAX_ATTEMPTS || this.#handlers.size === 0) return;
      const delay = reconnectDelay(this.#reconnectAttempts++);
      this.#reconnectTimer = setTimeout(() => {
        this.#reconnectTimer = null;
        if (this.#handlers.size > 0) this.#open();
      }, delay);
    };
    for (const type of LIVE_EVENT_TYPES) {
      source.addEventListener(type, (message) => {
        let data: unknown;
        try {
          data = JSON.parse((message as MessageEvent<string>).data);
        } catch {
          return; // a malformed event is dropped, not fatal
        }
        if (typeof data !== 'object' || data === null) return;
        this.#emit({ type, data } as LiveEvent);
      });
    }
  }
}
