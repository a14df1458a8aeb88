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
import { decode, encode, PROTOCOLS, ProtocolError, RAFT_LIMITS, RaftChunkSchema } from '@meshrun/protocol';
import type { Logger } from 'pino';
import { z } from 'zod';
import { drained, readFrames, sendFrames } from '../node/frame-stream.ts';

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
  #chunkIds = 0;
  dropped = 0;

  readonly #frameSchema: z.ZodType<M | { chunk: unknown }>;

  constructor(libp2p: Libp2p, schema: z.ZodType<M>, log: Logger) {
    this.#libp2p = libp2p;
    this.#schema = schema;
    this.#frameSchema = z.union([RaftChunkSchema, schema]) as z.ZodType<M | { chunk: unknown }>;
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
      out = { queue: [], stream: null, sending: false, failures: 0, retryAt: 0 };
      this.#out.set(msg.to, out);
    }
    if (out.queue.length >= MAX_QUEUED_PER_PEER || Date.now() < out.retryAt) {
      this.dropped += 1;
      return;
    }
    const bytes = encode(msg);
    if (bytes.byteLength <= RAFT_LIMITS.chunkBytes) out.queue.push(bytes);
    else if (bytes.byteLength > RAFT_LIMITS.maxSnapshotBytes) {
      this.#log.error(
        { to: msg.to, bytes: bytes.byteLength },
        'raft message larger than the snapshot limit dropped',
      );
      this.dropped += 1;
      return;
    } else {
      // Too big for one frame (a large snapshot): send it in order as chunks on the same stream.
      const id = ++this.#chunkIds;
      const total = Math.ceil(bytes.byteLength / RAFT_LIMITS.chunkBytes);
      for (let seq = 0; seq < total; seq++) {
        const data = bytes.subarray(seq * RAFT_LIMITS.chunkBytes, (seq + 1) * RAFT_LIMITS.chunkBytes);
        out.queue.push(encode({ chunk: { id, seq, total, data } }));
      }
    }
    if (!out.sending) void this.#flush(msg.to, out);
  }

  async #flush(peer: string, out: Outbound): Promise<void> {
    out.sending = true;
    try {
      while (out.queue.length > 0 && !this.#stopped) {
        let stream = out.stream;
        if (!stream) {
          const opened = await this.#libp2p.dialProtocol(peerIdFromString(peer), PROTOCOLS.raft, {
            signal: AbortSignal.timeout(3000),
          });
          stream = opened;
          out.stream = opened;
          opened.addEventListener('close', () => {
            if (out.stream === opened) out.stream = null;
          });
        }
        const batch = out.queue.splice(0, MAX_BATCH);
        if (!sendFrames(stream, batch)) await drained(stream);
        out.failures = 0;
      }
    } catch (err) {
      out.failures += 1;
      this.dropped += out.queue.length;
      out.queue.length = 0;
      out.stream?.abort(err as Error);
      out.stream = null;
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
    const self = this.#libp2p.peerId.toString();
    // Reassembly of a chunked message: in order, one at a time per stream, bounded in size.
    let pending: { id: number; total: number; parts: Uint8Array[]; bytes: number } | null = null;
    const onFrame = (bytes: Uint8Array) => {
      if (this.#stopped) return;
      const frame = decode(this.#frameSchema, bytes);
      let msg: M;
      if ('chunk' in frame) {
        const c = (frame as { chunk: { id: number; seq: number; total: number; data: Uint8Array } }).chunk;
        if (c.seq === 0) pending = { id: c.id, total: c.total, parts: [], bytes: 0 };
        if (!pending || pending.id !== c.id || pending.total !== c.total || c.seq !== pending.parts.length) {
          throw new ProtocolError('INVALID', 'raft chunk out of order');
        }
        pending.parts.push(c.data);
        pending.bytes += c.data.byteLength;
        if (pending.bytes > RAFT_LIMITS.maxSnapshotBytes)
          throw new ProtocolError('TOO_LARGE', 'chunked raft message too large');
        if (pending.parts.length < pending.total) return;
        msg = decode(this.#schema, Buffer.concat(pending.parts), RAFT_LIMITS.maxSnapshotBytes) as M;
        pending = null;
      } else {
        msg = frame as M;
      }
      if (msg.from !== from)
        throw new ProtocolError(
          'INVALID',
          `raft message claims to be from ${msg.from} but came from ${from}`,
        );
      if (msg.to !== self) return;
      this.#handler?.(msg);
    };
    try {
      await readFrames(stream, onFrame);
      await stream.close().catch(() => {});
    } catch (err) {
      const e = err as Error;
      if (e instanceof ProtocolError) this.#log.warn({ peer: from, err: e.message }, 'rejected raft stream');
      stream.abort(e);
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const out of this.#out.values()) out.stream?.abort(new Error('transport stopped'));
    await this.#libp2p.unhandle(PROTOCOLS.raft).catch(() => {});
  }
}
