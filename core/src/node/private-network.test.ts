// The cluster-key protector: same keystream as libp2p's pnet (so a mixed cluster still talks), any chunking
// of the stream gives the same bytes, and many connections with large messages do not exhaust anything.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { generateKey, preSharedKey } from '@libp2p/pnet';
import { tcp } from '@libp2p/tcp';
import { lpStream } from '@libp2p/utils';
import { createLibp2p } from 'libp2p';
import xsalsa20Wasm from 'xsalsa20';
import { clusterKeyProtector, XorStream } from './private-network.ts';

const host = (protector: ReturnType<typeof clusterKeyProtector>) =>
  createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionProtector: protector,
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    // All test peers share 127.0.0.1: libp2p's default of 5 inbound connections/s per IP would refuse some.
    connectionManager: { inboundConnectionThreshold: 100 },
  });

describe('cluster-key protector', () => {
  it('produces the same keystream as the xsalsa20 package, whatever the chunking', () => {
    const key = randomBytes(32);
    const nonce = randomBytes(24);
    const data = randomBytes(300_000);
    const reference = Buffer.from(xsalsa20Wasm(nonce, key).update(data));
    // Large chunks, chunks around the size where XorStream switches method, and small ones.
    for (const largest of [70_000, 1500, 100]) {
      const ours = new XorStream(key, nonce);
      const parts: Uint8Array[] = [];
      for (let i = 0; i < data.length; ) {
        const n = 1 + ((i * 7919) % largest);
        parts.push(ours.update(data.subarray(i, i + n)));
        i += n;
      }
      assert.ok(Buffer.concat(parts).equals(reference), `chunks up to ${largest} bytes`);
    }
  });

  it('interoperates with @libp2p/pnet and survives many connections exchanging large messages', async () => {
    const key = new Uint8Array(95);
    generateKey(key);
    const ours = await host(clusterKeyProtector(key));
    const theirs = await createLibp2p({
      addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
      transports: [tcp()],
      connectionProtector: preSharedKey({ psk: key }),
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
    });
    const peers = await Promise.all(Array.from({ length: 6 }, () => host(clusterKeyProtector(key))));
    try {
      await ours.handle('/echo/1', async (stream) => {
        const lp = lpStream(stream, { maxDataLength: 4 * 1024 * 1024 });
        for (;;) {
          const m = await lp.read().catch(() => null);
          if (!m) break;
          await lp.write(m.subarray());
        }
      });
      // An old pnet node and ours understand each other.
      const s0 = await theirs.dialProtocol(ours.getMultiaddrs()[0]!, '/echo/1');
      const lp0 = lpStream(s0, { maxDataLength: 4 * 1024 * 1024 });
      await lp0.write(new Uint8Array([1, 2, 3]));
      assert.deepEqual([...(await lp0.read()).subarray()], [1, 2, 3]);
      await s0.close();
      // A large message, then many small ones alternating across connections (the pattern that crashed pnet).
      const streams = await Promise.all(
        peers.map((p) => p.dialProtocol(ours.getMultiaddrs()[0]!, '/echo/1')),
      );
      const lps = streams.map((s) => lpStream(s, { maxDataLength: 4 * 1024 * 1024 }));
      const big = randomBytes(2 * 1024 * 1024);
      await lps[0]!.write(big);
      assert.ok(Buffer.from((await lps[0]!.read()).subarray()).equals(big));
      for (let i = 0; i < 1500; i++) {
        const lp = lps[i % lps.length]!;
        await lp.write(new Uint8Array([i & 255]));
        assert.equal((await lp.read()).subarray()[0], i & 255);
      }
      for (const s of streams) await s.close();
    } finally {
      await Promise.all([ours.stop(), theirs.stop(), ...peers.map((p) => p.stop())]);
    }
  });
});
