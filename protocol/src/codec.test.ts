import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { decode, encode, MAX_MESSAGE_BYTES, ProtocolError } from './codec.ts';
import { LP_OPTIONS, readFrame, writeFrame } from './framing.ts';
import { fromJsonText, toJsonText } from './json.ts';
import { AdvertisementSchema, AdvertPushSchema } from './node.ts';
import { RpcRequestSchema, RpcResponseSchema } from './rpc.ts';

const schemas = { AdvertisementSchema, AdvertPushSchema, RpcRequestSchema, RpcResponseSchema };

describe('codec', () => {
  it('round-trips values including binary', () => {
    const v = { method: 'nodes', params: { a: [1, 2, 3], b: new Uint8Array([9, 8]) } };
    assert.deepEqual(decode(RpcRequestSchema, encode(v)), v);
  });

  for (const [name, schema] of Object.entries(schemas)) {
    it(`${name}: random garbage is rejected with a ProtocolError, never another exception`, () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
          try {
            decode(schema, bytes);
          } catch (err) {
            assert.ok(
              err instanceof ProtocolError,
              `unexpected ${(err as Error).name}: ${(err as Error).message}`,
            );
          }
        }),
        { numRuns: 2000 },
      );
    });

    it(`${name}: well-formed CBOR of the wrong shape is INVALID`, () => {
      fc.assert(
        fc.property(fc.anything(), (value) => {
          let bytes: Uint8Array;
          try {
            bytes = encode(value);
          } catch {
            return; // values CBOR cannot carry (e.g. undefined at top level) are not a wire concern
          }
          try {
            decode(schema, bytes);
          } catch (err) {
            assert.ok(err instanceof ProtocolError);
            assert.ok(['INVALID', 'MALFORMED'].includes((err as ProtocolError).code));
          }
        }),
        { numRuns: 500 },
      );
    });
  }

  it('truncated messages are MALFORMED', () => {
    const bytes = encode({ method: 'nodes', params: { x: 'y'.repeat(100) } });
    for (let cut = 1; cut < bytes.length; cut += 7) {
      assert.throws(
        () => decode(RpcRequestSchema, bytes.subarray(0, cut)),
        (e: ProtocolError) => e.code === 'MALFORMED',
      );
    }
  });

  it('oversized messages are TOO_LARGE before any parsing', () => {
    const big = new Uint8Array(MAX_MESSAGE_BYTES + 1);
    assert.throws(
      () => decode(RpcRequestSchema, big),
      (e: ProtocolError) => e.code === 'TOO_LARGE',
    );
  });

  it('error messages name the offending field', () => {
    assert.throws(
      () => decode(RpcRequestSchema, encode({ method: 42 })),
      (e: ProtocolError) => e.code === 'INVALID' && /method/.test(e.message),
    );
  });
});

describe('framing', () => {
  it('maps libp2p length errors to TOO_LARGE / MALFORMED', async () => {
    const tooLong = {
      read: async () => Promise.reject(Object.assign(new Error('x'), { name: 'InvalidDataLengthError' })),
      write: async () => {},
    };
    await assert.rejects(readFrame(tooLong, RpcRequestSchema), (e: ProtocolError) => e.code === 'TOO_LARGE');
    const badLen = {
      read: async () => Promise.reject(Object.assign(new Error('x'), { name: 'InvalidMessageLengthError' })),
      write: async () => {},
    };
    await assert.rejects(readFrame(badLen, RpcRequestSchema), (e: ProtocolError) => e.code === 'MALFORMED');
  });

  it('refuses to send a message over the limit', async () => {
    const sink = { read: async () => new Uint8Array(), write: async () => {} };
    await assert.rejects(
      writeFrame(sink, { blob: randomBytes(MAX_MESSAGE_BYTES) }),
      (e: ProtocolError) => e.code === 'TOO_LARGE',
    );
    assert.equal(LP_OPTIONS.maxDataLength, MAX_MESSAGE_BYTES);
  });
});

describe('json form', () => {
  it('carries binary as $bytes', () => {
    const v = { a: new Uint8Array([1, 2, 255]), b: 'x' };
    assert.deepEqual(fromJsonText(toJsonText(v)), v);
  });
});
