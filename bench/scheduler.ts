/**
 * Scheduler benchmark: one scheduling round placing 100,000 queued tasks on 1,000 simulated heterogeneous
 * nodes (target ≤ 10 s). Deterministic inputs (seeded PRNG), so runs are comparable.
 *
 * Run alone: `npx node bench/scheduler.ts` (prints a table and a JSON line).
 */
import { schedule } from '../core/src/jobs/scheduler.ts';
import { JobStateMachine } from '../core/src/jobs/state-machine.ts';
import type { QueuedTask, RunningTask, SchedulerNode } from '../core/src/jobs/types.ts';

const GiB = 1024 ** 3;
const NODE_COUNT = 1_000;
const TASK_COUNT = 100_000;
const JOB_COUNT = 400;
const SUBMITTER_COUNT = 25;
const TARGET_MS = 10_000;

/** mulberry32: small, fast, seeded. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function benchNodes(count: number, seed = 1): SchedulerNode[] {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const nodes: SchedulerNode[] = [];
  for (let i = 0; i < count; i++) {
    const cpus = pick([2, 4, 8, 16, 32, 64, 128]);
    const gpuKind = rnd() < 0.15 ? pick(['nvidia', 'amd']) : null;
    const gpus =
      gpuKind === null
        ? []
        : Array.from({ length: pick([1, 2, 4, 8]) }, () => ({
            vendor: gpuKind,
            model: gpuKind === 'nvidia' ? 'A100' : 'MI250',
            vramBytes: pick([16, 24, 40, 80]) * GiB,
          }));
    const r = rnd();
    nodes.push({
      id: `node-${String(i).padStart(4, '0')}`,
      up: r > 0.03,
      mode: r > 0.06 ? 'active' : r > 0.045 ? 'paused' : 'draining',
      capacity: {
        cpus,
        memoryBytes: cpus * pick([2, 4, 8]) * GiB,
        diskBytes: pick([100, 500, 2000]) * GiB,
        gpus,
      },
      maxConcurrent: cpus * 2,
      arch: rnd() < 0.8 ? 'x64' : 'arm64',
      os: rnd() < 0.9 ? 'linux' : 'darwin',
      labels: { zone: pick(['a', 'b', 'c']), ...(rnd() < 0.2 ? { ssd: 'true' } : {}) },
      docker: rnd() < 0.85,
      executors: rnd() < 0.85 ? ['docker', 'wasm'] : ['wasm'],
    });
  }
  return nodes;
}

export function benchTasks(count: number, jobs: number, submitters: number, seed = 2): QueuedTask[] {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const tasks: QueuedTask[] = [];
  const perJob = Math.ceil(count / jobs);
  for (let j = 0; tasks.length < count; j++) {
    const gpu = rnd() < 0.1;
    const executor = gpu || rnd() < 0.7 ? 'docker' : 'wasm';
    // One resources/constraints object per job, shared by its tasks, as the state machine hands them out.
    const resources = {
      cpus: pick([0.25, 0.5, 1, 2, 4]),
      memoryBytes: pick([0.25, 0.5, 1, 2, 4]) * GiB,
      ...(gpu
        ? { gpus: { count: pick([1, 1, 2]), vendor: 'nvidia', minVramBytes: pick([16, 40]) * GiB } }
        : {}),
    };
    const constraints = {
      ...(rnd() < 0.3 ? { arch: 'x64' } : {}),
      ...(rnd() < 0.2 ? { labels: { zone: pick(['a', 'b', 'c']) } } : {}),
    };
    const submitter = `user-${Math.floor(rnd() * submitters)}`;
    const priority = pick([10, 50, 50, 50, 90]);
    // A skewed job size: a few huge sweeps and many small jobs.
    const size = Math.min(
      count - tasks.length,
      j % 10 === 0 ? perJob * 6 : Math.max(1, Math.floor(perJob * 0.4)),
    );
    for (let k = 0; k < size; k++) {
      tasks.push({
        taskId: `job-${j}/${k}`,
        jobId: `job-${j}`,
        submitter,
        priority,
        executor,
        resources,
        constraints,
        notBefore: rnd() < 0.01 ? 2_000_000 : 0,
        nextAttempt: 1,
      });
    }
  }
  return tasks;
}

function timed<T>(fn: () => T): [T, number] {
  const started = performance.now();
  const value = fn();
  return [value, Math.round((performance.now() - started) * 10) / 10];
}

/** The headline case: a mixed, over-subscribed queue; most tasks wait because the cluster is full. */
function mixedRound(): Record<string, unknown> {
  const nodes = benchNodes(NODE_COUNT);
  const tasks = benchTasks(TASK_COUNT, JOB_COUNT, SUBMITTER_COUNT);
  // A tenth of the nodes already run something.
  const running: RunningTask[] = nodes
    .filter((_, i) => i % 10 === 0)
    .map((n) => ({ nodeId: n.id, resources: { cpus: 1, memoryBytes: GiB }, submitter: 'user-0' }));
  const activeSlots = nodes
    .filter((n) => n.up && n.mode === 'active')
    .reduce((sum, n) => sum + n.maxConcurrent, 0);

  // Warm-up on a small input so the timed round measures the algorithm, not JIT compilation.
  schedule({ now: 1_000_000, nodes: nodes.slice(0, 50), tasks: tasks.slice(0, 2_000), running: [] });

  const [result, elapsedMs] = timed(() => schedule({ now: 1_000_000, nodes, tasks, running }));
  const reasons = new Map<string, number>();
  for (const u of result.unplaced) {
    const key = u.reason.replace(/\d+(\.\d+)?/g, 'N');
    reasons.set(key, (reasons.get(key) ?? 0) + 1);
  }
  const topReasons = [...reasons.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5);
  return {
    nodes: NODE_COUNT,
    activeSlots,
    queuedTasks: TASK_COUNT,
    jobs: JOB_COUNT,
    submitters: SUBMITTER_COUNT,
    placed: result.assignments.length,
    unplaced: result.unplaced.length,
    elapsedMs,
    tasksPerSecond: Math.round(TASK_COUNT / (elapsedMs / 1000)),
    placementsPerSecond: Math.round(result.assignments.length / (elapsedMs / 1000)),
    targetMs: TARGET_MS,
    withinTarget: elapsedMs <= TARGET_MS,
    topUnplacedReasons: Object.fromEntries(topReasons),
  };
}

