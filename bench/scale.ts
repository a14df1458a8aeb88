/**
 * Scale benchmark: real `meshrun daemon` processes, one per network namespace (test/src harness), form a
 * cluster by themselves; one job of hosts × concurrency sleeping Docker containers is submitted to one node
 * and run to completion. Checked: every task succeeds exactly once (attempt outcomes from `meshrun status`),
 * and no node ever runs more containers than its `--max-concurrent` (sampled every second with `docker ps`
 * over the containers' `meshrun.node` label, and independently from the attempts' own start/end times).
 * Measured: wall time, time until every task had started, time until all were running at once (if ever),
 * peak daemon RSS (VmRSS of every daemon sampled every second).
 *
 * Default: 10 nodes × 60 = 600 containers of `sleep 60`, no retries (BENCH_SCALE_SLEEP_S, BENCH_SCALE_HOSTS,
 * BENCH_SCALE_CONCURRENCY, BENCH_SCALE_RETRIES change it). Needs root (namespaces) and Docker with
 * meshrun-test/busybox:1.
 * Run alone: `npx node bench/scale.ts`; or `npm run bench -- scale`.
 * The integration test test/integration/scale.netns.test.ts runs the same code at 5 × 12.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { LABEL_MANAGED, LABEL_NODE } from '../core/src/executors/docker.ts';
import { type Cluster, type ClusterNode, startCluster } from '../test/src/cluster.ts';
import { runCli, runCommand, StopWaiting, sleep, waitFor } from '../test/src/proc.ts';

const TEST_IMAGE = 'meshrun-test/busybox:1';
/** How often the sampler looks at `docker ps` and the daemons' RSS. */
export const SAMPLE_INTERVAL_MS = 1000;
/** Distinct failed-attempt reasons counted in the report. */
const MAX_REASONS_KEPT = 100;
/** Over-concurrency observations kept in the report (the count of all of them is kept too). */
const MAX_VIOLATIONS_KEPT = 50;
/** Tasks that did not succeed exactly once, listed in the report (the count of all of them is kept too). */
const MAX_BAD_TASKS_KEPT = 50;
/** Points of the running-containers timeline kept (one per sample; later samples only update the peak). */
const MAX_TIMELINE_POINTS = 3600;
/** Limit on one `docker ps` (it lists up to a few hundred containers; slow only when dockerd is swamped). */
const DOCKER_PS_TIMEOUT_MS = 20_000;
/** Limit on removing one node's leftover containers after a failed run (up to its concurrency of them). */
const DOCKER_RM_TIMEOUT_MS = 120_000;
/** `docker ps` output bound: one short peer id per running container. */
const DOCKER_PS_MAX_BYTES = 16 * 1024 * 1024;
/** Time the cluster has to form (leader, 3 voters, every other node a learner, every node in the table). */
const FORM_TIMEOUT_MS = 120_000;
/** Limit on one short CLI call (status, cluster, nodes) on a loaded machine. */
const CLI_TIMEOUT_MS = 60_000;
/**
 * A job that is unfinished while none of its containers has run for this long is stuck (a lost quorum, a
 * dead leader): the run stops there with diagnostics instead of waiting for the whole run timeout.
 */
const STALL_MS = 60_000;
/** Most daemon restarts while the cluster forms (restartCrashedDuringFormation). */
const MAX_FORMATION_RESTARTS = 3;
/** How often the watchdog looks for dead daemons and stalls. */
const WATCHDOG_INTERVAL_MS = 1000;

