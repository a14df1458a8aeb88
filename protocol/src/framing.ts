/**
 * Length-prefixed framing of codec messages over any byte stream that offers `read`/`write` of whole frames
 * (libp2p's `lpStream` from `@libp2p/utils`). The frame limit is enforced twice: by the length-prefix decoder
 * (so an attacker cannot make us buffer more than `MAX_MESSAGE_BYTES`) and again by `decode`.
 */
import type { z } from 'zod';
import { decode, encode, MAX_MESSAGE_BYTES, ProtocolError } from './codec.ts';

/** The subset of libp2p's `LengthPrefixedStream` that framing needs (kept structural: no libp2p import). */
export interface FrameStream {
  read(options?: { signal?: AbortSignal }): Promise<{ subarray(): Uint8Array } | Uint8Array>;
  write(data: Uint8Array, options?: { signal?: AbortSignal }): Promise<void>;
}

/** Options for libp2p's `lpStream(stream, LP_OPTIONS)` so oversized frames are refused before buffering. */
export const LP_OPTIONS = { maxDataLength: MAX_MESSAGE_BYTES } as const;

export async function readFrame<S extends z.ZodType>(
  stream: FrameStream,
  schema: S,
  options?: { signal?: AbortSignal },
): Promise<z.infer<S>> {
  let frame: { subarray(): Uint8Array } | Uint8Array;
  try {
    frame = await stream.read(options);
  } catch (err) {
    const e = err as Error & { name?: string };
    if (e.name === 'InvalidDataLengthError' || e.name === 'InvalidDataLengthLengthError') {
      throw new ProtocolError('TOO_LARGE', `frame exceeds the limit of ${MAX_MESSAGE_BYTES} bytes`);
    }
    if (e.name === 'InvalidMessageLengthError') {
      throw new ProtocolError('MALFORMED', 'invalid frame length prefix');
    }
    throw err;
  }
  const bytes = frame instanceof Uint8Array ? frame : frame.subarray();
  return decode(schema, bytes);
}

/** Encodes one frame's payload, refusing one larger than `MAX_MESSAGE_BYTES` (the peer would refuse it). */
export function encodeFrame(value: unknown): Uint8Array {
  const bytes = encode(value);
  if (bytes.byteLength > MAX_MESSAGE_BYTES) {
    throw new ProtocolError('TOO_LARGE', `refusing to send a ${bytes.byteLength}-byte message`);
  }
  return bytes;
}

export async function writeFrame(
  stream: FrameStream,
  value: unknown,
  options?: { signal?: AbortSignal },
): Promise<void> {
  await stream.write(encodeFrame(value), options);
}

/** Longest unsigned varint a frame length may take (MAX_MESSAGE_BYTES fits in 4 bytes; 5 leaves room). */
const MAX_PREFIX_BYTES = 5;

/** The unsigned-varint length prefix `lpStream` writes and reads, for a payload of `length` bytes. */
export function framePrefix(length: number): Uint8Array {
  const out: number[] = [];
  let n = length;
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Uint8Array.from(out);
}

/**
 * Splits a byte stream into the frames of the same wire format as `lpStream` (unsigned-varint length, then
 * the payload), fed with chunks as they arrive and returning every frame they complete. It exists for the
 * long-lived streams that carry many small frames (Raft, control sessions): `lpStream.read` awaits once per
 * byte of each length prefix and throws and catches an error for every prefix longer than one byte, which
 * cost more than decoding the frame. A frame's length is checked against the limit as soon as its prefix is
 * read, so a peer cannot make it buffer more than one frame.
 */
export class FrameDecoder {
  readonly #maxFrameBytes: number;
  #parts: Uint8Array[] = [];
  #bytes = 0;
  /** Prefix and payload length of the frame being collected, once its prefix is complete. */
  #frame: { prefix: number; length: number } | null = null;

  constructor(maxFrameBytes = MAX_MESSAGE_BYTES) {
    this.#maxFrameBytes = maxFrameBytes;
  }

  /** Bytes received that belong to frames not yet complete. */
  get buffered(): number {
    return this.#bytes;
  }

  /** Adds a chunk; returns the payloads of the frames now complete, in order. Throws ProtocolError. */
  push(chunk: Uint8Array): Uint8Array[] {
    const frames: Uint8Array[] = [];
    if (chunk.byteLength === 0) return frames;
    this.#parts.push(chunk);
    this.#bytes += chunk.byteLength;
    for (;;) {
      if (this.#frame === null) {
        this.#frame = this.#readPrefix();
        if (this.#frame === null) return frames;
      }
      const total = this.#frame.prefix + this.#frame.length;
      if (this.#bytes < total) return frames;
      frames.push(this.#take(total).subarray(this.#frame.prefix));
      this.#frame = null;
    }
  }

  #readPrefix(): { prefix: number; length: number } | null {
    let length = 0;
    let scale = 1;
    let i = 0;
    for (const part of this.#parts) {
      for (let j = 0; j < part.byteLength; j++) {
        const b = part[j]!;
        length += (b & 0x7f) * scale;
        scale *= 128;
        i++;
        if ((b & 0x80) === 0) {
          if (length > this.#maxFrameBytes)
            throw new ProtocolError('TOO_LARGE', `frame exceeds the limit of ${this.#maxFrameBytes} bytes`);
          return { prefix: i, length };
        }
        if (i >= MAX_PREFIX_BYTES) throw new ProtocolError('MALFORMED', 'invalid frame length prefix');
      }
    }
    return null;
  }

  /** Removes and returns the first `n` buffered bytes (a view when they lie in one chunk). */
  #take(n: number): Uint8Array {
    const first = this.#parts[0]!;
    this.#bytes -= n;
    if (first.byteLength >= n) {
      if (first.byteLength === n) this.#parts.shift();
      else this.#parts[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const part = this.#parts[0]!;
      const use = Math.min(part.byteLength, n - at);
      out.set(part.subarray(0, use), at);
      at += use;
      if (use === part.byteLength) this.#parts.shift();
      else this.#parts[0] = part.subarray(use);
    }
    return out;
  }
}
