/**
 * The one codec for everything meshrun sends between processes: CBOR (via `cborg`), which carries
 * binary (Uint8Array) natively, so Raft entries and WASM modules need no base64 detour.
 *
 * Every decode goes through a zod schema: a message that does not match is a `ProtocolError`, never an
 * exception from deep inside a handler.
 */
import { decode as cborDecode, encode as cborEncode } from 'cborg';
import { type z, z as zod } from 'zod';

/** Largest single framed message any meshrun protocol accepts (4 MiB). Bigger payloads are chunked. */
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

/** A message that failed to decode, failed validation, or was too large. `code` is stable for callers. */
export class ProtocolError extends Error {
  readonly code: 'TOO_LARGE' | 'MALFORMED' | 'INVALID' | 'UNEXPECTED';
  constructor(code: ProtocolError['code'], message: string) {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
  }
}

export function encode(value: unknown): Uint8Array {
  return cborEncode(value);
}

/** Decode raw bytes without a schema (only for callers that validate right after). */
export function decodeUnchecked(bytes: Uint8Array, maxBytes = MAX_MESSAGE_BYTES): unknown {
  if (bytes.byteLength > maxBytes) {
    throw new ProtocolError(
      'TOO_LARGE',
      `message of ${bytes.byteLength} bytes exceeds the limit of ${maxBytes}`,
    );
  }
  try {
    return cborDecode(bytes, { useMaps: false, rejectDuplicateMapKeys: true });
  } catch (err) {
    throw new ProtocolError('MALFORMED', `not valid CBOR: ${(err as Error).message}`);
  }
}

/** Decode and validate. Throws `ProtocolError` (only) on any problem. */
export function decode<S extends z.ZodType>(
  schema: S,
  bytes: Uint8Array,
  maxBytes = MAX_MESSAGE_BYTES,
): z.infer<S> {
  const raw = decodeUnchecked(bytes, maxBytes);
  return validate(schema, raw);
}

export function validate<S extends z.ZodType>(schema: S, raw: unknown): z.infer<S> {
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    const where = first && first.path.length > 0 ? first.path.join('.') : '(root)';
    throw new ProtocolError(
      'INVALID',
      `invalid message at ${where}: ${first?.message ?? 'does not match schema'}`,
    );
  }
  return parsed.data;
}

/** Schema for a binary field of at most `maxBytes` (typed as plain `Uint8Array`, whatever its buffer). */
export function bytesSchema(maxBytes: number, what = 'value') {
  return zod.custom<Uint8Array>(
    (v) => v instanceof Uint8Array && v.byteLength <= maxBytes,
    `${what} must be binary of at most ${maxBytes} bytes`,
  );
}
