/**
 * Group commit for the commands nodes generate themselves (assign, taskStarted, taskFinished, requeue): while
 * one batch is being replicated, new commands wait and then go into the log together as one entry
 * `{ batch: [cbor(cmd), ...] }`. At one command at a time nothing waits; under load a Raft entry (envelope,
 * fsync share, append message, apply) is paid per batch instead of per command — with thousands of tasks
 * finishing per second that is most of the cost. Each caller still gets its own command's result.
 *
 * Submitter commands (submitJob, cancelJob) never go here: they carry a signature checked per entry.
 */
import { encode } from '@meshrun/protocol';

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

interface Waiting<R> {
  bytes: Uint8Array;
  resolve: (r: R) => void;
  reject: (e: Error) => void;
}

/** `proposeBatch` replicates one entry and resolves with one result per encoded command, in order. */
export type ProposeBatch<R> = (encoded: Uint8Array[], timeoutMs: number) => Promise<R[]>;

export class CommandBatcher<R> {
  readonly #propose: ProposeBatch<R>;
  readonly #timeoutMs: number;
  #queue: Waiting<R>[] = [];
  #queuedBytes = 0;
  #inFlight = false;
  /** Entries proposed and commands carried, for metrics and tests. */
  readonly stats = { batches: 0, commands: 0 };

  constructor(propose: ProposeBatch<R>, timeoutMs = 10_000) {
    this.#propose = propose;
    this.#timeoutMs = timeoutMs;
  }

  /** Queues one command; resolves with its own result once the entry carrying it is applied here. */
  submit(cmd: unknown): Promise<R> {
    const bytes = encode(cmd);
    return new Promise((resolve, reject) => {
      this.#queue.push({ bytes, resolve, reject });
      this.#queuedBytes += bytes.byteLength;
      if (!this.#inFlight) queueMicrotask(() => this.#flush());
    });
  }

  #flush(): void {
    if (this.#inFlight || this.#queue.length === 0) return;
    // Take what fits; the rest goes with the next batch.
    let n = 0;
    let bytes = 0;
    while (n < this.#queue.length && n < BATCH_LIMITS.maxCommands) {
      const b = this.#queue[n]!.bytes.byteLength;
      if (n > 0 && bytes + b > BATCH_LIMITS.maxBytes) break;
      bytes += b;
      n += 1;
    }
    const batch = this.#queue.splice(0, n);
    this.#queuedBytes -= bytes;
    this.#inFlight = true;
    this.stats.batches += 1;
    this.stats.commands += batch.length;
    this.#propose(
      batch.map((w) => w.bytes),
      this.#timeoutMs,
    )
      .then(
        (results) => {
          for (let i = 0; i < batch.length; i++) batch[i]!.resolve(results[i] as R);
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

  /** Commands waiting for the batch in flight to finish. */
  get queued(): number {
    return this.#queue.length;
  }
}
