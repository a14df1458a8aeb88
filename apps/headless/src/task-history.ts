/**
 * The history of tasks this node ran, for the dashboard's history view and contribution charts: the last
 * `max` records in memory, persisted one key per record so that saving costs what was added, not the whole
 * history. A busy node finishes thousands of tasks a second; rewriting a 10,000-record history as one value
 * every second cost it a 2 MB JSON string and a 2 MB database write per second.
 *
 * Saves are coalesced (at most one per `saveDelayMs`): the history is a convenience view, so losing the last
 * moment of it in a crash is acceptable. Keys are `<prefix><seq, 16 digits>`, so they sort in order; the
 * oldest are deleted in ranges once more than `max` are stored.
 */
import type { Level } from 'level';

export interface HistoryRecord {
  taskId: string;
  jobId: string;
  name: string;
  submitter: string;
  image: string;
  state: string;
  /** succeeded, failed, timedOut or error (records stored before it was kept have none). */
  outcome?: string;
  exitCode: number | null;
  startedAt: number;
  finishedAt: number;
  cpuMs: number;
}

/** Key of the whole history as one JSON array, as versions before this one stored it (read once, then gone). */
export const LEGACY_HISTORY_KEY = 'dashboard/history';
const PREFIX = 'dashboard/history/';
const SEQ_DIGITS = 16;

function keyOf(seq: number): string {
  return PREFIX + String(seq).padStart(SEQ_DIGITS, '0');
}

function parse(raw: Uint8Array): unknown {
  try {
    return JSON.parse(Buffer.from(raw).toString('utf8'));
  } catch {
    return null;
  }
}

export class TaskHistory {
  readonly #db: Level<string, Uint8Array>;
  readonly #max: number;
  readonly #saveDelayMs: number;
  /** Oldest first; at most `max` (trimmed in chunks, so up to a tenth more between trims). */
  #records: HistoryRecord[] = [];
  /** Sequence number of #records[0]. */
  #firstSeq = 0;
  /** Records from this sequence number on are not stored yet. */
  #savedUpTo = 0;
  /** Sequence numbers below this are deleted from the database. */
  #deletedBelow = 0;
  #timer: NodeJS.Timeout | null = null;
  #saving: Promise<void> = Promise.resolve();

  private constructor(db: Level<string, Uint8Array>, max: number, saveDelayMs: number) {
    this.#db = db;
    this.#max = max;
    this.#saveDelayMs = saveDelayMs;
  }

  static async open(db: Level<string, Uint8Array>, max: number, saveDelayMs: number): Promise<TaskHistory> {
    const h = new TaskHistory(db, max, saveDelayMs);
    const stored: HistoryRecord[] = [];
    let lastSeq = -1;
    let firstSeq = -1;
    for await (const [key, value] of db.iterator({
      gte: PREFIX,
      lt: `${PREFIX}~`,
      reverse: true,
      limit: max,
    })) {
      const seq = Number(key.slice(PREFIX.length));
      if (!Number.isSafeInteger(seq)) continue;
      const rec = parse(value);
      if (rec === null || typeof rec !== 'object') continue;
      if (lastSeq < 0) lastSeq = seq;
      firstSeq = seq;
      stored.push(rec as HistoryRecord);
    }
    stored.reverse();
    if (lastSeq < 0) {
      // Nothing in the per-record form yet: take over a history stored the old way.
      const legacy = await db.get(LEGACY_HISTORY_KEY);
      const old = legacy ? parse(legacy) : null;
      h.#records = Array.isArray(old) ? (old.slice(-max) as HistoryRecord[]) : [];
      h.#firstSeq = 0;
      h.#savedUpTo = 0;
      if (legacy) {
        h.#flushNow();
        await h.#saving;
        await db.del(LEGACY_HISTORY_KEY);
      }
      return h;
    }
    h.#records = stored;
    h.#firstSeq = firstSeq;
    h.#savedUpTo = lastSeq + 1;
    h.#deletedBelow = 0; // older keys may remain from a trim that did not finish: the next trim takes them
    return h;
  }

  add(rec: HistoryRecord): void {
    this.#records.push(rec);
    // Trim in chunks: dropping one record per task from the front of a 10,000-record array is a copy each.
    const excess = this.#records.length - this.#max;
    if (excess > Math.max(1, Math.floor(this.#max / 10))) {
      this.#records.splice(0, excess);
      this.#firstSeq += excess;
    }
    if (this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#flushNow();
    }, this.#saveDelayMs);
    this.#timer.unref();
  }

  /** The newest `limit` records, newest first. */
  recent(limit: number): HistoryRecord[] {
    const all = this.#records;
    const out: HistoryRecord[] = [];
    for (let i = all.length - 1; i >= 0 && out.length < limit && out.length < this.#max; i--)
      out.push(all[i]!);
    return out;
  }

  /** Every record kept (at most `max`), oldest first. */
  all(): readonly HistoryRecord[] {
    const all = this.#records;
    return all.length > this.#max ? all.slice(all.length - this.#max) : all;
  }

  /** Writes what is not stored yet (at once, not after the delay), and waits for it. */
  async flush(): Promise<void> {
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    this.#flushNow();
    await this.#saving;
  }

  #flushNow(): void {
    const end = this.#firstSeq + this.#records.length;
    const from = Math.max(this.#savedUpTo, this.#firstSeq);
    const puts: { type: 'put'; key: string; value: Uint8Array }[] = [];
    for (let seq = from; seq < end; seq++) {
      const rec = this.#records[seq - this.#firstSeq]!;
      puts.push({ type: 'put', key: keyOf(seq), value: Buffer.from(JSON.stringify(rec)) });
    }
    this.#savedUpTo = end;
    const keepFrom = Math.max(0, end - this.#max);
    const trim = keepFrom > this.#deletedBelow;
    const deleteBelow = this.#deletedBelow;
    if (trim) this.#deletedBelow = keepFrom;
    if (puts.length === 0 && !trim) return;
    this.#saving = this.#saving
      .then(async () => {
        if (puts.length > 0) await this.#db.batch(puts);
        // From the prefix on the first trim after a restart (older keys may be left from before it).
        if (trim)
          await this.#db.clear({ gte: deleteBelow === 0 ? PREFIX : keyOf(deleteBelow), lt: keyOf(keepFrom) });
      })
      .catch(() => {});
  }
}
