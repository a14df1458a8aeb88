/**
 * Consensus benchmark, side by side in one run: a 3-member etcd 3.4 cluster on loopback (Debian's etcd-server,
 * driven by the `etcd3` npm client) and a 3-voter meshrun cluster of real daemon processes on loopback (driven
 * over libp2p by the control protocol's `kv.put`), both with fsync on, 256-byte values. Commits/s and p50/p99
 * latency at 1, 100 and 500 concurrent clients after the same untimed warm-up, and leader failover time
 * (kill -9 → first new commit).
 * Run alone: `npx node bench/raft.ts`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { P2pClient } from '../apps/headless/src/client.ts';
import { newLoopbackCluster } from '../apps/headless/src/local-cluster.ts';
import { waitForCluster } from './bullmq.ts';

const CONCURRENCY = [1, 100, 500];
const PHASE_MS = Number(process.env.BENCH_RAFT_PHASE_MS ?? 5000);
/**
 * Untimed load each system gets before its measured phases, the same for both: without it the first phase
 * measures meshrun's JIT warming up (its 1-client p50 falls by about 40 % over the first 10 s of puts)
 * rather than its steady state, which is what etcd's compiled binary shows from the start.
 */
const WARMUP = [
  { clients: 1, ms: Number(process.env.BENCH_RAFT_WARMUP_MS ?? 10_000) },
  { clients: 100, ms: 2000 },
];
const VALUE = randomBytes(256);

interface Phase {
  clients: number;
  commitsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! * 100) / 100;
}

/** Runs `clients` loops of back-to-back puts for `ms`; every put is one committed, fsynced write. */
async function phase(clients: number, put: (key: string) => Promise<void>, ms = PHASE_MS): Promise<Phase> {
  const lat: number[] = [];
  let errors = 0;
  const end = performance.now() + ms;
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      for (let i = 0; performance.now() < end; i++) {
        const t0 = performance.now();
        try {
          await put(`k${c}-${i % 64}`);
          lat.push(performance.now() - t0);
        } catch {
          errors += 1;
          if (errors > 10_000) return;
        }
      }
    }),
  );
  lat.sort((a, b) => a - b);
  return {
    clients,
    commitsPerSec: Math.round(lat.length / (ms / 1000)),
    p50Ms: pct(lat, 50),
    p99Ms: pct(lat, 99),
    errors,
  };
}

