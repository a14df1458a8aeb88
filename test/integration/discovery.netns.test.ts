// LAN discovery across real hosts: three daemons in three network namespaces joined by a bridge, mDNS on, no
// bootstrap addresses. Each must list all three in `meshrun nodes --json` within 5 s of the last start.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type Cluster, startCluster } from '../src/cluster.ts';
import { requireNetns } from '../src/netns.ts';
import { runCli, waitFor } from '../src/proc.ts';

const skip = requireNetns();

describe('mDNS discovery across namespaces', { skip }, () => {
  let cluster: Cluster;
  let keyFile: string;
  let lastStart = 0;

  before(async () => {
    const { mkdtempSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    keyFile = `${mkdtempSync(`${tmpdir()}/meshrun-mdns-`)}/cluster.key`;
    const kg = await runCli(['keygen', keyFile]);
    assert.equal(kg.code, 0, kg.stderr);
    cluster = await startCluster({
      name: 'mdns',
      hosts: 3,
      daemonArgs: (host) => [
        '--data-dir',
        host.dataDir,
        '--cluster-key',
        keyFile,
        '--listen',
        `/ip4/${host.ip}/tcp/4801`,
      ],
      readyLog: /listening on/,
    });
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
