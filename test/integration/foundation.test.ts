// Foundation acceptance on real daemon processes over loopback: identity survives restarts, the cluster key
// keeps strangers out, the hardware table is this machine's, bad input never crashes a node, and
// `meshrun nodes --json` has the documented shape. (mDNS discovery across hosts: discovery.netns.test.ts.)
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { after, before, describe, it } from 'node:test';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { preSharedKey } from '@libp2p/pnet';
import { tcp } from '@libp2p/tcp';
import { lpStream } from '@libp2p/utils';
import { readClusterKey } from '@meshrun/core/node/cluster-key.ts';
import { type LoopbackCluster, newLoopbackCluster } from '@meshrun/headless/local-cluster.ts';
import { AdvertisementSchema, encode, framePrefix, MAX_MESSAGE_BYTES, PROTOCOLS } from '@meshrun/protocol';
import { multiaddr } from '@multiformats/multiaddr';
import { createLibp2p } from 'libp2p';
import { z } from 'zod';
import { describeResult, REPO_ROOT, runCli, waitFor } from '../src/proc.ts';

const NodeRowSchema = AdvertisementSchema.extend({
  self: z.boolean(),
  connected: z.boolean(),
  lastSeen: z.number(),
}).strict();

async function nodesJson(c: LoopbackCluster, i: number) {
  const r = await c.nodes[i]!.cli(['nodes', '--json']);
  assert.equal(r.code, 0, describeResult(r));
  return z.array(NodeRowSchema).parse(JSON.parse(r.stdout));
}

