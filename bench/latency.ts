/**
 * Start-up latency, side by side in one run: from submitting a one-task Docker job to a 3-node meshrun cluster
 * on loopback until the container's first output line arrives, against a bare `docker run --rm` of the same
 * image, command and limits. BENCH_RUNS rounds (default 30), interleaved so load drift hits all three alike:
 *
 * - docker: spawn `docker run --rm …` → its first stdout byte.
 * - docker API: the engine alone through dockerode, as meshrun's executor reaches it (create, attach, start).
 * - meshrun (in-process): one P2pClient kept open; t0 before `jobs.submit`, then `logs.stream {follow}` on the
 *   task → the first stdout item. Also split into submit ack, container started (the task's `startedAt`
 *   from the log) and first output.
 * - meshrun CLI: spawn `meshrun --peer … run IMAGE -- CMD` → its first stdout byte (includes Node start-up,
 *   module loading and the libp2p dial of a fresh process); `meshrun --help` alone gives the start-up part.
 *
 * Overhead = meshrun p50/p99 − docker p50/p99 (target ≤ 100 ms). Run alone: `npx node bench/latency.ts`.
 */
import { spawn } from 'node:child_process';
import Docker from 'dockerode';
import { P2pClient } from '../apps/headless/src/client.ts';
import { childEnv, MESHRUN_CLI, NODE_BIN, newLoopbackCluster } from '../apps/headless/src/local-cluster.ts';
import { waitForCluster } from './bullmq.ts';

const RUNS = Math.max(1, Number(process.env.BENCH_RUNS ?? 30));
const IMAGE = 'meshrun-test/busybox:1';
const COMMAND = ['echo', 'meshrun-latency-ready'];
const CPUS = 0.5;
const MEMORY_BYTES = 64 * 1024 * 1024;
/** One round of one variant gives up after this long. */
const RUN_TIMEOUT_MS = 60_000;
/** Output kept from a spawned process (only the first bytes matter; the rest is drained). */
const MAX_CAPTURE_BYTES = 4096;

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! * 10) / 10;
}

function stats(values: number[]): { p50: number; p99: number; min: number; n: number } {
  const s = [...values].sort((a, b) => a - b);
  return { p50: pct(s, 50), p99: pct(s, 99), min: pct(s, 0), n: s.length };
}

