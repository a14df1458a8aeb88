// Control sessions over real libp2p hosts on loopback (TCP + cluster key + Noise + Yamux): many calls on one
// stream answered by id in completion order, errors, refusals, bad frames, timeouts and re-opening.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { Libp2p } from '@libp2p/interface';
import { lpStream } from '@libp2p/utils';
import { LP_OPTIONS, PROTOCOLS, RPC_ERRORS } from '@meshrun/protocol';
import { createLibp2p } from 'libp2p';
import pino from 'pino';
import { z } from 'zod';
import {
  ControlSessionClient,
  type RemoteRpcError,
  SESSION_LIMITS,
  serveControlSession,
} from './control-session.ts';
import { meshrunStack } from './host-stack.ts';
import { RpcFailure, RpcRegistry } from './rpc-registry.ts';

const psk = new TextEncoder().encode(`/key/swarm/psk/1.0.0/\n/base16/\n${randomBytes(32).toString('hex')}`);
const host = (listen: string[]) =>
  createLibp2p({
    addresses: { listen },
    ...meshrunStack(psk),
  });

describe('control sessions', () => {
  let server: Libp2p;
  let client: Libp2p;
  const rpc = new RpcRegistry();
  let streamsOpened = 0;
  let running = 0;
  let maxRunning = 0;

  before(async () => {
    rpc.register('echo.wait', z.object({ v: z.number(), ms: z.number() }).strict(), async ({ v, ms }) => {
      await new Promise((r) => setTimeout(r, ms));
      return { v };
    });
    rpc.register('count.wait', z.object({ ms: z.number() }).strict(), async ({ ms }) => {
      running += 1;
      maxRunning = Math.max(maxRunning, running);
      await new Promise((r) => setTimeout(r, ms));
      running -= 1;
      return null;
    });
    rpc.register('fail', z.object({}).strict(), () => {
      throw new RpcFailure(RPC_ERRORS.forbidden, 'not you');
    });
    rpc.registerStream('logs', z.object({}).strict(), async function* () {
      yield 1;
    });
    server = await host(['/ip4/127.0.0.1/tcp/0']);
    await server.handle(PROTOCOLS.controlSession, (stream, conn) => {
      streamsOpened += 1;
      return serveControlSession(stream, conn, rpc, pino({ level: 'silent' }));
    });
    client = await host([]);
  });
  after(async () => {
    await client?.stop();
    await server?.stop();
  });

  const session = () => new ControlSessionClient(client, server.getMultiaddrs()[0]!);

  it('answers many concurrent calls on one stream, each with its own result, in completion order', async () => {
    const s = session();
    const before = streamsOpened;
    const order: number[] = [];
    const calls = Array.from({ length: 200 }, (_, i) =>
      s.call('echo.wait', { v: i, ms: (200 - i) % 20 }).then((r) => {
        order.push(i);
        return r;
      }),
    );
    const results = await Promise.all(calls);
    assert.deepEqual(
      results.map((r) => (r as { v: number }).v),
      Array.from({ length: 200 }, (_, i) => i),
    );
    assert.equal(streamsOpened - before, 1, 'all calls shared one stream');
    assert.notDeepEqual(
      order,
      [...order].sort((a, b) => a - b),
      'quick calls were answered before slow ones',
    );
    await s.close();
  });

  it('returns remote errors, refuses streaming methods and invalid params, and keeps serving', async () => {
    const s = session();
    await assert.rejects(s.call('fail', {}), (e: RemoteRpcError) => e.code === RPC_ERRORS.forbidden);
    await assert.rejects(s.call('logs', {}), (e: RemoteRpcError) => /streams its answer/.test(e.message));
    await assert.rejects(
      s.call('echo.wait', { v: 'x' }),
      (e: RemoteRpcError) => e.code === RPC_ERRORS.badRequest,
    );
    await assert.rejects(s.call('nope', {}), (e: RemoteRpcError) => e.code === RPC_ERRORS.unknownMethod);
    assert.deepEqual(await s.call('echo.wait', { v: 7, ms: 0 }), { v: 7 });
    await s.close();
  });

  it('times out a slow call without breaking the session', async () => {
    const s = session();
    await assert.rejects(s.call('echo.wait', { v: 1, ms: 500 }, { timeoutMs: 50 }), /timed out/);
    assert.deepEqual(await s.call('echo.wait', { v: 2, ms: 0 }), { v: 2 });
    await s.close();
  });

  it('re-opens the stream after calls keep timing out with no answer at all', async () => {
    const s = session();
    assert.deepEqual(await s.call('echo.wait', { v: 0, ms: 0 }), { v: 0 });
    const opened = streamsOpened;
    for (let i = 0; i < SESSION_LIMITS.timeoutsBeforeReset; i++)
      await assert.rejects(s.call('echo.wait', { v: 1, ms: 2000 }, { timeoutMs: 30 }), /timed out/);
    assert.deepEqual(await s.call('echo.wait', { v: 2, ms: 0 }), { v: 2 });
    assert.equal(streamsOpened, opened + 1, 'a new stream was opened');
    await s.close();
  });

  it('bounds the calls one session runs at once on the server (the rest wait, the stream paused)', async () => {
    const s = session();
    maxRunning = 0;
    const n = SESSION_LIMITS.maxInFlight + 200;
    await Promise.all(Array.from({ length: n }, () => s.call('count.wait', { ms: 20 })));
    assert.ok(maxRunning <= SESSION_LIMITS.maxInFlight, `ran ${maxRunning} at once`);
    assert.ok(maxRunning >= SESSION_LIMITS.maxInFlight / 2, 'calls did run concurrently');
    await s.close();
  });

  it('a garbage frame ends that session only; the client re-opens on the next call', async () => {
    const raw = await client.dialProtocol(server.getMultiaddrs()[0]!, PROTOCOLS.controlSession);
    const lp = lpStream(raw, LP_OPTIONS);
    await lp.write(new Uint8Array([0xff, 0x00, 0x13, 0x37]));
    await assert.rejects(lp.read(), 'the server reset the bad session');

    const s = session();
    assert.deepEqual(await s.call('echo.wait', { v: 1, ms: 0 }), { v: 1 });
    // Break the client's stream under it: pending calls fail, the next call gets a new stream.
    const pending = s.call('echo.wait', { v: 2, ms: 300 });
    for (const c of client.getConnections())
      for (const st of c.streams) {
        if (st.protocol === PROTOCOLS.controlSession) st.abort(new Error('cut'));
      }
    await assert.rejects(pending, /control session to the peer ended/);
    assert.deepEqual(await s.call('echo.wait', { v: 3, ms: 0 }), { v: 3 });
    await s.close();
  });
});
