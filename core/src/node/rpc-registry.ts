/**
 * Control-RPC method registry shared by every front door of a node: the libp2p control protocol (CLI with
 * `--peer`, other nodes) and the local HTTP API (CLI on the same machine, dashboard). Each method validates its
 * own params with a zod schema, so no front door can hand a handler unchecked input.
 */
import { ProtocolError, RPC_ERRORS, validate } from '@meshrun/protocol';
import type { z } from 'zod';

export interface RpcContext {
  /** How the call arrived: `local` = HTTP API with the data-dir token (the machine's owner). */
  via: 'local' | 'p2p';
  /** Remote libp2p peer ID for `p2p` calls. */
  remotePeer?: string;
  /** Optional credential envelope carried with the request (submitter signatures). */
  auth?: unknown;
  signal?: AbortSignal;
}

export class RpcFailure extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'RpcFailure';
    this.code = code;
  }
}

type Handler<P> = (params: P, ctx: RpcContext) => Promise<unknown> | unknown;
type StreamHandler<P> = (params: P, ctx: RpcContext) => AsyncIterable<unknown>;

interface Entry {
  schema: z.ZodType;
  handler?: Handler<unknown>;
  stream?: StreamHandler<unknown>;
}

export type RpcOutcome =
  | { kind: 'value'; value: unknown }
  | { kind: 'stream'; items: AsyncIterable<unknown> }
  | { kind: 'error'; code: string; message: string };

export class RpcRegistry {
  readonly #methods = new Map<string, Entry>();

  register<S extends z.ZodType>(method: string, schema: S, handler: Handler<z.infer<S>>): void {
    this.#methods.set(method, { schema, handler: handler as Handler<unknown> });
  }

  registerStream<S extends z.ZodType>(method: string, schema: S, handler: StreamHandler<z.infer<S>>): void {
    this.#methods.set(method, { schema, stream: handler as StreamHandler<unknown> });
  }

  has(method: string): boolean {
    return this.#methods.has(method);
  }

  isStream(method: string): boolean {
    return this.#methods.get(method)?.stream !== undefined;
  }

  /** Never throws: every failure becomes an error outcome with a stable code. */
  async dispatch(method: string, rawParams: unknown, ctx: RpcContext): Promise<RpcOutcome> {
    const entry = this.#methods.get(method);
    if (!entry)
      return { kind: 'error', code: RPC_ERRORS.unknownMethod, message: `unknown method "${method}"` };
    let params: unknown;
    try {
      params = validate(entry.schema, rawParams ?? {});
    } catch (err) {
      return { kind: 'error', code: RPC_ERRORS.badRequest, message: (err as Error).message };
    }
    try {
      if (entry.stream) return { kind: 'stream', items: entry.stream(params, ctx) };
      const value = await entry.handler!(params, ctx);
      return { kind: 'value', value: value ?? null };
    } catch (err) {
      return toErrorOutcome(err);
    }
  }
}

export function toErrorOutcome(err: unknown): { kind: 'error'; code: string; message: string } {
  if (err instanceof RpcFailure) return { kind: 'error', code: err.code, message: err.message };
  if (err instanceof ProtocolError)
    return { kind: 'error', code: RPC_ERRORS.badRequest, message: err.message };
  return { kind: 'error', code: RPC_ERRORS.internal, message: (err as Error)?.message ?? String(err) };
}
