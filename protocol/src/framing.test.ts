// The push frame decoder: any split of a stream of frames into chunks yields the same frames, the length
// prefix is the multiformats unsigned varint that lpStream uses, and bad prefixes are refused early.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ProtocolError } from './codec.ts';
import { FrameDecoder, framePrefix } from './framing.ts';

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

describe('frame decoder', () => {
  it('writes the unsigned-varint prefix of the multiformats spec', () => {
    assert.deepEqual([...framePrefix(0)], [0x00]);
    assert.deepEqual([...framePrefix(1)], [0x01]);
    assert.deepEqual([...framePrefix(127)], [0x7f]);
    assert.deepEqual([...framePrefix(128)], [0x80, 0x01]);
    assert.deepEqual([...framePrefix(300)], [0xac, 0x02]);
    assert.deepEqual([...framePrefix(16384)], [0x80, 0x80, 0x01]);
  });

  it('returns the same frames however the bytes are split into chunks', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.uint8Array({ maxLength: 200 }),
            fc.uint8Array({ minLength: 16_380, maxLength: 16_390 }),
          ),
          { maxLength: 12 },
        ),
        fc.array(fc.integer({ min: 1, max: 20_000 }), { minLength: 1, maxLength: 30 }),
        (payloads, cuts) => {
          const wire = concat(payloads.flatMap((p) => [framePrefix(p.byteLength), p]));
          const decoder = new FrameDecoder();
          const got: Uint8Array[] = [];
          let at = 0;
          for (let i = 0; at < wire.byteLength; i++) {
            const n = cuts[i % cuts.length]!;
            got.push(...decoder.push(wire.subarray(at, at + n)));
            at += n;
          }
          assert.deepEqual(
            got.map((g) => [...g]),
            payloads.map((p) => [...p]),
          );
          assert.equal(decoder.buffered, 0);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('refuses a frame over the limit as soon as its prefix arrives, before buffering it', () => {
    const decoder = new FrameDecoder(1000);
    assert.throws(
      () => decoder.push(framePrefix(1001)),
      (e) => e instanceof ProtocolError && e.code === 'TOO_LARGE',
    );
    assert.deepEqual(
      new FrameDecoder(1000).push(concat([framePrefix(1000), new Uint8Array(1000)]))[0]!.byteLength,
      1000,
    );
  });

  it('refuses a length prefix that never ends', () => {
    assert.throws(
      () => new FrameDecoder().push(new Uint8Array([0x80, 0x80, 0x80, 0x80, 0x80, 0x01])),
      (e) => e instanceof ProtocolError && e.code === 'MALFORMED',
    );
    // Incomplete but still possible: waits for more.
    assert.deepEqual(new FrameDecoder().push(new Uint8Array([0x80, 0x80])), []);
  });
});
