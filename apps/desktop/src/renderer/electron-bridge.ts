/** The Electron transport: the same Bridge over the preload's `window.meshrun` (IPC to the main process). */
import {
  type Bridge,
  type LiveEvent,
  type PreloadApi,
  RpcError,
  type RpcMethod,
  type RpcMethods,
} from '../shared/api.ts';

export class ElectronBridge implements Bridge {
  readonly host = 'electron' as const;
  readonly #api: PreloadApi;

  constructor(api: PreloadApi) {
    this.#api = api;
  }

  async call<M extends RpcMethod>(method: M, params?: RpcMethods[M][0]): Promise<RpcMethods[M][1]> {
    const reply = (await this.#api.call(method, params ?? {})) as {
      ok: boolean;
      result?: unknown;
      error?: { code: string; message: string };
    };
    if (reply.ok) return reply.result as RpcMethods[M][1];
    throw new RpcError(reply.error?.code ?? 'ERROR', reply.error?.message ?? 'request failed');
  }

  subscribe(handler: (event: LiveEvent) => void): () => void {
    return this.#api.subscribe(handler);
  }
}

export function preloadApi(): PreloadApi | null {
  const api = (globalThis as { meshrun?: PreloadApi }).meshrun;
  return api && typeof api.call === 'function' && typeof api.subscribe === 'function' ? api : null;
}
