/**
 * The job layer of a node, around the pure state machine and scheduler:
 *
 * - every node: answers job RPCs (submit, list, get, wait, cancel, logs, node modes) — writes go through the
 *   replicated command log, so any peer accepts them; runs the tasks the log assigns to it through an
 *   executor, reports start and end (fenced by attempt number), keeps their full output in its log store,
 *   stops runs the log says are stale or cancelled, and heartbeats to the leader over a connection it dialled.
 * - the leader: turns heartbeats into liveness (soft state, never logged), re-queues the tasks of nodes silent
 *   past TTL + grace, and places queued tasks with `schedule()` on live, active nodes.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  type Advertisement,
  formatJobId,
  JOB_LIMITS,
  type JobCommandInput,
  type ProtocolError,
  RPC_ERRORS,
  validateJobSpec,
} from '@meshrun/protocol';
import type { Logger } from 'pino';
import { z } from 'zod';
import type { Executor, NodePolicy, TaskResult, TaskSpec } from '../executors/types.ts';
import { schedule, submitterAllowed } from '../jobs/scheduler.ts';
import type {
  ApplyResult,
  JobEffect,
  JobStateMachine,
  TaskRecord,
  TaskRunSpec,
} from '../jobs/state-machine.ts';
import { isTerminal, STATE_LIMITS } from '../jobs/state-machine.ts';
import type { SchedulerNode } from '../jobs/types.ts';
import type { MeshNode } from '../node/mesh-node.ts';
import { RpcFailure } from '../node/rpc-registry.ts';
import type { CommandLog } from './command-log.ts';
import type { OutboxPersistence } from './outbox-store.ts';
import { ReportOutbox } from './report-outbox.ts';
import { SlotGate } from './slot-gate.ts';
import { LastLines, type TaskOutputStore } from './task-output.ts';

export interface JobsServiceOptions {
  node: MeshNode;
  log: Logger;
  machine: JobStateMachine;
  commands: CommandLog;
  /** Applied-command notifications from the state-machine adapter. */
  applied: EventEmitter;
  executors: Partial<Record<'docker' | 'wasm', Executor>>;
  policy: () => NodePolicy;
  output: TaskOutputStore;
  /** Heartbeat period (ms). */
  heartbeatMs?: number;
  /** A node silent this long (plus grace) is down and its tasks are re-queued. */
  nodeTtlMs?: number;
  nodeGraceMs?: number;
  /** Scheduling pass period on the leader (ms); a submit also triggers one. */
  scheduleMs?: number;
  /** Where undelivered end-of-task reports survive a restart (none: they are kept in memory only). */
  outboxStore?: OutboxPersistence;
}

export const DEFAULTS = {
  heartbeatMs: 1000,
  nodeTtlMs: 10_000,
  nodeGraceMs: 5_000,
  scheduleMs: 250,
} as const;
/** Applied commands after which the leader runs a scheduling pass right away. */
const FREES_OR_ADDS_WORK: ReadonlySet<string> = new Set([
  'submitJob',
  'taskFinished',
  'requeue',
  'cancelJob',
  'setNodeMode',
]);
/** Assign commands proposed per scheduling pass (the rest waits for the next pass). */
export const MAX_ASSIGNMENTS_PER_PASS = 512;
/** Bytes of each output stream kept in the log when a task ends (the rest stays on the node). */
export const TAIL_BYTES = 64 * 1024;
/** Abort reasons starting with this hand the task back to the queue instead of dropping the run silently. */
const REQUEUE_PREFIX = 'requeue: ';
/**
 * How long `logs.stream` with follow waits for a queued task to be placed (polling its record every
 * FOLLOW_WAIT_POLL_MS), like the relay from another node, which lasts as long as the caller follows.
 */
const FOLLOW_WAIT_MAX_MS = 24 * 3600_000;
const FOLLOW_WAIT_POLL_MS = 100;
/** `logs --tail N` takes at most this many lines (a task keeps at most 16 MiB of output anyway). */
export const MAX_TAIL_LINES = 1_000_000;
/**
 * Bytes of views (as JSON, which is larger than their CBOR) one jobs.get, jobs.wait or jobs.list reply carries
 * at most, so a 10,000-task job with long output tails, or 10,000 jobs with long names, still fit a control
 * message (4 MiB); the caller pages on (`taskFrom: nextTaskFrom`, `skip: nextSkip`).
 */
export const PAGE_MAX_BYTES = 2 * 1024 * 1024;
/**
 * The views of `items`, in order, until the next would pass `limit` views or PAGE_MAX_BYTES of JSON (the first
 * is always taken); `stoppedAt`: the item not taken, or null when all were.
 */
function pageOf<T>(
  items: Iterable<T>,
  view: (item: T) => Record<string, unknown>,
  limit = Number.POSITIVE_INFINITY,
): { views: Record<string, unknown>[]; stoppedAt: T | null } {
  const views: Record<string, unknown>[] = [];
  let bytes = 0;
  for (const item of items) {
    const v = view(item);
    const size = Buffer.byteLength(JSON.stringify(v));
    if (views.length >= limit || (views.length > 0 && bytes + size > PAGE_MAX_BYTES))
      return { views, stoppedAt: item };
    views.push(v);
    bytes += size;
  }
  return { views, stoppedAt: null };
}
/** Which of a job's tasks a jobs.get or jobs.wait reply lists, from which index, and how many at most. */
const TaskPageParams = {
  taskFrom: z.number().int().min(0).max(JOB_LIMITS.maxTasksPerJob).default(0),
  taskLimit: z.number().int().min(1).max(JOB_LIMITS.maxTasksPerJob).default(JOB_LIMITS.maxTasksPerJob),
  /** 'unsuccessful': only tasks that did not (or not yet) succeed, e.g. for the end-of-run summary. */
  taskFilter: z.enum(['all', 'unsuccessful']).default('all'),
};
interface TaskPage {
  taskFrom: number;
  taskLimit: number;
  taskFilter: 'all' | 'unsuccessful';
}

/**
 * Prefetch: a node whose task of a job just succeeded after running less than this asks for a few more of
 * the job's tasks than the slot it frees (see #tasksWanted). Longer tasks gain nothing from it: a slot's
 * turnover waits for one Raft commit, a few milliseconds.
 */
export const PREFETCH_MAX_RUN_MS = 1000;
/** Tasks a node holds assigned but waiting for a slot, at most (and never more than its maxConcurrent). */
export const PREFETCH_MAX_HELD = 16;

interface LocalRun {
  taskId: string;
  attempt: number;
  abort: AbortController;
  startedAt: number;
  jobId: string;
  /** What the run holds of the node's offer while it has a slot (see SlotGate). */
  cpus: number;
  memoryBytes: number;
  /** It holds one of the node's slots: it is running, or about to. False while it waits for one. */
  admitted: boolean;
  /** Settles when the run has ended and its container is gone. */
  done?: Promise<void>;
}

