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
