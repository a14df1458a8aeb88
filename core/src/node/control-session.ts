/**
 * Control sessions: many unary control calls multiplexed on one long-lived libp2p stream
 * (`PROTOCOLS.controlSession`). Opening a stream per call (the `control` protocol) costs a round of stream
 * set-up and tear-down each time, which dominated the latency of small calls; a session pays it once.
 *
 * Wire: length-prefixed frames. The client sends `{ id, method, params, auth }`; the server answers
 * `{ id, ok, result | error }` in completion order. Every frame is validated by protocol/'s schemas and
 * bounded by the frame limit. Streaming methods (log follow) are refused here: they keep their own stream.
 * The server runs at most `SESSION_LIMITS.maxInFlight` calls of one session at once; requests past that
 * wait and the stream is paused (yamux stops granting the client window) until calls finish, so a client
 * cannot queue unbounded work (backpressure, not errors). Frames are read as they arrive (frame-stream.ts).
 */
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface';
import {
  decode,
  encodeFrame,
  PROTOCOLS,
  ProtocolError,
  RPC_ERRORS,
  SessionRequestSchema,
  SessionResponseSchema,
} from '@meshrun/protocol';
import type { Multiaddr } from '@multiformats/multiaddr';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { drained, readFrames, sendFrames } from './frame-stream.ts';
import type { RpcContext, RpcRegistry } from './rpc-registry.ts';

export const SESSION_LIMITS = {
  /** Calls of one session running at once on the server; more wait, with the stream paused. */
  maxInFlight: 1024,
  /** Calls a client keeps waiting on one session; more are refused at once. */
  maxPending: 10_000,
  /** Frames written in one batch. */
  writeBatch: 256,
  /** A client re-opens its stream after this many calls in a row timed out with no answer at all. */
  timeoutsBeforeReset: 2,
} as const;

/** Thrown by a session call whose answer did not come in time (the call may still run on the server). */
export class SessionTimeoutError extends Error {
  constructor(method: string, ms: number) {
    super(`control call ${method} timed out after ${ms} ms`);
    this.name = 'TimeoutError';
  }
}

/** Writes frames in order, batching those queued while a write is in progress. */
class FrameWriter {
  readonly #stream: Stream;
  readonly #queue: Uint8Array[] = [];
  #writing = false;
  #failed: Error | null = null;
  readonly #onError: (err: Error) => void;

  constructor(stream: Stream, onError: (err: Error) => void) {
    this.#stream = stream;
    this.#onError = onError;
  }