/** Every one of the 100,000 small tasks fits somewhere: measures placements, not early exits. */
function allFitRound(): Record<string, unknown> {
  const nodes = benchNodes(NODE_COUNT).map((n) => ({
    ...n,
    up: true,
    mode: 'active' as const,
    maxConcurrent: 256,
  }));
  const tasks = benchTasks(TASK_COUNT, JOB_COUNT, SUBMITTER_COUNT, 3).map((t) => ({
    ...t,
    executor: 'wasm' as const,
    resources: { cpus: 0.01, memoryBytes: 16 * 1024 * 1024 },
    constraints: {},
    notBefore: 0,
  }));
  const [result, elapsedMs] = timed(() => schedule({ now: 1_000_000, nodes, tasks, running: [] }));
  return {
    placed: result.assignments.length,
    unplaced: result.unplaced.length,
    elapsedMs,
    placementsPerSecond: Math.round(result.assignments.length / (elapsedMs / 1000)),
  };
}

/** Adversarial grouping: 10,000 distinct task shapes, interleaved within every submitter's queue. */
function manyShapesRound(): Record<string, unknown> {
  const shapes = 10_000;
  const nodes = benchNodes(NODE_COUNT);
  const tasks: QueuedTask[] = [];
  for (let i = 0; i < TASK_COUNT; i++) {
    const s = i % shapes;
    tasks.push({
      taskId: `t${i}`,
      jobId: `j${s}`,
      submitter: `user-${s % SUBMITTER_COUNT}`,
      priority: 50,
      executor: 'wasm',
      resources: { cpus: 0.5 + (s % 4) * 0.5, memoryBytes: GiB + s * 4096 },
      constraints: {},
      notBefore: 0,
      nextAttempt: 1,
    });
  }
  const [result, elapsedMs] = timed(() => schedule({ now: 0, nodes, tasks, running: [] }));
  return { shapes, placed: result.assignments.length, unplaced: result.unplaced.length, elapsedMs };
}

