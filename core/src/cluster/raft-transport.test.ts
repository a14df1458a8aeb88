// The Raft transport over real libp2p hosts on loopback: messages arrive validated and authenticated, a
// snapshot far larger than one frame arrives whole (chunked), and a peer lying about `from` is cut off.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { Libp2p } from '@libp2p/interface';
import { generateKey, preSharedKey } from '@libp2p/pnet';
import { tcp } from '@libp2p/tcp';
import { lpStream } from '@libp2p/utils';
import { encode, PROTOCOLS, RaftMessageSchema, type RaftWireMessage } from '@meshrun/protocol';
import { createLibp2p } from 'libp2p';
import pino from 'pino';
import { meshrunNoise } from '../node/noise-encrypter.ts';
import { meshrunYamux } from '../node/yamux-muxer.ts';
import { Libp2pRaftTransport } from './raft-transport.ts';

const log = pino({ level: 'silent' });

async function host(psk: Uint8Array): Promise<Libp2p> {
  return createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionProtector: preSharedKey({ psk }),
    connectionEncrypters: [meshrunNoise()],
    streamMuxers: [meshrunYamux()],
  });
}

describe('libp2p raft transport', () => {
  let a: Libp2p;
  let b: Libp2p;
  let ta: Libp2pRaftTransport<RaftWireMessage>;
  let tb: Libp2pRaftTransport<RaftWireMessage>;
  const received: RaftWireMessage[] = [];

  before(async () => {
    const psk = new Uint8Array(95);
    generateKey(psk);
    a = await host(psk);
    b = await host(psk);
    await a.dial(b.getMultiaddrs()[0]!);
    ta = new Libp2pRaftTransport(a, RaftMessageSchema, log);
    tb = new Libp2pRaftTransport(b, RaftMessageSchema, log);
    await ta.start();
    await tb.start();
    tb.onMessage((m) => received.push(m));
  });
  after(async () => {
    await ta.stop();
    await tb.stop();
    await a.stop();
    await b.stop();
  });

  const waitFor = async (pred: () => boolean, ms = 10_000) => {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) throw new Error('timed out');
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  it('delivers messages in order', async () => {
    const from = a.peerId.toString();
    const to = b.peerId.toString();
    for (let i = 0; i < 100; i++)
      ta.send({ type: 'heartbeat', from, to, term: i, commit: i, ctx: new Uint8Array([i]) });
    await waitFor(() => received.length >= 100);
    assert.deepEqual(
      received.slice(0, 100).map((m) => m.term),
      Array.from({ length: 100 }, (_, i) => i),
    );
  });

  it('a 12 MiB snapshot arrives whole, in chunks', async () => {
    received.length = 0;
    const data = randomBytes(12 * 1024 * 1024);
    ta.send({
      type: 'snapshot',
      from: a.peerId.toString(),
      to: b.peerId.toString(),
      term: 3,
      snapshot: { index: 42, term: 3, conf: { voters: ['x'], learners: [] }, data: new Uint8Array(data) },
    });
    await waitFor(() => received.length === 1, 30_000);
    const m = received[0]!;
    assert.equal(m.type, 'snapshot');
    assert.ok(m.type === 'snapshot' && Buffer.from(m.snapshot.data).equals(data));
  });

  it('a peer claiming another sender is refused and its stream closed', async () => {
    received.length = 0;
    const stream = await a.dialProtocol(b.peerId, PROTOCOLS.raft);
    const lp = lpStream(stream);
    await lp.write(encode({ type: 'timeoutNow', from: 'someone-else', to: b.peerId.toString(), term: 9 }));
    await lp.write(
      encode({ type: 'timeoutNow', from: a.peerId.toString(), to: b.peerId.toString(), term: 9 }),
    );
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(received.length, 0, 'nothing delivered after a forged sender');
    await stream.close().catch(() => {});
  });

  it('chunks out of order are refused', async () => {
    received.length = 0;
    const stream = await a.dialProtocol(b.peerId, PROTOCOLS.raft);
    const lp = lpStream(stream);
    await lp.write(encode({ chunk: { id: 1, seq: 1, total: 2, data: new Uint8Array(10) } }));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(received.length, 0);
    await stream.close().catch(() => {});
  });
});