export interface ScaleOptions {
  /** Network / artifact folder name. */
  name: string;
  hosts: number;
  /** `--max-concurrent` of every node; the job has hosts × concurrency tasks. */
  concurrency: number;
  /** Each task runs `sleep sleepS`. */
  sleepS: number;
  /** CPU cores per task: small enough that `concurrency` tasks fit a node's offer (the machine has 2). */
  cpusPerTask?: number;
  /** Extra attempts per task after a failure or a lost node (`run --retries`); default 0. */
  retries?: number;
  /** Memory per task (CLI size syntax). */
  memory?: string;
  /** Limit on the whole run after submission; default sleep × 4 + 1 s per task + 3 min. */
  runTimeoutMs?: number;
  /**
   * Restart a daemon that dies while the cluster forms (at most MAX_FORMATION_RESTARTS times), as a service
   * manager would, and list it in the report; without it such a death fails the run. Deaths after formation
   * always fail the run.
   */
  restartCrashedDuringFormation?: boolean;
  /** Progress lines (bounded: one per phase plus one per 10 s while running). */
  log?: (line: string) => void;
}

export interface OverConcurrency {
  node: string;
  running: number;
  atMs: number;
}

export interface ScaleReport {
  hosts: number;
  concurrency: number;
  tasks: number;
  sleepS: number;
  retries: number;
  jobId: string;
  jobState: string;
  counts: Record<string, number>;
  attemptOutcomes: Record<string, number>;
  /** Daemons that died while the cluster formed and were restarted: host and the error it printed. */
  formationRestarts: { node: string; error: string }[];
  /** Daemons started → cluster formed with every node known. */
  clusterFormMs: number;
  /** Submission (CLI start) → job finished (CLI returned). */
  wallMs: number;
  /** From the job's own timestamps: submitted → finished. */
  jobWallMs: number | null;
  /** Submission → the last task's first attempt started (from the attempts' start times). */
  allStartedMs: number | null;
  /** Submission → first sample with every task's container running at once; null if that never happened. */
  allRunningMs: number | null;
  /** Most containers of this cluster seen running in one sample. */
  peakRunning: number;
  /** Tasks whose attempts hold exactly one 'succeeded'. */
  succeededExactlyOnce: number;
  /** Tasks that did not (first MAX_BAD_TASKS_KEPT), with their attempts' outcomes. */
  notExactlyOnce: { taskId: string; state: string; outcomes: (string | null)[]; reasons: string[] }[];
  /** How many attempts ended for each reason other than success (e.g. "node … stopped heartbeating"). */
  attemptReasons: Record<string, number>;
  notExactlyOnceCount: number;
  /** Per node (host name): most containers seen running in one sample. */
  maxSampledPerNode: Record<string, number>;
  /** Per node: most attempts overlapping in time, from the attempts' start/end times in the job log. */
  maxOverlapPerNodeFromLog: Record<string, number>;
  /** Per node: successful attempts. */
  tasksPerNode: Record<string, number>;
  /** Samples where a node ran more containers than its concurrency (first MAX_VIOLATIONS_KEPT). */
  overConcurrency: OverConcurrency[];
  overConcurrencyCount: number;
  /** Per node: peak VmRSS in MiB. */
  peakRssMiBPerNode: Record<string, number>;
  peakRssMiB: number;
  /** Peak of the daemons' summed RSS in one sample. */
  peakTotalRssMiB: number;
  samples: number;
  /** Samples where `docker ps` failed or timed out (those seconds are not covered). */
  failedSamples: number;
  /** Longest gap between two successful docker samples (sampling under load is slower than 1 s). */
  maxSampleGapMs: number;
  /** Total running containers per sample: [ms since submission, running]. */
  timeline: [number, number][];
  artifactsDir: string;
}

// The parts of the CLI's JSON this benchmark reads (other fields are allowed and ignored).
const Time = z.number().nullable().optional();
const ClusterStatusSchema = z.looseObject({
  id: z.string(),
  leader: z.string().nullable(),
  voters: z.array(z.unknown()),
  learners: z.array(z.unknown()),
});
const AttemptSchema = z.looseObject({
  nodeId: z.string(),
  startedAt: Time,
  endedAt: Time,
  outcome: z.string().nullable(),
  reason: z.string().nullable().optional(),
});
const JobSchema = z.looseObject({
  jobId: z.string(),
  name: z.string(),
  state: z.string(),
  createdAt: Time,
  finishedAt: Time,
  counts: z.record(z.string(), z.number()).optional(),
  attemptOutcomes: z.record(z.string(), z.number()).optional(),
  tasks: z
    .array(z.looseObject({ taskId: z.string(), state: z.string(), attempts: z.array(AttemptSchema) }))
    .optional(),
});
type Job = z.infer<typeof JobSchema>;