/** How long a stopping node waits for its runs to stop and be handed back before it exits anyway. */
export const STOP_RUNS_GRACE_MS = 15_000;

/**
 * Tries (with backoff from 100 ms) before an end-of-run report that the log did not take is kept in the
 * outbox, from where every heartbeat offers it again (see ReportOutbox). Other reports get REPORT_TRIES.
 */
export const END_REPORT_TRIES = 5;
const REPORT_TRIES = 20;
/** Undelivered end-of-run reports a node keeps at most (the oldest is dropped, with a warning). */
export const MAX_UNDELIVERED_REPORTS = 10_000;

/** A report that ends a run in the log: its result, or its hand-back to the queue. */
type EndReport = Extract<JobCommandInput, { type: 'taskFinished' | 'requeue' }>;

/** Map an executor's result to the state machine's outcome. */
export function outcomeOf(r: TaskResult): {
  outcome: 'succeeded' | 'failed' | 'timedOut' | 'error';
  exitCode: number | null;
  reason: string | null;
} {
  switch (r.outcome) {
    case 'exited':
      return r.exitCode === 0
        ? { outcome: 'succeeded', exitCode: 0, reason: null }
        : { outcome: 'failed', exitCode: r.exitCode, reason: r.reason || null };
    case 'timeout':
      return { outcome: 'timedOut', exitCode: r.exitCode, reason: r.reason || 'timed out' };
    case 'oom':
      return { outcome: 'failed', exitCode: r.exitCode ?? 137, reason: r.reason || 'killed: out of memory' };
    case 'signaled':
      return {
        outcome: 'failed',
        exitCode: r.exitCode,
        reason: r.reason || `killed by ${r.signal ?? 'a signal'}`,
      };
    default: {
      // meshrun could not run the command at all: docker-run-like codes tell the user why.
      const notFound = /executable file not found|no such file or directory|not found/i.test(r.reason);
      const cannot = /permission denied|exec format error/i.test(r.reason);
      return {
        outcome: 'error',
        exitCode: notFound ? 127 : cannot ? 126 : 125,
        reason: `${r.outcome}: ${r.reason}`,
      };
    }
  }
}

export class JobsService {
  readonly #o: JobsServiceOptions;
  readonly #log: Logger;
  /** Every run this node has been given and not yet ended: running, or waiting for a slot. */
  readonly #running = new Map<string, LocalRun>();
  /** Which runs hold one of this node's slots; runs given beyond its free slots (prefetched) wait there. */
  readonly #slots = new SlotGate<LocalRun>(() => this.#o.node.ownAdvertisement().offered);
  /** Tasks asked for ahead (beyond a freed slot's successor) in reports not yet answered. */
  #askedAhead = 0;
  /** End-of-run reports the log did not take yet; every heartbeat offers them again. */
  readonly #outbox = new ReportOutbox<EndReport>(MAX_UNDELIVERED_REPORTS);
  #offeringOutbox = false;
  /** Restart recovery is done: from now on #startMissedAssignments may act on what the log gives this node. */
  #recovered = false;
  /**
   * `taskId/attempt` of runs the leader's heartbeat reply stopped as stale while this node's log (a little
   * behind the leader's) may still assign them here: #startMissedAssignments must not start them again.
   */
  #fenced = new Set<string>();
  /** Leader's soft state: last heartbeat per node. */
  readonly #lastBeat = new Map<string, number>();
  #leaderSince = 0;
  #wasLeader = false;
  /** When this node's last leader pass began (see #creditOwnStall). */
  #lastPassAt = 0;
  #scheduling = false;
  #scheduleAgain = false;
  /** A pass is already queued by #scheduleSoon (many applied commands in one batch ask for one pass). */
  #passQueued = false;
  #timers: NodeJS.Timeout[] = [];
  #stopped = false;
  readonly events = new EventEmitter();
  readonly #unplaced = new Map<string, string>();

  constructor(o: JobsServiceOptions) {
    this.#o = o;
    this.#log = o.log;
    this.events.setMaxListeners(1000);
  }

