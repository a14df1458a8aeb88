/**
 * Group commit for the commands nodes generate themselves (assign, taskStarted, taskFinished, requeue): while
 * one batch is being replicated, new commands wait and then go into the log together as one entry
 * `{ batch: [cbor(cmd), ...] }`. At one command at a time nothing waits; under load a Raft entry (envelope,
 * fsync share, append message, apply) is paid per batch instead of per command — with thousands of tasks
 * finishing per second that is most of the cost. Each caller still gets its own command's result.
 *
 * Plain successes (exit 0, no output) of one job in a batch travel folded into one `tasksFinished` command of
 * columns (see protocol/src/job.ts), placed where the first of them was; the apply side expands it back into
 * its taskFinished commands, in order, with one result each. The reports a batch reorders that way are of
 * different tasks (a task's start and end are never both in one batch: the end absorbs a queued start).
 *
 * Submitter commands (submitJob, cancelJob) never go here: they carry a signature checked per entry.
 */
import {
  encode,
  foldableFinish,
  foldFinished,
  type JobCommandInput,
  MAX_FOLDED_REPORTS,
  type TaskFinishedInput,
} from '@meshrun/protocol';

/** Commands whose entry needs no origin: they are fenced by attempt numbers, not by who proposed them. */
export const BATCHABLE_COMMANDS: ReadonlySet<string> = new Set([
  'assign',
  'taskStarted',
  'taskFinished',
  'requeue',
]);

export const BATCH_LIMITS = {
  /** Commands in one entry (the apply side refuses more). */
  maxCommands: 1000,
  /** Encoded bytes of one batch, well under the driver's proposal limit (1 MiB). */
  maxBytes: 768 * 1024,
} as const;

/** Bytes a folded report adds to its batch, about (eight numbers in columns; used for the size bound). */
const FOLDED_REPORT_BYTES = 48;

interface Waiting<R> {
  /** The encoded command, or null for a plain success that travels folded (see `fold`). */
  bytes: Uint8Array | null;
  /** A plain success: its job, and the report to fold. */
  fold?: { jobId: string; report: TaskFinishedInput };
  resolve: (r: R) => void;
  reject: (e: Error) => void;
  /** A queued taskStarted, by `taskId/attempt`, so its taskFinished can absorb it. */
  startKey?: string;
  startedAt?: number;
  /** Absorbed by a later taskFinished: left out of the batch. */
  absorbed?: boolean;
  /** A taskStarted held back (see startHoldMs) until this fires. */
  holdTimer?: NodeJS.Timeout;
}

interface TaskReport {
  type: string;
  taskId?: string;
  attempt?: number;
  at?: number;
  startedAt?: number;
}

/**
 * `proposeBatch` replicates one entry of `encoded` commands and resolves with one result per command they
 * stand for (`commands` in all: a folded report stands for several), in order.
 */
export type ProposeBatch<R> = (encoded: Uint8Array[], timeoutMs: number, commands: number) => Promise<R[]>;

export class CommandBatcher<R> {
  readonly #propose: ProposeBatch<R>;
  readonly #timeoutMs: number;
  readonly #startHoldMs: number;
  #queue: Waiting<R>[] = [];
  /** Queued (not yet proposed) taskStarted reports by `taskId/attempt`. */
  readonly #queuedStarts = new Map<string, Waiting<R>>();
  #inFlight = false;
  /** Entries proposed and commands carried, for metrics and tests. */
  readonly stats = { batches: 0, commands: 0 };

  /**
   * `startHoldMs`: how long a taskStarted report waits before it may go into a batch. A task that ends
   * within that time reports once, its start folded into its end; a longer one shows as running that much
   * later. 0: starts go out with the next batch like any command.
   */
  constructor(propose: ProposeBatch<R>, timeoutMs = 10_000, startHoldMs = 0) {
    this.#propose = propose;
    this.#timeoutMs = timeoutMs;
    this.#startHoldMs = startHoldMs;
  }

