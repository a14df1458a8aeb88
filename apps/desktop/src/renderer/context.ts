/** Shared state of the dashboard: the bridge, the latest node status and a tiny live-event bus. */
import type { Bridge, LiveEvent, NodeStatus } from '../shared/api.ts';

type Handler<T extends LiveEvent['type']> = (data: Extract<LiveEvent, { type: T }>['data']) => void;

export class AppContext {
  readonly bridge: Bridge;
  status: NodeStatus | null = null;
  connected = false;
  readonly #handlers = new Map<string, Set<(data: unknown) => void>>();
  readonly #toast: (message: string, level: 'info' | 'error') => void;

  constructor(bridge: Bridge, toast: (message: string, level: 'info' | 'error') => void) {
    this.bridge = bridge;
    this.#toast = toast;
  }

  on<T extends LiveEvent['type']>(type: T, handler: Handler<T>): void {
    let set = this.#handlers.get(type);
    if (!set) {
      set = new Set();
      this.#handlers.set(type, set);
    }
    set.add(handler as (data: unknown) => void);
  }

  dispatch(event: LiveEvent): void {
    if (event.type === 'status') this.status = event.data;
    if (event.type === 'connection') this.connected = event.data.connected;
    for (const handler of this.#handlers.get(event.type) ?? []) {
      try {
        handler(event.data);
      } catch (err) {
        console.error(`handler for ${event.type} failed`, err);
      }
    }
  }

  toast(message: string, level: 'info' | 'error' = 'info'): void {
    this.#toast(message, level);
  }

  /** Run an RPC, turning a failure into a visible message instead of an unhandled rejection. */
  async attempt<T>(what: string, fn: () => Promise<T>): Promise<T | undefined> {
    try {
      return await fn();
    } catch (err) {
      this.toast(`${what} failed: ${(err as Error).message}`, 'error');
      return undefined;
    }
  }
}

export interface View {
  readonly id: string;
  readonly title: string;
  readonly element: HTMLElement;
  /** Called whenever the view becomes visible: load what the event stream does not carry. */
  show(): void;
}
