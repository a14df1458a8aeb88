/**
 * Queue throughput, side by side in one run: BullMQ 5 on a throwaway Redis (Debian's redis-server on loopback,
 * no persistence) against a 3-node meshrun cluster of real daemon processes on loopback. Both get the same
 * BENCH_TASKS no-op tasks (default 20,000) in batches of SUBMIT_BATCH: BullMQ `addBulk` into a queue drained by
 * one Worker with an empty processor at concurrency 50; meshrun `jobs.submit` of a no-op WASM job with
 * `count = SUBMIT_BATCH`, spread over the three nodes, each node offering --max-concurrent MESH_CONCURRENCY.
 *
 * Measured, after both ran BENCH_WARMUP_TASKS (default 10,000) the same way untimed: submission rate (tasks/s
 * from the first submit until every batch is accepted) and end-to-end rate (tasks/s from the first submit until
 * every task has completed). Not equal work: every meshrun task is
 * replicated through Raft (its submit, assign, start and finish commands, grouped into log entries and each
 * committed on a majority with fsync) and runs a real WASI module on a worker-thread pool, where BullMQ keeps
 * one copy in Redis memory.
 * To show where meshrun's time goes, the daemons' CPU time (from /proc) and the per-task phases (queued →
 * started → ended, from `jobs.get`) are reported too. BENCH_PROFILE=DIR writes V8 CPU profiles of the daemons
 * there (use a small BENCH_TASKS: every WASM worker thread writes its own profile).
 * Run alone: `npx node bench/bullmq.ts`. `BENCH_MESH_NODES=1` runs meshrun as one daemon instead (a one-voter
 * cluster: nothing replicated, like BullMQ's one Redis), offering the three nodes' slots; the target is
 * defined on three nodes, so that is the default and what `npm run bench` reports.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { P2pClient } from '../apps/headless/src/client.ts';
import { type LoopbackCluster, newLoopbackCluster } from '../apps/headless/src/local-cluster.ts';
import { NOOP_WAT, wasmOf } from '../test/integration/lib/wasm.ts';

const TASKS = Math.max(1, Number(process.env.BENCH_TASKS ?? 20_000));
/**
 * Tasks both systems run, untimed and in the same way, before the timed run: a daemon runs for days, so what
 * counts is its steady state, not V8 compiling its hot paths (a 20,000-task run of meshrun's three processes
 * spent ~17% of its CPU in the optimizing compiler, and its rate rose from ~1,400/s in the first 10 s to
 * ~2,100/s after). Equal for both, as in the Raft benchmark.
 */
const WARMUP_TASKS = Math.max(0, Number(process.env.BENCH_WARMUP_TASKS ?? 10_000));
/** Tasks per submit call: BullMQ addBulk size, meshrun job `count` (≤ JOB_LIMITS.maxCount). */
const SUBMIT_BATCH = 1000;
/** Submit calls in flight at once, for both systems. */
const SUBMIT_PARALLEL = 4;
/** BullMQ worker concurrency (the brief's number). */
const BULLMQ_CONCURRENCY = 50;
/** meshrun daemons: 3 (the comparison the issue defines) or 1 (a one-voter cluster, nothing replicated). */
const MESH_NODES = Number(process.env.BENCH_MESH_NODES ?? 3);
if (MESH_NODES !== 1 && MESH_NODES !== 3)
  throw new Error(`BENCH_MESH_NODES must be 1 or 3, not ${MESH_NODES}`);
/** Concurrent tasks each meshrun node offers; default ≈ 50 over the nodes, like BullMQ's one worker. */
const MESH_CONCURRENCY = Number(process.env.BENCH_MESH_CONCURRENCY ?? (MESH_NODES === 1 ? 51 : 17));
/** Give up waiting for completion after this long (the result then says how far it got). */
const COMPLETE_TIMEOUT_MS = Number(process.env.BENCH_TIMEOUT_MS ?? 10 * 60_000);
/** How often meshrun's progress is polled (jobs.list). */
const POLL_MS = 250;
/** Tasks whose phases are sampled from jobs.get after the run. */
const PHASE_SAMPLE_JOBS = 3;

function rate(tasks: number, ms: number): number {
  return ms > 0 ? Math.round((tasks / ms) * 1000) : Number.NaN;
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!);
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => res(port));
    });
  });
}

/** Runs `fn` over `items` with at most `limit` in flight. */
async function inParallel<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

function batches(total: number): number[] {
  const out: number[] = [];
  for (let left = total; left > 0; left -= SUBMIT_BATCH) out.push(Math.min(SUBMIT_BATCH, left));
  return out;
}

