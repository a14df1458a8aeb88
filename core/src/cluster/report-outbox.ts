/**
 * The end-of-run reports (a task's result, or a hand-back to the queue) that a node could not get into the log:
 * no leader for longer than the report's own retries, or none reachable. Without them the log would show the
 * task assigned to, or running on, a live node that no longer runs it, and nothing would ever end it: the leader
 * re-queues only the tasks of nodes that stop heartbeating. So the node keeps such a report and offers it again
 * with every heartbeat until the log takes it, or until the log no longer owes it (the task was re-queued,
 * cancelled or given to another attempt meanwhile: a late report of the old attempt would be refused anyway).
 *
 * Pure bookkeeping, no I/O or timers: the jobs service decides when to deliver and what the log still owes.
 * Bounded: past `max` reports the oldest is dropped (and returned, for a warning). Only the latest attempt of a
 * task is kept.
 */
export interface OwedReport {
  taskId: string;
  attempt: number;
}

export class ReportOutbox<R extends OwedReport> {
  readonly #max: number;
  /** By task id, oldest first (a re-park moves the report to the end). */
  readonly #byTask = new Map<string, R>();

  constructor(max: number) {
    if (!Number.isInteger(max) || max < 1)
      throw new RangeError(`outbox bound must be a positive integer: ${max}`);
    this.#max = max;
  }

  get size(): number {
    return this.#byTask.size;
  }

  /**
   * Keeps `report` for later delivery. A report of an older attempt of the same task is replaced; one of a newer
   * attempt already kept wins over this one (`kept` false). `dropped`: the report let go to stay within the
   * bound, if any.
   */
  park(report: R): { kept: boolean; dropped?: R } {
    const held = this.#byTask.get(report.taskId);
    if (held && held.attempt > report.attempt) return { kept: false };
    this.#byTask.delete(report.taskId);
    this.#byTask.set(report.taskId, report);
    if (this.#byTask.size <= this.#max) return { kept: true };
    const [oldestTask, oldest] = this.#byTask.entries().next().value as [string, R];
    this.#byTask.delete(oldestTask);
    return { kept: true, dropped: oldest };
  }

  /** The report kept for `taskId`, if any. */
  get(taskId: string): R | undefined {
    return this.#byTask.get(taskId);
  }

  /**
   * The reports to offer again now, oldest first. Those the log no longer owes (`stillOwed` false) are
   * forgotten here; the others stay kept until `delivered`.
   */
  due(stillOwed: (report: R) => boolean): R[] {
    const out: R[] = [];
    for (const [taskId, report] of this.#byTask) {
      if (stillOwed(report)) out.push(report);
      else this.#byTask.delete(taskId);
    }
    return out;
  }

  /**
   * The log took `report` (or refused it as stale): forget it, unless a newer report replaced it meanwhile.
   * Whether it was forgotten (false: the newer one stays kept).
   */
  delivered(report: R): boolean {
    if (this.#byTask.get(report.taskId) !== report) return false;
    this.#byTask.delete(report.taskId);
    return true;
  }
}