async function cli(n: ClusterNode, args: readonly string[], timeoutMs = CLI_TIMEOUT_MS) {
  return runCli(['--data-dir', n.host.dataDir, ...args], { ns: n.host, timeoutMs });
}

/** Runs a CLI command with --json and validates its output against `schema`. */
async function cliJson<T>(
  n: ClusterNode,
  args: readonly string[],
  schema: z.ZodType<T>,
  timeoutMs = CLI_TIMEOUT_MS,
): Promise<T> {
  const r = await cli(n, [...args, '--json'], timeoutMs);
  if (r.code !== 0 || r.timedOut)
    throw new Error(
      `meshrun ${args.join(' ')} on ${n.host.name} failed (code ${r.code}): ${r.stderr.trim()}`,
    );
  return schema.parse(JSON.parse(r.stdout));
}

/** Running containers per `meshrun.node` label value (one `docker ps`, so one consistent snapshot). */
function dockerRunningByNode(): Promise<Map<string, number>> {
  return new Promise((resolve, reject) => {
    execFile(
      'docker',
      ['ps', '--filter', `label=${LABEL_MANAGED}=true`, '--format', `{{.Label "${LABEL_NODE}"}}`],
      { timeout: DOCKER_PS_TIMEOUT_MS, maxBuffer: DOCKER_PS_MAX_BYTES },
      (err, stdout) => {
        if (err) return reject(err);
        const counts = new Map<string, number>();
        for (const line of stdout.split('\n')) {
          const id = line.trim();
          if (id) counts.set(id, (counts.get(id) ?? 0) + 1);
        }
        resolve(counts);
      },
    );
  });
}

/** Force-removes every container labelled with one of these node ids (bounded by the ids given). */
async function removeContainersOf(nodeIds: readonly string[]): Promise<void> {
  for (const id of nodeIds) {
    const ls = await runCommand('docker', ['ps', '-aq', '--filter', `label=${LABEL_NODE}=${id}`], {
      timeoutMs: DOCKER_PS_TIMEOUT_MS,
    });
    const containers = ls.stdout.split('\n').filter((x) => /^[0-9a-f]+$/.test(x.trim()));
    if (containers.length > 0)
      await runCommand('docker', ['rm', '-f', ...containers], { timeoutMs: DOCKER_RM_TIMEOUT_MS });
  }
}

