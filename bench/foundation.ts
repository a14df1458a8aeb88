/**
 * Foundation numbers: time from the third daemon's start until all three nodes see each other (loopback,
 * bootstrap addresses), and the resident memory of an idle daemon.
 * Run alone: `npx node bench/foundation.ts`.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { newLoopbackCluster } from '../apps/headless/src/local-cluster.ts';

async function nodesSeen(apiUrl: string, dataDir: string): Promise<number> {
  const { token } = JSON.parse(readFileSync(join(dataDir, 'api.json'), 'utf8')) as { token: string };
  const res = await fetch(`${apiUrl}/api/rpc`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ method: 'nodes', params: {} }),
  });
  const body = (await res.json()) as { result: { connected: boolean }[] };
  return body.result.filter((r) => r.connected).length;
}

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

export async function benchFoundation(): Promise<Record<string, unknown>> {
  const runs: number[] = [];
  let rss: number[] = [];
  for (let run = 0; run < 3; run++) {
    const c = await newLoopbackCluster({ prefix: 'meshrun-bench-' });
    try {
      await c.start(0);
      await c.start(1);
      const t0 = performance.now();
      const third = await c.start(2);
      for (;;) {
        const counts = await Promise.all(c.nodes.map((n) => nodesSeen(n.apiUrl, n.dataDir)));
        if (counts.every((x) => x === 3)) break;
        if (performance.now() - t0 > 30_000) throw new Error('nodes did not converge in 30 s');
        await new Promise((r) => setTimeout(r, 20));
      }
      runs.push(performance.now() - t0);
      if (run === 0) {
        await new Promise((r) => setTimeout(r, 5000));
        rss = c.nodes.map((n) => rssBytes(n.proc.pid!));
      }
      void third;
    } finally {
      await c.destroy();
    }
  }
  runs.sort((a, b) => a - b);
  return {
    thirdStartToAllSeeAllMs: {
      min: Math.round(runs[0]!),
      median: Math.round(runs[1]!),
      max: Math.round(runs[2]!),
    },
    note: 'includes the third daemon process start-up (Node + libp2p + hardware probe)',
    idleDaemonRssMiB: rss.map((b) => Math.round(b / 1024 / 1024)),
  };
}

if (import.meta.main) {
  const r = await benchFoundation();
  console.table(r);
  console.log(JSON.stringify(r));
}