  /** Queues one frame; throws if the value encodes larger than a frame may be. */
  push(value: unknown): void {
    if (this.#failed) throw this.#failed;
    this.#queue.push(encodeFrame(value));
    if (!this.#writing) void this.#flush();
  }

  async #flush(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0)
        if (!sendFrames(this.#stream, this.#queue.splice(0, SESSION_LIMITS.writeBatch)))
          await drained(this.#stream);
    } catch (err) {
      this.#failed = err as Error;
      this.#queue.length = 0;
      this.#onError(err as Error);
    } finally {
      this.#writing = false;
    }
  }
}

/** Server side: serves one inbound session stream until it closes. */
export async function serveControlSession(
  stream: Stream,
  connection: Connection,
  rpc: RpcRegistry,
  log: Logger,
): Promise<void> {
  const remotePeer = connection.remotePeer.toString();
  const closed = new AbortController();
  const writer = new FrameWriter(stream, (err) => {
    closed.abort(err);
    stream.abort(err);
  });
  let inFlight = 0;
  /** Requests read while `maxInFlight` calls were running; the stream is paused while any wait here. */
  const backlog: z.infer<typeof SessionRequestSchema>[] = [];
  let paused = false;
  const answer = (id: number, outcome: Awaited<ReturnType<RpcRegistry['dispatch']>>) => {
    if (closed.signal.aborted) return;
    const frame =
      outcome.kind === 'value'
        ? { id, ok: true, result: outcome.value }
        : outcome.kind === 'error'
          ? { id, ok: false, error: { code: outcome.code, message: outcome.message } }
          : { id, ok: false, error: { code: RPC_ERRORS.internal, message: 'streaming answer on a session' } };
    try {
      writer.push(frame);
    } catch (err) {
      // An answer too large for a frame: say so instead of leaving the caller waiting.
      writer.push({ id, ok: false, error: { code: RPC_ERRORS.internal, message: (err as Error).message } });
    }
  };
  const start = (req: z.infer<typeof SessionRequestSchema>) => {
    if (rpc.isStream(req.method)) {
      answer(req.id, {
        kind: 'error',
        code: RPC_ERRORS.badRequest,
        message: `${req.method} streams its answer: call it on ${PROTOCOLS.control}`,
      });
      return;
    }
    const ctx: RpcContext = { via: 'p2p', remotePeer, auth: req.auth, signal: closed.signal };
    inFlight += 1;
    void rpc.dispatch(req.method, req.params, ctx).then((outcome) => {
      inFlight -= 1;
      answer(req.id, outcome);
      startWaiting();
    });
  };
  const startWaiting = () => {
    while (backlog.length > 0 && inFlight < SESSION_LIMITS.maxInFlight) start(backlog.shift()!);
    if (paused && backlog.length === 0 && !closed.signal.aborted) {
      paused = false;
      try {
        stream.resume();
      } catch {
        // closing meanwhile: nothing more to read
      }
    }
  };
  try {
    await readFrames(stream, (bytes) => {
      const req = decode(SessionRequestSchema, bytes);
      if (backlog.length === 0 && inFlight < SESSION_LIMITS.maxInFlight) {
        start(req);
        return;
      }
      backlog.push(req);
      if (!paused) {
        paused = true;
        stream.pause();
      }
    });
    // The client closing its side is the normal end of a session.
    closed.abort(new Error('session ended'));
    await stream.close().catch(() => stream.abort(new Error('session ended')));
  } catch (err) {
    const e = err as Error;
    if (e instanceof ProtocolError)
      log.warn({ peer: remotePeer, err: e.message }, 'rejected control session');
    closed.abort(e);
    stream.abort(e);
  }
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** An error answer from the remote method, on a session or a per-call control stream. */
export class RemoteRpcError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'RemoteRpcError';
    this.code = code;
  }
}

/** Client side: one session to one peer, opened on first use and re-opened after it breaks. */
export class ControlSessionClient {
  readonly #libp2p: Libp2p;
  readonly #target: Multiaddr | PeerId;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #open: Promise<{ stream: Stream; writer: FrameWriter }> | null = null;
  /** The stream the current session runs on, once open. */
  #stream: Stream | null = null;
  #closed = false;
  /** Calls timed out since the last answer on the current stream. */
  #silentTimeouts = 0;

  constructor(libp2p: Libp2p, target: Multiaddr | PeerId) {
    this.#libp2p = libp2p;
    this.#target = target;
  }

  get pending(): number {
    return this.#pending.size;
  }

  async call(
    method: string,
    params: unknown,
    opts: { timeoutMs?: number; auth?: unknown } = {},
  ): Promise<unknown> {
    if (this.#closed) throw new Error('control session closed');
    if (this.#pending.size >= SESSION_LIMITS.maxPending)
      throw new Error(`more than ${SESSION_LIMITS.maxPending} calls waiting on one control session`);
    const timeoutMs = opts.timeoutMs ?? 30_000;
    let { stream, writer } = await this.#ensureOpen(timeoutMs);
    // The session broke while we waited for it: take the new one.
    if (stream !== this.#stream) ({ stream, writer } = await this.#ensureOpen(timeoutMs));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new SessionTimeoutError(method, timeoutMs));
        // Calls keep timing out with no answer in between: the stream may be stuck (a peer that stopped
        // reading, a half-open connection). Start over on a new one rather than time out forever.
        if (++this.#silentTimeouts >= SESSION_LIMITS.timeoutsBeforeReset && this.#stream === stream)
          this.#broken(stream, new Error(`${this.#silentTimeouts} calls timed out without an answer`));
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      try {
        writer.push({ id, method, params, auth: opts.auth });
      } catch (err) {
        clearTimeout(timer);
        this.#pending.delete(id);
        reject(err as Error);
      }
    });
  }

  #ensureOpen(timeoutMs: number): Promise<{ stream: Stream; writer: FrameWriter }> {
    this.#open ??= (async () => {
      const stream = await this.#libp2p.dialProtocol(this.#target, PROTOCOLS.controlSession, {
        signal: AbortSignal.timeout(Math.min(timeoutMs, 10_000)),
      });
      const writer = new FrameWriter(stream, (err) => this.#broken(stream, err));
      this.#stream = stream;
      void this.#readLoop(stream);
      return { stream, writer };
    })().catch((err) => {
      this.#open = null;
      throw err;
    });
    return this.#open;
  }

  async #readLoop(stream: Stream): Promise<void> {
    try {
      await readFrames(stream, (bytes) => {
        const res = decode(SessionResponseSchema, bytes);
        this.#silentTimeouts = 0;
        const p = this.#pending.get(res.id);
        if (!p) return; // timed out meanwhile
        this.#pending.delete(res.id);
        clearTimeout(p.timer);
        if (res.ok) p.resolve(res.result);
        else p.reject(new RemoteRpcError(res.error.code, res.error.message));
      });
      this.#broken(stream, new Error('the peer closed the session'));
    } catch (err) {
      this.#broken(stream, err as Error);
    }
  }

  /** The stream failed or closed: every call waiting on it fails; the next call opens a new stream. */
  #broken(stream: Stream, err: Error): void {
    stream.abort(err);
    if (this.#stream !== stream) return; // an older session, already handled
    this.#stream = null;
    this.#silentTimeouts = 0;
    this.#open = null;
    const reason = new Error(`control session to the peer ended: ${err.message}`);
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(reason);
    }
    this.#pending.clear();
  }

  async close(): Promise<void> {
    this.#closed = true;
    const open = await this.#open?.catch(() => null);
    if (open) await open.stream.close().catch(() => open.stream.abort(new Error('closed')));
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error('control session closed'));
    }
    this.#pending.clear();
  }
}
