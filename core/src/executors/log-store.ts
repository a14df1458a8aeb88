/**
 * Task log store: each task's stdout/stderr kept in a level DB (own sublevel), capped per task (the tail is
 * kept; dropped bytes are counted), readable after the task ended, and followable live until it ends.
 *
 * Layout under the store's sublevel:
 *   chunks: `<taskId>\x00<seq as 12 hex digits>` → [stream byte][at float64 LE][data]
 *   meta:   `<taskId>` → { firstSeq, nextSeq, bytes, droppedBytes, ended }
 */
import type { AbstractSublevel } from 'abstract-level';
import type { TaskEvent } from './types.ts';

export interface LogEntry {
  seq: number;
  stream: 'stdout' | 'stderr';
  at: number;
  data: Uint8Array;
}

export interface TaskLogMeta {
  /** Oldest seq still stored (older ones were dropped to honour the cap). */
  firstSeq: number;
  nextSeq: number;
  /** Payload bytes currently stored. */
  bytes: number;
  droppedBytes: number;
  ended: boolean;
}

export interface TaskLogStoreOptions {
  /** Payload bytes kept per task; older output is dropped first. Default 4 MiB. */
  maxBytesPerTask?: number;
  /** Entries returned by one read() when no limit is given. Default 1000. */
  defaultReadLimit?: number;
}

/** Any level database or sublevel with string keys (e.g. `new Level(dir)` or `db.sublevel('x')`). */
export interface LevelLike {
  sublevel(name: string, options?: object): unknown;
}

type Chunks = AbstractSublevel<unknown, unknown, string, Uint8Array>;
type Meta = AbstractSublevel<unknown, unknown, string, TaskLogMeta>;
type Root = AbstractSublevel<unknown, unknown, string, string>;

const SEQ_DIGITS = 12;
const HEADER = 9;
/** follow() waits at most this long between checks, in case a wake-up was missed. */
const FOLLOW_POLL_MS = 1000;

function chunkKey(taskId: string, seq: number): string {
  return `${taskId}\x00${seq.toString(16).padStart(SEQ_DIGITS, '0')}`;
}

function encodeChunk(stream: 'stdout' | 'stderr', at: number, data: Uint8Array): Uint8Array {
  const b = Buffer.alloc(HEADER + data.byteLength);
  b[0] = stream === 'stdout' ? 1 : 2;
  b.writeDoubleLE(at, 1);
  b.set(data, HEADER);
  return b;
}

function decodeChunk(seq: number, v: Uint8Array): LogEntry {
  const b = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  return {
    seq,
    stream: b[0] === 2 ? 'stderr' : 'stdout',
    at: b.readDoubleLE(1),
    data: Uint8Array.from(b.subarray(HEADER)),
  };
}

function validTaskId(taskId: string): void {
  if (typeof taskId !== 'string' || taskId.length === 0 || taskId.length > 256 || taskId.includes('\x00'))
    throw new Error('invalid task id');
}

/** Meta records of tasks being written kept in memory (see TaskLogStore.#known). */
const MAX_KNOWN_META = 10_000;
/** Ended tasks' meta records written in one database batch at most. */
const MAX_ENDS_PER_WRITE = 1000;

export class TaskLogStore {
  readonly maxBytesPerTask: number;
  readonly #root: Root;
  readonly #chunks: Chunks;
  readonly #meta: Meta;
  readonly #defaultReadLimit: number;
  /** Per-task write chain: appends of one task are applied in order, one at a time. */
  readonly #chains = new Map<string, Promise<void>>();
  readonly #waiters = new Map<string, Set<() => void>>();
  /**
   * Meta of tasks being written, as last stored (null = known to have no log), so appends and `end` need not
   * read it back: reading it was most of the database work of a task without output. Dropped at `end`.
   */
  readonly #known = new Map<string, TaskLogMeta | null>();

  /** Ends waiting for the group write in flight (see #putEnded). */
  readonly #endQueue: { taskId: string; meta: TaskLogMeta; done: () => void; fail: (e: Error) => void }[] =
    [];
  #endWriting = false;

