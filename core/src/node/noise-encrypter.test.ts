// The non-throwing noise length decoder: inside libp2p's LengthPrefixedDecoder it splits any chunking of a
// stream of noise frames exactly as noise's own decoder does, and every connection of a host built with
// meshrunNoise() gets it and carries traffic.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import type { Libp2p } from '@libp2p/interface';
import { LengthPrefixedDecoder } from '@libp2p/utils';
import fc from 'fast-check';
import { createLibp2p } from 'libp2p';
import { Uint8ArrayList } from 'uint8arraylist';
import { meshrunStack } from './host-stack.ts';
import { noiseConnectionsTuned, noiseFrameLength } from './noise-encrypter.ts';

describe('noise length decoder', () => {
  it('splits frames like a throwing decoder, however the bytes are chunked', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 600 }), { maxLength: 10 }),
        fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 20 }),
        fc.boolean(),
        (frames, cuts, asList) => {
          const wire = Buffer.concat(
            frames.flatMap((f) => [Buffer.from([f.length >> 8, f.length & 255]), f]),
          );
          const decoder = new LengthPrefixedDecoder({
            lengthDecoder: noiseFrameLength,
            encodingLength: () => 2,
          });
          const got: Uint8Array[] = [];
          for (let at = 0, i = 0; at < wire.byteLength; i++) {
            const chunk = wire.subarray(at, at + cuts[i % cuts.length]!);
            at += chunk.byteLength;
            for (const f of decoder.decode(asList ? new Uint8ArrayList(chunk) : chunk))
              got.push(f.subarray());
          }
          assert.deepEqual(
            got.map((g) => Buffer.from(g).toString('hex')),
            frames.map((f) => Buffer.from(f).toString('hex')),
          );
        },
      ),
      { numRuns: 300 },
    );
  });

  describe('on real hosts', () => {
    const psk = new TextEncoder().encode(
      `/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString('hex')}`,
    );
    const hosts: Libp2p[] = [];
    after(async () => {
      await Promise.all(hosts.map((h) => h.stop()));
    });

    it('both ends of a connection get it, and it carries data', async () => {
      const host = async (listen: string[]) => {
        const h = await createLibp2p({
          addresses: { listen },
          ...meshrunStack(psk),
        });
        hosts.push(h);
        return h;
      };
      const server = await host(['/ip4/127.0.0.1/tcp/0']);
      const client = await host([]);
      await server.handle('/meshrun/test/echo/1.0.0', async (stream) => {
        for await (const chunk of stream) stream.send(chunk);
        await stream.close();
      });
      const before = noiseConnectionsTuned();
      const stream = await client.dialProtocol(server.getMultiaddrs()[0]!, '/meshrun/test/echo/1.0.0');
      assert.equal(noiseConnectionsTuned() - before, 2, 'the dialer and the listener side');
      const data = randomBytes(200_000); // several noise frames, read in many chunks
      stream.send(data);
      const back: Uint8Array[] = [];
      for await (const chunk of stream) {
        back.push(chunk.subarray());
        if (back.reduce((n, b) => n + b.byteLength, 0) >= data.byteLength) break;
      }
      assert.ok(Buffer.concat(back).equals(data));
    });
  });
});
