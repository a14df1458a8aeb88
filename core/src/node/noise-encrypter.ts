/**
 * The connection encrypter of every meshrun libp2p host: `@chainsafe/libp2p-noise`, with a length decoder
 * that does not throw.
 *
 * Noise frames carry a 2-byte length. libp2p-noise splits the decrypted-connection byte stream with
 * `LengthPrefixedDecoder`, whose loop learns that it has consumed every complete frame by catching the
 * RangeError that noise's `uint16BEDecode` throws on fewer than 2 buffered bytes. That happens once per chunk
 * read from every connection, and building the error (its stack trace) was 5 % of a Raft leader's CPU.
 *
 * The decoder here returns 65535 instead of throwing when fewer than 2 bytes are buffered: the loop then
 * sees that a frame of that length is not complete yet and waits, exactly as it does after the RangeError.
 * It is set on the `decoder` of the encrypted stream noise returns (not part of its typed API);
 * noise-encrypter.test.ts checks that every connection of a host gets it and still carries data.
 */
import { noise } from '@chainsafe/libp2p-noise';
import type { SecuredConnection } from '@libp2p/interface';
import type { Uint8ArrayList } from 'uint8arraylist';

/** The largest noise frame: what the decoder is told to wait for while it has no complete length. */
const WAIT_FOR_MORE = 0xffff;

/** noise's 2-byte big-endian frame length, without throwing when it is not all there yet. */
export function noiseFrameLength(data: Uint8Array | Uint8ArrayList): number {
  if (data.length < 2) return WAIT_FOR_MORE;
  if (data instanceof Uint8Array) return (data[0]! << 8) | data[1]!;
  return data.getUint16(0);
}
noiseFrameLength.bytes = 2;

let tuned = 0;

/** How many connections got the length decoder (tests use it to notice an upgrade that moved the field). */
export function noiseConnectionsTuned(): number {
  return tuned;
}

function tune<T extends SecuredConnection<unknown>>(secured: T): T {
  const decoder = (secured.connection as unknown as { decoder?: { lengthDecoder?: unknown } }).decoder;
  if (decoder && typeof decoder.lengthDecoder === 'function') {
    decoder.lengthDecoder = noiseFrameLength;
    tuned += 1;
  }
  return secured;
}

/** The encrypter for `createLibp2p({ connectionEncrypters: [meshrunNoise()] })`. */
export function meshrunNoise(...args: Parameters<typeof noise>): ReturnType<typeof noise> {
  const make = noise(...args);
  return (components) => {
    const encrypter = make(components);
    const inbound = encrypter.secureInbound.bind(encrypter);
    const outbound = encrypter.secureOutbound.bind(encrypter);
    encrypter.secureInbound = async (connection, options) => tune(await inbound(connection, options));
    encrypter.secureOutbound = async (connection, options) => tune(await outbound(connection, options));
    return encrypter;
  };
}