/** VmRSS of a process in KiB, or undefined when it is gone. */
function rssKiB(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Samples, once per SAMPLE_INTERVAL_MS until stopped: running containers per node of this cluster (others'
 * containers on the same engine are ignored by peer id) and every daemon's RSS. Keeps aggregates only.
 */
class Sampler {
  readonly maxPerNode = new Map<string, number>();
  readonly peakRssKiB = new Map<string, number>();
  readonly violations: OverConcurrency[] = [];
  readonly timeline: [number, number][] = [];
  violationCount = 0;
  peakRunning = 0;
  peakTotalRssKiB = 0;
  allRunningMs: number | null = null;
  samples = 0;
  failedSamples = 0;
  maxGapMs = 0;
  lastRunning = 0;
  /** performance.now() of the last sample that saw a container of this cluster running (0: none yet). */
  lastBusyAt = 0;
  #stopped = false;
  #loop: Promise<void> | undefined;
  #t0 = 0;
  readonly #nodes: readonly ClusterNode[];
  readonly #nameById: Map<string, string>;
  readonly #cap: number;
  readonly #tasks: number;

  constructor(nodes: readonly ClusterNode[], nameById: Map<string, string>, cap: number, tasks: number) {
    this.#nodes = nodes;
    this.#nameById = nameById;
    this.#cap = cap;
    this.#tasks = tasks;
    for (const n of nodes) this.maxPerNode.set(n.host.name, 0);
  }

  /** Starts sampling; times are reported relative to t0 (performance.now() at submission). */
  start(t0: number): void {
    this.#t0 = t0;
    this.#loop = this.#run();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#loop;
  }

  async #run(): Promise<void> {
    let lastOk = performance.now();
    while (!this.#stopped) {
      const started = performance.now();
      this.#sampleRss();
      try {
        const byId = await dockerRunningByNode();
        const now = performance.now();
        this.maxGapMs = Math.max(this.maxGapMs, Math.round(now - lastOk));
        lastOk = now;
        this.#record(byId, Math.round(now - this.#t0));
      } catch {
        this.failedSamples += 1;
      }
      this.samples += 1;
      const wait = SAMPLE_INTERVAL_MS - (performance.now() - started);
      if (wait > 0 && !this.#stopped) await sleep(wait);
    }
  }

  #record(byId: Map<string, number>, atMs: number): void {
    let total = 0;
    for (const [id, running] of byId) {
      const node = this.#nameById.get(id);
      if (node === undefined) continue; // another cluster's container on the same engine
      total += running;
      if (running > (this.maxPerNode.get(node) ?? 0)) this.maxPerNode.set(node, running);
      if (running > this.#cap) {
        this.violationCount += 1;
        if (this.violations.length < MAX_VIOLATIONS_KEPT) this.violations.push({ node, running, atMs });
      }
    }
    this.lastRunning = total;
    if (total > 0) this.lastBusyAt = performance.now();
    this.peakRunning = Math.max(this.peakRunning, total);
    if (this.allRunningMs === null && total >= this.#tasks) this.allRunningMs = atMs;
    if (this.timeline.length < MAX_TIMELINE_POINTS) this.timeline.push([atMs, total]);
  }

  #sampleRss(): void {
    let total = 0;
    for (const n of this.#nodes) {
      const kib = rssKiB(n.proc.pid);
      if (kib === undefined) continue;
      total += kib;
      if (kib > (this.peakRssKiB.get(n.host.name) ?? 0)) this.peakRssKiB.set(n.host.name, kib);
    }
    this.peakTotalRssKiB = Math.max(this.peakTotalRssKiB, total);
  }
}

/** Most intervals [start, end) open at once (ends sort before starts at the same instant). */
export function maxOverlap(intervals: readonly [number, number][]): number {
  const events: [number, number][] = [];
  for (const [s, e] of intervals) events.push([s, 1], [e, -1]);
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let open = 0;
  let max = 0;
  for (const [, d] of events) {
    open += d;
    max = Math.max(max, open);
  }
  return max;
}

/** A description of every daemon that has exited (with its log tail), or null while all run. */
function deadDaemons(cluster: Cluster): string | null {
  const dead = cluster.nodes.filter((n) => n.proc.exitInfo !== undefined);
  if (dead.length === 0) return null;
  return dead
    .map(
      (n) =>
        `${n.host.name} exited (code ${n.proc.exitInfo!.code} signal ${n.proc.exitInfo!.signal}):\n${n.logTail(3000)}`,
    )
    .join('\n');
}

/** For waitFor predicates: stop waiting at once when a daemon died (it will not answer). */
function stopIfDead(cluster: Cluster): void {
  const dead = deadDaemons(cluster);
  if (dead) throw new StopWaiting(`a daemon exited: ${dead}`);
}

/** The first error line a dead daemon printed (its uncaught exception), for the report. */
function crashLine(n: ClusterNode): string {
  const tail = n.logTail(8000);
  const m = /^\w*Error[^\n]*$/m.exec(tail);
  return `${m ? m[0] : tail.slice(-300)} (code ${n.proc.exitInfo?.code} signal ${n.proc.exitInfo?.signal})`;
}

/**
 * Resolves never; rejects when a daemon exits or the job stalls (see STALL_MS), whichever comes first, or
 * stops quietly once `done` is aborted. Checks every WATCHDOG_INTERVAL_MS; bounded by the run's lifetime.
 */
