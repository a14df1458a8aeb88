/**
 * The replicated job state machine: every node applies the same committed Raft log entries in the same
 * order through `apply`, and so holds the same jobs and tasks. It is pure and deterministic: no clock, no
 * randomness, no I/O — times and ids arrive inside the commands (`at` is the leader's timestamp).
 *
 * Fencing: each assignment of a task carries an attempt number (previous + 1). Every later report about
 * that run (started, finished, requeue) must carry the same number while that attempt is live; anything
 * else is refused as stale, so a node presumed dead that comes back cannot overwrite a newer attempt — the
 * caller gets `stale: true` and should stop that container.
 */

import { createHash } from 'node:crypto';
import { z } from 'zod';
import { decode, encode, ProtocolError } from '../../../protocol/src/codec.ts';
import {
  type AssignCommand,
  type CancelJobCommand,
  JOB_LIMITS,
  type JobCommand,
  JobCommandSchema,
  type JobSpec,
  JobSpecSchema,
  type NodeMode,
  NodeModeSchema,
  paramsForIndex,
  type RequeueCommand,
  type SetNodeModeCommand,
  type SubmitJobCommand,
  type TaskFinishedCommand,
  type TaskOutcome,
  type TaskStartedCommand,
  type TaskUsage,
  TaskUsageSchema,
  taskCountOf,
  taskEnv,
  taskIdOf,
} from '../../../protocol/src/job.ts';
import type { Assignment, QueuedTask, RunningTask } from './types.ts';

/** Bounds on what the replicated state may hold, so a busy cluster cannot grow it without limit. */
export const STATE_LIMITS = {
  /** Tasks not yet finished (queued, assigned, running) across the cluster; further submits are refused. */
  maxActiveTasks: 500_000,
  /** Jobs not yet finished across the cluster; further submits are refused. */
  maxActiveJobs: 20_000,
  /**
   * Inline WASM module bytes held by unfinished jobs. A finished job keeps only the module's sha-256, so
   * retained history does not hold modules.
   */
  maxActiveWasmBytes: 512 * 1024 * 1024,
  /** Finished (succeeded / failed / cancelled) jobs kept for inspection; the oldest finished are dropped. */
  maxRetainedFinishedJobs: 10_000,
  /** Tasks of finished jobs kept; the oldest finished jobs are dropped beyond this too. */
  maxRetainedFinishedTasks: 200_000,
  /** Nodes with a non-default mode recorded (active is the default and is not stored). */
  maxNodeModes: 10_000,
  /** Characters of stdout/stderr tail kept per task (the latest attempt's; commands may carry 64 KiB). */
  storedTailChars: 16 * 1024,
  /** Largest snapshot `restore` accepts. */
  maxSnapshotBytes: 1024 * 1024 * 1024,
} as const;

const SNAPSHOT_VERSION = 1;
/** Queued tasks finish-and-take-next looks at for one out of retry backoff (keeps an apply O(1)). */
const TAKE_NEXT_SCAN = 16;
/** Scheduling classes with queued work beyond which finish-and-take-next leaves placing to the scheduler. */
const TAKE_NEXT_MAX_CLASSES = 64;

/** Moves one attempt of `job` from one outcome count to another (`from` null: a new attempt). */
function countAttempt(
  job: JobRecord,
  from: keyof AttemptOutcomeCounts | null,
  to: keyof AttemptOutcomeCounts,
): void {
  const c = job.attemptOutcomes;
  if (from !== null) {
    const left = (c[from] ?? 1) - 1;
    if (left > 0) c[from] = left;
    else delete c[from]; // only outcomes that occur are listed
  }
  c[to] = (c[to] ?? 0) + 1;
}

/** An open attempt that is undone (see requeue's neverStarted) leaves no trace in the counts. */
function uncountOpenAttempt(job: JobRecord): void {
  const c = job.attemptOutcomes;
  const left = (c.open ?? 1) - 1;
  if (left > 0) c.open = left;
  else delete c.open;
}

/** The scheduler's fairness class of a job: who submitted it, at which priority. */
function classOf(job: JobRecord): string {
  return `${job.spec.priority}\u0000${job.submitter}`;
}

function corrupt(what: string): ProtocolError {
  return new ProtocolError('INVALID', `inconsistent job state snapshot: ${what}`);
}

export type TaskState = 'queued' | 'assigned' | 'running' | 'succeeded' | 'failed' | 'cancelled';
export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';
/** How an attempt ended: the node's outcome, or 'lost' (requeue: node gone) or 'cancelled' (job cancelled). */
export type AttemptOutcome = TaskOutcome | 'lost' | 'cancelled';

const TASK_STATES: readonly TaskState[] = [
  'queued',
  'assigned',
  'running',
  'succeeded',
  'failed',
  'cancelled',
];

export interface AttemptRecord {
  attempt: number;
  nodeId: string;
  /** GPU indices reserved on the node, or null for CPU-only tasks. */
  gpus: number[] | null;
  assignedAt: number;
  startedAt: number | null;
  endedAt: number | null;
  exitCode: number | null;
  outcome: AttemptOutcome | null;
  reason: string | null;
  usage: TaskUsage | null;
}

export interface TaskRecord {
  id: string;
  jobId: string;
  index: number;
  state: TaskState;
  /** Number of the latest attempt (0 before the first assignment); the fencing token. */
  attempt: number;
  /** Earliest time the next attempt may be assigned (retry backoff); 0 when never delayed. */
  notBefore: number;
  /** Node of the live attempt (assigned or running), else null. */
  nodeId: string | null;
  attempts: AttemptRecord[];
  /** Output tails of the latest attempt that finished, cut to `STATE_LIMITS.storedTailChars`. */
  stdoutTail: string;
  stderrTail: string;
  updatedAt: number;
}

export type TaskCounts = Record<TaskState, number>;
/** Attempts of a job by how they ended; `open` for attempts not ended yet. */
export type AttemptOutcomeCounts = Partial<Record<AttemptOutcome | 'open', number>>;

