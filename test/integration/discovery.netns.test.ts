// LAN discovery across real hosts: three daemons in three network namespaces joined by a bridge, mDNS on, no
// bootstrap addresses. Each must list all three in `meshrun nodes --json` within 5 s of the last start.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Cluster } from '../src/cluster.ts';
import { requireNetns } from '../src/netns.ts';
import { runCli, waitFor } from '../src/proc.ts';
import { newClusterKey, startDaemons } from './lib/namespaced.ts';

const skip = requireNetns();

describe('mDNS discovery across namespaces', { skip }, () => {
  let cluster: Cluster;
  let lastStart = 0;

  before(async () => {
    cluster = await startDaemons({ name: 'mdns', hosts: 3, keyFile: await newClusterKey('meshrun-mdns-') });
    lastStart = Date.now();
  });
  after(async () => cluster?.destroy());

  it('every node lists all three within 5 s of the last start', async () => {
    const seen = await Promise.all(
      cluster.nodes.map((n) =>
        waitFor(
          async () => {
            const r = await runCli(['--data-dir', n.host.dataDir, 'nodes', '--json'], { ns: n.host });
            if (r.code !== 0) throw new Error(r.stderr);
            const rows = JSON.parse(r.stdout) as { peerId: string; connected: boolean }[];
            return rows.length === 3 && rows.every((row) => row.connected) ? Date.now() : null;
          },
          { timeoutMs: 15_000, intervalMs: 100, description: `${n.host.name} to see 3 nodes` },
        ),
      ),
    );
    const worst = Math.max(...seen) - lastStart;
    assert.ok(
      worst <= 5000,
      `slowest node saw all three after ${worst} ms (limit 5000)\n${cluster.diagnostics()}`,
    );
  });
});
