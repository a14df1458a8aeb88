/**
 * The node's undelivered end-of-task reports (see ReportOutbox) on disk, so that a node restarted before the
 * log took them still delivers the real result: without it, the restarted node could only report the task as
 * lost ("the node restarted while the task ran"), although it had ended, with its output stored here.
 *
 * One key per task (`jobs/outbox/<taskId>`), CBOR values. Writes are queued in call order (a put and the
 * delete that follows it for the same task must not swap). Loaded reports are validated like any command from
 * outside: a record that does not parse is deleted and counted, never trusted.
 */
import {
  decode,
  encode,
  type RequeueCommand,
  RequeueCommandSchema,
  type TaskFinishedCommand,
  TaskFinishedCommandSchema,
} from '@meshrun/protocol';
import type { Level } from 'level';
import { z } from 'zod';

const PREFIX = 'jobs/outbox/';
const StoredReportSchema = z.discriminatedUnion('type', [TaskFinishedCommandSchema, RequeueCommandSchema]);

export type StoredReport = TaskFinishedCommand | RequeueCommand;
/** What may be stored: a report as the node builds it (defaults not yet filled in). */
export type StoredReportInput = z.input<typeof StoredReportSchema>;

export interface OutboxPersistence {
  load(): Promise<{ reports: StoredReport[]; discarded: number }>;
  put(report: StoredReportInput): Promise<void>;
  delete(taskId: string): Promise<void>;
}

export class LevelOutboxStore implements OutboxPersistence {
  readonly #db: Level<string, Uint8Array>;
  #writes: Promise<void> = Promise.resolve();

  constructor(db: Level<string, Uint8Array>) {
    this.#db = db;
  }

  async load(): Promise<{ reports: StoredReport[]; discarded: number }> {
    await this.#writes;
    const reports: StoredReport[] = [];
    const bad: string[] = [];
    for await (const [key, value] of this.#db.iterator({ gte: PREFIX, lt: `${PREFIX}~` })) {
      try {
        const report = decode(StoredReportSchema, value);
        if (PREFIX + report.taskId !== key) throw new Error('stored under another task id');
        reports.push(report);
      } catch {
        bad.push(key);
      }
    }
    if (bad.length > 0) await this.#db.batch(bad.map((key) => ({ type: 'del' as const, key })));
    return { reports, discarded: bad.length };
  }

  put(report: StoredReportInput): Promise<void> {
    return this.#queue(() => this.#db.put(PREFIX + report.taskId, encode(report)));
  }

  delete(taskId: string): Promise<void> {
    return this.#queue(() => this.#db.del(PREFIX + taskId));
  }

  #queue(write: () => Promise<void>): Promise<void> {
    const next = this.#writes.then(write);
    // A failed write does not stop the ones after it (each caller sees its own failure).
    this.#writes = next.catch(() => {});
    return next;
  }
}
