// ReportOutbox: which undelivered end-of-run reports a node still owes the log. Pure, so plain reports.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ReportOutbox } from './report-outbox.ts';

interface Report {
  taskId: string;
  attempt: number;
  note?: string;
}
const r = (taskId: string, attempt: number, note?: string): Report => ({ taskId, attempt, note });
const always = () => true;

describe('ReportOutbox', () => {
  it('keeps parked reports until delivered, oldest first', () => {
    const box = new ReportOutbox<Report>(10);
    const a = r('j/0', 1);
    const b = r('j/1', 1);
    box.park(a);
    box.park(b);
    assert.deepEqual(box.due(always), [a, b]);
    // Offering them does not forget them: a failed delivery is offered again next time.
    assert.deepEqual(box.due(always), [a, b]);
    assert.equal(box.delivered(a), true);
    assert.deepEqual(box.due(always), [b]);
    assert.equal(box.size, 1);
  });

  it('forgets what the log no longer owes', () => {
    const box = new ReportOutbox<Report>(10);
    box.park(r('j/0', 1));
    box.park(r('j/1', 2));
    const owed = box.due((x) => x.attempt === 2);
    assert.deepEqual(
      owed.map((x) => x.taskId),
      ['j/1'],
    );
    assert.equal(box.size, 1, 'the report of the re-queued attempt is gone for good');
  });

  it('keeps one report per task: a newer attempt replaces an older one, never the other way round', () => {
    const box = new ReportOutbox<Report>(10);
    const old = r('j/0', 1, 'old');
    const newer = r('j/0', 2, 'newer');
    box.park(old);
    box.park(newer);
    assert.deepEqual(box.due(always), [newer]);
    assert.deepEqual(box.park(old), { kept: false });
    assert.deepEqual(box.due(always), [newer], 'an older attempt does not replace a newer one');
    assert.equal(box.get('j/0'), newer);
    // A delivery of the replaced report does not drop its replacement.
    assert.equal(box.delivered(old), false);
    assert.deepEqual(box.due(always), [newer]);
    // The same attempt parked again (a second failed delivery) replaces it and moves to the end.
    const again = r('j/0', 2, 'again');
    box.park(r('j/9', 1));
    box.park(again);
    assert.deepEqual(
      box.due(always).map((x) => x.note ?? x.taskId),
      ['j/9', 'again'],
    );
  });

  it('stays within its bound by dropping the oldest report, and says which', () => {
    const box = new ReportOutbox<Report>(2);
    assert.deepEqual(box.park(r('j/0', 1)), { kept: true });
    assert.deepEqual(box.park(r('j/1', 1)), { kept: true });
    assert.deepEqual(box.park(r('j/2', 1)), { kept: true, dropped: r('j/0', 1) });
    assert.equal(box.size, 2);
    assert.deepEqual(
      box.due(always).map((x) => x.taskId),
      ['j/1', 'j/2'],
    );
    assert.throws(() => new ReportOutbox(0), /positive integer/);
  });
});