/** Spawns a command and resolves with the ms until its first stdout byte (then lets it finish, bounded). */
function timeToFirstStdout(cmd: string, args: string[], env?: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(env ? { env } : {}) });
    let first: number | null = null;
    let stderr = '';
    const timer = setTimeout(() => proc.kill('SIGKILL'), RUN_TIMEOUT_MS);
    proc.stdout.on('data', () => {
      first ??= performance.now() - t0;
    });
    proc.stderr.on('data', (d: Buffer) => {
      if (stderr.length < MAX_CAPTURE_BYTES) stderr += d.toString();
    });
    proc.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    proc.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0 && first !== null) resolve(first);
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr.slice(0, 500)}`));
    });
  });
}

/**
 * The engine alone, as meshrun's executor reaches it (Docker API, no CLI process): create → attach → start →
 * the first stdout bytes; then wait and remove. Separates the docker CLI's own cost from the engine's.
 */
async function dockerApiRound(docker: Docker): Promise<number> {
  const t0 = performance.now();
  const container = await docker.createContainer({
    Image: IMAGE,
    Cmd: COMMAND,
    AttachStdout: true,
    AttachStderr: true,
    NetworkDisabled: true,
    HostConfig: {
      NanoCpus: Math.round(CPUS * 1e9),
      Memory: MEMORY_BYTES,
      LogConfig: { Type: 'none', Config: {} },
    },
  });
  try {
    const attached = (await container.attach({
      stream: true,
      stdout: true,
      stderr: true,
    })) as NodeJS.ReadableStream;
    const first = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no output from the container')), RUN_TIMEOUT_MS);
      attached.once('data', () => {
        clearTimeout(timer);
        resolve(performance.now() - t0);
      });
    });
    // Handled here too: if start() throws first, a later timeout must not become an unhandled rejection
    // (that killed a whole bench run and left its daemons behind).
    first.catch(() => {});
    await container.start();
    const ms = await first;
    await container.wait();
    return ms;
  } finally {
    await container.remove({ force: true }).catch(() => {});
  }
}

interface MeshRound {
  totalMs: number;
  submitAckMs: number;
  /** t0 → the container's start as the executor reported it (wall clock; same machine). */
  startedMs: number | null;
}

async function meshRound(client: P2pClient): Promise<MeshRound> {
  const spec = {
    name: 'latency',
    executor: 'docker',
    image: IMAGE,
    command: COMMAND,
    resources: { cpus: CPUS, memoryBytes: MEMORY_BYTES },
  };
  const wall0 = Date.now();
  const t0 = performance.now();
  const { jobId } = (await client.call('jobs.submit', { spec }, { timeoutMs: RUN_TIMEOUT_MS })) as {
    jobId: string;
  };
  const submitAckMs = performance.now() - t0;
  let first: number | null = null;
  await client.call(
    'logs.stream',
    { taskId: `${jobId}/0`, follow: true },
    {
      timeoutMs: RUN_TIMEOUT_MS,
      onItem: (item) => {
        if (first === null && (item as { stream?: string }).stream === 'stdout')
          first = performance.now() - t0;
      },
    },
  );
  const job = (await client.call(
    'jobs.wait',
    { jobId, timeoutMs: RUN_TIMEOUT_MS },
    { timeoutMs: 70_000 },
  )) as {
    state: string;
    tasks: { startedAt: number | null; reason: string | null }[];
  };
  if (job.state !== 'succeeded' || first === null)
    throw new Error(`meshrun job ${jobId} ended ${job.state} (${job.tasks[0]?.reason ?? 'no output'})`);
  const startedAt = job.tasks[0]?.startedAt ?? null;
  return { totalMs: first, submitAckMs, startedMs: startedAt === null ? null : startedAt - wall0 };
}

export async function benchLatency(): Promise<Record<string, unknown>> {
  const c = await newLoopbackCluster({ prefix: 'meshrun-bench-latency-' });
  let client: P2pClient | null = null;
  try {
    for (const i of [0, 1, 2]) await c.start(i);
    client = await P2pClient.create(c.nodes[0]!.addr, c.clusterKey);
    await waitForCluster(c, client);
    const dockerArgs = [
      'run',
      '--rm',
      '--network',
      'none',
      '--cpus',
      String(CPUS),
      '--memory',
      String(MEMORY_BYTES),
      IMAGE,
      ...COMMAND,
    ];
    const cliArgs = [
      MESHRUN_CLI,
      '--peer',
      c.nodes[0]!.addr,
      '--cluster-key',
      c.clusterKey,
      'run',
      '--cpus',
      String(CPUS),
      '--memory',
      '64M',
      IMAGE,
      '--',
      ...COMMAND,
    ];
    const cliEnv = childEnv();
    const engine = new Docker();
    // Warm-up, not counted: image layers in the page cache, every daemon's Docker connection, JIT.
    await timeToFirstStdout('docker', dockerArgs);
    await dockerApiRound(engine);
    for (let i = 0; i < 3; i++) await meshRound(client);
    await timeToFirstStdout(NODE_BIN, cliArgs, cliEnv);

    const docker: number[] = [];
    const dockerApi: number[] = [];
    const mesh: MeshRound[] = [];
    const cli: number[] = [];
    const cliHelp: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      docker.push(await timeToFirstStdout('docker', dockerArgs));
      dockerApi.push(await dockerApiRound(engine));
      mesh.push(await meshRound(client));
      cli.push(await timeToFirstStdout(NODE_BIN, cliArgs, cliEnv));
      // The CLI's fixed cost: a Node process loading meshrun's modules, with no network at all.
      cliHelp.push(await timeToFirstStdout(NODE_BIN, [MESHRUN_CLI, '--help'], cliEnv));
    }
    const d = stats(docker);
    const a = stats(dockerApi);
    const m = stats(mesh.map((x) => x.totalMs));
    const k = stats(cli);
    const started = mesh.flatMap((x) => (x.startedMs === null ? [] : [x.startedMs]));
    const round = (x: number) => Math.round(x * 10) / 10;
    return {
      runs: RUNS,
      command: `${IMAGE} ${COMMAND.join(' ')}`,
      dockerRunP50Ms: d.p50,
      dockerRunP99Ms: d.p99,
      meshrunP50Ms: m.p50,
      meshrunP99Ms: m.p99,
      overheadP50Ms: round(m.p50 - d.p50),
      overheadP99Ms: round(m.p99 - d.p99),
      overheadTargetMs: 100,
      dockerApiP50Ms: a.p50,
      dockerApiP99Ms: a.p99,
      overheadVsDockerApiP50Ms: round(m.p50 - a.p50),
      overheadVsDockerApiP99Ms: round(m.p99 - a.p99),
      cliP50Ms: k.p50,
      cliP99Ms: k.p99,
      cliOverheadP50Ms: round(k.p50 - d.p50),
      cliStartupOnlyP50Ms: stats(cliHelp).p50,
      meshrunPhasesP50Ms: {
        submitAck: stats(mesh.map((x) => x.submitAckMs)).p50,
        containerStarted: stats(started).p50,
        firstOutput: m.p50,
      },
      docker: d,
      dockerApi: a,
      meshrun: m,
      cli: k,
    };
  } finally {
    await client?.close().catch(() => {});
    await c.destroy();
  }
}

if (import.meta.main) {
  const r = await benchLatency();
  console.table(
    Object.fromEntries(
      Object.entries(r).map(([k, v]) => [k, { value: typeof v === 'object' ? JSON.stringify(v) : v }]),
    ),
  );
  console.log(JSON.stringify(r));
  process.exit(0);
}