describe('foundation on loopback', () => {
  let c: LoopbackCluster;
  before(async () => {
    c = await newLoopbackCluster();
    await c.start(0);
    await c.start(1);
    await c.start(2);
  });
  after(async () => c?.destroy());

  it('three nodes bootstrapped from each other all see all three', async () => {
    await waitFor(
      async () =>
        (await nodesJson(c, 2)).length === 3 &&
        (await nodesJson(c, 1)).length === 3 &&
        (await nodesJson(c, 0)).length === 3,
      {
        timeoutMs: 15_000,
        description: 'all nodes to see 3 nodes',
      },
    );
  });

  it('`nodes --json` has the documented shape and this machine’s real hardware', async () => {
    const rows = await nodesJson(c, 0);
    const self = rows.find((r) => r.self)!;
    assert.equal(self.peerId, c.nodes[0]!.peerId);
    const nproc = Number(execFileSync('nproc', ['--all']).toString().trim());
    assert.equal(self.hardware.cpu.logicalCores, nproc, 'logical cores match nproc');
    const freeTotal = Number(/Mem:\s+(\d+)/.exec(execFileSync('free', ['-b']).toString())![1]);
    assert.ok(
      Math.abs(self.hardware.memoryBytes - freeTotal) / freeTotal < 0.01,
      `memory ${self.hardware.memoryBytes} vs free ${freeTotal}`,
    );
    const dockerUp = (() => {
      try {
        return execFileSync('docker', ['version', '-f', '{{.Server.Version}}'], {
          stdio: ['ignore', 'pipe', 'ignore'],
        })
          .toString()
          .trim();
      } catch {
        return null;
      }
    })();
    assert.equal(self.hardware.docker.available, dockerUp !== null);
    if (dockerUp) assert.equal(self.hardware.docker.version, dockerUp);
    assert.equal(self.hardware.cpu.arch, os.arch());
    assert.ok(self.hardware.disk.freeBytes > 0);
    assert.ok(self.offered.executors.includes('wasm'));
  });

  it('`--version` prints the package version, and `nodes` shows every node’s', async () => {
    const pkg = JSON.parse(readFileSync(`${REPO_ROOT}/apps/headless/package.json`, 'utf8')) as {
      version: string;
    };
    for (const flag of ['--version', '-v']) {
      const r = await runCli([flag]);
      assert.equal(r.code, 0, describeResult(r));
      assert.equal(r.stdout.trim(), pkg.version);
    }
    assert.ok((await nodesJson(c, 0)).every((n) => n.version === pkg.version));
    const r = await c.nodes[0]!.cli(['nodes']);
    assert.equal(r.code, 0, describeResult(r));
    const [header, ...rows] = r.stdout.trim().split('\n');
    assert.match(header!, /^PEER\s+HOST\s+VERSION\s/);
    assert.equal(rows.length, 3);
    for (const row of rows) assert.equal(row.split(/\s{2,}/)[2], pkg.version, row);
  });

  it('peers are listed with `peers --json`', async () => {
    const r = await c.nodes[1]!.cli(['peers', '--json']);
    assert.equal(r.code, 0, describeResult(r));
    const peers = JSON.parse(r.stdout) as { peerId: string }[];
    const ids = new Set(peers.map((p) => p.peerId));
    assert.ok(ids.has(c.nodes[0]!.peerId) && ids.has(c.nodes[2]!.peerId));
  });

  it('the CLI reaches any peer over libp2p with the cluster key, with or without /p2p/ in the address', async () => {
    const withId = await runCli([
      '--peer',
      c.nodes[1]!.addr,
      '--cluster-key',
      c.clusterKey,
      'nodes',
      '--json',
    ]);
    assert.equal(withId.code, 0, describeResult(withId));
    assert.equal(JSON.parse(withId.stdout).length, 3);
    const bare = c.nodes[1]!.addr.replace(/\/p2p\/.*$/, '');
    const without = await runCli(['--peer', bare, '--cluster-key', c.clusterKey, 'peers', '--json']);
    assert.equal(without.code, 0, describeResult(without));
  });

  it('a CLI holding the wrong key is refused with a clear message', async () => {
    const wrong = `${c.dir}/wrong.key`;
    await runCli(['keygen', wrong]);
    const r = await runCli(['--peer', c.nodes[0]!.addr, '--cluster-key', wrong, 'nodes']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /cluster key does not match/);
  });

  it('a node with a different cluster key never appears in the others’ tables', async () => {
    const other = await newLoopbackCluster({ prefix: 'meshrun-other-' });
    try {
      const stranger = await other.start(0, ['--bootstrap', c.nodes[0]!.addr, c.nodes[1]!.addr]);
      // Give it time to try (bootstrap retries run every few hundred ms).
      await new Promise((r) => setTimeout(r, 3000));
      for (const i of [0, 1, 2]) {
        const ids = (await nodesJson(c, i)).map((n) => n.peerId);
        assert.ok(!ids.includes(stranger.peerId), `node ${i} lists the stranger`);
        assert.equal(ids.length, 3);
      }
      const strangerRows = JSON.parse((await stranger.cli(['nodes', '--json'])).stdout) as unknown[];
      assert.equal(strangerRows.length, 1);
    } finally {
      await other.destroy();
    }
  });

  it('garbage, truncated and oversized messages to every protocol handler are rejected; the node keeps serving', async () => {
    const psk = await readClusterKey(c.clusterKey);
    const client = await createLibp2p({
      transports: [tcp()],
      connectionProtector: preSharedKey({ psk }),
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
    });
    try {
      const target = multiaddr(c.nodes[0]!.addr);
      const payloads: { name: string; bytes: Uint8Array; raw?: boolean }[] = [
        {
          name: 'random bytes',
          bytes: new Uint8Array(Array.from({ length: 300 }, (_, i) => (i * 7919) % 256)),
        },
        {
          name: 'truncated CBOR',
          bytes: encode({ method: 'nodes', params: { x: 'y'.repeat(50) } }).subarray(0, 20),
        },
        { name: 'wrong shape', bytes: encode({ hello: 'world', adverts: 'nope', method: 12 }) },
        { name: 'oversized length prefix', bytes: framePrefix(MAX_MESSAGE_BYTES + 10), raw: true },
        {
          name: 'huge varint',
          bytes: new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
          raw: true,
        },
      ];
      for (const proto of Object.values(PROTOCOLS)) {
        for (const p of payloads) {
          let stream: Awaited<ReturnType<typeof client.dialProtocol>>;
          try {
            stream = await client.dialProtocol(target, proto, { signal: AbortSignal.timeout(5000) });
          } catch {
            continue; // protocol not served (yet): nothing to feed
          }
          try {
            if (p.raw) stream.send(p.bytes);
            else await lpStream(stream).write(p.bytes);
            await stream.close({ signal: AbortSignal.timeout(3000) }).catch(() => {});
          } catch {
            // the node closing or resetting the stream on us is the expected outcome
          }
        }
      }
    } finally {
      await client.stop();
    }
    // Still alive and serving everyone.
    assert.equal(c.nodes[0]!.proc.exitCode, null, 'node 0 still running');
    const rows = await nodesJson(c, 0);
    assert.equal(rows.length, 3);
    const viaPeer = await runCli([
      '--peer',
      c.nodes[0]!.addr,
      '--cluster-key',
      c.clusterKey,
      'peers',
      '--json',
    ]);
    assert.equal(viaPeer.code, 0, describeResult(viaPeer));
  });

  it('raw TCP clients sending junk before the handshake do not hurt the node; it keeps serving', async () => {
    const m = /\/ip4\/([\d.]+)\/tcp\/(\d+)/.exec(c.nodes[2]!.addr)!;
    // Several junk connections at once. The node usually resets them at once; libp2p sometimes leaves one
    // half-open until its upgrade timeout (seen with @libp2p/pnet too), so the client gives up after a bound.
    await Promise.all(
      Array.from(
        { length: 5 },
        () =>
          new Promise<void>((resolve) => {
            const sock = net.connect(Number(m[2]), m[1], () => sock.end(Buffer.alloc(4096, 0x41)));
            const timer = setTimeout(() => sock.destroy(), 3000);
            sock.on('error', () => {});
            sock.on('close', () => {
              clearTimeout(timer);
              resolve();
            });
          }),
      ),
    );
    assert.equal((await nodesJson(c, 2)).length, 3);
  });

  it('a daemon restarted on the same data dir keeps its peer ID (and stops cleanly on SIGTERM)', async () => {
    const before = c.nodes[2]!;
    before.kill('SIGTERM');
    const exit = await before.exited;
    assert.equal(exit.code, 0, 'clean exit on SIGTERM');
    const again = await c.start(2);
    assert.equal(again.peerId, before.peerId);
    await waitFor(async () => (await nodesJson(c, 0)).find((n) => n.peerId === again.peerId)?.connected, {
      timeoutMs: 15_000,
      description: 'restarted node to reconnect',
    });
  });

  it('health and Prometheus metrics are served on the API port', async () => {
    const n = c.nodes[0]!;
    const health = (await (await fetch(`${n.apiUrl}/healthz`)).json()) as { status: string; peerId: string };
    assert.equal(health.status, 'ok');
    assert.equal(health.peerId, n.peerId);
    const metrics = await (await fetch(`${n.apiUrl}/metrics`)).text();
    assert.match(metrics, /^meshrun_connected_peers \d+/m);
    assert.match(metrics, /^meshrun_known_nodes 3/m);
    assert.match(metrics, /^meshrun_tasks_running 0/m);
    assert.match(metrics, /^meshrun_tasks_held_ready 0/m);
    const unauth = await fetch(`${n.apiUrl}/api/rpc`, { method: 'POST', body: '{"method":"nodes"}' });
    assert.equal(unauth.status, 401);
  });
});