  /**
   * Queues one command; resolves with its own result once the entry carrying it is applied here.
   * A taskFinished whose taskStarted is still waiting here absorbs it (the start time travels as
   * `startedAt`): a task that ended before its start was replicated costs one command, not two. The
   * absorbed report resolves with the finished one's result.
   */
  submit(cmd: unknown): Promise<R> {
    const report = cmd as TaskReport;
    let absorbed: Waiting<R> | undefined;
    if (report.type === 'taskFinished' && report.startedAt === undefined) {
      const key = `${report.taskId}/${report.attempt}`;
      absorbed = this.#queuedStarts.get(key);
      if (absorbed) {
        this.#queuedStarts.delete(key);
        absorbed.absorbed = true;
        clearTimeout(absorbed.holdTimer);
        cmd = { ...report, startedAt: absorbed.startedAt };
      }
    }
    const fold = foldableFinish(cmd as JobCommandInput);
    const bytes = fold ? null : encode(cmd);
    const started =
      report.type === 'taskStarted'
        ? { startKey: `${report.taskId}/${report.attempt}`, startedAt: report.at }
        : {};
    return new Promise<R>((resolve, reject) => {
      const w: Waiting<R> = {
        bytes,
        resolve,
        reject,
        ...started,
        ...(fold ? { fold: { jobId: fold.jobId, report: cmd as TaskFinishedInput } } : {}),
      };
      if (w.startKey) this.#queuedStarts.set(w.startKey, w);
      if (w.startKey && this.#startHoldMs > 0) {
        w.holdTimer = setTimeout(() => {
          w.holdTimer = undefined;
          if (w.absorbed) return;
          this.#queue.push(w);
          if (!this.#inFlight) this.#flush();
        }, this.#startHoldMs);
        w.holdTimer.unref?.();
        return;
      }
      this.#queue.push(w);
      if (!this.#inFlight) queueMicrotask(() => this.#flush());
    }).then(
      (r) => {
        absorbed?.resolve(r);
        return r;
      },
      (err: Error) => {
        absorbed?.reject(err);
        throw err;
      },
    );
  }

  #flush(): void {
    if (this.#inFlight) return;
    // Take what fits; the rest goes with the next batch.
    const batch: Waiting<R>[] = [];
    let taken = 0;
    let bytes = 0;
    for (; taken < this.#queue.length && batch.length < BATCH_LIMITS.maxCommands; taken++) {
      const w = this.#queue[taken]!;
      if (w.absorbed) continue;
      const b = w.bytes?.byteLength ?? FOLDED_REPORT_BYTES;
      if (batch.length > 0 && bytes + b > BATCH_LIMITS.maxBytes) break;
      bytes += b;
      batch.push(w);
      if (w.startKey) this.#queuedStarts.delete(w.startKey);
    }
    this.#queue.splice(0, taken);
    if (batch.length === 0) return;
    const { encoded, order } = foldBatch(batch);
    this.#inFlight = true;
    this.stats.batches += 1;
    this.stats.commands += batch.length;
    this.#propose(encoded, this.#timeoutMs, order.length)
      .then(
        (results) => {
          // Fewer results only if the apply side refused a folded report whole (malformed: not ours).
          for (let i = 0; i < order.length; i++)
            if (i < results.length) order[i]!.resolve(results[i] as R);
            else order[i]!.reject(new Error('the log gave no result for this command'));
        },
        (err: Error) => {
          for (const w of batch) w.reject(err);
        },
      )
      .finally(() => {
        this.#inFlight = false;
        this.#flush();
      });
  }

  /** Commands waiting for the batch in flight to finish (held starts not counted). */
  get queued(): number {
    return this.#queue.filter((w) => !w.absorbed).length;
  }
}

/**
 * The entry's commands: each plain success joins its job's folded report, which takes the place of the first
 * of them (at most MAX_FOLDED_REPORTS each; batches are smaller). `order`: the waiting reports in the order
 * the apply side answers them, a folded report's members in place of it.
 */
function foldBatch<R>(batch: Waiting<R>[]): { encoded: Uint8Array[]; order: Waiting<R>[] } {
  const slots: (Waiting<R> | Waiting<R>[])[] = [];
  const groups = new Map<string, Waiting<R>[]>();
  for (const w of batch) {
    if (!w.fold) {
      slots.push(w);
      continue;
    }
    let group = groups.get(w.fold.jobId);
    if (!group || group.length >= MAX_FOLDED_REPORTS) {
      group = [];
      groups.set(w.fold.jobId, group);
      slots.push(group);
    }
    group.push(w);
  }
  const encoded: Uint8Array[] = [];
  const order: Waiting<R>[] = [];
  for (const slot of slots) {
    if (Array.isArray(slot)) {
      const jobId = slot[0]!.fold!.jobId;
      encoded.push(
        encode(
          foldFinished(
            jobId,
            slot.map((w) => w.fold!.report),
          ),
        ),
      );
      order.push(...slot);
    } else {
      encoded.push(slot.bytes!);
      order.push(slot);
    }
  }
  return { encoded, order };
}
