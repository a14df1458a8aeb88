// The yamux window-update rule on real libp2p hosts (TCP + cluster key + Noise + Yamux) through a byte-counting
// TCP relay on loopback: a reader of small messages sends (almost) nothing back, and bulk transfers far larger
// than the window still arrive whole and in order, so flow control still works.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type Server, Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { Libp2p, Stream } from '@libp2p/interface';
import { multiaddr } from '@multiformats/multiaddr';
import { createLibp2p } from 'libp2p';
import { meshrunStack } from './host-stack.ts';

const PROTOCOL = '/meshrun/test/yamux-window/1.0.0';
const psk = new TextEncoder().encode(`/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString('hex')}`);
const host = (listen: string[]) =>
  createLibp2p({
    addresses: { listen },
    ...meshrunStack(psk),
  });

/** Relays one TCP connection to `port` and counts the bytes flowing back to the dialer. */
function countingRelay(port: number): Promise<{ server: Server; port: number; bytesBack: () => number }> {
  let back = 0;
  const server = createServer((inbound) => {
    const outbound = new Socket();
    outbound.connect(port, '127.0.0.1');
    inbound.pipe(outbound);
    outbound.on('data', (d: Buffer) => {
      back += d.byteLength;
    });
    outbound.pipe(inbound);
    inbound.on('error', () => outbound.destroy());
    outbound.on('error', () => inbound.destroy());
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      resolve({ server, port: typeof addr === 'object' && addr ? addr.port : 0, bytesBack: () => back });
    }),
  );
}

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('yamux window updates', () => {
  let sender: Libp2p;
  let receiver: Libp2p;
  let relay: Awaited<ReturnType<typeof countingRelay>>;
  let received: Uint8Array[] = [];

  before(async () => {
    receiver = await host(['/ip4/127.0.0.1/tcp/0']);
    sender = await host([]);
    await receiver.handle(PROTOCOL, async (stream: Stream) => {
      for await (const chunk of stream) received.push(chunk.subarray());
    });
    const port = Number(receiver.getMultiaddrs()[0]!.toString().split('/')[4]);
    relay = await countingRelay(port);
  });

  after(async () => {
    await sender?.stop();
    await receiver?.stop();
    relay?.server.close();
  });

  it('a reader of small messages grants no window until half of it is used', async () => {
    const stream = await sender.dialProtocol(
      multiaddr(`/ip4/127.0.0.1/tcp/${relay.port}/p2p/${receiver.peerId}`),
      PROTOCOL,
    );
    received = [];
    await until(() => relay.bytesBack() > 0); // handshakes done
    await new Promise((r) => setTimeout(r, 200));
    const before = relay.bytesBack();
    // 200 messages of 100 bytes, each delivered before the next: 20 KB, well under half the 256 KiB window.
    for (let i = 0; i < 200; i++) {
      stream.send(new Uint8Array(100).fill(i));
      await until(() => received.reduce((n, b) => n + b.byteLength, 0) >= (i + 1) * 100);
    }
    await new Promise((r) => setTimeout(r, 100));
    // One window update per message (libp2p-yamux's own rule) would send 200 encrypted frames of 30 bytes back.
    assert.ok(relay.bytesBack() - before < 200, `${relay.bytesBack() - before} bytes came back`);
    await stream.close();
  });

  it('a transfer many windows long arrives whole and in order', async () => {
    const stream = await sender.dialProtocol(
      multiaddr(`/ip4/127.0.0.1/tcp/${relay.port}/p2p/${receiver.peerId}`),
      PROTOCOL,
    );
    received = [];
    const data = randomBytes(3 * 1024 * 1024);
    for (let off = 0; off < data.byteLength; off += 16 * 1024) {
      if (!stream.send(data.subarray(off, off + 16 * 1024)))
        await new Promise((r) => stream.addEventListener('drain', r, { once: true }));
    }
    await until(() => received.reduce((n, b) => n + b.byteLength, 0) >= data.byteLength);
    assert.ok(Buffer.concat(received).equals(data));
    await stream.close();
  });
});