interface JobRecord {
  id: string;
  /** Position in submission order (deterministic FIFO across the cluster). */
  seq: number;
  spec: JobSpec;
  submitter: string;
  submittedAt: number;
  /** Time of the first assignment, or null while no task was ever assigned. */
  startedAt: number | null;
  finishedAt: number | null;
  cancelledAt: number | null;
  cancelledBy: string | null;
  taskCount: number;
  counts: TaskCounts;
  /** Kept as attempts open and end, so readers checking exactly-once need not walk every task. */
  attemptOutcomes: AttemptOutcomeCounts;
}

export interface JobView {
  id: string;
  name: string;
  submitter: string;
  state: JobState;
  taskCount: number;
  counts: TaskCounts;
  attemptOutcomes: AttemptOutcomeCounts;
  submittedAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  cancelledAt: number | null;
  cancelledBy: string | null;
  spec: JobSpec;
}

/** Everything a node needs to run one attempt of a task. */
export interface TaskRunSpec {
  taskId: string;
  jobId: string;
  attempt: number;
  gpus: number[] | null;
  executor: JobSpec['executor'];
  image: string | undefined;
  wasm: JobSpec['wasm'];
  command: string[];
  entrypoint: string[] | undefined;
  env: Record<string, string>;
  workdir: string | undefined;
  resources: JobSpec['resources'];
  timeoutMs: number;
  network: boolean;
}

export interface JobFilter {
  state?: JobState;
  submitter?: string;
  /** Return at most this many (newest first when set). */
  limit?: number;
}

/** Things the glue should act on after a command applies. */
export type JobEffect =
  /** A live attempt was ended by the state machine (cancel): tell its node to stop the container. */
  | { type: 'stopTask'; taskId: string; nodeId: string; attempt: number }
  /** A task was assigned while applying another command (finish-and-take-next): its node starts it. */
  | { type: 'taskAssigned'; taskId: string; nodeId: string; attempt: number }
  /** A task went back to the queue (retry or node loss). */
  | { type: 'taskRequeued'; taskId: string; notBefore: number }
  | { type: 'jobFinished'; jobId: string; state: JobState }
  /** A finished job was dropped to keep the state within `STATE_LIMITS`. */
  | { type: 'jobEvicted'; jobId: string };

export type ApplyErrorCode =
  | 'INVALID'
  | 'NOT_FOUND'
  | 'DUPLICATE'
  | 'ILLEGAL_TRANSITION'
  | 'STALE_ATTEMPT'
  | 'NODE_UNAVAILABLE'
  | 'CAPACITY';

export type ApplyResult =
  | { ok: true; effects: JobEffect[] }
  | {
      ok: false;
      code: ApplyErrorCode;
      error: string;
      /** true when the command is about an attempt that is no longer current: stop that run. */
      stale: boolean;
    };

function fail(code: ApplyErrorCode, error: string): ApplyResult {
  return { ok: false, code, error, stale: code === 'STALE_ATTEMPT' };
}

/** Whether a task has ended for good (succeeded, failed or cancelled). */
export function isTerminal(state: TaskState): boolean {
  return state === 'succeeded' || state === 'failed' || state === 'cancelled';
}

function isLive(state: TaskState): boolean {
  return state === 'assigned' || state === 'running';
}