async function watchdog(
  cluster: Cluster,
  sampler: Sampler,
  isUnfinished: () => Promise<string | null>,
  done: AbortSignal,
): Promise<never> {
  while (!done.aborted) {
    await sleep(WATCHDOG_INTERVAL_MS);
    if (done.aborted) break;
    const dead = deadDaemons(cluster);
    if (dead) throw new Error(`a daemon exited during the run: ${dead}`);
    if (sampler.lastBusyAt > 0 && performance.now() - sampler.lastBusyAt > STALL_MS) {
      const state = await isUnfinished();
      if (state !== null)
        throw new Error(
          `no container of the job has run for ${STALL_MS} ms but the job is unfinished: ${state}`,
        );
      sampler.lastBusyAt = performance.now(); // finished: the CLI is about to return
    }
  }
  return new Promise<never>(() => {});
}

const mib = (kib: number) => Math.round(kib / 102.4) / 10;

/** Starts the cluster, runs the job to completion, tears everything down and returns the measurements. */
export async function runScale(opts: ScaleOptions): Promise<ScaleReport> {
  const log = opts.log ?? (() => {});
  const tasks = opts.hosts * opts.concurrency;
  const runTimeoutMs = opts.runTimeoutMs ?? opts.sleepS * 4000 + tasks * 1000 + 180_000;
  const dir = mkdtempSync(join(tmpdir(), 'meshrun-scale-'));
  const keyFile = join(dir, 'cluster.key');
  const kg = await runCli(['keygen', keyFile]);
  if (kg.code !== 0) throw new Error(`meshrun keygen failed: ${kg.stderr}`);

  const tStart = performance.now();
  let c: Cluster | undefined;
  let sampler: Sampler | undefined;
  let nameById = new Map<string, string>();
  const formationRestarts: ScaleReport['formationRestarts'] = [];
  try {
    c = await startCluster({
      name: opts.name,
      hosts: opts.hosts,
      daemonArgs: (host) => [
        '--data-dir',
        host.dataDir,
        '--cluster-key',
        keyFile,
        '--listen',
        `/ip4/${host.ip}/tcp/4801`,
        '--label',
        `host=${host.name}`,
        '--max-concurrent',
        String(opts.concurrency),
      ],
      readyLog: /listening on/,
      readyTimeoutMs: 60_000,
    });
    const cluster = c;
    log(`${opts.hosts} daemons up; artifacts in ${cluster.network.artifactsDir}`);
    /** While forming: restart dead daemons if allowed (bounded), else stop waiting at once. */
    const handleDeaths = async () => {
      if (!opts.restartCrashedDuringFormation) return stopIfDead(cluster);
      for (const n of cluster.nodes) {
        if (n.proc.exitInfo === undefined) continue;
        if (formationRestarts.length >= MAX_FORMATION_RESTARTS) stopIfDead(cluster);
        formationRestarts.push({ node: n.host.name, error: crashLine(n) });
        log(`${n.host.name} died while forming (${crashLine(n)}); restarting it`);
        await n.restart();
      }
    };

    // Every node's peer id (docker labels and task records name nodes by it).
    nameById = new Map<string, string>();
    for (const n of cluster.nodes) {
      const s = await waitFor(
        async () => {
          await handleDeaths();
          return cliJson(n, ['cluster', '--local'], ClusterStatusSchema);
        },
        {
          timeoutMs: FORM_TIMEOUT_MS,
          intervalMs: 1000,
          description: `${n.host.name} to answer`,
        },
      );
      nameById.set(s.id, n.host.name);
    }
    const submitter = cluster.nodes[0]!;
    await waitFor(
      async () => {
        await handleDeaths();
        const s = await cliJson(submitter, ['cluster'], ClusterStatusSchema);
        const members = s.voters.length + s.learners.length;
        if (!s.leader || s.voters.length !== Math.min(3, opts.hosts) || members !== opts.hosts) return false;
        const nodes = await cliJson(submitter, ['nodes'], z.array(z.unknown()));
        return nodes.length >= opts.hosts;
      },
      {
        timeoutMs: FORM_TIMEOUT_MS,
        intervalMs: 1000,
        description: `a cluster of ${opts.hosts} members with one leader, every node in the node table`,
      },
    );
    const clusterFormMs = Math.round(performance.now() - tStart);
    log(`cluster formed in ${clusterFormMs} ms`);

    sampler = new Sampler(cluster.nodes, nameById, opts.concurrency, tasks);
    const jobName = `scale-${opts.name}-${Date.now()}`;
    const t0 = performance.now();
    sampler.start(t0);
    const progress = setInterval(() => {
      log(
        `${Math.round((performance.now() - t0) / 1000)} s: ${sampler!.lastRunning} running, peak ${sampler!.peakRunning}`,
      );
    }, 10_000);
    // Not detached: the CLI submits and then waits on the node (jobs.wait) until the job ends, so no polling.
    const runP = cli(
      submitter,
      [
        'run',
        '--json',
        '--name',
        jobName,
        '--count',
        String(tasks),
        '--cpus',
        String(opts.cpusPerTask ?? 0.01),
        '--memory',
        opts.memory ?? '8M',
        '--retries',
        String(opts.retries ?? 0),
        TEST_IMAGE,
        '--',
        'sleep',
        String(opts.sleepS),
      ],
      runTimeoutMs,
    );
    const watchdogDone = new AbortController();
    const unfinished = async (): Promise<string | null> => {
      const jobs = await cliJson(submitter, ['jobs', '--limit', '10'], z.array(JobSchema)).catch(() => null);
      const job = jobs?.find((j) => j.name === jobName);
      if (job && ['succeeded', 'failed', 'cancelled'].includes(job.state)) return null;
      return job ? `${job.state} ${JSON.stringify(job.counts)}` : 'job not readable (no quorum?)';
    };
    let run: Awaited<typeof runP>;
    try {
      run = await Promise.race([runP, watchdog(cluster, sampler, unfinished, watchdogDone.signal)]);
    } catch (e) {
      const why = `${(e as Error).message}\nafter ${Math.round(performance.now() - t0)} ms; peak running ${sampler.peakRunning}`;
      throw new Error(`${why}\n${cluster.diagnostics(1500)}`, { cause: e });
    } finally {
      watchdogDone.abort();
      clearInterval(progress);
    }
    const wallMs = Math.round(performance.now() - t0);
    await sampler.stop();
    if (run.timedOut || !run.stdout.trim()) {
      const jobs = await cliJson(submitter, ['jobs', '--limit', '10'], z.unknown()).catch(
        (e: Error) => e.message,
      );
      throw new Error(
        `the job did not finish within ${runTimeoutMs} ms (code ${run.code}): ${run.stderr.slice(-2000)}\n` +
          `jobs: ${JSON.stringify(jobs).slice(0, 4000)}\n${cluster.diagnostics(1500)}`,
      );
    }
    const ran = JobSchema.parse(JSON.parse(run.stdout));
    const jobId = ran.jobId;
    log(`job ${jobId} ${ran.state} after ${wallMs} ms`);
    // The summary (counts, attempt outcomes) and the full task list with every attempt, from another node.
    const reader = cluster.nodes[cluster.nodes.length - 1]!;
    const summary = (await cliJson(reader, ['jobs', '--limit', '10'], z.array(JobSchema))).find(
      (j) => j.jobId === jobId,
    );
    const status: Job = await cliJson(reader, ['status', jobId], JobSchema);
    const statusTasks = status.tasks ?? [];

    const notExactlyOnce: ScaleReport['notExactlyOnce'] = [];
    let notExactlyOnceCount = 0;
    let succeededExactlyOnce = 0;
    const tasksPerNode: Record<string, number> = {};
    const intervalsByNode = new Map<string, [number, number][]>();
    let lastFirstStart = Number.NEGATIVE_INFINITY;
    const attemptReasons = new Map<string, number>();
    const nodeName = (id: string) => nameById.get(id) ?? `unknown:${id}`;
    for (const n of cluster.nodes) tasksPerNode[n.host.name] = 0;
    for (const t of statusTasks) {
      const attempts = t.attempts;
      const outcomes = attempts.map((a) => a.outcome);
      const ok = attempts.filter((a) => a.outcome === 'succeeded');
      if (ok.length === 1 && t.state === 'succeeded') {
        succeededExactlyOnce += 1;
        const name = nodeName(ok[0]!.nodeId);
        tasksPerNode[name] = (tasksPerNode[name] ?? 0) + 1;
      } else {
        notExactlyOnceCount += 1;
        if (notExactlyOnce.length < MAX_BAD_TASKS_KEPT)
          notExactlyOnce.push({
            taskId: t.taskId,
            state: t.state,
            outcomes,
            reasons: attempts.map((a) => a.reason ?? ''),
          });
      }
      if (typeof attempts[0]?.startedAt === 'number')
        lastFirstStart = Math.max(lastFirstStart, attempts[0].startedAt);
      for (const a of attempts) {
        if (a.outcome !== 'succeeded' && attemptReasons.size < MAX_REASONS_KEPT) {
          // Node ids in reasons become host names, so equal causes on different nodes stay apart but readable.
          let why = `${a.outcome}: ${a.reason ?? ''}`;
          for (const [id, name] of nameById) why = why.replaceAll(id, name);
          attemptReasons.set(why, (attemptReasons.get(why) ?? 0) + 1);
        }
        if (typeof a.startedAt !== 'number' || typeof a.endedAt !== 'number') continue;
        const name = nodeName(a.nodeId);
        const list = intervalsByNode.get(name) ?? [];
        list.push([a.startedAt, a.endedAt]);
        intervalsByNode.set(name, list);
      }
    }
    // Tasks the status did not list at all count as failures too.
    const missing = tasks - statusTasks.length;
    if (missing > 0) notExactlyOnceCount += missing;
    const maxOverlapPerNodeFromLog: Record<string, number> = {};
    for (const n of cluster.nodes) maxOverlapPerNodeFromLog[n.host.name] = 0;
    for (const [name, list] of intervalsByNode) maxOverlapPerNodeFromLog[name] = maxOverlap(list);

    const createdAt = typeof status.createdAt === 'number' ? status.createdAt : null;
    const finishedAt = typeof status.finishedAt === 'number' ? status.finishedAt : null;
    const peakRssMiBPerNode = Object.fromEntries([...sampler.peakRssKiB].map(([k, v]) => [k, mib(v)]));
    return {
      hosts: opts.hosts,
      concurrency: opts.concurrency,
      tasks,
      sleepS: opts.sleepS,
      retries: opts.retries ?? 0,
      jobId,
      jobState: status.state,
      counts: summary?.counts ?? status.counts ?? {},
      attemptOutcomes: summary?.attemptOutcomes ?? {},
      formationRestarts,
      clusterFormMs,
      wallMs,
      jobWallMs: createdAt !== null && finishedAt !== null ? finishedAt - createdAt : null,
      allStartedMs:
        createdAt !== null && Number.isFinite(lastFirstStart) && notExactlyOnceCount < tasks
          ? lastFirstStart - createdAt
          : null,
      allRunningMs: sampler.allRunningMs,
      peakRunning: sampler.peakRunning,
      succeededExactlyOnce,
      notExactlyOnce,
      notExactlyOnceCount,
      attemptReasons: Object.fromEntries(attemptReasons),
      maxSampledPerNode: Object.fromEntries(sampler.maxPerNode),
      maxOverlapPerNodeFromLog,
      tasksPerNode,
      overConcurrency: sampler.violations,
      overConcurrencyCount: sampler.violationCount,
      peakRssMiBPerNode,
      peakRssMiB: Math.max(0, ...Object.values(peakRssMiBPerNode)),
      peakTotalRssMiB: mib(sampler.peakTotalRssKiB),
      samples: sampler.samples,
      failedSamples: sampler.failedSamples,
      maxSampleGapMs: sampler.maxGapMs,
      timeline: sampler.timeline,
      artifactsDir: cluster.network.artifactsDir,
    };
  } finally {
    await sampler?.stop();
    await c?.destroy();
    // A daemon that died (or was stopped mid-run) leaves its containers running; remove this run's only.
    await removeContainersOf([...nameById.keys()]);
    rmSync(dir, { recursive: true, force: true });
  }
}