/** The leader's whole tick around the scheduler: state machine reads, assign commands applied, snapshots. */
function stateMachineRound(): Record<string, unknown> {
  const sm = new JobStateMachine();
  const jobs = 10;
  const perJob = TASK_COUNT / jobs;
  const [, submitMs] = timed(() => {
    for (let j = 0; j < jobs; j++) {
      const result = sm.apply({
        type: 'submitJob',
        jobId: `job-${j}`,
        spec: {
          name: `sweep ${j}`,
          executor: 'docker',
          image: 'meshrun-test/busybox:1',
          command: ['sh', '-c', 'echo $i'],
          resources: { cpus: 0.25, memoryBytes: 256 * 1024 * 1024 },
          params: { i: { from: 1, to: perJob } },
          retry: { maxAttempts: 3, backoffMs: 1000 },
        },
        submitter: `user-${j % 3}`,
        at: 1_000 + j,
      });
      if (!result.ok) throw new Error(result.error);
    }
  });
  const nodes = benchNodes(NODE_COUNT).map((n) => ({
    ...n,
    executors: ['docker' as const, 'wasm' as const],
    docker: true,
  }));
  const [queued, queuedTasksMs] = timed(() => sm.queuedTasks());
  const [result, scheduleMs] = timed(() =>
    schedule({ now: 10_000, nodes, tasks: queued, running: sm.runningTasks() }),
  );
  const [applied, applyAssignsMs] = timed(() => {
    let ok = 0;
    for (const cmd of sm.assignCommands(result.assignments, 10_000)) if (sm.apply(cmd).ok) ok++;
    return ok;
  });
  const [snapshot, snapshotMs] = timed(() => sm.snapshot());
  const [, restoreMs] = timed(() => new JobStateMachine().restore(snapshot));
  return {
    tasks: TASK_COUNT,
    submitMs,
    queuedTasksMs,
    scheduleMs,
    assignsApplied: applied,
    applyAssignsMs,
    snapshotBytes: snapshot.byteLength,
    snapshotMs,
    restoreMs,
  };
}

export async function benchScheduler(): Promise<Record<string, unknown>> {
  return {
    ...mixedRound(),
    allFit: allFitRound(),
    manyShapes: manyShapesRound(),
    stateMachine: stateMachineRound(),
  };
}

if (import.meta.main) {
  const result = await benchScheduler();
  const table = (title: string, r: Record<string, unknown>) => {
    const rows = Object.entries(r).filter(([, v]) => typeof v !== 'object');
    const width = Math.max(...rows.map(([k]) => k.length));
    console.log(title);
    for (const [k, v] of rows) console.log(`  ${k.padEnd(width)}  ${v}`);
  };
  table('scheduler: 100,000 queued tasks, 1,000 heterogeneous nodes (over-subscribed)', result);
  console.log('  top unplaced reasons:');
  for (const [k, v] of Object.entries(result.topUnplacedReasons as Record<string, number>))
    console.log(`    ${v}  ${k}`);
  table('scheduler: 100,000 small tasks that all fit', result.allFit as Record<string, unknown>);
  table('scheduler: 100,000 tasks in 10,000 distinct shapes', result.manyShapes as Record<string, unknown>);
  table(
    'leader tick with the job state machine (100,000 tasks)',
    result.stateMachine as Record<string, unknown>,
  );
  console.log(JSON.stringify(result));
}