/**
 * user+system CPU ms from /proc (0 when it is gone): of the whole process (exited threads included), or with
 * `mainThread` of its main thread only (the event loop: Raft, libp2p, RPC, scheduling).
 */
function cpuMs(pid: number | undefined, mainThread = false): number {
  if (!pid) return 0;
  try {
    const path = mainThread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`;
    const fields = readFileSync(path, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return 0;
  }
}

// ---- BullMQ ----------------------------------------------------------------------------------------------

async function startRedis(dir: string): Promise<{ port: number; proc: ChildProcess }> {
  const port = await freePort();
  const proc = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: 'ignore' },
  );
  const probe = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0 });
  probe.on('error', () => {}); // refused while redis starts; the loop below retries
  try {
    for (let i = 0; ; i++) {
      try {
        await probe.connect();
        await probe.ping();
        break;
      } catch (err) {
        if (i >= 100 || proc.exitCode !== null) throw new Error(`redis-server did not start: ${err}`);
        probe.disconnect();
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  } finally {
    probe.disconnect();
  }
  return { port, proc };
}

export interface SystemResult {
  tasks: number;
  completed: number;
  submitMs: number;
  submitPerSec: number;
  endToEndMs: number;
  endToEndPerSec: number;
}

async function benchBullmqSide(): Promise<SystemResult & { redisCpuMs: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'meshrun-bullmq-'));
  let redis: { port: number; proc: ChildProcess } | null = null;
  let queue: Queue | null = null;
  let worker: Worker | null = null;
  try {
    redis = await startRedis(dir);
    const connection = { host: '127.0.0.1', port: redis.port, maxRetriesPerRequest: null };
    queue = new Queue('bench', { connection });
    await queue.waitUntilReady();
    let completed = 0;
    let wanted = Number.POSITIVE_INFINITY;
    let reached: () => void = () => {};
    worker = new Worker('bench', async () => {}, { connection, concurrency: BULLMQ_CONCURRENCY });
    worker.on('completed', () => {
      completed += 1;
      if (completed >= wanted) reached();
    });
    /** Resolves when `n` jobs completed since `completed` was last reset (or after COMPLETE_TIMEOUT_MS). */
    const completedAll = (n: number) =>
      Promise.race([
        new Promise<void>((r) => {
          wanted = n;
          reached = r;
          if (completed >= n) r();
        }),
        new Promise((r) => setTimeout(r, COMPLETE_TIMEOUT_MS).unref()),
      ]);
    await worker.waitUntilReady();
    let seq = 0;
    const submit = (total: number) =>
      inParallel(batches(total), SUBMIT_PARALLEL, async (n) => {
        const jobs = Array.from({ length: n }, () => ({ name: 'noop', data: { i: seq++ } }));
        await queue!.addBulk(jobs);
      });
    await submit(WARMUP_TASKS);
    await completedAll(WARMUP_TASKS);
    if (completed < WARMUP_TASKS) throw new Error(`BullMQ warm-up: ${completed}/${WARMUP_TASKS} completed`);
    completed = 0;
    const cpu0 = cpuMs(redis.proc.pid);
    const t0 = performance.now();
    await submit(TASKS);
    const submitMs = performance.now() - t0;
    await completedAll(TASKS);
    const endToEndMs = performance.now() - t0;
    return {
      tasks: TASKS,
      completed,
      submitMs: Math.round(submitMs),
      submitPerSec: rate(TASKS, submitMs),
      endToEndMs: Math.round(endToEndMs),
      endToEndPerSec: completed >= TASKS ? rate(TASKS, endToEndMs) : Number.NaN,
      redisCpuMs: Math.round(cpuMs(redis.proc.pid) - cpu0),
    };
  } finally {
    await worker?.close().catch(() => {});
    await queue?.close().catch(() => {});
    redis?.proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- meshrun ---------------------------------------------------------------------------------------------

/** Waits until every node of `c` is a voter and a leader is known; returns the leader's peer ID. */
export async function waitForCluster(c: LoopbackCluster, client: P2pClient): Promise<string> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const s = (await client.call('cluster.status', { local: true }).catch(() => null)) as {
      leader: string | null;
      voters: unknown[];
    } | null;
    if (s?.leader && s.voters.length === c.nodes.length) return s.leader;
    if (Date.now() > deadline) throw new Error('the meshrun cluster did not form in 60 s');
    await new Promise((r) => setTimeout(r, 200));
  }
}

interface JobSummary {
  jobId: string;
  state: string;
  counts: Record<string, number>;
}

interface TaskView {
  state: string;
  startedAt: number | null;
  endedAt: number | null;
}

export async function benchMeshrunSide(): Promise<Record<string, unknown>> {
  const profileDir = process.env.BENCH_PROFILE ? resolve(process.env.BENCH_PROFILE) : null;
  if (profileDir) {
    mkdirSync(profileDir, { recursive: true });
    // The daemons inherit this (childEnv copies process.env); profiles are written on a clean exit (SIGTERM).
    process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-dir=${profileDir}`;
  }
  const c = await newLoopbackCluster({ prefix: 'meshrun-bench-bullmq-' });
  const clients: P2pClient[] = [];
  try {
    // One node forms a one-voter cluster of its own.
    const env = MESH_NODES === 1 ? { MESHRUN_VOTERS: '1' } : {};
    for (let i = 0; i < MESH_NODES; i++)
      await c.start(i, ['--max-concurrent', String(MESH_CONCURRENCY)], env);
    if (profileDir) delete process.env.NODE_OPTIONS;
    for (const n of c.nodes) clients.push(await P2pClient.create(n.addr, c.clusterKey));
    await waitForCluster(c, clients[0]!);
    const status = (await clients[0]!.call('cluster.status', { local: true })) as { leader: string };
    const leaderIndex = c.nodes.findIndex((n) => n.peerId === status.leader);
    const wasm = await wasmOf(NOOP_WAT);
    const spec = (count: number) => ({
      name: 'noop',
      executor: 'wasm',
      wasm: { bytes: wasm },
      command: [],
      resources: { cpus: 0.01, memoryBytes: 16 * 1024 * 1024 },
      count,
    });
    /** Submits `total` tasks in batches spread over the nodes, then polls until all have ended. */
    const runTasks = async (total: number) => {
      const jobIds: string[] = [];
      const t0 = performance.now();
      let call = 0;
      await inParallel(batches(total), SUBMIT_PARALLEL, async (n) => {
        const client = clients[call++ % clients.length]!;
        const r = (await client.call('jobs.submit', { spec: spec(n) }, { timeoutMs: 60_000 })) as {
          jobId: string;
          tasks: number;
        };
        if (r.tasks !== n) throw new Error(`job ${r.jobId} expanded to ${r.tasks} tasks, expected ${n}`);
        jobIds.push(r.jobId);
      });
      const submitMs = performance.now() - t0;
      const wanted = new Set(jobIds);
      let finished = 0;
      let failed = 0;
      const progress: { s: number; done: number }[] = [];
      while (performance.now() - t0 < COMPLETE_TIMEOUT_MS) {
        // 1,000 job summaries are well under a reply's page (jobs.list pages at ~2 MiB).
        const { jobs: list } = (await clients[0]!.call(
          'jobs.list',
          { limit: 1000 },
          { timeoutMs: 30_000 },
        )) as { jobs: JobSummary[] };
        finished = 0;
        failed = 0;
        for (const j of list) {
          if (!wanted.has(j.jobId)) continue;
          finished += (j.counts.succeeded ?? 0) + (j.counts.failed ?? 0) + (j.counts.cancelled ?? 0);
          failed += (j.counts.failed ?? 0) + (j.counts.cancelled ?? 0);
        }
        const s = Math.round((performance.now() - t0) / 1000);
        if (progress.at(-1)?.s !== s && s % 10 === 0) progress.push({ s, done: finished });
        if (finished >= total) break;
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
      return { jobIds, submitMs, endToEndMs: performance.now() - t0, finished, failed, progress };
    };
    // Warm-up (at least one task, so one-time costs such as the module's first compile are never timed).
    const warm = await runTasks(Math.max(1, WARMUP_TASKS));
    if (warm.finished < Math.max(1, WARMUP_TASKS) || warm.failed > 0)
      throw new Error(`meshrun warm-up: ${warm.finished} tasks ended, ${warm.failed} of them failed`);

    const cpu0 = c.nodes.map((n) => cpuMs(n.proc.pid));
    const main0 = c.nodes.map((n) => cpuMs(n.proc.pid, true));
    const { jobIds, submitMs, endToEndMs, finished, failed, progress } = await runTasks(TASKS);
    const daemonCpuMs = c.nodes.map((n, i) => Math.round(cpuMs(n.proc.pid) - cpu0[i]!));
    const mainThreadCpuMs = c.nodes.map((n, i) => Math.round(cpuMs(n.proc.pid, true) - main0[i]!));
    const perTask = (ms: number[]) =>
      Math.round((ms.reduce((a, b) => a + b, 0) / Math.max(1, finished)) * 10) / 10;

    // Where a task's time goes: submit → start (queue + Raft assign + worker start) and start → end (the run).
    const queuedMs: number[] = [];
    const runMs: number[] = [];
    for (const jobId of jobIds.slice(0, PHASE_SAMPLE_JOBS)) {
      const j = (await clients[0]!.call('jobs.get', { jobId }, { timeoutMs: 30_000 })) as {
        createdAt: number;
        tasks: TaskView[];
      };
      for (const t of j.tasks) {
        if (t.startedAt !== null) queuedMs.push(t.startedAt - j.createdAt);
        if (t.startedAt !== null && t.endedAt !== null) runMs.push(t.endedAt - t.startedAt);
      }
    }
    queuedMs.sort((a, b) => a - b);
    runMs.sort((a, b) => a - b);

    if (profileDir) {
      // A clean exit writes the profiles.
      for (const n of c.nodes) n.kill('SIGTERM');
      await Promise.all(
        c.nodes.map((n) => Promise.race([n.exited, new Promise((r) => setTimeout(r, 20_000))])),
      );
    }
    return {
      tasks: TASKS,
      completed: finished,
      failed,
      submitMs: Math.round(submitMs),
      submitPerSec: rate(TASKS, submitMs),
      endToEndMs: Math.round(endToEndMs),
      endToEndPerSec: finished >= TASKS ? rate(TASKS, endToEndMs) : Number.NaN,
      completedPerSecSoFar: rate(finished, endToEndMs),
      leaderIndex,
      daemonCpuMs,
      mainThreadCpuMs,
      // CPU per task summed over the daemons; 'other threads' are the per-task WASM worker threads plus
      // libuv's pool (leveldb writes and fsyncs) and V8's GC helpers.
      cpuMsPerTask: perTask(daemonCpuMs),
      mainThreadCpuMsPerTask: perTask(mainThreadCpuMs),
      otherThreadsCpuMsPerTask: perTask(daemonCpuMs.map((ms, i) => ms - mainThreadCpuMs[i]!)),
      startDelayMs: { p50: pct(queuedMs, 50), p99: pct(queuedMs, 99), sampled: queuedMs.length },
      runMs: { p50: pct(runMs, 50), p99: pct(runMs, 99) },
      progress,
    };
  } finally {
    await Promise.all(clients.map((cl) => cl.close().catch(() => {})));
    await c.destroy();
  }
}

export async function benchBullmq(): Promise<Record<string, unknown>> {
  const bull = await benchBullmqSide();
  const mesh = await benchMeshrunSide();
  const ratio = (a: unknown, b: number) =>
    typeof a === 'number' && Number.isFinite(a) && b > 0 ? Math.round((a / b) * 1000) / 1000 : Number.NaN;
  return {
    tasks: TASKS,
    warmupTasks: WARMUP_TASKS,
    submitBatch: SUBMIT_BATCH,
    note: 'every meshrun task is replicated through Raft (submit, assign, start, finish: grouped, fsynced majority commits) and runs a real no-op WASI module on a worker-thread pool; BullMQ keeps one in-memory copy in Redis and calls an empty function',
    bullmqConcurrency: BULLMQ_CONCURRENCY,
    meshrunNodes: MESH_NODES,
    meshrunConcurrencyPerNode: MESH_CONCURRENCY,
    bullmqSubmitPerSec: bull.submitPerSec,
    bullmqEndToEndPerSec: bull.endToEndPerSec,
    meshrunSubmitPerSec: mesh.submitPerSec,
    meshrunEndToEndPerSec: mesh.endToEndPerSec,
    // When meshrun did not finish within BENCH_TIMEOUT_MS, its end-to-end rate is NaN; this is its rate so far.
    meshrunCompletedAll: mesh.completed === TASKS,
    meshrunCompletedPerSecSoFar: mesh.completedPerSecSoFar,
    submitRatio: ratio(mesh.submitPerSec, bull.submitPerSec),
    endToEndRatio: ratio(mesh.endToEndPerSec, bull.endToEndPerSec),
    endToEndTarget: 0.5,
    bullmq: bull,
    meshrun: mesh,
  };
}

if (import.meta.main) {
  const r = await benchBullmq();
  console.table(
    Object.fromEntries(
      Object.entries(r).map(([k, v]) => [k, { value: typeof v === 'object' ? JSON.stringify(v) : v }]),
    ),
  );
  console.log(JSON.stringify(r));
  process.exit(0);
}