function envInt(name: string, dflt: number, min = 1): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name}=${v} is not an integer >= ${min}`);
  return n;
}

/** The 10 × 60 run (env BENCH_SCALE_HOSTS, BENCH_SCALE_CONCURRENCY, BENCH_SCALE_SLEEP_S, BENCH_SCALE_RETRIES override). */
export async function benchScale(): Promise<Record<string, unknown>> {
  const r = await runScale({
    name: 'scale',
    hosts: envInt('BENCH_SCALE_HOSTS', 10),
    concurrency: envInt('BENCH_SCALE_CONCURRENCY', 60),
    sleepS: envInt('BENCH_SCALE_SLEEP_S', 60),
    retries: envInt('BENCH_SCALE_RETRIES', 0, 0),
    restartCrashedDuringFormation: true,
    log: (line) => console.error(`[scale] ${line}`),
  });
  const maxSampled = Math.max(0, ...Object.values(r.maxSampledPerNode));
  const maxFromLog = Math.max(0, ...Object.values(r.maxOverlapPerNodeFromLog));
  const perNode = Object.values(r.tasksPerNode);
  return {
    setup: `${r.hosts} nodes × --max-concurrent ${r.concurrency}, ${r.tasks} × sleep ${r.sleepS} s, --retries ${r.retries}`,
    clusterFormS: r.clusterFormMs / 1000,
    daemonRestartsWhileForming: r.formationRestarts.length,
    wallS: r.wallMs / 1000,
    jobWallS: r.jobWallMs === null ? null : r.jobWallMs / 1000,
    allStartedS: r.allStartedMs === null ? null : r.allStartedMs / 1000,
    allRunningS: r.allRunningMs === null ? 'never all at once' : r.allRunningMs / 1000,
    peakRunning: r.peakRunning,
    succeededExactlyOnce: `${r.succeededExactlyOnce}/${r.tasks}`,
    maxRunningPerNode: `sampled ${maxSampled}, from attempt times ${maxFromLog} (cap ${r.concurrency})`,
    tasksPerNode: `min ${Math.min(...perNode)} max ${Math.max(...perNode)}`,
    failedAttempts: r.attemptReasons,
    peakDaemonRssMiB: `max ${r.peakRssMiB}, all daemons together ${r.peakTotalRssMiB}`,
    sampling: `${r.samples} samples, ${r.failedSamples} failed, longest gap ${r.maxSampleGapMs} ms`,
    checks: {
      exactlyOnce: r.succeededExactlyOnce === r.tasks && r.notExactlyOnceCount === 0 ? 'met' : 'MISSED',
      concurrencySampled: r.overConcurrencyCount === 0 && maxSampled <= r.concurrency ? 'met' : 'MISSED',
      concurrencyFromAttemptTimes: maxFromLog <= r.concurrency ? 'met' : 'MISSED',
      everyNodeWorked: perNode.every((n) => n > 0) ? 'met' : 'MISSED',
    },
    raw: r,
  };
}

if (import.meta.main) {
  const r = await benchScale();
  console.table(
    Object.fromEntries(
      Object.entries(r)
        .filter(([k]) => k !== 'raw')
        .map(([k, v]) => [k, { value: typeof v === 'object' ? JSON.stringify(v) : v }]),
    ),
  );
  console.log(JSON.stringify(r));
  process.exit(0);
}