describe('daemon start-up errors', () => {
  it('refuses to start without a cluster key and says how to make one', async () => {
    const r = await runCli(
      ['daemon', '--data-dir', `${os.tmpdir()}/meshrun-nokey-${process.pid}`, '--no-mdns'],
      { env: { MESHRUN_CLUSTER_KEY: undefined } },
    );
    assert.equal(r.code, 2);
    assert.match(r.stderr, /meshrun keygen/);
  });

  it('refuses a file that is not a cluster key', async () => {
    const r = await runCli([
      'daemon',
      '--cluster-key',
      '/etc/hostname',
      '--no-mdns',
      '--data-dir',
      `${os.tmpdir()}/meshrun-badkey-${process.pid}`,
    ]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /not a meshrun cluster key/);
  });

  it('rejects invalid configuration with the field named', async () => {
    const r = await runCli(['daemon', '--voters', '4', '--no-mdns'], {
      env: { MESHRUN_CLUSTER_KEY: '/nonexistent' },
    });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /voters/);
  });
});

describe('Node version guard', () => {
  it('the meshrun binary refuses an old Node with a clear message (no deep libp2p failure)', async (t) => {
    const { execFileSync, spawnSync } = await import('node:child_process');
    const old = ['/usr/bin/node', '/usr/local/bin/node'].find((bin) => {
      try {
        return (
          Number(execFileSync(bin, ['-p', 'process.versions.node.split(".")[0]']).toString().trim()) < 22
        );
      } catch {
        return false;
      }
    });
    if (!old) {
      t.skip('no Node older than 22 on this machine');
      return;
    }
    const bin = new URL('../../apps/headless/bin/meshrun.js', import.meta.url).pathname;
    const r = spawnSync(old, [bin, 'nodes'], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    assert.equal(r.status, 125);
    assert.match(r.stderr, /needs Node >= 22\.18/);
  });
});
