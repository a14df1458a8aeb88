/**
 * Raft messages over libp2p: one long-lived outbound stream per peer on `/meshrun/raft/1.0.0`, written in
 * batches of length-prefixed CBOR frames. Raft tolerates loss, so a failed stream drops what was queued for
 * that peer (the leader retransmits) and is re-opened with backoff on the next send.
 *
 * Every inbound frame is validated against the wire schema and must claim to come from the peer that the
 * Noise handshake authenticated: one node cannot speak for another.
 */
import type { Connection, Libp2p, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { lpStream } from '@libp2p/utils';
import { encode, LP_OPTIONS, PROTOCOLS, ProtocolError, readFrame } from '@meshrun/protocol';
import type { Logger } from 'pino';
import type { z } from 'zod';

/** Messages waiting for one peer; past this, new ones are dropped (Raft retransmits). */
export const MAX_QUEUED_PER_PEER = 4096;
/** Frames written in one batch. */
export const MAX_BATCH = 256;
/** Back-off between attempts to open a stream to an unreachable peer. */
export const REOPEN_BACKOFF = { initialMs: 100, maxMs: 5000 } as const;

export interface WireMessage {
  from: string;
  to: string;
}

interface Outbound {
  queue: Uint8Array[];
  stream: Stream | null;
  lp: ReturnType<typeof lpStream> | null;
  sending: boolean;
  failures: number;
  retryAt: number;
}

export class Libp2pRaftTransport<M extends WireMessage> {
  readonly #libp2p: Libp2p;
  readonly #schema: z.ZodType<M>;
  readonly #log: Logger;
  readonly #out = new Map<string, Outbound>();
  #handler: ((msg: M) => void) | null = null;
  #stopped = false;
  dropped = 0;

  constructor(libp2p: Libp2p, schema: z.ZodType<M>, log: Logger) {
    this.#libp2p = libp2p;
    this.#schema = schema;
    this.#log = log;
  }

  async start(): Promise<void> {
    await this.#libp2p.handle(PROTOCOLS.raft, (stream, connection) => this.#onStream(stream, connection), {
      maxInboundStreams: 32,
    });
  }

  onMessage(handler: (msg: M) => void): void {
    this.#handler = handler;
  }

  send(msg: M): void {
    if (this.#stopped) return;
    let out = this.#out.get(msg.to);
    if (!out) {
      out = { queue: [], stream: null, lp: null, sending: false, failures: 0, retryAt: 0 };
      this.#out.set(msg.to, out);
    }
    if (out.queue.length >= MAX_QUEUED_PER_PEER || Date.now() < out.retryAt) {
      this.dropped += 1;
      return;
    }
    out.queue.push(encode(msg));
    if (!out.sending) void this.#flush(msg.to, out);
  }

  async #flush(peer: string, out: Outbound): Promise<void> {
    out.sending = true;
    try {
      while (out.queue.length > 0 && !this.#stopped) {
        if (!out.lp) {
          const stream = await this.#libp2p.dialProtocol(peerIdFromString(peer), PROTOCOLS.raft, {
            signal: AbortSignal.timeout(3000),
          });
          out.stream = stream;
          out.lp = lpStream(stream, LP_OPTIONS);
          stream.addEventListener('close', () => {
            if (out.stream === stream) {
              out.stream = null;
              out.lp = null;
            }
          });
        }
        const batch = out.queue.splice(0, MAX_BATCH);
        await out.lp.writeV(batch);
        out.failures = 0;
      }
    } catch (err) {
      out.failures += 1;
      this.dropped += out.queue.length;
      out.queue.length = 0;
      out.stream?.abort(err as Error);
      out.stream = null;
      out.lp = null;
      out.retryAt =
        Date.now() +
        Math.min(REOPEN_BACKOFF.maxMs, REOPEN_BACKOFF.initialMs * 2 ** Math.min(out.failures, 8));
      this.#log.debug({ peer, err: (err as Error).message }, 'raft stream failed');
    } finally {
      out.sending = false;
    }
  }

  async #onStream(stream: Stream, connection: Connection): Promise<void> {
    const from = connection.remotePeer.toString();
    const lp = lpStream(stream, LP_OPTIONS);
    try {
      while (!this.#stopped) {
        const msg = await readFrame(lp, this.#schema);
        if (msg.from !== from)
          throw new ProtocolError(
            'INVALID',
            `raft message claims to be from ${msg.from} but came from ${from}`,
          );
        if (msg.to !== this.#libp2p.peerId.toString()) continue;
        this.#handler?.(msg);
      }
    } catch (err) {
      const e = err as Error;
      if (e instanceof ProtocolError) {
        this.#log.warn({ peer: from, err: e.message }, 'rejected raft stream');
        stream.abort(e);
      } else {
        stream.abort(e);
      }
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const out of this.#out.values()) out.stream?.abort(new Error('transport stopped'));
    await this.#libp2p.unhandle(PROTOCOLS.raft).catch(() => {});
  }
}
