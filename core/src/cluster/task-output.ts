/**
 * Task output on the node that ran the task: the executors' `TaskLogStore` (level, capped per task, followable)
 * plus what the job layer needs on top: a new attempt replaces the previous one's output, and the last bytes of
 * each stream are kept in memory so they can travel in the log with the task's result.
 */
import type { Level } from 'level';
import { type LogEntry, TaskLogStore } from '../executors/log-store.ts';

/** Bytes of output kept per task on the node. */
export const MAX_OUTPUT_BYTES_PER_TASK = 16 * 1024 * 1024;
/** In-memory tails are kept for at most this many tasks (the rest are in the log already). */
export const MAX_TAILS = 2000;

export type OutputItem = LogEntry;

export class TaskOutputStore {
  readonly store: TaskLogStore;
  readonly #tails = new Map<string, { stdout: Uint8Array[]; stderr: Uint8Array[] }>();

  constructor(db: Level<string, Uint8Array>) {
    this.store = new TaskLogStore(db, { maxBytesPerTask: MAX_OUTPUT_BYTES_PER_TASK });
  }

  /**
   * A new attempt starts: its output replaces the previous attempt's. Attempt 1 is a task's first run
   * anywhere, so there is nothing to replace (saves two database operations per task).
   */
  async begin(taskId: string, attempt = 2): Promise<void> {
    if (attempt > 1) await this.store.delete(taskId);
    else this.store.markFresh(taskId);
    this.#tails.set(taskId, { stdout: [], stderr: [] });
    while (this.#tails.size > MAX_TAILS) this.#tails.delete(this.#tails.keys().next().value!);
  }

  append(taskId: string, stream: 'stdout' | 'stderr', data: Uint8Array): void {
    const tail = this.#tails.get(taskId);
    if (tail) {
      tail[stream].push(data);
      trimTo(tail[stream], 64 * 1024);
    }
    this.store.append(taskId, stream, data).catch(() => {});
  }

  async end(taskId: string): Promise<void> {
    await this.store.end(taskId);
  }

  /** Last `maxBytes` of each stream of the current attempt, as text (for the log). */
  tails(taskId: string, maxBytes: number): { stdout: string; stderr: string } {
    const t = this.#tails.get(taskId);
    const text = (chunks: Uint8Array[]) => {
      const all = Buffer.concat(chunks);
      return all.subarray(Math.max(0, all.length - maxBytes)).toString('utf8');
    };
    return t ? { stdout: text(t.stdout), stderr: text(t.stderr) } : { stdout: '', stderr: '' };
  }

  /**
   * Stored output; with `follow`, then live output until the task's output ends. With `tail`, only the last
   * `tail` lines of what is stored, as `docker logs --tail` gives them (then, when following, all that comes
   * after): one item per line, each stream's lines assembled across its chunks, and a last line without its
   * newline counted as a line.
   */
  async *read(
    taskId: string,
    opts: { follow?: boolean; tail?: number | undefined; signal?: AbortSignal | undefined } = {},
  ): AsyncIterable<OutputItem> {
    const lines = opts.tail === undefined ? null : new LastLines(opts.tail);
    let fromSeq = 0;
    for (let page = 0; page < 100_000; page++) {
      const r = await this.store.read(taskId, { fromSeq });
      for (const e of r.entries) {
        if (lines) lines.push(e);
        else yield e;
      }
      if (r.entries.length === 0) break;
      fromSeq = r.nextSeq;
    }
    if (lines) yield* lines.items();
    if (opts.follow) yield* this.store.follow(taskId, { fromSeq, signal: opts.signal });
  }
}

/** The last `max` lines of a task's output chunks, in the order they were completed. */
export class LastLines {
  readonly #max: number;
  #kept: OutputItem[] = [];
  /** Each stream's line still waiting for its newline. */
  readonly #open: Record<'stdout' | 'stderr', { parts: Uint8Array[]; at: number; seq: number } | null> = {
    stdout: null,
    stderr: null,
  };

  constructor(max: number) {
    this.#max = Math.max(0, Math.floor(max));
  }

  push(e: OutputItem): void {
    const data = e.data;
    let from = 0;
    for (let nl = data.indexOf(10); nl >= 0; nl = data.indexOf(10, from)) {
      this.#close(e.stream, data.subarray(from, nl + 1), e);
      from = nl + 1;
    }
    if (from < data.byteLength) {
      const rest = data.subarray(from);
      const open = this.#open[e.stream];
      if (open) open.parts.push(rest);
      else this.#open[e.stream] = { parts: [rest], at: e.at, seq: e.seq };
    }
  }

  /** The kept lines, then the unfinished ones (at most `max` in all). */
  items(): OutputItem[] {
    for (const stream of ['stdout', 'stderr'] as const) {
      const open = this.#open[stream];
      if (open) this.#keep({ seq: open.seq, stream, at: open.at, data: Buffer.concat(open.parts) });
      this.#open[stream] = null;
    }
    return this.#kept.slice(Math.max(0, this.#kept.length - this.#max));
  }

  #close(stream: 'stdout' | 'stderr', end: Uint8Array, e: OutputItem): void {
    const open = this.#open[stream];
    this.#open[stream] = null;
    const data = open ? Buffer.concat([...open.parts, end]) : end;
    this.#keep({ seq: open?.seq ?? e.seq, stream, at: open?.at ?? e.at, data });
  }

  #keep(item: OutputItem): void {
    if (this.#max === 0) return;
    this.#kept.push(item);
    // Trimmed in chunks, not one shift per line.
    if (this.#kept.length >= 2 * this.#max + 1024)
      this.#kept = this.#kept.slice(this.#kept.length - this.#max);
  }
}

function trimTo(chunks: Uint8Array[], max: number): void {
  let total = chunks.reduce((s, c) => s + c.byteLength, 0);
  while (chunks.length > 1 && total - chunks[0]!.byteLength >= max) total -= chunks.shift()!.byteLength;
}