  constructor(db: LevelLike, options: TaskLogStoreOptions = {}) {
    this.maxBytesPerTask = options.maxBytesPerTask ?? 4 * 1024 * 1024;
    this.#defaultReadLimit = options.defaultReadLimit ?? 1000;
    this.#root = db.sublevel('task-logs') as Root;
    this.#chunks = this.#root.sublevel<string, Uint8Array>('chunks', {
      valueEncoding: 'view',
    }) as unknown as Chunks;
    this.#meta = this.#root.sublevel<string, TaskLogMeta>('meta', {
      valueEncoding: 'json',
    }) as unknown as Meta;
  }

  async meta(taskId: string): Promise<TaskLogMeta | null> {
    validTaskId(taskId);
    return (await this.#meta.get(taskId)) ?? null;
  }

  /** Appends one chunk of output. Resolves once stored. */
  append(taskId: string, stream: 'stdout' | 'stderr', data: Uint8Array, at = Date.now()): Promise<void> {
    validTaskId(taskId);
    return this.#serial(taskId, async () => {
      const meta = (await this.#currentMeta(taskId)) ?? {
        firstSeq: 0,
        nextSeq: 0,
        bytes: 0,
        droppedBytes: 0,
        ended: false,
      };
      if (meta.ended) throw new Error(`task ${taskId} log has ended`);
      let payload = data;
      if (payload.byteLength > this.maxBytesPerTask) {
        // A single chunk over the cap: keep its tail.
        meta.droppedBytes += payload.byteLength - this.maxBytesPerTask;
        payload = payload.subarray(payload.byteLength - this.maxBytesPerTask);
      }
      // A chained batch does not wait for the database to open (a get did, before the meta was remembered).
      if (this.#root.status !== 'open') await this.#root.open();
      const batch = this.#root.batch();
      batch.put(chunkKey(taskId, meta.nextSeq), encodeChunk(stream, at, payload), {
        sublevel: this.#chunks as never,
      });
      meta.nextSeq++;
      meta.bytes += payload.byteLength;
      // Drop the oldest chunks until the task fits its cap again.
      if (meta.bytes > this.maxBytesPerTask) {
        for await (const [key, value] of this.#chunks.iterator({
          gte: chunkKey(taskId, meta.firstSeq),
          lt: chunkKey(taskId, meta.nextSeq - 1),
        })) {
          if (meta.bytes <= this.maxBytesPerTask) break;
          const size = value.byteLength - HEADER;
          batch.del(key, { sublevel: this.#chunks as never });
          meta.bytes -= size;
          meta.droppedBytes += size;
          meta.firstSeq = Number.parseInt(key.slice(key.indexOf('\x00') + 1), 16) + 1;
        }
      }
      batch.put(taskId, meta, { sublevel: this.#meta as never });
      await batch.write();
      this.#remember(taskId, { ...meta });
      this.#wake(taskId);
    });
  }

  /** Marks the task's log complete: follow() iterators end after the last entry. */
  end(taskId: string): Promise<void> {
    validTaskId(taskId);
    return this.#serial(taskId, async () => {
      const meta = (await this.#currentMeta(taskId)) ?? {
        firstSeq: 0,
        nextSeq: 0,
        bytes: 0,
        droppedBytes: 0,
        ended: false,
      };
      meta.ended = true;
      await this.#putEnded(taskId, meta);
      this.#known.delete(taskId);
      this.#wake(taskId);
    });
  }

  /** An executor onEvent handler that stores output events (others ignored). Errors go to onError. */
  sink(taskId: string, onError: (e: unknown) => void = () => {}): (e: TaskEvent) => void {
    return (e) => {
      if (e.type === 'output') this.append(taskId, e.stream, e.data, e.at).catch(onError);
    };
  }

  async read(
    taskId: string,
    opts: { fromSeq?: number; limit?: number } = {},
  ): Promise<{
    entries: LogEntry[];
    nextSeq: number;
    firstSeq: number;
    droppedBytes: number;
    ended: boolean;
  }> {
    validTaskId(taskId);
    const meta = (await this.#meta.get(taskId)) ?? {
      firstSeq: 0,
      nextSeq: 0,
      bytes: 0,
      droppedBytes: 0,
      ended: false,
    };
    const from = Math.max(opts.fromSeq ?? 0, meta.firstSeq);
    const limit = Math.max(1, Math.min(opts.limit ?? this.#defaultReadLimit, 100_000));
    const entries: LogEntry[] = [];
    for await (const [key, value] of this.#chunks.iterator({
      gte: chunkKey(taskId, from),
      lt: chunkKey(taskId, meta.nextSeq),
      limit,
    })) {
      entries.push(decodeChunk(Number.parseInt(key.slice(key.indexOf('\x00') + 1), 16), value));
    }
    const next = entries.length > 0 ? entries[entries.length - 1].seq + 1 : from;
    return {
      entries,
      nextSeq: next,
      firstSeq: meta.firstSeq,
      droppedBytes: meta.droppedBytes,
      ended: meta.ended,
    };
  }

  /** Yields entries from fromSeq on, live, and ends once the task's log has ended and all was yielded. */
  async *follow(
    taskId: string,
    opts: { fromSeq?: number; signal?: AbortSignal } = {},
  ): AsyncGenerator<LogEntry> {
    let seq = opts.fromSeq ?? 0;
    while (!opts.signal?.aborted) {
      // Register before reading so a write between the read and the wait is not missed.
      const woken = this.#waitFor(taskId, opts.signal);
      const page = await this.read(taskId, { fromSeq: seq });
      for (const e of page.entries) yield e;
      seq = page.nextSeq;
      if (page.entries.length > 0) {
        woken.cancel();
        continue;
      }
      if (page.ended) {
        woken.cancel();
        return;
      }
      await woken.promise;
    }
  }

  /** Deletes a task's log entirely. */
  delete(taskId: string): Promise<void> {
    validTaskId(taskId);
    return this.#serial(taskId, async () => {
      // Every chunk is written together with its meta record: no meta, nothing to clear (the common case
      // of a first attempt; a range clear costs an iterator).
      if ((await this.#meta.get(taskId)) !== undefined)
        await this.#chunks.clear({ gte: chunkKey(taskId, 0), lte: `${taskId}\x00g` });
      await this.#meta.del(taskId);
      this.#remember(taskId, null);
      this.#wake(taskId);
    });
  }

  /**
   * Tells the store that `taskId` has no stored log (the caller knows: e.g. a task's first attempt), so its
   * first append and its end skip reading the meta record.
   */
  markFresh(taskId: string): void {
    validTaskId(taskId);
    this.#remember(taskId, null);
  }

  async #currentMeta(taskId: string): Promise<TaskLogMeta | null> {
    const known = this.#known.get(taskId);
    if (known !== undefined) return known === null ? null : { ...known };
    return (await this.#meta.get(taskId)) ?? null;
  }

  #remember(taskId: string, meta: TaskLogMeta | null): void {
    this.#known.delete(taskId);
    this.#known.set(taskId, meta);
    // Bounded: tasks whose end never came (a crash of the run) fall out oldest first.
    while (this.#known.size > MAX_KNOWN_META) this.#known.delete(this.#known.keys().next().value!);
  }

  /**
   * Stores an ended task's meta record. Every task ends with one such write, most of them with no output at
   * all, so a node finishing hundreds of tasks a second made as many separate database writes: ends that
   * arrive while a write is in flight go together in the next one (group commit; alone, one waits for nothing).
   */
  #putEnded(taskId: string, meta: TaskLogMeta): Promise<void> {
    return new Promise((done, fail) => {
      this.#endQueue.push({ taskId, meta, done, fail });
      if (!this.#endWriting) void this.#writeEnds();
    });
  }

  async #writeEnds(): Promise<void> {
    this.#endWriting = true;
    try {
      while (this.#endQueue.length > 0) {
        const group = this.#endQueue.splice(0, MAX_ENDS_PER_WRITE);
        try {
          await this.#meta.batch(group.map((g) => ({ type: 'put', key: g.taskId, value: g.meta })));
          for (const g of group) g.done();
        } catch (err) {
          for (const g of group) g.fail(err as Error);
        }
      }
    } finally {
      this.#endWriting = false;
    }
  }

  #serial(taskId: string, fn: () => Promise<void>): Promise<void> {
    const prev = this.#chains.get(taskId) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail: Promise<void> = next.then(
      () => this.#release(taskId, tail),
      () => this.#release(taskId, tail),
    );
    this.#chains.set(taskId, tail);
    return next;
  }

  /** Forgets a task's write chain once its last queued write is done (the map stays bounded by active tasks). */
  #release(taskId: string, tail: Promise<void>): void {
    if (this.#chains.get(taskId) === tail) this.#chains.delete(taskId);
  }

  #wake(taskId: string): void {
    const set = this.#waiters.get(taskId);
    if (!set) return;
    this.#waiters.delete(taskId);
    for (const w of set) w();
  }

  #waitFor(taskId: string, signal?: AbortSignal): { promise: Promise<void>; cancel: () => void } {
    let done: () => void = () => {};
    const promise = new Promise<void>((resolve) => {
      done = resolve;
    });
    let set = this.#waiters.get(taskId);
    if (!set) {
      set = new Set();
      this.#waiters.set(taskId, set);
    }
    const timer = setTimeout(() => finish(), FOLLOW_POLL_MS);
    const finish = () => {
      clearTimeout(timer);
      this.#waiters.get(taskId)?.delete(finish);
      signal?.removeEventListener('abort', finish);
      done();
    };
    set.add(finish);
    signal?.addEventListener('abort', finish, { once: true });
    return { promise, cancel: finish };
  }
}