/** Time from kill -9 of the leader until a put succeeds again (tries every 10 ms, bounded). */
async function failover(kill: () => void, put: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  kill();
  for (let i = 0; i < 3000; i++) {
    try {
      await put();
      return Math.round(performance.now() - t0);
    } catch {
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  return Number.NaN;
}

// ---- etcd ------------------------------------------------------------------------------------------------

async function benchEtcd(): Promise<{ phases: Phase[]; failoverMs: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-etcd-'));
  const names = ['e0', 'e1', 'e2'];
  const base = 23790 + Math.floor(Math.random() * 100) * 10;
  const peerUrl = (i: number) => `http://127.0.0.1:${base + i * 2 + 1}`;
  const clientUrl = (i: number) => `http://127.0.0.1:${base + i * 2}`;
  const initial = names.map((n, i) => `${n}=${peerUrl(i)}`).join(',');
  const procs: ChildProcess[] = names.map((name, i) => {
    const log = openSync(join(dir, `${name}.log`), 'w');
    const p = spawn(
      'etcd',
      [
        '--name',
        name,
        '--data-dir',
        join(dir, name),
        '--listen-client-urls',
        clientUrl(i),
        '--advertise-client-urls',
        clientUrl(i),
        '--listen-peer-urls',
        peerUrl(i),
        '--initial-advertise-peer-urls',
        peerUrl(i),
        '--initial-cluster',
        initial,
        '--initial-cluster-state',
        'new',
        '--log-level',
        'error',
      ],
      { stdio: ['ignore', log, log] },
    );
    closeSync(log);
    return p;
  });
  const client = new Etcd3({ hosts: names.map((_, i) => clientUrl(i)) });
  try {
    for (let i = 0; i < 200; i++) {
      try {
        await client.put('warmup').value(VALUE);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const put = async (k: string) => void (await client.put(k).value(VALUE));
    for (const w of WARMUP) await phase(w.clients, put, w.ms);
    const phases: Phase[] = [];
    for (const n of CONCURRENCY) phases.push(await phase(n, put));
    // Find the leader through the maintenance API and kill it.
    let leaderIdx = 0;
    for (let i = 0; i < 3; i++) {
      const c1 = new Etcd3({ hosts: clientUrl(i) });
      const st = await c1.maintenance.status();
      if (st.leader === st.header.member_id) leaderIdx = i;
      c1.close();
    }
    const survivors = new Etcd3({
      hosts: names.map((_, i) => clientUrl(i)).filter((_, i) => i !== leaderIdx),
    });
    const failoverMs = await failover(
      () => procs[leaderIdx]!.kill('SIGKILL'),
      async () => void (await survivors.put('after-failover').value(VALUE)),
    );
    survivors.close();
    return { phases, failoverMs };
  } finally {
    client.close();
    for (const p of procs) p.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- meshrun -----------------------------------------------------------------------------------------------

async function benchMeshrun(): Promise<{ phases: Phase[]; failoverMs: number }> {
  const cluster = await newLoopbackCluster({ prefix: 'bench-raft-' });
  const clients: P2pClient[] = [];
  try {
    for (const i of [0, 1, 2]) await cluster.start(i);
    const probe = await P2pClient.create(cluster.nodes[0]!.addr, cluster.clusterKey);
    clients.push(probe);
    const leader = await waitForCluster(cluster, probe);
    const leaderNode = cluster.nodes.find((n) => n.peerId === leader)!;
    const toLeader = await P2pClient.create(leaderNode.addr, cluster.clusterKey);
    clients.push(toLeader);
    await toLeader.call('kv.put', { key: 'warmup', value: VALUE });
    const put = async (k: string) => void (await toLeader.call('kv.put', { key: k, value: VALUE }));
    for (const w of WARMUP) await phase(w.clients, put, w.ms);
    const phases: Phase[] = [];
    for (const n of CONCURRENCY) phases.push(await phase(n, put));
    const survivors = await Promise.all(
      cluster.nodes.filter((n) => n !== leaderNode).map((n) => P2pClient.create(n.addr, cluster.clusterKey)),
    );
    clients.push(...survivors);
    // Both survivors are tried at once with a short per-try timeout, so the measure is not quantized by it.
    const failoverMs = await failover(
      () => leaderNode.kill('SIGKILL'),
      async () =>
        void (await Promise.any(
          survivors.map((s) => s.call('kv.put', { key: 'after-failover', value: VALUE }, { timeoutMs: 250 })),
        )),
    );
    return { phases, failoverMs };
  } finally {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await cluster.destroy();
  }
}

export async function benchRaft(): Promise<Record<string, unknown>> {
  const etcd = await benchEtcd();
  const meshrun = await benchMeshrun();
  const rows: Record<string, unknown> = {};
  for (let i = 0; i < CONCURRENCY.length; i++) {
    const e = etcd.phases[i]!;
    const m = meshrun.phases[i]!;
    rows[`${e.clients} clients`] = {
      etcd: `${e.commitsPerSec}/s p50 ${e.p50Ms} ms p99 ${e.p99Ms} ms`,
      meshrun: `${m.commitsPerSec}/s p50 ${m.p50Ms} ms p99 ${m.p99Ms} ms`,
    };
  }
  rows.failoverMs = { etcd: etcd.failoverMs, meshrun: meshrun.failoverMs };
  rows.targets = {
    throughputAt100: meshrun.phases[1]!.commitsPerSec >= etcd.phases[1]!.commitsPerSec ? 'met' : 'missed',
    p50At1: meshrun.phases[0]!.p50Ms <= etcd.phases[0]!.p50Ms ? 'met' : 'missed',
    failoverUnder1500Ms: meshrun.failoverMs < 1500 ? 'met' : 'missed',
  };
  rows.raw = { etcd, meshrun };
  return rows;
}

if (import.meta.main) {
  const r = await benchRaft();
  console.table(Object.fromEntries(Object.entries(r).filter(([k]) => k !== 'raw')));
  console.log(JSON.stringify(r));
  process.exit(0);
}