function emptyCounts(): TaskCounts {
  return { queued: 0, assigned: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
}

function freshTask(jobId: string, index: number, submittedAt: number): TaskRecord {
  return {
    id: taskIdOf(jobId, index),
    jobId,
    index,
    state: 'queued',
    attempt: 0,
    notBefore: 0,
    nodeId: null,
    attempts: [],
    stdoutTail: '',
    stderrTail: '',
    updatedAt: submittedAt,
  };
}

/** Untouched since submission: snapshots leave such tasks out (a 10,000-task sweep mostly waits). */
function isFresh(t: TaskRecord, submittedAt: number): boolean {
  return t.state === 'queued' && t.attempt === 0 && t.notBefore === 0 && t.updatedAt === submittedAt;
}

function inlineWasmBytes(spec: JobSpec): number {
  return spec.wasm?.bytes?.byteLength ?? 0;
}

/** A finished job's spec keeps its module's hash, not the module: nothing will run it again. */
function withoutWasmBytes(spec: JobSpec): JobSpec {
  const bytes = spec.wasm?.bytes;
  if (bytes === undefined) return spec;
  const sha256 = spec.wasm?.sha256 ?? createHash('sha256').update(bytes).digest('hex');
  return { ...spec, wasm: { sha256 } };
}

/** Keep the end of an output tail, never splitting a surrogate pair. */
function cutTail(s: string): string {
  if (s.length <= STATE_LIMITS.storedTailChars) return s;
  let start = s.length - STATE_LIMITS.storedTailChars;
  const c = s.charCodeAt(start);
  if (c >= 0xdc00 && c <= 0xdfff) start++;
  return s.slice(start);
}

/**
 * Attempts of a task that used up one of its job's `retry.maxAttempts`: all but the lost ones. A lost attempt
 * (its node went silent, stopped, or was drained past its deadline, so it handed the task back) says nothing
 * about the task: as with Nomad's replacement of lost allocations and Celery's redelivery after a worker is
 * lost, it does not count, or a volunteer closing a laptop would fail the jobs it ran. Every task is still
 * attempted at most JOB_LIMITS.maxAttempts times in all, lost ones included, so one whose runs keep taking their
 * nodes down ends anyway.
 */
export function countedAttempts(task: { attempts: readonly { outcome: string | null }[] }): number {
  let n = 0;
  for (const a of task.attempts) if (a.outcome !== 'lost') n++;
  return n;
}

/**
 * Whether a task may be attempted once more: fewer counted attempts than the job's `retry.maxAttempts`, and
 * fewer than JOB_LIMITS.maxAttempts in all. The one rule for both placing a task and re-queueing it.
 */
function hasAttemptsLeft(
  spec: JobSpec,
  task: { attempt: number; attempts: readonly { outcome: string | null }[] },
): boolean {
  return countedAttempts(task) < spec.retry.maxAttempts && task.attempt < JOB_LIMITS.maxAttempts;
}

/** Retry delay after a task's `failures`-th counted attempt (see countedAttempts): `backoffMs` doubling, capped. */
export function retryDelayMs(spec: JobSpec, failures: number): number {
  const base = spec.retry.backoffMs;
  if (base === 0) return 0;
  return Math.min(JOB_LIMITS.maxBackoffMs, base * 2 ** Math.min(30, Math.max(0, failures - 1)));
}

export function jobStateOf(job: {
  cancelledAt: number | null;
  startedAt: number | null;
  taskCount: number;
  counts: TaskCounts;
}): JobState {
  if (job.cancelledAt !== null) return 'cancelled';
  const c = job.counts;
  const terminal = c.succeeded + c.failed + c.cancelled;
  if (terminal === job.taskCount) return c.failed > 0 || c.cancelled > 0 ? 'failed' : 'succeeded';
  if (job.startedAt !== null || terminal > 0) return 'running';
  return 'queued';
}

// ---------------------------------------------------------------------------------------------------------
// Snapshot schema (restore validates what it reads: a snapshot may come from another node)

const NullableTime = z.number().int().nonnegative().nullable();
const AttemptRecordSchema = z.strictObject({
  attempt: z.number().int().min(1).max(JOB_LIMITS.maxAttempts),
  nodeId: z.string(),
  gpus: z.array(z.number().int().nonnegative()).nullable(),
  assignedAt: z.number().int().nonnegative(),
  startedAt: NullableTime,
  endedAt: NullableTime,
  exitCode: z.number().int().nullable(),
  outcome: z.enum(['succeeded', 'failed', 'timedOut', 'error', 'lost', 'cancelled']).nullable(),
  reason: z.string().nullable(),
  usage: TaskUsageSchema.nullable(),
});
const TaskRecordSchema = z.strictObject({
  id: z.string(),
  jobId: z.string(),
  index: z.number().int().nonnegative(),
  state: z.enum(TASK_STATES as [TaskState, ...TaskState[]]),
  attempt: z.number().int().min(0).max(JOB_LIMITS.maxAttempts),
  notBefore: z.number().int().nonnegative(),
  nodeId: z.string().nullable(),
  attempts: z.array(AttemptRecordSchema).max(JOB_LIMITS.maxAttempts),
  stdoutTail: z.string().max(STATE_LIMITS.storedTailChars),
  stderrTail: z.string().max(STATE_LIMITS.storedTailChars),
  updatedAt: z.number().int().nonnegative(),
});
const JobSnapshotSchema = z.strictObject({
  id: z.string(),
  seq: z.number().int().nonnegative(),
  spec: JobSpecSchema,
  submitter: z.string(),
  submittedAt: z.number().int().nonnegative(),
  startedAt: NullableTime,
  finishedAt: NullableTime,
  cancelledAt: NullableTime,
  cancelledBy: z.string().nullable(),
  /** Only tasks that changed since submission, by ascending index; the rest are rebuilt as fresh. */
  tasks: z.array(TaskRecordSchema).max(JOB_LIMITS.maxTasksPerJob),
});
const SnapshotSchema = z.strictObject({
  version: z.literal(SNAPSHOT_VERSION),
  nextSeq: z.number().int().nonnegative(),
  jobs: z.array(JobSnapshotSchema),
  finishedOrder: z.array(z.string()),
  nodeModes: z.array(z.tuple([z.string(), NodeModeSchema])).max(STATE_LIMITS.maxNodeModes),
});
type Snapshot = z.infer<typeof SnapshotSchema>;

// ---------------------------------------------------------------------------------------------------------

export class JobStateMachine {
  private jobsById = new Map<string, JobRecord>();
  private tasksById = new Map<string, TaskRecord>();
  /**
   * Queued task ids grouped by job (jobs with none are absent), each set in index order unless the job is in
   * `unorderedJobs` (a task came back to the queue): the next read sorts that one set once. The leader reads
   * the queue on every scheduling pass, so it must not sort the whole queue each time.
   */
  private queuedByJob = new Map<string, Set<string>>();
  /**
   * Jobs with queued tasks per scheduling class (submitter and priority, see classOf), and live tasks per
   * submitter: what finish-and-take-next needs to tell whether the scheduler would serve a job next.
   */
  private queuedJobsByClass = new Map<string, { priority: number; submitter: string; jobs: number }>();
  private liveBySubmitter = new Map<string, number>();
  private unorderedJobs = new Set<string>();
  /** Live (assigned or running) task ids per node. */
  private liveByNode = new Map<string, Set<string>>();
  /** Finished job ids, oldest first: the eviction order. */
  private finishedOrder: string[] = [];
  private finishedTaskTotal = 0;
  private activeTaskTotal = 0;
  private activeJobTotal = 0;
  private activeWasmBytes = 0;
  private modes = new Map<string, NodeMode>();
  private nextSeq = 0;

  /** Apply one committed command. Never throws for bad input: a refused command leaves the state unchanged. */
  apply(command: unknown): ApplyResult {
    const parsed = JobCommandSchema.safeParse(command);
    if (!parsed.success) {
      const first = parsed.error.issues[0];
      const where = first && first.path.length > 0 ? first.path.join('.') : '(root)';
      return fail('INVALID', `invalid command at ${where}: ${first?.message ?? 'does not match schema'}`);
    }
    return this.applyValid(parsed.data);
  }

  /** Apply a command already validated against JobCommandSchema (the log adapter parses each entry once). */
  applyValid(cmd: JobCommand): ApplyResult {
    switch (cmd.type) {
      case 'submitJob':
        return this.submitJob(cmd);
      case 'assign':
        return this.assign(cmd);
      case 'taskStarted':
        return this.taskStarted(cmd);
      case 'taskFinished':
        return this.taskFinished(cmd);
      case 'requeue':
        return this.requeue(cmd);
      case 'cancelJob':
        return this.cancelJob(cmd);
      case 'setNodeMode':
        return this.setNodeMode(cmd);
    }
  }

  // ----- commands --------------------------------------------------------------------------------------

  private submitJob(cmd: SubmitJobCommand): ApplyResult {
    if (this.jobsById.has(cmd.jobId)) return fail('DUPLICATE', `job ${cmd.jobId} already exists`);
    const taskCount = taskCountOf(cmd.spec);
    if (this.activeTaskTotal + taskCount > STATE_LIMITS.maxActiveTasks) {
      return fail(
        'CAPACITY',
        `the cluster queue is full: ${this.activeTaskTotal} unfinished tasks, this job adds ${taskCount}, ` +
          `the limit is ${STATE_LIMITS.maxActiveTasks}`,
      );
    }
    if (this.activeJobTotal + 1 > STATE_LIMITS.maxActiveJobs) {
      return fail(
        'CAPACITY',
        `the cluster has ${this.activeJobTotal} unfinished jobs, the limit is ${STATE_LIMITS.maxActiveJobs}`,
      );
    }
    const wasmBytes = inlineWasmBytes(cmd.spec);
    if (wasmBytes > 0 && this.activeWasmBytes + wasmBytes > STATE_LIMITS.maxActiveWasmBytes) {
      return fail(
        'CAPACITY',
        `unfinished jobs already hold ${this.activeWasmBytes} bytes of inline WASM modules; ` +
          `this job adds ${wasmBytes}, the limit is ${STATE_LIMITS.maxActiveWasmBytes}`,
      );
    }
    this.activeJobTotal++;
    this.activeWasmBytes += wasmBytes;
    const job: JobRecord = {
      id: cmd.jobId,
      seq: this.nextSeq++,
      spec: cmd.spec,
      submitter: cmd.submitter,
      submittedAt: cmd.at,
      startedAt: null,
      finishedAt: null,
      cancelledAt: null,
      cancelledBy: null,
      taskCount,
      counts: emptyCounts(),
      attemptOutcomes: {},
    };
    this.jobsById.set(job.id, job);
    for (let index = 0; index < taskCount; index++) {
      const task = freshTask(job.id, index, cmd.at);
      this.tasksById.set(task.id, task);
      this.enqueue(job.id, task.id, false);
    }
    job.counts.queued = taskCount;
    this.activeTaskTotal += taskCount;
    return { ok: true, effects: [] };
  }

  private assign(cmd: AssignCommand): ApplyResult {
    const task = this.tasksById.get(cmd.taskId);
    if (task === undefined) return fail('NOT_FOUND', `task ${cmd.taskId} does not exist`);
    const job = this.jobsById.get(task.jobId)!;
    if (task.state !== 'queued') {
      return fail(
        'ILLEGAL_TRANSITION',
        `task ${task.id} is ${task.state}, only a queued task can be assigned`,
      );
    }
    if (cmd.attempt !== task.attempt + 1) {
      return fail(
        'STALE_ATTEMPT',
        `assign carries attempt ${cmd.attempt}, the next attempt is ${task.attempt + 1}`,
      );
    }
    // (cmd.attempt is task.attempt + 1, checked above.)
    if (!hasAttemptsLeft(job.spec, task)) {
      return fail(
        'ILLEGAL_TRANSITION',
        `task ${task.id} has used all its attempts (${job.spec.retry.maxAttempts}, at most ${JOB_LIMITS.maxAttempts} counting lost ones)`,
      );
    }
    if (cmd.at < task.notBefore) {
      return fail('ILLEGAL_TRANSITION', `task ${task.id} is in retry backoff until ${task.notBefore}`);
    }
    const mode = this.modes.get(cmd.nodeId) ?? 'active';
    if (mode !== 'active') return fail('NODE_UNAVAILABLE', `node ${cmd.nodeId} is ${mode}`);
    const gpusWanted = job.spec.resources.gpus?.count ?? 0;
    const gpus = cmd.gpus ?? null;
    if (gpus !== null && (gpus.length !== gpusWanted || new Set(gpus).size !== gpus.length)) {
      return fail(
        'INVALID',
        `assign reserves GPUs [${gpus.join(', ')}] but the task needs ${gpusWanted} distinct GPUs`,
      );
    }
    this.assignTo(job, task, cmd.nodeId, gpus, cmd.at);
    return { ok: true, effects: [] };
  }

  /** Opens the task's next attempt on `nodeId` (the caller has checked that it may). */
  private assignTo(
    job: JobRecord,
    task: TaskRecord,
    nodeId: string,
    gpus: number[] | null,
    at: number,
  ): void {
    this.setState(job, task, 'assigned', at);
    task.attempt += 1;
    task.nodeId = nodeId;
    task.attempts.push({
      attempt: task.attempt,
      nodeId,
      gpus,
      assignedAt: at,
      startedAt: null,
      endedAt: null,
      exitCode: null,
      outcome: null,
      reason: null,
      usage: null,
    });
    countAttempt(job, null, 'open');
    this.addLive(task);
    job.startedAt ??= at;
  }

  /**
   * Finish-and-take-next, what a BullMQ worker does when it completes a job: the node that just succeeded
   * with a task of `job` and has room for another (`takeNext` in its report) gets the job's next queued task
   * in the same log entry, without waiting for the leader's next pass and its assign command. Only where the
   * scheduler would serve this job's submitter next anyway (see isNextInLine), the job's tasks need no GPUs
   * (those are reserved by index), and the node is active. The freed slot held a task of the same job, so the
   * next one fits it: same resources, constraints and submitter. A report may ask for a few more (prefetch,
   * as a Celery worker does): the node holds them assigned and starts each as one of its own slots frees
   * (JobsService), and meanwhile the scheduler counts them against its capacity, so it sees the node full.
   * Deterministic: the lowest-index queued task out of its retry backoff, looking at no more than
   * TAKE_NEXT_SCAN of them.
   */
  private takeNext(job: JobRecord, nodeId: string, at: number): JobEffect | null {
    if (!this.queuedByJob.has(job.id) || !this.isNextInLine(job)) return null;
    if ((job.spec.resources.gpus?.count ?? 0) > 0) return null;
    if ((this.modes.get(nodeId) ?? 'active') !== 'active') return null;
    let looked = 0;
    for (const id of this.orderedQueueOf(job.id)) {
      if (++looked > TAKE_NEXT_SCAN) break;
      const task = this.tasksById.get(id)!;
      if (task.notBefore > at) continue;
      this.assignTo(job, task, nodeId, null, at);
      return { type: 'taskAssigned', taskId: task.id, nodeId, attempt: task.attempt };
    }
    return null;
  }

  /**
   * Whether the scheduler's fairness rules would give a freed slot to `job`'s submitter: no job with queued
   * tasks has a higher priority, and no other submitter with queued tasks at this priority has fewer tasks
   * live (the scheduler serves the one with the fewest first). Among one submitter's jobs of one priority a
   * slot keeps serving its job until that job's queue is empty, as a BullMQ worker does, rather than
   * strictly the oldest job first. Costs a look at every queued class, so beyond TAKE_NEXT_MAX_CLASSES it
   * says no and leaves the choice to the scheduler.
   */
  private isNextInLine(job: JobRecord): boolean {
    if (this.queuedJobsByClass.size > TAKE_NEXT_MAX_CLASSES) return false;
    const mine = this.liveBySubmitter.get(job.submitter) ?? 0;
    for (const c of this.queuedJobsByClass.values()) {
      if (c.priority > job.spec.priority) return false;
      if (c.priority === job.spec.priority && (this.liveBySubmitter.get(c.submitter) ?? 0) < mine)
        return false;
    }
    return true;
  }

  /** Refusal for a report that does not name the task's live attempt, or null when it does. */
  private checkLive(task: TaskRecord, attempt: number): ApplyResult | null {
    if (attempt !== task.attempt || !isLive(task.state)) {
      const current = isLive(task.state)
        ? `the live attempt is ${task.attempt}`
        : `the task is ${task.state}`;
      return fail('STALE_ATTEMPT', `attempt ${attempt} of task ${task.id} is no longer current (${current})`);
    }
    return null;
  }

  private taskStarted(cmd: TaskStartedCommand): ApplyResult {
    const task = this.tasksById.get(cmd.taskId);
    if (task === undefined) return fail('NOT_FOUND', `task ${cmd.taskId} does not exist`);
    const stale = this.checkLive(task, cmd.attempt);
    if (stale !== null) return stale;
    if (task.state !== 'assigned') {
      return fail('ILLEGAL_TRANSITION', `task ${task.id} attempt ${cmd.attempt} has already started`);
    }
    const job = this.jobsById.get(task.jobId)!;
    this.setState(job, task, 'running', cmd.at);
    this.currentAttempt(task).startedAt = cmd.at;
    return { ok: true, effects: [] };
  }

  private taskFinished(cmd: TaskFinishedCommand): ApplyResult {
    const task = this.tasksById.get(cmd.taskId);
    if (task === undefined) return fail('NOT_FOUND', `task ${cmd.taskId} does not exist`);
    const stale = this.checkLive(task, cmd.attempt);
    if (stale !== null) return stale;
    const job = this.jobsById.get(task.jobId)!;
    const record = this.currentAttempt(task);
    if (cmd.startedAt !== undefined && record.startedAt === null) record.startedAt = cmd.startedAt;
    record.endedAt = cmd.at;
    record.exitCode = cmd.exitCode;
    record.outcome = cmd.outcome;
    countAttempt(job, 'open', cmd.outcome);
    record.reason = cmd.reason;
    record.usage = cmd.usage;
    task.stdoutTail = cutTail(cmd.stdoutTail);
    task.stderrTail = cutTail(cmd.stderrTail);
    const nodeId = task.nodeId!;
    this.removeLive(task);
    if (cmd.outcome === 'succeeded') {
      this.setState(job, task, 'succeeded', cmd.at);
      const effects = this.afterTerminal(job, cmd.at);
      // Each one is granted only while the job's submitter is still next in line: the grants before it
      // count as live tasks of that submitter.
      const wanted = cmd.takeNext === true ? 1 : cmd.takeNext || 0;
      for (let i = 0; i < wanted; i++) {
        const next = this.takeNext(job, nodeId, cmd.at);
        if (next === null) break;
        effects.push(next);
      }
      return { ok: true, effects };
    }
    return { ok: true, effects: this.retryOrFail(job, task, cmd.at) };
  }

  private requeue(cmd: RequeueCommand): ApplyResult {
    const task = this.tasksById.get(cmd.taskId);
    if (task === undefined) return fail('NOT_FOUND', `task ${cmd.taskId} does not exist`);
    const stale = this.checkLive(task, cmd.attempt);
    if (stale !== null) return stale;
    const job = this.jobsById.get(task.jobId)!;
    if (cmd.neverStarted === true && task.state === 'assigned') {
      // Handed back by its node before it ran: as if it had never been assigned. The next assignment
      // reuses the attempt number; the node that gave it back holds no run of it any more.
      task.attempts.pop();
      task.attempt -= 1;
      uncountOpenAttempt(job);
      this.removeLive(task);
      this.setState(job, task, 'queued', cmd.at);
      return { ok: true, effects: [{ type: 'taskRequeued', taskId: task.id, notBefore: task.notBefore }] };
    }
    const record = this.currentAttempt(task);
    record.endedAt = cmd.at;
    record.outcome = 'lost';
    countAttempt(job, 'open', 'lost');
    record.reason = cmd.reason;
    this.removeLive(task);
    return { ok: true, effects: this.retryOrFail(job, task, cmd.at) };
  }

  private cancelJob(cmd: CancelJobCommand): ApplyResult {
    const job = this.jobsById.get(cmd.jobId);
    if (job === undefined) return fail('NOT_FOUND', `job ${cmd.jobId} does not exist`);
    const state = jobStateOf(job);
    if (state === 'succeeded' || state === 'failed' || state === 'cancelled') {
      return fail('ILLEGAL_TRANSITION', `job ${job.id} is already ${state}`);
    }
    job.cancelledAt = cmd.at;
    job.cancelledBy = cmd.by;
    const effects: JobEffect[] = [];
    for (let index = 0; index < job.taskCount; index++) {
      const task = this.tasksById.get(taskIdOf(job.id, index))!;
      if (isTerminal(task.state)) continue;
      if (isLive(task.state)) {
        const record = this.currentAttempt(task);
        record.endedAt = cmd.at;
        record.outcome = 'cancelled';
        countAttempt(job, 'open', 'cancelled');
        record.reason = `job cancelled by ${cmd.by}`;
        effects.push({ type: 'stopTask', taskId: task.id, nodeId: task.nodeId!, attempt: task.attempt });
        this.removeLive(task);
      }
      this.setState(job, task, 'cancelled', cmd.at);
    }
    effects.push(...this.afterTerminal(job, cmd.at));
    return { ok: true, effects };
  }

  private setNodeMode(cmd: SetNodeModeCommand): ApplyResult {
    if (cmd.mode === 'active') {
      this.modes.delete(cmd.nodeId);
      return { ok: true, effects: [] };
    }
    if (!this.modes.has(cmd.nodeId) && this.modes.size >= STATE_LIMITS.maxNodeModes) {
      return fail('CAPACITY', `at most ${STATE_LIMITS.maxNodeModes} nodes may be paused or draining`);
    }
    this.modes.set(cmd.nodeId, cmd.mode);
    return { ok: true, effects: [] };
  }

  // ----- transitions -----------------------------------------------------------------------------------

  private currentAttempt(task: TaskRecord): AttemptRecord {
    return task.attempts[task.attempts.length - 1];
  }

  private setState(job: JobRecord, task: TaskRecord, next: TaskState, at: number): void {
    const prev = task.state;
    job.counts[prev]--;
    job.counts[next]++;
    task.state = next;
    task.updatedAt = at;
    if (prev === 'queued') {
      const ofJob = this.queuedByJob.get(job.id)!;
      ofJob.delete(task.id);
      if (ofJob.size === 0) {
        this.queuedByJob.delete(job.id);
        const cls = classOf(job);
        const entry = this.queuedJobsByClass.get(cls)!;
        if (--entry.jobs === 0) this.queuedJobsByClass.delete(cls);
      }
    }
    if (next === 'queued') this.enqueue(job.id, task.id, true);
    if (isTerminal(next) && !isTerminal(prev)) this.activeTaskTotal--;
  }

  private enqueue(jobId: string, taskId: string, outOfOrder: boolean): void {
    let ofJob = this.queuedByJob.get(jobId);
    if (!ofJob) {
      ofJob = new Set();
      this.queuedByJob.set(jobId, ofJob);
      const job = this.jobsById.get(jobId)!;
      const cls = classOf(job);
      const entry = this.queuedJobsByClass.get(cls);
      if (entry) entry.jobs++;
      else
        this.queuedJobsByClass.set(cls, { priority: job.spec.priority, submitter: job.submitter, jobs: 1 });
    }
    ofJob.add(taskId);
    if (outOfOrder) this.unorderedJobs.add(jobId);
  }

  /** Each job's queued ids in index order, jobs in submission order. */
  private *queueByJob(): Generator<Set<string>> {
    const jobIds = [...this.queuedByJob.keys()].sort(
      (a, b) => this.jobsById.get(a)!.seq - this.jobsById.get(b)!.seq,
    );
    for (const jobId of jobIds) yield this.orderedQueueOf(jobId);
  }

  /**
   * The job's queued ids in index order. A set is in index order whenever its job is not in `unorderedJobs`
   * (only a task coming back to the queue breaks the order, and that flags the job), so every replica sees
   * the same order here, whether or not it sorted that set before (the leader sorts on its passes).
   */
  private orderedQueueOf(jobId: string): Set<string> {
    let ids = this.queuedByJob.get(jobId);
    if (ids === undefined) return new Set();
    if (this.unorderedJobs.delete(jobId)) {
      ids = new Set([...ids].sort((a, b) => this.tasksById.get(a)!.index - this.tasksById.get(b)!.index));
      this.queuedByJob.set(jobId, ids);
    }
    return ids;
  }

  private addLive(task: TaskRecord): void {
    let set = this.liveByNode.get(task.nodeId!);
    if (set === undefined) {
      set = new Set();
      this.liveByNode.set(task.nodeId!, set);
    }
    set.add(task.id);
    const submitter = this.jobsById.get(task.jobId)!.submitter;
    this.liveBySubmitter.set(submitter, (this.liveBySubmitter.get(submitter) ?? 0) + 1);
  }

  private removeLive(task: TaskRecord): void {
    const set = this.liveByNode.get(task.nodeId!);
    if (set?.delete(task.id)) {
      if (set.size === 0) this.liveByNode.delete(task.nodeId!);
      const submitter = this.jobsById.get(task.jobId)!.submitter;
      const n = this.liveBySubmitter.get(submitter)! - 1;
      if (n === 0) this.liveBySubmitter.delete(submitter);
      else this.liveBySubmitter.set(submitter, n);
    }
    task.nodeId = null;
  }

  /**
   * After a failed or lost attempt: back to the queue while attempts remain (see countedAttempts), else failed.
   * A failure waits its backoff first; a lost attempt goes back at once (the task did nothing wrong).
   */
  private retryOrFail(job: JobRecord, task: TaskRecord, at: number): JobEffect[] {
    if (hasAttemptsLeft(job.spec, task)) {
      const lost = this.currentAttempt(task).outcome === 'lost';
      task.notBefore = lost ? at : at + retryDelayMs(job.spec, countedAttempts(task));
      this.setState(job, task, 'queued', at);
      return [{ type: 'taskRequeued', taskId: task.id, notBefore: task.notBefore }];
    }
    this.setState(job, task, 'failed', at);
    return this.afterTerminal(job, at);
  }

  /** When the job just became finished: record it and evict the oldest finished jobs beyond the bounds. */
  private afterTerminal(job: JobRecord, at: number): JobEffect[] {
    const c = job.counts;
    if (job.finishedAt !== null || c.succeeded + c.failed + c.cancelled !== job.taskCount) return [];
    job.finishedAt = at;
    this.activeJobTotal--;
    this.activeWasmBytes -= inlineWasmBytes(job.spec);
    job.spec = withoutWasmBytes(job.spec);
    this.finishedOrder.push(job.id);
    this.finishedTaskTotal += job.taskCount;
    const effects: JobEffect[] = [{ type: 'jobFinished', jobId: job.id, state: jobStateOf(job) }];
    while (
      this.finishedOrder.length > 1 &&
      (this.finishedOrder.length > STATE_LIMITS.maxRetainedFinishedJobs ||
        this.finishedTaskTotal > STATE_LIMITS.maxRetainedFinishedTasks)
    ) {
      const oldest = this.finishedOrder.shift()!;
      this.evict(oldest);
      effects.push({ type: 'jobEvicted', jobId: oldest });
    }
    return effects;
  }

  private evict(jobId: string): void {
    const job = this.jobsById.get(jobId)!;
    for (let index = 0; index < job.taskCount; index++) this.tasksById.delete(taskIdOf(jobId, index));
    this.finishedTaskTotal -= job.taskCount;
    this.jobsById.delete(jobId);
  }

  // ----- reads (returned objects are the state's own: treat them as read-only) -------------------------

  job(id: string): JobView | undefined {
    const job = this.jobsById.get(id);
    return job === undefined ? undefined : this.view(job);
  }

  /** Jobs in submission order; with `limit`, only the newest `limit` that match. */
  jobs(filter: JobFilter = {}): JobView[] {
    const limit = filter.limit ?? Number.POSITIVE_INFINITY;
    const all = [...this.jobsById.values()];
    const out: JobView[] = [];
    for (let i = all.length - 1; i >= 0 && out.length < limit; i--) {
      const job = all[i];
      if (filter.submitter !== undefined && job.submitter !== filter.submitter) continue;
      const view = this.view(job);
      if (filter.state !== undefined && view.state !== filter.state) continue;
      out.push(view);
    }
    return out.reverse();
  }

  private view(job: JobRecord): JobView {
    return {
      id: job.id,
      name: job.spec.name,
      submitter: job.submitter,
      state: jobStateOf(job),
      taskCount: job.taskCount,
      counts: { ...job.counts },
      attemptOutcomes: { ...job.attemptOutcomes },
      submittedAt: job.submittedAt,
      startedAt: job.startedAt,
      finishedAt: job.finishedAt,
      cancelledAt: job.cancelledAt,
      cancelledBy: job.cancelledBy,
      spec: job.spec,
    };
  }

  task(id: string): Readonly<TaskRecord> | undefined {
    return this.tasksById.get(id);
  }

  tasksOfJob(jobId: string): Readonly<TaskRecord>[] {
    const job = this.jobsById.get(jobId);
    if (job === undefined) return [];
    const out: TaskRecord[] = [];
    for (let index = 0; index < job.taskCount; index++) out.push(this.tasksById.get(taskIdOf(jobId, index))!);
    return out;
  }

  /** Live (assigned or running) tasks on a node, in submission order. */
  tasksOnNode(nodeId: string): Readonly<TaskRecord>[] {
    const ids = this.liveByNode.get(nodeId);
    if (ids === undefined) return [];
    return this.sortBySubmission([...ids]).map((id) => this.tasksById.get(id)!);
  }

  /** The parameters for running the task's current attempt (env expanded with its sweep values). */
  taskRunSpec(taskId: string): TaskRunSpec | undefined {
    const task = this.tasksById.get(taskId);
    if (task === undefined) return undefined;
    const spec = this.jobsById.get(task.jobId)!.spec;
    const current = task.attempts.length > 0 ? this.currentAttempt(task) : null;
    return {
      taskId: task.id,
      jobId: task.jobId,
      attempt: task.attempt,
      gpus: current?.gpus ?? null,
      executor: spec.executor,
      image: spec.image,
      wasm: spec.wasm,
      command: spec.command,
      entrypoint: spec.entrypoint,
      env: taskEnv(spec, task.index, task.jobId),
      workdir: spec.workdir,
      resources: spec.resources,
      timeoutMs: spec.timeoutMs,
      network: spec.network,
    };
  }

  /** This task's sweep values. */
  taskParams(taskId: string): Record<string, string | number> | undefined {
    const task = this.tasksById.get(taskId);
    if (task === undefined) return undefined;
    return paramsForIndex(this.jobsById.get(task.jobId)!.spec, task.index);
  }

  /**
   * Queued tasks in submission order, shaped for `schedule()`. Tasks of a job share spec objects.
   *
   * With `bound`: the first `perJob` tasks of each job that may run now (plus the backing-off ones met on the
   * way, bounded). A pass places at most as many tasks as there are free slots, and the tasks of one job share
   * shape, submitter and priority, so the scheduler places them front to back: giving it the first `free
   * slots` of each job places exactly what the whole queue would, without walking 20,000 queued tasks on
   * every pass.
   */
  queuedTasks(bound?: { perJob: number; now: number }): QueuedTask[] {
    const out: QueuedTask[] = [];
    for (const ids of this.queueByJob()) {
      let eligible = 0;
      let examined = 0;
      for (const id of ids) {
        out.push(this.queuedView(id));
        if (!bound) continue;
        if (this.tasksById.get(id)!.notBefore <= bound.now) eligible++;
        if (eligible >= bound.perJob || ++examined >= bound.perJob * 4) break;
      }
    }
    return out;
  }

  private queuedView(id: string): QueuedTask {
    const task = this.tasksById.get(id)!;
    const job = this.jobsById.get(task.jobId)!;
    return {
      taskId: task.id,
      jobId: job.id,
      submitter: job.submitter,
      priority: job.spec.priority,
      executor: job.spec.executor,
      resources: job.spec.resources,
      constraints: job.spec.constraints,
      notBefore: task.notBefore,
      nextAttempt: task.attempt + 1,
    };
  }

  /** How many tasks are assigned to or running on `nodeId`. */
  liveCountOn(nodeId: string): number {
    return this.liveByNode.get(nodeId)?.size ?? 0;
  }

  /** Assigned and running tasks, shaped for `schedule()`. */
  runningTasks(): RunningTask[] {
    const ids: string[] = [];
    for (const set of this.liveByNode.values()) for (const id of set) ids.push(id);
    return this.sortBySubmission(ids).map((id) => {
      const task = this.tasksById.get(id)!;
      const job = this.jobsById.get(task.jobId)!;
      const gpus = this.currentAttempt(task).gpus;
      return {
        nodeId: task.nodeId!,
        resources: job.spec.resources,
        submitter: job.submitter,
        ...(gpus !== null ? { gpus } : {}),
      };
    });
  }

  /** Turn a scheduling round into the assign commands to propose (attempt = the task's next attempt). */
  assignCommands(assignments: Assignment[], at: number): AssignCommand[] {
    const out: AssignCommand[] = [];
    for (const a of assignments) {
      const task = this.tasksById.get(a.taskId);
      if (task === undefined || task.state !== 'queued') continue;
      out.push({
        type: 'assign',
        taskId: a.taskId,
        nodeId: a.nodeId,
        attempt: task.attempt + 1,
        ...(a.gpus !== undefined ? { gpus: a.gpus } : {}),
        at,
      });
    }
    return out;
  }

  nodeMode(nodeId: string): NodeMode {
    return this.modes.get(nodeId) ?? 'active';
  }

  /** Nodes whose mode is not the default 'active'. */
  nodeModes(): Record<string, NodeMode> {
    const out: Record<string, NodeMode> = {};
    for (const id of [...this.modes.keys()].sort()) out[id] = this.modes.get(id)!;
    return out;
  }

  stats(): {
    jobs: number;
    tasks: number;
    queued: number;
    live: number;
    activeTasks: number;
    activeJobs: number;
    activeWasmBytes: number;
    finishedJobs: number;
  } {
    let live = 0;
    for (const ids of this.liveByNode.values()) live += ids.size;
    return {
      jobs: this.jobsById.size,
      tasks: this.tasksById.size,
      queued: [...this.queuedByJob.values()].reduce((n, ids) => n + ids.size, 0),
      live,
      activeTasks: this.activeTaskTotal,
      activeJobs: this.activeJobTotal,
      activeWasmBytes: this.activeWasmBytes,
      finishedJobs: this.finishedOrder.length,
    };
  }

  private sortBySubmission(ids: string[]): string[] {
    const keyed = ids.map((id) => {
      const task = this.tasksById.get(id)!;
      // maxTasksPerJob (10,000) < 2^14, so this key is unique and stays a safe integer.
      return { id, key: this.jobsById.get(task.jobId)!.seq * 16384 + task.index };
    });
    keyed.sort((a, b) => a.key - b.key);
    return keyed.map((k) => k.id);
  }

  // ----- snapshots -------------------------------------------------------------------------------------

  snapshot(): Uint8Array {
    const snap: Snapshot = {
      version: SNAPSHOT_VERSION,
      nextSeq: this.nextSeq,
      jobs: [...this.jobsById.values()].map((job) => ({
        id: job.id,
        seq: job.seq,
        spec: job.spec,
        submitter: job.submitter,
        submittedAt: job.submittedAt,
        startedAt: job.startedAt,
        finishedAt: job.finishedAt,
        cancelledAt: job.cancelledAt,
        cancelledBy: job.cancelledBy,
        tasks: (this.tasksOfJob(job.id) as TaskRecord[]).filter((t) => !isFresh(t, job.submittedAt)),
      })),
      finishedOrder: [...this.finishedOrder],
      nodeModes: [...this.modes.keys()].sort().map((id) => [id, this.modes.get(id)!] as [string, NodeMode]),
    };
    return encode(snap);
  }

  /** Replace the whole state with a snapshot's. Throws `ProtocolError` (state unchanged) when it is invalid. */
  restore(bytes: Uint8Array): void {
    const snap = decode(SnapshotSchema, bytes, STATE_LIMITS.maxSnapshotBytes);
    const next = new JobStateMachine();
    let lastSeq = -1;
    next.nextSeq = snap.nextSeq;
    for (const j of snap.jobs) {
      const job: JobRecord = {
        id: j.id,
        seq: j.seq,
        spec: j.spec,
        submitter: j.submitter,
        submittedAt: j.submittedAt,
        startedAt: j.startedAt,
        finishedAt: j.finishedAt,
        cancelledAt: j.cancelledAt,
        cancelledBy: j.cancelledBy,
        taskCount: taskCountOf(j.spec),
        counts: emptyCounts(),
        attemptOutcomes: {},
      };
      if (next.jobsById.has(j.id)) throw corrupt(`job ${j.id} twice`);
      next.jobsById.set(job.id, job);
      // Jobs are stored in submission order; `jobs()` and FIFO scheduling rely on it.
      if (j.seq >= snap.nextSeq || j.seq <= lastSeq)
        throw corrupt(`job ${j.id} is out of order (seq ${j.seq})`);
      lastSeq = j.seq;
      let stored = 0;
      for (let index = 0; index < job.taskCount; index++) {
        let task: TaskRecord;
        const t = j.tasks[stored];
        if (t !== undefined && t.index === index) {
          stored++;
          if (t.jobId !== j.id || t.id !== taskIdOf(j.id, index)) {
            throw corrupt(`task ${t.id} does not belong at ${j.id}/${index}`);
          }
          if (isLive(t.state) !== (t.nodeId !== null) || t.attempts.length !== t.attempt) {
            throw corrupt(`task ${t.id} has inconsistent attempt or node`);
          }
          task = { ...t, attempts: t.attempts.map((a) => ({ ...a })) };
        } else {
          task = freshTask(j.id, index, j.submittedAt);
        }
        next.tasksById.set(task.id, task);
        job.counts[task.state]++;
        for (const a of task.attempts) countAttempt(job, null, a.outcome ?? 'open');
        if (task.state === 'queued') next.enqueue(j.id, task.id, false);
        if (isLive(task.state)) next.addLive(task);
        if (!isTerminal(task.state)) next.activeTaskTotal++;
      }
      if (stored !== j.tasks.length) throw corrupt(`job ${j.id} lists tasks out of order or out of range`);
      if (job.finishedAt !== null) next.finishedTaskTotal += job.taskCount;
      else {
        next.activeJobTotal++;
        next.activeWasmBytes += inlineWasmBytes(job.spec);
      }
    }
    for (const id of snap.finishedOrder) {
      const job = next.jobsById.get(id);
      if (job === undefined || job.finishedAt === null)
        throw corrupt(`finished job ${id} is missing or unfinished`);
    }
    next.finishedOrder = [...snap.finishedOrder];
    for (const [id, mode] of snap.nodeModes) next.modes.set(id, mode);
    this.jobsById = next.jobsById;
    this.tasksById = next.tasksById;
    this.queuedByJob = next.queuedByJob;
    this.queuedJobsByClass = next.queuedJobsByClass;
    this.liveBySubmitter = next.liveBySubmitter;
    this.unorderedJobs = next.unorderedJobs;
    this.liveByNode = next.liveByNode;
    this.finishedOrder = next.finishedOrder;
    this.finishedTaskTotal = next.finishedTaskTotal;
    this.activeTaskTotal = next.activeTaskTotal;
    this.activeJobTotal = next.activeJobTotal;
    this.activeWasmBytes = next.activeWasmBytes;
    this.modes = next.modes;
    this.nextSeq = next.nextSeq;
  }
}