  get #self(): string {
    return this.#o.node.peerId;
  }

  start(): void {
    this.#registerRpc();
    this.#o.applied.on('applied', (cmd: JobCommandInput, result: ApplyResult) =>
      this.#onApplied(cmd, result),
    );
    // A follower too far behind is sent the leader's snapshot instead of the entries it missed: their effects
    // (tasks assigned here) never reach #onApplied.
    this.#o.applied.on('restored', () => {
      // Whoever waits on a job (jobs.wait, logs, the dashboard) looks again: it may have ended meanwhile.
      this.events.emit('change');
      if (!this.#recovered || this.#stopped) return;
      this.#log.info('caught up from the leader’s snapshot; checking the tasks it gives this node');
      this.#startMissedAssignments();
    });
    const hb = this.#o.heartbeatMs ?? DEFAULTS.heartbeatMs;
    const safe = (name: string, step: () => Promise<void>) => () => {
      step().catch((err: Error) => this.#log.warn({ err: err.message }, `${name} failed`));
    };
    this.#timers.push(
      setInterval(
        safe('heartbeat', () => this.#heartbeat()),
        hb,
      ),
    );
    this.#timers.push(
      setInterval(
        safe('scheduling pass', () => this.#leaderPass()),
        this.#o.scheduleMs ?? DEFAULTS.scheduleMs,
      ),
    );
    for (const t of this.#timers) t.unref();
  }

  /** After the log is replayed at start-up: runs this node had before a crash are gone, so report them. */
  async recoverAfterRestart(): Promise<void> {
    await this.#loadOutbox();
    // A run whose end report is in the outbox has ended: the report, not a guess, is what the log gets.
    const gone = this.#o.machine
      .tasksOnNode(this.#self)
      .filter((task) => !this.#running.has(task.id) && this.#outbox.get(task.id)?.attempt !== task.attempt);
    await Promise.all(
      gone.map((task) =>
        task.state === 'assigned'
          ? // The log has no start for it: it was held ready for a slot, or its start report had not gone out.
            // It may have begun, so it ends as lost (a new attempt number next time), not undone.
            this.#reportEnd({
              type: 'requeue',
              taskId: task.id,
              attempt: task.attempt,
              reason: 'the node restarted before the log recorded the task as started',
              at: Date.now(),
            })
          : this.#reportEnd({
              type: 'taskFinished',
              taskId: task.id,
              attempt: task.attempt,
              outcome: 'error',
              exitCode: null,
              reason: 'the node restarted while the task ran',
              at: Date.now(),
            }),
      ),
    );
    this.#recovered = true;
  }

  /**
   * Starts the tasks the log assigns to this node that it holds no run of. Every assignment applied here
   * starts its run at once (#onApplied), so in steady state there are none; but a follower too far behind is
   * sent the leader's snapshot instead of the entries it missed, and the assignments in those entries never
   * come as applied commands. Without this their tasks would stay assigned to a live node for good: the
   * leader only re-queues the tasks of nodes that stop heartbeating. Checked after every snapshot install and
   * on every heartbeat. (Runs the log no longer gives this node are the leader's to stop: heartbeat fencing.)
   */
  #startMissedAssignments(): void {
    if (!this.#recovered || this.#stopped) return;
    let started = 0;
    const assigned = new Set<string>();
    for (const task of this.#o.machine.tasksOnNode(this.#self)) {
      if (task.state !== 'assigned') continue;
      const key = `${task.id}/${task.attempt}`;
      assigned.add(key);
      if (this.#running.has(task.id) || this.#fenced.has(key)) continue;
      if (this.#outbox.get(task.id)?.attempt === task.attempt) continue;
      this.#startRun(task.id, task.attempt);
      if (this.#running.has(task.id)) started++;
    }
    // Once this node's log has caught up, a fenced attempt is no longer assigned here: forget it.
    for (const key of this.#fenced) if (!assigned.has(key)) this.#fenced.delete(key);
    if (started > 0)
      this.#log.info({ tasks: started }, 'started tasks assigned here that this node had not seen');
  }

  // ---- applying ----------------------------------------------------------------------------------------

  #onApplied(cmd: JobCommandInput, result: ApplyResult): void {
    if (result.ok) for (const e of result.effects) this.#onEffect(e);
    if (cmd.type === 'assign' && result.ok && cmd.nodeId === this.#self)
      this.#startRun(cmd.taskId, cmd.attempt);
    // New work or a freed slot: the leader places at once rather than at the next periodic pass (a slot
    // refilled only every scheduleMs capped throughput at slots / scheduleMs).
    if (FREES_OR_ADDS_WORK.has(cmd.type) && result.ok && this.#o.commands.isLeader()) this.#scheduleSoon();
    this.events.emit('change');
  }

  #onEffect(e: JobEffect): void {
    if (e.type === 'taskAssigned' && e.nodeId === this.#self) this.#startRun(e.taskId, e.attempt);
    if (e.type === 'stopTask' && e.nodeId === this.#self) {
      const run = this.#running.get(e.taskId);
      if (run && run.attempt === e.attempt) run.abort.abort(new Error('cancelled'));
    }
    if (e.type === 'taskRequeued') {
      // A run of ours for a task that went back to the queue is stale.
      const run = this.#running.get(e.taskId);
      const task = this.#o.machine.task(e.taskId);
      if (run && task && (task.attempt !== run.attempt || task.nodeId !== this.#self))
        run.abort.abort(new Error('stale attempt'));
      if (this.#o.commands.isLeader()) this.#scheduleSoon();
    }
  }

  // ---- the worker ---------------------------------------------------------------------------------------

  #startRun(taskId: string, attempt: number): void {
    if (this.#stopped) return;
    const existing = this.#running.get(taskId);
    if (existing) {
      // A stopped run still handing its attempt back is no reason to ignore the attempt: one handed back
      // unstarted is undone in the log, and its number can come right back to this node.
      if (existing.attempt > attempt || (existing.attempt === attempt && !existing.abort.signal.aborted))
        return;
      existing.abort.abort(new Error('superseded by a newer attempt'));
    }
    const runSpec = this.#o.machine.taskRunSpec(taskId);
    if (!runSpec || runSpec.attempt !== attempt) return;
    const run: LocalRun = {
      taskId,
      attempt,
      abort: new AbortController(),
      startedAt: Date.now(),
      jobId: runSpec.jobId,
      cpus: runSpec.resources.cpus,
      memoryBytes: runSpec.resources.memoryBytes,
      admitted: false,
    };
    this.#running.set(taskId, run);
    run.done = this.#execute(run, runSpec).finally(() => {
      this.#slots.release(run);
      if (this.#running.get(taskId) === run) this.#running.delete(taskId);
      // Whatever ended it (exit, cancel, requeue, stale attempt): local views drop the run.
      this.events.emit('ended-local', {
        taskId,
        jobId: run.jobId,
        attempt,
        state: 'ended',
        endedAt: Date.now(),
      });
      this.events.emit('change');
    });
  }

  async #execute(run: LocalRun, rs: TaskRunSpec): Promise<void> {
    const admission = await this.#slots.admit(run, run.abort.signal);
    if (admission === 'aborted') {
      await this.#handBackIfAsked(run, true);
      return;
    }
    run.startedAt = Date.now();
    if (
      admission === 'waited' &&
      (this.#o.node.ownAdvertisement().mode !== 'active' || this.#o.machine.nodeMode(this.#self) !== 'active')
    ) {
      // Held ready while the node was paused (by its owner, or in the log) or drained: it never started, so
      // it goes back to the queue at no cost to the task (neverStarted) and another node takes it.
      this.#slots.release(run);
      run.abort.abort(
        new Error(`${REQUEUE_PREFIX}node ${this.#self} stopped taking work before the task started`),
      );
      await this.#handBackIfAsked(run, true);
      return;
    }
    const executor = this.#o.executors[rs.executor];
    const output = this.#o.output;
    await output.begin(run.taskId, run.attempt);
    // The owner's allow-list, checked again here: the scheduler honours it, but this node trusts only itself.
    const allowed = this.#o.node.ownAdvertisement().offered.allowedSubmitters;
    const submitter = this.#o.machine.job(rs.jobId)?.submitter ?? null;
    if (!submitterAllowed(allowed, submitter)) {
      await output.end(run.taskId);
      await this.#reportEnd({
        type: 'taskFinished',
        taskId: run.taskId,
        attempt: run.attempt,
        outcome: 'error',
        exitCode: 125,
        reason: `refused: this node's owner runs only jobs of ${allowed!.join(', ')}`,
        at: Date.now(),
      });
      return;
    }
    if (!executor) {
      await output.end(run.taskId);
      await this.#reportEnd({
        type: 'taskFinished',
        taskId: run.taskId,
        attempt: run.attempt,
        outcome: 'error',
        exitCode: 125,
        reason: `this node has no ${rs.executor} executor`,
        at: Date.now(),
      });
      return;
    }
    const spec: TaskSpec = {
      taskId: run.taskId,
      jobId: rs.jobId,
      attempt: run.attempt,
      executor: rs.executor,
      image: rs.image,
      entrypoint: rs.entrypoint,
      command: rs.command,
      env: rs.env,
      workdir: rs.workdir,
      resources: {
        cpus: rs.resources.cpus,
        memoryBytes: rs.resources.memoryBytes,
        ...(rs.resources.diskBytes ? { diskBytes: rs.resources.diskBytes } : {}),
        ...(rs.resources.gpus
          ? {
              gpus: {
                count: rs.resources.gpus.count,
                ...(rs.resources.gpus.vendor ? { vendor: rs.resources.gpus.vendor as 'nvidia' } : {}),
              },
            }
          : {}),
      },
      timeoutMs: rs.timeoutMs,
      network: rs.network,
      ...(rs.executor === 'wasm' && rs.wasm?.bytes
        ? { wasm: { module: rs.wasm.bytes }, args: rs.command }
        : {}),
    };
    let started = false;
    let result: TaskResult;
    try {
      result = await executor.run(spec, {
        policy: this.#o.policy(),
        signal: run.abort.signal,
        onEvent: (e) => {
          if (e.type === 'started' && !started) {
            started = true;
            this.events.emit('started-local', {
              taskId: run.taskId,
              jobId: run.jobId,
              state: 'running',
              startedAt: e.at,
            });
            void this.#report({
              type: 'taskStarted',
              taskId: run.taskId,
              attempt: run.attempt,
              at: e.at,
            }).catch(() => {});
          } else if (e.type === 'output') {
            output.append(run.taskId, e.stream, e.data);
            this.events.emit('output', run.taskId, e.stream, e.data);
          } else if (e.type === 'pull') {
            this.events.emit('pull', run.taskId, e);
          }
        },
      });
    } catch (err) {
      result = {
        outcome: 'error',
        exitCode: null,
        reason: (err as Error).message,
        endedAt: Date.now(),
        usage: { cpuMs: 0, peakMemoryBytes: 0 },
      };
    }
    const mapped = outcomeOf(result);
    const wallMs = Math.max(0, result.endedAt - (result.startedAt ?? run.startedAt));
    // Asked while this run still holds its slot (the successor takes that slot); then the slot goes to a
    // task held ready here, which starts before this report is even replicated.
    const wanted =
      result.outcome !== 'cancelled' && mapped.outcome === 'succeeded'
        ? this.#tasksWanted(rs, submitter, wallMs)
        : 0;
    // Of those, the ones beyond this run's successor (see #askedAhead).
    const ahead = Math.max(0, wanted - 1);
    this.#slots.release(run);
    await output.end(run.taskId);
    this.events.emit('output-end', run.taskId);
    if (result.outcome === 'cancelled') {
      await this.#handBackIfAsked(run, false);
      return;
    }
    const tails = output.tails(run.taskId, TAIL_BYTES);
    this.#askedAhead += ahead;
    const res = await this.#reportEnd({
      type: 'taskFinished',
      taskId: run.taskId,
      attempt: run.attempt,
      ...mapped,
      stdoutTail: tails.stdout,
      stderrTail: tails.stderr,
      usage: {
        wallMs,
        cpuMs: result.usage.cpuMs,
        maxMemoryBytes: result.usage.peakMemoryBytes,
      },
      ...(wanted > 0 ? { takeNext: wanted === 1 ? true : wanted } : {}),
      at: result.endedAt,
    }).finally(() => {
      this.#askedAhead -= ahead;
    });
    if (res && !res.ok && res.stale)
      this.#log.info(
        { task: run.taskId, attempt: run.attempt },
        'result of a stale attempt rejected by the log',
      );
    else if (res && !res.ok)
      // Not stale, yet refused: the log keeps the task live on this node, which no longer runs it. Say so.
      this.#log.error(
        { task: run.taskId, attempt: run.attempt, code: res.code, err: res.error },
        'the log refused this task result',
      );
    const job = this.#o.machine.job(run.jobId);
    this.events.emit('finished', {
      taskId: run.taskId,
      jobId: run.jobId,
      name: job?.name ?? '',
      submitter: job?.submitter ?? '',
      image: job?.spec.image ?? job?.spec.executor ?? '',
      state: mapped.outcome === 'succeeded' ? 'succeeded' : 'failed',
      outcome: mapped.outcome,
      exitCode: mapped.exitCode,
      startedAt: result.startedAt ?? run.startedAt,
      finishedAt: result.endedAt,
      cpuMs: result.usage.cpuMs,
    });
  }

  /**
   * A run stopped by the log (job cancel, stale attempt) needs no report; one stopped by this node goes back
   * to the queue. `neverStarted`: it never got a slot, so its attempt is undone rather than recorded as lost.
   */
  async #handBackIfAsked(run: LocalRun, neverStarted: boolean): Promise<void> {
    const why = (run.abort.signal.reason as Error | undefined)?.message ?? '';
    if (!why.startsWith(REQUEUE_PREFIX)) return;
    await this.#reportEnd({
      type: 'requeue',
      taskId: run.taskId,
      attempt: run.attempt,
      reason: why.slice(REQUEUE_PREFIX.length),
      ...(neverStarted ? { neverStarted: true } : {}),
      at: Date.now(),
    });
  }

  /**
   * How many of this job's tasks the finish report of a run that took `ranMs` asks for (`takeNext`): 0, 1
   * for the slot it frees, or more for a short task, to hold a few ready so a freed slot starts the next one
   * at once instead of after a Raft commit (prefetch, as Celery's workers do). Held tasks are bounded by
   * PREFETCH_MAX_HELD and the node's maxConcurrent, counting those already asked for.
   */
  #tasksWanted(rs: TaskRunSpec, submitter: string | null, ranMs: number): number {
    if (!this.#hasRoomForNext(rs, submitter)) return 0;
    if (ranMs > PREFETCH_MAX_RUN_MS) return 1;
    const held = Math.min(PREFETCH_MAX_HELD, this.#o.node.ownAdvertisement().offered.maxConcurrent);
    const ahead = held - this.#slots.waiting - this.#askedAhead;
    return 1 + Math.max(0, Math.min(JOB_LIMITS.maxTakeNext - 1, ahead));
  }

  /**
   * Whether the slot a finishing run of this job frees may take the job's next task at once (the report's
   * `takeNext`). The leader placed this job here under the offer of that time; the owner may have paused,
   * lowered the caps or narrowed the allowed submitters since, and only this node knows at once. The next task
   * has the same shape, so it fits when what the runs hold now, the finishing one included, is within the
   * offer. GPU tasks are left to the leader (their GPUs are reserved by index).
   */
  #hasRoomForNext(rs: TaskRunSpec, submitter: string | null): boolean {
    if (this.#stopped || rs.resources.gpus) return false;
    const own = this.#o.node.ownAdvertisement();
    const offer = own.offered;
    if (own.mode !== 'active' || !offer.executors.includes(rs.executor)) return false;
    const held = this.#slots.held;
    if (held.count > offer.maxConcurrent) return false;
    if (!submitterAllowed(offer.allowedSubmitters, submitter)) return false;
    return held.cpus <= offer.cpus + 1e-6 && held.memoryBytes <= offer.memoryBytes;
  }

  /** Proposes a report, retrying with backoff while there is no leader (bounded). */
  async #report(cmd: JobCommandInput, tries = REPORT_TRIES): Promise<ApplyResult> {
    let delay = 100;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#o.commands.propose(cmd, { timeoutMs: 5000 });
      } catch (err) {
        if (attempt >= tries || this.#stopped) throw err;
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 3000);
      }
    }
  }

  /**
   * Reports the end of a run (its result or its hand-back). If the log does not take it within a few tries,
   * it goes to the outbox, which every heartbeat offers again: dropping it would leave the task assigned to
   * this live node for good. Null then; never throws.
   */
  async #reportEnd(cmd: EndReport): Promise<ApplyResult | null> {
    try {
      return await this.#report(cmd, END_REPORT_TRIES);
    } catch (err) {
      // Delivered late, it should not pull more of the job's tasks here (the leader places them meanwhile).
      let kept: EndReport = cmd;
      if (cmd.type === 'taskFinished') {
        const { takeNext: _late, ...rest } = cmd;
        kept = rest;
      }
      const { kept: parked, dropped } = this.#outbox.park(kept);
      if (parked) this.#persist((s) => s.put(kept));
      if (dropped) this.#persist((s) => s.delete(dropped.taskId));
      this.#log.warn(
        { task: cmd.taskId, attempt: cmd.attempt, report: cmd.type, err: (err as Error).message },
        'could not report the end of a task; kept to offer again with every heartbeat',
      );
      if (dropped)
        this.#log.error(
          { task: dropped.taskId, attempt: dropped.attempt, kept: MAX_UNDELIVERED_REPORTS },
          'too many undelivered reports: dropped the oldest',
        );
      return null;
    }
  }

  /** Runs a write of the outbox's persistence, if it has one; a failed write costs only the restart case. */
  #persist(write: (store: OutboxPersistence) => Promise<void>): void {
    const store = this.#o.outboxStore;
    if (store)
      write(store).catch((err: Error) => this.#log.warn({ err: err.message }, 'could not store the outbox'));
  }

  /** Reports kept by the outbox before a restart go back into it. */
  async #loadOutbox(): Promise<void> {
    const store = this.#o.outboxStore;
    if (!store) return;
    try {
      const { reports, discarded } = await store.load();
      for (const report of reports) this.#outbox.park(report);
      if (reports.length > 0 || discarded > 0)
        this.#log.info(
          { reports: reports.length, discarded },
          'loaded undelivered reports from before the restart',
        );
    } catch (err) {
      this.#log.warn({ err: (err as Error).message }, 'could not load the stored outbox');
    }
  }

  /** Offers the outbox's reports again, those the log still owes (the task's attempt is still here). */
  async #offerOutbox(): Promise<void> {
    if (this.#offeringOutbox || this.#outbox.size === 0) return;
    this.#offeringOutbox = true;
    try {
      const owed = this.#outbox.due((cmd) => {
        const task = this.#o.machine.task(cmd.taskId);
        const stillOwed = task !== undefined && task.nodeId === this.#self && task.attempt === cmd.attempt;
        if (!stillOwed) this.#persist((s) => s.delete(cmd.taskId));
        return stillOwed;
      });
      // One try each: the batcher puts them into one entry; what fails waits for the next heartbeat.
      await Promise.all(
        owed.map(async (cmd) => {
          try {
            const res = await this.#o.commands.propose(cmd, { timeoutMs: 5000 });
            if (this.#outbox.delivered(cmd)) this.#persist((s) => s.delete(cmd.taskId));
            this.#log.info(
              { task: cmd.taskId, attempt: cmd.attempt, report: cmd.type, ok: res.ok },
              'delivered a report kept in the outbox',
            );
          } catch (err) {
            this.#log.debug({ task: cmd.taskId, err: (err as Error).message }, 'outbox report not taken yet');
          }
        }),
      );
    } finally {
      this.#offeringOutbox = false;
    }
  }

  async #heartbeat(): Promise<void> {
    const leader = this.#o.commands.leaderId();
    if (!leader || this.#stopped) return;
    this.#startMissedAssignments();
    void this.#offerOutbox();
    const running = [...this.#running.values()].map((r) => ({ taskId: r.taskId, attempt: r.attempt }));
    if (leader === this.#self) {
      this.#beat(this.#self);
      // A member Raft hears from is alive too: its work heartbeat may be late (a swamped machine, a slow
      // control stream) while its log replication is fine; requeueing a live node's tasks would run them twice.
      for (const id of this.#o.commands.activeMembers()) this.#beat(id);
      return;
    }
    try {
      const reply = (await this.#o.node.call(leader, 'work.heartbeat', { running }, { timeoutMs: 3000 })) as {
        stop: { taskId: string; attempt: number }[];
      };
      for (const s of reply?.stop ?? []) {
        const run = this.#running.get(s.taskId);
        if (!run || run.attempt !== s.attempt) continue;
        run.abort.abort(new Error('stale attempt'));
        this.#fenced.add(`${s.taskId}/${s.attempt}`);
      }
    } catch (err) {
      this.#log.debug({ err: (err as Error).message }, 'heartbeat to leader failed');
    }
  }

  #beat(nodeId: string): void {
    this.#lastBeat.set(nodeId, Date.now());
  }

  // ---- the leader --------------------------------------------------------------------------------------

  #scheduleSoon(): void {
    if (this.#passQueued) return;
    this.#passQueued = true;
    setImmediate(() => {
      this.#passQueued = false;
      void this.#leaderPass().catch(() => {});
    });
  }

  async #leaderPass(): Promise<void> {
    const leader = this.#o.commands.isLeader();
    if (!leader) {
      this.#wasLeader = false;
      return;
    }
    if (!this.#wasLeader) {
      // A new leader does not know who is alive: everyone gets a full TTL before being declared down.
      this.#wasLeader = true;
      this.#leaderSince = Date.now();
      this.#lastBeat.clear();
      this.#lastPassAt = 0;
    }
    this.#creditOwnStall(Date.now());
    if (this.#scheduling) {
      this.#scheduleAgain = true;
      return;
    }
    this.#scheduling = true;
    try {
      do {
        this.#scheduleAgain = false;
        await this.#requeueLostNodes();
        await this.#placeQueued();
      } while (this.#scheduleAgain && !this.#stopped);
    } catch (err) {
      this.#log.warn({ err: (err as Error).message }, 'scheduling pass failed');
    } finally {
      this.#scheduling = false;
    }
  }

  /**
   * Time this node could not run does not count against the others. Passes come every scheduleMs while the
   * event loop runs; a longer gap means this process was stopped or starved (a laptop asleep, a swamped
   * host), and then it has not heard from anyone for that long whatever they did: their heartbeats still
   * sit unread, since timers run before pending I/O when the loop resumes. Without this, the first pass
   * after such a stall declared every node silent, this one included, and re-queued all running tasks.
   * Only the excess over two periods is credited, so a leader that is slow all the time still ages the
   * others, just more slowly.
   */
  #creditOwnStall(now: number): void {
    const period = this.#o.scheduleMs ?? DEFAULTS.scheduleMs;
    const stalled = this.#lastPassAt > 0 ? now - this.#lastPassAt - 2 * period : 0;
    this.#lastPassAt = now;
    if (stalled <= 0) return;
    for (const [id, at] of this.#lastBeat) this.#lastBeat.set(id, at + stalled);
    this.#leaderSince += stalled;
  }

  #isUp(nodeId: string, now: number): boolean {
    const ttl = (this.#o.nodeTtlMs ?? DEFAULTS.nodeTtlMs) + (this.#o.nodeGraceMs ?? DEFAULTS.nodeGraceMs);
    const last = this.#lastBeat.get(nodeId) ?? this.#leaderSince;
    return now - last <= ttl;
  }

  async #requeueLostNodes(): Promise<void> {
    const now = Date.now();
    const m = this.#o.machine;
    const lost: TaskRecord[] = [];
    for (const row of this.#o.node.nodes()) {
      if (this.#isUp(row.peerId, now)) continue;
      lost.push(...m.tasksOnNode(row.peerId));
    }
    if (lost.length === 0) return;
    const nodesLost = [...new Set(lost.map((t) => t.nodeId))];
    this.#log.warn(
      { nodes: nodesLost, tasks: lost.length },
      'nodes silent past TTL + grace: re-queueing their tasks',
    );
    await Promise.all(
      lost.map((t) =>
        this.#o.commands
          .propose({
            type: 'requeue',
            taskId: t.id,
            attempt: t.attempt,
            reason: `node ${t.nodeId} stopped heartbeating`,
            at: now,
          })
          .catch(() => {}),
      ),
    );
  }

  #schedulerNodes(now: number): SchedulerNode[] {
    const m = this.#o.machine;
    return this.#o.node
      .nodes()
      .map((row) =>
        toSchedulerNode(
          row,
          this.#isUp(row.peerId, now) && (row.self || this.#lastBeat.has(row.peerId)),
          m.nodeMode(row.peerId),
        ),
      );
  }

  async #placeQueued(): Promise<void> {
    const m = this.#o.machine;
    const now = Date.now();
    const nodes = this.#schedulerNodes(now);
    // No pass places more than the free slots of the nodes that could take work (nor more than the pass
    // limit), so the scheduler only needs that many tasks of each job (see JobStateMachine.queuedTasks).
    let free = 0;
    for (const n of nodes)
      if (n.up && n.mode === 'active') free += Math.max(0, n.maxConcurrent - m.liveCountOn(n.id));
    const perJob = Math.max(1, Math.min(free, MAX_ASSIGNMENTS_PER_PASS));
    const tasks = m.queuedTasks({ perJob, now });
    if (tasks.length === 0) return;
    const result = schedule(
      { now, nodes, tasks, running: m.runningTasks() },
      { maxAssignments: MAX_ASSIGNMENTS_PER_PASS },
    );
    this.#unplaced.clear();
    for (const u of result.unplaced.slice(0, 10_000)) this.#unplaced.set(u.taskId, u.reason);
    if (result.assignments.length === 0) return;
    const cmds = m.assignCommands(result.assignments, now);
    await Promise.all(cmds.map((c) => this.#o.commands.propose(c).catch(() => {})));
    if (result.assignments.length >= MAX_ASSIGNMENTS_PER_PASS) this.#scheduleAgain = true;
  }

  // ---- RPC ---------------------------------------------------------------------------------------------

  #registerRpc(): void {
    const rpc = this.#o.node.rpc;
    const m = this.#o.machine;

    rpc.register('jobs.submit', z.object({ spec: z.unknown() }).strict(), async ({ spec }, ctx) => {
      let valid: ReturnType<typeof validateJobSpec>;
      try {
        valid = validateJobSpec(spec);
      } catch (err) {
        throw new RpcFailure(RPC_ERRORS.refused, (err as ProtocolError).message);
      }
      const jobId = formatJobId(Date.now(), randomBytes(8));
      const who = this.#o.commands.authorize('jobs.submit', { spec }, ctx);
      const submitter = who.submitter;
      const res = await this.#o.commands.propose(
        { type: 'submitJob', jobId, spec: valid, submitter, at: Date.now() },
        { timeoutMs: 15_000, ...who.origin },
      );
      if (!res.ok) throw new RpcFailure(RPC_ERRORS.refused, res.error);
      return { jobId, tasks: m.job(jobId)?.taskCount ?? 0 };
    });

    rpc.register(
      'jobs.list',
      z
        .object({
          state: z.enum(['queued', 'running', 'succeeded', 'failed', 'cancelled']).optional(),
          limit: z.number().int().min(1).max(10_000).default(100),
          /** Leave out this many of the newest matching jobs (the pages already read). */
          skip: z
            .number()
            .int()
            .min(0)
            .max(STATE_LIMITS.maxActiveJobs + STATE_LIMITS.maxRetainedFinishedJobs)
            .default(0),
        })
        .strict(),
      async ({ state, limit, skip }) => {
        await this.#o.commands.readBarrier().catch(() => {});
        // The newest `limit` after the `skip` newest, oldest first, as many as PAGE_MAX_BYTES allows (the
        // newest of them first); nextSkip says where the next page starts when some were left out.
        const newestFirst = m
          .jobs({ ...(state ? { state } : {}), limit: skip + limit })
          .reverse()
          .slice(skip);
        const { views, stoppedAt } = pageOf(newestFirst, (j) => this.#jobView(j.id, null)!);
        return { jobs: views.reverse(), nextSkip: stoppedAt === null ? null : skip + views.length };
      },
    );

    rpc.register(
      'jobs.get',
      z.object({ jobId: z.string().max(128), ...TaskPageParams }).strict(),
      async ({ jobId, ...page }) => {
        await this.#o.commands.readBarrier().catch(() => {});
        const view = this.#jobView(jobId, page);
        if (!view) throw new RpcFailure(RPC_ERRORS.notFound, `no job ${jobId}`);
        // Why a task waits is the leader's soft state: ask it when we are not the leader.
        const tasks = view.tasks as { taskId: string; state: string; unplacedReason: string | null }[];
        const leader = this.#o.commands.leaderId();
        if (leader && leader !== this.#self && tasks.some((t) => t.state === 'queued')) {
          const reasons = (await this.#o.node
            .call(leader, 'jobs.unplaced', { jobId }, { timeoutMs: 2000 })
            .catch(() => null)) as Record<string, string> | null;
          for (const t of tasks)
            if (t.state === 'queued' && reasons?.[t.taskId]) t.unplacedReason = reasons[t.taskId]!;
        }
        return view;
      },
    );
    rpc.register('jobs.unplaced', z.object({ jobId: z.string().max(128) }).strict(), ({ jobId }) => {
      const out: Record<string, string> = {};
      for (const t of m.tasksOfJob(jobId).slice(0, 1000)) {
        const r = this.#unplaced.get(t.id);
        if (r) out[t.id] = r;
      }
      return out;
    });

    rpc.register(
      'jobs.wait',
      z
        .object({
          jobId: z.string().max(128),
          timeoutMs: z.number().int().min(0).max(60_000).default(30_000),
          ...TaskPageParams,
        })
        .strict(),
      async ({ jobId, timeoutMs, ...page }, ctx) => {
        const terminal = () => {
          const j = m.job(jobId);
          return j && ['succeeded', 'failed', 'cancelled'].includes(j.state);
        };
        if (!m.job(jobId)) {
          await this.#o.commands.readBarrier().catch(() => {});
          if (!m.job(jobId)) throw new RpcFailure(RPC_ERRORS.notFound, `no job ${jobId}`);
        }
        if (!terminal()) {
          await new Promise<void>((resolve) => {
            const done = () => {
              if (!terminal()) return;
              cleanup();
            };
            const timer = setTimeout(() => cleanup(), timeoutMs);
            const cleanup = () => {
              clearTimeout(timer);
              this.events.off('change', done);
              ctx.signal?.removeEventListener('abort', cleanup);
              resolve();
            };
            this.events.on('change', done);
            ctx.signal?.addEventListener('abort', cleanup);
          });
        }
        return this.#jobView(jobId, page);
      },
    );

    rpc.register('jobs.cancel', z.object({ jobId: z.string().max(128) }).strict(), async ({ jobId }, ctx) => {
      const who = this.#o.commands.authorize('jobs.cancel', { jobId }, ctx);
      const job = m.job(jobId);
      if (job && !who.admin && job.submitter !== who.submitter) {
        throw new RpcFailure(
          RPC_ERRORS.forbidden,
          `you may only cancel your own jobs (${jobId} is ${job.submitter}'s)`,
        );
      }
      const res = await this.#o.commands.propose(
        { type: 'cancelJob', jobId, by: who.submitter, at: Date.now() },
        who.origin,
      );
      if (!res.ok)
        throw new RpcFailure(res.code === 'NOT_FOUND' ? RPC_ERRORS.notFound : RPC_ERRORS.refused, res.error);
      return { jobId, state: m.job(jobId)?.state ?? 'cancelled' };
    });

    rpc.register(
      'node.setMode',
      z
        .object({
          nodeId: z.string().max(128).optional(),
          mode: z.enum(['active', 'paused', 'draining']),
          deadlineMs: z
            .number()
            .int()
            .min(0)
            .max(7 * 24 * 3600_000)
            .optional(),
        })
        .strict(),
      async ({ nodeId, mode, deadlineMs }, ctx) => {
        this.#o.commands.authorize('node.setMode', { nodeId, mode, deadlineMs }, ctx, ['admin']);
        const target = nodeId ?? this.#self;
        const res = await this.#o.commands.propose({
          type: 'setNodeMode',
          nodeId: target,
          mode,
          at: Date.now(),
        });
        if (!res.ok) throw new RpcFailure(RPC_ERRORS.refused, res.error);
        if (mode === 'draining' && deadlineMs !== undefined) {
          if (target === this.#self) this.#drainAfter(deadlineMs);
          else await this.#o.node.call(target, 'node.drainDeadline', { deadlineMs }).catch(() => {});
        }
        return { nodeId: target, mode };
      },
    );
    rpc.register(
      'node.drainDeadline',
      z
        .object({
          deadlineMs: z
            .number()
            .int()
            .min(0)
            .max(7 * 24 * 3600_000),
        })
        .strict(),
      ({ deadlineMs }) => {
        this.#drainAfter(deadlineMs);
        return { ok: true };
      },
    );

    rpc.register(
      'work.heartbeat',
      z
        .object({
          running: z.array(z.object({ taskId: z.string().max(256), attempt: z.number().int() })).max(10_000),
        })
        .strict(),
      ({ running }, ctx) => {
        if (!ctx.remotePeer) throw new RpcFailure(RPC_ERRORS.badRequest, 'heartbeats come over libp2p');
        if (!this.#o.commands.isLeader()) throw new RpcFailure(RPC_ERRORS.unavailable, 'not the leader');
        this.#beat(ctx.remotePeer);
        // Fencing: anything the node runs that the log no longer gives it must stop.
        const stop = running.filter((r) => {
          const t = m.task(r.taskId);
          return !t || t.attempt !== r.attempt || t.nodeId !== ctx.remotePeer;
        });
        return { stop };
      },
    );

    const LogsParams = z
      .object({
        taskId: z.string().max(256),
        follow: z.boolean().default(false),
        /** Only the last this many lines of what is stored (then, with follow, everything new). */
        tail: z.number().int().min(0).max(MAX_TAIL_LINES).optional(),
      })
      .strict();
    rpc.registerStream('logs.stream', LogsParams, (p, ctx) =>
      this.#logs(p.taskId, p.follow, p.tail, ctx.signal),
    );
    rpc.registerStream('logs.local', LogsParams, (p, ctx) =>
      this.#o.output.read(p.taskId, { follow: p.follow, tail: p.tail, signal: ctx.signal }),
    );
  }

  #drainAfter(deadlineMs: number): void {
    const t = setTimeout(() => {
      if (this.#o.machine.nodeMode(this.#self) !== 'draining') return;
      this.stopAllRunning('the node was drained past its deadline');
    }, deadlineMs);
    t.unref();
    this.#timers.push(t);
  }

  async *#logs(
    taskId: string,
    follow: boolean,
    tail: number | undefined,
    signal?: AbortSignal,
  ): AsyncIterable<unknown> {
    const m = this.#o.machine;
    let task = m.task(taskId);
    // A follow may start long before the task runs (`run --follow` of a job whose tasks queue behind others):
    // wait for a node to take it for as long as the caller follows, up to FOLLOW_WAIT_MAX_MS. A task that
    // ends without ever running (cancelled while queued) has nothing to stream.
    const waitUntil = Date.now() + FOLLOW_WAIT_MAX_MS;
    while (
      follow &&
      task &&
      !task.nodeId &&
      task.attempts.length === 0 &&
      !isTerminal(task.state) &&
      !signal?.aborted &&
      Date.now() < waitUntil
    ) {
      await new Promise((r) => setTimeout(r, FOLLOW_WAIT_POLL_MS));
      task = m.task(taskId);
    }
    if (!task) {
      await this.#o.commands.readBarrier().catch(() => {});
      task = m.task(taskId);
      if (!task) throw new RpcFailure(RPC_ERRORS.notFound, `no task ${taskId}`);
    }
    const nodeId = task.nodeId ?? task.attempts.at(-1)?.nodeId ?? null;
    if (!nodeId) return;
    if (nodeId === this.#self) {
      yield* this.#o.output.read(taskId, { follow, tail, signal });
      return;
    }
    // Relay from the node that ran it; fall back to the tails in the log if it is gone.
    const items: unknown[] = [];
    let wake: (() => void) | null = null;
    let done = false;
    let failure: Error | null = null;
    void this.#o.node
      .call(
        nodeId,
        'logs.local',
        { taskId, follow, ...(tail === undefined ? {} : { tail }) },
        {
          timeoutMs: FOLLOW_WAIT_MAX_MS,
          onItem: (it: unknown) => {
            items.push(it);
            wake?.();
          },
        },
      )
      .catch((err: Error) => {
        failure = err;
      })
      .finally(() => {
        done = true;
        wake?.();
      });
    for (;;) {
      while (items.length > 0) yield items.shift();
      if (done || signal?.aborted) break;
      await new Promise<void>((r) => {
        wake = r;
      });
      wake = null;
    }
    while (items.length > 0) yield items.shift();
    if (failure) {
      const t = m.task(taskId);
      const fromLog = [
        { stream: 'stdout' as const, text: t?.stdoutTail ?? '' },
        { stream: 'stderr' as const, text: t?.stderrTail ?? '' },
      ].filter((x) => x.text);
      if (tail === undefined) {
        for (const x of fromLog) yield { stream: x.stream, data: x.text, seq: 0, fromLog: true };
        return;
      }
      // The log keeps each stream's tail apart, so their lines cannot be interleaved: stdout's come first.
      const last = new LastLines(tail);
      for (const x of fromLog) last.push({ seq: 0, stream: x.stream, at: 0, data: Buffer.from(x.text) });
      for (const l of last.items())
        yield { stream: l.stream, data: Buffer.from(l.data).toString('utf8'), seq: 0, fromLog: true };
    }
  }

  /**
   * A job's public view; with `page`, one page of its tasks (in index order from `page.taskFrom`, at most
   * `taskLimit` of them and PAGE_MAX_BYTES, the first one always) and `nextTaskFrom`, the index to ask
   * for next, or null when none is left.
   */
  #jobView(jobId: string, page: TaskPage | null): Record<string, unknown> | null {
    const m = this.#o.machine;
    const j = m.job(jobId);
    if (!j) return null;
    const base = {
      jobId: j.id,
      name: j.name,
      state: j.state,
      submitter: j.submitter,
      executor: j.spec.executor,
      image: j.spec.image ?? null,
      createdAt: j.submittedAt,
      startedAt: j.startedAt,
      finishedAt: j.finishedAt,
      cancelledBy: j.cancelledBy,
      taskCount: j.taskCount,
      counts: j.counts,
    };
    // How attempts ended, over all tasks: lets a reader check exactly-once without fetching every task.
    if (page === null) return { ...base, attemptOutcomes: j.attemptOutcomes };
    const listed = m
      .tasksOfJob(jobId)
      .slice(page.taskFrom)
      .filter((t) => page.taskFilter === 'all' || t.state !== 'succeeded');
    const { views, stoppedAt } = pageOf(listed, (t) => this.#taskView(t), page.taskLimit);
    return { ...base, tasks: views, nextTaskFrom: stoppedAt?.index ?? null };
  }

  #taskView(t: Readonly<TaskRecord>): Record<string, unknown> {
    const last = t.attempts.at(-1);
    return {
      taskId: t.id,
      index: t.index,
      state: t.state,
      attempt: t.attempt,
      nodeId: t.nodeId ?? last?.nodeId ?? null,
      exitCode: last?.exitCode ?? null,
      outcome: last?.outcome ?? null,
      reason: last?.reason ?? null,
      startedAt: last?.startedAt ?? null,
      endedAt: last?.endedAt ?? null,
      unplacedReason: t.state === 'queued' ? (this.#unplaced.get(t.id) ?? null) : null,
      attempts: t.attempts,
      stdoutTail: t.stdoutTail,
      stderrTail: t.stderrTail,
    };
  }

  /** Stops every task running here and hands it back to the queue (the owner wants the machine now). */
  stopAllRunning(reason: string): number {
    const n = this.#running.size;
    for (const run of this.#running.values()) run.abort.abort(new Error(`${REQUEUE_PREFIX}${reason}`));
    return n;
  }

  /** Tasks running on this node now (not those held ready for a slot), for the dashboard. */
  localTasks(): {
    taskId: string;
    jobId: string;
    attempt: number;
    name: string;
    submitter: string;
    image: string;
    startedAt: number;
  }[] {
    const m = this.#o.machine;
    return [...this.#running.values()]
      .filter((r) => r.admitted)
      .map((r) => {
        const job = m.job(r.jobId);
        return {
          taskId: r.taskId,
          jobId: r.jobId,
          attempt: r.attempt,
          name: job?.name ?? '',
          submitter: job?.submitter ?? '',
          image: job?.spec.image ?? job?.spec.executor ?? '',
          startedAt: r.startedAt,
        };
      });
  }

  /** A page of a task's stored output on this node, as text lines for the dashboard. */
  async outputPage(
    taskId: string,
    fromSeq: number,
  ): Promise<{ lines: { seq: number; stream: string; text: string }[]; ended: boolean }> {
    const r = await this.#o.output.store.read(taskId, { fromSeq, limit: 1000 });
    return {
      lines: r.entries.map((e) => ({
        seq: e.seq,
        stream: e.stream,
        text: Buffer.from(e.data).toString('utf8'),
      })),
      ended: r.ended && r.entries.length === 0,
    };
  }

  /**
   * Stops cleanly: every run is stopped (its container removed) and handed back to the queue, so another node
   * takes it at once instead of after the heartbeat TTL. Bounded by STOP_RUNS_GRACE_MS.
   */
  async stop(): Promise<void> {
    // No new runs from here on; reports still get their first try.
    this.#stopped = true;
    for (const t of this.#timers) clearInterval(t);
    const runs = [...this.#running.values()];
    for (const run of runs) run.abort.abort(new Error(`${REQUEUE_PREFIX}node ${this.#self} is stopping`));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.allSettled(runs.map((r) => r.done)),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, STOP_RUNS_GRACE_MS);
      }),
    ]);
    clearTimeout(timer);
  }

  /** Runs holding a slot here now. */
  runningCount(): number {
    return this.#slots.held.count;
  }

  /** Tasks assigned here and waiting for a slot (held ready by prefetch). */
  heldReadyCount(): number {
    return this.#slots.waiting;
  }

  /** End-of-run reports the log has not taken yet (see ReportOutbox). */
  undeliveredReportCount(): number {
    return this.#outbox.size;
  }
}

export function toSchedulerNode(
  row: Advertisement & { self?: boolean },
  up: boolean,
  logMode: 'active' | 'paused' | 'draining',
): SchedulerNode {
  const mode = logMode !== 'active' ? logMode : row.mode;
  return {
    id: row.peerId,
    up,
    mode,
    capacity: {
      cpus: row.offered.cpus,
      memoryBytes: row.offered.memoryBytes,
      diskBytes: row.offered.diskBytes,
      gpus: row.offered.gpus,
    },
    maxConcurrent: row.offered.maxConcurrent,
    arch: row.hardware.cpu.arch,
    os: row.hardware.os.platform,
    labels: row.labels,
    docker: row.hardware.docker.available && row.offered.executors.includes('docker'),
    executors: row.offered.executors,
    ...(row.offered.allowedSubmitters ? { allowedSubmitters: row.offered.allowedSubmitters } : {}),
  };
}
